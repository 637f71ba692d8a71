//! The traffic counters on Linux (`--collector.traffic`): one nftables
//! table of our own, `inet portrange_exporter`, spoken to over
//! NETLINK_NETFILTER from the process (no `nft` binary at run time).
//!
//! The messages are written by hand, like the sock_diag ones in
//! [`super::netlink`]: `netlink-packet-netfilter` 0.4 (MIT) has table,
//! chain, rule and set messages, but not the stateful objects we count
//! with (`NFT_MSG_NEWOBJ`/`GETOBJ` named counters), the set element dump
//! with per-element counters, nor typed `socket`, `fib`, `dynset` and
//! `objref` expressions, and it would bring `netlink-packet-core`/`-utils`
//! and their error types for a dozen messages; `nftnl`/`mnl` bind the C
//! libraries, `rustables` is GPL-3.0, `nftables` runs the `nft` binary.
//! The encoders and decoders below are pure functions over bytes, unit
//! tested on bytes; [`NftTable`] is the thin I/O around them.
//!
//! What the table holds, per watched range and protocol (`<p>_<range>`,
//! `p` = `tcp`/`udp`):
//! ```text
//! table inet portrange_exporter {
//!   counter <p>_<range>_all / _closed / _attempts / _attempts_closed
//!   set <p>_<range>_ports { type inet_service; flags dynamic,timeout;
//!                           timeout 60s; size 4096; counter }
//!   chain prerouting { type filter hook prerouting priority -350; policy accept;
//!     meta l4proto <p> th dport A-B fib daddr type local jump <p>_<range>  # per interval
//!   }
//!   chain <p>_<range> {
//!     counter name <p>_<range>_all
//!     tcp flags & (syn|ack) == syn counter name <p>_<range>_attempts       # tcp
//!     socket transparent != 2 return     # a socket can take it: listening
//!     counter name <p>_<range>_closed
//!     tcp flags & (syn|ack) == syn counter name <p>_<range>_attempts_closed # tcp
//!     add @<p>_<range>_ports { th dport } # per-port counts of closed ports
//!   }
//! }
//! ```
//! Priority -350 runs after defragmentation (-400) and before raw (-300),
//! conntrack (-200), mangle and filter, so every packet is counted before
//! another table can drop it; the policy is accept and no rule drops, so
//! the table never changes what the host lets in. `fib daddr type local`
//! keeps forwarded packets (to containers behind a bridge) out: only
//! packets for this host's addresses count. The `socket` expression looks
//! the socket up at packet time (a listening, connected, request or
//! TIME_WAIT socket: `transparent` is 0 or 1 when one is found, and the
//! rule does not match when none is). `socket wildcard`, which FIELD_NOTES
//! tried, does not match request sockets, so the handshake's last ACK (or
//! a scanner's RST) to a listening port would count as closed. Install is one transaction that adds, deletes and
//! adds the table again, so a stale table from a crashed run is replaced
//! atomically and never doubled. Only our table is ever named.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::platform::traffic::{
    Counter, PORT_WINDOW_SECS, RuleReading, TrafficError, TrafficRule, TrafficTable,
};
use crate::ranges::Protocol;

/// Our table's name (family `inet`).
pub const TABLE: &str = "portrange_exporter";
/// The base chain's hook priority: after defragmentation, before raw.
pub const PRIORITY: i32 = -350;
/// The per-port set's size: at most this many closed ports are recorded
/// per window (the counters count every packet regardless). The kernel
/// dumps a set in 32 KiB chunks, each walk restarting from the start, so
/// reading 64,000 elements took 0.21 s here; 4,096 keep it to
/// milliseconds (docs/performance.md).
const SET_SIZE: u32 = crate::platform::traffic::PORT_SET_SIZE as u32;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
#[cfg(test)]
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_EXPR: u16 = 17;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 10;

const NFT_OBJECT_COUNTER: u32 = 1;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
/// `inet_service`, nft's datatype number for ports.
const TYPE_INET_SERVICE: u32 = 13;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_RANGE_EQ: u32 = 0;
const NFT_SOCKET_TRANSPARENT: u32 = 0;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const NFT_DYNSET_OP_ADD: u32 = 0;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A reply that does not follow the netlink / nf_tables layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{0} trailing bytes are too short for a netlink header")]
    ShortHeader(usize),
    #[error("message length {len} is invalid with {available} bytes left")]
    BadLength { len: usize, available: usize },
    #[error("attribute length {len} is invalid with {available} bytes left")]
    BadAttribute { len: usize, available: usize },
    #[error("a {what} attribute has {len} bytes")]
    BadValue { what: &'static str, len: usize },
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

/// The names for `rule`: `<p>_<range>...`.
pub fn names(rule: &TrafficRule) -> Names {
    let base = format!("{}_{}", rule.protocol.as_str(), rule.range);
    Names {
        all: format!("{base}_all"),
        closed: format!("{base}_closed"),
        attempts: format!("{base}_attempts"),
        attempts_closed: format!("{base}_attempts_closed"),
        ports: format!("{base}_ports"),
        chain: base,
    }
}

// ---- encoding ------------------------------------------------------------

/// Appends a netlink attribute, padded to 4 bytes.
fn attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(payload);
    pad(b);
}

