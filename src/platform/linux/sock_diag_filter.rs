//! The sock_diag port filter: compiles "the local port is in this set"
//! into the `inet_diag_bc_op` bytecode the kernel runs on every socket of
//! a dump (`INET_DIAG_REQ_BYTECODE`), so that it copies only the watched
//! ports' sockets to user space. A pure function over a [`PortSet`],
//! unit-tested against a model of the kernel's interpreter and audit; the
//! dump that carries it is [`super::sock_diag`].

use crate::ranges::PortSet;

/// Bytecode op codes (`enum` in `linux/inet_diag.h`).
const BC_JMP: u8 = 1;
const BC_S_GE: u8 = 2;
const BC_S_LE: u8 = 3;

/// The largest program an `INET_DIAG_REQ_BYTECODE` attribute can carry:
/// its `nla_len` is a u16 that counts its own 4-byte header, and ops are
/// 4-byte aligned.
pub const MAX_PROGRAM_BYTES: usize = (u16::MAX as usize - 4) & !3;

/// Boundaries decided one after another at a leaf of the search tree (see
/// [`compile_filter`]), at least.
const MIN_LEAF: usize = 8;

/// How many ops the kernel's audit may visit to check a program's inner
/// jumps: `inet_diag_bc_audit` checks each jump that lands inside the
/// program by walking from its start to the target (`valid_cc`), once per
/// dump request, so a tree of many inner nodes over a long program costs
/// nodes × length before the first socket (about 1 ns a visit: 4,001
/// single ports as a tree down to leaves of 8 would cost 1.5 ms a dump).
/// Leaves grow until the audit stays under this, about 0.1-0.2 ms.
const AUDIT_BUDGET: usize = 200_000;

/// When even a linear program of the exact set does not fit, the set is
/// coarsened (the closest intervals merged) to at most this many
/// intervals; the dump then carries a few sockets too many, which the
/// exact check in user space drops.
const COARSE_INTERVALS: usize = 2048;

/// Where a failed comparison (or a `JMP`) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The end of the program: the socket is kept.
    Accept,
    /// 4 bytes past the end: the socket is dropped.
    Reject,
    /// The op with this index.
    Op(usize),
}

/// One op before layout: a `S_GE`/`S_LE` comparison with its port, or a
/// `JMP`. Passing falls through to the next op; failing goes to `no`.
#[derive(Clone, Copy, Debug)]
struct Op {
    code: u8,
    port: u16,
    no: Target,
}

impl Op {
    fn size(&self) -> usize {
        if self.code == BC_JMP { 4 } else { 8 }
    }
}

