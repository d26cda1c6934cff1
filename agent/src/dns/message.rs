//! The part of a DNS message (RFC 1035 §4.1) kernsight reads: the header and the first
//! question (and, for `kernsight diagnose`, the addresses an answer gives; it also writes the
//! query). Every read is checked against the bytes captured; a name is followed through at most
//! `MAX_POINTERS` compression pointers, each pointing strictly backwards, and is at most 255
//! bytes: a crafted message is `Malformed`, never a loop, a panic or a read out of bounds.

use std::fmt::Write as _;

const HEADER_LEN: usize = 12;
/// RFC 1035 §2.3.4.
const MAX_NAME_LEN: usize = 255;
const MAX_POINTERS: usize = 16;

/// What a message says, as far as kernsight needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// QR: an answer, not a query.
    pub response: bool,
    pub opcode: u8,
    pub rcode: u8,
    /// TC: the answer did not fit (the client retries over TCP).
    pub truncated: bool,
    pub answers: u16,
    pub qtype: u16,
    /// The question's name in presentation form (`example.com.`), bytes outside `[A-Za-z0-9-_]`
    /// escaped as `\DDD`: it names a tenant's query in a terminal, never a metric label.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a DNS header")]
    Short,
    #[error("no question")]
    NoQuestion,
    #[error("the question's name runs past the message")]
    Truncated,
    #[error("the question's name is longer than 255 bytes")]
    NameTooLong,
    #[error("a compression pointer loops or points forwards")]
    BadPointer,
    #[error("a label of a reserved type")]
    BadLabel,
    /// Set by the matching, not the parser: the workload's side of a UDP exchange sent an
    /// answer or received a query on the client's port.
    #[error("an answer sent to the DNS port, or a query received from it")]
    Direction,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Parses the header and the first question of `bytes` (a UDP payload, or a TCP message after
/// its length prefix).
pub fn parse(bytes: &[u8]) -> Result<Message, Malformed> {
    if bytes.len() < HEADER_LEN {
        return Err(Malformed::Short);
    }
    let id = be16(bytes, 0).ok_or(Malformed::Short)?;
    let flags = be16(bytes, 2).ok_or(Malformed::Short)?;
    let questions = be16(bytes, 4).ok_or(Malformed::Short)?;
    let answers = be16(bytes, 6).ok_or(Malformed::Short)?;
    if questions == 0 {
        return Err(Malformed::NoQuestion);
    }
    let (name, after_name) = read_name(bytes, HEADER_LEN)?;
    let qtype = be16(bytes, after_name).ok_or(Malformed::Truncated)?;
    Ok(Message {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0x000f) as u8,
        answers,
        qtype,
        name,
    })
}

/// The name at `start`, and where the bytes after it (in the message, not after a pointer's
/// target) begin.
fn read_name(bytes: &[u8], start: usize) -> Result<(String, usize), Malformed> {
    let mut name = String::new();
    let mut wire_len = 0usize;
    let mut at = start;
    let mut resume = None;
    let mut pointers = 0;
    loop {
        let len = *bytes.get(at).ok_or(Malformed::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                if name.is_empty() {
                    name.push('.');
                }
                return Ok((name, resume.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = bytes.get(at + 1..at + 1 + usize::from(len)).ok_or(Malformed::Truncated)?;
                wire_len += 1 + label.len();
                if wire_len + 1 > MAX_NAME_LEN {
                    return Err(Malformed::NameTooLong);
                }
                escape_label(&mut name, label);
                name.push('.');
                at += 1 + label.len();
            }
            0xc0 => {
                let target = usize::from(be16(bytes, at).ok_or(Malformed::Truncated)? & 0x3fff);
                pointers += 1;
                // Backwards only (to bytes before this pointer): with the hop limit, no loop.
                if target >= at || pointers > MAX_POINTERS {
                    return Err(Malformed::BadPointer);
                }
                resume.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(Malformed::BadLabel),
        }
    }
}

/// A recursive query (RD set) for `name` (dots between labels, a final dot optional) of type
/// `qtype`: what `kernsight diagnose` sends. `None` for a name DNS cannot carry (an empty
/// label, a label past 63 bytes, past 255 bytes in all).
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&0x0100u16.to_be_bytes());
    bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    let name = name.strip_suffix('.').unwrap_or(name);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.push(0);
    if bytes.len() - HEADER_LEN > MAX_NAME_LEN {
        return None;
    }
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&1u16.to_be_bytes());
    Some(bytes)
}

