//! The route a namespace's main table picks for a destination: longest prefix, then lowest
//! metric, from `/proc/PID/net/route` and `ipv6_route` (policy routing rules are not read).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub interface: String,
    /// The next hop, for routes through a gateway.
    pub gateway: Option<IpAddr>,
    /// The route's prefix, `10.0.0.0/24`.
    pub prefix: String,
}

/// One row: (prefix address, prefix length, gateway, metric, flags, interface).
struct Row {
    network: IpAddr,
    length: u32,
    gateway: IpAddr,
    metric: u32,
    flags: u32,
    interface: String,
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses as the kernel's
/// 32-bit words in hexadecimal (network byte order read as a native integer).
fn ipv4_rows(text: &str) -> Vec<Row> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Row {
                interface: (*f.first()?).to_owned(),
                network: IpAddr::V4(word(f.get(1)?)?),
                gateway: IpAddr::V4(word(f.get(2)?)?),
                flags: u32::from_str_radix(f.get(3)?, 16).ok()?,
                metric: f.get(6)?.parse().ok()?,
                length: u32::from(word(f.get(7)?)?).count_ones(),
            })
        })
        .collect()
}

/// `DEST DEST_LEN SRC SRC_LEN GATEWAY METRIC REFCNT USE FLAGS IFACE`, all hexadecimal.
fn ipv6_rows(text: &str) -> Vec<Row> {
    let address = |h: &str| u128::from_str_radix(h, 16).ok().map(|v| IpAddr::V6(Ipv6Addr::from(v)));
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Row {
                network: address(f.first()?)?,
                length: u32::from_str_radix(f.get(1)?, 16).ok()?,
                gateway: address(f.get(4)?)?,
                metric: u32::from_str_radix(f.get(5)?, 16).ok()?,
                flags: u32::from_str_radix(f.get(8)?, 16).ok()?,
                interface: (*f.get(9)?).to_owned(),
            })
        })
        .collect()
}

fn contains(network: IpAddr, length: u32, address: IpAddr) -> bool {
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) if length <= 32 => {
            let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if length <= 128 => {
            let mask = u128::MAX.checked_shl(128 - length).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The route to `destination` in the tables' text (`route` for IPv4, `ipv6_route` for IPv6);
/// `None`: no route (the connect fails with ENETUNREACH). Unreachable and blackhole routes
/// (IPv6's `lo` rows without RTF_UP) do not count.
pub fn lookup(ipv4_table: &str, ipv6_table: &str, destination: IpAddr) -> Option<Route> {
    let rows = if destination.is_ipv4() { ipv4_rows(ipv4_table) } else { ipv6_rows(ipv6_table) };
    let best = rows
        .into_iter()
        .filter(|r| r.flags & RTF_UP != 0 && contains(r.network, r.length, destination))
        .min_by_key(|r| (std::cmp::Reverse(r.length), r.metric))?;
    Some(Route {
        gateway: (best.flags & RTF_GATEWAY != 0).then_some(best.gateway),
        prefix: format!("{}/{}", best.network, best.length),
        interface: best.interface,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
net1\t0000000A\t00000000\t0001\t0\t0\t50\t00FFFFFF\t0\t0\t0
down\t0063000A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn longest_prefix_then_lowest_metric() {
        // 10.0.0.7: the /24 beats the default route, net1's metric 50 beats eth0's 100.
        let on_link = lookup(ROUTE, "", "10.0.0.7".parse().unwrap()).unwrap();
        assert_eq!(on_link, Route { interface: "net1".into(), gateway: None, prefix: "10.0.0.0/24".into() });
        // 10.99.0.1: the /24 that matches is down: the default route through 10.0.0.1.
        let away = lookup(ROUTE, "", "10.99.0.1".parse().unwrap()).unwrap();
        assert_eq!(away.gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(away.prefix, "0.0.0.0/0");
        assert_eq!(lookup("", "", "10.0.0.7".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_routes() {
        let table = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let route = lookup("", table, "fd00::7".parse().unwrap()).unwrap();
        assert_eq!((route.interface.as_str(), route.prefix.as_str()), ("eth0", "fd00::/64"));
        assert_eq!(
            lookup("", table, "2001:db8::1".parse().unwrap()),
            None,
            "the unreachable default is no route"
        );
    }
}
