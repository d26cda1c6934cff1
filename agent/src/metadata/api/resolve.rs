//! A pod's owner references → its workload. A ReplicaSet is followed to its Deployment and a
//! Job to its CronJob through their own owner references (one GET each, remembered); where that
//! GET is refused or fails, the naming rules of `owner` decide (`<deployment>-<pod-template-hash>`,
//! `<cronjob>-<minutes>`).

use std::{collections::HashMap, time::Duration};

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Api, Client};
use tracing::debug;

use crate::metadata::owner::{self, Owner};

/// Bound of one GET of a ReplicaSet or Job.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

pub struct OwnerResolver {
    client: Client,
    node: String,
    /// (kind, namespace, name) of a ReplicaSet or Job → its workload, whether the API or the
    /// naming rule found it; emptied at each relist and when it reaches `max_entries`.
    followed: HashMap<(&'static str, String, String), Owner>,
    max_entries: usize,
}

/// The controller among an object's owner references.
fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_deref()?.iter().find(|r| r.controller == Some(true))
}

impl OwnerResolver {
    pub fn new(client: Client, node: String, max_entries: usize) -> Self {
        Self { client, node, followed: HashMap::new(), max_entries: max_entries.max(1) }
    }

    /// Forgets what was followed (a relist: ReplicaSets may have been adopted or deleted).
    pub fn forget(&mut self) {
        self.followed.clear();
    }

    /// The workload of `pod`; None when its controller is of a kind kernsight does not name
    /// (a custom resource): the CRI's labels decide for that pod.
    pub async fn owner(&mut self, pod: &Pod) -> Option<Owner> {
        let meta = &pod.metadata;
        let name = meta.name.as_deref().unwrap_or_default();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let Some(reference) = controller(meta) else {
            return Some(Owner::new("Pod", name));
        };
        let owner_name = reference.name.as_str();
        match reference.kind.as_str() {
            "ReplicaSet" => {
                let hash = meta
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(owner::POD_TEMPLATE_HASH))
                    .map(String::as_str)
                    .unwrap_or_default();
                self.follow("ReplicaSet", namespace, owner_name, hash).await
            }
            "Job" => self.follow("Job", namespace, owner_name, "").await,
            "StatefulSet" => Some(Owner::new("StatefulSet", owner_name)),
            "DaemonSet" => Some(Owner::new("DaemonSet", owner_name)),
            // A static pod's mirror in the API is owned by its node; its name ends with it.
            "Node" => {
                let suffix = format!("-{}", self.node);
                let base =
                    if self.node.is_empty() { name } else { name.strip_suffix(&suffix).unwrap_or(name) };
                Some(Owner::new("StaticPod", base))
            }
            _ => None,
        }
    }

    /// The workload of the ReplicaSet or Job `name`, remembered.
    async fn follow(&mut self, kind: &'static str, namespace: &str, name: &str, hash: &str) -> Option<Owner> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        if let Some(owner) = self.followed.get(&key) {
            return Some(owner.clone());
        }
        let owner = match self.get_controller(kind, namespace, name).await {
            Ok(Some(reference)) => match (kind, reference.kind.as_str()) {
                ("ReplicaSet", "Deployment") => Owner::new("Deployment", &reference.name),
                ("Job", "CronJob") => Owner::new("CronJob", &reference.name),
                // A controller kernsight does not name (an operator's own resource).
                _ => return None,
            },
            Ok(None) => Owner::new(kind, name),
            Err(err) => {
                debug!(
                    kind,
                    namespace, name, "owner of a pod's controller not readable, naming rule used: {err}"
                );
                match kind {
                    "Job" => owner::job_owner(name),
                    _ => owner::replicaset_owner(name, hash),
                }
            }
        };
        if self.followed.len() >= self.max_entries {
            self.followed.clear();
        }
        self.followed.insert(key, owner.clone());
        Some(owner)
    }

    /// The controller reference of a ReplicaSet or Job, read from the API.
    async fn get_controller(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<OwnerReference>, String> {
        let meta = match kind {
            "Job" => {
                let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
                get(api.get(name)).await?.metadata
            }
            _ => {
                let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
                get(api.get(name)).await?.metadata
            }
        };
        Ok(controller(&meta).cloned())
    }
}

async fn get<T>(request: impl Future<Output = kube::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(GET_TIMEOUT, request).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {GET_TIMEOUT:?}")),
    }
}
