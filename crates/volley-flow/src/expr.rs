//! Templates and expressions: one sandboxed minijinja environment per flow.
//!
//! Authors write `{{ … }}` in texts and bare expressions in `set`, `if`, `when`.
//! Everything is compiled once when the flow loads; evaluation has a fuel limit so no
//! expression or template can run away. Values interpolated into Markdown texts are
//! escaped, so a participant typing `**hi**` or `[x](javascript:…)` shows literally.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use minijinja::value::{Object, Rest, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, State, UndefinedBehavior};

/// Instructions one render or evaluation may execute.
pub const FUEL: u64 = 50_000;
/// Longest text a template may produce, in bytes.
pub const MAX_RENDER_BYTES: usize = 16 * 1024;

/// Variables of a running conversation.
/// Variables of a running conversation (names shared, so snapshots for "back" are cheap).
pub type VarMap = BTreeMap<Arc<str>, Value>;

/// Names provided by the engine in every context (besides variables).
pub const BUILTIN_NAMES: &[&str] = &["contact", "now", "today", "flow"];

/// Functions registered in the environment (not variables).
pub const FUNCTION_NAMES: &[&str] = &[
    "min",
    "max",
    "abs",
    "floor",
    "ceil",
    "round",
    "pow",
    "sqrt",
    "pmt",
    "fv",
    "date_add",
    "days_between",
    "weekday",
    "format_date",
    "format_number",
    "is_open",
    "next_open",
    "next_close",
    "local_time",
    "range",
    "dict",
    "namespace",
];

const MARKDOWN: &str = "markdown";

/// Builds the environment every flow uses.
pub fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|name| {
        if name.starts_with("md:") {
            AutoEscape::Custom(MARKDOWN.into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        let markdown = matches!(state.auto_escape(), AutoEscape::Custom(name) if name == MARKDOWN);
        if !markdown {
            return minijinja::escape_formatter(out, state, value);
        }
        // Markdown texts: strings are escaped; numbers, booleans and `| safe` are not.
        let text = if value.is_undefined() || value.is_none() {
            String::new()
        } else if value.kind() == minijinja::value::ValueKind::String && !value.is_safe() {
            escape_markdown(&value.to_string())
        } else {
            value.to_string()
        };
        out.write_str(&text).map_err(Error::from)
    });
    // `default` also replaces `none` (a skipped answer), not only undefined values.
    env.add_filter(
        "default",
        |value: Value, other: Option<Value>, lax: Option<bool>| {
            let other = other.unwrap_or_else(|| Value::from(""));
            if value.is_undefined() || value.is_none() || (lax.unwrap_or(false) && !value.is_true())
            {
                other
            } else {
                value
            }
        },
    );
    env.add_function("min", |args: Rest<Value>| fold_numbers(&args.0, f64::min));
    env.add_function("max", |args: Rest<Value>| fold_numbers(&args.0, f64::max));
    env.add_function("abs", |x: f64| num(x.abs()));
    env.add_function("floor", |x: f64| num(x.floor()));
    env.add_function("ceil", |x: f64| num(x.ceil()));
    env.add_function("round", |x: f64, digits: Option<i32>| {
        let p = 10f64.powi(digits.unwrap_or(0).clamp(0, 12));
        num((x * p).round() / p)
    });
    env.add_function("pow", |x: f64, y: f64| num(x.powf(y)));
    env.add_function("sqrt", |x: f64| num(x.sqrt()));
    env.add_function("pmt", pmt);
    env.add_function("fv", fv);
    env.add_function("date_add", date_add);
    env.add_function("days_between", days_between);
    env.add_function("weekday", |d: String| {
        Ok(Value::from(
            crate::calendar::DAY_NAMES[parse_date(&d)?.weekday().to_monday_zero_offset() as usize],
        ))
    });
    env.add_function("format_date", |d: String, fmt: Option<String>| {
        let date = parse_date(&d)?;
        let fmt = fmt.unwrap_or_else(|| "%B %-d, %Y".into());
        jiff::fmt::strtime::format(fmt.as_str(), date)
            .map(Value::from)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_function("format_number", format_number);
    env.add_function("is_open", |state: &State, name: String| {
        let g = globals(state)?;
        Ok(Value::from(calendar(&g, &name)?.is_open(g.now)))
    });
    env.add_function("next_open", |state: &State, name: String| {
        let g = globals(state)?;
        Ok(instant_value(calendar(&g, &name)?.next_open(g.now)))
    });
    env.add_function("next_close", |state: &State, name: String| {
        let g = globals(state)?;
        Ok(instant_value(calendar(&g, &name)?.next_close(g.now)))
    });
    env.add_function("local_time", local_time);
    env
}

/// Functions that calendars and clocks need find the turn's [`Globals`] under this
/// name in the context (no template can spell it).
const GLOBALS_KEY: &str = "volley globals";

fn globals(state: &State) -> Result<Arc<Globals>, Error> {
    state
        .lookup(GLOBALS_KEY)
        .and_then(|v| v.downcast_object::<Globals>())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "calendars and local times are not available here",
            )
        })
}

