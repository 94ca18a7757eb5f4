//! `dht`: run seeded simulations, check histories, deploy nodes and measure ringkv.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check_cmd;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