fn pad(b: &mut Vec<u8>) {
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

fn attr_str(b: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(b, kind, &v);
}

fn attr_be32(b: &mut Vec<u8>, kind: u16, v: u32) {
    attr(b, kind, &v.to_be_bytes());
}

fn attr_be64(b: &mut Vec<u8>, kind: u16, v: u64) {
    attr(b, kind, &v.to_be_bytes());
}

/// Appends a nested attribute whose content `f` writes.
fn nest(b: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = b.len();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    f(b);
    let len = (b.len() - start) as u16;
    b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(b);
}

/// `NFTA_DATA_VALUE` inside `kind`.
fn data(b: &mut Vec<u8>, kind: u16, value: &[u8]) {
    nest(b, kind, |b| attr(b, NFTA_DATA_VALUE, value));
}

/// Appends one netlink message of the nf_tables subsystem.
fn message(
    b: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    f: impl FnOnce(&mut Vec<u8>),
) {
    let start = b.len();
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, resource id (big-endian).
    b.push(family);
    b.push(0);
    b.extend_from_slice(&res_id.to_be_bytes());
    f(b);
    let len = (b.len() - start) as u32;
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nft(kind: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | kind
}

/// One expression of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `meta l4proto` into reg 1.
    L4Proto,
    /// Transport header bytes into reg 1.
    Payload {
        offset: u32,
        len: u32,
    },
    Cmp {
        op: u32,
        value: Vec<u8>,
    },
    Range {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// reg 1 = reg 1 & mask (xor 0).
    And {
        mask: Vec<u8>,
    },
    /// `socket transparent` into reg 1 (any socket found).
    SocketFound,
    /// `fib daddr type` into reg 1.
    FibDaddrType,
    /// A named counter.
    CounterRef(String),
    /// `add @set { reg 1 }`, counting per element.
    DynsetAdd(String),
    Jump(String),
    Return,
}

/// Writes an expression's `NFTA_EXPR_DATA`.
type Body = Box<dyn Fn(&mut Vec<u8>)>;

fn expr(b: &mut Vec<u8>, e: &Expr) {
    let (name, body): (&str, Body) = match e {
        Expr::L4Proto => (
            "meta",
            Box::new(|b| {
                attr_be32(b, 1, NFT_REG_1); // NFTA_META_DREG
                attr_be32(b, 2, NFT_META_L4PROTO); // NFTA_META_KEY
            }),
        ),
        Expr::Payload { offset, len } => {
            let (offset, len) = (*offset, *len);
            (
                "payload",
                Box::new(move |b| {
                    attr_be32(b, 1, NFT_REG_1); // DREG
                    attr_be32(b, 2, NFT_PAYLOAD_TRANSPORT_HEADER); // BASE
                    attr_be32(b, 3, offset);
                    attr_be32(b, 4, len);
                }),
            )
        }
        Expr::Cmp { op, value } => {
            let (op, value) = (*op, value.clone());
            (
                "cmp",
                Box::new(move |b| {
                    attr_be32(b, 1, NFT_REG_1); // SREG
                    attr_be32(b, 2, op);
                    data(b, 3, &value);
                }),
            )
        }
        Expr::Range { from, to } => {
            let (from, to) = (from.clone(), to.clone());
            (
                "range",
                Box::new(move |b| {
                    attr_be32(b, 1, NFT_REG_1); // SREG
                    attr_be32(b, 2, NFT_RANGE_EQ);
                    data(b, 3, &from);
                    data(b, 4, &to);
                }),
            )
        }
        Expr::And { mask } => {
            let mask = mask.clone();
            (
                "bitwise",
                Box::new(move |b| {
                    attr_be32(b, 1, NFT_REG_1); // SREG
                    attr_be32(b, 2, NFT_REG_1); // DREG
                    attr_be32(b, 3, mask.len() as u32); // LEN
                    data(b, 4, &mask); // MASK
                    data(b, 5, &vec![0; mask.len()]); // XOR
                }),
            )
        }
        Expr::SocketFound => (
            "socket",
            Box::new(|b| {
                attr_be32(b, 1, NFT_SOCKET_TRANSPARENT); // KEY
                attr_be32(b, 2, NFT_REG_1); // DREG
            }),
        ),
        Expr::FibDaddrType => (
            "fib",
            Box::new(|b| {
                attr_be32(b, 1, NFT_REG_1); // DREG
                attr_be32(b, 2, NFT_FIB_RESULT_ADDRTYPE); // RESULT
                attr_be32(b, 3, NFTA_FIB_F_DADDR); // FLAGS
            }),
        ),
        Expr::CounterRef(name) => {
            let name = name.clone();
            (
                "objref",
                Box::new(move |b| {
                    attr_be32(b, 1, NFT_OBJECT_COUNTER); // IMM_TYPE
                    attr_str(b, 2, &name); // IMM_NAME
                }),
            )
        }
        Expr::DynsetAdd(set) => {
            let set = set.clone();
            (
                "dynset",
                Box::new(move |b| {
                    attr_str(b, 1, &set); // SET_NAME
                    attr_be32(b, 3, NFT_DYNSET_OP_ADD); // OP
                    attr_be32(b, 4, NFT_REG_1); // SREG_KEY
                    nest(b, 7, |b| attr_str(b, NFTA_EXPR_NAME, "counter")); // EXPR
                }),
            )
        }
        Expr::Jump(_) | Expr::Return => {
            let target = match e {
                Expr::Jump(c) => Some(c.clone()),
                _ => None,
            };
            (
                "immediate",
                Box::new(move |b| {
                    attr_be32(b, 1, NFT_REG_VERDICT); // DREG
                    nest(b, 2, |b| {
                        nest(b, NFTA_DATA_VERDICT, |b| {
                            let code = if target.is_some() {
                                NFT_JUMP
                            } else {
                                NFT_RETURN
                            };
                            attr(b, NFTA_VERDICT_CODE, &code.to_be_bytes());
                            if let Some(c) = &target {
                                attr_str(b, NFTA_VERDICT_CHAIN, c);
                            }
                        })
                    });
                }),
            )
        }
    };
    nest(b, NFTA_LIST_ELEM, |b| {
        attr_str(b, NFTA_EXPR_NAME, name);
        nest(b, NFTA_EXPR_DATA, |b| body(b));
    });
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// `tcp flags & (syn|ack) == syn`.
fn syn_only() -> [Expr; 3] {
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

/// The rules of the base chain and of each range's chain, as expression
/// lists: `(chain, expressions)` in order.
pub fn rules(rules: &[TrafficRule]) -> Vec<(String, Vec<Expr>)> {
    let mut out = Vec::new();
    for rule in rules {
        let n = names(rule);
        let tcp = rule.protocol == Protocol::Tcp;
        let mut own = Vec::new();
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
        out.extend(own.into_iter().map(|e| (n.chain.clone(), e)));
    }
    for rule in rules {
        let n = names(rule);
        for &(from, to) in &rule.intervals {
            let mut v = vec![
                Expr::L4Proto,
                Expr::Cmp {
                    op: NFT_CMP_EQ,
                    value: vec![protocol_number(rule.protocol)],
                },
                Expr::Payload { offset: 2, len: 2 },
            ];
            if from == to {
                v.push(Expr::Cmp {
                    op: NFT_CMP_EQ,
                    value: from.to_be_bytes().to_vec(),
                });
            } else {
                v.push(Expr::Range {
                    from: from.to_be_bytes().to_vec(),
                    to: to.to_be_bytes().to_vec(),
                });
            }
            v.push(Expr::FibDaddrType);
            v.push(Expr::Cmp {
                op: NFT_CMP_EQ,
                value: RTN_LOCAL.to_ne_bytes().to_vec(),
            });
            v.push(Expr::Jump(n.chain.clone()));
            out.push(("prerouting".to_string(), v));
        }
    }
    out
}

/// The install transaction: the table added, deleted and added again
/// (replacing a stale one atomically), then the counters, sets, chains
/// and rules of `rules`. Every message but the batch's ends asks for an
/// acknowledgement; returns the bytes and the sequence numbers that are
/// acknowledged.
pub fn install_batch(rules_in: &[TrafficRule], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut b = Vec::new();
    let mut seq = first_seq;
    let mut acked = Vec::new();
    let batch_id = NFNL_SUBSYS_NFTABLES;
    message(
        &mut b,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        batch_id,
        |_| {},
    );
    let mut next = |acked: &mut Vec<u32>| {
        seq += 1;
        acked.push(seq);
        seq
    };
    let table = |b: &mut Vec<u8>| attr_str(b, NFTA_TABLE_NAME, TABLE);
    let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    let s = next(&mut acked);
    message(
        &mut b,
        nft(NFT_MSG_NEWTABLE),
        create,
        s,
        NFPROTO_INET,
        0,
        table,
    );
    let s = next(&mut acked);
    message(
        &mut b,
        nft(NFT_MSG_DELTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        s,
        NFPROTO_INET,
        0,
        table,
    );
    let s = next(&mut acked);
    message(
        &mut b,
        nft(NFT_MSG_NEWTABLE),
        create,
        s,
        NFPROTO_INET,
        0,
        table,
    );
    for (i, rule) in rules_in.iter().enumerate() {
        let n = names(rule);
        let mut counters = vec![&n.all, &n.closed];
        if rule.protocol == Protocol::Tcp {
            counters.extend([&n.attempts, &n.attempts_closed]);
        }
        for c in counters {
            let s = next(&mut acked);
            message(
                &mut b,
                nft(NFT_MSG_NEWOBJ),
                create,
                s,
                NFPROTO_INET,
                0,
                |b| {
                    attr_str(b, NFTA_OBJ_TABLE, TABLE);
                    attr_str(b, NFTA_OBJ_NAME, c);
                    attr_be32(b, NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
                    nest(b, NFTA_OBJ_DATA, |b| {
                        attr_be64(b, NFTA_COUNTER_BYTES, 0);
                        attr_be64(b, NFTA_COUNTER_PACKETS, 0);
                    });
                },
            );
        }
        let s = next(&mut acked);
        message(
            &mut b,
            nft(NFT_MSG_NEWSET),
            create,
            s,
            NFPROTO_INET,
            0,
            |b| {
                attr_str(b, NFTA_SET_TABLE, TABLE);
                attr_str(b, NFTA_SET_NAME, &n.ports);
                attr_be32(b, NFTA_SET_FLAGS, NFT_SET_TIMEOUT | NFT_SET_EVAL);
                attr_be32(b, NFTA_SET_KEY_TYPE, TYPE_INET_SERVICE);
                attr_be32(b, NFTA_SET_KEY_LEN, 2);
                nest(b, NFTA_SET_DESC, |b| {
                    attr_be32(b, NFTA_SET_DESC_SIZE, SET_SIZE)
                });
                attr_be32(b, NFTA_SET_ID, i as u32 + 1);
                attr_be64(b, NFTA_SET_TIMEOUT, PORT_WINDOW_SECS * 1000);
                nest(b, NFTA_SET_EXPR, |b| {
                    attr_str(b, NFTA_EXPR_NAME, "counter");
                });
            },
        );
        let s = next(&mut acked);
        message(
            &mut b,
            nft(NFT_MSG_NEWCHAIN),
            create,
            s,
            NFPROTO_INET,
            0,
            |b| {
                attr_str(b, NFTA_CHAIN_TABLE, TABLE);
                attr_str(b, NFTA_CHAIN_NAME, &n.chain);
            },
        );
    }
    let s = next(&mut acked);
    message(
        &mut b,
        nft(NFT_MSG_NEWCHAIN),
        create,
        s,
        NFPROTO_INET,
        0,
        |b| {
            attr_str(b, NFTA_CHAIN_TABLE, TABLE);
            attr_str(b, NFTA_CHAIN_NAME, "prerouting");
            nest(b, NFTA_CHAIN_HOOK, |b| {
                attr_be32(b, NFTA_HOOK_HOOKNUM, NF_INET_PRE_ROUTING);
                attr(b, NFTA_HOOK_PRIORITY, &PRIORITY.to_be_bytes());
            });
            attr_be32(b, NFTA_CHAIN_POLICY, NF_ACCEPT);
            attr_str(b, NFTA_CHAIN_TYPE, "filter");
        },
    );
    for (chain, exprs) in rules(rules_in) {
        let s = next(&mut acked);
        message(
            &mut b,
            nft(NFT_MSG_NEWRULE),
            create | NLM_F_APPEND,
            s,
            NFPROTO_INET,
            0,
            |b| {
                attr_str(b, NFTA_RULE_TABLE, TABLE);
                attr_str(b, NFTA_RULE_CHAIN, &chain);
                nest(b, NFTA_RULE_EXPRESSIONS, |b| {
                    for e in &exprs {
                        expr(b, e);
                    }
                });
            },
        );
    }
    seq += 1;
    message(
        &mut b,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        batch_id,
        |_| {},
    );
    (b, acked)
}

/// The transaction that deletes our table.
pub fn remove_batch(first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut b = Vec::new();
    let id = NFNL_SUBSYS_NFTABLES;
    message(
        &mut b,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        first_seq,
        0,
        id,
        |_| {},
    );
    message(
        &mut b,
        nft(NFT_MSG_DELTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        first_seq + 1,
        NFPROTO_INET,
        0,
        |b| attr_str(b, NFTA_TABLE_NAME, TABLE),
    );
    message(
        &mut b,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        first_seq + 2,
        0,
        id,
        |_| {},
    );
    (b, vec![first_seq + 1])
}

/// A dump of our table's named counters.
pub fn counters_request(seq: u32) -> Vec<u8> {
    let mut b = Vec::new();
    message(
        &mut b,
        nft(NFT_MSG_GETOBJ),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
        |b| {
            attr_str(b, NFTA_OBJ_TABLE, TABLE);
            attr_be32(b, NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        },
    );
    b
}

/// A dump of one set's elements.
pub fn elements_request(set: &str, seq: u32) -> Vec<u8> {
    let mut b = Vec::new();
    message(
        &mut b,
        nft(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
        |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, TABLE);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
        },
    );
    b
}

// ---- decoding ------------------------------------------------------------

/// One netlink message of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An acknowledgement (0) or an error (a negative errno) for `seq`.
    Ack {
        seq: u32,
        errno: i32,
    },
    Done {
        seq: u32,
    },
    /// A message of the nf_tables subsystem: its type, seq and the
    /// attributes after `nfgenmsg`.
    Nft {
        kind: u16,
        seq: u32,
        attrs: &'a [u8],
    },
}

/// Splits a datagram into messages.
pub fn messages(mut b: &[u8]) -> Result<Vec<Reply<'_>>, DecodeError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < NLMSG_HDRLEN {
            return Err(DecodeError::ShortHeader(b.len()));
        }
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(DecodeError::BadLength {
                len,
                available: b.len(),
            });
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
        let payload = &b[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(DecodeError::BadValue {
                        what: "nlmsgerr",
                        len: payload.len(),
                    });
                }
                let errno = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
                out.push(Reply::Ack { seq, errno });
            }
            NLMSG_DONE => out.push(Reply::Done { seq }),
            _ if kind >> 8 == NFNL_SUBSYS_NFTABLES => {
                if payload.len() < 4 {
                    return Err(DecodeError::BadValue {
                        what: "nfgenmsg",
                        len: payload.len(),
                    });
                }
                out.push(Reply::Nft {
                    kind: kind & 0xff,
                    seq,
                    attrs: &payload[4..],
                });
            }
            _ => {}
        }
        let aligned = (len + 3) & !3;
        b = &b[aligned.min(b.len())..];
    }
    Ok(out)
}

/// The attributes in `b`, type (flags masked off) and payload.
pub fn attributes(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < 4 || len > b.len() {
            return Err(DecodeError::BadAttribute {
                len,
                available: b.len(),
            });
        }
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        out.push((kind, &b[4..len]));
        let aligned = (len + 3) & !3;
        b = &b[aligned.min(b.len())..];
    }
    Ok(out)
}

