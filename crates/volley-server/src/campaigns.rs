//! Campaigns: start a flow proactively for an audience of contacts, at a local time for
//! each of them ("09:00 in each person's time zone") or on a recurring schedule, at a
//! bounded send rate, moved out of quiet hours; pause, resume, cancel; and a preview of
//! how many sends are due when.
//!
//! Every send is a durable timer owned by `campaign:<id>`, planned completely when the
//! campaign is created (so the preview is exact and a restart changes nothing). Firing
//! one starts the conversation and deletes the timer in one transaction: a contact gets
//! each send once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volley_flow::{Contact, QuietHours};
use volley_store::{CampaignChange, CampaignRow, NewTimer, TimerRow};

use crate::App;
use crate::audience::{self, Member, Segment};
use crate::auth::{Scoped, scope};
use crate::conversation::Origin;
use crate::error::{ApiError, ErrorBody};
use crate::ids::new_id;

/// Fastest send rate a campaign may ask for (sends per minute).
pub const MAX_RATE_PER_MINUTE: u32 = 600_000;
/// Default lateness after which a send is skipped: an outage must not turn a 09:00
/// message into a 15:00 one.
pub const DEFAULT_LATE_MS: i64 = 3_600_000;
/// Lateness tolerated by `late: skip`.
pub const SKIP_LATE_MS: i64 = 60_000;
/// Sends written per transaction when a campaign is created.
const WRITE_SLICE: usize = 20_000;
/// How far ahead a recurring schedule looks for its next occurrence.
const MAX_CRON_SEARCH_DAYS: i64 = 366 * 5;

/// A campaign as requested.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// A name for people.
    pub name: String,
    /// The flow to start for each contact (its latest version when each send fires).
    pub flow: String,
    /// Who: a segment of existing contacts…
    #[serde(default, skip_serializing_if = "Segment::is_empty")]
    pub audience: Segment,
    /// …or a CSV of contacts (imported like `POST /api/contacts/import`, then
    /// targeted). Not stored with the campaign.
    #[serde(default, skip_serializing)]
    pub csv: Option<String>,
    /// When.
    pub schedule: ScheduleSpec,
    /// Most sends per minute (none: no limit). Sends due together are spread out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<u32>,
    /// What to do with a send that fires late (after a restart, say): `fire`, `skip`
    /// (more than a minute late), or `{"expire": "2h"}`. Default: expire after 1 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub late: Option<serde_json::Value>,
    /// Quiet hours in each contact's zone; default: the flow's `quiet_hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietSpec>,
}

/// When a campaign sends. One of: `at` (one instant for everyone); `date` + `time`
/// (that local time in each contact's zone); `time` alone (the next such local time);
/// `cron` (recurring, in each contact's zone, until `until`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// An instant, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A date, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// A local time, `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// A cron expression (5 fields: minute hour day-of-month month day-of-week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Last date of a recurring schedule (inclusive, in each contact's zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `contact` (default: each contact's zone) or an IANA zone for everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Zone for contacts whose zone is unknown (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietSpec {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

/// What a send's timer carries.
#[derive(Serialize, Deserialize)]
struct SendData {
    campaign: String,
    contact: String,
    /// The local occurrence it is for (before quiet hours and rate spreading).
    target: i64,
}

/// A checked schedule.
enum When {
    At(Timestamp),
    Local {
        date: Option<jiff::civil::Date>,
        time: jiff::civil::Time,
    },
    Cron {
        cron: Box<croner::Cron>,
        until: Option<jiff::civil::Date>,
    },
}

/// A campaign ready to plan and fire sends.
struct Plan {
    when: When,
    zone: Option<TimeZone>,
    fallback: TimeZone,
    quiet: Option<QuietHours>,
    /// Microseconds between two sends (0: no limit).
    rate_gap_us: i64,
    late_after: Option<i64>,
}

