//! The network families and their maps: `net_cgroup` (`ks_net_ingress`, `ks_net_egress`:
//! cgroup_skb on the cgroup v2 root), `net_xdp` (`ks_net_xdp` on the watched interfaces),
//! `tcp` (state changes, retransmissions, resets) and `packet_drops` (`skb:kfree_skb`).

mod attach;
mod xdp;

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
pub(crate) use attach::attach_families;
use aya::{
    Btf, Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, Xdp},
};
use kernsight_common::{
    net::{
        CGROUP_DROPS_MAP, CGROUP_TRAFFIC_MAP, DROP_REASON_SLOTS, DROP_REASONS_MAP, DropKey, EGRESS, INGRESS,
        INTERFACE_TRAFFIC_MAP, InterfaceKey, TCP_EVENTS_MAP, TcpKey, Traffic, TrafficKey, protocol,
        tcp_event,
    },
    syscalls::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID},
};
pub use xdp::{XdpAttachment, XdpTarget};

use super::{ProbeState, ProbeStatus, load_and_attach, syscalls::insert_zeros_if_absent, take_map};
use crate::{config::NetworkConfig, kernel::btf};

pub const CGROUP_PROBE: &str = "net_cgroup";
pub const XDP_PROBE: &str = "net_xdp";
pub const TCP_PROBE: &str = "tcp";
pub const DROPS_PROBE: &str = "packet_drops";
const CGROUP_PROGRAMS: [&str; 2] = ["ks_net_ingress", "ks_net_egress"];
const XDP_PROGRAM: &str = "ks_net_xdp";
const TCP_PROGRAMS: [(&str, &str); 4] = [
    ("ks_tcp_set_state", "inet_sock_set_state"),
    ("ks_tcp_retransmit", "tcp_retransmit_skb"),
    ("ks_tcp_send_reset", "tcp_send_reset"),
    ("ks_tcp_receive_reset", "tcp_receive_reset"),
];
const DROP_PROGRAMS: [(&str, &str); 1] = [("ks_kfree_skb", "kfree_skb")];

pub fn cgroup_status(state: ProbeState) -> ProbeStatus {
    ProbeStatus { name: CGROUP_PROBE, programs: CGROUP_PROGRAMS.to_vec(), program_ids: Vec::new(), state }
}

pub fn xdp_status(state: ProbeState) -> ProbeStatus {
    ProbeStatus { name: XDP_PROBE, programs: vec![XDP_PROGRAM], program_ids: Vec::new(), state }
}

pub fn tcp_status(state: ProbeState) -> ProbeStatus {
    let programs = TCP_PROGRAMS.iter().map(|(p, _)| *p).collect();
    ProbeStatus { name: TCP_PROBE, programs, program_ids: Vec::new(), state }
}

pub fn drops_status(state: ProbeState) -> ProbeStatus {
    let programs = DROP_PROGRAMS.iter().map(|(p, _)| *p).collect();
    ProbeStatus { name: DROPS_PROBE, programs, program_ids: Vec::new(), state }
}

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
    pub fn read() -> Result<Self, btf::BtfError> {
        let btf = btf::Btf::from_sys_fs()?;
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

/// Whether the tracepoint at `events/<category>/<name>` of `tracefs` has a field `field`.
pub fn tracepoint_has_field(tracefs: &Path, category: &str, name: &str, field: &str) -> bool {
    let path = tracefs.join("events").join(category).join(name).join("format");
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().any(|line| {
            line.trim()
                .strip_prefix("field:")
                .and_then(|rest| rest.split(';').next())
                .is_some_and(|declaration| declaration.rsplit(' ').next() == Some(field))
        })
    })
}

type TrafficMap<K> = PerCpuHashMap<MapData, K, Traffic>;
type CountMap<K> = PerCpuHashMap<MapData, K, u64>;

