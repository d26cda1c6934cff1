//! Debian's cloud kernels (with BTF) fetched once per machine through a private apt state: its
//! own sources list naming the system's Debian mirror with the kernel's suites, its own lists and
//! cache, so that the system's apt configuration is never touched.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::process::{Step, output};

/// Kernels are kept here between runs: a second run downloads nothing.
pub const CACHE: &str = "/var/cache/kernsight-kernels";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One kernel of the matrix and where Debian ships it.
pub struct KernelSource {
    /// What `--kernel` names and the table shows (`6.12`), and the cache's directory.
    pub name: &'static str,
    /// The kernel's version as Debian names its image packages (`linux-image-6.12.*`).
    pub version: &'static str,
    /// Debian's name of the architecture (`amd64`, `arm64`).
    pub arch: &'static str,
    /// Suites of the main archive and of the security archive to look in.
    pub suites: &'static [&'static str],
    pub security_suites: &'static [&'static str],
    /// Metapackages tried in order; the first that depends on a `linux-image-NAME.*` wins.
    pub metapackages: &'static [&'static str],
}

pub const KERNELS: &[KernelSource] = &[
    KernelSource {
        name: "5.10",
        version: "5.10",
        arch: "amd64",
        suites: &["bullseye"],
        security_suites: &["bullseye-security"],
        metapackages: &["linux-image-cloud-amd64"],
    },
    KernelSource {
        name: "6.1",
        version: "6.1",
        arch: "amd64",
        suites: &["bookworm"],
        security_suites: &["bookworm-security"],
        metapackages: &["linux-image-cloud-amd64"],
    },
    KernelSource {
        name: "6.12",
        version: "6.12",
        arch: "amd64",
        suites: &["bookworm-backports"],
        security_suites: &["bookworm-security"],
        // bookworm-security names its 6.12 metapackage by version; backports has the plain one.
        metapackages: &["linux-image-6.12-cloud-amd64", "linux-image-cloud-amd64"],
    },
];

/// The arm64 smoke test's kernel (`arm64.rs`): Debian 12's, as on AWS Graviton, Ampere and
/// Azure Cobalt nodes running Debian 12 or Amazon Linux 2023's 6.1.
pub const ARM64: KernelSource = KernelSource {
    name: "6.1-arm64",
    version: "6.1",
    arch: "arm64",
    suites: &["bookworm"],
    security_suites: &["bookworm-security"],
    metapackages: &["linux-image-cloud-arm64"],
};

/// Modules the guests load at boot (`init.sh`), as paths under the package's
/// `lib/modules/RELEASE/`, where Debian builds them as modules: the clsact qdisc and the BPF
/// classifier, which kernsight's TC counters need before kernel 6.6 (no tcx). A node loads them
/// on demand; the guests have no modprobe.
const GUEST_MODULES: &[&str] = &["kernel/net/sched/sch_ingress.ko", "kernel/net/sched/cls_bpf.ko"];

/// A kernel ready to boot.
pub struct Kernel {
    pub name: &'static str,
    pub vmlinuz: PathBuf,
    pub config: PathBuf,
    /// Uncompressed `.ko` files of `GUEST_MODULES` (those the kernel builds as modules).
    pub modules: Vec<PathBuf>,
    /// `uname -r` in the guest (`6.12.117+deb12-cloud-amd64`).
    pub release: String,
    /// The Debian package it came from, with its version.
    pub package: String,
}

