//! Decoders for the per-namespace files under `<procfs>/<pid>/net`: the
//! socket tables `tcp`, `tcp6`, `udp` and `udp6` (the fallback when the
//! exporter cannot enter a namespace; reading them needs no capability
//! beyond what attribution has, but the kernel formats every socket of the
//! namespace, with no port filter), and `sockstat`/`sockstat6` (a cheap
//! count of the sockets a namespace holds, read before any dump so that
//! empty namespaces cost nothing). Pure functions over bytes.
//!
//! Table layout (`tcp4_seq_show`, `udp4_seq_printf` and their IPv6
//! twins): a header line, then one line per socket whose first ten fields
//! are `sl`, `local_address` (`ADDR:PORT`), `rem_address`, `st`,
//! `tx_queue:rx_queue`, `tr:tm->when`, `retrnsmt`, `uid`, `timeout`,
//! `inode`. Ports are hexadecimal in host order. Addresses are the bytes of
//! the kernel's `__be32` words, each printed as a native-endian `%08X`: an
//! IPv4 address is one word, an IPv6 address four.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::platform::Socket;
use crate::ranges::{PortSet, Protocol};

/// A table line that does not follow the kernel's layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct ProcNetError {
    /// 1-based, the header being line 1.
    pub line: usize,
    pub reason: &'static str,
}

/// Decodes one socket table (`tcp`, `tcp6`, `udp` or `udp6`), appending
/// the sockets whose local port is in `ports` to `out`. `v6` says which
/// address width the file uses.
pub fn decode_table(
    text: &[u8],
    protocol: Protocol,
    v6: bool,
    ports: &PortSet,
    out: &mut Vec<Socket>,
) -> Result<(), ProcNetError> {
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i == 0 || line.iter().all(u8::is_ascii_whitespace) {
            continue; // the header, or the trailing newline
        }
        let err = |reason| ProcNetError {
            line: i + 1,
            reason,
        };
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let mut next = |what| fields.next().ok_or(err(what));
        let _sl = next("no slot number")?;
        let (local, port) =
            endpoint(next("no local address")?, v6).ok_or(err("bad local address"))?;
        if !ports.contains(port) {
            continue;
        }
        let (remote, remote_port) =
            endpoint(next("no remote address")?, v6).ok_or(err("bad remote address"))?;
        let state = hex_u32(next("no state")?)
            .and_then(|s| u8::try_from(s).ok())
            .ok_or(err("bad state"))?;
        for _ in 0..3 {
            next("too few fields")?; // queues, timer, retransmits
        }
        let uid = decimal(next("no uid")?).ok_or(err("bad uid"))?;
        let uid = u32::try_from(uid).map_err(|_| err("bad uid"))?;
        next("no timeout")?;
        let inode = decimal(next("no inode")?).ok_or(err("bad inode"))?;
        out.push(Socket {
            protocol,
            state,
            local,
            port,
            remote,
            remote_port,
            uid,
            inode,
            pid_hint: None,
            netns: 0,
        });
    }
    Ok(())
}

