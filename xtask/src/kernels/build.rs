//! What the guests run: the static musl release agent, and the integration test binary the host
//! suite runs, with the path of the agent it was compiled against (the tests find it by the
//! absolute path cargo gave them in `CARGO_BIN_EXE_kernsight`, so the guest holds the static
//! agent at that same path). The test binary is the host's own build, dynamically linked: the
//! guest gets the few libraries it loads (`initramfs.rs`), and the matrix costs no second build
//! of the whole dependency tree for musl (5.5 minutes cold on this 2-CPU machine).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{
    process::{STABLE, Step, cargo, output, workspace_root},
    setup::MUSL_CC,
};

pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The one integration test binary (`agent/tests/integration/main.rs`).
const INTEGRATION: &str = "integration";

pub struct Binaries {
    /// `kernsight`, release profile: what the smoke run starts.
    pub agent: PathBuf,
    pub tests: Result<Tests, String>,
}

/// The integration test binary (built for the host), where it looks for the agent, and its tests.
pub struct Tests {
    pub binary: PathBuf,
    /// Where the tests were compiled to find `kernsight` (the debug build's path).
    pub agent_path: PathBuf,
    /// Every test by full name (`oom::the_kill_is_attributed_...`), as `--list` gives them.
    pub names: Vec<String>,
}

pub fn build() -> Result<Binaries, String> {
    let agent = build_agent()?;
    // Tests that do not build for musl are failed cells, not a failed matrix: the table still
    // shows the agent and its families on every kernel.
    let tests = build_tests();
    if let Err(why) = &tests {
        eprintln!("xtask: {why}");
    }
    Ok(Binaries { agent, tests })
}

/// The static release agent alone.
pub fn build_agent() -> Result<PathBuf, String> {
    Step::new(format!("build the static agent (release, {TARGET})")).run(
        cargo()
            .args(["build", "--release", "--package", "kernsight", "--target", TARGET])
            .env(MUSL_CC.0, MUSL_CC.1),
    )?;
    let agent = workspace_root().join("target").join(TARGET).join("release/kernsight");
    if !is_static(&agent)? {
        return Err(format!("{} is dynamically linked: the guests have no libraries", agent.display()));
    }
    Ok(agent)
}

/// The arm64 smoke test's executables, static aarch64 musl: the release agent, and xtask itself
/// as the workload (`__syscall-loop`, `__open-loop`).
pub struct Arm64Binaries {
    pub agent: PathBuf,
    pub workload: PathBuf,
}

pub const ARM64_TARGET: &str = "aarch64-unknown-linux-musl";

/// Cross-builds the arm64 smoke test's executables. ring (rustls' crypto) compiles C and
/// assembly, for which Debian's aarch64 cross gcc serves, with the cross libc's headers
/// (`stdint.h` and what it includes; the gcc package only recommends them); rust-lld links,
/// with the musl C library and start files that Rust's target ships.
pub fn build_arm64() -> Result<Arm64Binaries, String> {
    crate::setup::debian_packages(&["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"], false)?;
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed", "--toolchain", STABLE]))
            .unwrap_or_default();
    if !installed.lines().any(|t| t.trim() == ARM64_TARGET) {
        Step::new(format!("rustup target add {ARM64_TARGET}")).run(Command::new("rustup").args([
            "target",
            "add",
            "--toolchain",
            STABLE,
            ARM64_TARGET,
        ]))?;
    }
    for package in ["kernsight", "xtask"] {
        Step::new(format!("build {package} (release, {ARM64_TARGET})")).run(
            cargo()
                .args(["build", "--release", "--package", package, "--target", ARM64_TARGET])
                .env("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc")
                .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
                // The host's strip cannot read arm64 executables (initramfs.rs copies them as
                // they are): built without debug information instead.
                .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo"),
        )?;
    }
    let release = workspace_root().join("target").join(ARM64_TARGET).join("release");
    let binaries = Arm64Binaries { agent: release.join("kernsight"), workload: release.join("xtask") };
    for binary in [&binaries.agent, &binaries.workload] {
        if !is_static(binary)? {
            return Err(format!("{} is dynamically linked: the guest has no libraries", binary.display()));
        }
    }
    Ok(binaries)
}

