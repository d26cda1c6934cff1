//! The lookup task: names the containers that scrapes met but the resolver did not know, from
//! each source in turn (the CRI socket, then conmon, then Docker's files), in bulk where the
//! source allows it.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tracing::{debug, info, warn};

use super::{
    cri::{CriClient, search_sockets},
    identity::{ContainerInfo, Resolver, Source},
    local, owner,
};

/// How often to retry what no source knew, and how long an unused identity is kept.
const RETRY: Duration = Duration::from_secs(15);
const IDLE: Duration = Duration::from_secs(600);
/// Bound of every CRI call: attribution waits for no runtime longer.
const CRI_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time from one lookup round to the next. Each container met unknown wakes the task, and
/// each round's conmon lookup reads every process's `comm`: while 50 containers started every
/// 2.5 s on a node of 1,000 (a rollout), a round per container was 56 % of the agent's CPU and
/// slowed its scrapes. Containers met within a second are now looked up in one round; the
/// first after a quiet second is looked up at once.
const MIN_ROUND_INTERVAL: Duration = Duration::from_secs(1);

/// Where to look for the CRI socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriSockets {
    /// In order; the first that is a socket and answers is used.
    pub candidates: Vec<PathBuf>,
    /// The operator named the socket (`metadata.cri_socket`): finding nothing there is an error,
    /// where finding none of the usual places only means that the node runs no CRI runtime.
    pub named: bool,
}

impl CriSockets {
    /// `metadata.cri_socket` when set, else `metadata.cri_socket_candidates`.
    pub fn new(named: &std::path::Path, candidates: &[PathBuf]) -> Self {
        if named.as_os_str().is_empty() {
            Self { candidates: candidates.to_vec(), named: false }
        } else {
            Self { candidates: vec![named.to_path_buf()], named: true }
        }
    }
}

pub async fn run(resolver: Arc<Resolver>, cri_sockets: CriSockets) {
    let mut cri = connect(&resolver, &cri_sockets, true).await;
    let mut last_round: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = resolver.wake.notified() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
        if let Some(last_round) = last_round {
            tokio::time::sleep_until(last_round + MIN_ROUND_INTERVAL).await;
        }
        last_round = Some(tokio::time::Instant::now());
        let mut wanted = resolver.wanted();
        if wanted.is_empty() {
            resolver.prune(IDLE);
            continue;
        }
        if cri.is_none() {
            cri = connect(&resolver, &cri_sockets, false).await;
        }
        if let Some(client) = cri.as_mut()
            && !lookup_cri(&resolver, client, &mut wanted).await
        {
            cri = None; // reconnect on the next round
        }
        let resolver_for_local = resolver.clone();
        // /proc scans and file reads block: off the async workers.
        let _ = tokio::task::spawn_blocking(move || lookup_local(&resolver_for_local, wanted)).await;
        resolver.prune(IDLE);
    }
}

/// Connects to the first candidate that is a socket and answers; `first` says once, in the
/// log, why pod names will be missing. Each socket that refuses or does not answer is a lookup
/// error of the CRI source, and so is a search that found no socket where one is expected (a
/// path is there but is no socket, or the operator named the socket): the error alert fires on
/// a hung, refusing or misplaced socket. A node where none of the usual places exists (no CRI
/// runtime) counts nothing.
async fn connect(resolver: &Resolver, sockets: &CriSockets, first: bool) -> Option<CriClient> {
    let stats = resolver.stats(Source::Cri);
    let search = search_sockets(&sockets.candidates);
    let mut failures = Vec::new();
    for socket in search.sockets() {
        let started = std::time::Instant::now();
        let connected = CriClient::connect(socket, CRI_TIMEOUT).await;
        stats.lookups.fetch_add(1, Ordering::Relaxed);
        stats.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match connected {
            Ok(client) => {
                if first || !failures.is_empty() {
                    info!(socket = %socket.display(), runtime = client.runtime(), "pod identity from the CRI");
                }
                return Some(client);
            }
            Err(err) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                failures.push(err.to_string());
            }
        }
    }
    if failures.is_empty() && (sockets.named || search.found_anything()) {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    let why = if failures.is_empty() {
        format!("no CRI socket found (looked at {search})")
    } else {
        format!("no CRI socket answered (looked at {search}): {}", failures.join("; "))
    };
    let hint = "namespace and pod labels stay empty, containers are named by conmon or Docker's files, else \
                by their id; set metadata.cri_socket if the runtime listens elsewhere";
    if first {
        warn!("{why}: {hint}");
    } else {
        debug!("{why}");
    }
    None
}

