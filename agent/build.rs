//! Builds the kernel programs (`kernsight-ebpf`) with the pinned nightly and bpf-linker, and
//! places the object where `src/bpf/` embeds it.
//!
//! `AYA_BUILD_SKIP=1` skips that build so that `cargo check`, `clippy` and unit tests of the user
//! side do not need the eBPF toolchain; a binary built that way carries no programs and says so
//! when it starts.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

/// Must match `agent-ebpf/rust-toolchain.toml`; `cargo xtask setup` installs it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("kernsight");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = manifest_dir.join("../agent-ebpf");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Keep an object from an earlier full build; otherwise embed an empty one.
        if !object.exists() {
            fs::write(&object, []).context("writing the empty eBPF placeholder")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }

    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to agent-ebpf")?;
    let package = aya_build::Package {
        name: "kernsight-ebpf",
        root_dir: ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
