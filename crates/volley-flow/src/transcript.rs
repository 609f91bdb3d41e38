//! Conversation transcripts: plain-text regression tests for flows.
//!
//! A transcript lists what the bot says and what the participant answers. Running it
//! replays the participant's side through the engine and compares every visible effect
//! with the expected lines. The format is documented in docs/flows.md ("Transcripts").
//!
//! ```text
//! flow: lead-qualification
//! contact: name=Ana, timezone=Europe/Lisbon
//!
//! === Small team
//! bot: Hi Ana! How many people are on your team?
//! > 4
//! bot* Thanks*
//! end: nurture
//! ```

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::engine::{Contact, Effect, Input, MessageKind, Question};
use crate::flow::Flow;

/// The instant a transcript starts at unless it says `now:` (a Monday morning).
pub const DEFAULT_NOW: &str = "2026-01-05T09:00:00Z";

/// A parsed transcript file.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// `flow:` from the header (id or file stem), if given.
    pub flow: Option<String>,
    pub cases: Vec<Case>,
    lines: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// 1-based line of the `===` header (or 1).
    pub line: usize,
    pub flow: Option<String>,
    contact: Contact,
    now: Timestamp,
    seed: u64,
    /// Turns: expected output of the start, then one per participant input.
    turns: Vec<Turn>,
    /// Index of the first line after the case.
    end: usize,
}

#[derive(Debug, Clone)]
struct Turn {
    /// The input that starts this turn (none for the opening turn) and its line.
    input: Option<(Command, usize)>,
    expected: Vec<Expect>,
    /// Line indexes (0-based) the expected lines occupy, for rewriting.
    span: (usize, usize),
    asserts: Vec<Assert>,
}

#[derive(Debug, Clone)]
enum Command {
    Text(String),
    Click(Vec<String>),
    TickAll,
    Back,
    Skip,
    Timeout,
    Resume,
    Wait,
    Late,
    Expire,
    Jump(String),
    Http(u16, serde_json::Value),
    HttpFail(String),
    After(jiff::Span),
}

#[derive(Debug, Clone)]
struct Expect {
    line: usize,
    kind: String,
    pattern: Pattern,
    raw: String,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Glob(String),
    Regex(regex::Regex),
}

impl Pattern {
    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == s,
            Pattern::Glob(g) => glob_match(g, s),
            Pattern::Regex(r) => r.is_match(s),
        }
    }
}

#[derive(Debug, Clone)]
enum Assert {
    /// `delay: 2s` or `delay: 2m..5m` after a `bot:` line: that message's pacing delay.
    Delay {
        line: usize,
        index: usize,
        min_ms: u64,
        max_ms: u64,
    },
    Var {
        line: usize,
        name: String,
        pattern: VarPattern,
    },
    Progress {
        line: usize,
        percent: u32,
    },
}

#[derive(Debug, Clone)]
enum VarPattern {
    Json(serde_json::Value),
    Glob(String),
    Absent,
}

/// A problem in the transcript file itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub line: usize,
    pub message: String,
}

/// The outcome of one case, with the actual output for `VOLLEY_UPDATE`.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub line: usize,
    pub failures: Vec<Failure>,
    actual: Vec<Vec<String>>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Parses a transcript.