/// Compiles "the source port is in `ports`" into `inet_diag_bc_op`
/// bytecode whose cost per socket follows the logarithm of the number of
/// intervals, not the number.
///
/// The set is described by its boundaries `B_0 < B_1 < ...`: each
/// interval's first port and the port after its last (0 and 65536 left
/// out). A port's verdict is the parity of the number of boundaries at or
/// below it. The kernel's audit (`inet_diag_bc_audit`) allows forward
/// jumps only, and every op must be reached from the first by passing ones
/// (a failed comparison may jump to any such op, to the end, which
/// accepts, or 4 bytes past it, which rejects). So:
///
/// - Two guards first: `S_GE B_0` (below: the verdict of ports under the
///   set) and `S_LE B_last - 1` (above: the verdict of ports over it); a
///   socket outside the set's span costs one or two comparisons, as with
///   one interval.
/// - Then a balanced binary search over the boundaries between: an inner
///   node `S_GE B_m` falls through into the code for ports at or above
///   `B_m` and jumps, on failure, to the code for ports below, laid out
///   after it.
/// - At a leaf, a few boundaries are decided one after another: `S_GE B_i`
///   jumping straight to the verdict of the gap below `B_i`, then a `JMP`
///   to the verdict of the last gap. Leaves hold 8 boundaries, more when
///   the program would not fit or its audit would cost too much
///   ([`AUDIT_BUDGET`]).
///
/// Each boundary costs one 8-byte comparison and each leaf a 4-byte
/// `JMP`, so 4,001 single ports fit the 64 KiB attribute. A port outside
/// the set's span is decided by the guards; one inside it in
/// log2(leaves) + leaf size comparisons: 2 + 6 + 16 for 1,000 intervals,
/// 2 + 5 + 256 for 4,001 (where the audit caps the tree), against up to
/// 8,002 for an OR of intervals. A set too large even for a linear
/// program is coarsened first (see [`COARSE_INTERVALS`]); [`super::sock_diag::dump`] filters
/// exactly in user space anyway.
/// One interval compiles to the 16 bytes `ss` makes of
/// `sport >= :lo and sport <= :hi`. Returns an empty program (no filter)
/// for an empty set and for every port.
pub fn compile_filter(ports: &PortSet) -> Vec<u8> {
    let exact = boundaries(ports.intervals());
    let first_in = ports.contains(0);
    let mut leaf = MIN_LEAF;
    loop {
        let ops = plan(&exact, first_in, leaf);
        if program_size(&ops) <= MAX_PROGRAM_BYTES && audit_cost(&ops) <= AUDIT_BUDGET {
            return layout(&ops);
        }
        if leaf >= exact.len() {
            break;
        }
        leaf *= 2;
    }
    let coarse = coarsen(ports.intervals(), COARSE_INTERVALS);
    let ops = plan(&boundaries(&coarse), first_in, MIN_LEAF * 2);
    debug_assert!(program_size(&ops) <= MAX_PROGRAM_BYTES);
    layout(&ops)
}

/// The ports where membership changes: each interval's first port and
/// the one after its last, leaving out 0 and 65536.
fn boundaries(intervals: &[(u16, u16)]) -> Vec<u16> {
    let mut b = Vec::with_capacity(intervals.len() * 2);
    for &(lo, hi) in intervals {
        if lo > 0 {
            b.push(lo);
        }
        if hi < u16::MAX {
            b.push(hi + 1);
        }
    }
    b
}

/// At most `max` intervals covering `intervals`: the smallest gaps are
/// filled first.
fn coarsen(intervals: &[(u16, u16)], max: usize) -> Vec<(u16, u16)> {
    if intervals.len() <= max {
        return intervals.to_vec();
    }
    let mut gaps: Vec<(u16, usize)> = intervals
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].0 - w[0].1, i))
        .collect();
    gaps.sort_unstable();
    let mut fill = vec![false; intervals.len()];
    for &(_, i) in &gaps[..intervals.len() - max] {
        fill[i] = true;
    }
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(max);
    let mut merging = false;
    for (i, &(lo, hi)) in intervals.iter().enumerate() {
        match out.last_mut() {
            Some(last) if merging => last.1 = hi,
            _ => out.push((lo, hi)),
        }
        merging = fill[i];
    }
    out
}

/// The ops of the program for these boundaries, before layout.
fn plan(b: &[u16], first_in: bool, leaf: usize) -> Vec<Op> {
    let n = b.len();
    if n == 0 {
        return Vec::new();
    }
    // The verdict of gap i: the ports in [B_{i-1}, B_i).
    let verdict = |i: usize| {
        if i.is_multiple_of(2) == first_in {
            Target::Accept
        } else {
            Target::Reject
        }
    };
    let mut ops = Vec::with_capacity(n + n / leaf + 2);
    if n >= 2 {
        ops.push(Op {
            code: BC_S_GE,
            port: b[0],
            no: verdict(0),
        });
        ops.push(Op {
            code: BC_S_LE,
            port: b[n - 1] - 1,
            no: verdict(n),
        });
        search(b, 1, n - 1, leaf, &verdict, &mut ops);
    } else {
        search(b, 0, n, leaf, &verdict, &mut ops);
    }
    // A final jump to the end is the end.
    if ops
        .last()
        .is_some_and(|o| o.code == BC_JMP && o.no == Target::Accept)
    {
        ops.pop();
    }
    ops
}

