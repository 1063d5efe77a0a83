//! Builders shared by the unit tests of the nf_tables files: netlink-encoded expressions and
//! rules, and the packets they are replayed on.
use super::expressions::*;
use crate::enrich::firewall::Packet;
use crate::enrich::nfnl::*;

/// An NFTA_LIST_ELEM with the expression's name and data.
pub(super) fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
    nest(1, &[string(1, name), nest(2, data)])
}

pub(super) fn meta(key: u32) -> Vec<u8> {
    expr("meta", &[be32(2, key), be32(1, 1)])
}

pub(super) fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
    expr(
        "payload",
        &[be32(1, 1), be32(2, base), be32(3, offset), be32(4, len)],
    )
}

pub(super) fn cmp(op: u32, bytes: &[u8]) -> Vec<u8> {
    expr("cmp", &[be32(1, 1), be32(2, op), data(3, bytes)])
}

pub(super) fn counter(packets: u64) -> Vec<u8> {
    expr(
        "counter",
        &[nla(1, &[0; 8]), nla(2, &packets.to_be_bytes())],
    )
}

pub(super) fn verdict(code: i32, chain: &str) -> Vec<u8> {
    let v = nest(2, &[nest(2, &[be32(1, code as u32), string(2, chain)])]);
    expr("immediate", &[be32(1, 0), v])
}

pub(super) fn reject(kind: u32, code: u8) -> Vec<u8> {
    expr("reject", &[be32(1, kind), nla(2, &[code])])
}

pub(super) fn bitwise(mask: &[u8]) -> Vec<u8> {
    let (len, xor) = (be32(3, mask.len() as u32), data(5, &vec![0; mask.len()]));
    expr(
        "bitwise",
        &[be32(1, 1), be32(2, 1), len, data(4, mask), xor],
    )
}

pub(super) fn ct_state(mask: u32) -> Vec<Vec<u8>> {
    let ct = expr("ct", &[be32(1, 1), be32(2, 0)]);
    vec![ct, bitwise(&mask.to_ne_bytes()), cmp(CMP_NEQ, &[0; 4])]
}

pub(super) fn dport(port: u16) -> Vec<Vec<u8>> {
    let p = port.to_be_bytes();
    vec![
        meta(META_L4PROTO),
        cmp(0, &[6]),
        payload(TRANSPORT, 2, 2),
        cmp(0, &p),
    ]
}

pub(super) fn ip(offset: u32, a: [u8; 4]) -> Vec<Vec<u8>> {
    vec![
        meta(META_NFPROTO),
        cmp(0, &[IPV4]),
        payload(NETWORK, offset, 4),
        cmp(0, &a),
    ]
}

pub(super) fn attrs(exprs: &[Vec<u8>], comment: &str) -> Vec<u8> {
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

pub(super) fn rule(family: u8, exprs: &[Vec<u8>]) -> NftRule {
    let r = parse_rule(family, &attrs(exprs, "")).expect("the rule parses");
    NftRule { comment: None, ..r }
}

pub(super) fn pkt(src: &str, dst: &str, iif: Option<&str>) -> Packet {
    let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
    Packet {
        l4proto: 6,
        src,
        dst,
        iif: iif.map(String::from),
        oif: None,
    }
}

pub(super) fn v4() -> Packet {
    pkt("10.0.0.1:5000", "10.0.0.2:443", None)
}
