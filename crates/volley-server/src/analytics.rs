//! Reports: hand-off performance over a period (first response, wait, resolution in
//! calendar time and in each queue's business hours, handoff and containment rates,
//! CSAT), overall, per queue and per agent, as JSON or CSV. The definitions are in
//! docs/metrics.md and are the ones computed here, nowhere else.
//!
//! Everything is read from the `handoffs` rows (one per hand-off, with its timestamps),
//! by period through an index: no log is replayed.

pub mod flows;
pub mod graph;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volley_store::{HandoffRow, ReplyRow};

use crate::App;
use crate::auth::{Scoped, scope};
use crate::error::{ApiError, ErrorBody};

/// Hand-offs one report reads (a longer period is reported as `truncated`).
pub const MAX_REPORT_HANDOFFS: i64 = 200_000;
/// The longest period of one report (days).
pub const MAX_REPORT_DAYS: i64 = 366;

/// Durations in seconds over the hand-offs that have one.
#[derive(Debug, Default, Serialize, ToSchema, PartialEq)]
pub struct Stat {
    pub count: usize,
    pub mean_s: Option<f64>,
    /// Nearest-rank percentiles.
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub max_s: Option<f64>,
}

fn stat(mut ms: Vec<i64>) -> Stat {
    if ms.is_empty() {
        return Stat::default();
    }
    ms.sort_unstable();
    let n = ms.len();
    let rank = |p: f64| ms[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
    Stat {
        count: n,
        mean_s: Some((ms.iter().sum::<i64>() as f64 / n as f64 / 1000.0 * 1000.0).round() / 1000.0),
        p50_s: Some(rank(0.5)),
        p90_s: Some(rank(0.9)),
        max_s: Some(ms[n - 1] as f64 / 1000.0),
    }
}

#[derive(Debug, Default, Serialize, ToSchema, PartialEq)]
pub struct Csat {
    /// Ratings given (1–5).
    pub responses: usize,
    /// Ratings of 4 or 5.
    pub satisfied: usize,
    /// satisfied / responses, in %.
    pub satisfied_percent: Option<f64>,
    /// responses / resolved hand-offs, in %.
    pub response_rate_percent: Option<f64>,
}

/// The figures of one group of hand-offs.
#[derive(Debug, Default, Serialize, ToSchema, PartialEq)]
pub struct Group {
    pub handoffs: usize,
    pub assigned: usize,
    pub replied: usize,
    pub resolved: usize,
    /// Request → first reply by a person, calendar time.
    pub first_response: Stat,
    /// Every reply by a person sent in the period: the participant's wait since their
    /// first message the reply answers (calendar time).
    pub reply: Stat,
    /// The same, counting only the queue's open hours.
    pub first_response_business: Stat,
    /// Request → assignment to an agent.
    pub wait: Stat,
    /// Request → resolution, calendar time.
    pub resolution: Stat,
    pub resolution_business: Stat,
    pub csat: Csat,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueGroup {
    pub queue: String,
    #[serde(flatten)]
    pub figures: Group,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentGroup {
    pub agent_id: String,
    pub agent: String,
    #[serde(flatten)]
    pub figures: Group,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HandoffReport {
    pub from: String,
    pub to: String,
    /// Conversations started in the period.
    pub conversations_started: i64,
    /// Hand-offs requested in the period / conversations started in it, in %.
    pub handoff_rate_percent: Option<f64>,
    /// 100 − handoff rate: conversations the bot handled alone.
    pub containment_rate_percent: Option<f64>,
    /// More than `MAX_REPORT_HANDOFFS` hand-offs: the report covers the first ones.
    pub truncated: bool,
    pub overall: Group,
    pub queues: Vec<QueueGroup>,
    /// Per agent: the hand-offs assigned to them (at the end: transfers count for the
    /// agent holding it last).
    pub agents: Vec<AgentGroup>,
}

fn pct(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

/// The figures of `rows`, business hours by each row's queue calendar.
fn group(app: &App, rows: &[&HandoffRow], replies: &[&ReplyRow]) -> Group {
    let business = |q: &str, from: i64, to: i64| -> i64 {
        let hours = app
            .config
            .handoff
            .queues
            .get(q)
            .and_then(|c| c.hours.as_ref());
        match (
            hours,
            Timestamp::from_millisecond(from),
            Timestamp::from_millisecond(to),
        ) {
            (Some(cal), Ok(f), Ok(t)) => cal.open_duration(f, t).as_millis() as i64,
            _ => (to - from).max(0),
        }
    };
    let since = |r: &HandoffRow, at: Option<i64>| at.map(|a| (a - r.requested_at).max(0));
    let mut g = Group {
        handoffs: rows.len(),
        assigned: rows.iter().filter(|r| r.assigned_at.is_some()).count(),
        replied: rows.iter().filter(|r| r.first_reply_at.is_some()).count(),
        resolved: rows.iter().filter(|r| r.resolved_at.is_some()).count(),
        first_response: stat(
            rows.iter()
                .filter_map(|r| since(r, r.first_reply_at))
                .collect(),
        ),
        reply: stat(replies.iter().map(|r| r.wait_ms).collect()),
        first_response_business: stat(
            rows.iter()
                .filter_map(|r| {
                    r.first_reply_at
                        .map(|a| business(&r.queue, r.requested_at, a))
                })
                .collect(),
        ),
        wait: stat(
            rows.iter()
                .filter_map(|r| since(r, r.assigned_at))
                .collect(),
        ),
        resolution: stat(
            rows.iter()
                .filter_map(|r| since(r, r.resolved_at))
                .collect(),
        ),
        resolution_business: stat(
            rows.iter()
                .filter_map(|r| r.resolved_at.map(|a| business(&r.queue, r.requested_at, a)))
                .collect(),
        ),
        csat: Csat::default(),
    };
    let ratings: Vec<i64> = rows.iter().filter_map(|r| r.csat).collect();
    let satisfied = ratings.iter().filter(|c| **c >= 4).count();
    g.csat = Csat {
        responses: ratings.len(),
        satisfied,
        satisfied_percent: pct(satisfied, ratings.len()),
        response_rate_percent: pct(ratings.len(), g.resolved),
    };
    g
}

#[derive(Deserialize, IntoParams)]
pub struct ReportQuery {
    /// Start of the period (RFC 3339), inclusive.
    pub from: String,
    /// End of the period (RFC 3339), exclusive.
    pub to: String,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn instant(name: &str, v: &str) -> Result<i64, ApiError> {
    v.parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| ApiError::bad_request("bad-instant", format!("`{name}`: {e} (RFC 3339)")))
}

/// The hand-off report over `from..to` (RFC 3339), also drawn by the console's
/// dashboard (`dashboards.rs`).
pub(crate) async fn handoff_report(
    app: &App,
    from_text: &str,
    to_text: &str,
) -> Result<HandoffReport, ApiError> {
    let (from, to) = (instant("from", from_text)?, instant("to", to_text)?);
    if to <= from || to - from > MAX_REPORT_DAYS * 86_400_000 {
        return Err(ApiError::bad_request(
            "bad-period",
            format!("`to` must be after `from`, at most {MAX_REPORT_DAYS} days later"),
        ));
    }
    let rows = app
        .store
        .handoffs_between(from, to, MAX_REPORT_HANDOFFS + 1)
        .await?;
    let truncated = rows.len() as i64 > MAX_REPORT_HANDOFFS;
    let rows = &rows[..rows.len().min(MAX_REPORT_HANDOFFS as usize)];
    let started = app.store.conversations_started(from, to).await?;
    let names: BTreeMap<String, String> = app
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let replies = app
        .store
        .replies_between(from, to, MAX_REPORT_HANDOFFS * 10)
        .await?;
    let all: Vec<&HandoffRow> = rows.iter().collect();
    let all_replies: Vec<&ReplyRow> = replies.iter().collect();
    type Rows<'a> = (Vec<&'a HandoffRow>, Vec<&'a ReplyRow>);
    let mut by_queue: BTreeMap<&str, Rows> = BTreeMap::new();
    let mut by_agent: BTreeMap<&str, Rows> = BTreeMap::new();
    for r in rows {
        by_queue.entry(r.queue.as_str()).or_default().0.push(r);
        if let Some(a) = r.agent_id.as_deref() {
            by_agent.entry(a).or_default().0.push(r);
        }
    }
    for r in &replies {
        by_queue.entry(r.queue.as_str()).or_default().1.push(r);
        by_agent.entry(r.agent_id.as_str()).or_default().1.push(r);
    }
    let report = HandoffReport {
        from: from_text.to_string(),
        to: to_text.to_string(),
        conversations_started: started,
        handoff_rate_percent: pct(rows.len(), started as usize),
        containment_rate_percent: pct(rows.len(), started as usize)
            .map(|p| ((100.0 - p) * 10.0).round() / 10.0),
        truncated,
        overall: group(app, &all, &all_replies),
        queues: by_queue
            .into_iter()
            .map(|(q, (r, replies))| QueueGroup {
                queue: q.into(),
                figures: group(app, &r, &replies),
            })
            .collect(),
        agents: by_agent
            .into_iter()
            .map(|(a, (r, replies))| AgentGroup {
                agent_id: a.into(),
                agent: names.get(a).cloned().unwrap_or_default(),
                figures: group(app, &r, &replies),
            })
            .collect(),
    };
    Ok(report)
}

/// `GET /api/analytics/handoffs`: hand-off performance over a period (scope `admin`).
#[utoipa::path(
    get,
    path = "/api/analytics/handoffs",
    tag = "analytics",
    params(ReportQuery),
    responses((status = 200, body = HandoffReport, description = "JSON, or CSV with `format=csv` (one row per group)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn handoffs(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad_request(
                "bad-format",
                format!("format `{other}`: use json or csv"),
            ));
        }
    };
    let report = handoff_report(&app, &q.from, &q.to).await?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let mut out = crate::exports::csv_line(
        [
            "scope",
            "name",
            "handoffs",
            "assigned",
            "replied",
            "resolved",
            "first_response_p50_s",
            "first_response_p90_s",
            "first_response_mean_s",
            "first_response_business_p50_s",
            "reply_count",
            "reply_p50_s",
            "reply_p90_s",
            "wait_p50_s",
            "resolution_p50_s",
            "resolution_business_p50_s",
            "csat_responses",
            "csat_satisfied_percent",
            "csat_response_rate_percent",
        ]
        .map(String::from),
    );
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut line = |scope: &str, name: &str, g: &Group| {
        out.extend(crate::exports::csv_line([
            scope.to_string(),
            name.to_string(),
            g.handoffs.to_string(),
            g.assigned.to_string(),
            g.replied.to_string(),
            g.resolved.to_string(),
            opt(g.first_response.p50_s),
            opt(g.first_response.p90_s),
            opt(g.first_response.mean_s),
            opt(g.first_response_business.p50_s),
            g.reply.count.to_string(),
            opt(g.reply.p50_s),
            opt(g.reply.p90_s),
            opt(g.wait.p50_s),
            opt(g.resolution.p50_s),
            opt(g.resolution_business.p50_s),
            g.csat.responses.to_string(),
            opt(g.csat.satisfied_percent),
            opt(g.csat.response_rate_percent),
        ]));
    };
    line("overall", "", &report.overall);
    for q in &report.queues {
        line("queue", &q.queue, &q.figures);
    }
    for a in &report.agents {
        line("agent", &a.agent, &a.figures);
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::stat;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = stat(vec![4000, 1000, 3000, 2000, 10_000]);
        assert_eq!(
            (s.count, s.p50_s, s.p90_s, s.max_s, s.mean_s),
            (5, Some(3.0), Some(10.0), Some(10.0), Some(4.0))
        );
        let one = stat(vec![1500]);
        assert_eq!((one.p50_s, one.p90_s), (Some(1.5), Some(1.5)));
        assert_eq!(stat(vec![]).count, 0);
    }
}
