//! Bad input from clients and peers: a typed error, no panic, no state change. And the
//! determinism the simulator relies on.

mod common;

use common::{addr, cluster, Pump};
use proptest::prelude::*;
use ringkv_core::{
    ClusterConfig, Consistency, Envelope, Input, Node, NodeConfig, Request, RequestError, Response,
    Routing,
};

fn snapshot(pump: &Pump) -> Vec<String> {
    pump.nodes
        .values()
        .map(|n| {
            format!(
                "{:?} {:?} {:?}",
                n.phase(),
                n.view(),
                n.store().iter().collect::<Vec<_>>()
            )
        })
        .collect()
}

#[test]
fn invalid_requests_get_typed_errors_and_change_nothing() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 4);
    pump.call(
        &addr(1),
        Request::Insert {
            key: "a".into(),
            value: "1".into(),
        },
    )
    .unwrap();
    let before = snapshot(&pump);
    let huge_key = "k".repeat(2000);
    let huge_value = "v".repeat((1 << 20) + 1);
    let cases = [
        (
            Request::Insert {
                key: String::new(),
                value: "x".into(),
            },
            RequestError::EmptyKey,
        ),
        (
            Request::Query { key: String::new() },
            RequestError::EmptyKey,
        ),
        (
            Request::Delete { key: String::new() },
            RequestError::EmptyKey,
        ),
        (
            Request::Insert {
                key: huge_key.clone(),
                value: "x".into(),
            },
            RequestError::KeyTooLarge {
                len: 2000,
                max: 1024,
            },
        ),
        (
            Request::Insert {
                key: "b".into(),
                value: huge_value,
            },
            RequestError::ValueTooLarge {
                len: (1 << 20) + 1,
                max: 1 << 20,
            },
        ),
        (Request::Join, RequestError::AlreadyJoined),
        (
            Request::Depart,
            RequestError::BootstrapCannotDepart { others: 3 },
        ),
    ];
    for (request, want) in cases {
        let via = if matches!(request, Request::Depart) {
            addr(0)
        } else {
            addr(2)
        };
        assert_eq!(pump.call(&via, request), Err(want));
    }
    assert_eq!(snapshot(&pump), before);
}

#[test]
fn a_node_outside_the_ring_refuses_data_requests() {
    let mut pump = Pump::ring(cluster(2, Consistency::Eventual, Routing::Finger), 3);
    let outsider = "10.9.9.9:5000".to_string();
    pump.nodes.insert(
        outsider.clone(),
        Node::new(NodeConfig::member(&outsider, addr(0), 1)),
    );
    for request in [
        Request::Insert {
            key: "a".into(),
            value: "1".into(),
        },
        Request::Query { key: "a".into() },
        Request::Delete { key: "a".into() },
        Request::QueryAll,
        Request::Overlay,
        Request::Depart,
    ] {
        assert_eq!(pump.call(&outsider, request), Err(RequestError::NotJoined));
    }
    // After a depart the node is outside again, and says so.
    pump.depart(&addr(1));
    let reply = pump.call(&addr(1), Request::Query { key: "a".into() });
    assert_eq!(reply, Err(RequestError::NotJoined));
    // And it can come back.
    pump.join(&addr(1));
    assert!(pump
        .call(&addr(1), Request::Query { key: "a".into() })
        .is_ok());
}

#[test]
fn an_absent_key_is_not_found_not_an_error() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 3);
    let reply = pump.call(
        &addr(1),
        Request::Query {
            key: "nothing here".into(),
        },
    );
    assert!(matches!(reply, Ok(Response::NotFound { .. })), "{reply:?}");
}

