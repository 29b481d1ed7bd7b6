//! Kubernetes REST API persisted to the cluster's etcd, served to kubectl and kube-rs.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout of
//! ARCHITECTURE.md is visible from the start. Its capability is tracked as issue 4;
//! until it lands, `knetsim` starts no process for it and nothing claims it works.
