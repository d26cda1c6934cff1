//! `cargo xtask setup`: installs what building and testing kernsight needs, skipping what is
//! already there, and stops when the eBPF toolchain's LLVM versions do not agree.

use std::{path::PathBuf, process::Command};

use crate::process::{STABLE, Step, is_root, output, workspace_root};

/// LLVM major shared by bpf-linker and the eBPF nightly (rustc and bpf-linker must agree).
const LLVM_MAJOR: u32 = 22;
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages: LLVM for bpf-linker; protoc for the CRI client's generated code;
/// bpftool, promtool and setpriv for the tests; podman, runc, containerd and busybox-static for
/// the tests that run real containers; bpftrace and strace as the benchmarks' and the trace tests'
/// reference tools;
/// iproute2 (network namespaces, veth pairs) and nftables (lossy paths, drops, conntrack) for
/// the network tests; musl-tools (musl-gcc) for the C code of rustls' crypto (ring) in the static
/// musl build of the image and of the kernel-matrix guests.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "protobuf-compiler",
    "bpftool",
    "bpftrace",
    "prometheus",
    "strace",
    "util-linux",
    "libcap2-bin",
    "podman",
    "runc",
    "containerd",
    "busybox-static",
    "iproute2",
    "nftables",
    "musl-tools",
];

/// The C compiler cc-rs uses for the static musl build (Debian's musl-tools names it musl-gcc,
/// not x86_64-linux-musl-gcc, which cc-rs looks for by default).
pub const MUSL_CC: (&str, &str) = ("CC_x86_64_unknown_linux_musl", "musl-gcc");

pub fn run() -> Result<(), String> {
    debian_packages(PACKAGES, true)?;
    let nightly = ebpf_nightly()?;
    rust_toolchain(STABLE, &["clippy", "rustfmt"])?;
    // clippy too: `cargo xtask test` runs it on the kernel programs with this nightly.
    rust_toolchain(&nightly, &["rust-src", "clippy"])?;
    bpf_linker(&nightly)?;
    directory_override()?;
    // helm, kubectl, kubernetes-validate, yamllint and the musl target, for the deploy tests.
    let quiet =
        Command::new(workspace_root().join("deploy/tools.sh")).stdout(std::process::Stdio::null()).status();
    if !quiet.is_ok_and(|status| status.success()) {
        return Err("deploy/tools.sh failed: run it to see why".into());
    }
    eprintln!(
        "xtask: setup: ready (Debian packages, Rust {STABLE}, {nightly} with rust-src and clippy, \
         bpf-linker on LLVM {LLVM_MAJOR}, deploy tools)"
    );
    Ok(())
}

/// The nightly pinned in agent-ebpf/rust-toolchain.toml (the one place it is written).
pub fn ebpf_nightly() -> Result<String, String> {
    let path = workspace_root().join("agent-ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    channel_of(&text).ok_or_else(|| format!("no `channel = \"...\"` in {}", path.display()))
}

/// The `channel = "..."` of a rust-toolchain.toml.
fn channel_of(toolchain_file: &str) -> Option<String> {
    toolchain_file
        .lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
}

/// Installs those of `packages` that are missing (as root), with apt-get; their recommended
/// packages too when `recommends`; never removing an installed package.
pub fn debian_packages(packages: &[&str], recommends: bool) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing Debian packages: {}; install them as root: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        ));
    }
    Step::new("refresh the Debian package lists").run(Command::new("apt-get").args(["update", "-q"]))?;
    // --no-remove: apt aborts rather than remove an installed package to make room (QEMU's
    // dependencies once removed a newer qemu-utils from backports): the machine's other
    // packages are not setup's to change.
    Step::new(format!("install Debian packages: {}", missing.join(" ")))
        .run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-remove"])
                .args((!recommends).then_some("--no-install-recommends"))
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .map_err(|e| {
            format!(
                "{e}\nif apt wanted to remove packages, see what with `apt-get -s install {}` and \
                 resolve that by hand",
                missing.join(" ")
            )
        })
}

fn rust_toolchain(toolchain: &str, components: &[&str]) -> Result<(), String> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", toolchain]));
    let has_all = installed.as_deref().is_some_and(|list| {
        components.iter().all(|c| list.lines().any(|line| line.starts_with(&format!("{c}-")) || line == *c))
    });
    if has_all {
        return Ok(());
    }
    let mut command = Command::new("rustup");
    command.args(["toolchain", "install", toolchain, "--profile", "minimal"]);
    for component in components {
        command.args(["--component", component]);
    }
    Step::new(format!("install Rust toolchain {toolchain} with {}", components.join(", "))).run(&mut command)
}

