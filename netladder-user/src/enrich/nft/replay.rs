//! Replaying a rule on the dropped packet: a model of the packet's headers and of the data
//! registers, and a walk over the rule's expressions that renders each test and evaluates it.
use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::IpAddr;

use super::expressions::*;
use super::render::{hex, prefix_len, reject_text, value, verdict_text, xt_reject_with, Fmt};
use crate::enrich::firewall::{Action, Matches, Packet};

/// Whether chains of `family` ever see an IPv4 (`v4`) or IPv6 packet.
pub(super) fn family_sees(family: u8, v4: bool) -> bool {
    match family {
        IPV4 => v4,
        IPV6 => !v4,
        ARP => false,
        _ => true,
    }
}

fn known(bytes: &[u8]) -> Vec<Option<u8>> {
    bytes.iter().map(|&b| Some(b)).collect()
}

/// The packet's headers as far as known (None: unknown byte).
pub(super) struct View {
    pub(super) v4: bool,
    net: Vec<Option<u8>>,
    transport: Vec<Option<u8>>,
}

impl View {
    pub(super) fn new(p: &Packet) -> View {
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            IpAddr::V4(v4) => Some(v4),
        };
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let (s, d) = (p.src.ip(), p.dst.ip());
        let (is_v4, mut net, proto_at, addrs) = match (v4(s), v4(d)) {
            (Some(s), Some(d)) => (true, vec![None; 12], 9, [s.octets(), d.octets()].concat()),
            _ => (false, vec![None; 8], 6, [v6(s), v6(d)].concat()),
        };
        net[proto_at] = Some(p.l4proto);
        net.extend(known(&addrs));
        // TCP, UDP, DCCP, SCTP and UDP-Lite headers start with the two ports.
        let ports = [p.src.port().to_be_bytes(), p.dst.port().to_be_bytes()].concat();
        let has_ports = matches!(p.l4proto, 6 | 17 | 33 | 132 | 136);
        let transport = if has_ports { known(&ports) } else { vec![] };
        View {
            v4: is_v4,
            net,
            transport,
        }
    }

    /// What `payload load` of those header bytes puts in a register.
    fn payload(&self, base: u32, offset: u32, len: u32) -> Vec<Option<u8>> {
        let header = match base {
            NETWORK => &self.net[..],
            TRANSPORT => &self.transport[..],
            _ => &[],
        };
        let at = |i| header.get(offset as usize + i).copied().flatten();
        (0..len as usize).map(at).collect()
    }

    /// What `meta load key` puts in a register.
    fn meta(&self, key: u32, p: &Packet) -> Vec<Option<u8>> {
        let ifname = |name: &Option<String>| match name {
            Some(n) => {
                let mut b = known(&n.as_bytes()[..n.len().min(15)]);
                b.resize(16, Some(0));
                b
            }
            None => vec![None; 16],
        };
        match key {
            META_L4PROTO => vec![self.net[if self.v4 { 9 } else { 6 }]],
            META_NFPROTO => vec![Some(if self.v4 { IPV4 } else { IPV6 })],
            META_PROTOCOL if self.v4 => vec![Some(0x08), Some(0x00)],
            META_PROTOCOL => vec![Some(0x86), Some(0xdd)],
            META_IIFNAME => ifname(&p.iif),
            META_OIFNAME => ifname(&p.oif),
            _ => vec![None; 16],
        }
    }
}

/// The data registers byte by byte (None: unknown): NFT_REG_1..4 are 16 bytes each and overlay
/// NFT_REG32_00..15 (8..23), 4 bytes each, after the verdict register's 16 bytes.
struct Regs([Option<u8>; 80]);

impl Regs {
    fn offset(reg: u32) -> Option<usize> {
        match reg {
            1..=4 => Some(reg as usize * 16),
            8..=23 => Some((reg as usize - 8) * 4 + 16),
            _ => None,
        }
    }

    /// Stores `bytes`, zero-padded to whole 4-byte words as the kernel does.
    fn store(&mut self, reg: u32, bytes: &[Option<u8>]) {
        let Some(start) = Regs::offset(reg) else {
            return;
        };
        for i in 0..bytes.len().next_multiple_of(4) {
            if let Some(slot) = self.0.get_mut(start + i) {
                *slot = bytes.get(i).copied().unwrap_or(Some(0));
            }
        }
    }

