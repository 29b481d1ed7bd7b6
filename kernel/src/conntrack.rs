//! The connection-tracking table of the calling thread's network namespace, over ctnetlink
//! (`NETLINK_NETFILTER`), as `conntrack -L` and `conntrack -D` read and change it: a
//! [`Conntrack`] handle lists the IPv4 flows and deletes them by their original tuple.
//!
//! kube-proxy needs this for UDP: a flow's NAT is decided by its first packet, so a UDP
//! client that keeps its socket keeps sending to the endpoint (or the un-NATed address)
//! its flow was made with until the entry is deleted.

use std::io;
use std::net::Ipv4Addr;

use crate::nfnetlink::{self, attribute, find, nested, Socket, NFGENMSG};

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A conntrack entry: the original direction (as the client sent it) and the reply direction
/// (after NAT: a DNATed flow's reply comes from the endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IP protocol number (`libc::IPPROTO_UDP`, …).
    pub protocol: u8,
    pub original: Tuple,
    pub reply: Tuple,
    pub zone: u16,
}

// <linux/netfilter/nfnetlink.h>, <linux/netfilter/nfnetlink_conntrack.h>.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// The conntrack table of the network namespace the handle was opened in: one netlink
/// socket for a listing and any number of deletes.
pub struct Conntrack {
    socket: Socket,
    /// The last request's sequence number: answers are matched to their request by it.
    sequence: u32,
}

impl Conntrack {
    pub fn open() -> io::Result<Conntrack> {
        Ok(Conntrack {
            socket: Socket::open()?,
            sequence: 0,
        })
    }

    /// Every IPv4 flow.
    pub fn list_ipv4(&mut self) -> io::Result<Vec<Flow>> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        let sequence = self.request(IPCTNL_MSG_CT_GET, flags, &[])?;
        let mut flows = Vec::new();
        self.socket.receive(sequence, |_, payload| {
            if let Some(flow) = parse_flow(payload) {
                flows.push(flow);
            }
        })?;
        Ok(flows)
    }

    /// Delete `flow` (found by its original tuple and zone). A flow already gone is not an
    /// error.
    pub fn delete(&mut self, flow: &Flow) -> io::Result<()> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let mut attributes = Vec::new();
        nested(&mut attributes, CTA_TUPLE_ORIG, |tuple| {
            write_tuple(tuple, flow.protocol, &flow.original)
        });
        if flow.zone != 0 {
            attribute(&mut attributes, CTA_ZONE, &flow.zone.to_be_bytes());
        }
        let sequence = self.request(IPCTNL_MSG_CT_DELETE, flags, &attributes)?;
        match self.socket.receive(sequence, |_, _| {}) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// Sends a request under a new sequence number, and returns the number.
    fn request(&mut self, kind: u16, flags: u16, attributes: &[u8]) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        self.socket
            .send(&message(kind, flags, self.sequence, attributes))?;
        Ok(self.sequence)
    }
}

/// A ctnetlink request for IPv4 flows.
fn message(kind: u16, flags: u16, sequence: u32, attributes: &[u8]) -> Vec<u8> {
    nfnetlink::message(
        NFNL_SUBSYS_CTNETLINK,
        kind,
        flags,
        sequence,
        libc::AF_INET as u8,
        attributes,
    )
}

fn write_tuple(out: &mut Vec<u8>, protocol: u8, tuple: &Tuple) {
    nested(out, CTA_TUPLE_IP, |ip| {
        attribute(ip, CTA_IP_V4_SRC, &tuple.src.octets());
        attribute(ip, CTA_IP_V4_DST, &tuple.dst.octets());
    });
    nested(out, CTA_TUPLE_PROTO, |proto| {
        attribute(proto, CTA_PROTO_NUM, &[protocol]);
        attribute(proto, CTA_PROTO_SRC_PORT, &tuple.src_port.to_be_bytes());
        attribute(proto, CTA_PROTO_DST_PORT, &tuple.dst_port.to_be_bytes());
    });
}

fn parse_tuple(bytes: &[u8]) -> Option<(u8, Tuple)> {
    let ip = find(bytes, CTA_TUPLE_IP)?;
    let proto = find(bytes, CTA_TUPLE_PROTO)?;
    let address = |kind| -> Option<Ipv4Addr> {
        let octets: [u8; 4] = find(ip, kind)?.try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    };
    // ICMP and other port-less protocols have no ports: 0.
    let port = |kind| {
        find(proto, kind)
            .and_then(|v| v.try_into().ok())
            .map_or(0, u16::from_be_bytes)
    };
    Some((
        *find(proto, CTA_PROTO_NUM)?.first()?,
        Tuple {
            src: address(CTA_IP_V4_SRC)?,
            dst: address(CTA_IP_V4_DST)?,
            src_port: port(CTA_PROTO_SRC_PORT),
            dst_port: port(CTA_PROTO_DST_PORT),
        },
    ))
}

