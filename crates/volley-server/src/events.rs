//! Published events (premieres): the checked event files this server shows, where each
//! one's video comes from, the public listing and the media route.
//!
//! It exists because an event is more than its checked `volley_events::Event`: it has
//! a stored version (like a flow) and a video that lives next to its file on disk, or
//! in the binary for the demo. Schedules, phases and the timeline stay in
//! volley-events; this module only asks it, with the server's clock.
//!
//! Media is served with single HTTP byte ranges (what browsers' `<video>` asks for) by
//! one implementation for both sources, so files on disk and the embedded demo video
//! answer alike (`ETag`, `If-None-Match`, `If-Range`, `206`, `416`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use volley_events::{CueKind, Event, MediaSource, Occurrence, Schedule};
use volley_flow::Diagnostic;
use volley_store::Store;

use crate::App;
use crate::error::{ApiError, ErrorBody};

/// The demo event built into the binary (the repository's example) and its video.
pub const DEMO_EVENT: (&str, &str) = (
    "product-launch.yaml",
    include_str!("../../../examples/events/product-launch.yaml"),
);
const DEMO_MEDIA: (&str, &[u8]) = (
    "media/launch.mp4",
    include_bytes!("../../../examples/events/media/launch.mp4"),
);

/// How many showings `GET /api/events/{id}` lists.
const DETAIL_OCCURRENCES: usize = 10;
/// Bytes read from disk per chunk of a media response.
const CHUNK: usize = 64 * 1024;

/// Where an event's video is.
#[derive(Debug)]
enum Media {
    /// The demo video, in the binary; its ETag is a hash of the bytes.
    Embedded { bytes: &'static [u8], etag: String },
    /// A file next to the event file (checked at publishing: inside its directory).
    File(PathBuf),
    /// An external URL: not served by Volley.
    External(String),
}

/// One published version of an event.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub version: i64,
    media: Media,
}

/// The events this server shows: those published at this start (the demo event and
/// the event files of `--flows DIR`), latest version by id. The store keeps every
/// version; a video is only known while its file is.
#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<String, Arc<Published>>>,
}

/// Where the media files of the events being published are.
pub enum MediaRoot<'a> {
    /// The event file's directory.
    Dir(&'a Path),
    /// The demo event: its video is embedded.
    Demo,
    /// Published through the API without a `--flows` directory: only external media.
    Nowhere,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<Arc<Published>> {
        self.entries.read().expect("events lock").get(id).cloned()
    }

    /// Latest versions of all events, by id.
    pub fn all(&self) -> Vec<Arc<Published>> {
        let map = self.entries.read().expect("events lock");
        map.values().cloned().collect()
    }

    /// Checks an event source and its media, stores a version and shows it. A bad file
    /// is refused with the same diagnostics as `volley check`, rendered and as JSON.
    /// The flows it names (registration flow, `flow` cues) must be published in `flows`.
    /// Returns the version shown and whether it is new.
    pub async fn publish(
        &self,
        store: &dyn Store,
        flows: &crate::flows::Registry,
        file: &str,
        src: &str,
        root: MediaRoot<'_>,
        now_ms: i64,
    ) -> Result<(Arc<Published>, bool), ApiError> {
        let checked = volley_events::compile(src);
        let refuse = |diagnostics: &[Diagnostic]| {
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            let rendered: String = diagnostics
                .iter()
                .map(|d| d.render(file, src, false))
                .collect();
            let json = serde_json::json!({"diagnostics": diagnostics, "rendered": rendered});
            ApiError::unprocessable(
                "invalid-event",
                format!("{file} has {errors} error(s); see `details`"),
            )
            .with_details(json)
        };
        let Some(event) = checked.event else {
            return Err(refuse(&checked.diagnostics));
        };
        let named = event
            .registration
            .flow
            .iter()
            .chain(event.timeline.iter().filter_map(|c| match &c.kind {
                CueKind::Flow(f) => Some(f),
                _ => None,
            }));
        let unknown: Vec<Diagnostic> = named
            .filter(|f| flows.latest(f).is_none())
            .map(|f| {
                let mut d = Diagnostic::error("unknown-flow", format!("no published flow `{f}`"));
                d.help("publish the flow first (put its file in the same directory, or POST /api/flows)");
                located(d, src, f)
            })
            .collect();
        if !unknown.is_empty() {
            return Err(refuse(&unknown));
        }
        let media = match (&event.media.source, root) {
            (MediaSource::Url(url), _) => Media::External(url.clone()),
            (MediaSource::File(name), MediaRoot::Dir(dir)) => {
                local_file(dir, name).map_err(|d| refuse(&[located(*d, src, name)]))?
            }
            (MediaSource::File(name), MediaRoot::Demo) if name == DEMO_MEDIA.0 => Media::Embedded {
                bytes: DEMO_MEDIA.1,
                etag: format!("\"{}\"", &hex::encode(Sha256::digest(DEMO_MEDIA.1))[..32]),
            },
            (MediaSource::File(name), MediaRoot::Nowhere) => {
                let mut d = Diagnostic::error(
                    "missing-media",
                    format!(
                        "`{name}`: this server has no flows directory to serve media files from"
                    ),
                );
                d.help("give `media.url`, or start the server with `--flows DIR` and put the video there");
                return Err(refuse(&[located(d, src, name)]));
            }
            (MediaSource::File(name), MediaRoot::Demo) => {
                let d = Diagnostic::error(
                    "missing-media",
                    format!("the demo has no media file `{name}`"),
                );
                return Err(refuse(&[located(d, src, name)]));
            }
        };
        let hash = volley_flow::content_hash(src);
        let (row, created) = store.publish_event(&event.id, &hash, src, now_ms).await?;
        let published = Arc::new(Published {
            event,
            version: row.version,
            media,
        });
        self.entries
            .write()
            .expect("events lock")
            .insert(row.event_id, published.clone());
        Ok((published, created))
    }

    /// Publishes event files (path, source), each with the media next to it.
    pub async fn publish_files(
        &self,
        store: &dyn Store,
        flows: &crate::flows::Registry,
        files: &[(PathBuf, String)],
        now_ms: i64,
    ) -> Result<(), ApiError> {
        for (path, src) in files {
            let dir = path.parent().unwrap_or(Path::new("."));
            let name = path.display().to_string();
            self.publish(store, flows, &name, src, MediaRoot::Dir(dir), now_ms)
                .await?;
        }
        Ok(())
    }
}