    /// `len` bytes of `reg`, when all are known.
    fn load(&self, reg: u32, len: usize) -> Option<Vec<u8>> {
        let start = Regs::offset(reg)?;
        self.0.get(start..start + len)?.iter().copied().collect()
    }
}

/// What a register holds, for rendering: the expression that loaded it, maybe masked.
#[derive(Clone, Copy, Debug)]
enum Src<'a> {
    Loaded(&'a Expr),
    Masked(&'a Expr, &'a [u8]),
    Unknown,
}

/// A rule walked against a packet.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Analysis {
    /// The rule in nft-like syntax.
    pub(super) text: String,
    /// What it does when that ends the packet's journey (drop or reject).
    pub(super) action: Option<Action>,
    pub(super) matches: Matches,
}

/// The state of a walk over a rule's expressions, rendering and evaluating them at once.
struct Walk<'a> {
    view: View,
    regs: Regs,
    srcs: HashMap<u32, Src<'a>>,
    parts: Vec<String>,
    /// 4 or 6 once the network protocol is known; the transport protocol once known.
    l3: Option<u8>,
    l4: Option<u8>,
    /// The `meta nfproto`/`meta l4proto` tests nft adds before `ip saddr`/`tcp dport` and hides
    /// when printing; we hide them too.
    l3_dep: Option<usize>,
    l4_dep: Option<usize>,
    /// A test read something the packet's model lacks.
    unknown: bool,
    /// A test failed.
    failed: bool,
}

impl<'a> Walk<'a> {
    fn load(&mut self, reg: u32, bytes: &[Option<u8>], src: Src<'a>) {
        self.regs.store(reg, bytes);
        self.srcs.insert(reg, src);
    }

