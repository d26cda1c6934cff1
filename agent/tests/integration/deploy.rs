//! Everything under deploy/: the static checks (deploy/test.sh: Helm, kustomize, schemas, rules,
//! dashboard), the image run by podman with the DaemonSet's capabilities, seccomp profile and
//! mounts, and a real Prometheus scraping an agent. Tools come from `deploy/tools.sh`; a missing one fails the test
//! under `KERNSIGHT_PRIVILEGED_TESTS=required` and skips it otherwise.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::support::{
    self, Agent, TestCgroup, getppid_times, http_get, parse, podman::PodmanContainer, privileged, value,
};

/// Calls each test makes in its own cgroup and expects to see counted.
const CALLS: usize = 5000;
const IMAGE: &str = "localhost/kernsight:deploy-test";
/// The seccomp profile the manifests ship (deploy/seccomp.sh writes it).
const SECCOMP_PROFILE: &str = "deploy/kubernetes/seccomp-agent.json";
/// Where the DaemonSet mounts the agent's own bpffs directory (its bpf.pin_dir).
const PIN_MOUNT: &str = "/sys/fs/bpf";
/// Where the DaemonSet mounts kernsight.toml.
const CONFIG: &str = "/etc/kernsight/kernsight.toml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn tools_dir() -> PathBuf {
    std::env::var_os("KERNSIGHT_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/deploy-tools"))
        .join("bin")
}

/// The path of `tool` (deploy/tools.sh's directory first, then PATH), or `None` with a skip
/// message; a failure when the tests are required to run.
fn tool(tool: &str) -> Option<PathBuf> {
    let local = tools_dir().join(tool);
    if local.is_file() {
        return Some(local);
    }
    let found = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            !support::required(),
            "{} needs {tool}: run deploy/tools.sh (KERNSIGHT_PRIVILEGED_TESTS=required)",
            support::test_name()
        );
        support::skip(&format!("{tool} is missing (deploy/tools.sh installs it)"));
    }
    found
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn static_checks_pass() {
    for name in ["helm", "kubectl", "kubernetes-validate", "yamllint", "promtool", "python3"] {
        if tool(name).is_none() {
            return;
        }
    }
    // Helm, kubectl and the schema checks load both cores: not beside a test that measures.
    let _serial = support::serial();
    let path = std::env::join_paths(
        std::iter::once(tools_dir())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    run(Command::new(root().join("deploy/test.sh")).env("PATH", path));
}

/// The TOML of a rendered ConfigMap: the indented block under `kernsight.toml: |`.
fn config_map_toml(manifest: &str) -> String {
    let mut lines = manifest.lines().skip_while(|l| !l.trim_start().starts_with("kernsight.toml: |"));
    let key = lines.next().expect("no kernsight.toml in the ConfigMap");
    let indent = key.len() - key.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configuration the manifests ship is one the agent accepts (integers stay integers, keys
/// exist), checked with the agent's own parser.
#[test]
fn shipped_configs_are_valid_agent_configs() {
    let Some(helm) = tool("helm") else { return };
    let chart = root().join("deploy/helm/kernsight");
    let mut configs = vec![(
        "deploy/kubernetes/kernsight.toml".to_owned(),
        std::fs::read_to_string(root().join("deploy/kubernetes/kernsight.toml")).unwrap(),
    )];
    for set in [
        "",
        "config.syscalls.latency_histogram=true,config.metadata.container_id_label=true",
        "config.network.interfaces={eth0,bond0},config.network.tcp=false",
        "kubernetesApi.watchPods=true",
    ] {
        let mut command = Command::new(&helm);
        command
            .arg("template")
            .arg("kernsight")
            .arg(&chart)
            .args(["--show-only", "templates/configmap.yaml"]);
        if !set.is_empty() {
            command.args(["--set", set]);
        }
        command.args(["--set-string", "extraConfig=[paths]\ntracefs = \"/sys/kernel/debug/tracing\""]);
        configs.push((format!("helm template --set {set:?}"), config_map_toml(&run(&mut command))));
    }
    for (origin, text) in configs {
        let config = kernsight::config::Config::parse(&text, &origin)
            .unwrap_or_else(|e| panic!("{origin}: the agent rejects\n{text}\n{e}"));
        config.validate().unwrap_or_else(|e| panic!("{origin}: {e}"));
    }
}

/// deploy/image.sh once per test binary: the static build is the slow part.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        run(Command::new(root().join("deploy/image.sh")).arg(IMAGE));
    });
    IMAGE
}

