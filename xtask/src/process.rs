//! Running commands: each step says what it does before it does it.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// The stable toolchain the user-space crates build with (aya 0.16 needs Rust >= 1.98).
pub const STABLE: &str = "1.99.0";

pub fn workspace_root() -> PathBuf {
    // xtask/ is one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// `cargo +STABLE` in the workspace root, whatever toolchain runs xtask itself.
pub fn cargo() -> Command {
    let mut command = Command::new("cargo");
    command.arg(format!("+{STABLE}")).current_dir(workspace_root());
    // Set by the outer `cargo run` and would override the `+toolchain` selection.
    for var in ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO"] {
        command.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(is_package_variable) {
            command.env_remove(var);
        }
    }
    command
}

/// What `cargo run` and `cargo test` set for the program they run (`CARGO_PKG_NAME=xtask`, and
/// `OUT_DIR` for a package with a build script). Build scripts watch some of them (ring's, with
/// `rerun-if-env-changed`): a build started with them reruns those scripts and rebuilds
/// everything above, here the whole static agent (3 minutes), when the same build from a shell
/// or deploy/image.sh has none of them.
fn is_package_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&name)
}

pub fn is_root() -> bool {
    // Effective uid from /proc, to stay std-only.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        .unwrap_or(false)
}

pub struct Step(String);

impl Step {
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }

    /// Runs the command with inherited stdio; a failure names the step and the command.
    pub fn run(self, command: &mut Command) -> Result<(), String> {
        eprintln!("xtask: {}", self.0);
        let status = command.status().map_err(|e| format!("{}: cannot start {command:?}: {e}", self.0))?;
        if status.success() { Ok(()) } else { Err(format!("{} failed ({status}): {command:?}", self.0)) }
    }
}

/// Runs a command quietly and returns its stdout, or `None` if it cannot start or fails.
pub fn output(command: &mut Command) -> Option<String> {
    match command.output() {
        Ok(Output { status, stdout, .. }) if status.success() => {
            Some(String::from_utf8_lossy(&stdout).into_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::is_package_variable;

    #[test]
    fn package_variables_are_those_cargo_sets_for_the_program_it_runs() {
        for name in
            ["CARGO_PKG_NAME", "CARGO_PKG_VERSION_MAJOR", "CARGO_MANIFEST_DIR", "CARGO_CRATE_NAME", "OUT_DIR"]
        {
            assert!(is_package_variable(name), "{name}");
        }
        for name in ["CARGO_HOME", "CARGO_TARGET_DIR", "CC_x86_64_unknown_linux_musl", "PATH"] {
            assert!(!is_package_variable(name), "{name}");
        }
    }
}
