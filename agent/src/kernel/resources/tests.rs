use std::{ffi::CString, fs, path::Path, time::Duration};

use proptest::prelude::*;

use super::*;
use crate::{kernel::mountinfo, testing::privileged};

const MIB: u64 = 1 << 20;

/// v2 memory.stat of a container (Linux 6.x).
const V2_MEMORY_STAT: &str = "\
anon 17145856
file 8925184
kernel 1863680
kernel_stack 98304
pagetables 344064
sec_pagetables 0
percpu 1440
sock 4096
vmalloc 0
shmem 270336
zswap 0
zswapped 0
file_mapped 4542464
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 17408000
active_anon 8192
inactive_file 3158016
active_file 5496832
unevictable 0
slab_reclaimable 912576
slab_unreclaimable 488872
slab 1401448
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgfault 18453
pgmajfault 12
thp_fault_alloc 0
thp_collapse_alloc 0
";

/// v2 memory.stat of a 5.10 kernel: no "kernel" key.
const V2_MEMORY_STAT_5_10: &str = "\
anon 4096000
file 1024000
kernel_stack 16384
pagetables 65536
percpu 480
sock 0
shmem 0
slab 200000
";

/// v1 memory.stat (hierarchy with total_* lines).
const V1_MEMORY_STAT: &str = "\
cache 9822208
rss 5521408
rss_huge 0
shmem 8998912
mapped_file 7598080
dirty 24576
writeback 0
swap 0
pgpgin 40511
pgpgout 36765
pgfault 49981
pgmajfault 0
inactive_anon 0
active_anon 1531904
inactive_file 36864
active_file 786432
unevictable 12988416
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 6923857920
total_rss 121085952
total_rss_huge 0
total_shmem 9084928
total_mapped_file 130985984
total_dirty 191922176
total_writeback 0
total_swap 0
total_pgpgin 88961191
";

const V2_CPU_STAT: &str = "\
usage_usec 2927073187
user_usec 2187524456
system_usec 739548731
core_sched.force_idle_usec 0
nr_periods 1520
nr_throttled 37
throttled_usec 4250000
nr_bursts 3
burst_usec 120000
";

const V1_CPU_STAT: &str = "\
nr_periods 212
nr_throttled 190
throttled_time 17532008571
nr_bursts 4
burst_time 250000000
";

const V2_MEMORY_EVENTS: &str = "\
low 0
high 12
max 340
oom 2
oom_kill 1
oom_group_kill 0
";

const V1_OOM_CONTROL: &str = "\
oom_kill_disable 0
under_oom 0
oom_kill 3
";

const CPU_PRESSURE: &str = "\
some avg10=9.33 avg60=14.71 avg300=24.40 total=403034775
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
";

const MEMORY_PRESSURE: &str = "\
some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000
full avg10=0.00 avg60=0.00 avg300=0.00 total=250000
";

/// Strings that hostile or broken files may hold.
const GARBAGE: [&str; 12] = [
    "",
    "\n\n",
    "max max",
    "-1",
    "-5 100000",
    "18446744073709551616",
    "99999999999999999999999999 100000",
    "anon",
    "anon -4096\nfile 12 13\n=\0\u{fffd}",
    "some total=",
    "full avg10=1 total=-3",
    "max 100000 extra",
];

#[test]
fn flat_keyed_parses_v2_memory_stat() {
    let stat = parse_flat_keyed(V2_MEMORY_STAT);
    assert_eq!(stat.get("anon"), Some(&17145856));
    assert_eq!(stat.get("slab"), Some(&1401448));
    assert_eq!(stat.get("thp_collapse_alloc"), Some(&0));
    assert_eq!(stat.len(), V2_MEMORY_STAT.lines().count());
}

#[test]
fn flat_keyed_parses_cpu_stat_and_events() {
    let v2 = parse_flat_keyed(V2_CPU_STAT);
    assert_eq!(v2.get("usage_usec"), Some(&2927073187));
    assert_eq!(v2.get("core_sched.force_idle_usec"), Some(&0));
    assert_eq!(parse_flat_keyed(V1_CPU_STAT).get("throttled_time"), Some(&17532008571));
    assert_eq!(parse_flat_keyed(V2_MEMORY_EVENTS).get("oom_kill"), Some(&1));
    assert_eq!(parse_flat_keyed(V1_OOM_CONTROL).get("oom_kill"), Some(&3));
    assert_eq!(parse_flat_keyed(V1_MEMORY_STAT).get("hierarchical_memory_limit"), Some(&9223372036854771712));
}

#[test]
fn flat_keyed_skips_malformed_lines() {
    let stat = parse_flat_keyed(
        "anon -4096\nfile 12 13\nshmem\n\n  sock   7  \nslab 18446744073709551616\nkernel 0x10\npercpu 1\n",
    );
    assert_eq!(stat, BTreeMap::from([("sock".to_owned(), 7), ("percpu".to_owned(), 1)]));
}

#[test]
fn max_parses_limits() {
    assert_eq!(parse_max("max\n"), Some(None));
    assert_eq!(parse_max("67108864\n"), Some(Some(64 * MIB)));
    assert_eq!(parse_max("0"), Some(Some(0)));
    assert_eq!(parse_max("18446744073709551615"), Some(Some(u64::MAX)));
    for bad in ["", "-1", "MAX", "max 1", "1.5", "18446744073709551616", "12k"] {
        assert_eq!(parse_max(bad), None, "{bad:?}");
    }
}

