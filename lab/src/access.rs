//! How kubectl gets into a lab: the lab's CA and certificates, and kubeconfig files.
//!
//! One CA per lab (`pki/ca.crt`) issues each cluster's API server certificate (valid for the
//! addresses clients use: `127.0.0.1`, the control-plane node, the `kubernetes` Service IP and
//! its DNS names) and the admin's client certificate (`kubernetes-admin`, group
//! `system:masters`, as kubeadm issues it), and each node's kubelet certificate and
//! kubeconfig (`system:node:<node>`, in the node's own `/var/lib/kubelet/kubeconfig`), each
//! node's kube-proxy kubeconfig (`/var/lib/kube-proxy/kubeconfig.conf`) and the
//! controller-manager's (`/etc/kubernetes/controller-manager.conf` on the control plane).
//!
//! `up` writes the lab's kubeconfig (`/tmp/knetsim/<lab>/kubeconfig`, one context per
//! cluster named after it) and merges the same clusters into the user's own kubeconfig
//! (`$KUBECONFIG`'s first file, else `~/.kube/config`) as `knetsim-<lab>-<cluster>`,
//! selecting the first. `down` takes exactly those entries out again (and the file too, if
//! nothing else is left in it).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use apiserver::kubeconfig::Entry;
use apiserver::pki::{self, CertPair};
use serde_yaml::Value;

use crate::paths::LabPaths;
use crate::plan::LabPlan;

const ADMIN: &str = "kubernetes-admin";

