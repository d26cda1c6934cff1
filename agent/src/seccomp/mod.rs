//! Seccomp profiles in the OCI / Docker JSON format, asked one question: would this profile let
//! a container with these capabilities make this syscall? Only the syscall's name is known (the
//! counters are per syscall), so a rule that depends on arguments makes the answer "depends".
//!
//! `runtime-default.json` is the default profile of containers/common v0.50.1, as Debian
//! bookworm ships it (`golang-github-containers-common` 0.50.1+ds1-4,
//! `/usr/share/containers/seccomp.json`): the profile podman and CRI-O apply to a container that
//! asks for no other (Kubernetes' `RuntimeDefault` on CRI-O nodes). containerd's default (a copy
//! of moby's) is stricter in places, e.g. it denies `keyctl`, `mount`, `unshare` and `ptrace`
//! before kernel 4.8 without CAP_SYS_ADMIN; on containerd nodes point
//! `security.runtime_default_profile` at that profile's JSON to compare against it instead.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

/// Most baseline profiles a configuration may name (`security.seccomp_baselines`).
pub const MAX_BASELINES: usize = 64;

/// The embedded default profile (see the module's comment for its source).
const RUNTIME_DEFAULT: &str = include_str!("runtime-default.json");

/// Bound of a profile file read from disk: the largest profiles in use are about 20 KiB.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// libseccomp's and the OCI runtime spec's name of this architecture in `includes.arches`.
#[cfg(target_arch = "x86_64")]
const ARCH: &str = "amd64";
#[cfg(target_arch = "aarch64")]
const ARCH: &str = "arm64";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: &str = "unknown";

/// What a profile does with a syscall, when only its name and the caller's capabilities are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Allowed for some arguments and not others (e.g. `personality`, `socket(AF_NETLINK,
    /// NETLINK_AUDIT)`), or handed to a tracer or a notifier: not counted as outside.
    Depends,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: String,
    #[serde(default)]
    syscalls: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    #[serde(default)]
    names: Vec<String>,
    /// The format's older, single-name form.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    args: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// One rule, reduced to what decides it without arguments.
#[derive(Debug)]
struct Rule {
    action: Action,
    conditional: bool,
    /// Capabilities the container must all hold (bounding set), as a mask.
    needs_caps: u64,
    /// Capabilities of which the container must hold none.
    excluded_caps: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    /// SCMP_ACT_TRACE and SCMP_ACT_NOTIFY: another process decides.
    Delegate,
}

/// A profile ready to be asked: the rules that apply on this architecture and kernel, by name.
#[derive(Debug)]
pub struct Profile {
    default: Action,
    rules: HashMap<String, Vec<Rule>>,
}

impl Profile {
    /// The embedded default profile.
    pub fn runtime_default() -> Self {
        Self::parse(RUNTIME_DEFAULT, kernel_version()).unwrap_or_else(|why| {
            unreachable!("the embedded profile is valid JSON (a unit test reads it): {why}")
        })
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_PROFILE_BYTES + 1), &mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if text.len() as u64 > MAX_PROFILE_BYTES {
            return Err(format!(
                "{}: larger than {MAX_PROFILE_BYTES} bytes: not a seccomp profile",
                path.display()
            ));
        }
        Self::parse(&text, kernel_version()).map_err(|why| format!("{}: {why}", path.display()))
    }

    /// Parses a profile for a kernel of `kernel` (major, minor), which decides `minKernel`.
    fn parse(text: &str, kernel: (u32, u32)) -> Result<Self, String> {
        let file: ProfileFile =
            serde_json::from_str(text).map_err(|e| format!("not a seccomp profile: {e}"))?;
        let default = action(&file.default_action)?;
        let mut rules: HashMap<String, Vec<Rule>> = HashMap::new();
        for rule in file.syscalls {
            if !applies_here(&rule, kernel) {
                continue;
            }
            let reduced = || -> Result<Rule, String> {
                Ok(Rule {
                    action: action(&rule.action)?,
                    conditional: rule.args.as_ref().is_some_and(|args| !args.is_empty()),
                    needs_caps: cap_mask(&rule.includes.caps)?,
                    excluded_caps: cap_mask(&rule.excludes.caps)?,
                })
            };
            for name in rule.names.iter().chain(rule.name.as_ref()) {
                rules.entry(name.clone()).or_default().push(reduced()?);
            }
        }
        Ok(Self { default, rules })
    }

    /// What the profile does with `syscall` for a container whose bounding set is `bounding`
    /// (runtimes pick the capability-conditional rules by the bounding set).
    pub fn verdict(&self, syscall: &str, bounding: u64) -> Verdict {
        let applicable: Vec<&Rule> = self
            .rules
            .get(syscall)
            .into_iter()
            .flatten()
            .filter(|rule| {
                bounding & rule.needs_caps == rule.needs_caps && bounding & rule.excluded_caps == 0
            })
            .collect();
        let unconditional = |wanted: Action| applicable.iter().any(|r| !r.conditional && r.action == wanted);
        if unconditional(Action::Allow) {
            Verdict::Allowed
        } else if unconditional(Action::Deny) {
            Verdict::Denied
        } else if !applicable.is_empty() {
            Verdict::Depends
        } else {
            match self.default {
                Action::Allow => Verdict::Allowed,
                Action::Deny => Verdict::Denied,
                Action::Delegate => Verdict::Depends,
            }
        }
    }
}

fn action(name: &str) -> Result<Action, String> {
    match name {
        "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" => Ok(Action::Allow),
        "SCMP_ACT_ERRNO"
        | "SCMP_ACT_KILL"
        | "SCMP_ACT_KILL_THREAD"
        | "SCMP_ACT_KILL_PROCESS"
        | "SCMP_ACT_TRAP" => Ok(Action::Deny),
        "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY" => Ok(Action::Delegate),
        other => Err(format!("unknown seccomp action {other:?}")),
    }
}

fn applies_here(rule: &RuleFile, kernel: (u32, u32)) -> bool {
    let arch = |arches: &[String]| arches.iter().any(|a| a == ARCH);
    let included = rule.includes.arches.is_empty() || arch(&rule.includes.arches);
    let excluded = arch(&rule.excludes.arches);
    let new_enough = rule.includes.min_kernel.as_deref().is_none_or(|min| parse_version(min) <= Some(kernel));
    let too_new = rule.excludes.min_kernel.as_deref().is_some_and(|min| parse_version(min) <= Some(kernel));
    included && !excluded && new_enough && !too_new
}

fn cap_mask(names: &[String]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |mask, name| {
        let cap: caps::Capability = name.parse().map_err(|_| format!("unknown capability {name:?}"))?;
        Ok(mask | cap.bitmask())
    })
}

/// "5.10" or "5.10.0-30-cloud-amd64" → (5, 10).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_version() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| parse_version(release.trim()))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests;
