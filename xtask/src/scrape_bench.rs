//! `cargo xtask bench scrape [N]`: how long a scrape takes with N containers on the node.
//!
//! N cgroups named the way containerd's cgroupfs driver names a pod's containers
//! (`kubepods/besteffort/pod<uid>/<id>`) in every hierarchy, each with a process that made
//! syscalls there and sleeps, and a container runtime that names them (`Runtime`), then scrapes
//! of a release agent in its default configuration (pointed at that runtime's socket): the
//! first, then back to back (the agent's 2 s caches of cgroupfs and `/proc` warm), then spaced
//! past those caches (as Prometheus scrapes, at a steady interval), each phase with its time by
//! collector, then at no steady interval, then while containers are replaced; and the agent's CPU
//! time per scrape, and its RSS: between scrapes, right after one, and at its peak before the
//! first scrape and over the scrapes (what a pod's memory limit must hold). Then cAdvisor (`crate::cadvisor`) on the same cgroups, for reference.
//! Everything the benchmark created is ended and removed afterwards.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    bench::{Stream, agent_command, median, start_and_wait, stop},
    process::workspace_root,
    report::Row,
};

const SCRAPES: usize = 20;

/// Scrapes made far enough apart (`SPACING`) that the agent's 2 s caches of cgroupfs and `/proc`
/// have expired: each reads them again, as every scrape does at Prometheus' usual 15 to 60 s.
const SPACED_SCRAPES: usize = 8;
const SPACING: Duration = Duration::from_millis(2500);
/// Scrapes at no steady interval (`SPACING`, then twice that, in turn): the agent reads ahead of
/// a scraper's next scrape when it comes at a steady interval, and this is what one that does not
/// gets, and what the reads ahead it makes in vain cost.
const IRREGULAR_SCRAPES: usize = 6;
/// Scrapes `SPACING` apart while containers start and stop (`CHURN` replaced between two, at
/// even times): a node while a deployment rolls. The first `STEADY_AFTER` spaced scrapes make
/// the interval known (the agent reads ahead of a scraper's next scrape once two intervals
/// agree) and are not reported in a row of their own; nor are the first `CHURN_STEADY_AFTER`
/// of this phase, which begins right after the last irregular scrape (too close to it to be an
/// interval), so that its first read ahead is for its fourth scrape.
const CHURN_SCRAPES: usize = 11;
const STEADY_AFTER: usize = 2;
const CHURN_STEADY_AFTER: usize = 3;
const CHURN: usize = 50;
/// The steady scrapes whose collectors' time the bodies report: a body reports the scrapes
/// before it, so the phase's first steady scrape's body and its last one's span all of them
/// but the last.
const STEADY_REPORTED: usize = SPACED_SCRAPES - STEADY_AFTER - 1;
const CHURN_STEADY_REPORTED: usize = CHURN_SCRAPES - CHURN_STEADY_AFTER - 1;

/// How many scrapes to make back to back: `SCRAPES`, or `KERNSIGHT_BENCH_SCRAPES` (more of
/// them leave time to profile the agent, whose pid the benchmark prints, e.g. with
/// `perf record -p`).
fn scrapes() -> usize {
    std::env::var("KERNSIGHT_BENCH_SCRAPES").ok().and_then(|n| n.parse().ok()).unwrap_or(SCRAPES)
}

