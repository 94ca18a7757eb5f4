//! Randomized tests of the linearizability checker: synthetic linearizable histories,
//! mutated reads, and a cross-check against brute-force enumeration of all orders.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_sim::check::{
    check_linearizability, staleness, synthetic_history, CheckOptions, EventType, History,
    HistoryEvent, KeyVerdict, OpKind, OpStatus, Operation, SynthOptions, Verdict,
};

fn random_synth(seed: u64) -> SynthOptions {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    SynthOptions {
        seed,
        ops: rng.gen_range(1..200),
        keys: rng.gen_range(1..5),
        processes: rng.gen_range(1..8),
        read_rate: rng.gen_range(0.2..0.7),
        delete_rate: rng.gen_range(0.0..0.2),
        info_rate: rng.gen_range(0.0..0.15),
        fail_rate: rng.gen_range(0.0..0.15),
        value_domain: if rng.gen_bool(0.5) {
            Some(rng.gen_range(1..4))
        } else {
            None
        },
        nodes: 3,
        max_duration: rng.gen_range(1..300),
    }
}

#[test]
fn check_synthetic_histories_are_linearizable() {
    for seed in 0..300 {
        let events = synthetic_history(&random_synth(seed));
        let h = History::from_events(events).expect("generated history is valid");
        let r = check_linearizability(&h, &CheckOptions::default());
        assert_eq!(r.verdict, Verdict::Linearizable, "seed {seed}: {r:?}");
    }
    let big = SynthOptions {
        seed: 7,
        ops: 20_000,
        keys: 50,
        processes: 32,
        info_rate: 0.01,
        fail_rate: 0.01,
        ..SynthOptions::default()
    };
    let h = History::from_events(synthetic_history(&big)).expect("valid");
    assert_eq!(
        check_linearizability(&h, &CheckOptions::default()).verdict,
        Verdict::Linearizable
    );
    assert_eq!(staleness(&h).total.stale_reads, 0);
}

#[test]
fn check_mutated_read_is_flagged() {
    let mut flagged = 0;
    for seed in 0..200 {
        let mut events = synthetic_history(&random_synth(seed));
        let reads: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].f == OpKind::Read && events[i].kind == EventType::Ok)
            .collect();
        if reads.is_empty() {
            continue;
        }
        let victim = reads[seed as usize % reads.len()];
        events[victim].value = Some("impossible".to_string());
        let h = History::from_events(events).expect("valid");
        let r = check_linearizability(&h, &CheckOptions::default());
        assert_eq!(r.verdict, Verdict::Violation, "seed {seed}");
        let cx = r.counterexamples().next().expect("counterexample");
        assert_eq!(cx.ops.len(), 1, "seed {seed}: {}", cx.explanation);
        assert_eq!(cx.ops[0].value.as_deref(), Some("impossible"));
        assert_eq!(cx.ops[0].complete_line, Some(victim + 1));
        flagged += 1;
    }
    assert!(flagged > 150);
}

/// A random small history on one key: up to 4 clients, up to 4 values, random outcomes.
fn small_history(rng: &mut ChaCha8Rng) -> Vec<HistoryEvent> {
    const VALUES: [&str; 4] = ["a", "b", "c", "d"];
    let n_ops = rng.gen_range(1..=8);
    let clients = rng.gen_range(1..=4);
    let domain = rng.gen_range(1..=4);
    let mut active: Vec<Option<(OpKind, Option<String>)>> = vec![None; clients];
    let mut pid: Vec<u64> = (0..clients as u64).collect();
    let (mut next_pid, mut started, mut time) = (clients as u64, 0, 0u64);
    let mut out = Vec::new();
    loop {
        let c = rng.gen_range(0..clients);
        time += rng.gen_range(0..3);
        match active[c].take() {
            None if started < n_ops => {
                let f = [OpKind::Write, OpKind::Read, OpKind::Delete][rng.gen_range(0..3)];
                let v = (f == OpKind::Write).then(|| VALUES[rng.gen_range(0..domain)].to_string());
                out.push(HistoryEvent::invoke(pid[c], f, "k", v.as_deref(), time));
                active[c] = Some((f, v));
                started += 1;
            }
            None => {
                if active.iter().all(Option::is_none) || rng.gen_bool(0.1) {
                    return out;
                }
            }
            Some((f, v)) => {
                let kind = match rng.gen_range(0..10) {
                    0 => EventType::Info,
                    1 => EventType::Fail,
                    _ => EventType::Ok,
                };
                let value = match (f, kind) {
                    (OpKind::Read, EventType::Ok) => match rng.gen_range(0..=domain) {
                        0 => None,
                        k => Some(VALUES[k - 1]),
                    },
                    _ => v.as_deref(),
                };
                out.push(HistoryEvent::new(pid[c], kind, f, "k", value, time));
                if kind == EventType::Info {
                    pid[c] = next_pid;
                    next_pid += 1;
                }
            }
        }
    }
}

