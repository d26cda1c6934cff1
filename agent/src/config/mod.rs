//! Agent configuration: one `serde` struct, read from the embedded default or a file, then
//! patched by command-line flags and `KERNSIGHT_*` environment variables (flags win).

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Where runtimes put their CRI socket, most common first: containerd, CRI-O (both also under
/// the `/var/run` symlink on hosts where it is not one) and k3s's embedded containerd.
pub const DEFAULT_CRI_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// The configuration compiled into the binary; also the reference for every key.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// `bpf.map_memory_budget_mebibytes` by default: every bound as configured on nodes of up to
/// 64 possible CPUs (`bpf::budget::SIZED_FOR_POSSIBLE_CPUS`; docs/deploy.md has the table).
pub const DEFAULT_MAP_MEMORY_BUDGET_MEBIBYTES: u32 = 224;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    // toml's message names the line, the column and the offending key, and lists valid keys.
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub syscalls: SyscallsConfig,
    pub sched: SchedConfig,
    pub memory: MemoryConfig,
    pub block_io: BlockIoConfig,
    pub network: NetworkConfig,
    pub dns: DnsConfig,
    pub security: SecurityConfig,
    pub metadata: MetadataConfig,
    pub bpf: BpfConfig,
    pub paths: PathsConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// A second address serving /healthz and /readyz only, plain HTTP (for kubelet's probes
    /// when `listen` requires client certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
    /// The exporters' web configuration file (TLS, basic auth, headers); empty: plain HTTP.
    pub web_config_file: PathBuf,
    pub max_connections: u32,
    pub header_timeout_seconds: u64,
    pub write_timeout_seconds: u64,
    pub max_header_bytes: u32,
    pub encode_reuse_milliseconds: u64,
}

