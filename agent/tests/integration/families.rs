//! The probe families as one registry: the agent's self-metrics describe every attached family,
//! whichever others are off.

use crate::support::{Agent, config_file, parse, path_str, privileged, value};

/// The bounded map each family reports in `kernsight_bpf_map_max_entries`.
const FAMILY_MAPS: [(&str, &str); 8] = [
    ("runqueue", "RUNQ_LATENCY"),
    ("processes", "PROCESS_COUNTS"),
    ("net_cgroup", "NET_CGROUP_TRAFFIC"),
    ("tcp", "NET_TCP_EVENTS"),
    ("packet_drops", "NET_CGROUP_DROPS"),
    ("capabilities", "CAPABILITY_CHECKS"),
    ("memory_reclaim", "RECLAIM_STALLS"),
    ("block_io", "BLOCK_IO"),
];

#[test]
fn map_fill_gauges_exist_for_every_family_with_the_syscall_family_off() {
    if !privileged() {
        return;
    }
    let (_dir, config) = config_file("[syscalls]\nenabled = false\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    let samples = parse(&agent.scrape());
    assert_eq!(value(&samples, "kernsight_probe_enabled", &[("probe", "syscalls")]), 0.0);
    let is_fill = |name: &str| name == "kernsight_bpf_map_entries" || name == "kernsight_bpf_map_max_entries";
    assert!(
        !samples.iter().any(|s| is_fill(&s.name) && s.labels.get("map").is_some_and(|m| m == "SYSCALL_ROWS")),
        "the syscall family is off: no SYSCALL_ROWS fill series"
    );
    let mut checked = 0;
    for (probe, map) in FAMILY_MAPS {
        if value(&samples, "kernsight_probe_attached", &[("probe", probe)]) != 1.0 {
            eprintln!("{probe} is not attached here: its map is not expected");
            continue;
        }
        let capacity = value(&samples, "kernsight_bpf_map_max_entries", &[("map", map)]);
        assert!(capacity > 0.0, "{probe} is attached, but {map} has no kernsight_bpf_map_max_entries");
        assert!(
            samples
                .iter()
                .any(|s| s.name == "kernsight_bpf_map_entries"
                    && s.labels.get("map").is_some_and(|m| m == map)),
            "{probe} is attached, but {map} has no kernsight_bpf_map_entries"
        );
        checked += 1;
    }
    // The scheduler and capability families attach on every kernel kernsight runs on.
    assert!(checked >= 3, "only {checked} families were attached");
    assert!(samples.iter().any(|s| s.name == "kernsight_bpf_map_read_errors_total"));
}
