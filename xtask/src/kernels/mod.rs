//! `cargo xtask test-kernels`: the kernel matrix. Each of Debian's cloud kernels (5.10, 6.1,
//! 6.12, all with BTF) boots under QEMU with a busybox initramfs on pure cgroup v2 and runs the
//! static musl agent (`kernsight check`, a smoke run, the integration tests that need no
//! container runtime); the results become a family × kernel table, held against the
//! expectations in `plan.rs`.

mod build;
mod download;
mod guest;
mod initramfs;
mod plan;
mod report;

use std::time::{Duration, Instant};

use crate::{process::workspace_root, setup};

/// What the harness needs from Debian besides what `setup` installs: QEMU, cpio to pack the
/// initramfs, busybox-static as the guests' userland, binutils to strip the test binaries.
const PACKAGES: &[&str] = &["qemu-system-x86", "cpio", "busybox-static", "binutils"];

const USAGE: &str = "test-kernels [--kernel VERSION]... [--keep] [--timeout SECONDS]\n\
    boots Debian's 5.10, 6.1 and 6.12 cloud kernels under QEMU and runs the agent and the\n\
    integration tests in each; --kernel runs only the named ones, --keep keeps each guest's\n\
    root, initramfs and output under target/kernel-matrix/, --timeout bounds one guest\n\
    (default 900 s); the table goes to target/kernel-matrix.md";

struct Options {
    kernels: Vec<String>,
    keep: bool,
    guest_timeout: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self { kernels: Vec::new(), keep: false, guest_timeout: Duration::from_secs(900) };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--kernel" => options.kernels.push(value("--kernel")?),
                "--keep" => options.keep = true,
                "--timeout" => {
                    let seconds = value("--timeout")?;
                    let seconds = seconds
                        .parse()
                        .map_err(|_| format!("--timeout {seconds}: not a number of seconds"))?;
                    options.guest_timeout = Duration::from_secs(seconds);
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

pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args)?;
    let started = Instant::now();
    // Without QEMU's recommends (a GUI, audio and video libraries: 450 MB the guests never use).
    setup::debian_packages(PACKAGES, false)?;
    let sources = download::KERNELS
        .iter()
        .filter(|k| options.kernels.is_empty() || options.kernels.iter().any(|n| n == k.name));
    let kernels = sources.map(download::kernel).collect::<Result<Vec<_>, _>>()?;
    let binaries = build::build()?;
    let work = workspace_root().join("target/kernel-matrix");
    let _ = std::fs::remove_dir_all(&work);

    let times = initramfs::GuestTimes { agent_wait: 180, test_timeout: 600 };
    let mut results = Vec::new();
    for kernel in &kernels {
        let dir = work.join(kernel.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let initramfs = initramfs::make(&dir, kernel, &binaries, &times)?;
        eprintln!("xtask: boot {} ({}) under QEMU (TCG)", kernel.name, kernel.release);
        let run = guest::boot(&dir, &kernel.vmlinuz, &initramfs, options.guest_timeout)?;
        let mut cells = report::parse(&run.output);
        for name in binaries.unbuilt.iter().filter(|name| runs_in_guests(name)) {
            let cell = report::Cell {
                status: report::Status::Fail,
                detail: format!("does not build for {} (cargo's error is in the log above)", build::TARGET),
            };
            cells.push((format!("test:{name}"), cell));
        }
        eprintln!(
            "xtask: {}: {} results in {:.0} s{}",
            kernel.name,
            cells.len(),
            run.seconds,
            run.problem.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
        );
        results.push(report::KernelResult {
            kernel: kernel.name,
            package: kernel.package.clone(),
            seconds: run.seconds,
            problem: run.problem,
            cells,
        });
    }

    let mut test_binaries: Vec<String> =
        binaries.tests.iter().map(|(name, _)| name).chain(&binaries.unbuilt).cloned().collect();
    test_binaries.retain(|name| runs_in_guests(name));
    test_binaries.sort();
    let matrix = report::matrix(&results, &test_binaries, started.elapsed().as_secs_f64());
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

fn runs_in_guests(test_binary: &str) -> bool {
    matches!(plan::guest_run(test_binary), plan::Run::Skipping(_))
}
