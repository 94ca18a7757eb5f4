//! The `--quick` run of every experiment (small sizes), as `dht experiment all --quick`
//! runs them: every CSV has its columns and rows, every PNG is a valid image of the
//! expected size with every model drawn in its colour, and the consistency
//! experiment's verdicts are present.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ringkv_experiments::plot::{self, SIZE, WIDE};
use ringkv_experiments::runner::{run, Backend, Experiment, Options};

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringkv-exp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn quick(dir: &Path, backend: Backend) -> Options {
    let mut o = Options::new(dir);
    o.quick = true;
    o.progress = false;
    o.backend = backend;
    o
}

/// Header and rows of a CSV file.
fn csv(path: &Path) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r.records().map(|x| x.unwrap()).collect();
    (header, rows)
}

fn assert_columns(path: &Path, expected: &[&str]) -> Vec<csv::StringRecord> {
    let (header, rows) = csv(path);
    for col in expected {
        assert!(
            header.iter().any(|h| h == col),
            "{}: no column {col} in {header:?}",
            path.display()
        );
    }
    assert!(!rows.is_empty(), "{} has no rows", path.display());
    rows
}

fn col<'a>(path: &Path, row: &'a csv::StringRecord, name: &str) -> &'a str {
    let (header, _) = csv(path);
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    &row[i]
}

fn near(a: image::Rgb<u8>, c: plotters::style::RGBColor) -> bool {
    let d = |x: u8, y: u8| (i32::from(x) - i32::from(y)).abs();
    d(a[0], c.0) + d(a[1], c.1) + d(a[2], c.2) < 30
}

/// A valid PNG of `size`, not blank, with pixels of each of `colors`.
fn assert_png(path: &Path, size: (u32, u32), colors: &[plotters::style::RGBColor]) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let pixels = (size.0 * size.1) as usize;
    let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        ink > pixels / 50,
        "{}: only {ink} non-white pixels",
        path.display()
    );
    // Dark text pixels: the font rendered (titles, labels).
    let text = img.pixels().filter(|p| p.0.iter().all(|&v| v < 60)).count();
    assert!(text > 500, "{}: only {text} text pixels", path.display());
    for &c in colors {
        let n = img.pixels().filter(|p| near(**p, c)).count();
        assert!(
            n > 100,
            "{}: colour {c:?} barely drawn ({n} pixels)",
            path.display()
        );
    }
}

