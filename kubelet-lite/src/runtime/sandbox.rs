//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.
//!
//! Run does, in order: netns → pause process (which sets the namespace's `lo` up, as the CNI
//! `loopback` plugin would, without a plugin to exec per pod) → the node's CNI network on
//! `eth0`, and undoes what it did if a later step fails. Stop tears the network down (CNI
//! DEL) and stops the pause process; Remove deletes the namespace and the state. Both are
//! idempotent, as the CRI requires: what is already gone is success.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sched::{setns, unshare, CloneFlags};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{new_id, PodSandbox, PodSandboxConfig, Runtime, RuntimeError, SandboxState};
use crate::cni::{NetworkConfigList, RuntimeConf};

/// A `hostPort` of the pod, passed to CNI plugins with the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

impl Runtime {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(id)
    }

    fn save(&self, sandbox: &PodSandbox) -> Result<(), RuntimeError> {
        let dir = self.sandbox_dir(&sandbox.id);
        let path = dir.join("sandbox.json");
        let io = |source| RuntimeError::State {
            action: "writing",
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join("sandbox.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(sandbox).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandbox, RuntimeError> {
        let path = self.sandbox_dir(id).join("sandbox.json");
        let bytes = std::fs::read(&path).map_err(|_| RuntimeError::NotFound(id.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::State {
            action: "reading",
            path,
            source: std::io::Error::other(e),
        })
    }

    pub fn list_pod_sandboxes(&self) -> Vec<PodSandbox> {
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("sandboxes")) else {
            return Vec::new();
        };
        let mut all: Vec<PodSandbox> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|id| self.pod_sandbox_status(&id).ok())
            .collect();
        all.sort_by_key(|s| s.created_at);
        all
    }

    fn runtime_conf(&self, sandbox: &PodSandbox, ifname: &str) -> RuntimeConf {
        let mut capabilities = Map::new();
        if !sandbox.config.port_mappings.is_empty() {
            capabilities.insert("portMappings".into(), json!(sandbox.config.port_mappings));
        }
        RuntimeConf {
            container_id: sandbox.id.clone(),
            netns: PathBuf::from(&sandbox.netns),
            ifname: ifname.to_string(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), sandbox.config.namespace.clone()),
                ("K8S_POD_NAME".into(), sandbox.config.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox.id.clone()),
                ("K8S_POD_UID".into(), sandbox.config.uid.clone()),
            ],
            capabilities,
        }
    }

    /// The network namespace name of a pod on this node.
    pub fn netns_name(&self, config: &PodSandboxConfig) -> String {
        format!("{}-{}-{}", self.netns_prefix, config.namespace, config.name)
    }

    pub fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<PodSandbox, RuntimeError> {
        for (what, value) in [("name", &config.name), ("namespace", &config.namespace)] {
            let valid = !value.is_empty()
                && value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid {
                return Err(RuntimeError::Invalid(format!(
                    "{what} `{value}` is not a DNS label"
                )));
            }
        }
        let name = if config.host_network {
            self.netns_prefix.clone()
        } else {
            self.netns_name(&config)
        };
        if !config.host_network && kernel::netns::exists(&name) {
            return Err(RuntimeError::NetnsExists(name));
        }
        let mut sandbox = PodSandbox {
            id: new_id(),
            netns: kernel::netns::path(&name).display().to_string(),
            config,
            state: SandboxState::NotReady,
            pause_pid: None,
            ip: None,
            created_at: crate::now_ms(),
        };
        self.save(&sandbox)?;
        match self.set_up(&mut sandbox, &name) {
            Ok(()) => {
                sandbox.state = SandboxState::Ready;
                self.save(&sandbox)?;
                Ok(sandbox)
            }
            Err(error) => {
                // Undo whatever was done; the first error is the one worth reporting.
                let _ = self.stop_pod_sandbox(&sandbox.id);
                let _ = self.remove_pod_sandbox(&sandbox.id);
                Err(error)
            }
        }
    }

    fn set_up(&self, sandbox: &mut PodSandbox, name: &str) -> Result<(), RuntimeError> {
        if sandbox.config.host_network {
            // The node's own network: nothing to make, no CNI.
            sandbox.pause_pid = Some(self.start_pause(sandbox)?);
            return self.save(sandbox);
        }
        let began = Instant::now();
        kernel::netns::ensure_added(&[name])?;
        let netns = began.elapsed();
        sandbox.pause_pid = Some(self.start_pause(sandbox)?);
        self.save(sandbox)?;
        let pause = began.elapsed() - netns;
        let network =
            NetworkConfigList::load_default(&self.cni_conf_dir).map_err(RuntimeError::Network)?;
        let (result, eth0) = self
            .cni
            .add_timed(&network, &self.runtime_conf(sandbox, "eth0"))
            .map_err(RuntimeError::Network)?;
        sandbox.ip = pod_ip(&result);
        let ms = |d: Duration| d.as_millis() as u64;
        let plugins: Vec<String> = eth0
            .iter()
            .map(|(plugin, took)| format!("{plugin} {} ms", ms(*took)))
            .collect();
        tracing::info!(
            sandbox = %sandbox.id,
            netns_ms = ms(netns),
            pause_ms = ms(pause),
            cni_ms = ms(began.elapsed() - netns - pause),
            cni_plugins = %plugins.join(", "),
            "sandbox network set up"
        );
        Ok(())
    }

    /// `knetsim-pause`, in the pod's network namespace (its `lo` set up) and in new UTS and
    /// IPC namespaces with the pod's hostname, in a session of its own so it outlives the
    /// kubelet.
    fn start_pause(&self, sandbox: &PodSandbox) -> Result<u32, RuntimeError> {
        use std::os::fd::AsFd;
        use std::os::unix::process::CommandExt;
        let net = std::fs::File::open(&sandbox.netns).map_err(RuntimeError::Pause)?;
        let hostname = sandbox.config.hostname.clone();
        // A hostNetwork pod shares the node's UTS namespace too (its hostname is the node's),
        // and the node's `lo` is the node's business.
        let own_namespaces = !sandbox.config.host_network;
        let mut command = std::process::Command::new(&self.programs.pause);
        command
            .args([
                "--lab",
                &self.lab,
                "--pod",
                &format!("{}/{}", sandbox.config.namespace, sandbox.config.name),
                "--sandbox",
                &sandbox.id,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only system calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                setns(net.as_fd(), CloneFlags::CLONE_NEWNET)?;
                if own_namespaces {
                    // A new network namespace starts with `lo` down.
                    set_loopback_up()?;
                    unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)?;
                    nix::unistd::sethostname(&hostname)?;
                } else {
                    unshare(CloneFlags::CLONE_NEWIPC)?;
                }
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let child = command.spawn().map_err(RuntimeError::Pause)?;
        // Not waited for here: the kubelet reaps it when it stops the sandbox, or init does.
        Ok(child.id())
    }

    /// CNI CHECK of a ready sandbox's network against the cached ADD result: is the pod's
    /// network still what ADD made? A hostNetwork sandbox has none to check.
    pub fn check_pod_sandbox_network(&self, id: &str) -> Result<(), RuntimeError> {
        let sandbox = self.pod_sandbox_status(id)?;
        if sandbox.config.host_network || sandbox.state != SandboxState::Ready {
            return Ok(());
        }
        let network =
            NetworkConfigList::load_default(&self.cni_conf_dir).map_err(RuntimeError::Network)?;
        self.cni
            .check(&network, &self.runtime_conf(&sandbox, "eth0"))
            .map_err(RuntimeError::NetworkCheck)
    }

    /// Stop its containers, CNI DEL, and stop the pause process. Idempotent.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut sandbox = self.pod_sandbox_status(id)?;
        for container in self
            .list_containers()
            .iter()
            .filter(|c| c.container.sandbox_id == id)
        {
            self.stop_container(&container.container.id, Duration::from_secs(2))?;
        }
        if !sandbox.config.host_network
            && kernel::netns::exists(
                Path::new(&sandbox.netns)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default(),
            )
        {
            let current = NetworkConfigList::load_default(&self.cni_conf_dir).ok();
            self.cni
                .del(current.as_ref(), &self.runtime_conf(&sandbox, "eth0"))
                .map_err(RuntimeError::NetworkTeardown)?;
        }
        if let Some(pid) = sandbox.pause_pid.take() {
            stop_process(pid);
        }
        sandbox.state = SandboxState::NotReady;
        self.save(&sandbox)
    }

    /// Delete the namespace and the state. Stops the sandbox first if needed. Idempotent.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let sandbox = match self.pod_sandbox_status(id) {
            Ok(sandbox) => sandbox,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if sandbox.state == SandboxState::Ready || sandbox.pause_pid.is_some() {
            self.stop_pod_sandbox(id)?;
        }
        for container in self
            .list_containers()
            .iter()
            .filter(|c| c.container.sandbox_id == id)
        {
            self.remove_container(&container.container.id)?;
        }
        let name = Path::new(&sandbox.netns)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        // A hostNetwork sandbox's namespace is the node's: never deleted with it.
        if !sandbox.config.host_network && kernel::netns::exists(&name) {
            kernel::netns::ensure_deleted(&[&name])?;
        }
        let dir = self.sandbox_dir(id);
        std::fs::remove_dir_all(&dir).map_err(|source| RuntimeError::State {
            action: "removing",
            path: dir,
            source,
        })
    }
}

