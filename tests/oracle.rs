//! netstat2 as an independent oracle: for the same host state (a private
//! network namespace with known sockets), the sock_diag sampler with our
//! /proc attribution and netstat2 filtered to the ranges report the same
//! sockets and the same owning processes.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo};
use portrange_exporter::config::Config;
use portrange_exporter::platform::{self, Holder};
use portrange_exporter::ranges::Protocol;

type Key = (Protocol, IpAddr, u16, u16);

#[test]
fn sock_diag_and_netstat2_agree_on_sockets_and_owners() {
    if !enter_netns("sock_diag_and_netstat2_agree_on_sockets_and_owners") {
        return;
    }
    let a = hold(
        "CtxGfx",
        &[
            "udp:0.0.0.0:3224",
            "udp:[::]:3225",
            "tcp:127.0.0.1:3300",
            "udpc:127.0.0.1:3240:9",
        ],
    );
    let b = hold(
        "intruder",
        &["udp:127.0.0.1:3226", "tcp:[::1]:3301", "udp:0.0.0.0:4000"],
    );
    let c = hold("client", &["tcpc:127.0.0.1:3300"]);
    let d = hold("mosh-server", &["udp:0.0.0.0:60001"]);
    let cfg = Config::parse(
        "ranges:\n  - name: fh\n    ports: 3224-3324\n  - name: mosh\n    ports: 60000-61000\n    protocols: [udp]\n",
        "oracle.yml",
    )
    .unwrap();
    let filter = portrange_exporter::collect::filter(&cfg);

    let mut host = platform::host(std::path::Path::new("/proc")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sample = host.sample(&filter, deadline).unwrap();
    let found = host.attribute(&sample, deadline);
    let found = host.confirm_kernel(&sample, found, deadline);
    let ours = &sample.sockets;
    let mut ours_map: BTreeMap<Key, (u32, u64, u32)> = BTreeMap::new();
    for (s, holder) in ours.iter().zip(&found.holders) {
        let pid = match holder {
            Some(Holder::Process(o)) => o.pid,
            _ => 0,
        };
        ours_map.insert(
            (s.protocol, s.local, s.port, s.remote_port),
            (pid, s.inode, s.uid),
        );
    }

    let infos = netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        ProtocolFlags::TCP | ProtocolFlags::UDP,
    )
    .unwrap();
    let mut theirs: BTreeMap<Key, (Vec<u32>, u64, u32)> = BTreeMap::new();
    for i in &infos {
        let (proto, rport) = match &i.protocol_socket_info {
            ProtocolSocketInfo::Tcp(t) => (Protocol::Tcp, t.remote_port),
            // netstat2 does not report the UDP peer; take ours for the key.
            ProtocolSocketInfo::Udp(_) => (Protocol::Udp, u16::MAX),
        };
        if !filter.ports(proto).contains(i.local_port()) {
            continue;
        }
        theirs.insert(
            (proto, i.local_addr(), i.local_port(), rport),
            (i.associated_pids.clone(), u64::from(i.inode), i.uid),
        );
    }
    // Align the UDP keys (peer port unknown to netstat2) through the inode.
    let theirs: BTreeMap<Key, (Vec<u32>, u64, u32)> = theirs
        .into_iter()
        .map(|(k, v)| {
            if k.0 == Protocol::Udp {
                let ours_key = ours_map
                    .iter()
                    .find(|(_, o)| o.1 == v.1)
                    .map(|(k, _)| *k)
                    .unwrap_or(k);
                (ours_key, v)
            } else {
                (k, v)
            }
        })
        .collect();

    assert_eq!(
        ours_map.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same sockets\nours: {ours_map:?}\nnetstat2: {theirs:?}"
    );
    // CtxGfx 4 (one a connected UDP socket), intruder 2 (4000 is outside),
    // mosh 1, and the server end of the client's connection; the client's
    // own end sits on an ephemeral port outside the ranges.
    assert_eq!(ours_map.len(), 8, "{ours_map:?}");
    let holders: Vec<u32> = [&a, &b, &c, &d].iter().map(|h| h.pid()).collect();
    for (k, (pid, inode, uid)) in &ours_map {
        let (pids, their_inode, their_uid) = &theirs[k];
        assert_eq!(inode, their_inode, "{k:?}");
        assert_eq!(uid, their_uid, "{k:?}");
        if *inode == 0 {
            assert_eq!(*pid, 0, "{k:?}: no process holds an inode-0 socket");
            assert!(pids.is_empty(), "{k:?}: netstat2 {pids:?}");
            continue;
        }
        assert!(
            pids.contains(pid),
            "{k:?}: our owner {pid}, netstat2 {pids:?}"
        );
        assert!(
            holders.contains(pid),
            "{k:?}: owner {pid} is one of the holders"
        );
    }
    // The server end of the client's connection waits in the listen queue
    // (the holder never calls accept): no fd holds it yet, so no owner.
    let queued = ours_map
        .iter()
        .find(|(k, _)| k.0 == Protocol::Tcp && k.2 == 3300 && k.3 != 0)
        .unwrap();
    assert_eq!(*queued.1, (0, 0, 0));
    assert_eq!(ours_map.values().filter(|v| v.0 == a.pid()).count(), 4);
    assert_eq!(ours_map.values().filter(|v| v.0 == b.pid()).count(), 2);
    assert_eq!(ours_map.values().filter(|v| v.0 == d.pid()).count(), 1);
}
