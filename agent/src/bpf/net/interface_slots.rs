//! The interface slots of the TC and XDP families: a per-CPU array row per watched interface
//! (`NET_TC_ROWS`, `NET_XDP_ROWS`), at the index its interface index masked by the slot count
//! gives, counted in when the slot's tag (`NET_TC_TAGS`, `NET_XDP_TAGS`) names the interface.
//! An array row costs the programs an inlined lookup where their hash costs a hash of the key
//! and a bucket walk.
//!
//! Unlike the cgroup traffic slots, these are given out once, at attach time: the agent knows
//! the interfaces it watches. An interface's counts are its hash entries (what it counted
//! before its slot was tagged, and all of them when another interface holds its slot) plus its
//! row. A pinned row whose tag already names the same interface index keeps its counts, as the
//! pinned hash does; any other is zeroed before it is tagged.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use kernsight_common::net::{INTERFACE_SLOTS, InterfaceRow};

use crate::bpf::{batch, counters::per_cpu_zeros, family::MapRow, take_map};

pub struct InterfaceSlots {
    rows: PerCpuArray<MapData, InterfaceRow>,
    rows_map: &'static str,
    /// What the tags map holds: slot → interface index, for the slots in use.
    tagged: BTreeMap<u32, u32>,
}

/// The slot an interface index counts in.
fn slot_of(ifindex: u32) -> u32 {
    ifindex & (INTERFACE_SLOTS - 1)
}

/// Slot → interface index for `ifindexes`, in order: the first of two that share a slot gets it.
fn plan(ifindexes: &[u32]) -> BTreeMap<u32, u32> {
    let mut tagged = BTreeMap::new();
    for &ifindex in ifindexes.iter().filter(|&&ifindex| ifindex != 0) {
        tagged.entry(slot_of(ifindex)).or_insert(ifindex);
    }
    tagged
}

impl InterfaceSlots {
    /// Takes the maps `[tags, rows]` out of the object and tags a slot for each of `ifindexes`
    /// (the interfaces the programs are attached to), untagging every other.
    pub fn claim(
        ebpf: &mut Ebpf,
        [tags_map, rows_map]: [&'static str; 2],
        ifindexes: &[u32],
    ) -> anyhow::Result<Self> {
        let mut tags: Array<MapData, u32> = Array::try_from(take_map(ebpf, tags_map)?)?;
        let mut rows: PerCpuArray<MapData, InterfaceRow> = PerCpuArray::try_from(take_map(ebpf, rows_map)?)?;
        let tagged = plan(ifindexes);
        for slot in 0..INTERFACE_SLOTS {
            let wanted = tagged.get(&slot).copied().unwrap_or(0);
            let held = tags.get(&slot, 0).context("reading an interface slot's tag")?;
            if held == wanted {
                continue;
            }
            // Untagged before the row is zeroed: a program that reads the tag meanwhile counts
            // in the hash, not in a row about to be cleared.
            tags.set(slot, &0, 0).context("untagging an interface slot")?;
            if wanted != 0 {
                rows.set(slot, per_cpu_zeros()?, 0).context("zeroing an interface slot")?;
                tags.set(slot, &wanted, 0).context("tagging an interface slot")?;
            }
        }
        Ok(Self { rows, rows_map, tagged })
    }

    /// Each tagged slot's counts summed over CPUs, with its interface index, and how many rows
    /// could not be read.
    pub fn read(&self) -> (Vec<(u32, InterfaceRow)>, u64) {
        batch::read_tagged_rows(&self.rows, &self.tagged)
    }

    /// (map, slots in use, slots) for the map table.
    pub fn map_row(&self) -> MapRow {
        MapRow { map: self.rows_map, entries: self.tagged.len(), capacity: INTERFACE_SLOTS }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_two_interfaces_that_share_a_slot_gets_it() {
        let slots = INTERFACE_SLOTS;
        let tagged = plan(&[2, 2 + slots, 3, 0, 1 + 4 * slots]);
        assert_eq!(tagged, BTreeMap::from([(1, 1 + 4 * slots), (2, 2), (3, 3)]));
    }
}
