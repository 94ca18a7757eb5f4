//! `dht`: run seeded simulations, check histories, deploy nodes and measure ringkv.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check_cmd;
mod client_cmd;
mod experiment_cmd;
mod node_cmd;
mod reach;
mod shell;
mod sim_cmd;
mod stdout;

/// jemalloc rather than the system allocator: under load, glibc's malloc arenas made the
/// nodes' threads wait on each other's locks (futex waits and wake-ups, about 6% of a
/// cluster's CPU in a profile), and jemalloc also keeps a 1M-key ring smaller
/// (`results/runtime_bench.md`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// ringkv: a Chord-ring key-value store with chain and eventual replication.
#[derive(Parser)]
#[command(name = "dht", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a JSON Lines history for linearizability and staleness.
    Check(check_cmd::CheckArgs),
    /// Simulate a ring deterministically from a seed (faults, latency, workloads).
    Sim(Box<sim_cmd::SimArgs>),
    /// Start the bootstrap node (it sets k and the consistency model for the ring).
    Bootstrap(node_cmd::BootstrapArgs),
    /// Start an ordinary node that joins through the bootstrap.
    Node(node_cmd::NodeArgs),
    /// Start a whole local ring in one process; Ctrl-C departs every node.
    Cluster(node_cmd::ClusterArgs),
    /// Load a running ring over HTTP; optionally record a history for `dht check`.
    Bench(node_cmd::BenchArgs),
    /// Interactive client: insert, query, delete, overlay, join, depart, setnode.
    Shell(shell::ShellArgs),
    /// Store VALUE under KEY (through --node).
    Insert(client_cmd::InsertArgs),
    /// Print the value of KEY, or every pair with '*'.
    Query(client_cmd::QueryArgs),
    /// Delete KEY.
    Delete(client_cmd::DeleteArgs),
    /// Print the ring's nodes in order from the bootstrap.
    Overlay(client_cmd::NodeOnlyArgs),
    /// Make the node at --node join the ring.
    Join(client_cmd::NodeOnlyArgs),
    /// Make the node at --node leave the ring, handing its data on.
    Depart(client_cmd::NodeOnlyArgs),
    /// Run the experiments (insert, query, requests, staleness, hops, scaling, faults,
    /// balance, or all; and crash, real node processes killed under load) and write CSVs
    /// and PNG plots into results/.
    Experiment(experiment_cmd::ExperimentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(*args),
        Command::Bootstrap(args) => node_cmd::run_bootstrap(args),
        Command::Node(args) => node_cmd::run_node(args),
        Command::Cluster(args) => node_cmd::run_cluster(args),
        Command::Bench(args) => node_cmd::run_bench(args),
        Command::Shell(args) => shell::run(args),
        Command::Insert(args) => client_cmd::run_insert(args),
        Command::Query(args) => client_cmd::run_query(args),
        Command::Delete(args) => client_cmd::run_delete(args),
        Command::Overlay(args) => client_cmd::run_overlay(args),
        Command::Join(args) => client_cmd::run_join(args),
        Command::Depart(args) => client_cmd::run_depart(args),
        Command::Experiment(args) => experiment_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
