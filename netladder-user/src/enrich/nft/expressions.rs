//! The ruleset as the dumps carry it: tables, chains and rules, each rule's expressions decoded
//! from their attributes, and the uapi numbers those hold (families, verdicts, cmp operators,
//! payload bases, meta keys).
use crate::enrich::nfnl::*;

// NFPROTO_* families, as the nfgenmsg header carries them.
pub(super) const INET: u8 = 1;
pub(super) const IPV4: u8 = 2;
pub(super) const ARP: u8 = 3;
pub(super) const NETDEV: u8 = 5;
pub(super) const BRIDGE: u8 = 7;
pub(super) const IPV6: u8 = 10;
// The NF_DROP verdict, and the cmp operators used by name (enum nft_cmp_ops).
pub(super) const NF_DROP: i32 = 0;
/// The data registers' total size (NFT_REG32_COUNT * NFT_REG32_SIZE): no load is longer.
const REGS_LEN: u32 = 64;
pub(super) const CMP_EQ: u32 = 0;
pub(super) const CMP_NEQ: u32 = 1;
pub(super) const CMP_LTE: u32 = 3;
pub(super) const CMP_GTE: u32 = 5;
// Payload bases and meta keys (enum nft_payload_bases, enum nft_meta_keys).
pub(super) const NETWORK: u32 = 1;
pub(super) const TRANSPORT: u32 = 2;
pub(super) const META_PROTOCOL: u32 = 1;
pub(super) const META_IIFNAME: u32 = 6;
pub(super) const META_OIFNAME: u32 = 7;
pub(super) const META_NFPROTO: u32 = 15;
pub(super) const META_L4PROTO: u32 = 16;

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Table {
    pub(super) family: u8,
    pub(super) name: String,
    /// The chains of a dormant table are off their hooks.
    pub(super) dormant: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Chain {
    pub(super) family: u8,
    pub(super) table: String,
    pub(super) name: String,
    /// (hook number, priority) of a base chain.
    pub(super) hook: Option<(u32, i32)>,
    pub(super) policy: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct NftRule {
    pub(super) family: u8,
    pub(super) table: String,
    pub(super) chain: String,
    pub(super) handle: u64,
    pub(super) exprs: Vec<Expr>,
    pub(super) comment: Option<String>,
}

/// A decoded expression. Registers keep the kernel's numbering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expr {
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
pub(super) fn parse_table(family: u8, a: &[u8]) -> Option<Table> {
    let dormant = attr_u32(a, 2).unwrap_or(0) & 1 != 0;
    Some(Table {
        family,
        name: attr_str(a, 1)?,
        dormant,
    })
}

/// NFTA_CHAIN_TABLE (1), NAME (3), HOOK (4: NFTA_HOOK_HOOKNUM 1, NFTA_HOOK_PRIORITY 2),
/// POLICY (5).
pub(super) fn parse_chain(family: u8, a: &[u8]) -> Option<Chain> {
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
pub(super) fn parse_rule(family: u8, a: &[u8]) -> Option<NftRule> {
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

#[cfg(test)]
mod tests {
    use super::super::dump::request;
    use super::super::fixtures::*;
    use super::*;

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
}
