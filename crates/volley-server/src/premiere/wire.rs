//! The viewers' WebSocket at the byte level: the upgrade, and frames written straight
//! to the socket.
//!
//! Reading goes through tungstenite (unmasking, size limits, control frames). Writing
//! does not: everything the server sends a viewer is a text frame, and a broadcast's
//! frame is the same for every viewer, so the room frames it once and the very same
//! bytes are written to each socket, several frames with one system call. A
//! connection therefore has no write buffer of its own: its memory does not grow with
//! what it was sent (a 200-message `hello`, a backlog of chat), and a `hello` of any
//! size (a replay's 5,000 messages) goes out without being copied into one.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

/// Frames written with one system call at most (the rest with the next).
const MAX_SLICES: usize = super::limits::MAX_FRAMES_PER_WRITE;

/// A text frame from the server (unmasked, not fragmented): header and payload.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let n = payload.len();
    let mut frame = Vec::with_capacity(n + 10);
    frame.push(0x81);
    if n < 126 {
        frame.push(n as u8);
    } else if n <= usize::from(u16::MAX) {
        frame.push(126);
        frame.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(n as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame.into()
}

/// A checked WebSocket handshake, to accept.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// A refused handshake: its status and why (the response's body).
pub type Refused = (StatusCode, &'static str);

fn refuse(status: StatusCode, why: &'static str) -> Refused {
    (status, why)
}

fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Checks that `req` is a WebSocket handshake, refusing it as axum's `WebSocketUpgrade`
/// does (same statuses and order) when it is not.
pub fn upgrade(req: &mut Request) -> Result<Upgrade, Refused> {
    if req.method() != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request method must be `GET`",
        ));
    }
    let headers = req.headers();
    let connection_upgrade = headers
        .get(header::CONNECTION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.to_ascii_lowercase().contains("upgrade"));
    if !connection_upgrade {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'",
        ));
    }
    if !header_is(headers, header::UPGRADE, "websocket") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "`Upgrade` header did not include 'websocket'",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header missing",
        ));
    };
    if !header_is(headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Version` header did not include '13'",
        ));
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ));
    };
    Ok(Upgrade { key, on_upgrade })
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and serves the socket with `serve` once the
    /// connection is handed over.
    pub fn accept<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept =
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            // No handshake: this future is ready at once.
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            );
            serve(Socket {
                ws: ws.await,
                owes_pong: false,
            })
            .await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("a valid response")
    }
}

/// One viewer's WebSocket.
pub struct Socket {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    /// tungstenite answers a client's ping with a pong it writes itself: until it has
    /// (a flush), frames must not be written past it.
    owes_pong: bool,
}

impl Socket {
    /// The next message from the client (cancel-safe).
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        let m = self.ws.next().await;
        if matches!(m, Some(Ok(Message::Ping(_)))) {
            self.owes_pong = true;
        }
        m
    }

    /// Writes whole frames, in order, with as few system calls as the socket allows.
    /// Not cancel-safe: a connection awaits it to the end (or its failure).
    pub async fn write<T: AsRef<[u8]>>(&mut self, frames: &[T]) -> std::io::Result<()> {
        if self.owes_pong {
            self.ws.flush().await.map_err(std::io::Error::other)?;
            self.owes_pong = false;
        }
        let io = self.ws.get_mut();
        let (mut i, mut offset) = (0, 0);
        while i < frames.len() {
            let mut n = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut k = 0;
                for f in frames[i..].iter().take(MAX_SLICES) {
                    let f = f.as_ref();
                    slices[k] = IoSlice::new(if k == 0 { &f[offset..] } else { f });
                    k += 1;
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k])
            })
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let left = frames[i].as_ref().len() - offset;
                if n < left {
                    offset += n;
                    n = 0;
                } else {
                    n -= left;
                    i += 1;
                    offset = 0;
                }
            }
        }
        Ok(())
    }

    /// Sends a close frame (the connection ends). Boxed: a connection's future need
    /// not have room for it.
    pub fn close(
        &mut self,
        code: u16,
        reason: &'static str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        Box::pin(async move {
            let _ = self.ws.send(Message::Close(Some(frame))).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::text_frame;

    #[test]
    fn text_frames_have_the_header_of_every_length_class() {
        for n in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let frame = text_frame(&vec![b'a'; n]);
            let mut cursor = Cursor::new(&frame[..]);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final, "{n}");
            assert_eq!(header.opcode, OpCode::Data(Data::Text), "{n}");
            assert!(header.mask.is_none(), "{n}");
            assert_eq!(len, n as u64);
            assert_eq!(cursor.position() as usize + n, frame.len(), "{n}");
        }
    }
}
