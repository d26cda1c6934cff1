//! The lookup task: names the containers that scrapes met but the resolver did not know, from
//! each source in turn, in bulk where the source allows it.

use std::{sync::Arc, time::Duration};

use tracing::debug;

use super::{
    identity::{ContainerInfo, Resolver, Source},
    local,
};

/// How often to retry what no source knew, and how long an unused identity is kept.
const RETRY: Duration = Duration::from_secs(15);
const IDLE: Duration = Duration::from_secs(600);

pub async fn run(resolver: Arc<Resolver>) {
    loop {
        tokio::select! {
            () = resolver.wake.notified() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
        let wanted = resolver.take_wanted();
        if !wanted.is_empty() {
            let resolver = resolver.clone();
            // /proc scans and file reads block: off the async workers.
            let _ = tokio::task::spawn_blocking(move || lookup_local(&resolver, wanted)).await;
        }
        resolver.prune(IDLE);
    }
}

/// conmon command lines (podman, CRI-O), then Docker's files; what neither knows is retried.
fn lookup_local(resolver: &Resolver, wanted: Vec<String>) {
    let conmon_stats = resolver.stats(Source::Conmon);
    let names = conmon_stats.timed(|| local::conmon_names(&resolver.proc_root));
    let mut missing = Vec::new();
    for id in wanted {
        if resolver.is_known(&id) {
            continue;
        }
        let name = match names.get(&id) {
            Some(name) => {
                conmon_stats.found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(name.clone())
            }
            None => {
                conmon_stats.not_found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let docker = resolver.stats(Source::Docker);
                let name = docker.timed(|| local::docker_name(&resolver.docker_root, &id));
                let counter = if name.is_some() { &docker.found } else { &docker.not_found };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                name
            }
        };
        match name {
            Some(container) => {
                debug!(container_id = %id, %container, "named a container from the node's runtime files");
                resolver.learn(id, ContainerInfo { container, ..ContainerInfo::default() });
            }
            None => missing.push(id),
        }
    }
    resolver.want_again(missing);
}