/// A duration such as `2h`, `1h30m` or `1d` (days of 24 hours), in ms.
fn duration_ms(s: &str) -> Option<i64> {
    let span: jiff::Span = s.trim().parse().ok()?;
    let ms = span
        .total((
            jiff::Unit::Millisecond,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .ok()?;
    (0.0..1e15).contains(&ms).then_some(ms as i64)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid-campaign", message)
}

fn zone_named(name: &str, what: &str) -> Result<TimeZone, ApiError> {
    volley_flow::zone(name).ok_or_else(|| {
        invalid(format!(
            "{what} `{name}` is not an IANA time zone (e.g. Europe/Berlin)"
        ))
    })
}

impl Plan {
    fn new(spec: &CampaignSpec, flow: &volley_flow::Flow) -> Result<Plan, ApiError> {
        let s = &spec.schedule;
        let parse_date = |d: &str| {
            d.parse::<jiff::civil::Date>()
                .map_err(|_| invalid(format!("`{d}` is not a date (YYYY-MM-DD)")))
        };
        let parse_time = |t: &str| {
            let mut parts = t.split(':');
            let (h, m) = (parts.next(), parts.next());
            h.zip(m)
                .filter(|_| parts.next().is_none())
                .and_then(|(h, m)| Some((h.parse::<i8>().ok()?, m.parse::<i8>().ok()?)))
                .and_then(|(h, m)| jiff::civil::Time::new(h, m, 0, 0).ok())
                .ok_or_else(|| invalid(format!("`{t}` is not a time of day (HH:MM, 24-hour)")))
        };
        let when = match (&s.at, &s.date, &s.time, &s.cron) {
            (Some(at), None, None, None) => When::At(
                at.parse()
                    .map_err(|_| invalid(format!("`{at}` is not an RFC 3339 instant")))?,
            ),
            (None, date, Some(time), None) => When::Local {
                date: date.as_deref().map(parse_date).transpose()?,
                time: parse_time(time)?,
            },
            (None, None, None, Some(expr)) => {
                let cron = croner::parser::CronParser::builder()
                    .build()
                    .parse(expr)
                    .map_err(|e| invalid(format!("`{expr}` is not a cron expression: {e}")))?;
                When::Cron {
                    cron: Box::new(cron),
                    until: s.until.as_deref().map(parse_date).transpose()?,
                }
            }
            _ => {
                return Err(invalid(
                    "schedule: give `at`, or `time` (with an optional `date`), or `cron`",
                ));
            }
        };
        if s.until.is_some() && !matches!(when, When::Cron { .. }) {
            return Err(invalid("schedule: `until` is for `cron` schedules"));
        }
        let zone = match s.timezone.as_deref() {
            None | Some("contact") => None,
            Some(name) => Some(zone_named(name, "timezone")?),
        };
        let fallback = zone_named(
            s.fallback_timezone.as_deref().unwrap_or("UTC"),
            "fallback_timezone",
        )?;
        let quiet = match &spec.quiet_hours {
            Some(q) => {
                let on: Vec<&str> = q.on.iter().map(String::as_str).collect();
                Some(QuietHours::new(&q.from, &q.to, &on).map_err(|errors| {
                    invalid(format!(
                        "quiet_hours: {}",
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ))
                })?)
            }
            None => flow.quiet_hours().cloned(),
        };
        let rate_gap_us = match spec.rate_per_minute {
            None => 0,
            Some(0) => return Err(invalid("rate_per_minute must be at least 1")),
            Some(r) if r > MAX_RATE_PER_MINUTE => {
                return Err(invalid(format!(
                    "rate_per_minute is at most {MAX_RATE_PER_MINUTE}"
                )));
            }
            Some(r) => 60_000_000 / r as i64,
        };
        let late_after = match &spec.late {
            None => Some(DEFAULT_LATE_MS),
            Some(serde_json::Value::String(s)) if s == "fire" => None,
            Some(serde_json::Value::String(s)) if s == "skip" => Some(SKIP_LATE_MS),
            Some(serde_json::Value::Object(o)) if o.len() == 1 && o.contains_key("expire") => {
                let d = o["expire"].as_str().unwrap_or_default();
                Some(duration_ms(d).ok_or_else(|| {
                    invalid(format!(
                        "late.expire: `{d}` is not a duration (e.g. 2h, 30m, 1d)"
                    ))
                })?)
            }
            Some(other) => {
                return Err(invalid(format!(
                    "late: `fire`, `skip` or {{\"expire\": \"2h\"}}, not {other}"
                )));
            }
        };
        Ok(Plan {
            when,
            zone,
            fallback,
            quiet,
            rate_gap_us,
            late_after,
        })
    }

    fn zone_of(&self, timezone: Option<&str>) -> TimeZone {
        self.zone
            .clone()
            .or_else(|| timezone.and_then(volley_flow::zone))
            .unwrap_or_else(|| self.fallback.clone())
    }

    /// The first occurrence for a contact at or after `from` (fixed schedules may lie
    /// in the past: the caller decides whether that is too late).
    fn occurrence(&self, zone: &TimeZone, from: Timestamp) -> Option<Timestamp> {
        match &self.when {
            When::At(t) => Some(*t),
            When::Local {
                date: Some(d),
                time,
            } => d
                .to_datetime(*time)
                .to_zoned(zone.clone())
                .ok()
                .map(|z| z.timestamp()),
            When::Local { date: None, time } => {
                let local = from.to_zoned(zone.clone());
                let today = local
                    .date()
                    .to_datetime(*time)
                    .to_zoned(zone.clone())
                    .ok()?;
                if today.timestamp() >= from {
                    Some(today.timestamp())
                } else {
                    let tomorrow = local.date().tomorrow().ok()?;
                    tomorrow
                        .to_datetime(*time)
                        .to_zoned(zone.clone())
                        .ok()
                        .map(|z| z.timestamp())
                }
            }
            When::Cron { .. } => self.next_cron(zone, from, true),
        }
    }

    /// The recurring schedule's next occurrence (strictly after `after` unless
    /// `inclusive`), within `until`.
    fn next_cron(&self, zone: &TimeZone, after: Timestamp, inclusive: bool) -> Option<Timestamp> {
        let When::Cron { cron, until } = &self.when else {
            return None;
        };
        let start = after.to_zoned(zone.clone());
        let next = cron.find_next_occurrence(&start, inclusive).ok()?;
        let limit = after
            .checked_add(jiff::SignedDuration::from_hours(24 * MAX_CRON_SEARCH_DAYS))
            .ok()?;
        let ts = next.timestamp();
        let within = until.is_none_or(|u| next.date() <= u);
        (ts <= limit && within).then_some(ts)
    }

    /// When a send for an occurrence is due: moved out of quiet hours.
    fn due(&self, zone: &TimeZone, target: Timestamp) -> Timestamp {
        match &self.quiet {
            Some(q) => q.defer(target, zone),
            None => target,
        }
    }
}

/// The planned sends of a new campaign.
struct Planned {
    /// (contact id, target occurrence, due), in due order.
    sends: Vec<(String, Timestamp, Timestamp)>,
    /// Contacts with no occurrence (a recurring schedule that never matches), or whose
    /// only occurrence is already too late.
    skipped: usize,
}

fn plan_sends(plan: &Plan, members: &[Member], now: Timestamp) -> Planned {
    let mut sends = Vec::with_capacity(members.len());
    let mut skipped = 0;
    for m in members {
        let zone = plan.zone_of(m.timezone.as_deref());
        let Some(target) = plan.occurrence(&zone, now) else {
            skipped += 1;
            continue;
        };
        let due = plan.due(&zone, target);
        let late = now.as_millisecond() - due.as_millisecond();
        if late > 0 && plan.late_after.is_some_and(|limit| late > limit) {
            skipped += 1;
            continue;
        }
        sends.push((m.id.clone(), target, due.max(now)));
    }
    sends.sort_by_key(|s| (s.2, s.0.clone()));
    // The send rate: sends spaced by the gap (kept in microseconds, so rates above
    // 1,000 a second stay exact over time; due times are whole milliseconds).
    if plan.rate_gap_us > 0 {
        let mut next_free = i64::MIN;
        for s in &mut sends {
            let due_us = (s.2.as_millisecond() * 1000).max(next_free);
            next_free = due_us + plan.rate_gap_us;
            s.2 = Timestamp::from_millisecond(due_us.div_euclid(1000)).unwrap_or(s.2);
        }
    }
    Planned { sends, skipped }
}

fn send_timer(
    campaign: &str,
    contact: &str,
    target: Timestamp,
    due: Timestamp,
    late_after: Option<i64>,
) -> NewTimer {
    NewTimer {
        due_at: due.as_millisecond(),
        kind: "campaign".into(),
        late_after,
        owner: Some(owner(campaign)),
        data: serde_json::to_string(&SendData {
            campaign: campaign.into(),
            contact: contact.into(),
            target: target.as_millisecond(),
        })
        .unwrap_or_default(),
    }
}

fn owner(campaign: &str) -> String {
    format!("campaign:{campaign}")
}

/// How many sends fall in each hour.
#[derive(Serialize, ToSchema)]
pub struct Bucket {
    /// Start of the hour (RFC 3339).
    pub from: String,
    pub count: i64,
}

fn hourly(dues: impl Iterator<Item = i64>) -> Vec<Bucket> {
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for d in dues {
        *counts
            .entry(d.div_euclid(3_600_000) * 3_600_000)
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(at, count)| Bucket {
            from: Timestamp::from_millisecond(at)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            count,
        })
        .collect()
}

/// A campaign's state.
#[derive(Serialize, ToSchema)]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    pub flow: String,
    /// `planning` (its sends are being written), `scheduled`, `paused` or `cancelled`.
    pub status: String,
    /// Contacts targeted.
    pub audience: i64,
    /// Conversations started so far.
    pub sent: i64,
    /// Sends still to come (for recurring campaigns: each contact's next one).
    pub pending: i64,
    /// Sends cancelled with the campaign.
    pub cancelled: i64,
    /// Sends skipped: too late, or no occurrence.
    pub skipped: i64,
    /// Pending sends per hour (while paused: at the times they had).
    pub upcoming: Vec<Bucket>,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub created_at: String,
}

async fn view(app: &App, row: CampaignRow) -> Result<CampaignView, ApiError> {
    let owner = owner(&row.id);
    let sent = app.store.conversations_by_origin(&owner).await?;
    let buckets = app.store.owner_timers_histogram(&owner, 3_600_000).await?;
    let pending: i64 = buckets.iter().map(|b| b.1).sum();
    let parked = row.paused_at.map_or(0, |_| PARKED_MS);
    let spec: serde_json::Value = serde_json::from_str(&row.spec).unwrap_or_default();
    let recurring = spec["schedule"]["cron"].is_string();
    let skipped = if recurring {
        0
    } else {
        (row.audience - sent - pending - row.cancelled).max(0)
    };
    Ok(CampaignView {
        upcoming: buckets
            .iter()
            .map(|(at, count)| Bucket {
                from: Timestamp::from_millisecond(at - parked)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                count: *count,
            })
            .collect(),
        id: row.id,
        name: row.name,
        flow: row.flow_id,
        status: row.status,
        audience: row.audience,
        sent,
        pending,
        cancelled: row.cancelled,
        skipped,
        spec,
        created_at: Timestamp::from_millisecond(row.created_at)
            .map(|t| t.to_string())
            .unwrap_or_default(),
    })
}

/// Must match the store's parking offset (volley-store `PARKED`).
const PARKED_MS: i64 = 1_000_000_000_000_000;

/// A preview: what creating the campaign would schedule.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub audience: i64,
    pub sends: i64,
    pub skipped: i64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub by_hour: Vec<Bucket>,
}

