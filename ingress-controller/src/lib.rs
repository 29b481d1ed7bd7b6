//! Ingress and IngressClass objects rendered into nginx configuration, validated and reloaded.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout of
//! ARCHITECTURE.md is visible from the start. Its capability is not yet filed as an issue;
//! until it lands, `knetsim` starts no process for it and nothing claims it works.
