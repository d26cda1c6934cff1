//! The list/watch loop over this node's pods (`spec.nodeName=<node>`): a paged list, then a
//! watch from the list's resourceVersion, resumed from the last version seen when the stream
//! ends or breaks, and a fresh list when the API answers 410 Gone (the version is too old).

use std::{pin::pin, sync::Arc, sync::atomic::Ordering, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, WatchEvent, WatchParams},
};
use tracing::{debug, info, warn};

use super::{resolve::OwnerResolver, store::PodStore};
use crate::metadata::{identity::Resolver, owner::Owner};

/// Pods per list page: a node has at most a few hundred, and one page bounds one response.
const PAGE: u32 = 100;
/// The API server ends each watch after this long; the loop resumes it.
const WATCH_SECONDS: u32 = 290;
/// Pause after a failed request before the next, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to do after a watch ended.
enum Next {
    /// Watch again from this resourceVersion.
    Resume,
    /// The version is gone: list again.
    Relist,
}

pub struct PodWatch {
    pods: Api<Pod>,
    selector: String,
    store: Arc<PodStore>,
    owners: OwnerResolver,
    /// Told when an owner changes, to correct the containers it named before.
    resolver: Option<Arc<Resolver>>,
    version: String,
}

impl PodWatch {
    pub fn new(client: Client, node: &str, store: Arc<PodStore>, max_pods: usize) -> Self {
        Self {
            pods: Api::all(client.clone()),
            selector: format!("spec.nodeName={node}"),
            store,
            owners: OwnerResolver::new(client, node.to_owned(), max_pods),
            resolver: None,
            version: String::new(),
        }
    }

    pub fn with_resolver(mut self, resolver: Arc<Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Lists and watches until the task is dropped.
    pub async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        let mut first = true;
        loop {
            match self.list().await {
                Ok(count) => {
                    if first {
                        info!(pods = count, selector = %self.selector, "pod owners from the Kubernetes API");
                        first = false;
                    }
                    backoff = FIRST_BACKOFF;
                }
                Err(err) => {
                    warn!(
                        "listing this node's pods in the Kubernetes API failed (owners from the CRI's labels meanwhile): {err}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            loop {
                match self.watch().await {
                    Ok(Next::Resume) => backoff = FIRST_BACKOFF,
                    Ok(Next::Relist) => {
                        self.store.stats.gone.fetch_add(1, Ordering::Relaxed);
                        debug!(version = %self.version, "resourceVersion gone (410): listing again");
                        break;
                    }
                    Err(err) => {
                        warn!("watching this node's pods failed, resuming from {}: {err}", self.version);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// One full list (paged): replaces the store. Returns how many pods were listed.
    async fn list(&mut self) -> Result<usize, kube::Error> {
        let mut listed = Vec::new();
        let mut params = ListParams::default().fields(&self.selector).limit(PAGE);
        self.owners.forget();
        let version = loop {
            let page = self.pods.list(&params).await;
            self.store.stats.count("list", page.is_ok());
            let page = page?;
            for pod in &page.items {
                if let Some(entry) = self.entry(pod).await {
                    listed.push(entry);
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        let count = listed.len();
        self.store.replace(listed);
        self.version = version;
        self.correct_containers();
        Ok(count)
    }

    /// One watch request, until its stream ends; counted once, as an error when the request or
    /// its stream failed (a 410 included).
    async fn watch(&mut self) -> Result<Next, kube::Error> {
        let result = self.watch_once().await;
        self.store.stats.count("watch", result.is_ok());
        match result {
            Err(kube::Error::Api(status)) if status.code == 410 => Ok(Next::Relist),
            other => other,
        }
    }

    /// Bookmarks are asked for (kube's default): they move the version on a quiet node.
    async fn watch_once(&mut self) -> Result<Next, kube::Error> {
        let params = WatchParams::default().fields(&self.selector).timeout(WATCH_SECONDS);
        let stream = self.pods.watch(&params, &self.version).await?;
        let mut stream = pin!(stream);
        while let Some(event) = stream.next().await {
            match event? {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    self.advance(&pod);
                    if let Some((uid, owner)) = self.entry(&pod).await {
                        self.store.insert(&uid, owner);
                        self.correct_containers();
                    }
                }
                WatchEvent::Deleted(pod) => {
                    self.advance(&pod);
                    self.store.remove(pod.metadata.uid.as_deref().unwrap_or_default());
                }
                WatchEvent::Bookmark(bookmark) => self.version = bookmark.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => return Ok(Next::Relist),
                WatchEvent::Error(status) => {
                    warn!("the Kubernetes API ended the pod watch: {} ({})", status.message, status.code);
                    return Ok(Next::Resume);
                }
            }
        }
        Ok(Next::Resume)
    }

    fn advance(&mut self, pod: &Pod) {
        if let Some(version) = pod.metadata.resource_version.as_ref().filter(|v| !v.is_empty()) {
            self.version.clone_from(version);
        }
    }

    /// A pod's uid and workload, when its controller is a kind kernsight names.
    async fn entry(&mut self, pod: &Pod) -> Option<(String, Owner)> {
        let uid = pod.metadata.uid.clone()?;
        let owner = self.owners.owner(pod).await?;
        Some((uid, owner))
    }

    fn correct_containers(&self) {
        if let Some(resolver) = &self.resolver {
            resolver.correct_owners(&self.store);
        }
    }
}
