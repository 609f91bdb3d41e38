-- Published event files (premieres), each version immutable like flow versions. The
-- latest version of an event is its highest `version`.
CREATE TABLE event_versions (
    event_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    hash TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, version)
);
