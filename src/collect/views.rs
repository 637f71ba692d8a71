//! The views of one collection, built from the configuration and what
//! was sampled: the filter and the traffic rules a configuration asks
//! for, the ranges' capacity alone (a failed sample), one [`RangeView`]
//! per range and protocol ([`build_report`]), per namespace with
//! `--collector.netns` ([`build_netns_report`]), and the namespaces'
//! descriptions ([`describe_namespaces`]). Pure: the orchestration in
//! [`crate::collect`] samples, these functions count and judge.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::allowlist::{self, Expected};
use crate::config::{Config, RangeConfig};
use crate::platform::{self, EphemeralPorts, Filter, Holder, Namespaces, Socket};
use crate::ranges::Protocol;
use crate::report::{Listener, NetnsInfo, NetnsReport, RangeView, Report};
use crate::users::{self, UserNames};

/// What to sample for `config`: per protocol, the union of the ranges
/// watched on it.
pub fn filter(config: &Config) -> Filter {
    Filter::from_fn(|protocol| config.watched_ports(protocol))
}

/// The `traffic` collector's counting rules for `config`: one per range
/// and protocol.
pub fn traffic_rules(config: &Config) -> Vec<crate::platform::traffic::TrafficRule> {
    config
        .ranges
        .iter()
        .flat_map(|r| {
            r.protocols
                .iter()
                .map(|&protocol| crate::platform::traffic::TrafficRule {
                    range: r.name.clone(),
                    protocol,
                    intervals: r.ports.intervals().to_vec(),
                })
        })
        .collect()
}

/// The views of the configured ranges' capacity alone, for a collection
/// whose sample failed (per namespace, only the host's is known).
pub fn capacity(config: &Config, per_namespace: bool) -> Vec<RangeView> {
    let netns = per_namespace.then(|| "host".to_string());
    config
        .ranges
        .iter()
        .flat_map(|r| {
            let netns = netns.clone();
            r.protocols
                .iter()
                .map(move |&p| RangeView::capacity(&r.name, p, netns.clone(), r.ports.clone()))
        })
        .collect()
}

/// Builds the views of one sample. Pure: `holders` is index for index
/// with `sockets`, and user names come from the cache.
pub fn build_report(
    config: &Config,
    sockets: &[Socket],
    holders: &[Option<Holder>],
    ephemeral: Option<&EphemeralPorts>,
    users: &UserNames,
) -> Report {
    // One lookup and one label per uid, not per listener.
    let mut user_names: UserLabels = HashMap::new();
    let mut ranges = Vec::new();
    for range in &config.ranges {
        for &protocol in &range.protocols {
            ranges.push(build_view(
                range,
                protocol,
                sockets,
                holders,
                ephemeral,
                users,
                &mut user_names,
            ));
        }
    }
    Report {
        ranges,
        ..Report::default()
    }
}

/// A user's name for the allowlist and its label (shared by the
/// listeners of that user), by uid or by the name the process's owner
/// record gives.
type UserLabels = HashMap<UserKey, (allowlist::UserName, Arc<str>)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum UserKey {
    Uid(u32),
    Name(String),
}

/// The view of one range on one protocol.
fn build_view(
    range: &RangeConfig,
    protocol: Protocol,
    sockets: &[Socket],
    holders: &[Option<Holder>],
    ephemeral: Option<&EphemeralPorts>,
    users: &UserNames,
    user_names: &mut UserLabels,
) -> RangeView {
    // Shared by every listener of the view.
    let range_name: Arc<str> = range.name.as_str().into();
    let mut used = PortBits::default();
    let mut view = RangeView::capacity(&range.name, protocol, None, range.ports.clone());
    view.per_port = range.per_port;
    view.max_listener_series = range.max_listener_series;
    view.states = platform::state_names(protocol)
        .iter()
        .map(|&n| (n, 0))
        .collect();
    let mine = |s: &&Socket| s.protocol == protocol && range.ports.contains(s.port);
    // The list is made at its size: grown by doubling it held up to twice
    // that (a busy range's 9,900 listeners), for as long as the report lives.
    view.listeners.reserve_exact(
        sockets
            .iter()
            .filter(mine)
            .filter(|s| s.is_listener())
            .count(),
    );
    for (s, holder) in sockets
        .iter()
        .zip(holders.iter().chain(std::iter::repeat(&None)))
        .filter(|(s, _)| mine(s))
    {
        if s.holds_port() {
            used.insert(s.port);
        }
        let name = s.state_name();
        if let Some(slot) = view.states.iter_mut().find(|(n, _)| *n == name) {
            slot.1 += 1;
        }
        if holder.is_none() && s.can_be_held() {
            view.unattributed += 1;
        }
        if !s.is_listener() {
            continue;
        }
        let (user, label) = match holder {
            Some(Holder::Process(o)) if o.user.is_some() => {
                let name = o.user.as_deref().unwrap_or_default();
                let e = match user_names.get(&UserKey::Name(name.to_string())) {
                    Some(e) => e,
                    None => user_names
                        .entry(UserKey::Name(name.to_string()))
                        .or_insert_with(|| {
                            (allowlist::UserName::Known(name.to_string()), name.into())
                        }),
                };
                (&e.0, &e.1)
            }
            _ => {
                let e = user_names.entry(UserKey::Uid(s.uid)).or_insert_with(|| {
                    let n = users.get(s.uid);
                    let label = users::label(&n, s.uid).into();
                    (n, label)
                });
                (&e.0, &e.1)
            }
        };
        let expected = allowlist::judge(&range.expected, holder.as_ref(), s.uid, user);
        match expected {
            Expected::False => view.unexpected += 1,
            Expected::Unknown => view.unknown += 1,
            Expected::True => {}
        }
        view.listeners.push(Listener {
            range: range_name.clone(),
            protocol,
            port: s.port,
            address: s.local,
            holder: holder.clone(),
            user: label.clone(),
            expected,
            netns: None,
            since: None,
        });
    }
    // In place (a stable sort copies the list), and total up to identical
    // listeners: the holder's pid decides between those that differ in it.
    view.listeners.sort_unstable_by(|a, b| {
        (a.port, a.address)
            .cmp(&(b.port, b.address))
            .then_with(|| a.process_name().cmp(&b.process_name()))
            .then_with(|| (&a.user, a.expected).cmp(&(&b.user, b.expected)))
            .then_with(|| a.owner().map(|o| o.pid).cmp(&b.owner().map(|o| o.pid)))
    });
    view.in_use = used.len();
    view.in_use_ports = used.ports();
    view.ephemeral_overlap = ephemeral.map(|e| range.ports.intersect(e.ports(protocol)).len());
    view
}

