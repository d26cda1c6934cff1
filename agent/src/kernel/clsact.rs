//! The two rtnetlink requests aya does not make for the clsact qdisc: whether filters other
//! than kernsight's are attached to it, and removing it. The agent removes a clsact qdisc only
//! when it added it and nothing else has been attached to it since (deleting the qdisc would
//! delete those filters too). Requests go to the calling thread's network namespace.

use std::{io, mem::size_of};

/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent, and the major of its handle.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_MIN_INGRESS: u32 = 0xfff2;
const TC_H_MIN_EGRESS: u32 = 0xfff3;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: the handle tc gives the clsact qdisc (`ffff:`).
const CLSACT_HANDLE: u32 = TC_H_CLSACT & 0xffff_0000;

/// `struct tcmsg` of `linux/rtnetlink.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcMsg {
    family: u8,
    _pad1: u8,
    _pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
struct Request {
    header: libc::nlmsghdr,
    tc: TcMsg,
}

/// How many filters the clsact qdisc of `ifindex` holds on its ingress and egress hooks.
pub fn filter_count(ifindex: u32) -> io::Result<usize> {
    let mut total = 0;
    for minor in [TC_H_MIN_INGRESS, TC_H_MIN_EGRESS] {
        let parent = (TC_H_CLSACT & 0xffff_0000) | minor;
        total += request(
            libc::RTM_GETTFILTER,
            libc::NLM_F_DUMP as u16,
            TcMsg {
                family: libc::AF_UNSPEC as u8,
                _pad1: 0,
                _pad2: 0,
                ifindex: ifindex as i32,
                handle: 0,
                parent,
                info: 0,
            },
        )?;
    }
    Ok(total)
}

/// Deletes the clsact qdisc of `ifindex` (and with it every filter attached to it).
pub fn delete(ifindex: u32) -> io::Result<()> {
    request(
        libc::RTM_DELQDISC,
        libc::NLM_F_ACK as u16,
        TcMsg {
            family: libc::AF_UNSPEC as u8,
            _pad1: 0,
            _pad2: 0,
            ifindex: ifindex as i32,
            handle: CLSACT_HANDLE,
            parent: TC_H_CLSACT,
            info: 0,
        },
    )
    .map(drop)
}

/// Sends one request and reads the answer: the number of messages other than the final
/// `NLMSG_DONE` or acknowledgement (the filters of a dump), or the error the kernel answered.
fn request(kind: u16, flags: u16, tc: TcMsg) -> io::Result<usize> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by socket(2), owned by nothing else.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let message = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: kind,
            nlmsg_flags: libc::NLM_F_REQUEST as u16 | flags,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        tc,
    };
    // SAFETY: sends the bytes of a repr(C) struct of plain integers.
    let sent = unsafe { libc::send(raw, (&raw const message).cast(), size_of::<Request>(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buffer = vec![0u8; 64 * 1024];
    let mut messages = 0;
    loop {
        // SAFETY: receives into an owned buffer of its stated length.
        let received = unsafe { libc::recv(raw, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buffer[..received as usize];
        if rest.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "rtnetlink closed without an answer"));
        }
        while rest.len() >= size_of::<libc::nlmsghdr>() {
            let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if length < size_of::<libc::nlmsghdr>() || length > rest.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated rtnetlink message"));
            }
            match i32::from(kind) {
                libc::NLMSG_DONE => return Ok(messages),
                libc::NLMSG_ERROR => {
                    let at = size_of::<libc::nlmsghdr>();
                    let code = rest
                        .get(at..at + 4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink error"))?;
                    return if code == 0 { Ok(messages) } else { Err(io::Error::from_raw_os_error(-code)) };
                }
                _ => messages += 1,
            }
            // Messages are 4-byte aligned.
            let advance = (length + 3) & !3;
            rest = rest.get(advance..).unwrap_or_default();
        }
    }
}
