//! The link, address and route rungs, read over rtnetlink, with the local ports left toward
//! the destination on the address rung.

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;

use super::checklist::{Status, Verdict, Walk};
use crate::enrich::{link, neigh, ports, route};
use crate::ladder::{self, Cause, Code, Layer, StepCtx};

/// Link, address and route toward `dst`, from rtnetlink. Returns the verdict of the first one
/// that fails. `note`: why this destination (the nameserver instead of the target).
pub(super) fn lower_rungs(
    walk: &mut Walk,
    dst: SocketAddr,
    note: Option<&str>,
) -> Result<Option<Verdict>> {
    let ip = dst.ip();
    let info = route::route_get(ip)?;
    let links = link::links_and_addrs()?;
    let defaults = route::default_routes(route::Family::of(ip))?;
    let base: Vec<String> = note.map(str::to_owned).into_iter().collect();
    let with = |mut more: Vec<String>| {
        let mut e = base.clone();
        e.append(&mut more);
        e
    };
    let how = format!("read over rtnetlink (as `ip route get {ip}`, `ip -br link`, `ip -br addr`)");
    let family = route::Family::of(ip);
    let same_family = |a: &route::Prefix| a.addr.is_ipv4() == ip.is_ipv4() && !a.addr.is_loopback();
    let verdict = |code: Code, cause: Cause, rung: Layer, summary: String, evidence| Verdict {
        code,
        cause,
        rung,
        next: ladder::next_steps(
            code,
            Some(cause),
            &StepCtx {
                dst: Some(dst),
                ..StepCtx::default()
            },
        ),
        summary,
        evidence,
        failure: None,
    };
    let r = match &info {
        route::RouteInfo::Found(r) => r.clone(),
        route::RouteInfo::Refused { errno, .. } => {
            let sentence = link::describe_egress(ip, &links, Some(&info));
            let down = links.iter().find(|l| {
                !l.usable()
                    && l.addrs
                        .iter()
                        .any(|a| same_family(a) && a.len > 0 && a.contains(ip))
            });
            let has_family = links.iter().any(|l| l.addrs.iter().any(&same_family));
            let up: Vec<&str> = links
                .iter()
                .filter(|l| l.usable() && l.name != "lo")
                .map(|l| l.name.as_str())
                .collect();
            // Link and address when the kernel has no usable route: the interfaces up, and
            // whether any has an address of the destination's family.
            let up_rungs = |walk: &mut Walk, with_address: bool| {
                walk.set(
                    Layer::Link,
                    Status::Passed,
                    format!("interfaces up: {}", list_or_none(&up)),
                    with(vec![how.clone()]),
                );
                if with_address {
                    walk.set(
                        Layer::Address,
                        if has_family {
                            Status::Passed
                        } else {
                            Status::Warning
                        },
                        format!(
                            "{} {} addresses",
                            if has_family {
                                "interfaces have"
                            } else {
                                "no interface has"
                            },
                            family.name()
                        ),
                        with(vec![addresses_line(&links)]),
                    );
                }
            };
            let net_unreachable = *errno == libc::ENETUNREACH;
            if net_unreachable && down.is_some() {
                return Ok(Some(verdict(
                    Code::NetUnreachable,
                    Cause::NetUnreachable,
                    Layer::Link,
                    sentence,
                    with(vec![how]),
                )));
            }
            up_rungs(walk, has_family || !net_unreachable);
            if net_unreachable {
                if !has_family {
                    return Ok(Some(verdict(
                        Code::NetUnreachable,
                        Cause::NetUnreachable,
                        Layer::Address,
                        format!("no interface has an {} address: {sentence}", family.name()),
                        with(vec![how]),
                    )));
                }
                return Ok(Some(verdict(
                    Code::NetUnreachable,
                    Cause::NetUnreachable,
                    Layer::Route,
                    route::describe_route(ip, &info, &defaults),
                    with(vec![how]),
                )));
            }
            let cause = match *errno {
                libc::EACCES => Cause::RouteProhibited,
                libc::EHOSTUNREACH => Cause::HostUnreachable,
                _ => Cause::RouteRefused,
            };
            return Ok(Some(verdict(
                Code::NoRoute,
                cause,
                Layer::Route,
                route::describe_route(ip, &info, &defaults),
                with(vec![format!(
                    "the kernel refuses the look-up: {} ({how})",
                    std::io::Error::from_raw_os_error(*errno)
                )]),
            )));
        }
    };
    if r.kind == route::RouteKind::Local {
        let line = format!("{ip} is an address of this host: the connection stays on it");
        for rung in [Layer::Link, Layer::Address, Layer::Route] {
            walk.set(rung, Status::Passed, line.clone(), with(vec![how.clone()]));
        }
        local_ports(walk, dst);
        return Ok(None);
    }
    // Link: the egress interface and, for a VLAN, its parent.
    let egress = r
        .dev
        .as_ref()
        .and_then(|d| links.iter().find(|l| l.index == d.index));
    let Some(egress) = egress else {
        walk.set(
            Layer::Link,
            Status::Warning,
            "the route names no interface this namespace shows".into(),
            with(vec![how.clone()]),
        );
        walk.set(
            Layer::Address,
            Status::Skipped,
            "no egress interface".into(),
            Vec::new(),
        );
        walk.set(
            Layer::Route,
            Status::Passed,
            route::describe_route(ip, &info, &defaults),
            with(vec![how]),
        );
        return Ok(None);
    };
    let parent = egress
        .vlan
        .as_ref()
        .and_then(|v| links.iter().find(|l| l.index == v.parent.index));
    let vlan = egress.vlan.as_ref().map_or(String::new(), |v| {
        format!(", VLAN {} on {}", v.id, v.parent.name)
    });
    let link_line = format!(
        "egress {}: {}, {}, state {}{vlan}",
        egress.name,
        if egress.admin_up { "up" } else { "down" },
        match (egress.carrier, egress.admin_up) {
            (true, _) => "carrier",
            (false, true) => "no carrier (the other end or the cable is down)",
            (false, false) => "no carrier",
        },
        egress.oper_state
    );
    if !egress.usable() || parent.is_some_and(|p| !p.usable()) {
        return Ok(Some(verdict(
            Code::NetUnreachable,
            Cause::LinkDown,
            Layer::Link,
            link::describe_egress(ip, &links, Some(&info)),
            with(vec![link_line, how]),
        )));
    }
    walk.set(
        Layer::Link,
        Status::Passed,
        format!("{} is up with carrier{vlan}", egress.name),
        with(vec![link_line]),
    );
    // Address: a source of the destination's family on the egress interface.
    let sources: Vec<String> = egress
        .addrs
        .iter()
        .filter(|a| {
            same_family(a)
                && !matches!(a.addr, IpAddr::V6(v6) if v6.is_unicast_link_local()
                    && !matches!(ip, IpAddr::V6(d) if d.is_unicast_link_local()))
        })
        .map(ToString::to_string)
        .collect();
    let src_line = r.pref_src.map_or(String::new(), |s| {
        format!("; the kernel would use source {s}")
    });
    if sources.is_empty() {
        walk.set(
            Layer::Address,
            Status::Warning,
            format!(
                "{} has no {} address of its own{src_line}",
                egress.name,
                family.name()
            ),
            with(vec![addresses_line(&links)]),
        );
    } else {
        walk.set(
            Layer::Address,
            Status::Passed,
            format!("{} has {}{src_line}", egress.name, sources.join(", ")),
            Vec::new(),
        );
    }
    local_ports(walk, dst);
    // Route: what the kernel picks, the default routes, and the next hop's neighbour entry.
    let mut evidence = with(vec![how]);
    evidence.push(match defaults.first() {
        Some(_) => format!(
            "default route{}: {}",
            if defaults.len() == 1 { "" } else { "s" },
            defaults
                .iter()
                .map(
                    |d| route::describe_route(ip, &route::RouteInfo::Found(d.clone()), &[])
                        .replacen(&format!("route to {ip}: "), "", 1)
                )
                .collect::<Vec<_>>()
                .join("; ")
        ),
        None => format!("no {} default route in table main", family.name()),
    });
    let mut status = Status::Passed;
    if r.kind == route::RouteKind::Unicast {
        let hop = r.gateway.unwrap_or(ip);
        let table = neigh::neighbours(Some(egress.index)).unwrap_or_default();
        let sentence = neigh::describe_neighbour(hop, &table);
        if table.iter().any(|n| n.addr == hop && n.state == "FAILED") {
            status = Status::Warning;
        }
        evidence.push(sentence);
    }
    walk.set(
        Layer::Route,
        status,
        route::describe_route(ip, &info, &defaults),
        evidence,
    );
    Ok(None)
}

