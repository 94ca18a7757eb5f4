//! A relay server to measure ringkv against (`dht bench --baseline --relay`): the
//! baseline's listeners and answers, plus the least a replicated store must do over
//! sockets. Every listener keeps its own map, and a request goes where ringkv's would: a
//! write to the key's first listener of `k` (consecutive on the listeners' SHA-1 ring, as
//! ringkv's replicas are), which stores it and passes it on down the chain over a
//! persistent TCP connection; the last one acknowledges it to the listener the client
//! called, which then answers. A read is answered by the key's last listener, relayed there
//! and back when the client called another. Nothing else: no protocol, no failure handling,
//! no versions, fixed binary frames.
//!
//! It is a floor, not a competitor: whatever ringkv costs beyond it is its protocol, and
//! what it costs beyond [`BaselineServer`](crate::BaselineServer) is the price of moving
//! `k` copies between processes through the kernel, which no transport avoids.
//!
//! The links write like the nodes' peer transport does: straight from the task that sends,
//! when the connection is idle and the socket takes the bytes, and through a writer task
//! otherwise; one reader task per inbound connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ringkv_core::{Consistency, Id, NodeRef, Ring};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use crate::baseline::{deleted, found, inserted, node_info, not_found, JsonReply, Served};

/// A frame's kinds.
const WRITE: u8 = 1;
const ACK: u8 = 2;
const READ: u8 = 3;
const ANSWER: u8 = 4;
/// A copy an eventual head sends its other replicas: stored, not acknowledged.
const COPY: u8 = 5;

/// A frame's flag: it carries a value (a write that is not a delete; a read's answer that
/// found the key).
const HAS_VALUE: u8 = 1;

/// One relayed message. Encoded as `len: u32` (of the rest), `kind: u8`, `flags: u8`,
/// `origin: u16` (the listener the client called), `id: u64` (its request), `hop: u8`
/// (a write's position in the chain of the listener it goes to), `key_len: u32`, the key,
/// `value_len: u32`, the value.
#[derive(Clone, Debug, PartialEq)]
struct Frame {
    kind: u8,
    origin: u16,
    id: u64,
    hop: u8,
    key: String,
    value: Option<String>,
}

impl Frame {
    fn encode(&self, out: &mut Vec<u8>) {
        let value = self.value.as_deref().unwrap_or("");
        let len = 1 + 1 + 2 + 8 + 1 + 4 + self.key.len() + 4 + value.len();
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.push(self.kind);
        out.push(if self.value.is_some() { HAS_VALUE } else { 0 });
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(self.hop);
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }

    /// The frame at the start of `buf` and its length, `None` if it is not all there yet;
    /// an error if it is malformed.
    fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, &'static str> {
        let Some(len) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(body) = buf.get(4..4 + len) else {
            return Ok(None);
        };
        let mut at = 0;
        let mut take = |n: usize| {
            let part = body.get(at..at + n).ok_or("short frame");
            at += n;
            part
        };
        let kind = take(1)?[0];
        let flags = take(1)?[0];
        let origin = take(2)?;
        let origin = u16::from_le_bytes([origin[0], origin[1]]);
        let id = take(8)?;
        let id = u64::from_le_bytes(id.try_into().map_err(|_| "short frame")?);
        let hop = take(1)?[0];
        let key_len = take(4)?;
        let key_len = u32::from_le_bytes(key_len.try_into().map_err(|_| "short frame")?);
        let key = take(key_len as usize)?;
        let key = std::str::from_utf8(key)
            .map_err(|_| "key not UTF-8")?
            .to_owned();
        let value_len = take(4)?;
        let value_len = u32::from_le_bytes(value_len.try_into().map_err(|_| "short frame")?);
        let value = take(value_len as usize)?;
        let value = std::str::from_utf8(value).map_err(|_| "value not UTF-8")?;
        let value = (flags & HAS_VALUE != 0).then(|| value.to_owned());
        let frame = Frame {
            kind,
            origin,
            id,
            hop,
            key,
            value,
        };
        Ok(Some((frame, 4 + len)))
    }
}

/// An outbound connection to one listener.
struct Link {
    stream: OwnedWriteHalf,
    /// Bytes the writer task has yet to write, and whether it is writing.
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    busy: bool,
    /// The connection failed: frames are dropped (their requests time out at the
    /// client) instead of piling up.
    dead: bool,
}

