//! flannel's wire formats, byte-compatible with flanneld so either can be swapped in:
//!
//! * the network config at `<prefix>/config`:
//!   `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
//! * one lease per node at `<prefix>/subnets/10.244.1.0-24`:
//!   `{"PublicIP":"172.20.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}}`
//! * `subnet.env`, read by the CNI plugin:
//!   `FLANNEL_NETWORK=10.244.0.0/16`, `FLANNEL_SUBNET=10.244.1.1/24`, `FLANNEL_MTU=1450`,
//!   `FLANNEL_IPMASQ=false`.
//!
//! Everything here is pure; the daemon and the CNI plugin do the I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::Error;

/// flanneld's default etcd prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// VXLAN's header costs 50 bytes of the underlying MTU.
pub const VXLAN_OVERHEAD: u32 = 50;
pub const DEFAULT_VNI: u32 = 1;
/// The Linux kernel's (and so flannel's) VXLAN port, not IANA's 4789.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    #[serde(rename = "Network")]
    pub network: Ipv4Net,
    #[serde(rename = "SubnetLen", default)]
    pub subnet_len: u8,
    #[serde(rename = "SubnetMin", default, skip_serializing_if = "Option::is_none")]
    pub subnet_min: Option<Ipv4Addr>,
    #[serde(rename = "SubnetMax", default, skip_serializing_if = "Option::is_none")]
    pub subnet_max: Option<Ipv4Addr>,
    #[serde(rename = "Backend", default)]
    pub backend: BackendConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendConfig {
    #[serde(rename = "Type", default = "default_backend_type")]
    pub kind: String,
    #[serde(rename = "VNI", default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(rename = "Port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: default_backend_type(),
            vni: None,
            port: None,
        }
    }
}

fn default_backend_type() -> String {
    // flanneld's default when Backend is absent is "udp", which knetsim does not build;
    // vxlan is what every current deployment uses.
    "vxlan".to_string()
}

/// The backends knetsim implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Vxlan { vni: u32, port: u16 },
    HostGw,
}

impl BackendKind {
    pub fn type_name(self) -> &'static str {
        match self {
            BackendKind::Vxlan { .. } => "vxlan",
            BackendKind::HostGw => "host-gw",
        }
    }
}

impl NetworkConfig {
    /// Parse and fill the defaults flanneld fills.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, Error> {
        let mut config: NetworkConfig = serde_json::from_slice(json).map_err(Error::BadConfig)?;
        config.network = config.network.trunc();
        if config.subnet_len == 0 {
            config.subnet_len = if config.network.prefix_len() < 24 {
                24
            } else {
                config.network.prefix_len() + 1
            };
        }
        if config.subnet_len < config.network.prefix_len() || config.subnet_len > 30 {
            return Err(Error::Invalid(format!(
                "SubnetLen {} does not fit Network {}",
                config.subnet_len, config.network
            )));
        }
        self::BackendKind::try_from(&config.backend)?;
        Ok(config)
    }

    pub fn backend_kind(&self) -> BackendKind {
        BackendKind::try_from(&self.backend).unwrap_or(BackendKind::Vxlan {
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
        })
    }

    fn subnet_size(&self) -> u32 {
        1u32 << (32 - u32::from(self.subnet_len))
    }

    /// The first and last subnet a node may lease: by default every subnet but the network's
    /// first and last, as flanneld does.
    pub fn subnet_range(&self) -> (u32, u32) {
        let size = self.subnet_size();
        let first = u32::from(self.network.network());
        let last = u32::from(self.network.broadcast()) - (size - 1);
        let min = self.subnet_min.map(u32::from).unwrap_or(first + size);
        let max = self.subnet_max.map(u32::from).unwrap_or(last - size);
        (min, max)
    }

    /// Every subnet nodes may lease, in address order.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let (min, max) = self.subnet_range();
        let size = self.subnet_size();
        (min..=max)
            .step_by(size as usize)
            .filter_map(move |start| Ipv4Net::new(Ipv4Addr::from(start), self.subnet_len).ok())
    }
}

