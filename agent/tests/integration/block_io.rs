//! Block I/O per cgroup, end to end, on a loop device the test creates over a file of its own:
//! `dd` with `oflag=direct` and `iflag=direct` in a container-shaped cgroup writes and reads a
//! known number of 64 KiB blocks; the agent counts exactly those operations and bytes for that
//! cgroup and device, every operation is in the latency histogram, a sibling cgroup doing
//! nothing has none, and the cgroup's own io.stat (v2) or blkio counters (v1) agree. A storm of
//! cgroups each doing one I/O fills the map: the rest is counted under `other`.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::{
    Agent, BINARY, TestCgroup, config_file, eventually, parse, path_str, privileged, required, serial, skip,
    spawn_in, unified_root, v1_root, value,
};

/// The block size of every I/O: one request each (the loop device takes up to
/// `max_sectors_kb`, 1280 KiB by default, in one request; the test checks it is at least this).
const BLOCK: u64 = 64 * 1024;
const WRITES: u64 = 160;
const READS: u64 = 96;
/// The backing file: room for every block written.
const DEVICE_SIZE: u64 = 32 << 20;

/// A loop device over a file of the test's own, detached when dropped (also when the test
/// fails half-way).
struct LoopDevice {
    device: PathBuf,
    major: u32,
    minor: u32,
    _backing: tempfile::TempDir,
}

impl LoopDevice {
    /// `None` when the kernel has no loop devices to give (no loop module).
    fn create() -> Option<Self> {
        let backing = tempfile::tempdir().unwrap();
        let file = backing.path().join("disk.img");
        std::fs::File::create(&file).unwrap().set_len(DEVICE_SIZE).unwrap();
        let output = Command::new("losetup").args(["-f", "--show"]).arg(&file).output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                eprintln!("losetup -f --show: {}", String::from_utf8_lossy(&output.stderr).trim());
                return None;
            }
            Err(err) => {
                eprintln!("losetup: {err}");
                return None;
            }
        };
        let device = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        let name = device.file_name().unwrap().to_str().unwrap().to_owned();
        let dev = std::fs::read_to_string(format!("/sys/block/{name}/dev")).unwrap();
        let (major, minor) = dev.trim().split_once(':').unwrap();
        Some(Self { device, major: major.parse().unwrap(), minor: minor.parse().unwrap(), _backing: backing })
    }

    fn name(&self) -> &str {
        self.device.file_name().unwrap().to_str().unwrap()
    }

    /// The `device` label: `major:minor`.
    fn label(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The queue's largest request, in bytes.
    fn max_request_bytes(&self) -> u64 {
        let kib =
            std::fs::read_to_string(format!("/sys/block/{}/queue/max_sectors_kb", self.name())).unwrap();
        kib.trim().parse::<u64>().unwrap() * 1024
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let detached = Command::new("losetup").arg("-d").arg(&self.device).status();
        if !detached.is_ok_and(|s| s.success()) {
            eprintln!("cleanup: losetup -d {} failed", self.device.display());
        }
    }
}

/// A loop device, or the reason the test skips (fails under `required()` on a host that has
/// loop devices: the host's own check says whether it has).
fn loop_device() -> Option<LoopDevice> {
    let device = LoopDevice::create();
    if device.is_none() {
        let has_loop = Path::new("/dev/loop-control").exists();
        assert!(!(required() && has_loop), "losetup failed although /dev/loop-control exists");
        skip("needs a loop device (losetup -f), and the kernel gives none (no loop module)");
    }
    device
}

