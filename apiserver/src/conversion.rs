//! An object's stored form and the form each served version reads and writes.
//!
//! The store holds one form per collection; `Store` converts at its edge, so everything
//! above it (admission, patches, managed fields, tables) works on the served form:
//! - custom resources: every version of a CRD shares one storage and converts with
//!   strategy `None`, which only changes `apiVersion`;
//! - `events.k8s.io/v1` Events: stored as core `v1` Events (`events.rs`).

use serde_json::{json, Value};

use crate::events;
use crate::registry::ResourceInfo;

/// A stored object as `info`'s version serves it; an object already served is unchanged.
pub fn to_served(info: &ResourceInfo, obj: &mut Value) {
    if events::is_events_v1(info) {
        events::to_events_v1(obj);
    } else if info.custom.is_some() && obj.is_object() {
        obj["apiVersion"] = json!(info.api_version());
    }
}

/// An object written through `info`'s version, in the form it is stored in.
pub fn to_stored(info: &ResourceInfo, obj: &mut Value) {
    if events::is_events_v1(info) {
        events::to_core(obj);
    }
}

/// Do served objects differ from the stored bytes in more than `apiVersion`? Then nothing
/// is spliced from those bytes, and selectors read the served form.
pub fn reshapes(info: &ResourceInfo) -> bool {
    events::is_events_v1(info)
}
