//! Which tunnel device owns a kernel-held UDP port: one RTM_GETLINK dump
//! over rtnetlink, reading each link's name and, for the UDP tunnel kinds
//! whose port the kernel reports in `IFLA_INFO_DATA` (vxlan, geneve,
//! bareudp), its port. Only called when a collection found kernel-held
//! sockets. Written by hand because the one crate that decodes these
//! messages (`netlink-packet-route`) would pull a second netlink stack in
//! for three attributes; the decoder is pure and unit-tested on bytes.
//! WireGuard and FOU keep their ports in generic netlink and are not named.

use std::collections::HashMap;

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

/// Lists the UDP tunnel devices of this network namespace by port.
pub fn udp_tunnel_ports() -> Result<HashMap<u16, String>, String> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        // NETLINK_ROUTE is protocol 0, the default.
        None,
    )
    .map_err(|e| format!("opening NETLINK_ROUTE: {e}"))?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(std::time::Duration::from_secs(2)),
    )
    .map_err(|e| format!("setting a receive timeout: {e}"))?;
    let seq = 1;
    rustix::net::sendto(
        &fd,
        &build_request(seq),
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )
    .map_err(|e| format!("RTM_GETLINK: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = HashMap::new();
    for _ in 0..10_000 {
        let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| format!("reading the link dump: {e}"))?;
        if decode(&buf[..n], seq, &mut out)? {
            return Ok(out);
        }
    }
    Err("the link dump did not end".into())
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
