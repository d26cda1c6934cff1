//! `kernsight-floor HOOK...`: attaches empty programs (the `kernsight-floor` object) on the hooks
//! named, prints `attached`, and holds them until it is ended. `cargo xtask bench` runs it as the
//! floor of each hook: what any program there costs, which kernsight's own cost is compared with.
//!
//! Hooks: `sys_exit`, `sys_enter`, `sched` (`sched_switch`, `sched_wakeup`, `sched_wakeup_new`),
//! `cap_capable`, `cgroup_skb=PATH` (ingress and egress of the cgroup v2 directory `PATH`),
//! `tc=[NETNS:]IFNAME` (ingress and egress) and `xdp=[NETNS:]IFNAME`, as often as there are
//! interfaces. Interfaces get their programs the way the agent attaches its own (tcx or clsact,
//! native XDP or generic), by the agent's own code.

use std::{os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, bail};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, Xdp},
};
use kernsight::{
    bpf::net::{InterfaceAttachment, TcBackend, load_classifier, tc, xdp},
    config::TcAttachMode,
    kernel::netns::Interface,
};
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernsight-floor"));

fn main() -> anyhow::Result<()> {
    // `cargo xtask bench` ends the floor with SIGINT, which a shell's background job (`bench
    // ... &` in a script) starts ignored: the default action, to end, is taken back.
    // SAFETY: sets the default disposition, before any other thread exists.
    if let Err(error) = unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) } {
        bail!("restoring SIGINT's default action: {error}");
    }
    let hooks: Vec<String> = std::env::args().skip(1).collect();
    if hooks.is_empty() {
        bail!(
            "usage: kernsight-floor HOOK... (sys_exit, sys_enter, sched, cap_capable, cgroup_skb=PATH, tc=[NETNS:]IFNAME, xdp=[NETNS:]IFNAME)"
        );
    }
    if OBJECT.is_empty() {
        bail!("built with AYA_BUILD_SKIP: the floor object is empty");
    }
    let mut ebpf = Ebpf::load(OBJECT).context("loading the kernsight-floor object")?;
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let (mut tc_targets, mut xdp_targets) = (Vec::new(), Vec::new());
    for hook in &hooks {
        match hook.split_once('=') {
            Some(("cgroup_skb", path)) => attach_skb(&mut ebpf, Path::new(path))?,
            Some(("tc", entry)) => tc_targets.push(Interface::parse(entry).map_err(anyhow::Error::msg)?),
            Some(("xdp", entry)) => xdp_targets.push(Interface::parse(entry).map_err(anyhow::Error::msg)?),
            None if hook == "sched" => {
                for tracepoint in ["sched_switch", "sched_wakeup", "sched_wakeup_new"] {
                    attach_tracepoint(&mut ebpf, &btf, tracepoint)?;
                }
            }
            None if ["sys_exit", "sys_enter", "cap_capable"].contains(&hook.as_str()) => {
                attach_tracepoint(&mut ebpf, &btf, hook)?;
            }
            _ => bail!("unknown hook `{hook}`"),
        }
    }
    let tc_links = attach_tc(&mut ebpf, tc_targets)?;
    attach_xdp(&mut ebpf, xdp_targets)?;
    // Taken by `sigwait` below, not by the default action: the clsact filters of kernels before
    // 6.6 outlive the process, and are detached when `tc_links` is dropped.
    let mut ending = SigSet::empty();
    ending.add(Signal::SIGINT);
    ending.add(Signal::SIGTERM);
    ending.thread_block().context("blocking SIGINT and SIGTERM")?;
    println!("attached");
    ending.wait().context("waiting for SIGINT or SIGTERM")?;
    drop(tc_links);
    Ok(())
}

/// `floor_tc_ingress` and `floor_tc_egress` on every target; `None` when there is none.
fn attach_tc(ebpf: &mut Ebpf, targets: Vec<Interface>) -> anyhow::Result<Option<tc::TcLinks>> {
    if targets.is_empty() {
        return Ok(None);
    }
    let (mut ingress, mut egress) = (None, None);
    for (name, program) in ebpf.programs_mut() {
        match name {
            "floor_tc_ingress" => ingress = Some(program),
            "floor_tc_egress" => egress = Some(program),
            _ => {}
        }
    }
    let ingress = load_classifier(ingress, "floor_tc_ingress")?;
    let egress = load_classifier(egress, "floor_tc_egress")?;
    let (attachments, links) =
        tc::attach_all(ingress, egress, TcBackend::chosen(TcAttachMode::Auto), targets);
    all_attached(&attachments, "TC")?;
    Ok(Some(links))
}

/// `floor_xdp` on every target, native where the driver allows it (as the agent's).
fn attach_xdp(ebpf: &mut Ebpf, targets: Vec<Interface>) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let program: &mut Xdp =
        ebpf.program_mut("floor_xdp").context("no floor_xdp in the object")?.try_into()?;
    program.load().context("loading floor_xdp")?;
    all_attached(&xdp::attach_all(program, targets), "XDP")
}

/// A floor missing from one interface would price the others' programs against less than theirs.
fn all_attached(attachments: &[InterfaceAttachment], what: &str) -> anyhow::Result<()> {
    match attachments.iter().find_map(|a| a.error.as_ref().map(|error| (&a.target.interface, error))) {
        Some((interface, error)) => bail!("the {what} floor on {interface}: {error}"),
        None => Ok(()),
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, btf: &Btf, tracepoint: &str) -> anyhow::Result<()> {
    let name = format!("floor_{tracepoint}");
    let program: &mut BtfTracePoint =
        ebpf.program_mut(&name).with_context(|| format!("no {name} in the object"))?.try_into()?;
    program.load(tracepoint, btf).with_context(|| format!("loading {name}"))?;
    program.attach().with_context(|| format!("attaching {name}"))?;
    Ok(())
}

fn attach_skb(ebpf: &mut Ebpf, cgroup: &Path) -> anyhow::Result<()> {
    let directory = std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    let program: &mut CgroupSkb =
        ebpf.program_mut("floor_skb").context("no floor_skb in the object")?.try_into()?;
    program.load().context("loading floor_skb")?;
    for attach_type in [CgroupSkbAttachType::Ingress, CgroupSkbAttachType::Egress] {
        program
            .attach(directory.as_fd(), attach_type, CgroupAttachMode::Single)
            .with_context(|| format!("attaching floor_skb to {}", cgroup.display()))?;
    }
    Ok(())
}
