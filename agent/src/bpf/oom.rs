//! The OOM family: `ks_oom_victim_task` (tp_btf/mark_victim) learns each victim's cgroup,
//! `ks_oom_mark_victim` (tracepoint/oom/mark_victim) the RSS the kernel computed; whichever runs
//! second on a kill joins the two by pid and streams one `OomEvent`; `decode` turns a
//! ring-buffer record into an `OomKill`.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::kernel::tracefs::{Format, Layout};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, TracePoint},
};
use kernsight_common::oom::{
    CGROUP_OF_VICTIM, FIELD_ABSENT, OOM_COMM_DATA_LOC_GLOBAL, OOM_EVENTS_LOST_MAP, OOM_EVENTS_MAP,
    OOM_PENDING_MAP, OOM_VICTIMS_MAP, OomEvent,
};

use super::{
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, attached_any},
    rings::EventRing,
};
use crate::config::Config;

pub const PROBE: &str = "oom";
const BTF_PROGRAM: &str = "ks_oom_victim_task";
const TRACEPOINT_PROGRAM: &str = "ks_oom_mark_victim";

/// OOM kills, streamed with the victim's cgroup and memory: always on (kills are rare).
pub struct Oom;

impl Family for Oom {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        vec![BTF_PROGRAM, TRACEPOINT_PROGRAM]
    }

    fn enabled(&self, _config: &Config) -> bool {
        true
    }

    fn set_enabled(&self, _config: &mut Config, _on: bool) {}

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_task().err().or_else(|| {
            let err = facts.oom_layout.as_ref().err()?;
            Some(format!("no oom:mark_victim tracepoint: {err}"))
        })
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        for (global, offset) in &facts.oom_fields {
            loader.override_global(global, offset, true);
        }
        loader.override_global(OOM_COMM_DATA_LOC_GLOBAL, &facts.oom_comm_data_loc, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[OOM_EVENTS_MAP, OOM_EVENTS_LOST_MAP, OOM_VICTIMS_MAP, OOM_PENDING_MAP]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        Ok(Box::new(OomState { events: Some(attach(cx.ebpf, cx.btf)?), kills: Arc::default() }))
    }
}

/// The attached family: its ring, until the OOM reporter takes it, and the kills counted from
/// it, forgotten with the kernel slots of their cgroups.
pub struct OomState {
    events: Option<EventRing>,
    pub kills: Arc<OomKills>,
}

impl Attached for OomState {
    attached_any!();

    fn take_events(&mut self) -> Option<EventRing> {
        self.events.take()
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.kills.forget(gone_for, grace)
    }
}

/// cgroups whose kills are remembered; past it, the one with the oldest last kill is forgotten.
/// Those of removed cgroups go before (`OomKills::forget`).
const MAX_CGROUPS: usize = 4096;

/// Kills of one cgroup since the agent started.
#[derive(Debug, Clone)]
pub struct CgroupKills {
    /// The cgroup's path when its first kill was seen (`cgroup_id:<id>` if it was unknown).
    pub path: String,
    pub kills: u64,
    /// The last victim in this cgroup.
    pub last: OomKill,
}

/// Kills by tagged cgroup id, shared by the event task and the collectors.
#[derive(Debug, Default)]
pub struct OomKills {
    by_cgroup: Mutex<BTreeMap<u64, CgroupKills>>,
}

impl OomKills {
    /// Forgets the kills of cgroups removed `grace` ago or more, with their kernel slots
    /// (`OomState::recycle`): a crash-looping pod's or a job's cgroups would otherwise stay
    /// exported, and their workloads named, until 4,096 cgroups had kills. Returns how many.
    fn forget(&self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let mut by_cgroup = self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner());
        let before = by_cgroup.len();
        by_cgroup.retain(|&id, _| gone_for(id).is_none_or(|gone| gone < grace));
        before - by_cgroup.len()
    }

    pub fn snapshot(&self) -> Vec<CgroupKills> {
        self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Counts a kill in its cgroup, named `path`.
    pub fn record(&self, path: String, kill: OomKill) {
        let mut by_cgroup = self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner());
        if !by_cgroup.contains_key(&kill.cgroup_id) && by_cgroup.len() >= MAX_CGROUPS {
            let oldest = by_cgroup.iter().min_by_key(|(_, k)| k.last.timestamp_ns).map(|(id, _)| *id);
            if let Some(id) = oldest {
                by_cgroup.remove(&id);
            }
        }
        let entry = by_cgroup.entry(kill.cgroup_id).or_insert_with(|| CgroupKills {
            path,
            kills: 0,
            last: kill.clone(),
        });
        entry.kills += 1;
        entry.last = kill;
    }
}

/// Offsets of the `mark_victim` record's fields, read from tracefs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLayout {
    /// Field name → offset, for the fields the kernel side reads.
    pub offsets: BTreeMap<&'static str, u32>,
    /// Whether `comm` is a `__data_loc` string.
    pub comm_data_loc: bool,
}

