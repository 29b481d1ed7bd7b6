//! `knetsim down`: remove everything a lab made, whatever state it is in.
//!
//! It trusts nothing the lab wrote: it works with the supervisor killed by SIGKILL, after an
//! `up` that stopped half-way (no plan on disk), and when run twice. Processes are found by
//! the namespaces they run in and by `--lab <lab>` on their command line; namespaces by the
//! `<lab>-` prefix (lab names contain no `-`, so the prefix belongs to one lab only).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::paths::LabPaths;
use crate::progress::Progress;

/// How long processes get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct DownReport {
    pub processes: usize,
    pub namespaces: usize,
    pub elapsed: Duration,
}

impl DownReport {
    pub fn found_anything(&self) -> bool {
        self.processes + self.namespaces > 0
    }
}

pub fn down(lab: &str, progress: &Progress) -> anyhow::Result<DownReport> {
    let started = Instant::now();
    let paths = LabPaths::new(lab);
    let mut report = DownReport::default();
    let mut namespaces = lab_namespaces(lab);

    report.processes = progress.step(|| {
        let stopped = stop_supervisor(lab, &paths);
        let mut stray = stop_lab_processes(lab, &namespaces);
        // A kubelet that was still running may have made a pod's namespace meanwhile (and a
        // pause process in it): look again until no new namespace appears.
        for _ in 0..5 {
            let now = lab_namespaces(lab);
            if now.iter().all(|n| namespaces.contains(n)) {
                break;
            }
            namespaces = now;
            stray += stop_lab_processes(lab, &namespaces);
        }
        Ok::<_, anyhow::Error>((
            stopped + stray,
            format!("stopped {} processes", stopped + stray),
        ))
    })?;

    progress.step(|| {
        let mut unmounted = 0;
        if let Ok(entries) = std::fs::read_dir(paths.uts_dir()) {
            for entry in entries.flatten() {
                kernel::uts::ensure_removed(&entry.path())?;
                unmounted += 1;
            }
        }
        Ok::<_, anyhow::Error>(((), format!("removed {unmounted} hostname (UTS) namespaces")))
    })?;

    progress.step(|| {
        // The lab's tmpfs, and anything else mounted in the tree, whether or not a plan says so.
        let unmounted = kernel::mounts::unmount_under(&paths.root)?;
        Ok::<_, anyhow::Error>((
            (),
            format!("unmounted {unmounted} file systems (the lab's tmpfs)"),
        ))
    })?;

    report.namespaces = progress.step(|| {
        kernel::netns::ensure_deleted(&namespaces)?;
        Ok::<_, anyhow::Error>((
            namespaces.len(),
            format!(
                "deleted {} network namespaces and their links",
                namespaces.len()
            ),
        ))
    })?;

    progress.step(|| {
        // Never a reason to leave the rest of the lab behind: say it and go on.
        let done = match crate::access::remove_user_entries(lab) {
            Ok(removed) => format!("removed {removed} entries from the user's kubeconfig"),
            Err(e) => format!("left the user's kubeconfig as it is: {e:#}"),
        };
        Ok::<_, anyhow::Error>(((), done))
    })?;

    progress.step(|| {
        match std::fs::remove_dir_all(&paths.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(
                    anyhow::Error::new(e).context(format!("removing {}", paths.root.display()))
                )
            }
            _ => {}
        }
        Ok(((), format!("removed {}", paths.root.display())))
    })?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Every named network namespace of `lab`.
pub fn lab_namespaces(lab: &str) -> Vec<String> {
    let prefix = format!("{lab}-");
    kernel::netns::list()
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// Whether `argv` is a knetsim process of `lab` (`--lab <lab>` or `--lab=<lab>`).
pub fn is_lab_command(argv: &[String], lab: &str) -> bool {
    let is_knetsim = argv.first().is_some_and(|program| {
        std::path::Path::new(program)
            .file_name()
            .and_then(|name| name.to_str())
            // knetsim's own programs (`knetsim-kubelet`, `knetsim-pause`, `knetsim-shim`),
            // and a renamed copy (`knetsim-baseline`, `old-knetsim`) that someone benchmarks
            // against: a bench's lab must go with it whatever the copy is called.
            .is_some_and(|name| name.contains("knetsim"))
    });
    if !is_knetsim {
        return false;
    }
    let joined = format!("--lab={lab}");
    argv.windows(2)
        .any(|pair| pair[0] == "--lab" && pair[1] == lab)
        || argv.contains(&joined)
}

/// SIGTERM the supervisor (so it stops its processes in order), SIGKILL if it lingers.
fn stop_supervisor(lab: &str, paths: &LabPaths) -> usize {
    let Some(pid) = std::fs::read_to_string(paths.supervisor_pid())
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return 0;
    };
    // The pid may have been reused since: only signal it if it is still our supervisor.
    let ours = kernel::procs::cmdline(pid)
        .is_some_and(|argv| argv.iter().any(|a| a == "supervise") && is_lab_command(&argv, lab));
    if !ours {
        return 0;
    }
    kernel::procs::terminate(&[pid], GRACE + Duration::from_secs(2));
    1
}

/// Whatever still runs in the lab's namespaces or names the lab: processes the supervisor
/// left when it was killed, shells from `knetsim exec`, a half-started supervisor.
fn stop_lab_processes(lab: &str, namespaces: &[String]) -> usize {
    let inodes: HashSet<u64> = namespaces
        .iter()
        .filter_map(|name| kernel::netns::inode(name))
        .collect();
    let mut pids = kernel::procs::in_network_namespaces(&inodes);
    for pid in kernel::procs::matching_cmdline(|argv| is_lab_command(argv, lab)) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    kernel::procs::terminate(&pids, GRACE);
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn recognises_only_its_own_labs_processes() {
        assert!(is_lab_command(
            &argv("/usr/bin/knetsim supervise --lab a"),
            "a"
        ));
        assert!(is_lab_command(&argv("knetsim supervise --lab=a"), "a"));
        assert!(!is_lab_command(&argv("knetsim supervise --lab ab"), "a"));
        assert!(!is_lab_command(&argv("vim --lab a"), "a"));
        assert!(!is_lab_command(&argv("knetsim status"), "a"));
        assert!(is_lab_command(
            &argv("/tmp/knetsim-baseline kubelet --lab a"),
            "a"
        ));
        assert!(is_lab_command(
            &argv("/tmp/hkl-knetsim-baseline kubelet --lab=a"),
            "a"
        ));
        assert!(!is_lab_command(&argv("kubelet --lab a"), "a"));
        // knetsim's programs of their own: the kubelet and the runtime's pause and shims.
        for program in [
            kernel::binaries::KUBELET,
            kernel::binaries::PAUSE,
            kernel::binaries::SHIM,
        ] {
            assert!(is_lab_command(
                &argv(&format!("/usr/local/bin/{program} --lab=a --node=w1")),
                "a"
            ));
            assert!(!is_lab_command(&argv(&format!("{program} --lab=b")), "a"));
        }
    }
}
