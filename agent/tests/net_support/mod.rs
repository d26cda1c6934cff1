//! Network test fixtures: network namespaces and veth pairs the test creates (removed on drop),
//! and raw-syscall workloads (UDP, ICMP echo, TCP) that run in a forked child placed in a test
//! cgroup and, with `setns`, in a test namespace.
#![allow(dead_code)] // each test binary uses its own subset

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

/// Whether `program args...` runs and succeeds.
pub fn have_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
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
        let (a, b) = (Netns::create(), Netns::create());
        let (a_if, b_if) = (unique("ksa"), unique("ksb"));
        sh(
            "ip",
            &[
                "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
                &b.name,
            ],
        );
        a.ip(&["addr", "add", "10.99.0.1/24", "dev", &a_if]);
        b.ip(&["addr", "add", "10.99.0.2/24", "dev", &b_if]);
        a.ip(&["link", "set", &a_if, "up"]);
        b.ip(&["link", "set", &b_if, "up"]);
        Self { a, b, a_if, b_if }
    }

    /// The `network.xdp_interfaces` entry of `b_if`.
    pub fn b_xdp_entry(&self) -> String {
        format!("{}:{}", self.b.name, self.b_if)
    }
}

/// Three namespaces: `a` (10.99.0.1) and `b` (10.99.0.2) each joined by a veth pair to a bridge
/// in `switch`, whose ports are `port_a` and `port_b`: traffic between a and b crosses the
/// switch namespace without any socket of its own.
pub struct Bridged {
    pub a: Netns,
    pub b: Netns,
    pub switch: Netns,
    pub port_a: String,
    pub port_b: String,
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
        let port_b = ports.pop().unwrap();
        let port_a = ports.pop().unwrap();
        Self { a, b, switch, port_a, port_b }
    }
}

/// An open namespace file, to `setns` into from a forked child.
pub struct NsFile(CString);

impl NsFile {
    pub fn of(netns: &Netns) -> Self {
        Self(CString::new(netns.path()).unwrap())
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

/// Forks a child that joins the cgroup at `procs` (its `cgroup.procs`), runs `work` and exits
/// with its result; returns the exit code. The child makes raw syscalls only.
pub fn run_in_cgroup(procs: &std::path::Path, work: impl FnOnce() -> i32) -> i32 {
    let procs = CString::new(procs.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the child calls only async-signal-safe functions and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(101);
            }
            libc::close(fd);
            libc::_exit(work());
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status), "workload did not exit normally");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, 101, "the workload could not join its cgroup");
        code
    }
}

pub fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    }
}

/// Sets a 2-second receive timeout on `fd`.
pub fn recv_timeout(fd: i32) {
    let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
}

/// A UDP socket bound to `addr:port` in the current namespace; -1 on failure.
pub fn udp_bound(addr: Ipv4Addr, port: u16) -> i32 {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let sa = sockaddr(addr, port);
        if fd < 0 || libc::bind(fd, (&raw const sa).cast(), size_of::<libc::sockaddr_in>() as u32) != 0 {
            return -1;
        }
        recv_timeout(fd);
        fd
    }
}

/// Sends `count` datagrams of `payload` bytes from `fd` to `to:port`; how many went out.
pub fn udp_send(fd: i32, to: Ipv4Addr, port: u16, count: usize, payload: usize) -> usize {
    let buffer = [0x5au8; 1400];
    let sa = sockaddr(to, port);
    (0..count)
        .filter(|_| unsafe {
            libc::sendto(
                fd,
                buffer.as_ptr().cast(),
                payload.min(buffer.len()),
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ) == payload as isize
        })
        .count()
}

/// Receives up to `count` datagrams (2 s timeout each); how many arrived.
pub fn udp_receive(fd: i32, count: usize) -> usize {
    let mut buffer = [0u8; 2048];
    let mut received = 0;
    while received < count {
        if unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) } < 0 {
            break;
        }
        received += 1;
    }
    received
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word =
            if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { u16::from(pair[0]) << 8 };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests of `payload` data bytes to `to` on a raw socket and waits