pub fn parse(text: &str) -> Result<Transcript, SyntaxError> {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut header = Header {
        flow: None,
        contact: Contact::default(),
        now: DEFAULT_NOW.parse().expect("valid"),
        seed: 1,
    };
    let mut cases: Vec<Case> = Vec::new();
    let mut current: Option<Case> = None;
    let err = |line: usize, message: String| SyntaxError {
        line: line + 1,
        message,
    };

    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("===") {
            if let Some(mut c) = current.take() {
                c.end = i;
                cases.push(c);
            }
            current = Some(Case {
                name: name.trim().to_string(),
                line: i + 1,
                flow: header.flow.clone(),
                contact: header.contact.clone(),
                now: header.now,
                seed: header.seed,
                turns: vec![Turn::new(None, i + 1)],
                end: lines.len(),
            });
            continue;
        }
        // Header keys apply to the file (before the first case) or to the case.
        if let Some((key, value)) = split_key(trimmed)
            && matches!(key, "flow" | "contact" | "now" | "seed")
            && current
                .as_ref()
                .is_none_or(|c| c.turns.len() == 1 && c.turns[0].expected.is_empty())
        {
            let value = value.trim();
            if let Some(c) = current.as_mut() {
                // The case's first expected lines go after its own settings.
                c.turns[0].span = (i + 1, i + 1);
            }
            let (flow, contact, now, seed) = match current.as_mut() {
                Some(c) => (&mut c.flow, &mut c.contact, &mut c.now, &mut c.seed),
                None => (
                    &mut header.flow,
                    &mut header.contact,
                    &mut header.now,
                    &mut header.seed,
                ),
            };
            match key {
                "flow" => *flow = Some(value.to_string()),
                "contact" => *contact = parse_contact(value).map_err(|m| err(i, m))?,
                "now" => *now = value.parse().map_err(|e| err(i, format!("`now`: {e}")))?,
                _ => {
                    *seed = value
                        .parse()
                        .map_err(|_| err(i, "`seed` must be a number".into()))?
                }
            }
            continue;
        }
        if current.is_none() {
            current = Some(Case {
                name: String::from("transcript"),
                line: 1,
                flow: header.flow.clone(),
                contact: header.contact.clone(),
                now: header.now,
                seed: header.seed,
                turns: vec![Turn::new(None, i)],
                end: lines.len(),
            });
        }
        let case = current.as_mut().expect("set above");
        if let Some(input) = trimmed.strip_prefix('>') {
            let cmd = parse_command(input.trim()).map_err(|m| err(i, m))?;
            case.turns.push(Turn::new(Some((cmd, i + 1)), i + 1));
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("after:") {
            let span = crate::time::parse_span(rest.trim()).map_err(|m| err(i, m))?;
            case.turns
                .push(Turn::new(Some((Command::After(span), i + 1)), i + 1));
            continue;
        }
        let turn = case.turns.last_mut().expect("a case has a turn");
        if let Some(rest) = trimmed.strip_prefix("var ") {
            turn.asserts
                .push(parse_var_assert(rest, i + 1).map_err(|m| err(i, m))?);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("delay:") {
            let rest = rest.trim();
            let parse = |d: &str| crate::time::parse_millis(d).map_err(|m| err(i, m));
            let (min_ms, max_ms) = match rest.split_once("..") {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => {
                    let d = parse(rest)?;
                    (d, d)
                }
            };
            let index = turn
                .expected
                .len()
                .checked_sub(1)
                .ok_or_else(|| err(i, "`delay:` follows the `bot:` line it is about".into()))?;
            turn.asserts.push(Assert::Delay {
                line: i + 1,
                index,
                min_ms,
                max_ms,
            });
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("progress:") {
            let p = rest.trim().trim_end_matches('%').trim();
            let percent = p
                .parse()
                .map_err(|_| err(i, "`progress:` takes a percentage such as 40%".into()))?;
            turn.asserts.push(Assert::Progress {
                line: i + 1,
                percent,
            });
            continue;
        }
        if let Some(cont) = trimmed.strip_prefix('|') {
            // Continuation of the previous expected line (multi-line messages).
            let last = turn
                .expected
                .last_mut()
                .ok_or_else(|| err(i, "`|` continues a `bot:` line".into()))?;
            let add = cont.strip_prefix(' ').unwrap_or(cont);
            last.raw.push('\n');
            last.raw.push_str(add);
            last.pattern = match &last.pattern {
                Pattern::Exact(s) => Pattern::Exact(format!("{s}\n{add}")),
                Pattern::Glob(s) => Pattern::Glob(format!("{s}\n{add}")),
                Pattern::Regex(r) => Pattern::Regex(
                    regex::Regex::new(&format!("{}\n{add}", r.as_str()))
                        .map_err(|e| err(i, e.to_string()))?,
                ),
            };
            turn.span.1 = i + 1;
            continue;
        }
        let (kind, pattern) = parse_expect(trimmed).map_err(|m| err(i, m))?;
        if turn.expected.is_empty() {
            turn.span.0 = i;
        }
        turn.span.1 = i + 1;
        turn.expected.push(Expect {
            line: i + 1,
            kind,
            pattern,
            raw: trimmed.to_string(),
        });
    }
    if let Some(mut c) = current.take() {
        c.end = lines.len();
        cases.push(c);
    }
    Ok(Transcript {
        flow: header.flow,
        cases,
        lines,
    })
}

struct Header {
    flow: Option<String>,
    contact: Contact,
    now: Timestamp,
    seed: u64,
}

impl Turn {
    fn new(input: Option<(Command, usize)>, at: usize) -> Self {
        Turn {
            input,
            expected: Vec::new(),
            span: (at, at),
            asserts: Vec::new(),
        }
    }
}

const EXPECT_KINDS: &[&str] = &[
    "bot", "invalid", "image", "video", "links", "buttons", "items", "handoff", "wait", "http",
    "webhook", "goal", "split", "end", "error", "rejected",
];

fn split_key(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    (!k.contains(' ')).then_some((k, v))
}

fn parse_expect(line: &str) -> Result<(String, Pattern), String> {
    let pos = line.find([':', '*', '~']).ok_or_else(|| {
        format!("cannot read `{line}`: expected `bot: …`, `> answer` or another line kind")
    })?;
    let kind = &line[..pos];
    if !EXPECT_KINDS.contains(&kind) {
        let help =
            crate::diag::did_you_mean(kind, EXPECT_KINDS.iter().copied()).unwrap_or_default();
        return Err(format!("unknown line kind `{kind}` {help}")
            .trim()
            .to_string());
    }
    let body = line[pos + 1..]
        .strip_prefix(' ')
        .unwrap_or(&line[pos + 1..]);
    let pattern = match line.as_bytes()[pos] {
        b'*' => Pattern::Glob(body.to_string()),
        b'~' => {
            Pattern::Regex(regex::Regex::new(&format!("^(?:{body})$")).map_err(|e| e.to_string())?)
        }
        _ => Pattern::Exact(body.to_string()),
    };
    Ok((kind.to_string(), pattern))
}

fn parse_command(s: &str) -> Result<Command, String> {
    if let Some(rest) = s.strip_prefix('/') {
        let (cmd, arg) = rest
            .split_once(' ')
            .map_or((rest, ""), |(c, a)| (c, a.trim()));
        return Ok(match cmd {
            "back" => Command::Back,
            "skip" => Command::Skip,
            "timeout" => Command::Timeout,
            "resume" => Command::Resume,
            "wait" => Command::Wait,
            "late" => Command::Late,
            "expire" => Command::Expire,
            "jump" if !arg.is_empty() => Command::Jump(arg.to_string()),
            "http" => {
                let (status, body) = arg.split_once(' ').unwrap_or((arg, "null"));
                let status = status.parse().map_err(|_| {
                    "`/http` takes a status and JSON: /http 200 {\"ok\":true}".to_string()
                })?;
                let body = serde_json::from_str(body)
                    .map_err(|e| format!("`/http` body is not JSON: {e}"))?;
                Command::Http(status, body)
            }
            "http-fail" => Command::HttpFail(if arg.is_empty() {
                "failed".into()
            } else {
                arg.into()
            }),
            _ => Command::Text(s.to_string()),
        });
    }
    if let Some(rest) = s.strip_prefix('\\') {
        return Ok(Command::Text(rest.to_string()));
    }
    if s.starts_with('[') && s.ends_with(']') {
        let labels: Vec<String> = s[1..s.len() - 1]
            .split("] [")
            .map(|l| l.trim().to_string())
            .collect();
        if labels == ["*"] {
            return Ok(Command::TickAll);
        }
        return Ok(Command::Click(labels));
    }
    Ok(Command::Text(s.to_string()))
}

fn parse_var_assert(rest: &str, line: usize) -> Result<Assert, String> {
    let rest = rest.trim();
    let name_end = rest.find([' ', '=', '*']).unwrap_or(rest.len());
    let name = rest[..name_end].to_string();
    let op = rest[name_end..].trim_start();
    let pattern = if let Some(v) = op.strip_prefix('=') {
        let v = v.trim();
        if v == "absent" || v == "null" {
            VarPattern::Absent
        } else {
            VarPattern::Json(
                serde_json::from_str(v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_string())),
            )
        }
    } else if let Some(g) = op.strip_prefix('*') {
        VarPattern::Glob(g.trim().to_string())
    } else {
        return Err("write `var name = value` (JSON or text) or `var name * glob`".into());
    };
    Ok(Assert::Var {
        line,
        name,
        pattern,
    })
}

/// Parses `name=Ana, email=…, plan=pro` (or JSON) into a contact.
pub fn parse_contact(s: &str) -> Result<Contact, String> {
    if s.starts_with('{') {
        return serde_json::from_str(s).map_err(|e| format!("`contact` JSON: {e}"));
    }
    let mut c = Contact::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`contact`: expected key=value, got `{part}`"))?;
        let v = v.trim().to_string();
        match k.trim() {
            "id" => c.id = v,
            "name" => c.name = Some(v),
            "email" => c.email = Some(v),
            "phone" => c.phone = Some(v),
            "timezone" => c.timezone = Some(v),
            "locale" => c.locale = Some(v),
            "country" => c.country = Some(v),
            "tags" => c.tags = v.split('|').map(|t| t.trim().to_string()).collect(),
            other => {
                let value = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
                c.attributes.insert(other.to_string(), value);
            }
        }
    }
    Ok(c)
}

