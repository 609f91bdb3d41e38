-- Webhook endpoints can be paused (deliveries keep being queued, none is sent until it
-- is enabled again) and their secret rotated: the previous secret keeps signing too
-- (a second signature) until `previous_until`, so receivers can switch without loss.
ALTER TABLE webhook_endpoints ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE webhook_endpoints ADD COLUMN previous_until BIGINT;
