//! The two backends, as kernel state per remote lease.
//!
//! VXLAN (the default): one `flannel.<VNI>` device per node, holding the node's own subnet
//! address as a /32. Each remote node costs three kernel entries, all derived from its lease:
//!
//! ```text
//!   route  10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink   (pods there go via its VTEP)
//!   neigh  10.244.2.0 lladdr <VtepMAC> dev flannel.1           (the VTEP's MAC, no ARP)
//!   fdb    <VtepMAC> dev flannel.1 dst <PublicIP>              (which host owns that MAC)
//! ```
//!
//! so no multicast or learning is needed: the lease in etcd is the control plane.
//! host-gw: one plain route per remote node, `10.244.2.0/24 via <PublicIP> dev eth0`; it needs
//! every node on one L2 network, which a cluster's node network is.
//!
//! The `*_commands` functions are pure (golden-tested); `Backend` applies them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::network::{BackendKind, LeaseAttrs, VxlanLeaseData};
use crate::Error;

/// The backend of one node, with what it needs to know about that node.
#[derive(Debug, Clone)]
pub struct Backend {
    pub kind: BackendKind,
    /// The node's interface on the node network (`eth0`).
    pub iface: String,
}

impl Backend {
    pub fn device(&self) -> Option<String> {
        match self.kind {
            BackendKind::Vxlan { vni, .. } => Some(format!("flannel.{vni}")),
            BackendKind::HostGw => None,
        }
    }

    /// Make sure the node's own device exists (`flannel.<VNI>`, compatible with our settings)
    /// and return what goes into its lease's `BackendData`. Done before the lease is taken,
    /// because the lease carries the device's MAC.
    pub fn ensure_device(
        &self,
        public_ip: Ipv4Addr,
        mtu: u32,
    ) -> Result<Option<serde_json::Value>, Error> {
        let BackendKind::Vxlan { vni, port } = self.kind else {
            return Ok(None);
        };
        let device = format!("flannel.{vni}");
        let exists = match incompatible_device(&device, vni, port, public_ip)? {
            Some(reason) => {
                tracing::warn!(%device, "recreating: {reason}");
                kernel::ip::batch(None, &[format!("link del {device}")])?;
                false
            }
            None => kernel::ip::query(None, &["link", "show", "dev", &device]).is_ok(),
        };
        let lines = vxlan_device_commands(exists, &device, vni, port, public_ip, &self.iface, mtu);
        kernel::ip::batch(None, &lines)?;
        let mac = device_mac(&device)?;
        Ok(Some(serde_json::json!({ "VNI": vni, "VtepMAC": mac })))
    }

    /// Give the device the leased subnet's network address as its only address, as flanneld
    /// does (an address left from an earlier lease would make that subnet's route invalid).
    pub fn assign_subnet(&self, subnet: Ipv4Net) -> Result<(), Error> {
        let Some(device) = self.device() else {
            return Ok(());
        };
        let wanted = subnet.network().to_string();
        let links = kernel::ip::query(None, &["-4", "addr", "show", "dev", &device])?;
        let current: Vec<String> = links[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["local"].as_str().map(str::to_string))
            .collect();
        if current != [wanted.clone()] {
            kernel::ip::batch(
                None,
                &[
                    format!("addr flush dev {device}"),
                    format!("addr add {wanted}/32 dev {device}"),
                ],
            )?;
        }
        Ok(())
    }

    /// Program the entries that reach `subnet` at the node described by `attrs`.
    pub fn add_remote(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), Error> {
        match self.kind {
            BackendKind::Vxlan { vni, .. } => {
                let Some(data) = attrs.vxlan_data() else {
                    return Err(Error::Invalid(format!(
                        "lease {subnet} of {} has no VXLAN backend data (is that node on another backend?)",
                        attrs.public_ip
                    )));
                };
                let (ip_lines, fdb_lines) =
                    vxlan_remote_commands(vni, subnet, attrs.public_ip, &data);
                kernel::ip::bridge_batch(None, &fdb_lines)?;
                kernel::ip::batch(None, &ip_lines)?;
            }
            BackendKind::HostGw => {
                kernel::ip::batch(
                    None,
                    &[host_gw_route(
                        subnet,
                        attrs.public_ip,
                        &self.iface,
                        "replace",
                    )],
                )?;
            }
        }
        Ok(())
    }

    /// Remove what [`add_remote`] programmed; entries already gone are fine.
    pub fn remove_remote(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) {
        match self.kind {
            BackendKind::Vxlan { vni, .. } => {
                let device = format!("flannel.{vni}");
                let gateway = subnet.network();
                kernel::ip::batch_forced(
                    "ip",
                    None,
                    &[
                        format!("route del {subnet} dev {device}"),
                        format!("neigh del {gateway} dev {device}"),
                    ],
                );
                if let Some(data) = attrs.vxlan_data() {
                    kernel::ip::batch_forced(
                        "bridge",
                        None,
                        &[format!(
                            "fdb del {} dev {device} dst {}",
                            data.vtep_mac, attrs.public_ip
                        )],
                    );
                }
            }
            BackendKind::HostGw => kernel::ip::batch_forced(
                "ip",
                None,
                &[host_gw_route(subnet, attrs.public_ip, &self.iface, "del")],
            ),
        }
    }
}