#[test]
fn every_experiment_runs_quick_and_writes_its_files() {
    let dir = out_dir("all");
    let options = quick(&dir, Backend::Real);
    let reports = run(Experiment::All, &options).expect("dht experiment all --quick");
    let names: BTreeSet<&str> = reports.iter().map(|r| r.name).collect();
    // The read-heavy mix reports as "readmix (sim)" and "readmix (wan)" (checked below).
    for e in Experiment::EACH
        .iter()
        .filter(|e| **e != Experiment::ReadMix)
    {
        assert!(names.contains(e.name()), "no report for {}", e.name());
    }
    for r in &reports {
        for f in &r.files {
            assert!(f.exists(), "{} missing", f.display());
        }
        assert!(!r.table.rows.is_empty(), "{} has an empty summary", r.name);
    }

    // 1, 2: throughput, every insert and query succeeded, every point repeated.
    let throughput_cols = [
        "backend",
        "model",
        "k",
        "rep",
        "ops",
        "ok",
        "errors",
        "seconds",
        "throughput_ops_per_s",
        "latency_p99_ms",
    ];
    for name in ["insert", "query"] {
        let path = dir.join(format!("{name}_throughput.csv"));
        let rows = assert_columns(&path, &throughput_cols);
        assert_eq!(
            rows.len(),
            3 * 3 * options.reps(),
            "{name}: 3 models × 3 k × reps"
        );
        for row in &rows {
            assert_eq!(col(&path, row, "ops"), "500", "{name}: {row:?}");
            assert_eq!(
                col(&path, row, "errors"),
                "0",
                "{name}: every operation must succeed: {row:?}"
            );
            assert_eq!(col(&path, row, "not_found"), "0", "{name}: {row:?}");
            let t: f64 = col(&path, row, "throughput_ops_per_s").parse().unwrap();
            assert!(t > 0.0);
        }
        for png in [
            format!("{name}_throughput.png"),
            format!("{name}_cpu.png"),
            format!("{name}_throughput_sim.png"),
        ] {
            assert_png(
                &dir.join(png),
                SIZE,
                &[plot::CHAIN, plot::EVENTUAL, plot::CRAQ],
            );
        }
    }

    // 1, 2 again on a ring with 1 ms links: the same columns plus link_latency and entry,
    // which the loopback files do not have; each ring measured with the reference's
    // clients (entry random) and with token-aware ones (entry token).
    for name in ["insert", "query"] {
        let loopback = dir.join(format!("{name}_throughput.csv"));
        let path = dir.join(format!("{name}_throughput_wan.csv"));
        let (loopback_header, _) = csv(&loopback);
        assert!(!loopback_header
            .iter()
            .any(|h| h == "link_latency" || h == "entry"));
        let (header, _) = csv(&path);
        assert_eq!(header[..header.len() - 2], loopback_header[..], "{name}");
        assert_eq!(header[header.len() - 2..], ["link_latency", "entry"]);
        let rows = assert_columns(&path, &throughput_cols);
        assert_eq!(
            rows.len(),
            3 * 3 * 2,
            "{name}: 3 models × 3 k × 2 kinds of client × 1 rep"
        );
        let token = rows
            .iter()
            .filter(|r| col(&path, r, "entry") == "token")
            .count();
        assert_eq!(token, 3 * 3, "{name}: one token-aware run per ring");
        for row in &rows {
            assert_eq!(col(&path, row, "link_latency"), "const:1ms", "{row:?}");
            assert!(["random", "token"].contains(&col(&path, row, "entry")));
            assert_eq!(col(&path, row, "errors"), "0", "{name}: {row:?}");
            assert_eq!(col(&path, row, "not_found"), "0", "{name}: {row:?}");
        }
        assert_png(
            &dir.join(format!("{name}_throughput_wan.png")),
            SIZE,
            &[plot::CHAIN, plot::EVENTUAL, plot::CRAQ],
        );
    }
    assert!(names.contains("insert (wan)") && names.contains("query (wan)"));

    // 3: verdicts for every (model, k, mode); chain replication and CRAQ linearizable.
    let path = dir.join("requests_consistency.csv");
    let rows = assert_columns(
        &path,
        &[
            "model",
            "k",
            "mode",
            "operations",
            "reads",
            "stale_reads",
            "linearizability",
            "reference_rule_stale",
        ],
    );
    assert_eq!(rows.len(), 3 * 3 * 2);
    for row in &rows {
        let verdict = col(&path, row, "linearizability");
        assert!(
            ["linearizable", "violation", "unknown"].contains(&verdict),
            "{row:?}"
        );
        assert_eq!(col(&path, row, "operations"), "500");
        if ["chain", "craq"].contains(&col(&path, row, "model")) {
            assert_eq!(
                verdict, "linearizable",
                "chain replication and CRAQ must be linearizable: {row:?}"
            );
            assert_eq!(col(&path, row, "stale_reads"), "0");
        }
    }
    let path = dir.join("requests_values.csv");
    let rows = assert_columns(
        &path,
        &[
            "mode",
            "k",
            "file",
            "line",
            "key",
            "chain_value",
            "chain_read",
            "eventual_value",
            "eventual_read",
            "craq_value",
            "craq_read",
        ],
    );
    assert_eq!(
        rows.len(),
        400 * 3 * 2,
        "every query of both modes and every k"
    );

    // 4: simulator studies.
    assert_columns(
        &dir.join("staleness.csv"),
        &["model", "k", "t_from_ms", "t_to_ms", "reads", "p_fresh"],
    );
    assert_png(&dir.join("staleness.png"), SIZE, &[plot::CHAIN]);
    let path = dir.join("hops.csv");
    let rows = assert_columns(&path, &["routing", "nodes", "hops_mean", "hops_p99"]);
    assert!(rows.iter().any(|r| col(&path, r, "routing") == "successor"));
    assert_png(
        &dir.join("hops.png"),
        SIZE,
        &[plot::FINGER, plot::SUCCESSOR],
    );
    assert_columns(
        &dir.join("scaling.csv"),
        &["model", "nodes", "throughput_ops_per_s", "latency_p99_ms"],
    );
    assert_png(
        &dir.join("scaling.png"),
        WIDE,
        &[plot::CHAIN, plot::EVENTUAL],
    );
    let path = dir.join("faults.csv");
    let rows = assert_columns(
        &path,
        &[
            "profile",
            "model",
            "seed",
            "linearizability",
            "violation_keys",
            "replay",
        ],
    );
    assert!(rows
        .iter()
        .all(|r| !col(&path, r, "linearizability").is_empty()));

    // 6: the read-heavy mix, in the simulator (keys over the ring, and on one chain of
    // nodes with a processing time) and on the 1 ms ring (keys over the ring, and on one
    // chain of nodes with an emulated processor).
    assert!(names.contains("readmix (sim)") && names.contains("readmix (wan)"));
    assert!(names.contains("readmix, one chain (sim)"));
    assert!(names.contains("readmix, one chain (wan)"));
    // (file, link latency, placement, service time, read shares)
    for (stem, latency, placement, service, mixes) in [
        ("readmix_sim", "", "ring", "0", 2),
        ("readmix_chain_sim", "", "one-chain", "100", 3),
        ("readmix_wan", "const:1ms", "ring", "0", 2),
        ("readmix_chain_wan", "const:1ms", "one-chain", "500", 3),
    ] {
        let path = dir.join(format!("{stem}.csv"));
        let rows = assert_columns(&path, READMIX_COLUMNS);
        assert_eq!(
            rows.len(),
            3 * 3 * mixes,
            "{stem}: 3 models × 3 k × {mixes} mixes"
        );
        // A failed operation's outcome is among the warnings of its report.
        let warnings: Vec<&String> = reports
            .iter()
            .filter(|r| r.name.starts_with("readmix"))
            .flat_map(|r| &r.warnings)
            .collect();
        for row in &rows {
            assert_eq!(
                col(&path, row, "errors"),
                "0",
                "{stem}: {row:?}; {warnings:?}"
            );
            assert_eq!(col(&path, row, "link_latency"), latency, "{row:?}");
            assert_eq!(col(&path, row, "placement"), placement, "{row:?}");
            assert_eq!(col(&path, row, "service_us"), service, "{row:?}");
            let reads: f64 = col(&path, row, "reads").parse().unwrap();
            let ops: f64 = col(&path, row, "ops").parse().unwrap();
            let share: f64 = col(&path, row, "read_percent").parse().unwrap();
            assert!((reads / ops - share / 100.0).abs() < 0.1, "{row:?}");
            let t: f64 = col(&path, row, "read_throughput_ops_per_s")
                .parse()
                .unwrap();
            assert!(t > 0.0, "{row:?}");
        }
        assert_png(
            &dir.join(format!("{stem}.png")),
            (WIDE.0 / 2 * mixes as u32, WIDE.1),
            &[plot::CHAIN, plot::EVENTUAL, plot::CRAQ],
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The columns of `readmix_sim.csv`, `readmix_chain_sim.csv`, `readmix_wan.csv` and
/// `readmix_chain_wan.csv`.
const READMIX_COLUMNS: &[&str] = &[
    "backend",
    "model",
    "k",
    "read_percent",
    "rep",
    "ops",
    "reads",
    "writes",
    "errors",
    "seconds",
    "read_throughput_ops_per_s",
    "throughput_ops_per_s",
    "read_latency_p99_ms",
    "link_latency",
    "placement",
    "service_us",
];

#[test]
fn reference_experiments_run_in_the_simulator_too() {
    let dir = out_dir("sim");
    let options = quick(&dir, Backend::Sim);
    for e in [Experiment::Insert, Experiment::Query, Experiment::Requests] {
        run(e, &options).unwrap_or_else(|err| panic!("{}: {err}", e.name()));
    }
    let path = dir.join("insert_throughput.csv");
    for row in assert_columns(&path, &["backend", "time_base", "throughput_ops_per_s"]) {
        assert_eq!(col(&path, &row, "backend"), "sim");
        assert_eq!(col(&path, &row, "time_base"), "virtual");
        assert_eq!(col(&path, &row, "errors"), "0");
    }
    assert_png(
        &dir.join("query_throughput.png"),
        SIZE,
        &[plot::CHAIN, plot::EVENTUAL, plot::CRAQ],
    );
    let path = dir.join("requests_consistency.csv");
    for row in assert_columns(&path, &["linearizability"]) {
        if ["chain", "craq"].contains(&col(&path, &row, "model")) {
            assert_eq!(
                col(&path, &row, "linearizability"),
                "linearizable",
                "{row:?}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn balance_runs_quick_and_writes_its_files() {
    use ringkv_experiments::balance::{self, VNODES};
    let dir = out_dir("balance");
    let options = quick(&dir, Backend::Real);
    let reports = run(Experiment::Balance, &options).expect("dht experiment balance --quick");
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].table.rows.is_empty());
    let path = dir.join("balance.csv");
    let rows = assert_columns(
        &path,
        &[
            "nodes",
            "vnodes_per_node",
            "positions",
            "keys",
            "ring",
            "first_addr",
            "keys_mean",
            "keys_p1",
            "keys_median",
            "keys_p99",
            "keys_max",
            "nodes_empty",
            "max_over_mean",
            "p99_over_mean",
            "p1_over_mean",
            "median_over_mean",
        ],
    );
    let setups = balance::setups(&options);
    let rings = balance::rings(&options);
    assert_eq!(rows.len(), setups.len() * VNODES.len() * rings);
    let num = |row: &csv::StringRecord, name: &str| -> f64 {
        col(&path, row, name)
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for row in &rows {
        let (nodes, keys) = (num(row, "nodes"), num(row, "keys"));
        assert_eq!(num(row, "keys_mean"), keys / nodes, "{row:?}");
        assert_eq!(
            num(row, "positions"),
            nodes * num(row, "vnodes_per_node"),
            "{row:?}"
        );
        let ordered = ["keys_min", "keys_p1", "keys_median", "keys_p99", "keys_max"];
        assert!(
            ordered.windows(2).all(|w| num(row, w[0]) <= num(row, w[1])),
            "{row:?}"
        );
        let ratio = num(row, "p99_over_mean") - num(row, "keys_p99") / num(row, "keys_mean");
        assert!(ratio.abs() < 1e-9, "{row:?}");
        // Ring t of N nodes starts at the simulator's address t·N.
        let ring = num(row, "ring") as usize;
        assert_eq!(
            col(&path, row, "first_addr"),
            ringkv_sim::node_addr(ring * nodes as usize),
            "{row:?}"
        );
    }
    // More virtual nodes spread the keys more evenly, in every ring.
    for setup in &setups {
        for ring in 0..rings {
            let p99_at = |r: u32| {
                rows.iter()
                    .find(|row| {
                        num(row, "nodes") as usize == setup.nodes
                            && num(row, "keys") as usize == setup.keys
                            && num(row, "ring") as usize == ring
                            && num(row, "vnodes_per_node") as u32 == r
                    })
                    .map(|row| num(row, "p99_over_mean"))
                    .unwrap_or_else(|| panic!("no row for {setup:?}, ring {ring}, R = {r}"))
            };
            assert!(p99_at(20) < p99_at(1), "{setup:?}, ring {ring}");
        }
    }
    assert_png(&dir.join("balance.png"), WIDE, &[plot::PLACEMENT]);
    std::fs::remove_dir_all(&dir).ok();
}
