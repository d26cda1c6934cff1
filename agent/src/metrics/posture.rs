//! The posture of every container, read from `/proc` on each scrape (see `crate::posture`):
//! `kernsight_container_capability`, `_privileged`, `_seccomp_mode`, `_seccomp_filters`,
//! `_no_new_privs`, `_run_as_root`, `_user_namespace`, `_host_namespace`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    EncodedLabels, LabelNames, Series,
    read_ahead::ReadAhead,
    text::{Text, TextCollector},
};
use crate::{
    kernel::names::held_capabilities,
    metadata::identity::Resolver,
    posture::{self, ContainerPosture, NAMESPACES},
};

/// Scrapes closer together than this share one walk of `/proc` (a walk reads every process's
/// cgroup file, and the status and namespaces of the containers' processes).
const CACHE_TTL: Duration = Duration::from_secs(2);

/// One walk of `/proc` shared by the collectors that need the containers' posture (this one
/// and the seccomp drift of the syscall collector), at most one per `CACHE_TTL`.
#[derive(Debug)]
pub(crate) struct PostureCache {
    walker: posture::Walker,
    cache: Mutex<Option<(Instant, Arc<Vec<ContainerPosture>>)>>,
}

impl PostureCache {
    pub fn new() -> Self {
        Self { walker: posture::Walker::new(posture::proc_root()), cache: Mutex::new(None) }
    }

    pub fn containers(&self) -> Arc<Vec<ContainerPosture>> {
        self.walked_for(Instant::now())
    }

    /// The last walk if it still serves at `at`, else a walk now.
    fn walked_for(&self, at: Instant) -> Arc<Vec<ContainerPosture>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some((walked, containers)) if at.saturating_duration_since(*walked) < CACHE_TTL => {
                containers.clone()
            }
            _ => {
                let containers = Arc::new(posture::all_walked(&self.walker));
                *cache = Some((Instant::now(), containers.clone()));
                containers
            }
        }
    }
}

impl ReadAhead for PostureCache {
    fn read_ahead(&self, scrape_at: Instant) {
        self.walked_for(scrape_at);
    }
}

#[derive(Debug)]
pub struct PostureCollector {
    resolver: Arc<Resolver>,
    cache: Arc<PostureCache>,
}

impl PostureCollector {
    pub(crate) fn new(resolver: Arc<Resolver>, cache: Arc<PostureCache>) -> Self {
        Self { resolver, cache }
    }
}

// Written, not encoded: at 1,000 containers these are 53,000 samples a scrape.
impl TextCollector for PostureCollector {
    fn write(&self, text: &mut Text) {
        let containers = self.cache.containers();
        let names = LabelNames::of(&self.resolver);
        // A container has some 50 series here (one per capability held): its labels are
        // encoded once.
        let encoded: Vec<(EncodedLabels, &ContainerPosture)> = containers
            .iter()
            .map(|c| (EncodedLabels::of(&Series::of(&self.resolver.shared_workload(&c.cgroup), &names)), c))
            .collect();
        let labelled = || encoded.iter().map(|(labels, c)| (Series::of_encoded(labels), c));
        let gauge =
            |value: fn(&ContainerPosture) -> i64| labelled().map(move |(series, c)| (series, value(c)));
        let namespaces_known = || labelled().filter(|(_, c)| c.namespaces_known);

        text.gauges(
            "kernsight_container_capability",
            "Capabilities in the effective set of a container's processes (1 per capability held)",
            labelled().flat_map(|(series, c)| {
                held_capabilities(c.effective).map(move |cap| (series.with("cap", cap), 1i64))
            }),
        );
        text.gauges(
            "kernsight_container_privileged",
            "1 when the container's bounding set holds every capability the host's init holds",
            gauge(|c| i64::from(c.privileged)),
        );
        text.gauges(
            "kernsight_container_seccomp_mode",
            "Seccomp mode of the container's least confined process: 0 disabled, 1 strict, 2 filter",
            gauge(|c| c.seccomp as i64),
        );
        text.gauges(
            "kernsight_container_seccomp_filters",
            "Seccomp filters attached to the container's least confined process",
            gauge(|c| i64::from(c.seccomp_filters)),
        );
        text.gauges(
            "kernsight_container_no_new_privs",
            "1 when every process of the container has NoNewPrivs set",
            gauge(|c| i64::from(c.no_new_privs)),
        );
        text.gauges(
            "kernsight_container_run_as_root",
            "1 when a process of the container runs with uid 0 (real or effective)",
            gauge(|c| i64::from(c.runs_as_root)),
        );
        text.gauges(
            "kernsight_container_user_namespace",
            "1 when the container's processes have a user namespace of their own (uid 0 inside is not the host's root)",
            namespaces_known().map(|(series, c)| (series, i64::from(c.own_user_namespace))),
        );
        text.gauges(
            "kernsight_container_writable_host_mounts",
            "Host directories of a disk or network filesystem mounted writable into the container",
            namespaces_known().map(|(series, c)| (series, c.writable_host_mounts.len() as i64)),
        );
        text.gauges(
            "kernsight_container_posture_namespaces_unknown",
            "Containers whose namespaces could not be read (the agent needs CAP_SYS_PTRACE for them); their namespace series are left out",
            [(super::NO_LABELS, encoded.iter().filter(|(_, c)| !c.namespaces_known).count() as i64)],
        );
        text.gauges(
            "kernsight_container_host_namespace",
            "1 when the container shares that namespace (pid, net, ipc, uts, mnt, cgroup, user) with the host",
            namespaces_known().flat_map(|(series, c)| {
                NAMESPACES
                    .map(|kind| (series.with("namespace_type", kind.name()), i64::from(c.shares_host(kind))))
            }),
        );
    }
}
