//! Server integration tests: a real server, a real SQLite file, real clients.

mod abuse;
mod analytics;
mod auth;
mod browser;
mod campaigns;
mod channels;
mod event_analytics;
mod events;
mod exports;
mod handoff;
mod http;
mod inbound;
mod outbound;
mod premieres;
mod scheduling;
mod support;
mod webhooks;
mod websocket;
