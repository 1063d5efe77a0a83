//! ICMP errors received for a connection (host/port/admin unreachable from a router or the peer):
//! the sender's address is what `ip route get` cannot tell, and the error itself is what a
//! client that read SO_ERROR before closing no longer leaves on the socket.
//!
//! Two ways in, chosen by the hook plan:
//! - `fentry/tcp_v4_err` and `fentry/tcp_v6_err` (kernels that allow tracing programs): TCP's
//!   own ICMP error handler, entered before it sets the socket's error and closes it, so the
//!   record is there when the connection's summary is built; nothing else pays for it.
//! - `tp_btf/consume_skb` (6.3+, where fentry is refused): the stack consumes an ICMP message it
//!   handled in icmp_rcv / icmpv6_rcv (text ranges in `ICMP_RCV`, written by the loader only
//!   when it attaches this program); only skbs consumed there are parsed. This runs after the
//!   handler, so a connection closed by the error itself is summarised before the record exists;
//!   one the application closes later (the common case for non-blocking clients) finds it.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, fentry},
    programs::{BtfTracePointContext, FEntryContext},
};
use netladder_common::{Flow, IcmpRecord, AF_INET, AF_INET6};

use crate::{
    kernel::{conf, read, read_buf},
    maps::{ICMP_RCV, ICMP_SEEN},
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
/// ICMP destination unreachable, IPv4 and IPv6 (ABI).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMP_FRAG_NEEDED: u8 = 4;
const HEADER_UNSET: u16 = 0xffff;

#[btf_tracepoint(function = "consume_skb")]
pub fn consume_skb(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let location: u64 = ctx.arg(1);
    // Never empty while attached (userspace fills it first); all 0 would match nothing.
    let (Some(v4), Some(v6)) = (ICMP_RCV.get(0), ICMP_RCV.get(1)) else {
        return 0;
    };
    let family = if location >= v4[0] && location < v4[1] {
        AF_INET
    } else if location >= v6[0] && location < v6[1] {
        AF_INET6
    } else {
        return 0;
    };
    let skb: u64 = ctx.arg(0);
    let _ = record(skb, family);
    0
}

/// TCP's IPv4 ICMP error handler: `skb` is the ICMP message, its network header the outer IPv4
/// header (the same layout `record` reads in consume_skb).
#[fentry(function = "tcp_v4_err")]
pub fn tcp_v4_err_entry(ctx: FEntryContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let _ = record(skb, AF_INET);
    0
}

/// TCP's IPv6 ICMP error handler (`tcp_v6_err(skb, opt, type, code, offset, info)`).
#[fentry(function = "tcp_v6_err")]
pub fn tcp_v6_err_entry(ctx: FEntryContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let _ = record(skb, AF_INET6);
    0
}

#[inline(always)]
fn record(skb: u64, family: u16) -> Result<(), i64> {
    let head: u64 = read(skb, conf!(skb_head))?;
    let nh: u16 = read(skb, conf!(skb_network_header))?;
    if nh == HEADER_UNSET {
        return Ok(());
    }
    let ip = head + nh as u64;
    let mut flow = Flow {
        family,
        protocol: IPPROTO_TCP as u16,
        ..Flow::default()
    };
    let mut rec = IcmpRecord::default();
    if family == AF_INET {
        // Outer IPv4 (20) + ICMP (8) + inner IPv4 (20) + inner ports (4), without IP options.
        let mut b = [0u8; 52];
        read_buf(ip, 0, &mut b)?;
        if b[0] != 0x45 || b[9] != IPPROTO_ICMP || b[20] != ICMP_DEST_UNREACH {
            return Ok(());
        }
        // Fragmentation needed (4) is path MTU discovery, not a failure.
        if b[21] == ICMP_FRAG_NEEDED || b[28] != 0x45 || b[37] != IPPROTO_TCP {
            return Ok(());
        }
        rec.from[..4].copy_from_slice(&b[12..16]);
        rec.icmp_type = b[20];
        rec.icmp_code = b[21];
        // The quoted packet is the one we sent: its source is our end.
        flow.saddr[..4].copy_from_slice(&b[40..44]);
        flow.daddr[..4].copy_from_slice(&b[44..48]);
        flow.sport = u16::from_be_bytes([b[48], b[49]]);
        flow.dport = u16::from_be_bytes([b[50], b[51]]);
    } else {
        // Outer IPv6 (40) + ICMPv6 (8) + inner IPv6 (40) + inner ports (4).
        let mut b = [0u8; 92];
        read_buf(ip, 0, &mut b)?;
        if b[6] != IPPROTO_ICMPV6 || b[40] != ICMPV6_DEST_UNREACH || b[54] != IPPROTO_TCP {
            return Ok(());
        }
        rec.from.copy_from_slice(&b[8..24]);
        rec.icmp_type = b[40];
        rec.icmp_code = b[41];
        flow.saddr.copy_from_slice(&b[56..72]);
        flow.daddr.copy_from_slice(&b[72..88]);
        flow.sport = u16::from_be_bytes([b[88], b[89]]);
        flow.dport = u16::from_be_bytes([b[90], b[91]]);
    }
    rec.last_ns = unsafe { bpf_ktime_get_ns() };
    let _ = ICMP_SEEN.insert(&flow, &rec, 0);
    Ok(())
}
