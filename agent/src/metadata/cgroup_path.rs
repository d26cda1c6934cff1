//! Container identity from a cgroup path, as found in `/proc/<pid>/cgroup` or relative to the root
//! of a cgroup hierarchy.
//!
//! Each runtime and cgroup driver names cgroups its own way:
//!
//! | who | cgroup of a container |
//! | --- | --- |
//! | kubelet, systemd driver | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<id>.scope` (also `crio-`, `docker-`) |
//! | kubelet, cgroupfs driver | `/kubepods/burstable/pod<uid>/<id>` (CRI-O: `crio-<id>`) |
//! | containerd, systemd cgroups without systemd | `/system.slice/containerd.service/kubepods-burstable-pod<uid>.slice:cri-containerd:<id>` |
//! | Docker | `/docker/<id>`, `/system.slice/docker-<id>.scope` |
//! | Podman | `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`, and the same under `user@<uid>.service` when rootless |
//!
//! Guaranteed pods sit directly under `kubepods`, the others under a slice named after their QoS
//! class. Paths seen from inside a cgroup namespace or a nested node (kind) add or drop leading
//! components, and a container may have sub-cgroups of its own (`/init.scope`, crun's
//! `/container`), so components are recognized wherever they sit and the innermost container
//! component wins. Conmon (the runtime's monitor process) lives next to its container under a
//! name of its own and is not the container.
//!
//! The input is untrusted (cgroup names are chosen by whoever may create cgroups), so nothing here
//! indexes or unwraps; anything unrecognized is simply not a container.

/// The runtime that created a container, as told by its cgroup's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

/// A pod's Kubernetes QoS class, as told by the kubelet's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// `None` when the path names a container id without saying which runtime (the cgroupfs
    /// driver's `kubepods/<qos>/pod<uid>/<id>`).
    pub runtime: Option<Runtime>,
    /// 64 lowercase hex characters.
    pub container_id: String,
    /// The pod's uid in the dashed form 8-4-4-4-12 (static pods: the kubelet's 32-hex config hash,
    /// as it is, see [`pod_of`]).
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
}

/// The container a cgroup path belongs to: its innermost container component, with the pod that
/// encloses that component. `None` for host cgroups and for conmon.
pub fn parse(path: &str) -> Option<ContainerRef> {
    let components = classify_path(path);
    let (index, runtime, id, own_pod) =
        components.iter().enumerate().rev().find_map(|(index, component)| match &component.kind {
            Kind::Container { runtime, id, pod } => Some((index, *runtime, *id, pod)),
            _ => None,
        })?;
    // The colon form names its pod in the same component; otherwise the pod is an ancestor.
    let pod = own_pod.clone().or_else(|| innermost_pod(components.iter().take(index)));
    Some(ContainerRef {
        runtime,
        container_id: id.to_owned(),
        qos: pod.as_ref().and_then(|pod| pod.qos),
        pod_uid: pod.map(|pod| pod.uid),
    })
}

/// For host processes: the systemd unit a path belongs to (`/system.slice/sshd.service` ->
/// `sshd.service`), the deepest `.service`/`.scope` that is not a container scope.
///
/// Only the host part of the path counts, the components above the outermost container: units
/// inside a container (its own `init.scope`) are the container's business, not the host's. Conmon
/// scopes are host units.
pub fn systemd_unit(path: &str) -> Option<&str> {
    classify_path(path)
        .into_iter()
        .take_while(|component| !matches!(component.kind, Kind::Container { .. }))
        .map(|component| component.name)
        .filter(|name| is_unit_name(name))
        .last()
}