/// Removes a directory when dropped (after the container that wrote it).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The capabilities deploy/kubernetes/daemonset.yaml adds after dropping ALL (the line
/// `add: ["BPF", ...]`), for `podman --cap-add`.
fn shipped_capabilities() -> String {
    let manifest = std::fs::read_to_string(root().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let adds: Vec<&str> = manifest.lines().filter_map(|l| l.trim().strip_prefix("add: [")).collect();
    assert_eq!(adds.len(), 1, "one capabilities.add line in the DaemonSet: {adds:?}");
    let caps: Vec<&str> =
        adds[0].trim_end_matches(']').split(',').map(|c| c.trim().trim_matches('"')).collect();
    assert!(
        caps.contains(&"BPF") && caps.contains(&"PERFMON"),
        "the DaemonSet adds BPF and PERFMON: {caps:?}"
    );
    caps.join(",")
}

/// The DaemonSet's pod, as podman runs it: the shipped capabilities only, the shipped seccomp
/// profile and configuration (deploy/kubernetes/kernsight.toml), read-only root, no privilege
/// escalation, host PID and network namespaces, the same host paths (read-only; runtime sockets
/// only where they exist) and, writable, the agent's own bpffs directory alone (here one of the
/// test's) where the shipped bpf.pin_dir points.
fn run_like_daemonset(name: &str, port: u16, pin_dir: &Path) -> PodmanContainer {
    let seccomp = format!("seccomp={}", root().join(SECCOMP_PROFILE).display());
    let mut flags: Vec<String> = [
        ["--cap-drop", "ALL", "--cap-add", &shipped_capabilities()].as_slice(),
        &["--security-opt", &seccomp, "--security-opt", "no-new-privileges"],
        &["--read-only", "--user", "0", "--pid", "host", "--network", "host"],
    ]
    .concat()
    .into_iter()
    .map(str::to_owned)
    .collect();
    let mounts = [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/cgroup",
        "/run/containerd/containerd.sock",
        "/run/crio/crio.sock",
        "/var/lib/docker/containers",
    ];
    for path in mounts.iter().filter(|p| Path::new(p).exists()) {
        flags.extend(["-v".to_owned(), format!("{path}:{path}:ro")]);
    }
    let config = root().join("deploy/kubernetes/kernsight.toml");
    flags.extend(["-v".to_owned(), format!("{}:{CONFIG}:ro", config.display())]);
    // security.runtime_root = "/host" in the shipped configuration.
    flags.extend(["-v".to_owned(), "/usr:/host/usr:ro".to_owned()]);
    // As the DaemonSet's hostPath /sys/fs/bpf/kernsight: a directory of the host's bpffs, the
    // only one the container sees, where the shipped configuration's bpf.pin_dir points.
    std::fs::create_dir_all(pin_dir).unwrap();
    flags.extend(["-v".to_owned(), format!("{}:{PIN_MOUNT}:rw", pin_dir.display())]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // The DaemonSet listens on 0.0.0.0:9464 in the node's network namespace; here a free port
    // on loopback.
    let listen = format!("127.0.0.1:{port}");
    PodmanContainer::start_image(
        name,
        image(),
        &flags,
        &["--config", CONFIG, "--listen", &listen, "--log-format", "json"],
    )
}

/// The first answer of `/readyz` (30 s at most): the agent decides readiness once.
fn readyz(address: SocketAddr, container: &PodmanContainer) -> (u16, String) {
    let answer = support::poll(Duration::from_secs(30), || {
        std::net::TcpStream::connect(address)
            .map(|_| http_get(address, "/readyz", "*/*"))
            .map_err(|e| format!("/readyz: {e}"))
    });
    answer
        .unwrap_or_else(|last| panic!("the agent at {address}: {last}; container log:\n{}", container.logs()))
}

#[test]
fn image_with_daemonset_privileges_counts_host_syscalls() {
    if !privileged() || tool("podman").is_none() {
        return;
    }
    let _serial = support::serial();
    let name = format!("kernsight-deploy-test-{}", std::process::id());
    let port = free_port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    // The node's bpffs, where the kubelet would create the pod's directory (as any agent the
    // tests start mounts it when missing).
    let defaults = kernsight::config::Config::embedded();
    kernsight::kernel::preflight::ensure_mounts(&defaults.paths.tracefs, &defaults.paths.bpffs);
    let pin_dir = support::unique_pin_dir("deploy");
    let _pins = RemoveDir(pin_dir.clone());
    let container = run_like_daemonset(&name, port, &pin_dir);
    match readyz(address, &container) {
        (200, _) => {}
        (status, body) => panic!("/readyz answered {status}: {body}container log:\n{}", container.logs()),
    }
    // Under the shipped profile: the kernel reports the container's process filtered.
    let status = std::fs::read_to_string(format!("/proc/{}/status", container_pid(&container))).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "the agent runs under a seccomp filter:\n{status}");
    // Its bpffs mount is the test's pin directory alone, not the host's bpffs root.
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", container_pid(&container))).unwrap();
    let bpf_mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(" - bpf ")).collect();
    let relative = pin_dir.strip_prefix(bpffs_root(&pin_dir)).unwrap();
    assert!(
        bpf_mounts.len() == 1
            && bpf_mounts[0].split(' ').nth(3) == Some(&*format!("/{}", relative.display()))
            && bpf_mounts[0].split(' ').nth(4) == Some(PIN_MOUNT),
        "one bpffs mount, of {} at {PIN_MOUNT}:\n{}",
        pin_dir.display(),
        bpf_mounts.join("\n")
    );
    // With the shipped capabilities, the agent pins its counters for the next start.
    assert!(
        pin_dir.join(format!("v{}/SYSCALL_ROWS", kernsight_common::MAP_LAYOUT_VERSION)).exists(),
        "maps pinned:\n{}",
        container.logs()
    );
    assert_eq!(http_get(address, "/healthz", "*/*").0, 200);

    let cgroup = TestCgroup::create("deploy-image");
    cgroup.run(|| {
        getppid_times(CALLS);
        0
    });
    let labels = [("cgroup", cgroup.label.as_str()), ("syscall", "getppid")];
    let counted = support::poll(Duration::from_secs(30), || {
        let (status, body) = http_get(address, "/metrics", "text/plain");
        assert_eq!(status, 200, "scrape failed: {body}");
        let samples = parse(&body);
        let seen = value(&samples, "kernsight_syscalls_total", &labels);
        if seen >= CALLS as f64 { Ok(samples) } else { Err(format!("{labels:?}: {seen} < {CALLS}")) }
    });
    let samples = counted.unwrap_or_else(|last| panic!("{last}; container log:\n{}", container.logs()));
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "syscalls")]), 1.0);
}