pub fn run(containers: usize) -> Result<Vec<Row>, String> {
    let roots = hierarchy_roots();
    if roots.is_empty() {
        return Err("no cgroup hierarchy is mounted".into());
    }
    let runtime = Runtime::start()?;
    let mut command = agent_command();
    if let Some(runtime) = &runtime {
        command.arg("--config").arg(runtime.agent_config()?);
    }
    // The agent first: the containers' syscalls must happen while it counts.
    let (mut agent, address) = start_agent(command)?;
    let mut fleet = Fleet::new(roots);
    // Listed once all are made (a list rewritten at each of 1,000 adds is 50 MB of writes); the
    // runtime has them before the agent's first scrape, as a node's has.
    let made = (0..containers).try_for_each(|i| fleet.add(i));
    let listed = made.and_then(|()| runtime.as_ref().map_or(Ok(()), |r| fleet.list_in(r.list.clone())));
    if let Err(err) = listed {
        stop(&mut agent);
        return Err(err);
    }
    // Let the lookup task name the containers (unnamed: try, and fail), as it would on a node.
    std::thread::sleep(Duration::from_secs(3));
    // Its start (BTF, maps, the first look at the node) is not the scrapes' peak: measured apart.
    let start_peak = crate::agent_bench::peak_rss_mib(agent.id());
    let reset = crate::agent_bench::reset_peak_rss(agent.id());
    let result = scrape_phases(&address, agent.id(), &mut fleet);
    let rss = crate::agent_bench::rss_mib(agent.id());
    let scrapes_peak = crate::agent_bench::peak_rss_mib(agent.id());
    // Between two scrapes: the body is let go once no scrape can reuse it.
    std::thread::sleep(Duration::from_secs(3));
    let rss_between = crate::agent_bench::rss_mib(agent.id());
    stop(&mut agent);
    let phases = result?;
    // The reference, on the same cgroups, once the agent is gone.
    let reference =
        cadvisor_phase(&fleet, containers).inspect_err(|why| println!("cAdvisor rows left out: {why}")).ok();
    // Kept for reading what a scrape of this many containers exports, family by family.
    let body = &phases.last_body;
    let kept = PathBuf::from(format!("target/bench-scrape-{containers}.prom"));
    if let Err(err) = std::fs::write(&kept, body) {
        eprintln!("xtask: cannot keep the last scrape in {}: {err}", kept.display());
    }
    let series = body.lines().filter(|l| l.starts_with("kernsight_syscalls_total")).count();
    if runtime.is_some() {
        // A benchmark of unnamed containers would pass for one of named ones: checked.
        let usage = || body.lines().filter(|l| l.starts_with("kernsight_container_cpu_usage_seconds_total{"));
        // An unnamed container's series has no `pod` label (the agent leaves empty labels out).
        let named = usage().filter(|l| l.contains(",pod=\"") || l.contains("{pod=\"")).count();
        println!("containers named by the runtime in the last scrape: {named} of {}", usage().count());
        if named == 0 {
            return Err("the agent named no container by kernsight-bench-cri: see its log above".into());
        }
    }
    // What the containers hold decides a third of a body: said, so that runs compare alike.
    let held = body.lines().filter(|l| l.starts_with("kernsight_container_capability{")).count();
    println!("capabilities held per container in the last scrape: {:.1}", held as f64 / containers as f64);
    let samples = sample_lines(body);
    println!(
        "scrape with {containers} containers: first {:.1} ms; back to back median {:.1} ms; every {:.1} s median {:.1} ms \
         ({} bytes, {samples} samples, {series} of them kernsight_syscalls_total)",
        phases.cold,
        median(&phases.back_to_back),
        SPACING.as_secs_f64(),
        median(&phases.spaced),
        body.len()
    );
    println!("\nms per scrape by collector (kernsight_scrape_collector_duration_seconds_total):");
    println!(
        "{:<16} {:>10} {:>14} {:>22} {:>14}",
        "collector", "first", "back to back", "spaced, interval known", "containers replaced"
    );
    for (collector, [cold, back_to_back, spaced, churn]) in &phases.by_collector {
        println!("{collector:<16} {cold:>10.1} {back_to_back:>14.1} {spaced:>22.1} {churn:>14.1}");
    }
    // The collectors run at once, so the scrape is not their sum: the agent times it whole.
    let [cold, back_to_back, spaced, churn] = phases.agent_ms;
    println!("{:<16} {cold:>10.1} {back_to_back:>14.1} {spaced:>22.1} {churn:>14.1}", "(whole scrape)");
    let [cpu_back_to_back, cpu_spaced, cpu_irregular, cpu_churn] = phases.cpu_ms;
    let [reads_ahead, late] = phases.churn_reads_ahead;
    println!(
        "\nwhile {CHURN} containers start and {CHURN} stop between two scrapes, every {:.1} s: median {:.1} ms a scrape, \
         agent CPU per scrape {cpu_churn:.1} ms, {reads_ahead} reads ahead for its {} scrapes ({late} still reading when due)",
        SPACING.as_secs_f64(),
        median(&phases.churn),
        phases.churn.len(),
    );
    println!(
        "at no steady interval: median {:.1} ms a scrape; agent CPU per scrape: back to back {cpu_back_to_back:.1} ms, \
         every {:.1} s {cpu_spaced:.1} ms, at no steady interval {cpu_irregular:.1} ms",
        median(&phases.irregular),
        SPACING.as_secs_f64(),
    );
    println!(
        "agent RSS with {containers} containers: {rss:.1} MiB right after the last scrape, {rss_between:.1} MiB 3 s later"
    );
    println!(
        "agent peak RSS: {start_peak:.1} MiB before its first scrape, {scrapes_peak:.1} MiB over the scrapes"
    );
    println!("the last scrape's body: {}", kept.display());
    let mut rows = vec![
        Row::new(format!("scrape time, {containers} containers, first"), "ms", vec![phases.cold]),
        Row::new(format!("scrape time, {containers} containers, back to back"), "ms", phases.back_to_back),
        Row::new(
            format!("scrape time, {containers} containers, every {:.1} s", SPACING.as_secs_f64()),
            "ms",
            phases.spaced.clone(),
        ),
        Row::new(
            format!(
                "scrape time, {containers} containers, every {:.1} s, interval known",
                SPACING.as_secs_f64()
            ),
            "ms",
            phases.spaced[STEADY_AFTER.min(phases.spaced.len())..].to_vec(),
        ),
        Row::new(
            format!("scrape time, {containers} containers, at no steady interval"),
            "ms",
            phases.irregular,
        ),
        Row::new(
            format!("scrape time, {containers} containers, {CHURN} replaced between scrapes"),
            "ms",
            phases.churn,
        ),
        Row::new(
            format!("agent CPU per scrape, {containers} containers, every {:.1} s", SPACING.as_secs_f64()),
            "ms",
            vec![cpu_spaced],
        ),
        Row::new(
            format!("agent CPU per scrape, {containers} containers, at no steady interval"),
            "ms",
            vec![cpu_irregular],
        ),
        Row::new(
            format!("agent CPU per scrape, {containers} containers, {CHURN} replaced between scrapes"),
            "ms",
            vec![cpu_churn],
        ),
        Row::new(
            format!("agent's own time per scrape (mean), {containers} containers, back to back"),
            "ms",
            vec![phases.agent_ms[1]],
        ),
        Row::new(
            format!(
                "agent's own time per scrape (mean), {containers} containers, every {:.1} s, interval known",
                SPACING.as_secs_f64()
            ),
            "ms",
            vec![phases.agent_ms[2]],
        ),
        Row::new(format!("agent RSS, {containers} containers, right after a scrape"), "MiB", vec![rss]),
        Row::new(format!("agent RSS, {containers} containers, between scrapes"), "MiB", vec![rss_between]),
        Row::new(
            format!("agent peak RSS, {containers} containers, before its first scrape"),
            "MiB",
            vec![start_peak],
        ),
    ];
    match reset {
        Ok(()) => rows.push(Row::new(
            format!("agent peak RSS, {containers} containers, over the scrapes"),
            "MiB",
            vec![scrapes_peak],
        )),
        Err(why) => println!("the scrapes' peak RSS left out: {why}"),
    }
    if let Some(reference) = reference {
        println!(
            "cAdvisor 0.38 on the same cgroups, every {:.1} s: median {:.1} ms a scrape ({} samples), \
             {:.1} ms of CPU per scrape (its housekeeping included), RSS {:.1} MiB",
            SPACING.as_secs_f64(),
            median(&reference.times),
            reference.samples,
            reference.cpu_ms,
            reference.rss
        );
        rows.extend([
            Row::new(
                format!(
                    "cAdvisor 0.38: scrape time, {containers} containers, every {:.1} s",
                    SPACING.as_secs_f64()
                ),
                "ms",
                reference.times,
            ),
            Row::new(
                format!(
                    "cAdvisor 0.38: CPU per scrape, {containers} containers, every {:.1} s",
                    SPACING.as_secs_f64()
                ),
                "ms",
                vec![reference.cpu_ms],
            ),
            Row::new(format!("cAdvisor 0.38: RSS, {containers} containers"), "MiB", vec![reference.rss]),
        ]);
    }
    Ok(rows)
}

