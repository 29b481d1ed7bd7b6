//! Persistent UTS namespaces: a node's hostname.
//!
//! `ip netns` only covers the network namespace. A node also has its own hostname, so we do
//! for UTS what iproute2 does for net: unshare on a helper thread, set the hostname, and
//! bind-mount `/proc/thread-self/ns/uts` onto a file so the namespace outlives the thread.
//! `nsenter --uts=<file>` then works for a learner too.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::{Error, Result};

/// Make `file` a UTS namespace whose hostname is `hostname`. An existing one is kept.
pub fn ensure_created(file: &Path, hostname: &str) -> Result<()> {
    if is_bound(file) {
        return Ok(());
    }
    std::fs::File::create(file).map_err(|source| Error::Io {
        action: "create",
        path: file.to_path_buf(),
        source,
    })?;
    let target = file.to_path_buf();
    let hostname = hostname.to_string();
    let joined = std::thread::spawn(move || -> Result<()> {
        let sys = |action: &'static str, path: PathBuf| {
            move |source| Error::Sys {
                action,
                path,
                source,
            }
        };
        unshare(CloneFlags::CLONE_NEWUTS).map_err(sys("unshare UTS for", target.clone()))?;
        nix::unistd::sethostname(&hostname).map_err(sys("set hostname for", target.clone()))?;
        mount(
            Some("/proc/thread-self/ns/uts"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind-mount UTS namespace onto", target.clone()))
    })
    .join();
    joined.map_err(|_| Error::ThreadPanicked(file.display().to_string()))?
}

/// Unmount and remove a UTS namespace file; a missing one is fine.
pub fn ensure_removed(file: &Path) -> Result<()> {
    if is_bound(file) {
        umount2(file, MntFlags::MNT_DETACH).map_err(|source| Error::Sys {
            action: "unmount",
            path: file.to_path_buf(),
            source,
        })?;
    }
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            action: "remove",
            path: file.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Whether `file` has a namespace bind-mounted on it: the nsfs file on top lives on another
/// device than the directory that holds the mount point.
fn is_bound(file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Some(parent)) = (std::fs::metadata(file), file.parent()) else {
        return false;
    };
    parent
        .metadata()
        .map(|parent| parent.dev() != meta.dev())
        .unwrap_or(false)
}
