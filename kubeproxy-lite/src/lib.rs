//! Services and EndpointSlices to one nftables table per node, in atomic transactions.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout of
//! ARCHITECTURE.md is visible from the start. Its capability is tracked as issue 7;
//! until it lands, `knetsim` starts no process for it and nothing claims it works.