/// The host pid of the container's first process.
fn container_pid(container: &PodmanContainer) -> u32 {
    let out = run(support::podman::podman().args(["inspect", "--format", "{{.State.Pid}}", &container.name]));
    out.trim().parse().unwrap_or_else(|_| panic!("podman inspect gave no pid: {out:?}"))
}

/// The mount point of the bpffs that holds `path` (the longest bpf mount point above it).
fn bpffs_root(path: &Path) -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields.get(2) == Some(&"bpf")).then(|| PathBuf::from(fields[1]))
        })
        .filter(|root| path.starts_with(root))
        .max_by_key(|root| root.as_os_str().len())
        .unwrap_or_else(|| panic!("{} is on no bpffs mount", path.display()))
}

/// The shipped profile is no allow-all: a syscall the agent never makes (ioprio_get, which
/// needs no privilege) fails with EPERM under it, in a container of the busybox test image,
/// and succeeds in the same container without it.
#[test]
fn the_shipped_seccomp_profile_denies_what_the_agent_does_not_use() {
    if !privileged() || tool("podman").is_none() {
        return;
    }
    let _serial = support::serial();
    let profile = std::fs::read_to_string(root().join(SECCOMP_PROFILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&profile).unwrap();
    let allowed: Vec<&str> = json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()))
        .collect();
    assert!(!allowed.contains(&"ioprio_get"), "the agent does not call ioprio_get: {allowed:?}");
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");

    let ionice = |seccomp: &str| {
        let name = format!("kernsight-seccomp-test-{}-{}", std::process::id(), seccomp.len());
        let opt = format!("seccomp={seccomp}");
        let (_container, out) = PodmanContainer::run_to_end(
            &name,
            &["--security-opt", &opt, "--cap-drop", "ALL", "--cap-add", &shipped_capabilities()],
            &["busybox", "ionice", "-p", "1"],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, output) = ionice("unconfined");
    assert!(ok, "ionice runs without the profile: {output}");
    let (ok, output) = ionice(&root().join(SECCOMP_PROFILE).display().to_string());
    assert!(
        !ok && output.contains("Operation not permitted"),
        "ioprio_get fails with EPERM under the profile: {output}"
    );
}