/// A diagnostic about the media file name, pointed at where the name is written.
fn located(d: Diagnostic, src: &str, name: &str) -> Diagnostic {
    let span = src.find(name).map(|at| at..at + name.len());
    let mut d = d.at(span);
    d.locate(src);
    d
}

/// The media file `name` of an event in `dir`: a relative path of plain components
/// (the checker refuses others; this is the second lock), to an existing regular file
/// that stays inside `dir` once links are resolved.
fn local_file(dir: &Path, name: &str) -> Result<Media, Box<Diagnostic>> {
    let plain = Path::new(name)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || name.contains('\\') {
        let mut d = Diagnostic::error(
            "invalid-media",
            format!("`{name}` is not a media file name"),
        );
        d.help("a path relative to the event file's directory, without `..`");
        return Err(Box::new(d));
    }
    let missing = |why: String| {
        let mut d = Diagnostic::error("missing-media", why);
        d.help("put the video next to the event file, or give `media.url`");
        Box::new(d)
    };
    let base = dir
        .canonicalize()
        .map_err(|e| missing(format!("cannot read {}: {e}", dir.display())))?;
    let path = base
        .join(name)
        .canonicalize()
        .map_err(|e| missing(format!("media file `{name}`: {e}")))?;
    if !path.starts_with(&base) {
        let mut d = Diagnostic::error(
            "invalid-media",
            format!("`{name}` leads outside the event file's directory"),
        );
        d.help("a link may not point outside the directory");
        return Err(Box::new(d));
    }
    if !path.is_file() {
        return Err(missing(format!("media `{name}` is not a file")));
    }
    Ok(Media::File(path))
}

/// The media type of a video file, by extension.
fn content_type(name: &str) -> &'static str {
    match Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("mp4" | "m4v") => "video/mp4",
        Some("webm") => "video/webm",
        _ => "application/octet-stream",
    }
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, PartialEq)]
enum Wanted {
    /// No range, a malformed one or several (ignored, as RFC 9110 allows): all of it.
    Full,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// A range that starts past the end (or an empty suffix): 416.
    Unsatisfiable,
}

fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Full;
    };
    if spec.contains(',') {
        return Wanted::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Full;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first, number(first), number(last)) {
        // `bytes=-N`: the last N bytes.
        ("", _, Some(n)) => {
            if n == 0 || len == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(len.saturating_sub(n), len - 1)
            }
        }
        (_, Some(a), None) if last.is_empty() => {
            if a >= len {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(a, len - 1)
            }
        }
        (_, Some(a), Some(b)) if a <= b => {
            if a >= len {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(a, b.min(len - 1))
            }
        }
        _ => Wanted::Full,
    }
}

