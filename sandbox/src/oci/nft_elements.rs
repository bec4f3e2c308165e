//! Adding and removing elements of an nftables set over netlink, as `nft add
//! element` does, without its start-up: the `nft` command takes about 20 ms per
//! call on this machine (it loads its caches first), which a cold start with no
//! prepared sandbox would pay. Here it is one batch of one message and its
//! acknowledgement, a few microseconds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NFNL_SUBSYS_NFTABLES`: the nf_tables subsystem of nfnetlink.
const SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWSETELEM` and `NFT_MSG_DELSETELEM`.
const MSG_NEWSETELEM: u16 = 12;
const MSG_DELSETELEM: u16 = 14;
/// `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END`.
const MSG_BATCH_BEGIN: u16 = 0x10;
const MSG_BATCH_END: u16 = 0x11;
/// `NFPROTO_BRIDGE`.
pub(crate) const FAMILY_BRIDGE: u8 = 7;
/// `NFTA_SET_ELEM_LIST_*`, `NFTA_LIST_ELEM`, `NFTA_SET_ELEM_KEY`, `NFTA_DATA_VALUE`.
const LIST_TABLE: u16 = 1;
const LIST_SET: u16 = 2;
const LIST_ELEMENTS: u16 = 3;
const LIST_ELEM: u16 = 1;
const ELEM_KEY: u16 = 1;
const DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
/// Interface names as nftables keys: `IFNAMSIZ` bytes, zero padded.
const IFNAMSIZ: usize = 16;

/// Whether an element is added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Add,
    Delete,
}

/// A set key built field by field, each field padded to 4 bytes as nftables lays
/// out concatenations in its 32-bit registers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Key(Vec<u8>);

impl Key {
    pub(crate) fn ifname(mut self, name: &str) -> Self {
        let mut field = [0u8; IFNAMSIZ];
        let bytes = name.as_bytes();
        field[..bytes.len().min(IFNAMSIZ - 1)]
            .copy_from_slice(&bytes[..bytes.len().min(IFNAMSIZ - 1)]);
        self.push(&field);
        self
    }

    pub(crate) fn bytes(mut self, field: &[u8]) -> Self {
        self.push(field);
        self
    }

    fn push(&mut self, field: &[u8]) {
        self.0.extend_from_slice(field);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }
}

/// Applies `changes` (set name and key) to `table` of `family` as one batch: all
/// or none. Adding an element that is there, or removing one that is not, fails.
pub(crate) fn apply(
    family: u8,
    table: &str,
    change: Change,
    elements: &[(&str, Key)],
) -> io::Result<()> {
    let socket = NetfilterSocket::open()?;
    let mut batch = Vec::new();
    let mut seq = 1;
    message(
        &mut batch,
        MSG_BATCH_BEGIN,
        0,
        seq,
        0,
        SUBSYS_NFTABLES,
        |_| {},
    );
    let (kind, flags) = match change {
        // As `nft add element`: an element already there is no error.
        Change::Add => (MSG_NEWSETELEM, libc::NLM_F_CREATE),
        Change::Delete => (MSG_DELSETELEM, 0),
    };
    let kind = (SUBSYS_NFTABLES << 8) | kind;
    let first = seq + 1;
    for (set, key) in elements {
        seq += 1;
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16;
        message(&mut batch, kind, flags, seq, family, 0, |body| {
            attribute(body, LIST_TABLE, &c_string(table));
            attribute(body, LIST_SET, &c_string(set));
            nested(body, LIST_ELEMENTS, |list| {
                nested(list, LIST_ELEM, |element| {
                    nested(element, ELEM_KEY, |data| {
                        attribute(data, DATA_VALUE, &key.0)
                    });
                });
            });
        });
    }
    seq += 1;
    message(
        &mut batch,
        MSG_BATCH_END,
        0,
        seq,
        0,
        SUBSYS_NFTABLES,
        |_| {},
    );
    socket.send(&batch)?;
    socket.acknowledged(first..seq)
}

/// A netlink socket of the netfilter family.
struct NetfilterSocket(OwnedFd);

impl NetfilterSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
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
        // SAFETY: fd is a fresh descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length; the kernel is the peer (an
        // unconnected netlink socket sends to pid 0).
        let sent = unsafe { libc::send(self.0.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the acknowledgement of every message numbered in `seqs`; the
    /// first error the kernel reports fails the whole (it undid the batch).
    fn acknowledged(&self, seqs: std::ops::Range<u32>) -> io::Result<()> {
        let mut waiting: Vec<u32> = seqs.collect();
        let mut buffer = vec![0u8; 16 * 1024];
        while !waiting.is_empty() {
            // SAFETY: the buffer is valid for its length.
            let read = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buffer[..read as usize];
            while rest.len() >= 16 {
                let length = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if length < 16 || length > rest.len() {
                    break;
                }
                if kind == libc::NLMSG_ERROR as u16 && length >= 20 {
                    let error = i32::from_ne_bytes(rest[16..20].try_into().unwrap());
                    if error != 0 {
                        return Err(io::Error::from_raw_os_error(-error));
                    }
                    waiting.retain(|s| *s != seq);
                }
                rest = &rest[length.next_multiple_of(4).min(rest.len())..];
            }
        }
        Ok(())
    }
}

/// Appends one netlink message with an nfgenmsg header and the body `fill` writes.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    let flags = if flags == 0 {
        libc::NLM_F_REQUEST as u16
    } else {
        flags
    };
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, resource id (big-endian).
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    fill(out);
    let length = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&length.to_ne_bytes());
}

fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    fill(out);
    let length = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&length.to_ne_bytes());
}

fn c_string(s: &str) -> Vec<u8> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_keys_pad_each_field_to_four_bytes() {
        let key = Key::default()
            .ifname("ve0123")
            .bytes(&[2, 0x42, 10, 88, 0, 5])
            .bytes(&[10, 88, 0, 5]);
        assert_eq!(key.0.len(), 16 + 8 + 4);
        assert_eq!(&key.0[..6], b"ve0123");
        assert_eq!(&key.0[16..24], &[2, 0x42, 10, 88, 0, 5, 0, 0]);
        assert_eq!(&key.0[24..], &[10, 88, 0, 5]);
    }

    #[test]
    fn a_message_states_its_length_and_nests_its_attributes() {
        let mut out = Vec::new();
        message(&mut out, 0x0a0c, 0, 7, FAMILY_BRIDGE, 0, |body| {
            attribute(body, LIST_TABLE, &c_string("t"));
            nested(body, LIST_ELEMENTS, |list| {
                attribute(list, 1, &[1, 2, 3, 4])
            });
        });
        assert_eq!(
            u32::from_ne_bytes(out[0..4].try_into().unwrap()) as usize,
            out.len()
        );
        assert_eq!(out.len() % 4, 0);
        // Header (16) + nfgenmsg (4) + table "t\0" (8) + nested list (4 + 8).
        assert_eq!(out.len(), 16 + 4 + 8 + 12);
        assert_eq!(out[16], FAMILY_BRIDGE);
        assert_eq!(
            u16::from_ne_bytes(out[30..32].try_into().unwrap()),
            LIST_ELEMENTS | NLA_F_NESTED
        );
    }
}
