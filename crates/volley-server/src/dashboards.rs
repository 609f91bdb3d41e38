//! The console's analytics pages (admins): an event's showing (`event_stats.rs`) and
//! hand-off performance (`analytics.rs`), drawn as server-side SVG charts
//! (`charts.rs`), each chart with its numbers as a table beside it and a link to the
//! CSV of the same report. The pages only draw reports; every figure is computed
//! where its report is.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use volley_flow::markdown::escape_html as esc;

use crate::App;
use crate::analytics::{Group, HandoffReport};
use crate::auth::{Console, Role};
use crate::charts::{Series, bar_chart, line_chart, number, table};
use crate::error::ApiError;
use crate::event_stats::EventReport;

/// The signed-in admin; a browser without a session goes to sign in.
fn admin(console: Result<Console, ApiError>) -> Result<Console, Box<Response>> {
    match console {
        Ok(c) if c.staff.role == Role::Admin => Ok(c),
        Ok(_) => Err(Box::new(crate::console::message_page(
            StatusCode::FORBIDDEN,
            "Not for your role",
            "Analytics are for admins.",
        ))),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Err(Box::new(Redirect::to("/console/login").into_response()))
        }
        Err(e) => Err(Box::new(crate::console::message_page(
            e.status,
            "Cannot open the console",
            &e.message,
        ))),
    }
}

fn query_text(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn head(h: &mut String, title: &str) {
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t} · Volley</title>\n<link rel=\"stylesheet\" href=\"/console/console.css\">\n\
         </head>\n<body class=\"wide\">\n<main>\n\
         <p><a href=\"/console\">Console</a> · <a href=\"/console/analytics/handoffs\">Hand-offs</a> · \
         <a href=\"/console/webhooks\">Webhooks</a> · <a href=\"/console/account\">Account</a></p>\n\
         <h1>{t}</h1>\n",
        t = esc(title),
    );
}

/// A chart with its table beside it.
fn figure(h: &mut String, id: &str, heading: &str, chart: &str, numbers: &str, csv: &str) {
    let _ = write!(
        h,
        "<section class=\"dashboard-figure\" id=\"{id}\" aria-labelledby=\"h-{id}\">\n\
         <h2 id=\"h-{id}\">{heading}</h2>\n<div class=\"chart-and-table\">\n\
         <figure>{chart}</figure>\n<div><div class=\"numbers\">{numbers}</div>\
         <p><a href=\"{csv}\" download>CSV</a></p></div>\n</div>\n</section>\n",
        heading = esc(heading),
        csv = esc(csv),
    );
}

fn opt(v: Option<f64>, suffix: &str) -> String {
    v.map(|v| format!("{}{suffix}", number(v)))
        .unwrap_or_else(|| "–".into())
}

