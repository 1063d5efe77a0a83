//! What `ip route get DST` says, and the default routes, over rtnetlink; also the small
//! rtnetlink request helper that `link` and `neigh` share.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NetlinkAddr};

use super::canonical;
use super::netlink::{self, End, Flow};

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// "IPv4" or "IPv6".
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub(super) fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An address with a prefix length: a route's destination or an interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// Is `ip` inside this prefix (same family, same leading `len` bits)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.len).min(bits);
        (a ^ b).checked_shr(shift).unwrap_or(0) == 0
    }
}

/// "10.9.0.0/16", or "default" for a /0 (as `ip route` prints it).
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            f.write_str("default")
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// A route type, as `ip route` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Other(u8),
}

impl RouteKind {
    fn from_netlink(kind: RouteType) -> Self {
        match kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            RouteType::Broadcast => RouteKind::Broadcast,
            RouteType::Anycast => RouteKind::Anycast,
            RouteType::Multicast => RouteKind::Multicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            RouteType::Throw => RouteKind::Throw,
            other => RouteKind::Other(other.into()),
        }
    }

    /// The type of route that makes the kernel refuse a look-up with `errno`.
    fn refusing(errno: i32) -> Option<Self> {
        match errno {
            libc::EHOSTUNREACH => Some(RouteKind::Unreachable),
            libc::EACCES => Some(RouteKind::Prohibit),
            libc::EINVAL => Some(RouteKind::Blackhole),
            libc::ENETUNREACH => Some(RouteKind::Throw),
            _ => None,
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RouteKind::Unicast => "unicast",
            RouteKind::Local => "local",
            RouteKind::Broadcast => "broadcast",
            RouteKind::Anycast => "anycast",
            RouteKind::Multicast => "multicast",
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
            RouteKind::Throw => "throw",
            RouteKind::Other(n) => return write!(f, "type {n}"),
        };
        f.write_str(name)
    }
}

/// A network interface by index, with its name at the time of the look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev {
    pub index: u32,
    pub name: String,
}

impl Dev {
    /// Names the interface `index` of the calling thread's namespace ("if7" if it is gone).
    pub(super) fn from_index(index: u32) -> Self {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
        let found = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
        let name = if found.is_null() {
            format!("if{index}")
        } else {
            // SAFETY: on success the buffer holds a NUL-terminated name.
            unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        Dev { index, name }
    }
}

/// One route: a look-up answer or an entry of a routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    /// The routing table id (254 is main, 255 local).
    pub table: u32,
    /// The destination prefix (a look-up answer gives the destination itself, /32 or /128).
    pub prefix: Prefix,
    /// The output interface.
    pub dev: Option<Dev>,
    pub gateway: Option<IpAddr>,
    /// The preferred source address.
    pub pref_src: Option<IpAddr>,
}

/// What the kernel's route look-up for one destination gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteInfo {
    /// The kernel found a route (what `ip route get` prints).
    Found(Route),
    /// The kernel refused the look-up with this errno (ENETUNREACH, EHOSTUNREACH, EACCES,
    /// EINVAL...). `matched` is the most specific route in any table of the type that gives
    /// that errno (unreachable, prohibit, blackhole, throw) and covers the destination.
    Refused { errno: i32, matched: Option<Route> },
}

/// The main routing table's id.
pub const TABLE_MAIN: u32 = 254;

/// The kernel's route look-up for `dst` in the calling thread's network namespace, as
/// `ip route get DST` does it (RTM_GETROUTE with RTM_F_LOOKUP_TABLE). An IPv4-mapped IPv6
/// address is looked up as the IPv4 address it is.
pub fn route_get(dst: IpAddr) -> anyhow::Result<RouteInfo> {
    let dst = canonical(dst);
    let family = Family::of(dst);
    let mut request = RouteMessage::default();
    request.header.address_family = family.address_family();
    request.header.destination_prefix_length = family.bits();
    request.header.flags = RouteFlags::LookupTable;
    request
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    let answer = rtnl_request(RouteNetlinkMessage::GetRoute(request), false)
        .with_context(|| format!("cannot look up the route to {dst}"))?;
    match answer {
        Ok(replies) => match replies.first() {
            Some(RouteNetlinkMessage::NewRoute(m)) => Ok(RouteInfo::Found(route(m))),
            _ => bail!("the route look-up for {dst} got no route in its answer"),
        },
        Err(refusal) => {
            let errno = refusal.raw_os_error().unwrap_or(0);
            let matched = match RouteKind::refusing(errno) {
                Some(kind) => most_specific(kind, dst, &all_routes(family)?),
                None => None,
            };
            Ok(RouteInfo::Refused { errno, matched })
        }
    }
}