#[test]
fn v1_limit_detects_unlimited() {
    // PAGE_COUNTER_MAX with 4 KiB pages (x86_64), and with 64 KiB pages (arm64 kernels).
    assert_eq!(parse_v1_limit("9223372036854771712\n"), Some(None));
    assert_eq!(parse_v1_limit("9223372036854710272\n"), Some(None));
    assert_eq!(parse_v1_limit(&V1_UNLIMITED.to_string()), Some(None));
    assert_eq!(parse_v1_limit(&(V1_UNLIMITED - 1).to_string()), Some(Some(V1_UNLIMITED - 1)));
    assert_eq!(parse_v1_limit("67108864\n"), Some(Some(64 * MIB)));
    assert_eq!(parse_v1_limit("max"), Some(None));
    assert_eq!(parse_v1_limit("-1"), None);
}

#[test]
fn cpu_max_parses_quota_and_period() {
    assert_eq!(parse_cpu_max("max 100000\n"), Some((None, 100000)));
    assert_eq!(parse_cpu_max("10000 100000\n"), Some((Some(10000), 100000)));
    assert_eq!(parse_cpu_max("250000 50000"), Some((Some(250000), 50000)));
    for bad in ["", "max", "10000", "max max", "-1 100000", "10000 -5", "1 2 3", "10000 1e5"] {
        assert_eq!(parse_cpu_max(bad), None, "{bad:?}");
    }
}

#[test]
fn pressure_parses_totals() {
    assert_eq!(parse_pressure(CPU_PRESSURE), vec![("some", 403034775), ("full", 0)]);
    assert_eq!(parse_pressure(MEMORY_PRESSURE), vec![("some", 1500000), ("full", 250000)]);
    // Kernels before 5.13 have no "full" line for cpu.
    assert_eq!(parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"), vec![("some", 7)]);
    assert!(
        parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00\npartial total=5\nfull total=-1\n").is_empty()
    );
}

#[test]
fn garbage_never_panics() {
    for text in GARBAGE {
        for cut in (0..=text.len()).filter(|&cut| text.is_char_boundary(cut)) {
            let text = &text[..cut];
            let _ = (parse_flat_keyed(text), parse_max(text), parse_v1_limit(text));
            let _ = (parse_cpu_max(text), parse_pressure(text));
        }
    }
    for fixture in [V2_MEMORY_STAT, V1_MEMORY_STAT, V2_CPU_STAT, CPU_PRESSURE] {
        for cut in 0..fixture.len() {
            let _ = (parse_flat_keyed(&fixture[..cut]), parse_pressure(&fixture[..cut]));
        }
    }
}

proptest! {
    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}") {
        let _ = (parse_flat_keyed(&text), parse_max(&text), parse_v1_limit(&text));
        let _ = (parse_cpu_max(&text), parse_pressure(&text));
    }

    #[test]
    fn parsers_never_panic_on_plausible_lines(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec!["anon", "max", "some", "full", "total=", "nr_periods", "-", ""]),
                prop::sample::select(vec![" ", "  ", "\t", "=", ""]),
                any::<i128>(),
            ),
            0..8,
        )
    ) {
        let text: String = lines.iter().map(|(key, sep, n)| format!("{key}{sep}{n}\n")).collect();
        let _ = (parse_flat_keyed(&text), parse_max(&text), parse_v1_limit(&text));
        let _ = (parse_cpu_max(&text), parse_pressure(&text));
    }

    #[test]
    fn flat_keyed_round_trips(stat in prop::collection::btree_map("[a-z_]{1,20}", any::<u64>(), 0..20)) {
        let text: String = stat.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        prop_assert_eq!(parse_flat_keyed(&text), stat);
    }

    #[test]
    fn cpu_max_round_trips(quota in prop::option::of(any::<u64>()), period in any::<u64>()) {
        let text = format!("{} {period}\n", quota.map_or("max".to_owned(), |q| q.to_string()));
        prop_assert_eq!(parse_cpu_max(&text), Some((quota, period)));
    }

    #[test]
    fn v1_limit_is_unlimited_exactly_from_2_62(bytes in any::<u64>()) {
        let expected = if bytes >= V1_UNLIMITED { None } else { Some(bytes) };
        prop_assert_eq!(parse_v1_limit(&bytes.to_string()), Some(expected));
    }
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn reads_v2_fixture_tree() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            ("memory.current", "27934720\n"),
            ("memory.max", "134217728\n"),
            ("memory.high", "max\n"),
            ("memory.stat", V2_MEMORY_STAT),
            ("memory.events", V2_MEMORY_EVENTS),
            ("cpu.stat", V2_CPU_STAT),
            ("cpu.max", "50000 100000\n"),
            ("pids.current", "12\n"),
            ("pids.max", "4096\n"),
            ("cpu.pressure", CPU_PRESSURE),
            ("memory.pressure", MEMORY_PRESSURE),
            ("io.pressure", "garbage\n"),
        ],
    );
    let r = read(&CgroupDirs::V2(tmp.path().to_owned()));
    usage_and_limits_make_the_whole(&CgroupDirs::V2(tmp.path().to_owned()), &r);
    assert_eq!(r.memory_current, Some(27934720));
    assert_eq!(r.memory_max, Some(128 * MIB));
    assert_eq!(r.memory_high, None);
    // inactive_anon + active_anon + unevictable + slab_unreclaimable + kernel_stack + pagetables
    // + sec_pagetables + percpu + vmalloc + sock.
    assert_eq!(r.memory_unreclaimable, Some(17408000 + 8192 + 488872 + 98304 + 344064 + 1440 + 4096));
    assert_eq!(
        r.memory_by_kind,
        BTreeMap::from([
            ("anon", 17145856),
            ("file", 8925184),
            ("kernel", 1863680),
            ("shmem", 270336),
            ("slab", 1401448),
            ("sock", 4096),
        ])
    );
    assert_eq!(
        r.memory_events,
        BTreeMap::from([
            ("low", 0),
            ("high", 12),
            ("max", 340),
            ("oom", 2),
            ("oom_kill", 1),
            ("oom_group_kill", 0)
        ])
    );
    assert_eq!(r.cpu_usage_seconds, Some(2927.073187));
    assert_eq!(r.cpu_quota_seconds, Some(0.05));
    assert_eq!(r.cpu_period_seconds, Some(0.1));
    assert_eq!(r.cpu_periods, Some(1520));
    assert_eq!(r.cpu_throttled_periods, Some(37));
    assert_eq!(r.cpu_throttled_seconds, Some(4.25));
    assert_eq!(r.cpu_bursts, Some(3));
    assert_eq!(r.cpu_burst_seconds, Some(0.12));
    assert_eq!(r.pids_current, Some(12));
    assert_eq!(r.pids_max, Some(4096));
    assert_eq!(
        r.pressure,
        BTreeMap::from([
            (("cpu", "some"), 403.034775),
            (("cpu", "full"), 0.0),
            (("memory", "some"), 1.5),
            (("memory", "full"), 0.25),
        ])
    );
}

