//! The traffic counters on Linux (`--collector.traffic`): the exporter's
//! own nftables table ([`super::nft_design`] says what it holds), spoken
//! to over NETLINK_NETFILTER from the process (no `nft` binary at run
//! time) with the [`super::nft_codec`] messages. [`NftTable`] is the thin
//! I/O: one netlink socket, opened at the first use and kept for the
//! table's life; the table is owned by that socket (`NFT_TABLE_F_OWNER`,
//! Linux 5.12+), so the kernel removes it when the socket closes, whatever
//! the exit (SIGKILL, a panic, an early return). Every exchange waits no
//! later than the deadline it is given.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Instant;

use super::netlink::{self as nl, RecvError};
use super::nft_codec::{self as codec, Reply};
use super::nft_design::{self as design, Transaction};
use crate::platform::traffic::{RuleReading, TrafficError, TrafficRule, TrafficTable};
use crate::ranges::Protocol;

/// The exporter's nftables table.
pub struct NftTable {
    name: String,
    /// The socket that owns the table; opened at the first exchange.
    fd: Option<OwnedFd>,
    seq: u32,
    /// The receive buffer, kept across exchanges.
    buf: Vec<u8>,
}

impl NftTable {
    /// The table of exporter instance `instance` (see
    /// [`design::table_name`]).
    pub fn new(instance: &str) -> NftTable {
        NftTable {
            name: design::table_name(instance),
            fd: None,
            seq: 0,
            buf: Vec::new(),
        }
    }

    fn failed(&self, action: &'static str, detail: String) -> TrafficError {
        TrafficError::Failed {
            table: self.name.clone(),
            action,
            detail,
        }
    }

    fn errno(&self, action: &'static str, errno: i32) -> TrafficError {
        let detail = std::io::Error::from_raw_os_error(errno).to_string();
        if errno == libc::EPERM || errno == libc::EACCES {
            TrafficError::Permission {
                table: self.name.clone(),
                action,
                detail,
            }
        } else {
            self.failed(action, detail)
        }
    }

    fn socket(&mut self, action: &'static str) -> Result<&OwnedFd, TrafficError> {
        if self.fd.is_none() {
            let fd = nl::open(Some(rustix::net::netlink::NETFILTER)).map_err(|e| {
                self.failed(action, format!("opening a NETLINK_NETFILTER socket: {e}"))
            })?;
            self.fd = Some(fd);
        }
        Ok(self.fd.as_ref().unwrap())
    }

    fn send(&mut self, bytes: &[u8], action: &'static str) -> Result<(), TrafficError> {
        let fd = self.socket(action)?;
        nl::send(fd, bytes).map_err(|e| self.errno(action, e.raw_os_error().unwrap_or(0)))
    }

