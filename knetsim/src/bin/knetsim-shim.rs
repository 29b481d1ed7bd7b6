//! `knetsim-shim`: the parent of one container process, as containerd's shim (the runtime
//! starts it; `knetsim shim` is the same).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "knetsim-shim",
    version,
    about = "The parent of one container process"
)]
struct Cli {
    /// The lab the pod runs in (names the process for `knetsim down`).
    #[arg(long)]
    lab: String,
    #[command(flatten)]
    shim: knetsim::ShimArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    knetsim::exit_on_error("knetsim-shim", knetsim::run_shim(&cli.shim))
}
