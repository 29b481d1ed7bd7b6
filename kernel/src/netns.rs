//! Named network namespaces, as `ip netns` makes them, and entering them.
//!
//! A lab node is a named network namespace (`/run/netns/<lab>-<cluster>-<node>`, so `ip netns
//! list` and `ip netns exec` work on it) plus a UTS namespace for its hostname (see `uts`).
//! A process is put on a node by [`Enter::enter`] between fork and exec: `setns` into both, then
//! a mount namespace of its own with a fresh `/sys`, as `ip netns exec` does, so that
//! `/sys/class/net` shows the node's interfaces rather than the machine's, and with the node's
//! private directories bind-mounted.
//!
//! Unlike `ip netns exec`, which makes every mount a slave (`--make-rslave /`), only the mounts
//! we mount on are made slaves: `/run/netns` must stay shared with the machine, so that a
//! namespace made on a node (a pod's) shows in the machine's `ip netns list`, and one deleted
//! by `down` disappears on the nodes.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{Error, Result};

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

/// Create the namespaces of `names` that do not exist yet, as `ip netns add` does.
pub fn ensure_added<S: AsRef<str>>(names: &[S]) -> Result<()> {
    for name in names.iter().map(AsRef::as_ref) {
        if !exists(name) {
            add(name)?;
        }
    }
    Ok(())
}

/// Delete the namespaces of `names` that still exist, as `ip netns delete` does. Their
/// interfaces go with them: a veth whose peer sits in a deleted namespace disappears too.
pub fn ensure_deleted<S: AsRef<str>>(names: &[S]) -> Result<()> {
    for name in names.iter().map(AsRef::as_ref) {
        if exists(name) {
            delete(name)?;
        }
    }
    Ok(())
}

/// `ip netns add NAME`, in this process: a kubelet makes one per pod, and running `ip` for
/// it cost more CPU than the rest of the sandbox's own work.
///
/// As iproute2 does: `/run/netns` becomes a shared mount (bound onto itself first if it is
/// not a mount point yet), so a namespace made inside a node's mount namespace shows on the
/// machine; then a fresh namespace, made by a thread of its own, is bind-mounted onto an
/// empty file there, which keeps it alive without any process in it.
pub fn add(name: &str) -> Result<()> {
    let target = path(name);
    std::fs::create_dir_all(NETNS_DIR).map_err(|source| Error::Io {
        action: "create",
        path: PathBuf::from(NETNS_DIR),
        source,
    })?;
    share_netns_dir()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|source| Error::Io {
            action: "create",
            path: target.clone(),
            source,
        })?;
    // The thread's own network namespace changes, never the caller's.
    let file = target.clone();
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys("make a network namespace for", &file))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &file,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind the new network namespace onto", &file))
    })
    .join()
    .map_err(|_| Error::ThreadPanicked(name.to_string()))
    .and_then(|made| made);
    if made.is_err() {
        let _ = std::fs::remove_file(&target);
    }
    made
}

/// Turns a failed system call on `path` into an [`Error::Sys`] saying what was done.
fn sys(action: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Sys {
        action,
        path,
        source,
    }
}

/// Make `/run/netns` a shared mount (bound onto itself first if it is not a mount point), as
/// `ip netns add` does. Once per process: the change walks every namespace mounted there, and
/// a kubelet adds one per pod.
fn share_netns_dir() -> Result<()> {
    static SHARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SHARED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let netns_dir = Path::new(NETNS_DIR);
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if let Err(nix::Error::EINVAL) =
        mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)
    {
        // Not a mount point yet.
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("bind onto itself", netns_dir))?;
        mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)
            .map_err(sys("make shared", netns_dir))?;
    }
    SHARED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// `ip netns delete NAME`, in this process: unmount (lazily, so a process still inside
/// keeps the namespace until it leaves) and remove the file.
pub fn delete(name: &str) -> Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        // Not mounted: a half-made namespace, only its file to remove.
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(source) => {
            return Err(Error::Sys {
                action: "unmount network namespace",
                path: target,
                source,
            })
        }
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            action: "remove",
            path: target,
            source: e,
        }),
        _ => Ok(()),
    }
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

