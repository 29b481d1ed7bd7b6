//! tmpfs mounts for data that need not survive the lab: a lab's whole state tree.
//!
//! Everything a lab writes lives only as long as the lab, and a disk file system makes it
//! pay for durability it does not need. etcd fsyncs its write-ahead log on every write; on a
//! disk that costs milliseconds per request, most of an API write's latency (kind documents
//! the same trick for its nodes' etcd). Every pod start and stop creates and removes a few
//! dozen small files (volumes, CNI leases and caches, logs); on ext4 with much churn, inode
//! allocation alone took a sixth of the kubelet's CPU. On a tmpfs both cost next to nothing.
//! `size=` bounds it; pages are only taken as written.
//!
//! Unmounting goes by `/proc/self/mountinfo`, not by what the lab wrote down, so `down`
//! finds the mounts of a lab whose `up` stopped half-way, or that was already half removed.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::{Error, Result};

/// Make `dir` (created if missing) a tmpfs of at most `size_mib` MiB with the permission
/// bits `mode`. A tmpfs already mounted there is kept.
pub fn ensure_tmpfs(dir: &Path, size_mib: u64, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    if mount_points().iter().any(|m| m == dir) {
        return Ok(());
    }
    let options = format!("size={size_mib}m,mode={mode:o}");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|source| Error::Sys {
        action: "mount a tmpfs on",
        path: dir.to_path_buf(),
        source,
    })
}

/// Unmount everything mounted at or below `root`, deepest first; returns how many. Nothing
/// mounted is fine. Lazy (`MNT_DETACH`): a process that still holds a file open does not
/// keep the lab from being removed.
pub fn unmount_under(root: &Path) -> Result<usize> {
    let mut under: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(root))
        .collect();
    // Deepest first, and each point once even if mounted over itself several times.
    under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    under.dedup();
    let mut count = 0;
    for point in &under {
        // Mounted twice on the same point: unmount until it is gone.
        while mount_points().contains(point) {
            umount2(point, MntFlags::MNT_DETACH).map_err(|source| Error::Sys {
                action: "unmount",
                path: point.clone(),
                source,
            })?;
            count += 1;
        }
    }
    Ok(count)
}

/// This process's mount points.
pub(crate) fn mount_points() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mount_points(&mountinfo)
}

/// The mount point (fifth field) of each mountinfo line, with the kernel's octal escapes
/// (`\040` for a space) undone.
fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_with_escapes() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    90 22 0:50 / /tmp/knetsim/a/c0/etcd rw,nosuid,nodev - tmpfs tmpfs rw,size=1048576k\n\
                    91 22 0:51 / /tmp/with\\040space rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mount_points(info),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/tmp/knetsim/a/c0/etcd"),
                PathBuf::from("/tmp/with space"),
            ]
        );
    }

    /// Unmounts and removes the test's directory also when an assertion fails.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = unmount_under(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn mounts_a_tmpfs_once_and_unmounts_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let root = std::env::temp_dir().join(format!("knetsim-mounts-{}", std::process::id()));
        let _cleanup = Cleanup(root.clone());
        let dir = root.join("c0").join("etcd");
        ensure_tmpfs(&dir, 8, 0o700).expect("mount");
        ensure_tmpfs(&dir, 8, 0o700).expect("mounting again keeps the mount");
        assert_eq!(mount_points().iter().filter(|m| **m == dir).count(), 1);
        let statfs = nix::sys::statfs::statfs(&dir).expect("statfs");
        assert_eq!(statfs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        assert_eq!(unmount_under(&root).expect("unmount"), 1);
        assert!(!mount_points().iter().any(|m| m.starts_with(&root)));
        assert_eq!(unmount_under(&root).expect("again"), 0);
    }

    #[test]
    fn nothing_mounted_is_nothing_to_do() {
        let root = Path::new("/nonexistent/knetsim-mounts-test");
        assert_eq!(unmount_under(root).expect("no mounts"), 0);
    }
}
