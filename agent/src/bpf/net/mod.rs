//! The network families and their maps: `net_cgroup` (`ks_net_ingress`, `ks_net_egress`:
//! cgroup_skb on the cgroup v2 root; `ks_net_dns_ingress`, `ks_net_dns_egress` when `dns` runs
//! too), `net_tc` (`ks_net_tc_ingress`, `ks_net_tc_egress` on the
//! watched interfaces, the default), `net_xdp` (`ks_net_xdp` there instead, when configured),
//! `tcp` (state changes, retransmissions, resets) and `packet_drops` (`skb:kfree_skb`).

mod families;
mod interface_slots;
// Public for the `kernsight-floor` binary, which attaches its empty programs the same way.
pub mod tc;
mod traffic_slots;
pub mod xdp;

use std::{os::fd::AsFd as _, path::PathBuf};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, Xdp},
};
pub(crate) use families::needs_net_admin;
pub use families::{
    CgroupTraffic, CgroupTrafficMaps, DropMaps, Drops, InterfaceMaps, Interfaces, TcInterfaceMaps,
    TcInterfaces, Tcp, TcpMaps,
};
pub use interface_slots::InterfaceSlots;
use kernsight_common::net::Traffic;
pub use tc::TcBackend;

use super::{facts::KernelFacts, family::Family};
use crate::{
    config::Config,
    kernel::{btf, netns::Interface},
};

/// How an interface is watched, by TC or XDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAttachment {
    pub target: Interface,
    pub ifindex: u32,
    /// "tcx" or "clsact" for TC, "native" or "generic" for XDP; "failed" when it could not be
    /// attached.
    pub mode: &'static str,
    pub error: Option<String>,
}

impl InterfaceAttachment {
    /// One log line: where `what` was attached and how, or why not.
    fn log(&self, what: &str) {
        match &self.error {
            None => tracing::info!(
                interface = self.target.interface,
                netns = self.target.netns,
                ifindex = self.ifindex,
                mode = self.mode,
                "{what} attached"
            ),
            Some(why) => tracing::error!(
                interface = self.target.interface,
                netns = self.target.netns,
                "{what} not attached: {why}"
            ),
        }
    }
}

pub const CGROUP_PROBE: &str = "net_cgroup";
pub const XDP_PROBE: &str = "net_xdp";
pub const TC_PROBE: &str = "net_tc";
pub const TCP_PROBE: &str = "tcp";
pub const DROPS_PROBE: &str = "packet_drops";
const CGROUP_PROGRAMS: [&str; 2] = ["ks_net_ingress", "ks_net_egress"];
pub(crate) const TRAFFIC_AND_DNS_PROGRAMS: [&str; 2] = ["ks_net_dns_ingress", "ks_net_dns_egress"];
const XDP_PROGRAM: &str = "ks_net_xdp";
const TC_PROGRAMS: [&str; 2] = ["ks_net_tc_ingress", "ks_net_tc_egress"];
const TCP_PROGRAMS: [(&str, &str); 4] = [
    ("ks_tcp_set_state", "inet_sock_set_state"),
    ("ks_tcp_retransmit", "tcp_retransmit_skb"),
    ("ks_tcp_send_reset", "tcp_send_reset"),
    ("ks_tcp_receive_reset", "tcp_receive_reset"),
];
const DROP_PROGRAMS: [(&str, &str); 1] = [("ks_kfree_skb", "kfree_skb")];

/// Socket and packet members the TCP and drop programs read, from the running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct SockOffsets {
    pub cgrp_data: u32,
    pub cgrp_data_cgroup: u32,
    pub state: u32,
    pub protocol: u32,
    pub skb_sk: u32,
    pub skb_tcp_gso_segs: u32,
}

impl SockOffsets {
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
        Ok(Self {
            cgrp_data: btf.member_offset("sock", "sk_cgrp_data")?,
            cgrp_data_cgroup: btf.member_offset("sock_cgroup_data", "cgroup")?,
            state: btf.member_offset("sock", "__sk_common")?
                + btf.member_offset("sock_common", "skc_state")?,
            protocol: btf.member_offset("sock", "sk_protocol")?,
            skb_sk: btf.member_offset("sk_buff", "sk")?,
            skb_tcp_gso_segs: btf.member_offset("sk_buff", "cb")?
                + btf.member_offset("tcp_skb_cb", "tcp_gso_segs")?,
        })
    }
}

type TrafficMap<K> = PerCpuHashMap<MapData, K, Traffic>;

/// Whether `net_cgroup` and `dns` both run with this config on this kernel. They then share one
/// cgroup_skb program per direction (`TRAFFIC_AND_DNS_PROGRAMS`), which `net_cgroup` attaches:
/// every packet enters one program per direction rather than two.
pub(crate) fn traffic_and_dns(config: &Config, facts: &KernelFacts) -> bool {
    let families: [&dyn Family; 2] = [&CgroupTraffic, &crate::bpf::dns::Dns];
    families.iter().all(|family| family.enabled(config) && family.unsupported(facts, config).is_none())
}