impl MetricsConfig {
    /// The HTTP server's limits, checked by `Config::validate`.
    pub fn limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            max_connections: self.max_connections as usize,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_seconds),
            write_timeout: std::time::Duration::from_secs(self.write_timeout_seconds),
            max_header_bytes: self.max_header_bytes as usize,
            encode_reuse: std::time::Duration::from_millis(self.encode_reuse_milliseconds),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyscallsConfig {
    pub enabled: bool,
    pub latency_histogram: bool,
    pub max_cgroups: u32,
    pub max_error_entries: u32,
    pub latency_max_entries: u32,
    pub forget_after_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedConfig {
    pub runqueue_latency: bool,
    /// Split run-queue waits into throttled and contention (`kernsight_cpu_wait_seconds`).
    pub wait_reason: bool,
    /// Where a wait's start is read.
    pub wait_start: WaitStart,
    pub processes: bool,
    pub runqueue_max_entries: u32,
    pub process_max_entries: u32,
}

/// `sched.wait_start`: where the runqueue family reads when each run-queue wait began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitStart {
    /// The scheduler's own account (`task->sched_info.last_queued`, what
    /// `/proc/PID/schedstat` sums) where the kernel keeps it, so that only `sched_switch` runs
    /// a program per wait; elsewhere as `Wakeup`. A wait the load balancer moves to another
    /// CPU counts from the thread's arrival there.
    #[default]
    Scheduler,
    /// Stamped by a program on every wakeup and preemption: a wait moved between CPUs counts
    /// whole, for a program run more per wait.
    Wakeup,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    pub reclaim_stalls: bool,
    pub reclaim_max_entries: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockIoConfig {
    /// Block I/O per cgroup, device and operation, timed from issue to completion.
    pub enabled: bool,
    /// Bound of the (cgroup, device, op, slot) map.
    pub max_entries: u32,
    /// Devices named in the series; the I/O of the others is exported under `device="other"`.
    pub max_devices: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// DNS queries, answers, timeouts and latency per workload (the `dns` family).
    pub enabled: bool,
    /// The port of the DNS servers the workloads ask (53).
    pub port: u16,
    /// A query without an answer after this long is a timeout.
    pub timeout_milliseconds: u64,
    /// Queries awaited at once, node-wide (an eighth of them per cgroup at most); past it,
    /// queries are counted but not timed.
    pub max_pending_queries: u32,
    /// Cgroups counted; the DNS of further cgroups is exported under cgroup="other".
    pub max_cgroups: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub cgroup_traffic: bool,
    /// How the per-interface counters are taken (`kernsight_interface_*`).
    pub interface_counters: InterfaceCounters,
    /// The key of kernsight 0.x before `interface_counters`: `true` asked for XDP, `false` for
    /// no interface counters. Still read with that meaning (see `Config::parse`), never written.
    #[serde(skip_serializing)]
    pub xdp: Option<bool>,
    /// How the TC programs are attached.
    pub tc_attach: TcAttachMode,
    /// Interfaces the interface counters watch; empty: those of the default routes.
    /// `xdp_interfaces` is its name from when XDP was the only way.
    #[serde(alias = "xdp_interfaces")]
    pub interfaces: Vec<String>,
    pub tcp: bool,
    pub drops: bool,
    pub conntrack: bool,
    /// conntrack per pod: each pod network namespace's own table and statistics, and the
    /// entries of the node's tables whose original source is a pod's address.
    pub conntrack_pods: bool,
    /// The most entries one dump of a node table reads (dumps run on a thread of their own, at
    /// most every 10 s).
    pub conntrack_dump_max_entries: u64,
    /// The most pod network namespaces read; the others are counted as skipped.
    pub conntrack_max_pods: u32,
    pub namespaces: Vec<String>,
    /// Interfaces whose kernel counters are summed under `interface="other"` (globs).
    pub interface_exclude: Vec<String>,
    /// Exceptions to `interface_exclude`: series of their own all the same (globs).
    pub interface_include: Vec<String>,
    pub cgroup_traffic_max_entries: u32,
    pub interface_traffic_max_entries: u32,
    pub tcp_max_entries: u32,
    pub tcp_tracked_connections: u32,
    pub drop_max_entries: u32,
}

/// Where the per-interface counters come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceCounters {
    /// TC programs on ingress and egress (tcx links, or a clsact qdisc before kernel 6.6): the
    /// driver is not touched.
    #[default]
    Tc,
    /// An XDP program, received frames only. Native mode reconfigures the driver; generic mode
    /// makes some kernels WARN (`failed to disable GRO_HW`) and taints them.
    Xdp,
    /// No interface counters.
    Off,
}

/// How the TC programs reach the interfaces' hooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcAttachMode {
    /// tcx on kernel 6.6+, clsact before.
    #[default]
    Auto,
    /// tcx links (fails before 6.6).
    Tcx,
    /// Filters of a clsact qdisc, on any kernel.
    Clsact,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub capability_checks: bool,
    pub capability_max_entries: u32,
    /// The container runtimes' executables, as paths on the host: checks from runc's setup
    /// stages count only when the task's executable is none of these.
    pub runtime_binaries: Vec<PathBuf>,
    /// Where the host's files are visible when `/proc/1/root` is not (a pod without
    /// `CAP_SYS_PTRACE`): `runtime_binaries` are looked up under it too.
    pub runtime_root: PathBuf,
    pub posture: bool,
    /// `kernsight_escape_attempts_total` (the `escape` family, at the syscalls family's exit).
    pub escape_attempts: bool,
    pub escape_max_entries: u32,
    /// `kernsight_syscalls_outside_profile_total` (`metrics::seccomp_drift`).
    pub seccomp_drift: bool,
    /// The profile `profile="runtime-default"` compares with; empty: the embedded one.
    pub runtime_default_profile: PathBuf,
    /// Workloads held to a profile file each.
    pub seccomp_baselines: Vec<SeccompBaseline>,
}

