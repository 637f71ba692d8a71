//! Which tunnel device owns a kernel-held UDP port: one RTM_GETLINK dump
//! over rtnetlink, reading each link's name and, for the UDP tunnel kinds
//! whose port the kernel reports in `IFLA_INFO_DATA` (vxlan, geneve,
//! bareudp), its port. Only run when a collection found kernel-held
//! sockets, bounded by the collection's deadline, and cached per network
//! namespace ([`TunnelCache`]). Written by hand because the one crate that decodes these
//! messages (`netlink-packet-route`) would pull a second netlink stack in
//! for three attributes; the decoder is pure and unit-tested on bytes.
//! WireGuard and FOU keep their ports in generic netlink and are not named.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_GENEVE_PORT: u16 = 5;
const IFLA_BAREUDP_PORT: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Lists the UDP tunnel devices of this network namespace by port, waiting
/// no later than `deadline`.
pub fn udp_tunnel_ports(deadline: Instant) -> Result<HashMap<u16, String>, String> {
    let fd = open()?;
    dump_ports(&fd, 1, deadline)
}

/// Opens a NETLINK_ROUTE socket. Like a sock_diag socket, it answers for
/// the network namespace of the thread that opened it, from any thread.
pub fn open() -> Result<OwnedFd, String> {
    rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        // NETLINK_ROUTE is protocol 0, the default.
        None,
    )
    .map_err(|e| format!("opening NETLINK_ROUTE: {e}"))
}

/// Runs one link dump on `fd` (request number `seq`; answers to earlier
/// numbers are skipped), waiting no later than `deadline`.
pub fn dump_ports(
    fd: &OwnedFd,
    seq: u32,
    deadline: Instant,
) -> Result<HashMap<u16, String>, String> {
    const PASSED: &str = "the deadline passed before the link dump ended";
    if Instant::now() >= deadline {
        return Err(PASSED.into());
    }
    rustix::net::sendto(
        fd,
        &build_request(seq),
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )
    .map_err(|e| format!("RTM_GETLINK: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = HashMap::new();
    for _ in 0..10_000 {
        super::netlink::wait_until(fd, deadline).map_err(|e| match e {
            None => PASSED.to_string(),
            Some(e) => format!("setting a receive timeout: {e}"),
        })?;
        let n = match rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(format!("reading the link dump: {e}")),
        };
        if decode(&buf[..n], seq, &mut out)? {
            return Ok(out);
        }
    }
    Err("the link dump did not end".into())
}

/// How long a namespace's tunnel devices are trusted without a new dump.
pub const REFRESH: Duration = Duration::from_secs(60);

/// A kernel-held port with no known device is looked up again after this
/// long (a tunnel made since the last dump is named within it).
pub const MISS_REFRESH: Duration = Duration::from_secs(5);

/// The tunnel devices of each network namespace, kept between collections
/// so that a namespace with kernel-held sockets does not cost a link dump
/// every scrape: a namespace's entry is dumped again after [`REFRESH`], or
/// after [`MISS_REFRESH`] when a kernel-held port has no device in it.
#[derive(Debug, Default)]
pub struct TunnelCache {
    entries: HashMap<u64, (Instant, HashMap<u16, String>)>,
    /// Link dumps run, for tests.
    pub dumps: u64,
}

impl TunnelCache {
    /// The devices of namespace `netns` by port, for the kernel-held ports
    /// `wanted`; `fetch` runs the dump when the entry is missing or stale.
    /// A failed dump leaves the entry as it was and is returned.
    pub fn get(
        &mut self,
        netns: u64,
        wanted: &[u16],
        now: Instant,
        fetch: impl FnOnce() -> Result<HashMap<u16, String>, String>,
    ) -> Result<&HashMap<u16, String>, String> {
        let stale = match self.entries.get(&netns) {
            None => true,
            Some((at, ports)) => {
                let age = now.saturating_duration_since(*at);
                age >= REFRESH
                    || (age >= MISS_REFRESH && wanted.iter().any(|p| !ports.contains_key(p)))
            }
        };
        if stale {
            self.dumps += 1;
            let ports = fetch()?;
            self.entries.insert(netns, (now, ports));
        }
        Ok(&self.entries[&netns].1)
    }

    /// Forgets the namespaces `keep` refuses (gone ones).
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.entries.retain(|ns, _| keep(*ns));
    }
}

/// The RTM_GETLINK dump request: `nlmsghdr` · `ifinfomsg` (all zero).
pub fn build_request(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + IFINFOMSG_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.resize(len, 0);
    b
}

/// Decodes one datagram of the dump into `out` (port → device name).
/// Returns whether the dump ended.
pub fn decode(mut data: &[u8], seq: u32, out: &mut HashMap<u16, String>) -> Result<bool, String> {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
        let msg_seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(format!("bad message length {len}"));
        }
        let body = &data[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = body
                        .get(0..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    if errno != 0 {
                        return Err(format!(
                            "the kernel refused the dump: {}",
                            std::io::Error::from_raw_os_error(-errno)
                        ));
                    }
                    return Ok(true);
                }
                RTM_NEWLINK if body.len() >= IFINFOMSG_LEN => {
                    if let Some((name, port)) = link(&body[IFINFOMSG_LEN..]) {
                        out.insert(port, name);
                    }
                }
                _ => {}
            }
        }
        data = &data[align(len).min(data.len())..];
    }
    Ok(false)
}