/// LLVM major of a rustc (`LLVM version: 22.1.8` in `rustc -vV`).
fn rustc_llvm_major(toolchain: &str) -> Result<u32, String> {
    let version = output(Command::new("rustc").arg(format!("+{toolchain}")).arg("-vV"))
        .ok_or_else(|| format!("cannot run rustc +{toolchain} -vV"))?;
    version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.parse().ok())
        .ok_or_else(|| format!("rustc +{toolchain} does not report its LLVM version"))
}

fn bpf_linker_path() -> Option<PathBuf> {
    let on_path =
        output(Command::new("sh").args(["-c", "command -v bpf-linker"])).map(|p| PathBuf::from(p.trim()));
    let in_cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin/bpf-linker"));
    on_path.into_iter().chain(in_cargo_home).find(|p| p.is_file())
}

/// LLVM major bpf-linker was linked against, from the libLLVM it loads.
fn bpf_linker_llvm_major(path: &PathBuf) -> Option<u32> {
    llvm_major_of_ldd(&output(Command::new("ldd").arg(path))?)
}

/// The major version in the libLLVM soname of `ldd` output (`libLLVM.so.22.1`, `libLLVM-22.so`).
fn llvm_major_of_ldd(ldd: &str) -> Option<u32> {
    let soname = ldd.split_whitespace().find(|w| w.starts_with("libLLVM"))?;
    soname.split(|c: char| !c.is_ascii_digit()).find(|part| !part.is_empty())?.parse().ok()
}

fn bpf_linker(nightly: &str) -> Result<(), String> {
    let nightly_llvm = rustc_llvm_major(nightly)?;
    if nightly_llvm != LLVM_MAJOR {
        return Err(format!(
            "{nightly} uses LLVM {nightly_llvm}, but bpf-linker is built against LLVM {LLVM_MAJOR}: \
             pin a nightly whose `rustc -vV` says LLVM {LLVM_MAJOR} in agent-ebpf/rust-toolchain.toml"
        ));
    }
    let install = format!(
        "LLVM_PREFIX=/usr/lib/llvm-{LLVM_MAJOR} cargo +{STABLE} install --force bpf-linker --version {BPF_LINKER_VERSION} \
         --no-default-features --features llvm-{LLVM_MAJOR}"
    );
    if let Some(path) = bpf_linker_path() {
        return match bpf_linker_llvm_major(&path) {
            Some(major) if major == nightly_llvm => Ok(()),
            Some(major) => Err(format!(
                "{} links LLVM {major}, but {nightly} emits LLVM {nightly_llvm} bitcode: they must match. \
                 Reinstall it with: {install}",
                path.display()
            )),
            None => Err(format!(
                "cannot tell which LLVM {} links (ldd shows no libLLVM): reinstall it with: {install}",
                path.display()
            )),
        };
    }
    Step::new(format!(
        "install bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (takes a few minutes)"
    ))
    .run(
        Command::new("cargo")
            .arg(format!("+{STABLE}"))
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features"])
            .args(["--features", &format!("llvm-{LLVM_MAJOR}")])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}

/// Makes plain `cargo build/clippy/test` in the workspace use the pinned stable toolchain.
fn directory_override() -> Result<(), String> {
    let root = workspace_root();
    let active = output(
        Command::new("rustup")
            .args(["show", "active-toolchain"])
            .current_dir(&root)
            .env_remove("RUSTUP_TOOLCHAIN"),
    );
    if active.is_some_and(|a| a.starts_with(&format!("{STABLE}-"))) {
        return Ok(());
    }
    Step::new(format!("use Rust {STABLE} for plain `cargo` commands in {} (rustup override)", root.display()))
        .run(Command::new("rustup").args(["override", "set", STABLE]).current_dir(&root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_channel() {
        let file = "# comment\n[toolchain]\nchannel = \"nightly-2026-07-01\"\ncomponents = [\"rust-src\"]\n";
        assert_eq!(channel_of(file).as_deref(), Some("nightly-2026-07-01"));
        assert_eq!(channel_of("[toolchain]\n"), None);
        let pinned =
            std::fs::read_to_string(workspace_root().join("agent-ebpf/rust-toolchain.toml")).unwrap();
        assert!(channel_of(&pinned).is_some_and(|c| c.starts_with("nightly-")));
    }

    #[test]
    fn reads_llvm_major_from_ldd() {
        let debian = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f)\n";
        assert_eq!(llvm_major_of_ldd(debian), Some(22));
        assert_eq!(llvm_major_of_ldd("\tlibLLVM-21.so => /usr/lib/libLLVM-21.so (0x1)\n"), Some(21));
        assert_eq!(llvm_major_of_ldd("\tlibc.so.6 => /lib/libc.so.6\n"), None);
    }
}
