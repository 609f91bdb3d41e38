-- Outbound webhooks (docs/webhooks.md). The logs are the outbox: a dispatcher reads the
-- conversation log (`events`), `showing_log` and `event_registrations` in rowid order
-- after the cursors of `webhook_cursors` and, in one transaction, inserts a delivery per
-- subscribed endpoint and moves the cursors, so a crash neither loses nor repeats one.

-- Where admins want events POSTed.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    -- The signing secret (`whsec_` + base64): needed to sign, so kept as is.
    secret TEXT NOT NULL,
    -- Space-separated event types, or `*` for all.
    types TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- How far each log has been read (its largest rowid dispatched). They start at the end
-- of the logs as they are now: history before webhooks existed is not sent.
CREATE TABLE webhook_cursors (
    source TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO webhook_cursors (source, position)
    SELECT 'events', COALESCE(MAX(rowid), 0) FROM events;
INSERT INTO webhook_cursors (source, position)
    SELECT 'showing_log', COALESCE(MAX(rowid), 0) FROM showing_log;
INSERT INTO webhook_cursors (source, position)
    SELECT 'event_registrations', COALESCE(MAX(rowid), 0) FROM event_registrations;

-- One message to one endpoint. `payload` is the exact body sent (every attempt sends the
-- same bytes with the same `message_id`, the `webhook-id` header).
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- pending, delivered, dead.
    status TEXT NOT NULL,
    -- Attempts made in all.
    attempts INTEGER NOT NULL,
    -- Failed attempts since it was last queued (the retry schedule's position).
    failures INTEGER NOT NULL,
    -- When a pending delivery is next tried.
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status, id);

-- Every attempt: when, the HTTP status (if an answer came), the error, how long it took.
CREATE TABLE webhook_attempts (
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    at BIGINT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, n)
);