/// The name and UDP port of one link, when it is a UDP tunnel.
fn link(attrs: &[u8]) -> Option<(String, u16)> {
    let mut name = None;
    let mut port = None;
    for (kind, value) in attributes(attrs) {
        match kind {
            IFLA_IFNAME => {
                let v = value.split(|&b| b == 0).next().unwrap_or(value);
                name = Some(String::from_utf8_lossy(v).into_owned());
            }
            IFLA_LINKINFO => port = tunnel_port(value),
            _ => {}
        }
    }
    Some((name?, port?))
}

fn tunnel_port(linkinfo: &[u8]) -> Option<u16> {
    let mut kind: &[u8] = b"";
    let mut data: &[u8] = b"";
    for (t, v) in attributes(linkinfo) {
        match t {
            IFLA_INFO_KIND => kind = v.split(|&b| b == 0).next().unwrap_or(v),
            IFLA_INFO_DATA => data = v,
            _ => {}
        }
    }
    let wanted = match kind {
        b"vxlan" => IFLA_VXLAN_PORT,
        b"geneve" => IFLA_GENEVE_PORT,
        b"bareudp" => IFLA_BAREUDP_PORT,
        _ => return None,
    };
    attributes(data)
        .find(|(t, v)| *t == wanted && v.len() >= 2)
        .map(|(_, v)| u16::from_be_bytes([v[0], v[1]]))
}

/// Iterates `rtattr`s (length, type, value, padded to 4 bytes); stops at
/// the first malformed one.
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((kind, value))
    })
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
        b.resize(align(b.len()), 0);
        b
    }

    fn newlink(seq: u32, name: &str, kind: &str, data: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend(attr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
        let mut info = attr(IFLA_INFO_KIND, format!("{kind}\0").as_bytes());
        info.extend(attr(IFLA_INFO_DATA | 0x8000, data));
        body.extend(attr(IFLA_LINKINFO | 0x8000, &info));
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn the_cache_dumps_once_per_refresh_and_again_for_an_unknown_port() {
        let mut c = TunnelCache::default();
        let t0 = Instant::now();
        let vx = || Ok(HashMap::from([(4789u16, "vx0".to_string())]));
        assert_eq!(c.get(7, &[4789], t0, vx).unwrap()[&4789], "vx0");
        // Every scrape for a minute: no further dump.
        for s in 1..60 {
            let now = t0 + Duration::from_secs(s);
            c.get(7, &[4789], now, || panic!("dumped again at {s} s"))
                .unwrap();
        }
        assert_eq!(c.dumps, 1);
        assert!(c.get(7, &[4789], t0 + REFRESH, vx).is_ok());
        assert_eq!(c.dumps, 2, "refreshed after {REFRESH:?}");
        // A port with no device: looked up again, but not before MISS_REFRESH.
        let t1 = t0 + REFRESH;
        c.get(7, &[6081], t1 + Duration::from_secs(1), || {
            panic!("too soon")
        })
        .unwrap();
        let both = || {
            Ok(HashMap::from([
                (4789u16, "vx0".into()),
                (6081, "gn0".into()),
            ]))
        };
        let got = c.get(7, &[6081], t1 + MISS_REFRESH, both).unwrap();
        assert_eq!(got[&6081], "gn0");
        assert_eq!(c.dumps, 3);
        // Namespaces are separate; a failed dump is returned and not cached.
        assert!(c.get(8, &[1], t1, || Err("refused".into())).is_err());
        assert!(c.get(8, &[1], t1, || Ok(HashMap::new())).is_ok());
        c.retain(|ns| ns != 8);
        assert_eq!(c.entries.len(), 1);
    }

    #[test]
    fn the_link_dump_honours_the_deadline() {
        let t = Instant::now();
        let e = udp_tunnel_ports(t).unwrap_err();
        assert!(e.contains("deadline"), "{e}");
        assert!(t.elapsed() < Duration::from_millis(50));
        // With time left it answers (this namespace has at least `lo`).
        udp_tunnel_ports(Instant::now() + Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn request_layout() {
        let r = build_request(7);
        assert_eq!(r.len(), 32);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), RTM_GETLINK);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
    }

    #[test]
    fn decodes_vxlan_and_geneve_ports() {
        let mut buf = newlink(
            1,
            "vx0",
            "vxlan",
            &attr(IFLA_VXLAN_PORT, &3224u16.to_be_bytes()),
        );
        buf.extend(newlink(
            1,
            "gn0",
            "geneve",
            &attr(IFLA_GENEVE_PORT, &6081u16.to_be_bytes()),
        ));
        buf.extend(newlink(1, "veth0", "veth", &[]));
        buf.extend(newlink(
            9,
            "other-seq",
            "vxlan",
            &attr(IFLA_VXLAN_PORT, &1u16.to_be_bytes()),
        ));
        let mut out = HashMap::new();
        assert_eq!(decode(&buf, 1, &mut out), Ok(false));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[&3224], "vx0");
        assert_eq!(out[&6081], "gn0");
        let mut done = Vec::new();
        done.extend_from_slice(&20u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0, 0]);
        done.extend_from_slice(&1u32.to_ne_bytes());
        done.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&done, 1, &mut out), Ok(true));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut out = HashMap::new();
        let mut buf = newlink(1, "vx0", "vxlan", &attr(IFLA_VXLAN_PORT, &[0x0c]));
        assert_eq!(decode(&buf, 1, &mut out), Ok(false));
        assert!(out.is_empty(), "a one-byte port is ignored");
        buf[0] = 0xff;
        assert!(decode(&buf, 1, &mut out).is_err());
        for cut in 0..buf.len() {
            let _ = decode(&buf[..cut], 1, &mut out);
        }
    }
}
