-- Offer conversions reported by the seller (`POST /api/events/{id}/conversions`): a
-- viewer of a showing bought (or signed up) after an offer. `order_id` makes a repeated
-- report of the same order count once.
CREATE TABLE offer_conversions (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    showing_id TEXT NOT NULL,
    viewer_id TEXT NOT NULL,
    offer TEXT NOT NULL,
    value REAL,
    order_id TEXT,
    at BIGINT NOT NULL
);
CREATE UNIQUE INDEX offer_conversions_order ON offer_conversions (event_id, order_id)
    WHERE order_id IS NOT NULL;
CREATE INDEX offer_conversions_showing ON offer_conversions (showing_id, offer);
CREATE INDEX event_registrations_email ON event_registrations (event_id, email);
