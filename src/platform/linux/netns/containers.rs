//! Which container and Kubernetes pod a network namespace belongs to,
//! without a container-runtime or Kubernetes client: the container id and
//! the pod UID are in the cgroup path of a process inside the namespace
//! (`/proc/<pid>/cgroup`), and the kubelet names every pod's log directory
//! `/var/log/pods/<namespace>_<pod>_<uid>`, so the UID leads to the pod's
//! name and namespace. Kubernetes names cannot hold `_` (namespaces are
//! DNS labels, pods DNS subdomains), so the split is unambiguous.
//!
//! cgroup layouts recognised (cgroup v1 and v2, systemd and cgroupfs
//! drivers): Docker `docker-<id>.scope` and `/docker/<id>`; containerd
//! `cri-containerd-<id>.scope` and `/kubepods/<qos>/pod<uid>/<id>`; CRI-O
//! `crio-<id>.scope`; Podman `libpod-<id>.scope` (not its `libpod-conmon-`
//! monitor); the kubelet's `kubepods-<qos>-pod<uid>.slice` (dashes of the
//! UID turned into underscores) and `pod<uid>`. A container id is 64
//! lowercase hex digits; a pod UID is a UUID, or 32 hex digits for static
//! pods (an MD5 of the manifest). Pure functions over text.

use std::collections::HashMap;

/// What a process's cgroup says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The innermost container id on the path.
    pub container: Option<String>,
    /// The Kubernetes pod UID, with dashes.
    pub pod_uid: Option<String>,
}

/// Parses `/proc/<pid>/cgroup` (`hierarchy:controllers:path` lines): the
/// first line whose path names a container or a pod decides.
pub fn parse_cgroup(text: &str) -> CgroupInfo {
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let info = parse_cgroup_path(path);
        if info.container.is_some() || info.pod_uid.is_some() {
            return info;
        }
    }
    CgroupInfo::default()
}

/// Parses one cgroup path.
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let container = segments
        .iter()
        .rev()
        .find_map(|s| container_id(s))
        .map(str::to_string);
    let pod_uid = segments.iter().rev().find_map(|s| pod_uid(s));
    CgroupInfo { container, pod_uid }
}

