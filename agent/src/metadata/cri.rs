//! Container runtime (CRI) client: which pod and container a container id belongs to.
//!
//! kubelet drives the node's runtime (containerd, CRI-O) through the CRI gRPC API on a unix
//! socket. kernsight asks the same socket, read-only (`Version`, `ListContainers`,
//! `ListPodSandbox`): the runtime is on the node, needs no credentials, and knows the container
//! ids that name the containers' cgroups.
//!
//! [`CriClient::containers`] returns one entry per container and also one per pod sandbox, with
//! `container_id` = the sandbox id and an empty `container_name`: the sandbox's own process
//! (`pause`) runs in a cgroup named after the sandbox id, and that entry attributes it to its pod.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{self as cri, runtime_service_client::RuntimeServiceClient};
use tonic::transport::{Channel, Endpoint, Uri};

/// Where runtimes put their CRI socket (`metadata.cri_socket_candidates` by default).
pub use crate::config::DEFAULT_CRI_SOCKETS as DEFAULT_SOCKETS;

/// The CRI API version kernsight speaks (runtimes answer `Version` with the one they serve).
const CRI_API_VERSION: &str = "v1";

/// Largest response accepted. `ListContainers` on a busy node passes gRPC's default of 4 MiB;
/// kubelet accepts 16 MiB, so runtimes keep their answers below that.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

// The labels kubelet puts on every sandbox and container it creates: the fallback when a
// runtime returns no metadata.
const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

const SOCKET_HINT: &str = "set metadata.cri_socket to the runtime's socket \
     (containerd: /run/containerd/containerd.sock, CRI-O: /run/crio/crio.sock)";

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI socket {}: {reason}; {hint}", socket.display())]
    Connect { socket: PathBuf, reason: String, hint: &'static str },
    #[error(
        "the CRI socket {} did not answer {call} within {timeout:?}; check that the container \
         runtime is running and not overloaded (its log says why)",
        socket.display()
    )]
    Timeout { socket: PathBuf, call: &'static str, timeout: Duration },
    #[error(
        "{} is not a CRI v1 endpoint ({call}: {code:?}: {message}); {SOCKET_HINT}, and check \
         that the runtime's CRI plugin is enabled",
        socket.display()
    )]
    NotCri { socket: PathBuf, call: &'static str, code: tonic::Code, message: String },
    #[error(
        "CRI call {call} on {} failed ({code:?}: {message}); check the container runtime's log",
        socket.display()
    )]
    Call { socket: PathBuf, call: &'static str, code: tonic::Code, message: String },
}

/// A container (or a pod sandbox, with an empty `container_name`) and the pod it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriContainer {
    pub container_id: String,
    /// The name in the pod spec; empty for the entry of a pod sandbox.
    pub container_name: String,
    /// The image as the user wrote it when the runtime knows it, else the runtime's reference;
    /// empty for a pod sandbox.
    pub image: String,
    pub pod_sandbox_id: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// The pod's labels (from the sandbox), without kubelet's `io.kubernetes.pod.*` bookkeeping,
    /// which is already in the fields above.
    pub pod_labels: BTreeMap<String, String>,
    /// The sandbox's `kubernetes.io/config.source` annotation (`file` or `http`: a static pod).
    pub pod_config_source: String,
}

