//! How nft prints things: the values of fields, what a `reject` sends, the `--reject-with` of
//! an iptables-nft REJECT target, and verdicts.
use std::net::IpAddr;

use super::expressions::{IPV4, IPV6, NF_DROP};
use crate::enrich::nfnl::{native_u32, text};

/// How values of a field print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fmt {
    /// An address of `full` bytes; shorter data is a prefix.
    Addr(usize),
    Port,
    Proto,
    NfProto,
    IfName,
    /// A host-endian u32 (ifindex, mark).
    U32,
    CtState,
    Hex,
}

pub(super) fn hex(data: &[u8]) -> String {
    let digits: String = data.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

/// The length of a contiguous network mask.
pub(super) fn prefix_len(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let byte = |i: u32| {
        !(0xffu8
            .checked_shr(ones.saturating_sub(i * 8).min(8))
            .unwrap_or(0))
    };
    mask.iter()
        .copied()
        .eq((0..mask.len() as u32).map(byte))
        .then_some(ones)
}

/// One value of a field, as nft prints it.
pub(super) fn value(fmt: Fmt, data: &[u8]) -> String {
    match (fmt, data) {
        (Fmt::Addr(full), _) => {
            let mut b = data.to_vec();
            b.resize(full.max(4), 0);
            let ip = match <[u8; 16]>::try_from(&b[..]) {
                Ok(o) => IpAddr::from(o),
                Err(_) => IpAddr::from([b[0], b[1], b[2], b[3]]),
            };
            match data.len() < full {
                true => format!("{ip}/{}", data.len() * 8),
                false => ip.to_string(),
            }
        }
        (Fmt::Port, [a, b]) => u16::from_be_bytes([*a, *b]).to_string(),
        (Fmt::Proto, [p]) => match p {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            33 => "dccp".into(),
            136 => "udplite".into(),
            58 => "ipv6-icmp".into(),
            132 => "sctp".into(),
            _ => p.to_string(),
        },
        (Fmt::NfProto, [IPV4]) => "ipv4".into(),
        (Fmt::NfProto, [IPV6]) => "ipv6".into(),
        // A name without its NUL is a prefix match: "eth*".
        (Fmt::IfName, _) => {
            let star = if data.contains(&0) || data.len() >= 16 {
                ""
            } else {
                "*"
            };
            format!("\"{}{star}\"", text(data))
        }
        (Fmt::U32, _) => native_u32(data).map_or(hex(data), |v| v.to_string()),
        (Fmt::CtState, _) => {
            let v = native_u32(data).unwrap_or(0);
            let names = "invalid,established,related,new,,,untracked".split(',');
            let mut out: Vec<&str> = names
                .enumerate()
                .filter(|(i, n)| !n.is_empty() && v & 1 << i != 0)
                .map(|x| x.1)
                .collect();
            let rest = v & !0b100_1111;
            let rest = format!("{rest:#x}");
            if rest != "0x0" || out.is_empty() {
                out.push(&rest);
            }
            out.join(",")
        }
        _ => hex(data),
    }
}

/// What a `reject` sends, in nft's words: type 0 ICMP (ICMPv6 when `l3` is 6), 1 TCP reset,
/// 2 ICMPx; `code` indexes the matching code list.
pub(super) fn reject_text(kind: u32, code: u8, l3: Option<u8>) -> String {
    let (proto, names) = match (kind, l3) {
        (1, _) => return "tcp reset".into(),
        (2, _) => (
            "icmpx",
            "no-route,port-unreachable,host-unreachable,admin-prohibited",
        ),
        (0, Some(6)) => (
            "icmpv6",
            "no-route,admin-prohibited,,addr-unreachable,port-unreachable,policy-fail,reject-route",
        ),
        (0, _) => (
            "icmp",
            "net-unreachable,host-unreachable,prot-unreachable,port-unreachable,,,,,,\
             net-prohibited,host-prohibited,,,admin-prohibited",
        ),
        _ => return format!("type {kind} code {code}"),
    };
    match names.split(',').nth(code.into()).filter(|n| !n.is_empty()) {
        Some(n) => format!("{proto} {n}"),
        None => format!("{proto} code {code}"),
    }
}

/// The `--reject-with` of an iptables-nft REJECT target, from its info (enum ipt_reject_with
/// or ip6t_reject_with, host order): (iptables option, the kind as nft words).
pub(super) fn xt_reject_with(family: u8, info: &[u8]) -> Option<(&'static str, &'static str)> {
    let with = native_u32(info)?;
    let v4 = [
        ("icmp-net-unreachable", "icmp net-unreachable"),
        ("icmp-host-unreachable", "icmp host-unreachable"),
        ("icmp-proto-unreachable", "icmp prot-unreachable"),
        ("icmp-port-unreachable", "icmp port-unreachable"),
        ("echo-reply", "echo-reply"),
        ("icmp-net-prohibited", "icmp net-prohibited"),
        ("icmp-host-prohibited", "icmp host-prohibited"),
        ("tcp-reset", "tcp reset"),
        ("icmp-admin-prohibited", "icmp admin-prohibited"),
    ];
    let v6 = [
        ("icmp6-no-route", "icmpv6 no-route"),
        ("icmp6-adm-prohibited", "icmpv6 admin-prohibited"),
        ("icmp6-not-neighbour", "icmpv6 not-neighbour"),
        ("icmp6-addr-unreachable", "icmpv6 addr-unreachable"),
        ("icmp6-port-unreachable", "icmpv6 port-unreachable"),
        ("echo-reply", "echo-reply"),
        ("tcp-reset", "tcp reset"),
        ("icmp6-policy-fail", "icmpv6 policy-fail"),
        ("icmp6-reject-route", "icmpv6 reject-route"),
    ];
    let table: &[_] = match family {
        IPV4 => &v4,
        IPV6 => &v6,
        _ => return None,
    };
    table.get(usize::try_from(with).ok()?).copied()
}

/// A verdict code: NF_ACCEPT 1, NFT_CONTINUE -1, NFT_BREAK -2, NFT_JUMP -3, NFT_GOTO -4,
/// NFT_RETURN -5; NF_DROP 0 and NF_QUEUE 3 in the low byte (errno or queue number above).
pub(super) fn verdict_text(code: i32, chain: &Option<String>) -> String {
    let target = chain.as_deref().unwrap_or("?");
    match code {
        1 => "accept".into(),
        -1 => "continue".into(),
        -2 => "break".into(),
        -3 => format!("jump {target}"),
        -4 => format!("goto {target}"),
        -5 => "return".into(),
        c if c >= 0 && c & 0xff == NF_DROP => "drop".into(),
        c if c >= 0 && c & 0xff == 3 => "queue".into(),
        c => format!("verdict {c}"),
    }
}