fn calendar<'g>(g: &'g Globals, name: &str) -> Result<&'g crate::calendar::Calendar, Error> {
    g.calendars.get(name).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("no calendar named `{name}`"),
        )
    })
}

/// An instant as templates see it (RFC 3339, like `now`), or `none`.
fn instant_value(t: Option<jiff::Timestamp>) -> Value {
    t.map_or(Value::from(()), |t| Value::from(t.to_string()))
}

/// `local_time(instant, fmt, zone)`: an instant (RFC 3339) formatted in the contact's
/// zone (or `zone`); `none` stays `none`, so `| default("soon")` works.
fn local_time(
    state: &State,
    instant: Value,
    fmt: Option<String>,
    zone: Option<String>,
) -> Result<Value, Error> {
    if instant.is_none() || instant.is_undefined() {
        return Ok(Value::from(()));
    }
    let g = globals(state)?;
    let invalid = |msg: String| Error::new(ErrorKind::InvalidOperation, msg);
    let tz = match zone {
        Some(name) => crate::time::zone(&name)
            .ok_or_else(|| invalid(format!("unknown time zone `{name}`")))?,
        None => g.tz.clone(),
    };
    let text = instant
        .as_str()
        .ok_or_else(|| invalid(format!("expected an instant, got {}", instant.kind())))?;
    let at = crate::time::parse_instant(text, &tz).map_err(invalid)?;
    let fmt = fmt.unwrap_or_else(|| "%A %-d %B, %H:%M".into());
    jiff::fmt::strtime::format(fmt.as_str(), &at.to_zoned(tz))
        .map(Value::from)
        .map_err(|e| invalid(e.to_string()))
}

fn num(x: f64) -> Result<Value, Error> {
    if !x.is_finite() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "result is not a finite number",
        ));
    }
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Ok(Value::from(x as i64))
    } else {
        Ok(Value::from(x))
    }
}

fn as_f64(v: &Value) -> Result<f64, Error> {
    f64::try_from(v.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("expected a number, got {}", v.kind()),
        )
    })
}

fn fold_numbers(args: &[Value], f: fn(f64, f64) -> f64) -> Result<Value, Error> {
    // min(list) and min(a, b, …) both work.
    let items: Vec<Value> = match args {
        [one] if one.kind() == minijinja::value::ValueKind::Seq => one.try_iter()?.collect(),
        _ => args.to_vec(),
    };
    let mut acc: Option<f64> = None;
    for v in &items {
        let x = as_f64(v)?;
        acc = Some(acc.map_or(x, |a| f(a, x)));
    }
    num(acc.ok_or_else(|| Error::new(ErrorKind::MissingArgument, "needs at least one number"))?)
}

/// Payment per period of a loan: `pmt(rate_per_period, periods, present_value)`.
/// Returns a positive amount for a positive loan.
fn pmt(rate: f64, periods: f64, pv: f64, fv: Option<f64>) -> Result<Value, Error> {
    let fv = fv.unwrap_or(0.0);
    if periods <= 0.0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "periods must be positive",
        ));
    }
    let payment = if rate == 0.0 {
        (pv + fv) / periods
    } else {
        let g = (1.0 + rate).powf(periods);
        (pv * g + fv) * rate / (g - 1.0)
    };
    num(payment)
}

/// Future value of regular savings: `fv(rate_per_period, periods, payment, present_value)`.
fn fv(rate: f64, periods: f64, payment: f64, pv: Option<f64>) -> Result<Value, Error> {
    let pv = pv.unwrap_or(0.0);
    let value = if rate == 0.0 {
        pv + payment * periods
    } else {
        let g = (1.0 + rate).powf(periods);
        pv * g + payment * (g - 1.0) / rate
    };
    num(value)
}

