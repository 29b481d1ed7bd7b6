//! The files every container of a Pod sees at `/etc/resolv.conf`, `/etc/hosts` and
//! `/etc/hostname`, kept in the Pod's directory (`/var/lib/kubelet/pods/<uid>/`) and
//! bind-mounted into each container's mount namespace, as the kubelet and the CRI runtime do.
//!
//! * `resolv.conf` follows `dnsPolicy`: `ClusterFirst` → the cluster DNS Service's IP
//!   (`--cluster-dns`), the search path `<ns>.svc.<domain> svc.<domain> <domain>` plus the
//!   node's, `options ndots:5`; `Default` → the node's resolv.conf; `None` → only `dnsConfig`,
//!   which is otherwise merged in (nameservers and searches appended, options by name). A
//!   `hostNetwork` Pod with `ClusterFirst` gets `Default`, as on a real node
//!   (`ClusterFirstWithHostNet` keeps the cluster DNS).
//! * `etc-hosts` is the kubelet-managed hosts file: localhost, the Pod's IP and hostname (FQDN
//!   too with `subdomain`), then `hostAliases`. A `hostNetwork` Pod gets the node's.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::runtime::Mount;

/// What the kubelet's DNS flags say.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// `--cluster-dns`; none: `ClusterFirst` falls back to `Default`, as the kubelet does.
    pub cluster_dns: Option<Ipv4Addr>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--resolv-conf`: the node's resolver configuration.
    pub node_resolv_conf: PathBuf,
}

/// resolv.conf's three kinds of lines.
#[derive(Debug, Default, PartialEq)]
struct Resolver {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn parse_resolv_conf(text: &str) -> Resolver {
    let mut resolver = Resolver::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => resolver.nameservers.extend(words.next().map(String::from)),
            Some("search") | Some("domain") => {
                resolver.searches = words.map(String::from).collect()
            }
            Some("options") => resolver.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    resolver
}

/// The Pod's resolv.conf.
pub fn resolv_conf(pod: &Pod, dns: &DnsSettings, node_resolv_conf: &str) -> String {
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let node = parse_resolv_conf(node_resolv_conf);
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut resolver = match (policy, cluster_first, dns.cluster_dns) {
        ("None", _, _) => Resolver::default(),
        (_, true, Some(ip)) => {
            let domain = &dns.cluster_domain;
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(node.searches.iter().cloned());
            Resolver {
                nameservers: vec![ip.to_string()],
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => node,
    };
    if let Some(config) = &spec.dns_config {
        resolver
            .nameservers
            .extend(config.nameservers.iter().flatten().cloned());
        resolver
            .searches
            .extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.clone() else {
                continue;
            };
            resolver
                .options
                .retain(|o| o.split(':').next() != Some(name.as_str()));
            resolver.options.push(match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name,
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    resolver.searches.retain(|s| seen.insert(s.clone()));
    // glibc reads at most three nameservers and 32 search domains; the kubelet trims so too.
    resolver.nameservers.truncate(3);
    resolver.searches.truncate(32);
    let mut text = String::new();
    if !resolver.searches.is_empty() {
        text += &format!("search {}\n", resolver.searches.join(" "));
    }
    for server in &resolver.nameservers {
        text += &format!("nameserver {server}\n");
    }
    if !resolver.options.is_empty() {
        text += &format!("options {}\n", resolver.options.join(" "));
    }
    text
}

/// The kubelet-managed `/etc/hosts` of a Pod with its own network namespace.
pub fn etc_hosts(pod: &Pod, pod_ip: Option<&str>, cluster_domain: &str) -> String {
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let hostname = spec.hostname.as_deref().unwrap_or(name);
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(subdomain) => {
                text += &format!(
                    "{ip}\t{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}\t{hostname}\n"
                )
            }
            None => text += &format!("{ip}\t{hostname}\n"),
        }
    }
    text + &host_aliases(pod)
}

/// A `hostNetwork` Pod's `/etc/hosts`: the node's, plus `hostAliases`.
pub fn host_network_etc_hosts(pod: &Pod, node_hosts: &str) -> String {
    format!("# Kubernetes-managed hosts file (host network).\n{node_hosts}") + &host_aliases(pod)
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut text = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.unwrap_or_default();
        text += &format!("{}\t{}\n", alias.ip, names.join("\t"));
    }
    text
}

/// The Pod's hostname: `spec.hostname`, else its name (the node's for `hostNetwork`).
pub fn hostname(pod: &Pod, node_hostname: &str) -> String {
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    if spec.host_network.unwrap_or(false) {
        return node_hostname.to_string();
    }
    spec.hostname
        .as_ref()
        .or(pod.metadata.name.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// Write the three files into the Pod's directory (when changed) and return their mounts.
pub fn write(
    pod_dir: &Path,
    pod: &Pod,
    pod_ip: Option<&str>,
    dns: &DnsSettings,
    node_hostname: &str,
) -> std::io::Result<Vec<Mount>> {
    std::fs::create_dir_all(pod_dir)?;
    let node_resolv = std::fs::read_to_string(&dns.node_resolv_conf).unwrap_or_default();
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let hosts = if host_network {
        host_network_etc_hosts(
            pod,
            &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        )
    } else {
        etc_hosts(pod, pod_ip, &dns.cluster_domain)
    };
    let files = [
        (
            "resolv.conf",
            resolv_conf(pod, dns, &node_resolv),
            "/etc/resolv.conf",
        ),
        ("etc-hosts", hosts, "/etc/hosts"),
        (
            "hostname",
            format!("{}\n", hostname(pod, node_hostname)),
            "/etc/hostname",
        ),
    ];
    let mut mounts = Vec::new();
    for (file, text, target) in files {
        let path = pod_dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            let tmp = pod_dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &path)?;
        }
        mounts.push(Mount {
            host_path: path,
            container_path: target.into(),
            readonly: false,
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: serde_json::Value) -> Pod {
        serde_json::from_value(yaml).unwrap()
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            cluster_dns: Some(Ipv4Addr::new(10, 96, 0, 10)),
            cluster_domain: "cluster.local".into(),
            node_resolv_conf: "/etc/resolv.conf".into(),
        }
    }

    const NODE: &str = "nameserver 192.0.2.53\nsearch lab.example\noptions edns0\n";

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_the_namespace_search_path() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": []}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns(), NODE),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_none_and_dns_config() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns(), NODE),
            "search lab.example\nnameserver 192.0.2.53\noptions edns0\n"
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns(), NODE),
            "search a.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"containers": [],
            "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}}),
        );
        assert!(resolv_conf(&p, &dns(), NODE).ends_with("options ndots:1\n"));
        // A hostNetwork Pod with ClusterFirst resolves as its node does.
        let p = pod(
            serde_json::json!({"metadata": {"name": "agent"}, "spec": {"containers": [], "hostNetwork": true}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns(), NODE),
            "search lab.example\nnameserver 192.0.2.53\noptions edns0\n"
        );
    }

    #[test]
    fn hosts_file_has_the_pod_and_its_aliases() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": [],
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}}),
        );
        let hosts = etc_hosts(&p, Some("10.244.1.5"), "cluster.local");
        assert!(
            hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
            "{hosts}"
        );
        assert!(hosts.contains("\n10.244.1.5\tweb\n"), "{hosts}");
        assert!(
            hosts.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
            "{hosts}"
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": {"containers": [], "hostname": "db", "subdomain": "dbs"}}),
        );
        assert!(etc_hosts(&p, Some("10.244.1.6"), "cluster.local")
            .contains("10.244.1.6\tdb.dbs.shop.svc.cluster.local\tdb\n"));
    }
}
