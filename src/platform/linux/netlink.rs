//! The one netlink layer the Linux platform speaks through: message and
//! attribute framing (writing and reading, pure functions over bytes) and
//! the socket transport (open, send, receive bounded by a deadline). The
//! three protocols built on it each keep their own payloads:
//! sock_diag ([`super::sock_diag`], socket sampling), nf_tables
//! ([`super::nft_codec`], the traffic counters) and rtnetlink
//! ([`super::tunnels`], UDP tunnel devices).
//!
//! Layout (host byte order): a message is `nlmsghdr` (length, type,
//! flags, sequence number, port id: 16 bytes) then its payload, padded to
//! 4 bytes; an attribute is `nlattr` (length, type: 4 bytes) then its
//! value, padded to 4 bytes; a nested attribute's value is attributes.
//! Written by hand rather than with `netlink-packet-core` and friends
//! (FIELD_NOTES, "Crates"): the framing is a page, and each protocol
//! crate would bring its own copy of it.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Bytes that do not follow the netlink framing.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("{0} trailing bytes are too short for a netlink header")]
    ShortHeader(usize),
    #[error("message length {len} is invalid with {available} bytes left")]
    BadLength { len: usize, available: usize },
    #[error("attribute length {len} is invalid with {available} bytes left")]
    BadAttribute { len: usize, available: usize },
    #[error("a {what} has {len} bytes")]
    BadValue { what: &'static str, len: usize },
}

// ---- writing ----------------------------------------------------------------

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Pads `b` to 4 bytes.
pub fn pad(b: &mut Vec<u8>) {
    b.resize(align(b.len()), 0);
}

/// Appends one message: the header, then what `payload` writes, padded;
/// the length is filled in last.
pub fn message(
    b: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = b.len();
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    payload(b);
    let len = (b.len() - start) as u32;
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    pad(b);
}

/// Appends an attribute, padded to 4 bytes.
pub fn attr(b: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    pad(b);
}

/// A NUL-terminated string attribute.
pub fn attr_str(b: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    attr(b, kind, &v);
}

/// A big-endian u32 attribute (nf_tables' integers).
pub fn attr_be32(b: &mut Vec<u8>, kind: u16, v: u32) {
    attr(b, kind, &v.to_be_bytes());
}

/// A big-endian u64 attribute.
pub fn attr_be64(b: &mut Vec<u8>, kind: u16, v: u64) {
    attr(b, kind, &v.to_be_bytes());
}

/// A nested attribute whose content `f` writes.
pub fn nest(b: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = b.len();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    f(b);
    let len = (b.len() - start) as u16;
    b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(b);
}

// ---- reading ----------------------------------------------------------------

/// One message of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of a datagram, in order; the first framing error ends
/// the walk (it is the last item). The last message may lack its padding.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        if b.is_empty() {
            return None;
        }
        if b.len() < NLMSG_HDRLEN {
            self.rest = &[];
            return Some(Err(FrameError::ShortHeader(b.len())));
        }
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            self.rest = &[];
            return Some(Err(FrameError::BadLength {
                len,
                available: b.len(),
            }));
        }
        self.rest = &b[align(len).min(b.len())..];
        Some(Ok(Message {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            payload: &b[NLMSG_HDRLEN..len],
        }))
    }
}

/// The status an `NLMSG_ERROR` (0: an acknowledgement) or `NLMSG_DONE`
/// (newer kernels put a dump's final status there) carries: 0 or a
/// negative errno.
pub fn status(payload: &[u8]) -> Result<i32, FrameError> {
    payload
        .get(0..4)
        .map(|s| i32::from_ne_bytes(s.try_into().unwrap()))
        .ok_or(FrameError::BadValue {
            what: "netlink status",
            len: payload.len(),
        })
}

/// The attributes of `b`: type (flags masked off) and value. A trailing
/// piece shorter than an attribute header is ignored, as the kernel does.
pub fn attributes(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, FrameError> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < 4 || len > b.len() {
            return Err(FrameError::BadAttribute {
                len,
                available: b.len(),
            });
        }
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        out.push((kind, &b[4..len]));
        b = &b[align(len).min(b.len())..];
    }
    Ok(out)
}

/// The first attribute of type `kind`.
pub fn find<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

/// A string attribute's text (up to its NUL).
pub fn string(v: &[u8]) -> String {
    let v = v.split(|&c| c == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(v).into_owned()
}

/// A big-endian u64 attribute's value.
pub fn be64(what: &'static str, v: &[u8]) -> Result<u64, FrameError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        FrameError::BadValue { what, len: v.len() }
    })?))
}

/// A big-endian u32 attribute's value.
pub fn be32(what: &'static str, v: &[u8]) -> Result<u32, FrameError> {
    Ok(u32::from_be_bytes(v.try_into().map_err(|_| {
        FrameError::BadValue { what, len: v.len() }
    })?))
}

// ---- transport --------------------------------------------------------------

/// Opens a netlink socket of `protocol` (`None`: NETLINK_ROUTE). It
/// answers for the network namespace of the thread that opened it, from
/// any thread, for as long as it stays open.
pub fn open(protocol: Option<rustix::net::Protocol>) -> std::io::Result<OwnedFd> {
    rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        protocol,
    )
    .map_err(Into::into)
}

