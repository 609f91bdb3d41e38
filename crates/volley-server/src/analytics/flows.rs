//! Flow and contact reports, read from the aggregator's counters (`stats.rs`), never
//! from the log: a flow's funnel and drop-off per step, answers, time per step, goals,
//! split results with a confidence interval, response times; contacts' returning share
//! and D1/D7/D30 cohorts. Definitions in docs/metrics.md.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volley_store::StatTotal;

use crate::App;
use crate::auth::{Scoped, scope};
use crate::error::{ApiError, ErrorBody};
use crate::exports::csv_line;
use crate::stats::{NOT_COMPLETED, SEP, START_NODE, bucket_upper_ms, day_of, metric};

/// The longest period of one report (days).
pub const MAX_DAYS: i64 = 366;
/// The default period: this many days up to today.
const DEFAULT_DAYS: i64 = 30;
/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_964;

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn percent(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| round(part as f64 * 100.0 / whole as f64, 1))
}

/// Durations from a latency histogram (bucket key → count), in seconds.
#[derive(Debug, Default, Serialize, ToSchema, PartialEq)]
pub struct Latency {
    pub count: i64,
    pub mean_s: Option<f64>,
    /// Percentiles are the upper bound of the histogram bucket holding the rank
    /// (buckets are at most 19 % wide).
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub p99_s: Option<f64>,
}

