//! The pod watch of `metadata.api_watch` against a recorded Kubernetes API
//! (`support::apiserver`): real list and watch responses on loopback, a watch that breaks and
//! is resumed from its resourceVersion, a 410 Gone event and a 410 answer that both force a new
//! list, owner lookups of ReplicaSets and Jobs (answered, refused, missing). The agent's own
//! client code (kube's client under `metadata::api`) makes the requests; the test checks them
//! and the owners the resolver gives afterwards. No kube-apiserver can run here.

use std::{sync::Arc, time::Duration};

use kernsight::metadata::{
    api::{self, store::PodStore, watch::PodWatch},
    identity::{ContainerInfo, OwnerSource, Resolver},
    owner::Owner,
};
use serde_json::{Value, json};

use crate::support::apiserver::{Answer, ApiServer, End, Line, status};

const NODE: &str = "node-1";
const PODS: &str = "/api/v1/pods";

fn controller(kind: &str, name: &str) -> Value {
    let api_version = match kind {
        "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Deployment" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "Node" => "v1",
        _ => "argoproj.io/v1alpha1",
    };
    json!([{ "apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-of-{name}"),
             "controller": true, "blockOwnerDeletion": true }])
}

/// A pod as the API server serialises it (the fields the client reads, and enough of the rest).
fn pod(name: &str, version: &str, owner: Option<(&str, &str)>, labels: Value) -> Value {
    let mut metadata = json!({
        "name": name, "namespace": "shop", "uid": format!("uid-{name}"), "resourceVersion": version,
        "creationTimestamp": "2026-11-30T10:00:00Z", "labels": labels,
    });
    if let Some((kind, owner)) = owner {
        metadata["ownerReferences"] = controller(kind, owner);
    }
    json!({
        "kind": "Pod", "apiVersion": "v1", "metadata": metadata,
        "spec": { "nodeName": NODE, "containers": [{ "name": "main", "image": "registry.example/app:1" }] },
        "status": { "phase": "Running", "podIP": "10.0.0.7" },
    })
}

fn pod_list(version: &str, items: Vec<Value>) -> Answer {
    Answer::Json(
        200,
        json!({ "kind": "PodList", "apiVersion": "v1", "metadata": { "resourceVersion": version }, "items": items }),
    )
}

fn replicaset(name: &str, deployment: &str) -> Answer {
    Answer::Json(
        200,
        json!({
            "kind": "ReplicaSet", "apiVersion": "apps/v1",
            "metadata": { "name": name, "namespace": "shop", "uid": format!("uid-{name}"), "resourceVersion": "80",
                          "ownerReferences": controller("Deployment", deployment) },
            "spec": { "replicas": 2, "selector": { "matchLabels": { "app": deployment } } },
        }),
    )
}

fn job(name: &str, cronjob: &str) -> Answer {
    Answer::Json(
        200,
        json!({
            "kind": "Job", "apiVersion": "batch/v1",
            "metadata": { "name": name, "namespace": "shop", "uid": format!("uid-{name}"), "resourceVersion": "81",
                          "ownerReferences": controller("CronJob", cronjob) },
            "spec": { "template": { "spec": { "containers": [{ "name": "main" }], "restartPolicy": "Never" } } },
        }),
    )
}

fn event(kind: &str, object: Value) -> Line {
    Line::Event(json!({ "type": kind, "object": object }))
}

fn owner(kind: &'static str, name: &str) -> Option<Owner> {
    Some(Owner::new(kind, name))
}

