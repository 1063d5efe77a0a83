//! The evidence lines of a failure: what the kernel showed, with counts, in plain words.
use netladder_common::eflag;

use super::{errno, Drops, Observation};

/// "nftables", "iptables-legacy" ...: which netfilter path dropped, from the drop location.
pub fn firewall_backend(location: Option<&str>) -> &'static str {
    let func = location.map(|l| l.split('+').next().unwrap_or(l));
    match func {
        Some("nft_do_chain") => "nftables",
        Some("ipt_do_table") | Some("ip6t_do_table") => "iptables-legacy",
        // Every backend on older kernels, iptables/conntrack on newer ones: not a claim to make.
        Some("nf_hook_slow") => "netfilter",
        _ => "netfilter",
    }
}

/// "the local firewall (nftables, output)".
pub fn firewall_name(d: &Drops) -> String {
    let dir = match (d.outgoing, d.incoming) {
        (true, false) => ", output",
        (false, true) => ", input",
        (true, true) => ", output and input",
        _ => "",
    };
    format!(
        "the local firewall ({}{dir})",
        firewall_backend(d.location.as_deref())
    )
}

pub fn syscall_line(call: &str, err: i32) -> String {
    format!("{call}() returned {}", errno::name(err))
}

pub fn conn_lines(o: &Observation) -> Vec<String> {
    let mut lines = Vec::new();
    let syns = o.syn_retrans + 1;
    lines.push(format!(
        "{syns} SYN{} sent ({} retransmit{}, tcp:tcp_retransmit_skb)",
        if syns == 1 { "" } else { "s" },
        o.syn_retrans,
        if o.syn_retrans == 1 { "" } else { "s" },
    ));
    if o.flags & eflag::RST_RECEIVED != 0 {
        lines.push("RST received in SYN_SENT (tcp:tcp_receive_reset)".into());
    }
    let d = &o.drops;
    if d.netfilter > 0 {
        let at = d
            .location
            .as_deref()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        lines.push(format!(
            "{} handshake packet{} dropped by netfilter (skb:kfree_skb NETFILTER_DROP{at}; {}{})",
            d.netfilter,
            if d.netfilter == 1 { "" } else { "s" },
            direction(d),
            in_netns(d, o.proc.netns)
        ));
    }
    if d.no_socket > 0 {
        lines.push(format!(
            "SYN reached a local stack with no socket for it: {} drop{} NO_SOCKET (skb:kfree_skb{})",
            d.no_socket,
            if d.no_socket == 1 { "" } else { "s" },
            in_netns(d, o.proc.netns)
        ));
    }
    if d.other > 0 {
        lines.push(format!(
            "{} other handshake drop{} (last reason {})",
            d.other,
            if d.other == 1 { "" } else { "s" },
            d.last_reason.as_deref().unwrap_or("unknown")
        ));
    }
    if let Some((from, icmp_type, code)) = o.icmp {
        lines.push(format!(
            "ICMP destination unreachable ({}) from {from} (skb:consume_skb in the ICMP receive path)",
            unreachable_name(from.is_ipv6(), icmp_type, code)
        ));
    }
    let after = o
        .duration_ns
        .map(|ns| format!(" after {:.1} s", ns as f64 / 1e9))
        .unwrap_or_default();
    if o.err != 0 {
        lines.push(format!("socket error {}{after}", errno::name(o.err)));
    } else if o.flags & eflag::APP_GAVE_UP != 0 {
        lines.push(format!(
            "the application closed the socket while still in SYN_SENT{after}"
        ));
    }
    lines
}

/// "; in netns N" when the drop happened in another namespace than the client's.
fn in_netns(d: &Drops, client_netns: u32) -> String {
    if d.netns != 0 && d.netns != client_netns {
        format!(", in netns {}", d.netns)
    } else {
        String::new()
    }
}

/// The name of an ICMP / ICMPv6 destination-unreachable code.
fn unreachable_name(v6: bool, icmp_type: u8, code: u8) -> String {
    let name = match (v6, code) {
        (false, 0) => "net unreachable",
        (false, 1) => "host unreachable",
        (false, 3) => "port unreachable",
        (false, 9 | 10) => "network or host administratively prohibited",
        (false, 13) => "communication administratively prohibited",
        (true, 0) => "no route to destination",
        (true, 1) => "administratively prohibited",
        (true, 3) => "address unreachable",
        (true, 4) => "port unreachable",
        (true, 5 | 6) => "source address failed policy / reject route",
        _ => return format!("type {icmp_type} code {code}"),
    };
    format!("{name}, code {code}")
}

fn direction(d: &Drops) -> String {
    match (d.outgoing, d.incoming) {
        (true, false) => "outgoing packet".into(),
        (false, true) => format!("incoming packet, interface index {}", d.ifindex),
        _ => "outgoing and incoming packets".into(),
    }
}
