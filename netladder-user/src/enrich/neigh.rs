//! The neighbour tables (ARP for IPv4, neighbour discovery for IPv6) over rtnetlink, as
//! `ip neigh` shows them.

use std::net::IpAddr;

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::route::{rtnl_dump, Dev, Family};

/// One neighbour table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub dev: Dev,
    /// The state as `ip neigh` names it: INCOMPLETE, REACHABLE, STALE, DELAY, PROBE,
    /// FAILED, NOARP, PERMANENT or NONE (a combination prints as 0xNN).
    pub state: String,
    /// The link-layer address, aa:bb:cc:dd:ee:ff, once resolved.
    pub lladdr: Option<String>,
}

/// The IPv4 and IPv6 neighbour entries of the calling thread's network namespace, only
/// those on interface `dev_index` if given.
pub fn neighbours(dev_index: Option<u32>) -> anyhow::Result<Vec<Neighbour>> {
    let mut entries = Vec::new();
    for family in [Family::V4, Family::V6] {
        let mut request = NeighbourMessage::default();
        request.header.family = family.address_family();
        let replies = rtnl_dump(RouteNetlinkMessage::GetNeighbour(request), "neighbour")?;
        entries.extend(replies.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(m)
                if dev_index.is_none_or(|i| i == m.header.ifindex) =>
            {
                neighbour(m)
            }
            _ => None,
        }));
    }
    Ok(entries)
}

/// The entry, if it names an IP address.
fn neighbour(m: &NeighbourMessage) -> Option<Neighbour> {
    let addr = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })?;
    let lladdr = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) if !bytes.is_empty() => Some(hex(bytes)),
        _ => None,
    });
    Some(Neighbour {
        addr,
        dev: Dev::from_index(m.header.ifindex),
        state: state_name(m.header.state),
        lladdr,
    })
}

fn state_name(state: NeighbourState) -> String {
    let name = match state {
        NeighbourState::Incomplete => "INCOMPLETE",
        NeighbourState::Reachable => "REACHABLE",
        NeighbourState::Stale => "STALE",
        NeighbourState::Delay => "DELAY",
        NeighbourState::Probe => "PROBE",
        NeighbourState::Failed => "FAILED",
        NeighbourState::Noarp => "NOARP",
        NeighbourState::Permanent => "PERMANENT",
        NeighbourState::None => "NONE",
        other => return format!("{:#x}", u16::from(other)),
    };
    name.into()
}

