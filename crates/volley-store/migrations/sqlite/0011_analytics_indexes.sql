-- Reports by period: hand-offs by when they were requested, conversations by when they
-- started (handoff rate, containment).
CREATE INDEX handoffs_by_time ON handoffs (requested_at);
CREATE INDEX conversations_by_time ON conversations (created_at);
