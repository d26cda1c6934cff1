//! `kernsight_block_io_operations_total`, `kernsight_block_io_bytes_total` and the histogram
//! `kernsight_block_io_latency_seconds`: block I/O by workload, device and op, read from the
//! `block_io` family's map on each scrape.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
};

use kernsight_common::{
    block_io::{BlockIoKey, device_numbers, op_name, slot},
    counters::LATENCY_SUM_BUCKET,
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    LabelNames, Series, encode_counters,
    histogram::{Latency, encode_histogram},
    naming::CgroupNamer,
};
use crate::{
    bpf::{Programs, block_io::BlockIoMaps},
    kernel::block_devices::{device_label, device_name},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

/// The labels of the device past the cap (and of the overflow keys, which carry none).
const OTHER_DEVICE: &str = "other";

#[derive(Debug)]
pub struct BlockIoCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    /// Where sysfs is (`/sys`), for device names.
    sys: PathBuf,
    max_devices: usize,
}

impl BlockIoCollector {
    pub fn new(
        programs: Arc<Programs>,
        tracker: Arc<Tracker>,
        resolver: Arc<Resolver>,
        max_devices: usize,
    ) -> Self {
        Self { programs, tracker, resolver, sys: PathBuf::from("/sys"), max_devices }
    }
}

/// One series' counts.
#[derive(Default)]
struct Io {
    operations: u64,
    bytes: u64,
    latency: Latency,
}

/// (`device` label, `device_name` label) of every device the rows name: the first
/// `max_devices` in number order by name, the rest (and device 0, the overflow keys') `other`.
fn device_labels(
    sys: &std::path::Path,
    devices: &BTreeSet<u32>,
    max_devices: usize,
) -> BTreeMap<u32, (String, String)> {
    let other = || (OTHER_DEVICE.to_owned(), OTHER_DEVICE.to_owned());
    let mut named = 0;
    devices
        .iter()
        .map(|&device| {
            if device == 0 || named >= max_devices {
                return (device, other());
            }
            named += 1;
            let (major, minor) = device_numbers(device);
            let name = device_name(sys, major, minor).unwrap_or_default();
            (device, (device_label(major, minor), name))
        })
        .collect()
}

impl Collector for BlockIoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let Some(rows) = self.programs.family::<BlockIoMaps>().map(|maps| maps.read().0) else {
            return Ok(());
        };
        let rows: Vec<(BlockIoKey, u64)> = rows.into_iter().filter(|(_, v)| *v > 0).collect();
        let devices: BTreeSet<u32> = rows.iter().map(|(key, _)| key.device).collect();
        let labels_of = device_labels(&self.sys, &devices, self.max_devices);
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let names = LabelNames::of(&self.resolver);
        let mut series: BTreeMap<IoKey, Io> = BTreeMap::new();
        for (key, value) in rows {
            let (Some(op), Some(device)) = (op_name(key.op), labels_of.get(&key.device)) else { continue };
            let io = series.entry((namer.name(key.cgroup_id), device, op)).or_default();
            match key.slot {
                slot::OPERATIONS => io.operations += value,
                slot::BYTES => io.bytes += value,
                bucket if u32::from(bucket) <= LATENCY_SUM_BUCKET => io.latency.add(u32::from(bucket), value),
                _ => {}
            }
        }
        drop(namer); // every cgroup named: the index goes before the encoding
        let labels = |key| io_labels(&names, key);
        encode_counters(
            &mut encoder,
            "kernsight_block_io_operations",
            "Block I/O requests completed, by workload (the cgroup that issued them), device (major:minor and kernel name) and op: read, write or other (flush, discard...)",
            series.iter().map(|(key, io)| (labels(key), io.operations)),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_block_io_bytes",
            "Bytes of block I/O completed, by workload (the cgroup that issued them), device and op",
            series.iter().map(|(key, io)| (labels(key), io.bytes)),
        )?;
        let mut family = encoder.encode_descriptor(
            "kernsight_block_io_latency_seconds",
            "Block I/O requests from issue to the driver to completion, by workload, device and op; log2 buckets in the kernel",
            None,
            MetricType::Histogram,
        )?;
        for (key, io) in &series {
            encode_histogram(&mut family, &labels(key), &io.latency)?;
        }
        Ok(())
    }
}

/// A block I/O series: workload, device (its label and name) and op.
type IoKey<'a> = (Arc<Workload>, &'a (String, String), &'static str);

/// The labels of a block I/O series: its workload's, then the device's and the op.
fn io_labels<'a>(names: &'a LabelNames, (workload, (device, name), op): &'a IoKey) -> Series<'a> {
    Series::of(workload, names).with("device", device).with("device_name", name).with("op", op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_past_the_cap_and_the_overflow_device_are_other() {
        let sys = tempfile::tempdir().unwrap();
        let loop0 = sys.path().join("dev/block/7:0");
        std::fs::create_dir_all(&loop0).unwrap();
        std::fs::write(loop0.join("uevent"), "MAJOR=7\nMINOR=0\nDEVNAME=loop0\n").unwrap();
        let devices: BTreeSet<u32> = [0, 7 << 20, 7 << 20 | 1, 8 << 20].into();
        let labels = device_labels(sys.path(), &devices, 2);
        assert_eq!(labels[&0], ("other".to_owned(), "other".to_owned()));
        assert_eq!(labels[&(7 << 20)], ("7:0".to_owned(), "loop0".to_owned()));
        assert_eq!(labels[&(7 << 20 | 1)], ("7:1".to_owned(), String::new()), "gone: no name");
        assert_eq!(labels[&(8 << 20)], ("other".to_owned(), "other".to_owned()), "past the cap");
    }
}
