//! Stale UDP flows, as kube-proxy's conntrack reconciler finds them
//! (pkg/proxy/conntrack/cleanup.go): a flow's NAT is chosen by its first packet, so a UDP
//! client that keeps its socket keeps reaching the endpoint its flow was made with, even
//! after that endpoint has left the Service, or the address itself if the flow began before
//! the Service's rules were in. TCP needs none of this: a gone endpoint resets the
//! connection, and the client's next one is NATed afresh.
//!
//! After a sync that touched a UDP Service, every UDP flow of the node is compared with what
//! the Services serve: a flow to a Service's address or NodePort whose replies come from no
//! serving endpoint is deleted, so its next packet is NATed by the current rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use kernel::conntrack::Flow;

/// Where a UDP client reaches a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UdpFrontend {
    /// A ClusterIP or external IP, and the Service's port.
    Address(Ipv4Addr, u16),
    /// A NodePort, on any of the node's NodePort addresses.
    NodePort(u16),
}

/// UDP frontends → the addresses of their serving endpoints.
pub type UdpServing = BTreeMap<UdpFrontend, BTreeSet<Ipv4Addr>>;

/// The flows of `flows` that reached a UDP frontend and are answered by no serving endpoint.
pub fn stale_udp_flows(flows: &[Flow], serving: &UdpServing, node_ips: &[Ipv4Addr]) -> Vec<Flow> {
    let udp = libc::IPPROTO_UDP as u8;
    flows
        .iter()
        .filter(|flow| flow.protocol == udp)
        .filter(|flow| {
            let to = flow.original;
            let endpoints = serving
                .get(&UdpFrontend::Address(to.dst, to.dst_port))
                .or_else(|| {
                    node_ips
                        .contains(&to.dst)
                        .then(|| serving.get(&UdpFrontend::NodePort(to.dst_port)))
                        .flatten()
                });
            endpoints.is_some_and(|endpoints| !endpoints.contains(&flow.reply.src))
        })
        .copied()
        .collect()
}

/// Deletes the stale UDP flows of this namespace's conntrack table, through a handle opened
/// at the first clean-up and kept: closing a netfilter netlink socket right after a sync
/// waits for nf_tables' deferred clean-up (see `kernel::nftables`), 10–25 ms.
#[derive(Default)]
pub struct StaleUdpCleaner {
    table: Option<kernel::conntrack::Conntrack>,
}

impl StaleUdpCleaner {
    /// Lists the flows and deletes the stale UDP ones; returns how many.
    pub fn clean(&mut self, serving: &UdpServing, node_ips: &[Ipv4Addr]) -> std::io::Result<usize> {
        let table = match self.table.as_mut() {
            Some(table) => table,
            None => self.table.insert(kernel::conntrack::Conntrack::open()?),
        };
        let result = delete_stale(table, serving, node_ips);
        if result.is_err() {
            self.table = None; // a socket left mid-answer is not reused
        }
        result
    }
}

fn delete_stale(
    table: &mut kernel::conntrack::Conntrack,
    serving: &UdpServing,
    node_ips: &[Ipv4Addr],
) -> std::io::Result<usize> {
    let stale = stale_udp_flows(&table.list_ipv4()?, serving, node_ips);
    for flow in &stale {
        table.delete(flow)?;
    }
    Ok(stale.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::conntrack::Tuple;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
    const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    const NODE: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 11);
    const LIVE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
    const GONE: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 4);

    /// A flow from the client to `to:port`, answered by `answered_by`.
    fn flow(protocol: i32, to: Ipv4Addr, port: u16, answered_by: Ipv4Addr) -> Flow {
        Flow {
            protocol: protocol as u8,
            original: Tuple {
                src: CLIENT,
                dst: to,
                src_port: 40000,
                dst_port: port,
            },
            reply: Tuple {
                src: answered_by,
                dst: CLIENT,
                src_port: 5353,
                dst_port: 40000,
            },
            zone: 0,
        }
    }

    fn serving() -> UdpServing {
        BTreeMap::from([
            (UdpFrontend::Address(DNS, 53), BTreeSet::from([LIVE])),
            (UdpFrontend::NodePort(30053), BTreeSet::from([LIVE])),
        ])
    }

    #[test]
    fn flows_to_a_gone_endpoint_or_never_natted_are_stale() {
        let udp = libc::IPPROTO_UDP;
        let flows = [
            flow(udp, DNS, 53, LIVE),
            flow(udp, DNS, 53, GONE),
            // Began before the Service's rules were in: answered (or not) by the address.
            flow(udp, DNS, 53, DNS),
            flow(udp, NODE, 30053, GONE),
            flow(udp, NODE, 30053, LIVE),
        ];
        assert_eq!(
            stale_udp_flows(&flows, &serving(), &[NODE]),
            vec![flows[1], flows[2], flows[3]]
        );
    }

    #[test]
    fn other_protocols_ports_and_addresses_are_left_alone() {
        let flows = [
            flow(libc::IPPROTO_TCP, DNS, 53, GONE),
            flow(libc::IPPROTO_UDP, DNS, 54, GONE),
            flow(libc::IPPROTO_UDP, Ipv4Addr::new(10, 244, 9, 9), 53, GONE),
            // The NodePort's number, but not on a NodePort address.
            flow(libc::IPPROTO_UDP, Ipv4Addr::new(10, 96, 0, 99), 30053, GONE),
        ];
        assert_eq!(stale_udp_flows(&flows, &serving(), &[NODE]), vec![]);
    }

    #[test]
    fn a_service_without_endpoints_leaves_no_flow_to_it() {
        let serving = UdpServing::from([(UdpFrontend::Address(DNS, 53), BTreeSet::new())]);
        let flows = [flow(libc::IPPROTO_UDP, DNS, 53, LIVE)];
        assert_eq!(stale_udp_flows(&flows, &serving, &[NODE]), flows.to_vec());
    }
}