/// `ADDR:PORT` with the address as native-endian hex words.
fn endpoint(field: &[u8], v6: bool) -> Option<(IpAddr, u16)> {
    let colon = field.iter().position(|&b| b == b':')?;
    let (addr, port) = (&field[..colon], &field[colon + 1..]);
    if port.len() != 4 {
        return None;
    }
    let port = u16::try_from(hex_u32(port)?).ok()?;
    let words = if v6 { 4 } else { 1 };
    if addr.len() != 8 * words {
        return None;
    }
    let mut bytes = [0u8; 16];
    for w in 0..words {
        let word = hex_u32(&addr[w * 8..w * 8 + 8])?;
        bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    Some((ip, port))
}

fn hex_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Socket counts of one namespace, from `sockstat` and `sockstat6`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockCounts {
    /// TCP sockets in use (listening, connecting, connected), per family.
    pub tcp4: u64,
    pub tcp6: u64,
    /// TIME_WAIT sockets (both families together).
    pub tw: u64,
    /// Bound UDP sockets, per family.
    pub udp4: u64,
    pub udp6: u64,
}

impl SockCounts {
    /// Whether the namespace may hold a socket of this protocol and family.
    pub fn may_hold(&self, protocol: Protocol, v6: bool) -> bool {
        match (protocol, v6) {
            (Protocol::Tcp, false) => self.tcp4 + self.tw > 0,
            (Protocol::Tcp, true) => self.tcp6 + self.tw > 0,
            (Protocol::Udp, false) => self.udp4 > 0,
            (Protocol::Udp, true) => self.udp6 > 0,
        }
    }
}

/// Adds the counts of a `sockstat` or `sockstat6` file to `counts`: the
/// `inuse` of the `TCP:`, `TCP6:`, `UDP:` and `UDP6:` lines and the `tw` of
/// `TCP:`. Returns false when the file has none of those lines (not a
/// sockstat file): the caller then assumes nothing is empty.
pub fn add_sockstat(text: &[u8], counts: &mut SockCounts) -> bool {
    let mut any = false;
    for line in text.split(|&b| b == b'\n') {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(kind) = words.next() else { continue };
        let value_of = |key: &[u8]| -> Option<u64> {
            let words: Vec<&[u8]> = words.clone().collect();
            words
                .windows(2)
                .find(|w| w[0] == key)
                .and_then(|w| decimal(w[1]))
        };
        let (slot, tw): (&mut u64, bool) = match kind {
            b"TCP:" => (&mut counts.tcp4, true),
            b"TCP6:" => (&mut counts.tcp6, false),
            b"UDP:" => (&mut counts.udp4, false),
            b"UDP6:" => (&mut counts.udp6, false),
            _ => continue,
        };
        let Some(inuse) = value_of(b"inuse") else {
            continue;
        };
        *slot += inuse;
        any = true;
        if tw {
            counts.tw += value_of(b"tw").unwrap_or(0);
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/platform/linux/testdata/netns"
    );

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{TESTDATA}/{name}")).unwrap()
    }

    fn all() -> PortSet {
        PortSet::from_intervals(vec![(1, 65535)])
    }

    fn fh() -> PortSet {
        PortSet::from_intervals(vec![(3224, 3324)])
    }

    #[test]
    fn decodes_hand_made_lines_on_any_byte_order() {
        // 127.0.0.1 is the bytes 7f 00 00 01 in memory; the kernel prints
        // that word as a native integer.
        let word = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             \x20  0: {word:08X}:0CA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0\n\
             \x20  1: {word:08X}:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0\n"
        );
        let mut out = Vec::new();
        decode_table(text.as_bytes(), Protocol::Tcp, false, &fh(), &mut out).unwrap();
        assert_eq!(out.len(), 1, "port 80 is outside the filter");
        let s = &out[0];
        assert_eq!(s.local, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((s.port, s.state, s.uid, s.inode), (3232, 10, 1000, 4242));
        assert_eq!((s.remote_port, s.netns, s.pid_hint), (0, 0, None));
        assert!(s.is_listener());

        let mut v6 = [0u8; 16];
        v6[15] = 1; // ::1
        let words: Vec<String> = v6
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes(c.try_into().unwrap())))
            .collect();
        let text = format!(
            "header\n 5: {}:0CA1 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 99 2 0 0\n",
            words.concat()
        );
        let mut out = Vec::new();
        decode_table(text.as_bytes(), Protocol::Udp, true, &all(), &mut out).unwrap();
        assert_eq!(out[0].local, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((out[0].port, out[0].state, out[0].inode), (3233, 7, 99));
    }

    /// Files the kernel (6.18, x86_64) wrote in a namespace holding the
    /// sockets listed in testdata/netns/README.md.
    #[cfg(target_endian = "little")]
    #[test]
    fn decodes_recorded_tables() {
        let mut out = Vec::new();
        decode_table(&read("tcp"), Protocol::Tcp, false, &all(), &mut out).unwrap();
        let listen = out
            .iter()
            .find(|s| s.port == 3224 && s.state == 10)
            .expect("tcp 0.0.0.0:3224 LISTEN");
        assert_eq!(listen.local, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert!(listen.inode != 0);
        let est: Vec<_> = out.iter().filter(|s| s.state == 1).collect();
        assert_eq!(est.len(), 2, "both ends of the loopback connection");
        assert!(est.iter().any(|s| s.port == 3224 && s.inode != 0));
        assert!(
            est.iter()
                .all(|s| s.local == "127.0.0.1".parse::<IpAddr>().unwrap())
        );
        assert!(
            out.iter()
                .any(|s| s.port == 3225 && s.state == 6 && s.inode == 0),
            "a TIME_WAIT socket has no inode"
        );

        let mut out = Vec::new();
        decode_table(&read("tcp6"), Protocol::Tcp, true, &fh(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].local, "::".parse::<IpAddr>().unwrap());
        assert_eq!((out[0].port, out[0].state), (3300, 10));

        let mut out = Vec::new();
        decode_table(&read("udp"), Protocol::Udp, false, &fh(), &mut out).unwrap();
        let mut ports: Vec<u16> = out.iter().map(|s| s.port).collect();
        ports.sort();
        assert_eq!(ports, [3224, 3226]);
        let connected = out.iter().find(|s| s.port == 3226).unwrap();
        assert_eq!((connected.state, connected.remote_port), (1, 9));
        assert_eq!(connected.remote, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(
            out.iter().all(|s| s.uid == 65534),
            "the holder ran as nobody"
        );

        let mut out = Vec::new();
        decode_table(&read("udp6"), Protocol::Udp, true, &fh(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].local, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(out[0].port, 3324);
    }

    #[test]
    fn refuses_malformed_lines() {
        for (text, line) in [
            ("h\n 0: 0100007F:0CA0\n", 2),
            ("h\n 0: 0100007F:CA0 00000000:0000 0A 0:0 0:0 0 0 0 1\n", 2),
            ("h\n 0: 0100007F0CA0 00000000:0000 0A 0:0 0:0 0 0 0 1\n", 2),
            (
                "h\n\n 0: 0100007Z:0CA0 00000000:0000 0A 0:0 0:0 0 0 0 1\n",
                3,
            ),
            ("h\n 0: 0100007F:0CA0 00000000:0000 0A 0:0 0:0 0 x 0 1\n", 2),
            (
                "h\n 0: 0100007F:0CA0 00000000:0000 1FF 0:0 0:0 0 0 0 1\n",
                2,
            ),
            (
                "h\n 0: 0100007F:0CA0 00000000:0000 0A 0:0 0:0 0 0 0 -1\n",
                2,
            ),
        ] {
            let mut out = Vec::new();
            let e =
                decode_table(text.as_bytes(), Protocol::Tcp, false, &all(), &mut out).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
        // An IPv4 file read as IPv6 is refused, not misread.
        let mut out = Vec::new();
        assert!(
            decode_table(
                b"h\n 0: 0100007F:0CA0 00000000:0000 0A 0:0 0:0 0 0 0 1\n",
                Protocol::Tcp,
                true,
                &all(),
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let base = read("udp");
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = base.clone();
            let at = (seed as usize) % b.len();
            b[at] = (seed >> 32) as u8;
            b.truncate((seed >> 40) as usize % (b.len() + 1));
            let mut out = Vec::new();
            let _ = decode_table(&b, Protocol::Udp, seed.is_multiple_of(2), &all(), &mut out);
        }
    }

    #[test]
    fn sockstat_counts() {
        let mut c = SockCounts::default();
        assert!(add_sockstat(&read("sockstat"), &mut c));
        assert!(add_sockstat(&read("sockstat6"), &mut c));
        assert_eq!(
            c,
            SockCounts {
                tcp4: 3,
                tcp6: 1,
                tw: 1,
                udp4: 3,
                udp6: 1
            }
        );
        assert!(c.may_hold(Protocol::Tcp, false) && c.may_hold(Protocol::Udp, true));

        let mut empty = SockCounts::default();
        assert!(add_sockstat(
            b"sockets: used 0\nTCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\nUDP: inuse 0 mem 0\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n",
            &mut empty
        ));
        for p in Protocol::ALL {
            for v6 in [false, true] {
                assert!(!empty.may_hold(p, v6));
            }
        }
        // TIME_WAIT alone keeps TCP worth a dump, in both families.
        let tw = SockCounts {
            tw: 2,
            ..Default::default()
        };
        assert!(tw.may_hold(Protocol::Tcp, false) && tw.may_hold(Protocol::Tcp, true));
        assert!(!tw.may_hold(Protocol::Udp, false));
        // Not a sockstat file: the caller must not skip anything.
        assert!(!add_sockstat(b"garbage\n", &mut SockCounts::default()));
        assert!(!add_sockstat(b"TCP: inuse x\n", &mut SockCounts::default()));
    }
}
