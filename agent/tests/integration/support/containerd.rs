//! A real containerd, started by the test with all its state under a fresh temporary directory,
//! and pods run through its CRI plugin the way kubelet runs them.
//!
//! Everything it creates is removed when it is dropped, even after a failed assertion: the pods
//! (stopped and removed), containerd and the shims it started, the containers' cgroups (under a
//! root of their own, `/kernsight-test-<pid>-<n>`, in every hierarchy), the mounts under the
//! temporary directory, the shims' sockets in /run/containerd/s and the directory itself.
//!
//! Pods use the host network (no CNI needed). What this containerd needs from the machine:
//! `containerd`, `containerd-shim-runc-v2`, `runc`, `ctr`, `tar` and /bin/busybox (Debian:
//! containerd, runc, busybox-static).

use std::{
    collections::HashMap,
    fs::File,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{self as cri, runtime_service_client::RuntimeServiceClient};
use tonic::transport::{Channel, Endpoint, Uri};

use kernsight::kernel::mountinfo;

use super::{cgroup, image, wait_gone};

/// The CRI namespace of containerd (what kubelet's pods live in).
const NAMESPACE: &str = "k8s.io";
/// containerd 1.6 puts its shims' sockets here whatever its own state directory is.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One containerd at a time per test binary: they would share /run/containerd/s, which the last
/// one removes when it created it.
static SERIAL: Mutex<()> = Mutex::new(());
static INSTANCES: AtomicUsize = AtomicUsize::new(0);

type Client = RuntimeServiceClient<Channel>;

/// A pod started by [`Containerd::run_pod`].
#[derive(Debug, Clone)]
pub struct RunningPod {
    pub sandbox_id: String,
    pub container_id: String,
}

pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    /// cgroupfs-style parent of all pods (kubelet's would be `/kubepods`).
    cgroup_root: String,
    child: Option<Child>,
    pods: Mutex<Vec<String>>,
    /// Whether /run/containerd (and so /run/containerd/s) existed before this containerd.
    run_dir_existed: bool,
    _serial: MutexGuard<'static, ()>,
}

impl Containerd {
    /// Starts containerd, waits for its CRI plugin and imports the busybox image into k8s.io.
    pub fn start() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let archive = image::busybox_archive();
        let dir = tempfile::Builder::new()
            .prefix("kernsight-containerd-")
            .tempdir()
            .expect("create the containerd directory")
            .keep();
        let socket = dir.join("containerd.sock");
        let cgroup_root =
            format!("/kernsight-test-{}-{}", std::process::id(), INSTANCES.fetch_add(1, Ordering::Relaxed));
        let mut containerd = Self {
            socket: socket.clone(),
            cgroup_root,
            child: None,
            pods: Mutex::new(Vec::new()),
            run_dir_existed: Path::new("/run/containerd").exists(),
            _serial: serial,
            dir,
        };
        // From here on, a panic drops `containerd`, which cleans up what exists so far.
        let snapshotter = containerd.snapshotter();
        let config = containerd.dir.join("config.toml");
        std::fs::write(&config, containerd.config(snapshotter)).unwrap();
        let log = File::create(containerd.log_path()).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd (apt-get install containerd): {e}"));
        containerd.child = Some(child);
        containerd.wait_until_ready();

