//! Processes the test starts: killed and reaped when the test is done, also when it fails.

use std::{
    ops::{Deref, DerefMut},
    process::Child,
    time::Duration,
};

use super::poll;

/// A child process (a tracer, strace, bpftrace, a workload) killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits (`timeout` at most) until none of `pids` runs, reaping those that are our children. A
/// killed process that is not our child may stay a zombie until its parent reaps it: gone from
/// our point of view.
pub fn wait_gone(pids: &[i32], timeout: Duration) {
    let running = |pid: &i32| {
        // SAFETY: reaps the pid if it is our exited child; ECHILD or 0 otherwise.
        unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    let gone = poll(timeout, || {
        let left: Vec<&i32> = pids.iter().filter(|pid| running(pid)).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("processes {left:?} still run")) }
    });
    if let Err(e) = gone {
        eprintln!("cleanup: {e}");
    }
}
