//! A whole per-CPU hash map in a few `bpf(2)` calls, with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+).
//! Iterating takes two calls a key (the next key, then its values); at 1,000 containers the
//! agent's maps hold some 50,000 keys, and those calls (each also a syscall the agent's own
//! accounting counts) were the largest part of a scrape. aya has no binding for the command:
//! this is the raw call. A kernel or map that refuses it is read by iteration instead.

use std::{
    collections::BTreeMap,
    io,
    mem::size_of,
    ops::Deref,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    maps::{IterableMap as _, MapData, PerCpuArray},
    util::nr_cpus,
};

use kernsight_common::{
    counters::LatencyCell,
    net::{InterfaceRow, Traffic, TrafficRow},
};

/// `enum bpf_cmd`'s `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;

/// Most keys asked for per call; a hash bucket holding more makes the kernel answer ENOSPC, and
/// the call is made again for twice as many.
const MAX_CHUNK: usize = 4096;

/// Room for the values of one call: a node with 256 CPUs asks for fewer keys at a time rather
/// than for a buffer of megabytes.
const VALUES_BUFFER_BYTES: usize = 1 << 20;

/// Keys asked for per call on a node with `cpus` possible CPUs, for values of `value_bytes`.
fn first_chunk(cpus: usize, value_bytes: usize) -> usize {
    (VALUES_BUFFER_BYTES / (value_bytes.max(1) * cpus.max(1))).clamp(1, MAX_CHUNK)
}

/// A per-CPU map value whose CPUs' values add up to the whole: a count, a latency cell, packets
/// and bytes. Its size is a multiple of 8 bytes, as the kernel lays out per-CPU values.
pub trait PerCpuSum: aya::Pod + Default {
    fn add(&mut self, other: &Self);
}