fn rs_path(name: &str) -> String {
    format!("get /apis/apps/v1/namespaces/shop/replicasets/{name}")
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The pods of the first list: each kind of owner, and each way a controller's owner is found.
fn first_pods() -> Vec<Value> {
    vec![
        pod(
            "web-7d4b9c8f6d-x2x9k",
            "90",
            Some(("ReplicaSet", "web-7d4b9c8f6d")),
            json!({"pod-template-hash": "7d4b9c8f6d"}),
        ),
        // Its ReplicaSet cannot be read (403): the pod-template-hash rule names the Deployment.
        pod(
            "cache-5c9f8d7b4-k2j4h",
            "91",
            Some(("ReplicaSet", "cache-5c9f8d7b4")),
            json!({"pod-template-hash": "5c9f8d7b4"}),
        ),
        pod(
            "backup-29012345-q8w7e",
            "92",
            Some(("Job", "backup-29012345")),
            json!({"job-name": "backup-29012345"}),
        ),
        pod("db-0", "93", Some(("StatefulSet", "db")), json!({})),
        pod("debug", "94", None, json!({})),
        // A controller kernsight does not name: the CRI's labels decide for this pod.
        pod("canary-6d5f-abcde", "95", Some(("Rollout", "canary")), json!({})),
    ]
}

#[test]
fn watch_resumes_relists_after_gone_and_resolves_owners() {
    let (debug_deleted, gate) = std::sync::mpsc::channel();
    let later_pods = |version: &str, extra: Vec<Value>| {
        let mut items: Vec<Value> =
            first_pods().into_iter().filter(|p| p["metadata"]["name"] != "debug").collect();
        items.push(pod(
            "api-6b7c9d-zz9x1",
            "201",
            Some(("ReplicaSet", "api-6b7c9d")),
            json!({"pod-template-hash": "6b7c9d"}),
        ));
        items.extend(extra);
        pod_list(version, items)
    };
    let forbidden = || {
        Answer::Json(
            403,
            status(
                403,
                "Forbidden",
                "replicasets.apps \"cache-5c9f8d7b4\" is forbidden: User \"system:serviceaccount:kernsight:kernsight\" cannot get resource \"replicasets\" in API group \"apps\" in the namespace \"shop\"",
            ),
        )
    };
    let server = ApiServer::start(vec![
        (
            "get /api/v1/pods",
            vec![
                pod_list("100", first_pods()),
                later_pods("300", vec![]),
                later_pods(
                    "400",
                    vec![pod(
                        "late-8f7e6d-p0o9i",
                        "350",
                        Some(("ReplicaSet", "late-8f7e6d")),
                        json!({"pod-template-hash": "8f7e6d"}),
                    )],
                ),
            ],
        ),
        (
            "watch /api/v1/pods",
            vec![
                // Watch 1: a new pod (its Job is gone: 404, the name rule decides), a change, then
                // the connection breaks.
                Answer::Stream(
                    vec![
                        event(
                            "ADDED",
                            pod(
                                "migrate-x1y2z",
                                "101",
                                Some(("Job", "migrate")),
                                json!({"job-name": "migrate"}),
                            ),
                        ),
                        event(
                            "MODIFIED",
                            pod("db-0", "102", Some(("StatefulSet", "db")), json!({"tier": "data"})),
                        ),
                    ],
                    End::Break,
                ),
                // Watch 2, resumed at 102: a bookmark moves the version, a deletion, then the
                // version expires (410 as an ERROR event).
                Answer::Stream(
                    vec![
                        Line::Event(
                            json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "150"}}}),
                        ),
                        event("DELETED", pod("debug", "151", None, json!({}))),
                        Line::Gate(gate),
                        Line::Event(
                            json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 151 (290)")}),
                        ),
                    ],
                    End::Hold,
                ),
                // Watch 3: refused with 410 itself.
                Answer::Json(410, status(410, "Gone", "too old resource version: 300 (380)")),
                Answer::Stream(vec![], End::Hold),
            ],
        ),
        (
            &rs_path("web-7d4b9c8f6d"),
            vec![
                replicaset("web-7d4b9c8f6d", "web"),
                replicaset("web-7d4b9c8f6d", "web"),
                replicaset("web-7d4b9c8f6d", "web"),
            ],
        ),
        (&rs_path("cache-5c9f8d7b4"), vec![forbidden(), forbidden(), forbidden()]),
        (&rs_path("api-6b7c9d"), vec![replicaset("api-6b7c9d", "api"), replicaset("api-6b7c9d", "api")]),
        (&rs_path("late-8f7e6d"), vec![replicaset("late-8f7e6d", "late")]),
        (
            "get /apis/batch/v1/namespaces/shop/jobs/backup-29012345",
            vec![
                job("backup-29012345", "backup"),
                job("backup-29012345", "backup"),
                job("backup-29012345", "backup"),
            ],
        ),
    ]);

    let store = Arc::new(PodStore::new(1024));
    let resolver = Arc::new(Resolver::new(false, Vec::new(), 64).with_node(NODE.into()));
    resolver.use_api_pods(store.clone());
    // A container of the pod that only the third list brings: named from its labels first.
    let late_id = "c".repeat(64);
    let late_owner = resolver.owner_of("uid-late-8f7e6d-p0o9i", || Owner::new("Pod", "late-8f7e6d-p0o9i"));
    resolver.learn(
        late_id.clone(),
        ContainerInfo {
            container: "main".into(),
            pod: "late-8f7e6d-p0o9i".into(),
            namespace: "shop".into(),
            owner: late_owner,
            pod_uid: "uid-late-8f7e6d-p0o9i".into(),
            ..ContainerInfo::default()
        },
    );
    assert_eq!(resolver.owners_from(OwnerSource::Cri), 1);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = runtime.block_on(api::client(&server.url(), std::path::Path::new(""))).unwrap();
    let watch = PodWatch::new(client, NODE, store.clone(), 1024).with_resolver(resolver.clone());
    let task = runtime.spawn(watch.run());

    // Until the deletion of watch 2 arrived (the gate holds the 410 back).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.owner("uid-debug").is_some() || store.owner("uid-migrate-x1y2z").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "watch 2 not applied; requests: {:#?}",
            server.requests()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        store.owner("uid-migrate-x1y2z"),
        owner("Job", "migrate"),
        "Job not readable: its name decides"
    );
    assert_eq!(store.owner("uid-backup-29012345-q8w7e"), owner("CronJob", "backup"));
    debug_deleted.send(()).unwrap();

    assert!(
        server.wait_for(Duration::from_secs(20), |r| r.contains("watch=true")
            && r.contains("resourceVersion=400")),
        "no watch from the third list's version; requests: {:#?}",
        server.requests()
    );
    let requests = server.requests();
    task.abort();
    drop(runtime);

    let pod_requests: Vec<&String> = requests.iter().filter(|r| r.starts_with(PODS)).collect();
    for request in &pod_requests {
        assert!(
            request.contains("fieldSelector=spec.nodeName=node-1"),
            "every pod request is this node's: {request}"
        );
    }
    let version = |r: &str| r.split('&').find_map(|p| p.strip_prefix("resourceVersion=")).map(str::to_owned);
    let shape: Vec<(bool, Option<String>)> =
        pod_requests.iter().map(|r| (r.contains("watch=true"), version(r))).collect();
    let watch = |v: &str| (true, Some(v.to_owned()));
    assert_eq!(
        shape,
        vec![
            (false, None),
            watch("100"),
            // Resumed after the break from the last event's version.
            watch("102"),
            // The 410 event: a new list, then a watch from its version.
            (false, None),
            watch("300"),
            // The 410 answer: a new list again.
            (false, None),
            watch("400"),
        ],
        "{requests:#?}"
    );
    assert!(
        pod_requests
            .iter()
            .filter(|r| r.contains("watch=true"))
            .all(|r| r.contains("allowWatchBookmarks=true"))
    );
    assert!(requests.contains(&"/apis/apps/v1/namespaces/shop/replicasets/cache-5c9f8d7b4".to_owned()));

    // After the last list: the API's owners, the naming rules where a lookup was refused, and
    // no pod that the lists no longer had.
    assert_eq!(store.owner("uid-web-7d4b9c8f6d-x2x9k"), owner("Deployment", "web"));
    assert_eq!(
        store.owner("uid-cache-5c9f8d7b4-k2j4h"),
        owner("Deployment", "cache"),
        "403: pod-template-hash rule"
    );
    assert_eq!(store.owner("uid-backup-29012345-q8w7e"), owner("CronJob", "backup"));
    assert_eq!(store.owner("uid-db-0"), owner("StatefulSet", "db"));
    assert_eq!(store.owner("uid-api-6b7c9d-zz9x1"), owner("Deployment", "api"));
    assert_eq!(store.owner("uid-late-8f7e6d-p0o9i"), owner("Deployment", "late"));
    assert_eq!(store.owner("uid-debug"), None, "deleted");
    assert_eq!(store.owner("uid-migrate-x1y2z"), None, "not in the lists after it");
    assert_eq!(store.owner("uid-canary-6d5f-abcde"), None, "a Rollout's pod is left to the CRI's labels");
    assert_eq!(store.len(), 6);
    assert_eq!(store.stats.gone.load(std::sync::atomic::Ordering::Relaxed), 2);

    // The container named from labels before the API knew its pod now has the API's owner.
    let workload = resolver.workload(&format!("/libpod_parent/libpod-{late_id}"));
    assert_eq!((workload.workload_kind.as_str(), workload.workload.as_str()), ("Deployment", "late"));
    assert_eq!(resolver.owners_from(OwnerSource::Api), 1, "one correction");
    assert_eq!(resolver.owner_of("uid-db-0", || Owner::new("Pod", "wrong")), Owner::new("StatefulSet", "db"));
    assert_eq!(
        resolver.owner_of("uid-unknown", || Owner::new("Pod", "unknown")),
        Owner::new("Pod", "unknown")
    );
    assert_eq!((resolver.owners_from(OwnerSource::Api), resolver.owners_from(OwnerSource::Cri)), (2, 2));
}

