//! The `netns` collector's part of the report (`--collector.netns`): the
//! network namespaces that have series, and how many were found but not
//! sampled. [`crate::collect`] builds it; it renders its own part: its
//! metric families ([`families`]) and its reason in `check`
//! ([`check_reason`]); the status document says only whether it is on.

use prometheus::proto::MetricFamily;

use crate::exposition::Family;
use crate::text::plural;

/// A network namespace that has series (`portrange_netns_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsInfo {
    /// The `netns` label value: `host`, or the namespace's id in decimal.
    pub label: String,
    pub name: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

/// The namespaces of a per-namespace collection (the `netns` collector).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsReport {
    /// Host first, then by id.
    pub namespaces: Vec<NetnsInfo>,
    /// Namespaces found but not sampled: what they hold is unknown.
    pub unsampled: u32,
}

pub const NETNS_INFO_HELP: &str = "A network namespace with series (--collector.netns): netns is host or its inode; name is its ip netns name, container the container id from its cgroup, pod and namespace its Kubernetes pod; empty where unknown.";
pub const NETNS_UNSAMPLED_HELP: &str = "Network namespaces found but not sampled in this scrape (--collector.netns): what they hold is unknown.";

/// The `netns` collector's families (`--collector.netns`): one info
/// series per namespace with series, and the count not sampled.
pub fn families(netns: Option<&NetnsReport>) -> Vec<MetricFamily> {
    let Some(n) = netns else {
        return Vec::new();
    };
    let mut netns_info = Family::new("portrange_netns_info", NETNS_INFO_HELP);
    for ns in &n.namespaces {
        netns_info.add(
            &[
                ("netns", ns.label.as_str()),
                ("name", &ns.name),
                ("container", &ns.container),
                ("pod", &ns.pod),
                ("namespace", &ns.namespace),
            ],
            1.0,
        );
    }
    let mut unsampled = Family::new("portrange_netns_unsampled", NETNS_UNSAMPLED_HELP);
    unsampled.add(&[], f64::from(n.unsampled));
    vec![netns_info.build(), unsampled.build()]
}

/// `check`'s reason when namespaces were found but not sampled (a
/// WARNING: what the exporter cannot see is never fine); `None` when every
/// one was sampled or the collector is off.
pub fn check_reason(netns: Option<&NetnsReport>) -> Option<String> {
    let n = netns.filter(|n| n.unsampled > 0)?;
    Some(format!(
        "{} could not be sampled",
        plural(
            n.unsampled as usize,
            "network namespace",
            "network namespaces"
        )
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces found but not sampled are named in `check`; none, or
    /// the collector off, says nothing.
    #[test]
    fn unsampled_namespaces_are_a_reason() {
        let mut n = NetnsReport::default();
        assert_eq!(check_reason(None), None);
        assert_eq!(check_reason(Some(&n)), None);
        n.unsampled = 1;
        assert_eq!(
            check_reason(Some(&n)).as_deref(),
            Some("1 network namespace could not be sampled")
        );
        n.unsampled = 3;
        assert_eq!(
            check_reason(Some(&n)).as_deref(),
            Some("3 network namespaces could not be sampled")
        );
    }
}