#[derive(Deserialize)]
pub struct CreateQuery {
    /// `true`: plan only, write nothing.
    #[serde(default)]
    pub preview: bool,
}

/// `POST /api/campaigns` (admin): plans every send and stores the campaign; with
/// `?preview=true`, only reports the plan.
#[utoipa::path(
    post,
    path = "/api/campaigns",
    tag = "campaigns",
    request_body = CampaignSpec,
    params(("preview" = Option<bool>, Query, description = "Plan only; write nothing")),
    responses(
        (status = 201, body = CampaignView),
        (status = 200, body = Preview, description = "With `preview=true`"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Unknown flow"),
        (status = 422, body = ErrorBody, description = "Invalid campaign or CSV"),
    ),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _: Scoped<scope::CampaignsWrite>,
    Query(q): Query<CreateQuery>,
    body: String,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let spec: CampaignSpec = serde_json::from_str(&body)
        .map_err(|e| ApiError::bad_request("bad-json", format!("invalid campaign: {e}")))?;
    if spec.name.trim().is_empty() || spec.name.len() > 200 {
        return Err(invalid("name must have 1 to 200 characters"));
    }
    let flow = app.flows.latest(&spec.flow).ok_or_else(|| {
        ApiError::not_found("unknown-flow", format!("no published flow `{}`", spec.flow))
    })?;
    let plan = Plan::new(&spec, &flow.flow)?;
    // The CSV is checked completely before anything is written.
    let csv_rows = spec
        .csv
        .as_deref()
        .map(audience::parse_csv)
        .transpose()
        .map_err(audience::csv_error)?;
    let mut segment = spec.audience.clone();
    if let Some(rows) = &csv_rows {
        if !segment.external_ids.is_empty() {
            return Err(invalid("give `csv` or `audience.external_ids`, not both"));
        }
        segment.external_ids = audience::external_ids(rows);
    }
    if segment.is_empty() {
        return Err(invalid(
            "audience: give `all: true`, `tags`, `attributes`, `external_ids` or a `csv`",
        ));
    }
    let now = app.clock.now();
    if q.preview {
        // A CSV's contacts may not exist yet: the preview counts them as they are.
        let members = match &csv_rows {
            Some(rows) => rows
                .iter()
                .map(|r| Member {
                    id: r.external_id.clone(),
                    timezone: r.profile.timezone.clone(),
                })
                .collect(),
            None => audience::members(&app, &segment).await?,
        };
        let planned = plan_sends(&plan, &members, now);
        let iso = |t: &Timestamp| t.to_string();
        return Ok(Json(Preview {
            audience: members.len() as i64,
            sends: planned.sends.len() as i64,
            skipped: planned.skipped as i64,
            first: planned.sends.first().map(|s| iso(&s.2)),
            last: planned.sends.last().map(|s| iso(&s.2)),
            by_hour: hourly(planned.sends.iter().map(|s| s.2.as_millisecond())),
        })
        .into_response());
    }
    if let Some(rows) = csv_rows {
        audience::import(&app, rows).await?;
    }
    let members = audience::members(&app, &segment).await?;
    let planned = plan_sends(&plan, &members, now);
    let id = new_id("cmp");
    let audience_size = members.len() as i64;
    drop(members);
    // Stored without its list of external ids (read once per send, it must stay small):
    // the sends themselves say who they are for.
    let mut stored = spec.clone();
    if !stored.audience.external_ids.is_empty() {
        stored.audience.external_ids = vec![format!(
            "({} external ids)",
            stored.audience.external_ids.len()
        )];
    }
    let row = CampaignRow {
        id: id.clone(),
        name: spec.name.clone(),
        flow_id: spec.flow.clone(),
        spec: serde_json::to_string(&stored).map_err(|e| ApiError::internal("spec", e))?,
        status: "planning".into(),
        audience: audience_size,
        cancelled: 0,
        paused_at: None,
        created_at: now.as_millisecond(),
        updated_at: now.as_millisecond(),
    };
    // Written in slices, so memory stays bounded however large the audience; the
    // campaign sends nothing until every slice is written (`planning`), and one left
    // half-written by a crash is cancelled at the next start.
    app.store.create_campaign(row, Vec::new()).await?;
    let written = async {
        for slice in planned.sends.chunks(WRITE_SLICE) {
            let timers = slice
                .iter()
                .map(|(contact, target, due)| {
                    send_timer(&id, contact, *target, *due, plan.late_after)
                })
                .collect();
            app.store.schedule_timers(timers).await?;
        }
        app.store
            .change_campaign(&id, CampaignChange::Activate, app.clock.now_ms())
            .await
    }
    .await;
    if let Err(e) = written {
        let _ = app
            .store
            .change_campaign(&id, CampaignChange::Cancel, app.clock.now_ms())
            .await;
        return Err(e.into());
    }
    app.campaigns.forget(&id);
    app.scheduler.rescan();
    let row = app
        .store
        .campaign(&id)
        .await?
        .ok_or_else(|| ApiError::internal("campaign vanished", &id))?;
    Ok((StatusCode::CREATED, Json(view(&app, row).await?)).into_response())
}

