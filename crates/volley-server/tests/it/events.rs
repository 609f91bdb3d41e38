//! Published events: the demo event and event files of `--flows DIR`, their listing on
//! virtual time, their media with HTTP byte ranges, and files refused at start-up.

use std::path::Path;
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE,
    RANGE,
};
use serde_json::{Value, json};
use volley_server::ManualClock;

use crate::support::*;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let r = http().get(server.http(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A GET (or HEAD) of `path` with extra headers: status, headers, body.
async fn fetch(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http().request(method, server.http(path));
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn header(h: &reqwest::header::HeaderMap, name: reqwest::header::HeaderName) -> &str {
    h.get(&name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

/// An event file showing once, with `media` (YAML) and a 90-second video.
fn event_file(id: &str, media: &str) -> String {
    format!(
        "volley: 1\nevent: {id}\ntitle: Talk {id}\ntimezone: UTC\n\
         media: {{ {media}, duration: 90s }}\n\
         schedule: {{ once: 2026-12-10T19:00 }}\n\
         timeline:\n  - {{ at: 10s, say: Hello }}\n"
    )
}

#[tokio::test]
async fn the_demo_event_is_listed_with_its_next_showings_on_virtual_time() {
    // Tuesday 2026-12-08, 11:00 in Berlin: tonight's 19:00 showing is next.
    let clock = Arc::new(ManualClock::new("2026-12-08T10:00:00Z".parse().unwrap()));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.demo = true;
    let server = TestServer::start_on(dir.clone(), cfg, clock.clone()).await;

    let (status, list) = get_json(&server, "/api/events").await;
    assert_eq!(status, 200);
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{list}");
    let e = &events[0];
    assert_eq!(
        (&e["id"], &e["label"], &e["schedule"], &e["version"]),
        (
            &json!("product-launch"),
            &json!("Premiere · pre-recorded"),
            &json!("recurring"),
            &json!(1)
        )
    );
    assert_eq!(
        e["media"],
        json!({"kind": "file", "url": "/events/product-launch/media", "duration_ms": 90_000})
    );
    assert_eq!(
        e["next"],
        json!({
            "id": "product-launch@2026-12-08T18:00:00Z",
            "starts_at": "2026-12-08T18:00:00Z",
            "ends_at": "2026-12-08T18:01:30Z",
            "replay_until": "2026-12-15T18:01:30Z",
            "on_demand": false,
            "per_viewer": false,
        })
    );

    // Thirty seconds into tonight's showing, the next one is Thursday's; the detail
    // lists the live one and nine more, skipping the closed days (24th–26th) and the
    // blackout (31st).
    clock.set("2026-12-08T18:00:30Z".parse().unwrap());
    let (status, detail) = get_json(&server, "/api/events/product-launch").await;
    assert_eq!(status, 200);
    assert_eq!(detail["next"]["starts_at"], "2026-12-10T18:00:00Z");
    let starts: Vec<&str> = detail["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["starts_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-12-08T18:00:00Z",
            "2026-12-10T18:00:00Z",
            "2026-12-15T18:00:00Z",
            "2026-12-17T18:00:00Z",
            "2026-12-22T18:00:00Z",
            "2026-12-29T18:00:00Z",
            "2027-01-05T18:00:00Z",
            "2027-01-07T18:00:00Z",
            "2027-01-12T18:00:00Z",
            "2027-01-14T18:00:00Z",
        ]
    );
    assert_eq!(
        detail["timeline"],
        json!([
            {"kind": "say", "at_ms": 5_000, "until_ms": null},
            {"kind": "poll", "at_ms": 20_000, "until_ms": 30_000},
            {"kind": "offer", "at_ms": 32_000, "until_ms": 64_000},
            {"kind": "qa", "at_ms": 42_000, "until_ms": 75_000},
            {"kind": "flow", "at_ms": 53_000, "until_ms": null},
        ])
    );
    assert_eq!(
        detail["chapters"][1],
        json!({"at_ms": 10_000, "title": "Demo"})
    );
    // The timeline summary carries no content (poll questions, offer links).
    assert!(!detail.to_string().contains("Which feature"));

    // The embedded video is the shipped file, served with ranges and an ETag.
    let shipped = std::fs::read(repo("examples/events/media/launch.mp4")).unwrap();
    let media = "/events/product-launch/media";
    let (status, h, body) = fetch(
        &server,
        reqwest::Method::GET,
        media,
        &[(RANGE, "bytes=0-99")],
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(body, shipped[..100]);
    assert_eq!(
        header(&h, CONTENT_RANGE),
        format!("bytes 0-99/{}", shipped.len())
    );
    assert_eq!(header(&h, CONTENT_TYPE), "video/mp4");
    let etag = header(&h, ETAG).to_string();
    let (status, h, body) = fetch(&server, reqwest::Method::HEAD, media, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, CONTENT_LENGTH), shipped.len().to_string());
    assert!(body.is_empty());
    let (status, _, body) = fetch(&server, reqwest::Method::GET, media, &[]).await;
    assert_eq!((status, body == shipped), (StatusCode::OK, true));
    let (status, _, _) = fetch(
        &server,
        reqwest::Method::GET,
        media,
        &[(IF_NONE_MATCH, &etag)],
    )
    .await;
    assert_eq!(status, 304);

    // The source is stored as a version; the same source again is no new version.
    let store = server.running.app.store.clone();
    let versions = store.event_versions("product-launch").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].source, volley_server::DEMO_EVENT.1);
    let dir = server.stop().await;
    let mut cfg = config(dir.path());
    cfg.demo = true;
    let server = TestServer::start_on(dir.clone(), cfg, clock.clone()).await;
    let (_, list) = get_json(&server, "/api/events").await;
    assert_eq!(list["events"][0]["version"], 1);
    server.stop().await;
}

#[tokio::test]
async fn media_files_are_served_with_byte_ranges() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir(site.path().join("video")).unwrap();
    // Several read chunks long, every byte telling its position apart.
    let video: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let len = video.len();
    std::fs::write(site.path().join("video/clip.mp4"), &video).unwrap();
    std::fs::write(
        site.path().join("talk.yaml"),
        event_file("talk", "file: video/clip.mp4"),
    )
    .unwrap();
    std::fs::write(
        site.path().join("stream.yaml"),
        event_file("stream", "url: \"https://cdn.example/stream.webm\""),
    )
    .unwrap();
    // Flows and events share the directory.
    std::fs::copy(
        repo("examples/product-quiz.yaml"),
        site.path().join("quiz.yaml"),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new("2026-12-01T00:00:00Z".parse().unwrap()));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.flows = Some(site.path().to_path_buf());
    let server = TestServer::start_on(dir.clone(), cfg, clock).await;

    let (_, flows) = get_json(&server, "/api/flows").await;
    assert!(flows.to_string().contains("product-quiz"), "{flows}");
    let (_, list) = get_json(&server, "/api/events").await;
    let ids: Vec<&str> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["stream", "talk"]);
    assert_eq!(
        list["events"][0]["media"],
        json!({"kind": "url", "url": "https://cdn.example/stream.webm", "duration_ms": 90_000})
    );
    assert_eq!(list["events"][1]["next"]["id"], "talk@2026-12-10T19:00:00Z");

    let path = "/events/talk/media";
    let get = reqwest::Method::GET;
    let (status, h, body) = fetch(&server, get.clone(), path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, video);
    assert_eq!(header(&h, ACCEPT_RANGES), "bytes");
    assert_eq!(header(&h, CONTENT_TYPE), "video/mp4");
    assert_eq!(header(&h, CONTENT_LENGTH), len.to_string());
    let etag = header(&h, ETAG).to_string();

    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=-100", len - 100, len - 1),
        ("bytes=100-", 100, len - 1),
        ("bytes=70000-70009", 70_000, 70_009),
        ("bytes=199990-999999", len - 10, len - 1),
    ] {
        let (status, h, body) = fetch(&server, get.clone(), path, &[(RANGE, range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            header(&h, CONTENT_RANGE),
            format!("bytes {first}-{last}/{len}"),
            "{range}"
        );
        assert_eq!(header(&h, CONTENT_LENGTH), (last - first + 1).to_string());
        assert_eq!(body, video[first..=last], "{range}");
    }
    let (status, h, _) = fetch(&server, get.clone(), path, &[(RANGE, "bytes=999999999-")]).await;
    assert_eq!(status, 416);
    assert_eq!(header(&h, CONTENT_RANGE), format!("bytes */{len}"));

    // HEAD: the headers of the GET, no body.
    let head = reqwest::Method::HEAD;
    let (status, h, body) = fetch(&server, head.clone(), path, &[]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(header(&h, CONTENT_LENGTH), len.to_string());
    assert_eq!(header(&h, ACCEPT_RANGES), "bytes");
    let (status, h, body) = fetch(&server, head, path, &[(RANGE, "bytes=0-99")]).await;
    assert_eq!((status, body.len()), (StatusCode::PARTIAL_CONTENT, 0));
    assert_eq!(header(&h, CONTENT_LENGTH), "100");

    // Caching: unchanged → 304; a range of another version → the whole file.
    let (status, _, body) = fetch(&server, get.clone(), path, &[(IF_NONE_MATCH, &etag)]).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    let weak = format!("\"x\", W/{etag}");
    let (status, _, _) = fetch(&server, get.clone(), path, &[(IF_NONE_MATCH, &weak)]).await;
    assert_eq!(status, 304, "weak comparison");
    let (status, _, body) = fetch(
        &server,
        get.clone(),
        path,
        &[(RANGE, "bytes=0-99"), (IF_RANGE, "\"other\"")],
    )
    .await;
    assert_eq!((status, body.len()), (StatusCode::OK, len));
    let (status, _, _) = fetch(
        &server,
        get.clone(),
        path,
        &[(RANGE, "bytes=0-99"), (IF_RANGE, &etag)],
    )
    .await;
    assert_eq!(status, 206);

    // External media and unknown events have no media here.
    let (status, body) = get_json(&server, "/events/stream/media").await;
    assert_eq!((status, &body["code"]), (404, &json!("external-media")));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("https://cdn.example/stream.webm")
    );
    let (status, body) = get_json(&server, "/events/nope/media").await;
    assert_eq!((status, &body["code"]), (404, &json!("unknown-event")));
    let (status, _) = get_json(&server, "/api/events/nope").await;
    assert_eq!(status, 404);
    let (status, body) = get_json(&server, "/api/events?tz=Mars/Olympus").await;
    assert_eq!((status, &body["code"]), (400, &json!("unknown-timezone")));
    server.stop().await;
}

/// Starts a server on `site` as `--flows` and returns why it refused to start.
async fn start_error(site: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flows = Some(site.to_path_buf());
    let clock = Arc::new(ManualClock::new("2026-12-01T00:00:00Z".parse().unwrap()));
    match volley_server::start(cfg, clock).await {
        Ok(_) => panic!("the server started with {}", site.display()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_bad_event_file_stops_the_start_with_its_diagnostic() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("clip.mp4"), b"not really a video").unwrap();
    let src = event_file("late", "file: clip.mp4").replace("at: 10s", "at: 2m");
    std::fs::write(site.path().join("late.yaml"), src).unwrap();
    let err = start_error(site.path()).await;
    assert!(err.contains("late.yaml has 1 error(s)"), "{err}");
    assert!(err.contains("outside-media"), "{err}");
    assert!(err.contains("late.yaml:8:"), "the line of the cue: {err}");
}

#[tokio::test]
async fn media_outside_the_event_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let site = root.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(root.path().join("secret.mp4"), b"private").unwrap();
    let publish = |media: &str| {
        std::fs::write(site.join("talk.yaml"), event_file("talk", media)).unwrap();
    };

    publish("file: ../secret.mp4");
    let err = start_error(&site).await;
    assert!(
        err.contains("invalid-media") && err.contains("../secret.mp4"),
        "{err}"
    );

    publish("file: /etc/passwd");
    let err = start_error(&site).await;
    assert!(err.contains("invalid-media"), "{err}");

    // A link inside the directory that leads out of it.
    std::os::unix::fs::symlink(root.path().join("secret.mp4"), site.join("link.mp4")).unwrap();
    publish("file: link.mp4");
    let err = start_error(&site).await;
    assert!(
        err.contains("invalid-media") && err.contains("leads outside"),
        "{err}"
    );
    assert!(
        err.contains("talk.yaml:5:"),
        "points at the file name: {err}"
    );

    publish("file: missing.mp4");
    let err = start_error(&site).await;
    assert!(err.contains("missing-media"), "{err}");
}
