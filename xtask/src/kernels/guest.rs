//! One guest: QEMU with software emulation (KVM is not usable here) boots the kernel with the
//! initramfs, the guest writes its results to the second serial port and a heartbeat to the
//! third, and QEMU is killed if the guest has not powered off in time or its heartbeat stops.
//!
//! The heartbeat is there for software emulation's own hangs: a few guests of the matrix runs so
//! far stopped with both virtual CPUs spinning and nothing more on the console, or soft-locked at
//! a jump label the kernel was patching, and booting the same guest again passed.
//! A stalled guest is booted again once (`mod.rs`); a panic, a timeout or a failed test is not.

use super::qemu::Arch;
use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

/// How a guest run ended, and what its second serial port carried.
pub struct GuestRun {
    pub output: String,
    pub seconds: f64,
    /// `None` when the guest powered off; else why QEMU did not end normally.
    pub problem: Option<String>,
    /// Its heartbeat stopped: QEMU was killed (and `problem` says so).
    pub stalled: bool,
}

/// The last line of guest/run.sh.
const FINISHED: &str = "==== done";

/// The matrix guests' CPUs: two, all online.
pub const SMP: &str = "2";

/// A guest whose heartbeat (every 10 s, from the guest's init) has not come for this long has
/// hung; its boot counts from QEMU's start (a few seconds under TCG).
const STALL: Duration = Duration::from_secs(90);

/// Boots the guest with `smp` as QEMU's `-smp` (`1,maxcpus=192`: one CPU online, 192 possible).
pub fn boot(
    dir: &Path,
    vmlinuz: &Path,
    initramfs: &Path,
    timeout: Duration,
    smp: &str,
    arch: Arch,
) -> Result<GuestRun, String> {
    let console = dir.join("console.log");
    let mut command = super::qemu::qemu(arch)?.command();
    command
        .args(["-accel", "tcg", "-m", "2G", "-smp", smp])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    let (results, heartbeat) = match arch {
        Arch::X86 => {
            // ttyS0: the kernel's console; ttyS1: what the guest script writes; ttyS2: its
            // heartbeat.
            let (results, heartbeat) = (dir.join("output.log"), dir.join("heartbeat.log"));
            for port in [&results, &heartbeat] {
                command.arg("-serial").arg(format!("file:{}", port.display()));
            }
            command.args(["-cpu", "max", "-append", "console=ttyS0 panic=-1 rdinit=/init"]);
            (results, heartbeat)
        }
        // QEMU 7.2's arm `virt` machine has one UART: the console carries everything (init.sh),
        // the kernel's own messages held to errors.
        Arch::Arm64 => {
            // pauth-impdef: QEMU's cheap pointer authentication instead of the architected
            // cipher, which makes emulating every kernel function entry several times slower.
            command.args(["-machine", "virt", "-cpu", "max,pauth-impdef=on", "-nic", "none"]);
            command.args(["-append", "console=ttyAMA0 loglevel=3 panic=-1 rdinit=/init"]);
            (console.clone(), console.clone())
        }
    };
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", arch.program()))?;
    let (mut beats, mut last_beat) = (0, started);
    let mut stalled = false;
    let problem = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break None,
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                break Some(format!("qemu exited with {status}: {}", stderr.trim()));
            }
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Some(format!(
                    "the guest did not power off within {} s: qemu killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => {
                let now = std::fs::metadata(&heartbeat).map_or(0, |m| m.len());
                if now != beats {
                    (beats, last_beat) = (now, Instant::now());
                } else if last_beat.elapsed() > STALL {
                    let _ = child.kill();
                    let _ = child.wait();
                    stalled = true;
                    break Some(format!(
                        "stalled: no heartbeat for {} s after {:.0} s (qemu killed)",
                        STALL.as_secs(),
                        started.elapsed().as_secs_f64()
                    ));
                }
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => return Err(format!("waiting for {}: {e}", arch.program())),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let read = |path: &Path| std::fs::read(path).map(|b| String::from_utf8_lossy(&b).replace('\r', ""));
    let output = read(&results).unwrap_or_default();
    // A panic reboots, and -no-reboot turns that into a normal exit: the script's last line tells.
    let problem = problem.or_else(|| {
        (!output.contains(FINISHED)).then(|| {
            let console = read(&console).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(3).collect();
            format!("the guest stopped before its script finished; console ends: {}", tail.join(" | "))
        })
    });
    if problem.is_some() {
        // The guest's directory is removed after the run unless --keep: the kernel's own account
        // of what went wrong goes to stderr now, so that a panic in CI leaves its oops behind.
        let console = read(&console).unwrap_or_default();
        eprintln!("xtask: the guest's kernel log from its first sign of trouble:\n{}", trouble(&console));
    }
    Ok(GuestRun { output, seconds, problem, stalled })
}

/// Lines that start a kernel's report of a fault, a warning or a panic.
const TROUBLE: &[&str] =
    &["BUG:", "Oops", "general protection fault", "WARNING:", "Kernel panic", "Call Trace:", "RIP:"];

/// Most lines of a console log kept around its first sign of trouble.
const TROUBLE_LINES: usize = 120;

/// The console from a few lines before its first report of a fault (or its last lines when there
/// is none), at most `TROUBLE_LINES` lines.
fn trouble(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let first = lines.iter().position(|line| TROUBLE.iter().any(|marker| line.contains(marker)));
    let start = match first {
        Some(index) => index.saturating_sub(5),
        None => lines.len().saturating_sub(TROUBLE_LINES),
    };
    lines[start..].iter().take(TROUBLE_LINES).copied().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::trouble;

    #[test]
    fn the_excerpt_starts_just_before_the_oops() {
        let mut console: Vec<String> = (0..200).map(|i| format!("[ {i}] ordinary")).collect();
        console.insert(150, "[ 150] BUG: kernel NULL pointer dereference, address: 0".to_owned());
        let excerpt = trouble(&console.join("\n"));
        assert!(excerpt.starts_with("[ 145] ordinary"), "{excerpt}");
        assert!(excerpt.contains("BUG: kernel NULL pointer"));
        assert_eq!(excerpt.lines().count(), 56);
    }

    #[test]
    fn without_an_oops_the_excerpt_is_the_end() {
        let console: Vec<String> = (0..300).map(|i| format!("line {i}")).collect();
        let excerpt = trouble(&console.join("\n"));
        assert_eq!(excerpt.lines().count(), 120);
        assert!(excerpt.starts_with("line 180") && excerpt.ends_with("line 299"), "{excerpt}");
    }
}
