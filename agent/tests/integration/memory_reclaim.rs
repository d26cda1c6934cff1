//! Memory reclaim, end to end: a container-shaped memory cgroup the test creates holds
//! anonymous memory near its limit and reads a file larger than what is left, so the kernel
//! must reclaim the file's page cache on every charge (without a disk: a tmpfs file past its
//! `memory.high`): its tasks' memcg reclaim stalls are counted, those of a sibling cgroup well
//! inside its limit are not; and the cgroup's unreclaimable memory is the sum of memory.stat's
//! parts, read by the test; `kernsight inspect` shows the same figure, the headroom left under
//! the limit and the stalls the agent counted.

use std::{
    collections::BTreeMap,
    ffi::CString,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::support::{
    Agent, BINARY, TestCgroup, eventually,
    memory::{LIMIT, limited_cgroup, limited_parent, touch_anonymous},
    parse, privileged, serial, skip, spawn_in, value,
};
use kernsight::kernel::resources::parse_flat_keyed;

const STALLS: &str = "kernsight_memory_reclaim_stall_seconds_count";
/// Anonymous memory the pressed workload holds: with the file's page cache beside it, past
/// the 32 MiB limit.
const ANON: usize = 20 << 20;
/// The file written and read back, in 1 MiB chunks.
const FILE: usize = 32 << 20;
const CHUNK: usize = 1 << 20;
/// Without a disk: `memory.high` of the pressed cgroup, and a tmpfs file that takes it past it
/// (20 + 8 MiB: past 24, inside the 32 MiB limit).
const HIGH: u64 = 24 << 20;
const SHMEM_FILE: usize = 8 << 20;

/// `memory.stat` keys whose sum the agent exports as unreclaimable, as the kernel documents
/// them (Documentation/admin-guide/cgroup-v2.rst; v1: memory.txt), spelled out here rather than
/// taken from the agent.
const V2_PARTS: [&str; 10] = [
    "inactive_anon",
    "active_anon",
    "unevictable",
    "slab_unreclaimable",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "vmalloc",
    "sock",
];
const V1_PARTS: [&str; 3] = ["total_inactive_anon", "total_active_anon", "total_unevictable"];

/// A directory on a filesystem whose page cache reclaim can drop (not tmpfs or ramfs, whose
/// pages are swap-backed or unevictable): the build's own temporary directory, else /tmp.
fn disk_backed_dir() -> Option<PathBuf> {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    [PathBuf::from(env!("CARGO_TARGET_TMPDIR")), std::env::temp_dir()].into_iter().find(|dir| {
        let Ok(path) = CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
        // SAFETY: a plain C struct of integers, valid zeroed.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statfs the call fills.
        let ok = unsafe { libc::statfs(path.as_ptr(), &mut fs) } == 0;
        ok && !matches!(fs.f_type as u64, TMPFS_MAGIC | RAMFS_MAGIC)
    })
}

/// Writes `size` bytes to `path` (synced every 4 MiB, so that reclaim finds clean pages),
/// then reads them back twice; raw syscalls only (runs in a forked child). 0 on success.
fn write_and_reread(path: &CString, size: usize) -> i32 {
    // SAFETY: raw syscalls on a buffer the child maps and a file it opens.
    unsafe {
        let buffer = libc::mmap(
            std::ptr::null_mut(),
            CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if buffer == libc::MAP_FAILED {
            return 3;
        }
        libc::memset(buffer, 0x5a, CHUNK);
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600);
        if fd < 0 {
            return 4;
        }
        for written in (0..size).step_by(CHUNK) {
            if libc::write(fd, buffer, CHUNK) != CHUNK as isize {
                return 5;
            }
            if (written + CHUNK).is_multiple_of(4 * CHUNK) {
                libc::fdatasync(fd);
            }
        }
        libc::fdatasync(fd);
        for _ in 0..2 {
            if libc::lseek(fd, 0, libc::SEEK_SET) != 0 {
                return 6;
            }
            while libc::read(fd, buffer, CHUNK) > 0 {}
        }
        libc::close(fd);
        0
    }
}

/// Forks a workload into `cgroup` that holds `anon` bytes of anonymous memory, writes and
/// re-reads `file_size` bytes of `file`, says so on a pipe and waits to be killed (its cgroup's
/// removal kills it). Returns its pid once it is done.
fn spawn_holding(cgroup: &Path, anon: usize, file: &Path, file_size: usize) -> i32 {
    let path = CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    let mut fds = [0; 2];
    // SAFETY: a pipe into an array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let [read_end, write_end] = fds;
    let pid = spawn_in(cgroup, move || {
        let code = if touch_anonymous(anon) != 0 { 2 } else { write_and_reread(&path, file_size) };
        // SAFETY: raw syscalls: report, then wait for the signal that ends the test.
        unsafe {
            libc::write(write_end, [code as u8].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    });
    // SAFETY: our copy of the write end, then a bounded wait for one byte on the read end.
    unsafe {
        libc::close(write_end);
        let mut poll = libc::pollfd { fd: read_end, events: libc::POLLIN, revents: 0 };
        assert_eq!(
            libc::poll(&mut poll, 1, 120_000),
            1,
            "the workload in {} did not finish",
            cgroup.display()
        );
        let mut code = [0u8];
        let read = libc::read(read_end, code.as_mut_ptr().cast(), 1);
        libc::close(read_end);
        assert_eq!((read, code[0]), (1, 0), "the workload in {} failed (pid {pid})", cgroup.display());
    }
    pid
}

/// Where the file that presses `cgroup` goes, and how big it is. On a disk-backed filesystem:
/// its page cache, past what the limit leaves, which reclaim drops on every charge. On tmpfs
/// only (the kernel matrix's guests have no disk) its pages are shmem, which reclaim cannot
/// drop: the file stays inside memory.max and goes past memory.high (v2, set here), where every
/// charge reclaims (and throttles) instead of killing. `None` (the test skipped, and says so)
/// with neither.
fn pressing_file(cgroup: &TestCgroup) -> Option<(PathBuf, usize)> {
    match disk_backed_dir() {
        Some(dir) => Some((dir, FILE)),
        None if cgroup.path.join("memory.high").exists() => {
            std::fs::write(cgroup.path.join("memory.high"), HIGH.to_string()).expect("memory.high");
            Some((std::env::temp_dir(), SHMEM_FILE))
        }
        None => {
            skip("needs a disk-backed filesystem for page cache, or cgroup v2's memory.high");
            None
        }
    }
}

/// Sets the memory limit of a cgroup the test made (v2 `memory.max`, else v1).
fn limit(cgroup: &TestCgroup, bytes: u64) {
    let v2 = cgroup.path.join("memory.max");
    let file = if v2.exists() { v2 } else { cgroup.path.join("memory.limit_in_bytes") };
    std::fs::write(&file, bytes.to_string()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}

/// The unreclaimable sum of the cgroup's memory.stat, by the kernel's documented keys.
fn unreclaimable_of(cgroup: &TestCgroup) -> u64 {
    let text = std::fs::read_to_string(cgroup.path.join("memory.stat")).expect("memory.stat");
    let stat: BTreeMap<String, u64> = parse_flat_keyed(&text);
    let v1 = stat.contains_key("total_inactive_anon");
    let parts: &[&str] = if v1 { &V1_PARTS } else { &V2_PARTS };
    parts.iter().filter_map(|k| stat.get(*k)).sum()
}

#[test]
fn reclaim_stalls_count_for_the_cgroup_at_its_limit_and_not_its_sibling() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let agent = Agent::start(&[]);
    // A container-shaped cgroup (so that the container memory series name it) under a limited
    // parent that gives it a memory controller of its own; limited itself too.
    let parent = limited_parent("reclaim");
    let pressed = parent.child(&format!("docker-{}.scope", "ab".repeat(32)));
    // A container's series carry its (short) id instead of a cgroup path.
    let container = ("container", "ab".repeat(6));
    let of_pressed = |kind: &'static str| [(container.0, container.1.as_str()), ("kind", kind)];
    limit(&pressed, LIMIT);
    let sibling = limited_cgroup("reclaim-idle");
    let Some((dir, file_size)) = pressing_file(&pressed) else { return };
    let files = tempfile::tempdir_in(&dir).unwrap();

    // The sibling: 4 MiB of anonymous memory and an 8 MiB file, far inside its 32 MiB.
    let idle_pid = spawn_holding(&sibling.path, 4 << 20, &files.path().join("idle"), 8 << 20);
    let pressed_pid = spawn_holding(&pressed.path, ANON, &files.path().join("pressed"), file_size);

    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let stalls = value(samples, STALLS, &of_pressed("memcg"));
        if stalls >= 1.0 {
            return Ok(());
        }
        let counted: Vec<String> = samples
            .iter()
            .filter(|s| s.name == STALLS)
            .map(|s| format!("{:?}={}", s.labels, s.value))
            .collect();
        Err(format!("no memcg reclaim stall counted in {}; stalls counted: {counted:?}", pressed.label))
    });
    let stalls = value(&samples, STALLS, &of_pressed("memcg"));
    let seconds = value(&samples, "kernsight_memory_reclaim_stall_seconds_sum", &of_pressed("memcg"));
    eprintln!(
        "{stalls} memcg reclaim stalls, {seconds:.6} s in all, in {} (pid {pressed_pid}); sibling pid {idle_pid}",
        pressed.label
    );
    assert!(seconds > 0.0, "stalls take time: {seconds}");
    assert_eq!(
        value(&samples, STALLS, &[("cgroup", &sibling.label), ("kind", "memcg")]),
        0.0,
        "the sibling never reached its limit"
    );
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "memory_reclaim")]), 1.0);

    // The unreclaimable figure, against the test's own sum of memory.stat read before and after
    // the scrape (the workload holds still; the collector's cache lives 2 s, so wait it out).
    let before = unreclaimable_of(&pressed);
    std::thread::sleep(Duration::from_millis(2100));
    let samples = parse(&agent.scrape());
    let after = unreclaimable_of(&pressed);
    let exported =
        value(&samples, "kernsight_container_memory_unreclaimable_bytes", &[(container.0, &container.1)])
            as u64;
    eprintln!("unreclaimable: exported {exported}, memory.stat {before} then {after}");
    assert!(exported >= ANON as u64, "the workload holds {ANON} bytes of anonymous memory: {exported}");
    assert!(
        before.min(after) <= exported && exported <= before.max(after),
        "exported {exported}, memory.stat said {before} then {after}"
    );
    let limit = value(
        &samples,
        "kernsight_container_memory_limit_bytes",
        &[(container.0, &container.1), ("limit", "max")],
    );
    assert_eq!(limit as u64, LIMIT, "the limit is exported beside it");

    // The stall count only grows; the sibling's workload is done and still has none.
    eventually(Duration::from_secs(5), || {
        let samples = parse(&agent.scrape());
        let later = value(&samples, STALLS, &of_pressed("memcg"));
        let idle = value(&samples, STALLS, &[("cgroup", &sibling.label), ("kind", "memcg")]);
        if later >= stalls && idle == 0.0 {
            Ok(())
        } else {
            Err(format!("stalls {later} (was {stalls}), sibling {idle}"))
        }
    });
}

