//! flanneld-compatible subnet leases in etcd, VXLAN and host-gw backends, and the flannel CNI meta-plugin.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout of
//! ARCHITECTURE.md is visible from the start. Its capability is tracked as issue 5;
//! until it lands, `knetsim` starts no process for it and nothing claims it works.
