//! The CRI client against a real containerd that the test starts, with a pod run through the
//! CRI the way kubelet runs one.

use crate::support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::support::{
    containerd::{Containerd, proc_cgroup},
    image,
};
use kernsight::{
    kernel::mountinfo,
    metadata::cri::{CriClient, CriContainer, CriError},
};

const POD_UID: &str = "11111111-2222-3333-4444-555555555555";

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

#[test]
fn containers_and_sandboxes_are_joined_with_their_pods() {
    if !support::privileged() {
        return;
    }
    let _serial = support::serial();
    let started = Instant::now();
    let containerd = Containerd::start();
    eprintln!("containerd ready in {:?}", started.elapsed());
    let pod = containerd.run_pod("web-0", "shop", POD_UID, "nginx", &["/bin/sleep", "300"]);
    eprintln!("pod running after {:?}", started.elapsed());

    // What containerd's cgroupfs driver made of kubelet's cgroup parent, in every hierarchy:
    // the agent finds containers by these paths.
    let container_pid = containerd.container_pid(&pod.container_id);
    let sandbox_pid = containerd.sandbox_pid(&pod.sandbox_id);
    let container_cgroup = proc_cgroup(container_pid);
    let sandbox_cgroup = proc_cgroup(sandbox_pid);
    eprintln!(
        "container {} (pid {container_pid}) /proc/{container_pid}/cgroup:\n{container_cgroup}",
        pod.container_id
    );
    eprintln!("sandbox {} (pid {sandbox_pid}) /proc/{sandbox_pid}/cgroup:\n{sandbox_cgroup}", pod.sandbox_id);
    let pod_cgroup = format!("/kubepods/besteffort/pod{POD_UID}");
    for (id, cgroup) in [(&pod.container_id, &container_cgroup), (&pod.sandbox_id, &sandbox_cgroup)] {
        assert!(
            cgroup.lines().any(|line| line.ends_with(&format!("{pod_cgroup}/{id}"))),
            "no hierarchy puts {id} at <root>{pod_cgroup}/{id}:\n{cgroup}"
        );
    }

    let (runtime, containers) = block_on(async {
        let mut client = CriClient::connect(containerd.socket(), Duration::from_secs(10)).await.unwrap();
        assert_eq!(client.socket(), containerd.socket());
        let containers = client.containers().await.unwrap();
        (client.runtime().to_owned(), containers)
    });
    eprintln!("runtime: {runtime}; containers: {containers:#?}");
    assert!(runtime.starts_with("containerd "), "{runtime}");
    assert_eq!(containers.len(), 2, "{containers:#?}");

    let pod_labels = [("app".to_owned(), "web-0".to_owned())].into();
    let container =
        containers.iter().find(|c| c.container_id == pod.container_id).expect("the container is listed");
    assert_eq!(
        container,
        &CriContainer {
            container_id: pod.container_id.clone(),
            container_name: "nginx".into(),
            image: image::image_name(),
            pod_sandbox_id: pod.sandbox_id.clone(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            pod_uid: POD_UID.into(),
            pod_labels,
            pod_config_source: String::new(),
        }
    );
    let sandbox =
        containers.iter().find(|c| c.container_id == pod.sandbox_id).expect("the sandbox is listed");
    assert_eq!(
        sandbox,
        &CriContainer {
            container_id: pod.sandbox_id.clone(),
            container_name: String::new(),
            image: String::new(),
            ..container.clone()
        }
    );

    drop(containerd);
    eprintln!("cri test done (cleanup included) in {:?}", started.elapsed());
}

#[test]
fn connecting_to_a_missing_socket_fails_fast_and_names_it() {
    let socket = Path::new("/nonexistent/kernsight/cri.sock");
    let started = Instant::now();
    let error = block_on(CriClient::connect(socket, Duration::from_secs(10))).unwrap_err();
    let message = error.to_string();
    eprintln!("{message}");
    assert!(matches!(error, CriError::Connect { .. }), "{message}");
    assert!(started.elapsed() < Duration::from_secs(2), "{message}");
    assert!(message.contains("/nonexistent/kernsight/cri.sock"), "{message}");
    assert!(message.contains("metadata.cri_socket"), "{message}");
}

/// The harness's promise: after a failed assertion, nothing it started or created is left.
#[test]
fn containerd_leaves_nothing_behind_after_a_failed_assertion() {
    if !support::privileged() {
        return;
    }
    let _serial = support::serial();
    let mut seen = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let containerd = Containerd::start();
        let pod = containerd.run_pod("db-0", "shop", POD_UID, "db", &["/bin/sleep", "300"]);
        let pids = [containerd.container_pid(&pod.container_id), containerd.sandbox_pid(&pod.sandbox_id)];
        seen = Some((containerd.dir().to_owned(), containerd.cgroup_root().to_owned(), pids));
        panic!("a failed assertion, with the pod running");
    }));
    assert!(outcome.is_err());
    let (dir, cgroup_root, pids) = seen.expect("the pod ran");

    assert!(!dir.exists(), "{} is left", dir.display());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'));
        assert!(!running, "process {pid} still runs: {stat}");
    }
    // Pure v2: /sys/fs/cgroup/<root>; hybrid and v1: /sys/fs/cgroup/<hierarchy>/<root>.
    let cgroup_name = cgroup_root.trim_start_matches('/');
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten();
    let candidates = std::iter::once(Path::new("/sys/fs/cgroup").join(cgroup_name))
        .chain(hierarchies.map(|hierarchy| hierarchy.path().join(cgroup_name)));
    for cgroup in candidates {
        assert!(!cgroup.exists(), "{} is left", cgroup.display());
    }
    let mounts = mountinfo::read().expect("read /proc/self/mountinfo");
    let left: Vec<&PathBuf> = mounts.iter().map(|m| &m.mount_point).filter(|m| m.starts_with(&dir)).collect();
    assert!(left.is_empty(), "mounts left at or below {}: {left:?}", dir.display());
}
