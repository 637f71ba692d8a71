//! What the traffic counters' nftables table holds, and the transactions
//! that install it: pure, over the [`super::nft_codec`] messages; the I/O
//! is [`super::nftables`].
//!
//! One table per exporter instance, `inet portrange_exporter_<instance>`
//! (the instance is the port of the first address the exporter listens
//! on, unique in a network namespace, so two exporters in one namespace
//! each keep their own table), owned by the exporter's netlink socket
//! (`flags owner`): the kernel removes it when the socket closes, at any
//! exit. Per watched range and protocol (`<p>.<range>`, `p` = `tcp`/`udp`;
//! `.` cannot occur in a range name, so no two ranges' objects collide):
//! ```text
//! table inet portrange_exporter_10224 {
//!   flags owner
//!   counter <p>.<range>.all / .closed / .attempts / .attempts_closed
//!   set <p>.<range>.ports { type inet_service; flags dynamic,timeout;
//!                           timeout 60s; size 4096; counter }
//!   map <p>.ranges { type inet_service : verdict; flags interval;
//!                    elements = { A-B : jump <p>.<range>, ... } }
//!   chain prerouting { type filter hook prerouting priority -350; policy accept;
//!     meta l4proto <p> th dport vmap @<p>.ranges      # one rule per protocol
//!   }
//!   chain <p>.<range> {
//!     fib daddr type != local return     # only packets for this host
//!     counter name <p>.<range>.all
//!     tcp flags & (syn|ack) == syn counter name <p>.<range>.attempts        # tcp
//!     socket transparent != 2 return     # a socket can take it: listening
//!     counter name <p>.<range>.closed
//!     tcp flags & (syn|ack) == syn counter name <p>.<range>.attempts_closed  # tcp
//!     add @<p>.<range>.ports { th dport } # per-port counts of closed ports
//!   }
//! }
//! ```
//! The ports are matched by one lookup in an interval map per protocol
//! (the kernel's rbtree: logarithmic in the intervals), so a packet costs
//! the same few expressions whether the ranges hold 1 interval or
//! thousands (docs/performance.md, "Traffic counters"); one rule per
//! interval cost a rule walk per interval.
//!
//! Priority -350 runs after defragmentation (-400) and before raw (-300),
//! conntrack (-200), mangle and filter, so every packet is counted before
//! another table can drop it; the policy is accept and no rule drops, so
//! the table never changes what the host lets in. `fib daddr type local`
//! keeps forwarded packets (to containers behind a bridge) out. The
//! `socket` expression looks the socket up at packet time (a listening,
//! connected, request or TIME_WAIT socket: `transparent` is 0 or 1 when
//! one is found, and the rule does not match when none is); `socket
//! wildcard` does not match request sockets, so the handshake's last ACK
//! (or a scanner's RST) to a listening port would count as closed.
//!
//! Install is a few transactions of at most [`TRANSACTION_BYTES`] each
//! (the kernel takes one transaction per datagram, and a datagram must
//! fit the socket's send buffer: one transaction for 600 single ports was
//! refused with EMSGSIZE). The first replaces the table (add, delete, add
//! again: a stale table from a crashed run of a version without `owner`
//! is replaced atomically, never doubled; the table of a version before
//! per-instance names, `inet portrange_exporter`, is removed); the map's
//! elements follow; the last adds the base chain's lookups, so counting
//! starts with every interval in place. Only our tables are ever named.

use std::collections::BTreeMap;

use super::netlink as nl;
use super::nft_codec::{
    self as codec, Expr, Interval, NF_INET_PRE_ROUTING, NFPROTO_INET, NFT_CMP_EQ, NFT_CMP_NEQ,
    NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWOBJ, NFT_MSG_NEWRULE, NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE, NFT_SET_EVAL, NFT_SET_INTERVAL, NFT_SET_MAP,
    NFT_SET_TIMEOUT, NFT_TABLE_F_OWNER,
};
use crate::platform::traffic::{PORT_SET_SIZE, PORT_WINDOW_SECS, TrafficRule};
use crate::ranges::Protocol;

/// The table of versions before per-instance names (0.3), removed at
/// install.
pub const LEGACY_TABLE: &str = "portrange_exporter";
/// The base chain's hook priority: after defragmentation, before raw.
pub const PRIORITY: i32 = -350;
/// The base chain's name.
pub const BASE_CHAIN: &str = "prerouting";
/// At most this many bytes go to the kernel in one transaction (one
/// datagram): well under the default socket send buffer (212,992 bytes,
/// `net.core.wmem_default`), which the kernel checks a datagram against.
pub const TRANSACTION_BYTES: usize = 64 * 1024;
/// The map elements one `NEWSETELEM` message carries at most: its element
/// list is one attribute, whose length is a u16.
const ELEMENT_BYTES: usize = 60 * 1024;
/// The kernel's limit on table, chain, set and object names, with the NUL.
const NAME_MAX: usize = 256;
/// A range name longer than this is cut in the kernel's names (and made
/// unique by its position): the longest name is `tcp.<range>.attempts_closed`.
const RANGE_NAME_MAX: usize = 200;

