//! The `block_io` family: block I/O per (cgroup, device, op) (`ks_block_rq_issue`,
//! `ks_block_rq_complete` on the `block` BTF tracepoints) and the maps they fill. The programs
//! run once per request issued and once per request (part) completed.

use std::time::Duration;

use aya::EbpfLoader;
use kernsight_common::{
    block_io::{self as wire, BLOCK_IO_MAP, BLOCK_IO_START_MAP, BlockIoKey, overflow_keys},
    counters::{OVERFLOW_CGROUP_ID, map_full},
};

use super::{
    counters::{CgroupCounters, CgroupKeyed, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    load_and_attach,
};
use crate::{config::Config, kernel::btf::Btf};

pub const BLOCK_IO_PROBE: &str = "block_io";
/// (program, BTF tracepoint), attached in this order: completions first, so that every issue
/// recorded has its completion attached and its entry removed.
const PROGRAMS: [(&str, &str); 2] =
    [("ks_block_rq_complete", "block_rq_complete"), ("ks_block_rq_issue", "block_rq_issue")];

/// What the programs read of a request, its disk and its first bio, from the kernel's BTF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockOffsets {
    /// Index of the request among `block_rq_issue`'s arguments (1 on 5.10: the queue first).
    pub issue_rq_arg: u32,
    /// 1: `request.q->disk` (5.15+); 0: `request.rq_disk`.
    pub disk_via_queue: u32,
    pub rq_q: u32,
    pub queue_disk: u32,
    pub rq_disk: u32,
    pub disk_major: u32,
    pub disk_first_minor: u32,
    pub rq_cmd_flags: u32,
    pub rq_data_len: u32,
    /// 1 when the kernel has blk-cgroup (`bio.bi_blkg`) and the offsets below are set.
    pub blkcg: u32,
    pub rq_bio: u32,
    pub bio_blkg: u32,
    pub blkg_blkcg: u32,
    pub blkcg_cgroup: u32,
}

impl BlockOffsets {
    /// Reads the offsets; the error names what the kernel lacks.
    pub fn read(btf: &Btf) -> Result<Self, String> {
        let issue_args =
            btf.tracepoint_args("block_rq_issue").ok_or("the kernel has no BTF tracepoint block_rq_issue")?;
        let complete_args = btf
            .tracepoint_args("block_rq_complete")
            .ok_or("the kernel has no BTF tracepoint block_rq_complete")?;
        if complete_args != 3 {
            return Err(format!(
                "block_rq_complete passes {complete_args} arguments, not (rq, error, nr_bytes)"
            ));
        }
        let member = |name: &str, field: &str| btf.member_offset(name, field).map_err(|err| err.to_string());
        let (disk_via_queue, queue_disk, rq_disk) = match member("request_queue", "disk") {
            Ok(offset) => (1, offset, 0),
            Err(_) => (0, 0, member("request", "rq_disk")?),
        };
        let blkcg_chain = (|| {
            let css = member("blkcg", "css")?;
            Ok::<_, String>((
                member("request", "bio")?,
                member("bio", "bi_blkg")?,
                member("blkcg_gq", "blkcg")?,
                css + member("cgroup_subsys_state", "cgroup")?,
            ))
        })();
        let (blkcg, (rq_bio, bio_blkg, blkg_blkcg, blkcg_cgroup)) = match blkcg_chain {
            Ok(chain) => (1, chain),
            Err(_) => (0, (0, 0, 0, 0)), // no CONFIG_BLK_CGROUP: the issuing task's cgroup
        };
        Ok(Self {
            // `(struct request_queue *q, struct request *rq)` before 5.11, `(struct request *)` since.
            issue_rq_arg: u32::from(issue_args == 2),
            disk_via_queue,
            rq_q: member("request", "q")?,
            queue_disk,
            rq_disk,
            disk_major: member("gendisk", "major")?,
            disk_first_minor: member("gendisk", "first_minor")?,
            rq_cmd_flags: member("request", "cmd_flags")?,
            rq_data_len: member("request", "__data_len")?,
            blkcg,
            rq_bio,
            bio_blkg,
            blkg_blkcg,
            blkcg_cgroup,
        })
    }
}

impl BlockOffsets {
    /// Sets the programs' globals (the family's and `kernsight trace io`'s).
    pub fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (global, value) in [
            (wire::ISSUE_RQ_ARG_GLOBAL, &self.issue_rq_arg),
            (wire::DISK_VIA_QUEUE_GLOBAL, &self.disk_via_queue),
            (wire::RQ_Q_OFFSET_GLOBAL, &self.rq_q),
            (wire::QUEUE_DISK_OFFSET_GLOBAL, &self.queue_disk),
            (wire::RQ_DISK_OFFSET_GLOBAL, &self.rq_disk),
            (wire::DISK_MAJOR_OFFSET_GLOBAL, &self.disk_major),
            (wire::DISK_FIRST_MINOR_OFFSET_GLOBAL, &self.disk_first_minor),
            (wire::RQ_CMD_FLAGS_OFFSET_GLOBAL, &self.rq_cmd_flags),
            (wire::RQ_DATA_LEN_OFFSET_GLOBAL, &self.rq_data_len),
            (wire::BLKCG_GLOBAL, &self.blkcg),
            (wire::RQ_BIO_OFFSET_GLOBAL, &self.rq_bio),
            (wire::BIO_BLKG_OFFSET_GLOBAL, &self.bio_blkg),
            (wire::BLKG_BLKCG_OFFSET_GLOBAL, &self.blkg_blkcg),
            (wire::BLKCG_CGROUP_OFFSET_GLOBAL, &self.blkcg_cgroup),
        ] {
            loader.override_global(global, value, true);
        }
    }
}

impl CgroupKeyed for BlockIoKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// Block I/O per cgroup, device and op.
pub struct BlockIo;

impl Family for BlockIo {
    fn name(&self) -> &'static str {
        BLOCK_IO_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        PROGRAMS.iter().map(|(program, _)| *program).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.block_io.enabled
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.block_io.enabled = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_walk().err().or_else(|| facts.block_io.as_ref().err().cloned())
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        if let Ok(offsets) = &facts.block_io {
            offsets.set_globals(loader);
        }
    }

    fn maps(&self) -> &'static [&'static str] {
        &[BLOCK_IO_MAP, BLOCK_IO_START_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(BLOCK_IO_MAP, config.block_io.max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[BLOCK_IO_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(BLOCK_IO_MAP, map_full::BLOCK_IO)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let counters = CgroupCounters::take(
            cx.ebpf,
            BLOCK_IO_MAP,
            cx.config.block_io.max_entries,
            overflow_keys(OVERFLOW_CGROUP_ID),
        )?;
        load_and_attach(cx.ebpf, cx.btf, &PROGRAMS)?;
        Ok(Box::new(BlockIoMaps { counters }))
    }
}

/// The maps of the attached `block_io` family.
pub struct BlockIoMaps {
    counters: CgroupCounters<BlockIoKey>,
}

impl BlockIoMaps {
    /// Counts per (cgroup, device, op, slot); the number of entries that could not be read.
    pub fn read(&self) -> (Vec<Row<BlockIoKey>>, u64) {
        self.counters.read()
    }
}

impl Attached for BlockIoMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.counters.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.counters.recycle(gone_for, grace)
    }
}