    /// Receives replies until `each` says done, by `deadline`.
    fn receive(
        &mut self,
        action: &'static str,
        deadline: Instant,
        mut each: impl FnMut(Reply<'_>) -> Result<bool, TrafficError>,
    ) -> Result<(), TrafficError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 * 1024, 0);
        let r = self.receive_into(&mut buf, action, deadline, &mut each);
        self.buf = buf;
        r
    }

    fn receive_into(
        &mut self,
        buf: &mut [u8],
        action: &'static str,
        deadline: Instant,
        each: &mut impl FnMut(Reply<'_>) -> Result<bool, TrafficError>,
    ) -> Result<(), TrafficError> {
        loop {
            let fd = self.socket(action)?;
            let n = nl::receive(fd, buf, deadline).map_err(|e| match e {
                RecvError::Deadline => {
                    self.failed(action, "the collection's deadline passed".into())
                }
                RecvError::Io(e) => self.errno(action, e.raw_os_error().unwrap_or(0)),
                e => self.failed(action, e.to_string()),
            })?;
            let replies =
                codec::replies(&buf[..n]).map_err(|e| self.failed(action, e.to_string()))?;
            for r in replies {
                if each(r)? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends one transaction and waits for its last message's
    /// acknowledgement; an error for any of its messages (or for the
    /// batch's begin, which is how the kernel refuses a batch from a
    /// process without CAP_NET_ADMIN) fails it. Replies to earlier
    /// exchanges (abandoned at a deadline) are skipped by number.
    fn transact(
        &mut self,
        t: &Transaction,
        action: &'static str,
        tolerate: Option<i32>,
        deadline: Instant,
    ) -> Result<(), TrafficError> {
        self.send(&t.bytes, action)?;
        let (first, last) = (t.first_seq, t.last_seq);
        let mut error = None;
        self.receive(action, deadline, |r| {
            if let Reply::Ack { seq, errno } = r
                && (first..=last).contains(&seq)
            {
                if errno != 0 && Some(-errno) != tolerate {
                    error = Some(-errno);
                    return Ok(true);
                }
                return Ok(seq == last);
            }
            Ok(false)
        })?;
        match error {
            Some(e) => Err(self.errno(action, e)),
            None => Ok(()),
        }
    }

    /// Runs a dump, handing each nf_tables message of type `kind` to
    /// `each`; a missing table or set is [`TrafficError::NotInstalled`].
    fn dump(
        &mut self,
        request: impl FnOnce(&mut Vec<u8>, u32),
        kind: u16,
        deadline: Instant,
        mut each: impl FnMut(&[u8]) -> Result<(), TrafficError>,
    ) -> Result<(), TrafficError> {
        const READ: &str = "read";
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut b = Vec::new();
        request(&mut b, seq);
        self.send(&b, READ)?;
        let mut errno = 0;
        self.receive(READ, deadline, |r| match r {
            Reply::Done { seq: s } if s == seq => Ok(true),
            Reply::Ack { seq: s, errno: e } if s == seq => {
                errno = -e;
                Ok(true)
            }
            Reply::Nft {
                kind: k,
                seq: s,
                attrs,
            } if s == seq && k == kind => {
                each(attrs)?;
                Ok(false)
            }
            _ => Ok(false),
        })?;
        match errno {
            0 => Ok(()),
            libc::ENOENT => Err(TrafficError::NotInstalled {
                table: self.name.clone(),
            }),
            e => Err(self.errno(READ, e)),
        }
    }

    /// Why an install was refused with EPERM: another process's socket
    /// owns a table of this name (an exporter instance with the same
    /// table name), or the capability is missing.
    fn why_refused(&mut self, e: TrafficError, deadline: Instant) -> TrafficError {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut b = Vec::new();
        codec::table_request(&mut b, &self.name, seq);
        if self.send(&b, "installed").is_err() {
            return e;
        }
        let mut owner = None;
        let _ = self.receive("installed", deadline, |r| match r {
            Reply::Nft { seq: s, attrs, .. } if s == seq => {
                owner = codec::decode_table(attrs).ok().and_then(|t| t.owner);
                Ok(false)
            }
            Reply::Ack { seq: s, .. } | Reply::Done { seq: s } if s == seq => Ok(true),
            _ => Ok(false),
        });
        match owner {
            Some(port) => TrafficError::Held {
                table: self.name.clone(),
                owner: port,
            },
            None => e,
        }
    }
}

impl TrafficTable for NftTable {
    fn install(&mut self, rules: &[TrafficRule], deadline: Instant) -> Result<(), TrafficError> {
        const INSTALLED: &str = "installed";
        let messages =
            design::install_messages(&self.name, rules).map_err(|e| self.failed(INSTALLED, e))?;
        let plan = design::transactions(messages, &mut self.seq, design::TRANSACTION_BYTES);
        for t in &plan {
            match self.transact(t, INSTALLED, None, deadline) {
                Err(e @ TrafficError::Permission { .. }) => {
                    return Err(self.why_refused(e, deadline));
                }
                r => r?,
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        rules: &[TrafficRule],
        deadline: Instant,
    ) -> Result<Vec<RuleReading>, TrafficError> {
        let mut counters = HashMap::new();
        let name = self.name.clone();
        self.dump(
            |b, seq| codec::counters_request(b, &name, seq),
            codec::NFT_MSG_NEWOBJ,
            deadline,
            |attrs| {
                if let Some((n, c)) =
                    codec::decode_object(attrs).map_err(|e| TrafficError::Failed {
                        table: name.clone(),
                        action: "read",
                        detail: e.to_string(),
                    })?
                {
                    counters.insert(n, c);
                }
                Ok(())
            },
        )?;
        let mut out = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let n = design::names(rule, i);
            let get = |name: &str| {
                counters
                    .get(name)
                    .copied()
                    .ok_or_else(|| TrafficError::NotInstalled {
                        table: self.name.clone(),
                    })
            };
            let tcp = rule.protocol == Protocol::Tcp;
            let mut reading = RuleReading {
                all: get(&n.all)?,
                closed: get(&n.closed)?,
                attempts_all: if tcp { get(&n.attempts)?.packets } else { 0 },
                attempts_closed: if tcp {
                    get(&n.attempts_closed)?.packets
                } else {
                    0
                },
                closed_ports: Vec::new(),
            };
            self.dump(
                |b, seq| codec::elements_request(b, &name, &n.ports, seq),
                codec::NFT_MSG_NEWSETELEM,
                deadline,
                |attrs| {
                    let found =
                        codec::decode_elements(attrs).map_err(|e| TrafficError::Failed {
                            table: name.clone(),
                            action: "read",
                            detail: e.to_string(),
                        })?;
                    reading.closed_ports.extend(found);
                    Ok(())
                },
            )?;
            out.push(reading);
        }
        Ok(out)
    }

    fn remove(&mut self, deadline: Instant) -> Result<(), TrafficError> {
        let plan = design::transactions(
            design::remove_messages(&self.name),
            &mut self.seq,
            design::TRANSACTION_BYTES,
        );
        for t in &plan {
            self.transact(t, "removed", Some(libc::ENOENT), deadline)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::linux::nft_design::tests::rule;
    use crate::platform::traffic::Counter;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Runs `f` on a thread in a private network namespace; false (after
    /// saying so) when that is not allowed.
    fn in_netns(test: &'static str, f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            // SAFETY: unshare(2) with CLONE_NEWNET changes only this
            // thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("SKIPPED {test}: needs root");
                return;
            }
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(up.success());
            f()
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_kernel_counts_listening_and_closed_udp_exactly() {
        // 5 datagrams to a listening port and 3 to a closed one, read back.
        in_netns("the_kernel_counts_listening_and_closed_udp_exactly", || {
            let rules = [
                rule("a", Protocol::Udp, &[(3224, 3324)]),
                rule("a", Protocol::Tcp, &[(3224, 3324)]),
            ];
            let mut t = NftTable::new("test");
            t.install(&rules, soon()).unwrap();
            // Twice: the second replaces the first.
            t.install(&rules, soon()).unwrap();
            let listener = std::net::UdpSocket::bind("127.0.0.1:3224").unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..5 {
                sender.send_to(b"0123456789", "127.0.0.1:3224").unwrap();
            }
            for _ in 0..3 {
                sender.send_to(b"x", "127.0.0.1:3300").unwrap();
            }
            let r = t.read(&rules, soon()).unwrap();
            assert_eq!(r[0].all.packets, 8, "{r:?}");
            assert_eq!(r[0].closed.packets, 3, "{r:?}");
            // IPv4 header 20 + UDP 8 + payload.
            assert_eq!(r[0].closed.bytes, 3 * 29, "{r:?}");
            assert_eq!(
                r[0].closed_ports,
                vec![(
                    3300,
                    Counter {
                        packets: 3,
                        bytes: 87
                    }
                )]
            );
            assert_eq!(r[1], RuleReading::default());
            // Another socket reads it (check does), but cannot remove it.
            let mut reader = NftTable::new("test");
            assert_eq!(reader.read(&rules, soon()).unwrap()[0].all.packets, 8);
            assert!(matches!(
                reader.install(&rules, soon()),
                Err(TrafficError::Held { .. })
            ));
            drop(listener);
            t.remove(soon()).unwrap();
            t.remove(soon()).unwrap();
            assert_eq!(
                t.read(&rules, soon()),
                Err(TrafficError::NotInstalled {
                    table: "portrange_exporter_test".into()
                })
            );
            // Dropping the owner removes the table.
            t.install(&rules, soon()).unwrap();
            drop(t);
            assert!(matches!(
                reader.read(&rules, soon()),
                Err(TrafficError::NotInstalled { .. })
            ));
        });
    }

    #[test]
    fn every_interval_of_a_large_map_counts_and_only_those() {
        // 1,500 single ports (every other port from 20000) in one range:
        // several transactions; a datagram to each port in and to each
        // port between counts exactly the ones in.
        in_netns(
            "every_interval_of_a_large_map_counts_and_only_those",
            || {
                let ports: Vec<(u16, u16)> =
                    (0..1500).map(|i| (20000 + 2 * i, 20000 + 2 * i)).collect();
                let rules = [
                    rule("sip", Protocol::Udp, &ports),
                    rule("edge", Protocol::Udp, &[(1, 1), (65535, 65535)]),
                ];
                let mut t = NftTable::new("big");
                t.install(&rules, soon()).unwrap();
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for p in 19990..23010u16 {
                    s.send_to(b"x", ("127.0.0.1", p)).unwrap();
                }
                for p in [1u16, 2, 65534, 65535] {
                    s.send_to(b"x", ("127.0.0.1", p)).unwrap();
                }
                let r = t.read(&rules, soon()).unwrap();
                assert_eq!(r[0].closed.packets, 1500, "{:?}", r[0].all);
                assert_eq!(r[1].closed.packets, 2);
            },
        );
    }

    #[test]
    fn no_exchange_waits_past_the_deadline() {
        let mut t = NftTable::new("deadline");
        let e = t
            .read(&[rule("a", Protocol::Udp, &[(1, 2)])], Instant::now())
            .unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
    }
}
