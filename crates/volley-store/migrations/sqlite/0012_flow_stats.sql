-- Analytics pre-aggregated as the conversation log is written (docs/metrics.md). An
-- aggregator reads the log (`events`) in rowid order after `stats_cursor` and, in one
-- transaction, adds its counters and moves the cursor: dashboards read the counters,
-- never the log. The cursor starts at 0, so the history before this migration counts.
CREATE TABLE stats_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);
INSERT INTO stats_cursor (id, position) VALUES (1, 0);

-- Counters by flow version and by the UTC day the conversation started
-- (days since 1970-01-01). `metric` names what is counted, `key` which one (a step,
-- an answer, a goal, a latency bucket). `total` sums a value (milliseconds, goal value).
CREATE TABLE flow_stats (
    flow_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    day BIGINT NOT NULL,
    metric TEXT NOT NULL,
    key TEXT NOT NULL,
    n BIGINT NOT NULL,
    total REAL NOT NULL,
    PRIMARY KEY (flow_id, day, metric, key, version)
) WITHOUT ROWID;

-- The aggregator's state of each conversation (its step, when it entered it, the
-- steps reached, its split arms, what it waits for): JSON written by the server.
CREATE TABLE stats_progress (
    conversation_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
) WITHOUT ROWID;

-- Every reply of a person in a hand-off, with how long the participant had waited.
CREATE TABLE handoff_replies (
    conversation_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    wait_ms BIGINT NOT NULL
);
CREATE INDEX handoff_replies_by_time ON handoff_replies (at);

-- The days each contact was active (wrote to a conversation or started one).
CREATE TABLE contact_days (
    contact_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    PRIMARY KEY (contact_id, day)
) WITHOUT ROWID;

-- Contacts active `days_after` days after their first day, by first day.
CREATE TABLE cohorts (
    first_day BIGINT NOT NULL,
    days_after BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (first_day, days_after)
) WITHOUT ROWID;
