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

/// "the local firewall (nftables, output)", or "the firewall of network namespace N on this
/// host (...)" when the drop happened in another namespace than the client's (a peer, a router).
pub fn firewall_name(d: &Drops, client_netns: u32) -> String {
    let dir = match (d.outgoing, d.incoming) {
        (true, false) => ", output",
        (false, true) => ", input",
        (true, true) => ", output and input",
        _ => "",
    };
    let whose = if d.netns != 0 && client_netns != 0 && d.netns != client_netns {
        format!("the firewall of network namespace {} on this host", d.netns)
    } else {
        "the local firewall".to_owned()
    };
    format!("{whose} ({}{dir})", firewall_backend(d.location.as_deref()))
}

/// A drop reason (its BTF name without SKB_DROP_REASON_) in words.
pub fn reason_words(reason: &str) -> String {
    let words = match reason {
        "IP_RPFILTER" => "the reverse-path filter refused it (rp_filter)",
        "IP_INNOROUTES" => {
            "no route on input: the reverse-path check (rp_filter) found no route back, or the destination has none"
        }
        "IP_OUTNOROUTES" => "no route to send it",
        "TCP_LISTEN_OVERFLOW" => "the listener's accept queue was full",
        "SOCKET_BACKLOG" => "the socket's backlog was full",
        "TCP_REQQFULLDROP" => "the listener's SYN queue was full",
        "NEIGH_FAILED" => "the next hop's address resolution failed",
        "NEIGH_QUEUEFULL" => "too many packets waited for address resolution",
        "NOT_SPECIFIED" => "the kernel gave no reason",
        "NETFILTER_DROP" => "a netfilter rule dropped it",
        "NO_SOCKET" => "no socket wanted it",
        _ => return format!("reason {reason}"),
    };
    format!("{words}, {reason}")
}

/// How evidence names a socket call: `connect()`, or for a send seen inside the UDP stack,
/// where the system call that carried it is not known, all three it may have been.
pub fn call_words(call: &str) -> String {
    match call {
        "send" => "a UDP send (sendto(), sendmsg() or sendmmsg())".to_owned(),
        _ => format!("{call}()"),
    }
}

pub fn syscall_line(call: &str, err: i32) -> String {
    format!("{} returned {}", call_words(call), errno::name(err))
}

/// connect() out of local ports, read at the socket's state change (`eflag::NO_LOCAL_PORT`).
pub fn no_local_port_line() -> String {
    "connect() failed with EADDRNOTAVAIL: it put the socket in SYN_SENT and the kernel, finding \
     no free local port for it, put it back to CLOSE before any SYN (sock:inet_sock_set_state)"
        .to_owned()
}

/// A bind() that never reached the kernel's post-bind step (`eflag::BIND_INCOMPLETE`): its
/// error follows from whether its address is this host's.
pub fn bind_incomplete_line(err: i32) -> String {
    let why = if err == 99 {
        "the kernel's check of the address during the call (its local route table lookup, \
         fib:fib_table_lookup) did not find it on this host"
    } else {
        "its address is this host's, so what it could not have was the port"
    };
    format!(
        "bind() failed with {}: the call started (cgroup bind program) but never reached the \
         kernel's post-bind step, which runs once the port is the socket's; {why}",
        errno::name(err)
    )
}

/// listen() failing, read at the socket's state change (`eflag::LISTEN_STATE`).
pub fn listen_state_line() -> String {
    "listen() failed with EADDRINUSE: the kernel moved the socket to LISTEN, could not give it \
     its port, and moved it back to CLOSE before it ever took a connection \
     (sock:inet_sock_set_state, in the caller)"
        .to_owned()
}

/// A call's failure read at the kernel's route lookup during the call (`eflag::ROUTE_LOOKUP`).
pub fn route_lookup_line(call: &str, err: i32) -> String {
    let found = match err {
        101 => "no route matched the destination",
        113 => "the destination's route is of type unreachable",
        13 => "the destination's route is of type prohibit",
        22 => "the destination's route is of type blackhole",
        _ => "it found no usable route",
    };
    format!(
        "{} failed with {}: the kernel's route lookup during the call (fib tracepoints) answered \
         that {found}",
        call_words(call),
        errno::name(err)
    )
}

pub fn conn_lines(o: &Observation) -> Vec<String> {
    let mut lines = Vec::new();
    let syns = o.syn_retrans + 1;
    if o.flags & eflag::RETRIES_NOT_SENT != 0 {
        lines.push(format!(
            "the kernel tried the SYN {syns} times, but fewer retries left this host's TCP \
             (tcp:tcp_retransmit_skb): something on this host's way out stopped them, such as \
             an OUTPUT firewall rule or a send error"
        ));
    } else {
        lines.push(format!(
            "{syns} SYN{} sent ({} retransmit{}, tcp:tcp_retransmit_skb)",
            if syns == 1 { "" } else { "s" },
            o.syn_retrans,
            if o.syn_retrans == 1 { "" } else { "s" },
        ));
    }
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
        // Where: the location and the packet's direction are the other drop's own unless a
        // netfilter drop (listed above) took them.
        let at = match (&d.location, d.netfilter) {
            (Some(l), 0) => format!(" at {l}; {}", direction(d)),
            _ => String::new(),
        };
        lines.push(format!(
            "{} other handshake drop{} on this host (skb:kfree_skb, last: {}{at}{})",
            d.other,
            if d.other == 1 { "" } else { "s" },
            reason_words(d.last_reason.as_deref().unwrap_or("unknown")),
            in_netns(d, o.proc.netns)
        ));
    }
    if let Some((from, icmp_type, code)) = o.icmp {
        lines.push(format!(
            "ICMP destination unreachable ({}) from {from}, seen in the ICMP receive path",
            unreachable_name(from.is_ipv6(), icmp_type, code)
        ));
    }
    let after = o
        .duration_ns
        .map(|ns| format!(" after {:.1} s", ns as f64 / 1e9))
        .unwrap_or_default();
    if o.flags & eflag::ERR_FROM_ICMP != 0 {
        lines.push(format!(
            "the application had already read the socket's error (SO_ERROR) when it closed it in SYN_SENT{after}: {} is what that ICMP answer gives",
            errno::name(o.err)
        ));
    } else if o.flags & eflag::ERR_SOFT != 0 {
        lines.push(format!(
            "the application had already read the socket's error (SO_ERROR) when it closed it in SYN_SENT{after}: {} was still pending (sk_err_soft)",
            errno::name(o.err)
        ));
    } else if o.err != 0 {
        lines.push(format!("socket error {}{after}", errno::name(o.err)));
    } else if o.flags & eflag::APP_GAVE_UP != 0 {
        lines.push(format!(
            "the application closed the socket while still in SYN_SENT{after}"
        ));
    }
    lines
}

/// "; in netns N" when the drop happened in another namespace than the client's.
pub fn in_netns(d: &Drops, client_netns: u32) -> String {
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