/// The maps of the attached network families (`None`: family not attached).
#[derive(Default)]
pub struct NetMaps {
    pub cgroup_traffic: Option<(TrafficMap<TrafficKey>, u32)>,
    pub interface_traffic: Option<(TrafficMap<InterfaceKey>, u32)>,
    /// Every configured interface, attached or not.
    pub xdp: Vec<XdpAttachment>,
    pub tcp: Option<(CountMap<TcpKey>, u32)>,
    pub drop_reasons: Option<PerCpuArray<MapData, u64>>,
    pub cgroup_drops: Option<(CountMap<DropKey>, u32)>,
}

/// Attaches `ks_net_ingress` and `ks_net_egress` to the cgroup v2 root at `unified`.
pub fn attach_cgroup(ebpf: &mut Ebpf, unified: Option<&PathBuf>) -> anyhow::Result<TrafficMap<TrafficKey>> {
    let root = unified.context("no cgroup v2 hierarchy is mounted (cgroup_skb attaches to its root)")?;
    let mut map: TrafficMap<TrafficKey> = PerCpuHashMap::try_from(take_map(ebpf, CGROUP_TRAFFIC_MAP)?)?;
    for direction in [INGRESS, EGRESS] {
        let key = TrafficKey { cgroup_id: OVERFLOW_CGROUP_ID, direction, _pad: 0 };
        insert_zeros_if_absent(&mut map, &key).context("creating the cgroup traffic overflow entries")?;
    }
    let cgroup = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    for (name, attach_type) in [
        (CGROUP_PROGRAMS[0], CgroupSkbAttachType::Ingress),
        (CGROUP_PROGRAMS[1], CgroupSkbAttachType::Egress),
    ] {
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
    Ok(map)
}

/// Loads `ks_net_xdp` and attaches it to the configured interfaces, each reported on its own
/// (`none_attached` says when not one could be).
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    config: &NetworkConfig,
) -> anyhow::Result<(TrafficMap<InterfaceKey>, Vec<XdpAttachment>)> {
    let targets = xdp::targets(&config.xdp_interfaces).map_err(anyhow::Error::msg)?;
    let mut map: TrafficMap<InterfaceKey> = PerCpuHashMap::try_from(take_map(ebpf, INTERFACE_TRAFFIC_MAP)?)?;
    for what in 0..protocol::COUNT {
        let key = InterfaceKey { ifindex: 0, protocol: what };
        insert_zeros_if_absent(&mut map, &key).context("creating the interface overflow entries")?;
    }
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .with_context(|| format!("program {XDP_PROGRAM} missing from the object"))?
        .try_into()?;
    program.load().context("loading ks_net_xdp")?;
    Ok((map, xdp::attach_all(program, targets)))
}

/// Why no interface could be watched, when none could.
pub fn none_attached(attachments: &[XdpAttachment]) -> Option<String> {
    if attachments.iter().any(|a| a.error.is_none()) {
        return None;
    }
    let why: Vec<String> = attachments
        .iter()
        .map(|a| format!("{}: {}", a.target.interface, a.error.as_deref().unwrap_or_default()))
        .collect();
    Some(format!("no interface attached ({})", why.join("; ")))
}

