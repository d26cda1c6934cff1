//! `cargo xtask bench net`: what the network programs cost per packet.
//!
//! Two network namespaces joined by a veth pair (created for the run, removed after): a sender
//! in one (pinned to CPU 1) floods UDP datagrams of 64 bytes to a receiver in the other (pinned
//! to CPU 0). veth hands each packet to the receive softirq on the sending CPU, which runs it
//! when the send re-enables bottom halves, in the sender's context: the sender's own CPU time
//! (`/proc/thread-self/schedstat`, ns; this kernel has no IRQ time accounting, so softirq time
//! is charged to the task it interrupted) is the cost of each packet's path through egress,
//! veth, XDP, IP, UDP and ingress, without the time other processes of a shared machine take.
//! The wall-clock rate is printed too. It runs bare, then with the agent's network programs in
//! several configurations (other families off); rounds are interleaved so that drift on the
//! machine spreads over every configuration alike. Sender and receiver run in a cgroup of the
//! run's own, and with an agent a short flood and two of its maintenance passes come first, so
//! that the timed flood is that of a workload holding its traffic slot, as a pod that has run a
//! while does.

use std::{
    net::UdpSocket,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    bench::{agent_command, median, stop},
    process::output,
    report::Row,
};

const PACKETS: u64 = 200_000;
const PAYLOAD: usize = 64;
const ROUNDS: usize = 7;
/// Rounds of the floods timed by the kernel's account (it varies little between them).
const PRICED_ROUNDS: usize = 3;
const PORT: u16 = 9191;

/// (name, `[network]` keys beyond the interfaces, then any further sections; `None`: no
/// agent). Other families are off. The flood is not DNS: the `dns` rows measure what its
/// programs cost every other packet.
const CONFIGS: &[(&str, Option<&str>)] = &[
    ("bare (nothing attached)", None),
    ("kernsight: cgroup_skb only", Some("interface_counters = \"off\"\n[dns]\nenabled = false\n")),
    (
        "kernsight: XDP only (both veth ends)",
        Some("interface_counters = \"xdp\"\ncgroup_traffic = false\n[dns]\nenabled = false\n"),
    ),
    ("kernsight: XDP + cgroup_skb", Some("interface_counters = \"xdp\"\n[dns]\nenabled = false\n")),
    (
        "kernsight: TC only (both veth ends, ingress and egress)",
        Some("cgroup_traffic = false\n[dns]\nenabled = false\n"),
    ),
    ("kernsight: TC + cgroup_skb", Some("[dns]\nenabled = false\n")),
    (
        "kernsight: DNS only (cgroup_skb, non-DNS traffic)",
        Some("interface_counters = \"off\"\ncgroup_traffic = false\n"),
    ),
    ("kernsight: cgroup_skb + DNS (one program a direction)", Some("interface_counters = \"off\"\n")),
    ("kernsight: TC + cgroup_skb + DNS (the default)", Some("")),
];

/// The floors: an empty program on each hook the configurations use, attached as the agent
/// attaches its own (`kernsight-floor`), by name, with the configuration each is the floor of.
const FLOORS: [(&str, usize); 3] = [
    ("floor: empty cgroup_skb program", 1),
    ("floor: empty TC programs (both veth ends, ingress and egress)", 4),
    ("floor: empty XDP program (both veth ends)", 2),
];

/// Datagrams a workload sends before it is timed: its cgroup is then in the traffic hash, where
/// the agent's next maintenance pass (every second here: `forget_after_seconds = 1`) finds it
/// and gives it its slot, as a node's long-running workloads hold theirs.
const WARM_UP_PACKETS: u64 = 2_000;
/// Two maintenance passes.
const SLOT_GIVEN_AFTER: Duration = Duration::from_millis(2_500);

/// The agent's other families, off: only the network programs are measured.
const OTHERS_OFF: &str = "[syscalls]\nenabled = false\nforget_after_seconds = 1\n[sched]\nrunqueue_latency = false\nprocesses = false\n\
     [memory]\nreclaim_stalls = false\n[block_io]\nenabled = false\n[security]\ncapability_checks = false\n";

