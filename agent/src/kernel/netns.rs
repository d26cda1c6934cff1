//! Network namespaces other than the agent's own: work that must happen inside one (attaching
//! XDP to an interface there, reading its `/proc/net` files) runs on a short-lived thread that
//! enters the namespace with `setns(2)`; the rest of the agent never leaves its own.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// Where `ip netns add NAME` puts its namespaces.
const NAMED_NAMESPACES: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "cannot open network namespace {path}: {source} (does it exist? `ip netns list` shows the named ones)"
    )]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot enter network namespace {path}: {source} (needs CAP_SYS_ADMIN)")]
    Enter { path: PathBuf, source: std::io::Error },
    #[error("the thread that entered network namespace {0} panicked")]
    Thread(PathBuf),
}

/// An interface, possibly in another network namespace: a `network.interfaces` or
/// `network.namespaces` entry, `IFNAME` or `NETNS:IFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The namespace as configured (a name or a path); empty for the agent's own.
    pub netns: String,
    pub interface: String,
}

impl Interface {
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

    pub fn netns_path(&self) -> Option<PathBuf> {
        (!self.netns.is_empty()).then(|| path_of(&self.netns))
    }
}

/// The path of a namespace given as a name under /run/netns or as a path.
pub fn path_of(spec: &str) -> PathBuf {
    if spec.starts_with('/') { PathBuf::from(spec) } else { Path::new(NAMED_NAMESPACES).join(spec) }
}

/// Runs `work` on a thread inside the network namespace at `path` and returns its result.
pub fn run_in<T: Send>(path: &Path, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open { path: path.to_owned(), source })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on an open namespace file; it changes this thread's namespace only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let source = std::io::Error::last_os_error();
                    return Err(NetnsError::Enter { path: path.to_owned(), source });
                }
                Ok(work())
            })
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Thread(path.to_owned())))
    })
}

/// The interfaces of the default routes of the current thread's namespace (IPv4 and IPv6),
/// from `/proc/thread-self/net/route` and `ipv6_route`, without duplicates.
pub fn default_route_interfaces() -> Vec<String> {
    let read =
        |name: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{name}")).unwrap_or_default();
    let mut interfaces = parse_ipv4_default_routes(&read("route"));
    for interface in parse_ipv6_default_routes(&read("ipv6_route")) {
        if !interfaces.contains(&interface) {
            interfaces.push(interface);
        }
    }
    interfaces
}

/// `Iface Destination Gateway Flags ... Mask ...`: rows with destination and mask 0, route up.
fn parse_ipv4_default_routes(text: &str) -> Vec<String> {
    let mut interfaces = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(destination), Some(flags), Some(mask)) =
            (fields.first(), fields.get(1), fields.get(3), fields.get(7))
        else {
            continue;
        };
        let up = u32::from_str_radix(flags, 16).is_ok_and(|f| f & 1 != 0);
        if *destination == "00000000" && *mask == "00000000" && up && !interfaces.iter().any(|i| i == iface) {
            interfaces.push((*iface).to_owned());
        }
    }
    interfaces
}

/// `dest prefix_len src src_len next_hop metric refcnt use flags iface`: rows for ::/0 that
/// are not the unreachable route on `lo`.
fn parse_ipv6_default_routes(text: &str) -> Vec<String> {
    let mut interfaces = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            continue;
        }
        let (destination, prefix, iface) = (fields[0], fields[1], fields[9]);
        let default = destination.bytes().all(|b| b == b'0') && prefix == "00" && iface != "lo";
        if default && !interfaces.iter().any(|i| i == iface) {
            interfaces.push(iface.to_owned());
        }
    }
    interfaces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        assert_eq!(
            Interface::parse("eth0"),
            Ok(Interface { netns: String::new(), interface: "eth0".into() })
        );
        let t = Interface::parse("/proc/42/ns/net:veth1").unwrap();
        assert_eq!((t.netns.as_str(), t.interface.as_str()), ("/proc/42/ns/net", "veth1"));
        assert_eq!(t.netns_path(), Some(PathBuf::from("/proc/42/ns/net")));
        assert_eq!(
            Interface::parse("blue:eth0").unwrap().netns_path(),
            Some(PathBuf::from("/run/netns/blue"))
        );
        for bad in ["", ":eth0", "blue:", "a b", "a/b", "0123456789abcdef", ".", "x:.."] {
            assert!(Interface::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_routes_of_both_families() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wg0\t00000000\t00000000\t0000\t0\t0\t100\t00000000\t0\t0\t0
";
        assert_eq!(parse_ipv4_default_routes(v4), ["eth0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth1
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
";
        assert_eq!(parse_ipv6_default_routes(v6), ["eth1"]);
        assert!(parse_ipv4_default_routes("garbage\n\u{0}\n").is_empty());
        assert!(parse_ipv6_default_routes("short line").is_empty());
    }

    #[test]
    fn namespace_names_and_paths() {
        assert_eq!(path_of("blue"), Path::new("/run/netns/blue"));
        assert_eq!(path_of("/proc/1/ns/net"), Path::new("/proc/1/ns/net"));
    }
}
