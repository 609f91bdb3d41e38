//! `compile`: event YAML → every problem as a diagnostic and, when clean, an [`Event`].
//!
//! One pass reads the file with volley-flow's spanned YAML parser and lowers it into
//! the checked [`Event`], reporting every problem it finds (not just the first) with a
//! span and a stable code, the same way `volley check` reports flow problems.

use std::collections::HashSet;
use std::ops::Range;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, SpanRelativeTo, Timestamp, Zoned};
use volley_flow::yaml::Spanned;
use volley_flow::{Calendar, Diagnostic, SchedulePart, did_you_mean, is_flow_id, time};

use crate::event::*;
use crate::model::*;

/// The only event format version this build understands.
pub const FORMAT_VERSION: u32 = 1;
/// Largest event file accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// Longest title and description, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// Longest label (`label`, `replay_label`), in characters.
pub const MAX_LABEL_CHARS: usize = 60;
/// Longest media: 24 hours.
pub const MAX_MEDIA_DURATION: SignedDuration = SignedDuration::from_hours(24);
/// Longest media file name or URL, in bytes.
pub const MAX_MEDIA_REF_BYTES: usize = 2_048;
/// Most chapters.
pub const MAX_CHAPTERS: usize = 100;
/// Shortest and longest `just_in_time` interval (it must also divide 24 hours).
pub const MIN_EVERY: SignedDuration = SignedDuration::from_mins(5);
pub const MAX_EVERY: SignedDuration = SignedDuration::from_hours(24);
/// Most `blackout` entries.
pub const MAX_BLACKOUT: usize = 500;
/// Longest replay window: 365 days.
pub const MAX_REPLAY_WINDOW: SignedDuration = SignedDuration::from_hours(365 * 24);
/// Most registration fields.
pub const MAX_FIELDS: usize = 20;
/// Most reminders, and the longest reminder offset (30 days).
pub const MAX_REMINDERS: usize = 10;
pub const MAX_REMINDER_OFFSET: SignedDuration = SignedDuration::from_hours(30 * 24);
/// Most timeline cues.
pub const MAX_CUES: usize = 500;
/// Longest host message (`say`), in characters.
pub const MAX_SAY_CHARS: usize = 4_000;
/// Longest poll question and offer text, in characters.
pub const MAX_QUESTION_CHARS: usize = 300;
/// Options per poll, and the longest option, in characters.
pub const MIN_POLL_OPTIONS: usize = 2;
pub const MAX_POLL_OPTIONS: usize = 10;
pub const MAX_OPTION_CHARS: usize = 100;