    fn src(&self, reg: u32) -> Src<'a> {
        self.srcs.get(&reg).copied().unwrap_or(Src::Unknown)
    }

    /// The field a register holds, and how its values print.
    fn field(&mut self, src: Src) -> (String, Fmt) {
        let loaded = match src {
            Src::Loaded(e) | Src::Masked(e, _) => e,
            Src::Unknown => return ("<register>".into(), Fmt::Hex),
        };
        let (name, fmt, dep) = match *loaded {
            Expr::Payload {
                base: NETWORK,
                offset,
                len,
                ..
            } => {
                let l3 = self.l3.or(match offset {
                    9 | 12 | 16 => Some(4),
                    6 | 8 | 24 => Some(6),
                    _ => None,
                });
                let (name, fmt) = match (l3, offset, len) {
                    (Some(4), 9, 1) => ("ip protocol", Fmt::Proto),
                    (Some(4), 12, 1..=4) => ("ip saddr", Fmt::Addr(4)),
                    (Some(4), 16, 1..=4) => ("ip daddr", Fmt::Addr(4)),
                    (Some(6), 6, 1) => ("ip6 nexthdr", Fmt::Proto),
                    (Some(6), 8, 1..=16) => ("ip6 saddr", Fmt::Addr(16)),
                    (Some(6), 24, 1..=16) => ("ip6 daddr", Fmt::Addr(16)),
                    _ => return (format!("@nh,{},{}", offset * 8, len * 8), Fmt::Hex),
                };
                (name.to_string(), fmt, self.l3_dep.take())
            }
            Expr::Payload {
                base: TRANSPORT,
                offset: off @ (0 | 2),
                len: 2,
                ..
            } => {
                let proto = match self.l4 {
                    Some(p @ (6 | 17 | 33 | 132 | 136)) => value(Fmt::Proto, &[p]),
                    _ => "th".to_string(),
                };
                let dep = if proto == "th" {
                    None
                } else {
                    self.l4_dep.take()
                };
                let port = if off == 0 { "sport" } else { "dport" };
                (format!("{proto} {port}"), Fmt::Port, dep)
            }
            Expr::Payload {
                base, offset, len, ..
            } => {
                let h = ["ll", "nh", "th"].get(base as usize).unwrap_or(&"ih");
                (format!("@{h},{},{}", offset * 8, len * 8), Fmt::Hex, None)
            }
            Expr::Meta { key, .. } => {
                let (name, fmt) = match key {
                    META_L4PROTO => ("meta l4proto", Fmt::Proto),
                    META_NFPROTO => ("meta nfproto", Fmt::NfProto),
                    META_PROTOCOL => ("meta protocol", Fmt::Hex),
                    META_IIFNAME => ("iifname", Fmt::IfName),
                    META_OIFNAME => ("oifname", Fmt::IfName),
                    4 => ("iif", Fmt::U32),
                    5 => ("oif", Fmt::U32),
                    3 => ("meta mark", Fmt::U32),
                    k => return (format!("meta key {k}"), Fmt::Hex),
                };
                (name.to_string(), fmt, None)
            }
            Expr::Ct { key: 0, .. } => ("ct state".into(), Fmt::CtState, None),
            Expr::Ct { key, .. } => (format!("ct key {key}"), Fmt::Hex, None),
            _ => ("<register>".into(), Fmt::Hex, None),
        };
        if let Some(i) = dep {
            self.parts[i].clear();
        }
        (name, fmt)
    }

    /// Renders and evaluates `reg op data`, or a range test `data`-`to` (op EQ: inside, NEQ:
    /// outside).
    fn test(&mut self, reg: u32, op: u32, data: &[u8], to: Option<&[u8]>) {
        match (self.regs.load(reg, data.len()), to) {
            (None, _) => self.unknown = true,
            (Some(v), None) => self.failed |= !compare(op, v.as_slice().cmp(data)),
            (Some(v), Some(to)) => {
                let inside = v.as_slice() >= data && v.as_slice() <= to;
                self.failed |= inside != (op == CMP_EQ);
            }
        }
        let src = self.src(reg);
        let (name, fmt) = self.field(src);
        let o = ["", "!= ", "< ", "<= ", "> ", ">= "]
            .get(op as usize)
            .unwrap_or(&"?? ");
        let zero = data.iter().all(|&b| b == 0);
        let text = match (fmt, src, to) {
            // Flag tests: `ct state invalid` is (state & invalid) != 0.
            (Fmt::CtState, Src::Masked(_, m), _) if zero && op == CMP_NEQ => {
                format!("{name} {}", value(fmt, m))
            }
            (Fmt::CtState, Src::Masked(_, m), _) if zero && op == CMP_EQ => {
                format!("{name} != {}", value(fmt, m))
            }
            (Fmt::Addr(_), Src::Masked(_, m), _) if prefix_len(m).is_some() => {
                let bits = prefix_len(m).unwrap_or(0);
                format!("{name} {o}{}/{bits}", value(fmt, data))
            }
            (_, Src::Masked(_, m), _) => format!("{name} & {} {o}{}", hex(m), value(fmt, data)),
            (_, _, Some(to)) => format!("{name} {o}{}-{}", value(fmt, data), value(fmt, to)),
            _ => format!("{name} {o}{}", value(fmt, data)),
        };
        self.parts.push(text);
        let index = Some(self.parts.len() - 1);
        match (src, op, to, data) {
            (
                Src::Loaded(Expr::Meta {
                    key: META_NFPROTO | META_PROTOCOL,
                    ..
                }),
                CMP_EQ,
                None,
                _,
            ) => match data {
                [IPV4] | [0x08, 0x00] => (self.l3, self.l3_dep) = (Some(4), index),
                [IPV6] | [0x86, 0xdd] => (self.l3, self.l3_dep) = (Some(6), index),
                _ => {}
            },
            (Src::Loaded(_), CMP_EQ, None, [proto]) if fmt == Fmt::Proto => {
                (self.l4, self.l4_dep) = (Some(*proto), index)
            }
            _ => {}
        }
    }
}

/// nft_cmp's verdict from the memcmp of register and data.
fn compare(op: u32, o: Ordering) -> bool {
    match op {
        CMP_EQ => o.is_eq(),
        CMP_NEQ => o.is_ne(),
        2 => o.is_lt(),
        CMP_LTE => o.is_le(),
        4 => o.is_gt(),
        CMP_GTE => o.is_ge(),
        _ => false,
    }
}