/// The run's two network namespaces, joined by a veth pair, and its cgroup v2, which the sender
/// and the receiver join (`in_netns`): traffic of one workload that holds its slot, as a pod
/// does, not of the shell's cgroup. Removed when dropped.
struct Pair {
    a: String,
    b: String,
    cgroup: PathBuf,
}

impl Pair {
    fn create() -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let root = crate::scrape_bench::cgroup2_root().ok_or("no cgroup v2 hierarchy is mounted")?;
        let cgroup = root.join(format!("kernsight-bench-net-{}", std::process::id()));
        std::fs::create_dir(&cgroup).map_err(|e| format!("cannot create {}: {e}", cgroup.display()))?;
        let pair = Self { a: format!("ksbench{tag}a"), b: format!("ksbench{tag}b"), cgroup };
        let ip = |args: &[&str]| -> Result<(), String> {
            output(Command::new("ip").args(args))
                .map(drop)
                .ok_or_else(|| format!("ip {} failed", args.join(" ")))
        };
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        // Indexes of their own: in two new namespaces both ends would get index 2, and the agent
        // watches one interface per index (its counters are keyed by it).
        ip(&[
            "link", "add", "ksbench0", "index", "4200", "netns", &pair.a, "type", "veth", "peer", "name",
            "ksbench1", "index", "4201", "netns", &pair.b,
        ])?;
        ip(&["-n", &pair.a, "addr", "add", "10.98.0.1/24", "dev", "ksbench0"])?;
        ip(&["-n", &pair.b, "addr", "add", "10.98.0.2/24", "dev", "ksbench1"])?;
        for (ns, dev) in [(&pair.a, "ksbench0"), (&pair.b, "ksbench1"), (&pair.a, "lo"), (&pair.b, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // Its processes have exited by now; a cgroup without processes can be removed.
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

pub fn run() -> Result<Vec<Row>, String> {
    let pair = Pair::create()?;
    let dir = std::env::temp_dir().join(format!("kernsight-bench-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let interfaces = format!("interfaces = [\"{}:ksbench0\", \"{}:ksbench1\"]\n", pair.a, pair.b);
    let files: Vec<Option<PathBuf>> = CONFIGS
        .iter()
        .enumerate()
        .map(|(i, (_, network))| {
            network
                .map(|keys| {
                    let path = dir.join(format!("config{i}.toml"));
                    let text =
                        format!("{OTHERS_OFF}[network]\ntcp = false\ndrops = false\n{interfaces}{keys}");
                    std::fs::write(&path, text).map(|()| path)
                })
                .transpose()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot write a config file: {e}"))?;
    println!(
        "UDP flood through a veth pair (sender on CPU 1, receiver on CPU 0): {PACKETS} datagrams of {PAYLOAD} bytes \
         per run, {ROUNDS} rounds, interleaved\n"
    );
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); CONFIGS.len()];
    let mut floors: Vec<Vec<f64>> = vec![Vec::new(); FLOORS.len()];
    let root = crate::scrape_bench::cgroup2_root().ok_or("no cgroup v2 hierarchy is mounted")?;
    // The same hooks as the agent's programs: the cgroup v2 root, and both veth ends.
    let ends =
        |hook: &str| vec![format!("{hook}={}:ksbench0", pair.a), format!("{hook}={}:ksbench1", pair.b)];
    let floor_hooks: [Vec<String>; 3] =
        [vec![format!("cgroup_skb={}", root.display())], ends("tc"), ends("xdp")];
    let result = (|| {
        for round in 1..=ROUNDS {
            for (((name, _), file), samples) in CONFIGS.iter().zip(&files).zip(&mut samples) {
                let (cpu, wall, delivered) = measure(&pair, file.as_ref())?;
                eprintln!(
                    "round {round}/{ROUNDS}: {name:<40} {cpu:8.1} ns CPU/packet, {:4.0} kpps wall, {delivered} delivered",
                    1e6 / wall
                );
                samples.push((cpu, wall));
            }
            for (((name, _), hooks), samples) in FLOORS.iter().zip(&floor_hooks).zip(&mut floors) {
                let mut attached = start_floor(hooks)?;
                let flooded = flood(&pair, PACKETS);
                stop(&mut attached);
                let (cpu, _, _) = flooded?;
                eprintln!("round {round}/{ROUNDS}: {name:<40} {cpu:8.1} ns CPU/packet");
                samples.push(cpu);
            }
        }
        Ok::<(), String>(())
    })();
    let priced = result.and_then(|()| program_costs(&pair, &files, &floor_hooks));
    let _ = std::fs::remove_dir_all(&dir);
    let priced = priced?;

    let cpu: Vec<Vec<f64>> = samples.iter().map(|s| s.iter().map(|(c, _)| *c).collect()).collect();
    let wall: Vec<Vec<f64>> = samples.iter().map(|s| s.iter().map(|(_, w)| *w).collect()).collect();
    let bare = median(&cpu[0]);
    println!(
        "\n{:<40} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "configuration", "CPU/packet", "min", "max", "added", "wall kpps"
    );
    for (((name, _), cpu), wall) in CONFIGS.iter().zip(&cpu).zip(&wall) {
        let median_cpu = median(cpu);
        let min = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let max = cpu.iter().copied().fold(0.0, f64::max);
        println!(
            "{name:<40} {median_cpu:10.1}ns {min:8.1}ns {max:8.1}ns {:+9.1}ns {:12.0}",
            median_cpu - bare,
            1e6 / median(wall)
        );
    }
    println!("\n(medians of {ROUNDS} rounds; `added`: CPU time per packet over the bare run)");
    println!(
        "\nthe kernel's own account (kernel.bpf_stats_enabled; its two clock reads per run included), \
         {PRICED_ROUNDS} more floods each: ns per packet, all programs, median; then ns per run of each program:"
    );
    let names: Vec<&str> =
        CONFIGS.iter().map(|(name, _)| *name).chain(FLOORS.map(|(name, _)| name)).collect();
    for (name, priced) in names.iter().zip(&priced).skip(1) {
        let list: Vec<String> =
            priced.per_run.iter().map(|(program, ns)| format!("{program} {ns:.0}")).collect();
        println!("  {name:<56} {:6.1} ns  ({})", median(&priced.per_packet), list.join(", "));
    }
    // Per round, next to the bare run of the same round.
    let added = |config: usize| cpu[config].iter().zip(&cpu[0]).map(|(c, bare)| c - bare).collect();
    let mut rows = vec![Row::new("net: sender CPU per packet, bare", "ns", cpu[0].clone())];
    for (index, (name, _)) in CONFIGS.iter().enumerate().skip(1) {
        rows.push(Row::new(format!("net: added per packet, {name}"), "ns", added(index)));
    }
    for ((name, _), floor) in FLOORS.iter().zip(&floors) {
        let floor_added: Vec<f64> = floor.iter().zip(&cpu[0]).map(|(f, bare)| f - bare).collect();
        println!("{name}: {:+.1} ns CPU per packet over the bare run", median(&floor_added));
        rows.push(Row::new(format!("net: added per packet, {name}"), "ns", floor_added));
    }
    for (name, priced) in names.iter().zip(&priced).skip(1) {
        rows.push(Row::new(
            format!("net, kernel's account per packet: {name}"),
            "ns",
            priced.per_packet.clone(),
        ));
    }
    for (index, (name, config)) in FLOORS.iter().enumerate() {
        let (of, to) = (&priced[*config].per_packet, &priced[CONFIGS.len() + index].per_packet);
        let of_name = CONFIGS[*config].0.trim_start_matches("kernsight: ");
        let to_name = name.trim_start_matches("floor: ");
        rows.push(Row::new(
            format!("net, kernel's account: {of_name} / {to_name}"),
            "x",
            crate::report::ratios(of, to),
        ));
    }
    Ok(rows)
}

/// Starts the agent with `config` (if any), times one flood, stops the agent. Returns the
/// sender's CPU and wall ns per packet and how many packets the receiver got.
fn measure(pair: &Pair, config: Option<&PathBuf>) -> Result<(f64, f64, u64), String> {
    let mut agent = match config {
        None => None,
        Some(file) => {
            let mut command = agent_command();
            command.arg("--config").arg(file);
            Some(crate::bench::start_settled_agent(command)?)
        }
    };
    let result = warm_up(pair, agent.is_some()).and_then(|()| flood(pair, PACKETS));
    if let Some(child) = agent.as_mut() {
        stop(child);
    }
    result
}

/// What the kernel accounted for one configuration's programs over a flood.
#[derive(Default)]
struct Priced {
    /// Each round's ns per packet, all the configuration's programs together.
    per_packet: Vec<f64>,
    /// The last round's ns per run of each program.
    per_run: Vec<(String, f64)>,
}

/// Rounds of one more flood per configuration, and one with each floor on its hooks
/// (`floor_hooks`, as `FLOORS`), with the kernel's run-time accounting of BPF programs on
/// (restored after): for each configuration (none for the bare one), then each floor, what its
/// programs cost per packet and per run (the empty programs' figure is what the accounting
/// itself costs per run).
fn program_costs(
    pair: &Pair,
    files: &[Option<PathBuf>],
    floor_hooks: &[Vec<String>],
) -> Result<Vec<Priced>, String> {
    let _accounting = crate::program_stats::Accounting::on()?;
    let while_attached = |attached: Result<Child, String>, agent: bool, priced: &mut Priced| {
        let mut attached = attached?;
        let before = warm_up(pair, agent).and_then(|()| crate::program_stats::read());
        let flooded = before.and_then(|before| {
            let flooded = flood(pair, PACKETS)?;
            Ok((before, flooded))
        });
        let after = crate::program_stats::read();
        stop(&mut attached);
        let (before, _) = flooded?;
        let programs = crate::program_stats::since(&before, after?);
        on_the_flood_path(&programs)?;
        priced.per_run =
            programs.iter().map(|program| (program.name.clone(), program.ns_per_run())).collect();
        priced.per_packet.push(programs.iter().map(|program| program.time_ns).sum::<f64>() / PACKETS as f64);
        Ok::<(), String>(())
    };
    let mut priced: Vec<Priced> =
        std::iter::repeat_with(Priced::default).take(files.len() + floor_hooks.len()).collect();
    for _ in 0..PRICED_ROUNDS {
        for (file, priced) in files.iter().zip(&mut priced) {
            let Some(file) = file else { continue };
            let mut command = agent_command();
            command.arg("--config").arg(file);
            while_attached(crate::bench::start_settled_agent(command), true, priced)?;
        }
        for (hooks, floor) in floor_hooks.iter().zip(&mut priced[files.len()..]) {
            while_attached(start_floor(hooks), false, floor)?;
        }
    }
    Ok(priced)
}

/// Checks that the programs that ran are the flood's: each ran for at least half the packets, as
/// a program on an unwatched interface or on the wrong side of the veth pair would not (it runs
/// a handful of times). Half, not all: the receiving end may drop packets before its programs
/// when its CPU falls behind (one round of these runs delivered 85 % of the flood).
fn on_the_flood_path(programs: &[crate::program_stats::Program]) -> Result<(), String> {
    if programs.is_empty() {
        return Err("no program ran during the flood".into());
    }
    match programs.iter().find(|program| program.runs < PACKETS as f64 / 2.0) {
        Some(program) => Err(format!(
            "{} ran {} times for {PACKETS} packets: it is not on the flood's path (an interface not watched?)",
            program.name, program.runs
        )),
        None => Ok(()),
    }
}

/// xtask's own binary run in the run's cgroup and namespace `ns`, pinned to `cpu` when
/// `taskset` is there. A shell joins the cgroup and then becomes `ip`: `ip netns exec` mounts a
/// sysfs of the namespace's own, where the host's cgroup tree is not.
fn in_netns(pair: &Pair, ns: &str, cpu: &str, args: &[&str]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"))?;
    let mut command = Command::new("sh");
    command.args(["-c", "echo 0 > \"$0/cgroup.procs\" && exec ip \"$@\""]).arg(&pair.cgroup);
    command.args(["netns", "exec", ns]);
    if output(Command::new("taskset").arg("-V")).is_some() {
        command.args(["taskset", "-c", cpu]);
    }
    command.arg(exe).args(args);
    Ok(command)
}

fn start_floor(hooks: &[String]) -> Result<Child, String> {
    crate::bench::start_floor(&hooks.iter().map(String::as_str).collect::<Vec<_>>())
}

/// With an agent: a short flood, then the time its maintenance takes to give the workload's
/// cgroup its slot.
fn warm_up(pair: &Pair, agent: bool) -> Result<(), String> {
    if agent {
        flood(pair, WARM_UP_PACKETS)?;
        std::thread::sleep(SLOT_GIVEN_AFTER);
    }
    Ok(())
}

fn flood(pair: &Pair, packets: u64) -> Result<(f64, f64, u64), String> {
    let sink: Child = in_netns(pair, &pair.b, "0", &["__udp-sink", &PORT.to_string()])?
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the receiver: {e}"))?;
    // Let it bind before the first datagram.
    std::thread::sleep(Duration::from_millis(300));
    let sent = output(&mut in_netns(
        pair,
        &pair.a,
        "1",
        &["__udp-send", "10.98.0.2", &PORT.to_string(), &packets.to_string()],
    )?);
    let received = sink.wait_with_output().map_err(|e| format!("receiver: {e}"))?;
    let sent = sent.ok_or("the sender failed")?;
    let numbers: Vec<f64> = sent.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let [cpu, wall] = numbers[..] else {
        return Err(format!("the sender printed `{}`, not CPU and wall ns", sent.trim()));
    };
    let delivered = String::from_utf8_lossy(&received.stdout).trim().parse().unwrap_or(0);
    Ok((cpu, wall, delivered))
}

/// This thread's CPU time so far, in ns (the first field of its schedstat).
fn cpu_time_ns() -> Result<u64, String> {
    let text =
        std::fs::read_to_string("/proc/thread-self/schedstat").map_err(|e| format!("schedstat: {e}"))?;
    text.split_whitespace().next().and_then(|n| n.parse().ok()).ok_or_else(|| format!("schedstat: `{text}`"))
}

/// `__udp-send ADDR PORT COUNT`: COUNT datagrams of 64 bytes; prints CPU and wall ns per
/// datagram.
pub fn udp_send(args: &[String]) -> Result<(), String> {
    let [addr, port, count] = args else {
        return Err("usage: __udp-send ADDR PORT COUNT".into());
    };
    let count: u64 = count.parse().map_err(|e| format!("count: {e}"))?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket.connect(format!("{addr}:{port}")).map_err(|e| format!("connect: {e}"))?;
    let payload = [0x42u8; PAYLOAD];
    let cpu_before = cpu_time_ns()?;
    let started = Instant::now();
    for _ in 0..count {
        // A full receive queue on the far side is not an error of the send.
        let _ = socket.send(&payload);
    }
    let wall = started.elapsed().as_nanos() as f64;
    let cpu = cpu_time_ns()?.saturating_sub(cpu_before) as f64;
    println!("{:.2} {:.2}", cpu / count as f64, wall / count as f64);
    Ok(())
}

/// `__udp-sink PORT`: counts datagrams until none came for 500 ms; prints the count.
pub fn udp_sink(args: &[String]) -> Result<(), String> {
    let [port] = args else {
        return Err("usage: __udp-sink PORT".into());
    };
    let socket = UdpSocket::bind(format!("0.0.0.0:{port}")).map_err(|e| format!("bind: {e}"))?;
    // Wait up to 10 s for the first datagram, then 500 ms after each.
    socket.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 2048];
    let mut received = 0u64;
    while socket.recv(&mut buffer).is_ok() {
        received += 1;
        if received == 1 {
            socket.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
        }
    }
    println!("{received}");
    Ok(())
}
