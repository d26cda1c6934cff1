//! `kernsight run`: the daemon.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    bpf::{Programs, cgroups, dns as dns_family, oom as oom_family, processes as processes_family},
    config::{Config, LogFormat},
    events::{dns, oom, processes},
    http::{
        WebState,
        stats::{HttpCollector, HttpStats},
    },
    kernel::{cgroupfs, preflight},
    logging,
    metadata::{
        api::{self, store::PodStore, watch::PodWatch},
        cgroups::{self as cgroup_index, Tracker},
        identity::Resolver,
        lookup,
    },
    metrics::{
        self,
        server::{Health, HttpOptions},
    },
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (TOML); without it the embedded default is used.
    #[arg(long, env = "KERNSIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve /metrics, /healthz and /readyz on (port 0: any free port).
    #[arg(long, env = "KERNSIGHT_LISTEN")]
    listen: Option<SocketAddr>,
    /// A loopback address for /healthz and /readyz alone (kubelet's probes), in plain HTTP.
    #[arg(long, env = "KERNSIGHT_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// The exporters' web configuration file (YAML: TLS, client certificates, basic auth), as
    /// node_exporter's flag of the same name.
    #[arg(long = "web.config.file", alias = "web-config-file", env = "KERNSIGHT_WEB_CONFIG_FILE")]
    web_config_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "KERNSIGHT_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `debug` or `kernsight=debug`.
    #[arg(long, env = "KERNSIGHT_LOG_LEVEL")]
    log_level: Option<String>,
    /// Measure per-syscall latency (kernsight_syscall_duration_seconds).
    #[arg(long, env = "KERNSIGHT_SYSCALL_LATENCY")]
    syscall_latency: Option<bool>,
    /// Watch this node's pods in the Kubernetes API for exact owners (metadata.api_watch).
    #[arg(long, env = "KERNSIGHT_API_WATCH")]
    api_watch: Option<bool>,
    /// The Kubernetes API server's URL (metadata.api_server).
    #[arg(long, env = "KERNSIGHT_API_SERVER")]
    api_server: Option<String>,
    /// A kubeconfig for the Kubernetes API (metadata.kubeconfig).
    #[arg(long, env = "KERNSIGHT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Where to pin the in-kernel counters (bpffs); an empty value does not pin them.
    #[arg(long, env = "KERNSIGHT_PIN_DIR", value_parser = crate::cli::path_or_empty())]
    pin_dir: Option<PathBuf>,
}

impl RunArgs {
    /// The configuration file (or the embedded default), with flags and environment on top.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::embedded(),
        };
        if let Some(listen) = self.listen {
            config.metrics.listen = listen;
        }
        if let Some(health) = self.health_listen {
            config.metrics.health_listen = Some(health);
        }
        if let Some(file) = &self.web_config_file {
            config.metrics.web_config_file.clone_from(file);
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(level) = &self.log_level {
            config.log.level.clone_from(level);
        }
        if let Some(latency) = self.syscall_latency {
            config.syscalls.latency_histogram = latency;
        }
        if let Some(dir) = &self.pin_dir {
            config.bpf.pin_dir.clone_from(dir);
        }
        if let Some(watch) = self.api_watch {
            config.metadata.api_watch = watch;
        }
        if let Some(server) = &self.api_server {
            config.metadata.api_server.clone_from(server);
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            config.metadata.kubeconfig.clone_from(kubeconfig);
        }
        Ok(config)
    }
}