#[test]
fn reads_v2_without_kernel_key_and_unlimited() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            ("memory.max", "max\n"),
            ("memory.stat", V2_MEMORY_STAT_5_10),
            ("cpu.max", "max 100000\n"),
            ("pids.max", "max\n"),
        ],
    );
    let r = read(&CgroupDirs::V2(tmp.path().to_owned()));
    assert_eq!(r.memory_max, None);
    assert_eq!(r.cpu_quota_seconds, None);
    assert_eq!(r.cpu_period_seconds, Some(0.1));
    assert_eq!(r.pids_max, None);
    assert_eq!(r.memory_by_kind.get("kernel"), Some(&(16384 + 65536 + 480 + 200000)));
    assert_eq!(r.memory_current, None);
    assert!(r.pressure.is_empty());
}

#[test]
fn reads_v1_fixture_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (memory, cpu, cpuacct, pids) = (
        tmp.path().join("memory/pod"),
        tmp.path().join("cpu/pod"),
        tmp.path().join("cpuacct/pod"),
        tmp.path().join("pids/pod"),
    );
    write_files(
        &memory,
        &[
            ("memory.usage_in_bytes", "131072000\n"),
            ("memory.limit_in_bytes", "268435456\n"),
            ("memory.stat", V1_MEMORY_STAT),
            ("memory.oom_control", V1_OOM_CONTROL),
        ],
    );
    write_files(
        &cpu,
        &[("cpu.stat", V1_CPU_STAT), ("cpu.cfs_quota_us", "20000\n"), ("cpu.cfs_period_us", "100000\n")],
    );
    write_files(&cpuacct, &[("cpuacct.usage", "1500000000\n")]);
    write_files(&pids, &[("pids.current", "3\n"), ("pids.max", "max\n")]);
    let dirs = CgroupDirs::V1 {
        memory: Some(memory),
        cpu: Some(cpu),
        cpuacct: Some(cpuacct),
        pids: Some(pids),
        blkio: None,
    };
    let r = read(&dirs);
    assert_eq!(r.memory_current, Some(131072000));
    assert_eq!(r.memory_max, Some(256 * MIB));
    assert_eq!(r.memory_high, None);
    assert_eq!(
        r.memory_by_kind,
        BTreeMap::from([
            ("anon", 121085952),
            ("file", 6923857920),
            ("shmem", 9084928),
            ("mapped_file", 130985984)
        ])
    );
    assert_eq!(r.memory_events, BTreeMap::from([("oom_kill", 3), ("under_oom", 0)]));
    // No total_ lines for the LRU lists in this file: the cgroup's own inactive_anon +
    // active_anon + unevictable.
    assert_eq!(r.memory_unreclaimable, Some(1531904 + 12988416));
    assert_eq!(r.cpu_usage_seconds, Some(1.5));
    assert_eq!(r.cpu_quota_seconds, Some(0.02));
    assert_eq!(r.cpu_period_seconds, Some(0.1));
    assert_eq!(r.cpu_periods, Some(212));
    assert_eq!(r.cpu_throttled_periods, Some(190));
    assert_eq!(r.cpu_throttled_seconds, Some(17.532008571));
    assert_eq!(r.cpu_bursts, Some(4));
    assert_eq!(r.cpu_burst_seconds, Some(0.25));
    assert_eq!(r.pids_current, Some(3));
    assert_eq!(r.pids_max, None);
    assert!(r.pressure.is_empty());
    usage_and_limits_make_the_whole(&dirs, &r);
}

