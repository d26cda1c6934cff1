//! Attaching the four network families at start-up, each on its own: one that fails (missing
//! capability, no such interface, an old kernel) is reported and leaves the others running.

use aya::{Btf, Ebpf};

use super::{
    NetMaps, SockOffsets, attach_cgroup, attach_drops, attach_tcp, attach_xdp, cgroup_status, drops_status,
    none_attached, tcp_status, tracepoint_has_field, xdp_status,
};
use crate::{
    bpf::{ProbeState, ProbeStatus, program_ids, syscalls::CgroupOffsets},
    config::Config,
    kernel::{btf::BtfError, cgroupfs::Hierarchies},
};

/// Attaches the network families, each on its own: one that fails leaves the others running.
pub(crate) fn attach_families(
    ebpf: &mut Ebpf,
    btf: &Btf,
    config: &Config,
    hierarchies: &Hierarchies,
    walk: &Result<CgroupOffsets, BtfError>,
    sock: &Result<SockOffsets, BtfError>,
    probes: &mut Vec<ProbeStatus>,
) -> NetMaps {
    let network = &config.network;
    let mut maps = NetMaps::default();
    let mut report = |ebpf: &Ebpf, mut status: ProbeStatus| {
        if status.state == ProbeState::Attached {
            status.program_ids = program_ids(ebpf, &status.programs);
        }
        probes.push(status);
    };
    let failed = |err: anyhow::Error| ProbeState::Failed(format!("{err:#}"));
    // cgroup_skb and XDP are networking programs: the kernel wants CAP_NET_ADMIN beside CAP_BPF.
    let net_admin =
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_NET_ADMIN).unwrap_or(false);
    let no_net_admin = || {
        ProbeState::Failed(
            "needs CAP_NET_ADMIN (networking programs): run as root or grant it (the DaemonSet adds NET_ADMIN)".into(),
        )
    };

    let state = if !network.cgroup_traffic {
        ProbeState::Disabled
    } else if !net_admin {
        no_net_admin()
    } else {
        match attach_cgroup(ebpf, hierarchies.unified.as_ref()) {
            Ok(map) => {
                maps.cgroup_traffic = Some((map, network.cgroup_traffic_max_entries));
                ProbeState::Attached
            }
            Err(err) => failed(err),
        }
    };
    report(ebpf, cgroup_status(state));

    let state = if !network.xdp {
        ProbeState::Disabled
    } else if !net_admin {
        no_net_admin()
    } else {
        match attach_xdp(ebpf, network) {
            // The failed interfaces stay listed (kernsight_interface_xdp_info{mode="failed"}).
            Ok((_, attachments)) if none_attached(&attachments).is_some() => {
                let why = none_attached(&attachments).unwrap_or_default();
                maps.xdp = attachments;
                ProbeState::Failed(why)
            }
            Ok((map, attachments)) => {
                maps.interface_traffic = Some((map, network.interface_traffic_max_entries));
                maps.xdp = attachments;
                ProbeState::Attached
            }
            Err(err) => failed(err),
        }
    };
    report(ebpf, xdp_status(state));

    // Both socket families find a socket's cgroup (sock offsets, then the cgroup walk's kn->id).
    let ready = match (walk, sock) {
        (Err(err), _) => Err(format!("cannot read a cgroup's id: {err}")),
        (_, Err(err)) => Err(format!("cannot read struct sock members: {err}")),
        _ => Ok(()),
    };
    let state = match &ready {
        _ if !network.tcp => ProbeState::Disabled,
        Err(why) => ProbeState::Failed(why.clone()),
        Ok(()) => match attach_tcp(ebpf, btf) {
            Ok(map) => {
                maps.tcp = Some((map, network.tcp_max_entries));
                ProbeState::Attached
            }
            Err(err) => failed(err),
        },
    };
    report(ebpf, tcp_status(state));

    // Before 5.17 the tracepoint has no drop reason, and the program's read of it would be
    // refused by the verifier with a less helpful message.
    let has_reason = tracepoint_has_field(&config.paths.tracefs, "skb", "kfree_skb", "reason");
    let state = match &ready {
        _ if !network.drops => ProbeState::Disabled,
        Err(why) => ProbeState::Failed(why.clone()),
        Ok(()) if !has_reason => ProbeState::Failed(format!(
            "{} has no reason field (drop reasons need kernel 5.17; is tracefs mounted at paths.tracefs?)",
            config.paths.tracefs.join("events/skb/kfree_skb/format").display()
        )),
        Ok(()) => match attach_drops(ebpf, btf) {
            Ok((reasons, by_cgroup)) => {
                maps.drop_reasons = Some(reasons);
                maps.cgroup_drops = Some((by_cgroup, network.drop_max_entries));
                ProbeState::Attached
            }
            Err(err) => failed(err),
        },
    };
    report(ebpf, drops_status(state));
    maps
}