fn latency(buckets: &BTreeMap<i64, i64>, total_ms: f64) -> Latency {
    let count: i64 = buckets.values().sum();
    if count == 0 {
        return Latency::default();
    }
    let rank = |p: f64| {
        let want = ((p * count as f64).ceil() as i64).clamp(1, count);
        let mut seen = 0;
        for (b, n) in buckets {
            seen += n;
            if seen >= want {
                return Some(round(bucket_upper_ms(*b) / 1000.0, 3));
            }
        }
        None
    };
    Latency {
        count,
        mean_s: Some(round(total_ms / count as f64 / 1000.0, 3)),
        p50_s: rank(0.5),
        p90_s: rank(0.9),
        p99_s: rank(0.99),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepFigures {
    pub step: String,
    /// Conversations that entered the step at least once.
    pub reached: i64,
    /// reached / reached of the steps leading into it (the step before it in a straight
    /// flow; the branch point in a branching one), in %.
    pub conversion_percent: Option<f64>,
    /// Conversations whose last step is this one and that have not ended.
    pub stopped_here: i64,
    /// stopped_here / reached, in %.
    pub drop_off_percent: Option<f64>,
    /// Time from entering the step to leaving it (the next step or the end).
    pub time: Latency,
    pub answers: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValueCount {
    pub value: String,
    pub count: i64,
    /// count / answers of the question, in %.
    pub percent: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionFigures {
    pub step: String,
    pub var: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub answers: i64,
    /// Choice, multiple choice, rating, NPS and yes/no questions: answers by value, most
    /// frequent first.
    pub values: Vec<ValueCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GoalFigures {
    pub goal: String,
    pub reached: i64,
    /// reached / started, in %.
    pub conversion_percent: Option<f64>,
    /// Sum of the goal's values.
    pub value: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArmFigures {
    pub arm: String,
    pub conversations: i64,
    /// Conversations of the arm that converted (completed the flow, or reached `goal`).
    pub converted: i64,
    pub rate_percent: Option<f64>,
    /// rate − the first arm's rate, in percentage points, with its 95 % interval
    /// (normal approximation of the difference of two proportions). None for the first
    /// arm.
    pub difference_points: Option<f64>,
    pub ci_low_points: Option<f64>,
    pub ci_high_points: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SplitFigures {
    pub step: String,
    /// `completed`, or the goal chosen with `goal=`.
    pub conversion: String,
    pub arms: Vec<ArmFigures>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomeCount {
    pub outcome: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlowReport {
    pub flow: String,
    /// The version reported, or none for all versions.
    pub version: Option<i64>,
    /// First and last day of the period (UTC), by the day conversations started.
    pub from: String,
    pub to: String,
    pub started: i64,
    pub completed: i64,
    pub completion_percent: Option<f64>,
    pub outcomes: Vec<OutcomeCount>,
    /// Steps in the flow's order (the funnel).
    pub steps: Vec<StepFigures>,
    /// Transitions between steps (`(start)` and `(end)` included): the flow graph.
    pub edges: Vec<Edge>,
    pub questions: Vec<QuestionFigures>,
    pub goals: Vec<GoalFigures>,
    pub splits: Vec<SplitFigures>,
    /// Conversations handed off to a person at least once.
    pub handoffs: i64,
    pub handoff_percent: Option<f64>,
    pub containment_percent: Option<f64>,
    /// A participant's input → the bot's reply becoming visible (pacing included).
    pub bot_response: Latency,
    /// A participant's message in a hand-off → a person's reply.
    pub human_response: Latency,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct FlowReportQuery {
    /// First day (YYYY-MM-DD, UTC); default 29 days before `to`.
    pub from: Option<String>,
    /// Last day, included; default today.
    pub to: Option<String>,
    /// One version; default all.
    pub version: Option<i64>,
    /// Split conversion: this goal instead of completion.
    pub goal: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// With `format=csv`: `steps` (default), `edges`, `answers`, `goals`, `splits`.
    pub table: Option<String>,
}

/// A period of whole UTC days, checked.
pub struct Days {
    pub from: i64,
    pub to: i64,
}

impl Days {
    pub fn parse(app: &App, from: Option<&str>, to: Option<&str>) -> Result<Days, ApiError> {
        let day = |name: &str, v: &str| {
            v.parse::<jiff::civil::Date>()
                .map_err(|e| {
                    ApiError::bad_request("bad-date", format!("`{name}`: {e} (YYYY-MM-DD)"))
                })
                .and_then(|d| {
                    d.to_zoned(jiff::tz::TimeZone::UTC)
                        .map(|z| day_of(z.timestamp().as_millisecond()))
                        .map_err(|e| ApiError::bad_request("bad-date", format!("`{name}`: {e}")))
                })
        };
        let to = match to {
            Some(v) => day("to", v)?,
            None => day_of(app.clock.now_ms()),
        };
        let from = match from {
            Some(v) => day("from", v)?,
            None => to - (DEFAULT_DAYS - 1),
        };
        if to < from || to - from >= MAX_DAYS {
            return Err(ApiError::bad_request(
                "bad-period",
                format!("`to` must be on or after `from`, at most {MAX_DAYS} days in all"),
            ));
        }
        Ok(Days { from, to })
    }

    pub fn date(day: i64) -> String {
        jiff::Timestamp::from_millisecond(day * 86_400_000)
            .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
            .unwrap_or_default()
    }
}

pub fn csv_requested(format: Option<&str>) -> Result<bool, ApiError> {
    match format.unwrap_or("json") {
        "json" => Ok(false),
        "csv" => Ok(true),
        other => Err(ApiError::bad_request(
            "bad-format",
            format!("format `{other}`: use json or csv"),
        )),
    }
}

/// Counters by metric, then key.
struct Counters(HashMap<String, BTreeMap<String, (i64, f64)>>);

impl Counters {
    fn new(rows: Vec<StatTotal>) -> Counters {
        let mut m: HashMap<String, BTreeMap<String, (i64, f64)>> = HashMap::new();
        for r in rows {
            m.entry(r.metric).or_default().insert(r.key, (r.n, r.total));
        }
        Counters(m)
    }

    fn of(&self, metric: &str) -> impl Iterator<Item = (&str, i64, f64)> {
        self.0
            .get(metric)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, (n, t))| (k.as_str(), *n, *t)))
    }

    fn n(&self, metric: &str, key: &str) -> i64 {
        self.0
            .get(metric)
            .and_then(|m| m.get(key))
            .map_or(0, |v| v.0)
    }

    fn total(&self, metric: &str, key: &str) -> f64 {
        self.0
            .get(metric)
            .and_then(|m| m.get(key))
            .map_or(0.0, |v| v.1)
    }

    /// A latency histogram: keys are buckets, optionally after a `prefix` and [`SEP`].
    fn histogram(&self, metric: &str, prefix: Option<&str>) -> BTreeMap<i64, i64> {
        self.of(metric)
            .filter_map(|(k, n, _)| {
                let b = match prefix {
                    Some(p) => k.strip_prefix(p)?.strip_prefix(SEP)?,
                    None => k,
                };
                Some((b.parse().ok()?, n))
            })
            .collect()
    }
}

/// Difference of two proportions with its 95 % interval, in percentage points.
fn difference(c0: i64, n0: i64, c1: i64, n1: i64) -> Option<(f64, f64, f64)> {
    if n0 == 0 || n1 == 0 {
        return None;
    }
    let (p0, p1) = (c0 as f64 / n0 as f64, c1 as f64 / n1 as f64);
    let se = (p0 * (1.0 - p0) / n0 as f64 + p1 * (1.0 - p1) / n1 as f64).sqrt();
    let d = p1 - p0;
    Some((
        round(d * 100.0, 2),
        round((d - Z95 * se) * 100.0, 2),
        round((d + Z95 * se) * 100.0, 2),
    ))
}

/// Builds a flow's report from its counters over `days`.
pub async fn flow_report(
    app: &App,
    id: &str,
    version: Option<i64>,
    days: &Days,
    goal: Option<&str>,
) -> Result<FlowReport, ApiError> {
    let published = match version {
        Some(v) => app.flows.version(&*app.store, id, v).await?,
        None => app.flows.latest(id).ok_or_else(|| {
            ApiError::not_found("unknown-flow", format!("no flow `{id}` is published"))
        })?,
    };
    let c = Counters::new(
        app.store
            .flow_stats(id, version, days.from, days.to)
            .await?,
    );
    let started = c.n(metric::STARTED, "");
    let outcomes: Vec<OutcomeCount> = c
        .of(metric::ENDED)
        .map(|(k, n, _)| OutcomeCount {
            outcome: k.into(),
            count: n,
        })
        .collect();
    let completed = outcomes
        .iter()
        .filter(|o| !NOT_COMPLETED.contains(&o.outcome.as_str()))
        .map(|o| o.count)
        .sum();
    // The flow's steps in order, then steps only older versions had.
    let mut order: Vec<String> = published.flow.step_ids().map(String::from).collect();
    for (k, _, _) in c.of(metric::REACHED) {
        if !order.iter().any(|s| s == k) {
            order.push(k.into());
        }
    }
    // A step's conversion is against the steps that lead into it (as walked, earlier in
    // the flow's order): in a straight flow, the step before it.
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut before: HashMap<&str, i64> = HashMap::new();
    for (k, _, _) in c.of(metric::EDGE) {
        let Some((from, to)) = k.split_once(SEP) else {
            continue;
        };
        let entering = if from == START_NODE {
            Some(started)
        } else {
            match (position.get(from), position.get(to)) {
                (Some(f), Some(t)) if f < t => Some(c.n(metric::REACHED, from)),
                _ => None,
            }
        };
        if let Some(n) = entering {
            *before.entry(to).or_default() += n;
        }
    }
    let steps = order
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let reached = c.n(metric::REACHED, s);
            let stopped = c.n(metric::AT, s);
            let mut time = latency(
                &c.histogram(metric::STEP_TIME_H, Some(s)),
                c.total(metric::STEP_TIME, s),
            );
            time.count = c.n(metric::STEP_TIME, s);
            let base = match before.get(s.as_str()) {
                Some(n) => *n,
                None if i == 0 => started,
                None => c.n(metric::REACHED, &order[i - 1]),
            };
            StepFigures {
                step: s.clone(),
                reached,
                conversion_percent: percent(reached, base),
                stopped_here: stopped,
                drop_off_percent: percent(stopped, reached),
                time,
                answers: c.n(metric::ANSWERED, s),
            }
        })
        .collect();
    let edges = c
        .of(metric::EDGE)
        .filter_map(|(k, n, _)| {
            let (from, to) = k.split_once(SEP)?;
            Some(Edge {
                from: from.into(),
                to: to.into(),
                count: n,
            })
        })
        .collect();
    let mut values: HashMap<&str, Vec<ValueCount>> = HashMap::new();
    for (k, n, _) in c.of(metric::ANSWER) {
        if let Some((step, v)) = k.split_once(SEP) {
            values.entry(step).or_default().push(ValueCount {
                value: v.into(),
                count: n,
                percent: percent(n, c.n(metric::ANSWERED, step)),
            });
        }
    }
    let questions = published
        .flow
        .questions()
        .into_iter()
        .map(|(step, var, kind)| {
            let mut vals = values.remove(step).unwrap_or_default();
            vals.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
            QuestionFigures {
                step: step.into(),
                var: var.into(),
                kind: kind.name().into(),
                answers: c.n(metric::ANSWERED, step),
                values: vals,
            }
        })
        .collect();
    let goals = c
        .of(metric::GOAL)
        .map(|(k, n, t)| GoalFigures {
            goal: k.into(),
            reached: n,
            conversion_percent: percent(n, started),
            value: round(t, 2),
        })
        .collect();
    let conversion = goal.unwrap_or("completed").to_string();
    let mut by_split: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for (k, n, _) in c.of(metric::ARM) {
        if let Some((split, arm)) = k.split_once(SEP) {
            by_split.entry(split).or_default().push((arm, n));
        }
    }
    let splits = by_split
        .into_iter()
        .map(|(split, arms)| {
            let converted = |arm: &str| match goal {
                None => c.n(metric::ARM_COMPLETED, &format!("{split}{SEP}{arm}")),
                Some(g) => c.n(metric::ARM_GOAL, &format!("{split}{SEP}{arm}{SEP}{g}")),
            };
            let (first_arm, first_n) = arms[0];
            let first_c = converted(first_arm);
            SplitFigures {
                step: split.into(),
                conversion: conversion.clone(),
                arms: arms
                    .iter()
                    .enumerate()
                    .map(|(i, (arm, n))| {
                        let conv = converted(arm);
                        let d = (i > 0)
                            .then(|| difference(first_c, first_n, conv, *n))
                            .flatten();
                        ArmFigures {
                            arm: (*arm).into(),
                            conversations: *n,
                            converted: conv,
                            rate_percent: percent(conv, *n),
                            difference_points: d.map(|d| d.0),
                            ci_low_points: d.map(|d| d.1),
                            ci_high_points: d.map(|d| d.2),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let handoffs = c.n(metric::HANDOFF, "");
    let handoff_percent = percent(handoffs, started);
    Ok(FlowReport {
        flow: id.into(),
        version,
        from: Days::date(days.from),
        to: Days::date(days.to),
        started,
        completed,
        completion_percent: percent(completed, started),
        outcomes,
        steps,
        edges,
        questions,
        goals,
        splits,
        handoffs,
        handoff_percent,
        containment_percent: handoff_percent.map(|p| round(100.0 - p, 1)),
        bot_response: latency(
            &c.histogram(metric::BOT_RESPONSE, None),
            c.of(metric::BOT_RESPONSE).map(|(_, _, t)| t).sum(),
        ),
        human_response: latency(
            &c.histogram(metric::HUMAN_RESPONSE, None),
            c.of(metric::HUMAN_RESPONSE).map(|(_, _, t)| t).sum(),
        ),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One table of a flow report as CSV.
pub fn flow_csv(r: &FlowReport, table: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut row = |cells: Vec<String>| out.extend(csv_line(cells));
    let header = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match table {
        "steps" => {
            row(header(&[
                "step",
                "reached",
                "conversion_percent",
                "stopped_here",
                "drop_off_percent",
                "time_count",
                "time_mean_s",
                "time_p50_s",
                "time_p90_s",
                "answers",
            ]));
            for s in &r.steps {
                row(vec![
                    s.step.clone(),
                    s.reached.to_string(),
                    opt(s.conversion_percent),
                    s.stopped_here.to_string(),
                    opt(s.drop_off_percent),
                    s.time.count.to_string(),
                    opt(s.time.mean_s),
                    opt(s.time.p50_s),
                    opt(s.time.p90_s),
                    s.answers.to_string(),
                ]);
            }
        }
        "edges" => {
            row(header(&["from", "to", "count"]));
            for e in &r.edges {
                row(vec![e.from.clone(), e.to.clone(), e.count.to_string()]);
            }
        }
        "answers" => {
            row(header(&[
                "step", "var", "type", "value", "count", "percent",
            ]));
            for q in &r.questions {
                for v in &q.values {
                    row(vec![
                        q.step.clone(),
                        q.var.clone(),
                        q.kind.clone(),
                        v.value.clone(),
                        v.count.to_string(),
                        opt(v.percent),
                    ]);
                }
            }
        }
        "goals" => {
            row(header(&["goal", "reached", "conversion_percent", "value"]));
            for g in &r.goals {
                row(vec![
                    g.goal.clone(),
                    g.reached.to_string(),
                    opt(g.conversion_percent),
                    g.value.to_string(),
                ]);
            }
        }
        "splits" => {
            row(header(&[
                "split",
                "conversion",
                "arm",
                "conversations",
                "converted",
                "rate_percent",
                "difference_points",
                "ci_low_points",
                "ci_high_points",
            ]));
            for s in &r.splits {
                for a in &s.arms {
                    row(vec![
                        s.step.clone(),
                        s.conversion.clone(),
                        a.arm.clone(),
                        a.conversations.to_string(),
                        a.converted.to_string(),
                        opt(a.rate_percent),
                        opt(a.difference_points),
                        opt(a.ci_low_points),
                        opt(a.ci_high_points),
                    ]);
                }
            }
        }
        other => {
            return Err(ApiError::bad_request(
                "bad-table",
                format!("table `{other}`: use steps, edges, answers, goals or splits"),
            ));
        }
    }
    Ok(out)
}

fn csv_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// `GET /api/analytics/flows/{id}`: a flow's funnel, answers, goals, splits and
/// response times over a period (scope `admin`).
#[utoipa::path(
    get,
    path = "/api/analytics/flows/{id}",
    tag = "analytics",
    params(("id" = String, Path, description = "Flow id"), FlowReportQuery),
    responses((status = 200, body = FlowReport, description = "JSON, or one table as CSV with `format=csv`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn flow(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    Path(id): Path<String>,
    Query(q): Query<FlowReportQuery>,
) -> Result<Response, ApiError> {
    let days = Days::parse(&app, q.from.as_deref(), q.to.as_deref())?;
    let csv = csv_requested(q.format.as_deref())?;
    let report = flow_report(&app, &id, q.version, &days, q.goal.as_deref()).await?;
    if csv {
        Ok(csv_response(flow_csv(
            &report,
            q.table.as_deref().unwrap_or("steps"),
        )?))
    } else {
        Ok(Json(report).into_response())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cohort {
    /// The day of the contacts' first activity (UTC).
    pub day: String,
    pub contacts: i64,
    /// Contacts of the cohort active exactly 1, 7 and 30 days after their first day,
    /// and their share of the cohort (%); none while that day has not come.
    pub d1: Option<i64>,
    pub d1_percent: Option<f64>,
    pub d7: Option<i64>,
    pub d7_percent: Option<f64>,
    pub d30: Option<i64>,
    pub d30_percent: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveDay {
    pub day: String,
    /// Contacts active that day for the first time.
    pub new: i64,
    /// Contacts active that day who had been active on an earlier day.
    pub returning: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactReport {
    pub from: String,
    pub to: String,
    /// Sums over the days (a contact active on two days counts twice).
    pub new: i64,
    pub returning: i64,
    /// returning / (new + returning), in %.
    pub returning_percent: Option<f64>,
    pub days: Vec<ActiveDay>,
    pub cohorts: Vec<Cohort>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ContactReportQuery {
    /// First day (YYYY-MM-DD, UTC); default 29 days before `to`.
    pub from: Option<String>,
    /// Last day, included; default today.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// With `format=csv`: `cohorts` (default) or `days`.
    pub table: Option<String>,
}

/// Builds the contacts report over `days` (as of `today`).
pub async fn contact_report(app: &App, days: &Days) -> Result<ContactReport, ApiError> {
    let today = day_of(app.clock.now_ms());
    let rows = app.store.cohorts(days.from, days.to).await?;
    let mut cohorts: BTreeMap<i64, HashMap<i64, i64>> = BTreeMap::new();
    let mut active: BTreeMap<i64, (i64, i64)> =
        (days.from..=days.to).map(|d| (d, (0, 0))).collect();
    for (first, after, n) in rows {
        if (days.from..=days.to).contains(&first) {
            cohorts.entry(first).or_default().insert(after, n);
        }
        if let Some(a) = active.get_mut(&(first + after)) {
            if after == 0 {
                a.0 += n;
            } else {
                a.1 += n;
            }
        }
    }
    let cohorts = cohorts
        .into_iter()
        .map(|(day, by)| {
            let size = by.get(&0).copied().unwrap_or(0);
            let at = |k: i64| (day + k <= today).then(|| by.get(&k).copied().unwrap_or(0));
            let (d1, d7, d30) = (at(1), at(7), at(30));
            Cohort {
                day: Days::date(day),
                contacts: size,
                d1,
                d1_percent: d1.and_then(|n| percent(n, size)),
                d7,
                d7_percent: d7.and_then(|n| percent(n, size)),
                d30,
                d30_percent: d30.and_then(|n| percent(n, size)),
            }
        })
        .collect();
    let new = active.values().map(|a| a.0).sum();
    let returning = active.values().map(|a| a.1).sum();
    Ok(ContactReport {
        from: Days::date(days.from),
        to: Days::date(days.to),
        new,
        returning,
        returning_percent: percent(returning, new + returning),
        days: active
            .into_iter()
            .map(|(d, (new, returning))| ActiveDay {
                day: Days::date(d),
                new,
                returning,
            })
            .collect(),
        cohorts,
    })
}

/// `GET /api/analytics/contacts`: new and returning contacts per day, and D1/D7/D30
/// cohorts (scope `admin`).
#[utoipa::path(
    get,
    path = "/api/analytics/contacts",
    tag = "analytics",
    params(ContactReportQuery),
    responses((status = 200, body = ContactReport, description = "JSON, or one table as CSV with `format=csv`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn contacts(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    Query(q): Query<ContactReportQuery>,
) -> Result<Response, ApiError> {
    let days = Days::parse(&app, q.from.as_deref(), q.to.as_deref())?;
    let csv = csv_requested(q.format.as_deref())?;
    let report = contact_report(&app, &days).await?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let mut out = Vec::new();
    let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    match q.table.as_deref().unwrap_or("cohorts") {
        "cohorts" => {
            out.extend(csv_line(
                [
                    "day",
                    "contacts",
                    "d1",
                    "d1_percent",
                    "d7",
                    "d7_percent",
                    "d30",
                    "d30_percent",
                ]
                .map(String::from),
            ));
            for c in &report.cohorts {
                out.extend(csv_line([
                    c.day.clone(),
                    c.contacts.to_string(),
                    n(c.d1),
                    opt(c.d1_percent),
                    n(c.d7),
                    opt(c.d7_percent),
                    n(c.d30),
                    opt(c.d30_percent),
                ]));
            }
        }
        "days" => {
            out.extend(csv_line(["day", "new", "returning"].map(String::from)));
            for d in &report.days {
                out.extend(csv_line([
                    d.day.clone(),
                    d.new.to_string(),
                    d.returning.to_string(),
                ]));
            }
        }
        other => {
            return Err(ApiError::bad_request(
                "bad-table",
                format!("table `{other}`: use cohorts or days"),
            ));
        }
    }
    Ok(csv_response(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_of_proportions_has_a_wald_interval() {
        // 50/100 vs 60/100: +10 points, se = sqrt(.25/100 + .24/100) = 0.07.
        let (d, lo, hi) = difference(50, 100, 60, 100).unwrap();
        assert_eq!(d, 10.0);
        assert_eq!(lo, round((0.1 - Z95 * 0.49f64.sqrt() / 10.0) * 100.0, 2));
        assert_eq!(hi, round((0.1 + Z95 * 0.49f64.sqrt() / 10.0) * 100.0, 2));
        assert!(difference(1, 0, 1, 1).is_none());
    }

    #[test]
    fn percentiles_come_from_bucket_upper_bounds() {
        let mut h = BTreeMap::new();
        h.insert(crate::stats::bucket(100), 9);
        h.insert(crate::stats::bucket(5_000), 1);
        let l = latency(&h, 9.0 * 100.0 + 5_000.0);
        assert_eq!(l.count, 10);
        assert_eq!(l.mean_s, Some(0.59));
        assert!(l.p50_s.unwrap() >= 0.1 && l.p50_s.unwrap() < 0.12);
        assert!(l.p99_s.unwrap() >= 5.0 && l.p99_s.unwrap() < 6.0);
    }
}
