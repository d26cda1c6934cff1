//! Containers run with podman and runc: the one container helper of the tests. A container is
//! removed when its `PodmanContainer` is dropped, also when the test fails.

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

/// `podman run --name NAME EXTRA... IMAGE ARGS...` with explicit ulimits (raising the defaults
/// needs CAP_SYS_RESOURCE); `extra` says whether it is detached (`-d`).
fn run_output(name: &str, extra: &[&str], image: &str, args: &[&str]) -> Output {
    podman()
        .args(["run", "--name", name])
        .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
        .args(extra)
        .arg(image)
        .args(args)
        .output()
        .expect("podman run")
}

impl PodmanContainer {
    /// A detached container of the busybox test image running `command`, with `extra` flags for
    /// `podman run`.
    pub fn start(name: &str, extra: &[&str], command: &[&str]) -> Self {
        load_image();
        Self::start_image(name, &image::image_name(), extra, command)
    }

    /// A detached container of `image` (already in podman's store), given `args`.
    pub fn start_image(name: &str, image: &str, extra: &[&str], args: &[&str]) -> Self {
        let mut flags = vec!["-d"];
        flags.extend_from_slice(extra);
        let out = run_output(name, &flags, image, args);
        // Made before the check: a container that failed half-way is removed too.
        let container =
            Self { id: String::from_utf8_lossy(&out.stdout).trim().to_owned(), name: name.into() };
        assert!(out.status.success(), "podman run {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        container
    }

    /// A container of the busybox test image that ran `command` to its end (attached), kept
    /// until dropped; its output.
    pub fn run_to_end(name: &str, extra: &[&str], command: &[&str]) -> (Self, Output) {
        load_image();
        let out = run_output(name, extra, &image::image_name(), command);
        (Self { id: String::new(), name: name.into() }, out)
    }

    /// What the container wrote on stdout and stderr.
    pub fn logs(&self) -> String {
        let out = Command::new("podman").args(["logs", self.target()]).output().expect("podman logs");
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    }

    fn target(&self) -> &str {
        if self.id.is_empty() { &self.name } else { &self.id }
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", self.target()]).output();
    }
}

/// Whether podman knows a container of that name (running or not).
pub fn exists(name: &str) -> bool {
    Command::new("podman").args(["container", "exists", name]).status().is_ok_and(|s| s.success())
}
