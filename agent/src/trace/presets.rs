//! Typed traces over tracepoints: `tcp`, `drop`, `cap`, `signal`, `oom` are tracepoints with
//! chosen columns and a few fields made readable (addresses, capability and signal names).

use std::{net::IpAddr, sync::Arc};

use crate::kernel::value::{Event, Kind, Value};

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
    let v6 = matches!(event.get("family"), Some(Value::Str(f)) if f == "AF_INET6");
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
    event.push(&Arc::from("src"), Value::Str(src));
    event.push(&Arc::from("dst"), Value::Str(dst));
}

fn capability_name(event: &mut Event) {
    let cap = number(event, "cap").unwrap_or(-1);
    let name = u32::try_from(cap).map_or_else(
        |_| format!("capability {cap}"),
        |cap| crate::kernel::names::capability_name(cap).into_owned(),
    );
    event.push(&Arc::from("capability"), Value::Str(name));
}

fn signal_name(event: &mut Event) {
    let sig = number(event, "sig").unwrap_or(0);
    let name = i32::try_from(sig)
        .ok()
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .map_or_else(|| format!("signal {sig}"), |s| s.as_str().to_owned());
    event.push(&Arc::from("signal"), Value::Str(name));
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
}
