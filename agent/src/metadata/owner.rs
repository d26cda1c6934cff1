//! Which workload a pod belongs to, from what kubelet copies into its CRI sandbox (the pod's
//! labels, its `kubernetes.io/config.source` annotation) and the pod's name: no API access, so
//! no privilege beyond the CRI socket. The controllers name their pods and label them in fixed
//! ways; where a user can imitate those labels on a bare pod, the pod is attributed to the
//! workload it imitates (docs/metrics.md, "workload").

use std::collections::BTreeMap;

/// The label every ReplicaSet (so every Deployment) puts on its pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// StatefulSets and DaemonSets put it on their pods.
const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const DAEMONSET_GENERATION: &str = "pod-template-generation";
/// Jobs label their pods with their name: the first since Kubernetes 1.27, the second before.
const JOB_NAME: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
/// The sandbox annotation kubelet sets to where the pod came from: `api`, or `file` and `http`
/// for static pods.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";

/// A pod's owning workload: `kind` is one of Deployment, ReplicaSet, StatefulSet, DaemonSet,
/// CronJob, Job, StaticPod, Pod (a bare pod, its own workload).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Owner {
    pub kind: &'static str,
    pub name: String,
}

impl Owner {
    pub fn new(kind: &'static str, name: &str) -> Self {
        Self { kind, name: name.to_owned() }
    }
}

/// The workload of the pod `pod` with sandbox labels `labels`; `config_source` is the sandbox's
/// `kubernetes.io/config.source` annotation, `node` the node's name (a static pod's name ends
/// with it).
pub fn owner(pod: &str, labels: &BTreeMap<String, String>, config_source: &str, node: &str) -> Owner {
    let label = |key: &str| labels.get(key).map(String::as_str).filter(|value| !value.is_empty());
    if matches!(config_source, "file" | "http") {
        let suffix = format!("-{node}");
        let name = if node.is_empty() { pod } else { pod.strip_suffix(&suffix).unwrap_or(pod) };
        return Owner::new("StaticPod", name);
    }
    if let Some(job) = JOB_NAME.iter().find_map(|key| label(key)) {
        return job_owner(job);
    }
    if let Some(hash) = label(POD_TEMPLATE_HASH) {
        // `<deployment>-<hash>-<5 random characters>`.
        return replicaset_owner(without_last_segment(pod), hash);
    }
    if label(CONTROLLER_REVISION_HASH).is_some() {
        if label(STATEFULSET_POD_NAME).is_some() {
            // `<statefulset>-<ordinal>`.
            let (set, ordinal) = pod.rsplit_once('-').unwrap_or((pod, ""));
            if !set.is_empty() && !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()) {
                return Owner::new("StatefulSet", set);
            }
        } else if label(DAEMONSET_GENERATION).is_some() {
            // `<daemonset>-<5 random characters>`.
            return Owner::new("DaemonSet", without_last_segment(pod));
        }
    }
    Owner::new("Pod", pod)
}

/// The workload of the Job `job`: a CronJob names its Jobs `<cronjob>-<scheduled time in minutes
/// since the epoch>`.
pub fn job_owner(job: &str) -> Owner {
    match job.rsplit_once('-') {
        Some((cronjob, minutes))
            if !cronjob.is_empty() && minutes.len() >= 8 && minutes.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Owner::new("CronJob", cronjob)
        }
        _ => Owner::new("Job", job),
    }
}

/// The workload of the ReplicaSet `replicaset` whose pods carry `pod-template-hash` = `hash`:
/// a Deployment names its ReplicaSets `<deployment>-<hash>`; a ReplicaSet made by hand has no
/// hash in its name and is its own workload.
pub fn replicaset_owner(replicaset: &str, hash: &str) -> Owner {
    match replicaset.strip_suffix(hash).and_then(|rest| rest.strip_suffix('-')) {
        Some(deployment) if !deployment.is_empty() && !hash.is_empty() => {
            Owner::new("Deployment", deployment)
        }
        _ => Owner::new("ReplicaSet", replicaset),
    }
}