fn event_html(r: &EventReport) -> String {
    let mut h = String::with_capacity(32 * 1024);
    head(&mut h, &format!("Event {}", r.event_id));
    let csv = format!(
        "/api/analytics/events/{}?format=csv{}",
        query_text(&r.event_id),
        r.showing_id
            .as_deref()
            .map(|s| format!("&showing={}", query_text(s)))
            .unwrap_or_default()
    );
    match &r.showing_id {
        Some(s) => {
            let _ = writeln!(h, "<p>Showing <code>{}</code></p>", esc(s));
        }
        None => h.push_str("<p>No showing has been watched or registered for yet.</p>\n"),
    }
    if r.showings.len() > 1 {
        h.push_str("<nav aria-label=\"Showings\"><p>Other showings:</p><ul>\n");
        for s in &r.showings {
            let _ = writeln!(
                h,
                "<li><a href=\"/console/analytics/events/{}?showing={}\">{}</a></li>",
                query_text(&r.event_id),
                query_text(s),
                esc(s)
            );
        }
        h.push_str("</ul></nav>\n");
    }
    let summary = table(
        &["Figure", "Value"],
        &[
            vec!["Registrations".into(), r.registrations.to_string()],
            vec!["Attendees".into(), r.attendees.to_string()],
            vec![
                "Registered attendees".into(),
                r.registered_attendees.to_string(),
            ],
            vec![
                "Attendance rate".into(),
                opt(r.attendance_rate_percent, " %"),
            ],
            vec!["Live attendees".into(), r.live_attendees.to_string()],
            vec!["Replay attendees".into(), r.replay_attendees.to_string()],
            vec!["Peak concurrency".into(), r.peak_concurrency.to_string()],
            vec!["Average concurrency".into(), opt(r.average_concurrency, "")],
            vec!["Mean watch time".into(), opt(r.watch_time.mean_s, " s")],
            vec![
                "Completed (≥ 95 %)".into(),
                r.watch_time.completed.to_string(),
            ],
            vec![
                "Completion rate".into(),
                opt(r.watch_time.completion_rate_percent, " %"),
            ],
            vec!["Chat messages".into(), r.chat.messages.to_string()],
        ],
    );
    let _ = writeln!(
        h,
        "<section aria-labelledby=\"h-summary\"><h2 id=\"h-summary\">Summary</h2>{summary}\
         <p><a href=\"{}\" download>CSV of every figure</a></p></section>",
        esc(&csv)
    );
    let minute = |m: usize| m as f64;
    let chart = line_chart(
        "Concurrent viewers over the live window",
        "Minute from the start",
        "Viewers",
        &[
            Series {
                label: "Peak".into(),
                points: r
                    .concurrency
                    .iter()
                    .map(|c| (minute(c.minute), c.peak as f64))
                    .collect(),
            },
            Series {
                label: "Average".into(),
                points: r
                    .concurrency
                    .iter()
                    .filter_map(|c| c.average.map(|a| (minute(c.minute), a)))
                    .collect(),
            },
        ],
    );
    let rows: Vec<Vec<String>> = r
        .concurrency
        .iter()
        .map(|c| vec![c.minute.to_string(), c.peak.to_string(), opt(c.average, "")])
        .collect();
    figure(
        &mut h,
        "concurrency",
        "Concurrency",
        &chart,
        &table(&["Minute", "Peak", "Average"], &rows),
        &csv,
    );
    let chart = line_chart(
        "Retention: attendees who watched each minute",
        "Minute of the media",
        "% of attendees",
        &[Series {
            label: "Retention".into(),
            points: r
                .retention
                .iter()
                .filter_map(|m| m.percent.map(|p| (minute(m.minute), p)))
                .collect(),
        }],
    );
    let rows: Vec<Vec<String>> = r
        .retention
        .iter()
        .map(|m| {
            vec![
                m.minute.to_string(),
                m.viewers.to_string(),
                opt(m.percent, " %"),
            ]
        })
        .collect();
    figure(
        &mut h,
        "retention",
        "Retention",
        &chart,
        &table(&["Minute", "Viewers", "Share"], &rows),
        &csv,
    );
    let chart = line_chart(
        "Chat messages per minute",
        "Minute of the media",
        "Messages",
        &[Series {
            label: "Messages".into(),
            points: r
                .chat
                .per_minute
                .iter()
                .map(|m| (minute(m.minute), m.messages as f64))
                .collect(),
        }],
    );
    let mut rows: Vec<Vec<String>> = vec![vec!["lobby".into(), r.chat.lobby.to_string()]];
    rows.extend(
        r.chat
            .per_minute
            .iter()
            .map(|m| vec![m.minute.to_string(), m.messages.to_string()]),
    );
    figure(
        &mut h,
        "chat",
        "Chat",
        &chart,
        &table(&["Minute", "Messages"], &rows),
        &csv,
    );
    let bars: Vec<(String, f64)> = r
        .watch_time
        .buckets
        .iter()
        .map(|b| {
            (
                format!("{}–{} %", b.from_percent, b.to_percent),
                b.viewers as f64,
            )
        })
        .collect();
    let rows: Vec<Vec<String>> = bars
        .iter()
        .map(|(l, v)| vec![l.clone(), number(*v)])
        .collect();
    figure(
        &mut h,
        "watch-time",
        "Watch time",
        &bar_chart("Attendees by share of the media watched", &bars, "viewers"),
        &table(&["Share watched", "Attendees"], &rows),
        &csv,
    );
    for p in &r.polls {
        let bars: Vec<(String, f64)> = p
            .options
            .iter()
            .map(|o| (o.option.clone(), o.votes as f64))
            .collect();
        let mut rows: Vec<Vec<String>> = p
            .options
            .iter()
            .map(|o| vec![o.option.clone(), o.votes.to_string(), opt(o.percent, " %")])
            .collect();
        rows.push(vec![
            "Voters / present".into(),
            format!("{} / {}", p.voters, p.present),
            opt(p.participation_percent, " %"),
        ]);
        figure(
            &mut h,
            &format!("poll-{}", esc(&p.id)),
            &format!("Poll: {}", p.question),
            &bar_chart(&p.question, &bars, "votes"),
            &table(&["Option", "Votes", "Share"], &rows),
            &csv,
        );
    }
    let rows: Vec<Vec<String>> = r
        .offers
        .iter()
        .map(|o| {
            vec![
                o.text.clone(),
                o.impressions.to_string(),
                o.viewers.to_string(),
                o.clicks.to_string(),
                o.clickers.to_string(),
                opt(o.click_through_percent, " %"),
            ]
        })
        .collect();
    let _ = writeln!(
        h,
        "<section id=\"offers\" aria-labelledby=\"h-offers\"><h2 id=\"h-offers\">Offers</h2>{}\
         <p><a href=\"{}\" download>CSV</a></p></section>",
        table(
            &[
                "Offer",
                "Impressions",
                "Viewers shown",
                "Clicks",
                "Clickers",
                "Click-through"
            ],
            &rows
        ),
        esc(&csv)
    );
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

#[derive(Deserialize)]
pub struct EventPageQuery {
    showing: Option<String>,
}

/// `GET /console/analytics/events/{id}` (admins; `showing=` picks a showing).
pub async fn event_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<EventPageQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = admin(console) {
        return *r;
    }
    let showing = query.ok().and_then(|Query(q)| q.showing);
    let showing = showing.as_deref().filter(|s| !s.is_empty());
    match crate::event_stats::report(&app, &id, showing).await {
        Ok(r) => crate::console::page(StatusCode::OK, event_html(&r)),
        Err(e) => crate::console::message_page(e.status, "Cannot show the event", &e.message),
    }
}