/// A workload (`workload` and `namespace` labels) and the seccomp profile it is held to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompBaseline {
    pub namespace: String,
    pub workload: String,
    pub profile: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub cri_socket: PathBuf,
    /// Where to look for the CRI socket when `cri_socket` is empty, in order.
    pub cri_socket_candidates: Vec<PathBuf>,
    pub container_id_label: bool,
    pub pod_labels: Vec<String>,
    pub max_containers: usize,
    /// At most one walk of cgroupfs per interval, for cgroup ids nothing else could name.
    pub cgroup_walk_interval_milliseconds: u64,
    /// Look unknown cgroup ids up by file handle (one syscall) before walking.
    pub cgroup_lookup_by_handle: bool,
    /// Host cgroups labelled by their parent instead of their own path (globs).
    pub host_scope_exclude: Vec<String>,
    /// Exceptions to `host_scope_exclude` (globs).
    pub host_scope_include: Vec<String>,
    /// Watch this node's pods in the Kubernetes API for exact owners (needs the chart's
    /// `kubernetesApi.watchPods` RBAC and `NODE_NAME`).
    pub api_watch: bool,
    /// The API server's URL; empty: the kubeconfig below, else the pod's service account.
    pub api_server: String,
    /// A kubeconfig file for the API; empty: the pod's service account (in-cluster).
    pub kubeconfig: PathBuf,
    /// Pods of the API watch kept in memory (a node runs a few hundred at most).
    pub api_max_pods: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BpfConfig {
    /// Where the aggregation maps are pinned; empty: not pinned.
    pub pin_dir: PathBuf,
    /// Whether the kernel measures the run time and run count of the programs.
    pub program_stats: bool,
    /// Which build of the kernel programs to load.
    pub object: ObjectChoice,
    /// Kernel memory the eBPF maps may take (MiB); bounds are lowered to fit (`bpf::budget`).
    pub map_memory_budget_mebibytes: u32,
}