/// Issue the lab's CA, one API server certificate per cluster and the admin certificate.
pub fn issue_certificates(plan: &LabPlan, paths: &LabPaths) -> anyhow::Result<()> {
    let dir = paths.pki();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = pki::generate_ca(&format!("knetsim-{}-ca", plan.lab))?;
    ca.write(&dir.join("ca.crt"), &dir.join("ca.key"))?;
    for cluster in &plan.clusters {
        let cp = cluster.control_plane().address.to_string();
        let service_ip =
            std::net::Ipv4Addr::from(u32::from(cluster.service_network.network()) + 1).to_string();
        let sans = [
            "127.0.0.1",
            "localhost",
            cp.as_str(),
            service_ip.as_str(),
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let server = pki::server_cert(&ca, "kube-apiserver", &sans)?;
        server.write(
            &dir.join(format!("{}-apiserver.crt", cluster.name)),
            &dir.join(format!("{}-apiserver.key", cluster.name)),
        )?;
    }
    // The service-account token signing key pair, as kubeadm's sa.key and sa.pub.
    let (sa_private, sa_public) = pki::generate_signing_key()?;
    write_private(&dir.join("sa.key"), sa_private.as_bytes())?;
    std::fs::write(dir.join("sa.pub"), sa_public)?;
    let admin = pki::client_cert(&ca, ADMIN, &["system:masters"])?;
    admin.write(&dir.join("admin.crt"), &dir.join("admin.key"))?;
    // How API servers reach kubelets (kubectl logs), as kubeadm's apiserver-kubelet-client.
    let kubelet_client =
        pki::client_cert(&ca, "kube-apiserver-kubelet-client", &["system:masters"])?;
    kubelet_client.write(
        &dir.join("apiserver-kubelet-client.crt"),
        &dir.join("apiserver-kubelet-client.key"),
    )?;
    // Each kubelet is `system:node:<name>` in `system:nodes`, as with kubeadm, and reaches
    // its cluster's API server on the control-plane node, inside the lab.
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt"))?;
    for cluster in &plan.clusters {
        let server = format!(
            "https://{}:{}",
            cluster.control_plane().address,
            crate::plan::API_SECURE_PORT
        );
        for node in &cluster.nodes {
            issue_node_certificates(&ca, &ca_pem, paths, &server, node)?;
        }
        // The controller-manager's identity (`system:kube-controller-manager`), in the
        // control-plane node's /etc/kubernetes as kubeadm writes it.
        let cp = cluster.control_plane();
        let cert = pki::client_cert(&ca, "system:kube-controller-manager", &[])?;
        let path = paths.node_path(
            &cp.cluster,
            &cp.name,
            crate::plan::CONTROLLER_MANAGER_KUBECONFIG,
        );
        write_component_kubeconfig(&path, &cluster.name, &server, &ca_pem, cert)?;
    }
    Ok(())
}

/// A node's kubelet and kube-proxy identities and kubeconfigs and the kubelet's serving
/// certificate, for a node added to a running lab, from the lab's CA on disk.
pub fn issue_added_node_certificates(
    plan: &LabPlan,
    paths: &LabPaths,
    node: &crate::plan::NodePlan,
) -> anyhow::Result<()> {
    let dir = paths.pki();
    let ca =
        CertPair::read(&dir.join("ca.crt"), &dir.join("ca.key")).context("reading the lab's CA")?;
    let cluster = plan
        .cluster(&node.cluster)
        .with_context(|| format!("lab {} has no cluster {}", plan.lab, node.cluster))?;
    let server = format!(
        "https://{}:{}",
        cluster.control_plane().address,
        crate::plan::API_SECURE_PORT
    );
    let ca_pem = ca.cert_pem.clone();
    issue_node_certificates(&ca, &ca_pem, paths, &server, node)
}

/// Each kubelet is `system:node:<name>` in `system:nodes`, as with kubeadm, and reaches its
/// cluster's API server (`server`) on the control-plane node, inside the lab.
fn issue_node_certificates(
    ca: &CertPair,
    ca_pem: &str,
    paths: &LabPaths,
    server: &str,
    node: &crate::plan::NodePlan,
) -> anyhow::Result<()> {
    let cert = pki::client_cert(
        ca,
        &format!("system:node:{}", node.hostname),
        &["system:nodes"],
    )?;
    let kubelet_config =
        paths.node_path(&node.cluster, &node.name, crate::plan::KUBELET_KUBECONFIG);
    write_component_kubeconfig(&kubelet_config, &node.cluster, server, ca_pem, cert)?;
    // kube-proxy's identity, as kubeadm's `system:kube-proxy`, on every node.
    let proxy = pki::client_cert(ca, "system:kube-proxy", &["system:node-proxier"])?;
    let proxy_config = paths.node_path(
        &node.cluster,
        &node.name,
        crate::plan::KUBE_PROXY_KUBECONFIG,
    );
    write_component_kubeconfig(&proxy_config, &node.cluster, server, ca_pem, proxy)?;
    // The kubelet's serving certificate, for its address, and the CA it trusts.
    let pki_dir = paths.node_path(&node.cluster, &node.name, crate::plan::KUBELET_PKI);
    write_private(&pki_dir.join("ca.crt"), ca_pem.as_bytes())?;
    let address = node.address.to_string();
    let serving = pki::server_cert(
        ca,
        &format!("system:node:{}", node.hostname),
        &[address.as_str(), node.hostname.as_str()],
    )?;
    serving.write(&pki_dir.join("kubelet.crt"), &pki_dir.join("kubelet.key"))?;
    Ok(())
}

/// A kubeconfig with one context, for a component reaching its cluster's API server.
fn write_component_kubeconfig(
    path: &Path,
    cluster: &str,
    server: &str,
    ca_pem: &str,
    cert: CertPair,
) -> anyhow::Result<()> {
    let entry = Entry {
        name: cluster.to_string(),
        server: server.to_string(),
        ca_pem: ca_pem.to_string(),
        client_cert_pem: cert.cert_pem,
        client_key_pem: cert.key_pem,
        namespace: None,
    };
    write_private(
        path,
        apiserver::kubeconfig::render(&[entry], None).as_bytes(),
    )
}

fn entries(
    plan: &LabPlan,
    paths: &LabPaths,
    name: impl Fn(&str) -> String,
) -> anyhow::Result<Vec<Entry>> {
    let dir = paths.pki();
    let ca = std::fs::read_to_string(dir.join("ca.crt")).context("reading the lab's CA")?;
    let admin = CertPair::read(&dir.join("admin.crt"), &dir.join("admin.key"))?;
    Ok(plan
        .clusters
        .iter()
        .map(|cluster| Entry {
            name: name(&cluster.name),
            server: format!("https://127.0.0.1:{}", cluster.api_port),
            ca_pem: ca.clone(),
            client_cert_pem: admin.cert_pem.clone(),
            client_key_pem: admin.key_pem.clone(),
            namespace: None,
        })
        .collect())
}

/// The prefix of every entry this lab adds to the user's kubeconfig.
fn user_prefix(lab: &str) -> String {
    format!("knetsim-{lab}-")
}

/// The user's own kubeconfig: `$KUBECONFIG`'s first file, else `~/.kube/config`.
pub fn user_kubeconfig() -> Option<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list).next();
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube").join("config"))
}