/// The default routes (prefix length 0) of the main table for `family`, of any type.
pub fn default_routes(family: Family) -> anyhow::Result<Vec<Route>> {
    Ok(all_routes(family)?
        .into_iter()
        .filter(|r| r.table == TABLE_MAIN && r.prefix.len == 0)
        .collect())
}

/// The longest route of `kind` covering `dst`.
fn most_specific(kind: RouteKind, dst: IpAddr, routes: &[Route]) -> Option<Route> {
    routes
        .iter()
        .filter(|r| r.kind == kind && r.prefix.contains(dst))
        .max_by_key(|r| r.prefix.len)
        .cloned()
}

/// Every route of every table for `family`, as `ip route show table all` lists them.
fn all_routes(family: Family) -> anyhow::Result<Vec<Route>> {
    let mut request = RouteMessage::default();
    request.header.address_family = family.address_family();
    let replies = rtnl_dump(RouteNetlinkMessage::GetRoute(request), "route")?;
    Ok(replies
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(m) => Some(route(m)),
            _ => None,
        })
        .collect())
}

fn route(m: &RouteMessage) -> Route {
    let unspecified = match m.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut r = Route {
        kind: RouteKind::from_netlink(m.header.kind),
        table: m.header.table.into(),
        prefix: Prefix {
            addr: unspecified,
            len: m.header.destination_prefix_length,
        },
        dev: None,
        gateway: None,
        pref_src: None,
    };
    for attribute in &m.attributes {
        match attribute {
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Destination(a) => r.prefix.addr = ip(a).unwrap_or(unspecified),
            RouteAttribute::Gateway(a) => r.gateway = ip(a),
            RouteAttribute::PrefSource(a) => r.pref_src = ip(a),
            RouteAttribute::Oif(index) => r.dev = Some(Dev::from_index(*index)),
            _ => {}
        }
    }
    r
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A table's name as `ip route` prints it.
pub fn table_name(table: u32) -> String {
    match table {
        253 => "default".into(),
        TABLE_MAIN => "main".into(),
        255 => "local".into(),
        n => n.to_string(),
    }
}

/// The sentence for the route to `dst`, given the look-up and the main table's default
/// routes for `dst`'s family.
pub fn describe_route(dst: IpAddr, info: &RouteInfo, defaults: &[Route]) -> String {
    let dst = canonical(dst);
    match info {
        RouteInfo::Found(r) => format!("route to {dst}: {}", found(r)),
        RouteInfo::Refused {
            matched: Some(r), ..
        } if r.kind == RouteKind::Throw => format!(
            "no route to {dst}: `throw` route {} in table {} ends the look-up there, and no \
             other table has a route",
            r.prefix,
            table_name(r.table)
        ),
        RouteInfo::Refused {
            matched: Some(r), ..
        } => format!(
            "route to {dst}: `{}` route {} in table {}",
            r.kind,
            r.prefix,
            table_name(r.table)
        ),
        RouteInfo::Refused { errno, .. } if *errno == libc::ENETUNREACH => match defaults {
            [] => format!(
                "no route to {dst}: no default route in table main (and no more specific one)"
            ),
            [d, ..] => format!(
                "no usable route to {dst}: the kernel found none, although table main has the \
                 default route {}",
                default_route(d)
            ),
        },
        RouteInfo::Refused { errno, .. } => format!(
            "route look-up for {dst} failed: {}",
            io::Error::from_raw_os_error(*errno)
        ),
    }
}

/// "via GW dev D, source S" and the like, for a look-up answer.
fn found(r: &Route) -> String {
    let mut s = match (r.kind, r.gateway) {
        (RouteKind::Local, _) => return "a local address of this namespace".to_string(),
        (RouteKind::Unicast, Some(gw)) => format!("via {gw}"),
        (RouteKind::Unicast, None) => "directly connected".to_string(),
        (kind, _) => format!("{kind} route"),
    };
    if let Some(dev) = &r.dev {
        s += &format!(" dev {}", dev.name);
    }
    if let Some(src) = r.pref_src {
        s += &format!(", source {src}");
    }
    if r.table != TABLE_MAIN {
        s += &format!(" (table {})", table_name(r.table));
    }
    s
}

/// "via GW dev D" for a gateway route, "`unreachable`" for a refusing one.
fn default_route(r: &Route) -> String {
    match (r.kind, r.gateway, &r.dev) {
        (RouteKind::Unicast, Some(gw), Some(dev)) => format!("via {gw} dev {}", dev.name),
        (RouteKind::Unicast, Some(gw), None) => format!("via {gw}"),
        (RouteKind::Unicast, None, Some(dev)) => format!("dev {}", dev.name),
        (kind, ..) => format!("`{kind}`"),
    }
}

/// Sends one rtnetlink request in the calling thread's network namespace and collects the
/// answer: every part of a dump, or the single reply. The inner error is the kernel's
/// refusal (its NLMSG_ERROR); the outer one, a failure to ask.
pub(super) fn rtnl_request(
    request: RouteNetlinkMessage,
    dump: bool,
) -> anyhow::Result<Result<Vec<RouteNetlinkMessage>, io::Error>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("cannot open a netlink socket")?;
    socket
        .bind_auto()
        .context("cannot bind the netlink socket")?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    let mut message = NetlinkMessage::new(header, request.into());
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send_to(&buf, &NetlinkAddr::new(0, 0), 0)
        .context("cannot send the rtnetlink request")?;
    let mut replies = Vec::new();
    let reply = netlink::receive(&socket, "rtnetlink", |m| {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.bytes)
            .context("cannot decode a message")?;
        if let NetlinkPayload::InnerMessage(m) = message.payload {
            replies.push(m);
        }
        Ok(if dump || replies.is_empty() {
            Flow::More
        } else {
            Flow::Complete
        })
    })?;
    Ok(match reply.end {
        End::Done => Ok(replies),
        End::Refused(e) => Err(e),
    })
}

