//! The peer transport over real loopback connections: binary frames on an upgraded HTTP
//! connection, the secret checked once per connection, malformed frames, per-destination
//! order under load, reconnection after a peer restarts, and the added link latency.
//!
//! Several tests talk to a real node through a stand-in peer: a plain TCP listener that
//! accepts the upgrade by hand and records the frames it gets. A node answers a lookup from
//! such a peer with a `Done` message sent back over its own transport, so the stand-in sees
//! exactly what the node's transport delivers.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ringkv_core::message::{Action, Origin, Routed};
use ringkv_core::{
    ClusterConfig, Consistency, Envelope, Message, NodeRef, Request, Response, Routing,
};
use ringkv_runtime::dial::{DialError, Dialer};
use ringkv_runtime::wire::{self, PEER_PATH, PROTOCOL};
use ringkv_runtime::{ClusterOptions, LocalCluster, NodeOptions, NodeServer, Role};
use ringkv_sim::Latency;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// Bound of every single wait in these tests.
const STEP: Duration = Duration::from_secs(10);

fn config(k: usize) -> ClusterConfig {
    ClusterConfig::new(k, Consistency::Chain, Routing::Finger).unwrap()
}

async fn bootstrap(secret: Option<&str>) -> NodeServer {
    let mut options = NodeOptions::new("127.0.0.1:0".parse().unwrap(), Role::Bootstrap(config(1)));
    options.cluster_secret = secret.map(str::to_string);
    NodeServer::start(options).await.expect("the node starts")
}

fn dialer(secret: Option<&str>) -> Dialer {
    Dialer {
        secret: secret.map(Into::into),
        timeout: STEP,
    }
}

/// A lookup of `key` from `from`, whose answer (a `Done` for request `req`) goes back to
/// `from`.
fn lookup(from: &NodeRef, req: u64, key: &str) -> Envelope {
    Envelope {
        from: from.clone(),
        msg: Message::Route(Routed {
            origin: Some(Origin {
                node: from.clone(),
                req,
                incarnation: 1,
            }),
            key: key.to_string(),
            action: Action::Read,
            hops: 0,
            laps: 0,
            redriven: false,
        }),
    }
}

/// Write `envelopes` on `conn` as frames of at most `per_frame` envelopes, several frames
/// per write.
async fn send_frames(
    conn: &mut ringkv_runtime::dial::PeerConn,
    envelopes: &[Envelope],
    per_frame: usize,
) {
    for writes in envelopes.chunks(per_frame * 8) {
        let mut out = Vec::new();
        for frame in writes.chunks(per_frame) {
            // A frame ends once it holds 1 byte or more: one frame per call.
            wire::encode(frame, usize::MAX, &mut out);
        }
        conn.wr.write_all(&out).await.expect("write frames");
    }
}

/// Accept one upgrade on `stream` by hand: read the request head, answer 101.
async fn accept_upgrade(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with(&format!("get {PEER_PATH} ")), "{head}");
    assert!(head.contains(&format!("upgrade: {PROTOCOL}")), "{head}");
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {PROTOCOL}\r\n\r\n"
    );
    stream.write_all(answer.as_bytes()).await
}

/// A stand-in peer listening on `addr` (port 0: any): every envelope of every frame it
/// receives goes to the returned channel, in arrival order.
async fn stand_in(addr: &str) -> (String, mpsc::UnboundedReceiver<Envelope>, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.expect("bind the stand-in");
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        // Dropped, and so every reader stopped, when this task is aborted.
        let mut readers = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            readers.spawn(async move {
                if accept_upgrade(&mut stream).await.is_err() {
                    return;
                }
                let mut buf = Vec::new();
                while let Ok(true) = wire::read_frame(&mut stream, &mut buf).await {
                    for envelope in wire::decode(&buf).expect("the node sends valid frames") {
                        let _ = tx.send(envelope);
                    }
                }
            });
        }
    });
    (addr, rx, task)
}

/// The request ids of the next `n` `Done` messages the stand-in receives.
async fn next_done(rx: &mut mpsc::UnboundedReceiver<Envelope>, n: usize) -> Vec<u64> {
    let mut reqs = Vec::with_capacity(n);
    while reqs.len() < n {
        let envelope = timeout(STEP, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} answers arrived", reqs.len()))
            .expect("the stand-in runs");
        if let Message::Done { req, .. } = envelope.msg {
            reqs.push(req);
        }
    }
    reqs
}