/// for each reply; returns the number of replies (raw syscalls, no allocation).
pub fn ping(to: Ipv4Addr, count: usize, payload: usize) -> usize {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return 0;
        }
        recv_timeout(fd);
        let sa = sockaddr(to, 0);
        let identifier = (libc::getpid() as u16).to_be_bytes();
        let mut replies = 0;
        for sequence in 0..count as u16 {
            let mut packet = [0u8; 8 + 1400];
            let length = 8 + payload.min(1400);
            packet[0] = 8; // echo request
            packet[4..6].copy_from_slice(&identifier);
            packet[6..8].copy_from_slice(&sequence.to_be_bytes());
            let sum = checksum(&packet[..length]);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                length,
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            if sent != length as isize {
                break;
            }
            // The reply comes with its IP header: 20 bytes, then type 0 and our identifier.
            let mut reply = [0u8; 2048];
            loop {
                let got = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
                if got < 0 {
                    libc::close(fd);
                    return replies;
                }
                if got >= 28
                    && reply[20] == 0
                    && reply[24..26] == identifier
                    && reply[26..28] == sequence.to_be_bytes()
                {
                    replies += 1;
                    break;
                }
            }
        }
        libc::close(fd);
        replies
    }
}

/// A TCP listener on `addr:port` in the current namespace; -1 on failure.
pub fn tcp_listen(addr: Ipv4Addr, port: u16) -> i32 {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let one: i32 = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4);
        let sa = sockaddr(addr, port);
        if fd < 0
            || libc::bind(fd, (&raw const sa).cast(), size_of::<libc::sockaddr_in>() as u32) != 0
            || libc::listen(fd, 16) != 0
        {
            return -1;
        }
        fd
    }
}

/// A blocking connect to `addr:port`: the socket, or -errno.
pub fn tcp_connect(addr: Ipv4Addr, port: u16) -> i32 {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return -1;
        }
        let sa = sockaddr(addr, port);
        if libc::connect(fd, (&raw const sa).cast(), size_of::<libc::sockaddr_in>() as u32) != 0 {
            let errno = *libc::__errno_location();
            libc::close(fd);
            return -errno;
        }
        fd
    }
}

/// Writes `total` bytes to `fd`; how many went.
pub fn tcp_write(fd: i32, total: usize) -> usize {
    let buffer = [0x33u8; 16 * 1024];
    let mut written = 0;
    while written < total {
        let n = unsafe { libc::write(fd, buffer.as_ptr().cast(), buffer.len().min(total - written)) };
        if n <= 0 {
            break;
        }
        written += n as usize;
    }
    written
}

/// Reads from `fd` until end of stream; how many bytes came.
pub fn tcp_drain(fd: i32) -> usize {
    let mut buffer = [0u8; 16 * 1024];
    let mut read = 0;
    loop {
        let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            return read;
        }
        read += n as usize;
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

/// Sends each frame as is (Ethernet header included) out of `interface` in namespace `netns`,
/// through an AF_PACKET socket on a thread that enters the namespace; returns how many went.
pub fn send_frames(netns: &Netns, interface: &str, frames: &[Vec<u8>]) -> usize {
    let path = netns.path();
    let name = CString::new(interface).unwrap();
    std::thread::scope(|scope| {
        scope
            .spawn(|| unsafe {
                let ns = std::fs::File::open(&path).expect("open netns");
                assert_eq!(
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET),
                    0,
                    "setns {path}"
                );
                let ifindex = libc::if_nametoindex(name.as_ptr());
                assert_ne!(ifindex, 0, "no {interface} in {path}");
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
                let mut address: libc::sockaddr_ll = std::mem::zeroed();
                address.sll_family = libc::AF_PACKET as u16;
                address.sll_ifindex = ifindex as i32;
                address.sll_halen = 6;
                let sent = frames
                    .iter()
                    .filter(|frame| {
                        libc::sendto(
                            fd,
                            frame.as_ptr().cast(),
                            frame.len(),
                            0,
                            (&raw const address).cast(),
                            size_of::<libc::sockaddr_ll>() as u32,
                        ) == frame.len() as isize
                    })
                    .count();
                libc::close(fd);
                sent
            })
            .join()
            .expect("sender thread")
    })
}

/// An Ethernet header to the broadcast address with `ethertype`.
pub fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// An IPv4 header: version/IHL byte, total length and protocol as given, the rest plausible
/// (10.99.0.1 → 10.99.0.2, checksum left 0: XDP runs before the stack checks it).
pub fn ipv4_header(version_ihl: u8, total_len: u16, protocol: u8, fragment: u16) -> Vec<u8> {
    let mut header = vec![version_ihl, 0];
    header.extend_from_slice(&total_len.to_be_bytes());
    header.extend_from_slice(&[0, 1]);
    header.extend_from_slice(&fragment.to_be_bytes());
    header.extend_from_slice(&[64, protocol, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2]);
    header
}
