//! The analytics aggregator: reads the conversation log once, in rowid order after a
//! cursor kept in the store, and turns it into counters by flow version and start day
//! (started, steps reached, where conversations stopped, time per step, answers, goals,
//! split arms, response times), hand-off replies and contact activity. Each page's
//! counters are written with the cursor's move in one transaction, so a crash neither
//! loses nor double counts. Reports (`analytics/`) read the counters, never the log.
//! The definitions are in docs/metrics.md.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use volley_flow::QuestionType;
use volley_store::{FeedEvent, ReplyRow, StatDelta, StatsBatch, StoreError};

use crate::App;

/// Log entries read per round.
const PAGE: i64 = 10_000;
/// The kinds of entries the aggregator reads (and every conversation's first entry).
const KINDS: [&str; 12] = [
    "enter",
    "back",
    "answer",
    "goal",
    "split",
    "end",
    "handoff",
    "transferred",
    "resolved",
    "input",
    "message",
    "ask",
];
/// Answer values longer than this are not counted one by one.
const MAX_VALUE_CHARS: usize = 80;
/// Separates the parts of a counter's key (a step and an answer, a split and an arm).
pub const SEP: char = '\u{1f}';
/// The edge's target when a conversation ends at a step.
pub const END_NODE: &str = "(end)";
/// The edge's source of a conversation's first step.
pub const START_NODE: &str = "(start)";

/// Outcomes that end a conversation without completing its flow.
pub const NOT_COMPLETED: [&str; 3] = ["expired", "error", crate::handoff::RESOLVED];

/// Counter names (the `metric` column).
pub mod metric {
    pub const STARTED: &str = "started";
    pub const ENDED: &str = "ended";
    pub const REACHED: &str = "reached";
    pub const AT: &str = "at";
    pub const EDGE: &str = "edge";
    pub const STEP_TIME: &str = "step_time";
    pub const STEP_TIME_H: &str = "step_time_h";
    pub const ANSWERED: &str = "answered";
    pub const ANSWER: &str = "answer";
    pub const GOAL: &str = "goal";
    pub const ARM: &str = "arm";
    pub const ARM_COMPLETED: &str = "arm_completed";
    pub const ARM_GOAL: &str = "arm_goal";
    pub const HANDOFF: &str = "handoff";
    pub const BOT_RESPONSE: &str = "bot_response";
    pub const HUMAN_RESPONSE: &str = "human_response";
}

/// The day (since 1970-01-01, UTC) of a timestamp in milliseconds.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// The latency histogram's bucket of a duration: 0 for none, else four buckets per
/// doubling (each ≤ 19 % wide), up to 2^40 ms.
pub fn bucket(ms: i64) -> i64 {
    if ms <= 0 {
        0
    } else {
        (((ms as f64).log2() * 4.0).floor() as i64 + 1).clamp(1, 160)
    }
}

/// The largest duration (ms) of a bucket: what a percentile in it is reported as.
pub fn bucket_upper_ms(b: i64) -> f64 {
    if b <= 0 {
        0.0
    } else {
        2f64.powf(b as f64 / 4.0).floor()
    }
}

/// A bucket as a counter key (zero-padded, so keys sort by duration).
fn bucket_key(ms: i64) -> String {
    format!("{:03}", bucket(ms))
}

/// What the aggregator remembers of a conversation between entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Progress {
    flow: String,
    version: i64,
    /// Start day: every counter of the conversation counts on it.
    day: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<String>,
    #[serde(default)]
    entered_at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reached: Vec<String>,
    /// `(split step, arm)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    arms: Vec<(String, String)>,
    /// A participant's input the bot has not answered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_at: Option<i64>,
    /// The queue while a hand-off is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    handed_off: bool,
    /// The first participant message a person has not answered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    human_wait_at: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ended: bool,
}

