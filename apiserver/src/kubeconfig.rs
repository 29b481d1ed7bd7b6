//! Render kubeconfig files: one cluster, user and context per entry.
//!
//! Certificates are embedded (`certificate-authority-data`, `client-certificate-data`,
//! `client-key-data`) so the file works from any directory and can be copied whole. The
//! context, cluster and user of an entry share its name (`c0`, or
//! `knetsim-<lab>-<cluster>` when merged into a user's own kubeconfig).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// One cluster as seen by one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name of the context, cluster and user.
    pub name: String,
    /// `https://127.0.0.1:6443`
    pub server: String,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    /// Default namespace of the context, if any.
    pub namespace: Option<String>,
}

/// The kubeconfig YAML for `entries`; `current` defaults to the first entry.
pub fn render(entries: &[Entry], current: Option<&str>) -> String {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let clusters: Vec<Value> = entries
        .iter()
        .map(|e| json!({"name": e.name, "cluster": {"server": e.server, "certificate-authority-data": b64(&e.ca_pem)}}))
        .collect();
    let contexts: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut ctx = json!({"cluster": e.name, "user": e.name});
            if let Some(ns) = &e.namespace {
                ctx["namespace"] = json!(ns);
            }
            json!({"name": e.name, "context": ctx})
        })
        .collect();
    let users: Vec<Value> = entries
        .iter()
        .map(|e| json!({"name": e.name, "user": {"client-certificate-data": b64(&e.client_cert_pem), "client-key-data": b64(&e.client_key_pem)}}))
        .collect();
    let current = current
        .map(str::to_string)
        .or_else(|| entries.first().map(|e| e.name.clone()))
        .unwrap_or_default();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "contexts": contexts,
        "current-context": current,
        "users": users,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_context_per_entry() {
        let e = |n: &str| Entry {
            name: n.into(),
            server: "https://127.0.0.1:6443".into(),
            ca_pem: "CA".into(),
            client_cert_pem: "CERT".into(),
            client_key_pem: "KEY".into(),
            namespace: None,
        };
        let y = render(&[e("c0"), e("c1")], None);
        let v: serde_yaml::Value = serde_yaml::from_str(&y).expect("yaml");
        assert_eq!(v["current-context"].as_str(), Some("c0"));
        assert_eq!(v["contexts"][1]["context"]["cluster"].as_str(), Some("c1"));
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some("Q0E=")
        );
    }
}