/// `GET /api/campaigns` (admin).
#[utoipa::path(get, path = "/api/campaigns", tag = "campaigns",
    responses((status = 200, body = [CampaignView]), (status = 401, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Scoped<scope::CampaignsWrite>,
) -> Result<Json<Vec<CampaignView>>, ApiError> {
    let mut out = Vec::new();
    for row in app.store.campaigns().await? {
        out.push(view(&app, row).await?);
    }
    Ok(Json(out))
}

async fn find(app: &App, id: &str) -> Result<CampaignRow, ApiError> {
    app.store
        .campaign(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown-campaign", format!("no campaign `{id}`")))
}

/// `GET /api/campaigns/{id}` (admin): status, counts and upcoming sends per hour.
#[utoipa::path(get, path = "/api/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn detail(
    State(app): State<Arc<App>>,
    _: Scoped<scope::CampaignsWrite>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let row = find(&app, &id).await?;
    Ok(Json(view(&app, row).await?))
}

async fn change(
    app: Arc<App>,
    id: String,
    change: CampaignChange,
) -> Result<Json<CampaignView>, ApiError> {
    let before = find(&app, &id).await?;
    let what = format!("{change:?}").to_lowercase();
    if !app
        .store
        .change_campaign(&id, change.clone(), app.clock.now_ms())
        .await?
    {
        return Err(ApiError::conflict(
            "campaign-status",
            format!("cannot {what} a campaign that is {}", before.status),
        ));
    }
    // Its sends moved in the store: the scheduler reads them again.
    app.campaigns.forget(&id);
    app.scheduler.rescan();
    let row = find(&app, &id).await?;
    Ok(Json(view(&app, row).await?))
}

/// `POST /api/campaigns/{id}/pause` (admin): no send fires until resumed.
#[utoipa::path(post, path = "/api/campaigns/{id}/pause", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn pause(
    State(app): State<Arc<App>>,
    _: Scoped<scope::CampaignsWrite>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    change(app, id, CampaignChange::Pause).await
}