/// SIGTERM, a short grace, SIGKILL; then reap it if it is our child.
/// Set `lo` of the current network namespace up, as the CNI `loopback` plugin does (the kernel
/// gives it 127.0.0.1 and ::1). Only system calls, so it may run between fork and exec.
fn set_loopback_up() -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: plain system calls on a socket of our own and a zeroed `ifreq` naming `lo`.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
            *to = *from as libc::c_char;
        }
        let mut result = libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        }
        let error = std::io::Error::last_os_error();
        libc::close(socket);
        if result != 0 {
            return Err(error);
        }
    }
    Ok(())
}

fn stop_process(pid: u32) {
    let pid = pid as i32;
    if kernel::procs::alive(pid) {
        kernel::procs::terminate(&[pid], Duration::from_secs(2));
    }
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// The first IP of a CNI result, without its prefix length.
pub fn pod_ip(result: &Value) -> Option<String> {
    let address = result["ips"].as_array()?.first()?["address"].as_str()?;
    Some(address.split('/').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lo` of a new network namespace (this thread's only) is down until set up.
    #[test]
    fn loopback_is_set_up_in_a_new_network_namespace() {
        std::thread::spawn(|| {
            if unshare(CloneFlags::CLONE_NEWNET).is_err() {
                eprintln!("skipped: creating a network namespace needs root");
                return;
            }
            let flags = || {
                use nix::libc;
                // SAFETY: as in set_loopback_up.
                unsafe {
                    let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    let mut request: libc::ifreq = std::mem::zeroed();
                    request.ifr_name[0] = b'l' as libc::c_char;
                    request.ifr_name[1] = b'o' as libc::c_char;
                    assert_eq!(libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request), 0);
                    libc::close(socket);
                    request.ifr_ifru.ifru_flags as libc::c_int
                }
            };
            assert_eq!(
                flags() & nix::libc::IFF_UP,
                0,
                "a new namespace's lo is down"
            );
            set_loopback_up().unwrap();
            assert_ne!(flags() & nix::libc::IFF_UP, 0, "lo is up");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pod_ip_is_the_first_address_of_the_result() {
        let result = json!({"cniVersion":"1.0.0","ips":[{"address":"10.244.1.7/24","gateway":"10.244.1.1"}]});
        assert_eq!(pod_ip(&result).as_deref(), Some("10.244.1.7"));
        assert_eq!(pod_ip(&json!({})), None);
    }
}