/// A connection to a runtime's CRI socket. The channel reconnects by itself when the runtime
/// restarts; every call is bounded by the timeout given to [`CriClient::connect`].
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    runtime: String,
    timeout: Duration,
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to `socket` and asks `Version`, which tells a CRI endpoint from any other
    /// socket. `timeout` bounds the connection and then each call.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, CriError> {
        // The URI is required by tonic but unused: the connector dials the unix socket.
        let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(timeout);
        let path = socket.to_path_buf();
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let channel = match tokio::time::timeout(timeout, endpoint.connect_with_connector(connector)).await {
            Err(_) => {
                return Err(CriError::Timeout { socket: socket.to_path_buf(), call: "connect", timeout });
            }
            Ok(Err(error)) => return Err(connect_error(socket, &error)),
            Ok(Ok(channel)) => channel,
        };
        let mut client = RuntimeServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        let version = cri::VersionRequest { version: CRI_API_VERSION.to_owned() };
        let version = match call(socket, timeout, "Version", client.version(request(version, timeout))).await
        {
            Ok(version) => version,
            Err(CriError::Call { socket, call, code, message }) if code == tonic::Code::Unimplemented => {
                return Err(CriError::NotCri { socket, call, code, message });
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            socket: socket.to_path_buf(),
            runtime: format!("{} {}", version.runtime_name, version.runtime_version),
            timeout,
            client,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runtime name and version as the runtime reports them, e.g. "containerd 1.6.20~ds1".
    pub fn runtime(&self) -> &str {
        &self.runtime
    }

    /// Every container and every pod sandbox the runtime knows, in any state, joined with their
    /// pods and sorted by id. Exited containers are kept: counts of their cgroups are still
    /// exported for a while after they exit.
    pub async fn containers(&mut self) -> Result<Vec<CriContainer>, CriError> {
        // Containers first: a sandbox created between the two calls then shows up with no
        // container, instead of a container whose sandbox is not in the list.
        let containers = call(
            &self.socket,
            self.timeout,
            "ListContainers",
            self.client.list_containers(request(cri::ListContainersRequest { filter: None }, self.timeout)),
        )
        .await?
        .containers;
        let sandboxes = call(
            &self.socket,
            self.timeout,
            "ListPodSandbox",
            self.client.list_pod_sandbox(request(cri::ListPodSandboxRequest { filter: None }, self.timeout)),
        )
        .await?
        .items;
        Ok(join(containers, sandboxes))
    }
}

/// What a candidate path of the CRI socket turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    Socket,
    Missing,
    /// Something else: a directory (what a hostPath mount of a missing socket leaves), a regular
    /// file, a FIFO...
    NotASocket(&'static str),
    /// It exists but could not be examined (permissions).
    Unreadable(String),
}

/// The candidate paths looked at, in order, and what each was; printed as
/// `/run/containerd/containerd.sock (a directory), /run/crio/crio.sock (missing)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketSearch {
    pub tried: Vec<(PathBuf, Candidate)>,
}

impl SocketSearch {
    /// The candidates that are sockets, in order.
    pub fn sockets(&self) -> impl Iterator<Item = &Path> {
        self.tried.iter().filter(|(_, c)| *c == Candidate::Socket).map(|(path, _)| path.as_path())
    }

    /// Whether any candidate exists at all (a runtime is expected on this node).
    pub fn found_anything(&self) -> bool {
        self.tried.iter().any(|(_, c)| *c != Candidate::Missing)
    }
}

impl std::fmt::Display for SocketSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (path, candidate)) in self.tried.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let what = match candidate {
                Candidate::Socket => "a socket",
                Candidate::Missing => "missing",
                Candidate::NotASocket(what) => what,
                Candidate::Unreadable(why) => why,
            };
            write!(f, "{} ({what})", path.display())?;
        }
        Ok(())
    }
}

/// Looks at each candidate path (following symlinks: `/var/run` is one to `/run` on most hosts).
pub fn search_sockets(candidates: &[PathBuf]) -> SocketSearch {
    use std::os::unix::fs::FileTypeExt as _;
    let tried = candidates
        .iter()
        .map(|path| {
            let candidate = match std::fs::metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => Candidate::Socket,
                Ok(meta) if meta.is_dir() => Candidate::NotASocket("a directory"),
                Ok(meta) if meta.is_file() => Candidate::NotASocket("a regular file"),
                Ok(_) => Candidate::NotASocket("not a socket"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Candidate::Missing,
                Err(err) => Candidate::Unreadable(format!("cannot be examined: {err}")),
            };
            (path.clone(), candidate)
        })
        .collect();
    SocketSearch { tried }
}

/// The default candidates as paths.
pub fn default_sockets() -> Vec<PathBuf> {
    DEFAULT_SOCKETS.iter().map(PathBuf::from).collect()
}

/// The first of `configured` (or of [`DEFAULT_SOCKETS`] when empty) that is a socket: a
/// directory or a regular file at a candidate path is passed over.
pub fn find_socket(configured: &[PathBuf]) -> Option<PathBuf> {
    let candidates = if configured.is_empty() { default_sockets() } else { configured.to_vec() };
    search_sockets(&candidates).sockets().next().map(Path::to_path_buf)
}

/// Every container the runtime at `socket` knows, joined with its pod, from a thread outside
/// any async runtime (the CLI's one-shot questions). `timeout` bounds the connection and the call.
pub fn list_blocking(socket: &Path, timeout: Duration) -> Result<Vec<CriContainer>, String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime
        .block_on(async {
            let mut client = CriClient::connect(socket, timeout).await?;
            client.containers().await
        })
        .map_err(|e| e.to_string())
}