impl TryFrom<&BackendConfig> for BackendKind {
    type Error = Error;
    fn try_from(backend: &BackendConfig) -> Result<Self, Error> {
        match backend.kind.as_str() {
            "vxlan" => Ok(BackendKind::Vxlan {
                vni: backend.vni.unwrap_or(DEFAULT_VNI),
                port: backend.port.unwrap_or(DEFAULT_VXLAN_PORT),
            }),
            "host-gw" => Ok(BackendKind::HostGw),
            other => Err(Error::Invalid(format!(
                "backend type `{other}` is not supported here: use \"vxlan\" or \"host-gw\""
            ))),
        }
    }
}

/// The value of a lease key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// Always written (as `null`), as flanneld writes it.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<String>,
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VxlanLeaseData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

impl LeaseAttrs {
    pub fn vxlan_data(&self) -> Option<VxlanLeaseData> {
        serde_json::from_value(self.backend_data.clone()?).ok()
    }
}

/// `10.244.1.0/24` ⇄ `10.244.1.0-24`, the last path element of a lease key.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

pub fn parse_subnet_key(key: &str) -> Option<Ipv4Net> {
    let last = key.rsplit('/').next()?;
    // flanneld may append `&<ipv6 subnet>` for dual stack; the IPv4 part comes first.
    let v4 = last.split('&').next()?;
    let (address, len) = v4.split_once('-')?;
    Ipv4Net::new(address.parse().ok()?, len.parse().ok()?).ok()
}

/// A node's view of the network: what the daemon writes and the CNI plugin reads.
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    /// The node's subnet, with the gateway (`.1`) as address: `10.244.1.1/24`.
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network, self.subnet, self.mtu, self.ipmasq
        )
    }

    /// Parse `subnet.env`; the error names every missing key, as flannel's plugin does.
    pub fn parse(text: &str) -> Result<SubnetEnv, Error> {
        let values: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.trim().split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let missing: Vec<&str> = [
            "FLANNEL_NETWORK",
            "FLANNEL_SUBNET",
            "FLANNEL_MTU",
            "FLANNEL_IPMASQ",
        ]
        .into_iter()
        .filter(|k| !values.contains_key(k))
        .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "subnet.env is missing {}",
                missing.join(", ")
            )));
        }
        let bad =
            |key: &str| Error::Invalid(format!("subnet.env has an invalid {key}: {}", values[key]));
        Ok(SubnetEnv {
            network: values["FLANNEL_NETWORK"]
                .parse()
                .map_err(|_| bad("FLANNEL_NETWORK"))?,
            subnet: values["FLANNEL_SUBNET"]
                .parse()
                .map_err(|_| bad("FLANNEL_SUBNET"))?,
            mtu: values["FLANNEL_MTU"]
                .parse()
                .map_err(|_| bad("FLANNEL_MTU"))?,
            ipmasq: values["FLANNEL_IPMASQ"]
                .parse()
                .map_err(|_| bad("FLANNEL_IPMASQ"))?,
        })
    }
}