/// A dump whose refusal by the kernel is an error (`what`: "route", "link"...).
pub(super) fn rtnl_dump(
    request: RouteNetlinkMessage,
    what: &str,
) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
    rtnl_request(request, true)?.with_context(|| format!("the kernel refused the {what} dump"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::enrich::netns::{run_in_netns, tests::is_root};
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn prefix(s: &str) -> Prefix {
        let (addr, len) = s.split_once('/').unwrap();
        Prefix {
            addr: addr.parse().unwrap(),
            len: len.parse().unwrap(),
        }
    }

    fn dev(index: u32, name: &str) -> Option<Dev> {
        Some(Dev {
            index,
            name: name.into(),
        })
    }

    fn route(kind: RouteKind, p: &str, table: u32) -> Route {
        Route {
            kind,
            table,
            prefix: prefix(p),
            dev: None,
            gateway: None,
            pref_src: None,
        }
    }

    fn gateway_route(p: &str, gw: &str, table: u32) -> Route {
        Route {
            dev: dev(2, "veth0"),
            gateway: Some(gw.parse().unwrap()),
            pref_src: Some("10.231.0.1".parse().unwrap()),
            ..route(RouteKind::Unicast, p, table)
        }
    }

    fn refused(errno: i32, matched: Option<Route>) -> RouteInfo {
        RouteInfo::Refused { errno, matched }
    }

    fn say(dst: &str, info: &RouteInfo, defaults: &[Route]) -> String {
        describe_route(dst.parse().unwrap(), info, defaults)
    }

    #[test]
    fn prefixes_contain_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(prefix("10.231.9.0/24").contains(ip("10.231.9.255")));
        assert!(!prefix("10.231.9.0/24").contains(ip("10.231.10.0")));
        assert!(prefix("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(prefix("10.231.9.7/32").contains(ip("10.231.9.7")));
        assert!(!prefix("10.231.9.7/32").contains(ip("10.231.9.6")));
        assert!(prefix("fd00:231::/32").contains(ip("fd00:231:ffff::1")));
        assert!(!prefix("fd00:231::/32").contains(ip("fd00:232::1")));
        assert!(prefix("::/0").contains(ip("2001:db8::1")));
        assert!(prefix("fd00::1/128").contains(ip("fd00::1")));
        assert!(!prefix("0.0.0.0/0").contains(ip("::1")));
        assert!(!prefix("::/0").contains(ip("127.0.0.1")));
        assert_eq!(prefix("10.9.0.0/16").to_string(), "10.9.0.0/16");
        assert_eq!(prefix("0.0.0.0/0").to_string(), "default");
    }

    #[test]
    fn found_routes() {
        let via = gateway_route("10.231.60.5/32", "10.231.0.254", TABLE_MAIN);
        assert_eq!(
            say("10.231.60.5", &RouteInfo::Found(via.clone()), &[]),
            "route to 10.231.60.5: via 10.231.0.254 dev veth0, source 10.231.0.1"
        );
        let other_table = Route { table: 100, ..via };
        assert_eq!(
            say("10.231.60.5", &RouteInfo::Found(other_table), &[]),
            "route to 10.231.60.5: via 10.231.0.254 dev veth0, source 10.231.0.1 (table 100)"
        );
        let direct = Route {
            dev: dev(2, "veth0"),
            ..route(RouteKind::Unicast, "10.231.0.7/32", TABLE_MAIN)
        };
        assert_eq!(
            say("10.231.0.7", &RouteInfo::Found(direct), &[]),
            "route to 10.231.0.7: directly connected dev veth0"
        );
        let local = Route {
            dev: dev(1, "lo"),
            ..route(RouteKind::Local, "10.231.0.1/32", 255)
        };
        assert_eq!(
            say("10.231.0.1", &RouteInfo::Found(local), &[]),
            "route to 10.231.0.1: a local address of this namespace"
        );
        let broadcast = Route {
            dev: dev(2, "veth0"),
            ..route(RouteKind::Broadcast, "10.231.0.255/32", 255)
        };
        assert_eq!(
            say("10.231.0.255", &RouteInfo::Found(broadcast), &[]),
            "route to 10.231.0.255: broadcast route dev veth0 (table local)"
        );
    }

    #[test]
    fn refusing_routes() {
        let unreachable = route(RouteKind::Unreachable, "10.9.0.0/16", TABLE_MAIN);
        assert_eq!(
            say(
                "10.9.9.9",
                &refused(libc::EHOSTUNREACH, Some(unreachable)),
                &[]
            ),
            "route to 10.9.9.9: `unreachable` route 10.9.0.0/16 in table main"
        );
        let prohibit = route(RouteKind::Prohibit, "fd00:231:8::/48", 100);
        assert_eq!(
            say("fd00:231:8::1", &refused(libc::EACCES, Some(prohibit)), &[]),
            "route to fd00:231:8::1: `prohibit` route fd00:231:8::/48 in table 100"
        );
        let blackhole = route(RouteKind::Blackhole, "0.0.0.0/0", TABLE_MAIN);
        assert_eq!(
            say("10.1.2.3", &refused(libc::EINVAL, Some(blackhole)), &[]),
            "route to 10.1.2.3: `blackhole` route default in table main"
        );
        let throw = route(RouteKind::Throw, "10.231.70.0/24", TABLE_MAIN);
        assert_eq!(
            say("10.231.70.5", &refused(libc::ENETUNREACH, Some(throw)), &[]),
            "no route to 10.231.70.5: `throw` route 10.231.70.0/24 in table main ends the \
             look-up there, and no other table has a route"
        );
    }

    #[test]
    fn no_route_and_the_default_routes() {
        let none = refused(libc::ENETUNREACH, None);
        assert_eq!(
            say("10.9.9.9", &none, &[]),
            "no route to 10.9.9.9: no default route in table main (and no more specific one)"
        );
        let default = gateway_route("0.0.0.0/0", "10.231.0.254", TABLE_MAIN);
        assert_eq!(
            say("10.9.9.9", &none, &[default]),
            "no usable route to 10.9.9.9: the kernel found none, although table main has the \
             default route via 10.231.0.254 dev veth0"
        );
        let dev_only = Route {
            dev: dev(3, "wg0"),
            ..route(RouteKind::Unicast, "::/0", TABLE_MAIN)
        };
        assert_eq!(
            say("fd00::9", &none, &[dev_only]),
            "no usable route to fd00::9: the kernel found none, although table main has the \
             default route dev wg0"
        );
        let unreachable = route(RouteKind::Unreachable, "0.0.0.0/0", TABLE_MAIN);
        assert_eq!(
            say("10.9.9.9", &none, &[unreachable]),
            "no usable route to 10.9.9.9: the kernel found none, although table main has the \
             default route `unreachable`"
        );
    }

    #[test]
    fn a_mapped_destination_is_ipv4() {
        let unreachable = route(RouteKind::Unreachable, "10.9.0.0/16", TABLE_MAIN);
        assert_eq!(
            say(
                "::ffff:10.9.9.9",
                &refused(libc::EHOSTUNREACH, Some(unreachable)),
                &[]
            ),
            "route to 10.9.9.9: `unreachable` route 10.9.0.0/16 in table main"
        );
    }

    #[test]
    fn other_refusals_name_the_error() {
        assert_eq!(
            say("10.9.9.9", &refused(libc::EHOSTUNREACH, None), &[]),
            "route look-up for 10.9.9.9 failed: No route to host (os error 113)"
        );
        assert_eq!(
            say("10.9.9.9", &refused(libc::ENODEV, None), &[]),
            "route look-up for 10.9.9.9 failed: No such device (os error 19)"
        );
    }

    #[test]
    fn table_names() {
        assert_eq!(table_name(254), "main");
        assert_eq!(table_name(255), "local");
        assert_eq!(table_name(253), "default");
        assert_eq!(table_name(100), "100");
    }

    #[test]
    fn the_most_specific_refusing_route_wins() {
        let routes = [
            route(RouteKind::Unreachable, "10.9.0.0/16", TABLE_MAIN),
            route(RouteKind::Unreachable, "10.9.9.0/24", 100),
            route(RouteKind::Prohibit, "10.9.9.9/32", TABLE_MAIN),
            gateway_route("10.9.9.0/28", "10.231.0.254", TABLE_MAIN),
        ];
        let dst = "10.9.9.9".parse().unwrap();
        let found = most_specific(RouteKind::Unreachable, dst, &routes).unwrap();
        assert_eq!(found.prefix, prefix("10.9.9.0/24"));
        let found = most_specific(RouteKind::Prohibit, dst, &routes).unwrap();
        assert_eq!(found.prefix, prefix("10.9.9.9/32"));
        assert_eq!(most_specific(RouteKind::Blackhole, dst, &routes), None);
    }

    /// A throwaway network namespace `nlenr3-PID-N` with lo and a veth pair, both ends
    /// inside: veth0 (10.231.0.1/24, fd00:231::1/64) and veth1 (no address), all up.
    /// Deleted on drop, also when a test panics.
    pub(in crate::enrich) struct Lab {
        pub name: String,
    }

    impl Lab {
        pub fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("nlenr3-{}-{n}", std::process::id());
            run("ip", &["netns", "add", &name]);
            let lab = Lab { name };
            lab.ip("link set lo up");
            lab.ip("link add veth0 type veth peer name veth1");
            lab.ip("addr add 10.231.0.1/24 dev veth0");
            lab.ip("addr add fd00:231::1/64 dev veth0 nodad");
            lab.ip("link set veth0 up");
            lab.ip("link set veth1 up");
            lab
        }

        /// `ip -n LAB ARGS`, which must succeed.
        pub fn ip(&self, args: &str) {
            assert!(self.try_ip(args), "ip -n {} {args} failed", self.name);
        }

        /// `ip -n LAB ARGS`: did it succeed?
        pub fn try_ip(&self, args: &str) -> bool {
            let mut all = vec!["-n", &self.name];
            all.extend(args.split_whitespace());
            Command::new("ip")
                .args(all)
                .status()
                .is_ok_and(|s| s.success())
        }

        /// `ip netns exec LAB ARGS...`, which must succeed.
        pub fn exec(&self, args: &[&str]) {
            let mut all = vec!["netns", "exec", &self.name];
            all.extend(args);
            run("ip", &all);
        }

        /// Runs `f` inside the namespace.
        pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let inode = std::fs::metadata(format!("/run/netns/{}", self.name))
                .expect("stat the lab namespace")
                .ino();
            run_in_netns(inode, None, f).expect("enter the lab namespace")
        }

        /// The interface's index inside the namespace.
        pub fn index(&self, dev: &'static str) -> u32 {
            self.run(move || Dev::from_index_of(dev))
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            let deleted = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status()
                .is_ok_and(|s| s.success());
            if !deleted {
                eprintln!("NL-WARN could not delete netns {}", self.name);
            }
        }
    }

    impl Dev {
        fn from_index_of(name: &str) -> u32 {
            let name = std::ffi::CString::new(name).unwrap();
            // SAFETY: a valid NUL-terminated string.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        }
    }

    fn run(program: &str, args: &[&str]) {
        let status = Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(status.success(), "{program} {args:?} failed: {status}");
    }

    #[test]
    fn looks_up_routes_in_a_namespace() {
        if !is_root() {
            println!("NL-SKIP looks_up_routes_in_a_namespace: needs root");
            return;
        }
        let lab = Lab::new();
        lab.ip("route add unreachable 10.231.9.0/24");
        lab.ip("route add prohibit 10.231.8.0/24");
        lab.ip("route add blackhole 10.231.7.0/24");
        lab.ip("route add throw 10.231.70.0/24");
        lab.ip("route add 10.231.60.0/24 via 10.231.0.254");
        lab.ip("route add 10.231.61.0/24 via 10.231.0.254 table 100");
        lab.ip("rule add to 10.231.61.0/24 table 100");
        lab.ip("-6 route add unreachable fd00:231:9::/48");
        let veth0 = lab.index("veth0");
        let (routes, defaults) = lab.run(|| {
            let ask = |d: &str| route_get(d.parse().unwrap()).unwrap();
            let routes = [
                "10.231.9.9",
                "10.231.8.8",
                "10.231.7.7",
                "10.231.70.5",
                "10.231.60.5",
                "10.231.61.5",
                "10.231.0.1",
                "10.231.99.9",
                "fd00:231:9::1",
                "fd00:231:99::1",
            ]
            .map(ask);
            assert_eq!(ask("::ffff:10.231.9.9"), routes[0]);
            (routes, default_routes(Family::V4).unwrap())
        });
        assert_eq!(defaults, []);
        let said: Vec<String> = routes
            .iter()
            .zip([
                "10.231.9.9",
                "10.231.8.8",
                "10.231.7.7",
                "10.231.70.5",
                "10.231.60.5",
                "10.231.61.5",
                "10.231.0.1",
                "10.231.99.9",
                "fd00:231:9::1",
                "fd00:231:99::1",
            ])
            .map(|(info, dst)| say(dst, info, &defaults))
            .collect();
        assert_eq!(
            said,
            [
                "route to 10.231.9.9: `unreachable` route 10.231.9.0/24 in table main",
                "route to 10.231.8.8: `prohibit` route 10.231.8.0/24 in table main",
                "route to 10.231.7.7: `blackhole` route 10.231.7.0/24 in table main",
                "no route to 10.231.70.5: `throw` route 10.231.70.0/24 in table main ends \
                 the look-up there, and no other table has a route",
                "route to 10.231.60.5: via 10.231.0.254 dev veth0, source 10.231.0.1",
                "route to 10.231.61.5: via 10.231.0.254 dev veth0, source 10.231.0.1 \
                 (table 100)",
                "route to 10.231.0.1: a local address of this namespace",
                "no route to 10.231.99.9: no default route in table main (and no more \
                 specific one)",
                "route to fd00:231:9::1: `unreachable` route fd00:231:9::/48 in table main",
                "no route to fd00:231:99::1: no default route in table main (and no more \
                 specific one)",
            ]
        );
        let RouteInfo::Found(via) = &routes[4] else {
            panic!("{:?}", routes[4]);
        };
        assert_eq!(via.dev, dev(veth0, "veth0"));
        assert_eq!(via.kind, RouteKind::Unicast);
        assert_eq!(via.table, TABLE_MAIN);
        assert!(matches!(
            routes[0],
            RouteInfo::Refused {
                errno: libc::EHOSTUNREACH,
                ..
            }
        ));
        assert!(matches!(
            routes[1],
            RouteInfo::Refused {
                errno: libc::EACCES,
                ..
            }
        ));

        lab.ip("route add default via 10.231.0.254");
        let (found, defaults) = lab.run(|| {
            (
                route_get("10.231.99.9".parse().unwrap()).unwrap(),
                default_routes(Family::V4).unwrap(),
            )
        });
        assert_eq!(
            say("10.231.99.9", &found, &defaults),
            "route to 10.231.99.9: via 10.231.0.254 dev veth0, source 10.231.0.1"
        );
        assert_eq!(defaults.len(), 1, "{defaults:?}");
        assert_eq!(defaults[0].gateway, Some("10.231.0.254".parse().unwrap()));
        assert_eq!(defaults[0].dev, dev(veth0, "veth0"));
    }
}
