//! `knetsim-flannel-cni`: the `flannel` CNI plugin, linked as `flannel` into each node's CNI
//! plugin directory, as flannel ships its own plugin binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    knetsim::flannel_cni_plugin()
}
