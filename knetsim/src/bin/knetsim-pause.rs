//! `knetsim-pause`: the infra process of a pod sandbox, as the `pause` image's program (the
//! runtime starts it in the pod's namespaces; `knetsim pause` is the same).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "knetsim-pause",
    version,
    about = "The infra process of a pod sandbox"
)]
struct Cli {
    /// The lab the pod runs in (names the process for `knetsim down`).
    #[arg(long)]
    lab: String,
    #[command(flatten)]
    pause: knetsim::PauseArgs,
}

fn main() {
    Cli::parse();
    kubelet_lite::pause::run()
}
