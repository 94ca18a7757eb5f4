//! A cap on the HTTP connections one node serves at once.
//!
//! [`LimitedListener`] wraps the node's [`TcpListener`] for `axum::serve`. Every accepted
//! connection holds a semaphore permit inside its IO type ([`LimitedStream`]), so the
//! permit comes back when the connection is closed and dropped. A connection that arrives
//! while every permit is taken is never handed to axum: a small task answers it with a
//! complete `503 Service Unavailable` (JSON body, `connection: close`, `retry-after: 1`)
//! and closes it, and the accept loop goes on at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{add, Metrics};

/// Default of [`crate::NodeOptions::max_connections`].
pub const MAX_CONNECTIONS_DEFAULT: usize = 1024;

/// Connections being answered with 503 at once; beyond it a connection is closed without
/// an answer, so that a flood cannot pile up tasks and file descriptors.
const REJECTING_MAX: usize = 64;

/// Longest time a rejected connection may take to receive the 503 and the close.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// After the 503, how long (and how many bytes) the request of a rejected connection is
/// read and discarded before the socket is dropped. Dropping a socket with unread input
/// makes the kernel send a reset, which can destroy the 503 before the client reads it.
const REJECT_LINGER: Duration = Duration::from_secs(1);
const REJECT_LINGER_BYTES: usize = 64 << 10;

/// How long the accept loop pauses after an error such as EMFILE (as axum's own
/// `TcpListener` listener does).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A [`TcpListener`] that serves at most a fixed number of connections at once.
pub struct LimitedListener {
    inner: TcpListener,
    max: usize,
    permits: Arc<Semaphore>,
    rejecting: Arc<Semaphore>,
    response: Bytes,
    metrics: Arc<Metrics>,
    /// Whether the current run of rejections was already logged at warn level.
    full_logged: bool,
}

impl LimitedListener {
    /// Serve at most `max_connections` (at least 1) connections of `inner` at once;
    /// rejections are counted in `metrics`.
    pub fn new(inner: TcpListener, max_connections: usize, metrics: Arc<Metrics>) -> Self {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        LimitedListener {
            inner,
            max,
            permits: Arc::new(Semaphore::new(max)),
            rejecting: Arc::new(Semaphore::new(REJECTING_MAX)),
            response: Bytes::from(rejection_response(max)),
            metrics,
            full_logged: false,
        }
    }

    /// Answer `stream` with 503 and close it, in a task of its own.
    fn reject(&mut self, stream: TcpStream, peer: SocketAddr) {
        add(&self.metrics.connections_rejected, 1);
        if !std::mem::replace(&mut self.full_logged, true) {
            tracing::warn!(
                %peer,
                max_connections = self.max,
                "connection limit reached; refusing new connections with 503"
            );
        } else {
            tracing::debug!(%peer, max_connections = self.max, "connection refused with 503");
        }
        let Ok(slot) = self.rejecting.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many connections being refused; closing without an answer");
            return;
        };
        let response = self.response.clone();
        tokio::spawn(async move {
            let _slot = slot;
            answer_and_close(stream, &response).await;
        });
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.full_logged = false;
                    let io = LimitedStream {
                        stream,
                        _permit: permit,
                    };
                    return (io, peer);
                }
                Err(_) => self.reject(stream, peer),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// What axum's own `TcpListener` listener does: a connection that failed before it was
/// accepted is skipped; any other error (EMFILE, ENFILE, ...) is logged and the loop
/// pauses, as some connections or files will likely close meanwhile.
async fn accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%err, "accept error; pausing {ACCEPT_ERROR_PAUSE:?}");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Write the 503, close the sending side, then read and discard what the client sent
/// until it closes, all within bounded time.
async fn answer_and_close(mut stream: TcpStream, response: &[u8]) {
    let sent = tokio::time::timeout(REJECT_WRITE_TIMEOUT, async {
        stream.write_all(response).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < REJECT_LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// The complete HTTP/1.1 answer to a connection beyond the limit.
pub fn rejection_response(max_connections: usize) -> Vec<u8> {
    let body = json!({
        "error": format!(
            "this node already serves its limit of {max_connections} HTTP connections \
             (--max-connections); retry later or reuse a keep-alive connection"
        ),
        "code": "too_many_connections",
        "max_connections": max_connections,
    })
    .to_string();
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: application/json\r\n\
         content-length: {}\r\n\
         connection: close\r\n\
         retry-after: 1\r\n\
         \r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

/// An accepted connection; it holds one of the listener's permits until dropped.
pub struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_503_is_a_complete_http_response_with_a_json_error() {
        let response = rejection_response(7);
        let text = std::str::from_utf8(&response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (name, value) = l.split_once(": ").expect("a header");
                (name.to_ascii_lowercase(), value.to_string())
            })
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("connection"), Some("close"));
        assert_eq!(header("retry-after"), Some("1"));
        let length: usize = header("content-length").unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "too_many_connections");
        assert_eq!(json["max_connections"], 7);
        assert!(json["error"].as_str().unwrap().contains("limit of 7"));
    }
}