#[test]
fn forged_or_misdirected_peer_messages_are_rejected_without_change() {
    let mut pump = Pump::ring(cluster(3, Consistency::Chain, Routing::Finger), 4);
    let before = snapshot(&pump);
    let member = addr(2);
    // A commit that does not come from the coordinator (of the coordinator's term).
    let forged = Envelope {
        from: ringkv_core::NodeRef::new(&addr(3)),
        msg: ringkv_core::Message::Commit {
            epoch: 99,
            term: 1,
            failed: Vec::new(),
            hold_leases: false,
            seats: vec![ringkv_core::NodeRef::new(&addr(3))],
        },
    };
    let mut out = Vec::new();
    let node = pump.nodes.get_mut(&member).unwrap();
    assert!(node.handle(1, Input::Message(forged), &mut out).is_err());
    // Coordination messages sent to a node that is not the bootstrap.
    let ready = Envelope {
        from: ringkv_core::NodeRef::new(&addr(3)),
        msg: ringkv_core::Message::Ready { epoch: 1 },
    };
    assert!(node.handle(2, Input::Message(ready), &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(snapshot(&pump), before);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never make the message decoder panic.
    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Envelope>(&bytes);
    }

    /// Every message the core sends survives a JSON round trip unchanged.
    #[test]
    fn messages_round_trip_through_json(key in "\\PC{1,40}", value in "\\PC{0,40}") {
        let mut pump = Pump::ring(cluster(2, Consistency::Chain, Routing::Finger), 3);
        let mut out = Vec::new();
        let node = pump.nodes.get_mut(&addr(1)).unwrap();
        let _ = node.handle(5, Input::Request { id: 1, request: Request::Insert { key, value } }, &mut out);
        for o in out {
            if let ringkv_core::Output::Send { envelope, .. } = o {
                let json = serde_json::to_vec(&envelope).unwrap();
                prop_assert_eq!(serde_json::from_slice::<Envelope>(&json).unwrap(), envelope);
            }
        }
    }
}

#[test]
fn same_inputs_give_byte_identical_outputs() {
    let run = || {
        let mut pump =
            Pump::ring(cluster(3, Consistency::Eventual, Routing::Finger), 8).with_reordering(77);
        pump.record = true;
        for i in 0..200 {
            pump.submit(
                &addr(i % 8),
                Request::Insert {
                    key: format!("k{}", i % 13),
                    value: format!("v{i}"),
                },
            );
            pump.step();
        }
        pump.depart(&addr(3));
        pump.drive();
        pump.log.join("\n")
    };
    let (a, b) = (run(), run());
    assert!(a.len() > 10_000);
    assert_eq!(a, b);
}

#[test]
fn bad_cluster_settings_are_refused() {
    assert!(ClusterConfig::new(0, Consistency::Chain, Routing::Finger).is_err());
    assert!(ClusterConfig::new(65, Consistency::Chain, Routing::Finger).is_err());
    assert!("strongish".parse::<Consistency>().is_err());
    assert!("fingers".parse::<Routing>().is_ok());
}

/// The core stays free of IO: no async runtime, HTTP or socket crate among its
/// dependencies.
#[test]
fn core_depends_on_no_io_crate() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
    let deps = deps.split("\n[").next().unwrap_or("");
    for forbidden in [
        "tokio",
        "axum",
        "hyper",
        "reqwest",
        "async-std",
        "mio",
        "socket2",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "core must not depend on {forbidden}"
        );
    }
}

/// A prepare whose view lists fewer neighbours than its ring needs used to be installed,
/// and the node's next write panicked on `succs[0]`. Decoding now refuses it, and a node
/// handed one in memory refuses it too: nothing changes, and the node goes on serving.
#[test]
fn a_malformed_prepare_is_refused_and_never_installed() {
    use ringkv_core::{ChainStep, Message, NodeRef, Prepare, Rejected, View};
    let config = cluster(3, Consistency::Chain, Routing::Finger);
    let mut pump = Pump::ring(config, 5);
    let before = snapshot(&pump);
    let bad = Prepare {
        view: View {
            epoch: 99,
            ring_size: 5,
            preds: Vec::new(),
            succs: Vec::new(),
        },
        config,
        sources: Vec::new(),
        fingers: None,
        resync: false,
        term: 1,
        decided: 0,
        pieces: Vec::new(),
    };
    let from_coordinator = |msg| Envelope {
        from: NodeRef::new(&addr(0)),
        msg,
    };
    let envelope = from_coordinator(Message::Prepare(bad));
    let json = serde_json::to_string(&envelope).unwrap();
    let decoded = serde_json::from_str::<Envelope>(&json);
    assert!(
        decoded.unwrap_err().to_string().contains("predecessors"),
        "decoding names what is wrong"
    );
    let step = ChainStep {
        origin: None,
        key: "k".into(),
        entry: ringkv_core::Entry {
            value: Some("v".into()),
            version: ringkv_core::Version {
                counter: 1,
                node: ringkv_core::Id::ZERO,
            },
        },
        existed: false,
        position: 4,
        chain_len: 3,
        hops: 0,
        ttl: 1,
    };
    let json = serde_json::to_string(&from_coordinator(Message::ChainWrite(step.clone()))).unwrap();
    assert!(serde_json::from_str::<Envelope>(&json).is_err());
    let node = pump.nodes.get_mut(&addr(2)).unwrap();
    let mut out = Vec::new();
    for msg in [envelope.msg, Message::ChainWrite(step)] {
        let err = node.handle(1, Input::Message(from_coordinator(msg)), &mut out);
        assert!(matches!(err, Err(Rejected::Malformed { .. })), "{err:?}");
    }
    assert!(out.is_empty());
    assert_eq!(snapshot(&pump), before);
    let insert = Request::Insert {
        key: "after".into(),
        value: "1".into(),
    };
    assert!(pump.call(&addr(2), insert).is_ok());
}