/// One dumped entry (the payload after the netlink header); None if it is not IPv4.
fn parse_flow(payload: &[u8]) -> Option<Flow> {
    let attributes = payload.get(NFGENMSG..)?;
    let (protocol, original) = parse_tuple(find(attributes, CTA_TUPLE_ORIG)?)?;
    let (_, reply) = parse_tuple(find(attributes, CTA_TUPLE_REPLY)?)?;
    let zone = find(attributes, CTA_ZONE)
        .and_then(|v| v.try_into().ok())
        .map_or(0, u16::from_be_bytes);
    Some(Flow {
        protocol,
        original,
        reply,
        zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfnetlink::NLMSG_HEADER;

    fn udp_flow() -> Flow {
        Flow {
            protocol: libc::IPPROTO_UDP as u8,
            original: Tuple {
                src: Ipv4Addr::new(10, 244, 1, 2),
                dst: Ipv4Addr::new(10, 96, 0, 10),
                src_port: 40000,
                dst_port: 53,
            },
            reply: Tuple {
                src: Ipv4Addr::new(10, 244, 2, 3),
                dst: Ipv4Addr::new(10, 244, 1, 2),
                src_port: 53,
                dst_port: 40000,
            },
            zone: 7,
        }
    }

    /// A dump answer is built as the kernel builds one: both tuples and the zone.
    fn dumped(flow: &Flow) -> Vec<u8> {
        let mut attributes = Vec::new();
        nested(&mut attributes, CTA_TUPLE_ORIG, |t| {
            write_tuple(t, flow.protocol, &flow.original)
        });
        nested(&mut attributes, CTA_TUPLE_REPLY, |t| {
            write_tuple(t, flow.protocol, &flow.reply)
        });
        attribute(&mut attributes, CTA_ZONE, &flow.zone.to_be_bytes());
        message(IPCTNL_MSG_CT_GET, 0, 1, &attributes)
    }

    #[test]
    fn a_dumped_entry_parses_back_into_its_flow() {
        let flow = udp_flow();
        let bytes = dumped(&flow);
        assert_eq!(parse_flow(&bytes[NLMSG_HEADER..]), Some(flow));
    }

    #[test]
    fn requests_carry_ctnetlinks_type() {
        let bytes = message(IPCTNL_MSG_CT_DELETE, 5, 9, &[1, 2, 3, 4]);
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x0102);
        assert_eq!(bytes[16], libc::AF_INET as u8);
    }

    #[test]
    fn a_malformed_entry_is_skipped_not_a_panic() {
        let bytes = dumped(&udp_flow());
        for cut in 0..bytes.len() {
            let _ = parse_flow(&bytes[NLMSG_HEADER.min(cut)..cut]);
        }
        assert_eq!(parse_flow(&[0, 0, 0, 0, 255, 255]), None);
    }

    /// In a throwaway namespace: a UDP datagram over loopback makes an entry, which is
    /// listed, deleted, and gone.
    #[test]
    fn a_real_flow_is_listed_and_deleted() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let name = format!("knetsim-ct-{}", std::process::id());
        crate::netns::add(&name).expect("netns add");
        crate::ip::batch(Some(&name), &["link set lo up".into()]).expect("lo up");
        let result = crate::netns::run_in(&name, || -> io::Result<()> {
            // Conntrack tracks a namespace's packets once a hook there needs it.
            let nft = std::process::Command::new("nft")
                .args(["add table ip t; add chain ip t c { type filter hook output priority 0; ct state new accept; }"])
                .status()?;
            assert!(nft.success());
            let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
            client.send_to(b"ping", server.local_addr()?)?;
            let port = server.local_addr()?.port();
            let ours = |flows: Vec<Flow>| {
                flows
                    .into_iter()
                    .find(|f| f.protocol == libc::IPPROTO_UDP as u8 && f.original.dst_port == port)
            };
            let mut table = Conntrack::open()?;
            let flow = ours(table.list_ipv4()?).expect("the datagram's flow is listed");
            assert_eq!(flow.original.src_port, client.local_addr()?.port());
            assert_eq!(flow.reply.src_port, port);
            table.delete(&flow)?;
            assert_eq!(ours(table.list_ipv4()?), None);
            table.delete(&flow)
        });
        let _ = crate::netns::delete(&name);
        result.expect("entered").expect("listed and deleted");
    }
}