/// Whether the shared programs are in the kernel: `net_cgroup` attached them (they are unloaded
/// again when attaching either failed), so `dns` needs no programs of its own.
pub(crate) fn traffic_and_dns_attached(ebpf: &Ebpf) -> bool {
    TRAFFIC_AND_DNS_PROGRAMS.iter().all(|name| ebpf.program(name).is_some_and(|program| program.fd().is_ok()))
}

/// Attaches the cgroup_skb programs `[ingress, egress]` (`ks_net_ingress` and `ks_net_egress`,
/// the `dns` family's, or those the two share) to the cgroup v2 root at `unified`: both or,
/// once either fails, neither (both are unloaded again).
pub(crate) fn attach_cgroup(
    ebpf: &mut Ebpf,
    unified: Option<&PathBuf>,
    programs: [&str; 2],
) -> anyhow::Result<()> {
    let attached = attach_both(ebpf, unified, programs);
    if attached.is_err() {
        for name in programs {
            if let Some(Ok(program)) = ebpf.program_mut(name).map(<&mut CgroupSkb>::try_from) {
                // Not loaded yet is the only error here, and it leaves nothing behind.
                let _ = program.unload();
            }
        }
    }
    attached
}

fn attach_both(
    ebpf: &mut Ebpf,
    unified: Option<&PathBuf>,
    [ingress, egress]: [&str; 2],
) -> anyhow::Result<()> {
    let root = unified.context("no cgroup v2 hierarchy is mounted (cgroup_skb attaches to its root)")?;
    let cgroup = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    for (name, attach_type) in
        [(ingress, CgroupSkbAttachType::Ingress), (egress, CgroupSkbAttachType::Egress)]
    {
        let program: &mut CgroupSkb = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?;
        program.load().with_context(|| format!("loading {name}"))?;
        // A BPF link (kernel 5.7+) always runs beside the root's other programs (systemd's, a
        // CNI's); link_create takes no ALLOW_MULTI flag and rejects one (EINVAL).
        program
            .attach(cgroup.as_fd(), attach_type, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {name} to {}", root.display()))?;
    }
    Ok(())
}

/// Loads `ks_net_xdp` and attaches it to the configured interfaces, each reported on its own.
fn attach_xdp(ebpf: &mut Ebpf, interfaces: &[String]) -> anyhow::Result<Vec<InterfaceAttachment>> {
    let targets = xdp::targets(interfaces).map_err(anyhow::Error::msg)?;
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .with_context(|| format!("program {XDP_PROGRAM} missing from the object"))?
        .try_into()?;
    program.load().context("loading ks_net_xdp")?;
    Ok(xdp::attach_all(program, targets))
}

/// Loads `ks_net_tc_ingress` and `ks_net_tc_egress` and attaches both to the configured
/// interfaces, each reported on its own.
fn attach_tc(
    ebpf: &mut Ebpf,
    interfaces: &[String],
    backend: TcBackend,
) -> anyhow::Result<(Vec<InterfaceAttachment>, tc::TcLinks)> {
    let targets = xdp::targets(interfaces).map_err(anyhow::Error::msg)?;
    let mut ingress = None;
    let mut egress = None;
    for (name, program) in ebpf.programs_mut() {
        if name == TC_PROGRAMS[0] {
            ingress = Some(program);
        } else if name == TC_PROGRAMS[1] {
            egress = Some(program);
        }
    }
    let ingress = load_classifier(ingress, TC_PROGRAMS[0])?;
    let egress = load_classifier(egress, TC_PROGRAMS[1])?;
    Ok(tc::attach_all(ingress, egress, backend, targets))
}

/// The classifier `program` (named `name`), loaded.
pub fn load_classifier<'a>(
    program: Option<&'a mut aya::programs::Program>,
    name: &str,
) -> anyhow::Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier =
        program.with_context(|| format!("program {name} missing from the object"))?.try_into()?;
    program.load().with_context(|| format!("loading {name}"))?;
    Ok(program)
}

/// Why no interface could be watched, when none could: (interface, error) of each target.
fn none_attached<'a>(attachments: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Option<String> {
    let mut why = Vec::new();
    for (interface, error) in attachments {
        // One interface attached is enough.
        why.push(format!("{interface}: {}", error?));
    }
    Some(format!("no interface attached ({})", why.join("; ")))
}

/// Sums each key's per-CPU traffic (in a few batch calls where the kernel has them); entries
/// that vanish while being read key by key are skipped.
pub fn read_traffic<K: aya::Pod>(map: &TrafficMap<K>) -> Vec<(K, Traffic)> {
    super::counters::read_per_cpu(map).0
}