/// Adds the local ports toward `dst` to the address rung (the look-ups #028 reads): the
/// ephemeral range, the connections toward `dst` holding a port (open or in TIME_WAIT), and
/// whether TIME_WAIT ports are reused. A warning when at least half the range is held toward
/// `dst`; with none left, connect() fails with EADDRNOTAVAIL, which the connection then shows.
fn local_ports(walk: &mut Walk, dst: SocketAddr) {
    let read = || -> Result<(String, u64, u64)> {
        let (low, high) = ports::port_range()?;
        let size = (u64::from(high) + 1).saturating_sub(low.into()).max(1);
        let usage = ports::port_use(Some(dst))?;
        let held = usage.open_to_dst + usage.time_wait_to_dst;
        let reuse = ports::tw_reuse().map_or("?".to_owned(), |r| r.to_string());
        Ok((
            format!(
                "local ports: ip_local_port_range {low}-{high} ({size} port{}); toward {dst} \
                 {} open and {} in TIME_WAIT ({} TIME_WAIT in all); tcp_tw_reuse={reuse}",
                crate::enrich::plural(size),
                usage.open_to_dst,
                usage.time_wait_to_dst,
                usage.time_wait
            ),
            held,
            size,
        ))
    };
    let c = walk.get(Layer::Address);
    match read() {
        Ok((line, held, size)) => {
            c.evidence.push(line);
            if held * 2 >= size && c.status == Status::Passed {
                c.status = Status::Warning;
                c.summary += &if held >= size {
                    format!("; but no local port is left toward {dst}")
                } else {
                    format!("; but {held} of the {size} local ports are held toward {dst}")
                };
            }
        }
        Err(e) => c
            .evidence
            .push(format!("could not count the local ports: {e:#}")),
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none but lo".into()
    } else {
        names.join(", ")
    }
}

/// "addresses: eth0 10.0.0.2/24, fd00::2/64; lo 127.0.0.1/8".
fn addresses_line(links: &[link::LinkInfo]) -> String {
    let parts: Vec<String> = links
        .iter()
        .filter(|l| !l.addrs.is_empty())
        .map(|l| {
            let a: Vec<String> = l.addrs.iter().map(ToString::to_string).collect();
            format!("{} {}", l.name, a.join(", "))
        })
        .collect();
    format!(
        "addresses: {}",
        list_or_none(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    )
}