        let mut import = Command::new("ctr");
        import
            .arg("--address")
            .arg(&containerd.socket)
            .args(["-n", NAMESPACE, "images", "import", "--snapshotter", snapshotter])
            .arg(&archive);
        if let Err(e) = run_bounded(&mut import, START_TIMEOUT) {
            panic!("{e}\ncontainerd log:\n{}", containerd.log());
        }
        containerd
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The cgroup (relative to each hierarchy's root) below which all pods are, in kubelet's
    /// layout: `<root>/kubepods/besteffort/pod<uid>/<container or sandbox id>`.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The directory that holds all of this containerd's state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs a pod the way kubelet does (RunPodSandbox, CreateContainer, StartContainer) with one
    /// container running `command` in the busybox image, on the host network.
    pub fn run_pod(
        &self,
        pod_name: &str,
        namespace: &str,
        uid: &str,
        container_name: &str,
        command: &[&str],
    ) -> RunningPod {
        let labels = [("app", pod_name)];
        self.run_pod_with(pod_name, namespace, uid, container_name, command, &labels, &[])
    }

    /// `run_pod` with the pod's own labels and the sandbox annotations kubelet would copy from
    /// its spec (`kubernetes.io/config.source`, ...).
    #[allow(clippy::too_many_arguments)]
    pub fn run_pod_with(
        &self,
        pod_name: &str,
        namespace: &str,
        uid: &str,
        container_name: &str,
        command: &[&str],
        own_labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> RunningPod {
        let log_directory = self.dir.join("pods").join(format!("{namespace}_{pod_name}_{uid}"));
        std::fs::create_dir_all(&log_directory).unwrap();
        // kubelet's labels: the pod's own, plus its identity.
        let mut pod_labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), pod_name.to_owned()),
            ("io.kubernetes.pod.namespace".to_owned(), namespace.to_owned()),
            ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
        ]);
        pod_labels.extend(own_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let namespaces = cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            pid: cri::NamespaceMode::Container as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod_name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: pod_labels.clone(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                // Where kubelet's cgroupfs driver puts a BestEffort pod, below our own root.
                cgroup_parent: format!("{}/kubepods/besteffort/pod{uid}", self.cgroup_root),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        };
        let sandbox_id = self
            .call("RunPodSandbox", |mut c| async move { c.run_pod_sandbox(request).await })
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()))
            .pod_sandbox_id;
        self.pods.lock().unwrap().push(sandbox_id.clone());

        // kubelet puts only its own bookkeeping on containers, not the pod's labels.
        let mut container_labels = pod_labels;
        container_labels.retain(|key, _| key.starts_with("io.kubernetes."));
        container_labels.insert("io.kubernetes.container.name".to_owned(), container_name.to_owned());
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata { name: container_name.to_owned(), attempt: 0 }),
                image: Some(cri::ImageSpec { image: image::image_name(), ..Default::default() }),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path: format!("{container_name}/0.log"),
                labels: container_labels,
                linux: Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(namespaces),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        };
        let container_id = self
            .call("CreateContainer", |mut c| async move { c.create_container(request).await })
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()))
            .container_id;
        let id = container_id.clone();
        self.call("StartContainer", |mut c| async move {
            c.start_container(cri::StartContainerRequest { container_id: id }).await
        })
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.log()));
        RunningPod { sandbox_id, container_id }
    }

    /// The host pid of a container's main process (from the verbose ContainerStatus).
    pub fn container_pid(&self, container_id: &str) -> u32 {
        let request = cri::ContainerStatusRequest { container_id: container_id.to_owned(), verbose: true };
        let status =
            self.call("ContainerStatus", |mut c| async move { c.container_status(request).await }).unwrap();
        pid_in(&status.info)
    }

    /// The host pid of a pod sandbox's own process (from the verbose PodSandboxStatus).
    pub fn sandbox_pid(&self, sandbox_id: &str) -> u32 {
        let request = cri::PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.to_owned(), verbose: true };
        let status = self
            .call("PodSandboxStatus", |mut c| async move { c.pod_sandbox_status(request).await })
            .unwrap();
        pid_in(&status.info)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// overlayfs when this kernel mounts it on the temporary directory's filesystem (what
    /// containerd itself checks), else the slower `native` (plain copies).
    fn snapshotter(&self) -> &'static str {
        let probe = self.dir.join("overlay-probe");
        let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let options =
            format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        let mounted = nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        );
        let snapshotter = match mounted {
            Ok(()) => {
                nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
                "overlayfs"
            }
            Err(e) => {
                eprintln!("overlay mounts fail here ({e}): containerd uses the native snapshotter");
                "native"
            }
        };
        let _ = std::fs::remove_dir_all(&probe);
        snapshotter
    }

    fn config(&self, snapshotter: &str) -> String {
        let dir = self.dir.display();
        format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
# Snapshotters that only probe the machine (and modprobe) at start.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    # The busybox image: its default command sleeps, which is all a sandbox process does.
    sandbox_image = "{image}"
    # The default sandbox asks for oom_score_adj -998, which needs CAP_SYS_RESOURCE.
    restrict_oom_score_adj = true
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "{snapshotter}"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # runc's state, by default in /run/containerd/runc.
          Root = "{dir}/runc"
          SystemdCgroup = false
    # Pods use the host network; CNI is never called, but its directories must exist.
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{dir}/cni/bin"
      conf_dir = "{dir}/cni/net.d"
"#,
            image = image::image_name(),
        )
    }

    /// Waits until the CRI plugin answers Version (the socket appears a little before).
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("containerd exited at start ({status}); log:\n{}", self.log());
            }
            let version = self.call("Version", |mut c| async move {
                c.version(cri::VersionRequest { version: "v1".to_owned() }).await
            });
            match version {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "containerd's CRI plugin did not answer within {START_TIMEOUT:?} ({e}); \
                     log:\n{}",
                    self.log()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// One CRI call, on a connection of its own, bounded by RPC_TIMEOUT. It runs on a thread with
    /// its own tokio runtime: callable from synchronous tests, from async ones, and from Drop.
    fn call<T, F, Fut>(&self, name: &str, rpc: F) -> Result<T, String>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send,
    {
        let socket = self.socket.clone();
        let run = async move {
            let client = connect(&socket).await?;
            match tokio::time::timeout(RPC_TIMEOUT, rpc(client)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(format!("CRI {name} failed: {status}")),
                Err(_) => Err(format!("CRI {name} did not answer within {RPC_TIMEOUT:?}")),
            }
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?
                        .block_on(run)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The pods created, as their sandbox ids.
    fn pods(&self) -> Vec<String> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stop_pods(&self) {
        for id in self.pods() {
            let stop = cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() };
            if let Err(e) = self.call("StopPodSandbox", |mut c| async move { c.stop_pod_sandbox(stop).await })
            {
                eprintln!("cleanup: {e}");
            }
            let remove = cri::RemovePodSandboxRequest { pod_sandbox_id: id };
            if let Err(e) =
                self.call("RemovePodSandbox", |mut c| async move { c.remove_pod_sandbox(remove).await })
            {
                eprintln!("cleanup: {e}");
            }
        }
    }

    /// The socket of the shim of a sandbox (containerd 1.6's `shim.SocketAddress`). A shim
    /// removes it when it exits cleanly, not when it had to be killed.
    fn shim_socket(&self, sandbox_id: &str) -> PathBuf {
        let key = format!("{}/{NAMESPACE}/{sandbox_id}", self.socket.display());
        Path::new(SHIM_SOCKET_DIR).join(image::sha256_hex(key.as_bytes()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_pods();
        }
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if !wait_exit(&mut child, STOP_TIMEOUT) {
                eprintln!("cleanup: containerd ignored SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Shims (and any runc they left) name this directory on their command line.
        kill_processes(&format!("{}/", self.dir.display()));
        // Containers whose shim died without killing them.
        for cgroup in self.cgroup_dirs() {
            cgroup::kill_processes_in(&cgroup);
        }
        unmount_below(&self.dir);
        for cgroup in self.cgroup_dirs() {
            cgroup::remove_tree(&cgroup);
        }
        for id in self.pods() {
            let _ = std::fs::remove_file(self.shim_socket(&id));
        }
        if !self.run_dir_existed {
            // Only when empty: anything else there is not ours.
            let _ = std::fs::remove_dir(SHIM_SOCKET_DIR);
            let _ = std::fs::remove_dir("/run/containerd");
        }
        if mounts_below(&self.dir).is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("cleanup: cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!("cleanup: mounts remain below {}, so it is left in place", self.dir.display());
        }
    }
}

impl Containerd {
    /// This containerd's cgroup root in every mounted cgroup hierarchy, where it exists.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup::all_roots()
            .into_iter()
            .map(|mount| mount.join(self.cgroup_root.trim_start_matches('/')))
            .filter(|path| path.exists())
            .collect()
    }
}

async fn connect(socket: &Path) -> Result<Client, String> {
    let path = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = tokio::time::timeout(
        RPC_TIMEOUT,
        Endpoint::from_static("http://[::]:50051").connect_with_connector(connector),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", socket.display()))?
    .map_err(|e| format!("cannot connect to {}: {e:?}", socket.display()))?;
    Ok(RuntimeServiceClient::new(channel))
}

/// The `pid` of the JSON that verbose CRI statuses carry under "info".
fn pid_in(info: &HashMap<String, String>) -> u32 {
    let info = info.get("info").expect("verbose status without \"info\"");
    let info: serde_json::Value = serde_json::from_str(info).expect("\"info\" is JSON");
    let pid = info["pid"].as_u64().expect("\"info\" has a pid");
    u32::try_from(pid).unwrap()
}

/// /proc/<pid>/cgroup: one `hierarchy-id:controllers:path` line per hierarchy.
pub fn proc_cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"))
}

/// Runs a command to its end, `timeout` at most; its output goes in the error.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<(), String> {
    let output = tempfile::NamedTempFile::new().unwrap();
    // One open file for both streams: they share its offset and do not overwrite each other.
    let file = output.reopen().unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let finished = wait_exit(&mut child, timeout);
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(output.path()).unwrap_or_default();
    match (finished, status.success()) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("{command:?} did not finish within {timeout:?}: {text}")),
        (true, false) => Err(format!("{command:?} failed ({status}): {text}")),
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    matches!(child.try_wait(), Ok(Some(_)))
}

/// Kills the processes whose command line contains `needle` and waits (bounded) for them to go.
fn kill_processes(needle: &str) {
    let me = std::process::id();
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid as u32 != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
                .unwrap_or(false)
        })
        .collect();
    for &pid in &pids {
        eprintln!("cleanup: killing leftover process {pid}");
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_gone(&pids, STOP_TIMEOUT);
}

/// Mount points strictly below `dir`.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    mountinfo::read()
        .unwrap_or_default()
        .into_iter()
        .map(|mount| mount.mount_point)
        .filter(|mount_point| mount_point != dir && mount_point.starts_with(dir))
        .collect()
}

/// Lazily unmounts everything below `dir`, deepest first, until nothing is left (bounded:
/// a mount can be stacked on another).
fn unmount_below(dir: &Path) {
    for _ in 0..10 {
        let mut mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for mount in mounts {
            if let Err(e) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("cleanup: cannot unmount {}: {e}", mount.display());
            }
        }
    }
}