#[test]
fn reads_cpu_and_cpuacct_mounted_together() {
    let tmp = tempfile::tempdir().unwrap();
    let both = tmp.path().join("cpu,cpuacct/pod");
    write_files(&both, &[("cpu.stat", V1_CPU_STAT), ("cpuacct.usage", "1500000000\n")]);
    let dirs = CgroupDirs::V1 {
        memory: None,
        cpu: Some(both.clone()),
        cpuacct: Some(both),
        pids: None,
        blkio: None,
    };
    let r = read_usage(&dirs);
    assert_eq!((r.cpu_usage_seconds, r.cpu_throttled_periods), (Some(1.5), Some(190)));
}

/// The split a scrape reads at two paces: the usage leaves every limit empty, the limits alone
/// complete it to what `read` gives.
fn usage_and_limits_make_the_whole(dirs: &CgroupDirs, whole: &Resources) {
    let mut usage = read_usage(dirs);
    let limits = (
        usage.memory_max,
        usage.memory_high,
        usage.pids_max,
        usage.cpu_quota_seconds,
        usage.cpu_period_seconds,
    );
    assert_eq!(limits, (None, None, None, None, None));
    usage.set_limits(read_limits(dirs));
    assert_eq!(&usage, whole);
}

#[test]
fn reads_v1_unlimited_and_without_total_lines() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.stat", "cache 100\nrss 200\nshmem 3\n"),
            ("cpu.cfs_quota_us", "-1\n"),
            ("cpu.cfs_period_us", "100000\n"),
        ],
    );
    let dir = Some(tmp.path().to_owned());
    let r = read(&CgroupDirs::V1 { memory: dir.clone(), cpu: dir, cpuacct: None, pids: None, blkio: None });
    assert_eq!(r.memory_max, None);
    assert_eq!(r.memory_by_kind, BTreeMap::from([("anon", 200), ("file", 100), ("shmem", 3)]));
    assert_eq!(r.memory_unreclaimable, None, "no LRU list in this memory.stat");
    assert_eq!(r.cpu_quota_seconds, None);
    assert_eq!(r.cpu_period_seconds, Some(0.1));
    assert_eq!(r.cpu_usage_seconds, None);
}

#[test]
fn missing_and_hostile_files_leave_fields_empty() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(read(&CgroupDirs::V2(tmp.path().join("gone"))), Resources::default());
    let none = CgroupDirs::V1 { memory: None, cpu: None, cpuacct: None, pids: None, blkio: None };
    assert_eq!(read(&none), Resources::default());

    let names = [
        "memory.current",
        "memory.max",
        "memory.high",
        "memory.stat",
        "memory.events",
        "cpu.stat",
        "cpu.max",
        "pids.current",
        "pids.max",
        "cpu.pressure",
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.oom_control",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpuacct.usage",
    ];
    let hostile: Vec<(&str, &str)> = names.iter().map(|&n| (n, "-7\n\u{0}\u{fffd}garbage 1 2\n")).collect();
    write_files(tmp.path(), &hostile);
    // Not UTF-8.
    fs::write(tmp.path().join("memory.stat"), b"anon \xff\xfe 12\n").unwrap();
    let dir = Some(tmp.path().to_owned());
    assert_eq!(read(&CgroupDirs::V2(tmp.path().to_owned())), Resources::default());
    let v1 = CgroupDirs::V1 {
        memory: dir.clone(),
        cpu: dir.clone(),
        cpuacct: dir.clone(),
        pids: dir,
        blkio: None,
    };
    assert_eq!(read(&v1), Resources::default());
}

fn mount(point: &Path, fs_type: &str, options: &str) -> Mount {
    Mount {
        root: "/".to_owned(),
        mount_point: point.to_owned(),
        fs_type: fs_type.to_owned(),
        super_options: options.to_owned(),
    }
}

#[test]
fn locate_prefers_v2_with_memory_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let unified = tmp.path().join("unified");
    write_files(&unified, &[("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")]);
    let memory = tmp.path().join("memory");
    let mounts = vec![mount(&unified, "cgroup2", "rw,nsdelegate"), mount(&memory, "cgroup", "rw,memory")];
    assert_eq!(
        CgroupDirs::locate(&mounts, "/kubepods.slice/pod1/cri-containerd-abc.scope"),
        CgroupDirs::V2(unified.join("kubepods.slice/pod1/cri-containerd-abc.scope"))
    );
    // The cgroup's own list wins over the root's: here its parent did not delegate memory.
    let child = unified.join("nomem");
    write_files(&child, &[("cgroup.controllers", "cpu pids\n")]);
    assert!(matches!(CgroupDirs::locate(&mounts, "/nomem"), CgroupDirs::V1 { .. }));
}

