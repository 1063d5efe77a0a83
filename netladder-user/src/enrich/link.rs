//! Interfaces, their state and addresses over rtnetlink (what `ip addr` shows), and what they
//! say about a destination the kernel found no route to.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::canonical;
use super::route::{rtnl_dump, Dev, Family, Prefix, RouteInfo};

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// IFF_UP: the administrator set it up.
    pub admin_up: bool,
    /// IFF_LOWER_UP: the link has carrier.
    pub carrier: bool,
    /// The operational state as `ip link` prints it (UP, DOWN, LOWERLAYERDOWN, UNKNOWN...).
    pub oper_state: String,
    pub vlan: Option<Vlan>,
    /// Its addresses, IPv4 and IPv6, with their prefix lengths.
    pub addrs: Vec<Prefix>,
}

/// What makes a link a VLAN: its id and the link it is stacked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    pub id: u16,
    pub parent: Dev,
}

impl LinkInfo {
    /// Up and with carrier: able to send.
    pub fn usable(&self) -> bool {
        self.admin_up && self.carrier
    }

    /// "interface eth1", or "vlan eth0.100 (id 100 on eth0)".
    fn label(&self) -> String {
        match &self.vlan {
            Some(v) => format!("vlan {} (id {} on {})", self.name, v.id, v.parent.name),
            None => format!("interface {}", self.name),
        }
    }

    /// The addresses that can be a source toward `dst` (a link-local IPv6 address only
    /// serves link-local destinations).
    fn sources_for(&self, dst: IpAddr) -> impl Iterator<Item = &Prefix> {
        self.addrs.iter().filter(move |a| match (a.addr, dst) {
            (IpAddr::V6(a), IpAddr::V6(d)) => {
                !a.is_unicast_link_local() || d.is_unicast_link_local()
            }
            (a, d) => a.is_ipv4() == d.is_ipv4(),
        })
    }
}

/// Every interface of the calling thread's network namespace, with its addresses.
pub fn links_and_addrs() -> anyhow::Result<Vec<LinkInfo>> {
    let links = rtnl_dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), "link")?;
    let mut infos: Vec<LinkInfo> = links
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(m) => Some(link(m)),
            _ => None,
        })
        .collect();
    let names: Vec<(u32, String)> = infos.iter().map(|l| (l.index, l.name.clone())).collect();
    for vlan in infos.iter_mut().filter_map(|l| l.vlan.as_mut()) {
        if let Some((_, name)) = names.iter().find(|(i, _)| *i == vlan.parent.index) {
            vlan.parent.name.clone_from(name);
        }
    }
    let addrs = rtnl_dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "address",
    )?;
    for m in &addrs {
        let RouteNetlinkMessage::NewAddress(m) = m else {
            continue;
        };
        if let (Some(l), Some(addr)) = (
            infos.iter_mut().find(|l| l.index == m.header.index),
            address(m),
        ) {
            l.addrs.push(Prefix {
                addr,
                len: m.header.prefix_len,
            });
        }
    }
    Ok(infos)
}

/// Every address assigned in the calling thread's network namespace (`ip addr`), without the
/// interfaces: one rtnetlink dump.
pub fn addresses() -> anyhow::Result<Vec<IpAddr>> {
    let addrs = rtnl_dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "address",
    )?;
    Ok(addrs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(m) => address(m),
            _ => None,
        })
        .collect())
}

fn link(m: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: m.header.index,
        name: format!("if{}", m.header.index),
        admin_up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        oper_state: "UNKNOWN".into(),
        vlan: None,
        addrs: Vec::new(),
    };
    let (mut vlan, mut parent) = (None, None);
    for attribute in &m.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::OperState(state) => info.oper_state = state.to_string(),
            LinkAttribute::Link(index) => parent = Some(*index),
            LinkAttribute::LinkInfo(nested) => vlan = vlan_id(nested),
            _ => {}
        }
    }
    info.vlan = vlan.zip(parent).map(|(id, index)| Vlan {
        id,
        parent: Dev {
            index,
            name: format!("if{index}"),
        },
    });
    info
}

