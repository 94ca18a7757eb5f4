//! A node serves at most `max_connections` HTTP connections at once: one more gets a
//! complete 503 with a JSON error and is closed, a freed place is usable again at once,
//! and nothing written before is lost.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringkv_core::{ClusterConfig, Consistency, Routing};
use ringkv_runtime::{NodeOptions, NodeServer, Role};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Bound of every single network step of the test.
const STEP: Duration = Duration::from_secs(5);

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
struct Reply {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Send one request on `stream` (kept alive) and read exactly one response, which must
/// carry a content-length.
async fn exchange(stream: &mut TcpStream, method: &str, path: &str) -> std::io::Result<Reply> {
    let request = format!("{method} {path} HTTP/1.1\r\nhost: ringkv\r\ncontent-length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    read_reply(stream).await
}

async fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before a full head: {:?}",
                    String::from_utf8_lossy(&data)
                ),
            ));
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a content-length");
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the full body",
            ));
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Ok(Reply {
        status_line,
        headers,
        body,
    })
}

/// A new connection and one request on it, each step bounded.
async fn connect_and_get(addr: SocketAddr, path: &str) -> std::io::Result<(TcpStream, Reply)> {
    let mut stream = timeout(STEP, TcpStream::connect(addr)).await??;
    let reply = timeout(STEP, exchange(&mut stream, "GET", path)).await??;
    Ok((stream, reply))
}

async fn start_node(max_connections: usize) -> NodeServer {
    let config = ClusterConfig::new(1, Consistency::Chain, Routing::Finger).unwrap();
    let mut options = NodeOptions::new("127.0.0.1:0".parse().unwrap(), Role::Bootstrap(config));
    options.max_connections = max_connections;
    NodeServer::start(options).await.expect("the node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_gets_503_and_a_freed_place_is_reused() {
    let server = start_node(2).await;
    let addr = server.local_addr();

    // Two connections, kept alive: the first writes a key, the second checks health.
    let mut first = timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let reply = timeout(STEP, exchange(&mut first, "POST", "/insert/Imagine/1971"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reply.status(),
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let (second, reply) = connect_and_get(addr, "/health").await.unwrap();
    assert_eq!(reply.status(), 200);

    // A third one is refused with a complete 503 and then closed.
    let mut third = timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let reply = timeout(STEP, exchange(&mut third, "GET", "/health"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    let body = reply.json();
    assert_eq!(body["code"], "too_many_connections", "{body}");
    assert_eq!(body["max_connections"], 2, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("connections"),
        "{body}"
    );
    let mut rest = Vec::new();
    let closed = timeout(STEP, third.read_to_end(&mut rest)).await.unwrap();
    assert!(
        matches!(closed, Ok(0)),
        "the server closes a refused connection: {closed:?}"
    );
    assert!(
        server
            .metrics()
            .connections_rejected
            .load(Ordering::Relaxed)
            >= 1
    );

    // The held connections still work.
    let mut second = second;
    let reply = timeout(STEP, exchange(&mut second, "GET", "/health"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 200);

    // Closing one frees its place: a new connection is served again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut fresh = loop {
        assert!(
            Instant::now() < deadline,
            "a freed place was not reused within 2 s"
        );
        match connect_and_get(addr, "/health").await {
            Ok((stream, reply)) if reply.status() == 200 => break stream,
            Ok((_, reply)) => assert_eq!(reply.status(), 503, "{reply:?}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Nothing was lost: the key written before the limit was reached is still there.
    let reply = timeout(STEP, exchange(&mut fresh, "GET", "/query/Imagine"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json()["value"], "1971");
    let reply = timeout(STEP, exchange(&mut fresh, "GET", "/metrics"))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&reply.body);
    let rejected: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ringkv_connections_rejected_total "))
        .expect("the counter is exposed")
        .parse()
        .unwrap();
    assert!(rejected >= 1, "{text}");

    drop(second);
    drop(fresh);
    timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_do_not_hold_up_the_accept_loop() {
    let server = start_node(1).await;
    let addr = server.local_addr();
    let (mut held, reply) = connect_and_get(addr, "/health").await.unwrap();
    assert_eq!(reply.status(), 200);

    // Clients that connect and never send or read anything are refused without
    // stalling the others.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            timeout(STEP, TcpStream::connect(addr))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let (_, reply) = connect_and_get(addr, "/health").await.unwrap();
    assert_eq!(reply.status(), 503);
    let reply = timeout(STEP, exchange(&mut held, "GET", "/health"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        server
            .metrics()
            .connections_rejected
            .load(Ordering::Relaxed)
            >= 9
    );

    drop(silent);
    drop(held);
    timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the node stops");
}