/// Runs `dd` with `args` in every cgroup directory of `cgroups` (it joins them before it execs)
/// and waits for it.
fn dd_in(cgroups: &[&Path], args: &[String]) {
    let procs: Vec<CString> = cgroups
        .iter()
        .map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap())
        .collect();
    let mut command = Command::new("dd");
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure makes raw syscalls only (no allocation).
    unsafe {
        command.pre_exec(move || {
            for procs in &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        })
    };
    let output = command.output().unwrap_or_else(|e| panic!("dd {args:?}: {e}"));
    assert!(output.status.success(), "dd {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// The cgroup the dd runs in, in the unified hierarchy and, on hybrid hosts, the same path in
/// the v1 blkio hierarchy (whose counters the resource collector reads there). Children first:
/// they are removed before their parents.
struct IoCgroups {
    container: TestCgroup,
    /// (child, parent)
    blkio: Option<(TestCgroup, TestCgroup)>,
    _unified: TestCgroup,
}

impl IoCgroups {
    fn create(container_name: &str, device: &LoopDevice) -> Self {
        let unified = TestCgroup::create_in(&unified_root(), "blockio");
        // v2: the io controller down to the container, so that it has io.stat (pure v2 hosts
        // enable it in the root; a hybrid host's unified hierarchy has no controllers).
        let root_controls =
            std::fs::read_to_string(unified_root().join("cgroup.subtree_control")).unwrap_or_default();
        if root_controls.split_whitespace().any(|c| c == "io") {
            std::fs::write(unified.path.join("cgroup.subtree_control"), "+io").expect("enable +io");
        }
        let container = unified.child(container_name);
        let blkio = v1_root("blkio").map(|root| {
            let parent = TestCgroup::create_in(&root, "blockio");
            let child = parent.child(container_name);
            // Since 6.10 blk-throttle is set up on a queue only once a limit names it, and v1's
            // blkio.throttle.io_service* count only there: a limit far above what the loop device
            // can do (1 TiB/s) makes the kernel count without ever throttling.
            for file in ["blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"] {
                std::fs::write(child.path.join(file), format!("{} 1099511627776", device.label()))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            (child, parent)
        });
        Self { container, blkio, _unified: unified }
    }

    fn dirs(&self) -> Vec<&Path> {
        let mut dirs = vec![self.container.path.as_path()];
        dirs.extend(self.blkio.as_ref().map(|(child, _)| child.path.as_path()));
        dirs
    }
}

/// (reads completed, writes completed) of the device since boot: `/sys/block/<dev>/stat`.
fn kernel_ios(device: &LoopDevice) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", device.name())).unwrap();
    let fields: Vec<u64> = stat.split_whitespace().map(|f| f.parse().unwrap()).collect();
    (fields[0], fields[4])
}

#[test]
fn direct_io_of_dd_is_counted_exactly_for_its_cgroup_and_device() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let Some(device) = loop_device() else { return };
    assert!(
        device.max_request_bytes() >= BLOCK,
        "{} takes requests of {} bytes at most: a {BLOCK}-byte I/O would be split",
        device.name(),
        device.max_request_bytes()
    );
    let agent = Agent::start(&[]);
    let id = "cd".repeat(32);
    let container = ("container", &id[..12]);
    let cgroups = IoCgroups::create(&format!("docker-{id}.scope"), &device);
    let sibling = TestCgroup::create("blockio-idle");
    let idle = spawn_in(&sibling.path, || {
        // SAFETY: a raw syscall: wait for the signal that ends the test (the cgroup's removal).
        unsafe { libc::pause() };
        0
    });

    let before = kernel_ios(&device);
    let of = format!("of={}", device.device.display());
    let input = format!("if={}", device.device.display());
    let bs = format!("bs={BLOCK}");
    dd_in(
        &cgroups.dirs(),
        &["if=/dev/zero".into(), of, bs.clone(), format!("count={WRITES}"), "oflag=direct".into()],
    );
    dd_in(
        &cgroups.dirs(),
        &[input, "of=/dev/null".into(), bs, format!("count={READS}"), "iflag=direct".into()],
    );
    let after = kernel_ios(&device);
    // Others may read the new device too (udev's probe), never fewer.
    assert!(after.0 - before.0 >= READS && after.1 - before.1 >= WRITES, "kernel: {before:?} → {after:?}");

    let label = device.label();
    let of_dd = |op: &'static str| [container, ("device", label.as_str()), ("op", op)];
    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let reads = value(samples, "kernsight_block_io_operations_total", &of_dd("read"));
        let writes = value(samples, "kernsight_block_io_operations_total", &of_dd("write"));
        if reads >= READS as f64 && writes >= WRITES as f64 {
            Ok(())
        } else {
            let counted: Vec<String> = samples
                .iter()
                .filter(|s| s.name == "kernsight_block_io_operations_total")
                .map(|s| format!("{:?}={}", s.labels, s.value))
                .collect();
            Err(format!("{reads} reads and {writes} writes counted; all: {counted:?}"))
        }
    });
    for (op, operations) in [("read", READS), ("write", WRITES)] {
        let labels = of_dd(op);
        let counted = value(&samples, "kernsight_block_io_operations_total", &labels);
        let bytes = value(&samples, "kernsight_block_io_bytes_total", &labels);
        let timed = value(&samples, "kernsight_block_io_latency_seconds_count", &labels);
        let in_buckets = value(
            &samples,
            "kernsight_block_io_latency_seconds_bucket",
            &[labels[0], labels[1], labels[2], ("le", "+Inf")],
        );
        let seconds = value(&samples, "kernsight_block_io_latency_seconds_sum", &labels);
        eprintln!(
            "{op}: {counted} operations, {bytes} bytes, {timed} timed ({in_buckets} in buckets), {seconds:.6} s"
        );
        assert_eq!(counted, operations as f64, "{op}s of dd on {}", device.name());
        assert_eq!(bytes, (operations * BLOCK) as f64, "{op} bytes of dd");
        assert_eq!(timed, operations as f64, "every {op} is in the histogram");
        assert_eq!(in_buckets, operations as f64, "the buckets hold every {op}");
        assert!(seconds > 0.0, "{op}s take time");
        let names: Vec<&str> = samples
            .iter()
            .filter(|s| {
                s.name == "kernsight_block_io_operations_total" && s.labels.get("device") == Some(&label)
            })
            .filter_map(|s| s.labels.get("device_name").map(String::as_str))
            .collect();
        assert!(names.iter().all(|n| *n == device.name()), "device names {names:?}");
    }
    assert_eq!(
        value(&samples, "kernsight_block_io_operations_total", &[("cgroup", &sibling.label)]),
        0.0,
        "the sibling (pid {idle}) did no I/O"
    );
    assert_eq!(value(&samples, "kernsight_probe_attached", &[("probe", "block_io")]), 1.0);

    // The container's own blk-cgroup counters, as the resource collector exports them: v2's
    // io.stat or v1's blkio.throttle files, which count the same requests.
    let on_device = [container, ("device", label.as_str())];
    let resources = agent.scrape_until(Duration::from_secs(10), |samples| {
        let written = value(samples, "kernsight_container_io_write_bytes_total", &on_device);
        if written >= (WRITES * BLOCK) as f64 {
            Ok(())
        } else {
            Err(format!("{written} bytes written exported"))
        }
    });
    for (name, expected) in [
        ("kernsight_container_io_write_bytes_total", WRITES * BLOCK),
        ("kernsight_container_io_read_bytes_total", READS * BLOCK),
        ("kernsight_container_io_write_operations_total", WRITES),
        ("kernsight_container_io_read_operations_total", READS),
    ] {
        assert_eq!(value(&resources, name, &on_device), expected as f64, "{name}");
    }
}

