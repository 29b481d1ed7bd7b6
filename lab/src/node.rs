//! `knetsim node add` and `knetsim node remove`: workers joining and leaving a running lab,
//! as `kubeadm join` and `kubectl delete node` plus switching the machine off do.
//!
//! Adding a node does for one node what `up` does for all: its namespaces, directories and
//! certificates, its veth into the cluster's bridge, its address and routes. Then the node
//! goes into the plan (`lab.json`), the supervisor is told to read the plan again (SIGHUP) and
//! starts the node's flannel, kubelet-lite and kubeproxy-lite, and `add` waits until they are
//! ready. From then on `status`, `exec` and `down` know the node like any other: they all read
//! the plan, and `down` finds everything by the lab's namespace prefix anyway.
//!
//! Removing a node is the reverse: out of the plan, SIGHUP (the supervisor stops its
//! processes), its Node object deleted (the controller-manager's pod garbage collector then
//! deletes the pods bound to it, and their controllers re-create them elsewhere), its flannel
//! lease deleted (every other node's flannel drops its routes to the node's pod subnet), and
//! what is left on the node (pod sandboxes) stopped and its namespaces deleted.
//!
//! Only one `add` or `remove` runs at a time per lab (a lock file in the lab's state tree).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::paths::LabPaths;
use crate::plan::{LabPlan, NodePlan, Role};
use crate::progress::Progress;
use crate::status::SupervisorStatus;

/// How long `remove` waits for the supervisor to stop the node's processes.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Node names are what `up` gives workers (`w4`) or any name like it: lowercase letters and
/// digits, starting with a letter, short enough for the fabric port `<cluster>-<node>` to fit
/// the kernel's 15-byte interface names.
pub fn check_node_name(cluster: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let fits = cluster.len() + 1 + name.len() <= 15;
    if !valid {
        Err(format!(
            "`{name}` is not a valid node name: use lowercase letters and digits, starting with a letter (e.g. w4)"
        ))
    } else if !fits {
        Err(format!(
            "node name `{name}` is too long for cluster {cluster}: `{cluster}-{name}` must fit a 15-byte interface name"
        ))
    } else {
        Ok(())
    }
}

/// The worker `name` of `cluster` as it would join `plan`: the lowest free worker address
/// (`.11` upwards), or an error saying why it cannot join.
pub fn plan_worker(plan: &LabPlan, cluster: &str, name: &str) -> anyhow::Result<NodePlan> {
    check_node_name(cluster, name).map_err(anyhow::Error::msg)?;
    let Some(cluster_plan) = plan.cluster(cluster) else {
        let known: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "lab {} has no cluster `{cluster}`; clusters are: {}",
            plan.lab,
            known.join(" ")
        );
    };
    if cluster_plan.nodes.iter().any(|n| n.name == name) {
        bail!(
            "cluster {cluster} already has a node `{name}`: pick another name (see `knetsim status --lab {}`)",
            plan.lab
        );
    }
    let base = u32::from(cluster_plan.node_network.network());
    let broadcast = u32::from(cluster_plan.node_network.broadcast());
    let address = (base + 11..broadcast)
        .map(Ipv4Addr::from)
        .find(|a| cluster_plan.nodes.iter().all(|n| n.address != *a))
        .with_context(|| {
            format!(
                "cluster {cluster}'s node network {} has no free address left",
                cluster_plan.node_network
            )
        })?;
    Ok(NodePlan::new(
        &plan.lab,
        cluster,
        name,
        Role::Worker,
        address,
    ))
}

/// Holds the lab's plan lock while alive: one `node add|remove` or `service-proxy` at a time.
pub(crate) struct NodeLock(#[allow(dead_code)] std::fs::File);

pub(crate) fn lock(lab: &str, paths: &LabPaths) -> anyhow::Result<NodeLock> {
    let path = paths.root.join("nodes.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| {
            format!(
                "opening {} (is lab {lab} up? see `knetsim status --lab {lab}`)",
                path.display()
            )
        })?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(NodeLock(file))
}

/// Write the plan whole (via rename), so a reader never sees half of it.
pub(crate) fn write_plan(paths: &LabPaths, plan: &LabPlan) -> anyhow::Result<()> {
    let tmp = paths.plan().with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(plan)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, paths.plan())
        .with_context(|| format!("writing {}", paths.plan().display()))
}

