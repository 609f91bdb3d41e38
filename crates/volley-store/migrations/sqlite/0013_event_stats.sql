-- Event (premiere) analytics, pre-aggregated (docs/metrics.md, "Events"). A tailer in
-- the server reads `showing_log` and `event_registrations` in rowid order after the
-- cursors of `event_stats_cursors` and, in one transaction, writes the figures it
-- changed and moves the cursors, so a crash neither loses nor counts a row twice.
-- Reports read these rows, never the logs.

-- How far each log has been aggregated (its largest rowid counted). They start at 0:
-- showings watched before this table existed are counted too.
CREATE TABLE event_stats_cursors (
    source TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO event_stats_cursors (source, position) VALUES ('showing_log', 0);
INSERT INTO event_stats_cursors (source, position) VALUES ('event_registrations', 0);

-- The figures of one showing (JSON, written by the server's tailer).
CREATE TABLE event_stats (
    showing_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX event_stats_event ON event_stats (event_id);

-- What the tailer keeps per viewer of a showing to count each viewer once (JSON).
CREATE TABLE event_stats_viewers (
    showing_id TEXT NOT NULL,
    viewer_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (showing_id, viewer_id)
);
