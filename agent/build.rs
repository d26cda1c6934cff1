//! Builds the kernel programs (`kernsight-ebpf`) with the pinned nightly and bpf-linker, and
//! places the objects where `src/bpf/` embeds them: `kernsight` (the full build),
//! `kernsight-hashed-slots` (for kernels without cgroup local storage) and `kernsight-fallback`
//! (for kernels without task local storage either), one per binary of the package, and
//! `kernsight-floor` (empty programs the benchmarks measure against), which only the
//! `kernsight-floor` binary embeds.
//!
//! `AYA_BUILD_SKIP=1` skips that build so that `cargo check`, `clippy` and unit tests of the user
//! side do not need the eBPF toolchain; a binary built that way carries no programs and says so
//! when it starts.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let objects = ["kernsight", "kernsight-hashed-slots", "kernsight-fallback", "kernsight-floor"]
        .map(|name| out_dir.join(name));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = manifest_dir.join("../agent-ebpf");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Keep the objects of an earlier full build; otherwise embed empty ones.
        for object in objects.iter().filter(|object| !object.exists()) {
            fs::write(object, []).context("writing the empty eBPF placeholder")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }

    // The nightly is pinned in one place, the eBPF crate's rust-toolchain.toml.
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let pinned = fs::read_to_string(&toolchain_file).context("reading agent-ebpf/rust-toolchain.toml")?;
    let toolchain = pinned
        .lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .context("no `channel = \"...\"` in agent-ebpf/rust-toolchain.toml")?;

    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to agent-ebpf")?;
    let package = aya_build::Package { name: "kernsight-ebpf", root_dir: ebpf_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}
