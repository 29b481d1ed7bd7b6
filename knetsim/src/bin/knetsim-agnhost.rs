//! `knetsim-agnhost`: Kubernetes' network test tool, what the agnhost image's `/agnhost` is
//! (`knetsim agnhost` is the same): its own subcommands and flags.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    knetsim::agnhost(&args)
}