/// `kernsight inspect` of a process in a memory cgroup the test fills with known anonymous
/// memory and presses against its limit (a host cgroup: v1 memory on a hybrid host, v2
/// elsewhere): its unreclaimable memory is memory.stat's parts as the test sums them, its
/// headroom the limit minus that, and its reclaim stalls those the running agent counted.
#[test]
fn inspect_shows_the_headroom_under_the_limit_and_the_agents_reclaim_stalls() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let agent = Agent::start(&[]);
    let address = agent.address.to_string();
    let cgroup = limited_cgroup("inspect-headroom");
    let Some((dir, file_size)) = pressing_file(&cgroup) else { return };
    let files = tempfile::tempdir_in(&dir).unwrap();
    let pid = spawn_holding(&cgroup.path, ANON, &files.path().join("inspected"), file_size);
    let of_cgroup = [("cgroup", cgroup.label.as_str()), ("kind", "memcg")];
    agent.scrape_until(Duration::from_secs(20), |samples| {
        let stalls = value(samples, STALLS, &of_cgroup);
        if stalls >= 1.0 {
            Ok(())
        } else {
            Err(format!("no memcg reclaim stall counted in {}", cgroup.label))
        }
    });

    let inspect = |agent: &str, json: bool| {
        let mut command = Command::new(BINARY);
        command.args(["inspect", &pid.to_string(), "--agent", agent]);
        if json {
            command.args(["-o", "json"]);
        }
        let out = command.output().expect("run kernsight inspect");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let before = unreclaimable_of(&cgroup);
    let report: serde_json::Value = serde_json::from_str(&inspect(&address, true)).expect("JSON");
    let after = unreclaimable_of(&cgroup);
    // The stall figures only grow: the agent's, read after inspect's, bound them.
    let samples = parse(&agent.scrape());

    let resources = &report["resources"];
    let field = |name: &str| resources[name].as_u64().unwrap_or_else(|| panic!("{name}: {resources}"));
    let (limit, unreclaimable, headroom) =
        (field("memory_limit_bytes"), field("memory_unreclaimable_bytes"), field("memory_headroom_bytes"));
    let share = resources["memory_headroom_share"].as_f64().expect("memory_headroom_share");
    eprintln!(
        "inspect: limit {limit}, unreclaimable {unreclaimable} (memory.stat {before} then {after}), headroom \
         {headroom} ({:.1} %)",
        100.0 * share
    );
    assert_eq!(limit, LIMIT);
    assert!(
        unreclaimable >= ANON as u64,
        "the workload holds {ANON} bytes of anonymous memory: {unreclaimable}"
    );
    assert!(
        before.min(after) <= unreclaimable && unreclaimable <= before.max(after),
        "inspect said {unreclaimable}, memory.stat {before} then {after}"
    );
    assert_eq!(headroom, LIMIT - unreclaimable);
    assert!((share - headroom as f64 / LIMIT as f64).abs() < 1e-9, "share {share}");

    let stalls = &report["reclaim_stalls"];
    assert_eq!(stalls["agent"], address.as_str(), "{stalls}");
    assert!(stalls["error"].is_null(), "{stalls}");
    let memcg = &stalls["by_kind"]["memcg"];
    let (count, seconds) =
        (memcg["stalls"].as_f64().unwrap_or(-1.0), memcg["seconds"].as_f64().unwrap_or(-1.0));
    let (agent_count, agent_seconds) = (
        value(&samples, STALLS, &of_cgroup),
        value(&samples, "kernsight_memory_reclaim_stall_seconds_sum", &of_cgroup),
    );
    eprintln!(
        "inspect: {count} memcg stalls, {seconds:.6} s; the agent after: {agent_count}, {agent_seconds:.6} s"
    );
    assert!(1.0 <= count && count <= agent_count, "{stalls}; the agent counts {agent_count}");
    assert!(0.0 < seconds && seconds <= agent_seconds, "{stalls}; the agent has {agent_seconds} s");

    let text = inspect(&address, false);
    let line = |start: &str| {
        text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {text}"))
    };
    assert!(line("headroom ").contains("of the 32.0 MiB limit"), "{text}");
    assert!(line("reclaim ").contains(&format!("(agent {address})")), "{text}");
    let nobody = inspect("127.0.0.1:1", false);
    assert!(nobody.contains("no agent answered at 127.0.0.1:1"), "{nobody}");
}
