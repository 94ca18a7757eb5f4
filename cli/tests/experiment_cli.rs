//! `dht experiment insert|query|requests --link-latency DIST`: the option reaches the ring
//! the real backend starts, its files get the `_wan` suffix and `link_latency` and `entry`
//! columns, and it is refused where it does not apply.

use std::time::Duration;

mod common;

use common::{csv, out_dir, run_bounded};

#[test]
fn link_latency_reaches_the_ring_and_the_csv() {
    let dir = out_dir("wan");
    let d = dir.to_str().unwrap();
    let out = run_bounded(
        &[
            "experiment",
            "insert",
            "--backend",
            "real",
            "--link-latency",
            "1ms",
            "--quick",
            "--reps",
            "1",
            "--k",
            "1",
            "--no-progress",
            "--out",
            d,
        ],
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("const:1ms links"), "{stdout}");
    // The loopback file is not overwritten; the wide-area one has the column.
    assert!(!dir.join("insert_throughput.csv").exists());
    assert!(dir.join("insert_throughput_wan.png").exists());
    let path = dir.join("insert_throughput_wan.csv");
    let (header, rows) = csv(&path);
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert_eq!(
        rows.len(),
        6,
        "chain, eventual and craq, k = 1, one run, each with the reference's clients and \
         token-aware ones: {rows:?}"
    );
    let entries: Vec<&str> = rows.iter().map(|r| r[at("entry")].as_str()).collect();
    assert_eq!(
        entries,
        ["random", "token", "random", "token", "random", "token"],
        "{rows:?}"
    );
    for row in &rows {
        assert_eq!(row[at("link_latency")], "const:1ms", "{row:?}");
        assert_eq!(row[at("errors")], "0", "{row:?}");
        assert_eq!(row[at("k")], "1", "{row:?}");
        // An insert whose key another node owns crosses at least two delayed links (there
        // and back), and a token-aware client is a delayed link from every node (one
        // each way), so with 1 ms links the median cannot be below 2 ms.
        let p50: f64 = row[at("latency_p50_ms")].parse().expect("a number");
        assert!(
            p50 >= 2.0,
            "median latency {p50} ms: links not delayed? {row:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn link_latency_is_checked_and_documented() {
    let dir = out_dir("wan-args");
    let d = dir.to_str().unwrap();
    for args in [
        vec!["experiment", "insert", "--link-latency", "soon", "--out", d],
        vec![
            "experiment",
            "insert",
            "--link-latency",
            "poisson:1ms",
            "--out",
            d,
        ],
        vec![
            "experiment",
            "query",
            "--backend",
            "sim",
            "--link-latency",
            "1ms",
            "--out",
            d,
        ],
        vec!["experiment", "hops", "--link-latency", "1ms", "--out", d],
        vec![
            "experiment",
            "readmix",
            "--backend",
            "sim",
            "--link-latency",
            "1ms",
            "--out",
            d,
        ],
        vec!["experiment", "crash", "--link-latency", "1ms", "--out", d],
    ] {
        let out = run_bounded(&args, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(!dir.exists(), "a refused run wrote nothing");
    let help = run_bounded(&["experiment", "--help"], Duration::from_secs(30));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--link-latency <DIST>"), "{text}");
    assert!(
        text.contains("a bare duration such as 1ms means const:1ms"),
        "{text}"
    );
}

/// `dht experiment readmix`: the read-heavy mix writes its CSV (every model, k and read
/// share) and its two-panel PNG; in the simulator a CRAQ read at k = 5 is faster than
/// chain's.
#[test]
fn readmix_writes_its_csv_and_plot() {
    let dir = out_dir("readmix");
    let d = dir.to_str().unwrap();
    let args = [
        "experiment",
        "readmix",
        "--backend",
        "sim",
        "--quick",
        "--no-progress",
        "--out",
        d,
    ];
    let out = run_bounded(&args, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Read-heavy mix"), "{stdout}");
    let (header, rows) = csv(&dir.join("readmix_sim.csv"));
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert_eq!(
        rows.len(),
        3 * 3 * 2,
        "3 models × k 1, 3, 5 × 95/70: {rows:?}"
    );
    let mut models: Vec<&str> = rows.iter().map(|r| r[at("model")].as_str()).collect();
    models.sort_unstable();
    models.dedup();
    assert_eq!(models, ["chain", "craq", "eventual"]);
    for row in &rows {
        assert_eq!(row[at("backend")], "sim", "{row:?}");
        assert_eq!(row[at("time_base")], "virtual", "{row:?}");
        assert_eq!(row[at("errors")], "0", "{row:?}");
        assert!(["95", "70"].contains(&row[at("read_percent")].as_str()));
    }
    let read_rate = |model: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r[at("model")] == model && r[at("k")] == "5" && r[at("read_percent")] == "95")
            .unwrap_or_else(|| panic!("no {model} k=5 row"));
        row[at("read_throughput_ops_per_s")]
            .parse()
            .expect("a number")
    };
    // One seed per point in quick mode: a change anywhere in the run (setup messages
    // included) redraws every latency, and the ratio moves with it (1.36 to 1.51 over the
    // last cores; the 5-seed medians of the full experiment, 1.55 to 1.58). CRAQ must
    // still read clearly faster than chain.
    assert!(read_rate("craq") > 1.2 * read_rate("chain"), "{rows:?}");
    let png = std::fs::read(dir.join("readmix_sim.png")).expect("the plot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // On one chain of nodes that take 100 µs a message, chain replication's reads are
    // bounded by the one tail (10,000 messages a second, whatever k), and CRAQ's spread
    // over the k replicas.
    assert!(stdout.contains("Read-heavy mix: read throughput (simulator, 100 µs a message"));
    let (header, rows) = csv(&dir.join("readmix_chain_sim.csv"));
    let at = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(rows.len(), 3 * 3 * 3, "100, 95 and 70% reads: {rows:?}");
    let read_rate = |model: &str, k: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r[at("model")] == model && r[at("k")] == k && r[at("read_percent")] == "95")
            .unwrap_or_else(|| panic!("no {model} k={k} row"));
        assert_eq!(row[at("placement")], "one-chain");
        assert_eq!(row[at("errors")], "0", "{row:?}");
        row[at("read_throughput_ops_per_s")]
            .parse()
            .expect("a number")
    };
    for k in ["1", "3", "5"] {
        let chain = read_rate("chain", k);
        assert!((8_000.0..10_000.0).contains(&chain), "chain k={k}: {chain}");
    }
    assert!(
        read_rate("craq", "5") > 1.5 * read_rate("chain", "5"),
        "{rows:?}"
    );
    let png = std::fs::read(dir.join("readmix_chain_sim.png")).expect("the plot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dht experiment durability --quick`: the memory and data-directory rings get the same
/// loads side by side (one row each per k and client count), every insert acknowledged;
/// the data-directory ring committed transactions and the memory ring none; the restarted
/// node read back every sampled key.
#[test]
fn durability_compares_data_directories_with_memory_and_times_a_restart() {
    let dir = out_dir("durability");
    let d = dir.to_str().unwrap();
    let args = [
        "experiment",
        "durability",
        "--quick",
        "--no-progress",
        "--out",
        d,
    ];
    let out = run_bounded(&args, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("durability: inserts/s"), "{stdout}");
    let (header, rows) = csv(&dir.join("durability_throughput.csv"));
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert_eq!(rows.len(), 2 * 2, "k 1, 3 × memory, data-dir: {rows:?}");
    for row in &rows {
        assert_eq!(row[at("ok")], "2000", "{row:?}");
        let rate: f64 = row[at("ops_per_s")].parse().expect("a number");
        assert!(rate > 0.0, "{row:?}");
        let commits: u64 = row[at("commits")].parse().expect("a number");
        let persists: u64 = row[at("persists")].parse().expect("a number");
        match row[at("mode")].as_str() {
            "memory" => assert_eq!((commits, persists), (0, 0), "{row:?}"),
            "data-dir" => {
                assert!(commits > 0 && persists >= commits, "{row:?}");
                // Every insert was persisted by each of its k replicas, in some batch.
                let k: u64 = row[at("k")].parse().expect("a number");
                assert!(persists >= 2000 * k, "{row:?}");
            }
            other => panic!("mode {other}"),
        }
    }
    let (header, rows) = csv(&dir.join("durability_restart.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][col("keys")], "5000");
    assert_eq!(rows[0][col("found")], rows[0][col("sampled")]);
    let _ = std::fs::remove_dir_all(&dir);
}