/// The VLAN id of an IFLA_LINKINFO of kind "vlan".
fn vlan_id(nested: &[NlLinkInfo]) -> Option<u16> {
    if !nested
        .iter()
        .any(|i| matches!(i, NlLinkInfo::Kind(InfoKind::Vlan)))
    {
        return None;
    }
    nested.iter().find_map(|i| match i {
        NlLinkInfo::Data(InfoData::Vlan(data)) => data.iter().find_map(|d| match d {
            InfoVlan::Id(id) => Some(*id),
            _ => None,
        }),
        _ => None,
    })
}

/// The interface's own address (IFA_LOCAL; IFA_ADDRESS when there is none, as for IPv6).
fn address(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// The sentence about the interfaces toward `dst`: the route's output interface when the
/// kernel found one, otherwise the interface whose subnet holds `dst` (a down one first),
/// otherwise which interfaces are up and down.
pub fn describe_egress(dst: IpAddr, links: &[LinkInfo], route: Option<&RouteInfo>) -> String {
    let dst = canonical(dst);
    let egress = match route {
        Some(RouteInfo::Found(r)) => r.dev.as_ref(),
        _ => None,
    };
    if let Some(link) = egress.and_then(|d| links.iter().find(|l| l.index == d.index)) {
        return describe_link(link, links, dst);
    }
    // A down interface first: that is why the kernel has no route through it.
    let covering = links
        .iter()
        .filter_map(|l| {
            Some((
                l,
                l.sources_for(dst).find(|a| a.len > 0 && a.contains(dst))?,
            ))
        })
        .min_by_key(|(l, _)| l.usable());
    match covering {
        Some((link, subnet)) if link.usable() => {
            format!("{} is up; its address {subnet} covers {dst}", link.label())
        }
        Some((link, subnet)) => format!(
            "{} is {}; its address {subnet} covers {dst}",
            link.label(),
            down_state(link)
        ),
        None => overview(dst, links),
    }
}

/// What is wrong, or right, with the egress interface `link`.
fn describe_link(link: &LinkInfo, links: &[LinkInfo], dst: IpAddr) -> String {
    let parent = link
        .vlan
        .as_ref()
        .and_then(|v| links.iter().find(|l| l.index == v.parent.index));
    if let Some(parent) = parent.filter(|p| !p.usable()) {
        return format!(
            "{}: its parent {} is {}",
            link.label(),
            parent.name,
            down_state(parent)
        );
    }
    if !link.usable() {
        return format!("{} is {}", link.label(), down_state(link));
    }
    let sources: Vec<String> = link.sources_for(dst).map(Prefix::to_string).collect();
    if sources.is_empty() {
        return format!("{} has no {} address", link.label(), Family::of(dst).name());
    }
    format!("egress {} is up, with {}", link.label(), sources.join(", "))
}

/// "down" (set down by the administrator) or "up but without carrier (state X)".
fn down_state(link: &LinkInfo) -> String {
    if link.admin_up {
        format!("up but without carrier (state {})", link.oper_state)
    } else {
        "down".into()
    }
}

/// "no interface ...; interfaces up: lo (127.0.0.1/8); down: eth1".
fn overview(dst: IpAddr, links: &[LinkInfo]) -> String {
    let (up, down): (Vec<&LinkInfo>, Vec<&LinkInfo>) = links.iter().partition(|l| l.usable());
    let list = |group: &[&LinkInfo]| {
        let mut names: Vec<String> = group
            .iter()
            .take(MAX_LISTED)
            .map(|l| {
                let addrs: Vec<String> = l.sources_for(dst).map(Prefix::to_string).collect();
                if addrs.is_empty() {
                    l.name.clone()
                } else {
                    format!("{} ({})", l.name, addrs.join(", "))
                }
            })
            .collect();
        if group.len() > MAX_LISTED {
            names.push(format!("and {} more", group.len() - MAX_LISTED));
        }
        names.join(", ")
    };
    let mut s = format!("no interface's subnet holds {dst}; interfaces up: ");
    s += &if up.is_empty() {
        "none".to_string()
    } else {
        list(&up)
    };
    if !down.is_empty() {
        s += &format!("; down: {}", list(&down));
    }
    s
}

/// How many interfaces of one group an overview names before "and N more".
const MAX_LISTED: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::netns::tests::is_root;
    use crate::enrich::route::tests::Lab;
    use crate::enrich::route::{route_get, Route, RouteKind, TABLE_MAIN};

    fn prefix(s: &str) -> Prefix {
        let (addr, len) = s.split_once('/').unwrap();
        Prefix {
            addr: addr.parse().unwrap(),
            len: len.parse().unwrap(),
        }
    }

    fn link(index: u32, name: &str, admin_up: bool, carrier: bool, addrs: &[&str]) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            admin_up,
            carrier,
            oper_state: match (admin_up, carrier) {
                (true, true) => "UP".into(),
                (true, false) => "LOWERLAYERDOWN".into(),
                _ => "DOWN".into(),
            },
            vlan: None,
            addrs: addrs.iter().map(|a| prefix(a)).collect(),
        }
    }

    fn vlan(index: u32, name: &str, id: u16, parent: &LinkInfo, addrs: &[&str]) -> LinkInfo {
        LinkInfo {
            vlan: Some(Vlan {
                id,
                parent: Dev {
                    index: parent.index,
                    name: parent.name.clone(),
                },
            }),
            ..link(index, name, true, parent.usable(), addrs)
        }
    }

    fn via(index: u32, name: &str) -> RouteInfo {
        RouteInfo::Found(Route {
            kind: RouteKind::Unicast,
            table: TABLE_MAIN,
            prefix: prefix("10.9.9.9/32"),
            dev: Some(Dev {
                index,
                name: name.into(),
            }),
            gateway: None,
            pref_src: None,
        })
    }

    fn no_route() -> RouteInfo {
        RouteInfo::Refused {
            errno: libc::ENETUNREACH,
            matched: None,
        }
    }

    fn say(dst: &str, links: &[LinkInfo], route: Option<&RouteInfo>) -> String {
        describe_egress(dst.parse().unwrap(), links, route)
    }

    fn lo() -> LinkInfo {
        link(1, "lo", true, true, &["127.0.0.1/8", "::1/128"])
    }

    #[test]
    fn the_egress_interface_of_a_route() {
        let links = [
            lo(),
            link(2, "veth0", true, true, &["10.231.0.1/24", "fe80::1/64"]),
            link(3, "eth1", false, false, &["10.231.5.1/24"]),
            link(4, "eth2", true, false, &["10.231.6.1/24"]),
            link(5, "eth3", true, true, &["fd00:231::1/64"]),
        ];
        let cases = [
            (
                "10.9.9.9",
                via(2, "veth0"),
                "egress interface veth0 is up, with 10.231.0.1/24",
            ),
            ("10.9.9.9", via(3, "eth1"), "interface eth1 is down"),
            (
                "10.9.9.9",
                via(4, "eth2"),
                "interface eth2 is up but without carrier (state LOWERLAYERDOWN)",
            ),
            (
                "10.9.9.9",
                via(5, "eth3"),
                "interface eth3 has no IPv4 address",
            ),
            (
                "fd00:9::9",
                via(2, "veth0"),
                "interface veth0 has no IPv6 address",
            ),
            (
                "fe80::9",
                via(2, "veth0"),
                "egress interface veth0 is up, with fe80::1/64",
            ),
            (
                "fd00:231::9",
                via(5, "eth3"),
                "egress interface eth3 is up, with fd00:231::1/64",
            ),
        ];
        for (dst, route, want) in cases {
            assert_eq!(say(dst, &links, Some(&route)), want, "{dst} {route:?}");
        }
    }

    #[test]
    fn vlans_name_their_id_and_parent() {
        let eth0 = link(2, "eth0", true, true, &[]);
        let down = link(3, "eth1", false, false, &[]);
        let links = [
            vlan(4, "eth0.100", 100, &eth0, &["10.231.100.1/24"]),
            vlan(5, "eth1.200", 200, &down, &["10.231.200.1/24"]),
            vlan(6, "eth0.300", 300, &eth0, &[]),
            eth0,
            down,
        ];
        assert_eq!(
            say("10.231.100.7", &links, Some(&via(4, "eth0.100"))),
            "egress vlan eth0.100 (id 100 on eth0) is up, with 10.231.100.1/24"
        );
        assert_eq!(
            say("10.231.200.7", &links, Some(&via(5, "eth1.200"))),
            "vlan eth1.200 (id 200 on eth1): its parent eth1 is down"
        );
        assert_eq!(
            say("10.231.30.7", &links, Some(&via(6, "eth0.300"))),
            "vlan eth0.300 (id 300 on eth0) has no IPv4 address"
        );
        assert_eq!(
            say("10.231.200.7", &links, Some(&no_route())),
            "vlan eth1.200 (id 200 on eth1) is up but without carrier (state \
             LOWERLAYERDOWN); its address 10.231.200.1/24 covers 10.231.200.7"
        );
    }

    #[test]
    fn without_a_route_the_interface_that_covers_the_destination() {
        let links = [
            lo(),
            link(2, "veth0", true, true, &["10.231.0.1/24"]),
            link(3, "eth1", false, false, &["10.231.5.1/24", "fd00:5::1/64"]),
        ];
        assert_eq!(
            say("10.231.5.7", &links, Some(&no_route())),
            "interface eth1 is down; its address 10.231.5.1/24 covers 10.231.5.7"
        );
        assert_eq!(
            say("::ffff:10.231.5.7", &links, None),
            "interface eth1 is down; its address 10.231.5.1/24 covers 10.231.5.7"
        );
        assert_eq!(
            say("fd00:5::7", &links, None),
            "interface eth1 is down; its address fd00:5::1/64 covers fd00:5::7"
        );
        assert_eq!(
            say("10.231.0.7", &links, None),
            "interface veth0 is up; its address 10.231.0.1/24 covers 10.231.0.7"
        );
        // A route whose interface is not in the list says nothing about it.
        assert_eq!(
            say("10.231.5.7", &links, Some(&via(9, "gone0"))),
            "interface eth1 is down; its address 10.231.5.1/24 covers 10.231.5.7"
        );
    }

    #[test]
    fn otherwise_which_interfaces_are_up_and_down() {
        let links = [
            lo(),
            link(2, "veth0", true, true, &["10.231.0.1/24", "fd00:231::1/64"]),
            link(3, "eth1", false, false, &[]),
        ];
        assert_eq!(
            say("10.9.9.9", &links, Some(&no_route())),
            "no interface's subnet holds 10.9.9.9; interfaces up: lo (127.0.0.1/8), veth0 \
             (10.231.0.1/24); down: eth1"
        );
        assert_eq!(
            say("fd00:9::9", &links, None),
            "no interface's subnet holds fd00:9::9; interfaces up: lo (::1/128), veth0 \
             (fd00:231::1/64); down: eth1"
        );
        assert_eq!(
            say("10.9.9.9", &[lo()][..0], None),
            "no interface's subnet holds 10.9.9.9; interfaces up: none"
        );
        let many: Vec<LinkInfo> = (1..=9)
            .map(|i| link(i, &format!("d{i}"), false, false, &[]))
            .collect();
        assert_eq!(
            say("10.9.9.9", &many, None),
            "no interface's subnet holds 10.9.9.9; interfaces up: none; down: d1, d2, d3, d4, \
             d5, d6, and 3 more"
        );
    }

    #[test]
    fn parses_a_vlan_link() {
        use netlink_packet_core::{Emitable, Parseable};
        use netlink_packet_route::link::LinkInfo as Nl;
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("eth0.100".into()),
            LinkAttribute::Link(2),
            LinkAttribute::LinkInfo(vec![
                Nl::Kind(InfoKind::Vlan),
                Nl::Data(InfoData::Vlan(vec![InfoVlan::Id(100)])),
            ]),
        ];
        // Through the wire format and back, as a dump delivers it.
        let mut wire = vec![0; m.buffer_len()];
        m.emit(&mut wire);
        let info = super::link(&LinkMessage::parse(wire.as_slice()).unwrap());
        assert_eq!(info.name, "eth0.100");
        assert!(info.usable());
        assert_eq!(
            info.vlan,
            Some(Vlan {
                id: 100,
                parent: Dev {
                    index: 2,
                    name: "if2".into()
                }
            })
        );
        // A macvlan on a parent is not a VLAN.
        m.attributes[2] = LinkAttribute::LinkInfo(vec![Nl::Kind(InfoKind::MacVlan)]);
        assert_eq!(super::link(&m).vlan, None);
    }

    #[test]
    fn reads_interfaces_in_a_namespace() {
        if !is_root() {
            println!("NL-SKIP reads_interfaces_in_a_namespace: needs root");
            return;
        }
        let lab = Lab::new();
        lab.ip("link add veth2 type veth peer name veth3");
        lab.ip("addr add 10.231.5.1/24 dev veth2");
        lab.ip("link add veth4 type veth peer name veth5");
        lab.ip("addr add 10.231.6.1/24 dev veth4");
        lab.ip("link set veth4 up");
        lab.ip("link add veth6 type veth peer name veth7");
        lab.ip("link set veth6 up");
        lab.ip("link set veth7 up");
        lab.ip("route add 10.231.50.0/24 dev veth6");
        let ask = |dst: &'static str| {
            lab.run(move || {
                let ip = dst.parse().unwrap();
                let route = route_get(ip).unwrap();
                describe_egress(ip, &links_and_addrs().unwrap(), Some(&route))
            })
        };
        assert_eq!(
            ask("10.231.0.7"),
            "egress interface veth0 is up, with 10.231.0.1/24"
        );
        assert_eq!(
            ask("fd00:231::7"),
            "egress interface veth0 is up, with fd00:231::1/64"
        );
        assert_eq!(
            ask("10.231.5.7"),
            "interface veth2 is down; its address 10.231.5.1/24 covers 10.231.5.7"
        );
        assert_eq!(
            ask("10.231.6.7"),
            "interface veth4 is up but without carrier (state LOWERLAYERDOWN)"
        );
        assert_eq!(ask("10.231.50.5"), "interface veth6 has no IPv4 address");
        let overview = ask("10.231.99.9");
        for part in [
            "no interface's subnet holds 10.231.99.9; interfaces up: lo (127.0.0.1/8), ",
            "veth0 (10.231.0.1/24)",
            "veth6",
            "; down: ",
            "veth2 (10.231.5.1/24)",
            "veth4 (10.231.6.1/24)",
        ] {
            assert!(overview.contains(part), "{part:?} not in {overview:?}");
        }

        let links = lab.run(|| links_and_addrs().unwrap());
        let get = |name: &str| links.iter().find(|l| l.name == name).unwrap().clone();
        let veth0 = get("veth0");
        assert!(veth0.admin_up && veth0.carrier && veth0.vlan.is_none());
        assert_eq!(veth0.oper_state, "UP");
        assert!(veth0.addrs.contains(&prefix("10.231.0.1/24")));
        assert!(veth0.addrs.contains(&prefix("fd00:231::1/64")));
        let veth2 = get("veth2");
        assert!(!veth2.admin_up && !veth2.carrier);
        assert_eq!(veth2.oper_state, "DOWN");
        let veth4 = get("veth4");
        assert!(veth4.admin_up && !veth4.carrier);
        assert_eq!(veth4.oper_state, "LOWERLAYERDOWN");
        assert_eq!(get("lo").oper_state, "UNKNOWN");

        if !lab.try_ip("link add link veth0 name veth0.100 type vlan id 100") {
            println!("NL-SKIP reads_interfaces_in_a_namespace (vlan part): no 8021q support");
            return;
        }
        lab.ip("addr add 10.231.100.1/24 dev veth0.100");
        lab.ip("link set veth0.100 up");
        lab.ip("link add link veth2 name veth2.200 type vlan id 200");
        lab.ip("addr add 10.231.200.1/24 dev veth2.200");
        lab.ip("link set veth2.200 up");
        assert_eq!(
            ask("10.231.100.7"),
            "egress vlan veth0.100 (id 100 on veth0) is up, with 10.231.100.1/24"
        );
        assert_eq!(
            ask("10.231.200.7"),
            "vlan veth2.200 (id 200 on veth2): its parent veth2 is down"
        );
        let links = lab.run(|| links_and_addrs().unwrap());
        let vlan = links.iter().find(|l| l.name == "veth0.100").unwrap();
        assert_eq!(vlan.vlan.as_ref().map(|v| v.id), Some(100));
        assert_eq!(
            vlan.vlan.as_ref().map(|v| v.parent.clone()),
            Some(Dev {
                index: veth0.index,
                name: "veth0".into()
            })
        );
    }
}
