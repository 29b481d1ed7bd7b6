//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus, ExecSync.
//!
//! A container is a process that joins its sandbox's namespaces (the pause process's network,
//! UTS and IPC) and gets a mount namespace of its own with its volume mounts. Like containerd,
//! the runtime does not parent it directly: a **shim** (`knetsim-shim …`, one per container,
//! in a session of its own) starts it, copies its stdout and stderr into the CRI log file, and
//! records its exit. So containers and their exit codes survive a kubelet restart.
//!
//! On disk, in `<state>/containers/<id>/`: `container.json` (written by the runtime),
//! `pid` (by the shim once the process runs) and `exit.json` (by the shim when it ends).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{new_id, Runtime, RuntimeError, SandboxState};

/// A volume: a directory or file of the node seen at `container_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    #[serde(default)]
    pub readonly: bool,
}

/// What CreateContainer is given (the CRI's `ContainerConfig`, the parts knetsim uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    pub name: String,
    /// The program and its arguments (Kubernetes' `command` + `args`, resolved).
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// The CRI log file (`/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`).
    pub log_path: PathBuf,
    /// Keep the container's stdin open for `kubectl attach` (the pod's `stdin: true`).
    #[serde(default)]
    pub stdin: bool,
    /// Close that stdin when the first attached client's input ends (`stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// A pseudo-terminal as the container's stdin, stdout and stderr (`tty: true`).
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    #[serde(rename = "CONTAINER_CREATED")]
    Created,
    #[serde(rename = "CONTAINER_RUNNING")]
    Running,
    #[serde(rename = "CONTAINER_EXITED")]
    Exited,
}

/// What the runtime stores about a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub created_at: u64,
}

/// How a container's process ended, as the shim records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// The exit code, or 128 + the signal number, as Kubernetes reports it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: u64,
}

/// The CRI's `ContainerStatus`, the parts knetsim uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub container: Container,
    pub state: ContainerState,
    pub pid: Option<u32>,
    pub started_at: Option<u64>,
    pub exit: Option<ExitRecord>,
}

/// How long StartContainer waits for the shim to report the process running.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<Container, RuntimeError> {
        let sandbox = self.pod_sandbox_status(sandbox_id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(RuntimeError::Invalid(format!(
                "pod sandbox {sandbox_id} is not ready"
            )));
        }
        if config.argv.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "container {} has no command",
                config.name
            )));
        }
        let container = Container {
            id: new_id(),
            sandbox_id: sandbox_id.to_string(),
            config,
            created_at: crate::now_ms(),
        };
        let dir = self.container_dir(&container.id);
        let io = |source| RuntimeError::State {
            action: "writing",
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::write(
            dir.join("container.json"),
            serde_json::to_vec_pretty(&container).unwrap_or_default(),
        )
        .map_err(io)?;
        Ok(container)
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let dir = self.container_dir(id);
        let container: Container = std::fs::read(dir.join("container.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let started = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|text| {
                let (pid, at) = text.trim().split_once(' ')?;
                Some((pid.parse::<u32>().ok()?, at.parse::<u64>().ok()?))
            });
        let exit: Option<ExitRecord> = std::fs::read(dir.join("exit.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let state = match (&started, &exit) {
            (_, Some(_)) => ContainerState::Exited,
            (Some((pid, _)), None) if kernel::procs::alive(*pid as i32) => ContainerState::Running,
            // The shim died with its process and recorded nothing: report it as ended.
            (Some(_), None) => ContainerState::Exited,
            (None, None) => ContainerState::Created,
        };
        Ok(ContainerStatus {
            container,
            state,
            pid: started.map(|(pid, _)| pid),
            started_at: started.map(|(_, at)| at),
            exit,
        })
    }

    pub fn list_containers(&self) -> Vec<ContainerStatus> {
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("containers")) else {
            return Vec::new();
        };
        let mut all: Vec<ContainerStatus> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|id| self.container_status(&id).ok())
            .collect();
        all.sort_by_key(|c| c.container.created_at);
        all
    }

    /// Start the container's shim and wait until the process runs.
    pub fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let status = self.container_status(id)?;
        if status.state != ContainerState::Created {
            return Err(RuntimeError::Invalid(format!(
                "container {id} was already started"
            )));
        }
        let dir = self.container_dir(id);
        let sandbox = self.pod_sandbox_status(&status.container.sandbox_id)?;
        let pause = sandbox
            .pause_pid
            .filter(|pid| kernel::procs::alive(*pid as i32))
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "pod sandbox {} has no running pause process",
                    sandbox.id
                ))
            })?;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(&self.programs.shim);
        command
            .args([
                "--lab",
                &self.lab,
                "--pause-pid",
                &pause.to_string(),
                "--hostname",
                &sandbox.config.hostname,
                "--container-dir",
            ])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is one system call.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let mut shim = command.spawn().map_err(RuntimeError::Shim)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(reason) = std::fs::read_to_string(dir.join("shim.error")) {
                return Err(RuntimeError::Invalid(format!(
                    "container {id} did not start: {}",
                    reason.trim()
                )));
            }
            if dir.join("pid").exists() {
                return Ok(());
            }
            if let Ok(Some(exit)) = shim.try_wait() {
                let reason = std::fs::read_to_string(dir.join("shim.error"))
                    .unwrap_or_else(|_| exit.to_string());
                return Err(RuntimeError::Invalid(format!(
                    "container {id} did not start: {}",
                    reason.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(RuntimeError::Invalid(format!(
            "container {id} did not start within {START_TIMEOUT:?}"
        )))
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the shim recorded the exit.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let status = self.container_status(id)?;
        if let (ContainerState::Running, Some(pid)) = (status.state, status.pid) {
            kernel::procs::terminate(&[pid as i32], grace);
            let exit = self.container_dir(id).join("exit.json");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !exit.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self.container_status(id) {
            Ok(status) if status.state == ContainerState::Running => {
                return Err(RuntimeError::Invalid(format!(
                    "container {id} is running: stop it first"
                )))
            }
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            _ => {}
        }
        let dir = self.container_dir(id);
        std::fs::remove_dir_all(&dir).map_err(|source| RuntimeError::State {
            action: "removing",
            path: dir,
            source,
        })
    }

    /// Run `argv` in a running container's namespaces; its output and exit code.
    pub fn exec_sync(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<std::process::Output, RuntimeError> {
        let status = self.container_status(id)?;
        let (ContainerState::Running, Some(pid)) = (status.state, status.pid) else {
            return Err(RuntimeError::Invalid(format!(
                "container {id} is not running"
            )));
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::Invalid("no command to execute".into()));
        };
        let join = crate::shim::process_namespaces(pid)?;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(program);
        command.args(args).stdin(Stdio::null());
        for (key, value) in &status.container.config.env {
            command.env(key, value);
        }
        // SAFETY: `join.enter` makes only system calls.
        unsafe {
            command.pre_exec(move || join.enter());
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                RuntimeError::Invalid(format!("cannot run `{program}` in container {id}: {e}"))
            })?;
        let pid = child.id() as i32;
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if !kernel::procs::alive(pid) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            kernel::procs::signal_all(&[pid], nix::sys::signal::Signal::SIGKILL);
        });
        let output = child.wait_with_output().map_err(RuntimeError::Shim)?;
        let _ = watchdog.join();
        Ok(output)
    }
}

pub(crate) fn read_container(dir: &Path) -> Result<Container, RuntimeError> {
    let path = dir.join("container.json");
    let bytes = std::fs::read(&path).map_err(|source| RuntimeError::State {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| RuntimeError::State {
        action: "parsing",
        path,
        source: std::io::Error::other(e),
    })
}
