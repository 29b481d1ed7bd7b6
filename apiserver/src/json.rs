//! JSON text in the key order Kubernetes writes, without `serde_json/preserve_order`.
//!
//! Values are kept in serde_json's sorted maps (enabling `preserve_order` would change
//! `serde_json::Map` for every crate of the workspace built alongside this one); order
//! is applied only when writing: `kind`, `apiVersion`, `metadata` first in every object,
//! ObjectMeta fields in Go struct order, `metav1.Status` and its details in Go struct order,
//! everything else sorted (Go writes struct order there, which clients do not rely on).

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

const DEFAULT: &[&str] = &["kind", "apiVersion", "metadata"];

/// ObjectMeta's fields in Go struct order.
const META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const STATUS: &[&str] = &[
    "kind",
    "apiVersion",
    "metadata",
    "status",
    "message",
    "reason",
    "details",
    "code",
];
const DETAILS: &[&str] = &[
    "name",
    "group",
    "kind",
    "uid",
    "causes",
    "retryAfterSeconds",
];
const CAUSE: &[&str] = &["reason", "message", "field"];

/// The leading keys of the value stored under `key`.
fn order_of(key: &str) -> &'static [&'static str] {
    match key {
        "metadata" => META,
        "details" => DETAILS,
        "causes" => CAUSE,
        _ => DEFAULT,
    }
}

struct Ordered<'a> {
    value: &'a Value,
    first: &'static [&'static str],
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                let leading = self.first.iter().filter_map(|k| m.get_key_value(*k));
                let rest = m.iter().filter(|(k, _)| !self.first.contains(&k.as_str()));
                for (k, v) in leading.chain(rest) {
                    map.serialize_entry(
                        k,
                        &Ordered {
                            value: v,
                            first: order_of(k),
                        },
                    )?;
                }
                map.end()
            }
            // Elements of a list take the order of the list's key (e.g. `causes`).
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Ordered {
                        value: v,
                        first: self.first,
                    })?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// An object (or any value) as Kubernetes writes it.
pub fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&Ordered {
        value: v,
        first: DEFAULT,
    })
    .unwrap_or_default()
}

/// A `metav1.Status` as Kubernetes writes it.
pub fn status_to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&Ordered {
        value: v,
        first: STATUS,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_api_version_metadata_first() {
        let v = json!({"data": {"b": "1", "a": "2"}, "metadata": {"uid": "u", "name": "n"},
                       "apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap_or_default(),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"n","uid":"u"},"data":{"a":"2","b":"1"}}"#
        );
    }
}
