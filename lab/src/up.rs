//! `knetsim up`: from a topology to a running lab, one printed step at a time.
//!
//! Order: check what can be checked before touching anything (root, binaries, lab name,
//! topology, no lab of that name yet); write the plan; build namespaces and links; start the
//! supervisor; wait until every process is ready. If any step fails, everything made so far
//! is removed by the same code as `down`, and the error says what failed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::down;
use crate::network;
use crate::paths::LabPaths;
use crate::plan::{check_lab_name, LabPlan};
use crate::progress::Progress;
use crate::status::{ProcessState, SupervisorStatus};
use crate::topology::{Topology, DEFAULT, DEFAULT_NAME};

/// flannel's network config, loaded into every cluster's etcd with `Network` set to the
/// cluster's pod network. `knetsim up --flannel-config FILE` takes another (e.g. host-gw).
pub const DEFAULT_FLANNEL_CONFIG: &str = include_str!("../../conf/flannel-network-config.json");

/// What `up` is asked to build.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Topology file; the built-in default when `None`.
    pub topology: Option<PathBuf>,
    /// flannel network config file; the built-in default when `None`.
    pub flannel_config: Option<PathBuf>,
    /// Leave out the cluster add-ons (the cluster DNS), as kubeadm's
    /// `--skip-phases=addon/coredns`: bare nodes, for driving the runtime by hand.
    pub skip_addons: bool,
}

/// The most memory a lab's state tree (a tmpfs, see `kernel::mounts`) may take: etcd's
/// data of every cluster (etcd's own default quota is 2 GiB; a lab stores a few MiB, a
/// benchmark some hundreds), logs, and the nodes' files. Pages are only taken as written.
const LAB_TMPFS_MIB: u64 = 4096;

/// How long `up` waits for every process to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The programs `up` runs; each missing one is reported with its Debian package.
const REQUIRED: &[kernel::binaries::Requirement] = &[kernel::binaries::IP, kernel::binaries::ETCD];

#[derive(Debug)]
pub struct UpReport {
    pub plan: LabPlan,
    pub supervisor_pid: u32,
    pub elapsed: Duration,
}

/// Read and check a topology: `config`, or the built-in default.
pub fn load_topology(config: Option<&Path>) -> anyhow::Result<Topology> {
    let topology = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading topology file {}", path.display()))?;
            Topology::parse(&path.display().to_string(), &text)?
        }
        None => Topology::parse(DEFAULT_NAME, DEFAULT)?,
    };
    Ok(topology)
}

/// Everything that can be wrong before a lab is touched.
pub fn preflight(lab: &str) -> anyhow::Result<()> {
    check_lab_name(lab).map_err(anyhow::Error::msg)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("knetsim needs root to create network namespaces: run it as root (e.g. with sudo)");
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter_map(|req| kernel::binaries::find(*req).err())
        .map(|e| e.to_string())
        .collect();
    if !missing.is_empty() {
        bail!("{}", missing.join("\n"));
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        let path = Path::new(network::DEBIAN_CNI_DIR).join(plugin);
        if !path.exists() {
            bail!(
                "the CNI plugin {} is missing: install it with `apt-get install containernetworking-plugins`",
                path.display()
            );
        }
    }
    Ok(())
}

pub fn up(lab: &str, options: &UpOptions, progress: &Progress) -> anyhow::Result<UpReport> {
    let started = Instant::now();
    let (plan, flannel_config) = progress.step(|| {
        let topology = load_topology(options.topology.as_deref())?;
        let flannel_config = load_flannel_config(options.flannel_config.as_deref())?;
        preflight(lab)?;
        refuse_existing(lab)?;
        let mut plan = LabPlan::new(lab, &topology);
        assign_api_ports(&mut plan)?;
        let summary = format!(
            "checked topology, privileges and binaries ({} clusters, {} nodes)",
            plan.clusters.len(),
            plan.nodes().count()
        );
        Ok::<_, anyhow::Error>(((plan, flannel_config), summary))
    })?;
    let paths = LabPaths::new(lab);
    match build(&plan, &paths, options, &flannel_config, progress) {
        Ok(supervisor_pid) => Ok(UpReport {
            plan,
            supervisor_pid,
            elapsed: started.elapsed(),
        }),
        Err(error) => {
            progress.say("  ✗ failed; removing what was made");
            match down::down(lab, progress) {
                Ok(_) => Err(error.context(format!("lab {lab} did not come up; nothing of it is left"))),
                Err(cleanup) => Err(error.context(format!(
                    "lab {lab} did not come up, and cleaning up failed too ({cleanup:#}): run `knetsim down --lab {lab}`"
                ))),
            }
        }
    }
}