/// "aa:bb:cc:dd:ee:ff".
fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// The sentence about resolving `next_hop`'s link-layer address, from the neighbour entries.
pub fn describe_neighbour(next_hop: IpAddr, neighbours: &[Neighbour]) -> String {
    let protocol = match next_hop {
        IpAddr::V4(_) => "ARP",
        IpAddr::V6(_) => "neighbour discovery",
    };
    let Some(n) = neighbours.iter().find(|n| n.addr == next_hop) else {
        return format!(
            "next hop {next_hop}: no neighbour entry ({protocol} never tried it, or the entry \
             has expired)"
        );
    };
    let at = n
        .lladdr
        .as_ref()
        .map_or(String::new(), |l| format!(" at {l}"));
    let meaning = match n.state.as_str() {
        "FAILED" => format!(" (no {protocol} reply)"),
        "INCOMPLETE" => format!(" ({protocol} request sent, no reply yet)"),
        "REACHABLE" | "STALE" | "DELAY" | "PROBE" => format!("{at} (resolved)"),
        "PERMANENT" | "NOARP" => format!("{at} (static entry)"),
        _ => String::new(),
    };
    format!(
        "next hop {next_hop} on {}: {}{meaning}",
        n.dev.name, n.state
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::netns::tests::is_root;
    use crate::enrich::route::tests::Lab;
    use std::time::{Duration, Instant};

    fn n(addr: &str, dev: &str, state: &str, lladdr: Option<&str>) -> Neighbour {
        Neighbour {
            addr: addr.parse().unwrap(),
            dev: Dev {
                index: 2,
                name: dev.into(),
            },
            state: state.into(),
            lladdr: lladdr.map(str::to_string),
        }
    }

    fn say(next_hop: &str, table: &[Neighbour]) -> String {
        describe_neighbour(next_hop.parse().unwrap(), table)
    }

    #[test]
    fn failed_and_incomplete_resolution() {
        let table = [
            n(
                "10.231.0.98",
                "veth0",
                "REACHABLE",
                Some("02:00:00:00:00:98"),
            ),
            n("10.231.0.99", "veth0", "FAILED", None),
            n("10.231.0.97", "veth0", "INCOMPLETE", None),
            n("fd00:231::99", "veth0", "FAILED", None),
            n("fd00:231::97", "veth0", "INCOMPLETE", None),
        ];
        assert_eq!(
            say("10.231.0.99", &table),
            "next hop 10.231.0.99 on veth0: FAILED (no ARP reply)"
        );
        assert_eq!(
            say("10.231.0.97", &table),
            "next hop 10.231.0.97 on veth0: INCOMPLETE (ARP request sent, no reply yet)"
        );
        assert_eq!(
            say("fd00:231::99", &table),
            "next hop fd00:231::99 on veth0: FAILED (no neighbour discovery reply)"
        );
        assert_eq!(
            say("fd00:231::97", &table),
            "next hop fd00:231::97 on veth0: INCOMPLETE (neighbour discovery request sent, no \
             reply yet)"
        );
    }

    #[test]
    fn resolved_static_and_missing_entries() {
        let table = [
            n(
                "10.231.0.98",
                "veth0",
                "REACHABLE",
                Some("02:00:00:00:00:98"),
            ),
            n("10.231.0.96", "eth1", "STALE", Some("02:00:00:00:00:96")),
            n(
                "10.231.0.50",
                "veth0",
                "PERMANENT",
                Some("02:00:00:00:00:50"),
            ),
            n("10.231.0.51", "veth0", "NOARP", None),
            n("10.231.0.52", "veth0", "0x24", None),
        ];
        assert_eq!(
            say("10.231.0.98", &table),
            "next hop 10.231.0.98 on veth0: REACHABLE at 02:00:00:00:00:98 (resolved)"
        );
        assert_eq!(
            say("10.231.0.96", &table),
            "next hop 10.231.0.96 on eth1: STALE at 02:00:00:00:00:96 (resolved)"
        );
        assert_eq!(
            say("10.231.0.50", &table),
            "next hop 10.231.0.50 on veth0: PERMANENT at 02:00:00:00:00:50 (static entry)"
        );
        assert_eq!(
            say("10.231.0.51", &table),
            "next hop 10.231.0.51 on veth0: NOARP (static entry)"
        );
        assert_eq!(
            say("10.231.0.52", &table),
            "next hop 10.231.0.52 on veth0: 0x24"
        );
        assert_eq!(
            say("10.231.0.9", &table),
            "next hop 10.231.0.9: no neighbour entry (ARP never tried it, or the entry has \
             expired)"
        );
        assert_eq!(
            say("fd00::9", &[]),
            "next hop fd00::9: no neighbour entry (neighbour discovery never tried it, or the \
             entry has expired)"
        );
    }

    #[test]
    fn names_states_and_link_layer_addresses() {
        assert_eq!(state_name(NeighbourState::Failed), "FAILED");
        assert_eq!(state_name(NeighbourState::Incomplete), "INCOMPLETE");
        assert_eq!(state_name(NeighbourState::from(0x24)), "0x24");
        assert_eq!(hex(&[2, 0, 0xab, 0, 0, 0x5f]), "02:00:ab:00:00:5f");
    }

    #[test]
    fn sees_failed_resolution_in_a_namespace() {
        if !is_root() {
            println!("NL-SKIP sees_failed_resolution_in_a_namespace: needs root");
            return;
        }
        let lab = Lab::new();
        lab.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.neigh.veth0.retrans_time_ms=100",
            "net.ipv6.neigh.veth0.retrans_time_ms=100",
        ]);
        lab.ip("neigh add 10.231.0.50 lladdr 02:00:00:00:00:50 dev veth0 nud permanent");
        lab.ip("-6 neigh add fd00:231::50 lladdr 02:00:00:00:00:51 dev veth0 nud stale");
        // Connecting to unused addresses on veth0's subnets makes the kernel ask for them.
        lab.exec(&[
            "python3",
            "-c",
            "import socket\n\
             for fam, addr in [(socket.AF_INET, '10.231.0.99'), (socket.AF_INET6, 'fd00:231::99')]:\n\
             \x20   s = socket.socket(fam, socket.SOCK_STREAM)\n\
             \x20   s.settimeout(0.2)\n\
             \x20   s.connect_ex((addr, 9))\n",
        ]);
        let veth0 = lab.index("veth0");
        let veth1 = lab.index("veth1");
        let deadline = Instant::now() + Duration::from_secs(10);
        let table = loop {
            let table = lab.run(move || neighbours(Some(veth0)).unwrap());
            let failed = ["10.231.0.99", "fd00:231::99"].iter().all(|a| {
                let addr: IpAddr = a.parse().unwrap();
                table.iter().any(|n| n.addr == addr && n.state == "FAILED")
            });
            if failed || Instant::now() > deadline {
                break table;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            say("10.231.0.99", &table),
            "next hop 10.231.0.99 on veth0: FAILED (no ARP reply)",
            "{table:?}"
        );
        assert_eq!(
            say("fd00:231::99", &table),
            "next hop fd00:231::99 on veth0: FAILED (no neighbour discovery reply)",
            "{table:?}"
        );
        assert_eq!(
            say("10.231.0.50", &table),
            "next hop 10.231.0.50 on veth0: PERMANENT at 02:00:00:00:00:50 (static entry)"
        );
        assert_eq!(
            say("fd00:231::50", &table),
            "next hop fd00:231::50 on veth0: STALE at 02:00:00:00:00:51 (resolved)"
        );
        assert!(table
            .iter()
            .all(|n| n.dev.index == veth0 && n.dev.name == "veth0"));
        let on_veth1 = lab.run(move || neighbours(Some(veth1)).unwrap());
        assert!(
            on_veth1.iter().all(|n| n.dev.index == veth1),
            "{on_veth1:?}"
        );
        let everywhere = lab.run(|| neighbours(None).unwrap());
        assert!(everywhere.len() >= table.len());
    }
}