fn build_tests() -> Result<Tests, String> {
    eprintln!("xtask: build the integration tests (the host's test build)");
    let mut command = cargo();
    command
        .args(["build", "--tests", "--package", "kernsight"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = command.output().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("the integration tests do not build ({}; cargo's error is above)", out.status));
    }
    let artifacts = artifacts(&String::from_utf8_lossy(&out.stdout));
    let agent_path = artifacts
        .iter()
        .find(|a| a.kind == "bin" && a.name == "kernsight" && !a.test)
        .map(|a| a.executable.clone())
        .ok_or("cargo reported no kernsight binary for the tests")?;
    let binary = artifacts
        .into_iter()
        .find(|a| a.kind == "test" && a.name == INTEGRATION)
        .map(|a| a.executable)
        .ok_or(format!("cargo reported no `{INTEGRATION}` test binary"))?;
    // Listing its tests needs no privilege and runs none.
    let list = output(Command::new(&binary).args(["--list", "--format", "terse"]))
        .ok_or_else(|| format!("{} --list failed", binary.display()))?;
    let names = test_names(&list);
    if names.is_empty() {
        return Err(format!("{} --list names no test", binary.display()));
    }
    Ok(Tests { binary, agent_path, names })
}

/// Test names in libtest's `--list --format terse` output (`oom::name: test`).
fn test_names(list: &str) -> Vec<String> {
    list.lines().filter_map(|line| line.strip_suffix(": test")).map(str::to_owned).collect()
}

/// An executable cargo built, from one `compiler-artifact` message.
#[derive(Debug, PartialEq)]
struct Artifact {
    kind: String,
    name: String,
    test: bool,
    executable: PathBuf,
}

/// Executables in cargo's JSON messages. The messages are flat enough to read without a JSON
/// parser: xtask depends on nothing but std.
fn artifacts(messages: &str) -> Vec<Artifact> {
    messages
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|line| {
            let target = line.split_once("\"target\":{")?.1;
            let kind = string_after(target, "\"kind\":[")?;
            let name = string_after(target, "\"name\":")?;
            let test = line.contains("\"test\":true");
            let executable = string_after(line, "\"executable\":")?;
            Some(Artifact { kind, name, test, executable: PathBuf::from(executable) })
        })
        .collect()
}

/// The JSON string right after `key` (`None` for `null`); paths here need no unescaping.
fn string_after(text: &str, key: &str) -> Option<String> {
    let rest = text.split_once(key)?.1.strip_prefix('"')?;
    Some(rest.split_once('"')?.0.to_owned())
}

/// Whether an ELF executable has no program interpreter (no `PT_INTERP` header): it needs no
/// dynamic loader and no libraries.
pub fn is_static(path: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    elf_has_no_interpreter(&bytes).ok_or_else(|| format!("{} is not a 64-bit ELF file", path.display()))
}

/// Whether an ELF executable is for x86_64 (`e_machine` 62).
pub fn is_x86_64(path: &Path) -> Result<bool, String> {
    const EM_X86_64: u16 = 62;
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    match bytes.get(..4).zip(bytes.get(0x12..0x14)) {
        Some((b"\x7fELF", machine)) => Ok(u16::from_le_bytes([machine[0], machine[1]]) == EM_X86_64),
        _ => Err(format!("{} is not an ELF file", path.display())),
    }
}

fn elf_has_no_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let phoff = elf.get(0x20..0x28).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))? as usize;
    let (entry_size, count) = (u16_at(0x36)?, u16_at(0x38)?);
    for header in 0..count {
        if u32_at(phoff + header * entry_size)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_executables_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/agent#kernsight@0.1.0","#,
            r#""target":{"kind":["bin"],"crate_types":["bin"],"name":"kernsight","src_path":"/w/agent/src/main.rs"},"#,
            r#""profile":{"opt_level":"0","test":false},"executable":"/w/target/x/debug/kernsight","fresh":true}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"oom","#,
            r#""src_path":"/w/agent/tests/oom.rs"},"profile":{"test":true},"executable":"/w/target/x/debug/deps/oom-1a2b","fresh":true}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"libc"},"profile":{"test":false},"executable":null}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            artifacts(messages),
            vec![
                Artifact {
                    kind: "bin".into(),
                    name: "kernsight".into(),
                    test: false,
                    executable: "/w/target/x/debug/kernsight".into()
                },
                Artifact {
                    kind: "test".into(),
                    name: "oom".into(),
                    test: true,
                    executable: "/w/target/x/debug/deps/oom-1a2b".into()
                },
            ]
        );
    }

    #[test]
    fn reads_test_names_from_the_list() {
        let list = "oom::page_cache_within_the_limit_is_file_memory_and_no_kill: test\ncli::a: test\n";
        assert_eq!(
            test_names(list),
            ["oom::page_cache_within_the_limit_is_file_memory_and_no_kill", "cli::a"]
        );
    }

    #[test]
    fn tells_static_from_dynamic_executables() {
        // Debian's shell is dynamically linked; this test binary, built for the host, too.
        assert_eq!(is_static(Path::new("/bin/sh")), Ok(false));
        assert_eq!(is_x86_64(Path::new("/bin/sh")), Ok(true));
        assert!(is_x86_64(Path::new("/etc/hostname")).is_err());
        assert!(is_static(Path::new("/etc/hostname")).is_err());
    }
}