/// The kernel from the cache, or downloaded into it.
pub fn kernel(source: &KernelSource) -> Result<Kernel, String> {
    let dir = Path::new(CACHE).join(source.name);
    if let Some(kernel) = cached(source, &dir) {
        if dir.join("modules").is_dir() {
            eprintln!("xtask: kernel {}: {} (cached in {})", source.name, kernel.package, dir.display());
            return Ok(kernel);
        }
        // A cache entry made before the guests loaded modules: its modules are added beside the
        // kernel, which stays in place (another checkout may be booting it).
        let (apt, unpacked, _, _) = fetch(source)?;
        add_modules(&unpacked, &kernel.release, &dir)?;
        let _ = std::fs::remove_dir_all(apt.root.join("download"));
        return cached(source, &dir)
            .ok_or_else(|| format!("the kernel cache in {} is incomplete", dir.display()));
    }
    let (apt, unpacked, package, version) = fetch(source)?;
    let boot = unpacked.join("boot");
    let vmlinuz = single_file_prefixed(&boot, "vmlinuz-")?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_owned)
        .ok_or_else(|| format!("cannot read the release from {}", vmlinuz.display()))?;
    let config = boot.join(format!("config-{release}"));
    let config_text = std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    if !config_text.lines().any(|l| l == "CONFIG_DEBUG_INFO_BTF=y") {
        return Err(format!("{package} is built without CONFIG_DEBUG_INFO_BTF: kernsight cannot run on it"));
    }
    recreate(&dir)?;
    copy(&vmlinuz, &dir.join("vmlinuz"))?;
    copy(&config, &dir.join("config"))?;
    add_modules(&unpacked, &release, &dir)?;
    write(&dir.join("release"), &release)?;
    // Written last: its presence marks a complete cache entry.
    write(&dir.join("package"), &format!("{package} {version}"))?;
    let _ = std::fs::remove_dir_all(apt.root.join("download"));
    cached(source, &dir).ok_or_else(|| format!("the kernel cache in {} is incomplete", dir.display()))
}