/// A free port of `127.0.0.1` per cluster, for kubectl. The kernel picks it; the supervisor
/// binds it again at once, so another program taking it in between is unlikely.
fn assign_api_ports(plan: &mut LabPlan) -> anyhow::Result<()> {
    let probes: Vec<std::net::TcpListener> = plan
        .clusters
        .iter()
        .map(|_| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<_, _>>()
        .context("finding free loopback ports for the API servers")?;
    for (cluster, probe) in plan.clusters.iter_mut().zip(&probes) {
        cluster.api_port = probe.local_addr()?.port();
    }
    Ok(())
}

fn refuse_existing(lab: &str) -> anyhow::Result<()> {
    let paths = LabPaths::new(lab);
    let namespaces = down::lab_namespaces(lab);
    if paths.root.exists() || !namespaces.is_empty() {
        bail!(
            "lab {lab} already exists ({}): see `knetsim status --lab {lab}`, or run `knetsim down --lab {lab}` first, or pick another name with --lab",
            if namespaces.is_empty() {
                format!("{} is there", paths.root.display())
            } else {
                format!("{} network namespaces", namespaces.len())
            }
        );
    }
    Ok(())
}

/// The steps that change the machine. Returns the supervisor's pid.
fn build(
    plan: &LabPlan,
    paths: &LabPaths,
    options: &UpOptions,
    flannel_config: &serde_json::Value,
    progress: &Progress,
) -> anyhow::Result<u32> {
    progress.step(|| {
        kernel::mounts::ensure_tmpfs(&paths.root, LAB_TMPFS_MIB, 0o755)?;
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "mounted a tmpfs for the lab's files on {} (at most {LAB_TMPFS_MIB} MiB)",
                paths.root.display()
            ),
        ))
    })?;
    progress.step(|| {
        std::fs::create_dir_all(paths.logs())
            .with_context(|| format!("creating {}", paths.logs().display()))?;
        let topology_text = match &options.topology {
            Some(path) => std::fs::read_to_string(path)?,
            None => DEFAULT.to_string(),
        };
        std::fs::write(paths.topology(), topology_text)?;
        std::fs::write(
            paths.flannel_config(),
            serde_json::to_vec_pretty(flannel_config)?,
        )?;
        std::fs::write(paths.plan(), serde_json::to_vec_pretty(plan)?)?;
        Ok::<_, anyhow::Error>(((), format!("wrote the plan to {}", paths.plan().display())))
    })?;
    progress.step(|| {
        for cluster in &plan.clusters {
            // etcd refuses a data directory others may read.
            let dir = paths.etcd_data(&cluster.name);
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                })
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok::<_, anyhow::Error>((
            (),
            format!("made {} etcd data directories", plan.clusters.len()),
        ))
    })?;
    progress.step(|| {
        let count = network::create_namespaces(plan)?;
        network::set_hostnames(plan, paths)?;
        let flannel_cni = kernel::binaries::sibling(kernel::binaries::FLANNEL_CNI)?;
        network::prepare_node_dirs(plan, paths, &flannel_cni)
            .context("creating the nodes' directories")?;
        Ok::<_, anyhow::Error>((
            (),
            format!("created {count} network namespaces with hostnames"),
        ))
    })?;
    progress.step(|| {
        network::wire_fabric(plan)?;
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "wired the fabric ({} bridges, {} veths)",
                plan.clusters.len(),
                plan.nodes().count()
            ),
        ))
    })?;
    progress.step(|| {
        let absent = network::configure_nodes(plan)?;
        let note = if absent.is_empty() {
            String::new()
        } else {
            format!(" (kernel lacks {})", absent.join(", "))
        };
        Ok::<_, anyhow::Error>((
            (),
            format!("addressed and routed {} nodes{note}", plan.nodes().count()),
        ))
    })?;
    progress.step(|| {
        crate::access::issue_certificates(plan, paths)?;
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "issued the lab's CA and certificates in {}",
                paths.pki().display()
            ),
        ))
    })?;
    let pid = progress.step(|| {
        let pid = start_supervisor(&plan.lab, paths)?;
        Ok::<_, anyhow::Error>((pid, format!("started the supervisor (pid {pid})")))
    })?;
    progress.step(|| {
        let ready = wait_ready(pid, paths, |p| p.name == "etcd")?;
        Ok::<_, anyhow::Error>(((), format!("etcd ready: {}", ready.join(", "))))
    })?;
    progress.step(|| {
        for cluster in &plan.clusters {
            put_flannel_config(paths, cluster, flannel_config)?;
        }
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "loaded the flannel network config into {} etcds",
                plan.clusters.len()
            ),
        ))
    })?;
    progress.step(|| {
        let ready = wait_ready(pid, paths, |_| true)?;
        Ok::<_, anyhow::Error>((
            (),
            format!(
                "{} processes ready (flannel has a lease on every node)",
                ready.len()
            ),
        ))
    })?;
    progress.step(|| {
        let user = crate::access::write_kubeconfigs(plan, paths)?;
        let merged = match user {
            Some(path) => format!(", contexts knetsim-{}-* in {}", plan.lab, path.display()),
            None => String::new(),
        };
        Ok::<_, anyhow::Error>((
            (),
            format!("wrote {}{merged}", paths.kubeconfig().display()),
        ))
    })?;
    if options.skip_addons {
        return Ok(pid);
    }
    progress.step(|| {
        let runtime = tokio::runtime::Runtime::new()?;
        let applied = runtime.block_on(crate::addons::install(plan, paths))?;
        Ok::<_, anyhow::Error>((
            (),
            format!("applied the cluster DNS add-on ({applied} objects): kube-dns in kube-system"),
        ))
    })?;
    Ok(pid)
}