/// The running supervisor of `lab`, checked by its command line (the pid may be reused).
pub(crate) fn supervisor_pid(lab: &str, paths: &LabPaths) -> anyhow::Result<i32> {
    let pid = std::fs::read_to_string(paths.supervisor_pid())
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    let ours = pid.filter(|pid| {
        kernel::procs::cmdline(*pid).is_some_and(|argv| {
            argv.iter().any(|a| a == "supervise") && crate::down::is_lab_command(&argv, lab)
        })
    });
    ours.with_context(|| {
        format!(
            "the supervisor of lab {lab} is not running, so no process can be started or stopped: run `knetsim down --lab {lab}` then `up`"
        )
    })
}

/// Tell the supervisor to read the plan again.
pub(crate) fn reload(pid: i32) -> anyhow::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling the supervisor (pid {pid})"))
}

pub struct AddReport {
    pub node: NodePlan,
    pub processes: Vec<String>,
    pub elapsed: Duration,
}

/// `knetsim node add <cluster> <name>`: a worker joins the running lab.
pub fn add(lab: &str, cluster: &str, name: &str, progress: &Progress) -> anyhow::Result<AddReport> {
    let started = Instant::now();
    let paths = LabPaths::new(lab);
    let plan = crate::read_plan(lab)?;
    let _lock = lock(lab, &paths)?;
    // Read again under the lock: another `add` may have changed it meanwhile.
    let mut plan = crate::read_plan(lab).unwrap_or(plan);
    let supervisor = supervisor_pid(lab, &paths)?;
    let node = plan_worker(&plan, cluster, name)?;
    if kernel::netns::exists(&node.netns) {
        bail!(
            "a network namespace {} exists already (left from an earlier node?): run `knetsim node remove --lab {lab} {cluster} {name}` first",
            node.netns
        );
    }
    let id = node.id();
    let old_plan = plan.clone();
    if let Some(c) = plan.clusters.iter_mut().find(|c| c.name == cluster) {
        c.nodes.push(node.clone());
    }
    match join(&plan, &paths, &node, supervisor, progress) {
        Ok(processes) => Ok(AddReport {
            node,
            processes,
            elapsed: started.elapsed(),
        }),
        Err(error) => {
            progress.say(&format!("  ✗ failed; removing what was made of {id}"));
            let undone = write_plan(&paths, &old_plan)
                .and_then(|()| reload(supervisor))
                .and_then(|()| wait_stopped(&paths, &node))
                .and_then(|()| clear_node(&paths, &node));
            match undone {
                Ok(()) => Err(error.context(format!("node {id} did not join lab {lab}; nothing of it is left"))),
                Err(cleanup) => Err(error.context(format!(
                    "node {id} did not join lab {lab}, and cleaning up failed too ({cleanup:#}): run `knetsim node remove --lab {lab} {cluster} {name}`"
                ))),
            }
        }
    }
}

/// The steps that change the machine, for one node; returns its processes' ids.
fn join(
    plan: &LabPlan,
    paths: &LabPaths,
    node: &NodePlan,
    supervisor: i32,
    progress: &Progress,
) -> anyhow::Result<Vec<String>> {
    let cluster = plan
        .cluster(&node.cluster)
        .context("the node's cluster is in the plan")?;
    progress.step(|| {
        kernel::netns::ensure_added(&[&node.netns])?;
        kernel::uts::ensure_created(&paths.uts(&node.cluster, &node.name), &node.hostname)?;
        let flannel_cni = kernel::binaries::sibling(kernel::binaries::FLANNEL_CNI)?;
        crate::network::prepare_node_dir(paths, node, &flannel_cni)
            .context("creating the node's directories")?;
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "created namespace {} with hostname {}",
                node.netns, node.hostname
            ),
        ))
    })?;
    progress.step(|| {
        crate::network::wire_node(plan, cluster, node)?;
        let absent = crate::network::configure_node(plan, cluster, node)?;
        let note = if absent.is_empty() {
            String::new()
        } else {
            format!(" (kernel lacks {})", absent.join(", "))
        };
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "plugged {} into {} as {}{note}",
                node.fabric_port, cluster.fabric_bridge, node.address
            ),
        ))
    })?;
    progress.step(|| {
        crate::access::issue_added_node_certificates(plan, paths, node)?;
        Ok::<_, anyhow::Error>((
            (),
            format!("issued system:node:{} certificates", node.hostname),
        ))
    })?;
    progress.step(|| {
        write_plan(paths, plan)?;
        reload(supervisor)?;
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "added {} to {} and told the supervisor (SIGHUP)",
                node.id(),
                paths.plan().display()
            ),
        ))
    })?;
    progress.step(|| {
        let ready = crate::up::wait_ready(supervisor as u32, paths, |p| {
            p.cluster == node.cluster && p.node == node.name
        })?;
        Ok::<_, anyhow::Error>((ready.clone(), format!("{} ready", ready.join(", "))))
    })
}

