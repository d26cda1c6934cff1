//! Frames crafted byte by byte and sent with an AF_PACKET socket, for the XDP parser tests.

use std::ffi::CString;

use super::Netns;

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
