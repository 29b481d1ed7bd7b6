//! `knetsim supervise --lab <lab>`: keeps the lab's processes running.
//!
//! One background process per lab, started by `up`, in the root namespace. For each process
//! of the plan it runs one task that starts the process on its node (entering the node's
//! network, UTS and a private mount namespace between fork and exec), probes it until ready,
//! and when it exits, logs how and starts it again after an exponential back-off, as a kubelet
//! does for a crashing container. Each process is its own session and process group, and
//! writes stdout and stderr to its own log file.
//!
//! On SIGHUP it reads the plan again (as nginx or sshd re-read their config): processes of
//! nodes added since are started, those of nodes removed are stopped, those whose command
//! line changed are restarted with the new one; the others are left alone. This is how
//! `knetsim node add`, `node remove` and `service-proxy` change a running lab.
//!
//! On SIGTERM or SIGINT every process gets SIGTERM, then SIGKILL after a grace period, and the
//! supervisor exits. If the supervisor itself is killed, its processes keep running until
//! `down` finds them by namespace.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::paths::LabPaths;
use crate::plan::{NodePlan, ProcessSpec, Program, Readiness};
use crate::status::{now_ms, ProcessState, ProcessStatus, SupervisorStatus};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next crash starts the back-off from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(3);
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Shared by the per-process tasks; each change is written to `status.json` at once.
struct Context {
    paths: LabPaths,
    status: Mutex<SupervisorStatus>,
}

impl Context {
    /// Change the status of the process `id` (`c0/w1/kubelet`) and write `status.json`.
    fn update(&self, id: &str, change: impl FnOnce(&mut ProcessStatus)) {
        let Ok(mut status) = self.status.lock() else {
            return;
        };
        let Some(process) = status.processes.iter_mut().find(|p| p.id() == id) else {
            return;
        };
        change(process);
        process.since_ms = now_ms();
        self.write(&status);
    }

    fn write(&self, status: &SupervisorStatus) {
        if let Err(e) = status.write(&self.paths.status()) {
            tracing::warn!(error = %e, "could not write {}", self.paths.status().display());
        }
    }
}

/// A process's entry in `status.json` before its first start.
fn initial_status(paths: &LabPaths, spec: &ProcessSpec) -> ProcessStatus {
    ProcessStatus {
        name: spec.name.clone(),
        cluster: spec.cluster.clone(),
        node: spec.node.clone(),
        pid: None,
        state: ProcessState::Stopped,
        restarts: 0,
        last_exit: None,
        since_ms: now_ms(),
        log: paths.process_log(&spec.cluster, &spec.node, &spec.name),
    }
}

/// The task keeping one process running, and how to tell it to stop.
struct Supervised {
    /// What it was started as: a plan asking for something else restarts it.
    spec: ProcessSpec,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// The processes being kept running, by id, in the plan's order.
#[derive(Default)]
struct Processes {
    running: HashMap<String, Supervised>,
    order: Vec<String>,
}

impl Processes {
    /// Start a task for every process of `plan` that has none yet; stop the tasks of
    /// processes `plan` no longer has, or has with another command line (those start again
    /// as new). Returns how many were started and stopped.
    async fn follow(
        &mut self,
        plan: &crate::plan::LabPlan,
        context: &Arc<Context>,
    ) -> anyhow::Result<(usize, usize)> {
        let specs = plan.processes(&context.paths);
        let gone: Vec<String> = self
            .order
            .iter()
            .filter(|id| {
                let running = self.running.get(*id).map(|p| &p.spec);
                !specs.iter().any(|spec| Some(spec) == running)
            })
            .cloned()
            .collect();
        // Stop all of them at once, then wait: a node's processes go down together.
        for id in &gone {
            if let Some(process) = self.running.get(id) {
                let _ = process.stop.send(true);
            }
        }
        for id in &gone {
            if let Some(process) = self.running.remove(id) {
                let _ = process.task.await;
            }
        }
        if let Ok(mut status) = context.status.lock() {
            status.processes.retain(|p| !gone.contains(&p.id()));
            context.write(&status);
        }
        self.order.retain(|id| !gone.contains(id));
        let new: Vec<ProcessSpec> = specs
            .into_iter()
            .filter(|spec| !self.running.contains_key(&spec.id()))
            .collect();
        // Every new process is in `status.json` before any starts, so a reader waiting for
        // "all ready" never sees half the list.
        if let Ok(mut status) = context.status.lock() {
            let paths = &context.paths;
            status
                .processes
                .extend(new.iter().map(|spec| initial_status(paths, spec)));
            context.write(&status);
        }
        let started = new.len();
        for spec in new {
            let id = spec.id();
            let node = plan
                .node(&format!("{}/{}", spec.cluster, spec.node))
                .cloned()
                .map_err(anyhow::Error::msg)?;
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(keep_running(spec.clone(), node, context.clone(), stopped));
            self.running
                .insert(id.clone(), Supervised { spec, task, stop });
            self.order.push(id);
        }
        Ok((started, gone.len()))
    }