/// `POST /api/campaigns/{id}/resume` (admin): pending sends come back, each later by
/// the time spent paused.
#[utoipa::path(post, path = "/api/campaigns/{id}/resume", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn resume(
    State(app): State<Arc<App>>,
    _: Scoped<scope::CampaignsWrite>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    change(app, id, CampaignChange::Resume).await
}

/// `POST /api/campaigns/{id}/cancel` (admin): pending sends are dropped.
#[utoipa::path(post, path = "/api/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    _: Scoped<scope::CampaignsWrite>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    change(app, id, CampaignChange::Cancel).await
}

/// Campaigns being sent, kept between sends: one read of the campaign per campaign,
/// not per send. A change through the API drops the entry.
#[derive(Default)]
pub struct Cache(
    std::sync::Mutex<std::collections::HashMap<String, Arc<(CampaignRow, CampaignSpec)>>>,
);

impl Cache {
    async fn get(
        &self,
        app: &App,
        id: &str,
    ) -> Result<Option<Arc<(CampaignRow, CampaignSpec)>>, ()> {
        if let Some(hit) = self.0.lock().expect("cache lock").get(id) {
            return Ok(Some(hit.clone()));
        }
        let Some(row) = app.store.campaign(id).await.map_err(|_| ())? else {
            return Ok(None);
        };
        let Ok(spec) = serde_json::from_str::<CampaignSpec>(&row.spec) else {
            return Ok(None);
        };
        let entry = Arc::new((row, spec));
        self.0
            .lock()
            .expect("cache lock")
            .insert(id.to_string(), entry.clone());
        Ok(Some(entry))
    }