/// `name` without its last `-segment` (itself when it has none).
fn without_last_segment(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((rest, _)) if !rest.is_empty() => rest,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn of(pod: &str, pairs: &[(&str, &str)]) -> (&'static str, String) {
        let owner = owner(pod, &labels(pairs), "api", "node-1");
        (owner.kind, owner.name)
    }

    #[test]
    fn controllers_are_recognised_by_their_labels_and_names() {
        let deployment = of("web-7d4b9c8f6d-x2x9k", &[("app", "web"), (POD_TEMPLATE_HASH, "7d4b9c8f6d")]);
        assert_eq!(deployment, ("Deployment", "web".into()));
        let dashed = of("my-web-app-5f9c-abcde", &[(POD_TEMPLATE_HASH, "5f9c")]);
        assert_eq!(dashed, ("Deployment", "my-web-app".into()));
        let replicaset = of("frontend-abcde", &[(POD_TEMPLATE_HASH, "7d4b9c8f6d")]);
        assert_eq!(replicaset, ("ReplicaSet", "frontend".into()));
        let statefulset =
            of("db-12", &[(CONTROLLER_REVISION_HASH, "db-6c9d"), (STATEFULSET_POD_NAME, "db-12")]);
        assert_eq!(statefulset, ("StatefulSet", "db".into()));
        let daemonset =
            of("node-agent-q7w2x", &[(CONTROLLER_REVISION_HASH, "5b8f"), (DAEMONSET_GENERATION, "3")]);
        assert_eq!(daemonset, ("DaemonSet", "node-agent".into()));
        let job =
            of("migrate-abcde", &[("batch.kubernetes.io/job-name", "migrate"), ("job-name", "migrate")]);
        assert_eq!(job, ("Job", "migrate".into()));
        let old_job = of("migrate-abcde", &[("job-name", "migrate")]);
        assert_eq!(old_job, ("Job", "migrate".into()));
        let cronjob = of("backup-29012345-abcde", &[("batch.kubernetes.io/job-name", "backup-29012345")]);
        assert_eq!(cronjob, ("CronJob", "backup".into()));
        let short_number = of("run-1-abcde", &[("job-name", "run-1")]);
        assert_eq!(short_number, ("Job", "run-1".into()));
        assert_eq!(of("debug", &[("app", "debug")]), ("Pod", "debug".into()));
    }

    #[test]
    fn static_pods_lose_the_node_suffix() {
        let owner =
            owner("kube-apiserver-node-1", &labels(&[("component", "kube-apiserver")]), "file", "node-1");
        assert_eq!((owner.kind, owner.name.as_str()), ("StaticPod", "kube-apiserver"));
        let unknown_node = super::owner("etcd-node-1", &BTreeMap::new(), "file", "");
        assert_eq!((unknown_node.kind, unknown_node.name.as_str()), ("StaticPod", "etcd-node-1"));
    }

    #[test]
    fn names_that_do_not_fit_the_pattern_fall_back_without_panicking() {
        // Labels of a controller on names a controller would not make: never an empty name.
        assert_eq!(of("-", &[(POD_TEMPLATE_HASH, "x")]), ("ReplicaSet", "-".into()));
        assert_eq!(
            of("db", &[(CONTROLLER_REVISION_HASH, "h"), (STATEFULSET_POD_NAME, "db")]),
            ("Pod", "db".into())
        );
        assert_eq!(
            of("ds", &[(CONTROLLER_REVISION_HASH, "h"), (DAEMONSET_GENERATION, "1")]),
            ("DaemonSet", "ds".into())
        );
        assert_eq!(of("-12345678-x", &[("job-name", "-12345678")]), ("Job", "-12345678".into()));
        assert_eq!(of("", &[]), ("Pod", String::new()));
        let long = "é".repeat(300);
        assert_eq!(of(&long, &[(POD_TEMPLATE_HASH, "é")]).0, "ReplicaSet");
    }
}
