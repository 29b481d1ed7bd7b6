//! DNS for the cluster domain over Services and EndpointSlices, deployed behind the kube-dns Service.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout of
//! ARCHITECTURE.md is visible from the start. Its capability is tracked as issue 8;
//! until it lands, `knetsim` starts no process for it and nothing claims it works.