/// The table of the exporter instance `instance`.
pub fn table_name(instance: &str) -> String {
    format!("{LEGACY_TABLE}_{instance}")
}

/// The names of one rule's objects in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub chain: String,
    pub all: String,
    pub closed: String,
    pub attempts: String,
    pub attempts_closed: String,
    pub ports: String,
}

/// The names for `rule`, the `index`th of the rules: `<p>.<range>...`; a
/// range name too long for the kernel is cut and marked with its index
/// (`~<index>`), so every name fits and stays unique.
pub fn names(rule: &TrafficRule, index: usize) -> Names {
    let range = if rule.range.len() > RANGE_NAME_MAX {
        // Range names are ASCII (`[a-z0-9_]+`); any cut is a char boundary.
        let cut = rule
            .range
            .char_indices()
            .map(|(i, _)| i)
            .take_while(|&i| i <= RANGE_NAME_MAX)
            .last()
            .unwrap_or(0);
        format!("{}~{index}", &rule.range[..cut])
    } else {
        rule.range.clone()
    };
    let base = format!("{}.{range}", rule.protocol.as_str());
    let n = Names {
        all: format!("{base}.all"),
        closed: format!("{base}.closed"),
        attempts: format!("{base}.attempts"),
        attempts_closed: format!("{base}.attempts_closed"),
        ports: format!("{base}.ports"),
        chain: base,
    };
    debug_assert!(n.attempts_closed.len() < NAME_MAX);
    n
}

