//! nfnetlink framing shared by the nf_tables readers and writers: splitting replies into
//! messages, walking attributes, and writing messages, attributes and batches.
//!
//! Numbers come from the uapi headers linux/netlink.h and linux/netfilter/nfnetlink.h.

use anyhow::bail;

use super::netlink::{self, Malformed, Message, NLM_F_DUMP_INTR};
pub(super) use super::netlink::{NLMSG_DONE, NLMSG_ERROR};

pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// NFNL_MSG_BATCH_BEGIN / END: an nf_tables transaction.
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;

/// One nf_tables message of a dump: type within the subsystem, nfgenmsg family, attributes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NfMsg {
    pub(super) kind: u16,
    pub(super) family: u8,
    pub(super) attrs: Vec<u8>,
}

/// What one datagram of a dump held.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) msgs: Vec<NfMsg>,
    pub(super) done: bool,
    /// A positive errno from NLMSG_ERROR or NLMSG_DONE.
    pub(super) errno: Option<i32>,
    /// The ruleset changed during the dump (NLM_F_DUMP_INTR).
    pub(super) interrupted: bool,
}

/// Reads a datagram as a whole (the trace group's, and the fuzz targets'), framed by
/// `netlink::split`: its nf_tables messages, whether it ends a dump, its errno. Bytes after the
/// last message too few for a header are left unread.
pub(super) fn parse_datagram(buf: &[u8]) -> anyhow::Result<Batch> {
    let mut batch = Batch::default();
    for m in netlink::split(buf) {
        let m = match m {
            Ok(m) => m,
            Err(Malformed::ShortTail(_)) => break,
            Err(e) => bail!("malformed nfnetlink reply: {e}"),
        };
        let code = native_u32(m.payload()).map_or(0, |c| c as i32);
        batch.interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
        match m.kind {
            NLMSG_ERROR | NLMSG_DONE if code < 0 => batch.errno = Some(code.saturating_neg()),
            NLMSG_DONE => batch.done = true,
            _ => batch.msgs.extend(nf_message(&m)),
        }
    }
    Ok(batch)
}

/// An nf_tables message: after the header, the 4-byte nfgenmsg (family, version, resource
/// id), then attributes.
pub(super) fn nf_message(m: &Message) -> Option<NfMsg> {
    let payload = m.payload();
    (m.kind >> 8 == NFNL_SUBSYS_NFTABLES && payload.len() >= 4).then(|| NfMsg {
        kind: m.kind & 0xff,
        family: payload[0],
        attrs: payload[4..].to_vec(),
    })
}

pub(super) fn pack16(a: u16, b: u16) -> [u8; 4] {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    [a[0], a[1], b[0], b[1]]
}

/// Walks netlink attributes, yielding (type without NLA_F_NESTED/NLA_F_NET_BYTEORDER, payload).
/// Stops at the first malformed header.
pub(super) struct Attrs<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.0;
        let len = usize::from(ne16(buf.get(..2)?));
        if len < 4 || len > buf.len() {
            self.0 = &[];
            return None;
        }
        self.0 = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((ne16(&buf[2..]) & 0x3fff, &buf[4..len]))
    }
}

pub(super) fn ne16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

pub(super) fn native_u32(d: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

pub(super) fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    Attrs(buf).find(|(k, _)| *k == kind).map(|(_, d)| d)
}

/// Integers in nf_tables attributes are big-endian.
pub(super) fn attr_u32(buf: &[u8], kind: u16) -> Option<u32> {
    Some(u32::from_be_bytes(
        attr(buf, kind)?.get(..4)?.try_into().ok()?,
    ))
}

pub(super) fn attr_u64(buf: &[u8], kind: u16) -> Option<u64> {
    Some(u64::from_be_bytes(
        attr(buf, kind)?.get(..8)?.try_into().ok()?,
    ))
}

/// A string up to its NUL.
pub(super) fn text(d: &[u8]) -> String {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

pub(super) fn attr_str(buf: &[u8], kind: u16) -> Option<String> {
    attr(buf, kind).map(text)
}

/// The NFTA_DATA_VALUE (1) bytes inside nested data attribute `kind`.
pub(super) fn attr_value(buf: &[u8], kind: u16) -> Option<Vec<u8>> {
    attr(attr(buf, kind)?, 1).map(<[u8]>::to_vec)
}

/// A netlink attribute: native-endian header, payload, padding to 4 bytes.
pub(super) fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut v = [&pack16(len as u16, kind)[..], payload].concat();
    v.resize(len.next_multiple_of(4), 0);
    v
}

/// A nested attribute (NLA_F_NESTED) holding `children`.
pub(super) fn nest(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | 0x8000, &children.concat())
}

/// A big-endian u32 attribute, as nf_tables wants its integers.
pub(super) fn be32(kind: u16, v: u32) -> Vec<u8> {
    nla(kind, &v.to_be_bytes())
}

/// A NUL-terminated string attribute.
pub(super) fn string(kind: u16, v: &str) -> Vec<u8> {
    nla(kind, format!("{v}\0").as_bytes())
}

/// A data attribute: NFTA_DATA_VALUE (1) nested in `kind`.
pub(super) fn data(kind: u16, bytes: &[u8]) -> Vec<u8> {
    nest(kind, &[nla(1, bytes)])
}

/// One nf_tables message: nlmsghdr, nfgenmsg {family, version 0, res_id}, attributes.
pub(super) fn message(kind: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 20 + attrs.len();
    [
        &(len as u32).to_ne_bytes()[..],
        &pack16(kind, flags),
        &seq.to_ne_bytes(),
        &[0; 4],
        &[family, 0],
        &NFNL_SUBSYS_NFTABLES.to_be_bytes(),
        attrs,
    ]
    .concat()
}

/// An nf_tables transaction: `msgs` (already framed) between a batch begin and end, so the
/// kernel applies all of them or none.
pub(super) fn batch(msgs: &[Vec<u8>], first_seq: u32, last_seq: u32) -> Vec<u8> {
    let begin = message(BATCH_BEGIN, NLM_F_REQUEST, first_seq, 0, &[]);
    let end = message(BATCH_END, NLM_F_REQUEST, last_seq, 0, &[]);
    [begin, msgs.concat(), end].concat()
}
