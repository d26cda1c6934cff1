/// Building this crate depends on the `bpf-linker` binary, which cargo cannot express: rebuild
/// whenever the binary on PATH changes (e.g. `cargo xtask setup` relinked it to another LLVM).
fn main() {
    // aya-build passes `--cfg bpf_target_arch="<host arch>"`: the pt_regs layout depends on it.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo:warning=bpf-linker not found on PATH ({err}): run `cargo xtask setup`")
        }
    }
}
