//! What the running kernel offers the programs, read once at start-up: member offsets from one
//! parse of the kernel's BTF, tracepoint record layouts from tracefs, the cgroup hierarchies,
//! and the probed features (map types, helpers, BTF tracepoints and functions) with the build
//! of the programs they choose. Each family asks these facts whether it can run and, if not, says which one is
//! missing; none of them reads BTF or tracefs again.

use std::path::{Path, PathBuf};

use kernsight_common::{
    oom::{FIELD_ABSENT, OOM_FIELD_GLOBALS},
    syscalls::{error_quota, latency_quota},
};

use super::{
    block_io::BlockOffsets,
    capabilities::SecurityOffsets,
    features::{Features, Object},
    net::SockOffsets,
    oom::RecordLayout,
    task::TaskOffsets,
};
use crate::{
    config::Config,
    kernel::{
        btf::{Btf, BtfError},
        cgroupfs::Hierarchies,
        tracefs::Format,
    },
};

pub use super::cgroup_walk::CgroupOffsets;

/// The agent's own `/proc/PID/schedstat`: all zeros where the scheduler keeps no account of
/// waits.
const SELF_SCHEDSTAT: &str = "/proc/self/schedstat";

/// Facts about the running kernel; a fact that could not be read keeps the reason.
#[derive(Debug)]
pub struct KernelFacts {
    pub features: Features,
    /// The build of the programs loaded on this kernel.
    pub object: Object,
    /// The walk from a task to its cgroup: every family that counts per cgroup needs it.
    pub walk: Result<CgroupOffsets, BtfError>,
    pub task: Result<TaskOffsets, BtfError>,
    pub security: Result<SecurityOffsets, BtfError>,
    pub sock: Result<SockOffsets, BtfError>,
    pub offsets: Offsets,
    /// The `oom:mark_victim` record's layout.
    pub oom_layout: Result<RecordLayout, String>,
    /// (global, offset in the `oom:mark_victim` record) of each field the OOM family reads.
    pub oom_fields: Vec<(&'static str, u32)>,
    pub oom_comm_data_loc: u32,
    /// `tcp:tcp_retransmit_skb` has `err` (6.10+).
    pub retransmit_has_err: u32,
    /// `skb:kfree_skb` has `rx_sk` (6.12+).
    pub kfree_skb_has_rx_sk: u32,
    /// `skb:kfree_skb` has `reason` (5.17+).
    pub kfree_skb_has_reason: bool,
    /// `sched_switch` passes `prev_state` (5.18+): 1; else 0, and the state is read from the
    /// task at `task_state_offset`.
    pub switch_has_prev_state: u32,
    /// `task_struct.__state` (5.14+) or `.state`.
    pub task_state_offset: Result<u32, BtfError>,
    /// What the `block_io` programs read of requests, disks and bios.
    pub block_io: Result<BlockOffsets, String>,
    /// (`task_struct.se.cfs_rq`, `cfs_rq.throttle_count`): what tells a throttled run-queue wait
    /// from a contended one; missing without CONFIG_FAIR_GROUP_SCHED or CONFIG_CFS_BANDWIDTH.
    pub wait_reason_offsets: Result<(u32, u32), BtfError>,
    /// (`task_struct.se.cfs_rq`, `cfs_rq.rq`, `rq.clock`): the run queue's clock, which times
    /// run-queue waits; missing without CONFIG_FAIR_GROUP_SCHED (waits are then timed by
    /// `bpf_ktime_get_ns`).
    pub rq_clock_offsets: Result<(u32, u32, u32), BtfError>,
    /// `cfs_rq.throttled_clock_self_time` (6.6+): what measures each throttle episode.
    pub throttle_episode_offset: Result<u32, BtfError>,
    /// The kernel throttles each task on its way back to user space (6.18+: `task_struct` has
    /// `sched_throttle_work`), not a group's whole entity: every throttled wait then begins at
    /// a switch-out, and a wakeup into a throttled group is a wait to run like any other.
    pub throttles_per_task: bool,
    /// `task_struct.sched_info.last_queued`, where the scheduler keeps it (CONFIG_SCHED_INFO,
    /// live): when each run-queue wait began, by the run queue's clock.
    pub last_queued_offset: Result<u32, String>,
    /// What tells the escape family what a successful open returned, and what a successful
    /// connect reached.
    pub file_offsets: Result<super::escape::FileOffsets, BtfError>,
    pub unix_offsets: Result<super::escape::UnixOffsets, BtfError>,
    pub hierarchies: Hierarchies,
    pub tracefs: PathBuf,
    /// Not a kernel fact but a setting the programs are specialised for (a global that must
    /// live as long as the loader): whether syscall latency is measured.
    pub syscall_latency: u8,
    /// Settings too: the entries of `SYSCALL_ERRORS` and `SYSCALL_LATENCY` each cgroup slot may
    /// create (`kernsight_common::syscalls::error_quota`, `latency_quota`).
    pub error_quota: u32,
    pub latency_quota: u32,
    /// The traffic slots less one (`kernsight_common::net::cgroup_traffic_slots`).
    pub traffic_slot_mask: u64,
    /// 1 unless the kernel is a PREEMPT_RT one (`/sys/kernel/realtime`): programs that run with
    /// bottom halves off (cgroup_skb ingress, TC, XDP) then add to their rows without atomics.
    pub plain_adds_with_bh_off: u8,
    /// The DNS port the `dns` programs watch (`dns.port`).
    pub dns_port: u16,
}

/// The offsets as the programs get them: zeros where BTF lacked one (the families that need it
/// are then not attached, so the programs that read it are never loaded).
#[derive(Debug, Default)]
pub struct Offsets {
    pub walk: CgroupOffsets,
    pub task: TaskOffsets,
    pub security: SecurityOffsets,
    pub sock: SockOffsets,
}

impl KernelFacts {
    /// Reads the facts; `btf` is the kernel's BTF parsed once (`None`: it could not be read, and
    /// every offset carries that reason).
    pub fn read(btf: Result<&Btf, &BtfError>, hierarchies: Hierarchies, config: &Config) -> Self {
        let tracefs = config.paths.tracefs.as_path();
        let v1_controller = hierarchies.v1.as_ref().map(|(controller, _)| *controller);
        let walk = btf.map_err(Clone::clone).and_then(|btf| CgroupOffsets::read(btf, v1_controller));
        let task = btf.map_err(Clone::clone).and_then(TaskOffsets::read);
        let security = btf.map_err(Clone::clone).and_then(SecurityOffsets::read);
        let sock = btf.map_err(Clone::clone).and_then(SockOffsets::read);
        let oom_layout = RecordLayout::read(tracefs).map_err(|err| format!("{err:#}"));
        let oom_fields = OOM_FIELD_GLOBALS
            .iter()
            .map(|(field, global)| (*global, oom_layout.as_ref().map_or(FIELD_ABSENT, |l| l.offset(field))))
            .collect();
        let oom_comm_data_loc = u32::from(oom_layout.as_ref().is_ok_and(|l| l.comm_data_loc));
        let features = Features::probe(btf.ok());
        let switch_args = btf.ok().and_then(|btf| btf.tracepoint_args("sched_switch"));
        let task_state_offset = btf.map_err(Clone::clone).and_then(|btf| {
            btf.member_offset("task_struct", "__state").or_else(|_| btf.member_offset("task_struct", "state"))
        });
        let block_io = match btf {
            Ok(btf) => BlockOffsets::read(btf),
            Err(err) => Err(format!("cannot read the kernel's BTF: {err}")),
        };
        let wait_reason_offsets = btf.map_err(Clone::clone).and_then(|btf| {
            let se = btf.member_offset("task_struct", "se")?;
            let cfs_rq = btf.member_offset("sched_entity", "cfs_rq")?;
            Ok((se + cfs_rq, btf.member_offset("cfs_rq", "throttle_count")?))
        });
        let rq_clock_offsets = btf.map_err(Clone::clone).and_then(|btf| {
            let se_cfs_rq =
                btf.member_offset("task_struct", "se")? + btf.member_offset("sched_entity", "cfs_rq")?;
            Ok((se_cfs_rq, btf.member_offset("cfs_rq", "rq")?, btf.member_offset("rq", "clock")?))
        });
        let throttle_episode_offset = btf
            .map_err(Clone::clone)
            .and_then(|btf| btf.member_offset("cfs_rq", "throttled_clock_self_time"));
        let throttles_per_task =
            btf.is_ok_and(|btf| btf.member_offset("task_struct", "sched_throttle_work").is_ok());
        let last_queued_offset = super::runqueue::last_queued_offset(btf, Path::new(SELF_SCHEDSTAT));
        let file_offsets = btf.map_err(Clone::clone).and_then(super::escape::FileOffsets::read);
        let unix_offsets = btf.map_err(Clone::clone).and_then(super::escape::UnixOffsets::read);
        let object = Object::choose(&features, config.bpf.object);
        let offsets = Offsets {
            walk: walk.as_ref().copied().unwrap_or_default(),
            task: task.as_ref().copied().unwrap_or_default(),
            security: security.as_ref().copied().unwrap_or_default(),
            sock: sock.as_ref().copied().unwrap_or_default(),
        };
        Self {
            features,
            object,
            offsets,
            walk,
            task,
            security,
            sock,
            oom_fields,
            oom_comm_data_loc,
            oom_layout,
            retransmit_has_err: u32::from(tracepoint_has_field(tracefs, "tcp", "tcp_retransmit_skb", "err")),
            kfree_skb_has_rx_sk: u32::from(tracepoint_has_field(tracefs, "skb", "kfree_skb", "rx_sk")),
            kfree_skb_has_reason: tracepoint_has_field(tracefs, "skb", "kfree_skb", "reason"),
            switch_has_prev_state: u32::from(switch_args.is_some_and(|args| args >= 4)),
            task_state_offset,
            block_io,
            wait_reason_offsets,
            rq_clock_offsets,
            throttle_episode_offset,
            throttles_per_task,
            last_queued_offset,
            file_offsets,
            unix_offsets,
            hierarchies,
            tracefs: tracefs.to_owned(),
            syscall_latency: u8::from(config.syscalls.latency_histogram),
            error_quota: error_quota(config.syscalls.max_error_entries, config.syscalls.max_cgroups),
            latency_quota: latency_quota(config.syscalls.latency_max_entries, config.syscalls.max_cgroups),
            traffic_slot_mask: traffic_slot_mask(config),
            plain_adds_with_bh_off: u8::from(!realtime_kernel(Path::new("/sys/kernel/realtime"))),
            dns_port: config.dns.port,
        }
    }

