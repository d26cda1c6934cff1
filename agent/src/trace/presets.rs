//! Typed traces over tracepoints: `tcp`, `drop`, `cap`, `signal`, `oom` are tracepoints with
//! chosen columns and a few fields made readable (addresses, capability and signal names); and
//! `escape`, the syscalls of the escape vectors, each with its vector.

use std::net::IpAddr;

use crate::kernel::value::{Event, Kind, Name, Value};

pub struct Preset {
    pub name: &'static str,
    pub category: &'static str,
    pub event: &'static str,
    /// Columns after time, pid, comm, container and pod; the last one holds free text.
    pub columns: &'static [&'static str],
    /// Fields the preset adds to each event.
    pub added: &'static [(&'static str, Kind)],
    pub adjust: fn(&mut Event),
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tcp",
        category: "sock",
        event: "inet_sock_set_state",
        columns: &["protocol", "src", "dst", "oldstate", "newstate"],
        added: &[("src", Kind::Text), ("dst", Kind::Text)],
        adjust: tcp_addresses,
    },
    Preset {
        name: "drop",
        category: "skb",
        event: "kfree_skb",
        columns: &["protocol", "location", "reason"],
        added: &[],
        adjust: |_| {},
    },
    Preset {
        name: "cap",
        category: "capability",
        event: "cap_capable",
        columns: &["cap", "ret", "capability"],
        added: &[("capability", Kind::Text)],
        adjust: capability_name,
    },
    Preset {
        name: "signal",
        category: "signal",
        event: "signal_generate",
        columns: &["args.pid", "args.comm", "result", "signal"],
        added: &[("signal", Kind::Text)],
        adjust: signal_name,
    },
    Preset {
        name: "oom",
        category: "oom",
        event: "mark_victim",
        columns: &["args.pid", "total_vm", "anon_rss", "file_rss", "oom_score_adj", "args.comm"],
        added: &[],
        adjust: |_| {},
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The syscalls `trace escape` follows: those of the escape vectors but `connect` (the trace
/// does not copy socket addresses: the metric's `runtime_socket` has no trace), and `pivot_root`
/// and `chroot`, which only tell a runtime's setup apart in the agent.
pub fn escape_syscalls() -> impl Iterator<Item = u32> {
    use kernsight_common::escape::{CANDIDATES, nr};
    CANDIDATES.into_iter().filter(|&n| n != nr::PIVOT_ROOT && n != nr::CHROOT && n != nr::CONNECT)
}

/// Adds `vector`: the escape vector of the call, as the agent's metric names it, from the
/// syscall and the arguments its registers hold (`-` when they make it harmless: a FIFO,
/// PTRACE_TRACEME, a fork). What user memory decides (mount's file system) is not read here.
pub fn escape_vector(event: &mut Event) {
    use kernsight_common::escape::{self as esc, Registers, detail, from_registers, vector};
    let Some(nr) = event
        .get("syscall")
        .and_then(|s| match s {
            Value::Str(name) => name.parse::<syscalls::Sysno>().ok(),
            _ => None,
        })
        .map(|sysno| sysno.id() as u32)
    else {
        return;
    };
    let args = match event.get("args") {
        Some(Value::Str(text)) => register_values(text),
        _ => [0; 4],
    };
    let label = match from_registers(nr, args) {
        Registers::Detail(detail) => vector(nr, detail).0,
        // An open for writing (openat2's flags are not copied) of a host-control file, by the
        // path the trace copied.
        Registers::UserMemory if [esc::nr::OPEN, esc::nr::OPENAT, esc::nr::OPENAT2].contains(&nr) => {
            let flags = match nr {
                esc::nr::OPEN => args[1],
                esc::nr::OPENAT => args[2],
                _ => esc::OPEN_FOR_WRITING,
            };
            match event.get("path") {
                Some(Value::Str(path)) if flags & esc::OPEN_FOR_WRITING != 0 && host_file(path) => {
                    vector(nr, detail::NONE).0
                }
                _ => "-",
            }
        }
        Registers::UserMemory => vector(nr, detail::NONE).0,
        Registers::NotAVector => "-",
    };
    event.push(&Name::from("vector"), Value::text(label));
}

/// Whether `path` names a host-control file (`kernsight_common::escape::HOST_FILES`).
fn host_file(path: &str) -> bool {
    use kernsight_common::escape::{HOST_FILES, PATH_BYTES, last_component};
    let bytes = path.as_bytes();
    let mut buf = [0u8; PATH_BYTES];
    let tail = &bytes[bytes.len().saturating_sub(PATH_BYTES - 1)..];
    buf[..tail.len()].copy_from_slice(tail);
    last_component(&buf, tail.len(), &HOST_FILES).is_some()
}

/// The first four arguments of a described call (`syscall_args::describe`: numbers in decimal
/// or `0x` hex, `AT_FDCWD`, quoted paths that may hold commas); 0 for what is not a number.
fn register_values(text: &str) -> [u64; 4] {
    let mut values = [0u64; 4];
    let (mut index, mut quoted, mut escaped, mut start) = (0, false, false, 0);
    let mut finish = |index: usize, piece: &str| {
        if let Some(slot) = values.get_mut(index) {
            let piece = piece.trim();
            *slot = match piece.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).unwrap_or(0),
                None if piece == "AT_FDCWD" => -100i64 as u64,
                None => piece.parse().unwrap_or(0),
            };
        }
    };
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                finish(index, &text[start..at]);
                index += 1;
                start = at + 1;
            }
            _ => {}
        }
    }
    finish(index, &text[start..]);
    values
}

