//! `knetsim-kubelet`: the kubelet of one node, a program of its own as Kubernetes' kubelet
//! is (the supervisor starts it; `knetsim kubelet` is the same). Its flags are parsed by hand
//! (see `KubeletArgs`), so clap is not part of every node's kubelet.

use std::process::ExitCode;

fn main() -> ExitCode {
    let default_lab =
        std::env::var("KNETSIM_LAB").unwrap_or_else(|_| lab::plan::DEFAULT_LAB.to_string());
    knetsim::kubelet_command("knetsim-kubelet", std::env::args_os().skip(1), &default_lab)
}
