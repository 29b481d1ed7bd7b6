//! `knetsim service-proxy <cluster> dynamic|static`: switch how a running cluster's
//! kubeproxy-lites follow Services.
//!
//! The mode is part of the plan (`serviceProxy:` in the topology, `serviceProxy` in
//! `lab.json`): this writes the new mode into the plan and sends the supervisor a SIGHUP; the
//! supervisor restarts every kubeproxy-lite of the cluster with (or without) `--static`, and
//! each one's first sync replaces the rules its predecessor left. So a lab can show a deleted
//! pod breaking a static virtual IP, then switch to dynamic and watch it heal.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::paths::LabPaths;
use crate::status::SupervisorStatus;
use crate::topology::ServiceProxyMode;

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
    // The supervisor lists restarted processes anew (no pid until started), so waiting for
    // the proxies without the old pids cannot mistake an old "ready" for the new one's.
    let mut restarted = crate::up::wait_ready(supervisor as u32, &paths, |p| {
        p.cluster == cluster
            && p.name == PROXY_PROCESS
            && !p.pid.is_some_and(|pid| before.contains(&pid))
    })?;
    restarted.sort();
    Ok(Report {
        previous,
        restarted,
        elapsed: started.elapsed(),
    })
}

/// The pids of `cluster`'s kubeproxy-lites now.
fn proxy_pids(paths: &LabPaths, cluster: &str) -> Vec<u32> {
    SupervisorStatus::read(&paths.status())
        .map(|status| {
            status
                .processes
                .into_iter()
                .filter(|p| p.cluster == cluster && p.name == PROXY_PROCESS)
                .filter_map(|p| p.pid)
                .collect()
        })
        .unwrap_or_default()
}
