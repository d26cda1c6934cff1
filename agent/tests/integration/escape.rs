//! Escape attempts from real podman + runc containers: a static program tries each vector a
//! known number of times and reports how the kernel answered; the agent must count every attempt
//! for that container, exactly, with the same result, and none of what runc did while it set the
//! container up (~70 mounts, device nodes, namespaces) or while `podman exec` entered it. And, in
//! the kernel's own map (no container needed, so the kernel matrix runs it): a new cgroup's
//! setup is skipped until an exec after a chroot, then every attempt counts.

use std::{collections::BTreeMap, ffi::CString, path::Path, time::Duration};

use aya::maps::{Map, MapData, PerCpuHashMap};
use kernsight_common::{
    MAP_LAYOUT_VERSION,
    escape::{EscapeKey, answer, detail, nr},
};

use crate::{
    support::{
        self, Agent, Sample, TestCgroup, path_str, podman::PodmanContainer, podman::podman, privileged,
    },
    trace::{Tracer, json_lines},
};

/// Attempts of each vector the program makes.
const TIMES: usize = 5;

/// Tries each vector TIMES times with calls that change nothing outside the container (bad
/// magic for reboot, bad flags for kexec_load, a missing file for swapon, an invalid time, a
/// bogus handle, namespaces made in children that exit), and prints one line per vector:
/// `vector=V granted=G denied=D failed=F` (denied: EPERM, EACCES, EROFS or ENOSYS). Then the calls that
/// must not count (a FIFO, PTRACE_TRACEME, a clock read), and idles so that the agent can name
/// the container.
const PROGRAM: &str = include_str!("escape_attempts.c");

/// Vector → (granted, denied, failed), as the program saw the kernel answer.
type Answers = BTreeMap<String, [f64; 3]>;

fn parse_report(report: &str) -> Answers {
    report
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').filter_map(|f| f.split_once('='));
            let (_, vector) = fields.next().filter(|(k, _)| *k == "vector")?;
            let numbers: Vec<f64> = fields.map(|(_, n)| n.parse().unwrap()).collect();
            Some((vector.to_owned(), numbers.try_into().ok()?))
        })
        .collect()
}

/// The agent's counts for `container`, summed over `detail`.
fn counted(samples: &[Sample], container: &str) -> Answers {
    let mut answers = Answers::new();
    for s in samples.iter().filter(|s| {
        s.name == "kernsight_escape_attempts_total"
            && s.labels.get("container").is_some_and(|c| c == container)
    }) {
        let slot = match s.labels["result"].as_str() {
            "granted" => 0,
            "denied" => 1,
            _ => 2,
        };
        answers.entry(s.labels["vector"].clone()).or_default()[slot] += s.value;
    }
    answers
}

/// Runs the program in a container with `flags`; the agent's counts once they match its report.
fn run_and_compare(agent: &Agent, name: &str, flags: &[&str], program: &Path) -> (Answers, Vec<Sample>) {
    let mount = format!("{}:/escape:ro", program.display());
    let mut all = vec!["-v", mount.as_str()];
    all.extend_from_slice(flags);
    let container = PodmanContainer::start(name, &all, &["/escape"]);
    let report = support::eventually(Duration::from_secs(30), || {
        let logs = container.logs();
        if logs.contains("done") { Ok(logs) } else { Err(format!("no report yet: {logs:?}")) }
    });
    let expected = parse_report(&report);
    // One line per vector (block_device_open only where the container sees a block device).
    assert!(expected.len() >= 19, "one line per vector: {report}");
    // An exec session enters the running container: runc's setns and the like must not count.
    let exec = podman().args(["exec", name, "true"]).output().expect("podman exec");
    assert!(exec.status.success(), "podman exec: {}", String::from_utf8_lossy(&exec.stderr));
    let samples = agent.scrape_until(Duration::from_secs(30), |samples| {
        let seen = counted(samples, name);
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{name}: counted {seen:?}, the kernel answered {expected:?}"))
        }
    });
    drop(container);
    (expected, samples)
}

