//! The lab: clusters of emulated nodes on one machine.
//!
//! Follow the data: a [`topology`] file becomes a [`plan`] (every name and address), the
//! [`network`] module turns the plan into namespaces and links, and the [`supervisor`] keeps
//! the plan's processes running on their nodes. [`up`] and [`down`] drive those steps, and
//! [`status`] is what the supervisor reports back. Everything on disk lives under [`paths`].

pub mod access;
pub mod addons;
pub mod bench;
pub mod bench_api;
pub mod bench_dns;
pub mod bench_pods;
pub mod bench_reconcile;
pub mod bench_services;
pub mod down;
pub mod exec;
pub mod inspect;
pub mod network;
pub mod node;
pub mod paths;
pub mod plan;
pub mod progress;
pub mod service_proxy;
pub mod status;
pub mod supervisor;
pub mod topology;
pub mod up;

use anyhow::Context as _;

/// The plan of a running lab, read back from its state tree.
pub fn read_plan(lab: &str) -> anyhow::Result<plan::LabPlan> {
    let path = paths::LabPaths::new(lab).plan();
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "lab {lab} is not up (no {}): start it with `knetsim up --lab {lab}`",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("reading {}", path.display())),
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}
