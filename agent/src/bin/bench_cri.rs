//! `kernsight-bench-cri SOCKET LIST`: a CRI runtime for `cargo xtask bench scrape`, so that the
//! benchmark's containers carry the names a node's do. It answers the three calls the agent
//! makes (`Version`, `ListContainers`, `ListPodSandbox`) on the unix socket SOCKET, from LIST,
//! read at each call: one line per container, `<container id> <pod uid> <number>`. Container
//! `n` runs in a pod of a Deployment as kubelet names them (`checkout-api-7d9f8b6c5-x2k4q` in
//! `payments-prod`): labels as long as a cluster's, where unnamed containers export empty ones.
//! Every other call is answered UNIMPLEMENTED, as gRPC does.

use std::{
    collections::HashMap,
    convert::Infallible,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use axum::body::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::{Request, Response, body::Incoming, header::HeaderValue, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_cri::v1 as cri;

const SERVICE: &str = "/runtime.v1.RuntimeService/";
const APPS: [&str; 8] = [
    "checkout-api",
    "payments-worker",
    "search-indexer",
    "frontend-web",
    "inventory-sync",
    "notification-dispatcher",
    "auth-gateway",
    "recommendation-engine",
];
const NAMESPACES: [&str; 4] = ["payments-prod", "shop-frontend", "search", "platform-auth"];

/// The names of container `n`: its app (container and Deployment), namespace, pod and the
/// pod-template-hash of its ReplicaSet.
fn names(n: u64) -> (&'static str, &'static str, String, String) {
    let app = APPS[n as usize % APPS.len()];
    let namespace = NAMESPACES[n as usize % NAMESPACES.len()];
    // 36 and 20 bits: 9 and 5 digits, as long as a ReplicaSet's hash and a pod's suffix.
    let hash = format!("{:09x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 28);
    let suffix = format!("{:05x}", n.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 44);
    (app, namespace, format!("{app}-{hash}-{suffix}"), hash)
}

/// The containers and their sandboxes listed in `list`.
fn read_list(list: &Path) -> (Vec<cri::Container>, Vec<cri::PodSandbox>) {
    let text = std::fs::read_to_string(list).unwrap_or_default();
    let mut containers = Vec::new();
    let mut sandboxes = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(id), Some(uid), Some(Ok(n))) =
            (fields.next(), fields.next(), fields.next().map(str::parse))
        else {
            continue;
        };
        let (app, namespace, pod, hash) = names(n);
        let sandbox_id = format!("sandbox-{n}");
        sandboxes.push(cri::PodSandbox {
            id: sandbox_id.clone(),
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.clone(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            state: cri::PodSandboxState::SandboxReady as i32,
            labels: HashMap::from([
                ("app".to_owned(), app.to_owned()),
                ("pod-template-hash".to_owned(), hash),
            ]),
            annotations: HashMap::from([("kubernetes.io/config.source".to_owned(), "api".to_owned())]),
            ..Default::default()
        });
        containers.push(cri::Container {
            id: id.to_owned(),
            pod_sandbox_id: sandbox_id,
            metadata: Some(cri::ContainerMetadata { name: app.to_owned(), attempt: 0 }),
            image: Some(cri::ImageSpec {
                image: format!("registry.example/{app}:1.4.2"),
                ..Default::default()
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        });
    }
    (containers, sandboxes)
}

/// `message` as a gRPC response: one length-prefixed message, then `grpc-status: 0`.
fn grpc_ok(message: &impl prost::Message) -> Response<Body> {
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(encoded.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    grpc_response(vec![Ok(Frame::data(Bytes::from(framed))), Ok(Frame::trailers(trailers))], None)
}

/// A response's body: its frames, all ready.
type Body = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A gRPC response of `frames`, or without any and with `status` in its headers.
fn grpc_response(
    frames: Vec<Result<Frame<Bytes>, Infallible>>,
    status: Option<&'static str>,
) -> Response<Body> {
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    if let Some(status) = status {
        // A trailers-only answer: the status in the headers.
        headers.insert("grpc-status", HeaderValue::from_static(status));
    }
    response
}

async fn answer(request: Request<Incoming>, list: PathBuf) -> Result<Response<Body>, Infallible> {
    let method = request.uri().path().strip_prefix(SERVICE).unwrap_or_default().to_owned();
    // The request's filters are not applied: the agent asks for every container.
    let _ = request.into_body().collect().await;
    Ok(match method.as_str() {
        "Version" => grpc_ok(&cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "kernsight-bench-cri".into(),
            runtime_version: "1".into(),
            runtime_api_version: "v1".into(),
        }),
        "ListContainers" => grpc_ok(&cri::ListContainersResponse { containers: read_list(&list).0 }),
        "ListPodSandbox" => grpc_ok(&cri::ListPodSandboxResponse { items: read_list(&list).1 }),
        _ => grpc_response(Vec::new(), Some("12")),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), Some(list)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: kernsight-bench-cri SOCKET LIST");
    };
    let (socket, list) = (PathBuf::from(socket), PathBuf::from(list));
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    println!("listening on {}", socket.display());
    loop {
        let (stream, _) = listener.accept().await.context("accept")?;
        let list = list.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, list.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
