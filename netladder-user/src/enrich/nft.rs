//! The nf_tables backend of firewall attribution.
//!
//! Reads the ruleset of the calling thread's network namespace over NETLINK_NETFILTER (dumps of
//! tables, chains and rules of every family), decodes each rule's expressions, and keeps what can
//! end a packet: drop verdicts, `reject` statements, iptables-nft REJECT targets, and base chains
//! whose policy is drop. Each kept rule is rendered close to `nft list ruleset` syntax, and its
//! match conditions are replayed on a model of the dropped packet's headers.
//!
//! Numbers come from the uapi headers linux/netlink.h, linux/netfilter/nfnetlink.h,
//! linux/netfilter/nf_tables.h and linux/netfilter/nf_tables_compat.h.
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;

use anyhow::{bail, Context};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::firewall::{Action, Backend, Hook, Matches, Packet, Rule};
use super::nfnl::*;

const NLM_F_REQUEST_DUMP: u16 = NLM_F_REQUEST | 0x300;
/// NFT_MSG_GETTABLE, GETCHAIN, GETRULE; the dumps answer with NEWTABLE (0), NEWCHAIN (3) and
/// NEWRULE (6), one lower.
const GET_MSGS: [u16; 3] = [1, 4, 7];
// NFPROTO_* families, as the nfgenmsg header carries them.
const INET: u8 = 1;
const IPV4: u8 = 2;
const ARP: u8 = 3;
const NETDEV: u8 = 5;
const BRIDGE: u8 = 7;
const IPV6: u8 = 10;
// The NF_DROP verdict, and the cmp operators used by name (enum nft_cmp_ops).
const NF_DROP: i32 = 0;
/// The data registers' total size (NFT_REG32_COUNT * NFT_REG32_SIZE): no load is longer.
const REGS_LEN: u32 = 64;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;
// Payload bases and meta keys (enum nft_payload_bases, enum nft_meta_keys).
const NETWORK: u32 = 1;
const TRANSPORT: u32 = 2;
const META_PROTOCOL: u32 = 1;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
/// Tables and base chains iptables-nft creates.
const XT_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];
const XT_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// Drop/reject rules and drop policies of every nf_tables base and regular chain in this thread's
/// netns, with `matches` evaluated against `packet`. A kernel without nf_tables gives an empty
/// list; reading needs CAP_NET_ADMIN in the namespace.
pub fn terminal_rules(packet: &Packet) -> anyhow::Result<Vec<Rule>> {
    let mut socket = match Socket::new(NETLINK_NETFILTER) {
        Err(e) if e.raw_os_error().is_some_and(|c| no_nftables(c, true)) => return Ok(vec![]),
        s => s.context("cannot open a netfilter netlink socket")?,
    };
    socket
        .bind_auto()
        .context("cannot bind the netfilter netlink socket")?;
    let mut dumps = Vec::new();
    for (i, msg) in GET_MSGS.into_iter().enumerate() {
        match dump(&socket, msg, i == 0)? {
            Some(msgs) => dumps.push(msgs),
            None => return Ok(vec![]),
        }
    }
    fn parse<T>(msgs: &[NfMsg], get: u16, f: fn(u8, &[u8]) -> Option<T>) -> Vec<T> {
        let kind = get - 1;
        msgs.iter()
            .filter(|m| m.kind == kind)
            .filter_map(|m| f(m.family, &m.attrs))
            .collect()
    }
    let tables = parse(&dumps[0], GET_MSGS[0], parse_table);
    let chains = parse(&dumps[1], GET_MSGS[1], parse_chain);
    let rules = parse(&dumps[2], GET_MSGS[2], parse_rule);
    Ok(collect(&tables, &chains, &rules, packet))
}