/// `GET /events/{id}/media` (and HEAD): the event's video, with single byte ranges.
#[utoipa::path(
    get,
    path = "/events/{id}/media",
    tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The whole video (`Accept-Ranges: bytes`)"),
        (status = 206, description = "One byte range (`Content-Range`)"),
        (status = 304, description = "Unchanged (`If-None-Match`)"),
        (status = 404, body = ErrorBody, description = "No such event, or its media is an external URL"),
        (status = 416, body = ErrorBody, description = "The range starts past the end"),
    )
)]
pub async fn media(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let published = app.events.get(&id).ok_or_else(|| unknown(&id))?;
    let name = match &published.event.media.source {
        MediaSource::File(name) => name.as_str(),
        MediaSource::Url(_) => "",
    };
    let (len, etag, source) = match &published.media {
        Media::External(url) => {
            return Err(ApiError::not_found(
                "external-media",
                format!("the media of event `{id}` is external; play it from {url}"),
            ));
        }
        Media::Embedded { bytes, etag } => (bytes.len() as u64, etag.clone(), None),
        Media::File(path) => {
            let gone = |e: std::io::Error| {
                tracing::warn!(event = %id, path = %path.display(), %e, "media file unreadable");
                ApiError::not_found(
                    "missing-media",
                    format!("the media of event `{id}` is not available"),
                )
            };
            let file = tokio::fs::File::open(path).await.map_err(gone)?;
            let meta = file.metadata().await.map_err(gone)?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis());
            let etag = format!("\"{:x}-{modified:x}\"", meta.len());
            (meta.len(), etag, Some(file))
        }
    };
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .header(header::CONTENT_TYPE, content_type(name));
    if let Some(tags) = header_str(header::IF_NONE_MATCH)
        && (tags.trim() == "*"
            || tags
                .split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag))
    {
        return Ok(build(
            response.status(StatusCode::NOT_MODIFIED),
            Body::empty(),
        ));
    }
    // A range applies only to the representation the client has (`If-Range`).
    let same = header_str(header::IF_RANGE).is_none_or(|t| t.trim() == etag);
    let range = if same {
        wanted(header_str(header::RANGE), len)
    } else {
        Wanted::Full
    };
    let (first, last) = match range {
        Wanted::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the media is {len} bytes long"),
            )
            .into_response();
            let value = HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii");
            r.headers_mut().insert(header::CONTENT_RANGE, value);
            return Ok(r);
        }
        Wanted::Part(first, last) => {
            response = response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
            (first, last)
        }
        Wanted::Full if len == 0 => {
            return Ok(build(
                response.header(header::CONTENT_LENGTH, 0),
                Body::empty(),
            ));
        }
        Wanted::Full => (0, len - 1),
    };
    let count = last - first + 1;
    response = response.header(header::CONTENT_LENGTH, count);
    if method == Method::HEAD {
        return Ok(build(response, Body::empty()));
    }
    let body = match (&published.media, source) {
        (Media::Embedded { bytes, .. }, _) => {
            Body::from(Bytes::from_static(&bytes[first as usize..=last as usize]))
        }
        (_, Some(mut file)) => {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(first))
                .await
                .map_err(|e| ApiError::internal("media seek", e))?;
            Body::from_stream(read_chunks(file, count))
        }
        _ => unreachable!("external media answered above"),
    };
    Ok(build(response, body))
}

fn build(builder: axum::http::response::Builder, body: Body) -> Response {
    builder.body(body).expect("valid headers")
}

