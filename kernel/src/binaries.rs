//! Finding the programs knetsim runs, and naming the Debian package when one is missing.
//!
//! A missing binary is the most common failure on a new machine; the error says what to install
//! instead of surfacing `No such file or directory` from deep inside `up`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A program knetsim needs (or, for [`find_library`], a shared library), and the Debian
/// package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub program: &'static str,
    pub package: &'static str,
}

pub const IP: Requirement = Requirement {
    program: "ip",
    package: "iproute2",
};
pub const ETCD: Requirement = Requirement {
    program: "etcd",
    package: "etcd-server",
};
pub const ETCDCTL: Requirement = Requirement {
    program: "etcdctl",
    package: "etcd-client",
};

/// mimalloc, the allocator the lab preloads into kubeproxy-lite (see `lab::plan`).
pub const MIMALLOC: Requirement = Requirement {
    program: "libmimalloc.so.2",
    package: "libmimalloc2.0",
};

/// The absolute path of the shared library `req.program` where Debian installs libraries, or
/// an error naming its package.
pub fn find_library(req: Requirement) -> Result<PathBuf> {
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let dirs = [
        PathBuf::from("/usr/lib").join(&multiarch),
        PathBuf::from("/lib").join(&multiarch),
        PathBuf::from("/usr/lib"),
        PathBuf::from("/usr/local/lib"),
    ];
    dirs.iter()
        .map(|dir| dir.join(req.program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::MissingLibrary {
            library: req.program.to_string(),
            dirs: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            package: req.package.to_string(),
        })
}

/// The absolute path of `req.program` on `PATH`, or an error naming its package.
pub fn find(req: Requirement) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(req.program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::MissingBinary {
            program: req.program.to_string(),
            package: req.package.to_string(),
        })
}

/// knetsim's own programs: the `knetsim` command and the node agents and runtime helpers
/// that run as programs of their own (as Kubernetes ships the kubelet, `pause` and the CNI
/// plugins), so each of them maps and faults in only its own code.
pub const KNETSIM: &str = "knetsim";
pub const KUBELET: &str = "knetsim-kubelet";
pub const PAUSE: &str = "knetsim-pause";
pub const SHIM: &str = "knetsim-shim";
pub const AGNHOST: &str = "knetsim-agnhost";
/// The flannel CNI plugin, which a node's CNI directory links as `flannel`.
pub const FLANNEL_CNI: &str = "knetsim-flannel-cni";

/// The path of the running `knetsim` executable, to start it again as one of the lab's
/// processes. A rebuild while a lab is up replaces the file: Linux then names the running,
/// unlinked inode `<path> (deleted)`, and the path itself holds the new build, which is what a
/// restarted process should run (a supervisor that kept the old name restarted nothing).
pub fn own_executable() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        action: "find",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    Ok(without_deleted_suffix(exe))
}

fn without_deleted_suffix(exe: PathBuf) -> PathBuf {
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// The path of `program`, one of knetsim's own (see [`KUBELET`] …), installed in the same
/// directory as the running executable.
pub fn sibling(program: &str) -> Result<PathBuf> {
    sibling_of(&own_executable()?, program)
}

fn sibling_of(exe: &Path, program: &str) -> Result<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let path = dir.join(program);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(Error::MissingSibling {
            program: program.to_string(),
            dir: dir.to_path_buf(),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_is_found_next_to_the_executable_or_named_when_missing() {
        let dir = std::env::temp_dir().join(format!("knetsim-sibling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join(KNETSIM);
        let kubelet = dir.join(KUBELET);
        for path in [&exe, &kubelet] {
            std::fs::write(path, "").unwrap();
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        assert_eq!(sibling_of(&exe, KUBELET).unwrap(), kubelet);
        let err = sibling_of(&exe, PAUSE).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains(PAUSE), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }

    #[test]
    fn a_rebuilt_executable_is_found_at_its_path() {
        assert_eq!(
            without_deleted_suffix(PathBuf::from("/work/target/release/knetsim (deleted)")),
            PathBuf::from("/work/target/release/knetsim")
        );
        assert_eq!(
            without_deleted_suffix(PathBuf::from("/usr/bin/knetsim")),
            PathBuf::from("/usr/bin/knetsim")
        );
        assert!(own_executable().unwrap().is_file());
    }

    #[test]
    fn missing_program_names_its_package() {
        let req = Requirement {
            program: "knetsim-surely-not-installed",
            package: "some-package",
        };
        let err = find(req).unwrap_err().to_string();
        assert!(err.contains("knetsim-surely-not-installed"), "{err}");
        assert!(err.contains("apt-get install some-package"), "{err}");
    }

    #[test]
    fn missing_library_names_its_package() {
        let req = Requirement {
            program: "libknetsim-surely-not-installed.so.1",
            package: "libsome-package1",
        };
        let err = find_library(req).unwrap_err().to_string();
        assert!(err.contains("/usr/lib/"), "{err}");
        assert!(err.contains("apt-get install libsome-package1"), "{err}");
        let libc = Requirement {
            program: "libc.so.6",
            package: "libc6",
        };
        assert!(find_library(libc).unwrap().is_absolute());
    }

    #[test]
    fn finds_a_shell() {
        let sh = Requirement {
            program: "sh",
            package: "dash",
        };
        assert!(find(sh).unwrap().is_absolute());
    }
}
