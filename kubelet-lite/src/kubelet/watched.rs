//! The objects of the kubelet's watches (Pods, Services, ConfigMaps, Secrets), decoded through
//! a `serde_json::Value`.
//!
//! A watch event is `{"type": …, "object": …}`, which kube-rs decodes as an adjacently tagged
//! enum: the object is decoded straight from the text when `type` comes first, and from a
//! buffered copy when it does not. So every watched type had its whole decoder (a Pod's is
//! hundreds of KiB) in the kubelet twice, both resident in every kubelet. Through a `Value`,
//! each type is decoded by one instance of its decoder, whatever the path.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeOwned, Error as _};

/// An object as a watch of the kubelet keeps it; reads as the object itself.
#[derive(Clone, Debug)]
pub struct Watched<K>(pub K);

impl<K> std::ops::Deref for Watched<K> {
    type Target = K;

    fn deref(&self) -> &K {
        &self.0
    }
}

impl<'de, K: DeserializeOwned> serde::Deserialize<'de> for Watched<K> {
    fn deserialize<D: serde::Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(decoder)?;
        K::deserialize(value).map(Watched).map_err(D::Error::custom)
    }
}

impl<K: kube::Resource> kube::Resource for Watched<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::WatchEvent;

    const POD: &str = r#"{"metadata":{"name":"p","namespace":"default","uid":"u1"},"spec":{"nodeName":"c0-w1","containers":[{"name":"c","image":"busybox"}]}}"#;

    /// Either order of `type` and `object` in an event gives the same Pod.
    #[test]
    fn watch_events_decode_in_either_field_order() {
        for event in [
            format!(r#"{{"type":"ADDED","object":{POD}}}"#),
            format!(r#"{{"object":{POD},"type":"ADDED"}}"#),
        ] {
            let decoded: WatchEvent<Watched<Pod>> = serde_json::from_str(&event).unwrap();
            let WatchEvent::Added(pod) = decoded else {
                panic!("not an ADDED event: {decoded:?}");
            };
            assert_eq!(pod.metadata.uid.as_deref(), Some("u1"));
            assert_eq!(
                pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                Some("c0-w1")
            );
        }
    }

    #[test]
    fn a_malformed_object_is_an_error() {
        let event = r#"{"type":"ADDED","object":{"metadata":{"name":7}}}"#;
        assert!(serde_json::from_str::<WatchEvent<Watched<Pod>>>(event).is_err());
    }

    #[test]
    fn it_addresses_the_collection_of_the_object_type() {
        use kube::Resource as _;
        assert_eq!(
            Watched::<Pod>::url_path(&(), Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
    }
}