#[test]
fn locate_falls_back_to_v1_on_hybrid_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let unified = tmp.path().join("unified");
    // Hybrid: the v2 hierarchy has no controllers.
    write_files(&unified, &[("cgroup.controllers", "\n")]);
    let p = |name: &str| tmp.path().join(name);
    let mounts = vec![
        mount(&unified, "cgroup2", "rw"),
        mount(&p("systemd"), "cgroup", "rw,xattr,name=systemd"),
        mount(&p("cpu,cpuacct"), "cgroup", "rw,cpu,cpuacct"),
        mount(&p("memory"), "cgroup", "rw,memory"),
        mount(&p("pids"), "cgroup", "rw,pids"),
    ];
    let path = "/kubepods/burstable/pod1/abc";
    assert_eq!(
        CgroupDirs::locate(&mounts, path),
        CgroupDirs::V1 {
            memory: Some(p("memory/kubepods/burstable/pod1/abc")),
            cpu: Some(p("cpu,cpuacct/kubepods/burstable/pod1/abc")),
            cpuacct: Some(p("cpu,cpuacct/kubepods/burstable/pod1/abc")),
            pids: Some(p("pids/kubepods/burstable/pod1/abc")),
            blkio: None,
        }
    );
    // A v1-only host without a pids hierarchy.
    let v1_only = vec![mount(&p("memory"), "cgroup", "rw,memory")];
    assert_eq!(
        CgroupDirs::locate(&v1_only, "/a"),
        CgroupDirs::V1 { memory: Some(p("memory/a")), cpu: None, cpuacct: None, pids: None, blkio: None }
    );
}

#[test]
fn locate_handles_mount_roots_and_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let unified = tmp.path().join("unified");
    write_files(&unified, &[("cgroup.controllers", "memory\n")]);
    let mut ns = mount(&unified, "cgroup2", "rw");
    ns.root = "/kubepods/pod1".to_owned();
    let mounts = vec![ns];
    // A path given from the host's view, under the mount's root.
    assert_eq!(CgroupDirs::locate(&mounts, "/kubepods/pod1/ctr"), CgroupDirs::V2(unified.join("ctr")));
    // A path relative to the mount's root (as the namespace sees it).
    assert_eq!(CgroupDirs::locate(&mounts, "/ctr"), CgroupDirs::V2(unified.join("ctr")));
    // A sibling whose name starts like the root is not under it.
    assert_eq!(
        CgroupDirs::locate(&mounts, "/kubepods/pod10"),
        CgroupDirs::V2(unified.join("kubepods/pod10"))
    );
    assert_eq!(CgroupDirs::locate(&mounts, "/"), CgroupDirs::V2(unified.clone()));
    // Climbing out of the hierarchy has no directory.
    assert_eq!(
        CgroupDirs::locate(&mounts, "/../../etc"),
        CgroupDirs::V1 { memory: None, cpu: None, cpuacct: None, pids: None, blkio: None }
    );
    assert_eq!(
        CgroupDirs::locate(&[], "/a"),
        CgroupDirs::V1 { memory: None, cpu: None, cpuacct: None, pids: None, blkio: None }
    );
}

// --- Real cgroups, as root -------------------------------------------------------------------

/// A cgroup directory created by the test, removed when dropped (after its tasks are gone).
struct TestDir(PathBuf);

impl TestDir {
    fn create(root: &Path, name: &str) -> Self {
        let path = root.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // A cgroup whose last task just died may take a moment to become empty.
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// A forked child, killed and reaped when dropped.
struct Child(libc::pid_t);

impl Drop for Child {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// Forks a child that joins the cgroups whose `cgroup.procs` files are given and runs
/// `workload(ready_fd)`. The child only makes raw syscalls: the test harness is threaded.
fn spawn_in(procs: &[PathBuf], workload: fn(libc::c_int) -> i32) -> (Child, libc::c_int) {
    let procs: Vec<CString> = procs
        .iter()
        .map(|p| CString::new(p.clone().into_os_string().into_encoded_bytes()).unwrap())
        .collect();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let [read_fd, write_fd] = fds;
    // SAFETY: the child calls only async-signal-safe functions and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::close(read_fd);
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(101);
                }
                libc::close(fd);
            }
            libc::_exit(workload(write_fd));
        }
        libc::close(write_fd);
        (Child(pid), read_fd)
    }
}

/// Waits for the child's one-byte "ready"; false when it exited instead.
fn wait_ready(fd: libc::c_int) -> bool {
    let mut byte = 0u8;
    let n = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
    unsafe { libc::close(fd) };
    n == 1
}

/// Maps and touches 16 MiB of anonymous memory, says it is ready, and waits to be killed.
fn hold_16_mib(ready: libc::c_int) -> i32 {
    let len = 16 << 20;
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 102;
        }
        let bytes = p.cast::<u8>();
        for offset in (0..len).step_by(4096) {
            std::ptr::write_volatile(bytes.add(offset), 1);
        }
        libc::write(ready, b"r".as_ptr().cast(), 1);
        loop {
            libc::pause();
        }
    }
}

/// Spins for one second of wall time.
fn spin_1s(ready: libc::c_int) -> i32 {
    let now = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let start = now();
    while now() - start < 1.0 {
        std::hint::spin_loop();
    }
    unsafe { libc::write(ready, b"r".as_ptr().cast(), 1) };
    0
}

/// Sleeps half a second, spins half a second, says it is done.
fn sleep_then_spin(ready: libc::c_int) -> i32 {
    let half = libc::timespec { tv_sec: 0, tv_nsec: 500_000_000 };
    unsafe { libc::nanosleep(&half, std::ptr::null_mut()) };
    let now = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let start = now();
    while now() - start < 0.5 {
        std::hint::spin_loop();
    }
    unsafe { libc::write(ready, b"r".as_ptr().cast(), 1) };
    0
}