impl RecordLayout {
    pub fn read(tracefs: &Path) -> anyhow::Result<Self> {
        let format = Format::read(tracefs, "oom", "mark_victim")?;
        Self::from_format(&format).context("oom:mark_victim has no pid field")
    }

    /// Parses the text of a tracefs `format` file; `None` if it is malformed or lacks the one
    /// field that matters (`pid`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::from_format(&Format::parse(text).ok()?)
    }

    /// The offsets of the fields the kernel side reads, where their layout is the expected one.
    pub fn from_format(format: &Format) -> Option<Self> {
        let mut offsets = BTreeMap::new();
        let mut comm_data_loc = true;
        for (field, _) in kernsight_common::oom::OOM_FIELD_GLOBALS.iter() {
            let Some(f) = format.field(field) else { continue };
            let expected = match (*field, f.layout) {
                ("pid" | "uid", Layout::Int) => f.size == 4,
                ("oom_score_adj", Layout::Int) => f.size == 2,
                ("comm", Layout::DynamicString { relative: false }) => true,
                ("comm", Layout::Chars) => {
                    comm_data_loc = false;
                    f.size >= 1
                }
                ("comm", _) => false,
                (_, Layout::Int) => f.size == 8,
                _ => false,
            };
            if expected && let Ok(offset) = u32::try_from(f.offset) {
                offsets.insert(*field, offset);
            }
        }
        offsets.contains_key("pid").then_some(Self { offsets, comm_data_loc })
    }

    /// The offset to give the kernel side for `field`.
    pub fn offset(&self, field: &str) -> u32 {
        self.offsets.get(field).copied().unwrap_or(FIELD_ABSENT)
    }
}

/// Where a kill's cgroup came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupSource {
    /// The victim task's own cgroup (the one source the programs have since they join their
    /// halves whatever order they run in; the wire keeps room for others).
    Victim,
}

/// A decoded OOM kill; memory in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub cgroup_source: CgroupSource,
    pub pid: u32,
    pub tgid: Option<u32>,
    pub current_pid: u32,
    pub uid: u32,
    pub comm: String,
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub pgtables_bytes: u64,
    pub oom_score_adj: i16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("oom event of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("oom event with unknown cgroup source {0}")]
    Source(u32),
}

/// Decodes one ring-buffer record; never trusts its length, its comm or its sizes.
pub fn decode(record: &[u8]) -> Result<OomKill, DecodeError> {
    let expected = size_of::<OomEvent>();
    if record.len() < expected {
        return Err(DecodeError::Size(record.len(), expected));
    }
    // SAFETY: length checked; OomEvent is plain integers and bytes, read unaligned.
    let event: OomEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let cgroup_source = match event.cgroup_source {
        CGROUP_OF_VICTIM => CgroupSource::Victim,
        other => return Err(DecodeError::Source(other)),
    };
    let end = event.comm.iter().position(|&b| b == 0).unwrap_or(event.comm.len());
    let comm = String::from_utf8_lossy(&event.comm[..end]).into_owned();
    let bytes = |kib: u64| kib.saturating_mul(1024);
    Ok(OomKill {
        timestamp_ns: event.timestamp_ns,
        cgroup_id: event.cgroup_id,
        cgroup_source,
        pid: event.pid,
        tgid: (event.tgid != 0).then_some(event.tgid),
        current_pid: event.current_pid,
        uid: event.uid,
        comm,
        total_vm_bytes: bytes(event.total_vm_kib),
        anon_rss_bytes: bytes(event.anon_rss_kib),
        file_rss_bytes: bytes(event.file_rss_kib),
        shmem_rss_bytes: bytes(event.shmem_rss_kib),
        pgtables_bytes: bytes(event.pgtables_kib),
        oom_score_adj: event.oom_score_adj,
    })
}