/// A pod's cgroup without a container (e.g. the pod slice itself): its uid and QoS class.
///
/// Also answers for any cgroup below a pod (a container, conmon): the innermost pod on the path.
///
/// The uid is in the dashed form, except for static pods, whose uid is the kubelet's 32-hex
/// config hash without dashes: it is kept as it is because that is how the kubelet, the CRI label
/// `io.kubernetes.pod.uid` and the mirror pod's `kubernetes.io/config.hash` annotation spell it.
pub fn pod_of(path: &str) -> Option<(String, Option<QosClass>)> {
    let pod = innermost_pod(classify_path(path).iter())?;
    Some((pod.uid, pod.qos))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pod {
    uid: String,
    qos: Option<QosClass>,
}

/// What one path component says.
#[derive(Debug)]
enum Kind<'a> {
    Container {
        runtime: Option<Runtime>,
        id: &'a str,
        /// Only the colon form carries its pod in the container's own component.
        pod: Option<Pod>,
    },
    /// The runtime's monitor next to a container: a host process, not the container.
    Conmon,
    Pod(Pod),
    Other,
}

#[derive(Debug)]
struct Component<'a> {
    name: &'a str,
    kind: Kind<'a>,
}

fn classify_path(path: &str) -> Vec<Component<'_>> {
    let mut parent = None;
    path.split('/')
        .filter(|name| !name.is_empty())
        .map(|name| {
            let kind = classify(name, parent);
            parent = Some(name);
            Component { name, kind }
        })
        .collect()
}

fn innermost_pod<'c, 'a: 'c>(components: impl DoubleEndedIterator<Item = &'c Component<'a>>) -> Option<Pod> {
    components.rev().find_map(|component| match &component.kind {
        Kind::Pod(pod) => Some(pod.clone()),
        Kind::Container { pod, .. } => pod.clone(),
        Kind::Conmon | Kind::Other => None,
    })
}

/// `parent` is the component just above: the cgroupfs driver says a pod's QoS class there, and
/// Docker's cgroupfs layout says the runtime there.
fn classify<'a>(name: &'a str, parent: Option<&str>) -> Kind<'a> {
    if let Some(kind) = colon_form(name).or_else(|| prefixed_container(name)) {
        return kind;
    }
    if is_container_id(name) {
        let runtime = (parent == Some("docker")).then_some(Runtime::Docker);
        return Kind::Container { runtime, id: name, pod: None };
    }
    match systemd_pod(name).or_else(|| cgroupfs_pod(name, parent)) {
        Some(pod) => Kind::Pod(pod),
        None => Kind::Other,
    }
}

/// Who a `<prefix>-<id>` name belongs to. Conmon's prefixes come first: `crio-conmon-<id>` must
/// not read as CRI-O's container (it would not anyway, `conmon-<id>` is no id, but order says it).
const PREFIXES: [(&str, Option<Runtime>); 7] = [
    ("crio-conmon-", None),
    ("libpod-conmon-", None),
    ("cri-containerd-", Some(Runtime::Containerd)),
    ("crio-", Some(Runtime::CriO)),
    ("docker-", Some(Runtime::Docker)),
    ("libpod-", Some(Runtime::Podman)),
    // nerdctl runs containerd containers outside Kubernetes.
    ("nerdctl-", Some(Runtime::Containerd)),
];

/// `cri-containerd-<id>.scope` (systemd driver) or `crio-<id>` (cgroupfs driver): the `.scope`
/// suffix is optional because cgroupfs-driven runtimes use the same prefixes without it.
fn prefixed_container(name: &str) -> Option<Kind<'_>> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = stem.strip_prefix(prefix).filter(|id| is_container_id(id))?;
        Some(match runtime {
            Some(runtime) => Kind::Container { runtime: Some(*runtime), id, pod: None },
            None => Kind::Conmon,
        })
    })
}

/// containerd (and runc) given a systemd-style cgroups path `slice:prefix:id` while not actually
/// driving systemd create a directory with that literal name, below containerd's own cgroup.
fn colon_form(name: &str) -> Option<Kind<'_>> {
    let mut parts = name.splitn(3, ':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    if !is_container_id(id) {
        return None;
    }
    let runtime = match prefix {
        "crio-conmon" | "libpod-conmon" => return Some(Kind::Conmon),
        "cri-containerd" | "nerdctl" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::CriO),
        "docker" => Some(Runtime::Docker),
        "libpod" => Some(Runtime::Podman),
        // A well-formed id under a prefix nobody here knows is still a container.
        _ => None,
    };
    Some(Kind::Container { runtime, id, pod: systemd_pod(slice) })
}

