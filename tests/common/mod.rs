//! Shared by the end-to-end tests: run the real `knetsim` binary, give every test a lab of
//! its own (so tests run in parallel), and take the lab down when the test ends, also when
//! it fails.

#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const KNETSIM: &str = env!("CARGO_BIN_EXE_knetsim");

/// These tests build namespaces; say so plainly instead of failing somewhere deep.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "end-to-end tests create network namespaces and must run as root (CI does)"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A unique lab name for `tag`: lowercase letters and digits only.
pub fn lab_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

/// `knetsim ARGS…`. Each lab merges its contexts into a user kubeconfig of its own (never
/// the real `~/.kube/config`), so parallel tests do not write one file at once.
pub fn knetsim(args: &[&str]) -> Output {
    let lab = args
        .windows(2)
        .find(|pair| pair[0] == "--lab")
        .map(|pair| pair[1])
        .unwrap_or("none");
    Command::new(KNETSIM)
        .args(args)
        .env_remove("KNETSIM_LAB")
        .env("KUBECONFIG", user_kubeconfig(lab))
        .output()
        .expect("the knetsim binary runs")
}

/// The user kubeconfig the tests give `lab`.
pub fn user_kubeconfig(lab: &str) -> PathBuf {
    test_files().join(format!("kubeconfig-{lab}"))
}