/// Starts the pod watch (`metadata.api_watch`); where it cannot start, says why and leaves the
/// owners to the CRI's labels.
async fn start_api_watch(config: &Config, resolver: &Arc<Resolver>) {
    let node = resolver.node().to_owned();
    if node.is_empty() {
        warn!(
            "metadata.api_watch is on but NODE_NAME is not set (the chart sets it from spec.nodeName): owners come from the CRI's labels"
        );
        return;
    }
    let metadata = &config.metadata;
    match api::client(&metadata.api_server, &metadata.kubeconfig).await {
        Ok(client) => {
            let store = Arc::new(PodStore::new(metadata.api_max_pods));
            resolver.use_api_pods(store.clone());
            let watch =
                PodWatch::new(client, &node, store, metadata.api_max_pods).with_resolver(resolver.clone());
            tokio::spawn(watch.run());
        }
        Err(err) => warn!("metadata.api_watch: {err}: owners come from the CRI's labels"),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    logging::init(&config.log);
    crate::heap::map_large_blocks();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Scrapes and maintenance passes block on map reads: a few threads suffice, and each
        // thread more would keep a malloc arena of its own.
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Bind first: a port conflict is the cheapest failure to report, before anything is loaded.
    let listener = tokio::net::TcpListener::bind(config.metrics.listen).await.with_context(|| {
        format!(
            "cannot listen on {}: choose another address with --listen or metrics.listen",
            config.metrics.listen
        )
    })?;
    let address = listener.local_addr().context("listening socket has no address")?;
    let health_listener = match config.metrics.health_listen {
        Some(health) => Some(tokio::net::TcpListener::bind(health).await.with_context(|| {
            format!("cannot listen on {health}: choose another address with --health-listen or metrics.health_listen")
        })?),
        None => None,
    };
    // The web configuration next: a bad certificate or hash stops the agent before it loads
    // anything, with the key at fault.
    let http_stats = Arc::new(HttpStats::default());
    let web_config = &config.metrics.web_config_file;
    let web = WebState::new(
        (!web_config.as_os_str().is_empty()).then_some(web_config.as_path()),
        http_stats.clone(),
    )
    .map_err(|why| anyhow::anyhow!("{why}"))?;
    if web.scheme() == "http" && !address.ip().is_loopback() {
        warn!(
            %address,
            "serving metrics without TLS on a non-loopback address: anyone on the network reads the pod inventory and security posture; set --web.config.file (docs/deploy.md)"
        );
    }

    preflight::check_privileges()?;
    preflight::check_btf()?;
    preflight::raise_memlock_limit();
    preflight::ensure_mounts(&config.paths.tracefs, &config.paths.bpffs);

    let hierarchies = cgroupfs::Hierarchies::detect();
    info!(
        unified = ?hierarchies.unified,
        v1 = ?hierarchies.v1,
        "cgroup hierarchies (tasks of the v2 root are attributed by their v1 cgroup when v1 is set)"
    );
    let programs = Programs::load(&config, &hierarchies)?;
    // Loading parsed the kernel's BTF (megabytes, freed since): give those pages back.
    crate::heap::release_free_memory();
    let health = Arc::new(Health::new(programs.probe_statuses()));
    for status in programs.probe_statuses() {
        status.log();
    }
    let cgroup_events = programs.take_events(cgroups::PROBE);
    let oom_events = programs.take_events(oom_family::PROBE);
    let process_events = programs.take_events(processes_family::PROCESSES_PROBE);
    let dns_events = programs.take_events(dns_family::PROBE);
    let programs = Arc::new(programs);
    // The ids the continued maps count for, taken before the walk: any the walk does not find
    // was removed while no agent ran.
    let counted_before_walk = programs.cgroup_ids();
    let resolution = cgroup_index::Resolution {
        walk_interval: Duration::from_millis(config.metadata.cgroup_walk_interval_milliseconds),
        by_handle: config.metadata.cgroup_lookup_by_handle,
    };
    let tracker = Arc::new(Tracker::new(hierarchies, resolution));
    cgroup_index::forget_removed_while_stopped(&tracker, &programs, &counted_before_walk);
    drop(counted_before_walk);
    let resolver = Arc::new(
        Resolver::new(
            config.metadata.container_id_label,
            config.metadata.pod_labels.clone(),
            config.metadata.max_containers,
        )
        .with_host_scope_filter(crate::label_filter::LabelFilter::new(
            &config.metadata.host_scope_include,
            &config.metadata.host_scope_exclude,
        ))
        .with_node(std::env::var("NODE_NAME").unwrap_or_default()),
    );
    let cri_sockets =
        lookup::CriSockets::new(&config.metadata.cri_socket, &config.metadata.cri_socket_candidates);
    if config.metadata.api_watch {
        start_api_watch(&config, &resolver).await;
    }
    tokio::spawn(lookup::run(resolver.clone(), cri_sockets));
    // The family's, which forgets the kills of removed cgroups with their slots; none counted
    // without it.
    let kills = programs.family::<oom_family::OomState>().map(|oom| oom.kills.clone()).unwrap_or_default();
    if let Some(events) = oom_events {
        tokio::spawn(oom::follow_events(
            events,
            kills.clone(),
            tracker.clone(),
            resolver.clone(),
            programs.clone(),
        ));
    }
    if let Some(events) = process_events {
        tokio::spawn(processes::follow_events(events, tracker.clone(), resolver.clone()));
    }
    if let Some((events, state)) = dns_events.zip(programs.family::<dns_family::DnsState>()) {
        tokio::spawn(dns::follow_events(events, state.exchanges.clone()));
    }
    // Before serving: once /readyz answers, a SIGTERM must detach and exit cleanly, not kill.
    // Before the exposition too: from there on nothing returns early, so the read-ahead thread
    // is always stopped (below) and the programs dropped.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut exposition =
        metrics::exposition(&config, programs.clone(), health.clone(), tracker.clone(), resolver, kills);
    exposition.add(metrics::exposition::Source::Encoded(Box::new(HttpCollector(http_stats.clone()))));
    let grace = Duration::from_secs(config.syscalls.forget_after_seconds);
    let lost = cgroup_events.as_ref().map(|events| events.stats.clone());
    if let Some(events) = cgroup_events {
        tokio::spawn(cgroup_index::follow_events(events, tracker.clone()));
    }
    tokio::spawn(cgroup_index::resolve_unknown(tracker.clone()));
    tokio::spawn(cgroup_index::maintain(tracker, programs, lost, grace));

    let scheme = web.scheme();
    info!(%address, web = %web.summary(), "serving metrics on {scheme}://{address}/metrics");
    let options = HttpOptions { limits: config.metrics.limits(), web: Arc::new(web), stats: http_stats };
    if let Some(probes) = health_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        info!(%probes, "serving /healthz and /readyz on http://{probes}");
    }
    let read_ahead = health.scrapes.read_ahead.clone();
    let server = tokio::spawn(metrics::server::serve(listener, health_listener, exposition, health, options));
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM received: detaching programs"),
        _ = interrupt.recv() => info!("SIGINT received: detaching programs"),
        result = server => match result {
            Ok(Err(err)) => warn!("metrics server stopped: {err:#}"),
            Ok(Ok(())) => warn!("metrics server stopped"),
            Err(err) => warn!("metrics server task failed: {err}"),
        },
    }
    // Returning drops the exposition and with it the programs: their links detach on drop. The
    // thread that reads ahead of scrapes holds collectors, and so the programs, until stopped.
    tokio::task::block_in_place(|| read_ahead.stop());
    Ok(())
}
