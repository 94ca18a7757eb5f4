//! `dht check`: placeholder until the checker lands.

use std::process::ExitCode;

/// Arguments of `dht check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// History file (JSON Lines).
    pub history: std::path::PathBuf,
}

/// Run the command.
pub fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
