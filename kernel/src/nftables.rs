//! What nftables holds in the calling thread's network namespace, read over nfnetlink
//! without going through `nft`:
//!
//! - [`Nftables::generation`] (`NFT_MSG_GETGEN`): a number the kernel increments with every committed
//!   transaction, by any program (`nft`, iptables-nft, a CNI plugin). `nft` itself compares
//!   it to tell whether its cache is still the ruleset; kube-proxy-style checks use it the
//!   same way, to know that nobody has changed the ruleset since they last looked.
//! - [`Nftables::table_names`] (`NFT_MSG_GETCHAIN`/`NFT_MSG_GETSET` dumps): the names of one table's
//!   chains and named sets, as `nft -t list chains` / `list sets` print them, without nft's
//!   cache and JSON (a table of 11,000 chains is read in a few ms).
//!
//! Both go through an [`Nftables`] handle, which a caller keeps open: closing a
//! `NETLINK_NETFILTER` socket makes nf_tables finish destroying what the last transactions
//! removed first (its `NETLINK_URELEASE` handler flushes that work, an RCU grace period), so
//! a close right after a commit waited 10–25 ms.

use std::io;

use crate::nfnetlink::{self, find, Socket, NFGENMSG};

// <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_MAP: u32 = 0x8;

/// The names in one table (see [`Nftables::table_names`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub chains: Vec<String>,
    /// Named sets; maps and the anonymous sets of rules (`{ … }`) are left out, as
    /// `nft list sets` leaves them out.
    pub sets: Vec<String>,
}