fn counter(
    server: &NodeServer,
    read: impl Fn(&ringkv_runtime::metrics::PeerCounters) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    read(&server.metrics().peer).load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_order_per_destination_under_load() {
    let node = bootstrap(None).await;
    let (peer_addr, mut answers, peer_task) = stand_in("127.0.0.1:0").await;
    let me = NodeRef::new(&peer_addr);
    const N: u64 = 20_000;
    let lookups: Vec<Envelope> = (0..N)
        .map(|i| lookup(&me, i, &format!("k{}", i % 97)))
        .collect();
    let mut conn = dialer(None).dial(node.addr()).await.expect("dial the node");
    let writer = tokio::spawn(async move {
        send_frames(&mut conn, &lookups, 50).await;
        conn
    });
    let reqs = next_done(&mut answers, N as usize).await;
    assert_eq!(
        reqs,
        (0..N).collect::<Vec<_>>(),
        "answers in the order asked"
    );
    let _conn = writer.await.unwrap();
    // The answers travelled batched: several envelopes per frame and per write.
    let sent = counter(&node, |p| &p.messages_sent);
    let writes = counter(&node, |p| &p.writes);
    assert!(sent >= N, "{sent}");
    assert!(
        writes >= 1 && writes <= sent,
        "{writes} writes for {sent} envelopes"
    );
    assert_eq!(
        counter(&node, |p| &p.connections_opened),
        1,
        "one connection"
    );
    assert_eq!(counter(&node, |p| &p.messages_dropped_send_error), 0);
    peer_task.abort();
    node.stop().await;
}

/// Keep the node busy (its lock taken by a long inspection) for `busy`, from when this
/// returns; the task ends when the node is free again.
async fn hold_busy(
    handle: &ringkv_runtime::NodeHandle,
    busy: Duration,
) -> JoinHandle<Result<(), ringkv_runtime::Unavailable>> {
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .inspect(move |_| {
                    let _ = held_tx.send(());
                    std::thread::sleep(busy);
                })
                .await
        }
    });
    timeout(STEP, held_rx).await.unwrap().unwrap();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_find_a_node_busy_wait_and_keep_their_order() {
    // An input is handled by the task that brings it when the node's lock is free. One
    // that finds the node busy is queued, without holding up its thread, and handled
    // before any later input: here the first write waits behind a long inspection, the
    // second comes once it has ended, and the second's value is the one that stays.
    let node = bootstrap(None).await;
    let handle = node.handle().clone();
    let deadline = Instant::now() + STEP;
    while !handle.inspect(|n| n.is_member()).await.unwrap_or(false) {
        assert!(
            Instant::now() < deadline,
            "the bootstrap never became a member"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let insert = |value: &str| Request::Insert {
        key: "k".to_string(),
        value: value.to_string(),
    };
    let busy = hold_busy(&handle, Duration::from_millis(500)).await;
    let first = tokio::spawn({
        let (handle, request) = (handle.clone(), insert("first"));
        async move { handle.request(request).await }
    });
    // The other runtime thread goes on (a node's actor task never waits for its lock).
    let waited = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        waited.elapsed() < Duration::from_millis(400),
        "a thread was held up"
    );
    assert!(
        !first.is_finished(),
        "the first write waits while the node is busy"
    );
    timeout(STEP, busy).await.unwrap().unwrap().unwrap();
    let second = timeout(STEP, handle.request(insert("second")))
        .await
        .unwrap();
    assert!(
        matches!(second, Ok(Ok(Response::Inserted { .. }))),
        "{second:?}"
    );
    let first = timeout(STEP, first).await.unwrap().unwrap();
    assert!(
        matches!(first, Ok(Ok(Response::Inserted { .. }))),
        "{first:?}"
    );
    let read = handle
        .request(Request::Query {
            key: "k".to_string(),
        })
        .await;
    match read {
        Ok(Ok(Response::Found { value, .. })) => assert_eq!(value, "second"),
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

/// A node of a two-node chain ring whose other node is gone, and a write waiting at it
/// (requests time out only after 30 s).
async fn a_write_that_waits() -> (
    NodeServer,
    JoinHandle<Result<ringkv_core::Reply, ringkv_runtime::Unavailable>>,
) {
    let mut options = ClusterOptions::new(2, config(2));
    options.timing.request_timeout_ns = 30_000_000_000;
    let mut cluster = LocalCluster::start(options).await.expect("the ring forms");
    cluster.take_node(1).stop().await;
    let node = cluster.take_node(0);
    let handle = node.handle().clone();
    let write = tokio::spawn(async move {
        let request = Request::Insert {
            key: "k".to_string(),
            value: "v".to_string(),
        };
        handle.request(request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "{:?}", write.await);
    (node, write)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_when_its_node_stops_is_answered_stopped() {
    // A write that cannot complete (the other node of its chain is gone, and requests
    // time out only after 30 s) waits at its node; stopping the node ends the wait at
    // once, though the caller still holds a handle to the node.
    let (node, write) = a_write_that_waits().await;
    node.stop().await;
    let answer = timeout(Duration::from_secs(5), write).await;
    assert!(
        matches!(answer, Ok(Ok(Err(ringkv_runtime::Unavailable::Stopped)))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_nodes_turn_stops_it_and_answers_whoever_waits() {
    // A write waits at its node (the other node of its chain is gone; requests time out
    // only after 30 s). Then a turn of the node's own task panics: the node stops, the
    // waiting write is answered `stopped` instead of waiting for good, later requests
    // are refused, and stopping the node ends.
    let (node, write) = a_write_that_waits().await;
    let handle = node.handle().clone();
    // Hold the node busy, so that the panicking input is queued and taken by the node's
    // own task (the one that keeps its timers) rather than run by its caller.
    let busy = hold_busy(&handle, Duration::from_millis(300)).await;
    let panicking = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .inspect(|_| -> () { panic!("a bug in a turn (injected by the test)") })
                .await
        }
    });
    timeout(STEP, busy).await.unwrap().unwrap().unwrap();
    let answer = timeout(Duration::from_secs(5), write).await;
    assert!(
        matches!(answer, Ok(Ok(Err(ringkv_runtime::Unavailable::Stopped)))),
        "{answer:?}"
    );
    let refused = timeout(STEP, handle.request(Request::Overlay)).await;
    assert!(
        matches!(refused, Ok(Err(ringkv_runtime::Unavailable::Stopped))),
        "{refused:?}"
    );
    assert!(matches!(
        timeout(STEP, panicking).await,
        Ok(Ok(Err(ringkv_runtime::Unavailable::Stopped)))
    ));
    timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("stopping a node whose turn panicked ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_its_connection_and_is_counted() {
    let node = bootstrap(None).await;
    let bad_frames: [&[u8]; 3] = [
        // A payload that is not MessagePack.
        &[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1],
        // A length above the limit.
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // An empty frame.
        &[0, 0, 0, 0],
    ];
    for (i, bad) in bad_frames.iter().enumerate() {
        let mut conn = dialer(None).dial(node.addr()).await.expect("dial the node");
        conn.wr.write_all(bad).await.expect("write");
        let mut rest = Vec::new();
        let closed = timeout(STEP, conn.rd.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "frame {i}: the node closes the connection: {closed:?}"
        );
        assert_eq!(counter(&node, |p| &p.frames_malformed), i as u64 + 1);
    }
    // A forged node (its id is not SHA-1 of its address) breaks the frame too: here the
    // node a join request names, which travels with its id (the frequent messages name
    // nodes by address alone, and the receiver computes their ids).
    let mut forged = Vec::new();
    let join = Message::JoinRequest {
        node: NodeRef::new("127.0.0.1:1"),
        incarnation: 1,
        hops: 0,
        ring: None,
        prepared: None,
    };
    let from = NodeRef::new("127.0.0.1:9");
    wire::encode(&[Envelope { from, msg: join }], usize::MAX, &mut forged);
    let at = forged
        .windows(11)
        .rposition(|w| w == b"127.0.0.1:1")
        .unwrap();
    forged[at + 10] = b'2';
    let mut conn = dialer(None).dial(node.addr()).await.expect("dial the node");
    conn.wr.write_all(&forged).await.expect("write");
    let mut rest = Vec::new();
    let _ = timeout(STEP, conn.rd.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert_eq!(counter(&node, |p| &p.frames_malformed), 4);
    // The node goes on: it serves clients and accepts good frames on a new connection.
    let api = common::Api::new(node.addr());
    let (status, body) = api.insert("Imagine", "1971").await;
    assert_eq!(status, 200, "{body}");
    let (peer_addr, mut answers, peer_task) = stand_in("127.0.0.1:0").await;
    let me = NodeRef::new(&peer_addr);
    let mut conn = dialer(None).dial(node.addr()).await.expect("dial the node");
    send_frames(&mut conn, &[lookup(&me, 7, "Imagine")], 1).await;
    assert_eq!(next_done(&mut answers, 1).await, vec![7]);
    // A plain request to the peer endpoint is told to upgrade.
    let (status, body) = api.get(PEER_PATH).await;
    assert_eq!(status, 426, "{body}");
    let (_, text) = api.get("/metrics").await;
    assert!(text.is_null(), "metrics are text");
    peer_task.abort();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_when_the_connection_is_set_up() {
    let node = bootstrap(Some("s3cret")).await;
    for secret in [None, Some("wrong"), Some("s3cre"), Some("S3CRET")] {
        match dialer(secret).dial(node.addr()).await {
            Err(DialError::Refused { status: 401, body }) => {
                assert!(body.contains("cluster secret"), "{body}");
            }
            other => panic!("{secret:?}: expected 401, got {other:?}"),
        }
    }
    assert_eq!(counter(&node, |p| &p.connections_refused), 4);
    assert!(!DialError::Refused {
        status: 401,
        body: String::new()
    }
    .retryable());
    // The right secret opens a connection whose frames reach the node (its answer comes
    // back to the stand-in, which checks no secret).
    let (peer_addr, mut answers, peer_task) = stand_in("127.0.0.1:0").await;
    let me = NodeRef::new(&peer_addr);
    let mut conn = dialer(Some("s3cret"))
        .dial(node.addr())
        .await
        .expect("dial");
    send_frames(&mut conn, &[lookup(&me, 1, "k")], 1).await;
    assert_eq!(next_done(&mut answers, 1).await, vec![1]);
    assert_eq!(counter(&node, |p| &p.connections_accepted), 1);
    // Without the secret even the upgrade's description is refused.
    let (status, body) = common::Api::new(node.addr()).get(PEER_PATH).await;
    assert_eq!(status, 401, "{body}");
    peer_task.abort();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected_to() {
    let node = bootstrap(None).await;
    let (peer_addr, mut answers, peer_task) = stand_in("127.0.0.1:0").await;
    let me = NodeRef::new(&peer_addr);
    let mut conn = dialer(None).dial(node.addr()).await.expect("dial the node");
    send_frames(&mut conn, &[lookup(&me, 1, "a"), lookup(&me, 2, "b")], 1).await;
    assert_eq!(next_done(&mut answers, 2).await, vec![1, 2]);
    // The peer "restarts": its listener and connections go, and it comes back on the same
    // address.
    peer_task.abort();
    let _ = peer_task.await;
    let (again, mut answers, peer_task) = stand_in(&peer_addr).await;
    assert_eq!(again, peer_addr);
    // The node notices the closed connection and opens a new one; nothing is lost, since
    // nothing was written to the old connection after the peer closed it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_frames(&mut conn, &[lookup(&me, 3, "c"), lookup(&me, 4, "d")], 1).await;
    assert_eq!(next_done(&mut answers, 2).await, vec![3, 4]);
    assert_eq!(counter(&node, |p| &p.connections_opened), 2);
    assert_eq!(counter(&node, |p| &p.messages_dropped_send_error), 0);
    peer_task.abort();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_rejoins_over_new_connections() {
    let boot = bootstrap(None).await;
    let member_options = |port: u16| {
        NodeOptions::new(
            format!("127.0.0.1:{port}").parse().unwrap(),
            Role::Member {
                bootstrap: boot.addr().to_string(),
            },
        )
    };
    let member = NodeServer::start(member_options(0)).await.unwrap();
    let port = member.local_addr().port();
    member.join().await.expect("join");
    let api = common::Api::new(boot.addr());
    assert_eq!(api.insert("before", "1").await.0, 200);
    // A crash and a restart on the same address: the bootstrap's connection to the old
    // process is dead, and the new process must be reached on a new one.
    member.stop().await;
    let member = NodeServer::start(member_options(port)).await.unwrap();
    timeout(STEP, member.join())
        .await
        .expect("in time")
        .expect("rejoin");
    for key in ["after-1", "after-2", "after-3"] {
        let (status, body) = common::Api::new(member.addr()).insert(key, "2").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = api.query("after-2").await;
    assert_eq!((status, body["value"].as_str()), (200, Some("2")), "{body}");
    assert!(counter(&boot, |p| &p.connections_opened) >= 2);
    member.stop().await;
    boot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_latency_delays_every_message() {
    let mut options = ClusterOptions::new(2, config(2));
    options.actor.peers.link_latency = Some(Latency::Const { ns: 20_000_000 });
    let cluster = LocalCluster::start(options).await.expect("the ring forms");
    let api = common::Api::new(&cluster.addrs()[0]);
    let two_hops = Duration::from_millis(40);
    // With two nodes and k = 2 every insert crosses between them at least twice (to the
    // other end of the chain and back), so it takes at least 2 x 20 ms; so does a query
    // sent to the node that is not the key's tail (to the tail and back), while the tail
    // answers one sent to it itself.
    for (i, key) in ["Imagine", "Heroes", "Jolene"].iter().enumerate() {
        let started = Instant::now();
        let (status, body) = api.insert(key, "v").await;
        let insert = started.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(
            insert >= two_hops,
            "insert {i} took {insert:?}, less than two 20 ms hops"
        );
        for via in cluster.addrs() {
            let started = Instant::now();
            let (status, body) = common::Api::new(&via).query(key).await;
            let query = started.elapsed();
            assert_eq!(status, 200, "{body}");
            if body["node"].as_str() == Some(via.as_str()) {
                assert_eq!(
                    body["hops"], 0,
                    "answered by the tail it was sent to: {body}"
                );
            } else {
                assert!(
                    query >= two_hops,
                    "query {i} via {via} took {query:?}, less than two 20 ms hops"
                );
            }
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_processor_bounds_a_nodes_rate() {
    // Two nodes, k = 2, each handling at most one input per 5 ms: 20 concurrent inserts
    // sent to the bootstrap are 20 inputs there at least (more for the keys it heads or
    // routes), so they take at least 20 x 5 ms less the 1 ms of banked credit, and each
    // is still answered.
    let service = Duration::from_millis(5);
    let mut options = ClusterOptions::new(2, config(2));
    options.actor.service = Some(service);
    let cluster = LocalCluster::start(options).await.expect("the ring forms");
    let boot = cluster.addrs()[0].clone();
    let api = common::Api::new(&boot);
    // Settle: the founding's own messages are charged too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.insert(&format!("paced-{i}"), "v").await
        }));
    }
    for task in tasks {
        let (status, body) = task.await.expect("the client task");
        assert_eq!(status, 200, "{body}");
    }
    let took = started.elapsed();
    assert!(
        took >= service * 20 - Duration::from_millis(1),
        "20 inserts through a 5 ms processor took {took:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_count_against_the_connection_limit() {
    let mut options = NodeOptions::new("127.0.0.1:0".parse().unwrap(), Role::Bootstrap(config(1)));
    options.max_connections = 1;
    let node = NodeServer::start(options).await.expect("the node starts");
    let held = dialer(None)
        .dial(node.addr())
        .await
        .expect("the first connection");
    // The node answers 503 and closes at once, possibly before the upgrade request is
    // even written, so the dialler sees either the 503 or a broken upgrade: both mean
    // "not delivered, try again later".
    match dialer(None).dial(node.addr()).await {
        Err(err @ (DialError::Refused { status: 503, .. } | DialError::Upgrade(_))) => {
            assert!(
                err.retryable(),
                "a full node may have room again soon: {err}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(node.metrics().connections_rejected.load(Ordering::Relaxed) >= 1);
    // Closing the peer connection gives its place back.
    drop(held);
    let deadline = Instant::now() + STEP;
    loop {
        match dialer(None).dial(node.addr()).await {
            Ok(_) => break,
            Err(err) if err.retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("the freed place was not reused: {err}"),
        }
    }
    node.stop().await;
}