fn find<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn be64(what: &'static str, v: &[u8]) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        DecodeError::BadValue { what, len: v.len() }
    })?))
}

fn string(v: &[u8]) -> String {
    let v = v.split(|&c| c == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(v).into_owned()
}

/// The counter in a `NFTA_COUNTER_*` attribute list.
fn counter(b: &[u8]) -> Result<Counter, DecodeError> {
    let a = attributes(b)?;
    Ok(Counter {
        bytes: find(&a, NFTA_COUNTER_BYTES).map_or(Ok(0), |v| be64("counter bytes", v))?,
        packets: find(&a, NFTA_COUNTER_PACKETS).map_or(Ok(0), |v| be64("counter packets", v))?,
    })
}

/// A named counter of a `NEWOBJ` message: its name and value.
pub fn decode_object(attrs: &[u8]) -> Result<Option<(String, Counter)>, DecodeError> {
    let a = attributes(attrs)?;
    let (Some(name), Some(data)) = (find(&a, NFTA_OBJ_NAME), find(&a, NFTA_OBJ_DATA)) else {
        return Ok(None);
    };
    Ok(Some((string(name), counter(data)?)))
}

/// The counter of an expression (`NFTA_EXPR_NAME` "counter").
fn expr_counter(b: &[u8]) -> Result<Option<Counter>, DecodeError> {
    let a = attributes(b)?;
    if find(&a, NFTA_EXPR_NAME).map(string).as_deref() != Some("counter") {
        return Ok(None);
    }
    match find(&a, NFTA_EXPR_DATA) {
        Some(d) => Ok(Some(counter(d)?)),
        None => Ok(Some(Counter::default())),
    }
}

/// The elements of a `NEWSETELEM` message: each port and its counter.
pub fn decode_elements(attrs: &[u8]) -> Result<Vec<(u16, Counter)>, DecodeError> {
    let a = attributes(attrs)?;
    let mut out = Vec::new();
    let Some(list) = find(&a, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    for (_, elem) in attributes(list)? {
        let e = attributes(elem)?;
        let Some(key) = find(&e, NFTA_SET_ELEM_KEY) else {
            continue;
        };
        let k = attributes(key)?;
        let Some(v) = find(&k, NFTA_DATA_VALUE) else {
            continue;
        };
        let port = u16::from_be_bytes(v.get(..2).and_then(|v| v.try_into().ok()).ok_or(
            DecodeError::BadValue {
                what: "port key",
                len: v.len(),
            },
        )?);
        let mut c = None;
        if let Some(x) = find(&e, NFTA_SET_ELEM_EXPR) {
            c = expr_counter(x)?;
        }
        if c.is_none()
            && let Some(list) = find(&e, NFTA_SET_ELEM_EXPRESSIONS)
        {
            for (_, x) in attributes(list)? {
                if let Some(found) = expr_counter(x)? {
                    c = Some(found);
                    break;
                }
            }
        }
        out.push((port, c.unwrap_or_default()));
    }
    Ok(out)
}

// ---- I/O -------------------------------------------------------------------

/// How long one exchange with the kernel may take.
const TIMEOUT: Duration = Duration::from_secs(2);

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

fn open(action: &'static str) -> Result<OwnedFd, TrafficError> {
    rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(rustix::net::netlink::NETFILTER),
    )
    .map_err(|e| TrafficError::Failed {
        table: TABLE,
        action,
        detail: format!("opening a NETLINK_NETFILTER socket: {e}"),
    })
}

fn failed(action: &'static str, errno: i32) -> TrafficError {
    if errno == libc::EPERM || errno == libc::EACCES {
        TrafficError::Permission {
            table: TABLE,
            action,
            detail: errno_text(errno),
        }
    } else {
        TrafficError::Failed {
            table: TABLE,
            action,
            detail: errno_text(errno),
        }
    }
}

fn send(fd: &OwnedFd, b: &[u8], action: &'static str) -> Result<(), TrafficError> {
    rustix::net::sendto(fd, b, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))
        .map(|_| ())
        .map_err(|e| failed(action, e.raw_os_error()))
}