impl TableNames {
    /// One dumped chain or set (its attributes, after `nfgenmsg`), if it is `table`'s.
    fn add(&mut self, kind: u16, attributes: &[u8], table: &str) {
        match kind {
            NFT_MSG_NEWCHAIN => {
                if let Some(chain) = named(attributes, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, table) {
                    self.chains.push(chain);
                }
            }
            NFT_MSG_NEWSET => {
                let flags = find(attributes, NFTA_SET_FLAGS)
                    .and_then(|v| v.try_into().ok())
                    .map_or(0, u32::from_be_bytes);
                if flags & (NFT_SET_ANONYMOUS | NFT_SET_MAP) == 0 {
                    if let Some(set) = named(attributes, NFTA_SET_TABLE, NFTA_SET_NAME, table) {
                        self.sets.push(set);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The object's name, if it belongs to `table`. Names are NUL-terminated strings.
fn named(attributes: &[u8], table_kind: u16, name_kind: u16, table: &str) -> Option<String> {
    let string = |kind| {
        let value = find(attributes, kind)?;
        let value = value.strip_suffix(&[0]).unwrap_or(value);
        std::str::from_utf8(value).ok()
    };
    (string(table_kind)? == table).then(|| string(name_kind).map(str::to_string))?
}

/// nf_tables of the network namespace the handle was opened in: one netlink socket for
/// any number of requests, kept open (see the module comment).
pub struct Nftables {
    socket: Socket,
    /// The last request's sequence number: answers are matched to their request by it.
    sequence: u32,
}

impl Nftables {
    pub fn open() -> io::Result<Nftables> {
        Ok(Nftables {
            socket: Socket::open()?,
            sequence: 0,
        })
    }

    /// The ruleset generation now.
    pub fn generation(&mut self) -> io::Result<u32> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let sequence = self.request(NFT_MSG_GETGEN, flags, libc::AF_UNSPEC as u8, &[])?;
        let mut generation = None;
        self.socket.receive(sequence, |kind, payload| {
            if kind == NFT_MSG_NEWGEN {
                generation = generation.or_else(|| parse_generation(payload));
            }
        })?;
        generation.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "nf_tables answered without a generation id",
            )
        })
    }

    /// The chains and named sets of table `table` of address family `family`
    /// (`libc::NFPROTO_*`); empty if there is no such table.
    pub fn table_names(&mut self, family: u8, table: &str) -> io::Result<TableNames> {
        let mut table_attribute = Vec::new();
        let mut name = table.as_bytes().to_vec();
        name.push(0);
        // NFTA_CHAIN_TABLE and NFTA_SET_TABLE are both attribute 1: the same filter for both
        // (the kernel may dump other tables' chains anyway: checked below).
        nfnetlink::attribute(&mut table_attribute, NFTA_CHAIN_TABLE, &name);
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        let mut names = TableNames::default();
        for kind in [NFT_MSG_GETCHAIN, NFT_MSG_GETSET] {
            let sequence = self.request(kind, flags, family, &table_attribute)?;
            let received = self.socket.receive(sequence, |kind, payload| {
                if let Some(attributes) = payload.get(NFGENMSG..) {
                    names.add(kind, attributes, table);
                }
            });
            match received {
                // A dump filtered by a table that does not exist.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(names)
    }

    /// Sends a request under a new sequence number, and returns the number.
    fn request(&mut self, kind: u16, flags: u16, family: u8, attributes: &[u8]) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        self.socket.send(&nfnetlink::message(
            NFNL_SUBSYS_NFTABLES,
            kind,
            flags,
            self.sequence,
            family,
            attributes,
        ))?;
        Ok(self.sequence)
    }
}

/// `NFTA_GEN_ID` of a `NFT_MSG_NEWGEN` payload (after the netlink header).
fn parse_generation(payload: &[u8]) -> Option<u32> {
    let id: [u8; 4] = find(payload.get(NFGENMSG..)?, NFTA_GEN_ID)?
        .try_into()
        .ok()?;
    Some(u32::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_read_from_its_attribute() {
        let mut attributes = Vec::new();
        nfnetlink::attribute(&mut attributes, NFTA_GEN_ID, &7u32.to_be_bytes());
        let bytes = nfnetlink::message(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, 0, 1, 0, &attributes);
        assert_eq!(parse_generation(&bytes[nfnetlink::NLMSG_HEADER..]), Some(7));
        assert_eq!(parse_generation(&[0, 0]), None);
    }

    #[test]
    fn names_are_read_for_their_table_only() {
        let mut attributes = Vec::new();
        nfnetlink::attribute(&mut attributes, NFTA_CHAIN_TABLE, b"kube-proxy\0");
        nfnetlink::attribute(&mut attributes, NFTA_CHAIN_NAME, b"services\0");
        assert_eq!(
            named(&attributes, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, "kube-proxy"),
            Some("services".to_string())
        );
        assert_eq!(
            named(&attributes, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, "nat"),
            None
        );
        assert_eq!(
            named(
                &attributes[..8],
                NFTA_CHAIN_TABLE,
                NFTA_CHAIN_NAME,
                "kube-proxy"
            ),
            None
        );
    }

    /// `check` run in a throwaway namespace (deleted also when it fails), with `nft` there;
    /// None when not root.
    fn in_throwaway_netns<T: Send + 'static>(
        tag: &str,
        check: impl FnOnce(&dyn Fn(&str)) -> io::Result<T> + Send + 'static,
    ) -> Option<T> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let name = format!("knetsim-{tag}-{}", std::process::id());
        crate::netns::add(&name).expect("netns add");
        let result = crate::netns::run_in(&name, move || {
            check(&|commands| {
                let status = std::process::Command::new("nft")
                    .arg(commands)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("nft runs");
                assert!(status.success(), "nft {commands}");
            })
        });
        let _ = crate::netns::delete(&name);
        Some(result.expect("entered").expect("read over netlink"))
    }

    /// Each committed `nft` transaction moves the generation on by one; a listing does not.
    #[test]
    fn each_commit_moves_the_generation_on() {
        let Some((before, after_commit, after_listing)) = in_throwaway_netns("gen", |nft| {
            let mut nftables = Nftables::open()?;
            let before = nftables.generation()?;
            nft("add table ip t; add chain ip t c");
            let after_commit = nftables.generation()?;
            nft("list ruleset");
            Ok((before, after_commit, nftables.generation()?))
        }) else {
            return;
        };
        assert_eq!(after_commit, before.wrapping_add(1));
        assert_eq!(after_listing, after_commit);
    }

    /// Chains and named sets of one table, not its maps, not the anonymous set of a rule,
    /// not another table's.
    #[test]
    fn a_tables_chains_and_named_sets_are_listed() {
        let Some((mut listed, missing)) = in_throwaway_netns("names", |nft| {
            nft("add table ip t; add chain ip t c1; add chain ip t c2; \
                 add set ip t s { type ipv4_addr; }; \
                 add map ip t m { type ipv4_addr : verdict; }; \
                 add rule ip t c1 ip daddr { 10.0.0.1, 10.0.0.2 } accept; \
                 add table ip other; add chain ip other x");
            let mut nftables = Nftables::open()?;
            Ok((
                nftables.table_names(libc::NFPROTO_IPV4 as u8, "t")?,
                nftables.table_names(libc::NFPROTO_IPV4 as u8, "missing")?,
            ))
        }) else {
            return;
        };
        listed.chains.sort();
        assert_eq!(listed.chains, ["c1", "c2"]);
        assert_eq!(listed.sets, ["s"]);
        assert_eq!(missing, TableNames::default());
    }
}