/// Emits the code deciding a port known to lie in `[B_{j-1}, B_k)`
/// (boundaries `j..k` undecided).
fn search(
    b: &[u16],
    j: usize,
    k: usize,
    leaf: usize,
    verdict: &dyn Fn(usize) -> Target,
    ops: &mut Vec<Op>,
) {
    if k - j <= leaf {
        for (i, &port) in b.iter().enumerate().take(k).skip(j) {
            ops.push(Op {
                code: BC_S_GE,
                port,
                no: verdict(i),
            });
        }
        ops.push(Op {
            code: BC_JMP,
            port: 0,
            no: verdict(k),
        });
        return;
    }
    let m = j + (k - j) / 2;
    let node = ops.len();
    ops.push(Op {
        code: BC_S_GE,
        port: b[m],
        no: Target::Reject, // patched below
    });
    search(b, m + 1, k, leaf, verdict, ops);
    ops[node].no = Target::Op(ops.len());
    search(b, j, m, leaf, verdict, ops);
}

/// The ops the kernel's audit visits to check the inner jumps of `ops`:
/// for each, the ops before its target.
fn audit_cost(ops: &[Op]) -> usize {
    ops.iter()
        .filter_map(|o| match o.no {
            Target::Op(t) => Some(t),
            _ => None,
        })
        .sum()
}

fn program_size(ops: &[Op]) -> usize {
    ops.iter().map(Op::size).sum()
}

/// Lays the ops out as bytes, resolving jump targets to byte offsets.
fn layout(ops: &[Op]) -> Vec<u8> {
    let mut at = Vec::with_capacity(ops.len() + 1);
    let mut offset = 0usize;
    for o in ops {
        at.push(offset);
        offset += o.size();
    }
    let end = offset;
    let mut bc = Vec::with_capacity(end);
    for (i, o) in ops.iter().enumerate() {
        let to = match o.no {
            Target::Accept => end,
            Target::Reject => end + 4,
            Target::Op(t) => at.get(t).copied().unwrap_or(end),
        };
        let no = u16::try_from(to - at[i]).expect("programs are under 64 KiB");
        op(&mut bc, o.code, o.size() as u8, no);
        if o.code != BC_JMP {
            op(&mut bc, 0, 0, o.port);
        }
    }
    bc
}

