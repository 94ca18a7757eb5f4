//! Node-to-node transport, receiving side: accepts peer connections on the node's HTTP
//! listener (an upgrade of `GET /internal/peer`, see [`crate::wire`]) and hands each
//! frame's envelopes to the actor, in order.
//!
//! The cluster secret is checked once, on the upgrade request; the connection then counts
//! against `--max-connections` like any other. A frame that does not decode closes its
//! connection (and is counted); the node goes on.
//!
//! Order across reconnections: the first envelope of a connection names its sender. When a
//! sender opens a new connection (after a failed write, or because it restarted), the old
//! connection's reader delivers nothing more, and the new one waits until a delivery the old
//! one has begun is done, so that nothing sent later is handed to the actor first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use ringkv_core::Envelope;
use serde_json::json;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use crate::actor::{NodeHandle, Unavailable};
use crate::fault::PeerFilter;
use crate::metrics::{add, Metrics};
use crate::wire::{self, PROTOCOL};

/// Path of the JSON endpoint envelopes may also be posted to (for debugging and tools).
pub const INTERNAL_PATH: &str = "/internal/message";

/// The receiving side of one node's transport.
#[derive(Debug)]
pub struct Inbound {
    node: NodeHandle,
    metrics: Arc<Metrics>,
    secret: Option<Arc<str>>,
    /// The test-only partition filter: envelopes from a blocked sender are dropped.
    filter: Arc<PeerFilter>,
    stop: watch::Sender<bool>,
    /// The current connection of each sender.
    links: Mutex<HashMap<Arc<str>, Link>>,
    next_conn: AtomicU64,
}

/// One sender's current connection.
#[derive(Debug)]
struct Link {
    conn: u64,
    /// Set when a newer connection from the same sender took over.
    superseded: Arc<AtomicBool>,
    /// Held while a frame of this sender is being handed to the actor.
    delivery: Arc<tokio::sync::Mutex<()>>,
}

/// What a reader knows of its connection's sender once the first frame arrived.
struct Sender {
    addr: Arc<str>,
    superseded: Arc<AtomicBool>,
    delivery: Arc<tokio::sync::Mutex<()>>,
}

impl Inbound {
    /// The receiving side of the node behind `node`; with `secret`, connections must
    /// present it; envelopes from the senders `filter` blocks are dropped.
    pub fn new(
        node: NodeHandle,
        metrics: Arc<Metrics>,
        secret: Option<Arc<str>>,
        filter: Arc<PeerFilter>,
    ) -> Inbound {
        Inbound {
            node,
            metrics,
            secret,
            filter,
            stop: watch::Sender::new(false),
            links: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        }
    }

    /// Close every peer connection and refuse new ones.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }

    /// Answer an upgrade request: `101` and a reader task, or a JSON error.
    pub fn accept(self: &Arc<Self>, headers: &HeaderMap, upgrade: Option<OnUpgrade>) -> Response {
        if *self.stop.borrow() {
            let message = "the node is shutting down";
            return refuse(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        if let Some(secret) = &self.secret {
            if !crate::http::has_secret(headers, secret) {
                add(&self.metrics.peer.connections_refused, 1);
                let message = "node-to-node connections need the cluster secret (--cluster-secret)";
                return refuse(StatusCode::UNAUTHORIZED, message);
            }
        }
        let wanted = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
        let Some(upgrade) = upgrade.filter(|_| wanted) else {
            let message = format!(
                "this endpoint is for ringkv peers: send an HTTP/1.1 upgrade to {PROTOCOL}"
            );
            let mut response = refuse(StatusCode::UPGRADE_REQUIRED, &message);
            response
                .headers_mut()
                .insert(header::UPGRADE, header::HeaderValue::from_static(PROTOCOL));
            return response;
        };
        let inbound = self.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => inbound.serve(TokioIo::new(upgraded)).await,
                Err(err) => tracing::debug!(%err, "peer upgrade failed"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        headers.insert(header::UPGRADE, header::HeaderValue::from_static(PROTOCOL));
        response
    }

    /// Read frames from one connection until it ends, breaks the protocol, or the node
    /// stops.
    async fn serve<R: AsyncRead + Unpin>(&self, mut io: R) {
        add(&self.metrics.peer.connections_accepted, 1);
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut stop = self.stop.subscribe();
        // One wait for the whole connection, not one set up again for every frame.
        let stopped = stop.wait_for(|stopped| *stopped);
        tokio::pin!(stopped);
        let mut frames = wire::FrameReader::new();
        let mut sender = None;
        loop {
            let step = self.next_frames(conn, &mut io, &mut frames, &mut sender);
            let go_on = tokio::select! {
                biased;
                _ = &mut stopped => false,
                go_on = step => go_on,
            };
            if !go_on {
                break;
            }
        }
        if let Some(sender) = sender {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            if links.get(&sender.addr).is_some_and(|l| l.conn == conn) {
                links.remove(&sender.addr);
            }
        }
    }

    /// Read what has arrived and deliver the envelopes of every whole frame in it, in one
    /// command to the actor; whether to go on with the connection. A malformed frame
    /// closes the connection after the frames before it are delivered.
    async fn next_frames<R: AsyncRead + Unpin>(
        &self,
        conn: u64,
        rd: &mut R,
        frames: &mut wire::FrameReader,
        sender: &mut Option<Sender>,
    ) -> bool {
        match frames.read(rd).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(err) => {
                tracing::debug!(%err, "peer connection ended");
                return false;
            }
        }
        let mut envelopes = Vec::new();
        let decoded = frames.decode_buffered(&mut envelopes);
        let go_on = envelopes.is_empty() || self.hand_over(conn, envelopes, sender).await;
        match decoded {
            Ok(()) => go_on,
            Err(err) => {
                let peer = &self.metrics.peer;
                add(&peer.frames_malformed, 1);
                add(&peer.messages_malformed, 1);
                tracing::warn!(%err, "closing a peer connection after a malformed frame");
                false
            }
        }
    }

    /// Deliver envelopes that arrived on `conn` (not empty); whether to go on with it.
    async fn hand_over(
        &self,
        conn: u64,
        envelopes: Vec<Envelope>,
        sender: &mut Option<Sender>,
    ) -> bool {
        let Some(first) = envelopes.first() else {
            return true;
        };
        let sender = sender.get_or_insert_with(|| self.register(conn, &first.from.addr));
        let envelopes = self.admit(envelopes);
        if envelopes.is_empty() {
            return true;
        }
        self.metrics
            .peer
            .count_kinds(envelopes.iter().map(|e| e.msg.kind()), false);
        let _turn = sender.delivery.lock().await;
        if sender.superseded.load(Ordering::Acquire) {
            tracing::debug!(from = %sender.addr, "a newer connection took over; closing this one");
            return false;
        }
        self.deliver(envelopes).await
    }

    /// The envelopes not from a sender the partition filter blocks; the others are
    /// counted and dropped.
    pub(crate) fn admit(&self, mut envelopes: Vec<Envelope>) -> Vec<Envelope> {
        let before = envelopes.len();
        envelopes.retain(|e| !self.filter.blocks_receive(&e.from.addr));
        add(
            &self.metrics.peer.messages_dropped_partition_receive,
            before - envelopes.len(),
        );
        envelopes
    }

    /// Make `conn` the current connection of the sender at `addr`.
    fn register(&self, conn: u64, addr: &str) -> Sender {
        let addr: Arc<str> = Arc::from(addr);
        let superseded = Arc::new(AtomicBool::new(false));
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let link = links.entry(addr.clone()).or_insert_with(|| Link {
            conn,
            superseded: superseded.clone(),
            delivery: Arc::default(),
        });
        if link.conn != conn {
            link.superseded.store(true, Ordering::Release);
            link.superseded = superseded.clone();
            link.conn = conn;
        }
        Sender {
            addr,
            superseded,
            delivery: link.delivery.clone(),
        }
    }

    /// Hand envelopes to the actor; whether the connection should go on.
    async fn deliver(&self, envelopes: Vec<Envelope>) -> bool {
        let count = envelopes.len();
        match self.node.deliver(envelopes).await {
            Ok(()) => true,
            Err(Unavailable::Stopped) => false,
            Err(unavailable) => {
                tracing::warn!(%unavailable, "dropping {count} received message(s)");
                add(&self.metrics.peer.messages_dropped_receive, count);
                true
            }
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Parse a batch posted as JSON by a peer: the envelopes that parse, and how many did not.
pub(crate) fn decode_json_batch(body: &[u8]) -> Result<(Vec<Envelope>, usize), serde_json::Error> {
    // The common case in one pass; envelope by envelope only when something is wrong.
    if let Ok(envelopes) = serde_json::from_slice::<Vec<Envelope>>(body) {
        return Ok((envelopes, 0));
    }
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)?;
    let mut envelopes = Vec::with_capacity(raw.len());
    let mut malformed = 0;
    for item in raw {
        match serde_json::from_str::<Envelope>(item.get()) {
            Ok(envelope) => envelopes.push(envelope),
            Err(err) => {
                malformed += 1;
                tracing::warn!(%err, "dropping a malformed envelope");
            }
        }
    }
    Ok((envelopes, malformed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{Message, NodeRef};

    fn envelope(epoch: u64) -> Envelope {
        Envelope {
            from: NodeRef::new("127.0.0.1:1"),
            msg: Message::Ready { epoch },
        }
    }

    #[test]
    fn a_forged_json_envelope_is_dropped_alone() {
        let good = serde_json::to_string(&envelope(1)).unwrap();
        let forged = good.replace("127.0.0.1:1", "127.0.0.1:2");
        let body = format!("[{good},{forged},{good}]");
        let (decoded, bad) = decode_json_batch(body.as_bytes()).unwrap();
        assert_eq!((decoded.len(), bad), (2, 1));
        assert!(decode_json_batch(b"{\"not\":\"an array\"}").is_err());
    }
}