    fn forget(&self, id: &str) {
        self.0.lock().expect("cache lock").remove(id);
    }
}

/// Cancels campaigns a crash left half-written (`planning`): called at start-up.
pub async fn abandon_unfinished(app: &App) -> Result<(), ApiError> {
    for c in app.store.campaigns().await? {
        if c.status == "planning" {
            tracing::warn!(campaign = %c.id, "campaign left half-written by a crash: cancelled");
            app.store
                .change_campaign(&c.id, CampaignChange::Cancel, app.clock.now_ms())
                .await?;
        }
    }
    Ok(())
}

/// What firing a send did.
pub enum SendOutcome {
    /// The conversation started (or the send was dropped for good): the timer is gone.
    Done,
    /// The campaign is paused: the timer stays (parked) in the store.
    Parked,
    /// A passing failure: try again.
    Retry,
}

/// A send that passed its checks and waits for its contact.
struct Ready {
    data: SendData,
    campaign: Arc<(CampaignRow, CampaignSpec)>,
    flow: Arc<crate::flows::Published>,
}

/// Fires sends due together: each starts the campaign's flow for its contact, deleting
/// its timer in the same transaction (and scheduling a recurring campaign's next send
/// with it). The contacts are read in one query and the writer commits the starts
/// together, so a batch costs little more than one send. Outcomes are in `timers` order.
pub async fn fire(app: &App, timers: &[TimerRow]) -> Vec<SendOutcome> {
    let mut outcomes = Vec::with_capacity(timers.len());
    let mut ready = Vec::new();
    for (i, timer) in timers.iter().enumerate() {
        match prepare(app, timer).await {
            Ok(r) => {
                ready.push((i, r));
                outcomes.push(SendOutcome::Retry);
            }
            Err(outcome) => outcomes.push(outcome),
        }
    }
    if ready.is_empty() {
        return outcomes;
    }
    let ids: Vec<String> = ready.iter().map(|(_, r)| r.data.contact.clone()).collect();
    // A failed read leaves these sends at `Retry`.
    let Ok(rows) = app.store.contacts(&ids).await else {
        return outcomes;
    };
    let contacts: std::collections::HashMap<String, volley_store::ContactRow> =
        rows.into_iter().map(|c| (c.id.clone(), c)).collect();
    let starts = ready.into_iter().map(|(i, r)| {
        let contact = contacts.get(&r.data.contact);
        let timer = &timers[i];
        async move { (i, start(app, timer, r, contact).await) }
    });
    for (i, outcome) in futures_util::future::join_all(starts).await {
        outcomes[i] = outcome;
    }
    outcomes
}

