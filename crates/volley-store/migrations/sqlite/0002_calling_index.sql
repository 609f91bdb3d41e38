-- Conversations waiting for an HTTP step's response are re-sent at start-up; a
-- partial index finds the few of them without scanning every conversation.
CREATE INDEX conversations_calling ON conversations (id) WHERE status = 'calling';