fn v1_mount(mounts: &[Mount], controller: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| {
            m.fs_type == "cgroup" && m.root == "/" && m.super_options.split(',').any(|o| o == controller)
        })
        .map(|m| m.mount_point.clone())
}

#[test]
fn real_v1_memory_cgroup() {
    if !privileged("real_v1_memory_cgroup") {
        return;
    }
    let mounts = mountinfo::read().unwrap();
    let Some(root) = v1_mount(&mounts, "memory") else {
        eprintln!("SKIPPED real_v1_memory_cgroup: no v1 memory hierarchy");
        return;
    };
    let name = format!("kernsight-test-{}-mem", std::process::id());
    let dir = TestDir::create(&root, &name);
    fs::write(dir.0.join("memory.limit_in_bytes"), (64 * MIB).to_string()).unwrap();

    let dirs = CgroupDirs::locate(&mounts, &format!("/{name}"));
    let CgroupDirs::V1 { memory: Some(memory), .. } = &dirs else {
        eprintln!("SKIPPED real_v1_memory_cgroup: the host's memory controller is on v2 ({dirs:?})");
        return;
    };
    assert_eq!(memory, &dir.0);

    let (child, ready) = spawn_in(&[dir.0.join("cgroup.procs")], hold_16_mib);
    assert!(wait_ready(ready), "the child could not join the cgroup or map its memory");
    let r = read(&dirs);
    drop(child);
    eprintln!("real v1 memory: {r:?}");
    assert_eq!(r.memory_max, Some(64 * MIB));
    assert!(r.memory_current.unwrap() >= 16 * MIB, "{r:?}");
    assert!(r.memory_by_kind["anon"] >= 15 * MIB, "{r:?}");
    assert_eq!(r.memory_events.get("oom_kill"), Some(&0));
    assert_eq!(r.memory_high, None);
}

#[test]
fn real_v1_cpu_cgroup() {
    if !privileged("real_v1_cpu_cgroup") {
        return;
    }
    let mounts = mountinfo::read().unwrap();
    let (Some(cpu_root), Some(cpuacct_root)) = (v1_mount(&mounts, "cpu"), v1_mount(&mounts, "cpuacct"))
    else {
        eprintln!("SKIPPED real_v1_cpu_cgroup: no v1 cpu/cpuacct hierarchy");
        return;
    };
    let name = format!("kernsight-test-{}-cpu", std::process::id());
    let cpu = TestDir::create(&cpu_root, &name);
    // cpu and cpuacct are often co-mounted: then they are one directory.
    let cpuacct = (cpuacct_root != cpu_root).then(|| TestDir::create(&cpuacct_root, &name));
    fs::write(cpu.0.join("cpu.cfs_period_us"), "100000").unwrap();
    fs::write(cpu.0.join("cpu.cfs_quota_us"), "10000").unwrap();

    let dirs = CgroupDirs::locate(&mounts, &format!("/{name}"));
    let CgroupDirs::V1 { cpu: Some(cpu_dir), cpuacct: Some(cpuacct_dir), .. } = &dirs else {
        eprintln!("SKIPPED real_v1_cpu_cgroup: the host's controllers are on v2 ({dirs:?})");
        return;
    };
    assert_eq!(cpu_dir, &cpu.0);
    assert_eq!(cpuacct_dir, &cpuacct.as_ref().unwrap_or(&cpu).0);

    let mut procs = vec![cpu.0.join("cgroup.procs")];
    procs.extend(cpuacct.as_ref().map(|d| d.0.join("cgroup.procs")));
    let (child, ready) = spawn_in(&procs, spin_1s);
    assert!(wait_ready(ready), "the child could not join the cgroups");
    drop(child);
    let r = read(&dirs);
    eprintln!("real v1 cpu: {r:?}");
    assert_eq!(r.cpu_quota_seconds, Some(0.01));
    assert_eq!(r.cpu_period_seconds, Some(0.1));
    assert!(r.cpu_periods.unwrap() > 0, "{r:?}");
    assert!(r.cpu_throttled_periods.unwrap() > 0, "{r:?}");
    assert!(r.cpu_throttled_seconds.unwrap() > 0.0, "{r:?}");
    // 10% of one CPU for a second of wall time; generous bounds for a loaded test machine.
    let usage = r.cpu_usage_seconds.unwrap();
    assert!(usage > 0.01 && usage < 0.3, "{r:?}");
}

