//! Raw-syscall socket workloads for forked children (no allocation, async-signal-safe calls):
//! UDP, ICMP echo on a raw socket, TCP.

use std::net::Ipv4Addr;

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

/// A blocking connect that gives up after `retries` SYN retransmissions (`TCP_SYNCNT`): the
/// socket, or -errno.
pub fn tcp_connect_with_syn_retries(addr: Ipv4Addr, port: u16, retries: i32) -> i32 {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return -1;
        }
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, (&raw const retries).cast(), 4);
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

/// Brings the loopback interface of the calling thread's network namespace up.
pub fn loopback_up() -> bool {
    // SAFETY: an ifreq filled by the kernel, then written back with IFF_UP added.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
        let up = libc::ioctl(socket, libc::SIOCGIFFLAGS as _, &mut request) == 0 && {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(socket, libc::SIOCSIFFLAGS as _, &request) == 0
        };
        libc::close(socket);
        up
    }
}