/// cAdvisor's figures on the same containers: scrape times `SPACING` apart, its CPU time per
/// scrape (its housekeeping between scrapes included, as the agent's reads ahead are) and RSS.
struct Reference {
    times: Vec<f64>,
    cpu_ms: f64,
    rss: f64,
    samples: usize,
}

fn cadvisor_phase(fleet: &Fleet, containers: usize) -> Result<Reference, String> {
    let cadvisor = crate::cadvisor::CAdvisor::start()?;
    let marker = fleet.base.to_string_lossy().into_owned();
    cadvisor.wait_for(&marker, containers, Duration::from_secs(180))?;
    let cpu = || crate::agent_bench::cpu_seconds(cadvisor.pid());
    let cpu_before = cpu()?;
    let mut times = Vec::new();
    let mut samples = 0;
    let mut scraper = Scraper::default();
    for _ in 0..SPACED_SCRAPES {
        std::thread::sleep(SPACING);
        let (ms, body) = scraper.get(&cadvisor.address, "/metrics", "*/*")?;
        times.push(ms);
        samples = sample_lines(&body);
    }
    let cpu_ms = (cpu()? - cpu_before) * 1e3 / SPACED_SCRAPES as f64;
    Ok(Reference { times, cpu_ms, rss: crate::agent_bench::rss_mib(cadvisor.pid()), samples })
}

