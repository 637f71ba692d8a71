//! Which tunnel device owns a kernel-held UDP port: one RTM_GETLINK dump
//! over rtnetlink, reading each link's name and, for the UDP tunnel kinds
//! whose port the kernel reports in `IFLA_INFO_DATA` (vxlan, geneve,
//! bareudp), its port. Only run when a collection found kernel-held
//! sockets, bounded by the collection's deadline, and cached per network
//! namespace ([`TunnelCache`]). Written by hand because the one crate that decodes these
//! messages (`netlink-packet-route`) would pull a second netlink stack in
//! for three attributes; the decoder is pure and unit-tested on bytes, and
//! the framing and transport are the shared [`super::netlink`] layer.
//! WireGuard and FOU keep their ports in generic netlink and are not named.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::netlink::{self as nl, RecvError};

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

/// Lists the UDP tunnel devices of this network namespace by port, waiting
/// no later than `deadline`.
pub fn udp_tunnel_ports(deadline: Instant) -> Result<HashMap<u16, String>, String> {
    let fd = open()?;
    dump_ports(&fd, 1, deadline)
}

/// Opens a NETLINK_ROUTE socket. Like a sock_diag socket, it answers for
/// the network namespace of the thread that opened it, from any thread.
pub fn open() -> Result<OwnedFd, String> {
    // NETLINK_ROUTE is protocol 0, the default.
    nl::open(None).map_err(|e| format!("opening NETLINK_ROUTE: {e}"))
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
    nl::send(fd, &build_request(seq)).map_err(|e| format!("RTM_GETLINK: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = HashMap::new();
    for _ in 0..10_000 {
        let n = nl::receive(fd, &mut buf, deadline).map_err(|e| match e {
            RecvError::Deadline => PASSED.to_string(),
            e => format!("reading the link dump: {e}"),
        })?;
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
    let mut b = Vec::with_capacity(nl::NLMSG_HDRLEN + IFINFOMSG_LEN);
    nl::message(
        &mut b,
        RTM_GETLINK,
        nl::NLM_F_REQUEST | nl::NLM_F_DUMP,
        seq,
        |b| b.extend_from_slice(&[0; IFINFOMSG_LEN]),
    );
    b
}

/// Decodes one datagram of the dump into `out` (port → device name).
/// Returns whether the dump ended.
pub fn decode(data: &[u8], seq: u32, out: &mut HashMap<u16, String>) -> Result<bool, String> {
    for m in nl::messages(data) {
        let m = m.map_err(|e| e.to_string())?;
        if m.seq != seq {
            continue;
        }
        match m.kind {
            nl::NLMSG_DONE => return Ok(true),
            nl::NLMSG_ERROR => {
                let errno = nl::status(m.payload).map_err(|e| e.to_string())?;
                if errno != 0 {
                    return Err(format!(
                        "the kernel refused the dump: {}",
                        std::io::Error::from_raw_os_error(-errno)
                    ));
                }
                return Ok(true);
            }
            RTM_NEWLINK if m.payload.len() >= IFINFOMSG_LEN => {
                if let Some((name, port)) = link(&m.payload[IFINFOMSG_LEN..]) {
                    out.insert(port, name);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The name and UDP port of one link, when it is a UDP tunnel; a link
/// with a malformed attribute is none.
fn link(attrs: &[u8]) -> Option<(String, u16)> {
    let a = nl::attributes(attrs).ok()?;
    let name = nl::string(nl::find(&a, IFLA_IFNAME)?);
    let port = tunnel_port(nl::find(&a, IFLA_LINKINFO)?)?;
    Some((name, port))
}

fn tunnel_port(linkinfo: &[u8]) -> Option<u16> {
    let info = nl::attributes(linkinfo).ok()?;
    let wanted = match nl::string(nl::find(&info, IFLA_INFO_KIND)?).as_str() {
        "vxlan" => IFLA_VXLAN_PORT,
        "geneve" => IFLA_GENEVE_PORT,
        "bareudp" => IFLA_BAREUDP_PORT,
        _ => return None,
    };
    let data = nl::attributes(nl::find(&info, IFLA_INFO_DATA)?).ok()?;
    let v = nl::find(&data, wanted)?;
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        nl::attr(&mut b, kind, value);
        b
    }

    fn newlink(seq: u32, name: &str, kind: &str, data: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend(attr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
        let mut info = attr(IFLA_INFO_KIND, format!("{kind}\0").as_bytes());
        info.extend(attr(IFLA_INFO_DATA | 0x8000, data));
        body.extend(attr(IFLA_LINKINFO | 0x8000, &info));
        let mut m = Vec::new();
        nl::message(&mut m, RTM_NEWLINK, nl::NLM_F_MULTI, seq, |m| {
            m.extend(body)
        });
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
        nl::message(&mut done, nl::NLMSG_DONE, 0, 1, |b| {
            b.extend_from_slice(&[0; 4])
        });
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