pub(crate) fn parse_date(s: &str) -> Result<jiff::civil::Date, Error> {
    let head = s.get(..10).unwrap_or(s);
    head.parse::<jiff::civil::Date>().map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`{s}` is not a date (YYYY-MM-DD)"),
        )
    })
}

fn date_add(d: String, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let date = parse_date(&d)?;
    let days: i64 = kwargs.get::<Option<i64>>("days")?.unwrap_or(0);
    let weeks: i64 = kwargs.get::<Option<i64>>("weeks")?.unwrap_or(0);
    let months: i64 = kwargs.get::<Option<i64>>("months")?.unwrap_or(0);
    let years: i64 = kwargs.get::<Option<i64>>("years")?.unwrap_or(0);
    kwargs.assert_all_used()?;
    let span = jiff::Span::new()
        .try_days(days)
        .and_then(|s| s.try_weeks(weeks))
        .and_then(|s| s.try_months(months))
        .and_then(|s| s.try_years(years))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    date.checked_add(span)
        .map(|d| Value::from(d.to_string()))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

fn days_between(a: String, b: String) -> Result<Value, Error> {
    let (a, b) = (parse_date(&a)?, parse_date(&b)?);
    let span = a
        .until((jiff::Unit::Day, b))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from(span.get_days()))
}

/// `format_number(1234.5, 2)` → `1,234.50`; optional thousands and decimal separators.
fn format_number(
    x: f64,
    decimals: Option<u32>,
    thousands: Option<String>,
    point: Option<String>,
) -> Result<Value, Error> {
    let decimals = decimals.unwrap_or(0).min(10) as usize;
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let sep = thousands.unwrap_or_else(|| ",".into());
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push_str(&sep);
        }
        grouped.push(ch);
    }
    let mut out = String::new();
    if x < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push('-');
    }
    out.push_str(&grouped);
    if !frac.is_empty() {
        out.push_str(&point.unwrap_or_else(|| ".".into()));
        out.push_str(frac);
    }
    Ok(Value::from(out))
}

/// Escapes Markdown so interpolated text renders literally: characters that are
/// special anywhere, plus list/heading markers at the start of a line inside the value.
/// (A value is usually interpolated mid-line, so its first characters are left as
/// written: `3.45` and `-5` stay readable.)
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut line_start = false;
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        let special = matches!(
            ch,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '~' | '|' | '&'
        );
        let marker = line_start && matches!(ch, '#' | '-' | '+' | '=');
        let numbered = line_start && ch.is_ascii_digit() && {
            let rest: String = chars
                .clone()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ')')
                .collect();
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(['.', ')'])
        };
        if special || marker {
            out.push('\\');
        }
        out.push(ch);
        if numbered {
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() {
                    out.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if let Some(&p) = chars.peek() {
                out.push('\\');
                out.push(p);
                chars.next();
            }
        }
        line_start = ch == '\n' || (line_start && ch == ' ');
    }
    out
}

/// The values a template or expression can see.
#[derive(Debug)]
pub(crate) struct Scope {
    pub vars: Arc<VarMap>,
    pub globals: Arc<Globals>,
    /// An extra binding such as `item` (options from a list) or `response` (HTTP).
    pub extra: Option<(&'static str, Value)>,
}

/// Per-turn values that are the same for every evaluation in the turn. `now` and
/// `today` are only formatted when a template reads them.
#[derive(Debug)]
pub(crate) struct Globals {
    pub contact: Value,
    pub flow: Value,
    pub now: jiff::Timestamp,
    pub tz: jiff::tz::TimeZone,
    pub calendars: Arc<crate::flow::Calendars>,
    pub formatted: std::sync::OnceLock<(Value, Value)>,
}

/// Reachable only from Rust functions (see [`GLOBALS_KEY`]); nothing to read inside.
impl Object for Globals {}

impl Globals {
    fn now_today(&self) -> &(Value, Value) {
        self.formatted.get_or_init(|| {
            let today = crate::time::today(self.now, &self.tz);
            (
                Value::from(self.now.to_string()),
                Value::from(today.to_string()),
            )
        })
    }
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        if let Some((name, v)) = &self.extra
            && *name == key
        {
            return Some(v.clone());
        }
        match key {
            "contact" => Some(self.globals.contact.clone()),
            "now" => Some(self.globals.now_today().0.clone()),
            "today" => Some(self.globals.now_today().1.clone()),
            "flow" => Some(self.globals.flow.clone()),
            GLOBALS_KEY => Some(Value::from_dyn_object(self.globals.clone())),
            _ => self.vars.get(key).cloned(),
        }
    }
}

