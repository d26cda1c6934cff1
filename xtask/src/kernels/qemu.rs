//! QEMU for the guests: the system's `qemu-system-x86_64` (or `qemu-system-aarch64` for the arm64
//! smoke test) when the machine has one, else Debian's `qemu-system-x86` (`qemu-system-arm`) and
//! the libraries it lacks, unpacked once into the kernel cache and run from there. Installing it with apt is not an option everywhere: on a machine image that
//! carries a newer `qemu-utils` (from backports), apt would remove that package to install QEMU,
//! and the machine's packages are not the harness's to change.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use super::download::CACHE;
use crate::process::{Step, output};

/// Which machine QEMU emulates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arch {
    X86,
    Arm64,
}

impl Arch {
    pub fn program(self) -> &'static str {
        match self {
            Arch::X86 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Arch::X86 => "qemu-system-x86",
            Arch::Arm64 => "qemu-system-arm",
        }
    }

    /// Where the private QEMU lives; `complete` marks a whole unpacking.
    fn private_root(self) -> PathBuf {
        Path::new(CACHE).join(match self {
            Arch::X86 => "qemu-x86",
            Arch::Arm64 => "qemu-arm",
        })
    }
}

/// How to start QEMU: a program, and for the private one its libraries and firmware.
#[derive(Debug)]
pub struct Qemu {
    program: PathBuf,
    /// The unpacked root of the private QEMU; `None` for the system's.
    root: Option<PathBuf>,
}

impl Qemu {
    /// A command that starts QEMU; the caller adds the guest's arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        if let Some(root) = &self.root {
            command.env("LD_LIBRARY_PATH", library_path(root));
            // The firmware QEMU loads for a `-kernel` boot (SeaBIOS, the linuxboot option ROM,
            // the NIC's iPXE ROM): Debian links some of them with absolute symlinks into
            // /usr/share, which point nowhere in an unpacked root, so each directory is named.
            for dir in ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"] {
                command.arg("-L").arg(root.join(dir));
            }
        }
        command
    }
}

fn library_path(root: &Path) -> String {
    ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
        .map(|dir| root.join(dir).display().to_string())
        .join(":")
}

/// The QEMU to use for `arch`, found (and if need be unpacked) once per run.
pub fn qemu(arch: Arch) -> Result<&'static Qemu, String> {
    static X86: OnceLock<Result<Qemu, String>> = OnceLock::new();
    static ARM64: OnceLock<Result<Qemu, String>> = OnceLock::new();
    let once = match arch {
        Arch::X86 => &X86,
        Arch::Arm64 => &ARM64,
    };
    once.get_or_init(|| find(arch)).as_ref().map_err(Clone::clone)
}

fn find(arch: Arch) -> Result<Qemu, String> {
    let (program, package, private_root) = (arch.program(), arch.package(), arch.private_root());
    if runs(&mut Command::new(program)) {
        return Ok(Qemu { program: program.into(), root: None });
    }
    let root = private_root.join("root");
    let private = Qemu { program: root.join("usr/bin").join(program), root: Some(root.clone()) };
    if !private_root.join("complete").exists() {
        unpack(arch, &root)?;
    }
    if runs(&mut private.command()) {
        eprintln!("xtask: QEMU: Debian's {package}, unpacked in {}", root.display());
        Ok(private)
    } else {
        let _ = std::fs::remove_file(private_root.join("complete"));
        Err(format!(
            "{} --version does not run (LD_LIBRARY_PATH={}): remove {} and run again, or install {package}",
            private.program.display(),
            library_path(&root),
            private_root.display()
        ))
    }
}

fn runs(command: &mut Command) -> bool {
    output(command.arg("--version")).is_some_and(|version| version.starts_with("QEMU emulator"))
}

/// Downloads QEMU's package and the packages of its dependencies that this machine lacks (what
/// apt would install), and unpacks them all into `root`.
fn unpack(arch: Arch, root: &Path) -> Result<(), String> {
    let package = arch.package();
    let packages = match missing_packages(package) {
        Some(packages) => packages,
        None => {
            Step::new("refresh the Debian package lists")
                .run(Command::new("apt-get").args(["update", "-q"]))?;
            missing_packages(package)
                .ok_or_else(|| format!("apt-get cannot resolve {package} on this machine"))?
        }
    };
    let debs = arch.private_root().join("debs");
    for dir in [&debs, root] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    Step::new(format!("download {package} and {} packages it needs", packages.len() - 1))
        .run(Command::new("apt-get").args(["download", "-q"]).args(&packages).current_dir(&debs))?;
    let entries = std::fs::read_dir(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    for deb in entries.flatten().map(|e| e.path()) {
        Step::new(format!("unpack {}", deb.display()))
            .run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    }
    let _ = std::fs::remove_dir_all(&debs);
    let complete = arch.private_root().join("complete");
    std::fs::write(&complete, packages.join("\n")).map_err(|e| format!("write {}: {e}", complete.display()))
}

/// `PACKAGE=VERSION` of every package `apt-get install` would install for QEMU, read from a
/// simulation (which also lists them when the real install would have to remove something).
fn missing_packages(package: &str) -> Option<Vec<String>> {
    let simulation =
        output(Command::new("apt-get").args(["-s", "-q", "install", "--no-install-recommends", package]))?;
    let packages = installs(&simulation);
    packages.iter().any(|p| p.starts_with(&format!("{package}="))).then_some(packages)
}

/// The `Inst NAME [OLD] (VERSION ...)` lines of an apt simulation, as `NAME=VERSION`.
fn installs(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let name = rest.split_whitespace().next()?;
            let version = rest.split_once('(')?.1.split_whitespace().next()?;
            Some(format!("{name}={version}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::installs;

    #[test]
    fn reads_what_apt_would_install() {
        let simulation = "NOTE: This is only a simulation!\n\
            The following packages will be REMOVED:\n  qemu-utils\n\
            Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
            Inst ipxe-qemu (1.0.0+git-20190125.36a4c85-5.1 Debian:12.15/oldstable [all])\n\
            Inst libfoo1 [1.0-1] (1.0-2 Debian:12.15/oldstable [amd64])\n\
            Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])\n\
            Conf ipxe-qemu (1.0.0+git-20190125.36a4c85-5.1 Debian:12.15/oldstable [all])\n";
        assert_eq!(
            installs(simulation),
            [
                "ipxe-qemu=1.0.0+git-20190125.36a4c85-5.1",
                "libfoo1=1.0-2",
                "qemu-system-x86=1:7.2+dfsg-7+deb12u18+b3"
            ]
        );
    }
}