/// Scrape times (ms) of each phase, and each collector's ms per scrape in them.
struct Phases {
    cold: f64,
    back_to_back: Vec<f64>,
    spaced: Vec<f64>,
    irregular: Vec<f64>,
    churn: Vec<f64>,
    /// The agent's CPU time per scrape (ms) back to back, spaced, at no steady interval and
    /// while containers are replaced, what it does between scrapes included.
    cpu_ms: [f64; 4],
    /// Each collector's ms per scrape: the first, back to back, spaced once the interval is
    /// known, and while containers are replaced.
    by_collector: BTreeMap<String, [f64; 4]>,
    /// The agent's own time per scrape (ms), from the request to the body encoded
    /// (`kernsight_scrape_duration_seconds`), in the same four columns: what the scrape time
    /// adds to it is sending the body and the benchmark reading it.
    agent_ms: [f64; 4],
    /// Reads ahead made while containers were replaced, and how many of them ran into their
    /// scrape.
    churn_reads_ahead: [f64; 2],
    last_body: String,
}

/// The first scrape (nothing cached, no container named), then `scrapes()` back to back, then
/// `SPACED_SCRAPES` `SPACING` apart. A body reports the collectors' time of the scrapes before
/// it, so each phase's share is the difference between two bodies.
fn scrape_phases(address: &str, pid: u32, fleet: &mut Fleet) -> Result<Phases, String> {
    let mut scraper = Scraper::default();
    let mut timed = || scraper.get(address, "/metrics", PROMETHEUS_ACCEPT);
    let scrapes = scrapes();
    println!("{scrapes} scrapes back to back, then {SPACED_SCRAPES} spaced, of the agent (pid {pid})");
    let cpu = || crate::agent_bench::cpu_seconds(pid);
    let (cold, _) = timed()?;
    let cpu_before = cpu()?;
    let mut back_to_back = Vec::new();
    let mut bodies = Vec::new();
    for scrape in 0..scrapes {
        let (ms, body) = timed()?;
        back_to_back.push(ms);
        if scrape == 0 {
            bodies.push(body); // the first scrape's share
        }
    }
    let cpu_after_back_to_back = cpu()?;
    let mut spaced = Vec::new();
    for scrape in 0..SPACED_SCRAPES {
        std::thread::sleep(SPACING);
        let (ms, body) = timed()?;
        spaced.push(ms);
        // A body reports the scrapes before it: after the back-to-back ones, before the first
        // with the interval known, after all but the last.
        if scrape == 0 || scrape == STEADY_AFTER || scrape + 1 == SPACED_SCRAPES {
            bodies.push(body);
        }
    }
    let cpu_after_spaced = cpu()?;
    let listed: Vec<String> = spaced.iter().map(|ms| format!("{ms:.0}")).collect();
    println!("spaced scrapes, in order (ms): {}", listed.join(" "));
    let mut irregular = Vec::new();
    for scrape in 0..IRREGULAR_SCRAPES {
        std::thread::sleep(if scrape % 2 == 0 { 2 * SPACING } else { SPACING });
        irregular.push(timed()?.0);
    }
    let cpu_after_irregular = cpu()?;
    let (churn, churn_bodies) = churn_phase(fleet, timed)?;
    bodies.extend(churn_bodies);
    let cpu_after_churn = cpu()?;
    let per_scrape_ms = |seconds: f64, n: usize| seconds * 1e3 / n as f64;
    let cpu_ms = [
        per_scrape_ms(cpu_after_back_to_back - cpu_before, scrapes),
        per_scrape_ms(cpu_after_spaced - cpu_after_back_to_back, SPACED_SCRAPES),
        per_scrape_ms(cpu_after_irregular - cpu_after_spaced, IRREGULAR_SCRAPES),
        per_scrape_ms(cpu_after_churn - cpu_after_irregular, CHURN_SCRAPES),
    ];
    let [after_cold, after_back_to_back, steady, after_spaced, churn_steady, last] =
        <[String; 6]>::try_from(bodies).map_err(|_| "too few scrapes")?;
    let bodies = [&after_cold, &after_back_to_back, &steady, &after_spaced, &churn_steady, &last];
    let totals = bodies.map(|body| collector_seconds(body));
    let agent_ms = {
        let [c, b, s, a, cs, l] = bodies.map(|body| counter(body, "kernsight_scrape_duration_seconds_total"));
        [
            c * 1e3,
            (b - c) * 1e3 / scrapes as f64,
            (a - s) * 1e3 / STEADY_REPORTED as f64,
            (l - cs) * 1e3 / CHURN_STEADY_REPORTED as f64,
        ]
    };
    let [cold_totals, ..] = &totals;
    let by_collector = cold_totals
        .iter()
        .map(|(name, &cold)| {
            let [_, b, s, a, cs, l] = totals.each_ref().map(|t| t.get(name).copied().unwrap_or(cold));
            let per_scrape = |seconds: f64, n: usize| seconds * 1e3 / n as f64;
            let columns = [
                cold * 1e3,
                per_scrape(b - cold, scrapes),
                per_scrape(a - s, STEADY_REPORTED),
                per_scrape(l - cs, CHURN_STEADY_REPORTED),
            ];
            (name.clone(), columns)
        })
        .collect();
    let reads_ahead = |name: &str| counter(&last, name) - counter(&churn_steady, name);
    let churn_reads_ahead = [
        reads_ahead("kernsight_scrape_reads_ahead_total"),
        reads_ahead("kernsight_scrape_reads_ahead_late_total"),
    ];
    Ok(Phases {
        cold,
        back_to_back,
        spaced,
        irregular,
        churn,
        cpu_ms,
        by_collector,
        agent_ms,
        churn_reads_ahead,
        last_body: last,
    })
}

