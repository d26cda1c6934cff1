//! An independent view of the `sched_switch` tracepoint, for tests that compare what the agent
//! saw there with the kernel's own accounts (schedstat, cpu.stat): a tracefs instance of the
//! test's own that records the switches of the threads named `comm`.
//!
//! Why: a kernel may switch a thread in without firing `sched_switch`. On the development VM
//! the tracepoint never reports a switch out of the VM's init (its PID 1 threads), so the
//! switch in of whichever thread follows is unreported, to ftrace and to BPF alike, while
//! schedstat counts that arrival and its wait. No tracepoint tool can see such a wait, so a
//! run where the tracepoint hid a switch of the test's thread cannot check the agent against
//! the kernel's accounts; [`SwitchWatch::hidden_switches`] tells the test so.

use std::path::PathBuf;

/// Where tracefs may be mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A tracefs instance recording `sched_switch` for one thread name; removed on drop.
pub struct SwitchWatch {
    instance: PathBuf,
    comm: String,
}

impl SwitchWatch {
    /// Starts recording the switches of threads named `comm` (at most 15 bytes, no spaces or
    /// quotes). `Err` (with the reason) where tracefs or its instances are not available.
    pub fn start(comm: &str) -> Result<Self, String> {
        assert!(comm.len() <= 15 && comm.chars().all(|c| c.is_ascii_graphic() && c != '"'), "comm {comm:?}");
        let instances = TRACEFS
            .iter()
            .map(|root| PathBuf::from(root).join("instances"))
            .find(|dir| dir.is_dir())
            .ok_or_else(|| format!("no tracefs instances under {TRACEFS:?}"))?;
        let instance = instances.join(format!("kernsight-test-{}-{comm}", std::process::id()));
        std::fs::create_dir(&instance).map_err(|e| format!("cannot create {}: {e}", instance.display()))?;
        let watch = Self { instance, comm: comm.to_owned() };
        let event = watch.instance.join("events/sched/sched_switch");
        let filter = format!("prev_comm == \"{comm}\" || next_comm == \"{comm}\"");
        std::fs::write(event.join("filter"), filter)
            .and_then(|()| std::fs::write(event.join("enable"), "1"))
            .map_err(|e| format!("cannot enable sched_switch in {}: {e}", watch.instance.display()))?;
        Ok(watch)
    }

    /// Switches of the watched threads the tracepoint did not report so far: a switch out with
    /// no switch in since the last one (or a switch in with no switch out), per thread.
    pub fn hidden_switches(&self) -> usize {
        let trace = std::fs::read_to_string(self.instance.join("trace")).unwrap_or_default();
        hidden_switches(&trace, &self.comm)
    }
}

impl Drop for SwitchWatch {
    fn drop(&mut self) {
        let _ = std::fs::write(self.instance.join("events/sched/sched_switch/enable"), "0");
        if let Err(e) = std::fs::remove_dir(&self.instance) {
            eprintln!("cannot remove the tracefs instance {}: {e}", self.instance.display());
        }
    }
}

/// Counts the unreported switches of the threads named `comm` in `trace` (tracefs text).
fn hidden_switches(trace: &str, comm: &str) -> usize {
    let (prev, next) = (format!("prev_comm={comm} prev_pid="), format!("next_comm={comm} next_pid="));
    let pid_after = |line: &str, key: &str| -> Option<u32> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    // Per thread: whether its last reported switch put it on a CPU.
    let mut on_cpu = std::collections::HashMap::<u32, bool>::new();
    let mut hidden = 0;
    for line in trace.lines().filter(|l| l.contains("sched_switch:")) {
        // A thread switched out first was switched in before the recording began.
        if let Some(pid) = pid_after(line, &prev)
            && on_cpu.insert(pid, false) == Some(false)
        {
            hidden += 1;
        }
        if let Some(pid) = pid_after(line, &next)
            && on_cpu.insert(pid, true) == Some(true)
        {
            hidden += 1;
        }
    }
    hidden
}

#[cfg(test)]
mod tests {
    use super::hidden_switches;

    const IN: &str = "<idle>-0 [000] d..2. 1.0: sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 \
                      prev_state=R ==> next_comm=loop next_pid=7 next_prio=120";
    const OUT: &str = "loop-7 [000] d..2. 2.0: sched_switch: prev_comm=loop prev_pid=7 prev_prio=120 \
                       prev_state=R+ ==> next_comm=swapper/0 next_pid=0 next_prio=120";
    const OUT_TO_OTHER: &str = "loop-7 [000] d..2. 3.0: sched_switch: prev_comm=loop prev_pid=7 \
                                prev_prio=120 prev_state=R ==> next_comm=Web Content next_pid=9 next_prio=120";

    #[test]
    fn every_switch_reported_hides_nothing() {
        let trace = [OUT, IN, OUT, IN, OUT_TO_OTHER].join("\n");
        assert_eq!(hidden_switches(&trace, "loop"), 0);
    }

    #[test]
    fn a_switch_out_with_no_switch_in_before_it_is_one_hidden_switch_in() {
        let trace = [IN, OUT, OUT_TO_OTHER, IN, IN].join("\n");
        assert_eq!(hidden_switches(&trace, "loop"), 2);
    }

    #[test]
    fn other_threads_and_names_that_only_begin_alike_do_not_count() {
        let other = OUT.replace("prev_comm=loop prev_pid=7", "prev_comm=loop2 prev_pid=8");
        let trace = [OUT, other.as_str(), other.as_str(), IN].join("\n");
        assert_eq!(hidden_switches(&trace, "loop"), 0);
    }
}
