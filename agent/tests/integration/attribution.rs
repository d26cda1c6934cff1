//! The syscall exit's per-CPU cache of the last thread's cgroup, attacked where it could count
//! one cgroup's calls as another's: a thread created on the kernel stack of one that just died
//! (the cache names threads by their stack), and a thread that changes cgroup. Each count is
//! exact: nothing else runs in the test's cgroups.

use std::ffi::CString;

use crate::{
    sched::pin_to,
    support::{
        self, Agent, TestCgroup, getppid_times, join_procs, parse, privileged, spawn_into, value, wait_status,
    },
};

/// getppid calls of each child.
const CALLS: usize = 2_000;
/// Pairs of children in `a_thread_on_a_dead_threads_kernel_stack_counts_under_its_own_cgroup`.
const ROUNDS: usize = 50;

fn getppids(samples: &[support::Sample], cgroup: &TestCgroup) -> f64 {
    value(samples, "kernsight_syscalls_total", &[("cgroup", &cgroup.label), ("syscall", "getppid")])
}

/// Runs a child forked into `cgroup` (no migration) and checks that it exited with 0.
fn run_into(cgroup: &TestCgroup, workload: impl FnOnce() -> i32) {
    let status = wait_status(spawn_into(&cgroup.path, workload));
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "workload status {status}");
}

/// The calling thread's CPU affinity, put back on drop.
struct AffinityGuard(libc::cpu_set_t);

impl AffinityGuard {
    fn save() -> Self {
        // SAFETY: a zeroed cpu_set_t is valid; the call fills it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set), 0);
            Self(set)
        }
    }
}

impl Drop for AffinityGuard {
    fn drop(&mut self) {
        // SAFETY: the set read in `save`.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// Each round: a child in `first` counts on CPU 1 and dies on CPU 0, whose cache of freed
/// kernel stacks then hands its stack to the next fork there; the test thread, on CPU 0, forks
/// a child straight into `second` (no migration), which counts on CPU 1, where the cache entry
/// of the first child's stack is. Were a fork not to end the cache's epoch, the second child's
/// calls would count under `first`.
#[test]
fn a_thread_on_a_dead_threads_kernel_stack_counts_under_its_own_cgroup() {
    if !privileged() {
        return;
    }
    if !support::kernel_at_least(5, 7) {
        return support::skip("clone3 CLONE_INTO_CGROUP is 5.7+");
    }
    // SAFETY: no preconditions.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        return support::skip("needs two CPUs");
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let (first, second) = (TestCgroup::create("stack-first"), TestCgroup::create("stack-second"));
    {
        let _affinity = AffinityGuard::save();
        assert!(pin_to(0), "pinning the test thread to CPU 0");
        for _ in 0..ROUNDS {
            run_into(&first, || {
                if !pin_to(1) {
                    return 3;
                }
                getppid_times(CALLS);
                if pin_to(0) { 0 } else { 3 }
            });
            run_into(&second, || {
                if !pin_to(1) {
                    return 3;
                }
                getppid_times(CALLS);
                0
            });
        }
    }
    let samples = parse(&agent.scrape());
    let expected = (ROUNDS * CALLS) as f64;
    assert_eq!(getppids(&samples, &first), expected, "{}: its own calls only", first.label);
    assert_eq!(getppids(&samples, &second), expected, "{}: every call of its own", second.label);
}

/// A child counts in one cgroup, moves itself to another, and counts again on the same CPU:
/// the move ends the epoch of the cache entry the first calls left.
fn moves_between(from: &TestCgroup, to: &TestCgroup) {
    let agent = Agent::start(&[]);
    let procs = CString::new(to.path.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
    let code = from.run(|| {
        if !pin_to(0) {
            return 3;
        }
        getppid_times(CALLS);
        if !join_procs(&procs) {
            return 2;
        }
        getppid_times(CALLS);
        0
    });
    assert_eq!(code, 0, "the moving workload failed");
    let samples = parse(&agent.scrape());
    assert_eq!(getppids(&samples, from), CALLS as f64, "{}: the calls before the move", from.label);
    assert_eq!(getppids(&samples, to), CALLS as f64, "{}: the calls after the move", to.label);
}

#[test]
fn a_thread_that_moves_to_another_cgroup_counts_its_later_calls_there() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    moves_between(&TestCgroup::create("move-from"), &TestCgroup::create("move-to"));
}

/// The same between two v1 cgroups, for a thread of the v2 root of a hybrid host.
#[test]
fn a_thread_that_moves_between_v1_cgroups_counts_its_later_calls_in_the_new_one() {
    if !privileged() {
        return;
    }
    let Some(memory) = support::v1_root("memory") else {
        return support::skip("no v1 memory hierarchy (pure v2 host)");
    };
    let _serial = support::serial();
    moves_between(&TestCgroup::create_in(&memory, "v1-from"), &TestCgroup::create_in(&memory, "v1-to"));
}
