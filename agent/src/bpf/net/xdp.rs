//! Where the interface counters go: the configured interfaces (or those of the default routes),
//! each possibly in another network namespace (`targets`, for TC and XDP alike); and, with
//! `network.interface_counters = "xdp"`, the XDP program attached there in native mode where
//! the driver supports it and in generic (SKB) mode otherwise.

use std::ffi::CString;

use aya::programs::{Xdp, XdpMode};

use super::InterfaceAttachment;
use crate::kernel::netns::{self, Interface};

/// The targets: the configured ones, or the interfaces of the default routes.
pub fn targets(configured: &[String]) -> Result<Vec<Interface>, String> {
    if configured.is_empty() {
        let interfaces = netns::default_route_interfaces();
        if interfaces.is_empty() {
            return Err(
                "no default route, and network.interfaces is empty: name the interfaces to watch".into()
            );
        }
        return Ok(interfaces
            .into_iter()
            .map(|interface| Interface { netns: String::new(), interface })
            .collect());
    }
    configured.iter().map(|entry| Interface::parse(entry)).collect()
}

/// Attaches `program` (loaded) to every target; failures are reported per interface.
pub fn attach_all(program: &mut Xdp, targets: Vec<Interface>) -> Vec<InterfaceAttachment> {
    let mut attachments: Vec<InterfaceAttachment> = Vec::new();
    for target in targets {
        let taken: Vec<u32> = attachments.iter().filter(|a| a.error.is_none()).map(|a| a.ifindex).collect();
        let attached = match target.netns_path() {
            None => attach_here(program, &target.interface, &taken),
            Some(path) => netns::run_in(&path, || attach_here(program, &target.interface, &taken))
                .unwrap_or_else(|err| Err(err.to_string())),
        };
        let attachment = match attached {
            Ok((ifindex, mode)) => InterfaceAttachment { target, ifindex, mode, error: None },
            Err(error) => InterfaceAttachment { target, ifindex: 0, mode: "failed", error: Some(error) },
        };
        attachment.log("XDP");
        attachments.push(attachment);
    }
    attachments
}

/// Attaches in the calling thread's namespace: native first, generic when the driver has no
/// native XDP.
fn attach_here(program: &mut Xdp, interface: &str, taken: &[u32]) -> Result<(u32, &'static str), String> {
    let name = CString::new(interface).map_err(|_| format!("{interface:?} contains a NUL byte"))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface {interface} in this network namespace (`ip link` lists them)"));
    }
    if taken.contains(&ifindex) {
        // Counters are keyed by interface index: the two interfaces would be summed.
        return Err(format!(
            "interface index {ifindex} is already watched in another namespace (counters are keyed by index): watch one of the two"
        ));
    }
    match program.attach(ifindex, XdpMode::Driver) {
        Ok(_) => Ok((ifindex, "native")),
        Err(native) => match program.attach(ifindex, XdpMode::Skb) {
            Ok(_) => Ok((ifindex, "generic")),
            Err(generic) => Err(format!(
                "cannot attach XDP to {interface}: native mode: {native}; generic mode: {generic} (another XDP program attached?)"
            )),
        },
    }
}