/// The checks before a send needs its contact: a readable send of a running campaign,
/// not too late, of a published flow. `Err` is the outcome when it is not to be sent.
async fn prepare(app: &App, timer: &TimerRow) -> Result<Ready, SendOutcome> {
    let Ok(data) = serde_json::from_str::<SendData>(&timer.data) else {
        return Err(drop_send(app, timer, "unreadable send").await);
    };
    let campaign = match app.campaigns.get(app, &data.campaign).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(drop_send(app, timer, "campaign gone").await),
        Err(()) => return Err(SendOutcome::Retry),
    };
    match campaign.0.status.as_str() {
        // Still being written: its sends are read again once it is active.
        "paused" | "planning" => return Err(SendOutcome::Parked),
        "scheduled" => {}
        _ => return Err(drop_send(app, timer, "campaign cancelled").await),
    }
    if timer
        .late_after
        .is_some_and(|limit| app.clock.now_ms() - timer.due_at > limit)
    {
        return Err(drop_send(app, timer, "too late").await);
    }
    let Some(flow) = app.flows.latest(&campaign.0.flow_id) else {
        return Err(drop_send(app, timer, "flow not published").await);
    };
    Ok(Ready {
        data,
        campaign,
        flow,
    })
}

/// Starts one send's conversation.
async fn start(
    app: &App,
    timer: &TimerRow,
    ready: Ready,
    contact: Option<&volley_store::ContactRow>,
) -> SendOutcome {
    let Some(contact) = contact else {
        return drop_send(app, timer, "contact gone").await;
    };
    let Ready {
        data,
        campaign,
        flow,
    } = ready;
    let spec = &campaign.1;
    let now = app.clock.now();
    let mut profile: Contact = serde_json::from_str(&contact.profile).unwrap_or_default();
    profile.id = contact.id.clone();
    // A recurring campaign's next send keeps this one's spacing from its occurrence.
    let mut schedule = Vec::new();
    if spec.schedule.cron.is_some()
        && let Ok(plan) = Plan::new(spec, &flow.flow)
        && let When::Cron { .. } = plan.when
        && let Ok(target) = Timestamp::from_millisecond(data.target)
    {
        let zone = plan.zone_of(profile.timezone.as_deref());
        if let Some(next) = plan.next_cron(&zone, target.max(now), false) {
            let spread = timer.due_at - plan.due(&zone, target).as_millisecond();
            let due = plan.due(&zone, next).as_millisecond() + spread.max(0);
            schedule.push(send_timer(
                &data.campaign,
                &data.contact,
                next,
                Timestamp::from_millisecond(due).unwrap_or(next),
                plan.late_after,
            ));
        }
    }
    let origin = Origin {
        origin: Some(owner(&data.campaign)),
        fired_timer: Some(timer.id),
        schedule,
    };
    match app
        .convs
        .start(app, &contact.id, profile, flow, origin)
        .await
    {
        Ok(_) => SendOutcome::Done,
        // Sent already (the timer was gone): nothing more to do.
        Err(e) if e.code == "conflict" => SendOutcome::Done,
        Err(_) => SendOutcome::Retry,
    }
}