/// `*` matches any run of characters (including none), `?` any one character.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Renders the visible effects of a turn as transcript lines.
pub fn render(effects: &[Effect], tz: Option<&str>) -> Vec<String> {
    render_with_delays(effects, tz)
        .into_iter()
        .map(|(l, _)| l)
        .collect()
}

/// Transcript lines, each with the pacing delay of the message it starts.
fn render_with_delays(effects: &[Effect], tz: Option<&str>) -> Vec<(String, Option<u64>)> {
    let mut out: Vec<(String, Option<u64>)> = Vec::new();
    for e in effects {
        match e {
            Effect::Message(m) => {
                let kind = if m.kind == MessageKind::Invalid {
                    "invalid"
                } else {
                    "bot"
                };
                if let Some(t) = &m.text {
                    out.push((continuation(&format!("{kind}: {t}")), Some(m.delay_ms)));
                }
                if let Some(i) = &m.image {
                    out.push((format!("image: {i}"), None));
                }
                if let Some(v) = &m.video {
                    out.push((format!("video: {v}"), None));
                }
                if !m.links.is_empty() {
                    let l: Vec<String> = m
                        .links
                        .iter()
                        .map(|l| format!("{} <{}>", l.label, l.url))
                        .collect();
                    out.push((format!("links: {}", l.join(" | ")), None));
                }
            }
            Effect::Ask(q) => {
                if !q.options.is_empty() {
                    let labels: Vec<&str> = q.options.iter().map(|o| o.label.as_str()).collect();
                    out.push((format!("buttons: {}", labels.join(" | ")), None));
                }
                if !q.items.is_empty() {
                    let labels: Vec<&str> = q.items.iter().map(|o| o.label.as_str()).collect();
                    out.push((format!("items: {}", labels.join(" | ")), None));
                }
            }
            Effect::Handoff { queue, reason, .. } => {
                let mut s = format!("handoff: {}", queue.as_deref().unwrap_or("default"));
                if let Some(r) = reason {
                    s.push_str(&format!(" ({r})"));
                }
                out.push((s, None));
            }
            Effect::Wait { until, late, .. } => {
                let mut shown = match tz.and_then(crate::time::zone) {
                    Some(z) => until.to_zoned(z).to_string(),
                    None => until.to_string(),
                };
                if let Some(ms) = late.after_ms() {
                    shown.push_str(&format!(" (late after {})", fmt_ms(ms)));
                }
                out.push((format!("wait: {shown}"), None));
            }
            Effect::Http { request, .. } => {
                out.push((format!("http: {} {}", request.method, request.url), None))
            }
            Effect::Webhook { request, .. } => {
                out.push((format!("webhook: {} {}", request.method, request.url), None))
            }
            Effect::Goal { name, value } => out.push((
                match value {
                    Some(v) => format!("goal: {name} = {}", fmt_f64(*v)),
                    None => format!("goal: {name}"),
                },
                None,
            )),
            Effect::Split { arm, .. } => out.push((format!("split: {arm}"), None)),
            Effect::End { outcome } => out.push((format!("end: {outcome}"), None)),
            Effect::Error { message, .. } => out.push((format!("error: {message}"), None)),
            Effect::Rejected { code, .. } => out.push((format!("rejected: {code}"), None)),
            _ => {}
        }
    }
    out
}

