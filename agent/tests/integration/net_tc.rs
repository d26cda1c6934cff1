//! The TC interface counters (`net_tc`, the default): an agent with the default configuration
//! leaves no kernel warning and no taint behind; a known flow between two network namespaces
//! the test creates is counted on ingress and egress, through tcx links and through clsact
//! filters; the clsact qdisc is removed at exit only when the agent added it.

use crate::{
    net_support::{A_ADDR, B_ADDR, Link, NsFile, udp_bound, udp_receive, udp_send},
    support::{self, Agent, TestCgroup, config_file, parse, path_str, privileged, value},
};

/// Ethernet, IPv4 and UDP headers: a UDP frame's bytes on top of its payload.
pub(crate) const FRAME_HEADERS: u64 = 14 + 20 + 8;

/// The kernel log's lines (`dmesg`), and `/proc/sys/kernel/tainted`.
fn kernel_state() -> (Vec<String>, String) {
    let output = std::process::Command::new("dmesg").output().expect("dmesg runs");
    assert!(output.status.success(), "dmesg: {}", String::from_utf8_lossy(&output.stderr));
    let log = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    let tainted = std::fs::read_to_string("/proc/sys/kernel/tainted").expect("reading the taint flags");
    (log, tainted.trim().to_owned())
}

#[test]
fn the_default_configuration_makes_no_kernel_warning_and_no_taint() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (log_before, tainted_before) = kernel_state();
    // No --config: the embedded default, as a node runs it (maps pinned in a test directory).
    let agent = Agent::start(&[]);
    let samples = parse(&agent.scrape());
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "net_tc")]), 1.0, "{}", agent.log());
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "net_xdp")]), 0.0, "XDP is opt-in");
    let watched = samples.iter().filter(|s| s.name == "kernsight_interface_tc_info").count();
    assert!(watched > 0, "the default route's interfaces are watched:\n{}", agent.log());
    assert!(agent.stop().success(), "clean exit on SIGTERM");

    let (log_after, tainted_after) = kernel_state();
    let new_warnings: Vec<&String> =
        log_after.iter().filter(|line| line.contains("WARNING:") && !log_before.contains(line)).collect();
    eprintln!("tainted {tainted_before} -> {tainted_after}; new WARNING lines: {}", new_warnings.len());
    assert!(
        new_warnings.is_empty(),
        "the kernel warned while the agent started and stopped: {new_warnings:#?}"
    );
    assert_eq!(tainted_after, tainted_before, "/proc/sys/kernel/tainted changed");
}

/// Sends `n` UDP datagrams from a to b and `m` from b to a, from a process in a test cgroup.
pub(crate) fn exchange(link: &Link, n: usize, m: usize, payload: usize) {
    const PORT: u16 = 4545;
    let cgroup = TestCgroup::create("net-tc");
    let (a, b) = (NsFile::of(&link.a), NsFile::of(&link.b));
    let code = cgroup.run(|| {
        if !b.enter() {
            return 2;
        }
        let in_b = udp_bound(B_ADDR, PORT);
        if in_b < 0 || !a.enter() {
            return 3;
        }
        let in_a = udp_bound(A_ADDR, PORT);
        if in_a < 0 || udp_send(in_a, B_ADDR, PORT, n, payload) != n || udp_receive(in_b, n) != n {
            return 4;
        }
        if udp_send(in_b, A_ADDR, PORT, m, payload) != m || udp_receive(in_a, m) != m {
            return 5;
        }
        0
    });
    assert_eq!(code, 0, "the workload failed (2-3: namespaces, 4: a to b, 5: b to a)");
}

