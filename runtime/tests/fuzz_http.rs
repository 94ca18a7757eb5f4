//! Bad input over real HTTP: random paths (invalid percent-encoding, invalid UTF-8, huge
//! or empty keys), random bodies and unknown fields on the public and internal endpoints.
//! Every answer is a JSON error (4xx) or a normal answer; no request kills a node or
//! changes what it stores.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Api;
use proptest::prelude::*;
use ringkv_core::{ClusterConfig, Consistency, Routing};
use ringkv_runtime::{ClusterOptions, LocalCluster};

/// Send raw bytes as one HTTP/1.1 request and return (status, body).
fn raw(addr: &str, method: &str, path: &[u8], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(path);
    let head = format!(
        " HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).expect("write");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Printable ASCII that needs no encoding.
        "[A-Za-z0-9._~-]{0,20}".prop_map(|s| s.into_bytes()),
        // Percent escapes of arbitrary bytes: invalid UTF-8 included.
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| b
            .iter()
            .flat_map(|x| format!("%{x:02X}").into_bytes())
            .collect()),
        // Broken escapes.
        Just(b"%G1".to_vec()),
        Just(b"%".to_vec()),
        Just(b"%E2%82".to_vec()),
        // A key over the size limit.
        Just(vec![b'k'; 5000]),
    ]
}

#[test]
fn random_requests_get_json_answers_and_change_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = ClusterConfig::new(2, Consistency::Chain, Routing::Finger).unwrap();
    let cluster = rt
        .block_on(LocalCluster::start(ClusterOptions::new(3, config)))
        .expect("ring");
    let addr = cluster.addrs()[1].clone();
    let api = Api::new(&addr);
    let (status, _) = rt.block_on(api.insert("keep", "me"));
    assert_eq!(status, 200);
    let before = rt.block_on(api.get("/query/*")).1;

    let cases = ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(cases);
    // Valid inserts (a random printable key) may succeed: remember them.
    let accepted = std::cell::RefCell::new(Vec::<String>::new());
    let strategy = (
        prop_oneof![
            Just(("GET", "/query/")),
            Just(("DELETE", "/delete/")),
            Just(("POST", "/insert/")),
            Just(("POST", "/internal/message/")),
            Just(("POST", "/no/such/")),
        ],
        segment(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&strategy, |((method, prefix), seg, body)| {
            let mut path = prefix.as_bytes().to_vec();
            path.extend_from_slice(&seg);
            if prefix == "/insert/" {
                path.extend_from_slice(b"/value");
            }
            let (status, text) = raw(&addr, method, &path, &body);
            if prefix == "/insert/" && status == 200 {
                let key = percent_encoding::percent_decode(&seg)
                    .decode_utf8_lossy()
                    .to_string();
                accepted.borrow_mut().push(key);
            }
            prop_assert!(
                status != 0 && status < 500,
                "{method} {:?} -> {status} {text}",
                String::from_utf8_lossy(&path)
            );
            if status >= 400 {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
                prop_assert!(json["error"].is_string(), "{text}");
            }
            Ok(())
        })
        .unwrap();
    // Random bodies on the JSON endpoints.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 100,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..256), |body| {
            for path in [&b"/insert"[..], b"/internal/message"] {
                let (status, text) = raw(&addr, "POST", path, &body);
                prop_assert!((400..500).contains(&status), "{status} {text}");
            }
            Ok(())
        })
        .unwrap();
    // Unknown fields and wrong types in an otherwise well-formed insert.
    for body in [
        r#"{"key":"a","value":"b","extra":1}"#,
        r#"{"key":1,"value":"b"}"#,
        r#"{"key":"","value":"b"}"#,
    ] {
        let (status, text) = raw(&addr, "POST", b"/insert", body.as_bytes());
        assert!(
            status == 200 || (400..500).contains(&status),
            "{body}: {status} {text}"
        );
    }
    // Nothing random reached the store (the one well-formed insert above aside).
    let after = rt.block_on(api.get("/query/*")).1;
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v["pairs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["key"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let accepted = accepted.into_inner();
    let mut grown = keys(&after);
    grown.retain(|k| k != "a" && !accepted.contains(k));
    assert_eq!(grown, keys(&before));
    rt.block_on(cluster.shutdown());
}