/// The interval map of `protocol`.
pub fn map_name(protocol: Protocol) -> String {
    format!("{}.ranges", protocol.as_str())
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// `tcp flags & (syn|ack) == syn`.
fn syn_only() -> [Expr; 3] {
    const TCP_SYN: u8 = 0x02;
    const TCP_ACK: u8 = 0x10;
    [
        Expr::Payload { offset: 13, len: 1 },
        Expr::And {
            mask: vec![TCP_SYN | TCP_ACK],
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            value: vec![TCP_SYN],
        },
    ]
}

/// The rules of one range's chain.
pub fn range_rules(rule: &TrafficRule, n: &Names) -> Vec<Vec<Expr>> {
    const RTN_LOCAL: u32 = 2;
    let tcp = rule.protocol == Protocol::Tcp;
    let mut own = vec![vec![
        Expr::FibDaddrType,
        Expr::Cmp {
            op: NFT_CMP_NEQ,
            value: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
        Expr::Return,
    ]];
    own.push(vec![Expr::CounterRef(n.all.clone())]);
    if tcp {
        let mut v = syn_only().to_vec();
        v.push(Expr::CounterRef(n.attempts.clone()));
        own.push(v);
    }
    own.push(vec![
        Expr::SocketFound,
        Expr::Cmp {
            op: NFT_CMP_NEQ,
            value: vec![2],
        },
        Expr::Return,
    ]);
    own.push(vec![Expr::CounterRef(n.closed.clone())]);
    if tcp {
        let mut v = syn_only().to_vec();
        v.push(Expr::CounterRef(n.attempts_closed.clone()));
        own.push(v);
    }
    own.push(vec![
        Expr::Payload { offset: 2, len: 2 },
        Expr::DynsetAdd(n.ports.clone()),
    ]);
    own
}

/// The base chain's rule for `protocol`: one map lookup.
pub fn base_rule(protocol: Protocol) -> Vec<Expr> {
    vec![
        Expr::L4Proto,
        Expr::Cmp {
            op: NFT_CMP_EQ,
            value: vec![protocol_number(protocol)],
        },
        Expr::Payload { offset: 2, len: 2 },
        Expr::Vmap(map_name(protocol)),
    ]
}

/// Each protocol's intervals, sorted, with the chain they jump to; an
/// error names two ranges that share a port (the configuration refuses
/// that; the map could not hold it).
pub fn intervals(rules: &[TrafficRule]) -> Result<BTreeMap<Protocol, Vec<Interval>>, String> {
    let mut by: BTreeMap<Protocol, Vec<(Interval, &str)>> = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let chain = names(rule, i).chain;
        for &(from, to) in &rule.intervals {
            by.entry(rule.protocol).or_default().push((
                Interval {
                    from,
                    to,
                    chain: chain.clone(),
                },
                &rule.range,
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (protocol, mut v) in by {
        v.sort_by_key(|(i, _)| (i.from, i.to));
        for w in v.windows(2) {
            if w[1].0.from <= w[0].0.to {
                return Err(format!(
                    "ranges {} and {} overlap on {protocol} at port {}",
                    w[0].1, w[1].1, w[1].0.from
                ));
            }
        }
        out.insert(protocol, v.into_iter().map(|(i, _)| i).collect());
    }
    Ok(out)
}

/// One message of a plan, before it is given a sequence number.
fn msg(kind: u16, flags: u16, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::new();
    codec::message(&mut b, kind, nl::NLM_F_REQUEST | flags, 0, NFPROTO_INET, f);
    b
}

/// The messages that install `rules` in table `table`, in order (each
/// refers only to objects made before it).
pub fn install_messages(table: &str, rules: &[TrafficRule]) -> Result<Vec<Vec<u8>>, String> {
    let maps = intervals(rules)?;
    let create = nl::NLM_F_CREATE;
    let mut out = vec![
        msg(NFT_MSG_NEWTABLE, create, |b| {
            codec::table(b, LEGACY_TABLE, None)
        }),
        msg(NFT_MSG_DELTABLE, 0, |b| codec::table(b, LEGACY_TABLE, None)),
        // Without flags: an existing table is left as it is (a stale one
        // without `owner` could not be given it), then deleted.
        msg(NFT_MSG_NEWTABLE, create, |b| codec::table(b, table, None)),
        msg(NFT_MSG_DELTABLE, 0, |b| codec::table(b, table, None)),
        msg(NFT_MSG_NEWTABLE, create, |b| {
            codec::table(b, table, Some(NFT_TABLE_F_OWNER))
        }),
    ];
    let mut set_id = 0u32;
    for (i, rule) in rules.iter().enumerate() {
        let n = names(rule, i);
        let mut counters = vec![&n.all, &n.closed];
        if rule.protocol == Protocol::Tcp {
            counters.extend([&n.attempts, &n.attempts_closed]);
        }
        for c in counters {
            out.push(msg(NFT_MSG_NEWOBJ, create, |b| {
                codec::counter_object(b, table, c)
            }));
        }
        set_id += 1;
        out.push(msg(NFT_MSG_NEWSET, create, |b| {
            codec::set(
                b,
                table,
                &codec::SetSpec {
                    name: &n.ports,
                    id: set_id,
                    flags: NFT_SET_TIMEOUT | NFT_SET_EVAL,
                    size: Some(PORT_SET_SIZE as u32),
                    timeout_ms: Some(PORT_WINDOW_SECS * 1000),
                    counter: true,
                },
            )
        }));
        out.push(msg(NFT_MSG_NEWCHAIN, create, |b| {
            codec::chain(b, table, &n.chain, None)
        }));
        for exprs in range_rules(rule, &n) {
            out.push(msg(NFT_MSG_NEWRULE, create | nl::NLM_F_APPEND, |b| {
                codec::rule(b, table, &n.chain, &exprs)
            }));
        }
    }
    out.push(msg(NFT_MSG_NEWCHAIN, create, |b| {
        codec::chain(b, table, BASE_CHAIN, Some((NF_INET_PRE_ROUTING, PRIORITY)))
    }));
    for (&protocol, intervals) in &maps {
        let map = map_name(protocol);
        set_id += 1;
        out.push(msg(NFT_MSG_NEWSET, create, |b| {
            codec::set(
                b,
                table,
                &codec::SetSpec {
                    name: &map,
                    id: set_id,
                    flags: NFT_SET_MAP | NFT_SET_INTERVAL,
                    size: None,
                    timeout_ms: None,
                    counter: false,
                },
            )
        }));
        let mut start = 0;
        while start < intervals.len() {
            let mut bytes = 0;
            let mut end = start;
            while end < intervals.len() {
                bytes += codec::interval_bytes(&intervals[end].chain);
                if bytes > ELEMENT_BYTES && end > start {
                    break;
                }
                end += 1;
            }
            let lead = start == 0 && intervals[0].from > 0;
            out.push(msg(NFT_MSG_NEWSETELEM, create, |b| {
                codec::map_elements(b, table, &map, &intervals[start..end], lead)
            }));
            start = end;
        }
    }
    for &protocol in maps.keys() {
        out.push(msg(NFT_MSG_NEWRULE, create | nl::NLM_F_APPEND, |b| {
            codec::rule(b, table, BASE_CHAIN, &base_rule(protocol))
        }));
    }
    Ok(out)
}

/// One transaction: its bytes, and the sequence numbers of its messages
/// (the last one asks for an acknowledgement; an error for any of them,
/// or for the batch's begin, fails it, and the kernel then applies none
/// of it).
#[derive(Debug)]
pub struct Transaction {
    pub bytes: Vec<u8>,
    pub first_seq: u32,
    pub last_seq: u32,
}

/// Packs `messages` into transactions of at most `limit` bytes, in order,
/// numbering from `*seq` on.
pub fn transactions(messages: Vec<Vec<u8>>, seq: &mut u32, limit: usize) -> Vec<Transaction> {
    const MARK: usize = 20;
    let mut out = Vec::new();
    let mut groups: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut size = 0;
    for m in messages {
        if groups.is_empty() || (size + m.len() + 2 * MARK > limit && size > 0) {
            groups.push(Vec::new());
            size = 0;
        }
        size += m.len();
        groups.last_mut().unwrap().push(m);
    }
    for group in groups {
        let mut bytes = Vec::with_capacity(group.iter().map(Vec::len).sum::<usize>() + 2 * MARK);
        *seq = seq.wrapping_add(1);
        let first_seq = *seq;
        codec::batch_mark(&mut bytes, codec::NFNL_MSG_BATCH_BEGIN, first_seq);
        let n = group.len();
        for (i, mut m) in group.into_iter().enumerate() {
            *seq = seq.wrapping_add(1);
            m[8..12].copy_from_slice(&seq.to_ne_bytes());
            if i + 1 == n {
                let flags = u16::from_ne_bytes([m[6], m[7]]) | nl::NLM_F_ACK;
                m[6..8].copy_from_slice(&flags.to_ne_bytes());
            }
            bytes.extend(m);
        }
        let last_seq = *seq;
        *seq = seq.wrapping_add(1);
        codec::batch_mark(&mut bytes, codec::NFNL_MSG_BATCH_END, *seq);
        out.push(Transaction {
            bytes,
            first_seq,
            last_seq,
        });
    }
    out
}

/// The transaction that deletes `table`.
pub fn remove_messages(table: &str) -> Vec<Vec<u8>> {
    vec![msg(NFT_MSG_DELTABLE, 0, |b| codec::table(b, table, None))]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::platform::linux::nft_codec::{NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, nft};

    pub(crate) fn rule(range: &str, protocol: Protocol, intervals: &[(u16, u16)]) -> TrafficRule {
        TrafficRule {
            range: range.into(),
            protocol,
            intervals: intervals.to_vec(),
        }
    }

    /// (type, flags, seq) of every message of a transaction.
    fn kinds(b: &[u8]) -> Vec<(u16, u16, u32)> {
        nl::messages(b)
            .map(|m| {
                let m = m.unwrap();
                (m.kind, m.flags, m.seq)
            })
            .collect()
    }

    #[test]
    fn the_first_transaction_replaces_the_table_and_the_last_starts_counting() {
        let rules = [rule("framehawk", Protocol::Udp, &[(3224, 3324)])];
        let m = install_messages("t", &rules).unwrap();
        let mut seq = 0;
        let tx = transactions(m, &mut seq, TRANSACTION_BYTES);
        assert_eq!(tx.len(), 1);
        let k = kinds(&tx[0].bytes);
        assert_eq!(k.first().unwrap().0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(k.last().unwrap().0, NFNL_MSG_BATCH_END);
        let t = nft;
        // The legacy table and ours: add, delete (and ours added again).
        assert_eq!(
            k[1..6].iter().map(|x| x.0).collect::<Vec<_>>(),
            [
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_DELTABLE),
                t(NFT_MSG_NEWTABLE),
                t(NFT_MSG_DELTABLE),
                t(NFT_MSG_NEWTABLE)
            ]
        );
        let count = |kind| k.iter().filter(|x| x.0 == t(kind)).count();
        // udp: two counters, the ports set and the map, two chains, 5
        // rules in the range's chain and one lookup.
        assert_eq!(count(NFT_MSG_NEWOBJ), 2);
        assert_eq!(count(NFT_MSG_NEWSET), 2);
        assert_eq!(count(NFT_MSG_NEWCHAIN), 2);
        assert_eq!(count(NFT_MSG_NEWRULE), 6);
        assert_eq!(count(NFT_MSG_NEWSETELEM), 1);
        // The lookup comes last; only it asks for an acknowledgement.
        let last = k[k.len() - 2];
        assert_eq!(last.0, t(NFT_MSG_NEWRULE));
        assert_eq!((tx[0].first_seq, tx[0].last_seq), (1, last.2));
        let acked: Vec<_> = k.iter().filter(|x| x.1 & nl::NLM_F_ACK != 0).collect();
        assert_eq!(acked, [&last]);
        let seqs: Vec<u32> = k.iter().map(|x| x.2).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }

    #[test]
    fn six_hundred_single_ports_go_in_transactions_the_kernel_takes() {
        let ports: Vec<(u16, u16)> = (0..600).map(|i| (20000 + 2 * i, 20000 + 2 * i)).collect();
        let rules = [
            rule("sip", Protocol::Udp, &ports),
            rule("sip", Protocol::Tcp, &ports),
        ];
        let m = install_messages("portrange_exporter_10224", &rules).unwrap();
        // Few messages: the intervals are elements of two maps.
        assert!(m.len() < 40, "{}", m.len());
        let mut seq = 10;
        let tx = transactions(m, &mut seq, TRANSACTION_BYTES);
        assert!(tx.iter().all(|t| t.bytes.len() <= TRANSACTION_BYTES));
        let total: usize = tx.iter().map(|t| t.bytes.len()).sum();
        assert!(total > TRANSACTION_BYTES, "{total}: more than one datagram");
        for w in tx.windows(2) {
            assert!(w[1].first_seq > w[0].last_seq);
        }
        // 600 starts and 600 ends (the lead end element too) per map.
        let elements: usize = tx
            .iter()
            .flat_map(|t| {
                nl::messages(&t.bytes)
                    .map(Result::unwrap)
                    .collect::<Vec<_>>()
            })
            .filter(|m| m.kind == nft(NFT_MSG_NEWSETELEM))
            .map(|m| {
                let a = nl::attributes(&m.payload[4..]).unwrap();
                nl::attributes(nl::find(&a, 3).unwrap()).unwrap().len()
            })
            .sum();
        assert_eq!(elements, 2 * (1 + 600 + 600));
    }

    #[test]
    fn hostile_range_names_never_collide_and_always_fit() {
        // `a` and `a_attempts` collided with `_` as the separator.
        let long = "x".repeat(300);
        let rules = [
            rule("a", Protocol::Tcp, &[(1, 1)]),
            rule("a_attempts", Protocol::Tcp, &[(2, 2)]),
            rule(&long, Protocol::Tcp, &[(3, 3)]),
            rule(&long[..299], Protocol::Tcp, &[(4, 4)]),
        ];
        let mut all = std::collections::HashSet::new();
        for (i, r) in rules.iter().enumerate() {
            let n = names(r, i);
            for name in [&n.all, &n.closed, &n.attempts, &n.attempts_closed, &n.ports] {
                assert!(name.len() < NAME_MAX, "{name}");
                assert!(all.insert(name.clone()), "{name} twice");
            }
        }
        assert_eq!(
            names(&rules[1], 1).attempts_closed,
            "tcp.a_attempts.attempts_closed"
        );
        assert!(names(&rules[2], 2).chain.ends_with("~2"));
    }

    #[test]
    fn overlapping_ranges_are_refused_with_both_names() {
        let rules = [
            rule("a", Protocol::Udp, &[(10, 20)]),
            rule("b", Protocol::Udp, &[(20, 30)]),
            rule("c", Protocol::Tcp, &[(10, 30)]),
        ];
        let e = install_messages("t", &rules).unwrap_err();
        assert_eq!(e, "ranges a and b overlap on udp at port 20");
    }

    #[test]
    fn tcp_chains_count_syn_without_ack_after_the_local_check() {
        let r = rule("x", Protocol::Tcp, &[(10, 20)]);
        let n = names(&r, 0);
        let own = range_rules(&r, &n);
        assert_eq!(own.len(), 7);
        assert_eq!(own[0][0], Expr::FibDaddrType);
        assert_eq!(own[0][2], Expr::Return);
        assert_eq!(own[1], [Expr::CounterRef("tcp.x.all".into())]);
        assert_eq!(own[2][..3], syn_only());
        assert_eq!(own[3][0], Expr::SocketFound);
        assert_eq!(own[4], [Expr::CounterRef("tcp.x.closed".into())]);
        assert_eq!(own[5][3], Expr::CounterRef("tcp.x.attempts_closed".into()));
        assert_eq!(own[6][1], Expr::DynsetAdd("tcp.x.ports".into()));
        assert_eq!(base_rule(Protocol::Tcp)[3], Expr::Vmap("tcp.ranges".into()));
    }
}
