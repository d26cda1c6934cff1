use super::*;

fn workload(namespace: &str, workload: &str, container: &str) -> Workload {
    Workload {
        namespace: namespace.into(),
        pod: format!("{workload}-0"),
        container: container.into(),
        workload_kind: if workload.is_empty() { String::new() } else { "Deployment".into() },
        workload: workload.into(),
        ..Workload::default()
    }
}

/// Allows read, write and futex; bpf only with CAP_SYS_ADMIN; everything else fails.
const BASELINE: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
    {"names":["read","write","futex"],"action":"SCMP_ACT_ALLOW"},
    {"names":["bpf"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;

fn profiles() -> Profiles {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web-baseline.json");
    std::fs::write(&path, BASELINE).unwrap();
    let baseline = Baseline {
        namespace: "shop".into(),
        workload: "web".into(),
        label: "web-baseline".into(),
        profile: Profile::read(&path).unwrap(),
    };
    Profiles { runtime_default: Profile::runtime_default(), baselines: vec![baseline] }
}

fn calls(rows: &[(&Workload, &'static str, u64)]) -> Box<Calls> {
    rows.iter().map(|(w, syscall, n)| ((Arc::new((*w).clone()), Cow::Borrowed(*syscall)), *n)).collect()
}

#[test]
fn unconfined_containers_are_held_to_the_runtime_default_and_baselines_to_their_workload() {
    let web = workload("shop", "web", "app");
    let other_namespace = workload("other", "web", "app");
    let confined = workload("shop", "api", "app");
    let host = workload("", "", "");
    let calls = calls(&[
        (&web, "read", 100),
        (&web, "add_key", 3),
        (&web, "keyctl", 4),
        (&web, "personality", 5),
        (&web, OTHER, 6),
        (&web, "sethostname", 1),
        (&other_namespace, "add_key", 7),
        (&other_namespace, "keyctl", 8),
        (&confined, "add_key", 9),
        (&host, "add_key", 10),
        // The same workload again, apart from its other rows: summed with them.
        (&web, "add_key", 2),
    ]);
    let unconfined = Confinement { unconfined: true, bounding: 0 };
    let confinement: SeededMap<Arc<Workload>, Confinement> = [
        (Arc::new(web.clone()), unconfined),
        (Arc::new(other_namespace.clone()), unconfined),
        (Arc::new(confined.clone()), Confinement { unconfined: false, bounding: 0 }),
    ]
    .into_iter()
    .collect();
    let profiles = profiles();
    let outside = profiles.outside(&calls, &confinement);
    let got: Vec<(&str, &str, &str, u64)> = outside
        .iter()
        .map(|((w, profile, syscall), n)| (w.namespace.as_str(), *profile, *syscall, *n))
        .collect();
    assert_eq!(
        got,
        [
            // The other namespace's `web` is not the baseline's workload.
            ("other", "runtime-default", "add_key", 7),
            // keyctl is allowed by the runtime's default but not by the baseline; personality
            // depends on its argument in the default profile; `other` is no syscall name;
            // sethostname is the runtime's (left out of runtime-default only).
            ("shop", "runtime-default", "add_key", 5),
            ("shop", "web-baseline", "add_key", 5),
            ("shop", "web-baseline", "keyctl", 4),
            ("shop", "web-baseline", "personality", 5),
            ("shop", "web-baseline", "sethostname", 1),
        ]
    );
}

#[test]
fn capability_conditions_follow_the_bounding_set_and_default_to_none_held() {
    let web = workload("shop", "web", "app");
    let calls = calls(&[(&web, "bpf", 2)]);
    let profiles = profiles();
    let admin = Confinement { unconfined: true, bounding: 1 << 21 };
    let with_admin: SeededMap<Arc<Workload>, Confinement> =
        [(Arc::new(web.clone()), admin)].into_iter().collect();
    assert!(profiles.outside(&calls, &with_admin).is_empty());
    let unknown = SeededMap::default();
    let outside = profiles.outside(&calls, &unknown);
    assert_eq!(
        outside.into_iter().map(|((_, p, s), n)| (p, s, n)).collect::<Vec<_>>(),
        [("web-baseline", "bpf", 2)]
    );
}