/// Receives datagrams until `each` says done, within [`TIMEOUT`].
fn receive(
    fd: &OwnedFd,
    action: &'static str,
    mut each: impl FnMut(Reply<'_>) -> Result<bool, TrafficError>,
) -> Result<(), TrafficError> {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        super::netlink::wait_until(fd, deadline).map_err(|e| TrafficError::Failed {
            table: TABLE,
            action,
            detail: e.map_or("no answer from the kernel within 2 s".into(), |e| {
                e.to_string()
            }),
        })?;
        let n = match rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(failed(action, e.raw_os_error())),
        };
        let replies = messages(&buf[..n]).map_err(|e| TrafficError::Failed {
            table: TABLE,
            action,
            detail: e.to_string(),
        })?;
        for r in replies {
            if each(r)? {
                return Ok(());
            }
        }
    }
}

/// Sends a transaction and waits for every acknowledgement; the first
/// error fails it (the kernel then applies none of it).
fn transact(
    (bytes, acked): (Vec<u8>, Vec<u32>),
    action: &'static str,
    tolerate: Option<i32>,
) -> Result<(), TrafficError> {
    let fd = open(action)?;
    send(&fd, &bytes, action)?;
    let mut pending: std::collections::HashSet<u32> = acked.into_iter().collect();
    receive(&fd, action, |r| {
        if let Reply::Ack { seq, errno } = r {
            pending.remove(&seq);
            // Any error on this fresh socket is this transaction's: also
            // one for the batch's begin message, which is how the kernel
            // refuses a batch from a process without CAP_NET_ADMIN.
            if errno != 0 {
                if Some(-errno) == tolerate {
                    return Ok(true);
                }
                return Err(failed(action, -errno));
            }
        }
        Ok(pending.is_empty())
    })
}