/// One file of a package from the kernel's suites and architecture (busybox for an arm64
/// guest), kept in the kernel's cache directory.
pub fn package_file(source: &KernelSource, package: &str, file: &str) -> Result<PathBuf, String> {
    let name = Path::new(file).file_name().ok_or_else(|| format!("{file} names no file"))?;
    let cached = Path::new(CACHE).join(source.name).join(package).join(name);
    if cached.is_file() {
        return Ok(cached);
    }
    let apt = PrivateApt::new(source)?;
    let download = apt.root.join("download");
    recreate(&download)?;
    Step::new(format!("download {package} ({})", source.arch))
        .run(apt.command("apt-get").args(["download", "-q", package]).current_dir(&download))?;
    let deb = single_file(&download, ".deb")?;
    let unpacked = download.join("root");
    Step::new(format!("unpack {}", deb.display()))
        .run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let partial = cached.with_extension("partial");
    let dir = cached.parent().unwrap_or(Path::new(CACHE));
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    copy(&unpacked.join(file), &partial)?;
    std::fs::rename(&partial, &cached).map_err(|e| format!("{}: {e}", cached.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(cached)
}

/// Downloads and unpacks the kernel's package: (apt, unpacked root, package, version).
fn fetch(source: &KernelSource) -> Result<(PrivateApt, PathBuf, String, String), String> {
    let apt = PrivateApt::new(source)?;
    let (package, version) = apt.image_package(source)?;
    let download = apt.root.join("download");
    recreate(&download)?;
    Step::new(format!("download {package} {version}")).run(
        apt.command("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(&download),
    )?;
    let deb = single_file(&download, ".deb")?;
    let unpacked = download.join("root");
    Step::new(format!("unpack {}", deb.display()))
        .run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    Ok((apt, unpacked, package, version))
}

/// `GUEST_MODULES` from the unpacked package into `dir/modules`, made whole before it is
/// renamed into place.
fn add_modules(unpacked: &Path, release: &str, dir: &Path) -> Result<(), String> {
    let partial = dir.join("modules.partial");
    recreate(&partial)?;
    for module in GUEST_MODULES {
        extract_module(&unpacked.join("lib/modules").join(release).join(module), &partial)?;
    }
    std::fs::rename(&partial, dir.join("modules"))
        .map_err(|e| format!("{}: {e}", dir.join("modules").display()))
}

/// Copies `module` (or its `.xz`/`.zst` compressed form, decompressed) into `to`; a module the
/// package does not have is built into the kernel, or absent, and is left out.
fn extract_module(module: &Path, to: &Path) -> Result<(), String> {
    let Some(name) = module.file_name() else {
        return Err(format!("{} names no file", module.display()));
    };
    let target = to.join(name);
    if module.is_file() {
        return copy(module, &target);
    }
    for (suffix, tool) in [("xz", "xz"), ("zst", "zstd")] {
        let compressed = module.with_extension(format!("ko.{suffix}"));
        if compressed.is_file() {
            let output = Command::new(tool)
                .arg("-dc")
                .arg(&compressed)
                .output()
                .map_err(|e| format!("{tool} -dc {}: {e}", compressed.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "{tool} -dc {}: {}",
                    compressed.display(),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            return std::fs::write(&target, output.stdout).map_err(|e| format!("{}: {e}", target.display()));
        }
    }
    Ok(())
}

fn cached(source: &KernelSource, dir: &Path) -> Option<Kernel> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_owned());
    let (package, release) = (read("package")?, read("release")?);
    let modules = files(&dir.join("modules"));
    let kernel = Kernel {
        name: source.name,
        vmlinuz: dir.join("vmlinuz"),
        config: dir.join("config"),
        modules,
        release,
        package,
    };
    (kernel.vmlinuz.is_file() && kernel.config.is_file()).then_some(kernel)
}

/// apt-get and apt-cache with their state, cache and sources under `CACHE/apt-NAME`.
struct PrivateApt {
    root: PathBuf,
    /// Packages of this architecture, whatever the machine's.
    arch: &'static str,
}

impl PrivateApt {
    fn new(source: &KernelSource) -> Result<Self, String> {
        let root = Path::new(CACHE).join(format!("apt-{}", source.name));
        for dir in ["state/lists/partial", "cache/archives/partial", "sources.list.d"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        }
        let mirrors = Mirrors::of_system();
        let signed_by =
            if Path::new(KEYRING).is_file() { format!(" signed-by={KEYRING}") } else { String::new() };
        let mut list = String::new();
        let options = format!("[arch={}{signed_by}]", source.arch);
        for suite in source.suites {
            list.push_str(&format!("deb {options} {} {suite} main\n", mirrors.archive));
        }
        for suite in source.security_suites {
            list.push_str(&format!("deb {options} {} {suite} main\n", mirrors.security));
        }
        write(&root.join("sources.list"), &list)?;
        let apt = Self { root, arch: source.arch };
        // A suite that is not reachable makes update fail; the suites that answered may still
        // hold the kernel, which `image_package` finds out.
        let suites: Vec<&str> = source.suites.iter().chain(source.security_suites).copied().collect();
        let what = format!(
            "refresh the package lists of {} from {} (private apt state in {})",
            suites.join(", "),
            mirrors.archive,
            apt.root.display()
        );
        if let Err(e) = Step::new(what).run(apt.command("apt-get").args(["update", "-q"])) {
            eprintln!("xtask: {e}; continuing with the lists that were fetched");
        }
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let dir = |sub: &str| self.root.join(sub).display().to_string();
        for (key, value) in [
            ("Dir::State", dir("state")),
            ("Dir::State::status", "/dev/null".to_owned()),
            ("Dir::Cache", dir("cache")),
            ("Dir::Etc::SourceList", dir("sources.list")),
            ("Dir::Etc::SourceParts", dir("sources.list.d")),
            // Downloads land in a root-owned directory that apt's sandbox user cannot write.
            ("APT::Sandbox::User", "root".to_owned()),
            ("APT::Architecture", self.arch.to_owned()),
            ("APT::Architectures", self.arch.to_owned()),
        ] {
            command.arg("-o").arg(format!("{key}={value}"));
        }
        command
    }

    /// The image package (and its version) one of the metapackages depends on.
    fn image_package(&self, source: &KernelSource) -> Result<(String, String), String> {
        let prefix = format!("linux-image-{}.", source.version);
        for metapackage in source.metapackages {
            let Some(depends) = output(self.command("apt-cache").args(["depends", metapackage])) else {
                continue;
            };
            let Some(package) = depends
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with(&prefix))
            else {
                continue;
            };
            let policy = output(self.command("apt-cache").args(["policy", package])).unwrap_or_default();
            if let Some(version) = candidate(&policy) {
                return Ok((package.to_owned(), version));
            }
        }
        Err(format!(
            "no {prefix}* kernel through {} in {} {}: is the Debian mirror reachable?",
            source.metapackages.join(" or "),
            source.suites.join(" "),
            source.security_suites.join(" ")
        ))
    }
}

/// `Candidate: VERSION` of `apt-cache policy`.
fn candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_owned)
}

