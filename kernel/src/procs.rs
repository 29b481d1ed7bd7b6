//! Finding and stopping processes by what they are, not only by a pid someone wrote down.
//!
//! `down` must work after the supervisor was killed with SIGKILL, so it cannot rely on the
//! supervisor's bookkeeping. A process belongs to a lab when it runs in one of the lab's
//! network namespaces (the way `ip netns pids` finds them) or names the lab on its command line.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn all_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The argv of `pid`, or `None` if it is gone (or a kernel thread).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// The namespace inode of kind `kind` ("net", "uts") that `pid` is in.
pub fn namespace_inode(pid: i32, kind: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Processes whose network namespace is one of `inodes`.
pub fn in_network_namespaces(inodes: &HashSet<u64>) -> Vec<i32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    all_pids()
        .into_iter()
        .filter(|pid| namespace_inode(*pid, "net").is_some_and(|ino| inodes.contains(&ino)))
        .collect()
}

/// Processes whose argv satisfies `matches` (never the calling process).
pub fn matching_cmdline(matches: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter(|pid| cmdline(*pid).is_some_and(|argv| matches(&argv)))
        .collect()
}

/// Whether `pid` still exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Send `signal` to each of `pids` (gone ones are fine).
pub fn signal_all(pids: &[i32], signal: Signal) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
}

/// Wait until none of `pids` is alive, or `timeout` passes. Returns the survivors.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM, a grace period, then SIGKILL for whatever is left.
pub fn terminate(pids: &[i32], grace: Duration) {
    signal_all(pids, Signal::SIGTERM);
    let left = wait_gone(pids, grace);
    if !left.is_empty() {
        signal_all(&left, Signal::SIGKILL);
        wait_gone(&left, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        assert!(cmdline(me).is_some_and(|argv| !argv.is_empty()));
        assert!(namespace_inode(me, "net").is_some());
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn finds_processes_by_namespace() {
        let me = std::process::id() as i32;
        let ino = namespace_inode(me, "net").unwrap();
        assert!(in_network_namespaces(&HashSet::from([ino])).contains(&me));
        assert!(in_network_namespaces(&HashSet::new()).is_empty());
    }
}