/// Brute force: is there an order of the ok operations plus any subset of the
/// info/pending writes that respects precedence and register semantics?
fn brute_linearizable(ops: &[&Operation]) -> bool {
    let ops: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| o.status != OpStatus::Fail && (o.f != OpKind::Read || o.status == OpStatus::Ok))
        .collect();
    let mut placed = vec![false; ops.len()];
    dfs(&ops, &mut placed, None)
}

fn dfs(ops: &[&Operation], placed: &mut Vec<bool>, state: Option<&str>) -> bool {
    let required = |j: usize| ops[j].status == OpStatus::Ok;
    if (0..ops.len()).all(|j| placed[j] || !required(j)) {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] || (0..ops.len()).any(|j| !placed[j] && j != i && ops[j].precedes(ops[i])) {
            continue;
        }
        let next = match ops[i].f {
            OpKind::Write => ops[i].value.as_deref(),
            OpKind::Delete => None,
            OpKind::Read if ops[i].value.as_deref() == state => state,
            OpKind::Read => continue,
        };
        placed[i] = true;
        if dfs(ops, placed, next) {
            return true;
        }
        placed[i] = false;
    }
    false
}

#[test]
fn check_matches_brute_force_on_small_histories() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (mut lin, mut viol) = (0, 0);
    for case in 0..8000 {
        let events = small_history(&mut rng);
        let text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).expect("json") + "\n")
            .collect();
        let h = History::parse_str(&text).expect("valid small history");
        let all: Vec<&Operation> = h.ops.iter().collect();
        let expected = brute_linearizable(&all);
        let r = check_linearizability(
            &h,
            &CheckOptions {
                parallel: false,
                ..CheckOptions::default()
            },
        );
        let got = r.verdict == Verdict::Linearizable;
        assert_eq!(got, expected, "case {case}:\n{text}");
        if expected {
            lin += 1;
            continue;
        }
        viol += 1;
        let KeyVerdict::Violation { counterexample } = &r.results["k"].verdict else {
            panic!("case {case}: no counterexample");
        };
        assert!(counterexample.minimal);
        let sub: Vec<&Operation> = counterexample.ops.iter().map(|o| &h.ops[o.op]).collect();
        assert!(
            !brute_linearizable(&sub),
            "case {case}: counterexample is linearizable:\n{text}"
        );
    }
    assert!(lin > 1000 && viol > 1000, "lin {lin}, viol {viol}");
}

#[test]
fn check_never_panics_on_mangled_input() {
    use ringkv_sim::check::{render_html, write_event};
    let opts = SynthOptions {
        ops: 40,
        keys: 2,
        processes: 3,
        info_rate: 0.1,
        ..SynthOptions::default()
    };
    let mut text = Vec::new();
    for e in synthetic_history(&opts) {
        write_event(&mut text, &e).expect("write");
    }
    let alphabet = b"{}[]\",:0123456789-.e nulltrueinvokeokfailinfowritereaddelete\n\\";
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = text.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes[at] = alphabet[rng.gen_range(0..alphabet.len())],
                _ => bytes.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
            }
        }
        match History::parse(bytes.as_slice()) {
            Ok(h) => {
                let r = check_linearizability(&h, &CheckOptions::default());
                let _ = staleness(&h);
                let _ = render_html(&h, &r);
                ok += 1;
            }
            Err(e) => {
                assert!(e.line >= 1 && !e.message.is_empty());
                err += 1;
            }
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
