//! The traffic slots: a per-CPU array row per cgroup (`NET_TRAFFIC_ROWS`), at the index its id
//! masked by the slot count gives, counted in when the slot's tag (`NET_TRAFFIC_TAGS`) names the
//! cgroup. An array row costs the cgroup_skb programs an inlined lookup where the hash by
//! (cgroup, direction) costs a hash of the key and a bucket walk.
//!
//! The agent gives the slots out: at each maintenance pass, a cgroup whose traffic the hash
//! holds gets its slot if no other cgroup holds it (two ids that share a slot: the second keeps
//! counting in the hash). A cgroup's counts are its hash entries plus its row, each of them
//! monotonic, so a slot given out between two scrapes moves nothing backwards. A slot whose
//! cgroup is gone is untagged, and its row zeroed and given out again only a pass later: a
//! program that read the tag before the untagging may still add to the row.

use std::{os::fd::AsFd as _, time::Duration};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, IterableMap as _, MapData, PerCpuArray},
    util::nr_cpus,
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
    /// Slots untagged at the last pass: zeroed and free at the next.
    cooling: Vec<u32>,
}

impl TrafficSlots {
    /// Takes the two maps out of the object; `slots` is their size (a power of two).
    pub fn take(ebpf: &mut Ebpf, slots: u32) -> anyhow::Result<Self> {
        Ok(Self {
            tags: Array::try_from(take_map(ebpf, CGROUP_TRAFFIC_TAGS_MAP)?)?,
            rows: PerCpuArray::try_from(take_map(ebpf, CGROUP_TRAFFIC_ROWS_MAP)?)?,
            slots,
            cooling: Vec::new(),
        })
    }

    fn slot_of(&self, cgroup_id: u64) -> u32 {
        (cgroup_id & u64::from(self.slots - 1)) as u32
    }

    /// (slot, cgroup id) of every tagged slot, ascending: the table in a batch call or two where
    /// the kernel has them, else a call a slot.
    fn tagged(&self) -> Vec<(u32, u64)> {
        let table = match batch::read_plain::<u32, u64>(self.tags.map().fd().as_fd()) {
            Ok(table) => table,
            Err(_) => {
                (0..self.slots).filter_map(|slot| self.tags.get(&slot, 0).ok().map(|id| (slot, id))).collect()
            }
        };
        let mut tagged: Vec<(u32, u64)> =
            table.into_iter().filter(|&(_, id)| id != OVERFLOW_CGROUP_ID).collect();
        tagged.sort_unstable();
        tagged
    }

    /// Each tagged slot's counts summed over CPUs, with its cgroup id, and how many rows could
    /// not be read.
    pub fn read(&self) -> (Vec<(u64, TrafficRow)>, u64) {
        let tagged = self.tagged();
        let indexes: Vec<u32> = tagged.iter().map(|&(slot, _)| slot).collect();
        let owner = |slot: u32| tagged[tagged.partition_point(|&(s, _)| s < slot)].1;
        let cpus = nr_cpus().map(|cpus| cpus.get() as usize).map_err(|(_, error)| error);
        let mut rows = Vec::with_capacity(tagged.len());
        let unreadable = batch::visit_array_indexes(
            self.rows.map().fd().as_fd(),
            cpus,
            &indexes,
            |slot| self.rows.get(&slot, 0).ok(),
            |slot, per_cpu: &[TrafficRow]| rows.push((owner(slot), sum(per_cpu))),
        );
        (rows, unreadable)
    }

    /// A maintenance pass: frees the slots untagged at the last one, untags the slots of
    /// cgroups gone for at least `grace` (`gone_for`), and gives each cgroup of `counted` (the
    /// ids the hash holds) its slot where that is free. Returns (untagged, given).
    pub fn maintain(
        &mut self,
        counted: &[u64],
        gone_for: &mut dyn FnMut(u64) -> Option<Duration>,
        grace: Duration,
    ) -> anyhow::Result<(usize, usize)> {
        for slot in std::mem::take(&mut self.cooling) {
            self.rows.set(slot, per_cpu_zeros()?, 0).context("zeroing a freed traffic slot")?;
        }
        // Slots tagged, and those untagged now (cooling until the next pass): not to give out.
        let mut busy = Vec::new();
        for (slot, id) in self.tagged() {
            busy.push(slot);
            if gone_for(id).is_some_and(|gone| gone >= grace) {
                self.tags.set(slot, &0, 0).context("untagging a traffic slot")?;
                self.cooling.push(slot);
            }
        }
        let untagged = self.cooling.len();
        let mut given = 0;
        for &id in counted {
            let slot = self.slot_of(id);
            if id == OVERFLOW_CGROUP_ID || busy.binary_search(&slot).is_ok() || gone_for(id).is_some() {
                continue;
            }
            // Zeroed first: a row that was never given out, or one an earlier agent left.
            self.rows.set(slot, per_cpu_zeros()?, 0).context("zeroing a traffic slot")?;
            self.tags.set(slot, &id, 0).context("tagging a traffic slot")?;
            busy.insert(busy.partition_point(|&s| s < slot), slot);
            given += 1;
        }
        Ok((untagged, given))
    }

    /// (map, slots in use, slots) for the map table.
    pub fn map_row(&self) -> MapRow {
        MapRow { map: CGROUP_TRAFFIC_ROWS_MAP, entries: self.tagged().len(), capacity: self.slots }
    }
}

fn sum(per_cpu: &[TrafficRow]) -> TrafficRow {
    per_cpu.iter().fold(TrafficRow::default(), |mut total, row| {
        total.ingress.packets = total.ingress.packets.wrapping_add(row.ingress.packets);
        total.ingress.bytes = total.ingress.bytes.wrapping_add(row.ingress.bytes);
        total.egress.packets = total.egress.packets.wrapping_add(row.egress.packets);
        total.egress.bytes = total.egress.bytes.wrapping_add(row.egress.bytes);
        total
    })
}