/// Writes one aligned 4 KiB block with `O_DIRECT` at `offset` of `device` (raw syscalls: runs in
/// a forked child). 0 on success.
fn write_one_block(device: &CString, offset: i64) -> i32 {
    // SAFETY: raw syscalls on a buffer the child maps (page-aligned, as O_DIRECT needs).
    unsafe {
        let buffer = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if buffer == libc::MAP_FAILED {
            return 2;
        }
        let fd = libc::open(device.as_ptr(), libc::O_WRONLY | libc::O_DIRECT);
        if fd < 0 {
            return 3;
        }
        let written = libc::pwrite(fd, buffer, 4096, offset);
        libc::close(fd);
        if written == 4096 { 0 } else { 4 }
    }
}

/// More cgroups than the smallest map holds, each writing one block: the map fills, every
/// write is still counted (in its own series or under `other`), and the agent answers.
#[test]
fn a_storm_of_cgroups_each_doing_one_io_lands_in_other() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let Some(device) = loop_device() else { return };
    // 256 entries: the overflow keys take 3 ops * 43 slots, each writing cgroup 4 more.
    let (_dir, config) = config_file("[block_io]\nmax_entries = 256\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    const FILLERS: usize = 100;
    let path = CString::new(device.device.as_os_str().as_encoded_bytes()).unwrap();
    let fillers: Vec<TestCgroup> =
        (0..FILLERS).map(|i| TestCgroup::create(&format!("blockio-fill-{i}"))).collect();
    for (i, cgroup) in fillers.iter().enumerate() {
        let path = path.clone();
        assert_eq!(cgroup.run(move || write_one_block(&path, i as i64 * 4096)), 0, "{}", cgroup.label);
    }
    let label = device.label();
    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let full = value(samples, "kernsight_bpf_map_full_total", &[("map", "BLOCK_IO")]);
        if full >= 1.0 { Ok(()) } else { Err(format!("the map never filled; log:\n{}", agent.log())) }
    });
    let own: f64 = fillers
        .iter()
        .map(|c| {
            value(
                &samples,
                "kernsight_block_io_operations_total",
                &[("cgroup", &c.label), ("device", &label), ("op", "write")],
            )
        })
        .sum();
    let other =
        value(&samples, "kernsight_block_io_operations_total", &[("cgroup", "other"), ("op", "write")]);
    let full = value(&samples, "kernsight_bpf_map_full_total", &[("map", "BLOCK_IO")]);
    eprintln!("{own} writes in the fillers' own series, {other} under other, {full} map-full misses");
    assert!(own < FILLERS as f64, "every filler found room in a 256-entry map");
    assert!(own + other >= FILLERS as f64, "writes lost: {own} own + {other} other of {FILLERS}");
    assert!(other >= 1.0, "the overflow took none");
    // Responsive: a scrape still answers, and the agent is alive.
    assert!(agent.alive());
    let again = parse(&agent.scrape());
    assert!(value(&again, "kernsight_probe_attached", &[("probe", "block_io")]) == 1.0);
}

