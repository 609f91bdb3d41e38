//! The one integration-test binary of volley-events: virtual time only (every instant
//! is an argument), diagnostics fixtures in `tests/data/check`.

mod check;
mod props;
mod reminders;
mod schedules;
mod support;
mod timeline;
