//! The event file as authors write it: serde structs mirroring the YAML, with spans.
//!
//! This is the *source* form, read by volley-flow's spanned YAML deserializer. It is
//! checked and lowered into [`crate::Event`] by `check.rs`; nothing here knows how an
//! event is scheduled. Unknown keys are errors everywhere (`deny_unknown_fields`).

use serde::Deserialize;
use volley_flow::CalendarDoc;
use volley_flow::yaml::Spanned;

pub(crate) type Sp<T> = Spanned<T>;

/// One event file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventDoc {
    pub volley: Sp<u32>,
    pub event: Sp<String>,
    pub title: Sp<String>,
    #[serde(default)]
    pub description: Option<Sp<String>>,
    #[serde(default)]
    pub label: Option<Sp<String>>,
    #[serde(default)]
    pub replay_label: Option<Sp<String>>,
    pub media: Sp<MediaDoc>,
    pub timezone: Sp<String>,
    pub schedule: Sp<ScheduleDoc>,
    #[serde(default)]
    pub hours: Option<Sp<CalendarDoc>>,
    #[serde(default)]
    pub blackout: Option<Sp<Vec<Sp<String>>>>,
    #[serde(default)]
    pub replay: Option<Sp<ReplayDoc>>,
    #[serde(default)]
    pub registration: Option<Sp<RegistrationDoc>>,
    #[serde(default)]
    pub reminders: Option<Sp<Vec<Sp<String>>>>,
    #[serde(default)]
    pub timeline: Option<Sp<Vec<Sp<CueDoc>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MediaDoc {
    #[serde(default)]
    pub file: Option<Sp<String>>,
    #[serde(default)]
    pub url: Option<Sp<String>>,
    pub duration: Sp<String>,
    #[serde(default)]
    pub chapters: Option<Sp<Vec<Sp<ChapterDoc>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChapterDoc {
    pub at: Sp<String>,
    pub title: Sp<String>,
}

/// Exactly one of the keys must be given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleDoc {
    #[serde(default)]
    pub once: Option<Sp<String>>,
    #[serde(default)]
    pub recurring: Option<Sp<RecurringDoc>>,
    #[serde(default)]
    pub just_in_time: Option<Sp<JustInTimeDoc>>,
    #[serde(default)]
    pub local: Option<Sp<LocalDoc>>,
    #[serde(default)]
    pub on_demand: Option<Sp<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecurringDoc {
    pub cron: Sp<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JustInTimeDoc {
    pub every: Sp<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalDoc {
    pub at: Sp<String>,
    #[serde(default)]
    pub days: Option<Sp<DaysDoc>>,
}

/// `days: weekdays` or `days: [tue, thu]` (untagged: serde buffers the value, so the
/// items carry no spans of their own; problems point at the whole `days`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum DaysDoc {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayDoc {
    pub window: Sp<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistrationDoc {
    #[serde(default)]
    pub fields: Option<Sp<Vec<Sp<String>>>>,
    #[serde(default)]
    pub flow: Option<Sp<String>>,
}

/// A timeline cue: `at` and one kind key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CueDoc {
    pub at: Sp<String>,
    #[serde(default)]
    pub say: Option<Sp<String>>,
    #[serde(default)]
    pub poll: Option<Sp<PollDoc>>,
    #[serde(default)]
    pub offer: Option<Sp<OfferDoc>>,
    #[serde(default)]
    pub qa: Option<Sp<QaDoc>>,
    #[serde(default)]
    pub flow: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollDoc {
    pub id: Sp<String>,
    pub question: Sp<String>,
    pub options: Sp<Vec<Sp<String>>>,
    #[serde(default)]
    pub multiple: Option<Sp<bool>>,
    #[serde(default)]
    pub close_at: Option<Sp<String>>,
    #[serde(default)]
    pub results_at: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OfferDoc {
    pub id: Sp<String>,
    pub text: Sp<String>,
    pub url: Sp<String>,
    #[serde(default)]
    pub until: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QaDoc {
    #[serde(default)]
    pub until: Option<Sp<String>>,
}