/// The result of checking an event file: diagnostics, and the event when there are no
/// errors.
#[derive(Debug)]
pub struct Checked {
    /// The event's id, when the file could be read that far.
    pub id: Option<String>,
    pub event: Option<Event>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// Checks an event file and, when it has no errors, returns the [`Event`].
pub fn compile(src: &str) -> Checked {
    let mut diags = Vec::new();
    let mut id = None;
    let event = if src.len() > MAX_SOURCE_BYTES {
        diags.push(Diagnostic::error(
            "too-large",
            format!(
                "event file is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                src.len()
            ),
        ));
        None
    } else {
        match volley_flow::yaml::from_str::<EventDoc>(src) {
            Ok(doc) => {
                id = Some(doc.event.value.clone());
                Lowerer { diags: &mut diags }.lower(doc)
            }
            Err(e) => {
                diags.push(volley_flow::yaml_error(e));
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
        event: if has_errors { None } else { event },
        diagnostics: diags,
    }
}

fn sp<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span.clone())
}

struct Lowerer<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Lowerer<'_> {
    fn err(
        &mut self,
        code: &'static str,
        msg: impl Into<String>,
        span: Option<Range<usize>>,
    ) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(code, msg).at(span));
        self.diags.last_mut().expect("just pushed")
    }

    fn lower(mut self, doc: EventDoc) -> Option<Event> {
        if doc.volley.value != FORMAT_VERSION {
            self.err(
                "format-version",
                format!(
                    "unsupported format version {}; this Volley reads version {FORMAT_VERSION}",
                    doc.volley.value
                ),
                sp(&doc.volley),
            );
        }
        if !is_flow_id(&doc.event.value) {
            self.err(
                "invalid-id",
                format!("event id `{}` is not valid", doc.event.value),
                sp(&doc.event),
            )
            .help("use lowercase letters, digits and `-`, up to 64 characters");
        }
        let title = self.text(&doc.title, "the title", MAX_TITLE_CHARS, "empty-title");
        let description = doc
            .description
            .as_ref()
            .map(|d| self.text(d, "the description", MAX_DESCRIPTION_CHARS, "empty-text"));
        let label = self.label(doc.label.as_ref(), DEFAULT_LABEL);
        let replay_label = self.label(doc.replay_label.as_ref(), DEFAULT_REPLAY_LABEL);
        let media = self.media(&doc.media);
        let zone = self.zone(&doc.timezone);
        let schedule = self.schedule(&doc.schedule, zone.as_ref());
        let hours = doc.hours.as_ref().and_then(|h| self.hours(h));
        let blackout = doc
            .blackout
            .as_ref()
            .map(|b| self.blackout(b))
            .unwrap_or_default();
        let replay_window = match &doc.replay {
            None => SignedDuration::ZERO,
            Some(r) => self
                .offset(&r.value.window, "replay window")
                .inspect(|w| {
                    if *w > MAX_REPLAY_WINDOW {
                        self.err(
                            "over-limit",
                            format!("replay window {}; the limit is 365d", r.value.window.value),
                            sp(&r.value.window),
                        );
                    }
                })
                .unwrap_or_default(),
        };
        let registration = doc
            .registration
            .as_ref()
            .map(|r| self.registration(&r.value))
            .unwrap_or_default();
        let on_demand = matches!(schedule, Some(Schedule::OnDemand));
        let reminders = doc
            .reminders
            .as_ref()
            .map(|r| self.reminders(r, on_demand))
            .unwrap_or_default();
        let duration = media.as_ref().map(|m| m.duration);
        let timeline = doc
            .timeline
            .as_ref()
            .map(|t| self.timeline(t, duration))
            .unwrap_or_default();

        // A single showing that can never happen is an error, not a silent no-op.
        if let (Some(Schedule::Once(at)), Some(zone), Some(media), Some(once)) =
            (&schedule, &zone, &media, &doc.schedule.value.once)
            && let Ok(end) = at.checked_add(media.duration)
        {
            let blacked_out = crate::schedule::in_blackout(&blackout, *at, zone);
            let closed = hours
                .as_ref()
                .is_some_and(|h| !h.is_open_throughout(*at, end));
            if blacked_out || closed {
                self.err(
                    "no-occurrence",
                    if blacked_out {
                        "this showing falls on a blackout date, so the event never happens"
                    } else {
                        "this showing is not inside the hours of operation, so the event never happens"
                    },
                    sp(once),
                )
                .help("move the showing, or change `hours` / `blackout`");
            }
        }

        Some(Event {
            id: doc.event.value,
            title,
            description,
            label,
            replay_label,
            media: media?,
            timezone: doc.timezone.value,
            zone: zone?,
            schedule: schedule?,
            hours,
            blackout,
            replay_window,
            registration,
            reminders,
            timeline,
        })
    }

    /// Non-empty text within a length limit.
    fn text(&mut self, t: &Sp<String>, what: &str, max: usize, empty: &'static str) -> String {
        let n = t.value.chars().count();
        if t.value.trim().is_empty() {
            self.err(empty, format!("{what} is empty"), sp(t));
        } else if n > max {
            self.err(
                "over-limit",
                format!("{what} is {n} characters; the limit is {max}"),
                sp(t),
            );
        }
        t.value.clone()
    }

    fn label(&mut self, l: Option<&Sp<String>>, default: &str) -> String {
        match l {
            None => default.to_string(),
            Some(l) if l.value.trim().is_empty() => {
                self.err("hidden-label", "the label cannot be empty", sp(l))
                    .help(format!(
                        "reword it (e.g. \"{default}\"), but it must stay visible"
                    ));
                default.to_string()
            }
            Some(l) => self.text(l, "the label", MAX_LABEL_CHARS, "hidden-label"),
        }
    }

    /// An offset or length: `0`, `90s`, `5m`, `1h30m`, `2d` (days count 24 hours).
    fn offset(&mut self, s: &Sp<String>, what: &str) -> Option<SignedDuration> {
        match parse_offset(&s.value) {
            Ok(d) => Some(d),
            Err(m) => {
                self.err("invalid-duration", format!("{what}: {m}"), sp(s))
                    .help("e.g. `90s`, `5m`, `1h30m`, `2d`");
                None
            }
        }
    }

    /// An offset of the timeline: inside the media (`0 <= at <= end`, or `< end`).
    fn timeline_offset(
        &mut self,
        s: &Sp<String>,
        what: &str,
        duration: Option<SignedDuration>,
        end_allowed: bool,
    ) -> Option<SignedDuration> {
        let at = self.offset(s, what)?;
        if let Some(d) = duration
            && (at > d || (at == d && !end_allowed))
        {
            self.err(
                "outside-media",
                format!(
                    "{what} {} is {} the end of the media ({})",
                    s.value.trim(),
                    if at == d { "at" } else { "after" },
                    fmt_duration(d)
                ),
                sp(s),
            );
            return None;
        }
        Some(at)
    }

    fn media(&mut self, m: &Sp<MediaDoc>) -> Option<Media> {
        let doc = &m.value;
        let source = match (&doc.file, &doc.url) {
            (Some(f), None) => {
                let bad = f.value.is_empty()
                    || f.value.len() > MAX_MEDIA_REF_BYTES
                    || f.value.starts_with('/')
                    || f.value.contains('\\')
                    || f.value
                        .split('/')
                        .any(|p| p.is_empty() || p == "." || p == "..")
                    || f.value.chars().any(char::is_control);
                if bad {
                    self.err(
                        "invalid-media",
                        format!("`{}` is not a media file name", f.value),
                        sp(f),
                    )
                    .help("a path relative to the event file's directory, e.g. `media/launch.mp4`");
                }
                Some(MediaSource::File(f.value.clone()))
            }
            (None, Some(u)) => {
                if !is_web_url(&u.value) {
                    self.err(
                        "invalid-url",
                        format!("`{}` is not an http(s) URL", u.value),
                        sp(u),
                    );
                }
                Some(MediaSource::Url(u.value.clone()))
            }
            (Some(_), Some(u)) => {
                self.err("invalid-media", "give `file` or `url`, not both", sp(u));
                None
            }
            (None, None) => {
                self.err(
                    "invalid-media",
                    "the media needs a `file` or a `url`",
                    sp(m),
                )
                .help("e.g. `media: { file: launch.mp4, duration: 42m30s }`");
                None
            }
        };
        let duration = self.offset(&doc.duration, "media duration");
        if let Some(d) = duration {
            if d.is_zero() {
                self.err(
                    "invalid-duration",
                    "the media duration must be positive",
                    sp(&doc.duration),
                );
            } else if d > MAX_MEDIA_DURATION {
                self.err(
                    "over-limit",
                    format!("media of {}; the limit is 24h", doc.duration.value),
                    sp(&doc.duration),
                );
            }
        }
        let mut chapters: Vec<Chapter> = Vec::new();
        if let Some(list) = &doc.chapters {
            if list.value.len() > MAX_CHAPTERS {
                self.err(
                    "over-limit",
                    format!("{} chapters; the limit is {MAX_CHAPTERS}", list.value.len()),
                    sp(list),
                );
            }
            for c in &list.value {
                let title = self.text(
                    &c.value.title,
                    "the chapter title",
                    MAX_TITLE_CHARS,
                    "empty-text",
                );
                let Some(at) = self.timeline_offset(&c.value.at, "chapter", duration, false) else {
                    continue;
                };
                if let Some(prev) = chapters.last()
                    && at <= prev.at
                {
                    self.err(
                        "invalid-chapters",
                        "chapters must be in increasing order of `at`",
                        sp(&c.value.at),
                    )
                    .help(format!(
                        "the previous chapter starts at {}",
                        fmt_duration(prev.at)
                    ));
                    continue;
                }
                chapters.push(Chapter { at, title });
            }
        }
        let duration = duration.filter(|d| d.is_positive() && *d <= MAX_MEDIA_DURATION)?;
        Some(Media {
            source: source?,
            duration,
            chapters,
        })
    }

    fn zone(&mut self, tz: &Sp<String>) -> Option<TimeZone> {
        let zone = time::zone(&tz.value);
        if zone.is_none() {
            self.err(
                "unknown-timezone",
                format!("unknown time zone `{}`", tz.value),
                sp(tz),
            )
            .help_opt(
                did_you_mean(&tz.value, time::zone_names())
                    .or_else(|| Some("use an IANA name such as `Europe/Berlin`".into())),
            );
        }
        zone
    }

    fn schedule(&mut self, s: &Sp<ScheduleDoc>, zone: Option<&TimeZone>) -> Option<Schedule> {
        let d = &s.value;
        let kinds: Vec<(&str, Range<usize>)> = [
            d.once.as_ref().map(|x| ("once", x.span.clone())),
            d.recurring.as_ref().map(|x| ("recurring", x.span.clone())),
            d.just_in_time
                .as_ref()
                .map(|x| ("just_in_time", x.span.clone())),
            d.local.as_ref().map(|x| ("local", x.span.clone())),
            d.on_demand.as_ref().map(|x| ("on_demand", x.span.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.as_slice() {
            [] => {
                self.err("invalid-schedule", "the schedule has no kind", sp(s))
                    .help("give one of `once`, `recurring`, `just_in_time`, `local`, `on_demand`");
                return None;
            }
            [_] => {}
            [(first, _), rest @ ..] => {
                for (kind, span) in rest {
                    self.err(
                        "invalid-schedule",
                        format!("a schedule has one kind; this one already is `{first}`, not also `{kind}`"),
                        Some(span.clone()),
                    );
                }
                return None;
            }
        }
        if let Some(once) = &d.once {
            let at = match zone {
                Some(z) => parse_once(&once.value, z),
                None => return None,
            };
            return match at {
                Ok(at) => Some(Schedule::Once(at)),
                Err(m) => {
                    self.err("invalid-schedule", m, sp(once)).help(
                        "a local time in `timezone` (`2026-12-10T19:00`) or with an offset (`2026-12-10T18:00Z`)",
                    );
                    None
                }
            };
        }
        if let Some(r) = &d.recurring {
            return self.cron(&r.value.cron).map(Schedule::Recurring);
        }
        if let Some(j) = &d.just_in_time {
            let every = self.offset(&j.value.every, "`every`")?;
            let day = SignedDuration::from_hours(24);
            let whole_minutes = every.as_nanos() % 60_000_000_000 == 0;
            if every < MIN_EVERY
                || every > MAX_EVERY
                || !whole_minutes
                || day.as_secs() % every.as_secs() != 0
            {
                self.err(
                    "invalid-schedule",
                    format!("just-in-time showings every {} do not fit the clock", j.value.every.value.trim()),
                    sp(&j.value.every),
                )
                .help("use whole minutes from 5m to 24h that divide a day: 5m, 10m, 15m, 20m, 30m, 1h, 2h, …");
                return None;
            }
            return Some(Schedule::JustInTime { every });
        }
        if let Some(l) = &d.local {
            let at = time::parse_time_of_day(&l.value.at.value);
            if at.is_none() {
                self.err(
                    "invalid-schedule",
                    format!(
                        "`{}` is not a time of day (use HH:MM, 24-hour)",
                        l.value.at.value
                    ),
                    sp(&l.value.at),
                );
            }
            let mut days = 0u8;
            let items: Vec<(&str, Option<Range<usize>>)> = match l.value.days.as_ref() {
                None => vec![("any", None)],
                Some(ds) => match &ds.value {
                    DaysDoc::One(one) => vec![(one.as_str(), sp(ds))],
                    DaysDoc::Many(list) => list.iter().map(|x| (x.as_str(), sp(ds))).collect(),
                },
            };
            if items.is_empty() {
                self.err(
                    "invalid-schedule",
                    "no days given",
                    l.value.days.as_ref().and_then(sp),
                );
            }
            for (text, span) in items {
                match time::parse_days(text) {
                    Some(bits) => days |= bits,
                    None => {
                        self.err("invalid-schedule", format!("`{text}` is not a day"), span)
                            .help("use `mon` … `sun`, `weekdays`, `weekends` or `any`");
                    }
                }
            }
            return at
                .filter(|_| days != 0)
                .map(|at| Schedule::Local { at, days });
        }
        let on = d.on_demand.as_ref()?;
        if !on.value {
            self.err(
                "invalid-schedule",
                "`on_demand: false` schedules nothing",
                sp(on),
            )
            .help("write `on_demand: true`, or use another kind of schedule");
            return None;
        }
        Some(Schedule::OnDemand)
    }

    fn cron(&mut self, c: &Sp<String>) -> Option<Recurring> {
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(c.value.trim());
        let cron = match parsed {
            Ok(cron) => cron,
            Err(e) => {
                self.err(
                    "invalid-cron",
                    format!("`{}` is not a cron expression: {e}", c.value.trim()),
                    sp(c),
                )
                .help(
                    "five fields: minute hour day-of-month month day-of-week, e.g. `0 19 * * 2,4`",
                );
                return None;
            }
        };
        // A pattern that matches no date in eight years (two leap cycles) never fires.
        let from = jiff::civil::date(2000, 1, 1).at(0, 0, 0, 0);
        let fires = cron
            .find_next_occurrence(&from, true)
            .is_ok_and(|next| next.year() < 2008);
        if !fires {
            self.err(
                "cron-never-fires",
                format!(
                    "`{}` matches no date, so the event never happens",
                    c.value.trim()
                ),
                sp(c),
            );
            return None;
        }
        Some(Recurring {
            expression: c.value.trim().to_string(),
            cron: Box::new(cron),
        })
    }

    fn hours(&mut self, h: &Sp<volley_flow::CalendarDoc>) -> Option<Calendar> {
        let doc = &h.value;
        let hours = &doc.hours.value.0;
        let built = Calendar::new(
            &doc.timezone.value,
            hours
                .iter()
                .map(|(d, t)| (d.value.as_str(), t.value.as_str())),
            doc.closed.iter().map(|c| c.value.as_str()),
        );
        match built {
            Ok(c) => Some(c),
            Err(errors) => {
                for e in errors {
                    let (code, span) = match e.part {
                        SchedulePart::Timezone => ("unknown-timezone", sp(&doc.timezone)),
                        SchedulePart::HoursDays(i) => ("invalid-hours", sp(&hours[i].0)),
                        SchedulePart::HoursTimes(i) => ("invalid-hours", sp(&hours[i].1)),
                        SchedulePart::Closed(i) => ("invalid-date", sp(&doc.closed[i])),
                        _ => ("invalid-hours", sp(&doc.hours)),
                    };
                    self.err(code, e.message, span).help_opt(e.help);
                }
                None
            }
        }
    }

    fn blackout(&mut self, b: &Sp<Vec<Sp<String>>>) -> Vec<(Date, Date)> {
        if b.value.len() > MAX_BLACKOUT {
            self.err(
                "over-limit",
                format!(
                    "{} blackout entries; the limit is {MAX_BLACKOUT}",
                    b.value.len()
                ),
                sp(b),
            );
        }
        let mut out = Vec::new();
        for item in &b.value {
            match parse_dates(&item.value) {
                Ok(r) => out.push(r),
                Err(m) => {
                    self.err("invalid-date", m, sp(item)).help(
                        "write a date `2026-12-31` or an inclusive range `2026-12-24..2026-12-26`",
                    );
                }
            }
        }
        merge_dates(out)
    }

    fn registration(&mut self, r: &RegistrationDoc) -> Registration {
        let mut fields = Vec::new();
        if let Some(list) = &r.fields {
            if list.value.len() > MAX_FIELDS {
                self.err(
                    "over-limit",
                    format!(
                        "{} registration fields; the limit is {MAX_FIELDS}",
                        list.value.len()
                    ),
                    sp(list),
                );
            }
            for f in &list.value {
                let name = f.value.trim();
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    self.err(
                        "invalid-field",
                        format!("`{name}` is not a field name"),
                        sp(f),
                    )
                    .help("lowercase letters, digits and `_`, e.g. `name`, `email`, `company`");
                } else if fields.iter().any(|x| x == name) {
                    self.err("duplicate-field", format!("`{name}` is asked twice"), sp(f));
                } else {
                    fields.push(name.to_string());
                }
            }
        }
        let flow = r.flow.as_ref().map(|f| {
            if !is_flow_id(&f.value) {
                self.err(
                    "invalid-id",
                    format!("flow id `{}` is not valid", f.value),
                    sp(f),
                );
            }
            f.value.clone()
        });
        Registration { fields, flow }
    }

    fn reminders(&mut self, r: &Sp<Vec<Sp<String>>>, on_demand: bool) -> Vec<ReminderOffset> {
        if on_demand && !r.value.is_empty() {
            self.err(
                "not-applicable",
                "an on-demand event starts when the viewer arrives: reminders never fire",
                sp(r),
            )
            .help("remove `reminders`, or schedule the event");
            return Vec::new();
        }
        if r.value.len() > MAX_REMINDERS {
            self.err(
                "over-limit",
                format!("{} reminders; the limit is {MAX_REMINDERS}", r.value.len()),
                sp(r),
            );
        }
        let mut out: Vec<ReminderOffset> = Vec::new();
        for item in &r.value {
            let Some(offset) = self.offset(item, "reminder") else {
                continue;
            };
            if !offset.is_positive() {
                self.err(
                    "invalid-duration",
                    "a reminder comes before the start: use a positive offset",
                    sp(item),
                );
            } else if offset > MAX_REMINDER_OFFSET {
                self.err(
                    "over-limit",
                    format!(
                        "reminder {} before the start; the limit is 30d",
                        item.value.trim()
                    ),
                    sp(item),
                );
            } else if let Some(same) = out.iter().find(|o| o.offset == offset) {
                self.err(
                    "duplicate-reminder",
                    format!(
                        "reminder {} is the same time as `{}`",
                        item.value.trim(),
                        same.label
                    ),
                    sp(item),
                );
            } else {
                out.push(ReminderOffset {
                    offset,
                    label: item.value.trim().to_string(),
                });
            }
        }
        out.sort_by_key(|o| std::cmp::Reverse(o.offset));
        out
    }

    fn timeline(&mut self, t: &Sp<Vec<Sp<CueDoc>>>, duration: Option<SignedDuration>) -> Vec<Cue> {
        if t.value.len() > MAX_CUES {
            self.err(
                "over-limit",
                format!("{} cues; the limit is {MAX_CUES}", t.value.len()),
                sp(t),
            );
        }
        let mut ids: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for c in &t.value {
            if let Some(cue) = self.cue(c, duration, &mut ids) {
                out.push(cue);
            }
        }
        // Stable: cues at the same offset keep the order written.
        out.sort_by_key(|c| c.at);
        out
    }

    fn cue(
        &mut self,
        c: &Sp<CueDoc>,
        duration: Option<SignedDuration>,
        ids: &mut HashSet<String>,
    ) -> Option<Cue> {
        let d = &c.value;
        let kinds: Vec<(&str, Range<usize>)> = [
            d.say.as_ref().map(|x| ("say", x.span.clone())),
            d.poll.as_ref().map(|x| ("poll", x.span.clone())),
            d.offer.as_ref().map(|x| ("offer", x.span.clone())),
            d.qa.as_ref().map(|x| ("qa", x.span.clone())),
            d.flow.as_ref().map(|x| ("flow", x.span.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.as_slice() {
            [] => {
                self.err("invalid-cue", "this cue does nothing", sp(c))
                    .help("give one of `say`, `poll`, `offer`, `qa`, `flow`");
                return None;
            }
            [_] => {}
            [(first, _), rest @ ..] => {
                for (kind, span) in rest {
                    self.err(
                        "invalid-cue",
                        format!(
                            "a cue does one thing; this one is already `{first}`, not also `{kind}`"
                        ),
                        Some(span.clone()),
                    )
                    .help("write a second cue at the same `at`");
                }
                return None;
            }
        }
        let at = self.timeline_offset(&d.at, "cue", duration, false);
        // The end of a window: after `at`, at most the end of the media.
        let window = |this: &mut Self, until: Option<&Sp<String>>, what: &str| {
            let Some(until) = until else {
                return duration;
            };
            let u = this.timeline_offset(until, what, duration, true)?;
            if let Some(at) = at
                && u <= at
            {
                this.err(
                    "invalid-window",
                    format!(
                        "{what} {} is not after the cue's `at` ({})",
                        until.value.trim(),
                        fmt_duration(at)
                    ),
                    sp(until),
                );
                return None;
            }
            Some(u)
        };
        let kind = if let Some(say) = &d.say {
            CueKind::Say(self.text(say, "the message", MAX_SAY_CHARS, "empty-text"))
        } else if let Some(p) = &d.poll {
            let p = &p.value;
            self.cue_id(&p.id, ids);
            let question = self.text(
                &p.question,
                "the question",
                MAX_QUESTION_CHARS,
                "empty-text",
            );
            let n = p.options.value.len();
            if !(MIN_POLL_OPTIONS..=MAX_POLL_OPTIONS).contains(&n) {
                self.err(
                    "invalid-poll",
                    format!("a poll has {MIN_POLL_OPTIONS} to {MAX_POLL_OPTIONS} options; this one has {n}"),
                    sp(&p.options),
                );
            }
            let mut options: Vec<String> = Vec::new();
            for o in &p.options.value {
                let text = self.text(o, "the option", MAX_OPTION_CHARS, "empty-text");
                let key = text.trim().to_lowercase();
                if options.iter().any(|x| x.trim().to_lowercase() == key) {
                    self.err(
                        "duplicate-option",
                        format!("option `{}` is listed twice", text.trim()),
                        sp(o),
                    );
                }
                options.push(text);
            }
            let close_at = window(self, p.close_at.as_ref(), "`close_at`");
            let results_at = match &p.results_at {
                None => close_at,
                Some(r) => {
                    let v = self.timeline_offset(r, "`results_at`", duration, true);
                    if let (Some(v), Some(at)) = (v, at)
                        && v < at
                    {
                        self.err(
                            "invalid-window",
                            format!(
                                "`results_at` {} is before the poll opens ({})",
                                r.value.trim(),
                                fmt_duration(at)
                            ),
                            sp(r),
                        );
                    }
                    v
                }
            };
            CueKind::Poll(Poll {
                id: p.id.value.clone(),
                question,
                options,
                multiple: p.multiple.as_ref().is_some_and(|m| m.value),
                close_at: close_at?,
                results_at: results_at?,
            })
        } else if let Some(o) = &d.offer {
            let o = &o.value;
            self.cue_id(&o.id, ids);
            let text = self.text(&o.text, "the offer text", MAX_QUESTION_CHARS, "empty-text");
            if !is_web_url(&o.url.value) {
                self.err(
                    "invalid-url",
                    format!("`{}` is not an http(s) URL", o.url.value),
                    sp(&o.url),
                );
            }
            let until = window(self, o.until.as_ref(), "`until`");
            CueKind::Offer(Offer {
                id: o.id.value.clone(),
                text,
                url: o.url.value.clone(),
                until: until?,
            })
        } else if let Some(q) = &d.qa {
            let until = window(self, q.value.until.as_ref(), "`until`");
            CueKind::Qa { until: until? }
        } else {
            let f = d.flow.as_ref().expect("one kind is present");
            if !is_flow_id(&f.value) {
                self.err(
                    "invalid-id",
                    format!("flow id `{}` is not valid", f.value),
                    sp(f),
                );
            }
            CueKind::Flow(f.value.clone())
        };
        Some(Cue {
            at: at?,
            kind,
            span: c.span.clone(),
        })
    }

    /// Poll and offer ids: valid, and unique across the timeline.
    fn cue_id(&mut self, id: &Sp<String>, ids: &mut HashSet<String>) {
        if !is_flow_id(&id.value) {
            self.err(
                "invalid-id",
                format!("cue id `{}` is not valid", id.value),
                sp(id),
            )
            .help("use lowercase letters, digits and `-`, up to 64 characters");
        } else if !ids.insert(id.value.clone()) {
            self.err(
                "duplicate-id",
                format!("cue id `{}` is used twice", id.value),
                sp(id),
            );
        }
    }
}

/// `0`, or a duration without months or years (days count 24 hours); not negative.
pub(crate) fn parse_offset(s: &str) -> Result<SignedDuration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(SignedDuration::ZERO);
    }
    let span = time::parse_span(t)?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!("`{t}`: months and years vary in length; use days"));
    }
    let d = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| e.to_string())?;
    if d.is_negative() {
        return Err(format!("`{t}` is negative"));
    }
    Ok(d)
}