/// Index of a compiled template inside [`Code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TplId(pub u32);

/// Index of a compiled expression inside [`Code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExprId(pub u32);

/// A text that is either fixed or a template.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    Static(String),
    Template(TplId),
}

/// What the compiled code owns: the environment (whose loader holds the template
/// sources) and the expression sources.
pub(crate) struct Owner {
    env: Environment<'static>,
    template_names: Vec<String>,
    expr_sources: Vec<String>,
}

/// Templates and expressions, each compiled on first use and kept.
pub(crate) struct Lazy<'env> {
    templates: Vec<std::sync::OnceLock<Result<minijinja::Template<'env, 'env>, Error>>>,
    exprs: Vec<std::sync::OnceLock<Result<Expression<'env, 'static>, Error>>>,
}

self_cell::self_cell!(
    /// One flow's templates and expressions, compiled on first use (all of them were
    /// checked when the flow was compiled; compiled code costs ~11 KB each in
    /// minijinja, so a server holding many flows only pays for what runs).
    pub(crate) struct Code {
        owner: Owner,
        #[not_covariant]
        dependent: Lazy,
    }
);

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code")
    }
}

fn sorted(set: std::collections::HashSet<String>) -> Vec<String> {
    let mut v: Vec<String> = set.into_iter().collect();
    v.sort();
    v
}

/// Collects sources while a flow is lowered, then compiles them all at once.
#[derive(Default)]
pub(crate) struct CodeBuilder {
    templates: Vec<(String, bool)>,
    exprs: Vec<String>,
}

/// A compile error or the undeclared names of one template/expression.
pub(crate) struct CompileReport {
    pub template_errors: Vec<(TplId, Error)>,
    pub expr_errors: Vec<(ExprId, Error)>,
    pub template_names: Vec<Vec<String>>,
    pub expr_names: Vec<Vec<String>>,
}

impl CodeBuilder {
    /// Registers a text; plain texts without template syntax stay static.
    pub fn text(&mut self, src: &str, markdown: bool) -> Text {
        if !src.contains("{{") && !src.contains("{%") && !src.contains("{#") {
            return Text::Static(src.to_owned());
        }
        self.templates.push((src.to_owned(), markdown));
        Text::Template(TplId(self.templates.len() as u32 - 1))
    }

    pub fn expr(&mut self, src: &str) -> ExprId {
        self.exprs.push(src.to_owned());
        ExprId(self.exprs.len() as u32 - 1)
    }

    /// Compiles everything. Errors and undeclared names are reported, never fatal here.
    /// Compiles everything only to report errors and names, dropping each compiled
    /// unit at once (`volley check` never runs the flow, so it keeps no code).
    pub fn report(&self) -> CompileReport {
        let env = environment();
        let mut report = CompileReport {
            template_errors: Vec::new(),
            expr_errors: Vec::new(),
            template_names: Vec::with_capacity(self.templates.len()),
            expr_names: Vec::with_capacity(self.exprs.len()),
        };
        for (i, (src, _)) in self.templates.iter().enumerate() {
            match env.template_from_str(src) {
                Ok(t) => report
                    .template_names
                    .push(sorted(t.undeclared_variables(false))),
                Err(e) => {
                    report.template_errors.push((TplId(i as u32), e));
                    report.template_names.push(Vec::new());
                }
            }
        }
        for (i, src) in self.exprs.iter().enumerate() {
            match env.compile_expression(src) {
                Ok(e) => report
                    .expr_names
                    .push(sorted(e.undeclared_variables(false))),
                Err(e) => {
                    report.expr_errors.push((ExprId(i as u32), e));
                    report.expr_names.push(Vec::new());
                }
            }
        }
        report
    }

