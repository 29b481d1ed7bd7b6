//! `knetsim bench up`: how long `up` and `down` take, and what the supervisor costs.
//!
//! Runs up and down back to back on a lab of its own (so a running lab is never touched) and
//! prints medians, because this machine is shared and single runs are noisy.

use std::time::Duration;

use crate::progress::Progress;

pub struct UpBench {
    pub runs: usize,
    pub nodes: usize,
    pub up: Vec<Duration>,
    pub down: Vec<Duration>,
    pub supervisor_rss_kib: Vec<u64>,
}

pub fn bench_up(runs: usize, options: &crate::up::UpOptions) -> anyhow::Result<UpBench> {
    let lab = format!("bench{}", std::process::id() % 100_000);
    let quiet = Progress::new(true);
    let mut result = UpBench {
        runs,
        nodes: 0,
        up: Vec::new(),
        down: Vec::new(),
        supervisor_rss_kib: Vec::new(),
    };
    for run in 1..=runs {
        let up = match crate::up::up(&lab, options, &quiet) {
            Ok(up) => up,
            Err(e) => return Err(e.context(format!("run {run}: up failed"))),
        };
        result.nodes = up.plan.nodes().count();
        result.up.push(up.elapsed);
        if let Some(kib) = kernel::procs::rss_kib(up.supervisor_pid as i32) {
            result.supervisor_rss_kib.push(kib);
        }
        let down = crate::down::down(&lab, &quiet)?;
        result.down.push(down.elapsed);
        eprintln!(
            "  run {run}/{runs}: up {:.3} s, down {:.3} s",
            up.elapsed.as_secs_f64(),
            down.elapsed.as_secs_f64()
        );
    }
    Ok(result)
}

/// Run `measure` on a lab of its own (named `<prefix><pid>`, with `topology`), brought up
/// quietly and taken down again whatever the outcome.
pub fn on_own_lab<T, F, Fut>(prefix: &str, topology: &str, measure: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let lab = format!("{prefix}{}", std::process::id() % 100_000);
    let topology_file = std::env::temp_dir().join(format!("{lab}-topology.yaml"));
    std::fs::write(&topology_file, topology)?;
    let options = crate::up::UpOptions {
        topology: Some(topology_file.clone()),
        flannel_config: None,
        skip_addons: false,
    };
    let quiet = Progress::new(true);
    let result = crate::up::up(&lab, &options, &quiet)
        .and_then(|_| tokio::runtime::Runtime::new()?.block_on(measure(lab.clone())));
    let _ = crate::down::down(&lab, &quiet);
    let _ = std::fs::remove_file(&topology_file);
    result
}

/// Wait until the lab's own pods (the cluster DNS Deployment's replicas) are Ready. `up`
/// returns before they start, and starting them (the kubelet, the CNI plugins, the first
/// status and endpoint writes) loads the machine for a second or so: a bench that measures
/// during that time measures the lab's boot as well.
pub(crate) async fn wait_for_system_pods(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wanted: i32 = deployments
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
            .sum();
        let pods = system.list(&ListParams::default()).await?;
        let ready = pods.items.iter().filter(|p| is_ready(p)).count();
        if ready == pods.items.len() && ready >= wanted as usize {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "only {ready} of the {} kube-system pods were Ready after 60 s: see `kubectl -n kube-system get pods`",
                pods.items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Running with an address and its Ready condition true.
fn is_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.is_some()
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub fn median<T: Copy + Ord>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

impl UpBench {
    pub fn report(&self) -> String {
        let line = |name: &str, values: &[Duration]| {
            let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
            format!(
                "  {name:<5} median {:.3} s   min {:.3} s   max {:.3} s\n",
                secs(median(values)),
                secs(values.iter().min().copied()),
                secs(values.iter().max().copied()),
            )
        };
        let mut out = format!(
            "knetsim bench up: {} nodes, {} runs\n",
            self.nodes, self.runs
        );
        out += &line("up", &self.up);
        out += &line("down", &self.down);
        if let Some(kib) = median(&self.supervisor_rss_kib) {
            out += &format!(
                "  supervisor resident memory: median {:.1} MiB\n",
                kib as f64 / 1024.0
            );
        }
        out
    }
}

/// The pids of the lab's processes called `name` (one per node for node agents).
pub(crate) fn process_pids(paths: &crate::paths::LabPaths, name: &str) -> Vec<i32> {
    crate::status::SupervisorStatus::read(&paths.status())
        .map(|status| {
            status
                .processes
                .iter()
                .filter(|p| p.name == name)
                .filter_map(|p| p.pid.map(|pid| pid as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// The kernel's clock ticks per second, the unit of `/proc` CPU times.
pub(crate) fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64
}

/// The summed CPU time of every process of the lab called `name`.
pub(crate) fn cpu_of(paths: &crate::paths::LabPaths, name: &str) -> Duration {
    process_pids(paths, name)
        .into_iter()
        .filter_map(cpu_time)
        .sum()
}

/// User plus system CPU time of a process and of the children it has waited for (a
/// kubelet's CNI plugins), from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at state, field 3; utime,
    // stime, cutime and cstime are fields 14 to 17.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut ticks = 0u64;
    for index in 11..=14 {
        ticks += fields.get(index)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_millis(ticks * 1000 / clock_ticks()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[3, 1, 2]), Some(2));
        assert_eq!(super::median(&[4, 1, 3, 2]), Some(3));
        assert_eq!(super::median::<u32>(&[]), None);
    }
}
