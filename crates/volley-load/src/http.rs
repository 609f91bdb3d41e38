//! A minimal HTTP/1.1 client for the load tool's control calls (import, campaigns,
//! metrics): one request per connection, over loopback.

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a request to `host:port`; returns the status and the body.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let auth = bearer.map(|key| ("Authorization", format!("Bearer {key}")));
    let (status, _, body) = call(addr, method, path, auth.as_slice(), body).await?;
    Ok((status, body))
}

/// Sends a request with extra headers; returns the status, the response head (for
/// cookies) and the body.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
) -> anyhow::Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// Decodes a chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A JSON call that must succeed (2xx).
pub async fn json(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let (status, text) = request(addr, method, path, bearer, body).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    Ok(serde_json::from_str(&text)?)
}
