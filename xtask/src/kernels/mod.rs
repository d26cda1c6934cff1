//! `cargo xtask test-kernels`: the kernel matrix. Each of Debian's cloud kernels (5.10, 6.1,
//! 6.12, all with BTF) boots under QEMU with a busybox initramfs on pure cgroup v2 and runs the
//! static musl agent (`kernsight check`, a smoke run, the cgroup v2 collectors on real numbers,
//! the areas of the integration tests that need no container runtime, one run of the test binary
//! per area); the results become a family × kernel table with a row per area and a verdict per
//! test, held against the expectations in `plan.rs`.

mod arm64;
mod build;
pub(crate) mod download;
mod guest;
mod initramfs;
mod large_node;
mod plan;
mod qemu;
mod report;

use std::time::{Duration, Instant};

use crate::{process::workspace_root, setup};
use qemu::Arch;

/// What the harness needs from Debian besides what `setup` installs: cpio to pack the initramfs,
/// busybox-static as the guests' userland, binutils to strip the test binaries. QEMU comes from
/// `qemu.rs`.
const PACKAGES: &[&str] = &["cpio", "busybox-static", "binutils"];

const USAGE: &str = "test-kernels [--kernel VERSION]... [--quick] [--keep] [--timeout SECONDS] [--area-timeout SECONDS] [--large-node | --arm64]\n\
    boots Debian's 5.10, 6.1 and 6.12 cloud kernels under QEMU and runs the agent and the\n\
    integration tests in each; --kernel runs only the named ones, --quick runs the smoke run\n\
    and only the tests of plan::QUICK (what CI runs: about 3 minutes a kernel instead of 10),\n\
    --keep keeps each guest's root, initramfs and output under target/kernel-matrix/,\n\
    --timeout bounds one guest (default 1200 s, 600 s with --quick), --area-timeout one area\n\
    of the tests in it (default 600 s, 300 s with --quick); the table\n\
    goes to target/kernel-matrix.md. --large-node instead boots one guest per kernel (default\n\
    6.1) with 192 possible CPUs and checks the agent's map budget in memory cgroups of the\n\
    sizes docs/deploy.md gives (xtask/src/kernels/large_node.rs). --arm64 instead cross-builds\n\
    the agent for aarch64 and boots Debian's arm64 6.1 kernel under qemu-system-aarch64: every\n\
    family attaching, the cgroup v2 collectors, exact syscall counts (xtask/src/kernels/arm64.rs)";

/// Seconds a guest waits for the smoke run's agent to serve (it serves in about 1 s).
const AGENT_WAIT: u64 = 180;

struct Options {
    kernels: Vec<String>,
    /// The tests of `plan::QUICK` only.
    quick: bool,
    keep: bool,
    /// The 192-CPU map budget check instead of the matrix.
    large_node: bool,
    /// The arm64 smoke test instead of the matrix.
    arm64: bool,
    /// QEMU is killed past this: a hung guest cannot hold the matrix (or CI) forever.
    guest_timeout: Duration,
    /// One area of the integration tests is killed past this inside the guest, so that one hung
    /// test costs its area, not the rest of the kernel's results.
    area_timeout: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            kernels: Vec::new(),
            quick: false,
            keep: false,
            large_node: false,
            arm64: false,
            guest_timeout: Duration::ZERO,
            area_timeout: Duration::ZERO,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--kernel" => options.kernels.push(value("--kernel")?),
                "--quick" => options.quick = true,
                "--keep" => options.keep = true,
                "--large-node" => options.large_node = true,
                "--arm64" => options.arm64 = true,
                "--timeout" => options.guest_timeout = seconds("--timeout", &value("--timeout")?)?,
                "--area-timeout" => {
                    options.area_timeout = seconds("--area-timeout", &value("--area-timeout")?)?
                }
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        // A quick guest runs in about 3 minutes: a hang should not cost CI 20.
        let (guest, area) = if options.quick { (600, 300) } else { (1200, 600) };
        if options.guest_timeout.is_zero() {
            options.guest_timeout = Duration::from_secs(guest);
        }
        if options.area_timeout.is_zero() {
            options.area_timeout = Duration::from_secs(area);
        }
        for name in &options.kernels {
            if !download::KERNELS.iter().any(|k| k.name == *name) {
                let known: Vec<&str> = download::KERNELS.iter().map(|k| k.name).collect();
                return Err(format!("unknown kernel `{name}`: the matrix has {}", known.join(", ")));
            }
        }
        Ok(options)
    }
}