/// A counter's row: flow, version, day, metric, key.
type Row = (String, i64, i64, &'static str, String);

/// Counters of one page, merged by row.
#[derive(Default)]
struct Deltas {
    rows: HashMap<Row, (i64, f64)>,
}

impl Deltas {
    fn add(
        &mut self,
        p: &Progress,
        metric: &'static str,
        key: impl Into<String>,
        n: i64,
        total: f64,
    ) {
        let e = self
            .rows
            .entry((p.flow.clone(), p.version, p.day, metric, key.into()))
            .or_default();
        e.0 += n;
        e.1 += total;
    }

    fn into_vec(self) -> Vec<StatDelta> {
        self.rows
            .into_iter()
            .filter(|(_, (n, t))| *n != 0 || *t != 0.0)
            .map(
                |((flow_id, version, day, metric, key), (n, total))| StatDelta {
                    flow_id,
                    version,
                    day,
                    metric,
                    key,
                    n,
                    total,
                },
            )
            .collect()
    }
}

/// Question types by (flow, version, step), for answer distributions.
type QuestionTypes = HashMap<(String, i64), HashMap<String, QuestionType>>;

/// Whether a question's answers are counted value by value.
fn counts_values(t: QuestionType) -> bool {
    matches!(
        t,
        QuestionType::Choice
            | QuestionType::Multiple
            | QuestionType::Rating
            | QuestionType::Nps
            | QuestionType::YesNo
    )
}

fn value_keys(v: &Value) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.chars().take(MAX_VALUE_CHARS).collect()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match v {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

/// Whether an `input` entry is something a participant wrote or chose (not a timer's
/// or the server's input).
fn from_participant(data: &Value) -> bool {
    data.get("text").is_some()
        || data.get("values").is_some()
        || matches!(data["action"].as_str(), Some("back" | "skip"))
}

/// One page folded into counters: the pure part of the aggregator.
struct Fold<'a> {
    types: &'a QuestionTypes,
    progress: HashMap<String, Progress>,
    deltas: Deltas,
    replies: Vec<ReplyRow>,
    activity: Vec<(String, i64)>,
}

impl Fold<'_> {
    fn leave_step(&mut self, p: &Progress, at: i64, to: &str) {
        if let Some(prev) = &p.step {
            let spent = (at - p.entered_at).max(0);
            self.deltas
                .add(p, metric::STEP_TIME, prev.clone(), 1, spent as f64);
            self.deltas.add(
                p,
                metric::STEP_TIME_H,
                format!("{prev}{SEP}{}", bucket_key(spent)),
                1,
                0.0,
            );
            self.deltas.add(p, metric::AT, prev.clone(), -1, 0.0);
            self.deltas
                .add(p, metric::EDGE, format!("{prev}{SEP}{to}"), 1, 0.0);
        } else if to != END_NODE {
            self.deltas
                .add(p, metric::EDGE, format!("{START_NODE}{SEP}{to}"), 1, 0.0);
        }
    }

    fn entry(&mut self, e: &FeedEvent) {
        let mut p = self
            .progress
            .remove(&e.conversation_id)
            .unwrap_or_else(|| Progress {
                flow: e.flow_id.clone(),
                version: e.flow_version,
                day: day_of(e.at),
                ..Progress::default()
            });
        if e.seq == 1 {
            self.deltas.add(&p, metric::STARTED, "", 1, 0.0);
            if e.origin.is_none() {
                self.activity.push((e.contact_id.clone(), day_of(e.at)));
            }
        }
        let data: Value = serde_json::from_str(&e.data).unwrap_or_default();
        let str_of = |k: &str| data[k].as_str().unwrap_or_default().to_string();
        match e.kind.as_str() {
            "enter" if !p.ended => {
                let step = str_of("step");
                self.leave_step(&p, e.at, &step);
                self.deltas.add(&p, metric::AT, step.clone(), 1, 0.0);
                if !p.reached.contains(&step) {
                    self.deltas.add(&p, metric::REACHED, step.clone(), 1, 0.0);
                    p.reached.push(step.clone());
                }
                p.step = Some(step);
                p.entered_at = e.at;
            }
            "back" if !p.ended => {
                let to = str_of("to");
                self.leave_step(&p, e.at, &to);
                self.deltas.add(&p, metric::AT, to.clone(), 1, 0.0);
                p.step = Some(to);
                p.entered_at = e.at;
            }
            "answer" => {
                let step = str_of("step");
                self.deltas.add(&p, metric::ANSWERED, step.clone(), 1, 0.0);
                let counted = self
                    .types
                    .get(&(p.flow.clone(), p.version))
                    .and_then(|t| t.get(&step))
                    .is_some_and(|t| counts_values(*t));
                if counted {
                    for v in value_keys(&data["value"]) {
                        self.deltas
                            .add(&p, metric::ANSWER, format!("{step}{SEP}{v}"), 1, 0.0);
                    }
                }
            }
            "goal" => {
                let name = str_of("name");
                let value = data["value"].as_f64().unwrap_or(0.0);
                self.deltas.add(&p, metric::GOAL, name.clone(), 1, value);
                for (split, arm) in p.arms.clone() {
                    self.deltas.add(
                        &p,
                        metric::ARM_GOAL,
                        format!("{split}{SEP}{arm}{SEP}{name}"),
                        1,
                        value,
                    );
                }
            }
            "split" => {
                let (split, arm) = (str_of("step"), str_of("arm"));
                self.deltas
                    .add(&p, metric::ARM, format!("{split}{SEP}{arm}"), 1, 0.0);
                p.arms.push((split, arm));
            }
            "end" if !p.ended => {
                let outcome = str_of("outcome");
                self.leave_step(&p, e.at, END_NODE);
                self.deltas.add(&p, metric::ENDED, outcome.clone(), 1, 0.0);
                if !NOT_COMPLETED.contains(&outcome.as_str()) {
                    for (split, arm) in p.arms.clone() {
                        self.deltas.add(
                            &p,
                            metric::ARM_COMPLETED,
                            format!("{split}{SEP}{arm}"),
                            1,
                            0.0,
                        );
                    }
                }
                p.ended = true;
                p.step = None;
                p.queue = None;
            }
            "handoff" => {
                if !p.handed_off {
                    self.deltas.add(&p, metric::HANDOFF, "", 1, 0.0);
                    p.handed_off = true;
                }
                p.queue = Some(data["queue"].as_str().unwrap_or("default").to_string());
                // A person answers from now on, not the bot.
                p.input_at = None;
            }
            "transferred" => {
                if let Some(q) = data["queue"].as_str() {
                    p.queue = Some(q.to_string());
                }
            }
            "resolved" => {
                p.queue = None;
                p.human_wait_at = None;
            }
            "input" if from_participant(&data) => {
                self.activity.push((e.contact_id.clone(), day_of(e.at)));
                if p.queue.is_some() || data["to"] == "human" {
                    p.human_wait_at.get_or_insert(e.at);
                } else {
                    p.input_at.get_or_insert(e.at);
                }
            }
            "message" if data["from"] == "agent" => {
                if let Some(since) = p.human_wait_at.take() {
                    let wait = (e.at - since).max(0);
                    self.deltas
                        .add(&p, metric::HUMAN_RESPONSE, bucket_key(wait), 1, wait as f64);
                    self.replies.push(ReplyRow {
                        conversation_id: e.conversation_id.clone(),
                        at: e.at,
                        agent_id: str_of("agent_id"),
                        queue: p.queue.clone().unwrap_or_default(),
                        wait_ms: wait,
                    });
                }
            }
            "message" | "ask" => {
                if let Some(since) = p.input_at.take() {
                    let wait = (e.visible_at - since).max(0);
                    self.deltas
                        .add(&p, metric::BOT_RESPONSE, bucket_key(wait), 1, wait as f64);
                }
            }
            _ => {}
        }
        self.progress.insert(e.conversation_id.clone(), p);
    }
}