/// The most answer records read from one message.
const MAX_ANSWERS: usize = 64;

/// The addresses of the A and AAAA records among the answers of `bytes` (other records, such
/// as the CNAMEs before them, are skipped). Checked as `parse` is.
pub fn answer_addresses(bytes: &[u8]) -> Result<Vec<std::net::IpAddr>, Malformed> {
    let questions = be16(bytes, 4).ok_or(Malformed::Short)?;
    let answers = be16(bytes, 6).ok_or(Malformed::Short)?;
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = read_name(bytes, at)?.1 + 4;
    }
    let mut found = Vec::new();
    for _ in 0..usize::from(answers).min(MAX_ANSWERS) {
        let after_name = read_name(bytes, at)?.1;
        let kind = be16(bytes, after_name).ok_or(Malformed::Truncated)?;
        let length = usize::from(be16(bytes, after_name + 8).ok_or(Malformed::Truncated)?);
        let data = bytes.get(after_name + 10..after_name + 10 + length).ok_or(Malformed::Truncated)?;
        match (kind, <[u8; 4]>::try_from(data), <[u8; 16]>::try_from(data)) {
            (1, Ok(v4), _) => found.push(std::net::IpAddr::from(v4)),
            (28, _, Ok(v6)) => found.push(std::net::IpAddr::from(v6)),
            _ => {}
        }
        at = after_name + 10 + length;
    }
    Ok(found)
}

fn escape_label(name: &mut String, label: &[u8]) {
    for &byte in label {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(char::from(byte));
        } else {
            let _ = write!(name, "\\{byte:03}");
        }
    }
}

/// The common query types and their `qtype` label, in the order of `QTYPE_NAMES`; every other
/// value is `other` (a tenant chooses the value: the label set stays bounded).
const QTYPES: [(u16, &str); 14] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (35, "NAPTR"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (255, "ANY"),
    (257, "CAA"),
];

/// Every `qtype` label value: the slots of `qtype_slot`.
pub const QTYPE_NAMES: [&str; QTYPES.len() + 1] = {
    let mut names = ["other"; QTYPES.len() + 1];
    let mut at = 0;
    while at < QTYPES.len() {
        names[at] = QTYPES[at].1;
        at += 1;
    }
    names
};

/// The slot of a query type among `QTYPE_NAMES` (`other` last).
pub fn qtype_slot(qtype: u16) -> usize {
    QTYPES.iter().position(|&(value, _)| value == qtype).unwrap_or(QTYPES.len())
}

/// The `qtype` label of a query type.
pub fn qtype_name(qtype: u16) -> &'static str {
    QTYPE_NAMES[qtype_slot(qtype)]
}

/// Every `rcode` label value (RFC 1035, 2136, 6895): the index is the rcode, `other` last.
pub const RCODE_NAMES: [&str; 12] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET",
    "NOTAUTH", "NOTZONE", "other",
];

/// The slot of a response code among `RCODE_NAMES`: 0 to 10 by name, the rest `other`.
pub fn rcode_slot(rcode: u8) -> usize {
    usize::from(rcode).min(RCODE_NAMES.len() - 1)
}

/// The `rcode` label of a response code.
pub fn rcode_name(rcode: u8) -> &'static str {
    RCODE_NAMES[rcode_slot(rcode)]
}

#[cfg(test)]
mod tests;