/// `count` bytes of `file` from its position, in chunks.
fn read_chunks(
    file: tokio::fs::File,
    count: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        use tokio::io::AsyncReadExt;
        if left == 0 {
            return None;
        }
        let mut buf = vec![0; CHUNK.min(left as usize)];
        match file.read(&mut buf).await {
            Ok(0) => Some((Err(std::io::ErrorKind::UnexpectedEof.into()), (file, 0))),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

/// What publishing an event answers.
#[derive(Serialize, ToSchema)]
pub struct PublishedEvent {
    pub id: String,
    pub version: i64,
    /// False when the same source was the latest version already.
    pub created: bool,
}

/// Publishes an event file (YAML). Media files are looked up in the server's `--flows`
/// directory; without one, only `media.url` is accepted. A bad file is refused with the
/// same diagnostics as `volley check`.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "events",
    request_body(content = String, content_type = "application/yaml", description = "The event file"),
    responses(
        (status = 201, description = "A new version", body = PublishedEvent),
        (status = 200, description = "Unchanged: the latest version", body = PublishedEvent),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "The event has errors (`details.diagnostics`, `details.rendered`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn publish_event(
    State(app): State<Arc<App>>,
    _: crate::auth::Scoped<crate::auth::scope::FlowsWrite>,
    body: String,
) -> Result<(StatusCode, Json<PublishedEvent>), ApiError> {
    let root = match &app.config.flows {
        Some(dir) => MediaRoot::Dir(dir),
        None => MediaRoot::Nowhere,
    };
    let (p, created) = app
        .events
        .publish(
            app.store.as_ref(),
            &app.flows,
            "event.yaml",
            &body,
            root,
            app.clock.now_ms(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PublishedEvent {
            id: p.event.id.clone(),
            version: p.version,
            created,
        }),
    ))
}

/// Where the page plays an event's video from.
pub fn media_url(p: &Published) -> String {
    match &p.event.media.source {
        MediaSource::File(_) => format!("/events/{}/media", p.event.id),
        MediaSource::Url(url) => url.clone(),
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found("unknown-event", format!("no event `{id}`"))
}

/// A showing, as the listing gives it (instants in RFC 3339, UTC).
#[derive(Serialize, ToSchema)]
pub struct OccurrenceView {
    /// `{event}@{start}`; shared by everyone starting at that instant.
    pub id: String,
    pub starts_at: String,
    pub ends_at: String,
    /// The end of the replay window (`ends_at` without one).
    pub replay_until: String,
    /// Starts when the viewer arrives, for them alone (a replay).
    pub on_demand: bool,
    /// Slots in each viewer's own zone (`local` schedules): computed in `tz`, or the
    /// event's zone without it.
    pub per_viewer: bool,
}

impl From<Occurrence> for OccurrenceView {
    fn from(o: Occurrence) -> Self {
        OccurrenceView {
            id: o.id,
            starts_at: o.starts_at.to_string(),
            ends_at: o.ends_at.to_string(),
            replay_until: o.replay_until.to_string(),
            on_demand: o.on_demand,
            per_viewer: o.per_viewer,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MediaView {
    /// `file` (served by Volley at `url`) or `url` (external).
    pub kind: &'static str,
    /// `/events/{id}/media`, or the external URL.
    pub url: String,
    pub duration_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct EventSummary {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    /// Shown while a showing is upcoming or live (never empty).
    pub label: String,
    /// Shown during replays and on-demand showings.
    pub replay_label: String,
    pub version: i64,
    pub timezone: String,
    /// `once`, `recurring`, `just_in_time`, `local` or `on_demand`.
    pub schedule: &'static str,
    pub media: MediaView,
    /// The next showing starting at or after now (none within two years: `null`).
    pub next: Option<OccurrenceView>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct ChapterView {
    pub at_ms: i64,
    pub title: String,
}

/// A timeline cue without its content (that is shown to viewers when it happens).
#[derive(Serialize, ToSchema)]
pub struct CueView {
    /// `say`, `poll`, `offer`, `qa` or `flow`.
    pub kind: &'static str,
    pub at_ms: i64,
    /// The end of its window: a poll's close, an offer's or a Q&A's `until`.
    pub until_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    /// The showing live now, if any, then the next showings (at most 10 in all; one
    /// for on-demand events).
    pub occurrences: Vec<OccurrenceView>,
    pub chapters: Vec<ChapterView>,
    pub timeline: Vec<CueView>,
}

#[derive(Deserialize, IntoParams)]
pub struct Viewer {
    /// The viewer's IANA time zone, for `local` schedules (`America/New_York`).
    pub tz: Option<String>,
}

impl Viewer {
    fn zone(&self) -> Result<Option<jiff::tz::TimeZone>, ApiError> {
        self.tz
            .as_deref()
            .map(|name| {
                volley_flow::zone(name).ok_or_else(|| {
                    ApiError::bad_request("unknown-timezone", format!("unknown time zone `{name}`"))
                })
            })
            .transpose()
    }
}

fn ms(d: SignedDuration) -> i64 {
    d.as_millis() as i64
}

fn summary(p: &Published, now: Timestamp, zone: Option<&jiff::tz::TimeZone>) -> EventSummary {
    let e = &p.event;
    let media = match &e.media.source {
        MediaSource::File(_) => MediaView {
            kind: "file",
            url: format!("/events/{}/media", e.id),
            duration_ms: ms(e.media.duration),
        },
        MediaSource::Url(url) => MediaView {
            kind: "url",
            url: url.clone(),
            duration_ms: ms(e.media.duration),
        },
    };
    EventSummary {
        id: e.id.clone(),
        title: e.title.clone(),
        description: e.description.clone(),
        label: e.label.clone(),
        replay_label: e.replay_label.clone(),
        version: p.version,
        timezone: e.timezone.clone(),
        schedule: match e.schedule {
            Schedule::Once(_) => "once",
            Schedule::Recurring(_) => "recurring",
            Schedule::JustInTime { .. } => "just_in_time",
            Schedule::Local { .. } => "local",
            Schedule::OnDemand => "on_demand",
        },
        media,
        next: volley_events::next_occurrence(e, now, zone).map(Into::into),
    }
}

/// Published events with their next showing (public).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(Viewer),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Query(viewer): Query<Viewer>,
) -> Result<Json<EventList>, ApiError> {
    let zone = viewer.zone()?;
    let now = app.clock.now();
    let events = app
        .events
        .all()
        .iter()
        .map(|p| summary(p, now, zone.as_ref()))
        .collect();
    Ok(Json(EventList { events }))
}

/// One event: its next showings, chapters and the shape of its timeline (public).
#[utoipa::path(
    get,
    path = "/api/events/{id}",
    tag = "events",
    params(("id" = String, Path, description = "Event id"), Viewer),
    responses((status = 200, body = EventDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn detail(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Query(viewer): Query<Viewer>,
) -> Result<Json<EventDetail>, ApiError> {
    let zone = viewer.zone()?;
    let p = app.events.get(&id).ok_or_else(|| unknown(&id))?;
    let e = &p.event;
    let now = app.clock.now();
    let mut occurrences: Vec<OccurrenceView> = Vec::new();
    let mut after = now;
    // A showing live now comes first (late joiners join it at the live position).
    if let Some(live) = volley_events::current_or_next(e, now, zone.as_ref())
        .filter(|o| o.starts_at <= now && !o.on_demand)
    {
        after = live.starts_at + SignedDuration::from_secs(1);
        occurrences.push(live.into());
    }
    while occurrences.len() < DETAIL_OCCURRENCES {
        let Some(o) = volley_events::next_occurrence(e, after, zone.as_ref()) else {
            break;
        };
        // Scheduled slots are at least a minute apart; an on-demand showing is one.
        after = o.starts_at + SignedDuration::from_secs(1);
        let on_demand = o.on_demand;
        occurrences.push(o.into());
        if on_demand {
            break;
        }
    }
    let timeline = e
        .timeline
        .iter()
        .map(|c| {
            let (kind, until) = match &c.kind {
                CueKind::Say(_) => ("say", None),
                CueKind::Poll(p) => ("poll", Some(p.close_at)),
                CueKind::Offer(o) => ("offer", Some(o.until)),
                CueKind::Qa { until } => ("qa", Some(*until)),
                CueKind::Flow(_) => ("flow", None),
            };
            CueView {
                kind,
                at_ms: ms(c.at),
                until_ms: until.map(ms),
            }
        })
        .collect();
    Ok(Json(EventDetail {
        summary: summary(&p, now, zone.as_ref()),
        occurrences,
        chapters: e
            .media
            .chapters
            .iter()
            .map(|c| ChapterView {
                at_ms: ms(c.at),
                title: c.title.clone(),
            })
            .collect(),
        timeline,
    }))
}

#[cfg(test)]
mod tests {
    use super::{Wanted, wanted};

    #[test]
    fn ranges() {
        let w = |r: &str| wanted(Some(r), 1000);
        assert_eq!(wanted(None, 1000), Wanted::Full);
        assert_eq!(w("bytes=0-99"), Wanted::Part(0, 99));
        assert_eq!(w("bytes=100-"), Wanted::Part(100, 999));
        assert_eq!(w("bytes=-100"), Wanted::Part(900, 999));
        assert_eq!(w("bytes=-5000"), Wanted::Part(0, 999));
        assert_eq!(w("bytes=990-5000"), Wanted::Part(990, 999));
        assert_eq!(w("bytes=999-999"), Wanted::Part(999, 999));
        assert_eq!(w("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=1000-2000"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(w(ignored), Wanted::Full, "{ignored}");
        }
        assert_eq!(wanted(Some("bytes=-1"), 0), Wanted::Unsatisfiable);
    }
}