/// Watches `link`'s b side with TC attached as `tc_attach`, exchanges a known flow and checks
/// both directions' counters.
fn counts_both_directions(tc_attach: &str) {
    let _serial = support::serial();
    let link = Link::create();
    let text = format!("[network]\ninterfaces = [{:?}]\ntc_attach = {tc_attach:?}\n", link.b_xdp_entry());
    let (_dir, path) = config_file(&text);
    let agent = Agent::start(&["--config", path_str(&path)]);
    const N: usize = 40;
    const M: usize = 25;
    const PAYLOAD: usize = 300;
    exchange(&link, N, M, PAYLOAD);

    let samples = parse(&agent.scrape());
    let on_b = |protocol| {
        [("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("protocol", protocol)]
    };
    let received = value(&samples, "kernsight_interface_packets_total", &on_b("ipv4_udp"));
    let received_bytes = value(&samples, "kernsight_interface_bytes_total", &on_b("ipv4_udp"));
    let sent = value(&samples, "kernsight_interface_transmit_packets_total", &on_b("ipv4_udp"));
    let sent_bytes = value(&samples, "kernsight_interface_transmit_bytes_total", &on_b("ipv4_udp"));
    let malformed = value(&samples, "kernsight_interface_packets_total", &on_b("malformed"))
        + value(&samples, "kernsight_interface_transmit_packets_total", &on_b("malformed"));
    eprintln!(
        "{tc_attach} on {}: received {received} UDP frames / {received_bytes} bytes, sent {sent} / {sent_bytes}",
        link.b_if
    );
    let frame = FRAME_HEADERS + PAYLOAD as u64;
    // The namespaces are the test's own (IPv6 off): nothing else sends UDP there.
    assert_eq!(received as u64, N as u64, "UDP frames arriving on {} (ingress)", link.b_if);
    assert_eq!(received_bytes as u64, N as u64 * frame, "their bytes, Ethernet header included");
    assert_eq!(sent as u64, M as u64, "UDP frames leaving {} (egress)", link.b_if);
    assert_eq!(sent_bytes as u64, M as u64 * frame);
    assert_eq!(malformed, 0.0, "well-formed frames classified as malformed");
    let mode = if tc_attach == "clsact" { "clsact" } else { "tcx" };
    let info = [("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("mode", mode)];
    assert_eq!(value(&samples, "kernsight_interface_tc_info", &info), 1.0, "the mode is reported");
    assert!(agent.log().contains("TC counters attached"), "the attachment is logged");
}

#[test]
fn tcx_counts_a_known_flow_on_ingress_and_egress() {
    if !privileged() {
        return;
    }
    counts_both_directions("tcx");
}

#[test]
fn clsact_counts_a_known_flow_on_ingress_and_egress() {
    if !privileged() {
        return;
    }
    counts_both_directions("clsact");
}

/// Whether `b_if` has a clsact qdisc.
fn has_clsact(link: &Link) -> bool {
    link.b.exec(&["tc", "qdisc", "show", "dev", &link.b_if]).contains("clsact")
}

#[test]
fn the_clsact_qdisc_is_removed_at_exit_only_when_the_agent_added_it() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    for (already_there, what) in [(false, "added by the agent"), (true, "there before the agent")] {
        let link = Link::create();
        if already_there {
            link.b.exec(&["tc", "qdisc", "add", "dev", &link.b_if, "clsact"]);
        }
        let text = format!("[network]\ninterfaces = [{:?}]\ntc_attach = \"clsact\"\n", link.b_xdp_entry());
        let (_dir, path) = config_file(&text);
        let agent = Agent::start(&["--config", path_str(&path)]);
        assert!(has_clsact(&link), "clsact on {} while the agent runs", link.b_if);
        let filters = |hook: &str| link.b.exec(&["tc", "filter", "show", "dev", &link.b_if, hook]);
        assert!(filters("ingress").contains("ks_net_tc_ingres"), "{}", filters("ingress"));
        assert!(filters("egress").contains("ks_net_tc_egress"), "{}", filters("egress"));
        assert!(agent.stop().success(), "clean exit on SIGTERM");
        assert!(!filters("ingress").contains("ks_net_tc"), "the agent's filters are gone");
        assert!(!filters("egress").contains("ks_net_tc"), "the agent's filters are gone");
        assert_eq!(has_clsact(&link), already_there, "a clsact qdisc {what}, after the agent stopped");
    }
}

#[test]
fn a_clsact_qdisc_the_agent_added_stays_when_another_filter_was_attached_to_it() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let link = Link::create();
    let text = format!("[network]\ninterfaces = [{:?}]\ntc_attach = \"clsact\"\n", link.b_xdp_entry());
    let (_dir, path) = config_file(&text);
    let agent = Agent::start(&["--config", path_str(&path)]);
    // Another tool's filter, added after the agent made the qdisc (u32 matching everything,
    // with no action: a classifier the kernels here have built in).
    link.b.exec(&[
        "tc", "filter", "add", "dev", &link.b_if, "ingress", "protocol", "all", "u32", "match", "u32", "0",
        "0",
    ]);
    assert!(agent.stop().success(), "clean exit on SIGTERM");
    assert!(has_clsact(&link), "the qdisc holds another filter: kept");
    let left = link.b.exec(&["tc", "filter", "show", "dev", &link.b_if, "ingress"]);
    assert!(left.contains("u32") && !left.contains("ks_net_tc"), "{left}");
}

#[test]
fn filters_of_a_killed_agent_are_replaced_not_doubled() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let link = Link::create();
    let text = format!("[network]\ninterfaces = [{:?}]\ntc_attach = \"clsact\"\n", link.b_xdp_entry());
    let (_dir, path) = config_file(&text);
    let ours = |hook: &str| {
        let filters = link.b.exec(&["tc", "filter", "show", "dev", &link.b_if, hook]);
        filters.lines().filter(|line| line.contains("ks_net_tc")).count()
    };
    // SIGKILL: no Drop runs, and a clsact filter (unlike a tcx link) outlives its process.
    Agent::start(&["--config", path_str(&path)]).kill();
    assert_eq!((ours("ingress"), ours("egress")), (1, 1), "the killed agent's filters stay");
    let agent = Agent::start(&["--config", path_str(&path)]);
    assert_eq!((ours("ingress"), ours("egress")), (1, 1), "replaced, not added to");
    assert!(agent.log().contains("left by an earlier kernsight"), "and said:\n{}", agent.log());
    const N: usize = 12;
    exchange(&link, N, N, 100);
    let samples = parse(&agent.scrape());
    let on_b = [("interface", link.b_if.as_str()), ("netns", link.b.name.as_str()), ("protocol", "ipv4_udp")];
    assert_eq!(value(&samples, "kernsight_interface_packets_total", &on_b), N as f64);
    assert_eq!(value(&samples, "kernsight_interface_transmit_packets_total", &on_b), N as f64);
    assert!(agent.stop().success());
    assert_eq!((ours("ingress"), ours("egress")), (0, 0), "and removed at exit");
}