/// `90000` → `1m30s`, `7200000` → `2h`, `86400000` → `1d`.
fn fmt_ms(ms: u64) -> String {
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest > 0 || out.is_empty() {
        out.push_str(&format!("{rest}ms"));
    }
    out
}

fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Runs every case against the flow `resolve` returns for it.
pub fn run<'f>(
    t: &Transcript,
    resolve: impl Fn(&Case) -> Result<&'f Flow, String>,
) -> Vec<CaseResult> {
    t.cases.iter().map(|c| run_case(c, &resolve)).collect()
}

fn run_case<'f>(case: &Case, resolve: &impl Fn(&Case) -> Result<&'f Flow, String>) -> CaseResult {
    let mut result = CaseResult {
        name: case.name.clone(),
        line: case.line,
        failures: Vec::new(),
        actual: Vec::new(),
    };
    let flow = match resolve(case) {
        Ok(f) => f,
        Err(e) => {
            result.failures.push(Failure {
                line: case.line,
                message: e,
            });
            return result;
        }
    };
    let tz = case
        .contact
        .timezone
        .clone()
        .or_else(|| flow.timezone.clone());
    let mut now = case.now;
    let first = flow.start(case.contact.clone(), now, case.seed);
    let mut state = first.state;
    let mut effects = first.effects;
    let mut last_ask: Option<Question> = last_question(&effects, None);
    for (k, turn) in case.turns.iter().enumerate() {
        if k > 0 {
            let (cmd, line) = turn
                .input
                .as_ref()
                .expect("turns after the first have input");
            let input = match to_input(cmd, last_ask.as_ref(), &state, flow, &mut now) {
                Ok(Some(i)) => i,
                Ok(None) => {
                    effects = Vec::new();
                    result.actual.push(Vec::new());
                    check_turn(turn, &[], &mut result);
                    continue;
                }
                Err(e) => {
                    result.failures.push(Failure {
                        line: *line,
                        message: e,
                    });
                    return result;
                }
            };
            match flow.handle(&state, input, now) {
                Ok(t) => {
                    state = t.state;
                    effects = t.effects;
                }
                Err(e) => {
                    result.failures.push(Failure {
                        line: *line,
                        message: e.to_string(),
                    });
                    return result;
                }
            }
            last_ask = last_question(&effects, last_ask);
        }
        let rendered = render_with_delays(&effects, tz.as_deref());
        let delays: Vec<Option<u64>> = rendered.iter().map(|(_, d)| *d).collect();
        let actual: Vec<String> = rendered.into_iter().map(|(l, _)| l).collect();
        check_turn(turn, &actual, &mut result);
        for a in &turn.asserts {
            check_assert(a, &state, last_ask.as_ref(), &delays, &mut result);
        }
        result.actual.push(actual);
    }
    result
}

