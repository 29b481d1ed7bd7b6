//! `knetsim service-proxy <cluster> dynamic|static`: switch how a running cluster's
//! kubeproxy-lites follow Services.
//!
//! The mode is part of the plan (`serviceProxy:` in the topology, `serviceProxy` in
//! `lab.json`): this writes the new mode into the plan and sends the supervisor a SIGHUP; the
//! supervisor restarts every kubeproxy-lite of the cluster with (or without) `--static`, and
//! each one's first sync replaces the rules its predecessor left. So a lab can show a deleted
//! pod breaking a static virtual IP, then switch to dynamic and watch it heal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::paths::LabPaths;
use crate::status::{ProcessState, SupervisorStatus};
use crate::topology::ServiceProxyMode;

/// A restarted kubeproxy-lite is ready once its first full sync is in the kernel: seconds.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
const PROXY_PROCESS: &str = "kubeproxy-lite";

pub struct Report {
    /// The mode the cluster had before.
    pub previous: ServiceProxyMode,
    /// The kubeproxy-lite processes restarted (`c0/w1/kubeproxy-lite`), empty if the mode
    /// was already the one asked for.
    pub restarted: Vec<String>,
    pub elapsed: Duration,
}

/// Set `cluster`'s service proxy mode and wait until every one of its kubeproxy-lites runs in
/// it with its rules written.
pub fn set(lab: &str, cluster: &str, mode: ServiceProxyMode) -> anyhow::Result<Report> {
    let started = Instant::now();
    let paths = LabPaths::new(lab);
    crate::read_plan(lab)?;
    let _lock = crate::node::lock(lab, &paths)?;
    let mut plan = crate::read_plan(lab)?;
    let Some(entry) = plan.clusters.iter_mut().find(|c| c.name == cluster) else {
        let known: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "lab {lab} has no cluster `{cluster}`; its clusters are: {}",
            known.join(" ")
        );
    };
    let previous = entry.service_proxy;
    if previous == mode {
        return Ok(Report {
            previous,
            restarted: Vec::new(),
            elapsed: started.elapsed(),
        });
    }
    entry.service_proxy = mode;
    let supervisor = crate::node::supervisor_pid(lab, &paths)?;
    let before = proxy_pids(&paths, cluster);
    crate::node::write_plan(&paths, &plan)?;
    crate::node::reload(supervisor)?;
    let restarted = wait_restarted(&paths, cluster, &before)?;
    Ok(Report {
        previous,
        restarted,
        elapsed: started.elapsed(),
    })
}

/// The pids of `cluster`'s kubeproxy-lites now, by process id.
fn proxy_pids(paths: &LabPaths, cluster: &str) -> HashMap<String, Option<u32>> {
    SupervisorStatus::read(&paths.status())
        .map(|status| {
            status
                .processes
                .into_iter()
                .filter(|p| p.cluster == cluster && p.name == PROXY_PROCESS)
                .map(|p| (p.id(), p.pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Until each of `before`'s processes is ready again under a new pid (the supervisor lists a
/// restarted process anew, so an old "ready" cannot be mistaken for the new one's).
fn wait_restarted(
    paths: &LabPaths,
    cluster: &str,
    before: &HashMap<String, Option<u32>>,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        let status = SupervisorStatus::read(&paths.status()).unwrap_or_default();
        let proxies: Vec<_> = status
            .processes
            .iter()
            .filter(|p| p.cluster == cluster && p.name == PROXY_PROCESS)
            .collect();
        if let Some(bad) = proxies
            .iter()
            .find(|p| matches!(p.state, ProcessState::BackOff | ProcessState::Failed))
        {
            bail!(
                "{} exited after the switch ({}); its log {} ends with:\n{}",
                bad.id(),
                bad.last_exit.as_deref().unwrap_or("no exit status"),
                bad.log.display(),
                crate::up::tail(&bad.log, 10)
            );
        }
        let done = proxies.len() == before.len()
            && proxies.iter().all(|p| {
                p.state == ProcessState::Ready
                    && p.pid.is_some()
                    && before.get(&p.id()).is_some_and(|old| *old != p.pid)
            });
        if done {
            let mut ids: Vec<String> = proxies.iter().map(|p| p.id()).collect();
            ids.sort();
            return Ok(ids);
        }
        if Instant::now() >= deadline {
            bail!(
                "cluster {cluster}'s kubeproxy-lites were not all restarted and ready after {RESTART_TIMEOUT:?}: see `knetsim status` and {}",
                paths.logs().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