/// Asks the runtime for every container at once; names what it knows and leaves the rest in
/// `wanted`. Returns false when the call failed.
async fn lookup_cri(resolver: &Resolver, client: &mut CriClient, wanted: &mut Vec<String>) -> bool {
    let stats = resolver.stats(Source::Cri);
    let started = std::time::Instant::now();
    let listed = client.containers().await;
    stats.lookups.fetch_add(1, Ordering::Relaxed);
    stats.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let containers = match listed {
        Ok(containers) => containers,
        Err(err) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            warn!("CRI lookup failed: {err}");
            return false;
        }
    };
    // Learning each listed container again would count its owner again and make every
    // collector name every workload again (each learning is a change to the identities): at
    // 1,000 containers while 50 start in 2.5 s, each lookup relearned 2,000 entries.
    for container in containers.into_iter().filter(|c| !resolver.knows_pod_of(&c.container_id)) {
        let owner = resolver.owner_of(&container.pod_uid, || {
            owner::owner(
                &container.pod_name,
                &container.pod_labels,
                &container.pod_config_source,
                resolver.node(),
            )
        });
        let info = ContainerInfo {
            container: container.container_name,
            pod: container.pod_name,
            namespace: container.pod_namespace,
            pod_labels: container.pod_labels,
            owner,
            pod_uid: container.pod_uid,
        };
        resolver.learn(container.container_id, info);
    }
    let before = wanted.len();
    wanted.retain(|id| !resolver.is_known(id));
    stats.found.fetch_add((before - wanted.len()) as u64, Ordering::Relaxed);
    stats.not_found.fetch_add(wanted.len() as u64, Ordering::Relaxed);
    true
}

/// conmon command lines (podman, CRI-O), then Docker's files; what neither knows is retried.
fn lookup_local(resolver: &Resolver, wanted: Vec<String>) {
    if wanted.is_empty() {
        return;
    }
    let conmon_stats = resolver.stats(Source::Conmon);
    let scan = conmon_stats.timed(|| local::scan_conmons(&resolver.proc_root));
    conmon_stats.untrusted.fetch_add(scan.untrusted, Ordering::Relaxed);
    let names = scan.names;
    for id in wanted {
        if resolver.is_known(&id) {
            continue;
        }
        let name = match names.get(&id) {
            Some(name) => {
                conmon_stats.found.fetch_add(1, Ordering::Relaxed);
                Some(name.clone())
            }
            None => {
                conmon_stats.not_found.fetch_add(1, Ordering::Relaxed);
                let docker = resolver.stats(Source::Docker);
                let name = docker.timed(|| local::docker_name(&resolver.docker_root, &id));
                let counter = if name.is_some() { &docker.found } else { &docker.not_found };
                counter.fetch_add(1, Ordering::Relaxed);
                name
            }
        };
        // One no source named stays wanted for the next round while scrapes ask for it.
        if let Some(container) = name {
            debug!(container_id = %id, %container, "named a container from the node's runtime files");
            resolver.learn(id, ContainerInfo { container, ..ContainerInfo::default() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn containers_met_within_a_second_are_looked_up_in_one_round() {
        let proc_root = tempfile::tempdir().unwrap();
        let mut resolver = Resolver::new(false, Vec::new(), 64);
        resolver.proc_root = proc_root.path().to_owned();
        resolver.docker_root = proc_root.path().join("no-docker");
        let resolver = Arc::new(resolver);
        let nowhere = CriSockets { candidates: vec![proc_root.path().join("no.sock")], named: false };
        let task = tokio::spawn(run(resolver.clone(), nowhere));
        let conmon_rounds = || resolver.stats(Source::Conmon).lookups.load(Ordering::Relaxed);
        // 40 containers met one after the other over 2 s, each waking the task.
        let started = tokio::time::Instant::now();
        for n in 0..40u32 {
            resolver.workload(&format!("/machine.slice/libpod-{n:064x}.scope"));
            tokio::time::sleep_until(started + Duration::from_millis(50) * (n + 1)).await;
        }
        tokio::time::sleep(MIN_ROUND_INTERVAL + Duration::from_millis(500)).await;
        task.abort();
        let rounds = conmon_rounds();
        // At once for the first, then at most one a second: rounds at 0, 1 and 2 s, and one
        // for what came after the last.
        assert!((2..=4).contains(&rounds), "{rounds} rounds for 40 containers over 2 s");
        let not_found = resolver.stats(Source::Conmon).not_found.load(Ordering::Relaxed);
        assert!(not_found >= 40, "every container was looked up: {not_found}");
    }
}
