-- Hand-offs to people. The conversation log holds every request, assignment, reply
-- and resolution as events; this table is the current state of each conversation's
-- latest hand-off, written in the same transaction as those events, so the agent
-- console lists queues without reading logs.
CREATE TABLE handoffs (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id),
    contact_id TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    -- 0 low, 1 normal, 2 high, 3 urgent.
    priority INTEGER NOT NULL,
    reason TEXT,
    -- queued, assigned, snoozed, resolved.
    status TEXT NOT NULL,
    agent_id TEXT,
    requested_at BIGINT NOT NULL,
    assigned_at BIGINT,
    first_reply_at BIGINT,
    -- The latest message either way, for lists.
    last_message_at BIGINT NOT NULL,
    preview TEXT NOT NULL,
    snoozed_until BIGINT,
    resolved_at BIGINT,
    -- Space-separated.
    tags TEXT NOT NULL,
    csat INTEGER,
    updated_at BIGINT NOT NULL
);

CREATE INDEX handoffs_waiting ON handoffs (status, queue, priority, requested_at);

CREATE INDEX handoffs_by_agent ON handoffs (agent_id, status, last_message_at);

CREATE INDEX handoffs_by_contact ON handoffs (contact_id, requested_at);

-- Saved replies agents insert by short code (`/refund`); bodies are templates.
CREATE TABLE canned_responses (
    id TEXT PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The queues an agent serves; an agent with no rows serves every queue.
CREATE TABLE agent_queues (
    user_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (user_id, queue)
);