/// Scrapes by start time, `SPACING` apart, replacing `CHURN` containers at even times between
/// two; the scrape times after the first `CHURN_STEADY_AFTER`, and the bodies of the first of
/// those and of the last one (each collector's share: `CHURN_STEADY_REPORTED`).
fn churn_phase(
    fleet: &mut Fleet,
    mut scrape: impl FnMut() -> Result<(f64, String), String>,
) -> Result<(Vec<f64>, [String; 2]), String> {
    let started = Instant::now();
    let step = SPACING / (CHURN as u32 + 1);
    let mut times = Vec::new();
    let (mut before, mut last) = (String::new(), String::new());
    for round in 0..CHURN_SCRAPES {
        let due = started + SPACING * round as u32;
        if round > 0 {
            let previous = due - SPACING;
            for i in 1..=CHURN {
                std::thread::sleep((previous + step * i as u32).saturating_duration_since(Instant::now()));
                fleet.replace_oldest()?;
            }
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (ms, body) = scrape()?;
        if round >= CHURN_STEADY_AFTER {
            times.push(ms);
        }
        if round == CHURN_STEADY_AFTER {
            before = body;
        } else {
            last = body;
        }
    }
    Ok((times, [before, last]))
}

/// The value of the sample `name` (no labels) in a body, 0 if it has none.
fn counter(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `kernsight_scrape_collector_duration_seconds_total` of a body, by collector.
fn collector_seconds(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter_map(|line| {
            line.strip_prefix("kernsight_scrape_collector_duration_seconds_total{collector=\"")
        })
        .filter_map(|rest| {
            let (name, value) = rest.split_once("\"} ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The benchmark's cgroups and their sleeping processes; ended and removed on drop. Each
/// container has the same relative path in every hierarchy the host has (the unified one, and on
/// hybrid hosts the v1 memory, cpu and pids ones), as runtimes make them, so that the resource
/// collectors read real files.
struct Fleet {
    /// Roots of the hierarchies: the unified one first.
    roots: Vec<PathBuf>,
    /// Path below each root of the benchmark's parent cgroup.
    base: PathBuf,
    sleepers: Vec<Sleeper>,
    /// Containers added so far: the next one's number.
    added: usize,
    /// The runtime's list (`Runtime`), written anew at each change, when the containers are named.
    listed: Option<PathBuf>,
    /// What each container's process is started under: `RUNTIME_DEFAULT_CAPABILITIES`, or
    /// nothing with `KERNSIGHT_BENCH_PRIVILEGED` set.
    confinement: &'static str,
}

/// The capabilities containerd and Docker give a container that asks for none (Podman gives 11
/// of them): the bounding set runc is given; as root the effective set follows it. The posture
/// collector then writes what a node's containers hold: 14 `kernsight_container_capability`
/// series each. With `KERNSIGHT_BENCH_PRIVILEGED` set the processes keep all of the host root's (40
/// on the dev machine, whose root lacks CAP_SYS_RESOURCE), as this benchmark measured until
/// 2026-12-04: 1,000 privileged containers, 8.3 MB of a 28.9 MB body.
const RUNTIME_DEFAULT_CAPABILITIES: &str = "setpriv --bounding-set=-all,+chown,+dac_override,+fsetid,+fowner,\
    +mknod,+net_raw,+setgid,+setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,+audit_write ";

/// A container: its process, its cgroup below each root, its line in the runtime's list.
struct Sleeper {
    child: Child,
    relative: PathBuf,
    listed: String,
}

/// The container runtime the agent asks for the containers' names (`kernsight-bench-cri`): pods
/// of Deployments with names as long as a cluster's, so that every series carries its namespace,
/// pod, container and workload labels. With `KERNSIGHT_BENCH_UNNAMED` set there is none, and the
/// containers export empty labels, as this benchmark measured until 2026-12-04: a body of 19 MB
/// at 1,000 containers where named ones make 28 MB.
struct Runtime {
    process: Child,
    socket: PathBuf,
    list: PathBuf,
}

impl Runtime {
    fn start() -> Result<Option<Self>, String> {
        if std::env::var_os("KERNSIGHT_BENCH_UNNAMED").is_some() {
            return Ok(None);
        }
        let dir = workspace_root().join("target/bench-cri");
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let (socket, list) = (dir.join("cri.sock"), dir.join("containers"));
        std::fs::write(&list, "").map_err(|e| format!("cannot write {}: {e}", list.display()))?;
        let mut command = Command::new(workspace_root().join("target/release/kernsight-bench-cri"));
        command.arg(&socket).arg(&list);
        let (process, _) = start_and_wait(command, Stream::Stdout, "listening on", Duration::ZERO)?;
        Ok(Some(Self { process, socket, list }))
    }

    /// A configuration file that points the agent at this runtime.
    fn agent_config(&self) -> Result<PathBuf, String> {
        let path = workspace_root().join("target/bench-cri/agent.toml");
        let socket = self.socket.to_str().ok_or("the workspace's path is not UTF-8")?;
        std::fs::write(&path, format!("[metadata]\ncri_socket = \"{socket}\"\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Fleet {
    fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            base: PathBuf::from(format!("kernsight-bench-{}", std::process::id())),
            sleepers: Vec::new(),
            added: 0,
            listed: None,
            confinement: if std::env::var_os("KERNSIGHT_BENCH_PRIVILEGED").is_some() {
                ""
            } else {
                RUNTIME_DEFAULT_CAPABILITIES
            },
        }
    }

    /// Names the containers by the runtime that reads `list`, from now on.
    fn list_in(&mut self, list: PathBuf) -> Result<(), String> {
        self.listed = Some(list);
        self.write_list()
    }

    /// The runtime's list, replaced whole (a rename), so that it never reads half of it.
    fn write_list(&self) -> Result<(), String> {
        let Some(list) = &self.listed else { return Ok(()) };
        let text: String = self.sleepers.iter().map(|sleeper| sleeper.listed.as_str()).collect();
        let partial = list.with_extension("partial");
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, list))
            .map_err(|e| format!("cannot write {}: {e}", list.display()))
    }

    fn add(&mut self, i: usize) -> Result<(), String> {
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), i);
        // Distinct leading digits, as random runtime ids have: unnamed containers are labelled
        // by their first 12.
        let id =
            format!("{:016x}{:048x}", (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15), std::process::id());
        let relative = self.base.join("kubepods/besteffort").join(format!("pod{uid}")).join(&id);
        let mut joins = Vec::new();
        for root in &self.roots {
            let dir = root.join(&relative);
            std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            joins.push(format!("echo $$ > {}/cgroup.procs", dir.display()));
        }
        // The shell moves itself in, makes its syscalls there, and becomes the sleeping process,
        // holding what a container holds (`Fleet::confinement`).
        let script = format!("{} && exec {}sleep 600", joins.join(" && "), self.confinement);
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a process for {}: {e}", relative.display()))?;
        self.sleepers.push(Sleeper { child, relative, listed: format!("{id} {uid} {i}\n") });
        self.added += 1;
        self.write_list()
    }

    /// Ends the oldest container and removes its cgroups, and starts a new one.
    fn replace_oldest(&mut self) -> Result<(), String> {
        if !self.sleepers.is_empty() {
            let Sleeper { mut child, relative, .. } = self.sleepers.remove(0);
            let _ = child.kill();
            let _ = child.wait();
            for root in &self.roots {
                let dir = root.join(&relative);
                for level in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
                    let _ = std::fs::remove_dir(level);
                }
            }
        }
        self.add(self.added)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for Sleeper { child, .. } in &mut self.sleepers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deepest first: container, pod, then the shared parents, in every hierarchy.
        for root in &self.roots {
            for Sleeper { relative, .. } in &self.sleepers {
                let dir = root.join(relative);
                for level in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
                    let _ = std::fs::remove_dir(level);
                }
            }
            for level in ["kubepods/besteffort", "kubepods", ""] {
                let _ = std::fs::remove_dir(root.join(&self.base).join(level));
            }
        }
    }
}

/// The unified hierarchy's root, then those of the v1 memory, cpu, cpuacct and pids controllers.
/// (file system type, super options, mount point) of every mount of this process.
fn mounts() -> Vec<(String, String, PathBuf)> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut after = after.split(' ');
            let fs_type = after.next()?.to_owned();
            let options = after.nth(1)?.to_owned();
            Some((fs_type, options, PathBuf::from(before.split(' ').nth(4)?)))
        })
        .collect()
}