/// `2026-12-10T19:00` (local in `zone`), `2026-12-10T18:00Z`, `…+01:00`, or with a
/// bracketed zone. Local times follow the DST rule (gaps forward, folds first).
fn parse_once(s: &str, zone: &TimeZone) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(z) = s.parse::<Zoned>() {
        return Ok(z.timestamp());
    }
    match s.parse::<DateTime>() {
        Ok(dt) => dt
            .to_zoned(zone.clone())
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string()),
        Err(_) => Err(format!("`{s}` is not a date and time")),
    }
}

/// `2026-12-24` or an inclusive range `2026-12-24..2026-12-26`.
fn parse_dates(s: &str) -> Result<(Date, Date), String> {
    let date = |d: &str| {
        let d = d.trim();
        d.parse::<Date>()
            .map_err(|_| format!("`{d}` is not a date (use YYYY-MM-DD)"))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (date(a)?, date(b)?);
            if b < a {
                return Err(format!("`{}` ends before it starts", s.trim()));
            }
            Ok((a, b))
        }
        None => date(s).map(|d| (d, d)),
    }
}

fn merge_dates(mut dates: Vec<(Date, Date)>) -> Vec<(Date, Date)> {
    dates.sort();
    let mut out: Vec<(Date, Date)> = Vec::with_capacity(dates.len());
    for (s, e) in dates {
        if let Some(last) = out.last_mut()
            && last.1.tomorrow().is_ok_and(|next| s <= next)
        {
            last.1 = last.1.max(e);
            continue;
        }
        out.push((s, e));
    }
    out
}

fn is_web_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !u.chars().any(|c| c.is_whitespace() || c.is_control())
    }) && u.len() <= MAX_MEDIA_REF_BYTES
}

/// `42m30s`, `1h`, `0s`, `25h`: a duration the way authors write it.
pub(crate) fn fmt_duration(d: SignedDuration) -> String {
    let mut secs = d.as_secs().unsigned_abs();
    let mut out = String::new();
    if d.is_negative() {
        out.push('-');
    }
    for (unit, n) in [("h", 3_600), ("m", 60)] {
        if secs >= n {
            out.push_str(&format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    if secs > 0 || out.is_empty() || out == "-" {
        out.push_str(&format!("{secs}s"));
    }
    out
}
