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
    /// A key of this object left out.
    skip: Option<&'static str>,
    /// A key of this object's `metadata` left out.
    skip_in_metadata: Option<&'static str>,
}

impl<'a> Ordered<'a> {
    fn new(value: &'a Value, first: &'static [&'static str]) -> Self {
        Ordered {
            value,
            first,
            skip: None,
            skip_in_metadata: None,
        }
    }
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(m) => {
                let skipped = usize::from(self.skip.is_some_and(|k| m.contains_key(k)));
                let mut map = s.serialize_map(Some(m.len() - skipped))?;
                let leading = self.first.iter().filter_map(|k| m.get_key_value(*k));
                let rest = m.iter().filter(|(k, _)| !self.first.contains(&k.as_str()));
                for (k, v) in leading
                    .chain(rest)
                    .filter(|(k, _)| Some(k.as_str()) != self.skip)
                {
                    let mut child = Ordered::new(v, order_of(k));
                    if k == "metadata" {
                        child.skip = self.skip_in_metadata;
                    }
                    map.serialize_entry(k, &child)?;
                }
                map.end()
            }
            // Elements of a list take the order of the list's key (e.g. `causes`).
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Ordered::new(v, self.first))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// An object (or any value) as Kubernetes writes it.
pub fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&Ordered::new(v, DEFAULT)).unwrap_or_default()
}

/// An object as `to_vec` writes it, without `metadata.resourceVersion`: the stored form,
/// written without first copying the object to remove that field.
pub fn to_vec_without_resource_version(v: &Value) -> Vec<u8> {
    let mut ordered = Ordered::new(v, DEFAULT);
    ordered.skip_in_metadata = Some("resourceVersion");
    serde_json::to_vec(&ordered).unwrap_or_default()
}

/// A `metav1.Status` as Kubernetes writes it.
pub fn status_to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&Ordered::new(v, STATUS)).unwrap_or_default()
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

    #[test]
    fn without_resource_version_leaves_out_only_metadatas() {
        let v = json!({"kind": "ConfigMap", "apiVersion": "v1",
                       "metadata": {"name": "n", "resourceVersion": "7", "labels": {"resourceVersion": "x"}},
                       "data": {"resourceVersion": "y"}});
        assert_eq!(
            String::from_utf8(to_vec_without_resource_version(&v)).unwrap_or_default(),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"n","labels":{"resourceVersion":"x"}},"data":{"resourceVersion":"y"}}"#
        );
        let only_rv = json!({"kind": "ConfigMap", "metadata": {"resourceVersion": "7"}});
        assert_eq!(
            String::from_utf8(to_vec_without_resource_version(&only_rv)).unwrap_or_default(),
            r#"{"kind":"ConfigMap","metadata":{}}"#
        );
    }
}