/// A Prometheus server on loopback, killed and its data removed when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job "kernsight" (node="deploy-test", as the
    /// ServiceMonitor's relabeling sets it), with deploy/prometheus/rules.yaml loaded.
    fn start(binary: &Path, target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = root().join("deploy/prometheus/rules.yaml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: kernsight\n    static_configs:\n\
             \x20     - targets: [\"{target}\"]\n        labels: {{node: deploy-test}}\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self { child, address, _dir: dir }
    }

    /// The sum of an instant query's values, `None` while it has none (or Prometheus is not up).
    fn query(&self, promql: &str) -> Option<f64> {
        std::net::TcpStream::connect(self.address).ok()?;
        let (status, body) =
            http_get(self.address, &format!("/api/v1/query?query={}", encode(promql)), "*/*");
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = json["data"]["result"].as_array()?;
        if result.is_empty() {
            return None;
        }
        result.iter().map(|r| r["value"][1].as_str()?.parse::<f64>().ok()).sum()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding of a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_agent_and_evaluates_the_rules() {
    if !privileged() {
        return;
    }
    let Some(binary) = tool("prometheus") else { return };
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let prometheus = Prometheus::start(&binary, agent.address);

    let cgroup = TestCgroup::create("deploy-prometheus");
    cgroup.run(|| {
        getppid_times(CALLS);
        0
    });
    let wait = |promql: &str, at_least: f64| {
        let answered = support::poll(Duration::from_secs(30), || match prometheus.query(promql) {
            Some(seen) if seen >= at_least => Ok(()),
            seen => Err(format!("{promql}: {seen:?}, expected >= {at_least}")),
        });
        answered.unwrap_or_else(|last| panic!("{last}; agent log:\n{}", agent.log()));
    };
    let label = &cgroup.label;
    wait(
        &format!("kernsight_syscalls_total{{job=\"kernsight\",cgroup=\"{label}\",syscall=\"getppid\"}}"),
        CALLS as f64,
    );
    wait("up{job=\"kernsight\",node=\"deploy-test\"}", 1.0);
    // The recording rules run on the scraped series (an all-empty pod label: host cgroups).
    wait("count(node_namespace_pod_syscall:kernsight_syscalls:rate5m{node=\"deploy-test\"})", 1.0);
    wait("count(instance_map:kernsight_bpf_map_fill:ratio{node=\"deploy-test\"})", 1.0);
    assert_eq!(prometheus.query("ALERTS{alertname=~\"Kernsight.*\",alertstate=\"firing\"}"), None);
}