/// A request that also tells the runtime the deadline (`grpc-timeout`), so that it gives up too.
fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Runs one RPC bounded by `timeout`.
async fn call<T>(
    socket: &Path,
    timeout: Duration,
    call: &'static str,
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    let timed_out = || CriError::Timeout { socket: socket.to_path_buf(), call, timeout };
    match tokio::time::timeout(timeout, rpc).await {
        Err(_) => Err(timed_out()),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) if is_timeout(&status) => Err(timed_out()),
        Ok(Err(status)) => Err(CriError::Call {
            socket: socket.to_path_buf(),
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }),
    }
}

/// Whether the runtime gave up at the deadline, or tonic did: it enforces the `grpc-timeout` it
/// sends, and reports that as `Cancelled` with the text of [`tonic::TimeoutExpired`].
fn is_timeout(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
        || (status.code() == tonic::Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string())
}

/// Names the cause found deepest in tonic's error chain (usually the errno of `connect`) and
/// what to do about it.
fn connect_error(socket: &Path, error: &(dyn std::error::Error + 'static)) -> CriError {
    let mut chain: Vec<String> = Vec::new();
    let mut io = None;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            io.get_or_insert((e.kind(), e.to_string()));
        }
        let text = e.to_string();
        // Wrappers often repeat their source's message.
        if !chain.iter().any(|known| known.contains(&text)) {
            chain.push(text);
        }
        next = e.source();
    }
    let hint = match io.as_ref().map(|(kind, _)| *kind) {
        Some(std::io::ErrorKind::NotFound) => SOCKET_HINT,
        Some(std::io::ErrorKind::PermissionDenied) => {
            "the CRI socket is for root only: run kernsight as root"
        }
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "nothing listens on it: start the container runtime, or set metadata.cri_socket"
        }
        _ => "check that the container runtime is running, or set metadata.cri_socket",
    };
    CriError::Connect {
        socket: socket.to_path_buf(),
        // The errno says it all ("No such file or directory"); tonic's wrappers add nothing.
        reason: io.map_or_else(|| chain.join(": "), |(_, text)| text),
        hint,
    }
}

/// The pod identity of a sandbox: its metadata, else kubelet's labels on it.
struct Pod {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    config_source: String,
}

impl Pod {
    fn of(sandbox: &cri::PodSandbox) -> Self {
        let metadata = sandbox.metadata.clone().unwrap_or_default();
        let labels = &sandbox.labels;
        Self {
            name: or_label(metadata.name, labels, LABEL_POD_NAME),
            namespace: or_label(metadata.namespace, labels, LABEL_POD_NAMESPACE),
            uid: or_label(metadata.uid, labels, LABEL_POD_UID),
            labels: labels
                .iter()
                .filter(|(key, _)| {
                    ![LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID].contains(&key.as_str())
                })
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            config_source: sandbox.annotations.get(super::owner::CONFIG_SOURCE).cloned().unwrap_or_default(),
        }
    }
}

/// `value`, or the label `key` when `value` is empty.
fn or_label(value: String, labels: &HashMap<String, String>, key: &str) -> String {
    if value.is_empty() { labels.get(key).cloned().unwrap_or_default() } else { value }
}

/// The image as the user wrote it if the runtime has it; else the reference the container was
/// created with unless that is a bare image id (what kubelet passes), then the digested one.
fn image_name(container: &cri::Container) -> String {
    let spec = container.image.clone().unwrap_or_default();
    if !spec.user_specified_image.is_empty() {
        spec.user_specified_image
    } else if !spec.image.is_empty() && !spec.image.starts_with("sha256:") {
        spec.image
    } else if !container.image_ref.is_empty() {
        container.image_ref.clone()
    } else {
        spec.image
    }
}

