//! One guest: QEMU with software emulation (KVM is not usable here) boots the kernel with the
//! initramfs, the guest writes its results to the second serial port and a heartbeat to the
//! third, and QEMU is killed if the guest has not powered off in time or its heartbeat stops.
//!
//! The heartbeat is there for software emulation's own hangs: a few guests of the matrix runs so
//! far stopped with both virtual CPUs spinning and nothing more on the console, or soft-locked at
//! a jump label the kernel was patching, and booting the same guest again passed. The other
//! fault of emulation seen here is an `int3` Oops where the kernel patches a jump label while
//! the other virtual CPU runs it (TCG's self-modifying code across vCPUs; `ttwu_do_activate` on
//! 6.12 when the scheduler programs attach; CI once met it on two boots in a row). The guest
//! makes it rarer by holding two probes on the scheduler's tracepoints for its whole run
//! (guest/run.sh), so that agents attaching and detaching patch nothing there. Either fault is
//! booted again, up to `EMULATION_FAULT_REBOOTS` times (`mod.rs`), with the faulted boot's logs
//! kept; any other panic, a timeout or a failed test is not.

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
    /// Software emulation's own fault (`problem` says which): its heartbeat stopped, or its
    /// kernel died of an `int3` at a patched jump label.
    pub emulation_fault: bool,
}

/// The last line of guest/run.sh.
const FINISHED: &str = "==== done";

/// How many times a guest is booted again after software emulation's own fault.
pub const EMULATION_FAULT_REBOOTS: usize = 2;

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
    let read = |path: &Path| std::fs::read(path).map(|b| String::from_utf8_lossy(&b).replace('\r', ""));
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
                    if read(&results).is_ok_and(|output| output.contains(FINISHED)) {
                        // Every result is in: only the power-off did not come.
                        eprintln!("xtask: the guest finished its script but did not power off: qemu killed");
                        break None;
                    }
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
    let output = read(&results).unwrap_or_default();
    // A panic reboots, and -no-reboot turns that into a normal exit: the script's last line tells.
    let problem = problem.or_else(|| {
        (!output.contains(FINISHED)).then(|| {
            let console = read(&console).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(3).collect();
            format!("the guest stopped before its script finished; console ends: {}", tail.join(" | "))
        })
    });
    let int3 = problem.is_some() && !stalled && read(&console).is_ok_and(|c| c.contains("Oops: int3"));
    if stalled || int3 {
        // A hang is in the last lines, an int3 at its Oops, not at the first report (the tests'
        // OOM kills print call traces); the logs are kept beside the next boot's.
        let console_text = read(&console).unwrap_or_default();
        let last = |text: &str, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let excerpt = match console_text.find("Oops: int3") {
            Some(at) if int3 => console_text[at..].lines().take(40).collect::<Vec<_>>().join("\n"),
            _ => last(&console_text, 40),
        };
        eprintln!("xtask: the guest's last output:\n{}\nxtask: its console:\n{excerpt}", last(&output, 15));
        for log in [&console, &results] {
            let _ = std::fs::rename(log, log.with_extension("faulted-boot.log"));
        }
    } else if problem.is_some() {
        // The guest's directory is removed after the run unless --keep: the kernel's own account
        // of what went wrong goes to stderr now, so that a panic in CI leaves its oops behind.
        let console = read(&console).unwrap_or_default();
        eprintln!("xtask: the guest's kernel log from its first sign of trouble:\n{}", trouble(&console));
    }
    let problem =
        problem.map(|p| if int3 { format!("an int3 Oops at a patched jump label: {p}") } else { p });
    Ok(GuestRun { output, seconds, problem, emulation_fault: stalled || int3 })
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