#[test]
fn every_attempt_is_counted_for_its_container_with_the_kernels_answer() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(program) = support::static_c_program(dir.path(), "escape", PROGRAM) else { return };
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let pid = std::process::id();

    let default_name = format!("kernsight-escape-{pid}-default");
    let (default, samples) = run_and_compare(&agent, &default_name, &[], &program);
    eprintln!("default capabilities: {default:?}");
    // Podman's default capabilities (4.0 and later) hold neither CAP_SYS_ADMIN nor CAP_MKNOD.
    assert_eq!(default["mount"], [0.0, TIMES as f64, 0.0], "mount is denied without CAP_SYS_ADMIN");
    assert_eq!(default["mknod_device"], [0.0, TIMES as f64, 0.0], "mknod is denied without CAP_MKNOD");
    let detail = |samples: &[Sample], vector: &str| -> Vec<String> {
        samples
            .iter()
            .filter(|s| {
                s.name == "kernsight_escape_attempts_total"
                    && s.labels.get("container").is_some_and(|c| c == &default_name)
                    && s.labels["vector"] == vector
            })
            .map(|s| s.labels["detail"].clone())
            .collect()
    };
    assert_eq!(detail(&samples, "mount"), ["proc"], "the file system mounted");
    assert_eq!(detail(&samples, "mknod_device"), ["block"]);
    assert_eq!(detail(&samples, "host_file_write"), ["core_pattern"]);
    assert_eq!(detail(&samples, "runtime_socket"), ["docker"]);
    // /proc/sys is read-only in a container: EROFS, the runtime's refusal.
    assert_eq!(default["host_file_write"], [0.0, TIMES as f64, 0.0], "core_pattern is read-only");
    assert_eq!(
        default["runtime_socket"],
        [2.0 * TIMES as f64, 0.0, 0.0],
        "a socket named docker.sock, by its name and through a symlink"
    );

    let privileged_name = format!("kernsight-escape-{pid}-privileged");
    let (privileged, _) = run_and_compare(&agent, &privileged_name, &["--privileged"], &program);
    eprintln!("privileged: {privileged:?}");
    assert_eq!(privileged["mount"], [TIMES as f64, 0.0, 0.0], "mount is granted when privileged");
    assert_eq!(privileged["mknod_device"], [TIMES as f64, 0.0, 0.0], "so is mknod of a block device");
    assert_eq!(privileged["setns"], [TIMES as f64, 0.0, 0.0]);
    assert_eq!(
        privileged["host_file_write"],
        [3.0 * TIMES as f64, 0.0, 0.0],
        "the host's core_pattern opened by its path, through a symlink and through a long path"
    );
    assert!(!default.contains_key("block_device_open"), "no block device in a default container's /dev");
    assert_eq!(privileged["block_device_open"], [TIMES as f64, 0.0, 0.0], "the host's devices are there");
    // Past the capability check, the bad arguments fail.
    assert_eq!(privileged["reboot"], [0.0, 0.0, TIMES as f64], "bad magic: EINVAL");
    assert_eq!(default["reboot"], [0.0, TIMES as f64, 0.0], "no CAP_SYS_BOOT: EPERM");
}

/// Attempts the kernel counted for `cgroup_id` under (syscall, answer, detail), summed over CPUs.
fn in_kernel(agent: &Agent, cgroup_id: u64, syscall: u32, answer: u16, detail: u16) -> u64 {
    let pins = agent.pin_dir().expect("the agent pins its maps");
    let path = pins.join(format!("v{MAP_LAYOUT_VERSION}/ESCAPE_ATTEMPTS"));
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let attempts: PerCpuHashMap<MapData, EscapeKey, u64> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).expect("ESCAPE_ATTEMPTS is a per-CPU hash");
    let key = EscapeKey { cgroup_id, syscall, answer, detail };
    attempts.get(&key, 0).map_or(0, |values| values.iter().sum())
}