pub struct RemoveReport {
    pub node: NodePlan,
    pub pods: usize,
    pub elapsed: Duration,
}

/// `knetsim node remove <cluster> <name>`: a worker leaves the running lab.
pub fn remove(
    lab: &str,
    cluster: &str,
    name: &str,
    progress: &Progress,
) -> anyhow::Result<RemoveReport> {
    let started = Instant::now();
    let paths = LabPaths::new(lab);
    crate::read_plan(lab)?;
    let _lock = lock(lab, &paths)?;
    let mut plan = crate::read_plan(lab)?;
    let id = format!("{cluster}/{name}");
    let node = plan.node(&id).map_err(anyhow::Error::msg)?.clone();
    if node.role == Role::ControlPlane {
        bail!("{id} is the control-plane node of {cluster}: a cluster cannot lose it (use `knetsim down --lab {lab}` to remove the whole lab)");
    }
    let supervisor = supervisor_pid(lab, &paths)?;
    progress.step(|| {
        for c in &mut plan.clusters {
            c.nodes.retain(|n| n.id() != id);
        }
        write_plan(&paths, &plan)?;
        reload(supervisor)?;
        wait_stopped(&paths, &node)?;
        Ok::<_, anyhow::Error>((
            (),
            format!("took {id} out of the plan; the supervisor stopped its processes"),
        ))
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    progress.step(|| {
        let found = runtime.block_on(delete_node_object(&paths, &node))?;
        let done = if found {
            format!(
                "deleted Node {} (its pods are garbage-collected)",
                node.hostname
            )
        } else {
            format!("Node {} was not registered", node.hostname)
        };
        Ok::<_, anyhow::Error>(((), done))
    })?;
    progress.step(|| {
        let deleted = delete_flannel_lease(&plan, &paths, &node)?;
        let done = match deleted {
            Some(key) => format!("deleted its flannel lease {key}"),
            None => "it held no flannel lease".to_string(),
        };
        Ok::<_, anyhow::Error>(((), done))
    })?;
    let pods = progress.step(|| {
        let pods = pod_namespaces(&node).len();
        clear_node(&paths, &node)?;
        Ok::<_, anyhow::Error>((
            pods,
            format!(
                "stopped {pods} pod sandboxes, deleted {} and its namespaces",
                node.netns
            ),
        ))
    })?;
    Ok(RemoveReport {
        node,
        pods,
        elapsed: started.elapsed(),
    })
}

/// Until `status.json` lists none of the node's processes.
fn wait_stopped(paths: &LabPaths, node: &NodePlan) -> anyhow::Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let left: Vec<String> = SupervisorStatus::read(&paths.status())
            .map(|s| {
                s.processes
                    .iter()
                    .filter(|p| p.cluster == node.cluster && p.node == node.name)
                    .map(|p| p.id())
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the supervisor did not stop {} within {STOP_TIMEOUT:?}: see {}",
                left.join(", "),
                paths.supervisor_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The namespaces of the pods the node's kubelet made: `<node netns>-<namespace>-<pod>`.
fn pod_namespaces(node: &NodePlan) -> Vec<String> {
    let prefix = format!("{}-", node.netns);
    kernel::netns::list()
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// Stop whatever still runs on the node or in its pods, delete their namespaces (the veth
/// into the fabric goes with the node's), its hostname namespace and its directories.
fn clear_node(paths: &LabPaths, node: &NodePlan) -> anyhow::Result<()> {
    let mut namespaces = pod_namespaces(node);
    namespaces.push(node.netns.clone());
    let inodes = namespaces
        .iter()
        .filter_map(|name| kernel::netns::inode(name))
        .collect();
    let pids = kernel::procs::in_network_namespaces(&inodes);
    kernel::procs::terminate(&pids, Duration::from_secs(2));
    kernel::netns::ensure_deleted(&namespaces)?;
    kernel::uts::ensure_removed(&paths.uts(&node.cluster, &node.name))?;
    let root = paths.node_root(&node.cluster, &node.name);
    match std::fs::remove_dir_all(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("removing {}", root.display())))
        }
        _ => Ok(()),
    }
}

/// `kubectl delete node`, as the lab's admin. Whether there was one.
async fn delete_node_object(paths: &LabPaths, node: &NodePlan) -> anyhow::Result<bool> {
    let client = crate::access::cluster_client(paths, &node.cluster).await?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    match nodes
        .delete(&node.hostname, &kube::api::DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("deleting Node {}", node.hostname))),
    }
}

