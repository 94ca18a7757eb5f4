//! Opening a peer connection: TCP, then an HTTP/1.1 upgrade to the frame protocol on the
//! peer's ordinary listener (see [`crate::wire`]).
//!
//! Nothing of a batch is written before the peer has answered `101`, so every failure here
//! means the batch certainly did not arrive and may be sent on a later connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::wire::{PEER_PATH, PROTOCOL};

/// Longest error body of a refused upgrade kept for the log.
const REFUSAL_BODY_BYTES_MAX: usize = 512;

/// How a node reaches its peers.
#[derive(Clone, Debug)]
pub struct Dialer {
    /// The cluster secret, sent once per connection as a bearer token.
    pub secret: Option<Arc<str>>,
    /// Bound of connection setup and of each write.
    pub timeout: Duration,
}

/// Why a peer connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No TCP connection (refused, unreachable, or not within the timeout).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The upgrade exchange broke.
    #[error("upgrade failed: {0}")]
    Upgrade(String),
    /// The peer answered something else than `101`.
    #[error("the peer refused the connection with HTTP {status}: {body}")]
    Refused {
        /// The answer's status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl DialError {
    /// Whether to try again at once: yes when the peer is restarting (refused, or closed
    /// during the upgrade) or at its connection limit; not after it refused the secret, nor
    /// after a whole timeout (a host that does not answer would hold the queue up for
    /// several timeouts).
    pub fn retryable(&self) -> bool {
        match self {
            DialError::Connect(_) | DialError::Upgrade(_) => true,
            DialError::Refused { status, .. } => {
                *status == StatusCode::SERVICE_UNAVAILABLE.as_u16()
            }
            DialError::Timeout(_) => false,
        }
    }
}

/// An open peer connection: frames go out on `wr`; the peer never sends anything, so
/// `rd` only tells when the connection ends.
#[derive(Debug)]
pub struct PeerConn {
    /// Receives nothing but the end of the connection.
    pub rd: OwnedReadHalf,
    /// Carries the frames.
    pub wr: OwnedWriteHalf,
}

impl Dialer {
    /// Open a connection to the node at `addr` (`host:port`).
    pub async fn dial(&self, addr: &str) -> Result<PeerConn, DialError> {
        match tokio::time::timeout(self.timeout, self.upgrade(addr)).await {
            Ok(result) => result,
            Err(_) => Err(DialError::Timeout(self.timeout)),
        }
    }

    async fn upgrade(&self, addr: &str) -> Result<PeerConn, DialError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| DialError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let upgrade_error = |e: hyper::Error| DialError::Upgrade(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(upgrade_error)?;
        // Drives the HTTP exchange; it ends by handing the socket to the upgrade.
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%err, "peer upgrade connection ended");
            }
        });
        let mut request = Request::get(PEER_PATH)
            .header(HOST, addr)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, PROTOCOL);
        if let Some(secret) = &self.secret {
            request = request.header(AUTHORIZATION, format!("Bearer {secret}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| DialError::Upgrade(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(upgrade_error)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status().as_u16();
            let body = match response.into_body().collect().await {
                Ok(body) => {
                    let bytes = body.to_bytes();
                    let end = bytes.len().min(REFUSAL_BODY_BYTES_MAX);
                    String::from_utf8_lossy(&bytes[..end]).into_owned()
                }
                Err(_) => String::new(),
            };
            return Err(DialError::Refused { status, body });
        }
        let upgraded = hyper::upgrade::on(response).await.map_err(upgrade_error)?;
        let parts = upgraded
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| DialError::Upgrade("the upgraded connection is not TCP".into()))?;
        if !parts.read_buf.is_empty() {
            return Err(DialError::Upgrade(
                "the peer sent data after accepting the upgrade".into(),
            ));
        }
        let (rd, wr) = parts.io.into_inner().into_split();
        Ok(PeerConn { rd, wr })
    }
}

impl PeerConn {
    /// Whether the peer has closed the connection (or sent something it never should),
    /// as far as is known without waiting. Cheap: tokio answers from its readiness cache
    /// unless the socket became readable.
    pub fn peer_closed(&self) -> bool {
        let mut probe = [0u8; 64];
        match self.rd.try_read(&mut probe) {
            Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }

    /// Wait until the peer closes the connection (or sends anything, which it never
    /// should). Cancel-safe.
    pub async fn closed(&self) {
        loop {
            let _ = self.rd.readable().await;
            if self.peer_closed() {
                return;
            }
        }
    }

    /// Write as much of `buf` as the socket takes now, without waiting: the bytes written
    /// (fewer than `buf.len()` when its send buffer is full).
    pub fn try_write_now(&self, buf: &[u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            match self.wr.try_write(&buf[written..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        Ok(written)
    }

    /// Write all of `buf`, waiting for room in the socket's send buffer. Takes `&self`, as
    /// the connection is shared between its sender task and the actor (who write in turn,
    /// never at once: see [`crate::peer`]). Cancel-safe in that nothing is written twice;
    /// a cancelled write may have written part of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = self.try_write_now(buf)?;
            buf = &buf[n..];
            if !buf.is_empty() {
                self.wr.writable().await?;
            }
        }
        Ok(())
    }
}