fn op(bc: &mut Vec<u8>, code: u8, yes: u8, no: u16) {
    bc.push(code);
    bc.push(yes);
    bc.extend_from_slice(&no.to_ne_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn set(intervals: &[(u16, u16)]) -> PortSet {
        PortSet::from_intervals(intervals.to_vec())
    }

    fn ops(bc: &[u8]) -> Vec<(u8, u8, u16)> {
        bc.chunks(4)
            .map(|c| (c[0], c[1], u16::from_ne_bytes([c[2], c[3]])))
            .collect()
    }

    /// The kernel's `inet_diag_bc_run`, for the ops the compiler emits:
    /// passing moves by `yes`, failing by `no`; the socket is kept when
    /// execution ends exactly at the end. Returns the verdict and the
    /// number of ops run.
    fn run(bc: &[u8], sport: u16) -> (bool, usize) {
        let mut at = 0usize;
        let mut len = bc.len() as isize;
        let mut steps = 0;
        while len > 0 {
            let (code, yes, no) = (
                bc[at],
                isize::from(bc[at + 1]),
                u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as isize,
            );
            let arg = || u16::from_ne_bytes([bc[at + 6], bc[at + 7]]);
            let pass = match code {
                BC_JMP => false,
                BC_S_GE => sport >= arg(),
                BC_S_LE => sport <= arg(),
                other => panic!("op {other} is not emitted by compile_filter"),
            };
            let step = if pass { yes } else { no };
            at = (at as isize + step) as usize;
            len -= step;
            steps += 1;
        }
        (len == 0, steps)
    }

    /// The kernel's `inet_diag_bc_audit` (with `valid_cc`), for the ops
    /// the compiler emits: `Err` names the first rule broken.
    fn audit(bc: &[u8]) -> Result<(), String> {
        if bc.len() < 4 || bc.len() > MAX_PROGRAM_BYTES {
            return Err(format!("length {}", bc.len()));
        }
        let total = bc.len() as isize;
        let valid_cc = |cc: isize| {
            let mut len = total;
            let mut at = 0usize;
            while len >= 0 {
                if cc > len {
                    return false;
                }
                if cc == len {
                    return true;
                }
                let yes = isize::from(bc[at + 1]);
                if yes < 4 || yes & 3 != 0 {
                    return false;
                }
                len -= yes;
                at += yes as usize;
            }
            false
        };
        let mut len = total;
        let mut at = 0usize;
        while len > 0 {
            let code = bc[at];
            let mut min = 4;
            match code {
                BC_S_GE | BC_S_LE => {
                    min += 4;
                    if len < min {
                        return Err(format!("comparison at {at} cut off"));
                    }
                }
                BC_JMP => {}
                other => return Err(format!("op {other} at {at}")),
            }
            let yes = isize::from(bc[at + 1]);
            let no = u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as isize;
            if no < min || no > len + 4 || no & 3 != 0 {
                return Err(format!("no={no} at {at} (len {len})"));
            }
            if no < len && !valid_cc(len - no) {
                return Err(format!("no={no} at {at} lands inside an op"));
            }
            if yes < min || yes > len + 4 || yes & 3 != 0 {
                return Err(format!("yes={yes} at {at} (len {len})"));
            }
            at += yes as usize;
            len -= yes;
        }
        if len == 0 {
            Ok(())
        } else {
            Err(format!("ends {} bytes off", -len))
        }
    }

    /// Every 5th port of 1000-21000: 4,001 single ports.
    pub(crate) fn every_fifth() -> PortSet {
        set(&(1000..=21000u16)
            .step_by(5)
            .map(|p| (p, p))
            .collect::<Vec<_>>())
    }

    #[test]
    fn one_range_compiles_like_ss() {
        // ss -Hanu 'sport >= :3224 and sport <= :3324'
        let bc = compile_filter(&set(&[(3224, 3324)]));
        assert_eq!(
            ops(&bc),
            vec![(2, 8, 20), (0, 0, 3224), (3, 8, 12), (0, 0, 3324)]
        );
    }

    #[test]
    fn a_few_ranges_compile_to_guards_and_one_leaf() {
        // Boundaries 10, 21, 30, 31, 60000, 61001: the guards decide below
        // 10 and from 61001 on; the leaf decides 21, 30 and 31 one after
        // another (failing = below that boundary), then 60000 by the JMP.
        let bc = compile_filter(&set(&[(10, 20), (30, 30), (60000, 61000)]));
        assert_eq!(
            ops(&bc),
            vec![
                (2, 8, 52), // < 10: reject (52 = 48 left + 4)
                (0, 0, 10),
                (3, 8, 44), // > 61000: reject
                (0, 0, 61000),
                (2, 8, 32), // in 10-20: accept (the end, 32 bytes on)
                (0, 0, 21),
                (2, 8, 28), // in 21-29: reject
                (0, 0, 30),
                (2, 8, 16), // 30: accept
                (0, 0, 31),
                (2, 8, 12), // in 31-59999: reject
                (0, 0, 60000),
                // in 60000-61000: accept, which is the end.
            ]
        );
    }

    #[test]
    fn filter_accepts_exactly_the_set_and_passes_the_audit() {
        let spaced = |n: u16, every: u16, from: u16| {
            set(&(0..n)
                .map(|i| (from + i * every, from + i * every))
                .collect::<Vec<_>>())
        };
        for s in [
            set(&[(3224, 3324)]),
            set(&[(1, 1)]),
            set(&[(65535, 65535)]),
            set(&[(0, 0)]),
            set(&[(0, 10)]),
            set(&[(100, 65535)]),
            set(&[(1, 1), (65535, 65535)]),
            set(&[(0, 5), (65530, 65535)]),
            set(&[(10, 20), (30, 30), (40, 50)]),
            set(&[(10, 20), (30, 30), (40, 50), (60000, 61000)]),
            set(&[(1, 65535)]),
            spaced(17, 3, 100),
            spaced(100, 7, 2),
            spaced(1000, 13, 1),
            every_fifth(),
            // Even ports 0-16382: 8,192 intervals, too many for 64 KiB;
            // compiled coarsened, a superset.
            spaced(8192, 2, 0),
        ] {
            let bc = compile_filter(&s);
            audit(&bc).unwrap_or_else(|e| panic!("{s}: {e}"));
            let coarse = s.intervals().len() > 4090;
            for port in 0..=65535u16 {
                let (kept, _) = run(&bc, port);
                if coarse {
                    assert!(kept || !s.contains(port), "port {port} dropped");
                } else {
                    assert_eq!(
                        kept,
                        s.contains(port),
                        "port {port} in {} intervals",
                        s.intervals().len()
                    );
                }
            }
        }
        assert!(compile_filter(&PortSet::default()).is_empty());
        assert!(
            compile_filter(&set(&[(0, 65535)])).is_empty(),
            "every port: no filter"
        );
    }

    /// The ops the kernel's `valid_cc` visits auditing `bc`.
    fn audit_visits(bc: &[u8]) -> usize {
        let mut visits = 0;
        let mut at = 0;
        while at < bc.len() {
            let no = usize::from(u16::from_ne_bytes([bc[at + 2], bc[at + 3]]));
            if no < bc.len() - at {
                // valid_cc walks from the start to the target.
                let target = at + no;
                let mut p = 0;
                while p < target {
                    p += usize::from(bc[p + 1]);
                    visits += 1;
                }
            }
            at += usize::from(bc[at + 1]);
        }
        visits
    }

    #[test]
    fn cost_follows_the_logarithm_of_the_intervals() {
        let worst = |bc: &[u8], ports: &mut dyn Iterator<Item = u16>| {
            ports.map(|p| run(bc, p).1).max().unwrap()
        };
        // 1,000 single ports: a tree down to leaves of 16.
        let s = set(&(1..=1000u16).map(|i| (i * 7, i * 7)).collect::<Vec<_>>());
        let bc = compile_filter(&s);
        assert!(worst(&bc, &mut (7..=7000u16)) <= 2 + 7 + 16 + 1);
        assert!(audit_visits(&bc) <= AUDIT_BUDGET, "{}", audit_visits(&bc));
        // 4,001 single ports: the linear program of issue 17 ran up to
        // 8,002 comparisons for a port past the set (and did not fit: it
        // was never sent); the tree needs two outside the span and a few
        // hundred at most inside, with an audit under budget.
        let s = every_fifth();
        let bc = compile_filter(&s);
        assert!(bc.len() <= MAX_PROGRAM_BYTES, "{} bytes", bc.len());
        assert_eq!(worst(&bc, &mut (0..1000u16).chain(21001..=65535)), 2);
        let inside = worst(&bc, &mut (1000..=21000u16));
        assert!(inside <= 2 + 6 + 256 + 1, "{inside} ops");
        assert!(audit_visits(&bc) <= AUDIT_BUDGET, "{}", audit_visits(&bc));
        // Three intervals: guards and one short leaf.
        let bc = compile_filter(&set(&[(10, 20), (30, 30), (40, 50)]));
        assert!(worst(&bc, &mut (0..=65535u16)) <= 6);
        assert_eq!(audit_visits(&bc), 0);
    }

    #[test]
    fn coarsening_fills_the_smallest_gaps() {
        assert_eq!(
            coarsen(&[(1, 1), (3, 3), (10, 10), (12, 12), (100, 100)], 3),
            vec![(1, 3), (10, 12), (100, 100)]
        );
        let v = &[(1, 2), (50, 60)];
        assert_eq!(coarsen(v, 2), v.to_vec());
    }
}