/// Where the cgroup v2 hierarchy is mounted (the agent's cgroup_skb programs attach to it).
pub(crate) fn cgroup2_root() -> Option<PathBuf> {
    mounts().into_iter().find(|(t, _, _)| t == "cgroup2").map(|(_, _, p)| p)
}

fn hierarchy_roots() -> Vec<PathBuf> {
    let mounts = mounts();
    let unified = mounts.iter().filter(|(t, _, _)| t == "cgroup2").map(|(_, _, p)| p.clone());
    let v1 = ["memory", "cpu", "cpuacct", "pids"].into_iter().filter_map(|controller| {
        mounts
            .iter()
            .find(|(t, options, _)| t == "cgroup" && options.split(',').any(|o| o == controller))
            .map(|(_, _, p)| p.clone())
    });
    let mut roots: Vec<PathBuf> = unified.take(1).chain(v1).collect();
    roots.dedup();
    roots
}

pub(crate) fn start_agent(command: Command) -> Result<(Child, String), String> {
    let (child, line) =
        start_and_wait(command, Stream::Stderr, "serving metrics on http://", Duration::ZERO)?;
    let address = line
        .split("serving metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or("the agent did not say where it listens")?
        .to_owned();
    Ok((child, address))
}

/// What Prometheus (2.x, and 3.x but for its protobuf format, which kernsight does not serve)
/// asks a target for: the agent answers in OpenMetrics, and the scrape times are of that body.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// The body of `GET path` in the classic text format (`Accept: */*`).
pub(crate) fn get(address: &str, path: &str) -> Result<String, String> {
    Scraper::default().get(address, path, "*/*").map(|(_, body)| body)
}

/// A scraper that times each scrape from connecting to the response's last byte, read into a
/// buffer it keeps from scrape to scrape (as Prometheus pools its buffers): what is timed is the
/// target serving, not this process growing and copying a 19 MB string on the same CPUs.
#[derive(Default)]
struct Scraper {
    response: Vec<u8>,
}

impl Scraper {
    /// `GET path` asking for `accept`: the time in ms, and the body.
    fn get(&mut self, address: &str, path: &str, accept: &str) -> Result<(f64, String), String> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(address).map_err(|e| format!("connect {address}: {e}"))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: {accept}\r\n\r\n")
            .map_err(|e| e.to_string())?;
        self.response.clear();
        stream.read_to_end(&mut self.response).map_err(|e| e.to_string())?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let response = String::from_utf8_lossy(&self.response);
        Ok((ms, response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()))
    }
}

/// The sample lines of an exposition: those neither empty nor comments.
fn sample_lines(body: &str) -> usize {
    body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count()
}