fn c_path(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Io {
        action: "use path",
        path: p.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// The mount point that holds `path`: the longest of `mount_points` that is a prefix of it
/// (`/` at worst).
fn containing_mount(path: &Path, mount_points: &[PathBuf]) -> PathBuf {
    mount_points
        .iter()
        .filter(|mount_point| path.starts_with(mount_point))
        .max_by_key(|mount_point| mount_point.as_os_str().len())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/"))
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
    ipc: Option<OwnedFd>,
    /// Join this mount namespace instead of making one (`exec` into a running container).
    mnt: Option<OwnedFd>,
    /// `chdir` here last, inside the new mounts.
    workdir: Option<CString>,
    /// (source, target) directories bind-mounted in the child's own mount namespace: the
    /// node's private `/run/flannel`, `/etc/cni/net.d`, … Prepared as C strings here because
    /// the child may not allocate.
    binds: Vec<(CString, CString, bool)>,
    /// The mounts holding the bind targets, made slaves first so the binds stay private.
    slaves: Vec<CString>,
    /// This process's mount points, read once for all binds: `/proc/self/mountinfo` lists
    /// every pod's network namespace, so reading it per bind cost more as pods were added.
    mount_points: Option<Vec<PathBuf>>,
    /// (target directory, overlayfs options) mounted before the binds: a writable layer over
    /// a directory of the machine, so a mount point that does not exist there can be made in
    /// the layer without touching the machine's own files.
    overlays: Vec<(CString, CString)>,
    /// The bind sources, opened by the child in its new mount namespace before any mount,
    /// then mounted as `/proc/self/fd/<n>`: a source stays reachable even when an overlay
    /// covers its path. One slot per bind, allocated here since the child may not allocate.
    source_fds: Vec<std::sync::atomic::AtomicI32>,
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
            ipc: None,
            mnt: None,
            workdir: None,
            binds: Vec::new(),
            slaves: Vec::new(),
            mount_points: None,
            overlays: Vec::new(),
            source_fds: Vec::new(),
        })
    }

    /// Namespaces given as files: a network namespace (`/run/netns/x` or `/proc/<pid>/ns/net`)
    /// and optionally a UTS namespace, e.g. those of a pod's pause process.
    pub fn from_paths(net: &Path, uts: Option<&Path>) -> Result<Self> {
        Ok(Enter {
            net: open(net)?.into(),
            uts: match uts {
                Some(p) => Some(open(p)?.into()),
                None => None,
            },
            ipc: None,
            mnt: None,
            workdir: None,
            binds: Vec::new(),
            slaves: Vec::new(),
            mount_points: None,
            overlays: Vec::new(),
            source_fds: Vec::new(),
        })
    }

    /// Also bind-mount each `(source, target)` directory once inside the node's mount
    /// namespace. Both must exist.
    pub fn with_binds(mut self, binds: &[(PathBuf, PathBuf)]) -> Result<Self> {
        for (source, target) in binds {
            self = self.with_bind(source, target, false)?;
        }
        Ok(self)
    }

    /// Bind-mount `source` at `target` (a file or a directory), read-only if asked.
    pub fn with_bind(mut self, source: &Path, target: &Path, readonly: bool) -> Result<Self> {
        self.source_fds.push(std::sync::atomic::AtomicI32::new(-1));
        self.binds
            .push((c_path(source)?, c_path(target)?, readonly));
        self.make_holder_slave(target)?;
        Ok(self)
    }

    /// Make the mount holding `target` a slave before anything is mounted on it.
    fn make_holder_slave(&mut self, target: &Path) -> Result<()> {
        let mount_points = self
            .mount_points
            .get_or_insert_with(crate::mounts::mount_points);
        let holder = c_path(&containing_mount(target, mount_points))?;
        if !self.slaves.contains(&holder) {
            self.slaves.push(holder);
        }
        Ok(())
    }

    /// Mount an overlay over the directory `target` before the binds: `target` itself below,
    /// `upper` (made by the caller, holding the missing mount points) above, `work` as
    /// overlayfs's scratch directory on the same filesystem as `upper`.
    pub fn with_overlay(mut self, target: &Path, upper: &Path, work: &Path) -> Result<Self> {
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            target.display(),
            upper.display(),
            work.display()
        );
        let options = c_path(Path::new(&options))?;
        self.overlays.push((c_path(target)?, options));
        self.make_holder_slave(target)?;
        Ok(self)
    }

    /// Also join the IPC namespace in `path` (a pod's, held by its pause process).
    pub fn with_ipc(mut self, path: &Path) -> Result<Self> {
        self.ipc = Some(open(path)?.into());
        Ok(self)
    }

    /// Join the mount namespace in `path` instead of making a new one.
    pub fn joining_mounts(mut self, path: &Path) -> Result<Self> {
        self.mnt = Some(open(path)?.into());
        Ok(self)
    }

    /// Change to `dir` once inside (it may exist only under the new mounts).
    pub fn with_workdir(mut self, dir: &Path) -> Result<Self> {
        self.workdir = Some(c_path(dir)?);
        Ok(self)
    }

    /// Move the calling process onto the node. Meant for `CommandExt::pre_exec` (only system
    /// calls, no allocation) or a single-threaded process about to exec.
    pub fn enter(&self) -> std::io::Result<()> {
        setns(self.net.as_fd(), CloneFlags::CLONE_NEWNET)?;
        if let Some(uts) = &self.uts {
            setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS)?;
        }
        if let Some(ipc) = &self.ipc {
            setns(ipc.as_fd(), CloneFlags::CLONE_NEWIPC)?;
        }
        if let Some(mnt) = &self.mnt {
            setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)?;
            return self.change_dir();
        }
        unshare(CloneFlags::CLONE_NEWNS)?;
        // Mount events from the machine flow in, none of ours flow out: the root mount and
        // the mounts holding our bind targets become slaves (not recursively: see above).
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE,
            None::<&str>,
        )?;
        for holder in &self.slaves {
            mount(
                None::<&str>,
                holder.as_c_str(),
                None::<&str>,
                MsFlags::MS_SLAVE,
                None::<&str>,
            )?;
        }
        // A fresh sysfs shows this namespace's interfaces. Cosmetic: failure is not fatal.
        let _ = mount(
            None::<&str>,
            "/sys",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        );
        if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
            let _ = mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            );
        }
        use std::sync::atomic::Ordering;
        for ((source, _, _), slot) in self.binds.iter().zip(&self.source_fds) {
            let fd = nix::fcntl::open(
                source.as_c_str(),
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?;
            slot.store(fd, Ordering::SeqCst);
        }
        for (target, options) in &self.overlays {
            mount(
                Some("overlay"),
                target.as_c_str(),
                Some("overlay"),
                MsFlags::empty(),
                Some(options.as_c_str()),
            )?;
        }
        for ((_, target, readonly), slot) in self.binds.iter().zip(&self.source_fds) {
            let mut buffer = [0u8; 32];
            let source = fd_path(slot.load(Ordering::SeqCst), &mut buffer);
            mount(
                Some(source),
                target.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            if *readonly {
                mount(
                    None::<&str>,
                    target.as_c_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )?;
            }
        }
        self.change_dir()
    }

    fn change_dir(&self) -> std::io::Result<()> {
        for slot in &self.source_fds {
            let _ = nix::unistd::close(slot.load(std::sync::atomic::Ordering::SeqCst));
        }
        if let Some(dir) = &self.workdir {
            nix::unistd::chdir(dir.as_c_str())?;
        }
        Ok(())
    }
}