/// Renders `rule` and replays its tests on `packet`. A test of something the packet's model
/// lacks (conntrack, sets, x_tables matches, unknown expressions...) makes the match Unknown,
/// unless another test fails outright.
pub(super) fn analyse(rule: &NftRule, packet: &Packet) -> Analysis {
    let view = View::new(packet);
    let l3 = [(IPV4, 4), (IPV6, 6)]
        .into_iter()
        .find(|f| f.0 == rule.family)
        .map(|f| f.1);
    let mut w = Walk {
        failed: !family_sees(rule.family, view.v4),
        view,
        regs: Regs([None; 80]),
        srcs: HashMap::new(),
        parts: vec![],
        l3,
        l4: None,
        l3_dep: None,
        l4_dep: None,
        unknown: false,
    };
    let mut action = None;
    let mut exprs = rule.exprs.iter().peekable();
    while let Some(e) = exprs.next() {
        let part = match e {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                let bytes = w.view.payload(*base, *offset, *len);
                w.load(*dreg, &bytes, Src::Loaded(e));
                String::new()
            }
            Expr::Meta { dreg, key } => {
                let bytes = w.view.meta(*key, packet);
                w.load(*dreg, &bytes, Src::Loaded(e));
                String::new()
            }
            Expr::Ct { dreg, .. } => {
                w.load(*dreg, &[None; 16], Src::Loaded(e));
                String::new()
            }
            Expr::Load { dreg, value } => {
                w.load(*dreg, &known(value), Src::Unknown);
                String::new()
            }
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
                op,
            } => {
                let n = *len as usize;
                let bit = |v: &[u8], i: usize| v.get(i).copied();
                let out = match w.regs.load(*sreg, n) {
                    Some(v) if *op == 0 => (0..n)
                        .map(|i| {
                            Some(v[i] & bit(mask, i).unwrap_or(0xff) ^ bit(xor, i).unwrap_or(0))
                        })
                        .collect(),
                    _ => vec![None; n],
                };
                let src = match (*op, w.src(*sreg)) {
                    (0, Src::Loaded(l)) => Src::Masked(l, mask),
                    _ => Src::Unknown,
                };
                w.load(*dreg, &out, src);
                String::new()
            }
            Expr::Cmp { sreg, op, data } => {
                // `tcp dport 1000-2000` is a >= test then a <= test on the same register.
                match exprs.peek() {
                    Some(Expr::Cmp {
                        sreg: s,
                        op: CMP_LTE,
                        data: to,
                    }) if *op == CMP_GTE && s == sreg && matches!(w.src(*s), Src::Loaded(_)) => {
                        w.test(*sreg, CMP_EQ, data, Some(to));
                        exprs.next();
                    }
                    _ => w.test(*sreg, *op, data, None),
                }
                String::new()
            }
            Expr::Counter { .. } => "counter".into(),
            Expr::Log => "log".into(),
            Expr::Verdict { code, chain } => {
                let text = verdict_text(*code, chain);
                if text == "drop" {
                    action = action.or(Some(Action::Drop));
                }
                text
            }
            Expr::Reject { kind, code } => {
                let with = reject_text(*kind, *code, w.l3);
                action = action.or(Some(Action::Reject(with.clone())));
                format!("reject with {with}")
            }
            Expr::Lookup { sreg, set } => {
                w.unknown = true;
                let (name, _) = w.field(w.src(*sreg));
                let anonymous = set.starts_with("__");
                format!(
                    "{name} {}",
                    if anonymous {
                        "{ ... }".into()
                    } else {
                        format!("@{set}")
                    }
                )
            }
            Expr::Xt { target, name, info } => {
                let with = (*target && name == "REJECT")
                    .then(|| xt_reject_with(rule.family, info))
                    .flatten();
                let xt_action = match (*target, name.as_str()) {
                    (true, "REJECT") => Some(Action::Reject(
                        with.map(|(_, w)| w.to_owned()).unwrap_or_default(),
                    )),
                    (true, "DROP") => Some(Action::Drop),
                    (true, _) => None,
                    (false, _) => {
                        w.unknown = true;
                        None
                    }
                };
                action = action.or(xt_action);
                let kind = if *target { "target" } else { "match" };
                match with {
                    Some((opt, _)) => format!("xt {kind} {name} --reject-with {opt}"),
                    None => format!("xt {kind} {name}"),
                }
            }
            Expr::Other(name) => {
                w.unknown = true;
                format!("<{name}>")
            }
        };
        w.parts.push(part);
    }
    if let Some(c) = &rule.comment {
        w.parts.push(format!("comment \"{c}\""));
    }
    w.parts.retain(|p| !p.is_empty());
    let matches = match (w.failed, w.unknown) {
        (true, _) => Matches::No,
        (false, true) => Matches::Unknown,
        (false, false) => Matches::Yes,
    };
    Analysis {
        text: w.parts.join(" "),
        action,
        matches,
    }
}