fn last_question(effects: &[Effect], previous: Option<Question>) -> Option<Question> {
    let mut q = previous;
    for e in effects {
        match e {
            Effect::Ask(a) => q = Some((**a).clone()),
            Effect::Wait { .. }
            | Effect::Handoff { .. }
            | Effect::End { .. }
            | Effect::Http { .. } => q = None,
            _ => {}
        }
    }
    q
}

fn to_input(
    cmd: &Command,
    ask: Option<&Question>,
    state: &crate::engine::State,
    flow: &Flow,
    now: &mut Timestamp,
) -> Result<Option<Input>, String> {
    Ok(Some(match cmd {
        Command::Text(t) => Input::Text { text: t.clone() },
        Command::Click(labels) => {
            let q = ask.ok_or("`[…]` clicks a button, but no question is open")?;
            let pool = if q.items.is_empty() {
                &q.options
            } else {
                &q.items
            };
            let mut values = Vec::new();
            for l in labels {
                let opt = pool.iter().find(|o| &o.label == l).ok_or_else(|| {
                    format!(
                        "no button labelled `{l}` (buttons: {})",
                        pool.iter()
                            .map(|o| o.label.as_str())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    )
                })?;
                values.push(opt.value.clone());
            }
            Input::Choice { values }
        }
        Command::TickAll => {
            let q = ask.ok_or("`[*]` ticks a checklist, but no question is open")?;
            Input::Choice {
                values: q.items.iter().map(|i| i.value.clone()).collect(),
            }
        }
        Command::Back => Input::Back,
        Command::Skip => Input::Skip,
        Command::Resume => Input::Resume,
        Command::Timeout => {
            if let crate::engine::Awaiting::Answer {
                timeout_at: Some(t),
                ..
            } = state.awaiting(flow)
            {
                *now = (*now).max(t);
            }
            Input::Timeout
        }
        Command::Wait => {
            let crate::engine::Awaiting::Wait { until, .. } = state.awaiting(flow) else {
                return Err("`/wait` needs a pending wait".into());
            };
            *now = (*now).max(until);
            Input::Resume
        }
        Command::Late => {
            let crate::engine::Awaiting::Wait { until, .. } = state.awaiting(flow) else {
                return Err("`/late` needs a pending wait".into());
            };
            // Just past the wait's allowance (a wait that fires however late: its time).
            let late = state
                .wait_lateness(flow)
                .and_then(|l| l.late_from(until))
                .unwrap_or(until);
            *now = (*now).max(late);
            Input::Late
        }
        Command::Expire => Input::Expire,
        Command::Jump(step) => Input::Jump {
            step: step.clone(),
            vars: BTreeMap::new(),
        },
        Command::Http(status, body) => Input::HttpResponse {
            status: *status,
            body: body.clone(),
        },
        Command::HttpFail(e) => Input::HttpFailed { error: e.clone() },
        Command::After(span) => {
            *now = now
                .to_zoned(jiff::tz::TimeZone::UTC)
                .checked_add(*span)
                .map_err(|e| e.to_string())?
                .timestamp();
            return Ok(None);
        }
    }))
}

