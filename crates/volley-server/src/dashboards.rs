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
use axum::response::Response;
use serde::Deserialize;
use volley_flow::markdown::escape_html as esc;

use crate::App;
use crate::analytics::{Group, HandoffReport};
use crate::auth::Console;
use crate::charts::{Series, bar_chart, line_chart, number, table};
use crate::error::ApiError;
use crate::event_stats::EventReport;

/// The signed-in admin; a browser without a session goes to sign in.
fn admin(console: Result<Console, ApiError>) -> Result<Console, Box<Response>> {
    crate::console::admin_or_page(console, "Analytics are for admins.")
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
         <p><a href=\"/console\">Console</a> · <a href=\"/console/analytics\">Analytics</a> · \
         <a href=\"/console/analytics/handoffs\">Hand-offs</a> · \
         <a href=\"/console/analytics/contacts\">Contacts</a> · \
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
                o.conversions.to_string(),
                opt(o.conversion_percent, " %"),
                number(o.conversion_value),
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
                "Click-through",
                "Conversions",
                "Conversion (of clickers)",
                "Value"
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

// ---------------------------------------------------------------------------------
// Flows, contacts and the index

use crate::analytics::flows::{ContactReport, Days, FlowReport};

#[derive(Deserialize)]
pub struct FlowPageQuery {
    from: Option<String>,
    to: Option<String>,
    version: Option<String>,
    goal: Option<String>,
}

fn seconds(v: Option<f64>) -> String {
    opt(v, " s")
}

/// A period form (days, UTC) that keeps the other parameters.
fn period_form(h: &mut String, action: &str, from: &str, to: &str, extra: &[(&str, &str)]) {
    let _ = write!(
        h,
        "<form method=\"get\" action=\"{a}\" class=\"period\">\n\
         <label>From <input type=\"date\" name=\"from\" value=\"{f}\"></label>\n\
         <label>To <input type=\"date\" name=\"to\" value=\"{t}\"></label>\n",
        a = esc(action),
        f = esc(from),
        t = esc(to),
    );
    for (k, v) in extra {
        let _ = writeln!(
            h,
            "<label>{k} <input name=\"{k}\" value=\"{v}\"></label>",
            k = esc(k),
            v = esc(v)
        );
    }
    h.push_str("<button type=\"submit\">Show</button>\n</form>\n");
}

fn flow_html(r: &FlowReport, goal: Option<&str>) -> String {
    let mut h = String::with_capacity(64 * 1024);
    head(&mut h, &format!("Flow {}", r.flow));
    let version = r.version.map(|v| v.to_string()).unwrap_or_default();
    period_form(
        &mut h,
        &format!("/console/analytics/flows/{}", query_text(&r.flow)),
        &r.from,
        &r.to,
        &[("version", &version), ("goal", goal.unwrap_or(""))],
    );
    let csv = |table: &str| {
        let mut q = format!(
            "/api/analytics/flows/{}?format=csv&table={table}&from={}&to={}",
            query_text(&r.flow),
            r.from,
            r.to
        );
        if let Some(v) = r.version {
            let _ = write!(q, "&version={v}");
        }
        if let Some(g) = goal {
            let _ = write!(q, "&goal={}", query_text(g));
        }
        q
    };
    let summary = table(
        &["Figure", "Value"],
        &[
            vec!["Started".into(), r.started.to_string()],
            vec!["Completed".into(), r.completed.to_string()],
            vec!["Completion rate".into(), opt(r.completion_percent, " %")],
            vec!["Handed off".into(), r.handoffs.to_string()],
            vec!["Bot containment".into(), opt(r.containment_percent, " %")],
        ],
    );
    let _ = writeln!(
        h,
        "<section aria-labelledby=\"h-summary\"><h2 id=\"h-summary\">Summary</h2>{summary}</section>"
    );
    // The graph and the funnel.
    let steps_table = table(
        &[
            "Step",
            "Reached",
            "Conversion",
            "Stopped here",
            "Drop-off",
            "Time p50",
            "Answers",
        ],
        &r.steps
            .iter()
            .map(|s| {
                vec![
                    s.step.clone(),
                    s.reached.to_string(),
                    opt(s.conversion_percent, " %"),
                    s.stopped_here.to_string(),
                    opt(s.drop_off_percent, " %"),
                    seconds(s.time.p50_s),
                    s.answers.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    figure(
        &mut h,
        "graph",
        "Flow graph: where conversations went and stopped",
        &crate::analytics::graph::svg(r),
        &steps_table,
        &csv("steps"),
    );
    let funnel: Vec<(String, f64)> = r
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.reached as f64))
        .collect();
    figure(
        &mut h,
        "funnel",
        "Funnel: conversations reaching each step",
        &bar_chart("Conversations reaching each step", &funnel, ""),
        &steps_table,
        &csv("steps"),
    );
    let stopped: Vec<(String, f64)> = r
        .steps
        .iter()
        .filter(|s| s.stopped_here > 0)
        .map(|s| (s.step.clone(), s.stopped_here as f64))
        .collect();
    figure(
        &mut h,
        "drop-off",
        "Drop-off: conversations stopped at each step",
        &bar_chart("Conversations stopped at each step", &stopped, ""),
        &table(
            &["Step", "Stopped here", "Drop-off"],
            &r.steps
                .iter()
                .filter(|s| s.stopped_here > 0)
                .map(|s| {
                    vec![
                        s.step.clone(),
                        s.stopped_here.to_string(),
                        opt(s.drop_off_percent, " %"),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        &csv("steps"),
    );
    let times: Vec<(String, f64)> = r
        .steps
        .iter()
        .filter_map(|s| Some((s.step.clone(), s.time.p50_s?)))
        .collect();
    figure(
        &mut h,
        "time",
        "Time per step (median, seconds)",
        &bar_chart("Median time per step", &times, " s"),
        &table(
            &["Step", "Left", "Mean", "p50", "p90"],
            &r.steps
                .iter()
                .filter(|s| s.time.count > 0)
                .map(|s| {
                    vec![
                        s.step.clone(),
                        s.time.count.to_string(),
                        seconds(s.time.mean_s),
                        seconds(s.time.p50_s),
                        seconds(s.time.p90_s),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        &csv("steps"),
    );
    for q in r.questions.iter().filter(|q| !q.values.is_empty()) {
        let bars: Vec<(String, f64)> = q
            .values
            .iter()
            .map(|v| (v.value.clone(), v.count as f64))
            .collect();
        figure(
            &mut h,
            &format!("answers-{}", query_text(&q.step)),
            &format!("Answers to {} ({} answers)", q.step, q.answers),
            &bar_chart(&format!("Answers to {}", q.step), &bars, ""),
            &table(
                &["Value", "Answers", "Share"],
                &q.values
                    .iter()
                    .map(|v| vec![v.value.clone(), v.count.to_string(), opt(v.percent, " %")])
                    .collect::<Vec<_>>(),
            ),
            &csv("answers"),
        );
    }
    let goals: Vec<(String, f64)> = r
        .goals
        .iter()
        .map(|g| (g.goal.clone(), g.reached as f64))
        .collect();
    figure(
        &mut h,
        "goals",
        "Goals",
        &bar_chart("Conversations reaching each goal", &goals, ""),
        &table(
            &["Goal", "Reached", "Conversion", "Value"],
            &r.goals
                .iter()
                .map(|g| {
                    vec![
                        g.goal.clone(),
                        g.reached.to_string(),
                        opt(g.conversion_percent, " %"),
                        number(g.value),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        &csv("goals"),
    );
    for s in &r.splits {
        let bars: Vec<(String, f64)> = s
            .arms
            .iter()
            .filter_map(|a| Some((a.arm.clone(), a.rate_percent?)))
            .collect();
        figure(
            &mut h,
            &format!("split-{}", query_text(&s.step)),
            &format!("A/B split {}: {} rate by arm", s.step, s.conversion),
            &bar_chart(&format!("{} rate by arm", s.conversion), &bars, " %"),
            &table(
                &[
                    "Arm",
                    "Conversations",
                    "Converted",
                    "Rate",
                    "Difference",
                    "95 % interval",
                ],
                &s.arms
                    .iter()
                    .map(|a| {
                        vec![
                            a.arm.clone(),
                            a.conversations.to_string(),
                            a.converted.to_string(),
                            opt(a.rate_percent, " %"),
                            opt(a.difference_points, " pts"),
                            match (a.ci_low_points, a.ci_high_points) {
                                (Some(lo), Some(hi)) => {
                                    format!("{} to {} pts", number(lo), number(hi))
                                }
                                _ => "–".into(),
                            },
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            &csv("splits"),
        );
    }
    let latency = |name: &str, l: &crate::analytics::flows::Latency| {
        vec![
            name.to_string(),
            l.count.to_string(),
            seconds(l.mean_s),
            seconds(l.p50_s),
            seconds(l.p90_s),
            seconds(l.p99_s),
        ]
    };
    let _ = writeln!(
        h,
        "<section aria-labelledby=\"h-response\"><h2 id=\"h-response\">Response times</h2>{}</section>",
        table(
            &["Who", "Replies", "Mean", "p50", "p90", "p99"],
            &[
                latency("Bot (until visible)", &r.bot_response),
                latency("People (hand-off)", &r.human_response),
            ],
        )
    );
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// `GET /console/analytics/flows/{id}` (admins; `from`, `to` days, `version`, `goal`).
pub async fn flow_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<FlowPageQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = admin(console) {
        return *r;
    }
    let q = query.map(|Query(q)| q).unwrap_or(FlowPageQuery {
        from: None,
        to: None,
        version: None,
        goal: None,
    });
    let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let goal = some(q.goal);
    let result = async {
        let days = Days::parse(&app, some(q.from).as_deref(), some(q.to).as_deref())?;
        let version = match some(q.version) {
            Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
                ApiError::bad_request("bad-version", format!("version `{v}` is not a number"))
            })?),
            None => None,
        };
        crate::analytics::flows::flow_report(&app, &id, version, &days, goal.as_deref()).await
    }
    .await;
    match result {
        Ok(r) => crate::console::page(StatusCode::OK, flow_html(&r, goal.as_deref())),
        Err(e) => crate::console::message_page(e.status, "Cannot show the flow", &e.message),
    }
}

fn contacts_html(r: &ContactReport) -> String {
    let mut h = String::with_capacity(32 * 1024);
    head(&mut h, "Contacts: returning and cohorts");
    period_form(&mut h, "/console/analytics/contacts", &r.from, &r.to, &[]);
    let csv = |table: &str| {
        format!(
            "/api/analytics/contacts?format=csv&table={table}&from={}&to={}",
            r.from, r.to
        )
    };
    let xs = |f: &dyn Fn(&crate::analytics::flows::ActiveDay) -> i64| -> Vec<(f64, f64)> {
        r.days
            .iter()
            .enumerate()
            .map(|(i, d)| (i as f64, f(d) as f64))
            .collect()
    };
    let chart = line_chart(
        &format!("New and returning contacts per day, {} to {}", r.from, r.to),
        "day of the period",
        "contacts",
        &[
            Series {
                label: "new".into(),
                points: xs(&|d| d.new),
            },
            Series {
                label: "returning".into(),
                points: xs(&|d| d.returning),
            },
        ],
    );
    figure(
        &mut h,
        "active",
        &format!(
            "Active contacts per day ({} new, {} returning, {} returning)",
            r.new,
            r.returning,
            opt(r.returning_percent, " %")
        ),
        &chart,
        &table(
            &["Day", "New", "Returning"],
            &r.days
                .iter()
                .map(|d| vec![d.day.clone(), d.new.to_string(), d.returning.to_string()])
                .collect::<Vec<_>>(),
        ),
        &csv("days"),
    );
    let n = |v: Option<i64>, p: Option<f64>| match v {
        Some(v) => format!("{v} ({})", opt(p, " %")),
        None => "–".into(),
    };
    let d7: Vec<(String, f64)> = r
        .cohorts
        .iter()
        .filter_map(|c| Some((c.day.clone(), c.d7_percent?)))
        .collect();
    figure(
        &mut h,
        "cohorts",
        "Cohorts by first day: active 1, 7 and 30 days later",
        &bar_chart("Day-7 retention by cohort", &d7, " %"),
        &table(
            &["First day", "Contacts", "D1", "D7", "D30"],
            &r.cohorts
                .iter()
                .map(|c| {
                    vec![
                        c.day.clone(),
                        c.contacts.to_string(),
                        n(c.d1, c.d1_percent),
                        n(c.d7, c.d7_percent),
                        n(c.d30, c.d30_percent),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        &csv("cohorts"),
    );
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// `GET /console/analytics/contacts` (admins; `from`, `to` days).
pub async fn contacts_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
    query: Result<Query<PeriodQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = admin(console) {
        return *r;
    }
    let (from, to) = match query {
        Ok(Query(q)) => (q.from, q.to),
        Err(_) => (None, None),
    };
    let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let result = async {
        let days = Days::parse(&app, some(from).as_deref(), some(to).as_deref())?;
        crate::analytics::flows::contact_report(&app, &days).await
    }
    .await;
    match result {
        Ok(r) => crate::console::page(StatusCode::OK, contacts_html(&r)),
        Err(e) => crate::console::message_page(e.status, "Cannot show contacts", &e.message),
    }
}

/// `GET /console/analytics` (admins): every report, with each flow's and event's.
pub async fn index_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
) -> Response {
    if let Err(r) = admin(console) {
        return *r;
    }
    let mut h = String::with_capacity(8 * 1024);
    head(&mut h, "Analytics");
    h.push_str(
        "<ul>\n<li><a href=\"/console/analytics/handoffs\">Hand-offs</a>: first response, \
         replies, resolution, CSAT per queue and agent</li>\n\
         <li><a href=\"/console/analytics/contacts\">Contacts</a>: new and returning, \
         D1/D7/D30 cohorts</li>\n</ul>\n<h2>Flows</h2>\n<ul>\n",
    );
    for p in app.flows.all() {
        let _ = writeln!(
            h,
            "<li><a href=\"/console/analytics/flows/{}\">{}</a> (version {})</li>",
            query_text(&p.id),
            esc(&p.id),
            p.version
        );
    }
    h.push_str("</ul>\n<h2>Events</h2>\n<ul>\n");
    for e in app.events.all() {
        let _ = writeln!(
            h,
            "<li><a href=\"/console/analytics/events/{}\">{}</a></li>",
            query_text(&e.event.id),
            esc(&e.event.title),
        );
    }
    h.push_str("</ul>\n</main>\n</body>\n</html>\n");
    crate::console::page(StatusCode::OK, h)
}
