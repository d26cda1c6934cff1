//! Containers run with podman and runc from the locally built busybox image.

use std::process::{Command, Output};

use super::image;

/// A podman container the test runs and removes (also when the test fails).
pub struct PodmanContainer {
    pub id: String,
    pub name: String,
}

/// `podman` with the flags that work on this machine: the cgroupfs manager and runc (crun
/// refuses hybrid cgroups).
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--cgroup-manager=cgroupfs", "--runtime", "runc"]);
    command
}

/// Loads the test image into podman's store (cheap when it is there already).
pub fn load_image() {
    let archive = image::busybox_archive();
    let load = Command::new("podman").args(["load", "-q", "-i"]).arg(&archive).output().expect("podman");
    assert!(load.status.success(), "podman load: {}", String::from_utf8_lossy(&load.stderr));
}

/// `podman run` (attached or not, per `extra`) of the test image: explicit ulimits, because
/// raising the defaults needs CAP_SYS_RESOURCE.
pub fn run_output(name: &str, extra: &[&str], command: &[&str]) -> Output {
    load_image();
    podman()
        .args(["run", "--name", name])
        .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
        .args(extra)
        .arg(image::image_name())
        .args(command)
        .output()
        .expect("podman run")
}

impl PodmanContainer {
    /// A detached container running `command`, with `extra` flags for `podman run`.
    pub fn start(name: &str, extra: &[&str], command: &[&str]) -> Self {
        let mut flags = vec!["-d"];
        flags.extend_from_slice(extra);
        let out = run_output(name, &flags, command);
        let container =
            Self { id: String::from_utf8_lossy(&out.stdout).trim().to_owned(), name: name.into() };
        assert!(out.status.success(), "podman run {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        container
    }

    /// A container that ran `command` to its end (attached), kept until dropped; its output.
    pub fn run_to_end(name: &str, extra: &[&str], command: &[&str]) -> (Self, Output) {
        let out = run_output(name, extra, command);
        (Self { id: name.to_owned(), name: name.into() }, out)
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let target = if self.id.is_empty() { &self.name } else { &self.id };
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", target]).output();
    }
}