    /// Stop every process, all at once, and wait for them.
    async fn stop_all(self) {
        for process in self.running.values() {
            let _ = process.stop.send(true);
        }
        for (_, process) in self.running {
            let _ = process.task.await;
        }
    }
}

/// Run the supervisor of `lab` until SIGTERM or SIGINT; SIGHUP re-reads the plan.
pub async fn run(lab: &str) -> anyhow::Result<()> {
    let paths = LabPaths::new(lab);
    let plan = crate::read_plan(lab)?;
    let status = SupervisorStatus {
        supervisor_pid: std::process::id(),
        processes: Vec::new(),
    };
    status.write(&paths.status())?;
    let context = Arc::new(Context {
        paths: paths.clone(),
        status: Mutex::new(status),
    });

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut processes = Processes::default();
    let (started, _) = processes.follow(&plan, &context).await?;
    tracing::info!(lab, processes = started, "supervisor started");

    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: stopping every process");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: stopping every process");
                break;
            }
            _ = hangup.recv() => {
                // A plan that cannot be read changes nothing: the lab keeps running as it is.
                let followed = match crate::read_plan(lab) {
                    Ok(plan) => processes.follow(&plan, &context).await,
                    Err(e) => Err(e),
                };
                match followed {
                    Ok((started, stopped)) => {
                        tracing::info!(started, stopped, "SIGHUP: followed the plan")
                    }
                    Err(e) => tracing::error!("SIGHUP: plan not followed: {e:#}"),
                }
            }
        }
    }
    processes.stop_all().await;
    tracing::info!("supervisor stopped");
    Ok(())
}