/// `bpf.object`: the build of the kernel programs the agent loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ObjectChoice {
    /// The full build where the kernel has what it needs (probed), else the newest older build
    /// that it can load.
    Auto,
    /// The build for kernels without cgroup local storage (5.11 to 6.1), where the kernel can
    /// load it (to test it on a newer kernel).
    #[serde(rename = "hashed-slots")]
    #[value(name = "hashed-slots")]
    HashedSlots,
    /// The fallback build, whatever the kernel offers (to test it on a new kernel).
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub tracefs: PathBuf,
    pub bpffs: PathBuf,
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Self {
        // The embedded file is checked by a unit test, so this cannot fail in a released binary.
        Self::parse(DEFAULT_CONFIG, "(embedded default)").unwrap_or_else(|err| panic!("{err}"))
    }

    /// Reads a configuration file. Keys it leaves out keep their default; unknown keys are errors.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a configuration; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            message: err.to_string().trim_end().replace('\n', "\n  "),
        })?;
        config.validate().map_err(|message| ConfigError::Parse { origin: origin.to_owned(), message })?;
        config.network.read_old_xdp_key();
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (key, value, min, max) in [
            ("syscalls.max_cgroups", self.syscalls.max_cgroups, 1, 1 << 20),
            ("syscalls.max_error_entries", self.syscalls.max_error_entries, 16, 1 << 24),
            ("syscalls.latency_max_entries", self.syscalls.latency_max_entries, 64, 1 << 24),
            ("sched.runqueue_max_entries", self.sched.runqueue_max_entries, 64, 1 << 24),
            ("sched.process_max_entries", self.sched.process_max_entries, 16, 1 << 24),
            // The overflow entries alone take 2 kinds * 41 buckets.
            ("memory.reclaim_max_entries", self.memory.reclaim_max_entries, 128, 1 << 24),
            // The overflow entries alone take 3 ops * 43 slots.
            ("block_io.max_entries", self.block_io.max_entries, 256, 1 << 24),
            ("network.cgroup_traffic_max_entries", self.network.cgroup_traffic_max_entries, 16, 1 << 24),
            // The TC family's overflow entries alone take 11 protocols * 2 directions.
            (
                "network.interface_traffic_max_entries",
                self.network.interface_traffic_max_entries,
                32,
                1 << 20,
            ),
            ("network.tcp_max_entries", self.network.tcp_max_entries, 128, 1 << 24),
            ("network.tcp_tracked_connections", self.network.tcp_tracked_connections, 64, 1 << 24),
            ("network.drop_max_entries", self.network.drop_max_entries, 512, 1 << 24),
            // The overflow entries alone take (CAP_LAST_CAP + 1) * 4.
            ("security.capability_max_entries", self.security.capability_max_entries, 512, 1 << 24),
            ("security.escape_max_entries", self.security.escape_max_entries, 64, 1 << 20),
            ("dns.max_pending_queries", self.dns.max_pending_queries, 16, 1 << 20),
            ("dns.max_cgroups", self.dns.max_cgroups, 1, 1 << 20),
            ("network.conntrack_max_pods", self.network.conntrack_max_pods, 1, 1 << 16),
            ("metrics.max_connections", self.metrics.max_connections, 4, 1 << 16),
            ("bpf.map_memory_budget_mebibytes", self.bpf.map_memory_budget_mebibytes, 1, 1 << 20),
            // hyper needs room for its own read buffer: 8 KiB at least.
            ("metrics.max_header_bytes", self.metrics.max_header_bytes, 8192, 1 << 20),
        ] {
            if !(min..=max).contains(&value) {
                return Err(format!("{key} = {value} is out of range: use {min} to {max}"));
            }
        }
        for (key, value, min, max) in [
            ("dns.timeout_milliseconds", self.dns.timeout_milliseconds, 10, 600_000),
            ("network.conntrack_dump_max_entries", self.network.conntrack_dump_max_entries, 1024, 1 << 26),
            ("metrics.header_timeout_seconds", self.metrics.header_timeout_seconds, 1, 300),
            ("metrics.write_timeout_seconds", self.metrics.write_timeout_seconds, 1, 300),
            ("metrics.encode_reuse_milliseconds", self.metrics.encode_reuse_milliseconds, 0, 60_000),
            (
                "metadata.cgroup_walk_interval_milliseconds",
                self.metadata.cgroup_walk_interval_milliseconds,
                100,
                600_000,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(format!("{key} = {value} is out of range: use {min} to {max}"));
            }
        }
        crate::pod_labels::check_pod_labels(&self.metadata.pod_labels)?;
        let pods = self.metadata.api_max_pods;
        if !(16..=65_536).contains(&pods) {
            return Err(format!("metadata.api_max_pods = {pods} is out of range: use 16 to 65536"));
        }
        let runtimes = self.security.runtime_binaries.len();
        let max = kernsight_common::capabilities::MAX_RUNTIME_BINARIES as usize;
        if runtimes > max {
            return Err(format!("security.runtime_binaries names {runtimes} files: use {max} at most"));
        }
        if let Some(relative) = self.security.runtime_binaries.iter().find(|path| !path.is_absolute()) {
            return Err(format!("security.runtime_binaries: {} is not an absolute path", relative.display()));
        }
        let baselines = self.security.seccomp_baselines.len();
        let max = crate::seccomp::MAX_BASELINES;
        if baselines > max {
            return Err(format!("security.seccomp_baselines names {baselines} profiles: use {max} at most"));
        }
        if let Some(empty) = self.security.seccomp_baselines.iter().find(|b| b.workload.is_empty()) {
            return Err(format!(
                "security.seccomp_baselines: the entry for {} names no workload",
                empty.profile.display()
            ));
        }
        for entry in &self.network.interfaces {
            crate::kernel::netns::Interface::parse(entry)
                .map_err(|why| format!("network.interfaces: {why}"))?;
        }
        if self.network.xdp.is_some() && self.network.interface_counters != InterfaceCounters::default() {
            return Err("network.xdp and network.interface_counters are both set: keep only \
                 network.interface_counters (\"tc\", \"xdp\" or \"off\"; network.xdp is its old name)"
                .to_owned());
        }
        Ok(())
    }
}