/// `/proc/self/fd/<fd>` written into `buffer`, without allocating (for a child after fork).
fn fd_path(fd: i32, buffer: &mut [u8; 32]) -> &std::ffi::CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut count) = (fd.max(0) as u32, 0);
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        buffer[PREFIX.len() + i] = digits[count - 1 - i];
    }
    buffer[PREFIX.len() + count] = 0;
    std::ffi::CStr::from_bytes_until_nul(&buffer[..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_are_written_without_allocating() {
        let mut buffer = [0u8; 32];
        assert_eq!(
            super::fd_path(7, &mut buffer).to_str().unwrap(),
            "/proc/self/fd/7"
        );
        assert_eq!(
            super::fd_path(1234, &mut buffer).to_str().unwrap(),
            "/proc/self/fd/1234"
        );
    }

    #[test]
    fn adds_a_namespace_that_threads_can_enter_and_deletes_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: network namespaces need root");
            return;
        }
        let name = format!("knetsim-unit-{}", std::process::id());
        ensure_added(&[&name]).expect("add");
        ensure_added(&[&name]).expect("adding again is nothing to do");
        let inode = inode(&name).expect("the namespace file is there");
        let own = std::fs::metadata("/proc/self/ns/net").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        assert_ne!(Some(inode), own.ok(), "a new namespace, not ours");
        let inside = run_in(&name, || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| m.ino())
                .ok()
        })
        .expect("enter");
        assert_eq!(inside, Some(inode));
        assert!(list().contains(&name));
        ensure_deleted(&[&name]).expect("delete");
        assert!(!exists(&name));
        ensure_deleted(&[&name]).expect("deleting again is nothing to do");
    }

    #[test]
    fn a_path_is_held_by_its_longest_mount_point() {
        let mounted = crate::mounts::mount_points();
        assert_eq!(
            containing_mount(Path::new("/proc/self"), &mounted),
            Path::new("/proc")
        );
        assert_eq!(containing_mount(Path::new("/"), &mounted), Path::new("/"));
        let made_up = [
            PathBuf::from("/"),
            PathBuf::from("/a"),
            PathBuf::from("/a/b"),
        ];
        assert_eq!(
            containing_mount(Path::new("/a/b/c"), &made_up),
            Path::new("/a/b")
        );
        assert_eq!(
            containing_mount(Path::new("/a/bc"), &made_up),
            Path::new("/a")
        );
        assert_eq!(containing_mount(Path::new("/x"), &[]), Path::new("/"));
    }
}