/// `knetsim supervise --lab <lab>` in its own session, detached from the terminal.
fn start_supervisor(lab: &str, paths: &LabPaths) -> anyhow::Result<u32> {
    let exe = kernel::binaries::own_executable()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.supervisor_log())
        .with_context(|| format!("opening {}", paths.supervisor_log().display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["supervise", "--lab", lab])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is a single system call, safe between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = command.spawn().context("starting the supervisor")?;
    let pid = child.id();
    std::fs::write(paths.supervisor_pid(), format!("{pid}\n"))?;
    Ok(pid)
}

/// Read a flannel network config and check it the way flanneld would.
pub fn load_flannel_config(path: Option<&Path>) -> anyhow::Result<serde_json::Value> {
    let (name, text) = match path {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("reading flannel network config {}", path.display()))?,
        ),
        None => (
            "built-in conf/flannel-network-config.json".to_string(),
            DEFAULT_FLANNEL_CONFIG.to_string(),
        ),
    };
    flannel::network::NetworkConfig::parse(text.as_bytes())
        .with_context(|| format!("in {name}"))?;
    serde_json::from_str(&text).with_context(|| format!("in {name}"))
}

/// `etcdctl put /coreos.com/network/config` on the cluster's control-plane node, with the
/// cluster's pod network as `Network`.
fn put_flannel_config(
    paths: &LabPaths,
    cluster: &crate::plan::ClusterPlan,
    template: &serde_json::Value,
) -> anyhow::Result<()> {
    let mut config = template.clone();
    config["Network"] = serde_json::Value::String(cluster.pod_network.to_string());
    let key = format!("{}/config", flannel::network::DEFAULT_PREFIX);
    let cp = cluster.control_plane();
    let etcdctl = kernel::binaries::find(kernel::binaries::ETCDCTL)?;
    let enter = crate::network::enter_node(paths, cp)?;
    let mut command = std::process::Command::new(etcdctl);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints=http://127.0.0.1:{}",
            crate::plan::ETCD_CLIENT_PORT
        ))
        .args(["put", &key, &config.to_string()]);
    // SAFETY: `enter` makes only system calls, as code between fork and exec must.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || enter.enter());
    }
    let output = command.output().context("running etcdctl")?;
    if !output.status.success() {
        bail!(
            "etcdctl put {key} on {} failed: {}",
            cp.id(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Poll `status.json` until every process `selected` is ready; fail at the first crash.
pub(crate) fn wait_ready(
    supervisor: u32,
    paths: &LabPaths,
    selected: impl Fn(&crate::status::ProcessStatus) -> bool,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !kernel::procs::alive(supervisor as i32) {
            bail!(
                "the supervisor exited; its log {} ends with:\n{}",
                paths.supervisor_log().display(),
                tail(&paths.supervisor_log(), 10)
            );
        }
        if let Some(status) = SupervisorStatus::read(&paths.status()) {
            let processes: Vec<_> = status.processes.iter().filter(|p| selected(p)).collect();
            let failed = processes
                .iter()
                .find(|p| matches!(p.state, ProcessState::BackOff | ProcessState::Failed));
            if let Some(bad) = failed {
                bail!(
                    "{} exited before it was ready ({}); its log {} ends with:\n{}",
                    bad.id(),
                    bad.last_exit.as_deref().unwrap_or("no exit status"),
                    bad.log.display(),
                    tail(&bad.log, 10)
                );
            }
            if !processes.is_empty() && processes.iter().all(|p| p.state == ProcessState::Ready) {
                return Ok(processes.iter().map(|p| p.id()).collect());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "not every process was ready after {:?}: see `knetsim status` and {}",
                READY_TIMEOUT,
                paths.logs().display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `lines` lines of a log file, indented, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to type next, printed at the end of `up`.
pub fn next_steps(report: &UpReport) -> String {
    let plan = &report.plan;
    let lab = if plan.lab == crate::plan::DEFAULT_LAB {
        String::new()
    } else {
        format!(" --lab {}", plan.lab)
    };
    let mut nodes = plan.nodes().filter(|n| n.role == crate::plan::Role::Worker);
    let (from, to) = match (nodes.next(), nodes.next()) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            let cp = plan.clusters[0].control_plane();
            (cp, cp)
        }
    };
    let cluster = &plan.clusters[0].name;
    format!(
        "lab {} is up in {:.2} s. Next:\n  kubectl --context knetsim-{}-{cluster} get namespaces\n  knetsim status{lab}\n  knetsim exec{lab} {} -- ping -c1 {}\n  knetsim etcdctl{lab} {cluster} -- endpoint health\n  knetsim shell{lab} {}\n  knetsim down{lab}",
        plan.lab,
        report.elapsed.as_secs_f64(),
        plan.lab,
        from.id(),
        to.address,
        from.id(),
    )
}
