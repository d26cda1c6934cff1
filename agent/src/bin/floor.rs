//! `kernsight-floor HOOK...`: attaches empty programs (the `kernsight-floor` object) on the hooks
//! named, prints `attached`, and holds them until it is ended. `cargo xtask bench` runs it as the
//! floor of each hook: what any program there costs, which kernsight's own cost is compared with.
//!
//! Hooks: `sys_exit`, `sys_enter`, `sched` (`sched_switch`, `sched_wakeup`, `sched_wakeup_new`),
//! `cap_capable`, `cgroup_skb=PATH` (ingress and egress of the cgroup v2 directory `PATH`).

use std::{os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, bail};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use nix::sys::signal::{SigHandler, Signal, signal};

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
        bail!("usage: kernsight-floor HOOK... (sys_exit, sys_enter, sched, cap_capable, cgroup_skb=PATH)");
    }
    if OBJECT.is_empty() {
        bail!("built with AYA_BUILD_SKIP: the floor object is empty");
    }
    let mut ebpf = Ebpf::load(OBJECT).context("loading the kernsight-floor object")?;
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    for hook in &hooks {
        match hook.split_once('=') {
            Some(("cgroup_skb", path)) => attach_skb(&mut ebpf, Path::new(path))?,
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
    println!("attached");
    loop {
        std::thread::park(); // until a signal ends the process, which detaches the programs
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
