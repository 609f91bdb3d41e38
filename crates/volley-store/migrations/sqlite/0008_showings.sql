-- Premieres being watched. `showing_log` is the source of truth of a showing (one
-- occurrence of an event), like the conversation log is of a conversation: viewers
-- joining and leaving (with what they watched), chat messages, moderation, votes, offer
-- impressions and clicks, questions and answers, each with a per-showing sequence number.
CREATE TABLE showing_log (
    showing_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    -- The viewer the row is about (the author of a message, the asker of an answered
    -- question), if any.
    viewer_id TEXT,
    data TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (showing_id, seq)
);
-- A viewer's answered questions, across showings (told on their next visit).
CREATE INDEX showing_log_viewer ON showing_log (viewer_id, kind);

-- Registrations for a showing; reminders are timers owned by `registration:{id}`.
CREATE TABLE event_registrations (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    showing_id TEXT NOT NULL,
    viewer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT,
    zone TEXT,
    fields TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    UNIQUE (showing_id, viewer_id)
);
CREATE INDEX event_registrations_viewer ON event_registrations (viewer_id);

-- Viewers banned from an event's chat and Q&A (every showing).
CREATE TABLE event_bans (
    event_id TEXT NOT NULL,
    viewer_id TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (event_id, viewer_id)
);
