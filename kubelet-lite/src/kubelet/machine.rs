//! The machine the node runs on: CPUs and memory, read once at start as the kubelet reads
//! cAdvisor's machine info. They feed the Node's capacity and the downward API's default
//! limits (`limits.cpu`, `limits.memory` of a container without limits).
//!
//! Reading them is not free: `available_parallelism` reads `/proc/self/cgroup` and
//! `/proc/self/mountinfo`, which lists every pod's network namespace, so reading them at each
//! pod sync cost more as pods were added.

use std::sync::OnceLock;

pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
}

pub fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total_bytes(&text))
            .unwrap_or(0),
    })
}

/// `MemTotal:` of `/proc/meminfo`, which the kernel gives in KiB.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24589516 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(24_589_516 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_machine_has_a_cpu_and_memory() {
        assert!(machine().cpus >= 1);
        assert!(machine().memory_bytes > 0);
    }
}
