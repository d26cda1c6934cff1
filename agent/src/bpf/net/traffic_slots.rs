//! The traffic slots: a per-CPU array row per cgroup (`NET_TRAFFIC_ROWS`), at the index its id
//! masked by the slot count gives, counted in when the slot's tag (`NET_TRAFFIC_TAGS`) names the
//! cgroup. An array row costs the cgroup_skb programs an inlined lookup where the hash by
//! (cgroup, direction) costs a hash of the key and a bucket walk.
//!
//! The agent gives the slots out and is the only writer of the tags, so it keeps them in memory
//! too (read back once, from a pinned map a previous agent filled): at each maintenance pass, a
//! cgroup whose traffic the hash holds gets its slot if no other cgroup holds it (two ids that
//! share a slot: the second keeps counting in the hash). A cgroup's counts are its hash entries
//! plus its row, each of them monotonic, so a slot given out between two scrapes moves nothing
//! backwards. A slot whose cgroup is gone is untagged, and given out again (its row zeroed
//! first) only at a later pass: a program that read the tag before the untagging may still add
//! to the row.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::AsFd as _,
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, IterableMap as _, MapData, PerCpuArray},
};
use kernsight_common::{
    counters::OVERFLOW_CGROUP_ID,
    net::{CGROUP_TRAFFIC_ROWS_MAP, CGROUP_TRAFFIC_TAGS_MAP, TrafficRow},
};

use crate::bpf::{batch, counters::per_cpu_zeros, family::MapRow, take_map};

pub struct TrafficSlots {
    tags: Array<MapData, u64>,
    rows: PerCpuArray<MapData, TrafficRow>,
    slots: u32,
    /// What `tags` holds: slot → cgroup id, for the slots in use.
    tagged: BTreeMap<u32, u64>,
}

impl TrafficSlots {
    /// Takes the two maps out of the object (`slots`: their size, a power of two) and reads the
    /// tags a previous agent left in them, if they are pinned ones.
    pub fn take(ebpf: &mut Ebpf, slots: u32) -> anyhow::Result<Self> {
        let tags: Array<MapData, u64> = Array::try_from(take_map(ebpf, CGROUP_TRAFFIC_TAGS_MAP)?)?;
        let table = match batch::read_plain::<u32, u64>(tags.map().fd().as_fd()) {
            Ok(table) => table,
            Err(_) => (0..slots).filter_map(|slot| tags.get(&slot, 0).ok().map(|id| (slot, id))).collect(),
        };
        let tagged = table.into_iter().filter(|&(_, id)| id != OVERFLOW_CGROUP_ID).collect();
        let rows = PerCpuArray::try_from(take_map(ebpf, CGROUP_TRAFFIC_ROWS_MAP)?)?;
        Ok(Self { tags, rows, slots, tagged })
    }

    /// Each tagged slot's counts summed over CPUs, with its cgroup id, and how many rows could
    /// not be read.
    pub fn read(&self) -> (Vec<(u64, TrafficRow)>, u64) {
        batch::read_tagged_rows(&self.rows, &self.tagged)
    }

    /// A maintenance pass: untags the slots of cgroups gone for at least `grace` (`gone_for`),
    /// and gives each cgroup of `counted` (the ids the hash holds) its slot where that is free
    /// and was not in use at the start of the pass. Returns (untagged, given).
    pub fn maintain(
        &mut self,
        counted: &[u64],
        gone_for: &mut dyn FnMut(u64) -> Option<Duration>,
        grace: Duration,
    ) -> anyhow::Result<(usize, usize)> {
        // Slots tagged at the start of the pass, and those given during it: not to give out. A
        // slot untagged now waits for a later pass.
        let mut busy: BTreeSet<u32> = self.tagged.keys().copied().collect();
        let gone: Vec<u32> = self
            .tagged
            .iter()
            .filter(|&(_, &id)| gone_for(id).is_some_and(|gone| gone >= grace))
            .map(|(&slot, _)| slot)
            .collect();
        for &slot in &gone {
            self.tags.set(slot, &0, 0).context("untagging a traffic slot")?;
            self.tagged.remove(&slot);
        }
        let mut given = 0;
        for &id in counted {
            let slot = (id & u64::from(self.slots - 1)) as u32;
            if id == OVERFLOW_CGROUP_ID || busy.contains(&slot) || gone_for(id).is_some() {
                continue;
            }
            // Zeroed first: what its last cgroup, or an earlier agent, left there.
            self.rows.set(slot, per_cpu_zeros()?, 0).context("zeroing a traffic slot")?;
            self.tags.set(slot, &id, 0).context("tagging a traffic slot")?;
            self.tagged.insert(slot, id);
            busy.insert(slot);
            given += 1;
        }
        Ok((gone.len(), given))
    }

    /// (map, slots in use, slots) for the map table.
    pub fn map_row(&self) -> MapRow {
        MapRow { map: CGROUP_TRAFFIC_ROWS_MAP, entries: self.tagged.len(), capacity: self.slots }
    }
}
