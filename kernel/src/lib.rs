//! The kernel operations knetsim needs, and nothing else.
//!
//! Every component that touches kernel state goes through this crate, so a reader finds in one
//! place how a lab becomes namespaces, links and processes. Operations are `ensure_*`-shaped:
//! creating what exists or deleting what is gone succeeds, because `up` may be half-done and
//! `down` may run twice.
//!
//! Links, addresses and routes are written with `ip -batch` (one process per namespace, one
//! line per change) rather than raw netlink: the batch is exactly what a learner would type,
//! and a failing line is reported verbatim. Namespaces are entered with `setns(2)` directly.

pub mod binaries;
pub mod conntrack;
pub mod ip;
pub mod mounts;
pub mod netns;
mod nfnetlink;
pub mod nftables;
pub mod procs;
pub mod sysctl;
pub mod uts;

use std::path::PathBuf;

/// What went wrong, naming the step and the object, so the CLI can print it as it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{program}` not found on PATH: install it with `apt-get install {package}`")]
    MissingBinary { program: String, package: String },
    #[error("`{library}` not found in {dirs}: install it with `apt-get install {package}`")]
    MissingLibrary {
        library: String,
        dirs: String,
        package: String,
    },
    #[error(
        "`{program}` is missing from {dir}: knetsim's programs are installed together \
         (`cargo build --release` builds them all; copy every `knetsim*` program of \
         target/release, not only `knetsim`)"
    )]
    MissingSibling { program: String, dir: PathBuf },
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    #[error("network namespace {name} does not exist (is the lab up? see `knetsim status`)")]
    NoSuchNetns { name: String },
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not {action} {path}")]
    Sys {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("a helper thread for namespace {0} panicked")]
    ThreadPanicked(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
