//! Named network namespaces, as `ip netns` makes them, and entering them.
//!
//! A lab node is a named network namespace (`/run/netns/<lab>-<cluster>-<node>`, so `ip netns
//! list` and `ip netns exec` work on it) plus a UTS namespace for its hostname (see `uts`).
//! A process is put on a node by [`Enter::enter`] between fork and exec: `setns` into both, then
//! a private mount namespace with a fresh `/sys`, exactly what `ip netns exec` does, so that
//! `/sys/class/net` shows the node's interfaces rather than the machine's.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{ip, Error, Result};

/// Where iproute2 keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of all named network namespaces on the machine.
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Create the namespaces of `names` that do not exist yet, in one `ip -batch`.
pub fn ensure_added<S: AsRef<str>>(names: &[S]) -> Result<()> {
    let lines: Vec<String> = names
        .iter()
        .map(AsRef::as_ref)
        .filter(|name| !exists(name))
        .map(|name| format!("netns add {name}"))
        .collect();
    ip::batch(None, &lines)
}

/// Delete the namespaces of `names` that still exist. Their interfaces go with them: a veth
/// whose peer sits in a deleted namespace disappears too.
pub fn ensure_deleted<S: AsRef<str>>(names: &[S]) -> Result<()> {
    let lines: Vec<String> = names
        .iter()
        .map(AsRef::as_ref)
        .filter(|name| exists(name))
        .map(|name| format!("netns delete {name}"))
        .collect();
    ip::batch(None, &lines)
}

/// The inode that identifies a named namespace, as `/proc/<pid>/ns/net` shows it.
pub fn inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path(name)).ok().map(|m| m.ino())
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            match path.file_name().and_then(|n| n.to_str()) {
                Some(name) if path.starts_with(NETNS_DIR) => Error::NoSuchNetns {
                    name: name.to_string(),
                },
                _ => Error::Io {
                    action: "open namespace",
                    path: path.to_path_buf(),
                    source,
                },
            }
        } else {
            Error::Io {
                action: "open namespace",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Run `f` on a fresh thread whose network namespace is `name`. Sockets made there stay in
/// that namespace wherever they are used later. A thread (not the caller) is switched, so the
/// caller's own namespace never changes.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let target = path(name);
    let file = open(&target)?;
    let joined = std::thread::spawn(move || -> Result<T> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
            action: "enter network namespace",
            path: target,
            source,
        })?;
        Ok(f())
    })
    .join();
    joined.map_err(|_| Error::ThreadPanicked(name.to_string()))?
}

/// The namespaces of one node, opened in the parent so a child can enter them after fork.
pub struct Enter {
    net: OwnedFd,
    uts: Option<OwnedFd>,
    /// (source, target) directories bind-mounted in the child's own mount namespace: the
    /// node's private `/run/flannel`, `/etc/cni/net.d`, … Prepared as C strings here because
    /// the child may not allocate.
    binds: Vec<(CString, CString)>,
}

impl Enter {
    /// Open the named network namespace and, if given, a persistent UTS namespace file.
    pub fn open(netns: &str, uts: Option<&Path>) -> Result<Self> {
        let net = open(&path(netns))?.into();
        let uts = match uts {
            Some(p) => Some(open(p)?.into()),
            None => None,
        };
        Ok(Enter {
            net,
            uts,
            binds: Vec::new(),
        })
    }

    /// Also bind-mount each `(source, target)` directory once inside the node's mount
    /// namespace. Both must exist.
    pub fn with_binds(mut self, binds: &[(PathBuf, PathBuf)]) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        for (source, target) in binds {
            let c = |p: &Path| {
                CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Io {
                    action: "use path",
                    path: p.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                })
            };
            self.binds.push((c(source)?, c(target)?));
        }
        Ok(self)
    }

    /// Move the calling process onto the node. Meant for `CommandExt::pre_exec` (only system
    /// calls, no allocation) or a single-threaded process about to exec.
    pub fn enter(&self) -> std::io::Result<()> {
        setns(self.net.as_fd(), CloneFlags::CLONE_NEWNET)?;
        if let Some(uts) = &self.uts {
            setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS)?;
        }
        unshare(CloneFlags::CLONE_NEWNS)?;
        // Keep mount events from the machine flowing in, but none of ours flowing out.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )?;
        // A fresh sysfs shows this namespace's interfaces. Cosmetic: failure is not fatal.
        if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
            let _ = mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            );
        }
        for (source, target) in &self.binds {
            mount(
                Some(source.as_c_str()),
                target.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
        Ok(())
    }
}