/// The container id a cgroup directory name carries: the whole name, or
/// what follows the last `-` of a systemd scope (`docker-<id>.scope`).
fn container_id(segment: &str) -> Option<&str> {
    if segment.contains("conmon") {
        return None; // podman's monitor process, not the container
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = name.rsplit('-').next().unwrap_or(name);
    is_hex(id, 64).then_some(id)
}

/// The pod UID a kubelet cgroup directory name carries: `pod<uid>` or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice`.
fn pod_uid(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let rest = if let Some(r) = name.strip_prefix("pod") {
        r
    } else if name.starts_with("kubepods-") {
        name.rsplit_once("-pod")?.1
    } else {
        return None;
    };
    let uid = rest.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A UUID (8-4-4-4-12 lowercase hex) or 32 hex digits.
fn is_pod_uid(s: &str) -> bool {
    if is_hex(s, 32) {
        return true;
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| is_hex(p, n))
}

/// A pod, as its log directory names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Parses a `/var/log/pods` directory name, `<namespace>_<pod>_<uid>`.
pub fn parse_pod_dir(name: &str) -> Option<Pod> {
    let mut parts = name.split('_');
    let (Some(namespace), Some(pod), Some(uid), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if namespace.is_empty() || pod.is_empty() || !is_pod_uid(uid) {
        return None;
    }
    Some(Pod {
        namespace: namespace.to_string(),
        name: pod.to_string(),
        uid: uid.to_string(),
    })
}

/// Pods by UID, from the names of a `/var/log/pods` listing; names that
/// are not pod directories are skipped.
pub fn pods_by_uid<'a>(names: impl IntoIterator<Item = &'a str>) -> HashMap<String, Pod> {
    names
        .into_iter()
        .filter_map(parse_pod_dir)
        .map(|p| (p.uid.clone(), p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/platform/linux/testdata/netns"
    );

    fn cgroup(name: &str) -> CgroupInfo {
        parse_cgroup(&std::fs::read_to_string(format!("{TESTDATA}/cgroup/{name}")).unwrap())
    }

    fn listing() -> HashMap<String, Pod> {
        let text = std::fs::read_to_string(format!("{TESTDATA}/var_log_pods")).unwrap();
        pods_by_uid(text.lines())
    }

    #[test]
    fn container_runtimes() {
        for (file, id) in [
            (
                "docker-systemd-v2",
                "bf4339a9cfb4d0e9800dab873b9906458967b4132f639e6fa6271a2f332fb99f",
            ),
            (
                "docker-systemd-v2-nested",
                "39158c67a24d980ff94d86f6d39b8a3896f6a902c22035bda87b67568c385b26",
            ),
            (
                "docker-cgroupfs-v1",
                "9e1987cf07ac408dc51d2803c828d32d4efea2ef46e426a60f143a8444b7f5ed",
            ),
            (
                "podman-v2",
                "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
            ),
        ] {
            assert_eq!(
                cgroup(file),
                CgroupInfo {
                    container: Some(id.into()),
                    pod_uid: None
                },
                "{file}"
            );
        }
        for file in [
            "podman-conmon-v2",
            "host-service-v2",
            "host-init-v2",
            "host-v1",
        ] {
            assert_eq!(cgroup(file), CgroupInfo::default(), "{file}");
        }
    }

    #[test]
    fn kubernetes_pods_are_named_from_the_log_directories() {
        let pods = listing();
        assert_eq!(pods.len(), 5);
        for (file, id_start, namespace, pod) in [
            (
                "k8s-containerd-systemd-v2",
                "761f8f51",
                "kube-system",
                "coredns-5d78c9869d-8x2lq",
            ),
            (
                "k8s-containerd-guaranteed-v2",
                "9415e69b",
                "payments",
                "ledger-0",
            ),
            (
                "k8s-containerd-cgroupfs-v1",
                "a7514082",
                "default",
                "web-7c9f8d6b5-qwz2x",
            ),
            (
                "k8s-static-pod-v2",
                "8fa8c3a4",
                "kube-system",
                "kube-apiserver-node-1",
            ),
        ] {
            let info = cgroup(file);
            assert!(
                info.container.as_deref().unwrap().starts_with(id_start),
                "{file}: {info:?}"
            );
            let uid = info.pod_uid.unwrap_or_else(|| panic!("{file}: no pod UID"));
            let p = pods
                .get(&uid)
                .unwrap_or_else(|| panic!("{file}: pod {uid} not listed"));
            assert_eq!(
                (p.namespace.as_str(), p.name.as_str()),
                (namespace, pod),
                "{file}"
            );
        }
        // A pod whose logs are gone (or not mounted): the UID is known, the name is not.
        let crio = cgroup("k8s-crio-v2");
        assert_eq!(
            crio.pod_uid.as_deref(),
            Some("0d9c8b7a-6e5f-4d3c-8b2a-1f0e9d8c7b6a")
        );
        assert!(crio.container.unwrap().starts_with("f2dee9cf"));
        assert!(!pods.contains_key("0d9c8b7a-6e5f-4d3c-8b2a-1f0e9d8c7b6a"));
    }

    #[test]
    fn odd_names_are_not_taken_for_ids() {
        assert_eq!(parse_cgroup(""), CgroupInfo::default());
        assert_eq!(parse_cgroup("garbage"), CgroupInfo::default());
        assert_eq!(parse_cgroup_path("/docker/ABCDEF"), CgroupInfo::default());
        // Uppercase or short hex is not a container id.
        let upper = "0::/docker/".to_string() + &"A".repeat(64);
        assert_eq!(parse_cgroup(&upper), CgroupInfo::default());
        assert_eq!(
            parse_cgroup_path("/kubepods/podnot-a-uid/x"),
            CgroupInfo::default()
        );
        assert_eq!(
            parse_cgroup_path("/system.slice/podman.service"),
            CgroupInfo::default()
        );
        for bad in [
            "kube-system_coredns",
            "a_b_c_6f1c1d2e-7a3b-4c5d-9e8f-0a1b2c3d4e5f",
            "_pod_6f1c1d2e-7a3b-4c5d-9e8f-0a1b2c3d4e5f",
            "ns_pod_6f1c1d2e7a3b4c5d9e8f0a1b2c3d4e5",
            "ns_pod_6F1C1D2E-7A3B-4C5D-9E8F-0A1B2C3D4E5F",
        ] {
            assert_eq!(parse_pod_dir(bad), None, "{bad}");
        }
    }
}
