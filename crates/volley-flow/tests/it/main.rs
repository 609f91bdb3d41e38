//! Integration tests of the flow engine: transcripts, check fixtures, API and properties.

mod api;
mod check;
mod props;
mod schedules;
mod support;
mod transcripts;
