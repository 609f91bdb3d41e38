-- Console accounts: the people who run Volley (admins, agents, moderators).
-- `email` is stored lowercased. `password_hash` (Argon2id, PHC string) is NULL until
-- the user sets a password through a one-time setup link: there is no default password.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- admin, agent or moderator.
    role TEXT NOT NULL,
    password_hash TEXT,
    -- Conversations an agent handles at once (handoff assignment).
    capacity INTEGER NOT NULL DEFAULT 5,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- Console sign-ins. Only the SHA-256 of the cookie's token is kept.
CREATE TABLE user_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    -- The token state-changing requests must carry (X-CSRF-Token or a `csrf` field).
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

CREATE INDEX user_sessions_by_user ON user_sessions (user_id);

-- One-time links to set a password (first sign-in, reset). SHA-256 of the token.
CREATE TABLE setup_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    expires_at BIGINT NOT NULL
);

CREATE INDEX setup_tokens_by_user ON setup_tokens (user_id);