/// The `netns` label value of a namespace.
pub fn netns_label(ns: &platform::Namespace) -> String {
    if ns.host {
        "host".to_string()
    } else {
        ns.id.to_string()
    }
}

/// Builds the views of a per-namespace sample: one [`build_report`] for
/// the host's namespace and for each namespace with at least one socket in
/// a watched range (so series follow what is there), each with its own
/// ephemeral ports and its `netns` label. Pure, like [`build_report`].
pub fn build_netns_report(
    config: &Config,
    sockets: &[Socket],
    holders: &[Option<Holder>],
    namespaces: &Namespaces,
    users: &UserNames,
) -> Report {
    let watched = |s: &Socket| {
        config
            .ranges
            .iter()
            .any(|r| r.protocols.contains(&s.protocol) && r.ports.contains(s.port))
    };
    let mut report = Report::default();
    for ns in &namespaces.list {
        let (mine, held): (Vec<Socket>, Vec<Option<Holder>>) = sockets
            .iter()
            .zip(holders.iter().chain(std::iter::repeat(&None)))
            .filter(|(s, _)| s.netns == ns.id)
            .map(|(s, h)| (s.clone(), h.clone()))
            .unzip();
        if !ns.host && !mine.iter().any(watched) {
            continue;
        }
        let label = netns_label(ns);
        let shared: Arc<str> = label.as_str().into();
        let part = build_report(config, &mine, &held, ns.ephemeral.as_ref(), users);
        report.ranges.extend(part.ranges.into_iter().map(|mut r| {
            r.netns = Some(label.clone());
            for l in &mut r.listeners {
                l.netns = Some(shared.clone());
            }
            r
        }));
    }
    report
}

/// The `netns` collector: describes the namespaces that have views, host
/// first, and counts those that could not be sampled.
pub fn describe_namespaces(namespaces: &Namespaces, views: &[RangeView]) -> NetnsReport {
    let labels: HashSet<&str> = views.iter().filter_map(|v| v.netns.as_deref()).collect();
    NetnsReport {
        namespaces: namespaces
            .list
            .iter()
            .map(|ns| (ns, netns_label(ns)))
            .filter(|(_, label)| labels.contains(label.as_str()))
            .map(|(ns, label)| NetnsInfo {
                label,
                name: ns.name.clone(),
                container: ns.container.clone(),
                pod: ns.pod.clone(),
                namespace: ns.pod_namespace.clone(),
            })
            .collect(),
        unsampled: namespaces.unsampled,
    }
}

/// The ports in use of one range, as a bit per port.
struct PortBits {
    bits: Vec<u64>,
    count: u32,
}

impl Default for PortBits {
    fn default() -> PortBits {
        PortBits {
            bits: vec![0; 1024],
            count: 0,
        }
    }
}

impl PortBits {
    fn insert(&mut self, port: u16) {
        let (word, bit) = (usize::from(port / 64), port % 64);
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    fn len(&self) -> u32 {
        self.count
    }

    /// The ports set, ascending.
    fn ports(&self) -> Vec<u16> {
        let mut out = Vec::with_capacity(self.count as usize);
        for (i, &word) in self.bits.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                out.push((i * 64) as u16 + w.trailing_zeros() as u16);
                w &= w - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits_list_their_ports_ascending() {
        let mut b = PortBits::default();
        for p in [65535, 64, 63, 1, 64, 128] {
            b.insert(p);
        }
        assert_eq!(b.ports(), vec![1, 63, 64, 128, 65535]);
        assert_eq!(b.len(), 5);
    }
}
