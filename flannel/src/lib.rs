//! flannel for knetsim: a daemon compatible with flanneld's etcd mode, and the `flannel` CNI
//! meta-plugin.
//!
//! Follow the data: the network config in etcd ([`network`]) → a subnet lease per node
//! ([`registry`], taken by the [`daemon`]) → kernel state per remote lease ([`backend`]:
//! VXLAN or host-gw) and the node's `subnet.env` → the [`cni`] plugin, which turns
//! `subnet.env` into a `bridge` + `host-local` call for each pod.

pub mod backend;
pub mod cni;
pub mod daemon;
pub mod network;
pub mod registry;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the network config is not flannel's JSON: {0}")]
    BadConfig(#[source] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("encoding a lease: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("etcd compacted the lease history (at revision {0})")]
    Compacted(i64),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
