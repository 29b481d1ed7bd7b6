//! `knetsim exec`, `shell` and `etcdctl`: run a command on a node.
//!
//! The knetsim process enters the node's namespaces itself (network, UTS, then a private
//! mount namespace with the node's `/sys`) and execs the command in place, so the exit code,
//! signals and the terminal are the command's own, exactly as with `ip netns exec`.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context as _;

use crate::paths::LabPaths;
use crate::plan::ETCD_CLIENT_PORT;

/// Replace this process with `argv` running on node `node_id` (`c0/w1`) of `lab`.
/// Returns only on failure. Must be called before any other thread is started: entering a
/// mount namespace is refused to multi-threaded processes.
pub fn exec_on_node(lab: &str, node_id: &str, argv: &[String]) -> anyhow::Error {
    match prepare(lab, node_id, argv) {
        Ok(mut command) => {
            let error = command.exec();
            anyhow::Error::new(error).context(format!("could not run `{}` on {node_id}", argv[0]))
        }
        Err(error) => error,
    }
}

fn prepare(lab: &str, node_id: &str, argv: &[String]) -> anyhow::Result<Command> {
    let plan = crate::read_plan(lab)?;
    let node = plan.node(node_id).map_err(anyhow::Error::msg)?;
    let Some((program, args)) = argv.split_first() else {
        anyhow::bail!("no command given: use `knetsim exec {node_id} -- COMMAND [ARGS…]`");
    };
    let paths = LabPaths::new(lab);
    let enter = crate::network::enter_node(&paths, node)
        .with_context(|| format!("entering node {node_id}"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("KNETSIM_LAB", lab)
        .env("KNETSIM_NODE", node_id);
    // SAFETY: `enter` makes only system calls, as code between fork and exec must.
    unsafe {
        command.pre_exec(move || enter.enter());
    }
    Ok(command)
}

/// An interactive shell on a node: `$SHELL`, else bash.
pub fn shell_on_node(lab: &str, node_id: &str) -> anyhow::Error {
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/bash".to_string());
    exec_on_node(lab, node_id, &[shell])
}

/// `etcdctl` against the cluster's etcd, run on its control-plane node.
pub fn etcdctl(lab: &str, cluster: &str, args: &[String]) -> anyhow::Error {
    let plan = match crate::read_plan(lab) {
        Ok(plan) => plan,
        Err(e) => return e,
    };
    let Some(cluster_plan) = plan.cluster(cluster) else {
        let known: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
        return anyhow::anyhow!(
            "lab {lab} has no cluster `{cluster}`; clusters are: {}",
            known.join(" ")
        );
    };
    let etcdctl = match kernel::binaries::find(kernel::binaries::ETCDCTL) {
        Ok(path) => path,
        Err(e) => return e.into(),
    };
    let mut argv = vec![
        etcdctl.display().to_string(),
        format!("--endpoints=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
    ];
    argv.extend_from_slice(args);
    std::env::set_var("ETCDCTL_API", "3");
    exec_on_node(lab, &cluster_plan.control_plane().id(), &argv)
}
