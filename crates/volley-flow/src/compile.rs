//! `check` and load: YAML source → diagnostics and, when clean, a runnable [`Flow`].
//!
//! One pass lowers the source model into the IR while collecting every problem with its
//! span; a second pass runs whole-flow analyses (dangling targets, unreachable steps,
//! unknown variables, type mismatches, loops that never stop for an answer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use crate::calendar::{Calendar, QuietHours, SchedulePart};
use crate::diag::{Diagnostic, did_you_mean, span_of};
use crate::engine::Lateness;
use crate::expr::{BUILTIN_NAMES, CodeBuilder, ExprId, FUNCTION_NAMES, Text, TplId};
use crate::flow::*;
use crate::model::*;
use crate::time;

/// Largest flow source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 8 * 1024 * 1024;
/// Most steps in one flow (all sub-flows included).
pub const MAX_STEPS: usize = 50_000;
/// Longest HTTP timeout an author may choose.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 30_000;

/// The result of checking a flow: diagnostics, and the flow when there are no errors.
pub struct Checked {
    /// The flow's `id`, when the file could be read that far.
    pub id: Option<String>,
    pub flow: Option<Flow>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// Checks a flow source and, when it has no errors, compiles it.
pub fn compile(src: &str) -> Checked {
    run(src, true)
}

/// Checks a flow source without keeping a runnable flow (`Checked::flow` is `None`).
/// Same diagnostics as [`compile`], in less time and memory.
pub fn check(src: &str) -> Checked {
    run(src, false)
}

fn run(src: &str, keep_code: bool) -> Checked {
    let mut diags = Vec::new();
    let mut id = None;
    let flow = if src.len() > MAX_SOURCE_BYTES {
        diags.push(Diagnostic::error(
            "too-large",
            format!(
                "flow file is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                src.len()
            ),
        ));
        None
    } else {
        match parse(src) {
            Ok(doc) => {
                id = Some(doc.id.value.clone());
                Lowerer::new(src, &mut diags, keep_code).lower(doc)
            }
            Err(d) => {
                diags.push(*d);
                None
            }
        }
    };
    for d in &mut diags {
        d.locate(src);
    }
    diags.sort_by_key(|d| (d.span.as_ref().map_or(0, |s| s.start), d.severity));
    let has_errors = diags.iter().any(|d| d.is_error());
    Checked {
        id,
        flow: if has_errors { None } else { flow },
        diagnostics: diags,
    }
}

fn parse(src: &str) -> Result<FlowDoc, Box<Diagnostic>> {
    crate::yaml::from_str::<FlowDoc>(src).map_err(|e| Box::new(yaml_error(e)))
}

/// A YAML or shape error as a diagnostic (`yaml`, or `unknown-field` with a suggestion).
pub fn yaml_error(e: crate::yaml::Error) -> Diagnostic {
    let mut message = e.message;
    let mut help = None;
    if let Some((head, _)) = message.split_once(", expected one of") {
        help = unknown_field_help(&message);
        message = head.to_string();
    }
    let code = if message.contains("unknown field") {
        "unknown-field"
    } else {
        "yaml"
    };
    let mut d = Diagnostic::error(code, message).at(e.span);
    d.help_opt(help);
    d
}

/// Words authors coming from other tools reach for, and what Volley calls them.
const FIELD_SYNONYMS: &[(&str, &str)] = &[
    ("prompt", "say"),
    ("promt", "say"),
    ("text", "say"),
    ("message", "say"),
    ("msg", "say"),
    ("question", "ask"),
    ("type", "ask"),
    ("input", "ask"),
    ("variable", "save"),
    ("var", "save"),
    ("save_as", "save"),
    ("choices", "options"),
    ("buttons", "options"),
    ("jump", "goto"),
    ("condition", "branch"),
    ("conditions", "branch"),
    ("if", "branch"),
    ("retry", "retries"),
    ("error", "invalid"),
    ("error_message", "invalid"),
    ("image_url", "image"),
    ("url", "links"),
    ("name", "id"),
    ("outcome", "end"),
    ("sleep", "wait"),
    ("delay_ms", "delay"),
];

/// For serde's "unknown field `x`, expected one of `a`, `b`", suggests the closest.
fn unknown_field_help(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    let (wrong, tail) = rest.split_once('`')?;
    let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    let expected: Vec<&str> = if expected.is_empty() {
        // serde-saphyr lists the names without backticks.
        tail.trim_start_matches(", expected one of")
            .split(',')
            .map(str::trim)
            .collect()
    } else {
        expected
    };
    if let Some((_, to)) = FIELD_SYNONYMS
        .iter()
        .find(|(from, to)| *from == wrong && expected.contains(to))
    {
        return Some(format!("Volley calls this `{to}`"));
    }
    did_you_mean(wrong, expected.iter().copied()).or_else(|| {
        if expected.len() <= 8 {
            Some(format!("expected one of: {}", expected.join(", ")))
        } else {
            Some("see docs/flows.md for the fields of each step kind".into())
        }
    })
}

/// The type a variable is known to hold, for mismatch checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum VarType {
    Text,
    Number,
    Bool,
    List,
    Map,
}

impl VarType {
    fn name(self) -> &'static str {
        match self {
            VarType::Text => "text",
            VarType::Number => "a number",
            VarType::Bool => "yes/no",
            VarType::List => "a list",
            VarType::Map => "a mapping",
        }
    }

    fn of_question(q: QuestionType) -> VarType {
        match q {
            QuestionType::Number | QuestionType::Rating | QuestionType::Nps => VarType::Number,
            QuestionType::YesNo => VarType::Bool,
            QuestionType::Multiple | QuestionType::Checklist => VarType::List,
            QuestionType::DateRange => VarType::Map,
            _ => VarType::Text,
        }
    }

    fn of_json(v: &serde_json::Value) -> Option<VarType> {
        Some(match v {
            serde_json::Value::String(_) => VarType::Text,
            serde_json::Value::Number(_) => VarType::Number,
            serde_json::Value::Bool(_) => VarType::Bool,
            serde_json::Value::Array(_) => VarType::List,
            serde_json::Value::Object(_) => VarType::Map,
            serde_json::Value::Null => return None,
        })
    }
}

/// Where a name is read, for the unknown-variable check.
struct Use {
    scope: usize,
    names: UseNames,
    span: Option<Range<usize>>,
    /// An extra name in scope at this use (`item`, `response`).
    extra: Option<&'static str>,
}

enum UseNames {
    Template(TplId),
    Expr(ExprId),
    Direct(String),
}

/// A target written in the source, resolved after all ids are known.
struct Target {
    scope: usize,
    name: String,
    span: Option<Range<usize>>,
    slot: Slot,
}

/// Where a resolved target index goes.
#[derive(Clone, Copy)]
enum Slot {
    Next(usize),
    Fallback(usize),
    Timeout(usize),
    OptionNext(usize, usize),
    BranchArm(usize, usize),
    Else(usize),
    Goto(usize),
    SplitArm(usize, usize),
    HttpError(usize),
    OnLate(usize),
    Start,
}

/// Variables defined in one scope: name → (type if known, first definition).
type Defs = BTreeMap<String, (Option<VarType>, Option<Range<usize>>)>;

/// A `call` step, checked against its sub-flow once every scope is lowered.
struct PendingCall {
    name: String,
    span: Option<Range<usize>>,
    with: Vec<Assignment>,
    returns: Vec<Assignment>,
}

struct Lowerer<'a> {
    src: &'a str,
    /// Keep the compiled templates and expressions (a runnable flow), or only check them.
    keep_code: bool,
    diags: &'a mut Vec<Diagnostic>,
    code: CodeBuilder,
    spans_tpl: Vec<Option<Range<usize>>>,
    spans_expr: Vec<Option<Range<usize>>>,
    uses: Vec<Use>,
    /// Per scope: variable name → (type if known, span of first definition).
    defs: Vec<Defs>,
    targets: Vec<Target>,
    /// Per scope: step id spans (for unreachable warnings).
    step_spans: Vec<Vec<Option<Range<usize>>>>,
    calls: Vec<PendingCall>,
    /// Names under `calendars:` (valid or not), for `unknown-calendar`.
    calendar_names: Vec<String>,
    /// `expire_after` in milliseconds, for waits and timeouts that outlive it.
    expire_after_ms: Option<u64>,
}

const KIND_KEYS: &[&str] = &[
    "say/image/video",
    "ask",
    "set",
    "branch",
    "goto",
    "call",
    "split",
    "goal",
    "end",
    "handoff",
    "wait",
    "http",
    "webhook",
];

impl<'a> Lowerer<'a> {
    fn new(src: &'a str, diags: &'a mut Vec<Diagnostic>, keep_code: bool) -> Self {
        Lowerer {
            src,
            keep_code,
            diags,
            code: CodeBuilder::default(),
            spans_tpl: Vec::new(),
            spans_expr: Vec::new(),
            uses: Vec::new(),
            defs: Vec::new(),
            targets: Vec::new(),
            step_spans: Vec::new(),
            calls: Vec::new(),
            calendar_names: Vec::new(),
            expire_after_ms: None,
        }
    }

