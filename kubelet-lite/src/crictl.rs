//! `knetsim crictl <node> …`: the node's runtime driven by hand, as `crictl` drives a real
//! node's runtime. It runs inside the node (the CLI re-executes itself there), with the
//! node's own paths: CNI configs in `/etc/cni/net.d`, plugins in `/opt/cni/bin`, runtime
//! state in `/var/lib/kubelet/cri-lite`.

use std::path::PathBuf;

use crate::cni::Cni;
use std::time::Duration;

use crate::runtime::{ContainerConfig, ContainerState, PodSandboxConfig, Runtime, SandboxState};

pub const STATE_DIR: &str = "/var/lib/kubelet/cri-lite";
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
pub const CNI_CACHE_DIR: &str = "/var/lib/cni";
pub const LOG_DIR: &str = "/var/log/pods";

/// The runtime of the node whose network namespace is `netns`, with a node's standard paths.
pub fn node_runtime(lab: &str, netns: &str) -> anyhow::Result<Runtime> {
    Ok(Runtime {
        state_dir: PathBuf::from(STATE_DIR),
        netns_prefix: netns.to_string(),
        cni: Cni {
            plugin_dirs: vec![PathBuf::from(CNI_BIN_DIR)],
            cache_dir: PathBuf::from(CNI_CACHE_DIR),
        },
        cni_conf_dir: PathBuf::from(CNI_CONF_DIR),
        programs: crate::runtime::Programs::installed()?,
        lab: lab.to_string(),
    })
}

/// What `knetsim crictl` can do.
#[derive(Debug, Clone)]
pub enum Verb {
    /// RunPodSandbox; prints the sandbox ID.
    Runp {
        name: String,
        namespace: String,
    },
    /// ListPodSandbox as a table.
    Pods,
    /// PodSandboxStatus as JSON.
    Inspectp {
        id: String,
    },
    Stopp {
        id: String,
    },
    Rmp {
        id: String,
    },
    /// CreateContainer in a sandbox; prints the container ID.
    Create {
        sandbox: String,
        name: String,
        argv: Vec<String>,
    },
    Start {
        id: String,
    },
    /// ListContainers as a table.
    Ps,
    /// ContainerStatus as JSON.
    Inspect {
        id: String,
    },
    Stop {
        id: String,
        timeout: u64,
    },
    Rm {
        id: String,
    },
    /// ExecSync: the command's output; its exit code becomes ours.
    Exec {
        id: String,
        argv: Vec<String>,
    },
    /// The container's CRI log file.
    Logs {
        id: String,
    },
}

/// What a verb printed and the exit code to leave with.
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: i32,
}

impl From<String> for Outcome {
    fn from(text: String) -> Self {
        Outcome {
            stdout: text.into_bytes(),
            stderr: Vec::new(),
            code: 0,
        }
    }
}

pub fn run(runtime: &Runtime, verb: Verb) -> anyhow::Result<Outcome> {
    Ok(match verb {
        Verb::Runp { name, namespace } => {
            let uid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?
                .trim()
                .to_string();
            let sandbox = runtime.run_pod_sandbox(PodSandboxConfig {
                hostname: name.clone(),
                name,
                namespace,
                uid,
                port_mappings: Vec::new(),
                labels: Default::default(),
                host_network: false,
            })?;
            format!("{}\n", sandbox.id).into()
        }
        Verb::Pods => pods_table(runtime).into(),
        Verb::Inspectp { id } => json(&runtime.pod_sandbox_status(&id)?)?.into(),
        Verb::Stopp { id } => {
            runtime.stop_pod_sandbox(&id)?;
            format!("Stopped sandbox {id}\n").into()
        }
        Verb::Rmp { id } => {
            runtime.remove_pod_sandbox(&id)?;
            format!("Removed sandbox {id}\n").into()
        }
        Verb::Create {
            sandbox,
            name,
            argv,
        } => {
            let pod = runtime.pod_sandbox_status(&sandbox)?;
            let log_path = PathBuf::from(LOG_DIR)
                .join(format!(
                    "{}_{}_{}",
                    pod.config.namespace, pod.config.name, pod.config.uid
                ))
                .join(&name)
                .join("0.log");
            let config = ContainerConfig {
                name,
                argv,
                env: Vec::new(),
                working_dir: None,
                mounts: Vec::new(),
                log_path,
                stdin: false,
                stdin_once: false,
                tty: false,
            };
            format!("{}\n", runtime.create_container(&sandbox, config)?.id).into()
        }
        Verb::Start { id } => {
            runtime.start_container(&id)?;
            format!("{id}\n").into()
        }
        Verb::Ps => containers_table(runtime).into(),
        Verb::Inspect { id } => json(&runtime.container_status(&id)?)?.into(),
        Verb::Stop { id, timeout } => {
            runtime.stop_container(&id, Duration::from_secs(timeout))?;
            format!("{id}\n").into()
        }
        Verb::Rm { id } => {
            runtime.remove_container(&id)?;
            format!("{id}\n").into()
        }
        Verb::Exec { id, argv } => {
            use std::os::unix::process::ExitStatusExt;
            let output = runtime.exec_sync(&id, &argv, Duration::from_secs(60))?;
            Outcome {
                stdout: output.stdout,
                stderr: output.stderr,
                code: output
                    .status
                    .code()
                    .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0)),
            }
        }
        Verb::Logs { id } => {
            let path = runtime.container_status(&id)?.container.config.log_path;
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .into()
        }
    })
}

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

fn pods_table(runtime: &Runtime) -> String {
    let mut out = format!(
        "{:<18} {:<10} {:<24} {:<12} {:<16} {}\n",
        "POD ID", "STATE", "NAME", "NAMESPACE", "IP", "NETNS"
    );
    for s in runtime.list_pod_sandboxes() {
        let state = match s.state {
            SandboxState::Ready => "Ready",
            SandboxState::NotReady => "NotReady",
        };
        out += &format!(
            "{:<18} {:<10} {:<24} {:<12} {:<16} {}\n",
            s.id,
            state,
            s.config.name,
            s.config.namespace,
            s.ip.as_deref().unwrap_or("-"),
            s.netns
        );
    }
    out
}

fn containers_table(runtime: &Runtime) -> String {
    let mut out = format!(
        "{:<18} {:<18} {:<20} {:<8} {:<8} {}\n",
        "CONTAINER", "POD ID", "NAME", "STATE", "PID", "EXIT CODE"
    );
    for c in runtime.list_containers() {
        let state = match c.state {
            ContainerState::Created => "Created",
            ContainerState::Running => "Running",
            ContainerState::Exited => "Exited",
        };
        out += &format!(
            "{:<18} {:<18} {:<20} {:<8} {:<8} {}\n",
            c.container.id,
            c.container.sandbox_id,
            c.container.config.name,
            state,
            c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            c.exit
                .map(|e| e.exit_code.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    out
}