/// Sends `bytes` to the kernel as one datagram.
pub fn send(fd: &OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    rustix::net::sendto(fd, bytes, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))
        .map(|_| ())
        .map_err(Into::into)
}

/// Bounds the next receive on `fd` by `deadline` (its receive timeout is
/// set to what is left). `Err(None)` when the deadline has passed.
pub fn wait_until(fd: &OwnedFd, deadline: Instant) -> Result<(), Option<std::io::Error>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(None);
    }
    // A zero timeout would mean "wait forever"; a microsecond is the least.
    rustix::net::sockopt::set_socket_timeout(
        fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(left.max(Duration::from_micros(1))),
    )
    .map_err(|e| Some(e.into()))
}

/// Why a receive gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("the deadline passed")]
    Deadline,
    #[error("a {size}-byte datagram does not fit the {buffer}-byte buffer")]
    Truncated { size: usize, buffer: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Receives one datagram into `buf`, waiting no later than `deadline`;
/// returns its length. A datagram larger than `buf` is an error, never
/// read cut.
pub fn receive(fd: &OwnedFd, buf: &mut [u8], deadline: Instant) -> Result<usize, RecvError> {
    loop {
        wait_until(fd, deadline).map_err(|e| e.map_or(RecvError::Deadline, RecvError::Io))?;
        match rustix::net::recv(fd, &mut *buf, RecvFlags::TRUNC) {
            Ok((n, full)) if full > n => {
                return Err(RecvError::Truncated {
                    size: full,
                    buffer: buf.len(),
                });
            }
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            // The timeout set above ran out.
            Err(rustix::io::Errno::AGAIN) => {
                if Instant::now() >= deadline {
                    return Err(RecvError::Deadline);
                }
            }
            Err(e) => return Err(RecvError::Io(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_their_content() {
        let mut b = Vec::new();
        attr_str(&mut b, 1, "ab");
        assert_eq!(b, [7, 0, 1, 0, b'a', b'b', 0, 0]);
        let mut b = Vec::new();
        nest(&mut b, 3, |b| attr_be32(b, 2, 5));
        assert_eq!(b, [12, 0, 3, 0x80, 8, 0, 2, 0, 0, 0, 0, 5]);
        let a = attributes(&b).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, 3, "NLA_F_NESTED is masked off");
        assert_eq!(attributes(a[0].1).unwrap(), vec![(2, &[0u8, 0, 0, 5][..])]);
    }

    #[test]
    fn messages_are_framed_and_split_back() {
        let mut b = Vec::new();
        message(&mut b, 20, NLM_F_REQUEST | NLM_F_DUMP, 7, |b| b.push(9));
        message(&mut b, NLMSG_DONE, NLM_F_MULTI, 8, |b| {
            b.extend_from_slice(&(-2i32).to_ne_bytes())
        });
        assert_eq!(b.len(), 20 + 20);
        assert_eq!(
            &b[0..4],
            &17u32.to_ne_bytes(),
            "the length leaves out the padding"
        );
        let m: Vec<_> = messages(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(m[0].kind, 20);
        assert_eq!(m[0].flags, 0x301);
        assert_eq!((m[0].seq, m[0].payload), (7, &[9u8][..]));
        assert_eq!(status(m[1].payload), Ok(-2));
        // The last message may lack its padding.
        assert_eq!(messages(&b[..17]).count(), 1);
    }

    #[test]
    fn malformed_framing_is_an_error_never_a_panic() {
        let m: Vec<_> = messages(&[1, 2, 3]).collect();
        assert_eq!(m, vec![Err(FrameError::ShortHeader(3))]);
        let mut bad = Vec::new();
        message(&mut bad, NLMSG_DONE, 0, 1, |b| b.extend_from_slice(&[0; 4]));
        bad[0] = 200;
        assert!(matches!(
            messages(&bad).next(),
            Some(Err(FrameError::BadLength { .. }))
        ));
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            messages(&bad).next(),
            Some(Err(FrameError::BadLength { len: 8, .. }))
        ));
        assert!(matches!(
            attributes(&[2, 0, 1, 0]),
            Err(FrameError::BadAttribute { .. })
        ));
        assert!(status(&[1, 2]).is_err());
        assert!(be64("x", &[1]).is_err());
        // Every truncation of a good datagram fails cleanly.
        let mut b = Vec::new();
        message(&mut b, 16, 0, 1, |b| {
            nest(b, 18, |b| attr_str(b, 1, "vxlan"))
        });
        for cut in 0..b.len() {
            for m in messages(&b[..cut]).flatten() {
                let _ = attributes(m.payload);
            }
        }
    }

    #[test]
    fn a_receive_is_bounded_by_the_deadline() {
        let fd = open(Some(rustix::net::netlink::SOCK_DIAG)).unwrap();
        let t = Instant::now();
        let r = receive(&fd, &mut [0u8; 64], t + Duration::from_millis(30));
        assert!(matches!(r, Err(RecvError::Deadline)), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert!(matches!(wait_until(&fd, t), Err(None)));
    }
}