impl Link {
    /// Send `frame`: written at once when the link is idle and the socket takes it all,
    /// else queued for the writer task, behind what is queued already.
    fn send(&self, frame: &Frame) {
        let mut bytes = Vec::with_capacity(64);
        frame.encode(&mut bytes);
        let mut queue = lock(&self.queue);
        if queue.dead {
            return;
        }
        if !queue.busy {
            match self.stream.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => {
                    bytes.drain(..n);
                }
                Err(_) => {}
            }
            queue.busy = true;
            self.wake.notify_one();
        }
        queue.bytes.extend_from_slice(&bytes);
    }

    async fn write_queued(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let bytes = {
                    let mut queue = lock(&self.queue);
                    if queue.bytes.is_empty() {
                        queue.busy = false;
                        break;
                    }
                    std::mem::take(&mut queue.bytes)
                };
                if let Err(err) = self.write_all(&bytes).await {
                    tracing::warn!(%err, "relay: a link failed; its frames are dropped");
                    let mut queue = lock(&self.queue);
                    queue.dead = true;
                    queue.bytes = Vec::new();
                    return;
                }
            }
        }
    }

    async fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What one listener holds.
struct Node {
    index: u16,
    addr: Arc<str>,
    all: Arc<[String]>,
    k: usize,
    consistency: Consistency,
    /// The listeners' ring, to find a key's chain as ringkv and its clients do.
    ring: Arc<Ring>,
    /// Listener index of each address.
    index_of: Arc<HashMap<String, u16>>,
    map: Mutex<HashMap<String, String>>,
    /// Links to the other listeners, by index (`None` at this one's own).
    links: Vec<Option<Arc<Link>>>,
    /// Requests of this listener's clients awaiting an acknowledgement or an answer.
    pending: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    next_id: AtomicU64,
}

type Shared = Arc<Node>;

impl Node {
    /// The listener indexes of `key`'s chain, first to last.
    fn chain(&self, key: &str) -> Vec<u16> {
        self.ring
            .replicas(Id::of_key(key), self.k)
            .iter()
            .filter_map(|n| self.index_of.get(&*n.addr).copied())
            .collect()
    }

    fn send(&self, to: u16, frame: &Frame) {
        if let Some(Some(link)) = self.links.get(to as usize) {
            link.send(frame);
        }
    }

    fn complete(&self, id: u64, value: Option<String>) {
        if let Some(waiting) = lock(&self.pending).remove(&id) {
            let _ = waiting.send(value);
        }
    }

    fn store(&self, frame: &Frame) {
        let mut map = lock(&self.map);
        match &frame.value {
            Some(value) => map.insert(frame.key.clone(), value.clone()),
            None => map.remove(&frame.key),
        };
    }

    /// Store a write at this listener, position `hop` of its chain, and pass it on, or
    /// acknowledge it to its origin at the chain's end. Under eventual consistency the
    /// head sends the other replicas their copies and acknowledges at once.
    fn on_write(&self, frame: Frame, chain: &[u16]) {
        self.store(&frame);
        let next = frame.hop as usize + 1;
        if self.consistency == Consistency::Eventual {
            let copy = Frame {
                kind: COPY,
                ..frame.clone()
            };
            for &to in chain.iter().skip(1) {
                self.send(to, &copy);
            }
            self.acknowledge(frame);
        } else if let Some(&to) = chain.get(next) {
            let frame = Frame {
                hop: next as u8,
                ..frame
            };
            self.send(to, &frame);
        } else {
            self.acknowledge(frame);
        }
    }

    fn acknowledge(&self, frame: Frame) {
        if frame.origin == self.index {
            self.complete(frame.id, None);
        } else {
            let ack = Frame {
                kind: ACK,
                key: String::new(),
                value: None,
                ..frame
            };
            self.send(ack.origin, &ack);
        }
    }

    fn on_frame(&self, frame: Frame) {
        match frame.kind {
            WRITE => {
                let chain = self.chain(&frame.key);
                self.on_write(frame, &chain);
            }
            COPY => self.store(&frame),
            ACK | ANSWER => self.complete(frame.id, frame.value),
            READ => {
                let value = lock(&self.map).get(&frame.key).cloned();
                let answer = Frame {
                    kind: ANSWER,
                    value,
                    key: String::new(),
                    ..frame
                };
                self.send(answer.origin, &answer);
            }
            _ => {}
        }
    }

