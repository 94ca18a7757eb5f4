//! Benchmark of the consistency checker: a synthetic 100,000-operation history over
//! 1,000 keys from 32 processes, parsed from JSON Lines and checked (linearizability
//! and staleness). Run with `cargo bench -p ringkv-sim --bench check`; the figures are
//! printed and written to `results/check_bench.txt`.
// A benchmark measures wall time: that is its job.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use ringkv_sim::check::{
    check_linearizability, staleness, synthetic_history, write_event, CheckOptions, History,
    SynthOptions, Verdict,
};

const RUNS: usize = 5;

struct Timing {
    parse: Duration,
    check: Duration,
    stale: Duration,
}

impl Timing {
    fn total(&self) -> Duration {
        self.parse + self.check + self.stale
    }
}

fn run(text: &[u8], opts: &CheckOptions) -> Result<Timing, String> {
    let t0 = Instant::now();
    let history = History::parse(text).map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    let report = check_linearizability(&history, opts);
    let t2 = Instant::now();
    let stale = staleness(&history);
    let t3 = Instant::now();
    if report.verdict != Verdict::Linearizable || stale.total.stale_reads != 0 {
        return Err(format!("unexpected verdict {:?}", report.verdict));
    }
    Ok(Timing {
        parse: t1 - t0,
        check: t2 - t1,
        stale: t3 - t2,
    })
}

fn median(mut runs: Vec<Timing>) -> Timing {
    runs.sort_by_key(Timing::total);
    runs.swap_remove(runs.len() / 2)
}

fn measure(text: &[u8], opts: &CheckOptions) -> Result<Timing, String> {
    let runs = (0..RUNS)
        .map(|_| run(text, opts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(median(runs))
}

/// For information: the same size of history on a single hot key.
fn hot_key() -> Result<String, String> {
    let synth = SynthOptions {
        seed: 2024,
        ops: 100_000,
        keys: 1,
        processes: 32,
        info_rate: 0.01,
        fail_rate: 0.01,
        nodes: 8,
        ..SynthOptions::default()
    };
    let mut text = Vec::new();
    for e in &synthetic_history(&synth) {
        write_event(&mut text, e).map_err(|e| e.to_string())?;
    }
    let t = measure(&text, &CheckOptions::default())?;
    Ok(format!(
        "(for information: one hot key, 100000 ops from 32 processes: total {:.3} s, \
         linearizability {:.3} s)\n",
        t.total().as_secs_f64(),
        t.check.as_secs_f64()
    ))
}

fn main() -> Result<(), String> {
    let synth = SynthOptions {
        seed: 2024,
        ops: 100_000,
        keys: 1000,
        processes: 32,
        read_rate: 0.5,
        delete_rate: 0.05,
        info_rate: 0.01,
        fail_rate: 0.01,
        value_domain: None,
        nodes: 8,
        max_duration: 1000,
    };
    let events = synthetic_history(&synth);
    let mut text = Vec::new();
    for e in &events {
        write_event(&mut text, e).map_err(|e| e.to_string())?;
    }
    let par = measure(&text, &CheckOptions::default())?;
    let seq = measure(
        &text,
        &CheckOptions {
            parallel: false,
            ..CheckOptions::default()
        },
    )?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let secs = par.total().as_secs_f64();
    let mut out = String::new();
    out.push_str("dht check benchmark (cargo bench -p ringkv-sim --bench check, release)\n");
    out.push_str(&format!(
        "history: {} ops ({} events, {:.1} MB JSONL) over {} keys from {} processes, \
         1% info, 1% fail, seed {}\n",
        synth.ops,
        events.len(),
        text.len() as f64 / 1e6,
        synth.keys,
        synth.processes,
        synth.seed
    ));
    out.push_str(&format!("machine: {cores} cores; median of {RUNS} runs\n"));
    for (name, t) in [("parallel keys", &par), ("one thread", &seq)] {
        out.push_str(&format!(
            "{name:>13}: total {:.3} s = parse {:.3} s + linearizability {:.3} s + staleness {:.3} s \
             ({:.0} ops/s)\n",
            t.total().as_secs_f64(),
            t.parse.as_secs_f64(),
            t.check.as_secs_f64(),
            t.stale.as_secs_f64(),
            synth.ops as f64 / t.total().as_secs_f64()
        ));
    }
    out.push_str(&format!(
        "target: < 2 s: {}\n",
        if secs < 2.0 { "met" } else { "NOT met" }
    ));
    out.push_str(&hot_key()?);
    print!("{out}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/check_bench.txt");
    std::fs::write(path, out).map_err(|e| format!("{path}: {e}"))?;
    Ok(())
}
