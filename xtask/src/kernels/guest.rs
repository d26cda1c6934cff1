//! One guest: QEMU with software emulation (KVM is not usable here) boots the kernel with the
//! initramfs, the guest writes its results to the second serial port, and QEMU is killed if the
//! guest has not powered off in time.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How a guest run ended, and what its second serial port carried.
pub struct GuestRun {
    pub output: String,
    pub seconds: f64,
    /// `None` when the guest powered off; else why QEMU did not end normally.
    pub problem: Option<String>,
}

/// The last line of guest/run.sh.
const FINISHED: &str = "==== done";

pub fn boot(dir: &Path, vmlinuz: &Path, initramfs: &Path, timeout: Duration) -> Result<GuestRun, String> {
    let console = dir.join("console.log");
    let results = dir.join("output.log");
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init"])
        // ttyS0: the kernel's console; ttyS1: what the guest script writes.
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
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
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("waiting for qemu: {e}")),
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
    Ok(GuestRun { output, seconds, problem })
}