    /// Checks everything (see [`Self::report`]) and returns code that compiles each
    /// template and expression the first time it runs.
    pub fn build(self) -> (Code, CompileReport) {
        let report = self.report();
        let mut env = environment();
        let mut names = Vec::with_capacity(self.templates.len());
        let mut sources = std::collections::HashMap::with_capacity(self.templates.len());
        for (i, (src, markdown)) in self.templates.into_iter().enumerate() {
            let name = format!("{}{i}", if markdown { "md:" } else { "tx:" });
            sources.insert(name.clone(), src);
            names.push(name);
        }
        env.set_loader(move |name| Ok(sources.get(name).cloned()));
        let (t, e) = (names.len(), self.exprs.len());
        let owner = Owner {
            env,
            template_names: names,
            expr_sources: self.exprs,
        };
        let code = Code::new(owner, |_| Lazy {
            templates: (0..t).map(|_| std::sync::OnceLock::new()).collect(),
            exprs: (0..e).map(|_| std::sync::OnceLock::new()).collect(),
        });
        (code, report)
    }
}

impl Code {
    pub fn render(&self, text: &Text, scope: &Arc<Scope>) -> Result<String, Error> {
        match text {
            Text::Static(s) => Ok(s.clone()),
            Text::Template(id) => {
                let i = id.0 as usize;
                let out = self.with_dependent(|owner, lazy| {
                    match lazy.templates[i]
                        .get_or_init(|| owner.env.get_template(&owner.template_names[i]))
                    {
                        Ok(t) => t.render(Value::from_dyn_object(scope.clone())),
                        Err(e) => Err(Error::new(e.kind(), e.to_string())),
                    }
                })?;
                if out.len() > MAX_RENDER_BYTES {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("rendered text is longer than {MAX_RENDER_BYTES} bytes"),
                    ));
                }
                Ok(out)
            }
        }
    }

    pub fn eval(&self, id: ExprId, scope: &Arc<Scope>) -> Result<Value, Error> {
        self.with_dependent(|owner, lazy| {
            let compiled = lazy.exprs[id.0 as usize].get_or_init(|| {
                owner
                    .env
                    .compile_expression_owned(owner.expr_sources[id.0 as usize].clone())
            });
            match compiled {
                Ok(e) => e.eval(Value::from_dyn_object(scope.clone())),
                Err(e) => Err(Error::new(e.kind(), e.to_string())),
            }
        })
    }
}

/// Truthiness used by conditions: undefined and none are false.
pub(crate) fn truthy(v: &Value) -> bool {
    v.is_true()
}

/// Converts a template value into JSON for effects and the wire.
pub fn to_json(v: &Value) -> serde_json::Value {
    if v.is_undefined() {
        return serde_json::Value::Null;
    }
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Converts JSON into a template value.
pub fn from_json(v: &serde_json::Value) -> Value {
    from_serialize(v)
}

/// Converts any serialisable value into a template value.
pub(crate) fn from_serialize<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// Renders a number for display: integers without a decimal point.
pub fn display_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(display_value)
            .collect::<Vec<_>>()
            .join(", "),
        other => {
            let mut s = String::new();
            let _ = write!(s, "{other}");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_functions_match_spreadsheet_formulas() {
        // 200k over 30 years at 4% yearly, monthly payments: 954.83.
        let p = pmt(0.04 / 12.0, 360.0, 200_000.0, None).unwrap();
        assert_eq!(format!("{:.2}", f64::try_from(p).unwrap()), "954.83");
        let f = fv(0.05 / 12.0, 120.0, 100.0, None).unwrap();
        assert_eq!(format!("{:.2}", f64::try_from(f).unwrap()), "15528.23");
    }

    #[test]
    fn number_formatting_groups_thousands() {
        let v = format_number(1234567.891, Some(2), None, None).unwrap();
        assert_eq!(v.as_str(), Some("1,234,567.89"));
        let v = format_number(-1000.0, None, Some(".".into()), Some(",".into())).unwrap();
        assert_eq!(v.as_str(), Some("-1.000"));
    }

    #[test]
    fn markdown_escaping_neutralises_links_and_emphasis() {
        assert_eq!(escape_markdown("**a** [x](y)"), "\\*\\*a\\*\\* \\[x\\](y)");
        assert_eq!(escape_markdown("Acme Inc. - best"), "Acme Inc. - best");
        assert_eq!(
            escape_markdown("- item\n1. one\n- two"),
            "- item\n1\\. one\n\\- two"
        );
        assert_eq!(escape_markdown("3.45"), "3.45");
        // Interpolated mid-line (the usual case), markup and entities stay literal.
        assert_eq!(
            crate::markdown::to_plain(&format!("x {}", escape_markdown("<b>&amp; *y* [z](w)"))),
            "x <b>&amp; *y* [z](w)"
        );
    }
}