    /// Relay a client's write (`value` `None`: a delete) and wait for its acknowledgement;
    /// the address of the listener that completed it (the tail, or an eventual head), which
    /// the answer names as a node's does (a token-aware client checks it).
    async fn write(&self, key: &str, value: Option<String>) -> Result<&str, StatusCode> {
        let chain = self.chain(key);
        let (Some(&head), Some(&tail)) = (chain.first(), chain.last()) else {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        };
        let (frame, done) = self.request(WRITE, key, value);
        if head == self.index {
            self.on_write(frame, &chain);
        } else {
            self.send(head, &frame);
        }
        done.await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        let completed = match self.consistency {
            Consistency::Eventual => head,
            _ => tail,
        };
        Ok(self.addr_of(completed))
    }

    fn addr_of(&self, index: u16) -> &str {
        self.all
            .get(index as usize)
            .map_or(&*self.addr, |a| a.as_str())
    }

    /// A client's read, answered by the key's last listener (chain replication) or by
    /// this one if it holds the key, else the key's first (eventual consistency); with the
    /// address of the listener that answered it.
    async fn read(&self, key: &str) -> Result<(&str, Option<String>), StatusCode> {
        let chain = self.chain(key);
        let server = match self.consistency {
            Consistency::Eventual if chain.contains(&self.index) => Some(self.index),
            Consistency::Eventual => chain.first().copied(),
            _ => chain.last().copied(),
        }
        .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
        if server == self.index {
            return Ok((&self.addr, lock(&self.map).get(key).cloned()));
        }
        let (frame, done) = self.request(READ, key, None);
        self.send(server, &frame);
        let value = done.await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        Ok((self.addr_of(server), value))
    }

