//! The limits of premiere rooms, in one place (documented in docs/watching.md).

/// Characters of a chat message (and of a moderator's answer).
pub const MAX_CHAT_CHARS: usize = 500;
/// Characters of a question.
pub const MAX_QUESTION_CHARS: usize = 300;
/// Characters of a display name.
pub const MAX_NAME_CHARS: usize = 40;
/// Characters of a report's reason kept.
pub const MAX_REASON_CHARS: usize = 200;
/// Chat token bucket: messages at once, then per second.
pub const CHAT_BURST: f64 = 5.0;
pub const CHAT_PER_SECOND: f64 = 1.0;
pub const ASKS_PER_MINUTE: usize = 3;
pub const REPORTS_PER_MINUTE: usize = 10;
/// Questions a showing takes.
pub const MAX_QUESTIONS: usize = 2_000;
/// Slow mode's longest interval.
pub const MAX_SLOW_SECONDS: u64 = 600;
pub const DEFAULT_MUTE_MINUTES: u64 = 10;
pub const MAX_MUTE_MINUTES: u64 = 24 * 60;
/// Chat messages in `hello` for a live showing; for a replay (and kept per room).
pub const HELLO_CHAT: usize = 200;
pub const REPLAY_CHAT: usize = 5_000;
/// Latest questions in `hello`.
pub const HELLO_QUESTIONS: usize = 200;
/// Undelivered broadcasts per viewer before they are disconnected.
pub const VIEWER_QUEUE: usize = 1_024;
/// Commands waiting for a room; and taken per batch.
pub const COMMAND_QUEUE: usize = 8_192;
pub const MAX_BATCH: usize = 1_024;
/// Viewers of one showing at a time.
pub const MAX_VIEWERS: usize = 20_000;
/// Bytes of one client message.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Seconds of media whose watching is recorded per viewer (longer media: the first).
pub const MAX_WATCH_SECONDS: usize = 6 * 3600;
/// Client messages of one connection awaiting their answer; beyond, the connection's
/// next message is not read until the first is answered.
pub const MAX_PENDING: usize = 32;
/// Bytes tungstenite reads from a viewer's socket at a time (its buffer, per connection).
pub const READ_BUFFER: usize = 256;
/// Frames written to a viewer with one system call at most.
pub const MAX_FRAMES_PER_WRITE: usize = 64;