    /// Sets the per-cgroup quotas of the syscall maps from the bounds they are created with
    /// (after the memory budget lowered them, if it did).
    pub fn size_quotas(&mut self, config: &Config) {
        self.error_quota = error_quota(config.syscalls.max_error_entries, config.syscalls.max_cgroups);
        self.latency_quota = latency_quota(config.syscalls.latency_max_entries, config.syscalls.max_cgroups);
        self.traffic_slot_mask = traffic_slot_mask(config);
    }

    /// Ok when a task's cgroup can be found (what every per-cgroup family needs).
    pub fn need_walk(&self) -> Result<(), String> {
        self.walk.as_ref().map(drop).map_err(|err| format!("cannot find the cgroup of a task: {err}"))
    }

    /// Ok when a task's cgroup and its own fields (pid, tgid, parent...) can be read.
    pub fn need_task(&self) -> Result<(), String> {
        self.need_walk()?;
        self.task.as_ref().map(drop).map_err(|err| format!("cannot read task_struct members: {err}"))
    }
}

/// Whether the tracepoint at `events/<category>/<name>` of `tracefs` has a field `field`.
pub fn tracepoint_has_field(tracefs: &Path, category: &str, name: &str, field: &str) -> bool {
    Format::read(tracefs, category, name).is_ok_and(|format| format.field(field).is_some())
}

/// Whether the kernel is a PREEMPT_RT one: it then has `/sys/kernel/realtime`, reading 1.
fn realtime_kernel(flag: &Path) -> bool {
    std::fs::read_to_string(flag).is_ok_and(|text| text.trim() == "1")
}

/// The traffic slots less one (`kernsight_common::net::cgroup_traffic_slots`).
fn traffic_slot_mask(config: &Config) -> u64 {
    u64::from(kernsight_common::net::cgroup_traffic_slots(config.network.cgroup_traffic_max_entries) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_realtime_flag_of_1_is_a_realtime_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("realtime");
        assert!(!realtime_kernel(&flag), "no flag: not PREEMPT_RT");
        std::fs::write(&flag, "1\n").unwrap();
        assert!(realtime_kernel(&flag));
        std::fs::write(&flag, "0\n").unwrap();
        assert!(!realtime_kernel(&flag));
    }

    #[test]
    fn traffic_slots_are_a_power_of_two_a_cgroup_of_the_hash() {
        use kernsight_common::net::cgroup_traffic_slots;
        assert_eq!(cgroup_traffic_slots(8192), 4096);
        assert_eq!(cgroup_traffic_slots(128), 64);
        assert_eq!(cgroup_traffic_slots(100), 32, "50 cgroups: the power of two below");
        assert_eq!(cgroup_traffic_slots(16), 8);
        assert_eq!(cgroup_traffic_slots(3), 1);
        assert_eq!(cgroup_traffic_slots(1), 1);
        let mut config = Config::default();
        config.network.cgroup_traffic_max_entries = 1000;
        assert_eq!(traffic_slot_mask(&config), 255);
    }

    #[test]
    fn finds_tracepoint_fields() {
        let dir = tempfile::tempdir().unwrap();
        let format = dir.path().join("events/skb/kfree_skb");
        std::fs::create_dir_all(&format).unwrap();
        std::fs::write(
            format.join("format"),
            "name: kfree_skb\nID: 1\nformat:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;\n\nprint fmt: \"x\"\n",
        )
        .unwrap();
        assert!(tracepoint_has_field(dir.path(), "skb", "kfree_skb", "rx_sk"));
        assert!(!tracepoint_has_field(dir.path(), "skb", "kfree_skb", "sk"));
        assert!(!tracepoint_has_field(dir.path(), "tcp", "tcp_retransmit_skb", "err"));
    }
}