/// This test process's scratch directory (manifests, kubeconfigs). The test harness has no
/// hook at exit, so the first use removes those of earlier test processes that are gone.
fn test_files() -> PathBuf {
    const PREFIX: &str = "knetsim-tests-";
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let temp = std::env::temp_dir();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(&temp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(Ok(pid)) = name.strip_prefix(PREFIX).map(str::parse::<u32>) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    temp.join(format!("{PREFIX}{}", std::process::id()))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert success and return stdout, showing everything on failure.
#[track_caller]
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "knetsim failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// A lab that is taken down when dropped.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// `knetsim up` for a lab named after `tag`, with `topology` (YAML) or the default.
    pub fn up(tag: &str, topology: Option<&str>) -> Lab {
        Lab::up_with(tag, topology, &[])
    }

    /// A lab without the cluster add-ons (`up --skip-addons`): nodes run only what a test
    /// puts on them.
    pub fn up_bare(tag: &str, topology: Option<&str>) -> Lab {
        Lab::up_with(tag, topology, &["--skip-addons"])
    }

    fn up_with(tag: &str, topology: Option<&str>, flags: &[&str]) -> Lab {
        require_root();
        let lab = Lab {
            name: lab_name(tag),
        };
        let config = topology.map(|yaml| write_temp(&format!("{}.yaml", lab.name), yaml));
        let mut args = vec!["up", "--lab", lab.name.as_str()];
        if let Some(path) = &config {
            args.extend(["--config", path.to_str().expect("utf-8 temp path")]);
        }
        args.extend_from_slice(flags);
        ok(knetsim(&args));
        lab
    }

    /// `knetsim <command> --lab <this lab> <args…>` (before any `--`, which ends knetsim's own
    /// flags).
    pub fn run(&self, args: &[&str]) -> Output {
        let (command, rest) = args.split_first().expect("a subcommand");
        let mut all = vec![*command, "--lab", self.name.as_str()];
        all.extend_from_slice(rest);
        knetsim(&all)
    }

    /// The real kubectl against this lab's kubeconfig and the context of `cluster`.
    pub fn kubectl(&self, cluster: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg(format!(
                "--kubeconfig=/tmp/knetsim/{}/kubeconfig",
                self.name
            ))
            .arg(format!("--context={cluster}"))
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Write `yaml` to a temporary file named after this lab and `tag`, and
    /// `kubectl apply -f` it in cluster c0 (asserting success); the file, to apply again.
    pub fn apply(&self, tag: &str, yaml: &str) -> PathBuf {
        let path = write_temp(&format!("{}-{tag}.yaml", self.name), yaml);
        ok(self.kubectl(
            "c0",
            &["apply", "-f", path.to_str().expect("utf-8 temp path")],
        ));
        path
    }

    /// `knetsim exec --lab <lab> <node> -- <command…>`.
    pub fn exec(&self, node: &str, command: &[&str]) -> Output {
        let mut all = vec!["exec", "--lab", self.name.as_str(), node, "--"];
        all.extend_from_slice(command);
        knetsim(&all)
    }

    /// `kubectl get pod POD -o jsonpath=PATH` in cluster c0.
    pub fn pod_jsonpath(&self, pod: &str, path: &str) -> String {
        stdout(&self.kubectl(
            "c0",
            &["get", "pod", pod, "-o", &format!("jsonpath={path}")],
        ))
    }

    /// Wait until POD in c0 is Running; fail with its YAML otherwise.
    pub fn wait_pod_running(&self, pod: &str, timeout: Duration) {
        let running = eventually(timeout, || {
            self.pod_jsonpath(pod, "{.status.phase}") == "Running"
        });
        assert!(
            running,
            "{pod} is not Running: {}",
            stdout(&self.kubectl("c0", &["get", "pod", pod, "-o", "yaml"]))
        );
    }

    pub fn status_json(&self) -> serde_json::Value {
        let path = format!("/tmp/knetsim/{}/status.json", self.name);
        serde_json::from_slice(&std::fs::read(&path).expect("status.json exists"))
            .expect("status.json is JSON")
    }
}

impl Lab {
    /// The index in `status.json` of the process `name` on `cluster/node`.
    pub fn process_index(&self, name: &str, cluster: &str, node: &str) -> usize {
        self.status_json()["processes"]
            .as_array()
            .expect("a process list")
            .iter()
            .position(|p| p["name"] == name && p["cluster"] == cluster && p["node"] == node)
            .unwrap_or_else(|| panic!("no {name} on {cluster}/{node}"))
    }

    /// The flannel lease keys in `cluster`'s etcd, as `etcdctl get --keys-only` prints them.
    pub fn flannel_lease_keys(&self, cluster: &str) -> String {
        ok(self.run(&[
            "etcdctl",
            cluster,
            "--",
            "get",
            "--prefix",
            "--keys-only",
            "/coreos.com/network/subnets",
        ]))
    }

    /// SIGKILL the process `name` on `cluster/node`; its index in `status.json` and old pid.
    pub fn kill_process(&self, name: &str, cluster: &str, node: &str) -> (usize, i64) {
        let index = self.process_index(name, cluster, node);
        let pid = self.status_json()["processes"][index]["pid"]
            .as_i64()
            .expect("the process runs");
        ok(Command::new("kill")
            .args(["-9", &pid.to_string()])
            .output()
            .expect("kill runs"));
        (index, pid)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = knetsim(&["down", "--lab", &self.name]);
    }
}

/// Everything of `lab` still on the machine: namespaces, processes, mounts, files.
pub fn residue(lab: &str) -> Vec<String> {
    let mut left = Vec::new();
    let prefix = format!("{lab}-");
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                left.push(format!("netns {name}"));
            }
        }
    }
    let state = PathBuf::from("/tmp/knetsim").join(lab);
    if state.exists() {
        left.push(format!("directory {}", state.display()));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // The lab's own tmpfs (`/tmp/knetsim/<lab> `) and anything mounted inside it.
    let (root, inside) = (format!("/knetsim/{lab} "), format!("/knetsim/{lab}/"));
    for line in mounts
        .lines()
        .filter(|l| l.contains(&root) || l.contains(&inside))
    {
        left.push(format!("mount {line}"));
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if argv.contains(&format!("--lab {lab} ")) || argv.contains(&format!("/knetsim/{lab}/"))
            {
                left.push(format!("process {}", argv.trim()));
            }
        }
    }
    left
}

/// Poll `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

pub fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = test_files();
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("temp dir");
    }
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// The root namespace's links, routes and addresses: a lab must never change them.
pub fn root_network() -> String {
    let mut out = String::new();
    for args in [["-o", "link"], ["-o", "addr"], ["route", "show"]] {
        let output = Command::new("ip").args(args).output().expect("ip runs");
        // Counters and flags that change on their own are not what we compare.
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            out += line.split(" state ").next().unwrap_or(line);
            out += "\n";
        }
    }
    out
}

pub fn path_exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// The Python interpreter that has the `kubernetes` client: `scripts/install-deps.sh` puts it
/// in a virtualenv at /opt/knetsim-python; `KNETSIM_PYTHON` names another.
pub fn python_with_client() -> String {
    let python = std::env::var("KNETSIM_PYTHON")
        .unwrap_or_else(|_| "/opt/knetsim-python/bin/python3".to_string());
    let has_client = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_client,
        "{python} has no `kubernetes` module: run scripts/install-deps.sh (it installs kubernetes==32.* from PyPI there)"
    );
    python
}