// Keys a file leaves out take these values. They mirror default.toml, which documents them;
// the `embedded_default_is_default` test keeps the two equal.
impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            health_listen: None,
            web_config_file: PathBuf::new(),
            max_connections: 256,
            header_timeout_seconds: 5,
            write_timeout_seconds: 5,
            max_header_bytes: 16384,
            encode_reuse_milliseconds: 1000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

impl Default for SchedConfig {
    fn default() -> Self {
        use kernsight_common::{processes::DEFAULT_PROCESS_ENTRIES, runqueue::DEFAULT_RUNQ_LATENCY_ENTRIES};
        Self {
            runqueue_latency: true,
            wait_reason: true,
            wait_start: WaitStart::Scheduler,
            processes: true,
            runqueue_max_entries: DEFAULT_RUNQ_LATENCY_ENTRIES,
            process_max_entries: DEFAULT_PROCESS_ENTRIES,
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            reclaim_stalls: true,
            reclaim_max_entries: kernsight_common::memory_reclaim::DEFAULT_RECLAIM_STALL_ENTRIES,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: kernsight_common::dns::DNS_PORT,
            timeout_milliseconds: 5_000,
            max_pending_queries: 16_384,
            max_cgroups: 4_096,
        }
    }
}

impl Default for BlockIoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: kernsight_common::block_io::DEFAULT_BLOCK_IO_ENTRIES,
            max_devices: 64,
        }
    }
}

impl Default for SyscallsConfig {
    fn default() -> Self {
        use kernsight_common::syscalls::{
            DEFAULT_CGROUP_SLOTS, DEFAULT_ERROR_ENTRIES, DEFAULT_LATENCY_ENTRIES,
        };
        Self {
            enabled: true,
            latency_histogram: false,
            max_cgroups: DEFAULT_CGROUP_SLOTS,
            max_error_entries: DEFAULT_ERROR_ENTRIES,
            latency_max_entries: DEFAULT_LATENCY_ENTRIES,
            forget_after_seconds: 300,
        }
    }
}

impl NetworkConfig {
    /// Gives the old `xdp` key its meaning then: `true` XDP, `false` no interface counters.
    fn read_old_xdp_key(&mut self) {
        match self.xdp.take() {
            Some(true) => self.interface_counters = InterfaceCounters::Xdp,
            Some(false) => self.interface_counters = InterfaceCounters::Off,
            None => {}
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        use kernsight_common::net::{
            DEFAULT_CGROUP_DROPS_ENTRIES, DEFAULT_CGROUP_TRAFFIC_ENTRIES, DEFAULT_INTERFACE_TRAFFIC_ENTRIES,
            DEFAULT_TCP_EVENTS_ENTRIES, DEFAULT_TCP_STARTS_ENTRIES,
        };
        Self {
            cgroup_traffic: true,
            interface_counters: InterfaceCounters::Tc,
            xdp: None,
            tc_attach: TcAttachMode::Auto,
            interfaces: Vec::new(),
            tcp: true,
            drops: true,
            conntrack: true,
            conntrack_pods: true,
            conntrack_dump_max_entries: 1 << 20,
            conntrack_max_pods: 1024,
            namespaces: Vec::new(),
            interface_exclude: ["veth*", "cali*", "lxc*", "eni*", "gke*", "azv*"].map(String::from).to_vec(),
            interface_include: Vec::new(),
            cgroup_traffic_max_entries: DEFAULT_CGROUP_TRAFFIC_ENTRIES,
            interface_traffic_max_entries: DEFAULT_INTERFACE_TRAFFIC_ENTRIES,
            tcp_max_entries: DEFAULT_TCP_EVENTS_ENTRIES,
            tcp_tracked_connections: DEFAULT_TCP_STARTS_ENTRIES,
            drop_max_entries: DEFAULT_CGROUP_DROPS_ENTRIES,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            capability_checks: true,
            capability_max_entries: kernsight_common::capabilities::DEFAULT_CAPABILITY_ENTRIES,
            runtime_binaries: [
                "/usr/bin/runc",
                "/usr/sbin/runc",
                "/usr/local/bin/runc",
                "/usr/local/sbin/runc",
                "/usr/bin/crun",
                "/usr/local/bin/crun",
            ]
            .map(PathBuf::from)
            .to_vec(),
            runtime_root: PathBuf::from("/"),
            escape_attempts: true,
            escape_max_entries: kernsight_common::escape::DEFAULT_ESCAPE_ATTEMPTS_ENTRIES,
            seccomp_drift: true,
            runtime_default_profile: PathBuf::new(),
            seccomp_baselines: Vec::new(),
            posture: true,
        }
    }
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            cri_socket: PathBuf::new(),
            cri_socket_candidates: DEFAULT_CRI_SOCKETS.iter().map(PathBuf::from).collect(),
            container_id_label: false,
            pod_labels: Vec::new(),
            max_containers: 4096,
            cgroup_walk_interval_milliseconds: 1000,
            cgroup_lookup_by_handle: true,
            host_scope_exclude: ["/system.slice/*.scope", "/user.slice/*.scope"].map(String::from).to_vec(),
            host_scope_include: Vec::new(),
            api_watch: false,
            api_server: String::new(),
            kubeconfig: PathBuf::new(),
            api_max_pods: 1024,
        }
    }
}

