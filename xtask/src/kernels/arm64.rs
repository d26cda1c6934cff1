//! `cargo xtask test-kernels --arm64`: the arm64 smoke test. Debian 12's arm64 cloud kernel
//! (6.1, with BTF) boots under `qemu-system-aarch64` (software emulation, the `virt` machine)
//! with Debian's arm64 busybox on pure cgroup v2, and runs the static aarch64 musl agent through
//! the x86_64 guests' script: `kernsight check`, every family attaching, the cgroup v2
//! collectors on real numbers. Then a workload counts in a cgroup of its own, exactly
//! (`guest/syscall-check.sh`): the syscall numbers, their names and the registers the programs
//! read are this architecture's. The integration tests stay on x86_64: cross-building their
//! binary and its dependencies for arm64 would cost CI more than the rest of the matrix.

use std::time::{Duration, Instant};

use super::{
    build, download, guest,
    initramfs::{self, ScriptGuest},
    qemu::Arch,
    report::{self, Status},
};
use crate::process::workspace_root;

/// Cells that may fail on arm64, and why; every other cell must pass (or be skipped).
const KNOWN_FAILURES: &[(&str, &str)] = &[
    ("check", "kernsight check exits 1 when a family cannot run: capabilities and escape (below)"),
    (
        "probe:capabilities",
        "this arm64 kernel runs no fentry/fexit programs (`kernsight check`: fentry/fexit: no), and 6.1 has \
         no capability:cap_capable tracepoint",
    ),
    ("probe:escape", "the escape vectors are x86_64 syscall numbers and registers"),
];

/// Cells the run must report: without them the guest did not get as far.
const REQUIRED: &[&str] = &[
    "boot",
    "check",
    "agent",
    "ready",
    "probe:syscalls",
    "v2:memory",
    "v2:cpu.max",
    "syscalls:exact",
    "syscalls:errors",
];

/// Seconds the guest waits for an agent to serve (about 1 s on x86_64 under TCG; arm64 emulation
/// is slower).
const AGENT_WAIT: u64 = 300;

pub fn run(timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let kernel = download::kernel(&download::ARM64)?;
    let busybox = download::package_file(&download::ARM64, "busybox-static", "bin/busybox")?;
    let binaries = build::build_arm64()?;
    let dir = workspace_root().join("target/kernel-matrix/arm64");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let settings = format!("AGENT_WAIT={AGENT_WAIT}\nTEST_TIMEOUT=0\n");
    let guest = ScriptGuest {
        busybox: &busybox,
        agent: &binaries.agent,
        executables: &[(&binaries.workload, "/usr/bin/kernsight-workload")],
        files: &[
            ("/matrix/v2-check.sh", initramfs::V2_CHECK),
            ("/matrix/syscall-check.sh", initramfs::SYSCALL_CHECK),
            ("/matrix/tests.list", ""),
        ],
        script: initramfs::RUN,
        settings: &settings,
    };
    let image = initramfs::make_for_script(&dir, &kernel, &guest)?;
    eprintln!("xtask: boot {} ({}) under qemu-system-aarch64 (TCG)", kernel.name, kernel.release);
    let run = guest::boot(&dir, &kernel.vmlinuz, &image, timeout, guest::SMP, Arch::Arm64)?;
    let cells = report::parse_cells(&run.output);

    let mut failures: Vec<String> = run.problem.iter().cloned().collect();
    let mut table = format!(
        "| arm64 smoke test: {} | {:.0} s (guest), {:.0} s (whole run) |\n|---|---|\n",
        kernel.package,
        run.seconds,
        started.elapsed().as_secs_f64()
    );
    for (name, cell) in &cells {
        let known = KNOWN_FAILURES.iter().find(|(known, _)| known == name).map(|(_, why)| *why);
        let verdict = match (cell.status, known) {
            (Status::Pass, Some(_)) => {
                failures.push(format!("{name} passes although listed as a known failure in arm64.rs"));
                "PASS (expected FAIL)"
            }
            (Status::Pass, None) => "PASS",
            (Status::Skip, _) => "skip",
            (Status::Fail, Some(_)) => "FAIL (known)",
            (Status::Fail, None) => {
                failures.push(format!("{name}: {}", cell.detail));
                "**FAIL**"
            }
        };
        let why = known.map(|why| format!(" ({why})")).unwrap_or_default();
        table.push_str(&format!("| {name} | {verdict}: {}{why} |\n", cell.detail.replace('|', "\\|")));
    }
    for required in REQUIRED {
        if !cells.iter().any(|(name, _)| name == required) {
            failures.push(format!("{required}: not reported (see {})", dir.join("console.log").display()));
        }
    }
    let path = workspace_root().join("target/kernel-matrix-arm64.md");
    std::fs::write(&path, &table).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("{table}");
    eprintln!("xtask: the table is in {}; the guest's console in {}", path.display(), dir.display());
    if failures.is_empty() { Ok(()) } else { Err(format!("arm64 smoke test:\n  {}", failures.join("\n  "))) }
}
