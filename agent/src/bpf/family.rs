//! The probe family seam. A family (syscalls, runqueue, oom, tcp, ...) is one implementation of
//! `Family`: whether the config enables it, what it needs of the kernel, how it specialises the
//! loader (globals, map sizes), which of its maps are pinned and bounded, and how it attaches.
//! Once attached it is an `Attached`: its map rows for the self-metrics, the recycling of a
//! removed cgroup's entries, its ring buffers. Start-up, maintenance, pinning, `map_full`,
//! advise's switch-off and the self-metrics are loops over `super::FAMILIES`.

use std::{any::Any, time::Duration};

use aya::{Btf, Ebpf, EbpfLoader};

use super::{facts::KernelFacts, features::Implementation, rings::EventRing};
use crate::config::Config;

/// One map's fill, for `kernsight_bpf_map_entries` and `kernsight_bpf_map_max_entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRow {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

/// What a family's attach step gets.
pub struct AttachContext<'a> {
    pub ebpf: &'a mut Ebpf,
    pub btf: &'a Btf,
    pub config: &'a Config,
    pub facts: &'a KernelFacts,
    /// Whether the pinned maps of the cgroup slots carry on from a previous agent.
    pub slots_continued: bool,
}

pub trait Family: Sync {
    /// The family's name: the `probe` label, the log, `/readyz`.
    fn name(&self) -> &'static str;

    /// The programs it attaches with this config on this kernel.
    fn programs(&self, config: &Config, facts: &KernelFacts) -> Vec<&'static str>;

    /// Which implementation it runs on this kernel, and why when it is a fallback: for the log,
    /// `kernsight_probe_info` and `kernsight check`.
    fn implementation(&self, _facts: &KernelFacts, _config: &Config) -> Implementation {
        Implementation::standard("standard")
    }

    fn enabled(&self, config: &Config) -> bool;

    /// Turns the family on or off in `config` (e.g. `advise` runs only the families it reads).
    fn set_enabled(&self, config: &mut Config, on: bool);

    /// Why the family cannot run on this kernel or with these privileges, if it cannot: the
    /// missing BTF member, tracepoint field, hierarchy or capability, in one line.
    fn unsupported(&self, _facts: &KernelFacts, _config: &Config) -> Option<String> {
        None
    }

    /// Sets the family's globals on the loader.
    fn configure<'a>(&self, _loader: &mut EbpfLoader<'a>, _facts: &'a KernelFacts, _config: &Config) {}

    /// Every map of the object that only this family uses: created at their least size (and
    /// not pinned) when the family does not run (`bpf::budget`).
    fn maps(&self) -> &'static [&'static str] {
        &[]
    }

    /// The bounds (max_entries) of its maps that the configuration sets; the others keep the
    /// object's. `bpf::budget` plans their memory and the loader applies them.
    fn map_entries(&self, _config: &Config) -> Vec<(&'static str, u32)> {
        Vec::new()
    }

    /// Its maps that this configuration does not use (e.g. the latency hash with latency off):
    /// created at their least size and not pinned, so that they cost nothing.
    fn idle_maps(&self, _config: &Config) -> Vec<&'static str> {
        Vec::new()
    }

    /// Maps whose contents outlive the agent (pinned in bpffs).
    fn pinned_maps(&self) -> &'static [&'static str] {
        &[]
    }

    /// Bounded kernel resources whose exhaustion the kernel side counts: (name, `map_full` slot).
    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[]
    }

    /// Prepares the family's maps, loads and attaches its programs.
    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>>;
}

/// An attached family's state: its maps, held for reading and recycling.
pub trait Attached: Any + Send {
    /// Set when the family attached only partly and counts as failed (e.g. no interface took
    /// the XDP program), while its state stays for what it can still report.
    fn failure(&self) -> Option<String> {
        None
    }

    /// The programs it attached, where they are not those `Family::programs` expected (it fell
    /// back to others).
    fn programs(&self) -> Option<Vec<&'static str>> {
        None
    }

    /// (map, entries in use, bound) of each bounded map.
    fn map_rows(&self) -> Vec<MapRow> {
        Vec::new()
    }

    /// Removes the entries of cgroups gone for at least `grace` (`gone_for` answers how long,
    /// `None` while the cgroup exists); returns how many were removed.
    fn recycle(&mut self, _gone_for: &mut dyn FnMut(u64) -> Option<Duration>, _grace: Duration) -> usize {
        0
    }

    /// The family's event ring, taken once by its consumer.
    fn take_events(&mut self) -> Option<EventRing> {
        None
    }

    fn as_any(&self) -> &dyn Any;

    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// `as_any` and `as_any_mut` of an `Attached` type.
macro_rules! attached_any {
    () => {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    };
}
pub(crate) use attached_any;