/// Write the lab's kubeconfig and merge its clusters into the user's. Returns the user's file.
pub fn write_kubeconfigs(plan: &LabPlan, paths: &LabPaths) -> anyhow::Result<Option<PathBuf>> {
    let own = apiserver::kubeconfig::render(&entries(plan, paths, str::to_string)?, None);
    write_private(&paths.kubeconfig(), own.as_bytes())?;
    let Some(user) = user_kubeconfig() else {
        return Ok(None);
    };
    let prefix = user_prefix(&plan.lab);
    let ours: Value = serde_yaml::from_str(&apiserver::kubeconfig::render(
        &entries(plan, paths, |cluster| format!("{prefix}{cluster}"))?,
        None,
    ))?;
    let mut config = read_kubeconfig(&user)?;
    for list in ["clusters", "contexts", "users"] {
        let mut merged = without_prefix(config.get(list), &prefix);
        if let Some(Value::Sequence(added)) = ours.get(list) {
            merged.extend(added.iter().cloned());
        }
        config[list] = Value::Sequence(merged);
    }
    config["current-context"] = Value::String(format!("{prefix}{}", plan.clusters[0].name));
    write_private(&user, serde_yaml::to_string(&config)?.as_bytes())?;
    Ok(Some(user))
}

/// A client of one cluster's API server as the lab's admin (through the root namespace's
/// loopback port, so it works from the machine itself).
pub async fn cluster_client(paths: &LabPaths, cluster: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())
        .with_context(|| format!("reading {}", paths.kubeconfig().display()))?;
    let options = kube::config::KubeConfigOptions {
        context: Some(cluster.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("no context {cluster} in {}", paths.kubeconfig().display()))?;
    kube::Client::try_from(config).context("creating the API client")
}

/// Take this lab's entries out of the user's kubeconfig (nothing to do if there are none).
pub fn remove_user_entries(lab: &str) -> anyhow::Result<usize> {
    let Some(user) = user_kubeconfig().filter(|p| p.exists()) else {
        return Ok(0);
    };
    let prefix = user_prefix(lab);
    let mut config = read_kubeconfig(&user)?;
    let mut removed = 0;
    for list in ["clusters", "contexts", "users"] {
        let before = config
            .get(list)
            .and_then(Value::as_sequence)
            .map_or(0, Vec::len);
        let kept = without_prefix(config.get(list), &prefix);
        removed += before - kept.len();
        config[list] = Value::Sequence(kept);
    }
    let current = config
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if current.starts_with(&prefix) {
        config["current-context"] = Value::String(String::new());
    }
    let empty = ["clusters", "contexts", "users"].iter().all(|list| {
        config
            .get(*list)
            .and_then(Value::as_sequence)
            .is_none_or(Vec::is_empty)
    });
    if removed > 0 && empty {
        // Nothing but what `up` put there: the file goes, as it came, with the lab.
        std::fs::remove_file(&user).with_context(|| format!("removing {}", user.display()))?;
    } else if removed > 0 {
        write_private(&user, serde_yaml::to_string(&config)?.as_bytes())?;
    }
    Ok(removed)
}

fn read_kubeconfig(path: &Path) -> anyhow::Result<Value> {
    let empty = || {
        serde_yaml::from_str::<Value>("apiVersion: v1\nkind: Config\npreferences: {}\nclusters: []\ncontexts: []\nusers: []\n")
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let value: Value = serde_yaml::from_str(&text).with_context(|| {
                format!(
                    "{} is not a kubeconfig (YAML); fix or move it, then retry",
                    path.display()
                )
            })?;
            if value.as_mapping().is_none() {
                anyhow::bail!(
                    "{} is not a kubeconfig (not a YAML mapping)",
                    path.display()
                );
            }
            Ok(value)
        }
        Ok(_) => Ok(empty()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()?),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

fn without_prefix(list: Option<&Value>, prefix: &str) -> Vec<Value> {
    list.and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .filter(|item| {
                    !item
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Kubeconfigs hold private keys: written whole (via rename) and readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("knetsim-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_users_entries_and_replaces_only_ours() {
        let existing: Value = serde_yaml::from_str(
            "clusters: [{name: prod}, {name: knetsim-a-c0}, {name: knetsim-ab-c0}]\n",
        )
        .unwrap();
        let kept: Vec<String> = without_prefix(existing.get("clusters"), &user_prefix("a"))
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        // Lab names have no `-`, so `knetsim-a-` never matches lab `ab`'s entries.
        assert_eq!(kept, ["prod", "knetsim-ab-c0"]);
    }
}
