//! nfnetlink (`NETLINK_NETFILTER`) plumbing shared by [`crate::conntrack`] and
//! [`crate::nftables`]: building a request (netlink header, `nfgenmsg`, attributes), reading
//! attributes back, and one socket that sends requests and collects their answers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) const NLMSG_HEADER: usize = 16;
/// `struct nfgenmsg`: family, version, resource id.
pub(crate) const NFGENMSG: usize = 4;
const NFNETLINK_V0: u8 = 0;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(3 << 14);

/// A request to `subsystem` (`NFNL_SUBSYS_*`) of message type `kind`, for address `family`.
pub(crate) fn message(
    subsystem: u16,
    kind: u16,
    flags: u16,
    sequence: u32,
    family: u8,
    attributes: &[u8],
) -> Vec<u8> {
    let length = NLMSG_HEADER + NFGENMSG + attributes.len();
    let mut bytes = Vec::with_capacity(length);
    bytes.extend_from_slice(&(length as u32).to_ne_bytes());
    bytes.extend_from_slice(&((subsystem << 8) | kind).to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
    bytes.extend_from_slice(attributes);
    bytes
}

pub(crate) fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

pub(crate) fn nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fill(&mut inner);
    attribute(out, kind | NLA_F_NESTED, &inner);
}

/// The attributes of `bytes` as (type without flags, value); stops at a malformed one.
pub(crate) fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let length = usize::from(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        let value = bytes.get(4..length)?;
        bytes = bytes.get(length.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, value))
    })
}

pub(crate) fn find(bytes: &[u8], wanted: u16) -> Option<&[u8]> {
    attributes(bytes).find_map(|(kind, value)| (kind == wanted).then_some(value))
}

/// A `NETLINK_NETFILTER` socket in the calling thread's network namespace.
pub(crate) struct Socket(OwnedFd);

impl Socket {
    pub(crate) fn open() -> io::Result<Socket> {
        // SAFETY: plain syscalls; the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// To the kernel (an unbound netlink socket's destination).
    pub(crate) fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: `message` is valid for its length.
        let sent = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the answers to request `sequence` until the dump's end or the acknowledgement,
    /// handing each data message's type (without the subsystem) and payload to `on_message`.
    /// A netlink error is returned as the errno it carries.
    pub(crate) fn receive(
        &self,
        sequence: u32,
        mut on_message: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buffer` is valid for writes of its length.
            let received = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if received < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buffer[..received as usize];
            while rest.len() >= NLMSG_HEADER {
                let length = u32::from_ne_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap_or_default());
                let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
                if length < NLMSG_HEADER || length > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a truncated netlink message from nfnetlink",
                    ));
                }
                let payload = &rest[NLMSG_HEADER..length];
                rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
                if seq != sequence {
                    continue;
                }
                match i32::from(kind) {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(-libc::EIO, i32::from_ne_bytes);
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    _ => on_message(kind & 0xff, payload),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_subsystem_type_family_and_length() {
        let bytes = message(1, 2, 5, 9, libc::AF_INET as u8, &[1, 2, 3, 4]);
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 24);
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x0102);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        assert_eq!(bytes[16], libc::AF_INET as u8);
    }

    #[test]
    fn nested_attributes_read_back() {
        let mut bytes = Vec::new();
        nested(&mut bytes, 3, |inner| attribute(inner, 1, &[7, 7, 7]));
        attribute(&mut bytes, 4, &42u32.to_be_bytes());
        let inner = find(&bytes, 3).expect("the nested attribute, without its flag");
        assert_eq!(find(inner, 1), Some(&[7u8, 7, 7][..]));
        assert_eq!(find(&bytes, 4), Some(&42u32.to_be_bytes()[..]));
        assert_eq!(find(&bytes[..6], 4), None);
    }
}