#[cfg(test)]
mod tests {
    use super::super::expressions::*;
    use super::super::fixtures::*;
    use super::*;
    use crate::enrich::nfnl::{nla, string};

    fn describe(family: u8, exprs: &[Vec<u8>]) -> (String, Option<Action>) {
        let a = analyse(&rule(family, exprs), &v4());
        (a.text, a.action)
    }

    fn text(family: u8, exprs: &[Vec<u8>]) -> String {
        describe(family, exprs).0
    }

    fn eval(family: u8, exprs: &[Vec<u8>], p: &Packet) -> Matches {
        analyse(&rule(family, exprs), p).matches
    }

    fn rejects(with: &str) -> Option<Action> {
        Some(Action::Reject(with.into()))
    }

    #[test]
    fn renders_a_tcp_dport_drop() {
        let exprs = [dport(443), vec![counter(3), verdict(NF_DROP, "")]].concat();
        let expected = ("tcp dport 443 counter drop".into(), Some(Action::Drop));
        assert_eq!(describe(INET, &exprs), expected);
        let accept = [meta(META_L4PROTO), cmp(0, &[17]), verdict(1, "")];
        assert_eq!(
            describe(INET, &accept),
            ("meta l4proto udp accept".into(), None)
        );
        let range = [
            &dport(0)[..3],
            &[cmp(CMP_GTE, &[3, 232]), cmp(CMP_LTE, &[7, 208])],
        ];
        assert_eq!(text(INET, &range.concat()), "tcp dport 1000-2000");
        let names = [
            meta(6),
            cmp(0, b"veth0\0\0\0\0\0\0\0\0\0\0\0"),
            meta(7),
            cmp(1, b"eth"),
        ];
        assert_eq!(text(INET, &names), "iifname \"veth0\" oifname != \"eth*\"");
        let prefix = [payload(NETWORK, 12, 3), cmp(0, &[10, 1, 0]), verdict(0, "")];
        assert_eq!(text(IPV4, &prefix), "ip saddr 10.1.0.0/24 drop");
        let jump = [expr("limit", &[]), verdict(-3, "x")];
        assert_eq!(describe(IPV6, &jump), ("<limit> jump x".into(), None));
    }

    #[test]
    fn renders_a_reject_with_tcp_reset() {
        let exprs = [ip(16, [10, 9, 9, 9]), dport(9), vec![reject(1, 0)]].concat();
        let text_ = "ip daddr 10.9.9.9 tcp dport 9 reject with tcp reset";
        assert_eq!(describe(INET, &exprs), (text_.into(), rejects("tcp reset")));
        let icmp = [ip(12, [1, 2, 3, 4]), vec![reject(0, 3)]].concat();
        assert_eq!(describe(INET, &icmp).1, rejects("icmp port-unreachable"));
        assert_eq!(
            describe(IPV6, &[reject(0, 1)]).1,
            rejects("icmpv6 admin-prohibited")
        );
        assert_eq!(
            text(INET, &[reject(2, 3)]),
            "reject with icmpx admin-prohibited"
        );
        let xt = [
            expr("match", &[string(1, "tcp")]),
            expr("target", &[string(1, "REJECT")]),
        ];
        let expected = ("xt match tcp xt target REJECT".into(), rejects(""));
        assert_eq!(describe(IPV4, &xt), expected);
        let port = [expr(
            "target",
            &[string(1, "REJECT"), nla(3, &3u32.to_ne_bytes())],
        )];
        let expected = (
            "xt target REJECT --reject-with icmp-port-unreachable".into(),
            rejects("icmp port-unreachable"),
        );
        assert_eq!(describe(IPV4, &port), expected);
        let reset6 = [expr(
            "target",
            &[string(1, "REJECT"), nla(3, &6u32.to_ne_bytes())],
        )];
        assert_eq!(describe(IPV6, &reset6).1, rejects("tcp reset"));
    }

