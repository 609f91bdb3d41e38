-- Flows and their immutable published versions.
CREATE TABLE flows (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE flow_versions (
    flow_id TEXT NOT NULL REFERENCES flows (id),
    version BIGINT NOT NULL,
    hash TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (flow_id, version)
);

-- People talking to flows: anonymous (widget token, stored hashed) or identified by
-- the embedding site (external id, from a signed identity).
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    token_hash TEXT UNIQUE,
    external_id TEXT UNIQUE,
    profile TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One conversation per run of a flow; `state` is the engine state as of `last_seq`.
-- `no` is a compact key used only inside the database (the log refers to it);
-- everything outside knows the conversation by its `id`.
CREATE TABLE conversations (
    no INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    flow_id TEXT NOT NULL,
    flow_version BIGINT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    status TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    -- What started it when not the participant: `campaign:<id>`.
    origin TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX conversations_by_origin ON conversations (origin) WHERE origin IS NOT NULL;

CREATE INDEX conversations_by_contact ON conversations (contact_id, flow_id, updated_at);

-- The append-only conversation log: the source of truth. Rows are stored in the
-- order they are written (rowid), so a commit appends to the end of the table; the
-- index on the small integer (conversation, seq) is the only scattered write.
CREATE TABLE events (
    conversation BIGINT NOT NULL REFERENCES conversations (no),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    visible_at BIGINT NOT NULL,
    client_id TEXT,
    data TEXT NOT NULL
);

CREATE UNIQUE INDEX events_by_seq ON events (conversation, seq);

CREATE UNIQUE INDEX events_by_client_id ON events (conversation, client_id)
    WHERE client_id IS NOT NULL;

-- API keys, stored as SHA-256 hashes.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
