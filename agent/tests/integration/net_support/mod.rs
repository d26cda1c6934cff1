//! Network test fixtures: network namespaces and veth pairs the test creates (removed on drop),
//! and raw-syscall workloads (UDP, ICMP echo, TCP) that run in a forked child placed in a test
//! cgroup and, with `setns`, in a test namespace.

mod frames;
mod sockets;

pub use frames::*;
pub use sockets::*;

use std::{
    ffi::CString,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a command, panicking with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `program` runs at all (`--version`).
pub fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: interface names have 15 bytes at most.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A named network namespace (`ip netns add`), deleted with everything in it on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create() -> Self {
        let name = unique("ksn");
        sh("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        // No IPv6: no router or neighbour solicitations among the frames the tests count.
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        netns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Loads an nftables ruleset (`nft -f -`) inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", unique("ksrules")));
        std::fs::write(&path, ruleset).unwrap();
        let result = std::panic::catch_unwind(|| self.exec(&["nft", "-f", path.to_str().unwrap()]));
        let _ = std::fs::remove_file(&path);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    /// A file under the namespace's `/proc/net` (e.g. "snmp").
    pub fn proc_net(&self, file: &str) -> String {
        self.exec(&["cat", &format!("/proc/net/{file}")])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Two namespaces joined by a veth pair: `a_if` (10.99.0.1/24) in `a`, `b_if` (10.99.0.2/24)
/// in `b`. Dropping the namespaces removes the pair.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
}

pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

impl Link {
    pub fn create() -> Self {
        Self::create_with(&[], &[])
    }

    /// With the interface indexes given (`a_if`'s in `a`, `b_if`'s in `b`).
    pub fn with_indexes(a_index: u32, b_index: u32) -> Self {
        Self::create_with(&["index", &a_index.to_string()], &["index", &b_index.to_string()])
    }

    fn create_with(a_options: &[&str], b_options: &[&str]) -> Self {
        let (a, b) = (Netns::create(), Netns::create());
        let (a_if, b_if) = (unique("ksa"), unique("ksb"));
        let mut args = vec!["link", "add", &a_if];
        args.extend_from_slice(a_options);
        args.extend(["netns", &a.name, "type", "veth", "peer", "name", &b_if]);
        args.extend_from_slice(b_options);
        args.extend(["netns", &b.name]);
        sh("ip", &args);
        a.ip(&["addr", "add", "10.99.0.1/24", "dev", &a_if]);
        b.ip(&["addr", "add", "10.99.0.2/24", "dev", &b_if]);
        a.ip(&["link", "set", &a_if, "up"]);
        b.ip(&["link", "set", &b_if, "up"]);
        Self { a, b, a_if, b_if }
    }

    /// The `network.interfaces` entry of `b_if` (`NETNS:IFNAME`).
    pub fn b_xdp_entry(&self) -> String {
        format!("{}:{}", self.b.name, self.b_if)
    }

    /// The `network.interfaces` entry of `a_if`.
    pub fn a_entry(&self) -> String {
        format!("{}:{}", self.a.name, self.a_if)
    }
}

/// Three namespaces: `a` (10.99.0.1) and `b` (10.99.0.2) each joined by a veth pair to a bridge
/// in `switch`, whose port towards a is `port_a`: traffic between a and b crosses the switch
/// namespace without any socket of its own.
pub struct Bridged {
    pub a: Netns,
    pub b: Netns,
    pub switch: Netns,
    pub port_a: String,
}

impl Bridged {
    pub fn create() -> Self {
        let (a, b, switch) = (Netns::create(), Netns::create(), Netns::create());
        let bridge = unique("ksbr");
        switch.ip(&["link", "add", &bridge, "type", "bridge"]);
        switch.ip(&["link", "set", &bridge, "up"]);
        let mut ports = Vec::new();
        for (end, address) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
            let (port, inside) = (unique("ksp"), unique("ksi"));
            sh(
                "ip",
                &[
                    "link",
                    "add",
                    &port,
                    "netns",
                    &switch.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &inside,
                    "netns",
                    &end.name,
                ],
            );
            switch.ip(&["link", "set", &port, "master", &bridge]);
            switch.ip(&["link", "set", &port, "up"]);
            end.ip(&["addr", "add", address, "dev", &inside]);
            end.ip(&["link", "set", &inside, "up"]);
            ports.push(port);
        }
        let port_a = ports.swap_remove(0);
        Self { a, b, switch, port_a }
    }
}

/// An open namespace file, to `setns` into from a forked child.
pub struct NsFile(CString);

impl NsFile {
    pub fn of(netns: &Netns) -> Self {
        Self(CString::new(netns.path()).unwrap())
    }

    /// The namespace file at `path` (e.g. a thread's `/proc/<pid>/task/<tid>/ns/net`).
    pub fn at(path: &str) -> Self {
        Self(CString::new(path).unwrap())
    }

    /// Runs `work` on a thread that entered the namespace, and returns its result; what it
    /// opens (a listening socket) stays in the namespace.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(self.enter(), "cannot enter network namespace {:?}", self.0);
                work()
            })
            .join()
        })
        .expect("the thread in the namespace panicked")
    }

    /// Enters the namespace (raw syscalls: safe after fork); false on failure.
    pub fn enter(&self) -> bool {
        unsafe {
            let fd = libc::open(self.0.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return false;
            }
            let ok = libc::setns(fd, libc::CLONE_NEWNET) == 0;
            libc::close(fd);
            ok
        }
    }
}

/// A field of the `Tcp:` line of a `/proc/net/snmp` text (e.g. "RetransSegs").
pub fn snmp_tcp(snmp: &str, field: &str) -> Option<u64> {
    netstat_field(snmp, "Tcp:", field)
}

/// A field of a `/proc/net/snmp` or `netstat` section (a names line, then a values line).
pub fn netstat_field(text: &str, section: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(section));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|name| name == field)?;
    values.split_whitespace().nth(index)?.parse().ok()
}