/// The terminal rules in one datagram of dump replies (tables, chains and rules mixed), as
/// [`terminal_rules`] decodes a live dump; for the fuzz targets. Malformed input gives what
/// could be read.
pub(crate) fn rules_from_datagram(buf: &[u8], packet: &Packet) -> Vec<Rule> {
    let Ok(batch) = parse_datagram(buf) else {
        return vec![];
    };
    let of = |get: u16| batch.msgs.iter().filter(move |m| m.kind == get - 1);
    let tables: Vec<_> = of(GET_MSGS[0])
        .filter_map(|m| parse_table(m.family, &m.attrs))
        .collect();
    let chains: Vec<_> = of(GET_MSGS[1])
        .filter_map(|m| parse_chain(m.family, &m.attrs))
        .collect();
    let rules: Vec<_> = of(GET_MSGS[2])
        .filter_map(|m| parse_rule(m.family, &m.attrs))
        .collect();
    collect(&tables, &chains, &rules, packet)
}

/// Errnos meaning "no nf_tables here". nfnetlink answers EINVAL for a subsystem it does not
/// have, so that one only counts on the first request.
fn no_nftables(errno: i32, first: bool) -> bool {
    use libc::{EAFNOSUPPORT, EINVAL, ENOENT, EOPNOTSUPP, EPROTONOSUPPORT};
    matches!(errno, EPROTONOSUPPORT | ENOENT | EAFNOSUPPORT | EOPNOTSUPP)
        || (first && errno == EINVAL)
}

/// The dump request for NFT_MSG_GET* `msg`: nlmsghdr plus nfgenmsg {NFPROTO_UNSPEC, v0, 0}.
fn request(msg: u16, seq: u32) -> Vec<u8> {
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
    let head = [
        20u32.to_ne_bytes(),
        pack16(kind, NLM_F_REQUEST_DUMP),
        seq.to_ne_bytes(),
    ];
    [head.concat(), vec![0; 8]].concat()
}

/// Runs one dump to its end, again when the kernel flags it inconsistent. None: no nf_tables.
pub(super) fn dump(socket: &Socket, msg: u16, first: bool) -> anyhow::Result<Option<Vec<NfMsg>>> {
    for attempt in 0..4 {
        let req = request(msg, u32::from(msg) << 8 | attempt);
        socket
            .send_to(&req, &SocketAddr::new(0, 0), 0)
            .context("cannot send the nf_tables dump request")?;
        let (mut msgs, mut interrupted) = (Vec::new(), false);
        loop {
            let (datagram, _) = socket
                .recv_from_full()
                .context("cannot read the nf_tables dump")?;
            let batch = parse_datagram(&datagram)?;
            msgs.extend(batch.msgs);
            interrupted |= batch.interrupted || batch.errno == Some(libc::EINTR);
            match batch.errno {
                Some(libc::EINTR) => break,
                Some(e) if no_nftables(e, first) => return Ok(None),
                Some(e) => {
                    let e = io::Error::from_raw_os_error(e);
                    return Err(e).context("the kernel refused the nf_tables dump");
                }
                None if batch.done => break,
                None => {}
            }
        }
        if !interrupted {
            return Ok(Some(msgs));
        }
    }
    bail!("the nf_tables ruleset kept changing during the dump")
}