impl Default for BpfConfig {
    fn default() -> Self {
        Self {
            pin_dir: "/sys/fs/bpf/kernsight".into(),
            program_stats: false,
            object: ObjectChoice::Auto,
            map_memory_budget_mebibytes: DEFAULT_MAP_MEMORY_BUDGET_MEBIBYTES,
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self { tracefs: "/sys/kernel/tracing".into(), bpffs: "/sys/fs/bpf".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_default() {
        // Table equality: default.toml spells out every key, with the values of `Default`.
        let file: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(toml::Table::try_from(Config::default()).unwrap(), file);
        assert_eq!(Config::embedded(), Config::default());
    }

    #[test]
    fn embedded_default_parses() {
        let config = Config::parse(DEFAULT_CONFIG, "default").expect("default config parses");
        assert_eq!(config.metrics.listen, "127.0.0.1:9464".parse().unwrap());
        assert!(config.syscalls.enabled);
        assert!(!config.syscalls.latency_histogram, "latency histogram is off by default");
        assert_eq!(config.syscalls.max_cgroups, kernsight_common::syscalls::DEFAULT_CGROUP_SLOTS);
    }

    #[test]
    fn unknown_key_error_names_key_and_line() {
        let text = DEFAULT_CONFIG.replace("[syscalls]\n", "[syscalls]\nbogus_key = 1\n");
        let line = text.lines().position(|l| l.starts_with("bogus_key")).unwrap() + 1;
        let err = Config::parse(&text, "test.toml").unwrap_err().to_string();
        assert!(err.contains("bogus_key"), "{err}");
        assert!(err.contains(&format!("line {line}")), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let text = DEFAULT_CONFIG.replace("enabled = true", "enabled = \"yes\"");
        let err = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("enabled"), "{err}");
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let config = Config::parse("[syscalls]\nlatency_histogram = true\n", "t").unwrap();
        assert!(config.syscalls.latency_histogram);
        assert_eq!(config.syscalls.max_cgroups, Config::embedded().syscalls.max_cgroups);
        assert_eq!(config.metrics, Config::embedded().metrics);
        assert_eq!(Config::parse("", "t").unwrap(), Config::embedded());
    }

    #[test]
    fn interface_counters_default_to_tc_and_the_old_xdp_key_keeps_its_meaning() {
        let parse = |text: &str| Config::parse(&format!("[network]\n{text}\n"), "t");
        assert_eq!(Config::embedded().network.interface_counters, InterfaceCounters::Tc);
        assert_eq!(parse("").unwrap().network.interface_counters, InterfaceCounters::Tc);
        assert_eq!(
            parse("interface_counters = \"xdp\"").unwrap().network.interface_counters,
            InterfaceCounters::Xdp
        );
        assert_eq!(
            parse("interface_counters = \"off\"").unwrap().network.interface_counters,
            InterfaceCounters::Off
        );
        // Old files: `xdp = true` asked for XDP, `xdp = false` for no interface counters.
        assert_eq!(parse("xdp = true").unwrap().network.interface_counters, InterfaceCounters::Xdp);
        assert_eq!(parse("xdp = false").unwrap().network.interface_counters, InterfaceCounters::Off);
        assert_eq!(parse("xdp = true").unwrap().network.xdp, None, "read once, then forgotten");
        let both = parse("xdp = true\ninterface_counters = \"off\"").unwrap_err().to_string();
        assert!(both.contains("network.xdp and network.interface_counters"), "{both}");
        let bad = parse("interface_counters = \"ebpf\"").unwrap_err().to_string();
        assert!(bad.contains("interface_counters"), "{bad}");
    }

    #[test]
    fn interface_traffic_bound_holds_the_tc_overflow_entries() {
        let parse = |entries: u32| {
            Config::parse(&format!("[network]\ninterface_traffic_max_entries = {entries}\n"), "t")
        };
        let err = parse(31).unwrap_err().to_string();
        assert!(err.contains("interface_traffic_max_entries = 31 is out of range: use 32"), "{err}");
        assert_eq!(parse(32).unwrap().network.interface_traffic_max_entries, 32);
    }

    #[test]
    fn bad_xdp_interface_is_an_error() {
        let config = Config::parse("[network]\nxdp_interfaces = [\"eth0\", \"blue:veth1\"]\n", "t").unwrap();
        assert_eq!(config.network.interfaces.len(), 2);
        for bad in ["", "a/b", "blue:", ":eth0", "x:y z", "0123456789abcdefg"] {
            let text = format!("[network]\ninterfaces = [{bad:?}]\n");
            let err = Config::parse(&text, "t").unwrap_err().to_string();
            assert!(err.contains("network.interfaces"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn http_limits_are_bounded() {
        let config =
            Config::parse("[metrics]\nmax_connections = 32\nweb_config_file = \"/etc/web.yml\"\n", "t")
                .unwrap();
        assert_eq!(config.metrics.limits().max_connections, 32);
        assert_eq!(config.metrics.web_config_file, PathBuf::from("/etc/web.yml"));
        for (key, bad) in [
            ("max_connections", "0"),
            ("max_header_bytes", "1024"),
            ("header_timeout_seconds", "0"),
            ("write_timeout_seconds", "3600"),
            ("encode_reuse_milliseconds", "600000"),
        ] {
            let err = Config::parse(&format!("[metrics]\n{key} = {bad}\n"), "t").unwrap_err().to_string();
            assert!(err.contains(&format!("metrics.{key}")), "{err}");
        }
    }

    #[test]
    fn tiny_map_is_rejected() {
        let text = DEFAULT_CONFIG.replace("max_error_entries = 16384", "max_error_entries = 2");
        let err = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("syscalls.max_error_entries"), "{err}");
    }

    proptest::proptest! {
        /// Config files are written by people: any text is a config or an error naming the file.
        #[test]
        fn no_text_panics_the_config_parser(text in proptest::prelude::any::<String>()) {
            if let Err(err) = Config::parse(&text, "fuzz.toml") {
                proptest::prop_assert!(err.to_string().contains("fuzz.toml"));
            }
        }

        /// Near misses of the real file: a line replaced by something TOML-like.
        #[test]
        fn near_miss_configs_are_configs_or_errors(line in 0..80usize, junk in r#"[a-z_.\[\]= "0-9-]{0,32}"#) {
            let mut lines: Vec<&str> = DEFAULT_CONFIG.lines().collect();
            let at = line % lines.len();
            lines[at] = &junk;
            match Config::parse(&lines.join("\n"), "fuzz.toml") {
                Ok(config) => proptest::prop_assert!(config.validate().is_ok()),
                Err(err) => proptest::prop_assert!(err.to_string().contains("fuzz.toml")),
            }
        }
    }
}