/// Folds a page of entries, given the saved state of their conversations.
/// What a page of entries folds into.
struct Folded {
    progress: HashMap<String, Progress>,
    deltas: Deltas,
    replies: Vec<ReplyRow>,
    activity: Vec<(String, i64)>,
}

fn fold(events: &[FeedEvent], saved: Vec<(String, String)>, types: &QuestionTypes) -> Folded {
    let progress = saved
        .into_iter()
        .filter_map(|(id, data)| Some((id, serde_json::from_str(&data).ok()?)))
        .collect();
    let mut f = Fold {
        types,
        progress,
        deltas: Deltas::default(),
        replies: Vec::new(),
        activity: Vec::new(),
    };
    for e in events {
        f.entry(e);
    }
    f.activity.sort();
    f.activity.dedup();
    Folded {
        progress: f.progress,
        deltas: f.deltas,
        replies: f.replies,
        activity: f.activity,
    }
}

async fn question_types(app: &App, events: &[FeedEvent]) -> QuestionTypes {
    let mut out = QuestionTypes::new();
    for e in events.iter().filter(|e| e.kind == "answer") {
        let key = (e.flow_id.clone(), e.flow_version);
        if out.contains_key(&key) {
            continue;
        }
        let types = match app
            .flows
            .version(&*app.store, &e.flow_id, e.flow_version)
            .await
        {
            Ok(p) => p
                .flow
                .questions()
                .into_iter()
                .map(|(step, _, t)| (step.to_string(), t))
                .collect(),
            Err(_) => HashMap::new(),
        };
        out.insert(key, types);
    }
    out
}