/// `times` mounts of proc on a missing directory (ENOENT), as root.
fn failing_mounts(times: usize) {
    for _ in 0..times {
        // SAFETY: raw syscall on constant strings.
        unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/nonexistent-kernsight".as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
    }
}

#[test]
fn the_kernel_skips_a_new_cgroups_setup_then_counts_every_attempt() {
    use std::os::unix::fs::MetadataExt as _;

    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    // Made after the agent started: its mkdir opens the setup window.
    let cgroup = TestCgroup::create("escape-raw");
    let id = std::fs::metadata(&cgroup.path).expect("stat the cgroup").ino();
    let dir = tempfile::tempdir().unwrap();
    let in_dir =
        |name: &str| CString::new(dir.path().join(name).into_os_string().into_encoded_bytes()).unwrap();
    let node = in_dir("null");
    // A file merely named like the cgroup v1 release_agent (it controls nothing); the host's
    // core_pattern by its path, through a symlink of another name, and through a path longer
    // than the program reads of a path (opened for writing, never written).
    let agent_file = in_dir("release_agent");
    let core_pattern = Path::new("/proc/sys/kernel/core_pattern");
    std::os::unix::fs::symlink(core_pattern, dir.path().join("innocent")).expect("symlink");
    let long_path = format!("/proc/sys/kernel/{}core_pattern", "./".repeat(80));
    let core_patterns =
        [CString::new(path_str(core_pattern)).unwrap(), in_dir("innocent"), CString::new(long_path).unwrap()];
    // A socket named like CRI-O's, connected to by its path and through a symlink.
    let socket_path = dir.path().join("crio.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket_path).expect("listen on crio.sock");
    std::os::unix::fs::symlink(&socket_path, dir.path().join("innocent.sock")).expect("symlink");
    let addresses = [socket_path.clone(), dir.path().join("innocent.sock")].map(|path| {
        // SAFETY: plain data, all zeroes valid.
        let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (to, from) in address.sun_path.iter_mut().zip(path.as_os_str().as_encoded_bytes()) {
            *to = *from as libc::c_char;
        }
        address
    });
    // A block device of this machine, if it has one (the guests of the kernel matrix have none).
    let block_device = std::fs::read_dir("/dev").ok().and_then(|entries| {
        use std::os::unix::fs::FileTypeExt as _;
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
    });
    let device = block_device.as_ref().map(|p| CString::new(p.as_os_str().as_encoded_bytes()).unwrap());
    const TIMES: usize = 7;

    // The "runtime": mounts while setting up, then chroots (as runtimes pivot) and execs.
    let code = cgroup.run(|| {
        failing_mounts(TIMES);
        // SAFETY: raw syscall.
        if unsafe { libc::chroot(c"/".as_ptr()) } != 0 {
            return 2;
        }
        0
    });
    assert_eq!(code, 0, "chroot");
    assert_eq!(in_kernel(&agent, id, nr::MOUNT, answer::FAILED, detail::FS_PROC), 0, "setup is skipped");
    // SAFETY: raw syscalls in the child; execv leaves this image.
    let code = cgroup.run(|| unsafe {
        libc::execv(c"/bin/true".as_ptr(), [c"true".as_ptr(), std::ptr::null()].as_ptr());
        3
    });
    assert_eq!(code, 0, "exec /bin/true");

    // The "workload": every attempt counts from here.
    let code = cgroup.run(|| {
        failing_mounts(TIMES);
        for _ in 0..TIMES {
            // SAFETY: raw syscalls on a path in the test's own directory.
            unsafe {
                libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3));
                libc::unlink(node.as_ptr());
                // Not a vector: a FIFO.
                libc::mknod(node.as_ptr(), libc::S_IFIFO | 0o600, 0);
                libc::unlink(node.as_ptr());
                // A namespace made in a child that exits.
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(if libc::unshare(libc::CLONE_NEWUTS) == 0 { 0 } else { 1 });
                }
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                if let Some(device) = &device {
                    libc::close(libc::open(device.as_ptr(), libc::O_RDONLY));
                }
                // Opened for writing (counted), then for reading (not).
                for path in &core_patterns {
                    libc::close(libc::open(path.as_ptr(), libc::O_WRONLY));
                    libc::close(libc::open(path.as_ptr(), libc::O_RDONLY));
                }
                libc::close(libc::open(agent_file.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600));
                for address in &addresses {
                    let socket = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    let length = size_of::<libc::sockaddr_un>() as libc::socklen_t;
                    libc::connect(socket, (&raw const *address).cast(), length);
                    libc::close(socket);
                }
            }
        }
        0
    });
    assert_eq!(code, 0, "the workload");
    let times = TIMES as u64;
    // glibc's open() is the openat syscall, musl's (the kernel matrix's test build) open.
    let opens = |detail| {
        [nr::OPEN, nr::OPENAT]
            .map(|syscall| in_kernel(&agent, id, syscall, answer::GRANTED, detail))
            .iter()
            .sum::<u64>()
    };
    assert_eq!(
        opens(detail::CORE_PATTERN),
        3 * times,
        "opens for writing of the host's core_pattern by any path (not those for reading)"
    );
    assert_eq!(opens(detail::RELEASE_AGENT), 0, "a file merely named release_agent is no vector");
    assert_eq!(
        in_kernel(&agent, id, nr::CONNECT, answer::GRANTED, detail::CRIO),
        2 * times,
        "connects to crio.sock by its path and through a symlink"
    );
    match &block_device {
        Some(path) => assert_eq!(opens(detail::BLOCK_READ), times, "opens of {} for reading", path.display()),
        None => eprintln!("no block device in /dev: block device opens not exercised"),
    }
    assert_eq!(in_kernel(&agent, id, nr::MOUNT, answer::FAILED, detail::FS_PROC), times, "mounts");
    // The same for mknod (mknodat in glibc, mknod in musl).
    let made = [nr::MKNOD, nr::MKNODAT]
        .map(|syscall| in_kernel(&agent, id, syscall, answer::GRANTED, detail::CHAR_DEVICE))
        .iter()
        .sum::<u64>();
    assert_eq!(made, times, "device nodes (the FIFOs are not counted)");
    assert_eq!(
        in_kernel(&agent, id, nr::UNSHARE, answer::GRANTED, detail::OTHER_NAMESPACE),
        times,
        "namespaces (the forks that made the children are not)"
    );
}

