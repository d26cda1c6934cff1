//! Where the XDP program goes: the configured interfaces (or those of the default routes),
//! each possibly in another network namespace, attached in native mode where the driver
//! supports it and in generic (SKB) mode otherwise.

use std::{ffi::CString, path::PathBuf};

use aya::programs::{Xdp, XdpMode};
use tracing::{error, info};

use crate::kernel::netns;

/// One `network.xdp_interfaces` entry: `IFNAME` or `NETNS:IFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpTarget {
    /// The namespace as configured (a name or a path); empty for the agent's own.
    pub netns: String,
    pub interface: String,
}

impl XdpTarget {
    /// Parses an entry. Interface names cannot contain ':' or '/', so the last ':' splits.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (netns, interface) = match entry.rsplit_once(':') {
            Some((netns, interface)) if !netns.is_empty() => (netns, interface),
            Some(_) => return Err(format!("{entry:?}: empty namespace before ':'")),
            None => ("", entry),
        };
        // The kernel's rules (dev_valid_name): 1 to 15 bytes, no '/', ':' or whitespace.
        let valid = !interface.is_empty()
            && interface.len() < 16
            && interface != "."
            && interface != ".."
            && !interface.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
        if !valid {
            return Err(format!(
                "{entry:?}: {interface:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
            ));
        }
        Ok(Self { netns: netns.to_owned(), interface: interface.to_owned() })
    }

    fn netns_path(&self) -> Option<PathBuf> {
        (!self.netns.is_empty()).then(|| netns::path_of(&self.netns))
    }
}

/// How an interface is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpAttachment {
    pub target: XdpTarget,
    pub ifindex: u32,
    /// "native" or "generic"; "failed" when it could not be attached.
    pub mode: &'static str,
    pub error: Option<String>,
}

/// The targets: the configured ones, or the interfaces of the default routes.
pub fn targets(configured: &[String]) -> Result<Vec<XdpTarget>, String> {
    if configured.is_empty() {
        let interfaces = netns::default_route_interfaces();
        if interfaces.is_empty() {
            return Err(
                "no default route, and network.xdp_interfaces is empty: name the interfaces to watch".into(),
            );
        }
        return Ok(interfaces
            .into_iter()
            .map(|interface| XdpTarget { netns: String::new(), interface })
            .collect());
    }
    configured.iter().map(|entry| XdpTarget::parse(entry)).collect()
}

/// Attaches `program` (loaded) to every target; failures are reported per interface.
pub fn attach_all(program: &mut Xdp, targets: Vec<XdpTarget>) -> Vec<XdpAttachment> {
    let mut attachments: Vec<XdpAttachment> = Vec::new();
    for target in targets {
        let taken: Vec<u32> = attachments.iter().filter(|a| a.error.is_none()).map(|a| a.ifindex).collect();
        let attached = match target.netns_path() {
            None => attach_here(program, &target.interface, &taken),
            Some(path) => netns::run_in(&path, || attach_here(program, &target.interface, &taken))
                .unwrap_or_else(|err| Err(err.to_string())),
        };
        let attachment = match attached {
            Ok((ifindex, mode)) => XdpAttachment { target, ifindex, mode, error: None },
            Err(error) => XdpAttachment { target, ifindex: 0, mode: "failed", error: Some(error) },
        };
        match &attachment.error {
            None => info!(
                interface = attachment.target.interface,
                netns = attachment.target.netns,
                ifindex = attachment.ifindex,
                mode = attachment.mode,
                "XDP attached"
            ),
            Some(why) => error!(
                interface = attachment.target.interface,
                netns = attachment.target.netns,
                "XDP not attached: {why}"
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        assert_eq!(
            XdpTarget::parse("eth0"),
            Ok(XdpTarget { netns: String::new(), interface: "eth0".into() })
        );
        let t = XdpTarget::parse("/proc/42/ns/net:veth1").unwrap();
        assert_eq!((t.netns.as_str(), t.interface.as_str()), ("/proc/42/ns/net", "veth1"));
        assert_eq!(t.netns_path(), Some(PathBuf::from("/proc/42/ns/net")));
        assert_eq!(
            XdpTarget::parse("blue:eth0").unwrap().netns_path(),
            Some(PathBuf::from("/run/netns/blue"))
        );
        for bad in ["", ":eth0", "blue:", "a b", "a/b", "0123456789abcdef", ".", "x:.."] {
            assert!(XdpTarget::parse(bad).is_err(), "{bad:?}");
        }
    }
}