/// Start `spec`, probe it, restart it when it exits, until shutdown.
async fn keep_running(
    spec: ProcessSpec,
    node: NodePlan,
    context: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = spec.id();
    let netns = node.netns.clone();
    let log = context
        .paths
        .process_log(&spec.cluster, &spec.node, &spec.name);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        match start(&spec, &node, &context.paths, &log) {
            Err(e) => {
                tracing::error!(process = %id, "could not start: {e:#}");
                context.update(&id, |s| {
                    s.state = ProcessState::Failed;
                    s.pid = None;
                    s.last_exit = Some(format!("not started: {e:#}"));
                });
            }
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(process = %id, pid, "started");
                context.update(&id, |s| {
                    s.state = ProcessState::Running;
                    s.pid = pid;
                });
                // The kernel stamps files with a clock that may lag by a tick; a file from a previous
                // run is older by at least the back-off, so this margin cannot mistake it.
                let since = std::time::SystemTime::now() - Duration::from_millis(100);
                let probe = wait_ready(spec.ready.clone(), netns.clone(), since);
                tokio::pin!(probe);
                let mut probing = true;
                let exit = loop {
                    tokio::select! {
                        exit = child.wait() => break exit,
                        _ = &mut probe, if probing => {
                            probing = false;
                            tracing::info!(process = %id, elapsed_ms = started.elapsed().as_millis() as u64, "ready");
                            context.update(&id, |s| s.state = ProcessState::Ready);
                        }
                        _ = shutdown.changed() => {
                            stop(&mut child, &id).await;
                            context.update(&id, |s| {
                                s.state = ProcessState::Stopped;
                                s.pid = None;
                            });
                            return;
                        }
                    }
                };
                let how = match exit {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                tracing::warn!(process = %id, "exited ({how})");
                context.update(&id, |s| {
                    s.state = ProcessState::BackOff;
                    s.pid = None;
                    s.last_exit = Some(how);
                });
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(process = %id, "restarting in {} ms", backoff.as_millis());
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {
                context.update(&id, |s| s.state = ProcessState::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        context.update(&id, |s| s.restarts += 1);
        tracing::info!(process = %id, "restarting");
    }
}

/// Fork and exec `spec` on its node, output appended to `log`.
fn start(
    spec: &ProcessSpec,
    node: &NodePlan,
    paths: &LabPaths,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let program = match spec.program {
        Program::External(requirement) => kernel::binaries::find(requirement)?,
        Program::Knetsim => kernel::binaries::own_executable()?,
        Program::Sibling(program) => kernel::binaries::sibling(program)?,
    };
    let enter = crate::network::enter_node(paths, node)?;
    let stdout = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let stderr = stdout.try_clone()?;
    // A listener in the machine's own namespace, bound here (the supervisor runs there) and
    // inherited by the child, which serves it from inside its node.
    let root_listener = match spec.root_listener {
        Some(port) => Some(
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .with_context(|| format!("binding 127.0.0.1:{port} for {}", spec.id()))?,
        ),
        None => None,
    };
    let inherited_fd = root_listener.as_ref().map(|l| {
        use std::os::fd::AsRawFd;
        l.as_raw_fd()
    });
    let mut command = tokio::process::Command::new(program);
    if let Some(library) = spec.preload {
        match kernel::binaries::find_library(library) {
            Ok(path) => {
                command.env("LD_PRELOAD", path);
            }
            Err(e) => tracing::warn!(process = %spec.id(), "{e}; starting it without"),
        }
    }
    command
        .args(&spec.args)
        .args(inherited_fd.map(|fd| format!("--listener-fd={fd}")))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: the hook only makes system calls (setns, unshare, mount, setsid, fcntl); it
    // allocates nothing and takes no lock, as code between fork and exec must.
    unsafe {
        command.pre_exec(move || {
            enter.enter()?;
            nix::unistd::setsid()?;
            if let Some(fd) = inherited_fd {
                // Keep the listener open across exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(root_listener);
    Ok(child)
}

/// SIGTERM the process group, SIGKILL it after the grace period.
async fn stop(child: &mut tokio::process::Child, id: &str) {
    if let Some(pid) = child.id() {
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(process = %id, "did not stop in {:?}: SIGKILL", STOP_GRACE);
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
    let _ = child.wait().await;
    tracing::info!(process = %id, "stopped");
}

/// Resolves once the readiness probe passes.
async fn wait_ready(ready: Readiness, netns: String, started: std::time::SystemTime) {
    loop {
        let (ready, netns) = (ready.clone(), netns.clone());
        let passed = tokio::task::spawn_blocking(move || probe(&ready, &netns, started))
            .await
            .unwrap_or(false);
        if passed {
            return;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// One readiness probe, from inside the node.
pub fn probe(ready: &Readiness, netns: &str, started: std::time::SystemTime) -> bool {
    match ready {
        Readiness::HttpGet {
            port,
            path,
            body_contains,
        } => {
            let (port, path, expected) = (*port, path.clone(), body_contains.clone());
            kernel::netns::run_in(netns, move || http_get_contains(port, &path, &expected))
                .unwrap_or(false)
        }
        Readiness::TcpConnect(port) => {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            kernel::netns::run_in(netns, move || {
                TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
            })
            .unwrap_or(false)
        }
        Readiness::FileWritten(path) => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified >= started),
    }
}

fn http_get_contains(port: u16, path: &str, expected: &str) -> bool {
    use std::io::{Read, Write};
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_millis(500);
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.take(64 * 1024).read_to_string(&mut response);
    let status_ok = response
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code == "200");
    status_ok && response.contains(expected)
}
