use super::*;

const SYS_ADMIN: u64 = 1 << 21;
const AUDIT_WRITE: u64 = 1 << 29;
/// podman's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL NET_BIND_SERVICE SETFCAP
/// SETGID SETPCAP SETUID SYS_CHROOT.
const PODMAN_DEFAULT: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 10)
    | (1 << 31)
    | (1 << 6)
    | (1 << 8)
    | (1 << 7)
    | (1 << 18);

#[test]
fn the_embedded_profile_reads() {
    let profile = Profile::runtime_default();
    assert_eq!(profile.default, Action::Deny);
    assert!(profile.rules.len() > 300, "{} names", profile.rules.len());
}

#[test]
fn the_embedded_profile_answers_as_containers_common_does() {
    let profile = Profile::runtime_default();
    for allowed in ["read", "openat", "getppid", "clone", "keyctl", "mount", "unshare", "ptrace"] {
        assert_eq!(profile.verdict(allowed, PODMAN_DEFAULT), Verdict::Allowed, "{allowed}");
    }
    // Never allowed, or not named at all (the default action denies).
    for denied in ["add_key", "request_key", "kexec_load", "userfaultfd", "swapon", "io_uring_setup"] {
        assert_eq!(profile.verdict(denied, PODMAN_DEFAULT), Verdict::Denied, "{denied}");
    }
    // Allowed only with CAP_SYS_ADMIN in the bounding set.
    for admin in ["bpf", "perf_event_open", "fanotify_init", "lookup_dcookie"] {
        assert_eq!(profile.verdict(admin, PODMAN_DEFAULT), Verdict::Denied, "{admin}");
        assert_eq!(profile.verdict(admin, PODMAN_DEFAULT | SYS_ADMIN), Verdict::Allowed, "{admin}");
    }
    assert_eq!(profile.verdict("chroot", PODMAN_DEFAULT), Verdict::Allowed);
    assert_eq!(profile.verdict("chroot", 0), Verdict::Denied);
    // Argument conditions cannot be decided from a name.
    assert_eq!(profile.verdict("personality", PODMAN_DEFAULT), Verdict::Depends);
    assert_eq!(profile.verdict("socket", PODMAN_DEFAULT), Verdict::Depends);
    assert_eq!(profile.verdict("socket", PODMAN_DEFAULT | AUDIT_WRITE), Verdict::Allowed);
    // Other architectures' rules do not apply here.
    assert_eq!(profile.verdict("s390_runtime_instr", u64::MAX), Verdict::Denied);
    assert_eq!(profile.verdict("arch_prctl", 0), Verdict::Allowed);
}

#[test]
fn min_kernel_and_the_single_name_form() {
    let text = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"name":"ptrace","action":"SCMP_ACT_ERRNO","excludes":{"minKernel":"4.8"}},
        {"names":["memfd_secret"],"action":"SCMP_ACT_ERRNO","includes":{"minKernel":"5.14"}},
        {"names":["kcmp"],"action":"SCMP_ACT_NOTIFY"}]}"#;
    let old = Profile::parse(text, (4, 4)).unwrap();
    assert_eq!(old.verdict("ptrace", 0), Verdict::Denied);
    assert_eq!(old.verdict("memfd_secret", 0), Verdict::Allowed);
    let new = Profile::parse(text, (5, 15)).unwrap();
    assert_eq!(new.verdict("ptrace", 0), Verdict::Allowed);
    assert_eq!(new.verdict("memfd_secret", 0), Verdict::Denied);
    assert_eq!(new.verdict("kcmp", 0), Verdict::Depends);
    assert_eq!(new.verdict("read", 0), Verdict::Allowed);
}

#[test]
fn bad_profiles_are_refused_with_the_reason() {
    for (text, why) in [
        ("[]", "not a seccomp profile"),
        (r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "unknown seccomp action"),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_WISH"]}}]}"#,
            "unknown capability",
        ),
    ] {
        let error = Profile::parse(text, (6, 1)).unwrap_err();
        assert!(error.contains(why), "{text}: {error}");
    }
}

#[test]
fn a_huge_file_is_not_read_whole() {
    let dir = std::env::temp_dir().join(format!("kernsight-seccomp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.json");
    std::fs::write(&path, vec![b' '; (MAX_PROFILE_BYTES + 10) as usize]).unwrap();
    let error = Profile::read(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(error.contains("larger than"), "{error}");
}
