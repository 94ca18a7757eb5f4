//! The reference workloads run end to end: CRLF lines, titles with `?`, `/`, `'`, `&`
//! and parentheses, per-node and single files, from the embedded copies or a directory.

use ringkv_core::Consistency;
use ringkv_sim::check::{History, OpKind, OpStatus};
use ringkv_sim::workload::SOURCE_DIR;
use ringkv_sim::{Reference, SimConfig, Simulation, WorkloadSpec};

fn run(workload: Reference, consistency: Consistency) -> (ringkv_sim::Summary, History) {
    let config = SimConfig {
        seed: 11,
        consistency,
        workload: WorkloadSpec::Reference(workload),
        ..SimConfig::default()
    };
    let r = Simulation::new(config).unwrap().run();
    let history = History::parse(r.history.as_slice()).unwrap();
    (r.summary, history)
}

#[test]
fn every_reference_workload_completes() {
    let all = [
        (Reference::Insert, 500),
        (Reference::Query, 1000),
        (Reference::Requests, 500),
        (Reference::InsertFile, 500),
        (Reference::QueryFile, 1000),
        (Reference::RequestsFile, 500),
    ];
    for consistency in [Consistency::Chain, Consistency::Eventual, Consistency::Craq] {
        for (workload, ops) in all {
            let (s, history) = run(workload, consistency);
            assert_eq!(s.ops_ok, ops, "{workload:?} {consistency}: {s}");
            assert_eq!(history.ops.len() as u64, ops);
            assert_eq!(s.invariant_violations, 0, "{s}");
        }
    }
}

#[test]
fn odd_titles_are_stored_and_read_back() {
    let (s, history) = run(Reference::Query, Consistency::Chain);
    assert_eq!(
        s.keys_stored, 496,
        "496 distinct titles in the insert files"
    );
    let keys = history.keys();
    for c in ['?', '/', '\'', '&', '(', ')'] {
        assert!(keys.iter().any(|k| k.contains(c)), "no title with {c}");
    }
    assert!(keys.iter().all(|k| !k.contains('\r')));
    // Queries run after every insert (phase barrier), on a quiet chain ring: every query
    // of an inserted title finds a value.
    let reads: Vec<_> = history.ops.iter().filter(|o| o.f == OpKind::Read).collect();
    assert_eq!(reads.len(), 500);
    assert!(reads
        .iter()
        .all(|o| o.status == OpStatus::Ok && o.value.is_some()));
}

#[test]
fn a_workload_directory_gives_the_same_run() {
    let embedded = SimConfig {
        workload: WorkloadSpec::Reference(Reference::Requests),
        ..SimConfig::default()
    };
    let from_dir = SimConfig {
        workload_dir: Some(SOURCE_DIR.into()),
        ..embedded.clone()
    };
    let a = Simulation::new(embedded).unwrap().run();
    let b = Simulation::new(from_dir).unwrap().run();
    assert!(a.history == b.history);
    let missing = SimConfig {
        workload_dir: Some("/nonexistent".into()),
        ..SimConfig::default()
    };
    let err = Simulation::new(missing).unwrap_err().to_string();
    assert!(err.contains("requests_00.txt"), "{err}");
}

#[test]
fn fewer_clients_than_files_take_several_files() {
    for clients in [1, 3, 17] {
        let config = SimConfig {
            clients: Some(clients),
            ..SimConfig::default()
        };
        let s = Simulation::new(config).unwrap().run().summary;
        assert_eq!(s.ops_ok, 500, "{clients} clients");
    }
}