    fn err(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Option<Range<usize>>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(code, msg).at(span));
        self.diags.last_mut().expect("just pushed")
    }

    fn warn(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Option<Range<usize>>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic::warning(code, msg).at(span));
        self.diags.last_mut().expect("just pushed")
    }

    /// Registers a template text read by `scope`.
    fn text(
        &mut self,
        scope: usize,
        sp: &Sp<String>,
        markdown: bool,
        extra: Option<&'static str>,
    ) -> Text {
        self.text_at(scope, &sp.value, span_of(sp), markdown, extra)
    }

    fn text_at(
        &mut self,
        scope: usize,
        value: &str,
        span: Option<Range<usize>>,
        markdown: bool,
        extra: Option<&'static str>,
    ) -> Text {
        let t = self.code.text(value, markdown);
        if let Text::Template(id) = t {
            self.check_calendar_refs(value, span.clone());
            self.spans_tpl.push(span.clone());
            self.uses.push(Use {
                scope,
                names: UseNames::Template(id),
                span,
                extra,
            });
        }
        t
    }

    fn expr(&mut self, scope: usize, sp: &Sp<ExprText>, extra: Option<&'static str>) -> ExprId {
        let span = span_of(sp);
        if sp.value.0.trim().is_empty() {
            self.err("empty-expression", "expression is empty", span.clone());
        }
        let id = self.code.expr(&sp.value.0);
        self.check_calendar_refs(&sp.value.0, span.clone());
        self.spans_expr.push(span.clone());
        self.uses.push(Use {
            scope,
            names: UseNames::Expr(id),
            span,
            extra,
        });
        id
    }

    fn define(
        &mut self,
        scope: usize,
        name: &str,
        ty: Option<VarType>,
        span: Option<Range<usize>>,
    ) {
        if BUILTIN_NAMES.contains(&name) || FUNCTION_NAMES.contains(&name) {
            self.err(
                "reserved-name",
                format!("`{name}` is a reserved name and cannot be a variable"),
                span.clone(),
            )
            .help("pick another name, e.g. `my_".to_string() + name + "`");
            return;
        }
        if !is_identifier(name) {
            self.err(
                "invalid-name",
                format!("`{name}` is not a valid variable name"),
                span.clone(),
            )
            .help("use letters, digits and `_`, starting with a letter");
            return;
        }
        let defs = &mut self.defs[scope];
        match defs.get(name) {
            Some((Some(old), old_span)) if ty.is_some() && ty != Some(*old) => {
                let (old, old_span) = (*old, old_span.clone());
                let line = old_span
                    .map(|s| crate::diag::line_col(self.src, s.start).0)
                    .unwrap_or(0);
                self.err(
                    "type-mismatch",
                    format!(
                        "`{name}` holds {} here, but {} where it is first defined (line {line})",
                        ty.expect("checked").name(),
                        old.name()
                    ),
                    span,
                )
                .help("use a different variable for each kind of answer");
            }
            Some((None, s)) if ty.is_some() => {
                let s = s.clone();
                defs.insert(name.to_owned(), (ty, s));
            }
            Some(_) => {}
            None => {
                defs.insert(name.to_owned(), (ty, span));
            }
        }
    }

    fn target(&mut self, scope: usize, sp: &Sp<String>, slot: Slot) {
        self.targets.push(Target {
            scope,
            name: sp.value.clone(),
            span: span_of(sp),
            slot,
        });
    }

    fn lower(mut self, doc: FlowDoc) -> Option<Flow> {
        if doc.volley.value != FORMAT_VERSION {
            self.err(
                "format-version",
                format!(
                    "unsupported format version {}; this Volley reads version {FORMAT_VERSION}",
                    doc.volley.value
                ),
                span_of(&doc.volley),
            );
        }
        let id = doc.id.value.clone();
        if !is_flow_id(&id) {
            self.err(
                "invalid-id",
                format!("flow id `{id}` is not valid"),
                span_of(&doc.id),
            )
            .help("use lowercase letters, digits and `-`, up to 64 characters");
        }
        if doc.title.value.trim().is_empty() {
            self.err("empty-title", "the flow needs a title", span_of(&doc.title));
        }
        let total_steps: usize =
            doc.steps.len() + doc.subflows.values().map(|s| s.steps.len()).sum::<usize>();
        if total_steps > MAX_STEPS {
            self.err(
                "too-many-steps",
                format!("{total_steps} steps; the limit is {MAX_STEPS}"),
                span_of(&doc.id),
            );
            return None;
        }

        let pacing = self.pacing(doc.pacing.as_ref(), Pacing::default());
        let timezone = doc.timezone.as_ref().and_then(|tz| {
            if time::zone(&tz.value).is_none() {
                self.err(
                    "unknown-timezone",
                    format!("unknown time zone `{}`", tz.value),
                    span_of(tz),
                )
                .help("use an IANA name such as `Europe/Berlin` or `America/New_York`");
                None
            } else {
                Some(tz.value.clone())
            }
        });
        let calendars = self.calendars(&doc.calendars);
        let quiet_hours = doc.quiet_hours.as_ref().and_then(|q| self.quiet_hours(q));
        self.expire_after_ms = doc.expire_after.as_ref().and_then(|e| {
            time::parse_duration_ms(&e.value)
                .map_err(|m| {
                    self.err("invalid-duration", m, span_of(e))
                        .help("e.g. `expire_after: 30d`");
                })
                .ok()
        });
        let assistant = Assistant {
            name: doc.assistant.as_ref().and_then(|a| a.name.clone()),
            label: match doc.assistant.as_ref().and_then(|a| a.label.as_ref()) {
                Some(l) if l.value.trim().is_empty() => {
                    self.err(
                        "hidden-label",
                        "the automation label cannot be empty",
                        span_of(l),
                    )
                    .help("reword it (e.g. \"Virtual assistant\"), but it must stay visible");
                    DEFAULT_ASSISTANT_LABEL.to_string()
                }
                Some(l) => l.value.clone(),
                None => DEFAULT_ASSISTANT_LABEL.to_string(),
            },
        };
        let back_default = doc.back.unwrap_or(false);

        // Scope 0 is the main flow; sub-flows follow in name order.
        let sub_names: Vec<String> = doc.subflows.keys().cloned().collect();
        self.defs = vec![BTreeMap::new(); 1 + sub_names.len()];
        self.step_spans = vec![Vec::new(); 1 + sub_names.len()];

        let mut defaults = Vec::new();
        for (name, lit) in &doc.variables {
            self.define(0, name, VarType::of_json(&lit.value.0), span_of(lit));
            defaults.push((name.clone(), lit.value.0.clone()));
        }

        let mut scopes = Vec::new();
        let main = self.scope(
            0,
            None,
            &doc.steps,
            &sub_names,
            &pacing,
            back_default,
            Vec::new(),
            Vec::new(),
        );
        scopes.push(main);
        for (i, (name, sub)) in doc.subflows.iter().enumerate() {
            let si = i + 1;
            if !is_identifier(name) {
                self.err(
                    "invalid-name",
                    format!("sub-flow name `{name}` is not valid"),
                    None,
                )
                .help("use letters, digits and `_`");
            }
            for input in &sub.inputs {
                self.define(si, input, None, None);
            }
            let scope = self.scope(
                si,
                Some(name.clone()),
                &sub.steps,
                &sub_names,
                &pacing,
                back_default,
                sub.inputs.clone(),
                sub.outputs.clone(),
            );
            scopes.push(scope);
        }

        if let Some(start) = &doc.start {
            self.target(0, start, Slot::Start);
        }
        let start_override = self.resolve_targets(&mut scopes);
        if let Some(s) = start_override {
            scopes[0].start = s;
        }
        self.check_calls(&mut scopes, &sub_names);
        for (si, scope) in scopes.iter().enumerate() {
            for out in &scope.outputs {
                if !self.defs[si].contains_key(out) {
                    self.err(
                        "unknown-variable",
                        format!(
                            "sub-flow `{}` returns `{out}`, but never sets it",
                            scope.name.clone().unwrap_or_default()
                        ),
                        None,
                    );
                }
            }
        }

        let human = doc.human.map(|h| Human {
            keywords: h
                .keywords
                .iter()
                .map(|k| crate::answer::normalize(k))
                .collect(),
            queue: h.queue,
        });

        if let Some(h) = &human {
            self.check_keywords(h, &doc.steps);
        }
        let code_builder = std::mem::take(&mut self.code);
        let (code, report) = if self.keep_code {
            let (code, report) = code_builder.build();
            (Some(code), report)
        } else {
            (None, code_builder.report())
        };
        for (id, e) in &report.template_errors {
            let span = self.spans_tpl[id.0 as usize].clone();
            let span = self.inner_span(span, e);
            self.err(
                "template",
                format!("template does not compile: {}", minijinja_message(e)),
                span,
            );
        }
        for (id, e) in &report.expr_errors {
            let span = self.spans_expr[id.0 as usize].clone();
            let span = self.inner_span(span, e);
            self.err(
                "expression",
                format!("expression does not compile: {}", minijinja_message(e)),
                span,
            );
        }
        self.check_uses(&report);
        self.check_graph(&scopes);
        compute_remaining(&mut scopes);

        let code = code?;
        let version = content_hash(self.src);
        let info = crate::expr::from_json(&serde_json::json!({
            "id": id, "title": doc.title.value, "version": version,
        }));
        let any_back = scopes
            .iter()
            .flat_map(|s| s.steps.iter())
            .any(|st| matches!(&st.kind, Kind::Question(q) if q.back));
        let flow = Flow {
            id,
            title: doc.title.value,
            description: doc.description,
            version,
            assistant,
            scopes,
            pacing,
            timezone,
            defaults,
            human,
            code,
            any_back,
            info,
            calendars: std::sync::Arc::new(calendars),
            quiet_hours,
            expire_after_ms: self.expire_after_ms,
        };
        Some(flow)
    }

    fn calendars(&mut self, docs: &[(Sp<String>, CalendarDoc)]) -> Calendars {
        let mut out = Calendars::new();
        for (name, doc) in docs {
            self.calendar_names.push(name.value.clone());
            if !is_step_id(&name.value) {
                self.err(
                    "invalid-name",
                    format!("calendar name `{}` is not valid", name.value),
                    span_of(name),
                )
                .help("use letters, digits, `-` and `_`");
            }
            let hours = &doc.hours.value.0;
            let built = Calendar::new(
                &doc.timezone.value,
                hours
                    .iter()
                    .map(|(days, times)| (days.value.as_str(), times.value.as_str())),
                doc.closed.iter().map(|c| c.value.as_str()),
            );
            match built {
                Ok(c) => {
                    out.insert(name.value.clone(), c);
                }
                Err(errors) => {
                    for e in errors {
                        let (code, span) = match e.part {
                            SchedulePart::Timezone => ("unknown-timezone", span_of(&doc.timezone)),
                            SchedulePart::HoursDays(i) => ("invalid-hours", span_of(&hours[i].0)),
                            SchedulePart::HoursTimes(i) => ("invalid-hours", span_of(&hours[i].1)),
                            SchedulePart::Closed(i) => ("invalid-date", span_of(&doc.closed[i])),
                            _ => ("invalid-hours", span_of(&doc.hours)),
                        };
                        self.err(code, e.message, span).help_opt(e.help);
                    }
                }
            }
        }
        out
    }

    fn quiet_hours(&mut self, doc: &QuietHoursDoc) -> Option<QuietHours> {
        let on: Vec<&str> = match doc.on.as_ref().map(|o| &o.value) {
            None => Vec::new(),
            Some(DaysDoc::Named(n)) => vec![n.as_str()],
            Some(DaysDoc::List(list)) => list.iter().map(String::as_str).collect(),
        };
        match QuietHours::new(&doc.from.value, &doc.to.value, &on) {
            Ok(q) => Some(q),
            Err(errors) => {
                for e in errors {
                    let span = match e.part {
                        SchedulePart::From => span_of(&doc.from),
                        SchedulePart::On => doc.on.as_ref().and_then(span_of),
                        _ => span_of(&doc.to),
                    };
                    self.err("invalid-quiet-hours", e.message, span)
                        .help_opt(e.help);
                }
                None
            }
        }
    }

    /// Reports calendar names that do not exist, where a template or expression calls
    /// a calendar function with a literal name (`is_open("support")`).
    fn check_calendar_refs(&mut self, src: &str, span: Option<Range<usize>>) {
        if !src.contains("_open") && !src.contains("_close") {
            return;
        }
        static CALLS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let re = CALLS.get_or_init(|| {
            regex::Regex::new(
                r#"\b(?:is_open|next_open|next_close)\s*\(\s*(?:"([^"\\]*)"|'([^'\\]*)')"#,
            )
            .expect("valid regex")
        });
        for cap in re.captures_iter(src) {
            let (Some(call), Some(name)) = (cap.get(0), cap.get(1).or(cap.get(2))) else {
                continue;
            };
            if self.calendar_names.iter().any(|n| n == name.as_str()) {
                continue;
            }
            // Point at the name: find the call as written in the source, else the name.
            let at = span.clone().map(|sp| {
                let raw = self.src.get(sp.clone()).unwrap_or("");
                match raw.find(call.as_str()) {
                    Some(pos) => {
                        let start = sp.start + pos + (name.start() - call.start());
                        start..start + name.len()
                    }
                    None => self.find_in(sp, name.as_str()),
                }
            });
            let help = self.calendar_help(name.as_str());
            self.err(
                "unknown-calendar",
                format!("no calendar named `{}`", name.as_str()),
                at,
            )
            .label("unknown calendar")
            .help_opt(help);
        }
    }

    fn calendar_help(&self, name: &str) -> Option<String> {
        did_you_mean(name, self.calendar_names.iter().map(String::as_str)).or_else(|| {
            Some(if self.calendar_names.is_empty() {
                "define it under `calendars:` at the top of the file".to_string()
            } else {
                format!("calendars: {}", self.calendar_names.join(", "))
            })
        })
    }

    /// Warns when a wait or timeout lasts longer than `expire_after`.
    fn check_outlives_expiry(&mut self, what: &str, span: &jiff::Span, at: Option<Range<usize>>) {
        let Some(expire) = self.expire_after_ms else {
            return;
        };
        let ms = span
            .total((
                jiff::Unit::Millisecond,
                jiff::SpanRelativeTo::days_are_24_hours(),
            ))
            .unwrap_or(0.0);
        if ms > expire as f64 {
            self.warn(
                "outlives-expiry",
                format!(
                    "this {what} is longer than `expire_after`: the conversation expires first"
                ),
                at,
            )
            .help("shorten it, or lengthen `expire_after`");
        }
    }

    /// Warns when typing an option's words would hand off instead of choosing it.
    fn check_keywords(&mut self, h: &Human, steps: &[StepDoc]) {
        for st in steps {
            for opt in st.options.iter().flatten() {
                let words: Vec<String> = match &opt.value {
                    OptionDoc::Plain(l) => vec![literal_text(&l.0)],
                    OptionDoc::Full(f) => std::iter::once(f.label.value.clone())
                        .chain(f.synonyms.iter().cloned())
                        .collect(),
                };
                for w in words {
                    let n = crate::answer::normalize(&w);
                    if h.keywords.contains(&n) {
                        self.warn(
                            "keyword-shadows-option",
                            format!("typing `{w}` asks for a person (a `human` keyword), so it never picks this option"),
                            span_of(opt),
                        )
                        .help("remove the word from the option or from `human.keywords`");
                    }
                }
            }
        }
    }

    fn pacing(&mut self, doc: Option<&PacingDoc>, base: Pacing) -> Pacing {
        let Some(doc) = doc else { return base };
        let mut p = base;
        if let Some(off) = doc.off {
            p.off = off;
        }
        if let Some(first) = doc.first {
            p.first = first;
        }
        if let Some(wpm) = &doc.wpm {
            if !(wpm.value.is_finite() && wpm.value >= 10.0 && wpm.value <= 10_000.0) {
                self.err(
                    "invalid-pacing",
                    "wpm must be between 10 and 10000",
                    span_of(wpm),
                );
            } else {
                p.wpm = wpm.value;
            }
        }
        for (field, slot) in [(&doc.min, &mut p.min_ms), (&doc.max, &mut p.max_ms)] {
            if let Some(v) = field {
                match time::parse_millis(&v.value) {
                    Ok(ms) => *slot = ms,
                    Err(e) => {
                        self.err("invalid-duration", e, span_of(v));
                    }
                }
            }
        }
        if p.min_ms > p.max_ms {
            let span = doc.min.as_ref().map(span_of).unwrap_or(None);
            self.err("invalid-pacing", "pacing `min` is larger than `max`", span);
        }
        p
    }

    #[allow(clippy::too_many_arguments)]
    fn scope(
        &mut self,
        si: usize,
        name: Option<String>,
        steps: &[StepDoc],
        sub_names: &[String],
        pacing: &Pacing,
        back_default: bool,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Scope {
        if steps.is_empty() {
            self.err(
                "no-steps",
                match &name {
                    Some(n) => format!("sub-flow `{n}` has no steps"),
                    None => "the flow has no steps".to_string(),
                },
                None,
            );
        }
        // Ids first, so targets can be checked against them.
        let mut ids = Vec::with_capacity(steps.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut id_spans: Vec<Option<Range<usize>>> = Vec::new();
        let explicit: HashSet<&str> = steps
            .iter()
            .filter_map(|st| st.id.as_ref().map(|i| i.value.as_str()))
            .collect();
        for (i, st) in steps.iter().enumerate() {
            let (mut local, span) = match (&st.id, &st.save, &st.ask) {
                (Some(id), _, _) => (id.value.clone(), span_of(id)),
                (None, Some(save), Some(_)) => (save.value.clone(), span_of(save)),
                _ => (format!("step-{}", i + 1), step_span(st)),
            };
            if st.id.is_none() {
                // Implicit ids never collide: a second question saving `email` is `email-2`.
                let base = local.clone();
                let mut n = 2;
                while index.contains_key(&local) || explicit.contains(local.as_str()) {
                    local = format!("{base}-{n}");
                    n += 1;
                }
            }
            if st.id.is_some() && !is_step_id(&local) {
                self.err(
                    "invalid-id",
                    format!("step id `{local}` is not valid"),
                    span.clone(),
                )
                .help("use letters, digits, `-` and `_`");
            }
            if let Some(&first) = index.get(&local) {
                let line = id_spans[first]
                    .as_ref()
                    .map(|s| crate::diag::line_col(self.src, s.start).0)
                    .unwrap_or(0);
                self.err(
                    "duplicate-id",
                    format!("step id `{local}` is used twice"),
                    span.clone(),
                )
                .label("second use")
                .help(format!(
                    "the first is on line {line}; step ids must be unique"
                ));
            } else {
                index.insert(local.clone(), i);
            }
            id_spans.push(span);
            ids.push(local);
        }
        self.step_spans[si] = id_spans;
        let prefix = name.as_ref().map(|n| format!("{n}/")).unwrap_or_default();
        let mut out = Vec::with_capacity(steps.len());
        for (i, st) in steps.iter().enumerate() {
            let next = if i + 1 < steps.len() {
                Some(i + 1)
            } else {
                None
            };
            let kind = self.step(si, i, st, sub_names, pacing, back_default);
            let explicit_next = st.next.as_ref();
            if let Some(n) = explicit_next {
                self.target(si, n, Slot::Next(i));
            }
            out.push(Step {
                id: format!("{prefix}{}", ids[i]),
                next,
                kind,
            });
        }
        Scope {
            name,
            steps: out,
            start: 0,
            inputs,
            outputs,
            index,
            remaining: Vec::new(),
        }
    }

    fn step(
        &mut self,
        si: usize,
        i: usize,
        st: &StepDoc,
        sub_names: &[String],
        pacing: &Pacing,
        back_default: bool,
    ) -> Kind {
        let is_message = st.say.is_some() || st.image.is_some() || st.video.is_some();
        let mut kinds: Vec<&'static str> = Vec::new();
        if st.ask.is_some() {
            kinds.push("ask");
        } else if is_message {
            kinds.push("say");
        }
        for (present, name) in [
            (st.set.is_some(), "set"),
            (st.branch.is_some(), "branch"),
            (st.goto.is_some(), "goto"),
            (st.call.is_some(), "call"),
            (st.split.is_some(), "split"),
            (st.goal.is_some(), "goal"),
            (st.end.is_some(), "end"),
            (st.handoff.is_some(), "handoff"),
            (st.wait.is_some(), "wait"),
            (st.http.is_some(), "http"),
            (st.webhook.is_some(), "webhook"),
        ] {
            if present {
                kinds.push(name);
            }
        }
        let span = step_span(st);
        if kinds.is_empty() {
            self.err("no-kind", "this step does nothing", span)
                .help(format!("give it one of: {}", KIND_KEYS.join(", ")));
            return Kind::End {
                outcome: String::new(),
            };
        }
        if kinds.len() > 1 {
            self.err(
                "several-kinds",
                format!(
                    "a step does one thing, but this one has `{}`",
                    kinds.join("` and `")
                ),
                span,
            )
            .help("split it into one step per action");
            return Kind::End {
                outcome: String::new(),
            };
        }
        let kind = kinds[0];
        let qtype = st.ask.as_ref().map(|a| a.value);
        self.check_fields(st, kind, qtype);
        match kind {
            "say" => Kind::Message(Box::new(self.message(si, st, pacing))),
            "ask" => self.question(si, i, st, pacing, back_default),
            "set" => Kind::Set(self.assignments(si, st.set.as_ref().expect("kind"), true, None)),
            "branch" => {
                let arms = st.branch.as_ref().expect("kind");
                if arms.is_empty() {
                    self.err("empty-branch", "`branch` needs at least one `if`", span);
                }
                let arms: Vec<(ExprId, usize)> = arms
                    .iter()
                    .enumerate()
                    .map(|(k, arm)| {
                        let e = self.expr(si, &arm.if_, None);
                        self.target(si, &arm.then, Slot::BranchArm(i, k));
                        (e, usize::MAX)
                    })
                    .collect();
                if let Some(e) = &st.else_ {
                    self.target(si, e, Slot::Else(i));
                }
                Kind::Branch {
                    arms,
                    otherwise: None,
                }
            }
            "goto" => {
                self.target(si, st.goto.as_ref().expect("kind"), Slot::Goto(i));
                Kind::Goto(usize::MAX)
            }
            "call" => {
                let call = st.call.as_ref().expect("kind");
                let scope = match sub_names.iter().position(|n| n == &call.value) {
                    Some(p) => p + 1,
                    None => {
                        self.err(
                            "unknown-subflow",
                            format!("no sub-flow named `{}`", call.value),
                            span_of(call),
                        )
                        .help_opt(did_you_mean(
                            &call.value,
                            sub_names.iter().map(String::as_str),
                        ));
                        0
                    }
                };
                let with = st
                    .with
                    .as_ref()
                    .map(|w| w.value.0.clone())
                    .unwrap_or_default();
                let returns = st
                    .returns
                    .as_ref()
                    .map(|w| w.value.0.clone())
                    .unwrap_or_default();
                let with_ids: Vec<(String, ExprId)> = with
                    .iter()
                    .map(|a| (a.name.clone(), self.expr(si, &a.expr, None)))
                    .collect();
                let mut ret = Vec::new();
                for a in &returns {
                    self.define(si, &a.name, None, span_of(&a.expr));
                    ret.push((a.name.clone(), a.expr.value.0.trim().to_string()));
                }
                self.calls.push(PendingCall {
                    name: call.value.clone(),
                    span: span_of(call),
                    with,
                    returns,
                });
                Kind::Call {
                    scope,
                    with: with_ids,
                    returns: ret,
                }
            }
            "split" => {
                let arms = st.split.as_ref().expect("kind");
                if arms.len() < 2 {
                    self.err(
                        "invalid-split",
                        "`split` needs at least two arms",
                        span.clone(),
                    );
                }
                let mut out = Vec::new();
                for (k, arm) in arms.iter().enumerate() {
                    if !(arm.weight.value.is_finite() && arm.weight.value > 0.0) {
                        self.err(
                            "invalid-split",
                            "weights must be positive numbers",
                            span_of(&arm.weight),
                        );
                    }
                    self.target(si, &arm.then, Slot::SplitArm(i, k));
                    out.push(SplitArm {
                        weight: arm.weight.value.max(0.0),
                        target: usize::MAX,
                        name: arm.name.clone().unwrap_or_else(|| arm.then.value.clone()),
                    });
                }
                Kind::Split { arms: out }
            }
            "goal" => {
                let goal = st.goal.as_ref().expect("kind");
                if goal.value.trim().is_empty() {
                    self.err("empty-goal", "goal name is empty", span_of(goal));
                }
                let value = st.value.as_ref().map(|v| self.expr(si, v, None));
                Kind::Goal {
                    name: goal.value.clone(),
                    value,
                }
            }
            "end" => {
                let end = st.end.as_ref().expect("kind");
                if end.value.trim().is_empty() {
                    self.err(
                        "empty-outcome",
                        "`end` needs an outcome name, e.g. `end: completed`",
                        span_of(end),
                    );
                }
                Kind::End {
                    outcome: end.value.clone(),
                }
            }
            "handoff" => {
                let h = st.handoff.as_ref().expect("kind");
                let (queue, reason, priority) = match &h.value {
                    HandoffDoc::Queue(q) => (Some(q.clone()), None, Priority::Normal),
                    HandoffDoc::Full(f) => (
                        f.queue.clone(),
                        f.reason.clone(),
                        f.priority.unwrap_or_default(),
                    ),
                };
                let reason = reason.map(|r| self.text_at(si, &r, span_of(h), false, None));
                Kind::Handoff {
                    queue,
                    reason,
                    priority,
                }
            }
            "wait" => {
                let spec = self.wait(si, st.wait.as_ref().expect("kind"));
                let late = self.lateness(st.late.as_deref());
                if let Some(t) = &st.on_late {
                    self.target(si, t, Slot::OnLate(i));
                    if late == Some(Lateness::Fire) {
                        self.warn(
                            "unused-on-late",
                            "`on_late` is never taken: this wait resumes however late",
                            span_of(&**t),
                        )
                        .help("add `late: skip` or `late: { expire: 2h }`");
                    }
                }
                Kind::Wait(Box::new(WaitStep {
                    spec,
                    late: late.unwrap_or_default(),
                    on_late: None,
                }))
            }
            "http" => Kind::Http(Box::new(self.http(
                si,
                i,
                st.http.as_ref().expect("kind"),
                false,
            ))),
            "webhook" => Kind::Http(Box::new(self.http(
                si,
                i,
                st.webhook.as_ref().expect("kind"),
                true,
            ))),
            _ => unreachable!("kinds are listed above"),
        }
    }

    /// Reports fields that do not apply to the step's kind.
    fn check_fields(&mut self, st: &StepDoc, kind: &str, q: Option<QuestionType>) {
        use QuestionType as Q;
        let message_fields: &[&str] = &[
            "say", "image", "video", "alt", "links", "delay", "typing", "pacing",
        ];
        let question_common: &[&str] = &[
            "say",
            "image",
            "video",
            "alt",
            "delay",
            "typing",
            "pacing",
            "ask",
            "save",
            "invalid",
            "retries",
            "fallback",
            "back",
            "optional",
            "placeholder",
            "timeout",
            "on_timeout",
        ];
        let allowed: Vec<&str> = match kind {
            "say" => message_fields.to_vec(),
            "ask" => {
                let mut v = question_common.to_vec();
                v.extend_from_slice(match q.expect("ask has a type") {
                    Q::Text => &["min_length", "max_length", "pattern"],
                    Q::Number => &["min", "max", "step", "integer"],
                    Q::Phone => &["country"],
                    Q::Date | Q::DateRange => &["min", "max"],
                    Q::Choice => &["options", "options_from"],
                    Q::Multiple => &["options", "options_from", "min_picks", "max_picks"],
                    Q::Rating => &["scale", "style"],
                    Q::Checklist => &["items"],
                    Q::Email | Q::Url | Q::Nps | Q::YesNo => &[],
                });
                v
            }
            "branch" => vec!["branch", "else"],
            "call" => vec!["call", "with", "returns"],
            "goal" => vec!["goal", "value"],
            "wait" => vec!["wait", "late", "on_late"],
            other => vec![other],
        };
        let no_next = matches!(kind, "end" | "goto" | "branch" | "split");
        for (field, span) in present_fields(st) {
            if field == "id" || (field == "next" && !no_next) {
                continue;
            }
            if !allowed.contains(&field) {
                let what = match (kind, q) {
                    ("ask", Some(q)) => format!("a `{}` question", q.name()),
                    ("say", _) => "a message".to_string(),
                    (k, _) => format!("a `{k}` step"),
                };
                let help = if field == "next" {
                    "this step chooses where to go itself".to_string()
                } else {
                    format!("{what} accepts: {}", allowed.join(", "))
                };
                self.err(
                    "field-not-allowed",
                    format!("`{field}` does not apply to {what}"),
                    span,
                )
                .help(help);
            }
        }
    }

    fn message(&mut self, si: usize, st: &StepDoc, pacing: &Pacing) -> MessageStep {
        let text = st.say.as_ref().map(|s| self.text(si, s, true, None));
        let image = st.image.as_ref().map(|s| self.text(si, s, false, None));
        let video = st.video.as_ref().map(|s| self.text(si, s, false, None));
        for url in [&st.image, &st.video].into_iter().flatten() {
            self.check_url(&url.value, span_of(url), &["http", "https", "/"]);
        }
        let links = st
            .links
            .iter()
            .map(|l| {
                self.check_url(
                    &l.url.value,
                    span_of(&l.url),
                    &["http", "https", "mailto", "tel", "/"],
                );
                let label = self.text_at(si, &l.label, span_of(&l.url), false, None);
                (label, self.text(si, &l.url, false, None))
            })
            .collect();
        let delay = st.delay.as_ref().and_then(|d| match parse_delay(&d.value) {
            Ok(delay) => Some(delay),
            Err(e) => {
                self.err("invalid-duration", e, span_of(d));
                None
            }
        });
        let step_pacing = st.pacing.as_ref().map(|p| self.pacing(Some(p), *pacing));
        MessageStep {
            text,
            image,
            video,
            alt: st.alt.clone(),
            links,
            delay,
            typing: st.typing,
            pacing: step_pacing,
        }
    }

    fn check_url(&mut self, url: &str, span: Option<Range<usize>>, schemes: &[&str]) {
        if url.contains("{{") {
            return; // checked when rendered
        }
        let ok = schemes.iter().any(|s| {
            if *s == "/" {
                url.starts_with('/') && !url.starts_with("//")
            } else {
                url.len() > s.len() + 1
                    && url[..s.len()].eq_ignore_ascii_case(s)
                    && url.as_bytes()[s.len()] == b':'
            }
        });
        if !ok {
            self.err(
                "invalid-url",
                format!("`{url}` is not an allowed link"),
                span,
            )
            .help(format!(
                "use one of: {}",
                schemes
                    .iter()
                    .map(|s| if *s == "/" {
                        "/path".to_string()
                    } else {
                        format!("{s}:")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    fn question(
        &mut self,
        si: usize,
        i: usize,
        st: &StepDoc,
        pacing: &Pacing,
        back_default: bool,
    ) -> Kind {
        let ask = st.ask.as_ref().expect("question");
        let qtype = ask.value;
        // A choice whose option values are all numbers (or booleans) saves that type.
        let mut var_type = VarType::of_question(qtype);
        if qtype == QuestionType::Choice
            && let Some(opts) = &st.options
            && !opts.is_empty()
        {
            let kinds: HashSet<Option<VarType>> = opts
                .iter()
                .map(|o| match &o.value {
                    OptionDoc::Plain(l) => VarType::of_json(&l.0),
                    OptionDoc::Full(f) => f
                        .value
                        .as_ref()
                        .map_or(Some(VarType::Text), |v| VarType::of_json(&v.value.0)),
                })
                .collect();
            if kinds.len() == 1
                && let Some(Some(k)) = kinds.into_iter().next()
            {
                var_type = k;
            }
        }
        let var = match &st.save {
            Some(save) => {
                self.define(si, &save.value, Some(var_type), span_of(save));
                save.value.clone()
            }
            None => {
                self.err(
                    "missing-save",
                    "a question needs `save: variable_name`",
                    span_of(ask),
                )
                .help("the answer is stored in that variable");
                String::new()
            }
        };
        let prompt = self.message(si, st, pacing);
        let invalid = st.invalid.as_ref().map(|s| self.text(si, s, true, None));
        if let Some(f) = &st.fallback {
            self.target(si, f, Slot::Fallback(i));
        }
        let timeout = match (&st.timeout, &st.on_timeout) {
            (Some(t), Some(target)) => {
                self.target(si, target, Slot::Timeout(i));
                match time::parse_span(&t.value) {
                    Ok(span) if span.is_positive() => {
                        self.check_outlives_expiry("timeout", &span, span_of(&**t));
                        Some((span, usize::MAX))
                    }
                    Ok(_) => {
                        self.err("invalid-duration", "timeout must be positive", span_of(t));
                        None
                    }
                    Err(e) => {
                        self.err("invalid-duration", e, span_of(t));
                        None
                    }
                }
            }
            (Some(t), None) => {
                self.err(
                    "missing-target",
                    "`timeout` needs `on_timeout: step`",
                    span_of(t),
                );
                None
            }
            (None, Some(t)) => {
                self.err(
                    "missing-target",
                    "`on_timeout` needs `timeout: duration`",
                    span_of(t),
                );
                None
            }
            (None, None) => None,
        };
        let mut rules = Rules {
            scale: 5,
            ..Rules::default()
        };
        rules.min_length = st.min_length.as_ref().map(|v| v.value);
        rules.max_length = st.max_length.as_ref().map(|v| v.value);
        if let (Some(a), Some(b)) = (&st.min_length, &st.max_length)
            && a.value > b.value
        {
            self.err(
                "invalid-bounds",
                "`min_length` is larger than `max_length`",
                span_of(a),
            );
        }
        if let Some(p) = &st.pattern {
            // Report errors against the author's pattern, then anchor it to the whole answer.
            let built = regex::RegexBuilder::new(&p.value)
                .size_limit(1 << 20)
                .build()
                .and_then(|_| {
                    regex::RegexBuilder::new(&format!("^(?:{})$", p.value))
                        .size_limit(1 << 20)
                        .build()
                });
            match built {
                Ok(re) => rules.pattern = Some(re),
                Err(e) => {
                    let why = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("invalid")
                        .trim_start_matches("error: ")
                        .to_string();
                    self.err(
                        "invalid-pattern",
                        format!("pattern does not compile: {why}"),
                        span_of(p),
                    );
                }
            }
        }
        match qtype {
            QuestionType::Number => {
                rules.min = self.number_bound(st.min.as_deref());
                rules.max = self.number_bound(st.max.as_deref());
                rules.integer = st.integer.unwrap_or(false);
                if let Some(s) = &st.step {
                    if !(s.value.is_finite() && s.value > 0.0) {
                        self.err(
                            "invalid-bounds",
                            "`step` must be a positive number",
                            span_of(s),
                        );
                    } else {
                        rules.step = Some(s.value);
                    }
                }
                if let (Some(a), Some(b)) = (rules.min, rules.max)
                    && a > b
                {
                    self.err(
                        "invalid-bounds",
                        "`min` is larger than `max`",
                        st.min.as_ref().and_then(span_of),
                    );
                }
            }
            QuestionType::Date | QuestionType::DateRange => {
                rules.min_date = self.date_bound(st.min.as_deref());
                rules.max_date = self.date_bound(st.max.as_deref());
                if let (Some(RelDate::Fixed(a)), Some(RelDate::Fixed(b))) =
                    (&rules.min_date, &rules.max_date)
                    && a > b
                {
                    self.err(
                        "invalid-bounds",
                        "`min` is after `max`",
                        st.min.as_ref().and_then(span_of),
                    );
                }
            }
            QuestionType::Phone => {
                if let Some(c) = &st.country {
                    if crate::answer::calling_code(&c.value).is_none() {
                        self.err(
                            "invalid-country",
                            format!("unknown country code `{}`", c.value),
                            span_of(c),
                        )
                        .help("use a two-letter ISO code such as `US`, `GB`, `NL`");
                    } else {
                        rules.country = Some(c.value.to_ascii_uppercase());
                    }
                }
            }
            QuestionType::Choice | QuestionType::Multiple => {
                self.options(si, i, st, qtype, &mut rules);
                rules.min_picks = st.min_picks.as_ref().map(|v| v.value);
                rules.max_picks = st.max_picks.as_ref().map(|v| v.value);
                if let (Some(a), Some(b)) = (&st.min_picks, &st.max_picks)
                    && a.value > b.value
                {
                    self.err(
                        "invalid-bounds",
                        "`min_picks` is larger than `max_picks`",
                        span_of(a),
                    );
                }
            }
            QuestionType::Rating => {
                if let Some(s) = &st.scale {
                    if !(2..=10).contains(&s.value) {
                        self.err(
                            "invalid-bounds",
                            "rating `scale` must be between 2 and 10",
                            span_of(s),
                        );
                    } else {
                        rules.scale = s.value;
                    }
                }
                rules.style = st.style;
            }
            QuestionType::Nps => {
                rules.scale = 10;
            }
            QuestionType::Checklist => {
                let items = st.items.as_deref().unwrap_or_default();
                if items.is_empty() {
                    self.err("no-items", "a checklist needs `items`", span_of(ask));
                }
                let mut seen = HashSet::new();
                for (k, item) in items.iter().enumerate() {
                    let span = span_of(item);
                    let (id, text) = match &item.value {
                        ItemDoc::Plain(text) => (
                            format!("{}", k + 1),
                            self.text_at(si, text, span.clone(), true, None),
                        ),
                        ItemDoc::Full(f) => {
                            (f.id.value.clone(), self.text(si, &f.text, true, None))
                        }
                    };
                    if !seen.insert(id.clone()) {
                        self.err(
                            "duplicate-id",
                            format!("checklist item id `{id}` is used twice"),
                            span,
                        );
                    }
                    rules.items.push(ChecklistItem { id, text });
                }
            }
            _ => {}
        }
        let retries = match &st.retries {
            Some(r) if r.value == 0 => {
                self.err("invalid-bounds", "`retries` must be at least 1", span_of(r));
                3
            }
            Some(r) => r.value,
            None => 3,
        };
        Kind::Question(Box::new(QuestionStep {
            kind: qtype,
            var,
            prompt,
            invalid,
            retries,
            fallback: None,
            back: st.back.unwrap_or(back_default),
            optional: st.optional.unwrap_or(false),
            placeholder: st.placeholder.clone(),
            timeout,
            rules,
        }))
    }

    fn options(
        &mut self,
        si: usize,
        i: usize,
        st: &StepDoc,
        qtype: QuestionType,
        rules: &mut Rules,
    ) {
        match (&st.options, &st.options_from) {
            (Some(_), Some(f)) => {
                self.err(
                    "several-option-sources",
                    "use either `options` or `options_from`, not both",
                    span_of(&f.var),
                );
            }
            (None, None) => {
                self.err(
                    "no-options",
                    "a choice question needs `options` or `options_from`",
                    st.ask.as_ref().and_then(span_of),
                );
            }
            _ => {}
        }
        let mut values = HashSet::new();
        for (k, opt) in st.options.iter().flatten().enumerate() {
            let span = span_of(opt);
            let o = match &opt.value {
                OptionDoc::Plain(lit) => {
                    let label = literal_text(&lit.0);
                    if !values.insert(crate::answer::normalize(&label)) {
                        self.err(
                            "duplicate-option",
                            format!("option `{label}` is listed twice"),
                            span.clone(),
                        );
                    }
                    let typed = (!lit.0.is_string()).then(|| lit.0.clone());
                    ChoiceOption {
                        label: self.text_at(si, &label, span.clone(), false, None),
                        value: None,
                        typed,
                        synonyms: Vec::new(),
                        when: None,
                        next: None,
                        set: Vec::new(),
                    }
                }
                OptionDoc::Full(f) => {
                    let key = f
                        .value
                        .as_ref()
                        .map_or(f.label.value.clone(), |v| literal_text(&v.value.0));
                    if !values.insert(crate::answer::normalize(&key)) {
                        self.err(
                            "duplicate-option",
                            format!("option `{key}` is listed twice"),
                            span_of(&f.label),
                        );
                    }
                    if let Some(n) = &f.next {
                        if qtype == QuestionType::Multiple {
                            self.err(
                                "field-not-allowed",
                                "`next` on an option only works for `choice` questions",
                                span_of(n),
                            );
                        }
                        self.target(si, n, Slot::OptionNext(i, k));
                    }
                    let (value, typed) = match f.value.as_ref() {
                        Some(v) if v.value.0.is_string() => (
                            Some(self.text_at(
                                si,
                                &literal_text(&v.value.0),
                                span_of(v),
                                false,
                                None,
                            )),
                            None,
                        ),
                        Some(v) => (None, Some(v.value.0.clone())),
                        None => (None, None),
                    };
                    ChoiceOption {
                        label: self.text(si, &f.label, false, None),
                        value,
                        typed,
                        synonyms: f
                            .synonyms
                            .iter()
                            .map(|s| crate::answer::normalize(s))
                            .collect(),
                        when: f.when.as_ref().map(|w| self.expr(si, w, None)),
                        next: None,
                        set: f
                            .set
                            .as_ref()
                            .map(|s| self.assignments(si, s, true, None))
                            .unwrap_or_default(),
                    }
                }
            };
            rules.options.push(o);
        }
        if let Some(f) = &st.options_from {
            self.uses.push(Use {
                scope: si,
                names: UseNames::Direct(f.var.value.clone()),
                span: span_of(&f.var),
                extra: None,
            });
            if let Some((Some(ty), _)) = self.defs[si].get(&f.var.value)
                && *ty != VarType::List
            {
                let ty = *ty;
                self.err(
                    "type-mismatch",
                    format!(
                        "`options_from` needs a list, but `{}` holds {}",
                        f.var.value,
                        ty.name()
                    ),
                    span_of(&f.var),
                );
            }
            rules.options_from = Some(OptionsFrom {
                var: f.var.value.clone(),
                label: f
                    .label
                    .as_ref()
                    .map(|l| self.text(si, l, false, Some("item"))),
                value: f
                    .value
                    .as_ref()
                    .map(|v| self.text(si, v, false, Some("item"))),
                when: f.when.as_ref().map(|w| self.expr(si, w, Some("item"))),
            });
        }
    }

    fn number_bound(&mut self, v: Option<&Sp<Literal>>) -> Option<f64> {
        let v = v?;
        match v.value.0.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.err("type-mismatch", "number bounds must be numbers", span_of(v));
                None
            }
        }
    }

    fn date_bound(&mut self, v: Option<&Sp<Literal>>) -> Option<RelDate> {
        let v = v?;
        let text = match &v.value.0 {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match time::parse_rel_date(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err("invalid-date", e, span_of(v));
                None
            }
        }
    }

    fn assignments(
        &mut self,
        si: usize,
        list: &Sp<AssignmentList>,
        defines: bool,
        extra: Option<&'static str>,
    ) -> Vec<(String, ExprId)> {
        if list.value.0.is_empty() {
            self.err("empty-set", "nothing to assign", span_of(list));
        }
        list.value
            .0
            .iter()
            .map(|a| {
                let e = self.expr(si, &a.expr, extra);
                if defines {
                    self.define(si, &a.name, None, span_of(&a.expr));
                }
                (a.name.clone(), e)
            })
            .collect()
    }

    fn wait(&mut self, si: usize, w: &Sp<WaitDoc>) -> WaitSpec {
        let span = span_of(w);
        let fail = |this: &mut Self, msg: String| {
            this.err("invalid-wait", msg, span.clone());
            WaitSpec::For(jiff::Span::new())
        };
        match &w.value {
            WaitDoc::Duration(d) => match time::parse_span(d) {
                Ok(s) if s.is_positive() => self.wait_for(s, span.clone()),
                Ok(_) => fail(self, "a wait must be positive".into()),
                Err(e) => fail(self, e),
            },
            WaitDoc::Full(f) => {
                let given = [
                    f.for_.is_some(),
                    f.until.is_some(),
                    f.at.is_some(),
                    f.until_open.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if given != 1 {
                    return fail(
                        self,
                        "a wait needs exactly one of `for`, `until`, `at` or `until_open`".into(),
                    );
                }
                if f.on.is_some() && f.until.is_none() {
                    return fail(self, "`on` only applies to `until`".into());
                }
                if f.offset.is_some() && f.at.is_none() {
                    return fail(self, "`offset` only applies to `at`".into());
                }
                if let Some(name) = &f.until_open {
                    if !self.calendar_names.contains(&name.value) {
                        let help = self.calendar_help(&name.value);
                        self.err(
                            "unknown-calendar",
                            format!("no calendar named `{}`", name.value),
                            span_of(name),
                        )
                        .label("unknown calendar")
                        .help_opt(help);
                    }
                    return WaitSpec::UntilOpen(name.value.clone());
                }
                if let Some(d) = &f.for_ {
                    return match time::parse_span(d) {
                        Ok(s) if s.is_positive() => self.wait_for(s, span.clone()),
                        Ok(_) => fail(self, "a wait must be positive".into()),
                        Err(e) => fail(self, e),
                    };
                }
                if let Some(t) = &f.until {
                    let Some(time) = time::parse_time_of_day(t) else {
                        return fail(
                            self,
                            format!("`{t}` is not a time of day (use HH:MM, 24-hour)"),
                        );
                    };
                    let days = match &f.on {
                        None => time::ALL_DAYS,
                        Some(DaysDoc::Named(n)) => match time::parse_days(n) {
                            Some(d) => d,
                            None => return fail(self, format!("`{n}` is not a day set")),
                        },
                        Some(DaysDoc::List(list)) => {
                            let mut bits = 0;
                            for d in list {
                                match time::parse_days(d) {
                                    Some(b) => bits |= b,
                                    None => return fail(self, format!("`{d}` is not a day")),
                                }
                            }
                            bits
                        }
                    };
                    if days == 0 {
                        return fail(self, "no days selected".into());
                    }
                    return WaitSpec::Until { time, days };
                }
                let at = f.at.as_ref().expect("counted above");
                let offset = match f.offset.as_deref().map(time::parse_span) {
                    None => jiff::Span::new(),
                    Some(Ok(s)) => s,
                    Some(Err(e)) => return fail(self, e),
                };
                let at = self.text_at(si, at, span.clone(), false, None);
                WaitSpec::At { at, offset }
            }
        }
    }

    fn wait_for(&mut self, span: jiff::Span, at: Option<Range<usize>>) -> WaitSpec {
        self.check_outlives_expiry("wait", &span, at);
        WaitSpec::For(span)
    }

    /// `late: fire | skip | {expire: 2h}` (default `fire`); `None` when invalid.
    fn lateness(&mut self, doc: Option<&Sp<LateDoc>>) -> Option<Lateness> {
        let Some(doc) = doc else {
            return Some(Lateness::Fire);
        };
        Some(match &doc.value {
            LateDoc::Named(n) => match n.trim() {
                "fire" => Lateness::Fire,
                "skip" => Lateness::Expire {
                    after_ms: Lateness::SKIP_MS,
                },
                other => {
                    let help = did_you_mean(other, ["fire", "skip"])
                        .unwrap_or_else(|| "use `fire`, `skip` or `{ expire: 2h }`".into());
                    self.err(
                        "invalid-late",
                        format!("`{other}` is not a lateness policy"),
                        span_of(doc),
                    )
                    .help(help);
                    return None;
                }
            },
            LateDoc::Full(f) => match time::parse_duration_ms(&f.expire.value) {
                Ok(after_ms) => Lateness::Expire { after_ms },
                Err(e) => {
                    self.err("invalid-duration", e, span_of(&f.expire))
                        .help("e.g. `late: { expire: 2h }`");
                    return None;
                }
            },
        })
    }

    fn http(&mut self, si: usize, i: usize, h: &HttpDoc, fire_and_forget: bool) -> HttpStep {
        let method = h
            .method
            .clone()
            .unwrap_or_else(|| if fire_and_forget { "POST" } else { "GET" }.into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            self.err(
                "invalid-method",
                format!("unsupported HTTP method `{method}`"),
                span_of(&h.url),
            );
        }
        self.check_url(&h.url.value, span_of(&h.url), &["http", "https"]);
        let url = self.text(si, &h.url, false, None);
        let headers = h
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), self.text_at(si, v, span_of(&h.url), false, None)))
            .collect();
        let json = h
            .json
            .as_ref()
            .map(|j| self.assignments(si, j, false, None))
            .unwrap_or_default();
        let timeout_ms = match &h.timeout {
            None => 10_000,
            Some(t) => match time::parse_millis(&t.value) {
                Ok(ms) if ms > 0 && ms <= MAX_HTTP_TIMEOUT_MS => ms,
                Ok(_) => {
                    self.err(
                        "invalid-duration",
                        "timeout must be between 1ms and 30s",
                        span_of(t),
                    );
                    10_000
                }
                Err(e) => {
                    self.err("invalid-duration", e, span_of(t));
                    10_000
                }
            },
        };
        let save = match &h.save {
            Some(s) if fire_and_forget => {
                self.err(
                    "field-not-allowed",
                    "a webhook does not wait for a response; use `http` to save it",
                    span_of(s),
                );
                Vec::new()
            }
            Some(s) => self.assignments(si, s, true, Some("response")),
            None => Vec::new(),
        };
        if let Some(e) = &h.on_error {
            if fire_and_forget {
                self.err(
                    "field-not-allowed",
                    "a webhook is retried by the server; `on_error` needs `http`",
                    span_of(e),
                );
            } else {
                self.target(si, e, Slot::HttpError(i));
                // The reason is there for the `on_error` branch to mention.
                self.define(si, "http_error", Some(VarType::Text), None);
            }
        }
        HttpStep {
            method,
            url,
            headers,
            json,
            timeout_ms,
            save,
            on_error: None,
            fire_and_forget,
        }
    }

    fn resolve_targets(&mut self, scopes: &mut [Scope]) -> Option<usize> {
        let mut start = None;
        let targets = std::mem::take(&mut self.targets);
        for t in targets {
            let scope = &mut scopes[t.scope];
            let Some(&ix) = scope.index.get(&t.name) else {
                let help = did_you_mean(&t.name, scope.index.keys().map(String::as_str));
                let where_ = scope
                    .name
                    .as_ref()
                    .map(|n| format!(" in sub-flow `{n}`"))
                    .unwrap_or_default();
                self.err(
                    "dangling-target",
                    format!("no step named `{}`{where_}", t.name),
                    t.span,
                )
                .label("unknown step")
                .help_opt(help);
                continue;
            };
            match t.slot {
                Slot::Start => start = Some(ix),
                Slot::Next(s) => scope.steps[s].next = Some(ix),
                Slot::Goto(s) => scope.steps[s].kind = Kind::Goto(ix),
                Slot::Else(s) => {
                    if let Kind::Branch { otherwise, .. } = &mut scope.steps[s].kind {
                        *otherwise = Some(ix);
                    }
                }
                Slot::BranchArm(s, k) => {
                    if let Kind::Branch { arms, .. } = &mut scope.steps[s].kind {
                        arms[k].1 = ix;
                    }
                }
                Slot::SplitArm(s, k) => {
                    if let Kind::Split { arms } = &mut scope.steps[s].kind {
                        arms[k].target = ix;
                    }
                }
                Slot::Fallback(s) => {
                    if let Kind::Question(q) = &mut scope.steps[s].kind {
                        q.fallback = Some(ix);
                    }
                }
                Slot::Timeout(s) => {
                    if let Kind::Question(q) = &mut scope.steps[s].kind
                        && let Some(t) = &mut q.timeout
                    {
                        t.1 = ix;
                    }
                }
                Slot::OptionNext(s, k) => {
                    if let Kind::Question(q) = &mut scope.steps[s].kind {
                        q.rules.options[k].next = Some(ix);
                    }
                }
                Slot::HttpError(s) => {
                    if let Kind::Http(h) = &mut scope.steps[s].kind {
                        h.on_error = Some(ix);
                    }
                }
                Slot::OnLate(s) => {
                    if let Kind::Wait(w) = &mut scope.steps[s].kind {
                        w.on_late = Some(ix);
                    }
                }
            }
        }
        start
    }

    fn check_calls(&mut self, scopes: &mut [Scope], sub_names: &[String]) {
        let calls = std::mem::take(&mut self.calls);
        for PendingCall {
            name,
            span,
            with,
            returns,
        } in calls
        {
            let Some(p) = sub_names.iter().position(|n| n == &name) else {
                continue;
            };
            let sub = &scopes[p + 1];
            for a in &with {
                if !sub.inputs.contains(&a.name) {
                    self.err(
                        "unknown-input",
                        format!("sub-flow `{name}` has no input `{}`", a.name),
                        span_of(&a.expr),
                    )
                    .help_opt(did_you_mean(&a.name, sub.inputs.iter().map(String::as_str)));
                }
            }
            for input in &sub.inputs {
                if !with.iter().any(|a| &a.name == input) {
                    self.err(
                        "missing-input",
                        format!("call to `{name}` does not pass input `{input}`"),
                        span.clone(),
                    );
                }
            }
            for a in &returns {
                let out = a.expr.value.0.trim();
                if !sub.outputs.iter().any(|o| o == out) {
                    self.err(
                        "unknown-output",
                        format!("sub-flow `{name}` has no output `{out}`"),
                        span_of(&a.expr),
                    )
                    .help_opt(did_you_mean(out, sub.outputs.iter().map(String::as_str)));
                }
            }
        }
    }

    fn check_uses(&mut self, report: &crate::expr::CompileReport) {
        let uses = std::mem::take(&mut self.uses);
        for u in &uses {
            let names: &[String] = match &u.names {
                UseNames::Template(id) => &report.template_names[id.0 as usize],
                UseNames::Expr(id) => &report.expr_names[id.0 as usize],
                UseNames::Direct(n) => std::slice::from_ref(n),
            };
            for name in names {
                if self.defs[u.scope].contains_key(name)
                    || BUILTIN_NAMES.contains(&name.as_str())
                    || FUNCTION_NAMES.contains(&name.as_str())
                    || u.extra == Some(name.as_str())
                {
                    continue;
                }
                let mut candidates: Vec<&str> =
                    self.defs[u.scope].keys().map(String::as_str).collect();
                candidates.extend_from_slice(BUILTIN_NAMES);
                candidates.extend(u.extra);
                let help = did_you_mean(name, candidates).or_else(|| {
                    Some("variables come from `variables:`, a question's `save`, `set`, or sub-flow inputs".into())
                });
                let span = u.span.clone().map(|s| self.find_in(s, name));
                self.err(
                    "unknown-variable",
                    format!("unknown variable `{name}`"),
                    span,
                )
                .help_opt(help);
            }
        }
    }

    /// Narrows a span to the first occurrence of `needle` inside it, when present.
    fn find_in(&self, span: Range<usize>, needle: &str) -> Range<usize> {
        let hay = self.src.get(span.clone()).unwrap_or("");
        let mut from = 0;
        while let Some(pos) = hay[from..].find(needle) {
            let start = from + pos;
            let before = hay[..start].chars().next_back();
            let after = hay[start + needle.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if boundary(before) && boundary(after) {
                return span.start + start..span.start + start + needle.len();
            }
            from = start + needle.len();
        }
        span
    }

    /// Maps a minijinja error position inside a template to the YAML source, when the
    /// scalar is written on one line (plain or quoted without escapes).
    fn inner_span(&self, span: Option<Range<usize>>, e: &minijinja::Error) -> Option<Range<usize>> {
        let span = span?;
        let Some(inner) = e.range() else {
            return Some(span);
        };
        let raw = self.src.get(span.clone()).unwrap_or("");
        let tpl = e.template_source().unwrap_or("");
        let offset = if raw.starts_with(tpl) {
            0
        } else if (raw.starts_with('"') || raw.starts_with('\'')) && raw[1..].starts_with(tpl) {
            1
        } else {
            return Some(span);
        };
        let start = span.start + offset + inner.start;
        Some(start..start + inner.len().max(1))
    }

    fn check_graph(&mut self, scopes: &[Scope]) {
        // Reachability from the main start, following calls into sub-flows.
        let mut seen: Vec<Vec<bool>> = scopes.iter().map(|s| vec![false; s.steps.len()]).collect();
        let mut stack: Vec<(usize, usize)> = Vec::new();
        if !scopes[0].steps.is_empty() {
            stack.push((0, scopes[0].start));
        }
        while let Some((si, ix)) = stack.pop() {
            if ix >= seen[si].len() || seen[si][ix] {
                continue;
            }
            seen[si][ix] = true;
            let step = &scopes[si].steps[ix];
            for t in successors(step) {
                stack.push((si, t));
            }
            if let Kind::Call { scope, .. } = &step.kind
                && *scope > 0
                && !scopes[*scope].steps.is_empty()
            {
                stack.push((*scope, scopes[*scope].start));
            }
        }
        // After structural errors reachability is unreliable; do not cascade warnings.
        let structural_errors = self.diags.iter().any(Diagnostic::is_error);
        for (si, scope) in scopes.iter().enumerate() {
            for (ix, step) in scope.steps.iter().enumerate() {
                if !seen[si][ix] && !structural_errors {
                    let span = self.step_spans[si][ix].clone();
                    self.warn(
                        "unreachable",
                        format!("step `{}` can never be reached", step.id),
                        span,
                    )
                    .help("link to it with `next`, `goto` or a branch, or remove it");
                }
            }
        }
        // Loops that never stop for an answer: cycles among non-stopping steps.
        for (si, scope) in scopes.iter().enumerate() {
            let stops: Vec<bool> = scope.steps.iter().map(|s| step_stops(s, scopes)).collect();
            for comp in sccs(scope.steps.len(), |v| {
                if stops[v] {
                    Vec::new()
                } else {
                    successors(&scope.steps[v])
                        .into_iter()
                        .filter(|&w| !stops[w])
                        .collect()
                }
            }) {
                let cyclic = comp.len() > 1 || successors(&scope.steps[comp[0]]).contains(&comp[0]);
                if cyclic && !stops[comp[0]] {
                    let first = *comp.iter().min().expect("non-empty");
                    let ids: Vec<&str> = {
                        let mut c = comp.clone();
                        c.sort();
                        c.iter().map(|&v| scope.steps[v].id.as_str()).collect()
                    };
                    self.err(
                        "endless-loop",
                        format!(
                            "these steps loop forever without asking anything: {}",
                            ids.join(" → ")
                        ),
                        self.step_spans[si][first].clone(),
                    )
                    .help("put a question, a wait or an end inside the loop");
                }
            }
        }
    }
}

fn step_stops(step: &Step, scopes: &[Scope]) -> bool {
    match &step.kind {
        Kind::Call { scope, .. } => scopes
            .get(*scope)
            .is_some_and(|s| *scope > 0 && s.steps.iter().any(|st| st.kind.stops())),
        k => k.stops(),
    }
}

/// Every step a step can continue with, within its scope.
pub(crate) fn successors(step: &Step) -> Vec<usize> {
    let mut out = Vec::new();
    let valid = |t: usize| t != usize::MAX;
    match &step.kind {
        Kind::Goto(t) => out.push(*t),
        Kind::Branch { arms, otherwise } => {
            out.extend(arms.iter().map(|a| a.1));
            match otherwise {
                Some(t) => out.push(*t),
                None => out.extend(step.next),
            }
        }
        Kind::Split { arms } => out.extend(arms.iter().map(|a| a.target)),
        Kind::End { .. } => {}
        Kind::Question(q) => {
            out.extend(step.next);
            out.extend(q.fallback);
            out.extend(q.timeout.as_ref().map(|t| t.1));
            out.extend(q.rules.options.iter().filter_map(|o| o.next));
        }
        Kind::Http(h) => {
            out.extend(step.next);
            out.extend(h.on_error);
        }
        Kind::Wait(w) => {
            out.extend(step.next);
            out.extend(w.on_late);
        }
        _ => out.extend(step.next),
    }
    out.retain(|&t| valid(t));
    out
}

/// Strongly connected components (iterative Tarjan), each as a list of vertices.
fn sccs(n: usize, edges: impl Fn(usize) -> Vec<usize>) -> Vec<Vec<usize>> {
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, Vec<usize>, usize)> = vec![(root, edges(root), 0)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some((v, succ, pos)) = work.last_mut() {
            let v = *v;
            if *pos < succ.len() {
                let w = succ[*pos];
                *pos += 1;
                if w >= n {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    let e = edges(w);
                    work.push((w, e, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some((parent, _, _)) = work.last() {
                    low[*parent] = low[*parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// Longest number of questions from each step to the end of its scope, counting a
/// loop's questions once (on the graph of strongly connected components).
fn compute_remaining(scopes: &mut [Scope]) {
    // Sub-flows first (a call counts the questions of its sub-flow).
    let order: Vec<usize> = (1..scopes.len()).chain(std::iter::once(0)).collect();
    let mut longest_of_scope = vec![0u32; scopes.len()];
    for si in order {
        let scope = &scopes[si];
        let n = scope.steps.len();
        let weight: Vec<u32> = scope
            .steps
            .iter()
            .map(|s| match &s.kind {
                Kind::Question(_) => 1,
                Kind::Call { scope, .. } if *scope != si => longest_of_scope[*scope],
                _ => 0,
            })
            .collect();
        let comps = sccs(n, |v| successors(&scope.steps[v]));
        // Tarjan emits components in reverse topological order: successors first.
        let mut comp_of = vec![0; n];
        for (c, comp) in comps.iter().enumerate() {
            for &v in comp {
                comp_of[v] = c;
            }
        }
        let mut best = vec![0u32; comps.len()];
        for (c, comp) in comps.iter().enumerate() {
            let own: u32 = comp.iter().map(|&v| weight[v]).sum();
            let mut after = 0;
            for &v in comp {
                for w in successors(&scope.steps[v]) {
                    if w < n && comp_of[w] != c {
                        after = after.max(best[comp_of[w]]);
                    }
                }
            }
            best[c] = own + after;
        }
        let remaining: Vec<u32> = (0..n).map(|v| best[comp_of[v]]).collect();
        longest_of_scope[si] = if n > 0 {
            remaining[scopes[si].start]
        } else {
            0
        };
        scopes[si].remaining = remaining;
    }
}

fn present_fields(st: &StepDoc) -> Vec<(&'static str, Option<Range<usize>>)> {
    let mut v: Vec<(&'static str, Option<Range<usize>>)> = Vec::new();
    macro_rules! sp {
        ($($f:ident => $name:literal),* $(,)?) => {$(
            if let Some(x) = &st.$f { v.push(($name, span_of(x))); }
        )*};
    }
    macro_rules! plain {
        ($($f:ident => $name:literal),* $(,)?) => {$(
            if st.$f.is_some() { v.push(($name, None)); }
        )*};
    }
    sp!(id => "id", next => "next", say => "say", image => "image", video => "video",
        delay => "delay", ask => "ask", save => "save", invalid => "invalid", retries => "retries",
        fallback => "fallback", timeout => "timeout", on_timeout => "on_timeout",
        min_length => "min_length", max_length => "max_length", pattern => "pattern", min => "min",
        max => "max", step => "step", country => "country", min_picks => "min_picks",
        max_picks => "max_picks", scale => "scale", set => "set", else_ => "else", goto => "goto",
        call => "call", with => "with", returns => "returns", goal => "goal", value => "value",
        end => "end", handoff => "handoff", wait => "wait", late => "late", on_late => "on_late");
    plain!(alt => "alt", typing => "typing", pacing => "pacing", back => "back",
        optional => "optional", placeholder => "placeholder", integer => "integer",
        options => "options", options_from => "options_from", style => "style", items => "items",
        branch => "branch", split => "split", http => "http", webhook => "webhook");
    if !st.links.is_empty() {
        v.push(("links", None));
    }
    // Fields without their own span point at the step.
    let fallback = step_span(st);
    for f in &mut v {
        if f.1.is_none() {
            f.1 = fallback.clone();
        }
    }
    v
}

/// The best span for a whole step: its id, else its first spanned field.
fn step_span(st: &StepDoc) -> Option<Range<usize>> {
    st.id
        .as_ref()
        .and_then(span_of)
        .or_else(|| st.say.as_ref().and_then(span_of))
        .or_else(|| st.ask.as_ref().and_then(span_of))
        .or_else(|| st.set.as_ref().and_then(span_of))
        .or_else(|| st.goto.as_ref().and_then(span_of))
        .or_else(|| st.goal.as_ref().and_then(span_of))
        .or_else(|| st.end.as_ref().and_then(span_of))
        .or_else(|| st.call.as_ref().and_then(span_of))
        .or_else(|| st.handoff.as_ref().and_then(span_of))
        .or_else(|| st.wait.as_ref().and_then(span_of))
        .or_else(|| st.image.as_ref().and_then(span_of))
        .or_else(|| st.video.as_ref().and_then(span_of))
        .or_else(|| st.next.as_ref().and_then(span_of))
        .or_else(|| st.else_.as_ref().and_then(span_of))
        .or_else(|| st.http.as_ref().and_then(|h| span_of(&h.url)))
        .or_else(|| st.webhook.as_ref().and_then(|h| span_of(&h.url)))
        .or_else(|| {
            st.branch
                .as_ref()
                .and_then(|b| b.first())
                .and_then(|a| span_of(&a.if_))
        })
        .or_else(|| {
            st.split
                .as_ref()
                .and_then(|b| b.first())
                .and_then(|a| span_of(&a.then))
        })
}

fn parse_delay(s: &str) -> Result<Delay, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (time::parse_millis(a)?, time::parse_millis(b)?);
            if a > b {
                return Err(format!("`{s}`: the range starts after it ends"));
            }
            Ok(Delay::Range(a, b))
        }
        None => time::parse_millis(s).map(Delay::Fixed),
    }
}

/// A literal as the text a participant would see or type.
fn literal_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn minijinja_message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => d.to_string(),
        None => e.kind().to_string(),
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Lowercase letters, digits and `-` (not first), up to 64 characters.
pub fn is_flow_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

fn is_step_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

/// FNV-1a 64-bit content hash, hex: the version identity of a flow source.
pub fn content_hash(src: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in src.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
