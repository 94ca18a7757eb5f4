//! `crash_real.md` (or `crash_bootstrap.md`, `crash_pause.md`, `crash_partition.md`): the
//! command, the setup in words, the event times, totals and verdicts, the keys per node,
//! the plot and the per-second table.

use ringkv_sim::check::{OpKind, OpStatus};

use super::analysis::Row;
use super::report::{command, trim};
use super::settings::Fault;
use super::timeline::Failover;
use super::{Run, Victim, KILL_AT, KILL_FOR_GOOD_AT, LOAD_AFTER_DEPART, READ_ATTEMPTS, RESTART_AT};
use crate::runner::{fixed, machine_facts, ops, today, Options};

/// Lost writes described in the Markdown.
const LOST_SHOWN_MAX: usize = 20;

/// The Markdown report of a run.
pub(super) fn markdown(run: &Run, options: &Options, rows: &[Row]) -> String {
    let mut md = intro(run, options);
    md.push_str("| | |\n|---|---|\n");
    for (k, v) in facts(run) {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str(
        "\nA write counts as lost when a final read of its key, through any node, returns \
         neither an insert that may still be the key's value nor one with an unknown outcome: \
         an acknowledged insert is overwritten once another acknowledged insert of the key \
         began after it ended (the simulator's check, `ringkv_sim::final_reads`).\n\n",
    );
    md.push_str(&fault_table(run));
    md.push_str(&node_table(run));
    let stem = run.settings.stem();
    md.push_str(&format!("\n![ok operations per second]({stem}.png)\n\n"));
    md.push_str(&window_table(rows, stem));
    md.push_str(&failures(run));
    md
}

/// The title, the command and the setup in words.
fn intro(run: &Run, options: &Options) -> String {
    let s = &run.settings;
    let title = match (s.fault, s.victim) {
        (Fault::Kill, Victim::Successors) => "Crash-stop of real node processes under load",
        (Fault::Kill, Victim::Bootstrap) => "Crash-stop of the bootstrap process under load",
        (Fault::Pause, _) => "Pause (SIGSTOP) of a real node process under load",
        (Fault::Partition, _) => "Network partition of real node processes under load",
    };
    let mut md = format!("# {title}\n\n");
    md.push_str(&format!(
        "Written by `dht experiment crash` on {} ({}).\n\n```sh\n{}\n```\n\n",
        today(),
        machine_facts(),
        command(run, options)
    ));
    md.push_str(&format!(
        "A ring of {n} separate `dht` processes on 127.0.0.1 (one `dht bootstrap`, {} \
         `dht node --join`), k = {}, chain replication, failure handling on (heartbeats, \
         removal after {} s of silence, anti-entropy every 2 s), request timeout {} ms. {} \
         closed-loop HTTP clients, one request at a time each to a random node that is up, \
         on {} keys, {}% inserts and {}% queries, for {} s. ",
        s.nodes - 1,
        s.k,
        trim(s.failure_timeout.as_secs_f64()),
        s.request_timeout.as_millis(),
        s.clients,
        s.keys,
        fixed(100.0 * s.write_ratio, 0),
        fixed(100.0 * (1.0 - s.write_ratio), 0),
        trim(run.duration.as_secs_f64()),
        n = s.nodes,
    ));
    md.push_str(&match (s.fault, s.victim) {
        (Fault::Pause, _) => format!(
            "At {}% of the load, SIGSTOP of {} member that is not the bootstrap (the \
             bootstrap's successor): the process keeps its state and its sockets but runs no \
             more. The clients stop sending new requests to it, as they would to a killed \
             node (those already sent to it wait). At {}% ({} s later) it gets SIGCONT and \
             is put back in the clients' list at once, whatever it still believes, so that \
             its answers are checked too.",
            fixed(100.0 * KILL_AT, 0),
            run.victims.len(),
            fixed(100.0 * RESTART_AT, 0),
            fixed(run.tl.restart_s - run.tl.kill_s, 2),
        ),
        (Fault::Partition, _) => format!(
            "At {}% of the load, a network partition: the bootstrap's next {} successors, \
             consecutive on the ring, on one side and the other {} nodes (the bootstrap's \
             side, a majority) on the other. Each node drops every node-to-node message to \
             and from the other side, through its test-only transport filter (`POST \
             /admin/partition`, nodes started with `--allow-fault-injection` and a cluster \
             secret of the run's own); the connections stay open. At {}% ({} s later) the \
             filters are emptied. The clients are on neither side: they go on sending to \
             every node, so the answers of the cut-off side are checked too.",
            fixed(100.0 * KILL_AT, 0),
            run.victims.len(),
            s.nodes - run.victims.len(),
            fixed(100.0 * RESTART_AT, 0),
            fixed(run.tl.restart_s - run.tl.kill_s, 2),
        ),
        (Fault::Kill, Victim::Successors) => format!(
            "At {}% of the load, `kill -9` (SIGKILL) of k − 1 = {} members that are \
             consecutive on the ring (the bootstrap's next successors, so the keys they share \
             with the bootstrap keep one live replica); at {}% they are started again on their \
             addresses and rejoin empty.",
            fixed(100.0 * KILL_AT, 0),
            run.victims.len(),
            fixed(100.0 * RESTART_AT, 0),
        ),
        (Fault::Kill, Victim::Bootstrap) => bootstrap_schedule(run),
    });
    md.push_str(" Times are seconds since the load began.\n\n");
    md
}

/// The bootstrap scenario in words.
fn bootstrap_schedule(run: &Run) -> String {
    let entry = run
        .tl
        .failover
        .as_ref()
        .map_or("a member", |f| &run.addrs[f.entry]);
    format!(
        "At {}% of the load, `kill -9` (SIGKILL) of the bootstrap; at {}% it is started \
         again with its command and `--rejoin` (`dht bootstrap` on its port; its ring runs), finds \
         its ring through the members' greetings and rejoins it as a fresh, empty incarnation \
         that is refilled. At {}%, once it is back, it is killed for good; while it stays \
         down a new `dht node --join` is started with `--bootstrap {entry}` (a member), and \
         once it has joined the last member started departs (`dht depart`). The clients \
         leave a node out from its kill or its depart on, and send to it (or to the new \
         node) once it is in the ring: they never need the bootstrap. The load runs at least \
         {} s past the depart (here until {} s).",
        fixed(100.0 * KILL_AT, 0),
        fixed(100.0 * RESTART_AT, 0),
        fixed(100.0 * KILL_FOR_GOOD_AT, 0),
        LOAD_AFTER_DEPART.as_secs(),
        fixed(run.tl.load_end_s, 2),
    )
}

/// The rows of the summary: settings, event times, totals, verdicts.
fn facts(run: &Run) -> Vec<(String, String)> {
    let s = &run.settings;
    let mut kv = vec![("nodes N, k".to_string(), format!("{}, {}", s.nodes, s.k))];
    kv.extend(event_facts(run));
    if let Some(f) = &run.tl.failover {
        kv.extend(failover_facts(run, f));
    }
    // After a failover the ring is another one: name it.
    let ring = match &run.tl.failover {
        Some(_) => format!("{} ", run.final_ring.join(", ")),
        None => String::new(),
    };
    kv.push((
        "ring complete again (checked after the load)".into(),
        format!(
            "{ring}at {} s (the load ended at {} s)",
            fixed(run.tl.ring_complete_s, 2),
            fixed(run.tl.load_end_s, 2)
        ),
    ));
    let acked = run
        .load()
        .iter()
        .filter(|o| o.f == OpKind::Write && o.status == OpStatus::Ok)
        .count();
    kv.push((
        "operations ok / info / fail".into(),
        format!(
            "{} / {} / {} (of {}; {acked} acknowledged inserts)",
            run.count(&[OpStatus::Ok]),
            run.count(&[OpStatus::Info, OpStatus::Pending]),
            run.count(&[OpStatus::Fail]),
            run.load_ops
        ),
    ));
    for (what, span, rate) in run.figures() {
        kv.push((
            format!("ok ops/s {what}"),
            format!("{} ({span})", ops(rate)),
        ));
    }
    let (ok, any) = run.zero_windows();
    kv.push((
        "**longest window without an ok completion** (the whole load)".into(),
        format!(
            "**{} s** ({}–{} s); target ≤ failure timeout + 0.5 s = {} s: **{}**",
            fixed(ok.1 - ok.0, 2),
            fixed(ok.0, 2),
            fixed(ok.1, 2),
            trim(run.zero_window_target_s()),
            if run.zero_window_met() {
                "met"
            } else {
                "not met"
            }
        ),
    ));
    kv.push((
        "longest window without any completion (ok, fail or info)".into(),
        format!(
            "{} s ({}–{} s)",
            fixed(any.1 - any.0, 2),
            fixed(any.0, 2),
            fixed(any.1, 2)
        ),
    ));
    kv.extend(verdict_facts(run));
    kv
}

/// When the kill, the removal, the first answer after the kill and the restart happened.
fn event_facts(run: &Run) -> Vec<(String, String)> {
    let tl = &run.tl;
    let after_kill = |t: f64| fixed(t - tl.kill_s, 1);
    let rejoined: Vec<String> = tl.rejoined_s.iter().map(|r| fixed(*r, 2)).collect();
    let whole = format!(
        "at {} s; the ring whole again (the bootstrap's overlay holds every node, each a member) at {} s, {} s later",
        fixed(tl.restart_s, 2),
        rejoined.join(", "),
        fixed(tl.all_rejoined_s() - tl.restart_s, 2)
    );
    let (fault, undone, since) = match run.settings.fault {
        Fault::Kill => ("killed (`kill -9`)", "restarted", "the kill"),
        Fault::Pause => ("paused (SIGSTOP)", "resumed (SIGCONT)", "the pause"),
        Fault::Partition => ("cut off from the other nodes", "healed", "the partition"),
    };
    let restarted = match run.settings.victim {
        _ if run.settings.fault != Fault::Kill => whole,
        Victim::Successors => format!(
            "at {} s; rejoined at {} s",
            fixed(tl.restart_s, 2),
            rejoined.join(", ")
        ),
        Victim::Bootstrap => format!(
            "at {} s; back in the ring (its overlay the whole ring, every node a member) at {} s, {} s after the restart",
            fixed(tl.restart_s, 2),
            rejoined.join(", "),
            fixed(tl.all_rejoined_s() - tl.restart_s, 2)
        ),
    };
    vec![
        (
            fault.into(),
            format!(
                "{} at {} s",
                run.victim_addrs().join(", "),
                fixed(tl.kill_s, 2)
            ),
        ),
        (
            "removed from the ring".into(),
            tl.removed_s.map_or(
                format!(
                    "not before {}",
                    match run.settings.fault {
                        Fault::Kill => "the restart",
                        Fault::Pause => "SIGCONT",
                        Fault::Partition => "the heal",
                    }
                ),
                |r| format!("by {} s ({} s after {since})", fixed(r, 2), after_kill(r)),
            ),
        ),
        (
            format!("first ok answer to a request sent after {since}"),
            run.serving_again_s().map_or("none".into(), |t| {
                format!("at {} s ({} s after {since})", fixed(t, 2), after_kill(t))
            }),
        ),
        (undone.into(), restarted),
    ]
}

/// When the bootstrap was killed for good and removed, and the join and the depart.
fn failover_facts(run: &Run, f: &Failover) -> Vec<(String, String)> {
    let after_kill = |t: f64| fixed(t - f.kill_s, 1);
    let a = &run.addrs;
    vec![
        (
            "killed for good (`kill -9`)".into(),
            format!("{} at {} s", a[0], fixed(f.kill_s, 2)),
        ),
        (
            "removed from the ring again".into(),
            f.removed_s.map_or("not seen before the depart was done".into(), |r| {
                format!("by {} s ({} s after the kill)", fixed(r, 2), after_kill(r))
            }),
        ),
        (
            "new node joined through a member".into(),
            format!(
                "{} (`--bootstrap {}`) started at {} s, joined at {} s: {} s after its start, {} s after the kill",
                a[f.newcomer],
                a[f.entry],
                fixed(f.join_started_s, 2),
                fixed(f.joined_s, 2),
                fixed(f.joined_s - f.join_started_s, 2),
                after_kill(f.joined_s)
            ),
        ),
        (
            "departed (`dht depart`)".into(),
            format!(
                "{} at {} s, answered at {} s ({} s)",
                a[f.departer],
                fixed(f.depart_started_s, 2),
                fixed(f.departed_s, 2),
                fixed(f.departed_s - f.depart_started_s, 2)
            ),
        ),
    ]
}

/// The final reads, lost writes and the linearizability verdict.
fn verdict_facts(run: &Run) -> Vec<(String, String)> {
    let lin = &run.lin;
    let acked_keys = run.final_reads().iter().filter(|k| k.acked > 0).count();
    let mut kv = vec![(
        "final reads".to_string(),
        format!(
            "{} keys × {} nodes, after the ring was complete; {acked_keys} keys with an acknowledged insert",
            run.read_back.len(),
            run.final_ring.len(),
        ),
    )];
    if !run.unanswered.is_empty() {
        kv.push((
            "**final reads without an answer**".into(),
            format!("**{}**", run.unanswered.len()),
        ));
    }
    kv.push((
        "**acknowledged writes lost**".into(),
        format!("**{}**", run.lost().len()),
    ));
    kv.push((
        "**linearizability** (the whole history, final reads included)".into(),
        format!(
            "**{}** ({} operations on {} keys: {} linearizable, {} violated, {} unknown; checked in {} s)",
            lin.verdict.as_str(),
            lin.ops,
            lin.keys,
            lin.ok_keys,
            lin.violation_keys,
            lin.unknown_keys,
            fixed(run.check_s, 2)
        ),
    ));
    kv
}

/// How the ring served after each fault, until the next one.
fn fault_table(run: &Run) -> String {
    let span = |(a, b): (f64, f64)| format!("{}–{} s", fixed(a, 2), fixed(b, 2));
    let mut md = format!(
        "After each fault, until the next one: the time in which no operation completed \
         `ok` (in 250 ms bins, and the longest gap between two `ok` completions), and the \
         stretch in which they completed at less than half the rate before the first kill \
         (in 250 ms bins). A closed-loop client whose request is caught by a fault waits \
         for the nodes' {} ms request timeout, so a few operations complete each time the \
         clients are let go:\n\n",
        run.settings.request_timeout.as_millis()
    );
    md.push_str(
        "| fault | at (s) | until (s) | time without an ok completion | longest gap | ok rate below half |\n\
         |---|---|---|---|---|---|\n",
    );
    for f in run.after_faults() {
        let (a, b) = f.stall;
        let slow = f.slow.map_or("never".into(), |(c, d)| {
            let open = if d >= f.until_s {
                ", still below at the end"
            } else {
                ""
            };
            format!("{} s ({}{open})", fixed(d - c, 2), span((c, d)))
        });
        md.push_str(&format!(
            "| {} | {} | {} | {} s | {} s ({}) | {slow} |\n",
            f.what,
            fixed(f.at_s, 2),
            fixed(f.until_s, 2),
            fixed(f.idle_s, 2),
            fixed(b - a, 2),
            span((a, b)),
        ));
    }
    md.push('\n');
    md
}

/// Keys stored per node after the run.
fn node_table(run: &Run) -> String {
    let mut md = String::from("Keys stored per node after the run:\n\n");
    md.push_str("| node | role | keys as primary | keys as replica |\n|---|---|---|---|\n");
    for (i, a) in run.addrs.iter().enumerate() {
        let (p, r) = run.stored[i].map_or(("-".into(), "-".into()), |(p, r)| {
            (p.to_string(), r.to_string())
        });
        md.push_str(&format!("| {a} | {} | {p} | {r} |\n", role(run, i)));
    }
    md
}

/// What happened to node `i`.
fn role(run: &Run, i: usize) -> String {
    if let Some(f) = &run.tl.failover {
        if i == 0 {
            return "bootstrap: killed, restarted, killed for good (no answer)".into();
        } else if i == f.newcomer {
            return format!(
                "new node, joined through {} while the bootstrap was down",
                run.addrs[f.entry]
            );
        } else if i == f.departer {
            return "member, departed (still running, out of the ring)".into();
        }
    }
    let role = if i == 0 {
        "bootstrap"
    } else if run.victims.contains(&i) {
        match run.settings.fault {
            Fault::Kill => "killed, restarted",
            Fault::Pause => "paused, resumed",
            Fault::Partition => "cut off, healed",
        }
    } else {
        "member"
    };
    role.into()
}

/// The rows of the CSV as a table.
fn window_table(rows: &[Row], stem: &str) -> String {
    let mut md = format!(
        "Per second of the load (operations by completion time; the same rows as \
         `{stem}.csv`):\n\n"
    );
    md.push_str(
        "| t (s) | phase | nodes up | ok | of them inserts | info | fail | ok ops/s | p50 ms | max ms | events |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {}–{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            trim(r.t_from_s),
            trim(r.t_to_s),
            r.phase,
            r.nodes_up,
            r.ops_ok,
            r.writes_ok,
            r.ops_info,
            r.ops_fail,
            ops(r.throughput_ok_per_s),
            fixed(r.latency_p50_ms.unwrap_or(f64::NAN), 1),
            fixed(r.latency_max_ms.unwrap_or(f64::NAN), 1),
            r.events
        ));
    }
    md
}

/// The lost writes, the unanswered final reads and the first linearizability
/// counterexample, where there are any.
fn failures(run: &Run) -> String {
    let mut md = String::new();
    let lost = run.lost();
    if !lost.is_empty() {
        md.push_str("\nLost acknowledged writes:\n\n");
        for k in lost.iter().take(LOST_SHOWN_MAX) {
            let described = k.describe().unwrap_or_default();
            md.push_str(&format!("- {described} ({} acknowledged)\n", k.acked));
        }
    }
    if !run.unanswered.is_empty() {
        md.push_str(&format!(
            "\nFinal reads without an `ok` answer in {READ_ATTEMPTS} attempts:\n\n"
        ));
        for u in &run.unanswered {
            md.push_str(&format!("- `{}` through {}\n", u.key, u.node));
        }
    }
    if let Some(c) = run.lin.counterexamples().next() {
        md.push_str(&format!(
            "\nFirst linearizability counterexample:\n\n```text\n{}\n```\n",
            c.explanation
        ));
    }
    md
}