/// Loads and attaches both programs (in any order: they join their halves whichever runs first).
fn attach(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<EventRing> {
    let events = EventRing::take(ebpf, "oom_events", OOM_EVENTS_MAP, OOM_EVENTS_LOST_MAP)?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(BTF_PROGRAM)
        .with_context(|| format!("program {BTF_PROGRAM} missing from the object"))?
        .try_into()?;
    program.load("mark_victim", btf).context("loading ks_oom_victim_task (tp_btf/mark_victim)")?;
    program.attach().context("attaching ks_oom_victim_task")?;
    let program: &mut TracePoint = ebpf
        .program_mut(TRACEPOINT_PROGRAM)
        .with_context(|| format!("program {TRACEPOINT_PROGRAM} missing from the object"))?
        .try_into()?;
    program.load().context("loading ks_oom_mark_victim (tracepoint/oom/mark_victim)")?;
    program.attach("oom", "mark_victim").context("attaching ks_oom_mark_victim")?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:unsigned long pgtables;\toffset:56;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn parses_the_record_layout() {
        let layout = RecordLayout::parse(FORMAT_6_18).unwrap();
        assert!(layout.comm_data_loc);
        assert_eq!(layout.offset("pid"), 8);
        assert_eq!(layout.offset("comm"), 12);
        assert_eq!(layout.offset("anon_rss"), 24);
        assert_eq!(layout.offset("file_rss"), 32);
        assert_eq!(layout.offset("shmem_rss"), 40);
        assert_eq!(layout.offset("uid"), 48);
        assert_eq!(layout.offset("oom_score_adj"), 64);
        // An old kernel: pid only; the rest is absent, never guessed.
        let old = RecordLayout::parse("name: mark_victim\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n")
            .unwrap();
        assert_eq!(old.offset("anon_rss"), FIELD_ABSENT);
        assert_eq!(RecordLayout::parse("name: mark_victim\ngarbage\nfield:int pid;offset:x;size:4;"), None);
        assert_eq!(RecordLayout::parse("name: mark_victim\nfield:int tid;offset:8;size:4;"), None);
        // A field of an unexpected size is not read.
        let odd = RecordLayout::parse(
            "name: mark_victim\nfield:int pid;offset:8;size:4;\nfield:int anon_rss;offset:24;size:4;",
        );
        assert_eq!(odd.unwrap().offset("anon_rss"), FIELD_ABSENT);
    }

    fn event() -> OomEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"java");
        OomEvent {
            timestamp_ns: 5,
            cgroup_id: 42,
            total_vm_kib: 100,
            anon_rss_kib: 30_000,
            file_rss_kib: 12,
            shmem_rss_kib: 0,
            pgtables_kib: 4,
            pid: 1234,
            tgid: 1230,
            uid: 1000,
            current_pid: 1234,
            cgroup_source: CGROUP_OF_VICTIM,
            oom_score_adj: -999,
            _pad: 0,
            comm,
        }
    }

    fn bytes(event: &OomEvent) -> Vec<u8> {
        // SAFETY: plain-data struct viewed as bytes.
        unsafe { std::slice::from_raw_parts((event as *const OomEvent).cast::<u8>(), size_of::<OomEvent>()) }
            .to_vec()
    }

    #[test]
    fn decodes_a_kill_in_bytes() {
        let kill = decode(&bytes(&event())).unwrap();
        assert_eq!(kill.pid, 1234);
        assert_eq!(kill.tgid, Some(1230));
        assert_eq!(kill.comm, "java");
        assert_eq!(kill.anon_rss_bytes, 30_000 * 1024);
        assert_eq!(kill.file_rss_bytes, 12 * 1024);
        assert_eq!(kill.cgroup_source, CgroupSource::Victim);
        assert_eq!(kill.oom_score_adj, -999);
    }

    #[test]
    fn hostile_records_are_errors_never_panics() {
        let good = bytes(&event());
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), Err(DecodeError::Size(cut, good.len())));
        }
        let mut bogus = event();
        bogus.cgroup_source = 7;
        assert_eq!(decode(&bytes(&bogus)), Err(DecodeError::Source(7)));
        // Unterminated, non-UTF-8 comm; sizes that would overflow in bytes; tgid unknown.
        let mut bogus = event();
        bogus.comm = [0xff; 16];
        bogus.anon_rss_kib = u64::MAX;
        bogus.tgid = 0;
        let kill = decode(&bytes(&bogus)).unwrap();
        assert_eq!(kill.anon_rss_bytes, u64::MAX);
        assert_eq!(kill.tgid, None);
        assert_eq!(kill.comm.chars().count(), 16);
        // Longer records (a newer kernel side) decode their known prefix.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0xaa; 32]);
        assert_eq!(decode(&longer).unwrap().pid, 1234);
    }

    proptest::proptest! {
        /// Records come from the kernel, but the decoder trusts nothing: any bytes, any length.
        #[test]
        fn no_bytes_panic_the_decoder(record in proptest::collection::vec(proptest::num::u8::ANY, 0..3 * size_of::<OomEvent>())) {
            let _ = decode(&record);
        }

        /// A record cut short is an error (counted by the reader), never a partial event.
        #[test]
        fn truncated_records_are_errors(record in proptest::collection::vec(proptest::num::u8::ANY, size_of::<OomEvent>()), cut in 0..size_of::<OomEvent>()) {
            proptest::prop_assert!(decode(&record[..cut]).is_err());
        }
    }

    proptest::proptest! {
        /// tracefs `format` files are read from the running kernel: any text must parse or fail.
        #[test]
        fn no_format_text_panics_the_layout_parser(text in proptest::prelude::any::<String>()) {
            let _ = RecordLayout::parse(&text);
        }

        #[test]
        fn no_mutated_format_panics_the_layout_parser(line in 0..12usize, junk in r"[a-z_;: \t0-9\[\]]{0,40}") {
            let mut lines: Vec<&str> = FORMAT_6_18.lines().collect();
            if line < lines.len() {
                lines[line] = &junk;
            }
            let _ = RecordLayout::parse(&lines.join("\n"));
        }
    }
}
