//! The nftables ruleset generation of the calling thread's network namespace
//! (`NFT_MSG_GETGEN`): a number the kernel increments with every committed transaction, by
//! any program (`nft`, iptables-nft, a CNI plugin). `nft` itself compares it to tell whether
//! its cache is still the ruleset; kube-proxy-style checks use it the same way, to know that
//! nobody has changed the ruleset since they last looked.

use std::io;

use crate::nfnetlink::{self, find, Socket, NFGENMSG};

// <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;

/// The ruleset generation now.
pub fn generation() -> io::Result<u32> {
    let socket = Socket::open()?;
    let sequence = 1;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    socket.send(&nfnetlink::message(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETGEN,
        flags,
        sequence,
        libc::AF_UNSPEC as u8,
        &[],
    ))?;
    let mut generation = None;
    socket.receive(sequence, |kind, payload| {
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

    /// In a throwaway namespace: each committed `nft` transaction moves the generation on by
    /// one; a listing does not.
    #[test]
    fn each_commit_moves_the_generation_on() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let name = format!("knetsim-gen-{}", std::process::id());
        crate::netns::add(&name).expect("netns add");
        let result = crate::netns::run_in(&name, || -> io::Result<(u32, u32, u32)> {
            let nft = |commands: &str| -> io::Result<()> {
                let status = std::process::Command::new("nft")
                    .arg(commands)
                    .stdout(std::process::Stdio::null())
                    .status()?;
                assert!(status.success(), "nft {commands}");
                Ok(())
            };
            let before = generation()?;
            nft("add table ip t; add chain ip t c")?;
            let after_commit = generation()?;
            nft("list ruleset")?;
            Ok((before, after_commit, generation()?))
        });
        let _ = crate::netns::delete(&name);
        let (before, after_commit, after_listing) =
            result.expect("entered").expect("generations read");
        assert_eq!(after_commit, before.wrapping_add(1));
        assert_eq!(after_listing, after_commit);
    }
}
