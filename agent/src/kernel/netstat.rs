//! The kernel's own network counters, read per network namespace: the conntrack table's fill
//! (`/proc/sys/net/netfilter/nf_conntrack_{count,max}`) and statistics, and each interface's drops and errors
//! (`/sys/class/net/*/statistics` in the agent's namespace; `/proc/net/dev` in others, since
//! sysfs shows the namespace it was mounted from).

use std::path::Path;

use super::netns;

/// Drop and error counters of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub interface: String,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// What one namespace's kernel counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceCounters {
    /// (entries, limit); `None` without conntrack in that namespace.
    pub conntrack: Option<(u64, u64)>,
    /// The table's statistics by `event` label (`conntrack::EVENTS`); empty without conntrack.
    pub conntrack_events: std::collections::BTreeMap<&'static str, u64>,
    pub interfaces: Vec<InterfaceCounters>,
}

/// Reads the counters of the namespace `spec` (empty: the agent's own; else a name under
/// /run/netns or a path).
pub fn read(spec: &str) -> Result<NamespaceCounters, netns::NetnsError> {
    if spec.is_empty() {
        return Ok(NamespaceCounters {
            conntrack: read_conntrack(),
            conntrack_events: super::conntrack::read_stats().unwrap_or_default(),
            interfaces: read_sysfs(Path::new("/sys/class/net")),
        });
    }
    netns::run_in(&netns::path_of(spec), || NamespaceCounters {
        conntrack: read_conntrack(),
        conntrack_events: super::conntrack::read_stats().unwrap_or_default(),
        interfaces: parse_proc_net_dev(
            &std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default(),
        ),
    })
}

/// The calling thread's namespace's conntrack count and limit (`/proc/sys/net` follows the
/// namespace of the task that opens it).
fn read_conntrack() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}")).ok()?.trim().parse().ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// `<root>/<interface>/statistics/{rx,tx}_{dropped,errors}`; unreadable counters read 0.
pub fn read_sysfs(root: &Path) -> Vec<InterfaceCounters> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut interfaces: Vec<InterfaceCounters> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let statistics = entry.path().join("statistics");
            let read = |name: &str| -> u64 {
                std::fs::read_to_string(statistics.join(name))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0)
            };
            InterfaceCounters {
                interface: entry.file_name().to_string_lossy().into_owned(),
                rx_dropped: read("rx_dropped"),
                tx_dropped: read("tx_dropped"),
                rx_errors: read("rx_errors"),
                tx_errors: read("tx_errors"),
            }
        })
        .collect();
    interfaces.sort_by(|a, b| a.interface.cmp(&b.interface));
    interfaces
}

/// `/proc/net/dev`: after `name:`, receive bytes packets errs drop fifo frame compressed
/// multicast, then transmit bytes packets errs drop ...
pub fn parse_proc_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let values: Vec<u64> =
                counters.split_whitespace().map(|v| v.parse().ok()).collect::<Option<_>>()?;
            if values.len() < 12 {
                return None;
            }
            Some(InterfaceCounters {
                interface: name.trim().to_owned(),
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_errors: values[10],
                tx_dropped: values[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5000 50 1 2 0 0 0 0 7000 70 3 4 0 0 0 0
broken: 1 2 x
";
        let parsed = parse_proc_net_dev(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[1],
            InterfaceCounters {
                interface: "eth0".into(),
                rx_errors: 1,
                rx_dropped: 2,
                tx_errors: 3,
                tx_dropped: 4
            }
        );
    }

    #[test]
    fn reads_this_hosts_interfaces() {
        let interfaces = read_sysfs(Path::new("/sys/class/net"));
        assert!(interfaces.iter().any(|i| i.interface == "lo"), "{interfaces:?}");
        assert!(read_sysfs(Path::new("/nonexistent")).is_empty());
    }
}