/// One entry per container, with its pod from its sandbox (or from kubelet's labels on the
/// container when the sandbox is not listed or has no metadata), and one per sandbox.
fn join(containers: Vec<cri::Container>, sandboxes: Vec<cri::PodSandbox>) -> Vec<CriContainer> {
    let pods: HashMap<&str, Pod> =
        sandboxes.iter().map(|sandbox| (sandbox.id.as_str(), Pod::of(sandbox))).collect();
    let mut joined: Vec<CriContainer> = containers
        .iter()
        .map(|container| {
            let pod = pods.get(container.pod_sandbox_id.as_str());
            let labels = &container.labels;
            let from_pod = |field: fn(&Pod) -> &String, label: &str| {
                or_label(pod.map(field).cloned().unwrap_or_default(), labels, label)
            };
            CriContainer {
                container_id: container.id.clone(),
                container_name: or_label(
                    container.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                    labels,
                    LABEL_CONTAINER_NAME,
                ),
                image: image_name(container),
                pod_sandbox_id: container.pod_sandbox_id.clone(),
                pod_name: from_pod(|p| &p.name, LABEL_POD_NAME),
                pod_namespace: from_pod(|p| &p.namespace, LABEL_POD_NAMESPACE),
                pod_uid: from_pod(|p| &p.uid, LABEL_POD_UID),
                pod_labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
                pod_config_source: pod.map(|p| p.config_source.clone()).unwrap_or_default(),
            }
        })
        .collect();
    joined.extend(sandboxes.iter().map(|sandbox| {
        let pod = &pods[sandbox.id.as_str()];
        CriContainer {
            container_id: sandbox.id.clone(),
            container_name: String::new(),
            image: String::new(),
            pod_sandbox_id: sandbox.id.clone(),
            pod_name: pod.name.clone(),
            pod_namespace: pod.namespace.clone(),
            pod_uid: pod.uid.clone(),
            pod_labels: pod.labels.clone(),
            pod_config_source: pod.config_source.clone(),
        }
    }));
    joined.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sandbox(id: &str, name: &str, namespace: &str, uid: &str) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                namespace: namespace.into(),
                uid: uid.into(),
                attempt: 0,
            }),
            labels: labels(&[
                (LABEL_POD_NAME, name),
                (LABEL_POD_NAMESPACE, namespace),
                (LABEL_POD_UID, uid),
                ("app", "web"),
            ]),
            ..Default::default()
        }
    }

    fn container(id: &str, sandbox: &str, name: &str) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(cri::ImageSpec {
                image: "docker.io/library/nginx:1.25".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_take_their_pod_from_the_sandbox_metadata() {
        let joined =
            join(vec![container("c1", "s1", "nginx")], vec![sandbox("s1", "web-0", "shop", "uid-1")]);
        assert_eq!(
            joined[0],
            CriContainer {
                container_id: "c1".into(),
                container_name: "nginx".into(),
                image: "docker.io/library/nginx:1.25".into(),
                pod_sandbox_id: "s1".into(),
                pod_name: "web-0".into(),
                pod_namespace: "shop".into(),
                pod_uid: "uid-1".into(),
                pod_labels: [("app".to_string(), "web".to_string())].into(),
                pod_config_source: String::new(),
            }
        );
    }

    #[test]
    fn every_sandbox_has_an_entry_with_an_empty_container_name() {
        let joined = join(
            vec![container("c1", "s1", "nginx")],
            vec![sandbox("s1", "web-0", "shop", "uid-1"), sandbox("s2", "db-0", "shop", "uid-2")],
        );
        let ids: Vec<&str> = joined.iter().map(|c| c.container_id.as_str()).collect();
        assert_eq!(ids, ["c1", "s1", "s2"]);
        let s2 = &joined[2];
        assert_eq!(s2.container_name, "");
        assert_eq!(s2.image, "");
        assert_eq!(s2.pod_sandbox_id, "s2");
        assert_eq!(
            (s2.pod_name.as_str(), s2.pod_namespace.as_str(), s2.pod_uid.as_str()),
            ("db-0", "shop", "uid-2")
        );
    }

    #[test]
    fn missing_metadata_falls_back_to_kubelet_labels() {
        let mut sandbox = sandbox("s1", "web-0", "shop", "uid-1");
        sandbox.metadata = None;
        let mut container = container("c1", "s1", "");
        container.metadata = None;
        container.labels = labels(&[(LABEL_CONTAINER_NAME, "nginx")]);
        let joined = join(vec![container], vec![sandbox]);
        for entry in &joined {
            assert_eq!(entry.pod_name, "web-0");
            assert_eq!(entry.pod_namespace, "shop");
            assert_eq!(entry.pod_uid, "uid-1");
        }
        assert_eq!(joined[0].container_name, "nginx");
    }

    #[test]
    fn a_container_whose_sandbox_is_not_listed_takes_its_pod_from_its_labels() {
        let mut container = container("c1", "gone", "nginx");
        container.labels = labels(&[
            (LABEL_POD_NAME, "web-0"),
            (LABEL_POD_NAMESPACE, "shop"),
            (LABEL_POD_UID, "uid-1"),
            (LABEL_CONTAINER_NAME, "ignored: metadata wins"),
        ]);
        let joined = join(vec![container], vec![]);
        assert_eq!(joined.len(), 1);
        let entry = &joined[0];
        assert_eq!(entry.container_name, "nginx");
        assert_eq!(
            (entry.pod_name.as_str(), entry.pod_namespace.as_str(), entry.pod_uid.as_str()),
            ("web-0", "shop", "uid-1")
        );
        assert!(entry.pod_labels.is_empty());
    }

    #[test]
    fn a_container_without_metadata_or_labels_has_empty_fields() {
        let joined = join(vec![cri::Container { id: "c1".into(), ..Default::default() }], vec![]);
        assert_eq!(joined[0].container_id, "c1");
        assert_eq!(joined[0].pod_name, "");
        assert_eq!(joined[0].container_name, "");
        assert_eq!(joined[0].image, "");
    }

    #[test]
    fn image_prefers_what_the_user_wrote_over_ids() {
        let mut c = container("c1", "s1", "nginx");
        c.image = Some(cri::ImageSpec {
            image: "sha256:0123".into(),
            user_specified_image: "nginx:1.25".into(),
            ..Default::default()
        });
        c.image_ref = "docker.io/library/nginx@sha256:4567".into();
        assert_eq!(image_name(&c), "nginx:1.25");
        c.image.as_mut().unwrap().user_specified_image.clear();
        assert_eq!(image_name(&c), "docker.io/library/nginx@sha256:4567");
        c.image_ref.clear();
        assert_eq!(image_name(&c), "sha256:0123");
    }

    #[test]
    fn find_socket_returns_the_first_configured_path_that_is_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sock");
        // What a hostPath mount of a socket that did not exist yet leaves behind.
        let directory = dir.path().join("directory.sock");
        std::fs::create_dir(&directory).unwrap();
        let file = dir.path().join("file.sock");
        std::fs::write(&file, "").unwrap();
        let first = dir.path().join("first.sock");
        let second = dir.path().join("second.sock");
        let _listeners = [&first, &second].map(|path| std::os::unix::net::UnixListener::bind(path).unwrap());
        let candidates = [missing.clone(), directory.clone(), file.clone(), second.clone(), first.clone()];
        assert_eq!(find_socket(&candidates), Some(second.clone()));
        assert_eq!(find_socket(std::slice::from_ref(&missing)), None);
        assert_eq!(find_socket(&[directory.clone(), file.clone()]), None);
        let search = search_sockets(&candidates[..3]);
        assert!(search.found_anything() && search.sockets().next().is_none());
        assert_eq!(
            search.to_string(),
            format!(
                "{} (missing), {} (a directory), {} (a regular file)",
                missing.display(),
                directory.display(),
                file.display()
            )
        );
        assert!(!search_sockets(std::slice::from_ref(&missing)).found_anything());
    }

    #[test]
    fn an_empty_configuration_searches_the_default_sockets() {
        let expected = search_sockets(&default_sockets()).sockets().next().map(Path::to_path_buf);
        assert_eq!(find_socket(&[]), expected);
        assert_eq!(search_sockets(&[]).tried.len(), 0);
        assert_eq!(search_sockets(&default_sockets()).tried.len(), DEFAULT_SOCKETS.len());
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_names_it_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("missing.sock");
        let error = CriClient::connect(&socket, Duration::from_secs(5)).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, CriError::Connect { .. }), "{message}");
        assert!(message.contains(&socket.display().to_string()), "{message}");
        assert!(message.contains("metadata.cri_socket"), "{message}");
        assert!(message.contains("No such file"), "{message}");
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stale.sock");
        // A socket file left by a runtime that is gone.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let message = CriClient::connect(&socket, Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(message.contains("nothing listens"), "{message}");
    }

    #[tokio::test]
    async fn a_runtime_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("hung.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        // Accepts connections and reads nothing: the gRPC handshake and Version never complete.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let error = CriClient::connect(&socket, Duration::from_millis(300)).await.unwrap_err();
        server.abort();
        assert!(matches!(error, CriError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(error.to_string().contains("hung.sock"), "{error}");
    }
}