#[derive(Debug, PartialEq, Eq)]
struct Table {
    family: u8,
    name: String,
    /// The chains of a dormant table are off their hooks.
    dormant: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Chain {
    family: u8,
    table: String,
    name: String,
    /// (hook number, priority) of a base chain.
    hook: Option<(u32, i32)>,
    policy: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
struct NftRule {
    family: u8,
    table: String,
    chain: String,
    handle: u64,
    exprs: Vec<Expr>,
    comment: Option<String>,
}

/// A decoded expression. Registers keep the kernel's numbering.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    /// Loads `len` bytes at `offset` of header `base` (0 link, 1 network, 2 transport).
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    Meta {
        dreg: u32,
        key: u32,
    },
    Ct {
        dreg: u32,
        key: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` when op is 0 (the others shift).
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
        op: u32,
    },
    Counter {
        packets: u64,
    },
    /// An immediate verdict (into register 0).
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    /// An immediate value into a data register.
    Load {
        dreg: u32,
        value: Vec<u8>,
    },
    Reject {
        kind: u32,
        code: u8,
    },
    Lookup {
        sreg: u32,
        set: String,
    },
    /// An x_tables match or target run through nft_compat (iptables-nft).
    Xt {
        target: bool,
        name: String,
        /// The extension's own data (NFTA_TARGET_INFO / NFTA_MATCH_INFO), host byte order.
        info: Vec<u8>,
    },
    Log,
    /// Anything else, or a statement form (`meta mark set ...`), by name.
    Other(String),
}

/// NFTA_TABLE_NAME (1), NFTA_TABLE_FLAGS (2, bit NFT_TABLE_F_DORMANT = 1).
fn parse_table(family: u8, a: &[u8]) -> Option<Table> {
    let dormant = attr_u32(a, 2).unwrap_or(0) & 1 != 0;
    Some(Table {
        family,
        name: attr_str(a, 1)?,
        dormant,
    })
}

/// NFTA_CHAIN_TABLE (1), NAME (3), HOOK (4: NFTA_HOOK_HOOKNUM 1, NFTA_HOOK_PRIORITY 2),
/// POLICY (5).
fn parse_chain(family: u8, a: &[u8]) -> Option<Chain> {
    let hook = attr(a, 4).and_then(|h| Some((attr_u32(h, 1)?, attr_u32(h, 2).unwrap_or(0) as i32)));
    let (table, name) = (attr_str(a, 1)?, attr_str(a, 3)?);
    Some(Chain {
        family,
        table,
        name,
        hook,
        policy: attr_u32(a, 5),
    })
}

/// NFTA_RULE_TABLE (1), CHAIN (2), HANDLE (3), EXPRESSIONS (4: NFTA_LIST_ELEM 1 each),
/// USERDATA (7).
fn parse_rule(family: u8, a: &[u8]) -> Option<NftRule> {
    let list = attr(a, 4).unwrap_or(&[]);
    let exprs = Attrs(list)
        .filter(|(k, _)| *k == 1)
        .map(|(_, e)| parse_expr(e))
        .collect();
    Some(NftRule {
        family,
        table: attr_str(a, 1)?,
        chain: attr_str(a, 2)?,
        handle: attr_u64(a, 3)?,
        exprs,
        comment: attr(a, 7).and_then(parse_comment),
    })
}

/// The comment (record type 0) of rule user data, a list of (type u8, length u8, value).
fn parse_comment(mut udata: &[u8]) -> Option<String> {
    while let [kind, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *kind == 0 {
            return Some(text(value));
        }
        udata = &rest[value.len()..];
    }
    None
}

/// One list element: NFTA_EXPR_NAME (1) and NFTA_EXPR_DATA (2).
fn parse_expr(elem: &[u8]) -> Expr {
    let name = attr_str(elem, 1).unwrap_or_default();
    decode_expr(&name, attr(elem, 2).unwrap_or(&[])).unwrap_or(Expr::Other(name))
}

/// The expression-specific attributes, numbered as in enum nft_<name>_attributes.
fn decode_expr(name: &str, d: &[u8]) -> Option<Expr> {
    let u = |k| attr_u32(d, k);
    Some(match name {
        // DREG 1, BASE 2, OFFSET 3, LEN 4; SREG 5 makes it a payload write.
        // The kernel refuses loads longer than its registers; so does this decoder, rather than
        // modelling them (a malformed reply must not make it allocate without bound).
        "payload" if u(5).is_none() && u(4).is_some_and(|l| l <= REGS_LEN) => Expr::Payload {
            dreg: u(1)?,
            base: u(2)?,
            offset: u(3)?,
            len: u(4)?,
        },
        // DREG 1, KEY 2; SREG 3 makes it `meta ... set`.
        "meta" if u(3).is_none() => Expr::Meta {
            dreg: u(1)?,
            key: u(2)?,
        },
        // DREG 1, KEY 2; SREG 4 makes it `ct ... set`.
        "ct" if u(4).is_none() => Expr::Ct {
            dreg: u(1)?,
            key: u(2)?,
        },
        // SREG 1, OP 2, DATA 3.
        "cmp" => Expr::Cmp {
            sreg: u(1)?,
            op: u(2)?,
            data: attr_value(d, 3)?,
        },
        // SREG 1, DREG 2, LEN 3, MASK 4, XOR 5, OP 6.
        "bitwise" if u(3).is_some_and(|l| l <= REGS_LEN) => Expr::Bitwise {
            sreg: u(1)?,
            dreg: u(2)?,
            len: u(3)?,
            mask: attr_value(d, 4).unwrap_or_default(),
            xor: attr_value(d, 5).unwrap_or_default(),
            op: u(6).unwrap_or(0),
        },
        // NFTA_COUNTER_PACKETS 2.
        "counter" => Expr::Counter {
            packets: attr_u64(d, 2).unwrap_or(0),
        },
        // DREG 1, DATA 2: NFTA_DATA_VALUE 1, or NFTA_DATA_VERDICT 2 holding CODE 1 and CHAIN 2.
        "immediate" => {
            let (dreg, data) = (u(1)?, attr(d, 2)?);
            match attr(data, 2) {
                Some(v) => Expr::Verdict {
                    code: attr_u32(v, 1)? as i32,
                    chain: attr_str(v, 2),
                },
                None => Expr::Load {
                    dreg,
                    value: attr(data, 1)?.to_vec(),
                },
            }
        }
        // TYPE 1, ICMP_CODE 2 (u8).
        "reject" => {
            let code = attr(d, 2).and_then(|c| c.first().copied()).unwrap_or(0);
            Expr::Reject { kind: u(1)?, code }
        }
        // SET 1, SREG 2.
        "lookup" => Expr::Lookup {
            sreg: u(2)?,
            set: attr_str(d, 1)?,
        },
        // NFTA_MATCH_NAME / NFTA_TARGET_NAME 1.
        "match" | "target" => Expr::Xt {
            target: name == "target",
            name: attr_str(d, 1)?,
            info: attr(d, 3).map(<[u8]>::to_vec).unwrap_or_default(),
        },
        "log" => Expr::Log,
        _ => return None,
    })
}

/// The terminal rules of the decoded ruleset, chain by chain: the drop/reject rules in order,
/// then the chain's drop policy.
fn collect(tables: &[Table], chains: &[Chain], rules: &[NftRule], packet: &Packet) -> Vec<Rule> {
    let dormant: HashSet<(u8, &str)> = tables
        .iter()
        .filter(|t| t.dormant)
        .map(|t| (t.family, &*t.name))
        .collect();
    let has_xt = |r: &NftRule| r.exprs.iter().any(|e| matches!(e, Expr::Xt { .. }));
    let xt_table = |family, table| matches!(family, IPV4 | IPV6) && XT_TABLES.contains(&table);
    let mut xt_tables: HashSet<(u8, &str)> = HashSet::new();
    for c in chains.iter().filter(|c| XT_CHAINS.contains(&&*c.name)) {
        if xt_table(c.family, &*c.table) {
            xt_tables.insert((c.family, &c.table));
        }
    }
    let mut by_chain: HashMap<(u8, &str, &str), Vec<&NftRule>> = HashMap::new();
    for r in rules {
        if has_xt(r) && xt_table(r.family, &*r.table) {
            xt_tables.insert((r.family, &r.table));
        }
        by_chain
            .entry((r.family, &r.table, &r.chain))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for c in chains {
        if dormant.contains(&(c.family, &*c.table)) {
            continue;
        }
        let table_backend = match xt_tables.contains(&(c.family, &*c.table)) {
            true => Backend::IptablesNft,
            false => Backend::Nftables,
        };
        let rule = |backend, id, text, packets, action, matches| Rule {
            backend,
            family: family_name(c.family),
            table: c.table.clone(),
            chain: c.name.clone(),
            hook: c.hook.map(|(num, _)| hook(c.family, num)),
            priority: c.hook.map(|(_, prio)| prio),
            id,
            text,
            packets,
            action,
            matches,
        };
        for r in by_chain
            .get(&(c.family, &c.table, &c.name))
            .into_iter()
            .flatten()
        {
            let Analysis {
                text,
                action: Some(action),
                matches,
            } = analyse(r, packet)
            else {
                continue;
            };
            let backend = if has_xt(r) {
                Backend::IptablesNft
            } else {
                table_backend
            };
            let packets = r.exprs.iter().find_map(|e| match e {
                Expr::Counter { packets } => Some(*packets),
                _ => None,
            });
            let id = format!("handle {}", r.handle);
            out.push(rule(backend, id, text, packets, action, matches));
        }
        if c.hook.is_some() && c.policy == Some(NF_DROP as u32) {
            let matches = match family_sees(c.family, View::new(packet).v4) {
                true => Matches::Yes,
                false => Matches::No,
            };
            let (id, text) = ("policy".to_string(), "policy drop".to_string());
            out.push(rule(table_backend, id, text, None, Action::Drop, matches));
        }
    }
    out
}

fn family_name(family: u8) -> String {
    let name = match family {
        INET => "inet",
        IPV4 => "ip",
        ARP => "arp",
        NETDEV => "netdev",
        BRIDGE => "bridge",
        IPV6 => "ip6",
        other => return format!("family {other}"),
    };
    name.to_string()
}

/// A base chain's hook, numbered per family (ip, ip6, inet and bridge share the numbering;
/// inet's 5 is ingress).
fn hook(family: u8, num: u32) -> Hook {
    match (family, num) {
        (ARP, 0) => Hook::Input,
        (ARP, 1) => Hook::Output,
        (ARP, 2) => Hook::Forward,
        (ARP | NETDEV, _) => Hook::Other,
        (_, 0) => Hook::Prerouting,
        (_, 1) => Hook::Input,
        (_, 2) => Hook::Forward,
        (_, 3) => Hook::Output,
        (_, 4) => Hook::Postrouting,
        _ => Hook::Other,
    }
}

/// Whether chains of `family` ever see an IPv4 (`v4`) or IPv6 packet.
fn family_sees(family: u8, v4: bool) -> bool {
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
struct View {
    v4: bool,
    net: Vec<Option<u8>>,
    transport: Vec<Option<u8>>,
}

impl View {
    fn new(p: &Packet) -> View {
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

/// How values of a field print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fmt {
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

/// A rule walked against a packet.
#[derive(Debug, PartialEq, Eq)]
struct Analysis {
    /// The rule in nft-like syntax.
    text: String,
    /// What it does when that ends the packet's journey (drop or reject).
    action: Option<Action>,
    matches: Matches,
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
fn analyse(rule: &NftRule, packet: &Packet) -> Analysis {
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

fn hex(data: &[u8]) -> String {
    let digits: String = data.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

/// The length of a contiguous network mask.
fn prefix_len(mask: &[u8]) -> Option<u32> {
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
fn value(fmt: Fmt, data: &[u8]) -> String {
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
fn reject_text(kind: u32, code: u8, l3: Option<u8>) -> String {
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

/// A verdict code: NF_ACCEPT 1, NFT_CONTINUE -1, NFT_BREAK -2, NFT_JUMP -3, NFT_GOTO -4,
/// NFT_RETURN -5; NF_DROP 0 and NF_QUEUE 3 in the low byte (errno or queue number above).
/// The `--reject-with` of an iptables-nft REJECT target, from its info (enum ipt_reject_with
/// or ip6t_reject_with, host order): (iptables option, the kind as nft words).
fn xt_reject_with(family: u8, info: &[u8]) -> Option<(&'static str, &'static str)> {
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

fn verdict_text(code: i32, chain: &Option<String>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An NFTA_LIST_ELEM with the expression's name and data.
    fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
        nest(1, &[string(1, name), nest(2, data)])
    }

    fn meta(key: u32) -> Vec<u8> {
        expr("meta", &[be32(2, key), be32(1, 1)])
    }

    fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
        expr(
            "payload",
            &[be32(1, 1), be32(2, base), be32(3, offset), be32(4, len)],
        )
    }

    fn cmp(op: u32, bytes: &[u8]) -> Vec<u8> {
        expr("cmp", &[be32(1, 1), be32(2, op), data(3, bytes)])
    }

    fn counter(packets: u64) -> Vec<u8> {
        expr(
            "counter",
            &[nla(1, &[0; 8]), nla(2, &packets.to_be_bytes())],
        )
    }

    fn verdict(code: i32, chain: &str) -> Vec<u8> {
        let v = nest(2, &[nest(2, &[be32(1, code as u32), string(2, chain)])]);
        expr("immediate", &[be32(1, 0), v])
    }

    fn reject(kind: u32, code: u8) -> Vec<u8> {
        expr("reject", &[be32(1, kind), nla(2, &[code])])
    }

    fn bitwise(mask: &[u8]) -> Vec<u8> {
        let (len, xor) = (be32(3, mask.len() as u32), data(5, &vec![0; mask.len()]));
        expr(
            "bitwise",
            &[be32(1, 1), be32(2, 1), len, data(4, mask), xor],
        )
    }

    fn ct_state(mask: u32) -> Vec<Vec<u8>> {
        let ct = expr("ct", &[be32(1, 1), be32(2, 0)]);
        vec![ct, bitwise(&mask.to_ne_bytes()), cmp(CMP_NEQ, &[0; 4])]
    }

    fn dport(port: u16) -> Vec<Vec<u8>> {
        let p = port.to_be_bytes();
        vec![
            meta(META_L4PROTO),
            cmp(0, &[6]),
            payload(TRANSPORT, 2, 2),
            cmp(0, &p),
        ]
    }

    fn ip(offset: u32, a: [u8; 4]) -> Vec<Vec<u8>> {
        vec![
            meta(META_NFPROTO),
            cmp(0, &[IPV4]),
            payload(NETWORK, offset, 4),
            cmp(0, &a),
        ]
    }

    fn attrs(exprs: &[Vec<u8>], comment: &str) -> Vec<u8> {
        let udata = [&[0, comment.len() as u8 + 1], comment.as_bytes(), &[0]].concat();
        let handle = nla(3, &7u64.to_be_bytes());
        [
            string(1, "t"),
            string(2, "c"),
            handle,
            nest(4, exprs),
            nla(7, &udata),
        ]
        .concat()
    }

    fn rule(family: u8, exprs: &[Vec<u8>]) -> NftRule {
        let r = parse_rule(family, &attrs(exprs, "")).expect("the rule parses");
        NftRule { comment: None, ..r }
    }

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

    fn pkt(src: &str, dst: &str, iif: Option<&str>) -> Packet {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        Packet {
            l4proto: 6,
            src,
            dst,
            iif: iif.map(String::from),
            oif: None,
        }
    }

    fn v4() -> Packet {
        pkt("10.0.0.1:5000", "10.0.0.2:443", None)
    }

    fn rejects(with: &str) -> Option<Action> {
        Some(Action::Reject(with.into()))
    }

    #[test]
    fn attribute_parsing() {
        let buf = [nla(1, b"ab"), nest(2, &[be32(1, 3)]), nla(3, &[])].concat();
        let all: Vec<(u16, Vec<u8>)> = Attrs(&buf).map(|(k, d)| (k, d.to_vec())).collect();
        assert_eq!(all, [(1, b"ab".to_vec()), (2, be32(1, 3)), (3, vec![])]);
        assert_eq!(
            Attrs(&buf[..buf.len() - 2]).count(),
            2,
            "a truncated buffer stops"
        );
        assert_eq!(Attrs(&[0xff, 0xff, 1, 0, 9]).count(), 0);

        let hook = nest(4, &[be32(1, 1), be32(2, -150i32 as u32)]);
        let chain = [string(1, "filter"), string(3, "INPUT"), hook, be32(5, 0)].concat();
        let c = parse_chain(IPV4, &chain).unwrap();
        assert_eq!((&*c.table, &*c.name), ("filter", "INPUT"));
        assert_eq!((c.hook, c.policy), (Some((1, -150)), Some(0)));
        let r = parse_rule(INET, &attrs(&[counter(3), verdict(0, "")], "hi")).unwrap();
        assert_eq!((r.handle, r.comment.as_deref()), (7, Some("hi")));
        let drop = Expr::Verdict {
            code: 0,
            chain: Some(String::new()),
        };
        assert_eq!(r.exprs, [Expr::Counter { packets: 3 }, drop]);
        assert_eq!(
            parse_expr(&expr("quota", &[])[4..]),
            Expr::Other("quota".into())
        );

        // A NEWRULE message and NLMSG_DONE in one datagram; an error in another.
        let msg = |kind: u16, payload: &[u8]| {
            let len = (16 + payload.len()) as u32;
            [&len.to_ne_bytes()[..], &pack16(kind, 2), &[0; 8], payload].concat()
        };
        let body = [&[INET, 0, 0, 0][..], &attrs(&[], "")].concat();
        let dgram = [msg(0x0a06, &body), msg(NLMSG_DONE, &[0; 4])].concat();
        let b = parse_datagram(&dgram).unwrap();
        assert!(b.done && b.errno.is_none() && !b.interrupted);
        assert_eq!(
            (b.msgs.len(), b.msgs[0].kind, b.msgs[0].family),
            (1, 6, INET)
        );
        let err = parse_datagram(&msg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes())).unwrap();
        assert_eq!(err.errno, Some(libc::EPERM));
        assert!(parse_datagram(&msg(NLMSG_DONE, &[])[..12])
            .unwrap()
            .msgs
            .is_empty());
        assert_eq!(request(7, 1)[4..6], 0x0a07u16.to_ne_bytes());
    }

    #[test]
    fn loads_longer_than_the_registers_are_not_modelled() {
        // Found by the nft_dump fuzz target: a 4 GiB payload load made the replay allocate it.
        let huge = expr(
            "payload",
            &[
                be32(1, 1),
                be32(2, TRANSPORT),
                be32(3, 0),
                be32(4, u32::MAX),
            ],
        );
        let mask = expr("bitwise", &[be32(1, 1), be32(2, 1), be32(3, u32::MAX)]);
        for e in [huge, mask] {
            let r = rule(IPV4, &[e, expr("immediate", &[])]);
            assert!(matches!(r.exprs[0], Expr::Other(_)), "{:?}", r.exprs[0]);
        }
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

    #[test]
    fn collects_rules_and_policies() {
        let chain = |family, table: &str, name: &str, hook, policy| {
            let (table, name) = (table.to_string(), name.to_string());
            Chain {
                family,
                table,
                name,
                hook,
                policy,
            }
        };
        let chains = [
            chain(IPV4, "filter", "INPUT", Some((1, 0)), Some(0)),
            chain(INET, "fw", "sub", None, None),
            chain(INET, "off", "output", Some((3, 0)), Some(0)),
        ];
        let tables = [Table {
            family: INET,
            name: "off".into(),
            dormant: true,
        }];
        let on = |family, table: &str, chain: &str, exprs: &[Vec<u8>]| {
            let r = rule(family, exprs);
            NftRule {
                table: table.into(),
                chain: chain.into(),
                ..r
            }
        };
        let saddr = [
            payload(1, 12, 4),
            cmp(0, &[1, 2, 3, 4]),
            counter(5),
            verdict(0, ""),
        ];
        let rules = [
            on(IPV4, "filter", "INPUT", &saddr),
            on(
                INET,
                "fw",
                "sub",
                &[dport(443), vec![reject(1, 0)]].concat(),
            ),
            on(INET, "fw", "sub", &[verdict(-3, "x")]),
            on(INET, "off", "output", &[verdict(0, "")]),
        ];
        let out = collect(&tables, &chains, &rules, &v4());
        let brief: Vec<_> = out
            .iter()
            .map(|r| (r.backend, &*r.id, r.hook, r.matches))
            .collect();
        let (xt, nft, input) = (Backend::IptablesNft, Backend::Nftables, Some(Hook::Input));
        let expected = [
            (xt, "handle 7", input, Matches::No),
            (xt, "policy", input, Matches::Yes),
            (nft, "handle 7", None, Matches::Yes),
        ];
        assert_eq!(brief, expected);
        assert_eq!(
            (&*out[0].text, out[0].packets),
            ("ip saddr 1.2.3.4 counter drop", Some(5))
        );
        assert_eq!((&*out[1].text, &*out[1].family), ("policy drop", "ip"));
        assert_eq!((hook(INET, 5), hook(ARP, 1)), (Hook::Other, Hook::Output));
    }

    /// Loads a ruleset into a throwaway network namespace of a new thread, and reads it back.
    #[test]
    fn reads_a_real_ruleset() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("NL-SKIP reads_a_real_ruleset: needs root");
            return;
        }
        let rules = std::thread::spawn(|| {
            // Only this thread (and what it forks) is in the new namespace; it dies with it.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(unshared, 0, "unshare: {}", io::Error::last_os_error());
            let ruleset = "table inet nltest {\n\
                 chain input {\n\
                 type filter hook input priority 0; policy accept;\n\
                 tcp dport 443 counter drop\n\
                 ip daddr 10.9.9.9 tcp dport 9 reject with tcp reset\n\
                 ct state invalid drop comment \"bad state\"\n\
                 }\n\
                 chain output {\n\
                 type filter hook output priority 0; policy drop;\n\
                 }\n\
                 }\n";
            let tid = unsafe { libc::gettid() };
            let name = format!("netladder-nft-{}-{tid}.nft", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, ruleset).unwrap();
            let status = std::process::Command::new("nft")
                .arg("-f")
                .arg(&path)
                .status();
            let _ = std::fs::remove_file(&path);
            assert!(status.expect("run nft").success(), "nft -f failed");
            terminal_rules(&v4())
        });
        let rules = rules
            .join()
            .expect("the namespace thread")
            .expect("terminal_rules");
        let find = |needle: &str| {
            let found = rules.iter().find(|r| r.text.contains(needle));
            found.unwrap_or_else(|| panic!("no {needle:?} in {rules:#?}"))
        };
        let d = find("tcp dport 443");
        assert_eq!(
            (d.matches, &d.action, d.packets),
            (Matches::Yes, &Action::Drop, Some(0))
        );
        assert_eq!(
            (&*d.family, &*d.table, d.backend),
            ("inet", "nltest", Backend::Nftables)
        );
        assert_eq!((d.hook, d.priority), (Some(Hook::Input), Some(0)));
        assert!(d.id.starts_with("handle "), "{d:?}");
        let r = find("reject");
        assert_eq!(
            r.text,
            "ip daddr 10.9.9.9 tcp dport 9 reject with tcp reset"
        );
        assert_eq!(r.matches, Matches::No);
        assert!(
            matches!(&r.action, Action::Reject(w) if w.contains("tcp reset")),
            "{r:?}"
        );
        let ct = find("ct state invalid");
        assert_eq!(ct.text, "ct state invalid drop comment \"bad state\"");
        assert_eq!(ct.matches, Matches::Unknown);
        let policy = rules
            .iter()
            .find(|r| r.id == "policy")
            .expect("the output policy");
        assert_eq!(
            (&*policy.chain, policy.hook),
            ("output", Some(Hook::Output))
        );
        assert_eq!(
            (&policy.action, policy.matches),
            (&Action::Drop, Matches::Yes)
        );
        assert_eq!(rules.len(), 4, "{rules:#?}");
    }
}