fn check_turn(turn: &Turn, actual: &[String], result: &mut CaseResult) {
    let n = turn.expected.len().max(actual.len());
    for i in 0..n {
        match (turn.expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) => {
                let (kind, body) = split_actual(a);
                if e.kind != kind || !e.pattern.matches(&body) {
                    result.failures.push(Failure {
                        line: e.line,
                        message: format!(
                            "expected `{}`, got `{}`",
                            e.raw.replace('\n', "⏎"),
                            a.replace("\n  | ", "⏎")
                        ),
                    });
                }
            }
            (Some(e), None) => result.failures.push(Failure {
                line: e.line,
                message: format!(
                    "expected `{}`, but the bot said nothing more",
                    e.raw.replace('\n', "⏎")
                ),
            }),
            (None, Some(a)) => {
                let line = turn
                    .expected
                    .last()
                    .map(|e| e.line)
                    .or(turn.input.as_ref().map(|i| i.1))
                    .unwrap_or(turn.span.0);
                result.failures.push(Failure {
                    line,
                    message: format!("unexpected `{}`", a.replace("\n  | ", "⏎")),
                });
            }
            (None, None) => {}
        }
    }
}

fn split_actual(a: &str) -> (String, String) {
    let (k, v) = a.split_once(": ").unwrap_or((a, ""));
    let body: Vec<&str> = v
        .split('\n')
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l
            } else {
                l.strip_prefix("  | ")
                    .or(l.strip_prefix("  |"))
                    .unwrap_or(l)
            }
        })
        .collect();
    (k.to_string(), body.join("\n"))
}