/// Runs a dump, handing each nf_tables message of type `kind` to `each`.
fn dump(
    request: Vec<u8>,
    seq: u32,
    kind: u16,
    action: &'static str,
    mut each: impl FnMut(&[u8]) -> Result<(), TrafficError>,
) -> Result<(), TrafficError> {
    let fd = open(action)?;
    send(&fd, &request, action)?;
    receive(&fd, action, |r| match r {
        Reply::Done { seq: s } if s == seq => Ok(true),
        Reply::Ack { seq: s, errno } if s == seq => {
            if errno == 0 {
                Ok(true)
            } else if -errno == libc::ENOENT {
                Err(TrafficError::NotInstalled { table: TABLE })
            } else {
                Err(failed(action, -errno))
            }
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
    })
}

fn decode_failed(action: &'static str) -> impl Fn(DecodeError) -> TrafficError {
    move |e| TrafficError::Failed {
        table: TABLE,
        action,
        detail: e.to_string(),
    }
}

/// The exporter's nftables table.
pub struct NftTable;

impl TrafficTable for NftTable {
    fn install(&mut self, rules: &[TrafficRule]) -> Result<(), TrafficError> {
        transact(install_batch(rules, 1), "installed", None)
    }

    fn read(&mut self, rules: &[TrafficRule]) -> Result<Vec<RuleReading>, TrafficError> {
        const READ: &str = "read";
        let mut counters = std::collections::HashMap::new();
        dump(counters_request(1), 1, NFT_MSG_NEWOBJ, READ, |attrs| {
            if let Some((name, c)) = decode_object(attrs).map_err(decode_failed(READ))? {
                counters.insert(name, c);
            }
            Ok(())
        })?;
        let mut out = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let n = names(rule);
            let get = |name: &str| {
                counters
                    .get(name)
                    .copied()
                    .ok_or(TrafficError::NotInstalled { table: TABLE })
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
            let seq = i as u32 + 2;
            dump(
                elements_request(&n.ports, seq),
                seq,
                NFT_MSG_NEWSETELEM,
                READ,
                |attrs| {
                    reading
                        .closed_ports
                        .extend(decode_elements(attrs).map_err(decode_failed(READ))?);
                    Ok(())
                },
            )?;
            out.push(reading);
        }
        Ok(out)
    }

    fn remove(&mut self) -> Result<(), TrafficError> {
        transact(remove_batch(1), "removed", Some(libc::ENOENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(range: &str, protocol: Protocol, intervals: &[(u16, u16)]) -> TrafficRule {
        TrafficRule {
            range: range.into(),
            protocol,
            intervals: intervals.to_vec(),
        }
    }

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
    fn the_install_batch_replaces_the_table_in_one_transaction() {
        let (b, acked) = install_batch(&[rule("framehawk", Protocol::Udp, &[(3224, 3324)])], 1);
        let mut kinds = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            let family = rest[16];
            kinds.push((kind, flags & NLM_F_ACK != 0, family));
            assert_eq!(len % 4, 0, "messages stay aligned");
            rest = &rest[len..];
        }
        let t = |k| nft(k);
        assert_eq!(kinds.first(), Some(&(NFNL_MSG_BATCH_BEGIN, false, 0)));
        assert_eq!(kinds.last(), Some(&(NFNL_MSG_BATCH_END, false, 0)));
        // add, delete, add: a stale table is replaced, never doubled.
        assert_eq!(
            &kinds[1..4],
            &[
                (t(NFT_MSG_NEWTABLE), true, NFPROTO_INET),
                (t(NFT_MSG_DELTABLE), true, NFPROTO_INET),
                (t(NFT_MSG_NEWTABLE), true, NFPROTO_INET)
            ]
        );
        // udp: two counters, one set, two chains, 4 rules in the range's
        // chain (count, return if a socket takes it, count closed, per
        // port) and one jump.
        let count = |k| kinds.iter().filter(|x| x.0 == t(k)).count();
        assert_eq!(count(NFT_MSG_NEWOBJ), 2);
        assert_eq!(count(NFT_MSG_NEWSET), 1);
        assert_eq!(count(NFT_MSG_NEWCHAIN), 2);
        assert_eq!(count(NFT_MSG_NEWRULE), 5);
        assert_eq!(acked.len(), kinds.len() - 2, "every message but the ends");
        // The batch messages name the nf_tables subsystem.
        assert_eq!(&b[18..20], &NFNL_SUBSYS_NFTABLES.to_be_bytes());
    }

    #[test]
    fn tcp_rules_count_syn_without_ack_and_jump_per_interval() {
        let r = rules(&[rule("x", Protocol::Tcp, &[(10, 20), (30, 30)])]);
        let chains: Vec<&str> = r.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            chains,
            [
                "tcp_x",
                "tcp_x",
                "tcp_x",
                "tcp_x",
                "tcp_x",
                "tcp_x",
                "prerouting",
                "prerouting"
            ]
        );
        assert_eq!(r[1].1[..3], syn_only());
        assert_eq!(r[1].1[3], Expr::CounterRef("tcp_x_attempts".into()));
        assert_eq!(r[2].1[0], Expr::SocketFound);
        assert_eq!(r[2].1[2], Expr::Return);
        assert_eq!(r[3].1[0], Expr::CounterRef("tcp_x_closed".into()));
        assert_eq!(r[4].1[3], Expr::CounterRef("tcp_x_attempts_closed".into()));
        assert_eq!(r[5].1[1], Expr::DynsetAdd("tcp_x_ports".into()));
        assert_eq!(
            r[6].1[3],
            Expr::Range {
                from: vec![0, 10],
                to: vec![0, 20]
            }
        );
        assert_eq!(
            r[7].1[3],
            Expr::Cmp {
                op: NFT_CMP_EQ,
                value: vec![0, 30]
            }
        );
        assert_eq!(r[7].1.last(), Some(&Expr::Jump("tcp_x".into())));
    }

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(payload);
        pad(&mut b);
        b
    }

    #[test]
    fn decodes_counters_elements_acks_and_done() {
        let mut obj = vec![NFPROTO_INET, 0, 0, 0];
        attr_str(&mut obj, NFTA_OBJ_TABLE, TABLE);
        attr_str(&mut obj, NFTA_OBJ_NAME, "udp_x_all");
        attr_be32(&mut obj, NFTA_OBJ_TYPE, 1);
        nest(&mut obj, NFTA_OBJ_DATA, |b| {
            attr_be64(b, NFTA_COUNTER_BYTES, 1400);
            attr_be64(b, NFTA_COUNTER_PACKETS, 50);
        });
        let mut elems = vec![NFPROTO_INET, 0, 0, 0];
        attr_str(&mut elems, NFTA_SET_ELEM_LIST_TABLE, TABLE);
        nest(&mut elems, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
            for (port, packets) in [(3300u16, 30u64), (3301, 2)] {
                nest(b, NFTA_LIST_ELEM, |b| {
                    data(b, NFTA_SET_ELEM_KEY, &port.to_be_bytes());
                    attr_be64(b, 5, 59000); // NFTA_SET_ELEM_EXPIRATION
                    nest(b, NFTA_SET_ELEM_EXPRESSIONS, |b| {
                        nest(b, NFTA_LIST_ELEM, |b| {
                            attr_str(b, NFTA_EXPR_NAME, "counter");
                            nest(b, NFTA_EXPR_DATA, |b| {
                                attr_be64(b, NFTA_COUNTER_BYTES, packets * 10);
                                attr_be64(b, NFTA_COUNTER_PACKETS, packets);
                            });
                        });
                    });
                });
            }
        });
        let mut wire = nlmsg(nft(NFT_MSG_NEWOBJ), 7, &obj);
        wire.extend(nlmsg(nft(NFT_MSG_NEWSETELEM), 7, &elems));
        wire.extend(nlmsg(NLMSG_ERROR, 8, &(-1i32).to_ne_bytes()));
        wire.extend(nlmsg(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
        let m = messages(&wire).unwrap();
        assert_eq!(m.len(), 4);
        let Reply::Nft { kind, attrs, .. } = &m[0] else {
            panic!("{m:?}")
        };
        assert_eq!(*kind, NFT_MSG_NEWOBJ);
        assert_eq!(
            decode_object(attrs).unwrap(),
            Some((
                "udp_x_all".into(),
                Counter {
                    packets: 50,
                    bytes: 1400
                }
            ))
        );
        let Reply::Nft { attrs, .. } = &m[1] else {
            panic!()
        };
        assert_eq!(
            decode_elements(attrs).unwrap(),
            vec![
                (
                    3300,
                    Counter {
                        packets: 30,
                        bytes: 300
                    }
                ),
                (
                    3301,
                    Counter {
                        packets: 2,
                        bytes: 20
                    }
                )
            ]
        );
        assert_eq!(m[2], Reply::Ack { seq: 8, errno: -1 });
        assert_eq!(m[3], Reply::Done { seq: 7 });
    }

    #[test]
    fn malformed_replies_are_errors_never_panics() {
        assert_eq!(messages(&[1, 2, 3]), Err(DecodeError::ShortHeader(3)));
        let mut bad = nlmsg(NLMSG_DONE, 1, &[0; 4]);
        bad[0] = 200;
        assert!(matches!(messages(&bad), Err(DecodeError::BadLength { .. })));
        assert!(matches!(
            attributes(&[2, 0, 1, 0]),
            Err(DecodeError::BadAttribute { .. })
        ));
        // Every truncation of a real reply decodes or fails cleanly.
        let mut obj = vec![NFPROTO_INET, 0, 0, 0];
        attr_str(&mut obj, NFTA_OBJ_NAME, "tcp_x_all");
        nest(&mut obj, NFTA_OBJ_DATA, |b| {
            attr_be64(b, NFTA_COUNTER_PACKETS, 5)
        });
        let wire = nlmsg(nft(NFT_MSG_NEWOBJ), 1, &obj);
        for cut in 0..wire.len() {
            if let Ok(m) = messages(&wire[..cut]) {
                for r in m {
                    if let Reply::Nft { attrs, .. } = r {
                        let _ = decode_object(attrs);
                        let _ = decode_elements(attrs);
                    }
                }
            }
        }
    }

    #[test]
    fn the_kernel_counts_listening_and_closed_udp_exactly() {
        // In a private network namespace (root only): the table installed,
        // 5 datagrams to a listening port and 3 to a closed one, read back.
        std::thread::spawn(|| {
            // SAFETY: unshare(2) with CLONE_NEWNET changes only this
            // thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("SKIPPED the_kernel_counts_listening_and_closed_udp_exactly: needs root");
                return;
            }
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(up.success());
            let rules = [
                rule("a", Protocol::Udp, &[(3224, 3324)]),
                rule("a", Protocol::Tcp, &[(3224, 3324)]),
            ];
            let mut t = NftTable;
            t.install(&rules).unwrap();
            // Twice: the second replaces the first.
            t.install(&rules).unwrap();
            let listener = std::net::UdpSocket::bind("127.0.0.1:3224").unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..5 {
                sender.send_to(b"0123456789", "127.0.0.1:3224").unwrap();
            }
            for _ in 0..3 {
                sender.send_to(b"x", "127.0.0.1:3300").unwrap();
            }
            let r = t.read(&rules).unwrap();
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
            drop(listener);
            t.remove().unwrap();
            t.remove().unwrap();
            assert_eq!(
                t.read(&rules),
                Err(TrafficError::NotInstalled { table: TABLE })
            );
        })
        .join()
        .unwrap();
    }
}
