-- Campaigns: a flow started proactively for an audience of contacts. Each recipient's
-- send is a timer owned by `campaign:<id>`; a sent one is the conversation whose
-- origin is `campaign:<id>`.
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    -- The request that created it (audience, schedule, rate, lateness), JSON.
    spec TEXT NOT NULL,
    -- scheduled, paused, cancelled.
    status TEXT NOT NULL,
    -- Contacts targeted.
    audience BIGINT NOT NULL,
    -- Sends cancelled with the campaign.
    cancelled BIGINT NOT NULL DEFAULT 0,
    paused_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