fn check_assert(
    a: &Assert,
    state: &crate::engine::State,
    ask: Option<&Question>,
    delays: &[Option<u64>],
    result: &mut CaseResult,
) {
    match a {
        Assert::Delay {
            line,
            index,
            min_ms,
            max_ms,
        } => {
            let got = delays.get(*index).copied().flatten();
            if !got.is_some_and(|d| (*min_ms..=*max_ms).contains(&d)) {
                let want = if min_ms == max_ms {
                    format!("{min_ms}ms")
                } else {
                    format!("{min_ms}ms..{max_ms}ms")
                };
                let got = got.map_or("no message delay".to_string(), |d| format!("{d}ms"));
                result.failures.push(Failure {
                    line: *line,
                    message: format!("expected delay {want}, got {got}"),
                });
            }
        }
        Assert::Var {
            line,
            name,
            pattern,
        } => {
            let actual = state.var(name).filter(|v| !v.is_null());
            let ok = match (pattern, &actual) {
                (VarPattern::Absent, None) => true,
                (VarPattern::Absent, Some(_)) => false,
                (VarPattern::Json(want), Some(got)) => json_eq(want, got),
                (VarPattern::Glob(g), Some(got)) => glob_match(g, &crate::expr::display_value(got)),
                (_, None) => false,
            };
            if !ok {
                let got = actual.map_or("absent".to_string(), |v| v.to_string());
                let want = match pattern {
                    VarPattern::Json(v) => format!("= {v}"),
                    VarPattern::Glob(g) => format!("* {g}"),
                    VarPattern::Absent => "= absent".into(),
                };
                result.failures.push(Failure {
                    line: *line,
                    message: format!("expected `var {name} {want}`, got {got}"),
                });
            }
        }
        Assert::Progress { line, percent } => {
            let got = ask.map(|q| (q.progress * 100.0).round() as u32);
            if got != Some(*percent) {
                let got = got.map_or("no open question".to_string(), |p| format!("{p}%"));
                result.failures.push(Failure {
                    line: *line,
                    message: format!("expected progress {percent}%, got {got}"),
                });
            }
        }
    }
}

fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

