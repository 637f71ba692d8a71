//! The exporter's own network namespace read from the socket tables
//! `<procfs>/thread-self/net/{tcp,tcp6,udp,udp6}`: the fallback where a
//! NETLINK_SOCK_DIAG socket cannot be opened at all (user-mode emulation
//! such as `qemu-aarch64-static`, which passes only a few netlink
//! protocols through; kernels built without `CONFIG_INET_DIAG`). The kernel
//! formats every socket of the namespace, with no port filter, so this
//! costs a full table read per scrape (64-72 ms for 10,000 UDP sockets,
//! against 0.4-2 ms for a filtered dump): the platform says so once in the
//! log, at warning level. The tables are decoded by
//! [`super::netns::procnet::decode_table`] (pure, tested on bytes); this
//! module only opens and reads them.

use std::io::Read;
use std::path::Path;

use super::netns::procnet;
use crate::platform::{Filter, SampleError, Socket};
use crate::ranges::Protocol;

/// Whether `e` says that sock_diag does not exist here (as opposed to a
/// kernel that refused one dump, which must surface as an error).
pub fn sock_diag_unavailable(e: &SampleError) -> bool {
    match e {
        SampleError::Open { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT) | Some(libc::ESOCKTNOSUPPORT)
        ),
        _ => false,
    }
}

/// The sockets of the calling thread's network namespace in `filter`'s
/// ports. A missing IPv6 table means a kernel without IPv6 (no IPv6
/// sockets); any other failure is an error, never an empty list.
pub fn sample(procfs: &Path, filter: &Filter) -> Result<Vec<Socket>, SampleError> {
    let net = procfs.join("thread-self/net");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (protocol, v6) in [
        (Protocol::Tcp, false),
        (Protocol::Tcp, true),
        (Protocol::Udp, false),
        (Protocol::Udp, true),
    ] {
        let ports = filter.ports(protocol);
        if ports.is_empty() {
            continue;
        }
        let name = format!("{protocol}{}", if v6 { "6" } else { "" });
        let path = net.join(&name);
        buf.clear();
        match std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut buf)) {
            Ok(_) => {}
            Err(e) if v6 && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SampleError::Recv {
                    dump: path.display().to_string(),
                    source: e,
                });
            }
        }
        procnet::decode_table(&buf, protocol, v6, ports, &mut out).map_err(|e| {
            SampleError::Decode {
                dump: path.display().to_string(),
                source: Box::new(e),
            }
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::PortSet;

    #[test]
    fn only_a_missing_protocol_means_unavailable() {
        let open = |errno| SampleError::Open {
            what: "a NETLINK_SOCK_DIAG socket",
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert!(sock_diag_unavailable(&open(libc::EPROTONOSUPPORT)));
        assert!(sock_diag_unavailable(&open(libc::EAFNOSUPPORT)));
        assert!(!sock_diag_unavailable(&open(libc::EMFILE)));
        assert!(!sock_diag_unavailable(&open(libc::EPERM)));
    }

    #[test]
    fn a_fake_tree_is_read_and_filtered() {
        let root =
            std::env::temp_dir().join(format!("portrange-procfs-sockets-{}", std::process::id()));
        let net = root.join("thread-self/net");
        std::fs::create_dir_all(&net).unwrap();
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";
        // 0.0.0.0:3224 (0x0C98) and 0.0.0.0:4000 (0x0FA0), both unconnected (07).
        let udp = format!(
            "{header}  1: 00000000:0C98 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 0\n  2: 00000000:0FA0 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n"
        );
        std::fs::write(net.join("udp"), udp).unwrap();
        std::fs::write(net.join("tcp"), header).unwrap();
        std::fs::write(net.join("tcp6"), header).unwrap();
        // No udp6: a kernel without IPv6.
        let filter = Filter {
            tcp: PortSet::from_intervals(vec![(3224, 3324)]),
            udp: PortSet::from_intervals(vec![(3224, 3324)]),
        };
        let got = sample(&root, &filter).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].port, got[0].uid, got[0].inode, got[0].state),
            (3224, 1000, 4242, 7)
        );
        // An unreadable table is an error, never "no sockets".
        std::fs::remove_file(net.join("tcp")).unwrap();
        assert!(sample(&root, &filter).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
