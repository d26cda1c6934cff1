//! The map memory budget on this kernel: an agent given a budget smaller than its maps would
//! take logs one line naming the bounds it lowered, loads with them instead of exiting, serves
//! `/metrics`, and the kernel charges its maps no more than the budget.

use crate::support::{
    Agent, TestCgroup, config_file, getppid_times, kernel_at_least, parse, path_str, privileged, value,
};

const BUDGET_MIB: u64 = 12;
const GETPPIDS: usize = 2_000;

/// "12.3 MiB" → bytes.
fn mebibytes(text: &str) -> Option<f64> {
    Some(text.trim().strip_suffix(" MiB")?.parse::<f64>().ok()? * (1 << 20) as f64)
}

#[test]
fn small_budget_shrinks_the_maps_logs_one_line_and_serves() {
    if !privileged() {
        return;
    }
    let _serial = crate::support::serial();
    // XDP off: attaching it in generic mode makes this kernel WARN, and it is not what is tested.
    let (_dir, config) =
        config_file(&format!("[bpf]\nmap_memory_budget_mebibytes = {BUDGET_MIB}\n[network]\nxdp = false\n"));
    let agent = Agent::start(&["--config", path_str(&config)]);

    let log = agent.log();
    let lines: Vec<&str> =
        log.lines().filter(|l| l.contains("over bpf.map_memory_budget_mebibytes = 12:")).collect();
    assert_eq!(lines.len(), 1, "one line says what the budget changed; log:\n{log}");
    let line = lines[0];
    assert!(line.contains("WARN"), "{line}");
    // "eBPF maps would take W MiB of kernel memory on N possible CPUs, over ...: shrank K a -> b,
    // ...; maps now take P MiB (...)"
    let wanted =
        line.split("would take ").nth(1).and_then(|r| r.split(" of kernel").next()).and_then(mebibytes);
    let planned = line.split("maps now take ").nth(1).and_then(|r| r.split(" (").next()).and_then(mebibytes);
    let (Some(wanted), Some(planned)) = (wanted, planned) else { panic!("unexpected line: {line}") };
    assert!(planned < wanted, "{line}");

    let cgroup = TestCgroup::create("budget");
    cgroup.run(|| {
        getppid_times(GETPPIDS);
        0
    });
    let samples = parse(&agent.scrape());
    let budget = value(&samples, "kernsight_bpf_map_budget_bytes", &[]);
    assert_eq!(budget, (BUDGET_MIB << 20) as f64);
    let planned_gauge = value(&samples, "kernsight_bpf_map_planned_bytes", &[]);
    assert!(
        (planned_gauge - planned).abs() < 0.1 * (1 << 20) as f64,
        "{planned_gauge} vs the log's {planned}"
    );
    // What the kernel charged for the maps, from fdinfo. From 6.4 fdinfo's memlock is the
    // kernel's own accounting (`map_mem_usage`), which the plan follows: within 2% of the plan,
    // and within the budget when the plan fits it. Older kernels (the matrix guests) report an
    // estimate of their own: less than the unshrunk plan all the same.
    let charged: f64 =
        samples.iter().filter(|s| s.name == "kernsight_bpf_map_memory_bytes").map(|s| s.value).sum();
    assert!(charged < wanted, "charged {charged} bytes, the unshrunk plan was {wanted}");
    if kernel_at_least(6, 4) {
        let off = (charged - planned_gauge).abs();
        assert!(off < 0.02 * planned_gauge, "charged {charged}, planned {planned_gauge}");
        if line.contains(": shrank ") {
            assert!(charged <= budget * 1.02, "charged {charged} bytes over a budget of {budget}");
        }
    }
    // Every lowered bound is in the line and exported as the value the agent runs with.
    let shrunk: Vec<_> =
        samples.iter().filter(|s| s.name == "kernsight_bpf_map_budget_shrunk_bound").collect();
    assert!(!shrunk.is_empty(), "no bound exported as lowered");
    for sample in shrunk {
        let key = &sample.labels["key"];
        assert!(
            line.contains(&format!("{key} ")) && line.contains(&format!("-> {}", sample.value)),
            "{key}: {line}"
        );
    }
    // The latency hash (latency off) is created with one entry: no memory to speak of.
    let latency = value(&samples, "kernsight_bpf_map_memory_bytes", &[("map", "SYSCALL_LATENCY")]);
    assert!(latency < 4096.0 * 8.0, "SYSCALL_LATENCY takes {latency} bytes with latency off");
    // And it counts as before, within its smaller bounds.
    let calls = value(
        &samples,
        "kernsight_syscalls_total",
        &[("cgroup", cgroup.label.as_str()), ("syscall", "getppid")],
    );
    assert_eq!(calls, GETPPIDS as f64, "getppid in {}; log:\n{log}", cgroup.label);
}