/// A hostile API: a list far beyond `api_max_pods` with large labels, then a watch event larger
/// than any response may be. The store keeps its bound, the oversized stream is cut and the
/// watch resumed from the same version.
#[test]
fn a_hostile_api_cannot_grow_the_store_or_the_buffers() {
    let labels: serde_json::Map<String, Value> =
        (0..10).map(|i| (format!("tenant.example/label-{i}"), Value::String("v".repeat(1000)))).collect();
    let many: Vec<Value> = (0..500)
        .map(|i| {
            pod(&format!("swarm-{i}"), "10", Some(("StatefulSet", "swarm")), Value::Object(labels.clone()))
        })
        .collect();
    let mut huge = pod("huge", "11", Some(("StatefulSet", "huge")), json!({}));
    huge["metadata"]["annotations"] = json!({ "filler": "x".repeat(api::MAX_RESPONSE_BYTES + 1024) });
    let long_owner = pod("long", "12", Some(("StatefulSet", &"s".repeat(300))), json!({}));
    let server = ApiServer::start(vec![
        ("get /api/v1/pods", vec![pod_list("100", many)]),
        (
            "watch /api/v1/pods",
            vec![
                Answer::Stream(vec![event("ADDED", long_owner), event("ADDED", huge)], End::Hold),
                Answer::Stream(vec![], End::Hold),
            ],
        ),
    ]);
    let store = Arc::new(PodStore::new(100));
    block_on(async {
        let client = api::client(&server.url(), std::path::Path::new("")).await.unwrap();
        let task = tokio::spawn(PodWatch::new(client, NODE, store.clone(), 100).run());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while server.requests().iter().filter(|r| r.contains("watch=true")).count() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no second watch; requests: {:#?}",
                server.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    });
    assert_eq!(store.len(), 100, "api_max_pods");
    assert_eq!(
        store.rejected(),
        401,
        "400 beyond the bound, and an owner name longer than Kubernetes allows"
    );
    let stats = &store.stats;
    assert_eq!(
        stats.watch_error.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the oversized stream is cut"
    );
    let watches: Vec<String> = server.requests().into_iter().filter(|r| r.contains("watch=true")).collect();
    assert!(watches[1].contains("resourceVersion=12"), "resumed after the last event it read: {watches:#?}");
}

/// `metadata.kubeconfig`: the client takes the server (and namespace) from a kubeconfig file, as
/// for an agent run outside a pod; a missing file is an error that names it.
#[test]
fn the_client_reads_a_kubeconfig() {
    let server = ApiServer::start(vec![
        (
            "get /api/v1/pods",
            vec![pod_list("7", vec![pod("db-0", "5", Some(("StatefulSet", "db")), json!({}))])],
        ),
        ("watch /api/v1/pods", vec![Answer::Stream(vec![], End::Hold)]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: recorded\n  cluster:\n    server: {}\n\
             contexts:\n- name: test\n  context:\n    cluster: recorded\n    user: agent\nusers:\n- name: agent\n  user:\n    token: not-a-secret\n",
            server.url()
        ),
    )
    .unwrap();
    let store = Arc::new(PodStore::new(16));
    block_on(async {
        let client = api::client("", &kubeconfig).await.unwrap();
        let task = tokio::spawn(PodWatch::new(client, NODE, store.clone(), 16).run());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while store.owner("uid-db-0").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "requests: {:#?}", server.requests());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let missing =
            api::client("", &dir.path().join("nope")).await.err().expect("no such file").to_string();
        assert!(missing.contains("cannot read the kubeconfig") && missing.contains("nope"), "{missing}");
    });
    assert_eq!(store.owner("uid-db-0"), owner("StatefulSet", "db"));
    assert!(server.requests()[0].contains("fieldSelector=spec.nodeName=node-1"));
}

/// The agent with `metadata.api_watch` on a node whose pods run through containerd's CRI: the pod
/// the recorded API knows gets the API's owner, though its sandbox labels imitate a Deployment's
/// pod; the pod the API does not know falls back to its labels; both are counted by source.
#[test]
fn the_agent_takes_owners_from_the_api_and_labels_for_pods_it_does_not_know() {
    if !crate::support::privileged() {
        return;
    }
    let _serial = crate::support::serial();
    let containerd = crate::support::containerd::Containerd::start();
    let known_uid = "00000000-0000-0000-0000-00000000a001";
    let mut known = pod("imitator-7d4b9c8f6d-abcde", "9", Some(("StatefulSet", "real")), json!({}));
    known["metadata"]["uid"] = json!(known_uid);
    let server = ApiServer::start(vec![
        ("get /api/v1/pods", vec![pod_list("10", vec![known])]),
        ("watch /api/v1/pods", vec![Answer::Stream(vec![], End::Hold)]),
    ]);
    // The syscall family is off: the containers are met by the posture collector, and the pod
    // watch needs nothing else of the kernel side.
    let (_dir, config) = crate::support::config_file(&format!(
        "[syscalls]\nenabled = false\n[metadata]\ncri_socket = \"{}\"\napi_watch = true\napi_server = \"{}\"\n",
        crate::support::path_str(containerd.socket()),
        server.url()
    ));
    let agent = crate::support::Agent::start_with_env(
        &["--config", crate::support::path_str(&config)],
        &[("NODE_NAME", NODE)],
    );
    let hash = [("pod-template-hash", "7d4b9c8f6d")];
    let _known = containerd.run_pod_with(
        "imitator-7d4b9c8f6d-abcde",
        "shop",
        known_uid,
        "main",
        &["/bin/sh", "-c", "sleep 600"],
        &hash,
        &[],
    );
    let _unknown = containerd.run_pod_with(
        "web-7d4b9c8f6d-q8w7e",
        "shop",
        "00000000-0000-0000-0000-00000000a002",
        "main",
        &["/bin/sh", "-c", "sleep 600"],
        &hash,
        &[],
    );
    let info = |pod: &'static str, kind: &'static str, workload: &'static str| {
        [("namespace", "shop"), ("pod", pod), ("workload_kind", kind), ("workload", workload), ("node", NODE)]
    };
    let samples = agent.scrape_until(Duration::from_secs(60), |samples| {
        let api = crate::support::value(
            samples,
            "kernsight_pod_info",
            &info("imitator-7d4b9c8f6d-abcde", "StatefulSet", "real"),
        );
        let labels = crate::support::value(
            samples,
            "kernsight_pod_info",
            &info("web-7d4b9c8f6d-q8w7e", "Deployment", "web"),
        );
        if api == 1.0 && labels == 1.0 {
            Ok(())
        } else {
            Err(format!("pod_info: api {api}, labels {labels}"))
        }
    });
    let value = |name: &str, labels: &[(&str, &str)]| crate::support::value(&samples, name, labels);
    assert!(value("kernsight_workload_owner_source_total", &[("source", "api")]) >= 1.0);
    assert!(value("kernsight_workload_owner_source_total", &[("source", "cri")]) >= 1.0);
    assert!(
        value("kernsight_kubernetes_api_requests_total", &[("request", "list"), ("result", "ok")]) >= 1.0
    );
    assert_eq!(value("kernsight_kubernetes_api_pods", &[]), 1.0);
    assert_eq!(
        value("kernsight_pod_info", &info("imitator-7d4b9c8f6d-abcde", "Deployment", "imitator")),
        0.0,
        "the labels' guess is not exported beside the API's owner"
    );
    assert!(server.requests()[0].contains("fieldSelector=spec.nodeName=node-1"));
}

