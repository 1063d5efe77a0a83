//! The firewall rung: the nftables and iptables-legacy rules that would drop or reject the
//! handshake.

use std::net::{IpAddr, SocketAddr};

use super::checklist::{Status, Walk};
use crate::enrich::{firewall, iptables, nft, route};
use crate::ladder::Layer;

/// The local rules that would drop or reject the handshake, output and input paths, with
/// their counters. Only a reading: the connection decides whether one of them is hit.
pub(super) fn firewall_rung(walk: &mut Walk, dst: SocketAddr) {
    let src_ip = match route::route_get(dst.ip()) {
        Ok(route::RouteInfo::Found(r)) => r.pref_src,
        _ => None,
    }
    .unwrap_or(if dst.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    });
    let src = SocketAddr::new(src_ip, 0);
    let out = firewall::Packet {
        l4proto: 6,
        src,
        dst,
        iif: None,
        oif: None,
    };
    let back = firewall::Packet {
        l4proto: 6,
        src: dst,
        dst: src,
        iif: None,
        oif: None,
    };
    let mut evidence = Vec::new();
    let mut hits = Vec::new();
    let mut maybe = 0usize;
    for (packet, outgoing) in [(out, true), (back, false)] {
        let mut rules = Vec::new();
        match nft::terminal_rules(&packet) {
            Ok(r) => rules.extend(r),
            Err(e) => evidence.push(format!("could not read the nftables rules: {e:#}")),
        }
        match iptables::terminal_rules(&packet) {
            Ok(r) => rules.extend(r),
            Err(e) => evidence.push(format!("could not read the iptables-legacy rules: {e:#}")),
        }
        for r in rules {
            let on_path = match r.hook {
                Some(firewall::Hook::Output | firewall::Hook::Postrouting) => outgoing,
                Some(firewall::Hook::Prerouting | firewall::Hook::Input) => !outgoing,
                Some(firewall::Hook::Forward) => false,
                None | Some(firewall::Hook::Other) => true,
            };
            if !on_path {
                continue;
            }
            match r.matches {
                firewall::Matches::Yes => hits.push((r, outgoing)),
                firewall::Matches::Unknown => maybe += 1,
                firewall::Matches::No => {}
            }
        }
    }
    for (r, outgoing) in &hits {
        let verb = match &r.action {
            firewall::Action::Drop => "drop".to_owned(),
            firewall::Action::Reject(with) if with.is_empty() => "reject".to_owned(),
            firewall::Action::Reject(with) => format!("reject with {with}"),
        };
        let counter = r.packets.map_or(" (no counter)".to_owned(), |n| {
            format!(" ({n} packets so far)")
        });
        evidence.push(format!(
            "would {verb} the {}: {} {}{counter}",
            if *outgoing {
                "SYN on its way out"
            } else {
                "answer on its way in"
            },
            r.backend.name(),
            firewall::describe_rule(r)
        ));
    }
    if maybe > 0 {
        evidence.push(format!(
            "{maybe} more drop or reject rule{} test what the rules alone cannot tell (connection \
             state, sets, marks)",
            crate::enrich::plural(maybe as u64)
        ));
    }
    let (status, summary) = if hits.is_empty() {
        (
            Status::Passed,
            "no local rule drops or rejects this flow (output and input paths)".to_owned(),
        )
    } else {
        (
            Status::Warning,
            format!(
                "{} local rule{} would drop or reject this flow if the packets reach {}; the \
                 connection below tells",
                hits.len(),
                crate::enrich::plural(hits.len() as u64),
                if hits.len() == 1 { "it" } else { "them" }
            ),
        )
    };
    walk.set(Layer::Firewall, status, summary, evidence);
}