    /// A client request's first frame, from this listener, and what its answer arrives on.
    fn request(
        &self,
        kind: u8,
        key: &str,
        value: Option<String>,
    ) -> (Frame, oneshot::Receiver<Option<String>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let frame = Frame {
            kind,
            origin: self.index,
            id,
            hop: 0,
            key: key.to_owned(),
            value,
        };
        (frame, rx)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read frames from one inbound link until it closes or sends a malformed one.
async fn serve_link(node: Shared, mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let mut at = 0;
        loop {
            match Frame::decode(&buf[at..filled]) {
                Ok(Some((frame, len))) => {
                    at += len;
                    node.on_frame(frame);
                }
                Ok(None) => break,
                Err(why) => {
                    tracing::warn!(why, "relay: malformed frame, closing the link");
                    return;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}

/// A running relay: `listeners` HTTP listeners and as many link listeners, on ephemeral
/// loopback ports.
pub struct RelayServer {
    addrs: Vec<String>,
    nodes: Vec<Shared>,
    served: Served,
}

impl RelayServer {
    /// Bind `listeners` listeners on 127.0.0.1 that keep each write on `k` of them (at
    /// most all) as `consistency` has it (chain replication for CRAQ), connect every one
    /// to every other, and serve them on the current tokio runtime.
    pub async fn start(
        listeners: usize,
        k: usize,
        consistency: Consistency,
    ) -> std::io::Result<RelayServer> {
        // CRAQ's writes are chain replication's; its reads at any replica are not modelled.
        let consistency = match consistency {
            Consistency::Eventual => Consistency::Eventual,
            _ => Consistency::Chain,
        };
        let listeners = listeners.clamp(1, u16::MAX as usize);
        let k = k.clamp(1, listeners).min(u8::MAX as usize);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut http = Vec::with_capacity(listeners);
        let mut links = Vec::with_capacity(listeners);
        for _ in 0..listeners {
            let listener = TcpListener::bind(loopback).await?;
            http.push((listener.local_addr()?.to_string(), listener));
            let link = TcpListener::bind(loopback).await?;
            links.push((link.local_addr()?, link));
        }
        let all: Arc<[String]> = http.iter().map(|(addr, _)| addr.clone()).collect();
        let mut ring = Ring::new();
        for addr in all.iter() {
            ring.insert(NodeRef::new(addr));
        }
        let ring = Arc::new(ring);
        let index_of: Arc<HashMap<String, u16>> = Arc::new(
            all.iter()
                .enumerate()
                .map(|(i, a)| (a.clone(), i as u16))
                .collect(),
        );
        let mut server = RelayServer {
            addrs: all.to_vec(),
            nodes: Vec::with_capacity(listeners),
            served: Served::default(),
        };
        // Dial every link first, then accept them: the listen backlog holds the
        // connections meanwhile.
        let mut outbound = Vec::with_capacity(listeners);
        for from in 0..listeners {
            let mut mine = Vec::with_capacity(listeners);
            for (to, (link_addr, _)) in links.iter().enumerate() {
                if to == from {
                    mine.push(None);
                    continue;
                }
                let stream = TcpStream::connect(link_addr).await?;
                stream.set_nodelay(true)?;
                let (_, write) = stream.into_split();
                let link = Arc::new(Link {
                    stream: write,
                    queue: Mutex::default(),
                    wake: Notify::new(),
                });
                let writer = tokio::spawn(link.clone().write_queued());
                server.served.tasks.push(writer);
                mine.push(Some(link));
            }
            outbound.push(mine);
        }
        for (index, ((addr, listener), (mine, (_, link_listener)))) in http
            .into_iter()
            .zip(outbound.into_iter().zip(links))
            .enumerate()
        {
            let node: Shared = Arc::new(Node {
                index: index as u16,
                addr: addr.into(),
                all: all.clone(),
                k,
                consistency,
                ring: ring.clone(),
                index_of: index_of.clone(),
                map: Mutex::default(),
                links: mine,
                pending: Mutex::default(),
                next_id: AtomicU64::new(0),
            });
            server.nodes.push(node.clone());
            for _ in 0..listeners - 1 {
                let (stream, _) = link_listener.accept().await?;
                stream.set_nodelay(true)?;
                let reader = tokio::spawn(serve_link(node.clone(), stream));
                server.served.tasks.push(reader);
            }
            server.served.serve(listener, router(node), "relay");
        }
        Ok(server)
    }

    /// The HTTP listeners' `host:port`.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// How many keys each listener holds, in the order of [`addrs`](Self::addrs).
    pub fn copies(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| lock(&n.map).len()).collect()
    }

    /// Stop every listener and link.
    pub async fn shutdown(self) {
        self.served.stop(true).await;
    }
}

fn router(node: Shared) -> Router {
    Router::new()
        .route("/insert/{key}/{value}", post(insert))
        .route("/query/{key}", get(query))
        .route("/delete/{key}", delete(remove))
        .route("/overlay", get(overlay))
        .route("/node", get(node_handler))
        .with_state(node)
}

fn unavailable(key: String, node: &str, code: StatusCode) -> JsonReply {
    let body = json!({ "error": "relay unavailable", "key": key, "node": node });
    (code, Json(body.into()))
}

async fn insert(State(s): State<Shared>, Path((key, value)): Path<(String, String)>) -> JsonReply {
    match s.write(&key, Some(value.clone())).await {
        Ok(node) => inserted(key, value, node),
        Err(code) => unavailable(key, &s.addr, code),
    }
}

async fn query(State(s): State<Shared>, Path(key): Path<String>) -> JsonReply {
    match s.read(&key).await {
        Ok((node, value)) => found(key, value, node),
        Err(code) => unavailable(key, &s.addr, code),
    }
}

async fn remove(State(s): State<Shared>, Path(key): Path<String>) -> JsonReply {
    // Like the baseline, a delete of a key that is not there is a 404: the key's last
    // listener holds every write to it that was acknowledged.
    match s.read(&key).await {
        Ok((_, Some(_))) => {}
        Ok((node, None)) => return not_found(key, node),
        Err(code) => return unavailable(key, &s.addr, code),
    }
    match s.write(&key, None).await {
        Ok(node) => deleted(key, node),
        Err(code) => unavailable(key, &s.addr, code),
    }
}

async fn overlay(State(s): State<Shared>) -> JsonReply {
    (StatusCode::OK, Json(json!({ "overlay": &*s.all }).into()))
}

async fn node_handler(State(s): State<Shared>) -> JsonReply {
    let mut info = node_info(&s.addr, &s.all, s.k);
    info["consistency"] = json!(s.consistency);
    (StatusCode::OK, Json(info.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::HttpClient;
    use std::time::Duration;

    #[test]
    fn frames_round_trip_and_wait_for_their_last_byte() {
        let frames = [
            Frame {
                kind: WRITE,
                origin: 3,
                id: 1 << 40,
                hop: 2,
                key: "AC/DC".into(),
                value: Some("1973".into()),
            },
            Frame {
                kind: ANSWER,
                origin: 0,
                id: 7,
                hop: 0,
                key: String::new(),
                value: None,
            },
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            frame.encode(&mut bytes);
        }
        let (first, len) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(first, frames[0]);
        let (second, rest) = Frame::decode(&bytes[len..]).unwrap().unwrap();
        assert_eq!((second, len + rest), (frames[1].clone(), bytes.len()));
        assert_eq!(Frame::decode(&bytes[..len - 1]).unwrap(), None);
        let mut bad = bytes[..len].to_vec();
        bad[4 + 1 + 1 + 2 + 8 + 1] = 0xff; // a key length beyond the frame
        assert!(Frame::decode(&bad).is_err());
    }

    #[tokio::test]
    async fn writes_reach_k_listeners_and_reads_come_from_the_last() {
        let server = RelayServer::start(4, 3, Consistency::Chain).await.unwrap();
        let http = HttpClient::new(Duration::from_secs(5));
        let addrs = server.addrs().to_vec();
        for (i, addr) in addrs.iter().enumerate() {
            let insert = http
                .post(&format!("http://{addr}/insert/key-{i}/v{i}"), None)
                .await
                .unwrap();
            assert_eq!(insert.status, 200, "{:?}", insert.value());
            // Named by the node that completed it, the key's tail, as a ring's answer is.
            let mut ring = Ring::new();
            for a in &addrs {
                ring.insert(NodeRef::new(a));
            }
            let tail = ring.replicas(Id::of_key(&format!("key-{i}")), 3).pop();
            assert_eq!(
                insert.value()["node"],
                json!(tail.map(|t| t.addr.to_string()))
            );
        }
        for i in 0..addrs.len() {
            let from = &addrs[(i + 1) % addrs.len()];
            let found = http
                .get(&format!("http://{from}/query/key-{i}"))
                .await
                .unwrap();
            assert_eq!(
                (found.status, found.value()["value"].clone()),
                (200, json!(format!("v{i}")))
            );
        }
        let node = http
            .get(&format!("http://{}/node", addrs[0]))
            .await
            .unwrap()
            .value();
        assert_eq!(
            (node["k"].clone(), node["ring_size"].clone()),
            (json!(3), json!(4))
        );
        // Four keys, three copies each.
        let copies = server.copies();
        assert_eq!(copies.iter().sum::<usize>(), 12, "{copies:?}");
        let gone = http
            .delete(&format!("http://{}/delete/key-0", addrs[2]))
            .await
            .unwrap();
        assert_eq!(gone.status, 200);
        let missing = http
            .get(&format!("http://{}/query/key-0", addrs[3]))
            .await
            .unwrap();
        assert_eq!(missing.status, 404);
        let again = http
            .delete(&format!("http://{}/delete/key-0", addrs[1]))
            .await
            .unwrap();
        assert_eq!(again.status, 404);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn an_eventual_head_acknowledges_and_copies_to_the_others() {
        let server = RelayServer::start(5, 3, Consistency::Eventual)
            .await
            .unwrap();
        let http = HttpClient::new(Duration::from_secs(5));
        let addrs = server.addrs().to_vec();
        for i in 0..10 {
            let at = &addrs[i % addrs.len()];
            let insert = http
                .post(&format!("http://{at}/insert/key-{i}/v{i}"), None)
                .await
                .unwrap();
            assert_eq!(insert.status, 200, "{:?}", insert.value());
            let found = http
                .get(&format!(
                    "http://{}/query/key-{i}",
                    addrs[(i + 2) % addrs.len()]
                ))
                .await
                .unwrap();
            assert_eq!(found.status, 200, "{:?}", found.value());
        }
        let node = http
            .get(&format!("http://{}/node", addrs[0]))
            .await
            .unwrap()
            .value();
        assert_eq!(node["consistency"], json!("eventual"));
        // The copies travel after the acknowledgement: wait for them, a bounded while.
        let mut copies = 0;
        for _ in 0..200 {
            copies = server.copies().iter().sum::<usize>();
            if copies == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(copies, 30);
        server.shutdown().await;
    }
}