/// Runtimes write ids as 64 lowercase hex digits; anything else (uppercase included) is some other
/// cgroup that merely looks like one.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(is_lower_hex)
}

fn is_lower_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
}

/// The kubelet's systemd driver: `kubepods-pod<uid>.slice` (guaranteed),
/// `kubepods-burstable-pod<uid>.slice`, `kubepods-besteffort-pod<uid>.slice`, each possibly with a
/// prefix of its own (`kubelet-kubepods-...` in kind). systemd reserves `-` for nesting, so the uid
/// is written with `_`.
fn systemd_pod(name: &str) -> Option<Pod> {
    let stem = name.strip_suffix(".slice")?;
    let (parent_slice, last) = stem.rsplit_once('-')?;
    let uid = normalize_uid(last.strip_prefix("pod")?)?;
    let qos = qos_of_kubepods_slice(parent_slice)?;
    Some(Pod { uid, qos: Some(qos) })
}

/// The QoS class a kubepods slice name stands for: `kubepods` itself holds the guaranteed pods.
fn qos_of_kubepods_slice(slice: &str) -> Option<QosClass> {
    if is_kubepods(slice) {
        return Some(QosClass::Guaranteed);
    }
    let (parent, class) = slice.rsplit_once('-')?;
    if !is_kubepods(parent) {
        return None;
    }
    match class {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// `kubepods`, or a nested kubelet's `<prefix>-kubepods`.
fn is_kubepods(slice: &str) -> bool {
    slice == "kubepods" || slice.ends_with("-kubepods")
}

/// The kubelet's cgroupfs driver: `pod<uid>` below `kubepods` (guaranteed) or below
/// `burstable`/`besteffort`.
fn cgroupfs_pod(name: &str, parent: Option<&str>) -> Option<Pod> {
    let uid = normalize_uid(name.strip_prefix("pod")?)?;
    let qos = match parent {
        Some("burstable") => Some(QosClass::Burstable),
        Some("besteffort") => Some(QosClass::BestEffort),
        Some("kubepods") => Some(QosClass::Guaranteed),
        // A pod directory somewhere else: its class is not for us to guess.
        _ => None,
    };
    Some(Pod { uid, qos })
}

/// Where the separators of a 8-4-4-4-12 uid sit.
const UID_SEPARATORS: [usize; 4] = [8, 13, 18, 23];

/// A pod uid in the dashed form, from its dashed (cgroupfs) or underscored (systemd) spelling.
/// Static pods' uids are 32 hex digits without separators and are kept as they are.
fn normalize_uid(raw: &str) -> Option<String> {
    if raw.len() == 32 && raw.bytes().all(is_lower_hex) {
        return Some(raw.to_owned());
    }
    if raw.len() != 36 {
        return None;
    }
    let separator = *raw.as_bytes().get(UID_SEPARATORS[0])?;
    if separator != b'-' && separator != b'_' {
        return None;
    }
    let well_formed = raw
        .bytes()
        .enumerate()
        .all(|(at, byte)| if UID_SEPARATORS.contains(&at) { byte == separator } else { is_lower_hex(byte) });
    well_formed.then(|| raw.replace('_', "-"))
}

fn is_unit_name(name: &str) -> bool {
    [".service", ".scope"].iter().any(|suffix| name.strip_suffix(suffix).is_some_and(|stem| !stem.is_empty()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: &str = "8ed2c5d1b7e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8";
    const ID2: &str = "0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0";
    const UID: &str = "2ca4a155-3599-498d-bb9d-4446693fa3ea";
    const UID_SYSTEMD: &str = "2ca4a155_3599_498d_bb9d_4446693fa3ea";
    /// A static pod's uid: the kubelet's md5 config hash.
    const STATIC_UID: &str = "1864dd0546310be9937c37cf88024cb8";

    fn container(
        runtime: Option<Runtime>,
        id: &str,
        pod_uid: Option<&str>,
        qos: Option<QosClass>,
    ) -> Option<ContainerRef> {
        Some(ContainerRef { runtime, container_id: id.to_owned(), pod_uid: pod_uid.map(str::to_owned), qos })
    }

    /// (what, path, expected). Paths are spelled the way runtimes write them; `{id}`, `{id2}`,
    /// `{uid}`, `{uid_}` and `{static}` are filled in.
    fn cases() -> Vec<(&'static str, String, Option<ContainerRef>)> {
        use QosClass::*;
        use Runtime::*;
        let raw: Vec<(&str, &str, Option<ContainerRef>)> = vec![
            // --- kubelet, systemd driver ---
            (
                "containerd, burstable, systemd",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(Burstable)),
            ),
            (
                "containerd, besteffort, systemd",
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(BestEffort)),
            ),
            (
                "containerd, guaranteed, systemd: directly under kubepods.slice",
                "/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(Guaranteed)),
            ),
            (
                "CRI-O, burstable, systemd",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-{id}.scope",
                container(Some(CriO), ID, Some(UID), Some(Burstable)),
            ),
            (
                "CRI-O, guaranteed, systemd",
                "/kubepods.slice/kubepods-pod{uid_}.slice/crio-{id}.scope",
                container(Some(CriO), ID, Some(UID), Some(Guaranteed)),
            ),
            (
                "CRI-O's conmon is not the container",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-conmon-{id}.scope",
                None,
            ),
            (
                "crun's container sub-cgroup under a CRI-O scope",
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{id}.scope/container",
                container(Some(CriO), ID, Some(UID), Some(BestEffort)),
            ),
            (
                "dockershim / cri-dockerd, systemd",
                "/kubepods.slice/kubepods-pod{uid_}.slice/docker-{id}.scope",
                container(Some(Docker), ID, Some(UID), Some(Guaranteed)),
            ),
            (
                "static pod: uid is a 32-hex hash",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{static}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(STATIC_UID), Some(Burstable)),
            ),
            (
                "systemd inside a container: its init.scope belongs to the container",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope/init.scope",
                container(Some(Containerd), ID, Some(UID), Some(Burstable)),
            ),
            // --- kubelet, cgroupfs driver (also what cgroup v1 lines say) ---
            (
                "cgroupfs, burstable: runtime unknown",
                "/kubepods/burstable/pod{uid}/{id}",
                container(None, ID, Some(UID), Some(Burstable)),
            ),
            (
                "cgroupfs, guaranteed",
                "/kubepods/pod{uid}/{id}",
                container(None, ID, Some(UID), Some(Guaranteed)),
            ),
            (
                "cgroupfs, besteffort",
                "/kubepods/besteffort/pod{uid}/{id}",
                container(None, ID, Some(UID), Some(BestEffort)),
            ),
            (
                "CRI-O, cgroupfs",
                "/kubepods/burstable/pod{uid}/crio-{id}",
                container(Some(CriO), ID, Some(UID), Some(Burstable)),
            ),
            ("CRI-O's conmon, cgroupfs", "/kubepods/burstable/pod{uid}/crio-conmon-{id}", None),
            (
                "static pod, cgroupfs",
                "/kubepods/burstable/pod{static}/{id}",
                container(None, ID, Some(STATIC_UID), Some(Burstable)),
            ),
            (
                "sub-cgroup below a cgroupfs container",
                "/kubepods/besteffort/pod{uid}/{id}/init.scope",
                container(None, ID, Some(UID), Some(BestEffort)),
            ),
            // --- nested and namespaced views ---
            (
                "kind node, systemd driver",
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(BestEffort)),
            ),
            (
                "kind node, guaranteed",
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(Guaranteed)),
            ),
            (
                "kind node seen from the host: the pod's container, not the node's",
                "/system.slice/docker-{id2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(Burstable)),
            ),
            (
                "kind node, cgroupfs driver",
                "/kubelet/kubepods/burstable/pod{uid}/{id}",
                container(None, ID, Some(UID), Some(Burstable)),
            ),
            (
                "minikube in Docker, cgroupfs view of a CRI-O pod",
                "/docker/{id2}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{id}.scope",
                container(Some(CriO), ID, Some(UID), Some(BestEffort)),
            ),
            (
                "conmon inside a node container belongs to the node container",
                "/docker/{id2}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-conmon-{id}.scope",
                container(Some(Docker), ID2, None, None),
            ),
            (
                "containerd's systemd-cgroups colon form below containerd.service",
                "/system.slice/containerd.service/kubepods-burstable-pod{uid_}.slice:cri-containerd:{id}",
                container(Some(Containerd), ID, Some(UID), Some(Burstable)),
            ),
            (
                "colon form, guaranteed",
                "/system.slice/containerd.service/kubepods-pod{uid_}.slice:cri-containerd:{id}",
                container(Some(Containerd), ID, Some(UID), Some(Guaranteed)),
            ),
            (
                "colon form, CRI-O",
                "/kubepods-besteffort-pod{uid_}.slice:crio:{id}",
                container(Some(CriO), ID, Some(UID), Some(BestEffort)),
            ),
            (
                "colon form with a name instead of an id",
                "/system.slice/containerd.service/kubepods-burstable-pod{uid_}.slice:cri-containerd:webapp",
                None,
            ),
            (
                "cgroup namespace root above the container",
                "/../../kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, Some(UID), Some(Guaranteed)),
            ),
            // --- Docker ---
            ("Docker, cgroupfs", "/docker/{id}", container(Some(Docker), ID, None, None)),
            ("Docker, systemd", "/system.slice/docker-{id}.scope", container(Some(Docker), ID, None, None)),
            (
                "Docker in Docker: the inner one",
                "/docker/{id2}/docker/{id}",
                container(Some(Docker), ID, None, None),
            ),
            (
                "a bare id under another parent (docker --cgroup-parent)",
                "/actions_job/{id}",
                container(None, ID, None, None),
            ),
            // --- Podman ---
            (
                "Podman rootful, systemd",
                "/machine.slice/libpod-{id}.scope",
                container(Some(Podman), ID, None, None),
            ),
            (
                "Podman, crun's container sub-cgroup",
                "/machine.slice/libpod-{id}.scope/container",
                container(Some(Podman), ID, None, None),
            ),
            ("Podman's conmon, systemd", "/machine.slice/libpod-conmon-{id}.scope", None),
            ("Podman, cgroupfs", "/libpod_parent/libpod-{id}", container(Some(Podman), ID, None, None)),
            (
                "Podman, cgroupfs, sub-cgroup",
                "/libpod_parent/libpod-{id}/container",
                container(Some(Podman), ID, None, None),
            ),
            ("Podman's conmon, cgroupfs", "/libpod_parent/libpod-conmon-{id}", None),
            ("Podman's conmon, cgroupfs split", "/libpod_parent/conmon", None),
            (
                "Podman rootless",
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope",
                container(Some(Podman), ID, None, None),
            ),
            (
                "nerdctl, systemd",
                "/system.slice/nerdctl-{id}.scope",
                container(Some(Containerd), ID, None, None),
            ),
            // --- not containers ---
            ("root", "/", None),
            ("empty", "", None),
            ("host service", "/system.slice/sshd.service", None),
            ("login session", "/user.slice/user-0.slice/session-3.scope", None),
            ("systemd itself", "/init.scope", None),
            (
                "the pod slice itself",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice",
                None,
            ),
            ("a QoS slice", "/kubepods.slice/kubepods-besteffort.slice", None),
            ("containerd itself", "/system.slice/containerd.service", None),
            (
                "id one digit short",
                "/system.slice/docker-8ed2c5d1b7e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f.scope",
                None,
            ),
            (
                "id one digit long",
                "/docker/8ed2c5d1b7e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f80",
                None,
            ),
            (
                "id not hex",
                "/kubepods/pod{uid}/8ed2c5d1b7e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7fg",
                None,
            ),
            (
                "uppercase hex is not a runtime's id",
                "/docker/8ED2C5D1B7E2D3F4A5B6C7D8E9F0A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8",
                None,
            ),
            (
                "uppercase hex in a scope name",
                "/system.slice/docker-8ED2C5D1B7E2D3F4A5B6C7D8E9F0A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8.scope",
                None,
            ),
            ("an unrelated unit named after a runtime", "/system.slice/docker-compose.scope", None),
            // --- odd pods around real ids ---
            (
                "malformed pod uid: container found, pod not",
                "/kubepods/burstable/pod2ca4a155-3599-498d-bb9d/{id}",
                container(None, ID, None, None),
            ),
            (
                "mixed separators in a uid",
                "/kubepods/burstable/pod2ca4a155-3599_498d-bb9d-4446693fa3ea/{id}",
                container(None, ID, None, None),
            ),
            (
                "uppercase pod uid",
                "/kubepods/burstable/pod2CA4A155-3599-498D-BB9D-4446693FA3EA/{id}",
                container(None, ID, None, None),
            ),
            (
                "pod slice under a non-kubepods parent slice",
                "/foo.slice/foo-pod{uid_}.slice/cri-containerd-{id}.scope",
                container(Some(Containerd), ID, None, None),
            ),
            (
                "pod directory outside kubepods: QoS unknown",
                "/pod{uid}/{id}",
                container(None, ID, Some(UID), None),
            ),
        ];
        raw.into_iter().map(|(what, path, expected)| (what, fill(path), expected)).collect()
    }

    fn fill(template: &str) -> String {
        template
            .replace("{id}", ID)
            .replace("{id2}", ID2)
            .replace("{uid}", UID)
            .replace("{uid_}", UID_SYSTEMD)
            .replace("{static}", STATIC_UID)
    }

    #[test]
    fn parses_every_runtime_and_driver() {
        let cases = cases();
        assert!(cases.len() >= 30);
        for (what, path, expected) in cases {
            assert_eq!(parse(&path), expected, "{what}: {path}");
        }
    }

    #[test]
    fn finds_host_units() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/system.slice/sshd.service", Some("sshd.service")),
            ("/user.slice/user-0.slice/session-3.scope", Some("session-3.scope")),
            ("/init.scope", Some("init.scope")),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope",
                Some("app-firefox-1234.scope"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope",
                Some("user@1000.service"),
            ),
            (
                "/system.slice/containerd.service/kubepods-burstable-pod{uid_}.slice:cri-containerd:{id}",
                Some("containerd.service"),
            ),
            ("/system.slice/containerd.service", Some("containerd.service")),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-conmon-{id}.scope",
                Some("crio-conmon-{id}.scope"),
            ),
            ("/machine.slice/libpod-conmon-{id}.scope", Some("libpod-conmon-{id}.scope")),
            // Container scopes, and anything inside them, are not host units.
            ("/system.slice/docker-{id}.scope", None),
            ("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{id}.scope/init.scope", None),
            ("/docker/{id}/system.slice/nginx.service", None),
            ("/", None),
            ("", None),
            ("/system.slice", None),
            ("/system.slice/.service", None),
            ("/kubepods/burstable/pod{uid}", None),
        ];
        for (path, expected) in cases {
            let path = fill(path);
            let expected = expected.map(fill);
            assert_eq!(systemd_unit(&path), expected.as_deref(), "{path}");
        }
    }

    #[test]
    fn finds_pods_without_containers() {
        use QosClass::*;
        type Expected = Option<(&'static str, Option<QosClass>)>;
        let cases: &[(&str, Expected)] = &[
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice",
                Some((UID, Some(Burstable))),
            ),
            ("/kubepods.slice/kubepods-pod{uid_}.slice", Some((UID, Some(Guaranteed)))),
            ("/kubepods/besteffort/pod{uid}", Some((UID, Some(BestEffort)))),
            ("/kubepods/pod{uid}", Some((UID, Some(Guaranteed)))),
            ("/kubepods/pod{static}", Some((STATIC_UID, Some(Guaranteed)))),
            ("/kubepods/burstable/pod{uid}/crio-conmon-{id}", Some((UID, Some(Burstable)))),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some((UID, Some(BestEffort))),
            ),
            (
                "/system.slice/containerd.service/kubepods-burstable-pod{uid_}.slice:cri-containerd:{id}",
                Some((UID, Some(Burstable))),
            ),
            (
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{uid_}.slice",
                Some((UID, Some(BestEffort))),
            ),
            ("/kubepods.slice", None),
            ("/kubepods/burstable", None),
            ("/system.slice/sshd.service", None),
            ("/docker/{id}", None),
            ("/", None),
        ];
        for (path, expected) in cases {
            let path = fill(path);
            let expected = expected.map(|(uid, qos)| (uid.to_owned(), qos));
            assert_eq!(pod_of(&path), expected, "{path}");
        }
    }

    #[test]
    fn normalizes_uids() {
        assert_eq!(normalize_uid(UID).as_deref(), Some(UID));
        assert_eq!(normalize_uid(UID_SYSTEMD).as_deref(), Some(UID));
        assert_eq!(normalize_uid(STATIC_UID).as_deref(), Some(STATIC_UID));
        for bad in [
            "",
            "2ca4a155",
            "2ca4a155x3599x498dxbb9dx4446693fa3ea",
            "2ca4a155-3599-498d-bb9d-4446693fa3e",
            "2ca4a155-3599-498d-bb9d-4446693fa3eaa",
            "-2ca4a155-3599-498d-bb9d-4446693fa3e",
            "2ca4a1553-599-498d-bb9d-4446693fa3ea",
            "1864dd0546310be9937c37cf88024cbg",
            // 36 bytes, but multi-byte characters where separators should be.
            "2ca4a15é3599-498d-bb9d-4446693fa3ea",
        ] {
            assert_eq!(normalize_uid(bad), None, "{bad}");
        }
    }

    /// Pieces that real paths are made of, so that random paths reach deep into the parser.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("kubepods".to_owned()),
            Just("kubepods.slice".to_owned()),
            Just("burstable".to_owned()),
            Just("kubepods-besteffort.slice".to_owned()),
            Just("docker".to_owned()),
            Just(format!("pod{UID}")),
            Just(format!("kubepods-burstable-pod{UID_SYSTEMD}.slice")),
            Just(format!("cri-containerd-{ID}.scope")),
            Just(format!("crio-conmon-{ID}")),
            Just(format!("x.slice:crio:{ID}")),
            Just(ID.to_owned()),
            Just("sshd.service".to_owned()),
            "[a-z0-9_:.@-]{0,70}",
            any::<String>(),
        ]
    }

    fn uid_strategy() -> impl Strategy<Value = String> {
        any::<[u8; 16]>().prop_map(|bytes| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
        })
    }

    fn id_strategy() -> impl Strategy<Value = String> {
        any::<[u8; 32]>().prop_map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn qos_strategy() -> impl Strategy<Value = QosClass> {
        prop_oneof![Just(QosClass::Guaranteed), Just(QosClass::Burstable), Just(QosClass::BestEffort),]
    }

    fn qos_name(qos: QosClass) -> Option<&'static str> {
        match qos {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }

    /// `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<prefix>-<id>.scope`,
    /// optionally nested in a kind node (`kubelet-` prefix) and with a sub-cgroup.
    fn systemd_path(nested: bool, qos: QosClass, uid: &str, prefix: &str, id: &str, sub: &str) -> String {
        let (mut path, base) = if nested {
            ("/kubelet.slice".to_owned(), "kubelet-kubepods")
        } else {
            (String::new(), "kubepods")
        };
        path.push_str(&format!("/{base}.slice"));
        let pod_parent = match qos_name(qos) {
            Some(class) => {
                path.push_str(&format!("/{base}-{class}.slice"));
                format!("{base}-{class}")
            }
            None => base.to_owned(),
        };
        let uid = uid.replace('-', "_");
        path.push_str(&format!("/{pod_parent}-pod{uid}.slice/{prefix}-{id}.scope{sub}"));
        path
    }

    /// `/kubepods/<qos>/pod<uid>/<id>`, optionally below kind's `/kubelet` and with a sub-cgroup.
    fn cgroupfs_path(nested: bool, qos: QosClass, uid: &str, leaf: &str, sub: &str) -> String {
        let mut path = if nested { "/kubelet" } else { "" }.to_owned();
        path.push_str("/kubepods");
        if let Some(class) = qos_name(qos) {
            path.push('/');
            path.push_str(class);
        }
        path.push_str(&format!("/pod{uid}/{leaf}{sub}"));
        path
    }

    proptest! {
        #[test]
        fn no_string_panics(path in any::<String>()) {
            let _ = parse(&path);
            let _ = systemd_unit(&path);
            let _ = pod_of(&path);
        }

        #[test]
        fn no_path_of_real_fragments_panics(parts in prop::collection::vec(fragment(), 0..8)) {
            let path = format!("/{}", parts.join("/"));
            let _ = parse(&path);
            let _ = pod_of(&path);
            if let Some(unit) = systemd_unit(&path) {
                prop_assert!(is_unit_name(unit));
            }
        }

        #[test]
        fn systemd_paths_round_trip(
            nested in any::<bool>(),
            qos in qos_strategy(),
            uid in uid_strategy(),
            id in id_strategy(),
            runtime in prop_oneof![
                Just(("cri-containerd", Runtime::Containerd)),
                Just(("crio", Runtime::CriO)),
                Just(("docker", Runtime::Docker)),
            ],
            sub in prop_oneof![Just(""), Just("/init.scope"), Just("/container")],
        ) {
            let path = systemd_path(nested, qos, &uid, runtime.0, &id, sub);
            let expected = ContainerRef {
                runtime: Some(runtime.1),
                container_id: id,
                pod_uid: Some(uid.clone()),
                qos: Some(qos),
            };
            prop_assert_eq!(parse(&path), Some(expected), "{}", path);
            prop_assert_eq!(pod_of(&path), Some((uid, Some(qos))));
        }

        #[test]
        fn cgroupfs_paths_round_trip(
            nested in any::<bool>(),
            qos in qos_strategy(),
            uid in uid_strategy(),
            id in id_strategy(),
            crio in any::<bool>(),
            sub in prop_oneof![Just(""), Just("/init.scope")],
        ) {
            let leaf = if crio { format!("crio-{id}") } else { id.clone() };
            let path = cgroupfs_path(nested, qos, &uid, &leaf, sub);
            let expected = ContainerRef {
                runtime: crio.then_some(Runtime::CriO),
                container_id: id,
                pod_uid: Some(uid.clone()),
                qos: Some(qos),
            };
            prop_assert_eq!(parse(&path), Some(expected), "{}", path);
            prop_assert_eq!(pod_of(&path), Some((uid, Some(qos))));
        }

        #[test]
        fn colon_form_round_trips(qos in qos_strategy(), uid in uid_strategy(), id in id_strategy()) {
            let class = qos_name(qos).map(|c| format!("-{c}")).unwrap_or_default();
            let path = format!(
                "/system.slice/containerd.service/kubepods{class}-pod{}.slice:cri-containerd:{id}",
                uid.replace('-', "_")
            );
            let parsed = parse(&path);
            prop_assert_eq!(parsed.as_ref().map(|c| c.container_id.as_str()), Some(id.as_str()));
            prop_assert_eq!(parsed.and_then(|c| c.pod_uid), Some(uid));
            prop_assert_eq!(systemd_unit(&path), Some("containerd.service"));
        }
    }
}