fn number(event: &Event, field: &str) -> Option<i128> {
    event.get(field).and_then(Value::as_i128)
}

fn bytes(event: &Event, field: &str) -> Vec<u8> {
    match event.get(field) {
        Some(Value::List(items)) => items.iter().filter_map(Value::as_i128).map(|b| b as u8).collect(),
        _ => Vec::new(),
    }
}

/// `src` and `dst` as `address:port`, from the v4 or v6 fields as `family` says.
fn tcp_addresses(event: &mut Event) {
    let v6 = matches!(event.get("family"), Some(Value::Str(f)) if &**f == "AF_INET6");
    let address = |event: &Event, v4: &str, v6_field: &str| -> String {
        let ip = if v6 {
            <[u8; 16]>::try_from(bytes(event, v6_field)).ok().map(IpAddr::from)
        } else {
            <[u8; 4]>::try_from(bytes(event, v4)).ok().map(IpAddr::from)
        };
        ip.map_or_else(|| "?".to_owned(), |ip| ip.to_string())
    };
    let src = format!("{}:{}", address(event, "saddr", "saddr_v6"), number(event, "sport").unwrap_or(0));
    let dst = format!("{}:{}", address(event, "daddr", "daddr_v6"), number(event, "dport").unwrap_or(0));
    event.push(&Name::from("src"), Value::text(&src));
    event.push(&Name::from("dst"), Value::text(&dst));
}

fn capability_name(event: &mut Event) {
    let cap = number(event, "cap").unwrap_or(-1);
    let name = u32::try_from(cap).map_or_else(
        |_| format!("capability {cap}"),
        |cap| crate::kernel::names::capability_name(cap).into_owned(),
    );
    event.push(&Name::from("capability"), Value::text(&name));
}

fn signal_name(event: &mut Event) {
    let sig = number(event, "sig").unwrap_or(0);
    let name = i32::try_from(sig)
        .ok()
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .map_or_else(|| format!("signal {sig}"), |s| s.as_str().to_owned());
    event.push(&Name::from("signal"), Value::text(&name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_fields_readable() {
        let mut event = Event::default();
        event.push(&"family".into(), Value::Str("AF_INET".into()));
        event.push(&"sport".into(), Value::UInt(8080));
        event.push(&"dport".into(), Value::UInt(40000));
        event.push(&"saddr".into(), Value::List([127, 0, 0, 1].map(Value::UInt).to_vec()));
        event.push(&"daddr".into(), Value::List([10, 1, 2, 3].map(Value::UInt).to_vec()));
        tcp_addresses(&mut event);
        assert_eq!(event.get("src"), Some(&Value::Str("127.0.0.1:8080".into())));
        assert_eq!(event.get("dst"), Some(&Value::Str("10.1.2.3:40000".into())));
        let mut event = Event::default();
        event.push(&"cap".into(), Value::Int(21));
        event.push(&"sig".into(), Value::Int(9));
        capability_name(&mut event);
        signal_name(&mut event);
        assert_eq!(event.get("capability"), Some(&Value::Str("CAP_SYS_ADMIN".into())));
        assert_eq!(event.get("signal"), Some(&Value::Str("SIGKILL".into())));
    }

    #[test]
    fn escape_calls_get_their_vector_from_the_arguments() {
        let vector_of = |syscall: &str, args: &str| {
            let mut event = Event::default();
            event.push(&"syscall".into(), Value::Str(syscall.into()));
            event.push(&"args".into(), Value::Str(args.into()));
            escape_vector(&mut event);
            match event.get("vector") {
                Some(Value::Str(v)) => v.to_string(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(vector_of("unshare", "0x10000000"), "unshare_user");
        assert_eq!(vector_of("unshare", "0x4000000"), "unshare");
        // A path with a comma and a quote before the mode.
        assert_eq!(vector_of("mknodat", r#"AT_FDCWD, "/tmp/a, \"b", 0x6180, 0x700"#), "mknod_device");
        assert_eq!(vector_of("mknodat", r#"AT_FDCWD, "/tmp/fifo", 4480, 0"#), "-");
        assert_eq!(vector_of("mount", r#""none", "/mnt", 0x7ffd0000, 0, 0"#), "mount");
        assert_eq!(vector_of("ptrace", "0, 0, 0, 0"), "-");
        assert_eq!(vector_of("add_key", "0x4000, 0x4001, 0x4002, 1, 0xfffffffe"), "keyctl");
        assert_eq!(register_values("1, 0x10, AT_FDCWD"), [1, 16, -100i64 as u64, 0]);
        let open = |path: &str, flags: &str| {
            let mut event = Event::default();
            event.push(&"syscall".into(), Value::Str("openat".into()));
            event.push(&"args".into(), Value::text(&format!("AT_FDCWD, {path:?}, {flags}, 0")));
            event.push(&"path".into(), Value::Str(path.into()));
            escape_vector(&mut event);
            event.get("vector").cloned()
        };
        let text = |s: &str| Some(Value::Str(s.into()));
        assert_eq!(open("/proc/sys/kernel/core_pattern", "1"), text("host_file_write"));
        assert_eq!(open("/proc/sys/kernel/core_pattern", "0"), text("-"), "read only");
        assert_eq!(open("/tmp/log", "0x241"), text("-"), "another file");
    }
}