/// Burst (5.14+): a cgroup limited to 10 ms per 100 ms with 10 ms of burst (the kernel allows
/// no more than the quota), idle for half a
/// second (unused quota fills the burst allowance), then busy: the first busy period runs past
/// its quota out of the burst, which cpu.stat counts.
#[test]
fn real_v1_cpu_burst() {
    if !privileged("real_v1_cpu_burst") {
        return;
    }
    let mounts = mountinfo::read().unwrap();
    let Some(cpu_root) = v1_mount(&mounts, "cpu") else {
        eprintln!("SKIPPED real_v1_cpu_burst: no v1 cpu hierarchy");
        return;
    };
    if !cpu_root.join("cpu.cfs_burst_us").exists() {
        eprintln!("SKIPPED real_v1_cpu_burst: this kernel has no CFS burst (before 5.14)");
        return;
    }
    let name = format!("kernsight-test-{}-burst", std::process::id());
    let cpu = TestDir::create(&cpu_root, &name);
    fs::write(cpu.0.join("cpu.cfs_period_us"), "100000").unwrap();
    fs::write(cpu.0.join("cpu.cfs_quota_us"), "10000").unwrap();
    fs::write(cpu.0.join("cpu.cfs_burst_us"), "10000").unwrap();
    let dirs =
        CgroupDirs::V1 { memory: None, cpu: Some(cpu.0.clone()), cpuacct: None, pids: None, blkio: None };
    assert_eq!(read(&dirs).cpu_bursts, Some(0), "a new cgroup has not burst yet");

    let (child, ready) = spawn_in(&[cpu.0.join("cgroup.procs")], sleep_then_spin);
    assert!(wait_ready(ready), "the child could not join the cgroup");
    drop(child);
    let r = read(&dirs);
    eprintln!("real v1 cpu burst: {r:?}");
    assert!(r.cpu_bursts.unwrap() >= 1, "{r:?}");
    let burst = r.cpu_burst_seconds.unwrap();
    // At most the 10 ms allowance per burst; at least some of it.
    assert!(burst > 0.0 && burst <= 0.01 * r.cpu_bursts.unwrap() as f64, "{r:?}");
}

/// On this host kind (hybrid), the real mounts give v1; on pure v2 hosts with the memory
/// controller, v2 with the real directory.
#[test]
fn real_locate_matches_host() {
    let mounts = mountinfo::read().unwrap();
    let dirs = CgroupDirs::locate(&mounts, "/");
    let unified = crate::kernel::cgroupfs::unified_mount(&mounts);
    let v2_memory = unified.as_ref().is_some_and(|u| {
        fs::read_to_string(u.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory")
    });
    match &dirs {
        CgroupDirs::V2(dir) => {
            assert!(v2_memory);
            assert_eq!(Some(dir), unified.as_ref());
            let r = read(&dirs);
            assert!(r.memory_by_kind.contains_key("anon"), "{r:?}");
        }
        CgroupDirs::V1 { memory, .. } => {
            assert!(!v2_memory);
            assert_eq!(memory.as_deref(), v1_mount(&mounts, "memory").as_deref());
            if memory.is_some() {
                let r = read(&dirs);
                assert!(r.memory_current.is_some_and(|bytes| bytes > 0), "{r:?}");
                assert!(r.cpu_period_seconds.is_some() || v1_mount(&mounts, "cpu").is_none());
            }
        }
    }
}

/// Pure v2 hosts (most real nodes): one cgroup with memory and cpu limits. Skipped where the
/// v2 root does not hand memory and cpu to its children (hybrid hosts such as the CI machine);
/// the test never enables controllers in a cgroup it did not create.
#[test]
fn real_v2_cgroup() {
    if !privileged("real_v2_cgroup") {
        return;
    }
    let mounts = mountinfo::read().unwrap();
    let Some(root) = crate::kernel::cgroupfs::unified_mount(&mounts) else {
        eprintln!("SKIPPED real_v2_cgroup: no v2 hierarchy");
        return;
    };
    let delegated = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    if !["memory", "cpu"].iter().all(|c| delegated.split_whitespace().any(|d| d == *c)) {
        eprintln!("SKIPPED real_v2_cgroup: the v2 root delegates only {delegated:?}");
        return;
    }
    let name = format!("kernsight-test-{}-v2", std::process::id());
    let dir = TestDir::create(&root, &name);
    fs::write(dir.0.join("memory.max"), (64 * MIB).to_string()).unwrap();
    fs::write(dir.0.join("cpu.max"), "10000 100000").unwrap();
    let dirs = CgroupDirs::locate(&mounts, &format!("/{name}"));
    assert_eq!(dirs, CgroupDirs::V2(dir.0.clone()));

    let (child, ready) = spawn_in(&[dir.0.join("cgroup.procs")], hold_16_mib);
    assert!(wait_ready(ready), "the child could not join the cgroup or map its memory");
    let r = read(&dirs);
    drop(child);
    eprintln!("real v2 memory: {r:?}");
    assert_eq!(r.memory_max, Some(64 * MIB));
    assert_eq!(r.memory_high, None);
    assert!(r.memory_current.unwrap() >= 16 * MIB, "{r:?}");
    assert!(r.memory_by_kind["anon"] >= 15 * MIB, "{r:?}");
    assert_eq!(r.memory_events.get("oom_kill"), Some(&0));

    let (child, ready) = spawn_in(&[dir.0.join("cgroup.procs")], spin_1s);
    assert!(wait_ready(ready), "the child could not join the cgroup");
    drop(child);
    let r = read(&dirs);
    eprintln!("real v2 cpu: {r:?}");
    assert_eq!(r.cpu_quota_seconds, Some(0.01));
    assert_eq!(r.cpu_period_seconds, Some(0.1));
    assert!(r.cpu_throttled_periods.unwrap() > 0, "{r:?}");
    assert!(r.cpu_throttled_seconds.unwrap() > 0.0, "{r:?}");
    assert!(r.cpu_usage_seconds.unwrap() > 0.01, "{r:?}");
}

#[test]
fn oom_kills_alone_from_v2_and_v1_files() {
    let v2 = tempfile::tempdir().unwrap();
    write_files(
        v2.path(),
        &[("memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")],
    );
    assert_eq!(read_oom_kills(&CgroupDirs::V2(v2.path().to_owned())), Some(2));
    let v1 = tempfile::tempdir().unwrap();
    write_files(v1.path(), &[("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")]);
    let dirs = CgroupDirs::V1 {
        memory: Some(v1.path().to_owned()),
        cpu: None,
        cpuacct: None,
        pids: None,
        blkio: None,
    };
    assert_eq!(read_oom_kills(&dirs), Some(5));
    let none = CgroupDirs::V1 { memory: None, cpu: None, cpuacct: None, pids: None, blkio: None };
    assert_eq!(read_oom_kills(&none), None);
    assert_eq!(read_oom_kills(&CgroupDirs::V2(v2.path().join("gone"))), None);
}

/// v2 io.stat of a container that read and wrote two devices (Linux 6.x: dbytes/dios too).
const V2_IO_STAT: &str = "\
253:0 rbytes=1048576 wbytes=6553600 rios=16 wios=100 dbytes=0 dios=0
7:0 rbytes=6553600 wbytes=0 rios=100 wios=0 dbytes=0 dios=0
";

/// v1 blkio.throttle.io_service_bytes_recursive and io_serviced_recursive.
const V1_IO_SERVICE_BYTES: &str = "\
7:0 Read 6553600
7:0 Write 3276800
7:0 Sync 9830400
7:0 Async 0
7:0 Discard 0
7:0 Total 9830400
Total 9830400
";
const V1_IO_SERVICED: &str = "\
7:0 Read 100
7:0 Write 50
7:0 Sync 150
7:0 Async 0
7:0 Discard 0
7:0 Total 150
Total 150
";

#[test]
fn v2_io_stat_is_read_per_device() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("io.stat", V2_IO_STAT)]);
    let r = read(&CgroupDirs::V2(tmp.path().to_owned()));
    assert_eq!(r.io.len(), 2);
    assert_eq!(
        r.io[&(253, 0)],
        IoCounts { read_bytes: 1048576, write_bytes: 6553600, read_operations: 16, write_operations: 100 }
    );
    assert_eq!(
        r.io[&(7, 0)],
        IoCounts { read_bytes: 6553600, write_bytes: 0, read_operations: 100, write_operations: 0 }
    );
}

