//! Event (premiere) analytics: registrations, attendance, concurrency, watch time,
//! retention, chat, polls and offers per showing, live and replay (docs/metrics.md,
//! "Events"). The definitions are the ones computed here, nowhere else.
//!
//! The figures are pre-aggregated as the showings are watched, never recomputed from
//! the logs when read. A tailer (like the webhook dispatcher) reads `showing_log` and
//! `event_registrations` in rowid order after cursors kept in the store, folds the rows
//! into each showing's figures and each viewer's small record (to count every viewer
//! once), and writes them with the cursors' move in one transaction: a crash before the
//! commit reads the same rows again, after it never again, so nothing is lost or counted
//! twice. A report reads one row per showing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};
use volley_events::CueKind;
use volley_store::{EventStatsRow, ShowingRow, StatsCursors, ViewerStatsRow};

use crate::App;
use crate::auth::{Scoped, scope};
use crate::error::{ApiError, ErrorBody};

/// Rows of each log read per round (one transaction).
const PAGE: i64 = 2_000;
/// A minute, in ms: the unit of the timeline's figures.
const MINUTE: i64 = 60_000;
/// The longest timeline kept per showing (minutes): a day of media.
const MAX_MINUTES: usize = 24 * 60;
/// Watched at least this share of the media (‰) is a completion.
const COMPLETION_PERMILLE: i64 = 950;
/// Watch-time buckets: tenths of the media (the last one includes 100 %).
const BUCKETS: usize = 10;

// ---------------------------------------------------------------------------------
// What is kept (JSON in the store)

