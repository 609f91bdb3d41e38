-- Durable timers: a wait's wake-up, a question's timeout, a conversation's expiry, a
-- campaign's send. A timer is written in the same transaction as the log entries that
-- created it and deleted in the same transaction as the log entries its firing
-- produced, so it fires at most once, and at least once after any crash.
CREATE TABLE timers (
    id INTEGER PRIMARY KEY,
    due_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    -- conversations.no, for timers that belong to a conversation.
    conversation BIGINT REFERENCES conversations (no),
    -- What else they belong to (`campaign:<id>`), to pause or cancel them together.
    owner TEXT,
    -- Lateness (ms) beyond which the timer is too late (NULL: fire however late).
    late_after BIGINT,
    data TEXT NOT NULL
);

CREATE INDEX timers_by_due ON timers (due_at, id);

CREATE INDEX timers_by_conversation ON timers (conversation) WHERE conversation IS NOT NULL;

CREATE INDEX timers_by_owner ON timers (owner, due_at) WHERE owner IS NOT NULL;