async fn drop_send(app: &App, timer: &TimerRow, why: &str) -> SendOutcome {
    tracing::debug!(id = timer.id, why, "campaign send dropped");
    match app.store.delete_timer(timer.id).await {
        Ok(_) => SendOutcome::Done,
        Err(_) => SendOutcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: serde_json::Value) -> CampaignSpec {
        serde_json::from_value(serde_json::json!({
            "name": "t", "flow": "f", "audience": {"all": true}, "schedule": schedule
        }))
        .unwrap()
    }

    fn flow() -> Arc<volley_flow::Flow> {
        Arc::new(
            volley_flow::compile("volley: 1\nid: f\ntitle: F\nsteps:\n  - say: hi\n")
                .flow
                .expect("compiles"),
        )
    }

    fn member(id: &str, tz: Option<&str>) -> Member {
        Member {
            id: id.into(),
            timezone: tz.map(String::from),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_local_time_is_the_same_wall_clock_time_in_every_zone() {
        let mut s = spec(serde_json::json!({"date": "2026-12-01", "time": "09:00"}));
        s.late = Some(serde_json::json!("fire"));
        let plan = Plan::new(&s, &flow()).unwrap();
        let members = [
            member("a", Some("Europe/Berlin")),
            member("b", Some("America/New_York")),
            member("c", Some("Asia/Kolkata")),
            member("d", None),
            member("e", Some("Australia/Lord_Howe")),
        ];
        let p = plan_sends(&plan, &members, ts("2026-11-30T00:00:00Z"));
        let got: BTreeMap<&str, String> = p
            .sends
            .iter()
            .map(|(c, _, due)| (c.as_str(), due.to_string()))
            .collect();
        assert_eq!(got["a"], "2026-12-01T08:00:00Z");
        assert_eq!(got["b"], "2026-12-01T14:00:00Z");
        assert_eq!(got["c"], "2026-12-01T03:30:00Z");
        assert_eq!(
            got["d"], "2026-12-01T09:00:00Z",
            "unknown zone: the fallback (UTC)"
        );
        // Lord Howe is on daylight time (+11:00) in December.
        assert_eq!(got["e"], "2026-11-30T22:00:00Z");
    }

    #[test]
    fn the_send_rate_spreads_sends_and_late_ones_are_skipped() {
        let mut s = spec(serde_json::json!({"at": "2026-12-01T09:00:00Z"}));
        s.rate_per_minute = Some(2);
        let plan = Plan::new(&s, &flow()).unwrap();
        let members: Vec<Member> = (0..4).map(|i| member(&format!("m{i}"), None)).collect();
        let p = plan_sends(&plan, &members, ts("2026-12-01T08:00:00Z"));
        let dues: Vec<String> = p.sends.iter().map(|s| s.2.to_string()).collect();
        assert_eq!(
            dues,
            [
                "2026-12-01T09:00:00Z",
                "2026-12-01T09:00:30Z",
                "2026-12-01T09:01:00Z",
                "2026-12-01T09:01:30Z"
            ]
        );
        // Created two hours after the instant: too late by the default (1 h).
        let late = plan_sends(&plan, &members, ts("2026-12-01T11:00:00Z"));
        assert_eq!((late.sends.len(), late.skipped), (0, 4));
        // Thirty minutes late: sent now.
        let soon = plan_sends(&plan, &members[..1], ts("2026-12-01T09:30:00Z"));
        assert_eq!(soon.sends[0].2.to_string(), "2026-12-01T09:30:00Z");
        // Faster than one a millisecond: 5,000 a second over 10,000 sends is 2 seconds.
        s.rate_per_minute = Some(300_000);
        let plan = Plan::new(&s, &flow()).unwrap();
        let many: Vec<Member> = (0..10_000)
            .map(|i| member(&format!("n{i}"), None))
            .collect();
        let p = plan_sends(&plan, &many, ts("2026-12-01T08:00:00Z"));
        assert_eq!(
            p.sends.last().unwrap().2.to_string(),
            "2026-12-01T09:00:01.999Z"
        );
        let first_second = p
            .sends
            .iter()
            .filter(|s| s.2 < ts("2026-12-01T09:00:01Z"))
            .count();
        assert_eq!(first_second, 5_000);
    }

    #[test]
    fn quiet_hours_defer_and_cron_recurs_in_the_contacts_zone() {
        let mut s = spec(serde_json::json!({"cron": "30 22 * * *", "until": "2026-12-03"}));
        s.quiet_hours = Some(QuietSpec {
            from: "22:00".into(),
            to: "08:00".into(),
            on: vec![],
        });
        let plan = Plan::new(&s, &flow()).unwrap();
        let berlin = volley_flow::zone("Europe/Berlin").unwrap();
        let first = plan
            .occurrence(&berlin, ts("2026-12-01T12:00:00Z"))
            .unwrap();
        assert_eq!(first.to_string(), "2026-12-01T21:30:00Z"); // 22:30 Berlin
        // 22:30 is quiet: sent at 08:00 the next morning.
        assert_eq!(plan.due(&berlin, first).to_string(), "2026-12-02T07:00:00Z");
        let second = plan.next_cron(&berlin, first, false).unwrap();
        assert_eq!(second.to_string(), "2026-12-02T21:30:00Z");
        let third = plan.next_cron(&berlin, second, false).unwrap();
        assert_eq!(third.to_string(), "2026-12-03T21:30:00Z");
        assert_eq!(
            plan.next_cron(&berlin, third, false),
            None,
            "until is inclusive and ends"
        );
    }

    #[test]
    fn invalid_campaigns_are_refused_with_a_reason() {
        for (schedule, needle) in [
            (serde_json::json!({}), "give `at`"),
            (serde_json::json!({"time": "25:00"}), "not a time"),
            (serde_json::json!({"cron": "every day"}), "not a cron"),
            (serde_json::json!({"at": "soon"}), "RFC 3339"),
            (
                serde_json::json!({"time": "09:00", "timezone": "Mars/Base"}),
                "IANA",
            ),
            (
                serde_json::json!({"time": "09:00", "until": "2026-12-01"}),
                "`until`",
            ),
        ] {
            let err = Plan::new(&spec(schedule.clone()), &flow())
                .err()
                .expect("refused");
            assert!(err.message.contains(needle), "{schedule}: {}", err.message);
        }
        let mut s = spec(serde_json::json!({"time": "09:00"}));
        s.rate_per_minute = Some(0);
        assert!(Plan::new(&s, &flow()).is_err());
        s.rate_per_minute = None;
        s.late = Some(serde_json::json!({"expire": "soon"}));
        assert!(Plan::new(&s, &flow()).is_err());
    }
}