/// Rewrites a transcript with the actual output (expect-test style). Expected lines
/// whose pattern still matches are kept as written; inputs, comments and assertions
/// are untouched.
pub fn update(t: &Transcript, results: &[CaseResult]) -> String {
    // Line index (0-based) → what to write there instead. Lines not listed stay as they
    // are, so assertions and comments keep their place among the expected lines.
    let mut replace: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut insert_after: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut drop: std::collections::BTreeSet<usize> = Default::default();
    for (case, res) in t.cases.iter().zip(results) {
        for (turn, actual) in case.turns.iter().zip(&res.actual) {
            let lines: Vec<String> = actual
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let (kind, body) = split_actual(a);
                    match turn.expected.get(i) {
                        Some(e) if e.kind == kind && e.pattern.matches(&body) => {
                            continuation(&e.raw)
                        }
                        _ => a.clone(),
                    }
                })
                .collect();
            if turn.expected.is_empty() {
                let at = turn.input.as_ref().map_or(turn.span.0, |i| i.1);
                insert_after.entry(at).or_default().extend(lines);
                continue;
            }
            // Continuation lines belong to the entry above them and are rewritten with it.
            for idx in turn.span.0..turn.span.1 {
                if t.lines[idx].trim_start().starts_with('|') {
                    drop.insert(idx);
                }
            }
            let n = turn.expected.len();
            for (k, e) in turn.expected.iter().enumerate() {
                let idx = e.line - 1;
                let mut here: Vec<String> = lines.get(k).cloned().into_iter().collect();
                if k + 1 == n {
                    here.extend(lines.iter().skip(n).cloned());
                }
                if here.is_empty() {
                    drop.insert(idx);
                } else {
                    replace.insert(idx, here);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(lines) = insert_after.get(&0) {
        out.extend(lines.iter().cloned());
    }
    for (i, line) in t.lines.iter().enumerate() {
        if let Some(lines) = replace.get(&i) {
            out.extend(lines.iter().cloned());
        } else if !drop.contains(&i) {
            out.push(line.clone());
        }
        if let Some(lines) = insert_after.get(&(i + 1)) {
            out.extend(lines.iter().cloned());
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// A possibly multi-line expected line in file form (continuations as `  | …`).
fn continuation(raw: &str) -> String {
    raw.split('\n')
        .enumerate()
        .map(|(i, l)| match (i, l.is_empty()) {
            (0, _) => l.to_string(),
            (_, true) => "  |".to_string(),
            (_, false) => format!("  | {l}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes a transcript of a conversation held in `volley chat --record`.
#[derive(Debug, Default)]
pub struct Recorder {
    out: Vec<String>,
}

impl Recorder {
    pub fn new(flow_id: &str, contact: &Contact, now: Timestamp, seed: u64) -> Self {
        let mut out = vec![format!("flow: {flow_id}")];
        let json = serde_json::to_string(contact).unwrap_or_default();
        if json != "{\"id\":\"\"}" {
            out.push(format!("contact: {json}"));
        }
        out.push(format!("now: {now}"));
        out.push(format!("seed: {seed}"));
        out.push(String::new());
        out.push("=== Recorded conversation".into());
        Recorder { out }
    }

    pub fn input(&mut self, line: &str) {
        self.out.push(format!("> {line}"));
    }

    pub fn effects(&mut self, effects: &[Effect], tz: Option<&str>) {
        self.out.extend(render(effects, tz));
    }

    pub fn finish(&self) -> String {
        let mut s = self.out.join("\n");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("Hi *!", "Hi Ana!"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("Hi *!", "Hi Ana"));
        assert!(glob_match("*@acme.com", "ana@acme.com"));
    }

    #[test]
    fn parses_cases_inputs_and_assertions() {
        let t = parse(
            "flow: demo\ncontact: name=Ana, plan=\"pro\"\n\n=== One\nbot: Hi\n> hello\nbot* Thanks*\nvar name = \"hello\"\n=== Two\nseed: 9\n> [Yes] [No]\n",
        )
        .unwrap();
        assert_eq!(t.flow.as_deref(), Some("demo"));
        assert_eq!(t.cases.len(), 2);
        assert_eq!(t.cases[0].turns.len(), 2);
        assert_eq!(t.cases[0].contact.name.as_deref(), Some("Ana"));
        assert_eq!(t.cases[1].seed, 9);
        assert!(
            matches!(&t.cases[1].turns[1].input, Some((Command::Click(l), _)) if l == &["Yes", "No"])
        );
    }

    #[test]
    fn reports_unknown_line_kinds_with_a_suggestion() {
        let e = parse("=== x\nbto: hi\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("did you mean `bot`"), "{}", e.message);
    }
}