impl PerCpuSum for u64 {
    fn add(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
}

impl PerCpuSum for LatencyCell {
    fn add(&mut self, other: &Self) {
        self.count = self.count.wrapping_add(other.count);
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }
}

impl PerCpuSum for Traffic {
    fn add(&mut self, other: &Self) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

impl PerCpuSum for TrafficRow {
    fn add(&mut self, other: &Self) {
        self.ingress.add(&other.ingress);
        self.egress.add(&other.egress);
    }
}

impl PerCpuSum for InterfaceRow {
    fn add(&mut self, other: &Self) {
        let cells = self.by_protocol.iter_mut().flatten();
        for (total, value) in cells.zip(other.by_protocol.iter().flatten()) {
            total.add(value);
        }
    }
}

/// The values of one key on every CPU, added up.
pub fn sum_over_cpus<'a, V: PerCpuSum>(per_cpu: impl IntoIterator<Item = &'a V>) -> V {
    per_cpu.into_iter().fold(V::default(), |mut total, value| {
        total.add(value);
        total
    })
}

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One `BPF_MAP_LOOKUP_BATCH` call; the kernel writes how many entries it filled to
/// `attr.count`.
///
/// # Safety
/// `attr`'s buffers hold `attr.count` keys and values as the map lays them out, and its cursors
/// a key each.
unsafe fn lookup_batch(attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the caller's.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, attr as *mut BatchAttr, size_of::<BatchAttr>())
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Every key of the per-CPU hash map `fd` with its values summed over the `cpus` possible CPUs.
/// `Err` when the kernel refuses the command (before 5.6, or a map type without it): the caller
/// iterates instead.
pub fn read_summed<K: aya::Pod, V: PerCpuSum>(fd: BorrowedFd, cpus: usize) -> io::Result<Vec<(K, V)>> {
    const { assert!(size_of::<V>().is_multiple_of(8), "per-CPU values are laid out 8 bytes apart") };
    read_in_chunks(fd, cpus, first_chunk(cpus, size_of::<V>()))
}

/// Every key and value of a map whose values are not per-CPU (an array: every index), as a
/// per-CPU map of one CPU is laid out. `Err` as for `read_summed`.
pub fn read_plain<K: aya::Pod, V: PerCpuSum>(fd: BorrowedFd) -> io::Result<Vec<(K, V)>> {
    read_summed(fd, 1)
}

/// As `read_summed`, asking for `chunk` keys a call at first.
fn read_in_chunks<K: aya::Pod, V: PerCpuSum>(
    fd: BorrowedFd,
    cpus: usize,
    mut chunk: usize,
) -> io::Result<Vec<(K, V)>> {
    let mut rows = Vec::new();
    // Where the next call starts: the kernel's own cursor, which it writes to `out_batch` (a
    // bucket number for hash maps; 64 bytes hold any map's).
    let (mut cursor, mut next) = ([0u64; 8], [0u64; 8]);
    let mut started = false;
    loop {
        // SAFETY: `K: Pod` is plain data, valid for any bytes, zeroes included.
        let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; chunk];
        let mut values = vec![V::default(); chunk * cpus];
        let mut attr = BatchAttr {
            in_batch: if started { cursor.as_ptr() as u64 } else { 0 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers hold `count` keys and `count * cpus` values (`V` is a multiple of 8
        // bytes, as per-CPU values are laid out), and outlive the call.
        let done = if let Err(error) = unsafe { lookup_batch(&mut attr) } {
            match error.raw_os_error() {
                Some(libc::ENOENT) => true, // the last entries (maybe none) are in the buffers
                // One bucket holds more keys than were asked for: the same call, wider.
                Some(libc::ENOSPC) if chunk < 1 << 20 => {
                    chunk *= 2;
                    continue;
                }
                _ => return Err(error),
            }
        } else {
            false
        };
        // The kernel wrote back how many entries it filled.
        let filled = (attr.count as usize).min(chunk);
        for (key, per_cpu) in keys.into_iter().zip(values.chunks_exact(cpus)).take(filled) {
            rows.push((key, sum_over_cpus(per_cpu)));
        }
        if done {
            return Ok(rows);
        }
        cursor = next;
        started = true;
    }
}

/// Unwanted indexes read through between two wanted ones, at most, rather than a call made anew:
/// reading an unused slot's row costs less than a syscall.
const GAP_READ_THROUGH: u32 = 8;

/// The values of the `wanted` indexes (ascending, each once) of a per-CPU array
/// (`BPF_MAP_TYPE_PERCPU_ARRAY`), each index handed to `visit` with its `cpus` possible CPUs'
/// values: a call per run of nearby indexes, into one buffer, where the kernel has the command
/// (5.6+), rather than a call and an allocation per index. Returns how many wanted indexes the
/// map did not have (past its end). `Err` when a call fails (the kernel refuses the command on
/// its first): the indexes visited until then were visited once, in order, and the caller
/// reads the rest another way.
pub fn read_array_indexes<V: aya::Pod + Default>(
    fd: BorrowedFd,
    cpus: usize,
    wanted: &[u32],
    mut visit: impl FnMut(u32, &[V]),
) -> io::Result<u64> {
    const { assert!(size_of::<V>().is_multiple_of(8), "per-CPU values are laid out 8 bytes apart") };
    let cpus = cpus.max(1);
    let (Some(&lowest), Some(&highest)) = (wanted.first(), wanted.last()) else { return Ok(0) };
    // No larger than the indexes wanted span: a few slots in use must not cost a megabyte of
    // buffer, zeroed at every scrape.
    let chunk = first_chunk(cpus, size_of::<V>()).min((highest - lowest) as usize + 1);
    let mut keys = vec![0u32; chunk];
    let mut values = vec![V::default(); chunk * cpus];
    let mut missing = 0;
    let mut rest = wanted;
    while let Some(&first) = rest.first() {
        // One run: wanted indexes at most `GAP_READ_THROUGH` apart, `chunk` indexes in all.
        let mut taken = 1;
        while let Some(&next) = rest.get(taken)
            && next - rest[taken - 1] <= GAP_READ_THROUGH + 1
            && ((next - first) as usize) < chunk
        {
            taken += 1;
        }
        let (run, after) = rest.split_at(taken);
        let count = (run[run.len() - 1] - first) as usize + 1;
        // The kernel starts after the index in `in_batch` (none: at index 0), and writes the
        // last index it read to `out_batch`.
        let before = first.checked_sub(1);
        let mut last = [0u32; 16];
        let mut attr = BatchAttr {
            in_batch: before.as_ref().map_or(0, |b| b as *const u32 as u64),
            out_batch: last.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: count as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers hold `chunk >= count` keys and `chunk * cpus` values (`V` is a
        // multiple of 8 bytes, as per-CPU values are laid out), and outlive the call; the
        // cursors hold a key.
        match unsafe { lookup_batch(&mut attr) } {
            // ENOENT: the map ended within the run; what it had is in the buffers.
            Err(error) if error.raw_os_error() != Some(libc::ENOENT) => return Err(error),
            _ => {}
        }
        let filled = (attr.count as usize).min(count);
        let mut wanted_in_run = run.iter().peekable();
        for (&key, per_cpu) in keys.iter().zip(values.chunks_exact(cpus)).take(filled) {
            while wanted_in_run.next_if(|&&index| index < key).is_some() {
                missing += 1;
            }
            if wanted_in_run.next_if_eq(&&key).is_some() {
                visit(key, per_cpu);
            }
        }
        missing += wanted_in_run.count() as u64;
        rest = after;
    }
    Ok(missing)
}

/// The `wanted` indexes (ascending, each once) of the per-CPU array `fd` handed to `visit`, as
/// `read_array_indexes` reads them; where the kernel refuses the batch command (before 5.6) or
/// a call fails, the indexes after the last one visited are read by `one` (a lookup of one
/// index, `None` if it fails: aya's `PerCpuArray::get`). Each index is visited once, in order.
/// Returns how many wanted indexes could not be read.
pub fn visit_array_indexes<V: aya::Pod + Default, P: Deref<Target: AsRef<[V]>>>(
    fd: BorrowedFd,
    cpus: io::Result<usize>,
    wanted: &[u32],
    one: impl FnMut(u32) -> Option<P>,
    visit: impl FnMut(u32, &[V]),
) -> u64 {
    let batched =
        |wanted: &[u32], visit: &mut dyn FnMut(u32, &[V])| read_array_indexes(fd, cpus?, wanted, visit);
    visit_batched_then_one_by_one(wanted, batched, one, visit)
}

/// The rows of the tagged slots of the per-CPU array `rows` (slot → tag, as the agent gave them
/// out), each summed over CPUs with its tag, and how many of them could not be read.
pub fn read_tagged_rows<V: PerCpuSum, Tag: Copy>(
    rows: &PerCpuArray<MapData, V>,
    tagged: &BTreeMap<u32, Tag>,
) -> (Vec<(Tag, V)>, u64) {
    let slots: Vec<u32> = tagged.keys().copied().collect();
    let cpus = nr_cpus().map(|cpus| cpus.get() as usize).map_err(|(_, error)| error);
    let mut read = Vec::with_capacity(slots.len());
    let unreadable = visit_array_indexes(
        rows.map().fd().as_fd(),
        cpus,
        &slots,
        |slot| rows.get(&slot, 0).ok(),
        |slot, per_cpu: &[V]| {
            if let Some(&tag) = tagged.get(&slot) {
                read.push((tag, sum_over_cpus(per_cpu)));
            }
        },
    );
    (read, unreadable)
}

/// `visit_array_indexes` with its batch reader given: the seam its tests fail a batch through.
fn visit_batched_then_one_by_one<V, P: Deref<Target: AsRef<[V]>>>(
    wanted: &[u32],
    batched: impl FnOnce(&[u32], &mut dyn FnMut(u32, &[V])) -> io::Result<u64>,
    mut one: impl FnMut(u32) -> Option<P>,
    mut visit: impl FnMut(u32, &[V]),
) -> u64 {
    let mut read_through = None;
    let mut visited = |index, per_cpu: &[V]| {
        read_through = Some(index);
        visit(index, per_cpu);
    };
    if let Ok(missing) = batched(wanted, &mut visited) {
        return missing;
    }
    let rest = wanted.iter().filter(|&&index| read_through.is_none_or(|done| index > done));
    let mut unreadable = 0;
    for &index in rest {
        match one(index) {
            Some(per_cpu) => visit(index, per_cpu.deref().as_ref()),
            None => unreadable += 1,
        }
    }
    unreadable
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use kernsight_common::syscalls::SyscallRow;

    use super::*;
    use crate::testing::privileged;

    /// `union bpf_attr` for BPF_MAP_CREATE (0), BPF_MAP_LOOKUP_ELEM (1) and BPF_MAP_UPDATE_ELEM
    /// (2), as far as used.
    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct UpdateAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<i64> {
        // SAFETY: `attr` is the command's attribute, as the kernel lays it out.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
        if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
    }

    /// A per-CPU hash map of u64 keys and `value_size`-byte values (`BPF_MAP_TYPE_PERCPU_HASH`),
    /// made for the test.
    fn per_cpu_hash(max_entries: u32, value_size: u32) -> OwnedFd {
        let mut attr = CreateAttr { map_type: 5, key_size: 8, value_size, max_entries, map_flags: 0 };
        let fd = bpf(0, &mut attr).expect("BPF_MAP_CREATE");
        // SAFETY: the kernel just returned this descriptor, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    /// Sets `key`'s values (one per CPU in a per-CPU map, else one).
    fn update<K, V>(map: &OwnedFd, key: K, per_cpu: &[V]) {
        let mut attr = UpdateAttr {
            map_fd: map.as_raw_fd() as u32,
            key: &key as *const K as u64,
            value: per_cpu.as_ptr() as u64,
            ..UpdateAttr::default()
        };
        bpf(2, &mut attr).expect("BPF_MAP_UPDATE_ELEM");
    }

    #[test]
    fn a_batch_read_returns_every_key_once_with_its_cpus_summed() {
        if !privileged("a_batch_read_returns_every_key_once_with_its_cpus_summed") {
            return;
        }
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        let map = per_cpu_hash(3000, 8);
        // Key k holds k on CPU 0, 2k on CPU 1, ...: the sum is k * (1 + 2 + ... + cpus).
        let keys = 2500u64;
        for key in 1..=keys {
            let per_cpu: Vec<u64> = (1..=cpus as u64).map(|cpu| key * cpu).collect();
            update(&map, key, &per_cpu);
        }
        let weight = (cpus * (cpus + 1) / 2) as u64;
        // One key a call (a bucket of two makes the kernel refuse, ENOSPC, and the call widen),
        // a few, and the default.
        for chunk in [1, 7, first_chunk(cpus, 8)] {
            let mut rows: Vec<(u64, u64)> =
                read_in_chunks(map.as_fd(), cpus, chunk).expect("BPF_MAP_LOOKUP_BATCH");
            rows.sort_unstable();
            assert_eq!(rows.len(), keys as usize, "every key once, {chunk} a call");
            for (expected, (key, sum)) in (1..=keys).zip(rows) {
                assert_eq!((key, sum), (expected, expected * weight), "{chunk} a call");
            }
        }
        let empty = per_cpu_hash(16, 8);
        assert!(read_summed::<u64, u64>(empty.as_fd(), cpus).unwrap().is_empty(), "an empty map");
    }

    #[test]
    fn latency_cells_are_summed_field_by_field() {
        if !privileged("latency_cells_are_summed_field_by_field") {
            return;
        }
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        let map = per_cpu_hash(600, 16);
        // Key k holds (k, 1000 k) on CPU 0, (2k, 2000 k) on CPU 1, ...
        let keys = 500u64;
        for key in 1..=keys {
            let per_cpu: Vec<LatencyCell> = (1..=cpus as u64)
                .map(|cpu| LatencyCell { count: key * cpu, sum_nanos: 1000 * key * cpu })
                .collect();
            update(&map, key, &per_cpu);
        }
        let weight = (cpus * (cpus + 1) / 2) as u64;
        for chunk in [1, first_chunk(cpus, 16)] {
            let mut rows: Vec<(u64, LatencyCell)> =
                read_in_chunks(map.as_fd(), cpus, chunk).expect("BPF_MAP_LOOKUP_BATCH");
            rows.sort_unstable_by_key(|(key, _)| *key);
            assert_eq!(rows.len(), keys as usize, "every key once, {chunk} a call");
            for (expected, (key, cell)) in (1..=keys).zip(rows) {
                let summed = LatencyCell { count: expected * weight, sum_nanos: 1000 * expected * weight };
                assert_eq!((key, cell), (expected, summed), "{chunk} a call");
            }
        }
    }

    #[test]
    fn an_array_is_read_whole_index_by_index() {
        if !privileged("an_array_is_read_whole_index_by_index") {
            return;
        }
        // BPF_MAP_TYPE_ARRAY of u32 indexes and u64 values: a cgroup slot table's shape.
        let mut attr =
            CreateAttr { map_type: 2, key_size: 4, value_size: 8, max_entries: 5000, map_flags: 0 };
        let fd = bpf(0, &mut attr).expect("BPF_MAP_CREATE");
        // SAFETY: the kernel just returned this descriptor, owned by nobody else.
        let array = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        for index in [0u32, 1, 4095, 4096, 4999] {
            update(&array, index, &[u64::from(index) * 3 + 1]);
        }
        // More indexes than one call asks for: two calls.
        let rows: Vec<(u32, u64)> = read_plain(array.as_fd()).expect("BPF_MAP_LOOKUP_BATCH on an array");
        assert_eq!(rows.len(), 5000, "every index once");
        let set: Vec<(u32, u64)> = rows.into_iter().filter(|&(_, value)| value != 0).collect();
        assert_eq!(set, [0u32, 1, 4095, 4096, 4999].map(|index| (index, u64::from(index) * 3 + 1)));
    }

    /// Index `index`'s row on CPU `cpu` in `slot_table`: `index + 1000 cpu` in its column
    /// `index % 512`, and `cpu` in column 0.
    fn row(index: u32, cpu: usize) -> SyscallRow {
        let mut row = SyscallRow::default();
        row.calls[index as usize % 512] += u64::from(index) + 1000 * cpu as u64;
        row.calls[0] += cpu as u64;
        row
    }

    /// A per-CPU array of `entries` 4 KiB rows (`BPF_MAP_TYPE_PERCPU_ARRAY`, a syscall slot
    /// table's shape), each index's rows as `row` makes them.
    fn slot_table(entries: u32, cpus: usize) -> OwnedFd {
        let mut attr =
            CreateAttr { map_type: 6, key_size: 4, value_size: 4096, max_entries: entries, map_flags: 0 };
        let fd = bpf(0, &mut attr).expect("BPF_MAP_CREATE");
        // SAFETY: the kernel just returned this descriptor, owned by nobody else.
        let array = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        for index in 0..entries {
            let per_cpu: Vec<SyscallRow> = (0..cpus).map(|cpu| row(index, cpu)).collect();
            update(&array, index, &per_cpu);
        }
        array
    }

    /// `index`'s rows on every CPU, looked up alone (BPF_MAP_LOOKUP_ELEM); `None` past the end.
    fn lookup_rows(array: &OwnedFd, index: u32, cpus: usize) -> Option<Vec<SyscallRow>> {
        let mut rows = vec![SyscallRow::default(); cpus];
        let mut attr = UpdateAttr {
            map_fd: array.as_raw_fd() as u32,
            key: &index as *const u32 as u64,
            value: rows.as_mut_ptr() as u64,
            ..UpdateAttr::default()
        };
        bpf(1, &mut attr).ok().map(|_| rows)
    }

    #[test]
    fn the_indexes_a_failed_batch_left_are_read_one_by_one_each_once() {
        if !privileged("the_indexes_a_failed_batch_left_are_read_one_by_one_each_once") {
            return;
        }
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        let entries = 300u32;
        let array = slot_table(entries, cpus);
        let wanted = [0u32, 1, 5, 40, 41, 42, 100, entries - 1, entries, entries + 1];
        let in_map = &wanted[..wanted.len() - 2];
        let one = |index| lookup_rows(&array, index, cpus);
        // Checks each visited index's rows, and notes the index.
        fn check(cpus: usize, seen: &mut Vec<u32>) -> impl FnMut(u32, &[SyscallRow]) + '_ {
            move |index, per_cpu| {
                assert_eq!(per_cpu.len(), cpus, "index {index}: a row per CPU");
                for (cpu, values) in per_cpu.iter().enumerate() {
                    assert_eq!(values.calls, row(index, cpu).calls, "index {index}, CPU {cpu}");
                }
                seen.push(index);
            }
        }
        // A batch that fails at once (a kernel without the command), after some indexes (a call
        // that fails midway), and after every index the map has.
        for read_first in [0, 3, in_map.len()] {
            let batched = |wanted: &[u32], visit: &mut dyn FnMut(u32, &[SyscallRow])| {
                read_array_indexes(array.as_fd(), cpus, &wanted[..read_first], visit)?;
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            };
            let mut seen = Vec::new();
            let unreadable = visit_batched_then_one_by_one(&wanted, batched, one, check(cpus, &mut seen));
            assert_eq!(seen, in_map, "failed after {read_first}: every index in the map, once, in order");
            assert_eq!(unreadable, 2, "failed after {read_first}: the two past the map's end");
        }
        // Through the public function: the CPUs not known (all one by one), and known (batched).
        for cpus_known in [false, true] {
            let known = if cpus_known { Ok(cpus) } else { Err(io::Error::other("no possible CPUs")) };
            let mut seen = Vec::new();
            let unreadable = visit_array_indexes(array.as_fd(), known, &wanted, one, check(cpus, &mut seen));
            assert_eq!((seen.as_slice(), unreadable), (in_map, 2), "CPUs known: {cpus_known}");
        }
    }

    #[test]
    fn the_wanted_indexes_of_a_per_cpu_array_are_read_in_runs_each_once() {
        if !privileged("the_wanted_indexes_of_a_per_cpu_array_are_read_in_runs_each_once") {
            return;
        }
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        let entries = 1200u32;
        let array = slot_table(entries, cpus);
        // Index 0, runs longer than a call's buffer, gaps read through and gaps too long to,
        // a lone index at the end, and indexes past the map's end.
        let mut wanted: Vec<u32> = [0, 1, 2, 9, 20, 21].into();
        wanted.extend((100..400).step_by(3));
        wanted.extend((500..900).step_by(40));
        wanted.extend([entries - 1, entries, entries + 5]);
        let mut seen = Vec::new();
        let missing = read_array_indexes::<SyscallRow>(array.as_fd(), cpus, &wanted, |index, per_cpu| {
            assert_eq!(per_cpu.len(), cpus, "index {index}: a row per CPU");
            for (cpu, values) in per_cpu.iter().enumerate() {
                assert_eq!(values.calls, row(index, cpu).calls, "index {index}, CPU {cpu}");
            }
            seen.push(index);
        })
        .expect("BPF_MAP_LOOKUP_BATCH on a per-CPU array");
        assert_eq!(missing, 2, "the two indexes past the map's end");
        assert_eq!(seen, wanted[..wanted.len() - 2], "every wanted index in the map, once, in order");
        let mut none = 0;
        let missing = read_array_indexes::<SyscallRow>(array.as_fd(), cpus, &[], |_, _| none += 1);
        assert_eq!((missing.expect("nothing asked"), none), (0, 0));
    }

    #[test]
    fn a_call_asks_for_fewer_keys_on_a_node_with_more_cpus() {
        assert_eq!(first_chunk(2, 8), MAX_CHUNK);
        assert_eq!(first_chunk(256, 8), 512, "1 MiB of values: 512 keys of 256 CPUs");
        assert_eq!(first_chunk(256, 16), 256, "values twice as wide: half the keys");
        assert_eq!(first_chunk(1 << 20, 8), 1);
        assert_eq!(first_chunk(0, 8), MAX_CHUNK);
    }
}
