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
