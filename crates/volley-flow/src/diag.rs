//! Author-facing diagnostics: what is wrong, exactly where (file:line:col), and how to fix it.
//!
//! Every problem `check` finds becomes a [`Diagnostic`] with a byte span into the flow
//! source. Rendering (a rustc-style snippet) goes through miette so the CLI and the
//! server's publish API print the same thing.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

use crate::model::Sp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `dangling-target`.
    pub code: &'static str,
    pub message: String,
    /// Byte range in the source; `None` when the problem concerns the whole file.
    #[serde(skip)]
    pub span: Option<Range<usize>>,
    /// 1-based line and column of the span start (0 when unknown).
    pub line: usize,
    pub column: usize,
    /// Short text shown under the snippet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A suggestion: "did you mean …", or how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            span: None,
            line: 0,
            column: 0,
            label: None,
            help: None,
        }
    }

    pub fn at(mut self, span: Option<Range<usize>>) -> Self {
        self.span = span;
        self
    }

    pub fn label(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(&mut self, help: Option<String>) -> &mut Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Fills `line`/`column` from the span.
    pub fn locate(&mut self, src: &str) {
        if let Some(span) = &self.span {
            let (line, column) = line_col(src, span.start);
            self.line = line;
            self.column = column;
        }
    }

    /// Renders the diagnostic like rustc: header, `--> file:line:col`, snippet, help.
    pub fn render(&self, file: &str, src: &str, color: bool) -> String {
        use miette::{GraphicalReportHandler, GraphicalTheme};
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_context_lines(1)
            .with_links(false);
        let report = Report {
            diag: self,
            source: miette::NamedSource::new(file, src.to_owned()),
        };
        let mut out = String::new();
        if self.line > 0 {
            out.push_str(&format!("{file}:{}:{}: ", self.line, self.column));
        } else {
            out.push_str(&format!("{file}: "));
        }
        out.push_str(match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        });
        out.push_str(&format!("[{}]: {}\n", self.code, self.message));
        let mut body = String::new();
        let _ = handler.render_report(&mut body, &report);
        // miette's first line repeats the header (empty here); keep the snippet and help.
        out.push_str(body.split_once('\n').map_or("", |(_, rest)| rest));
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = src[line_start..offset].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Something read from YAML with its byte span (possibly boxed).
pub(crate) trait HasSpan {
    fn span(&self) -> Range<usize>;
}

impl<T> HasSpan for Sp<T> {
    fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

impl<T: HasSpan> HasSpan for Box<T> {
    fn span(&self) -> Range<usize> {
        (**self).span()
    }
}

/// Byte span of a spanned YAML node.
pub(crate) fn span_of(sp: &impl HasSpan) -> Option<Range<usize>> {
    Some(sp.span())
}

/// "did you mean `x`?" for the closest candidate, if any is close enough.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    // Closest by edit distance (transpositions count once), ties broken by similarity.
    let limit = (wrong.chars().count() / 3).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in candidates {
        if c == wrong {
            continue;
        }
        let d = strsim::damerau_levenshtein(wrong, c);
        let sim = strsim::jaro_winkler(wrong, c);
        let close = d <= limit || (sim > 0.9 && d <= limit + 1);
        if close && best.is_none_or(|(bd, bs, _)| d < bd || (d == bd && sim > bs)) {
            best = Some((d, sim, c));
        }
    }
    best.map(|(_, _, c)| format!("did you mean `{c}`?"))
}

struct Report<'a> {
    diag: &'a Diagnostic,
    source: miette::NamedSource<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The header line (`file:line:col: error[code]: message`) is printed by `render`.
        Ok(())
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diag
            .span
            .as_ref()
            .map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = self.diag.span.clone()?;
        let len = span.end.saturating_sub(span.start);
        let label = miette::LabeledSpan::new(
            Some(self.diag.label.clone().unwrap_or_else(|| "here".into())),
            span.start,
            len,
        );
        Some(Box::new(std::iter::once(label)))
    }
}
