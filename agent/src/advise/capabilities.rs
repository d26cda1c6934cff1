//! A Kubernetes `securityContext.capabilities` snippet from the capability checks a workload
//! made: drop ALL, add what it used (granted checks) and what it asked for and was refused
//! (denied checks, marked), and list what it holds but never used.
//!
//! CAP_SYS_ADMIN is left to the reader: the kernel asks for it, without auditing, at every
//! memory mapping (`cap_vm_enough_memory`), and the `cap_capable` tracepoint does not say which
//! checks were such probes, so its counts cannot tell a need from a question.

use std::{collections::BTreeSet, fmt::Write as _};

use super::Observed;
use crate::{kernel::names::capability_names, terminal::Escaped};

/// The advice, as its parts and as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// Capabilities (Kubernetes spelling: `NET_BIND_SERVICE`) with granted checks.
    pub used: BTreeSet<String>,
    /// With denied checks only.
    pub denied: BTreeSet<String>,
    /// Held (effective set) but never checked granted; `None` when not known (a cgroup target).
    pub held_unused: Option<BTreeSet<String>>,
    /// Checks of capabilities the kernel also probes (see the module): name → (granted, denied).
    pub probed: BTreeSet<(String, u64, u64)>,
}

/// Capabilities whose checks include the kernel's own probes (Kubernetes spelling).
pub const PROBED: [&str; 1] = ["SYS_ADMIN"];

fn k8s_name(name: &str) -> String {
    name.strip_prefix("CAP_").unwrap_or(name).to_owned()
}

pub fn advise(observed: &Observed, held: Option<u64>) -> Advice {
    let with = |result: &str| -> BTreeSet<String> {
        observed
            .capabilities
            .iter()
            .filter(|((_, r), n)| r == result && **n > 0)
            .map(|((cap, _), _)| k8s_name(cap))
            .filter(|cap| !PROBED.contains(&cap.as_str()))
            .collect()
    };
    let count = |cap: &str, result: &str| {
        observed
            .capabilities
            .iter()
            .filter(|((c, r), _)| k8s_name(c) == cap && r == result)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let probed = PROBED
        .iter()
        .map(|cap| ((*cap).to_owned(), count(cap, "granted"), count(cap, "denied")))
        .filter(|(_, granted, denied)| granted + denied > 0)
        .collect();
    let used = with("granted");
    let denied = with("denied").difference(&used).cloned().collect();
    let held_unused = held.map(|mask| {
        capability_names(mask).iter().map(|n| k8s_name(n)).filter(|n| !used.contains(n)).collect()
    });
    Advice { used, denied, held_unused, probed }
}

impl Advice {
    pub fn yaml(&self, target: &str, source: &str) -> String {
        let mut out = String::new();
        // A YAML comment: a line break in a workload's name would start YAML of its own.
        let _ = writeln!(
            out,
            "# capabilities of {}, from the capability checks in {}",
            Escaped(target),
            Escaped(source)
        );
        let list = |set: &BTreeSet<String>| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        let _ = writeln!(out, "# used (granted checks): {}", list(&self.used));
        if !self.denied.is_empty() {
            let _ = writeln!(
                out,
                "# denied checks (asked for and refused; added so that those operations succeed): {}",
                list(&self.denied)
            );
        }
        out.push_str("securityContext:\n  capabilities:\n    drop:\n      - ALL\n");
        let add: BTreeSet<&String> = self.used.iter().chain(&self.denied).collect();
        if add.is_empty() {
            out.push_str("    add: []\n");
        } else {
            out.push_str("    add:\n");
            for cap in add {
                let _ = writeln!(out, "      - {cap}");
            }
        }
        if let Some(unused) = &self.held_unused {
            let _ = writeln!(out, "# held but never used: {}", list(unused));
        }
        for (cap, granted, denied) in &self.probed {
            let _ = writeln!(
                out,
                "# {cap}: {granted} granted and {denied} denied checks, not judged: the kernel also asks for it \
                 at every memory mapping; add it only if an operation fails without it"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_used_and_denied_lists_unused() {
        let mut observed = Observed::default();
        observed.capabilities.insert(("CAP_NET_BIND_SERVICE".into(), "granted".into()), 5);
        observed.capabilities.insert(("CAP_CHOWN".into(), "denied".into()), 1);
        observed.capabilities.insert(("CAP_NET_BIND_SERVICE".into(), "denied".into()), 1);
        observed.capabilities.insert(("CAP_SYS_ADMIN".into(), "denied".into()), 7);
        let held = 1 << 10 | 1 << 0 | 1 << 5; // NET_BIND_SERVICE, CHOWN, KILL
        let advice = advise(&observed, Some(held));
        assert_eq!(advice.used, BTreeSet::from(["NET_BIND_SERVICE".to_owned()]));
        assert_eq!(advice.denied, BTreeSet::from(["CHOWN".to_owned()]));
        assert_eq!(advice.held_unused, Some(BTreeSet::from(["CHOWN".to_owned(), "KILL".to_owned()])));
        let yaml = advice.yaml("container x", "a test");
        assert!(
            yaml.contains("    drop:\n      - ALL\n    add:\n      - CHOWN\n      - NET_BIND_SERVICE\n"),
            "{yaml}"
        );
        assert!(yaml.contains("# held but never used: CHOWN, KILL"), "{yaml}");
        assert!(!yaml.contains("      - SYS_ADMIN"), "{yaml}");
        assert!(yaml.contains("# SYS_ADMIN: 0 granted and 7 denied checks, not judged"), "{yaml}");
    }
}
