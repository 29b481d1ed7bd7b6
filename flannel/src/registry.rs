//! flannel's state in etcd: the network config and the subnet leases, with flanneld's keys.
//!
//! A lease is created in one transaction — put only if the key has never existed
//! (`version == 0`) — attached to an etcd lease with flanneld's 24 h TTL, so two nodes can
//! never hold one subnet and a node that vanishes frees its subnet a day later. Renewal puts
//! the same value again under a fresh etcd lease.

use std::net::Ipv4Addr;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use ipnet::Ipv4Net;

use crate::network::{parse_subnet_key, subnet_key, LeaseAttrs, NetworkConfig};
use crate::Error;

/// flanneld's subnet lease TTL.
pub const LEASE_TTL_SECONDS: i64 = 24 * 3600;

pub struct Registry {
    client: Client,
    prefix: String,
}

/// A change to another node's lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    Added(Ipv4Net, LeaseAttrs),
    Removed(Ipv4Net, Option<LeaseAttrs>),
}

impl Registry {
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Registry, Error> {
        // No request timeout: it would apply to the long-lived watch stream too.
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Registry {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn lease_key(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), subnet_key(subnet))
    }

    /// The network config, or `None` while nobody has written it yet.
    pub async fn network_config(&mut self) -> Result<Option<NetworkConfig>, Error> {
        let response = self.client.get(self.config_key(), None).await?;
        match response.kvs().first() {
            Some(kv) => Ok(Some(NetworkConfig::parse(kv.value())?)),
            None => Ok(None),
        }
    }

    /// Every lease, and the revision they were read at (to watch from).
    pub async fn leases(&mut self) -> Result<(Vec<(Ipv4Net, LeaseAttrs)>, i64), Error> {
        let response = self
            .client
            .get(self.subnets_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let leases = response
            .kvs()
            .iter()
            .filter_map(|kv| decode(kv.key(), kv.value()))
            .collect();
        Ok((leases, revision))
    }

    /// Take `subnet` if no one has it. Returns false if another node got it first.
    pub async fn create_lease(
        &mut self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
    ) -> Result<bool, Error> {
        let key = self.lease_key(subnet);
        let grant = self.client.lease_grant(LEASE_TTL_SECONDS, None).await?;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                serde_json::to_vec(attrs)?,
                Some(PutOptions::new().with_lease(grant.id())),
            )]);
        let response = self.client.txn(txn).await?;
        if !response.succeeded() {
            // Don't leave an unused etcd lease behind.
            let _ = self.client.lease_revoke(grant.id()).await;
        }
        Ok(response.succeeded())
    }

    /// Write this node's lease again (a restart that reuses it, or a renewal) with a fresh TTL.
    pub async fn renew_lease(&mut self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), Error> {
        let grant = self.client.lease_grant(LEASE_TTL_SECONDS, None).await?;
        self.client
            .put(
                self.lease_key(subnet),
                serde_json::to_vec(attrs)?,
                Some(PutOptions::new().with_lease(grant.id())),
            )
            .await?;
        Ok(())
    }

    /// Lease changes after `revision` (the revision a list was read at).
    pub async fn watch_leases(&mut self, revision: i64) -> Result<WatchStream, Error> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(revision + 1);
        Ok(self
            .client
            .watch(self.subnets_prefix(), Some(options))
            .await?)
    }
}

/// The lease events in one watch response; `Err` if the history was compacted away.
pub fn lease_events(response: &etcd_client::WatchResponse) -> Result<Vec<LeaseEvent>, Error> {
    if response.compact_revision() > 0 {
        return Err(Error::Compacted(response.compact_revision()));
    }
    let mut events = Vec::new();
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        match event.event_type() {
            etcd_client::EventType::Put => {
                if let Some((subnet, attrs)) = decode(kv.key(), kv.value()) {
                    events.push(LeaseEvent::Added(subnet, attrs));
                }
            }
            etcd_client::EventType::Delete => {
                let Some(subnet) = std::str::from_utf8(kv.key())
                    .ok()
                    .and_then(parse_subnet_key)
                else {
                    continue;
                };
                let previous = event
                    .prev_kv()
                    .and_then(|prev| decode(prev.key(), prev.value()))
                    .map(|(_, a)| a);
                events.push(LeaseEvent::Removed(subnet, previous));
            }
        }
    }
    Ok(events)
}

fn decode(key: &[u8], value: &[u8]) -> Option<(Ipv4Net, LeaseAttrs)> {
    let key = std::str::from_utf8(key).ok()?;
    let subnet = parse_subnet_key(key)?;
    match serde_json::from_slice::<LeaseAttrs>(value) {
        Ok(attrs) => Some((subnet, attrs)),
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring a lease that is not flannel's JSON");
            None
        }
    }
}

/// The address a node advertises: `--public-ip`, else the first IPv4 address of `iface`.
pub fn interface_address(iface: &str) -> Result<(Ipv4Addr, u32), Error> {
    let links = kernel::ip::query(None, &["addr", "show", "dev", iface])?;
    let link = &links[0];
    let mtu = link["mtu"].as_u64().unwrap_or(1500) as u32;
    let address = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .find_map(|a| a["local"].as_str()?.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("{iface} has no IPv4 address: pass --public-ip")))?;
    Ok((address, mtu))
}