/// Why an existing device cannot be reused (flannel's `vxlanLinksIncompat`), or `None` if it
/// can, or does not exist.
fn incompatible_device(
    device: &str,
    vni: u32,
    port: u16,
    local: Ipv4Addr,
) -> Result<Option<String>, Error> {
    let Ok(links) = kernel::ip::query(None, &["-d", "link", "show", "dev", device]) else {
        return Ok(None); // does not exist
    };
    let info = &links[0]["linkinfo"];
    if info["info_kind"] != "vxlan" {
        return Ok(Some(format!(
            "it is a {} device, not vxlan",
            info["info_kind"]
        )));
    }
    let data = &info["info_data"];
    if data["id"].as_u64() != Some(u64::from(vni)) {
        return Ok(Some(format!("its VNI is {}, not {vni}", data["id"])));
    }
    if data["port"].as_u64() != Some(u64::from(port)) {
        return Ok(Some(format!("its port is {}, not {port}", data["port"])));
    }
    if data["local"].as_str() != Some(&local.to_string()) {
        return Ok(Some(format!(
            "its local address is {}, not {local}",
            data["local"]
        )));
    }
    Ok(None)
}

fn device_mac(device: &str) -> Result<String, Error> {
    let links = kernel::ip::query(None, &["link", "show", "dev", device])?;
    links[0]["address"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid(format!("{device} has no MAC address")))
}

#[allow(clippy::too_many_arguments)] // one per attribute of the device, named at the call
fn vxlan_device_commands(
    exists: bool,
    device: &str,
    vni: u32,
    port: u16,
    local: Ipv4Addr,
    iface: &str,
    mtu: u32,
) -> Vec<String> {
    let mut lines = Vec::new();
    if !exists {
        lines.push(format!(
            "link add {device} type vxlan id {vni} local {local} dev {iface} dstport {port} nolearning"
        ));
    }
    lines.push(format!("link set {device} mtu {mtu}"));
    lines.push(format!("link set {device} up"));
    lines
}

/// The route and neighbour (`ip`) and FDB entry (`bridge`) for one remote VXLAN lease.
pub fn vxlan_remote_commands(
    vni: u32,
    subnet: Ipv4Net,
    public_ip: Ipv4Addr,
    data: &VxlanLeaseData,
) -> (Vec<String>, Vec<String>) {
    let device = format!("flannel.{vni}");
    let gateway = subnet.network();
    let mac = &data.vtep_mac;
    (
        vec![
            format!("neigh replace {gateway} lladdr {mac} dev {device} nud permanent"),
            format!("route replace {subnet} via {gateway} dev {device} onlink"),
        ],
        vec![format!(
            "fdb replace {mac} dev {device} dst {public_ip} self permanent"
        )],
    )
}

pub fn host_gw_route(subnet: Ipv4Net, public_ip: Ipv4Addr, iface: &str, verb: &str) -> String {
    format!("route {verb} {subnet} via {public_ip} dev {iface}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_remote_entries_are_derived_from_the_lease() {
        let data = VxlanLeaseData {
            vni: 1,
            vtep_mac: "aa:bb:cc:dd:ee:ff".into(),
        };
        let (ip, fdb) = vxlan_remote_commands(
            1,
            "10.244.2.0/24".parse().unwrap(),
            "172.20.0.12".parse().unwrap(),
            &data,
        );
        assert_eq!(
            ip,
            [
                "neigh replace 10.244.2.0 lladdr aa:bb:cc:dd:ee:ff dev flannel.1 nud permanent",
                "route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
            ]
        );
        assert_eq!(
            fdb,
            ["fdb replace aa:bb:cc:dd:ee:ff dev flannel.1 dst 172.20.0.12 self permanent"]
        );
    }

    #[test]
    fn vxlan_device_matches_flannel_1() {
        let local = "172.20.0.11".parse().unwrap();
        let lines = vxlan_device_commands(false, "flannel.1", 1, 8472, local, "eth0", 1450);
        assert_eq!(lines, [
            "link add flannel.1 type vxlan id 1 local 172.20.0.11 dev eth0 dstport 8472 nolearning",
            "link set flannel.1 mtu 1450",
            "link set flannel.1 up",
        ]);
        let reused = vxlan_device_commands(true, "flannel.1", 1, 8472, local, "eth0", 1450);
        assert_eq!(reused.len(), 2);
    }

    #[test]
    fn host_gw_is_one_route_via_the_node() {
        assert_eq!(
            host_gw_route(
                "10.244.3.0/24".parse().unwrap(),
                "172.20.0.13".parse().unwrap(),
                "eth0",
                "replace"
            ),
            "route replace 10.244.3.0/24 via 172.20.0.13 dev eth0"
        );
    }
}