/// Delete the node's subnet lease from its cluster's etcd, found by the node's address
/// (`PublicIP`), with etcdctl on the control-plane node. The key deleted, if any.
fn delete_flannel_lease(
    plan: &LabPlan,
    paths: &LabPaths,
    node: &NodePlan,
) -> anyhow::Result<Option<String>> {
    let cluster = plan
        .cluster(&node.cluster)
        .context("the node's cluster is in the plan")?;
    let prefix = format!("{}/subnets/", flannel::network::DEFAULT_PREFIX);
    let listing = etcdctl(
        paths,
        cluster.control_plane(),
        &["get", "--prefix", &prefix],
    )?;
    let lines: Vec<&str> = listing.lines().collect();
    let key = lines.chunks(2).find_map(|pair| match pair {
        [key, value] => {
            let attrs: serde_json::Value = serde_json::from_str(value).ok()?;
            (attrs["PublicIP"].as_str() == Some(&node.address.to_string())).then(|| key.to_string())
        }
        _ => None,
    });
    if let Some(key) = &key {
        etcdctl(paths, cluster.control_plane(), &["del", key])?;
    }
    Ok(key)
}

/// etcdctl on `cp`, against its etcd; its stdout.
fn etcdctl(paths: &LabPaths, cp: &NodePlan, args: &[&str]) -> anyhow::Result<String> {
    let program = kernel::binaries::find(kernel::binaries::ETCDCTL)?;
    let enter = crate::network::enter_node(paths, cp)?;
    let mut command = std::process::Command::new(program);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints=http://127.0.0.1:{}",
            crate::plan::ETCD_CLIENT_PORT
        ))
        .args(args);
    // SAFETY: `enter` makes only system calls, as code between fork and exec must.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || enter.enter());
    }
    let output = command.output().context("running etcdctl")?;
    if !output.status.success() {
        bail!(
            "etcdctl {} on {} failed: {}",
            args.join(" "),
            cp.id(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    fn plan() -> LabPlan {
        let text = "clusters:\n  - name: c0\n    workers: 2\n  - name: c1\n    workers: 1\n";
        LabPlan::new("lab", &Topology::parse("t", text).unwrap())
    }

    #[test]
    fn a_new_worker_takes_the_lowest_free_address() {
        let mut plan = plan();
        let w3 = plan_worker(&plan, "c0", "w3").unwrap();
        assert_eq!(
            (w3.address.to_string(), w3.netns.as_str(), w3.role),
            ("172.20.0.13".to_string(), "lab-c0-w3", Role::Worker)
        );
        // A gap left by a removed worker is filled first.
        plan.clusters[0].nodes.retain(|n| n.name != "w1");
        let again = plan_worker(&plan, "c0", "extra").unwrap();
        assert_eq!(again.address.to_string(), "172.20.0.11");
        assert_eq!(again.fabric_port, "c0-extra");
    }

    #[test]
    fn refuses_names_taken_unknown_clusters_and_bad_names() {
        let plan = plan();
        let taken = plan_worker(&plan, "c0", "w2").unwrap_err().to_string();
        assert!(taken.contains("already has a node `w2`"), "{taken}");
        let unknown = plan_worker(&plan, "c9", "w3").unwrap_err().to_string();
        assert!(unknown.contains("clusters are: c0 c1"), "{unknown}");
        for bad in ["", "W3", "3w", "w-3", "averyverylongname"] {
            assert!(plan_worker(&plan, "c0", bad).is_err(), "{bad}");
        }
    }
}