/// One viewer of one showing: what it takes to count them once.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ViewerAgg {
    #[serde(default)]
    registered: bool,
    /// Joined at least once not as a moderator.
    #[serde(default)]
    attended: bool,
    #[serde(default)]
    live: bool,
    #[serde(default)]
    replay: bool,
    /// Sum of the `watched_ms` of their connections.
    #[serde(default)]
    watched_ms: i64,
    /// Bit set of the media minutes they played (any second of the minute).
    #[serde(default)]
    minutes: Vec<u8>,
    /// Polls they were present for (watched part of the open window, or voted).
    #[serde(default)]
    polls: BTreeSet<String>,
    /// Offers they were shown (an impression or a click), and those they clicked.
    #[serde(default)]
    seen: BTreeSet<String>,
    #[serde(default)]
    clicked: BTreeSet<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PollAgg {
    counts: Vec<u64>,
    voters: u64,
    live: u64,
    replay: u64,
    present: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct OfferAgg {
    impressions: u64,
    clicks: u64,
    live_clicks: u64,
    replay_clicks: u64,
    /// Distinct viewers shown it / who clicked it.
    viewers: u64,
    clickers: u64,
}

/// One showing's figures, as folded so far.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ShowingAgg {
    /// The showing's start (ms), when its id names one, and the media's length (ms).
    start: Option<i64>,
    length: i64,
    registrations: u64,
    registered_attendees: u64,
    attendees: u64,
    live_attendees: u64,
    replay_attendees: u64,
    /// Connections open now (the room's own count at the latest join), since when.
    present: i64,
    changed_at: i64,
    peak: i64,
    /// Per minute of the live window: the highest concurrency, and its integral over
    /// the minute (viewer·ms).
    conc_peak: Vec<i64>,
    conc_area: Vec<i64>,
    /// Per media minute: attendees who played part of it.
    retention: Vec<u64>,
    watched_ms: i64,
    watch_buckets: [u64; BUCKETS],
    completed: u64,
    chat: u64,
    chat_live: u64,
    chat_replay: u64,
    chat_lobby: u64,
    /// Per media minute (the message's position).
    chat_minutes: Vec<u64>,
    polls: BTreeMap<String, PollAgg>,
    offers: BTreeMap<String, OfferAgg>,
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn set_bit(bits: &mut Vec<u8>, i: usize) {
    if bits.len() <= i / 8 {
        bits.resize(i / 8 + 1, 0);
    }
    bits[i / 8] |= 1 << (i % 8);
}

fn bump(v: &mut Vec<u64>, i: usize) {
    if i >= MAX_MINUTES {
        return;
    }
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

/// The event id of a showing id: `{event}@{start}[~on-demand][#{viewer}]`.
fn event_of(showing: &str) -> &str {
    showing.split_once('@').map_or(showing, |(event, _)| event)
}

/// The start a showing id names.
fn start_of(showing: &str) -> Option<i64> {
    let rest = showing.split_once('@')?.1;
    let end = rest.find(['~', '#']).unwrap_or(rest.len());
    rest[..end]
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

impl ShowingAgg {
    fn new(app: &App, showing: &str) -> ShowingAgg {
        let length = app
            .events
            .get(event_of(showing))
            .map_or(0, |p| p.event.media.duration.as_millis() as i64);
        // A per-viewer (on-demand) showing has no shared live window.
        let start = start_of(showing).filter(|_| !showing.contains(['~', '#']));
        ShowingAgg {
            start,
            length,
            ..ShowingAgg::default()
        }
    }

    fn minutes(&self) -> usize {
        ((self.length + MINUTE - 1) / MINUTE).clamp(0, MAX_MINUTES as i64) as usize
    }

    /// Counts the concurrency held since the last change up to `t` (within the live
    /// window).
    fn advance(&mut self, t: i64) {
        if let Some(start) = self.start.filter(|_| self.length > 0) {
            let n = self.minutes();
            self.conc_peak.resize(n, 0);
            self.conc_area.resize(n, 0);
            let (from, to) = (self.changed_at.max(start), t.min(start + self.length));
            let mut at = from;
            while at < to {
                let m = ((at - start) / MINUTE) as usize;
                let next = (start + (m as i64 + 1) * MINUTE).min(to);
                if m < n {
                    self.conc_area[m] += self.present * (next - at);
                    self.conc_peak[m] = self.conc_peak[m].max(self.present);
                }
                at = next;
            }
        }
        self.changed_at = self.changed_at.max(t);
    }

    /// Concurrency is `present` from `t` on.
    fn set_present(&mut self, t: i64, present: i64) {
        self.advance(t);
        self.present = present.max(0);
        self.peak = self.peak.max(self.present);
        if let Some(start) = self.start
            && t >= start
            && t < start + self.length
        {
            let m = ((t - start) / MINUTE) as usize;
            if let Some(p) = self.conc_peak.get_mut(m) {
                *p = (*p).max(self.present);
            }
        }
    }

    fn bucket(&self, watched_ms: i64) -> usize {
        if self.length <= 0 {
            return 0;
        }
        ((watched_ms.min(self.length) * BUCKETS as i64 / self.length) as usize).min(BUCKETS - 1)
    }

    fn complete(&self, watched_ms: i64) -> bool {
        self.length > 0 && watched_ms * 1000 >= self.length * COMPLETION_PERMILLE
    }

    fn register(&mut self, v: &mut ViewerAgg) {
        if v.registered {
            return;
        }
        v.registered = true;
        self.registrations += 1;
        if v.attended {
            self.registered_attendees += 1;
        }
    }

    fn apply(&mut self, app: &App, r: &ShowingRow, v: Option<&mut ViewerAgg>) {
        let d: Value = serde_json::from_str(&r.data).unwrap_or(Value::Null);
        let replay = d["replay"].as_bool().unwrap_or(false);
        match r.kind.as_str() {
            "join" => {
                // The room's own count after the join: right even after a crash lost
                // the leaves of the connections it cut.
                let present = d["present"].as_i64().unwrap_or(self.present + 1);
                self.set_present(r.at, present);
                let Some(v) = v else { return };
                if d["moderator"].as_bool().unwrap_or(false) {
                    return;
                }
                if !v.attended {
                    v.attended = true;
                    self.attendees += 1;
                    self.watch_buckets[self.bucket(v.watched_ms)] += 1;
                    if self.complete(v.watched_ms) {
                        self.completed += 1;
                    }
                    if v.registered {
                        self.registered_attendees += 1;
                    }
                }
                if replay && !v.replay {
                    v.replay = true;
                    self.replay_attendees += 1;
                } else if !replay && !v.live {
                    v.live = true;
                    self.live_attendees += 1;
                }
            }
            "leave" => {
                self.set_present(r.at, self.present - 1);
                let Some(v) = v.filter(|v| v.attended) else {
                    return;
                };
                let watched = d["watched_ms"].as_i64().unwrap_or(0).max(0);
                let (old, new) = (v.watched_ms, v.watched_ms + watched);
                self.watch_buckets[self.bucket(old)] -= 1;
                self.watch_buckets[self.bucket(new)] += 1;
                if !self.complete(old) && self.complete(new) {
                    self.completed += 1;
                }
                v.watched_ms = new;
                self.watched_ms += watched;
                let seconds = d["seconds"]
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .unwrap_or_default();
                let played = |s: usize| bit(&seconds, s);
                let n = seconds.len() * 8;
                for s in (0..n).filter(|s| played(*s)) {
                    let m = s / 60;
                    if m < MAX_MINUTES && !bit(&v.minutes, m) {
                        set_bit(&mut v.minutes, m);
                        bump(&mut self.retention, m);
                    }
                }
                // Present for a poll: played a second of its open window.
                if let Some(p) = app.events.get(event_of(&r.showing_id)) {
                    for cue in &p.event.timeline {
                        let CueKind::Poll(poll) = &cue.kind else {
                            continue;
                        };
                        let (from, to) = (
                            cue.at.as_secs().max(0) as usize,
                            poll.close_at.as_secs().max(0) as usize,
                        );
                        if !v.polls.contains(&poll.id) && (from..to.min(n)).any(played) {
                            v.polls.insert(poll.id.clone());
                            self.polls.entry(poll.id.clone()).or_default().present += 1;
                        }
                    }
                }
            }
            "chat" => {
                self.chat += 1;
                if replay {
                    self.chat_replay += 1;
                } else {
                    self.chat_live += 1;
                }
                match d["pos"].as_i64() {
                    Some(pos) if pos >= 0 => bump(&mut self.chat_minutes, (pos / MINUTE) as usize),
                    _ => self.chat_lobby += 1,
                }
            }
            "vote" => {
                let id = d["poll"].as_str().unwrap_or_default().to_string();
                let p = self.polls.entry(id.clone()).or_default();
                p.voters += 1;
                if replay {
                    p.replay += 1;
                } else {
                    p.live += 1;
                }
                for o in d["options"].as_array().into_iter().flatten() {
                    let Some(o) = o.as_u64().map(|o| o as usize).filter(|o| *o < 64) else {
                        continue;
                    };
                    if p.counts.len() <= o {
                        p.counts.resize(o + 1, 0);
                    }
                    p.counts[o] += 1;
                }
                if let Some(v) = v
                    && v.polls.insert(id)
                {
                    p.present += 1;
                }
            }
            kind @ ("impression" | "click") => {
                let id = d["offer"].as_str().unwrap_or_default().to_string();
                let o = self.offers.entry(id.clone()).or_default();
                if kind == "click" {
                    o.clicks += 1;
                    if replay {
                        o.replay_clicks += 1;
                    } else {
                        o.live_clicks += 1;
                    }
                } else {
                    o.impressions += 1;
                }
                if let Some(v) = v {
                    if v.seen.insert(id.clone()) {
                        o.viewers += 1;
                    }
                    if kind == "click" && v.clicked.insert(id) {
                        o.clickers += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------
// The tailer

/// The tailer's progress (tests and reports wait on it).
pub struct EventStats {
    counted: watch::Sender<StatsCursors>,
}

impl Default for EventStats {
    fn default() -> Self {
        EventStats {
            counted: watch::Sender::new(StatsCursors::default()),
        }
    }
}

impl EventStats {
    /// Where the tailer has counted the logs up to.
    pub fn counted(&self) -> watch::Receiver<StatsCursors> {
        self.counted.subscribe()
    }

    /// Waits until everything logged so far is counted.
    pub async fn settled(&self, app: &App) {
        let Ok(feed) = app.store.stats_feed(StatsCursors::default(), 0).await else {
            return;
        };
        let end = feed.upto;
        let _ = self
            .counted()
            .wait_for(|c| c.showings >= end.showings && c.registrations >= end.registrations)
            .await;
    }
}

/// Starts the tailer.
pub fn start(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::tailer::follow(app.clone(), Tailer(None)))
}

fn parse<T: for<'de> Deserialize<'de> + Default>(what: &str, data: &str) -> T {
    serde_json::from_str(data)
        .map_err(|e| tracing::error!(%e, "event stats: unreadable {what} row; starting it over"))
        .unwrap_or_default()
}

/// One round: folds a page of each log into the figures and saves them with the
/// cursors' move. Returns whether there may be more to read now.
async fn round(
    app: &App,
    cursors: &mut Option<StatsCursors>,
) -> Result<bool, volley_store::StoreError> {
    let from = match *cursors {
        Some(c) => c,
        None => app.store.stats_cursors().await?,
    };
    let feed = app.store.stats_feed(from, PAGE).await?;
    if feed.upto == from {
        *cursors = Some(from);
        app.event_stats.counted.send_replace(from);
        return Ok(false);
    }
    let full = feed.showings.len() as i64 >= PAGE || feed.registrations.len() as i64 >= PAGE;
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
    for (_, r) in &feed.showings {
        ids.insert(r.showing_id.clone());
        if let Some(v) = &r.viewer_id {
            keys.insert((r.showing_id.clone(), v.clone()));
        }
    }
    for (_, r) in &feed.registrations {
        ids.insert(r.showing_id.clone());
        keys.insert((r.showing_id.clone(), r.viewer_id.clone()));
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let keys: Vec<(String, String)> = keys.into_iter().collect();
    let mut showings: HashMap<String, ShowingAgg> = app
        .store
        .event_stats(&ids)
        .await?
        .into_iter()
        .map(|r| (r.showing_id, parse("showing", &r.data)))
        .collect();
    let mut viewers: HashMap<(String, String), ViewerAgg> = app
        .store
        .viewer_stats(&keys)
        .await?
        .into_iter()
        .map(|r| ((r.showing_id, r.viewer_id), parse("viewer", &r.data)))
        .collect();
    for id in &ids {
        showings
            .entry(id.clone())
            .or_insert_with(|| ShowingAgg::new(app, id));
    }
    for (_, r) in &feed.registrations {
        let s = showings.get_mut(&r.showing_id).expect("loaded above");
        let v = viewers
            .entry((r.showing_id.clone(), r.viewer_id.clone()))
            .or_default();
        s.register(v);
    }
    for (_, r) in &feed.showings {
        let s = showings.get_mut(&r.showing_id).expect("loaded above");
        let v = r.viewer_id.as_ref().map(|v| {
            viewers
                .entry((r.showing_id.clone(), v.clone()))
                .or_default()
        });
        s.apply(app, r, v);
    }
    let now = app.clock.now_ms();
    let showing_rows = showings
        .into_iter()
        .map(|(id, s)| EventStatsRow {
            event_id: event_of(&id).to_string(),
            showing_id: id,
            data: serde_json::to_string(&s).expect("figures serialise"),
            updated_at: now,
        })
        .collect();
    let viewer_rows = viewers
        .into_iter()
        .map(|((showing_id, viewer_id), v)| ViewerStatsRow {
            showing_id,
            viewer_id,
            data: serde_json::to_string(&v).expect("a viewer serialises"),
        })
        .collect();
    if app
        .store
        .save_event_stats(from, feed.upto, showing_rows, viewer_rows)
        .await?
    {
        *cursors = Some(feed.upto);
        app.event_stats.counted.send_replace(feed.upto);
        Ok(full)
    } else {
        *cursors = None;
        Ok(true)
    }
}

/// The tailer's place in the logs (`None`: read them from the store).
struct Tailer(Option<StatsCursors>);

impl crate::tailer::Reader for Tailer {
    const NAME: &'static str = "event stats";

    fn round<'a>(
        &'a mut self,
        app: &'a App,
    ) -> impl std::future::Future<Output = Result<bool, volley_store::StoreError>> + Send + 'a {
        round(app, &mut self.0)
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}

// ---------------------------------------------------------------------------------
// The report

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// One minute of the live window.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConcurrencyMinute {
    /// Minutes from the start.
    pub minute: usize,
    pub peak: i64,
    /// Time-weighted mean over the minute (the part elapsed), two decimals.
    pub average: Option<f64>,
}

/// One minute of the media.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionMinute {
    pub minute: usize,
    /// Attendees who played part of this minute.
    pub viewers: u64,
    /// viewers / attendees, in %.
    pub percent: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WatchBucket {
    /// Share of the media watched, from (inclusive) to (exclusive; the last includes 100).
    pub from_percent: u32,
    pub to_percent: u32,
    pub viewers: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WatchTime {
    /// Sum over attendees, seconds.
    pub total_s: f64,
    /// total / attendees.
    pub mean_s: Option<f64>,
    pub buckets: Vec<WatchBucket>,
    /// Attendees who watched ≥ 95 % of the media.
    pub completed: u64,
    pub completion_rate_percent: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatMinute {
    pub minute: usize,
    pub messages: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatFigures {
    pub messages: u64,
    pub live: u64,
    pub replay: u64,
    /// Posted before the start (in the lobby).
    pub lobby: u64,
    /// Per media minute (the messages' positions).
    pub per_minute: Vec<ChatMinute>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PollOption {
    pub option: String,
    pub votes: u64,
    /// votes / voters, in %.
    pub percent: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PollFigures {
    pub id: String,
    pub question: String,
    pub options: Vec<PollOption>,
    pub voters: u64,
    pub live_voters: u64,
    pub replay_voters: u64,
    /// Attendees present while it was open (played part of its window, or voted).
    pub present: u64,
    /// voters / present, in %.
    pub participation_percent: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferFigures {
    pub id: String,
    pub text: String,
    pub impressions: u64,
    pub clicks: u64,
    pub live_clicks: u64,
    pub replay_clicks: u64,
    /// Distinct viewers shown it (an impression or a click).
    pub viewers: u64,
    /// Distinct viewers who clicked it.
    pub clickers: u64,
    /// clickers / viewers, in %.
    pub click_through_percent: Option<f64>,
    /// Conversions the seller reported (`POST /api/events/{id}/conversions`).
    pub conversions: u64,
    /// Distinct viewers with a conversion.
    pub converters: u64,
    /// Sum of the conversions' values.
    pub conversion_value: f64,
    /// converters / clickers, in %.
    pub conversion_percent: Option<f64>,
}

/// The figures of one showing of an event (docs/metrics.md, "Events").
#[derive(Debug, Serialize, ToSchema)]
pub struct EventReport {
    pub event_id: String,
    /// The showing reported (null: none has been watched or registered for).
    pub showing_id: Option<String>,
    /// Every showing of the event with figures (pick one with `showing=`).
    pub showings: Vec<String>,
    /// The media's length, seconds.
    pub length_s: f64,
    pub registrations: u64,
    /// Distinct viewers who joined (moderators excluded).
    pub attendees: u64,
    /// Attendees who had registered for this showing.
    pub registered_attendees: u64,
    /// registered_attendees / registrations, in %.
    pub attendance_rate_percent: Option<f64>,
    pub live_attendees: u64,
    pub replay_attendees: u64,
    /// The most connections open at once (any time).
    pub peak_concurrency: i64,
    /// Time-weighted mean of the connections open over the live window (so far).
    pub average_concurrency: Option<f64>,
    pub concurrency: Vec<ConcurrencyMinute>,
    pub retention: Vec<RetentionMinute>,
    pub watch_time: WatchTime,
    pub chat: ChatFigures,
    pub polls: Vec<PollFigures>,
    pub offers: Vec<OfferFigures>,
}

/// The report of a showing's figures at `now`.
fn build(
    app: &App,
    event_id: &str,
    showing: Option<&str>,
    agg: ShowingAgg,
    showings: Vec<String>,
    now: i64,
) -> EventReport {
    let mut s = agg;
    // The concurrency held since the last change counts up to now.
    s.advance(now);
    let elapsed = |m: usize| -> i64 {
        let Some(start) = s.start else { return 0 };
        let from = start + m as i64 * MINUTE;
        let to = (from + MINUTE).min(start + s.length).min(now);
        (to - from).max(0)
    };
    let concurrency: Vec<ConcurrencyMinute> = (0..s.conc_peak.len())
        .map(|m| ConcurrencyMinute {
            minute: m,
            peak: s.conc_peak[m],
            average: (elapsed(m) > 0).then(|| round2(s.conc_area[m] as f64 / elapsed(m) as f64)),
        })
        .collect();
    let window: i64 = (0..s.conc_peak.len()).map(elapsed).sum();
    let average_concurrency =
        (window > 0).then(|| round2(s.conc_area.iter().sum::<i64>() as f64 / window as f64));
    let n = s.minutes().max(s.retention.len());
    let retention = (0..n)
        .map(|m| {
            let viewers = s.retention.get(m).copied().unwrap_or(0);
            RetentionMinute {
                minute: m,
                viewers,
                percent: pct(viewers, s.attendees),
            }
        })
        .collect();
    let buckets = (0..BUCKETS)
        .map(|b| WatchBucket {
            from_percent: (b * 100 / BUCKETS) as u32,
            to_percent: ((b + 1) * 100 / BUCKETS) as u32,
            viewers: s.watch_buckets[b],
        })
        .collect();
    let n = s.minutes().max(s.chat_minutes.len());
    let per_minute = (0..n)
        .map(|m| ChatMinute {
            minute: m,
            messages: s.chat_minutes.get(m).copied().unwrap_or(0),
        })
        .collect();
    let published = app.events.get(event_id);
    let cues = published
        .as_ref()
        .map(|p| p.event.timeline.clone())
        .unwrap_or_default();
    let mut polls = Vec::new();
    let mut offers = Vec::new();
    for cue in &cues {
        match &cue.kind {
            CueKind::Poll(p) => {
                let a = s.polls.remove(&p.id).unwrap_or_default();
                polls.push(poll_figures(&p.id, &p.question, &p.options, a));
            }
            CueKind::Offer(o) => {
                let a = s.offers.remove(&o.id).unwrap_or_default();
                offers.push(offer_figures(&o.id, &o.text, a));
            }
            _ => {}
        }
    }
    // Polls and offers no longer in the published timeline keep their figures.
    for (id, a) in std::mem::take(&mut s.polls) {
        let options: Vec<String> = (0..a.counts.len()).map(|i| format!("#{i}")).collect();
        polls.push(poll_figures(&id, &id, &options, a));
    }
    for (id, a) in std::mem::take(&mut s.offers) {
        offers.push(offer_figures(&id, &id, a));
    }
    EventReport {
        event_id: event_id.to_string(),
        showing_id: showing.map(str::to_string),
        showings,
        length_s: s.length as f64 / 1000.0,
        registrations: s.registrations,
        attendees: s.attendees,
        registered_attendees: s.registered_attendees,
        attendance_rate_percent: pct(s.registered_attendees, s.registrations),
        live_attendees: s.live_attendees,
        replay_attendees: s.replay_attendees,
        peak_concurrency: s.peak,
        average_concurrency,
        concurrency,
        retention,
        watch_time: WatchTime {
            total_s: s.watched_ms as f64 / 1000.0,
            mean_s: (s.attendees > 0)
                .then(|| round2(s.watched_ms as f64 / 1000.0 / s.attendees as f64)),
            buckets,
            completed: s.completed,
            completion_rate_percent: pct(s.completed, s.attendees),
        },
        chat: ChatFigures {
            messages: s.chat,
            live: s.chat_live,
            replay: s.chat_replay,
            lobby: s.chat_lobby,
            per_minute,
        },
        polls,
        offers,
    }
}

fn poll_figures(id: &str, question: &str, options: &[String], a: PollAgg) -> PollFigures {
    PollFigures {
        id: id.into(),
        question: question.into(),
        options: options
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let votes = a.counts.get(i).copied().unwrap_or(0);
                PollOption {
                    option: o.clone(),
                    votes,
                    percent: pct(votes, a.voters),
                }
            })
            .collect(),
        voters: a.voters,
        live_voters: a.live,
        replay_voters: a.replay,
        present: a.present,
        participation_percent: pct(a.voters, a.present),
    }
}

fn offer_figures(id: &str, text: &str, a: OfferAgg) -> OfferFigures {
    OfferFigures {
        id: id.into(),
        text: text.into(),
        impressions: a.impressions,
        clicks: a.clicks,
        live_clicks: a.live_clicks,
        replay_clicks: a.replay_clicks,
        viewers: a.viewers,
        clickers: a.clickers,
        click_through_percent: pct(a.clickers, a.viewers),
        conversions: 0,
        converters: 0,
        conversion_value: 0.0,
        conversion_percent: None,
    }
}

/// The report of an event's showing (`showing`: the latest with figures when absent).
pub(crate) async fn report(
    app: &App,
    event_id: &str,
    showing: Option<&str>,
) -> Result<EventReport, ApiError> {
    let rows = app.store.event_stats_of(event_id).await?;
    if rows.is_empty() && app.events.get(event_id).is_none() {
        return Err(ApiError::not_found(
            "unknown-event",
            format!("no event `{event_id}`"),
        ));
    }
    if let Some(s) = showing
        && event_of(s) != event_id
    {
        return Err(ApiError::bad_request(
            "bad-showing",
            format!("`{s}` is not a showing of `{event_id}`"),
        ));
    }
    let mut ids: Vec<String> = rows.iter().map(|r| r.showing_id.clone()).collect();
    // Latest start first (ids without a start last).
    ids.sort_by_key(|id| std::cmp::Reverse((start_of(id), id.clone())));
    let chosen = showing.map(str::to_string).or_else(|| ids.first().cloned());
    let agg = match &chosen {
        Some(id) => rows
            .iter()
            .find(|r| &r.showing_id == id)
            .map(|r| parse("showing", &r.data))
            .unwrap_or_else(|| ShowingAgg::new(app, id)),
        None => ShowingAgg::default(),
    };
    let mut r = build(
        app,
        event_id,
        chosen.as_deref(),
        agg,
        ids,
        app.clock.now_ms(),
    );
    // Conversions are few (sales): read per report, by offer.
    if let Some(showing) = &r.showing_id {
        for (offer, n, viewers, value) in app.store.offer_conversions(showing).await? {
            let i = match r.offers.iter().position(|o| o.id == offer) {
                Some(i) => i,
                None => {
                    r.offers
                        .push(offer_figures(&offer, &offer, OfferAgg::default()));
                    r.offers.len() - 1
                }
            };
            let o = &mut r.offers[i];
            o.conversions = n as u64;
            o.converters = viewers as u64;
            o.conversion_value = round2(value);
            o.conversion_percent = pct(o.converters, o.clickers);
        }
    }
    Ok(r)
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The report as CSV: one row per figure (`figure`, `item`, `value`); the timeline's
/// figures have the minute as their item.
pub(crate) fn csv(r: &EventReport) -> Vec<u8> {
    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut add = |f: &str, item: String, v: String| rows.push([f.into(), item, v]);
    add(
        "showing",
        String::new(),
        r.showing_id.clone().unwrap_or_default(),
    );
    add("registrations", String::new(), r.registrations.to_string());
    add("attendees", String::new(), r.attendees.to_string());
    add(
        "registered_attendees",
        String::new(),
        r.registered_attendees.to_string(),
    );
    add(
        "attendance_rate_percent",
        String::new(),
        opt(r.attendance_rate_percent),
    );
    add(
        "live_attendees",
        String::new(),
        r.live_attendees.to_string(),
    );
    add(
        "replay_attendees",
        String::new(),
        r.replay_attendees.to_string(),
    );
    add(
        "peak_concurrency",
        String::new(),
        r.peak_concurrency.to_string(),
    );
    add(
        "average_concurrency",
        String::new(),
        opt(r.average_concurrency),
    );
    add(
        "watch_time_total_s",
        String::new(),
        r.watch_time.total_s.to_string(),
    );
    add("watch_time_mean_s", String::new(), opt(r.watch_time.mean_s));
    add(
        "completed",
        String::new(),
        r.watch_time.completed.to_string(),
    );
    add(
        "completion_rate_percent",
        String::new(),
        opt(r.watch_time.completion_rate_percent),
    );
    add("chat_messages", String::new(), r.chat.messages.to_string());
    add("chat_live", String::new(), r.chat.live.to_string());
    add("chat_replay", String::new(), r.chat.replay.to_string());
    add("chat_lobby", String::new(), r.chat.lobby.to_string());
    for c in &r.concurrency {
        add("concurrency_peak", c.minute.to_string(), c.peak.to_string());
        add("concurrency_average", c.minute.to_string(), opt(c.average));
    }
    for m in &r.retention {
        add(
            "retention_viewers",
            m.minute.to_string(),
            m.viewers.to_string(),
        );
        add("retention_percent", m.minute.to_string(), opt(m.percent));
    }
    for m in &r.chat.per_minute {
        add(
            "chat_per_minute",
            m.minute.to_string(),
            m.messages.to_string(),
        );
    }
    for b in &r.watch_time.buckets {
        add(
            "watch_time_viewers",
            format!("{}-{}%", b.from_percent, b.to_percent),
            b.viewers.to_string(),
        );
    }
    for p in &r.polls {
        add("poll_voters", p.id.clone(), p.voters.to_string());
        add("poll_present", p.id.clone(), p.present.to_string());
        add(
            "poll_participation_percent",
            p.id.clone(),
            opt(p.participation_percent),
        );
        for o in &p.options {
            add(
                "poll_votes",
                format!("{}: {}", p.id, o.option),
                o.votes.to_string(),
            );
        }
    }
    for o in &r.offers {
        add("offer_impressions", o.id.clone(), o.impressions.to_string());
        add("offer_viewers", o.id.clone(), o.viewers.to_string());
        add("offer_clicks", o.id.clone(), o.clicks.to_string());
        add("offer_clickers", o.id.clone(), o.clickers.to_string());
        add(
            "offer_click_through_percent",
            o.id.clone(),
            opt(o.click_through_percent),
        );
        add("offer_conversions", o.id.clone(), o.conversions.to_string());
        add("offer_converters", o.id.clone(), o.converters.to_string());
        add(
            "offer_conversion_value",
            o.id.clone(),
            o.conversion_value.to_string(),
        );
        add(
            "offer_conversion_percent",
            o.id.clone(),
            opt(o.conversion_percent),
        );
    }
    let mut out = crate::exports::csv_line(["figure", "item", "value"].map(String::from));
    for r in rows {
        out.extend(crate::exports::csv_line(r));
    }
    out
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// A showing of the event (an occurrence id); the latest with figures when absent.
    pub showing: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Whether `format` asks for CSV.
fn wants_csv(format: Option<&str>) -> Result<bool, ApiError> {
    match format.unwrap_or("json") {
        "json" => Ok(false),
        "csv" => Ok(true),
        other => Err(ApiError::bad_request(
            "bad-format",
            format!("format `{other}`: use json or csv"),
        )),
    }
}

/// `GET /api/analytics/events/{id}`: a showing's figures (scope `admin`).
#[utoipa::path(
    get,
    path = "/api/analytics/events/{id}",
    tag = "analytics",
    params(("id" = String, Path, description = "The event id"), EventQuery),
    responses((status = 200, body = EventReport, description = "JSON, or CSV with `format=csv` (figure, item, value)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn event(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let csv_wanted = wants_csv(q.format.as_deref())?;
    let r = report(&app, &id, q.showing.as_deref().filter(|s| !s.is_empty())).await?;
    if !csv_wanted {
        return Ok(Json(r).into_response());
    }
    let disposition = format!(
        "attachment; filename=\"{}-analytics.csv\"",
        id.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "_"
        )
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        csv(&r),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------
// Offer conversions reported by the seller

/// Characters in an order id.
pub const MAX_ORDER_CHARS: usize = 200;
/// The largest conversion value.
pub const MAX_CONVERSION_VALUE: f64 = 1e12;

/// A conversion after an offer: who (a registration, a registrant's email, or the
/// viewer and showing the offer link carried), which offer, and optionally its value and
/// the seller's order id (a repeated order counts once).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConversion {
    /// The offer's id in the event's timeline.
    pub offer: String,
    /// A registration id (`reg_…`).
    pub registration: Option<String>,
    /// A registrant's email address (their latest registration for the event).
    pub email: Option<String>,
    /// The viewer id and showing id the offer link carried (`volley_viewer`,
    /// `volley_showing`).
    pub viewer: Option<String>,
    pub showing: Option<String>,
    pub value: Option<f64>,
    /// The seller's order id: the same order reported again is not counted twice.
    pub order: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Conversion {
    pub id: String,
    pub event: String,
    pub showing: String,
    pub viewer: String,
    pub offer: String,
    pub value: Option<f64>,
    pub order: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// `POST /api/events/{id}/conversions` (scope `conversations:write`): records that a
/// viewer converted after an offer. `201` when recorded, `200` with the first record
/// when the order was already reported.
#[utoipa::path(post, path = "/api/events/{id}/conversions", tag = "analytics",
    params(("id" = String, Path, description = "The event id")), request_body = NewConversion,
    responses((status = 201, body = Conversion), (status = 200, body = Conversion, description = "the order was already reported"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn record_conversion(
    State(app): State<Arc<App>>,
    _: Scoped<scope::ConversationsWrite>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<NewConversion>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Conversion>), ApiError> {
    let Json(c) = body.map_err(crate::api::json_error)?;
    let Some(published) = app.events.get(&id) else {
        return Err(ApiError::not_found(
            "unknown-event",
            format!("no event `{id}`"),
        ));
    };
    let bad = |code: &'static str, m: String| ApiError::unprocessable(code, m);
    let known = published
        .event
        .timeline
        .iter()
        .any(|cue| matches!(&cue.kind, CueKind::Offer(o) if o.id == c.offer));
    if !known {
        return Err(bad(
            "unknown-offer",
            format!("`{id}` has no offer `{}`", c.offer),
        ));
    }
    if let Some(v) = c.value
        && !(v.is_finite() && (0.0..=MAX_CONVERSION_VALUE).contains(&v))
    {
        return Err(bad(
            "invalid-value",
            format!("a value is a number from 0 to {MAX_CONVERSION_VALUE}"),
        ));
    }
    if let Some(o) = &c.order
        && (o.is_empty() || o.chars().count() > MAX_ORDER_CHARS || o.chars().any(char::is_control))
    {
        return Err(bad(
            "invalid-order",
            format!("an order id has 1 to {MAX_ORDER_CHARS} characters, no control characters"),
        ));
    }
    let registration = match (&c.registration, &c.email) {
        (Some(r), _) => Some(
            app.store
                .registration(r)
                .await?
                .filter(|r| r.event_id == id)
                .ok_or_else(|| {
                    bad(
                        "unknown-viewer",
                        format!("no registration `{r}` for `{id}`"),
                    )
                })?,
        ),
        (None, Some(e)) => Some(
            app.store
                .registration_by_email(&id, e.trim())
                .await?
                .ok_or_else(|| {
                    bad(
                        "unknown-viewer",
                        format!("nobody registered for `{id}` as `{e}`"),
                    )
                })?,
        ),
        (None, None) => None,
    };
    let (showing, viewer) = match (registration, &c.viewer, &c.showing) {
        (Some(r), _, _) => (r.showing_id, r.viewer_id),
        (None, Some(v), Some(s)) if event_of(s) == id && !v.is_empty() && v.len() <= 100 => {
            (s.clone(), v.clone())
        }
        (None, Some(_), Some(s)) => {
            return Err(bad(
                "unknown-viewer",
                format!("`{s}` is not a showing of `{id}`"),
            ));
        }
        _ => {
            return Err(bad(
                "unknown-viewer",
                "name the viewer: `registration`, `email`, or `viewer` with `showing`".into(),
            ));
        }
    };
    let row = volley_store::ConversionRow {
        id: crate::ids::new_id("cv"),
        event_id: id.clone(),
        showing_id: showing,
        viewer_id: viewer,
        offer: c.offer,
        value: c.value,
        order_id: c.order,
        at: app.clock.now_ms(),
    };
    let (row, created) = app.store.record_conversion(row).await?;
    let status = if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        status,
        Json(Conversion {
            id: row.id,
            event: row.event_id,
            showing: row.showing_id,
            viewer: row.viewer_id,
            offer: row.offer,
            value: row.value,
            order: row.order_id,
            at: row.at,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showing_ids_name_their_event_and_start() {
        assert_eq!(event_of("talk@2026-12-10T19:00:00Z"), "talk");
        assert_eq!(
            start_of("talk@2026-12-10T19:00:00Z"),
            Some(1_796_929_200_000)
        );
        assert_eq!(
            start_of("talk@2026-12-10T19:00:00Z~on-demand#v1"),
            Some(1_796_929_200_000)
        );
        assert_eq!(start_of("talk"), None);
    }

    #[test]
    fn concurrency_is_integrated_per_minute_of_the_live_window() {
        let mut s = ShowingAgg {
            start: Some(0),
            length: 3 * MINUTE,
            ..ShowingAgg::default()
        };
        s.set_present(-5_000, 1); // in the lobby
        s.set_present(30_000, 2);
        s.set_present(90_000, 1);
        s.advance(3 * MINUTE + 10_000);
        assert_eq!(s.conc_peak, [2, 2, 1]);
        assert_eq!(
            s.conc_area,
            [30_000 + 2 * 30_000, 2 * 30_000 + 30_000, MINUTE]
        );
        assert_eq!(s.peak, 2);
    }
}
