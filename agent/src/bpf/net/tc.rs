//! Where the TC interface counters go: the configured interfaces (or those of the default
//! routes), each possibly in another network namespace, with `ks_net_tc_ingress` and
//! `ks_net_tc_egress` attached first on each hook, so that they count every frame whatever the
//! programs after them decide.
//!
//! Kernels 6.6+ have tcx: BPF links that run beside other programs and vanish with the agent,
//! leaving nothing to clean up. Older kernels run TC programs as filters of a clsact qdisc: the
//! agent adds the qdisc where there is none and, at exit, detaches its filters and removes the
//! qdisc only if it added it and no other filter was attached to it meanwhile.

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttach, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcError},
    },
    util::KernelVersion,
};
use tracing::{info, warn};

use super::{InterfaceAttachment, TC_PROGRAMS};
use crate::{
    config::TcAttachMode,
    kernel::{
        clsact,
        netns::{self, Interface},
    },
};

/// How the programs reach the TC hooks on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcBackend {
    /// tcx links (6.6+).
    Tcx,
    /// Filters of a clsact qdisc, attached over rtnetlink.
    Clsact,
}

impl TcBackend {
    /// The configured one; with "auto", tcx where the kernel is 6.6 or newer (the version aya
    /// itself uses to pick), else clsact.
    pub fn chosen(mode: TcAttachMode) -> Self {
        match mode {
            TcAttachMode::Tcx => Self::Tcx,
            TcAttachMode::Clsact => Self::Clsact,
            TcAttachMode::Auto => match KernelVersion::current() {
                Ok(version) if version >= KernelVersion::new(6, 6, 0) => Self::Tcx,
                _ => Self::Clsact,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        }
    }
}

/// What the agent put on one interface, undone when the family's state is dropped.
#[derive(Debug)]
struct Placed {
    target: Interface,
    ifindex: u32,
    links: Vec<SchedClassifierLink>,
    /// The agent added the clsact qdisc (there was none).
    added_qdisc: bool,
}

/// Everything the TC family attached; dropping it detaches the programs and removes the
/// clsact qdiscs the agent added, each in its interface's namespace.
#[derive(Debug, Default)]
pub struct TcLinks {
    placed: Vec<Placed>,
}

impl Drop for TcLinks {
    fn drop(&mut self) {
        for placed in self.placed.drain(..) {
            let target = placed.target.clone();
            match target.netns_path() {
                None => undo(placed),
                Some(path) => {
                    // `undo` must run in the interface's namespace: a clsact filter is named by
                    // interface index, which another namespace may give to another interface.
                    let mut slot = Some(placed);
                    let entered = netns::run_in(&path, || slot.take().map(undo));
                    if let Err(err) = entered {
                        warn!(
                            interface = target.interface,
                            netns = target.netns,
                            "TC programs left to the kernel: {err}"
                        );
                    }
                    // Not undone there (the namespace is gone, and its interfaces with it): its
                    // links must not be detached here, where the index names another interface.
                    if let Some(left) = slot {
                        std::mem::forget(left.links);
                    }
                }
            }
        }
    }
}

/// Detaches the links of one interface, then removes the qdisc if the agent added it and it
/// holds no other filter.
fn undo(placed: Placed) {
    let Placed { target, ifindex, links, added_qdisc } = placed;
    drop(links);
    if !added_qdisc {
        return;
    }
    match clsact::filter_count(ifindex) {
        Ok(0) => match clsact::delete(ifindex) {
            Ok(()) => info!(
                interface = target.interface,
                netns = target.netns,
                "removed the clsact qdisc kernsight added"
            ),
            Err(err) => warn!(
                interface = target.interface,
                netns = target.netns,
                "cannot remove the clsact qdisc kernsight added: {err}"
            ),
        },
        Ok(others) => info!(
            interface = target.interface,
            netns = target.netns,
            "clsact qdisc kept: kernsight added it, but {others} filter messages of other programs are attached to it now"
        ),
        // The interface went away, and the qdisc with it.
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {}
        Err(err) => warn!(
            interface = target.interface,
            netns = target.netns,
            "clsact qdisc kept: cannot list its filters: {err}"
        ),
    }
}

/// Attaches both programs (loaded) to every target; failures are reported per interface.
pub fn attach_all(
    ingress: &mut SchedClassifier,
    egress: &mut SchedClassifier,
    backend: TcBackend,
    targets: Vec<Interface>,
) -> (Vec<InterfaceAttachment>, TcLinks) {
    let mut attachments: Vec<InterfaceAttachment> = Vec::new();
    let mut links = TcLinks::default();
    for target in targets {
        let taken: Vec<u32> = attachments.iter().filter(|a| a.error.is_none()).map(|a| a.ifindex).collect();
        let attached = match target.netns_path() {
            None => attach_here(ingress, egress, backend, &target, &taken),
            Some(path) => netns::run_in(&path, || attach_here(ingress, egress, backend, &target, &taken))
                .unwrap_or_else(|err| Err((err.to_string(), None))),
        };
        let attachment = match attached {
            Ok(placed) => {
                let ifindex = placed.ifindex;
                links.placed.push(placed);
                InterfaceAttachment { target, ifindex, mode: backend.name(), error: None }
            }
            Err((error, partial)) => {
                // Whatever did attach before the failure is still undone at exit.
                links.placed.extend(partial);
                InterfaceAttachment { target, ifindex: 0, mode: "failed", error: Some(error) }
            }
        };
        attachment.log("TC counters");
        attachments.push(attachment);
    }
    (attachments, links)
}

type AttachResult = Result<Placed, (String, Option<Placed>)>;

/// Removes kernsight's filters left on an existing clsact qdisc. Unlike tcx links, a clsact
/// filter outlives the process that attached it: an agent killed with SIGKILL leaves its
/// filters counting into the pinned map, and the next agent's would count every frame again.
fn remove_stale_filters(ifindex: u32, target: &Interface) {
    for (name, hook) in [(TC_PROGRAMS[0], TcAttachType::Ingress), (TC_PROGRAMS[1], TcAttachType::Egress)] {
        match tc::qdisc_detach_program(ifindex, hook.into(), name) {
            Ok(()) => warn!(
                interface = target.interface,
                netns = target.netns,
                "removed a {name} filter left by an earlier kernsight (killed before it could detach)"
            ),
            Err(TcError::IoError(err)) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => warn!(
                interface = target.interface,
                netns = target.netns,
                "cannot look for {name} filters left by an earlier kernsight: {err}"
            ),
        }
    }
}

/// Attaches in the calling thread's namespace: the qdisc first where needed, then ingress and
/// egress.
fn attach_here(
    ingress: &mut SchedClassifier,
    egress: &mut SchedClassifier,
    backend: TcBackend,
    target: &Interface,
    taken: &[u32],
) -> AttachResult {
    let interface = &target.interface;
    let name = std::ffi::CString::new(interface.as_str())
        .map_err(|_| (format!("{interface:?} contains a NUL byte"), None))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err((
            format!("no interface {interface} in this network namespace (`ip link` lists them)"),
            None,
        ));
    }
    if taken.contains(&ifindex) {
        // Counters are keyed by interface index: the two interfaces would be summed.
        return Err((
            format!(
                "interface index {ifindex} is already watched in another namespace (counters are keyed by index): watch one of the two"
            ),
            None,
        ));
    }
    let added_qdisc = match backend {
        TcBackend::Tcx => false,
        TcBackend::Clsact => match tc::qdisc_add_clsact(ifindex) {
            Ok(()) => true,
            Err(TcError::NetlinkError(err)) if err.raw_os_error() == Some(libc::EEXIST) => {
                remove_stale_filters(ifindex, target);
                false
            }
            Err(err) => return Err((format!("cannot add a clsact qdisc to {interface}: {err}"), None)),
        },
    };
    let mut placed = Placed { target: target.clone(), ifindex, links: Vec::new(), added_qdisc };
    for (program, hook) in [(ingress, TcAttachType::Ingress), (egress, TcAttachType::Egress)] {
        let attach = match backend {
            TcBackend::Tcx => TcAttach::Tcx { attach_type: hook, order: LinkOrder::first() },
            // With no priority given the kernel picks one ahead of the filters already there.
            TcBackend::Clsact => TcAttach::Netlink { parent: hook.into(), options: NlOptions::default() },
        };
        let link = program.attach(ifindex, attach).and_then(|id| program.take_link(id));
        match link {
            Ok(link) => placed.links.push(link),
            Err(err) => {
                let why =
                    format!("cannot attach the {hook:?} program to {interface} ({}): {err}", backend.name());
                return Err((why, Some(placed)));
            }
        }
    }
    Ok(placed)
}