/// The Debian archive and security archive this machine's apt uses.
struct Mirrors {
    archive: String,
    security: String,
}

impl Mirrors {
    fn of_system() -> Self {
        let mut texts = Vec::new();
        for path in ["/etc/apt/sources.list".into(), PathBuf::from("/etc/apt/sources.list.d")] {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                    .map(|entries| entries.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                files.sort();
                let listed = |p: &PathBuf| p.extension().is_some_and(|e| e == "list" || e == "sources");
                texts.extend(
                    files.iter().filter(|p| listed(p)).filter_map(|p| std::fs::read_to_string(p).ok()),
                );
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                texts.push(text);
            }
        }
        Self::from_sources(&texts.join("\n"))
    }

    /// From sources in either format (one-line `deb URI SUITE...` or deb822 `URIs:`/`Suites:`):
    /// the URI serving a Debian codename, and the one serving its `-security` suite.
    fn from_sources(text: &str) -> Self {
        let mut archive = None;
        let mut security = None;
        for (uri, suites) in entries(text) {
            let debian = suites.iter().any(|s| is_debian_suite(s));
            if debian && suites.iter().any(|s| s.ends_with("-security")) {
                security.get_or_insert(uri);
            } else if debian {
                archive.get_or_insert(uri);
            }
        }
        Self {
            archive: archive.unwrap_or_else(|| "http://deb.debian.org/debian".into()),
            security: security.unwrap_or_else(|| "http://deb.debian.org/debian-security".into()),
        }
    }
}

fn is_debian_suite(suite: &str) -> bool {
    const CODENAMES: &[&str] = &["buster", "bullseye", "bookworm", "trixie", "forky", "sid"];
    CODENAMES.contains(&suite.split('-').next().unwrap_or_default())
}

/// (URI, suites) of every `deb` source, from one-line lists and deb822 stanzas.
fn entries(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("deb ") {
            // Options in brackets come first: `deb [signed-by=...] URI SUITE COMPONENTS`.
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(options) => options.split_once(']').map_or("", |(_, after)| after),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                found.push((uri.to_owned(), vec![suite.to_owned()]));
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let is_deb = field("Types:").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = field("Enabled:").is_none_or(|e| e != "no");
        if let (true, true, Some(uris), Some(suites)) = (is_deb, enabled, field("URIs:"), field("Suites:")) {
            let suites: Vec<String> = suites.split_whitespace().map(str::to_owned).collect();
            for uri in uris.split_whitespace() {
                found.push((uri.to_owned(), suites.clone()));
            }
        }
    }
    found
}

fn recreate(dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map(drop).map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn single_file(dir: &Path, suffix: &str) -> Result<PathBuf, String> {
    files(dir)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .ok_or_else(|| format!("no *{suffix} in {}", dir.display()))
}

fn single_file_prefixed(dir: &Path, prefix: &str) -> Result<PathBuf, String> {
    files(dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .ok_or_else(|| format!("no {prefix}* in {}", dir.display()))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|entries| entries.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirrors_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n\nTypes: deb\n\
                      URIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        let mirrors = Mirrors::from_sources(deb822);
        assert_eq!(mirrors.archive, "http://mirror.example/debian");
        assert_eq!(mirrors.security, "http://mirror.example/debian-security");

        let one_line = "# comment\ndeb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n\
                        deb [arch=amd64] http://ftp.example/debian bullseye main\n\
                        deb http://security.example/debian-security bullseye-security main\n";
        let mirrors = Mirrors::from_sources(one_line);
        assert_eq!(mirrors.archive, "http://ftp.example/debian");
        assert_eq!(mirrors.security, "http://security.example/debian-security");

        let none = Mirrors::from_sources("");
        assert_eq!(
            mirrors_pair(&none),
            ("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")
        );
    }

    fn mirrors_pair(m: &Mirrors) -> (&str, &str) {
        (&m.archive, &m.security)
    }

    #[test]
    fn reads_the_candidate_version() {
        let policy =
            "linux-image-cloud-amd64:\n  Installed: (none)\n  Candidate: 5.10.262-1\n  Version table:\n";
        assert_eq!(candidate(policy).as_deref(), Some("5.10.262-1"));
        assert_eq!(candidate("x:\n  Candidate: (none)\n"), None);
    }
}