/// Which subnet this node should hold: the one already leased to its public IP (so a restart
/// keeps its pods' addresses), else one of the free ones. `None` when the network is full.
///
/// Like flanneld, nodes do not all go for the first free subnet, which would make every node
/// of a starting cluster race for the same key; the pick is spread by the node's address
/// (and `attempt`, after a lost race).
pub fn choose_subnet(
    config: &NetworkConfig,
    leases: &[(Ipv4Net, LeaseAttrs)],
    public_ip: Ipv4Addr,
    attempt: u32,
) -> Option<(Ipv4Net, bool)> {
    if let Some((subnet, _)) = leases
        .iter()
        .find(|(_, attrs)| attrs.public_ip == public_ip)
    {
        return Some((*subnet, true));
    }
    let free: Vec<Ipv4Net> = config
        .subnets()
        .filter(|candidate| !leases.iter().any(|(taken, _)| taken == candidate))
        .collect();
    if free.is_empty() {
        return None;
    }
    // A multiplicative hash of the address spreads neighbouring addresses far apart.
    let spread = u32::from(public_ip)
        .wrapping_mul(0x9E37_79B1)
        .rotate_left(16);
    let index = (spread.wrapping_add(attempt.wrapping_mul(7919)) as usize) % free.len();
    Some((free[index], false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> NetworkConfig {
        NetworkConfig::parse(json.as_bytes()).unwrap()
    }

    fn attrs(ip: &str) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"})),
        }
    }

    #[test]
    fn lease_value_is_written_as_flanneld_writes_it() {
        let json = serde_json::to_string(&attrs("172.20.0.11")).unwrap();
        assert_eq!(
            json,
            r#"{"PublicIP":"172.20.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#
        );
        let host_gw = LeaseAttrs {
            backend_type: "host-gw".into(),
            backend_data: None,
            ..attrs("172.20.0.12")
        };
        assert_eq!(
            serde_json::to_string(&host_gw).unwrap(),
            r#"{"PublicIP":"172.20.0.12","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
    }

    #[test]
    fn config_defaults_match_flanneld() {
        let c = config(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#);
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.backend_kind(), BackendKind::Vxlan { vni: 1, port: 8472 });
        let subnets: Vec<String> = c.subnets().map(|s| s.to_string()).collect();
        assert_eq!(subnets.first().unwrap(), "10.244.1.0/24");
        assert_eq!(subnets.last().unwrap(), "10.244.254.0/24");
        assert_eq!(
            config(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#).backend_kind(),
            BackendKind::HostGw
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        for json in [
            r#"{"Network":"x"}"#,
            r#"{"Network":"10.0.0.0/16","SubnetLen":8}"#,
            r#"{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}"#,
            "not json",
        ] {
            assert!(NetworkConfig::parse(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn subnet_keys_round_trip() {
        let subnet: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert_eq!(subnet_key(subnet), "10.244.3.0-24");
        assert_eq!(
            parse_subnet_key("/coreos.com/network/subnets/10.244.3.0-24"),
            Some(subnet)
        );
        assert_eq!(parse_subnet_key("10.244.3.0-24&fc00::-64"), Some(subnet));
        assert_eq!(parse_subnet_key("/coreos.com/network/config"), None);
    }

    #[test]
    fn a_node_keeps_its_lease_and_others_get_free_ones() {
        let c = config(r#"{"Network":"10.244.0.0/16"}"#);
        let leases = vec![("10.244.1.0/24".parse().unwrap(), attrs("172.20.0.11"))];
        let mine = choose_subnet(&c, &leases, "172.20.0.11".parse().unwrap(), 0).unwrap();
        assert_eq!(
            (mine.0.to_string(), mine.1),
            ("10.244.1.0/24".to_string(), true)
        );
        let other = choose_subnet(&c, &leases, "172.20.0.12".parse().unwrap(), 0).unwrap();
        assert!(
            !other.1 && other.0.to_string() != "10.244.1.0/24",
            "{other:?}"
        );
        assert!(c.subnets().any(|s| s == other.0));
        // Neighbouring nodes start from different subnets, so a cluster does not race for one.
        let picks: std::collections::BTreeSet<Ipv4Net> = (11..61)
            .map(|host| {
                choose_subnet(&c, &[], Ipv4Addr::new(172, 20, 0, host), 0)
                    .unwrap()
                    .0
            })
            .collect();
        assert!(
            picks.len() > 30,
            "only {} distinct picks for 50 nodes",
            picks.len()
        );
        // A full network has nothing to give.
        let tiny = config(
            r#"{"Network":"10.244.0.0/23","SubnetLen":24,"SubnetMin":"10.244.0.0","SubnetMax":"10.244.0.0"}"#,
        );
        let taken = vec![("10.244.0.0/24".parse().unwrap(), attrs("172.20.0.11"))];
        assert_eq!(
            choose_subnet(&tiny, &taken, "172.20.0.12".parse().unwrap(), 0),
            None
        );
    }

    #[test]
    fn subnet_env_round_trips_and_names_missing_keys() {
        let env = SubnetEnv {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.1.1/24".parse().unwrap(),
            mtu: 1450,
            ipmasq: false,
        };
        let text = env.render();
        assert_eq!(text, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        assert_eq!(SubnetEnv::parse(&text).unwrap(), env);
        let err = SubnetEnv::parse("FLANNEL_NETWORK=10.244.0.0/16\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"),
            "{err}"
        );
    }
}