#[test]
fn v1_blkio_prefers_the_recursive_files() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            ("blkio.throttle.io_service_bytes_recursive", V1_IO_SERVICE_BYTES),
            ("blkio.throttle.io_serviced_recursive", V1_IO_SERVICED),
            // The cgroup's own counts (without descendants) are not the ones read.
            ("blkio.throttle.io_service_bytes", "7:0 Read 1\n7:0 Write 1\nTotal 2\n"),
            ("blkio.throttle.io_serviced", "7:0 Read 1\n7:0 Write 1\nTotal 2\n"),
        ],
    );
    let dirs = CgroupDirs::V1 {
        memory: None,
        cpu: None,
        cpuacct: None,
        pids: None,
        blkio: Some(tmp.path().to_owned()),
    };
    let r = read(&dirs);
    assert_eq!(
        r.io,
        [(
            (7, 0),
            IoCounts {
                read_bytes: 6553600,
                write_bytes: 3276800,
                read_operations: 100,
                write_operations: 50
            }
        )]
        .into()
    );

    // Kernels without the recursive files: the plain ones.
    let plain = tempfile::tempdir().unwrap();
    write_files(
        plain.path(),
        &[
            ("blkio.throttle.io_service_bytes", V1_IO_SERVICE_BYTES),
            ("blkio.throttle.io_serviced", V1_IO_SERVICED),
        ],
    );
    let dirs = CgroupDirs::V1 {
        memory: None,
        cpu: None,
        cpuacct: None,
        pids: None,
        blkio: Some(plain.path().to_owned()),
    };
    assert_eq!(read(&dirs).io[&(7, 0)].write_operations, 50);
}

#[test]
fn malformed_io_files_are_skipped_line_by_line() {
    let io_stat = "\
garbage
8:x rbytes=1
8:0 rbytes=notanumber wbytes=4096 rios=-1 wios=1 extra
:0 rbytes=1
9:0
";
    let parsed = parse_io_stat(io_stat);
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(
        parsed[&(8, 0)],
        IoCounts { read_bytes: 0, write_bytes: 4096, read_operations: 0, write_operations: 1 }
    );
    assert_eq!(parsed[&(9, 0)], IoCounts::default());
    let rwstat = "7:0 Read\n7:0 Write 12 junk\n7:0 Read 18446744073709551616\nTotal 5\n7:0 Write 3\nnope\n";
    assert_eq!(parse_blkio_rwstat(rwstat), [((7, 0), (0, 3))].into());
    // A file listing more devices than a node has is cut at MAX_IO_DEVICES.
    let many: String =
        (0..1000).map(|minor| format!("8:{minor} rbytes=1 wbytes=1 rios=1 wios=1\n")).collect();
    assert_eq!(parse_io_stat(&many).len(), MAX_IO_DEVICES);
    let many: String = (0..1000).map(|minor| format!("8:{minor} Read 1\n")).collect();
    assert_eq!(parse_blkio_rwstat(&many).len(), MAX_IO_DEVICES);
}