fn seconds(option: &str, value: &str) -> Result<Duration, String> {
    value.parse().map(Duration::from_secs).map_err(|_| format!("{option} {value}: not a number of seconds"))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args)?;
    let started = Instant::now();
    setup::debian_packages(PACKAGES, false)?;
    if options.arm64 {
        return arm64::run(options.guest_timeout);
    }
    qemu::qemu(Arch::X86)?;
    if options.large_node {
        return large_node::run(&options.kernels, options.guest_timeout);
    }
    let sources = download::KERNELS
        .iter()
        .filter(|k| options.kernels.is_empty() || options.kernels.iter().any(|n| n == k.name));
    let kernels = sources.map(download::kernel).collect::<Result<Vec<_>, _>>()?;
    let binaries = build::build()?;
    let areas: report::Areas = match &binaries.tests {
        Ok(tests) if options.quick => Ok(plan::quick(plan::guest_tests(&tests.names))),
        Ok(tests) => Ok(plan::guest_tests(&tests.names)),
        Err(why) => Err(why.clone()),
    };
    let stale_plan = binaries.tests.as_ref().map(|t| plan::stale_names(&t.names)).unwrap_or_default();
    let work = workspace_root().join("target/kernel-matrix");
    let _ = std::fs::remove_dir_all(&work);

    let times =
        initramfs::GuestTimes { agent_wait: AGENT_WAIT, test_timeout: options.area_timeout.as_secs() };
    let mut results = Vec::new();
    for kernel in &kernels {
        let dir = work.join(kernel.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let initramfs =
            initramfs::make(&dir, kernel, &binaries, areas.as_deref().unwrap_or_default(), &times)?;
        eprintln!("xtask: boot {} ({}) under QEMU (TCG)", kernel.name, kernel.release);
        let boot =
            || guest::boot(&dir, &kernel.vmlinuz, &initramfs, options.guest_timeout, guest::SMP, Arch::X86);
        let mut run = boot()?;
        let mut faulted_boots = Vec::new();
        while run.emulation_fault && faulted_boots.len() < guest::EMULATION_FAULT_REBOOTS {
            // Software emulation's fault, not the kernel's answer to kernsight (guest.rs).
            let why = run.problem.take().unwrap_or_default();
            eprintln!("xtask: {}: {why}; booting it again", kernel.name);
            faulted_boots.push(why);
            run = boot()?;
        }
        let result = report::KernelResult {
            kernel: kernel.name,
            package: kernel.package.clone(),
            seconds: run.seconds,
            problem: run.problem,
            faulted_boots,
            cells: report::parse_cells(&run.output),
            tests: report::parse_tests(&run.output),
        };
        eprintln!(
            "xtask: {}: {} results and {} test results in {:.0} s{}",
            kernel.name,
            result.cells.len(),
            result.tests.len(),
            run.seconds,
            result.problem.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
        );
        results.push(result);
    }

    let mut matrix = report::matrix(&results, &areas, &stale_plan, started.elapsed().as_secs_f64());
    if options.quick {
        let tests: usize = areas.as_deref().unwrap_or_default().iter().map(|(_, tests)| tests.len()).sum();
        matrix.markdown.push_str(&format!(
            "\n`--quick`: the smoke run and {tests} chosen tests (`plan::QUICK`); the full matrix runs every test the guests can.\n"
        ));
    }
    let table = workspace_root().join("target/kernel-matrix.md");
    std::fs::write(&table, &matrix.markdown).map_err(|e| format!("write {}: {e}", table.display()))?;
    println!("{}", matrix.markdown);
    eprintln!("xtask: the table is in {}", table.display());
    if options.keep {
        eprintln!(
            "xtask: each guest's root, initramfs, console.log and output.log are in {}",
            work.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    if matrix.regressions.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} cells expected to pass failed:\n  {}",
            matrix.regressions.len(),
            matrix.regressions.join("\n  ")
        ))
    }
}
