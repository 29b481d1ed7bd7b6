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

/// Of `container.json`, what [`Runtime::container_summary`] reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSummary {
    id: String,
    sandbox_id: String,
    config: StoredConfigSummary,
    created_at: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredConfigSummary {
    name: String,
    log_path: PathBuf,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    stdin_once: bool,
    #[serde(default)]
    tty: bool,
}

impl From<StoredSummary> for Container {
    fn from(stored: StoredSummary) -> Container {
        let config = stored.config;
        Container {
            id: stored.id,
            sandbox_id: stored.sandbox_id,
            config: ContainerConfig {
                name: config.name,
                argv: Vec::new(),
                env: Vec::new(),
                working_dir: None,
                mounts: Vec::new(),
                log_path: config.log_path,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                tty: config.tty,
            },
            created_at: stored.created_at,
        }
    }
}

impl ContainerStatus {
    /// This status as [`Runtime::container_summary`] gives it: without the process's
    /// `argv`, `env`, working directory and mounts.
    pub fn summary(&self) -> ContainerStatus {
        let (container, config) = (&self.container, &self.container.config);
        let stored = StoredSummary {
            id: container.id.clone(),
            sandbox_id: container.sandbox_id.clone(),
            config: StoredConfigSummary {
                name: config.name.clone(),
                log_path: config.log_path.clone(),
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                tty: config.tty,
            },
            created_at: container.created_at,
        };
        ContainerStatus {
            container: stored.into(),
            state: self.state,
            pid: self.pid,
            started_at: self.started_at,
            exit: self.exit.clone(),
        }
    }
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
        let container: Container = self.read_container(id)?;
        Ok(self.status_of(container))
    }

    /// A container's status without its process's `argv`, `env`, working directory and
    /// mounts (left empty, and not even read): what a relist compares, as the CRI's
    /// `ListContainers` gives less than `ContainerStatus`.
    pub fn container_summary(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let stored: StoredSummary = self.read_container(id)?;
        Ok(self.status_of(stored.into()))
    }

    fn read_container<T: serde::de::DeserializeOwned>(&self, id: &str) -> Result<T, RuntimeError> {
        std::fs::read(self.container_dir(id).join("container.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))
    }

    /// The container's state, from what its shim recorded.
    fn status_of(&self, container: Container) -> ContainerStatus {
        let dir = self.container_dir(&container.id);
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
        ContainerStatus {
            container,
            state,
            pid: started.map(|(pid, _)| pid),
            started_at: started.map(|(_, at)| at),
            exit,
        }
    }

    pub fn list_containers(&self) -> Vec<ContainerStatus> {
        self.list_with(Runtime::container_status)
    }

    /// Every container as [`Runtime::container_summary`] gives it: the kubelet relists them
    /// every second, and reading each one's whole config allocated a few KiB per container.
    pub fn list_container_summaries(&self) -> Vec<ContainerStatus> {
        self.list_with(Runtime::container_summary)
    }

    fn list_with(
        &self,
        status: impl Fn(&Runtime, &str) -> Result<ContainerStatus, RuntimeError>,
    ) -> Vec<ContainerStatus> {
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("containers")) else {
            return Vec::new();
        };
        let mut all: Vec<ContainerStatus> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|id| status(self, &id).ok())
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

/// A container with every part of its config set, for tests.
#[cfg(test)]
pub(crate) fn example_container() -> Container {
    Container {
        id: "c1".into(),
        sandbox_id: "sb1".into(),
        config: ContainerConfig {
            name: "web".into(),
            argv: vec!["sleep".into(), "3600".into()],
            env: vec![("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())],
            working_dir: Some("/srv".into()),
            mounts: vec![Mount {
                host_path: "/var/lib/kubelet/pods/u1/hostname".into(),
                container_path: "/etc/hostname".into(),
                readonly: false,
            }],
            log_path: "/var/log/pods/x/web/0.log".into(),
            stdin: true,
            stdin_once: false,
            tty: true,
        },
        created_at: 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Cni;
    use crate::runtime::Programs;

    fn runtime_in(state_dir: &Path) -> Runtime {
        Runtime {
            state_dir: state_dir.to_path_buf(),
            netns_prefix: "test".into(),
            cni: Cni {
                plugin_dirs: vec![],
                cache_dir: state_dir.join("cni"),
            },
            cni_conf_dir: state_dir.join("net.d"),
            programs: Programs {
                knetsim: "/bin/true".into(),
                pause: "/bin/true".into(),
                shim: "/bin/true".into(),
                agnhost: "/bin/true".into(),
            },
            lab: "test".into(),
        }
    }

    /// A summary is the container's status less its process's config, read from the same
    /// state files.
    #[test]
    fn a_summary_is_the_status_without_the_process_config() {
        let state = std::env::temp_dir().join(format!("knetsim-summary-{}", std::process::id()));
        let runtime = runtime_in(&state);
        let container = example_container();
        let dir = runtime.container_dir("c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("container.json"),
            serde_json::to_vec(&container).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("exit.json"),
            r#"{"exitCode":137,"signal":9,"finishedAt":9}"#,
        )
        .unwrap();
        let full = runtime.container_status("c1").unwrap();
        let summary = runtime.container_summary("c1").unwrap();
        let listed = runtime.list_container_summaries();
        std::fs::remove_dir_all(&state).unwrap();
        assert_eq!(full.container, container);
        assert_eq!(full.state, ContainerState::Exited);
        let mut expected = full.clone();
        expected.container.config.argv.clear();
        expected.container.config.env.clear();
        expected.container.config.working_dir = None;
        expected.container.config.mounts.clear();
        assert_eq!(summary, expected);
        assert_eq!(full.summary(), expected);
        assert_eq!(listed, vec![expected]);
        assert!(matches!(
            runtime.container_summary("gone"),
            Err(RuntimeError::NotFound(_))
        ));
    }
}