/// The agent's image has no OS trust store (FROM scratch), nor have the kernel matrix's guests:
/// a plain-HTTP API server (`api_server` on loopback, a kubectl proxy) must not need one. The
/// trust store is taken away here the way rustls' native roots let one point it elsewhere.
#[test]
fn a_plain_http_api_server_needs_no_trust_store() {
    if !crate::support::privileged() {
        return;
    }
    let _serial = crate::support::serial();
    let server = ApiServer::start(vec![
        (
            "get /api/v1/pods",
            vec![pod_list("3", vec![pod("db-0", "2", Some(("StatefulSet", "db")), json!({}))])],
        ),
        ("watch /api/v1/pods", vec![Answer::Stream(vec![], End::Hold)]),
    ]);
    let no_certificates = tempfile::tempdir().unwrap();
    let (_dir, config) = crate::support::config_file(&format!(
        "[syscalls]\nenabled = false\n[metadata]\ncri_socket = \"/nonexistent/cri.sock\"\napi_watch = true\napi_server = \"{}\"\n",
        server.url()
    ));
    let agent = crate::support::Agent::start_with_env(
        &["--config", crate::support::path_str(&config)],
        &[
            ("NODE_NAME", NODE),
            ("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt"),
            ("SSL_CERT_DIR", crate::support::path_str(no_certificates.path())),
        ],
    );
    agent.scrape_until(Duration::from_secs(30), |samples| {
        let listed = crate::support::value(
            samples,
            "kernsight_kubernetes_api_requests_total",
            &[("request", "list"), ("result", "ok")],
        );
        let pods = crate::support::value(samples, "kernsight_kubernetes_api_pods", &[]);
        if listed >= 1.0 && pods == 1.0 { Ok(()) } else { Err(format!("list ok {listed}, pods {pods}")) }
    });
}