    #[test]
    fn renders_ct_state_invalid() {
        let exprs = [ct_state(1), vec![verdict(NF_DROP, "")]].concat();
        let r = parse_rule(INET, &attrs(&exprs, "bad state")).unwrap();
        let a = analyse(&r, &v4());
        assert_eq!(a.text, "ct state invalid drop comment \"bad state\"");
        assert_eq!(a.matches, Matches::Unknown);
        let established = [ct_state(6), vec![verdict(1, "")]].concat();
        assert_eq!(
            text(INET, &established),
            "ct state established,related accept"
        );
    }

    #[test]
    fn evaluation() {
        use Matches::{No, Unknown, Yes};
        let p = v4();
        assert_eq!(eval(INET, &dport(443), &p), Yes);
        assert_eq!(eval(INET, &dport(80), &p), No);
        assert_eq!(
            eval(INET, &[ip(16, [10, 0, 0, 2]), dport(443)].concat(), &p),
            Yes
        );
        assert_eq!(
            eval(INET, &[ip(16, [10, 9, 9, 9]), dport(443)].concat(), &p),
            No
        );
        // Unknown, unless another test fails.
        assert_eq!(eval(INET, &[ct_state(1), dport(443)].concat(), &p), Unknown);
        assert_eq!(eval(INET, &[ct_state(1), dport(80)].concat(), &p), No);
        assert_eq!(eval(INET, &[expr("quota", &[])], &p), Unknown);
        let veth = [meta(META_IIFNAME), cmp(0, b"veth0\0\0\0\0\0\0\0\0\0\0\0")];
        assert_eq!(eval(INET, &veth, &p), Unknown);
        let p_veth = pkt("10.0.0.1:5000", "10.0.0.2:443", Some("veth0"));
        assert_eq!(eval(INET, &veth, &p_veth), Yes);
        assert_eq!(
            eval(INET, &[meta(META_IIFNAME), cmp(0, b"eth")], &p_veth),
            No
        );
        // Prefixes: a 3-byte load, and a mask.
        assert_eq!(
            eval(IPV4, &[payload(NETWORK, 12, 3), cmp(0, &[10, 0, 0])], &p),
            Yes
        );
        let mask = bitwise(&[255, 255, 254, 0]);
        let masked = [payload(NETWORK, 16, 4), mask, cmp(0, &[10, 0, 0, 0])];
        assert_eq!(eval(IPV4, &masked, &p), Yes);
        assert_eq!(text(IPV4, &masked), "ip daddr 10.0.0.0/23");
    }

    #[test]
    fn family_mismatch() {
        let v6 = pkt("[fd00::1]:5000", "[fd00::2]:443", None);
        let mapped = pkt("[::ffff:10.0.0.1]:5000", "[::ffff:10.0.0.2]:443", None);
        assert_eq!(eval(IPV4, &dport(443), &v6), Matches::No);
        assert_eq!(eval(IPV4, &dport(443), &mapped), Matches::Yes);
        assert_eq!(eval(IPV6, &dport(443), &v4()), Matches::No);
        assert_eq!(eval(IPV6, &dport(443), &v6), Matches::Yes);
        assert_eq!(eval(INET, &ip(16, [10, 0, 0, 2]), &v6), Matches::No);
        let net = [0xfd, 0, 0, 0, 0, 0, 0, 0];
        let d6 = [
            meta(META_NFPROTO),
            cmp(0, &[IPV6]),
            payload(NETWORK, 24, 8),
            cmp(0, &net),
        ];
        assert_eq!(text(INET, &d6), "ip6 daddr fd00::/64");
        assert_eq!(eval(INET, &d6, &v6), Matches::Yes);
    }
}
