//! `knetsim-kubelet`: the kubelet of one node, a program of its own as Kubernetes' kubelet
//! is (the supervisor starts it; `knetsim kubelet` is the same).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "knetsim-kubelet",
    version,
    about = "The kubelet of one knetsim node (kubelet's flags)"
)]
struct Cli {
    /// The lab the node belongs to.
    #[arg(long, env = "KNETSIM_LAB", default_value = lab::plan::DEFAULT_LAB)]
    lab: String,
    #[command(flatten)]
    kubelet: knetsim::KubeletArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = lab::plan::check_lab_name(&cli.lab)
        .map_err(anyhow::Error::msg)
        .and_then(|()| knetsim::run_kubelet(&cli.lab, cli.kubelet));
    knetsim::exit_on_error("knetsim-kubelet", result)
}
