//! Finding the programs knetsim runs, and naming the Debian package when one is missing.
//!
//! A missing binary is the most common failure on a new machine; the error says what to install
//! instead of surfacing `No such file or directory` from deep inside `up`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A program knetsim needs, and the Debian package that ships it.
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
    fn finds_a_shell() {
        let sh = Requirement {
            program: "sh",
            package: "dash",
        };
        assert!(find(sh).unwrap().is_absolute());
    }
}