fn handoff_html(r: &HandoffReport) -> String {
    let mut h = String::with_capacity(16 * 1024);
    head(&mut h, "Hand-offs");
    let _ = writeln!(
        h,
        "<form method=\"get\" action=\"/console/analytics/handoffs\">\
         <label>From <input name=\"from\" value=\"{f}\"></label> \
         <label>To <input name=\"to\" value=\"{t}\"></label> \
         <button type=\"submit\">Show</button></form>",
        f = esc(&r.from),
        t = esc(&r.to),
    );
    let csv = format!(
        "/api/analytics/handoffs?from={}&to={}&format=csv",
        query_text(&r.from),
        query_text(&r.to)
    );
    let line = |name: &str, g: &Group| -> Vec<String> {
        vec![
            name.to_string(),
            g.handoffs.to_string(),
            g.resolved.to_string(),
            opt(g.first_response.p50_s, " s"),
            opt(g.first_response.p90_s, " s"),
            opt(g.resolution.p50_s, " s"),
            opt(g.csat.satisfied_percent, " %"),
        ]
    };
    let headers = [
        "Group",
        "Hand-offs",
        "Resolved",
        "First response p50",
        "First response p90",
        "Resolution p50",
        "CSAT satisfied",
    ];
    let mut rows = vec![line("Overall", &r.overall)];
    rows.extend(
        r.queues
            .iter()
            .map(|q| line(&format!("Queue {}", q.queue), &q.figures)),
    );
    rows.extend(r.agents.iter().map(|a| {
        let name = if a.agent.is_empty() {
            &a.agent_id
        } else {
            &a.agent
        };
        line(&format!("Agent {name}"), &a.figures)
    }));
    let _ = writeln!(
        h,
        "<section aria-labelledby=\"h-summary\"><h2 id=\"h-summary\">Summary</h2>\
         <p>{} conversations started; hand-off rate {}, containment {}{}.</p>{}\
         <p><a href=\"{}\" download>CSV</a></p></section>",
        r.conversations_started,
        opt(r.handoff_rate_percent, " %"),
        opt(r.containment_rate_percent, " %"),
        if r.truncated { " (truncated)" } else { "" },
        table(&headers, &rows),
        esc(&csv),
    );
    type Groups<'a> = [(&'a str, &'a str, Vec<(String, &'a Group)>); 2];
    let groups: Groups = [
        (
            "queues",
            "queue",
            r.queues
                .iter()
                .map(|q| (q.queue.clone(), &q.figures))
                .collect(),
        ),
        (
            "agents",
            "agent",
            r.agents
                .iter()
                .map(|a| {
                    let name = if a.agent.is_empty() {
                        &a.agent_id
                    } else {
                        &a.agent
                    };
                    (name.clone(), &a.figures)
                })
                .collect(),
        ),
    ];
    for (id, what, list) in groups {
        let bars: Vec<(String, f64)> = list
            .iter()
            .map(|(n, g)| (n.clone(), g.handoffs as f64))
            .collect();
        let rows: Vec<Vec<String>> = list.iter().map(|(n, g)| line(n, g)).collect();
        figure(
            &mut h,
            &format!("{id}-handoffs"),
            &format!("Hand-offs per {what}"),
            &bar_chart(&format!("Hand-offs per {what}"), &bars, "hand-offs"),
            &table(&headers, &rows),
            &csv,
        );
        let bars: Vec<(String, f64)> = list
            .iter()
            .filter_map(|(n, g)| g.first_response.p50_s.map(|v| (n.clone(), v)))
            .collect();
        let rows: Vec<Vec<String>> = bars
            .iter()
            .map(|(n, v)| vec![n.clone(), number(*v)])
            .collect();
        figure(
            &mut h,
            &format!("{id}-first-response"),
            &format!("First response (median) per {what}"),
            &bar_chart(
                &format!("First response (median) per {what}"),
                &bars,
                "seconds",
            ),
            &table(&[what, "First response p50 (s)"], &rows),
            &csv,
        );
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

#[derive(Deserialize)]
pub struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /console/analytics/handoffs` (admins; `from`, `to` in RFC 3339, by default the
/// last 7 days).
pub async fn handoffs_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
    query: Result<Query<PeriodQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = admin(console) {
        return *r;
    }
    let now = app.clock.now();
    let (from, to) = match query {
        Ok(Query(q)) => (q.from, q.to),
        Err(_) => (None, None),
    };
    let to = to
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| now.to_string());
    let from = from
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| (now - jiff::SignedDuration::from_hours(7 * 24)).to_string());
    match crate::analytics::handoff_report(&app, &from, &to).await {
        Ok(r) => crate::console::page(StatusCode::OK, handoff_html(&r)),
        Err(e) => crate::console::message_page(e.status, "Cannot show hand-offs", &e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{AgentGroup, QueueGroup, Stat};

    #[test]
    fn the_handoff_page_draws_queues_and_agents_with_their_tables() {
        let g = |handoffs: usize, p50: f64| Group {
            handoffs,
            resolved: handoffs,
            first_response: Stat {
                count: handoffs,
                p50_s: Some(p50),
                ..Stat::default()
            },
            ..Group::default()
        };
        let r = HandoffReport {
            from: "2026-12-01T00:00:00Z".into(),
            to: "2026-12-08T00:00:00Z".into(),
            conversations_started: 10,
            handoff_rate_percent: Some(30.0),
            containment_rate_percent: Some(70.0),
            truncated: false,
            overall: g(3, 40.0),
            queues: vec![
                QueueGroup {
                    queue: "sales".into(),
                    figures: g(2, 30.0),
                },
                QueueGroup {
                    queue: "<b>support</b>".into(),
                    figures: g(1, 90.0),
                },
            ],
            agents: vec![AgentGroup {
                agent_id: "u1".into(),
                agent: "Ana".into(),
                figures: g(3, 40.0),
            }],
        };
        let html = handoff_html(&r);
        for needle in [
            "<title>Hand-offs per queue</title>",
            "<title>Hand-offs per agent</title>",
            "<title>First response (median) per queue</title>",
            ">sales</text>",
            ">&lt;b&gt;support&lt;/b&gt;</text>",
            "<td>Queue sales</td><td>2</td><td>2</td><td>30 s</td>",
            "<td>Agent Ana</td><td>3</td>",
            "<td>sales</td><td>30</td>",
            "containment 70 %",
            "/api/analytics/handoffs?from=2026-12-01T00%3A00%3A00Z&amp;to=2026-12-08T00%3A00%3A00Z&amp;format=csv",
        ] {
            assert!(html.contains(needle), "{needle:?} in\n{html}");
        }
        assert!(!html.contains("<b>support"));
    }
}
