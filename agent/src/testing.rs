//! What the crate's own tests share.

/// Whether a test that needs root may run; when it may not, it says so, or fails when
/// KERNSIGHT_PRIVILEGED_TESTS=required.
pub fn privileged(name: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("KERNSIGHT_PRIVILEGED_TESTS").as_deref() != Ok("required"),
        "{name} needs root (KERNSIGHT_PRIVILEGED_TESTS=required)"
    );
    eprintln!("SKIPPED {name}: needs root");
    false
}

/// Resident bytes of this process (`/proc/self/statm`), for tests of what the agent gives back.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Runs the test `path` (its full path) again in a process of its own and returns true once it
/// passed there; in that process, returns false and the test goes on. For tests that measure
/// the whole process (its resident memory): in this one the other tests allocate and free on
/// their threads meanwhile, by as much as such a test's margin.
pub fn ran_alone(path: &str) -> bool {
    const ALONE: &str = "KERNSIGHT_TEST_ALONE";
    if std::env::var_os(ALONE).is_some() {
        return false;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([path, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{path}, alone:\n{stdout}{stderr}");
    assert!(stdout.contains("1 passed"), "{path} did not run alone:\n{stdout}{stderr}");
    true
}
