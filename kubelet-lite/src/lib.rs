//! The per-node agent: registers the Node and runs pods through a CRI-shaped runtime and real CNI plugins.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout of
//! ARCHITECTURE.md is visible from the start. Its capability is tracked as issue 5;
//! until it lands, `knetsim` starts no process for it and nothing claims it works.