pub fn attach_tcp(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<CountMap<TcpKey>> {
    let mut map: CountMap<TcpKey> = PerCpuHashMap::try_from(take_map(ebpf, TCP_EVENTS_MAP)?)?;
    let events = (0..=tcp_event::RESET_RECEIVED)
        .chain((0..=LATENCY_SUM_BUCKET).map(|bucket| tcp_event::DURATION_BUCKETS + bucket));
    for event in events {
        let key = TcpKey { cgroup_id: OVERFLOW_CGROUP_ID, event, _pad: 0 };
        insert_zeros_if_absent(&mut map, &key).context("creating the TCP overflow entries")?;
    }
    load_and_attach(ebpf, btf, &TCP_PROGRAMS)?;
    Ok(map)
}

pub fn attach_drops(
    ebpf: &mut Ebpf,
    btf: &Btf,
) -> anyhow::Result<(PerCpuArray<MapData, u64>, CountMap<DropKey>)> {
    let reasons = PerCpuArray::try_from(take_map(ebpf, DROP_REASONS_MAP)?)?;
    let mut by_cgroup: CountMap<DropKey> = PerCpuHashMap::try_from(take_map(ebpf, CGROUP_DROPS_MAP)?)?;
    for reason in 0..DROP_REASON_SLOTS {
        let key = DropKey { cgroup_id: OVERFLOW_CGROUP_ID, reason, _pad: 0 };
        insert_zeros_if_absent(&mut by_cgroup, &key).context("creating the drop overflow entries")?;
    }
    load_and_attach(ebpf, btf, &DROP_PROGRAMS)?;
    Ok((reasons, by_cgroup))
}

/// Sums each key's per-CPU traffic; entries that vanish while being read are skipped.
pub fn read_traffic<K: aya::Pod>(map: &TrafficMap<K>) -> Vec<(K, Traffic)> {
    map.iter()
        .filter_map(Result::ok)
        .map(|(key, values)| {
            let total = values.iter().fold(Traffic::default(), |sum, v| Traffic {
                packets: sum.packets + v.packets,
                bytes: sum.bytes + v.bytes,
            });
            (key, total)
        })
        .collect()
}

impl NetMaps {
    /// Drops per reason number (summed over CPUs), non-zero ones only.
    pub fn drop_reasons(&self) -> Vec<(u32, u64)> {
        let Some(array) = &self.drop_reasons else {
            return Vec::new();
        };
        (0..DROP_REASON_SLOTS)
            .filter_map(|reason| {
                let total: u64 = array.get(&reason, 0).ok()?.iter().sum();
                (total > 0).then_some((reason, total))
            })
            .collect()
    }

    /// (map, entries in use, bound), for `kernsight_bpf_map_entries`.
    pub fn map_rows(&self) -> Vec<(&'static str, usize, u32)> {
        let mut rows = Vec::new();
        if let Some((map, bound)) = &self.cgroup_traffic {
            rows.push((CGROUP_TRAFFIC_MAP, map.keys().filter(Result::is_ok).count(), *bound));
        }
        if let Some((map, bound)) = &self.interface_traffic {
            rows.push((INTERFACE_TRAFFIC_MAP, map.keys().filter(Result::is_ok).count(), *bound));
        }
        if let Some((map, bound)) = &self.tcp {
            rows.push((TCP_EVENTS_MAP, map.keys().filter(Result::is_ok).count(), *bound));
        }
        if let Some((map, bound)) = &self.cgroup_drops {
            rows.push((CGROUP_DROPS_MAP, map.keys().filter(Result::is_ok).count(), *bound));
        }
        rows
    }

    /// Removes the entries of cgroups gone for at least `grace`; returns how many went.
    pub fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let mut stale = |id: u64| id != OVERFLOW_CGROUP_ID && gone_for(id).is_some_and(|gone| gone >= grace);
        let mut removed = 0;
        if let Some((map, _)) = &mut self.cgroup_traffic {
            let keys: Vec<TrafficKey> =
                map.keys().filter_map(Result::ok).filter(|k| stale(k.cgroup_id)).collect();
            removed += keys.iter().filter(|k| map.remove(k).is_ok()).count();
        }
        if let Some((map, _)) = &mut self.tcp {
            let keys: Vec<TcpKey> =
                map.keys().filter_map(Result::ok).filter(|k| stale(k.cgroup_id)).collect();
            removed += keys.iter().filter(|k| map.remove(k).is_ok()).count();
        }
        if let Some((map, _)) = &mut self.cgroup_drops {
            let keys: Vec<DropKey> =
                map.keys().filter_map(Result::ok).filter(|k| stale(k.cgroup_id)).collect();
            removed += keys.iter().filter(|k| map.remove(k).is_ok()).count();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tracepoint_fields() {
        let dir = tempfile::tempdir().unwrap();
        let format = dir.path().join("events/skb/kfree_skb");
        std::fs::create_dir_all(&format).unwrap();
        std::fs::write(
            format.join("format"),
            "format:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;\n",
        )
        .unwrap();
        assert!(tracepoint_has_field(dir.path(), "skb", "kfree_skb", "rx_sk"));
        assert!(!tracepoint_has_field(dir.path(), "skb", "kfree_skb", "sk"));
        assert!(!tracepoint_has_field(dir.path(), "tcp", "tcp_retransmit_skb", "err"));
    }
}