/// One round: a page of the log folded and written with the cursor's move. Returns
/// whether there may be more to read now.
async fn round(app: &App, cursor: &mut Option<i64>) -> Result<bool, StoreError> {
    let from = match *cursor {
        Some(c) => c,
        None => app.store.stats_cursor().await?,
    };
    let (events, upto) = app.store.events_since(from, &KINDS, PAGE).await?;
    if upto == from {
        *cursor = Some(from);
        app.stats.send_replace(from);
        return Ok(false);
    }
    let mut ids: Vec<String> = events.iter().map(|e| e.conversation_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let saved = app.store.stats_progress(&ids).await?;
    let types = question_types(app, &events).await;
    let page = fold(&events, saved, &types);
    let batch = StatsBatch {
        from,
        to: upto,
        deltas: page.deltas.into_vec(),
        progress: page
            .progress
            .into_iter()
            .map(|(id, p)| (id, serde_json::to_string(&p).unwrap_or_default()))
            .collect(),
        replies: page.replies,
        activity: page.activity,
    };
    if app.store.apply_stats(batch).await? {
        *cursor = Some(upto);
        app.stats.send_replace(upto);
        Ok(events.len() as i64 >= PAGE)
    } else {
        *cursor = None;
        Ok(true)
    }
}

/// Waits until the aggregator has read every log entry committed before the call
/// (tests, and reports that must include what was just written).
pub async fn caught_up(app: &App) -> Result<(), StoreError> {
    let (_, end) = app.store.events_since(0, &[], 0).await?;
    let mut at = app.stats.subscribe();
    let _ = at.wait_for(|p| *p >= end).await;
    Ok(())
}

/// The aggregator's place in the log (`None`: read it from the store).
struct Aggregator(Option<i64>);

impl crate::tailer::Reader for Aggregator {
    const NAME: &'static str = "analytics";

    fn round<'a>(
        &'a mut self,
        app: &'a App,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'a {
        round(app, &mut self.0)
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}

/// The aggregator task: runs until the server shuts down.
pub async fn run(app: Arc<App>) {
    crate::tailer::follow(app, Aggregator(None)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_a_quarter_doubling_wide() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        for ms in [1, 3, 10, 250, 999, 60_000, 86_400_000] {
            let b = bucket(ms);
            assert!(bucket_upper_ms(b) >= ms as f64, "{ms} in {b}");
            assert!(bucket_upper_ms(b) < ms as f64 * 1.19 + 1.0, "{ms} in {b}");
            assert!(bucket(ms - 1) <= b && bucket(ms + 1) >= b);
        }
    }
}
