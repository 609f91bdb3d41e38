-- Answers to requests sent with an `Idempotency-Key` header, kept for a day, so a
-- retried request gets the first answer instead of acting twice. `caller` is a hash of
-- the caller's credentials: keys of different callers never meet.
CREATE TABLE idempotency (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT,
    body BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