#[test]
fn trace_escape_prints_each_attempt_with_its_vector_and_not_the_harmless_calls() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let cgroup = TestCgroup::create("trace-escape");
    let tracer = Tracer::start(&["escape", "--cgroup", path_str(&cgroup.path), "-o", "json"]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = CString::new(dir.path().join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    const TIMES: usize = 4;
    let code = cgroup.run(|| {
        for _ in 0..TIMES {
            // SAFETY: raw syscalls; the namespaces are made in children that exit.
            unsafe {
                for flags in [libc::CLONE_NEWUSER, libc::CLONE_NEWUTS] {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::_exit(libc::unshare(flags));
                    }
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o600, 0);
                libc::unlink(fifo.as_ptr());
            }
        }
        failing_mounts(TIMES);
        0
    });
    assert_eq!(code, 0, "the workload");
    let (stdout, summary) = tracer.finish();
    let mut seen: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for event in json_lines(&stdout) {
        let field = |name: &str| event[name].as_str().unwrap_or("").to_owned();
        *seen.entry((field("vector"), field("syscall"), field("errno"))).or_default() += 1;
    }
    let expected: BTreeMap<(String, String, String), usize> = [
        (("unshare_user", "unshare", ""), TIMES),
        (("unshare", "unshare", ""), TIMES),
        (("mount", "mount", "ENOENT"), TIMES),
    ]
    .into_iter()
    .map(|((v, s, e), n)| ((v.to_owned(), s.to_owned(), e.to_owned()), n))
    .collect();
    assert_eq!(seen, expected, "forks and FIFOs are not shown; summary: {summary}");
}
