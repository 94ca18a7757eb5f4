//! Experiment 4b: lookup hops against ring size, Chord fingers vs successor pointers only.
//!
//! Simulator runs of the reference `query` workload (500 inserts, then 500 queries, 10
//! clients) on rings of N nodes, with finger routing and with successor-only routing
//! (`Routing::Successor`, as simple course implementations do). Hops are the forwards a
//! request took to reach the node responsible for its key, as the nodes report them.

use std::path::Path;

use ringkv_core::{Consistency, Routing};
use ringkv_sim::{Reference, SimConfig, Simulation, WorkloadSpec};
use serde::Serialize;

use crate::plot::{self, Axis, Chart, LegendAt, Marker, Point, Series};
use crate::runner::{fixed, par_map, progress_bar, write_csv, Options, Report, Table};
use crate::{ExperimentError, Result};

/// A row of `hops.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `finger` or `successor`.
    pub routing: String,
    /// Ring size.
    pub nodes: usize,
    /// Operations answered (every one carries its hop count).
    pub ops: u64,
    /// Mean hops per operation.
    pub hops_mean: f64,
    /// 99th percentile of hops.
    pub hops_p99: u64,
    /// ½·log₂N, the Chord expectation for fingers.
    pub half_log2_n: f64,
    /// Simulator seed.
    pub seed: u64,
}

fn routing_name(r: Routing) -> &'static str {
    match r {
        Routing::Finger => "finger",
        Routing::Successor => "successor",
    }
}

/// The ring sizes measured.
pub fn sizes(options: &Options) -> Vec<usize> {
    options.size(
        vec![10, 30, 100],
        vec![10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000],
    )
}

/// Run experiment 4b.
pub fn run(options: &Options) -> Result<Report> {
    let mut plan = Vec::new();
    // Largest rings first, so the two worker threads finish together.
    for n in sizes(options).into_iter().rev() {
        for routing in [Routing::Successor, Routing::Finger] {
            plan.push((n, routing));
        }
    }
    let bar = progress_bar(options, "hops", plan.len() as u64);
    bar.set_message("simulator, query workload");
    let results = par_map(&plan, |&(nodes, routing)| -> Result<Row> {
        let config = SimConfig {
            seed: options.seed,
            nodes,
            k: 3,
            consistency: Consistency::Chain,
            routing,
            clients: Some(10),
            workload: WorkloadSpec::Reference(Reference::Query),
            workload_dir: options.workload_dir.clone(),
            record_history: false,
            // Successor routing takes N/2 hops of 1 ms on average: no lookup may time out.
            timeout_ns: 600_000_000_000,
            ..SimConfig::default()
        };
        let s = Simulation::new(config)
            .map_err(|e| ExperimentError(e.to_string()))?
            .run()
            .summary;
        bar.inc(1);
        Ok(Row {
            routing: routing_name(routing).into(),
            nodes,
            ops: s.ops_ok,
            hops_mean: s.lookup_hops_mean,
            hops_p99: s.lookup_hops_p99,
            half_log2_n: 0.5 * (nodes as f64).log2(),
            seed: options.seed,
        })
    });
    bar.finish_and_clear();
    let mut rows = results.into_iter().collect::<Result<Vec<Row>>>()?;
    rows.sort_by(|a, b| a.routing.cmp(&b.routing).then(a.nodes.cmp(&b.nodes)));
    let csv = options.path("hops.csv");
    let png = options.path("hops.png");
    write_csv(&csv, &rows)?;
    plot(&png, &rows)?;
    let mut table = Table::new(
        "4b. Lookup hops against N (simulator, query workload, chain k=3)",
        &[
            "N",
            "finger mean",
            "finger p99",
            "½·log2 N",
            "successor mean",
            "successor p99",
        ],
    );
    for n in sizes(options) {
        let get = |r: &str| rows.iter().find(|x| x.routing == r && x.nodes == n);
        let (f, s) = (get("finger"), get("successor"));
        table.row(vec![
            n.to_string(),
            f.map_or("-".into(), |r| fixed(r.hops_mean, 2)),
            f.map_or("-".into(), |r| r.hops_p99.to_string()),
            fixed(0.5 * (n as f64).log2(), 2),
            s.map_or("-".into(), |r| fixed(r.hops_mean, 1)),
            s.map_or("-".into(), |r| r.hops_p99.to_string()),
        ]);
    }
    let warnings = rows
        .iter()
        .filter(|r| r.ops < 1000)
        .map(|r| {
            format!(
                "{} routing, N={}: only {} of 1000 lookups succeeded",
                r.routing, r.nodes, r.ops
            )
        })
        .collect();
    Ok(Report {
        name: "hops",
        files: vec![csv, png],
        table,
        warnings,
        seconds: 0.0,
    })
}

fn plot(path: &Path, rows: &[Row]) -> Result<()> {
    let line = |routing: &str| -> Vec<Point> {
        rows.iter()
            .filter(|r| r.routing == routing)
            .map(|r| Point::at(r.nodes as f64, r.hops_mean.max(0.01)))
            .collect()
    };
    let nmax = rows.iter().map(|r| r.nodes).max().unwrap_or(10) as f64;
    let nmin = rows.iter().map(|r| r.nodes).min().unwrap_or(10) as f64;
    let grid: Vec<f64> = (0..=40)
        .map(|i| nmin * (nmax / nmin).powf(f64::from(i) / 40.0))
        .collect();
    let series = vec![
        Series::new(
            "successor pointers only",
            plot::SUCCESSOR,
            Marker::Square,
            line("successor"),
        ),
        Series::new(
            "N / 2",
            plot::shade(plot::SUCCESSOR, 0.45),
            Marker::None,
            grid.iter().map(|&n| Point::at(n, n / 2.0)).collect(),
        )
        .dashed(),
        Series::new(
            "Chord fingers",
            plot::FINGER,
            Marker::Diamond,
            line("finger"),
        ),
        Series::new(
            "½·log₂ N",
            plot::shade(plot::FINGER, 0.45),
            Marker::None,
            grid.iter().map(|&n| Point::at(n, 0.5 * n.log2())).collect(),
        )
        .dashed(),
    ];
    let hi_decade = 10f64.powf((nmax / 2.0).log10().ceil()).max(10.0);
    let chart = Chart {
        title: "Lookup hops against ring size: fingers vs successors".into(),
        x: Axis::log("ring size N (nodes, log scale)", nmin * 0.8, nmax * 1.25),
        y: Axis::log("mean hops per lookup (log scale)", 0.5, hi_decade * 1.5),
        legend: LegendAt::UpperLeft,
        series,
        note: Some("simulator: query workload (500 inserts + 500 queries, 10 clients), chain replication, k = 3".into()),
    };
    plot::draw(path, plot::SIZE, &chart)
}