/// `kernsight trace io` restricted to a cgroup: one event per request of `dd` there, with its
/// device, op, size, latency and the process that issued it; nothing from a sibling doing I/O
/// on the same device.
#[test]
fn trace_io_shows_each_request_of_the_traced_cgroup() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let Some(device) = loop_device() else { return };
    let traced = TestCgroup::create("blockio-traced");
    let other = TestCgroup::create("blockio-untraced");
    // Killed if the test fails before it is stopped.
    let mut child = crate::support::ChildGuard(
        Command::new(BINARY)
            .args(["trace", "io", "--cgroup", &traced.path.display().to_string(), "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kernsight trace io"),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = rx.iter().find(|line| line.starts_with("tracing ") || line.contains("rror"));
    assert!(
        started.as_deref().is_some_and(|l| l.starts_with("tracing ")),
        "trace io did not start: {started:?}"
    );

    let of = format!("of={}", device.device.display());
    let bs = format!("bs={BLOCK}");
    const TRACED_WRITES: u64 = 24;
    dd_in(
        &[traced.path.as_path()],
        &[
            "if=/dev/zero".into(),
            of.clone(),
            bs.clone(),
            format!("count={TRACED_WRITES}"),
            "oflag=direct".into(),
        ],
    );
    dd_in(&[other.path.as_path()], &["if=/dev/zero".into(), of, bs, "count=8".into(), "oflag=direct".into()]);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = eventually(Duration::from_secs(20), || {
        child.try_wait().unwrap().ok_or_else(|| "kernsight trace io still runs after SIGINT".to_owned())
    });
    assert!(status.success(), "kernsight trace io: {status}");
    let text = output.join().unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ours: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["device"] == serde_json::json!(device.label())).collect();
    eprintln!("{} events, {} on {}; first: {:?}", events.len(), ours.len(), device.name(), ours.first());
    assert_eq!(ours.len() as u64, TRACED_WRITES, "one event per request of the traced dd: {text}");
    for event in &ours {
        assert_eq!(event["op"], "write", "{event}");
        assert_eq!(event["bytes"], serde_json::json!(BLOCK), "{event}");
        assert_eq!(event["comm"], "dd", "the issuer: {event}");
        assert_eq!(event["device_name"], device.name(), "{event}");
        assert_eq!(event["error"], 0, "{event}");
        assert!(event["latency_ns"].as_u64().is_some_and(|ns| ns > 0), "{event}");
    }
}
