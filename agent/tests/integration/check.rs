//! `kernsight check`: the node-readiness report on this kernel, its exit status, and the
//! fallback build named when the configuration forces it. Nothing may be left attached.

use std::process::Command;

use crate::support::{BINARY, config_file, path_str, privileged};

fn check(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(BINARY).arg("check").args(args).args(["-o", "json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, stderr)
}

fn family<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let families = report["families"].as_array().expect("a families array");
    families.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no family {name} in {report}"))
}

/// kernsight programs loaded in the kernel that no process holds: what an attach that outlives
/// its process would leave (other kernsight processes on this machine hold theirs).
fn orphaned_programs() -> usize {
    let out = Command::new("bpftool").args(["prog", "show", "-j"]).output().expect("bpftool");
    let programs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    programs
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|name| name.starts_with("ks_")))
        .filter(|p| p["pids"].as_array().is_none_or(Vec::is_empty))
        .count()
}

#[test]
fn reports_this_kernel_and_every_family_and_attaches_nothing() {
    if !privileged() {
        return;
    }
    let _serial = crate::support::serial();
    let orphans_before = orphaned_programs();
    let (status, report, stderr) = check(&[]);
    let families = report["families"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        families.len(),
        kernsight::bpf::FAMILIES.len(),
        "one row per family of the registry: {report:#} {stderr}"
    );
    let cannot_run = families.iter().filter(|f| f["verdict"] == "cannot_run").count();
    assert_eq!(status, Some(if cannot_run == 0 { 0 } else { 1 }), "exit status: {report:#} {stderr}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["kernel"], release.trim());
    assert_eq!(report["btf"], true);
    // This machine mounts v1 controllers beside v2 (hybrid); the kernel-matrix guests v2 alone.
    let layout = if std::path::Path::new("/sys/fs/cgroup/unified").exists() { "hybrid" } else { "v2" };
    assert_eq!(report["cgroups"]["layout"], layout);
    let features = &report["features"];
    let task_storage = features["task_storage"] == true && features["current_task_btf"] == true;
    let full = task_storage && features["cgroup_storage"] == true;
    let (object, slots, runqueue) = match (full, task_storage) {
        (true, _) => ("kernsight", "cgroup_storage", "task_storage"),
        (false, true) => ("kernsight-hashed-slots", "cgroup_id_hash", "task_storage"),
        (false, false) => ("kernsight-fallback", "cgroup_id_hash", "thread_id_lru"),
    };
    assert_eq!(report["object"], object, "the build follows the probed features: {features}");
    assert_eq!(family(&report, "syscalls")["implementation"], slots);
    assert_eq!(family(&report, "syscalls")["verdict"], if full { "runs" } else { "runs_with_fallback" });
    assert_eq!(
        family(&report, "runqueue")["implementation"],
        crate::support::runqueue_implementation(runqueue)
    );
    let hook = if features["cap_capable_tracepoint"] == true { "tracepoint" } else { "fexit" };
    assert_eq!(family(&report, "capabilities")["implementation"], hook);
    // Programs of another kernsight process that is exiting are briefly held by none: wait for
    // the kernel to free them rather than count them as the check's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while orphaned_programs() > orphans_before {
        assert!(std::time::Instant::now() < deadline, "kernsight check left programs in the kernel");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn names_the_fallback_build_and_why() {
    if !privileged() {
        return;
    }
    let (_dir, config) = config_file("[bpf]\nobject = \"fallback\"\n[sched]\nprocesses = false\n");
    let (status, report, stderr) = check(&["--config", path_str(&config)]);
    let families = report["families"].as_array().cloned().unwrap_or_default();
    let cannot_run = families.iter().filter(|f| f["verdict"] == "cannot_run").count();
    assert_eq!(status, Some(if cannot_run == 0 { 0 } else { 1 }), "exit status: {report:#} {stderr}");
    assert_eq!(report["object"], "kernsight-fallback");
    assert!(report["object_fallback"].as_str().is_some_and(|why| why.contains("bpf.object")));
    let syscalls = family(&report, "syscalls");
    assert_eq!(syscalls["verdict"], "runs_with_fallback");
    assert_eq!(syscalls["implementation"], "cgroup_id_hash");
    assert_eq!(
        family(&report, "runqueue")["implementation"],
        crate::support::runqueue_implementation("thread_id_lru")
    );
    assert_eq!(family(&report, "processes")["verdict"], "disabled");
}

#[test]
fn without_privileges_the_check_fails_with_status_2() {
    if !privileged() {
        return;
    }
    // Root with an empty bounding set: no capability survives the exec.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-all", "--inh-caps", "-all", "--ambient-caps", "-all", "--", BINARY])
        .args(["check"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CAP_BPF and CAP_PERFMON"), "{stderr}");
}
