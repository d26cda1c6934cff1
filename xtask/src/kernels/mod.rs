//! `cargo xtask test-kernels`: the kernel matrix. Each of Debian's cloud kernels (5.10, 6.1,
//! 6.12, all with BTF) boots under QEMU with a busybox initramfs on pure cgroup v2 and runs the
//! static musl agent (`kernsight check`, a smoke run, the cgroup v2 collectors on real numbers,
//! the areas of the integration tests that need no container runtime, one run of the test binary
//! per area); the results become a family × kernel table with a row per area and a verdict per
//! test, held against the expectations in `plan.rs`.

mod build;
mod download;
mod guest;
mod initramfs;
mod large_node;
mod plan;
mod qemu;
mod report;

use std::time::{Duration, Instant};

use crate::{process::workspace_root, setup};

/// What the harness needs from Debian besides what `setup` installs: cpio to pack the initramfs,
/// busybox-static as the guests' userland, binutils to strip the test binaries. QEMU comes from
/// `qemu.rs`.
const PACKAGES: &[&str] = &["cpio", "busybox-static", "binutils"];

const USAGE: &str = "test-kernels [--kernel VERSION]... [--keep] [--timeout SECONDS] [--area-timeout SECONDS] [--large-node]\n\
    boots Debian's 5.10, 6.1 and 6.12 cloud kernels under QEMU and runs the agent and the\n\
    integration tests in each; --kernel runs only the named ones, --keep keeps each guest's\n\
    root, initramfs and output under target/kernel-matrix/, --timeout bounds one guest\n\
    (default 1200 s), --area-timeout one area of the tests in it (default 600 s); the table\n\
    goes to target/kernel-matrix.md. --large-node instead boots one guest per kernel (default\n\
    6.1) with 192 possible CPUs and checks the agent's map budget in memory cgroups of the\n\
    sizes docs/deploy.md gives (xtask/src/kernels/large_node.rs)";

/// Seconds a guest waits for the smoke run's agent to serve (it serves in about 1 s).
const AGENT_WAIT: u64 = 180;

struct Options {
    kernels: Vec<String>,
    keep: bool,
    /// The 192-CPU map budget check instead of the matrix.
    large_node: bool,
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
            keep: false,
            large_node: false,
            guest_timeout: Duration::from_secs(1200),
            area_timeout: Duration::from_secs(600),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--kernel" => options.kernels.push(value("--kernel")?),
                "--keep" => options.keep = true,
                "--large-node" => options.large_node = true,
                "--timeout" => options.guest_timeout = seconds("--timeout", &value("--timeout")?)?,
                "--area-timeout" => {
                    options.area_timeout = seconds("--area-timeout", &value("--area-timeout")?)?
                }
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
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
    qemu::qemu()?;
    if options.large_node {
        return large_node::run(&options.kernels, options.guest_timeout);
    }
    let sources = download::KERNELS
        .iter()
        .filter(|k| options.kernels.is_empty() || options.kernels.iter().any(|n| n == k.name));
    let kernels = sources.map(download::kernel).collect::<Result<Vec<_>, _>>()?;
    let binaries = build::build()?;
    let areas: report::Areas = match &binaries.tests {
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
        let initramfs = initramfs::make(&dir, kernel, &binaries, &times)?;
        eprintln!("xtask: boot {} ({}) under QEMU (TCG)", kernel.name, kernel.release);
        let run = guest::boot(&dir, &kernel.vmlinuz, &initramfs, options.guest_timeout, guest::SMP)?;
        let result = report::KernelResult {
            kernel: kernel.name,
            package: kernel.package.clone(),
            seconds: run.seconds,
            problem: run.problem,
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

    let matrix = report::matrix(&results, &areas, &stale_plan, started.elapsed().as_secs_f64());
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
