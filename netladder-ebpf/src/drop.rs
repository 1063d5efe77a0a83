//! Packet drops (skb:kfree_skb with a drop reason): a handshake packet (SYN or SYN-ACK) dropped
//! anywhere on the host (any namespace, any reason: the local firewall, no socket for it, the
//! reverse-path filter, no route...) is recorded under its flow (client's view) until the
//! connection closes and picks the record up.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netladder_common::{counter, eflag, DropRecord, Flow, AF_INET, AF_INET6};

use crate::{
    kernel::{conf, load, read_buf, same_flow, zero_flow, zeroed},
    maps::{count, count_drop_write, DROPS, NOSOCK_LAST},
};

const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// `skb->network_header` when unset (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Netfilter,
    NoSocket,
    Other,
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let reason: u32 = ctx.arg(2);
    // Every reason counts: a handshake packet dropped anywhere on the host, for whatever reason
    // (reverse-path filter, no route on input, a full backlog, connection tracking...), is
    // evidence for its connection, and "nothing dropped it" may only be said when none was seen.
    // What is not a TCP SYN or SYN-ACK leaves at the header check.
    let class = if reason == conf!(reason_netfilter_drop) {
        Class::Netfilter
    } else if reason == conf!(reason_no_socket) {
        Class::NoSocket
    } else {
        Class::Other
    };
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let Some(flow) = handshake_flow(skb) else {
        return 0;
    };
    let netns = skb_netns(skb);
    if class == Class::NoSocket {
        park_no_socket(&flow, reason, netns);
        return 0;
    }
    let iif: i32 = load(skb, conf!(skb_iif));
    record(&flow, class, reason, location, iif, netns, 1, now());
    0
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// A NO_SOCKET drop goes to this CPU's slot (see `NoSocketDrop`); the one parked there before, if
/// unclaimed and of another flow, moves to DROPS first.
#[inline(always)]
fn park_no_socket(flow: &Flow, reason: u32, netns: u32) {
    let Some(slot) = NOSOCK_LAST.get_ptr_mut(0) else {
        record(flow, Class::NoSocket, reason, 0, 0, netns, 1, now());
        return;
    };
    let slot = unsafe { &mut *slot };
    let same = slot.parked != 0 && same_flow(&slot.flow, flow);
    if slot.parked != 0 && !same {
        // Straight from the slot (no copy on the stack, which this program is short of): the
        // slot is only rewritten below.
        record(
            &slot.flow,
            Class::NoSocket,
            slot.reason,
            0,
            0,
            slot.netns,
            slot.drops,
            slot.last_ns,
        );
    }
    slot.drops = if same { slot.drops + 1 } else { 1 };
    slot.flow = *flow;
    slot.reason = reason;
    slot.netns = netns;
    slot.last_ns = now();
    slot.parked = 1;
}

/// Adds `drops` drops of `class` seen at `at` to the flow's record in DROPS.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn record(
    flow: &Flow,
    class: Class,
    reason: u32,
    location: u64,
    iif: i32,
    netns: u32,
    drops: u32,
    at: u64,
) {
    let dir = if iif == 0 {
        eflag::DROP_OUTGOING
    } else {
        eflag::DROP_INCOMING
    };
    let update = |r: &mut DropRecord| {
        match class {
            Class::Netfilter => {
                r.nf_drops += drops;
                r.location = location;
                r.flags |= dir;
                r.ifindex = iif as u32;
            }
            Class::NoSocket => r.nosock_drops += drops,
            Class::Other => {
                r.other_drops += drops;
                // Where it happened, unless a netfilter drop (the likelier cause) already said.
                if r.nf_drops == 0 {
                    r.location = location;
                    r.flags |= dir;
                    r.ifindex = iif as u32;
                }
            }
        }
        r.last_reason = reason;
        r.last_ns = at;
        if netns != 0 {
            r.netns = netns;
        }
    };
    // Nearly every handshake drop is the first of its flow: try to add the record first (one map
    // operation), and update the one already there only when that fails.
    // SAFETY: an 8-byte aligned record of plain integers, a multiple of 8 bytes.
    let mut fresh: DropRecord = unsafe { zeroed() };
    update(&mut fresh);
    if DROPS.insert(flow, &fresh, BPF_NOEXIST as u64).is_ok() {
        count_drop_write();
        return;
    }
    match DROPS.get_ptr_mut(flow) {
        Some(existing) => {
            update(unsafe { &mut *existing });
            count_drop_write();
        }
        None => count(counter::DROP_MAP_FULL),
    }
}

/// Adds the NO_SOCKET drop parked on this CPU to `drops` and frees the slot, when it is `flow`'s
/// and not older than `since` (the connection's start).
#[inline(always)]
pub fn claim_no_socket(flow: &Flow, since: u64, drops: &mut DropRecord) {
    let Some(slot) = NOSOCK_LAST.get_ptr_mut(0) else {
        return;
    };
    let slot = unsafe { &mut *slot };
    if slot.parked == 0 || slot.last_ns < since || !same_flow(&slot.flow, flow) {
        return;
    }
    let at = slot.last_ns;
    drops.nosock_drops += slot.drops;
    if at >= drops.last_ns {
        drops.last_ns = at;
        drops.last_reason = slot.reason;
        if slot.netns != 0 {
            drops.netns = slot.netns;
        }
    }
    // A drop handled in a softirq that interrupted us here has replaced the slot (and moved this
    // one to DROPS, where it was found or is lost to this close): release only the slot we read.
    if slot.last_ns == at {
        slot.parked = 0;
    }
}

/// Network namespace where the packet was dropped: `skb->dev->nd_net->ns.inum` (0 if unknown).
#[inline(always)]
fn skb_netns(skb: u64) -> u32 {
    let dev: u64 = load(skb, conf!(skb_dev));
    load::<u32>(load::<u64>(dev, conf!(dev_nd_net)), conf!(net_ns_inum))
}

/// The flow of a TCP SYN (as sent) or SYN-ACK (reversed, so the key is the client's view).
/// `None` for anything else, or when the headers cannot be read.
#[inline(always)]
fn handshake_flow(skb: u64) -> Option<Flow> {
    let head: u64 = load(skb, conf!(skb_head));
    let nh: u16 = load(skb, conf!(skb_network_header));
    if nh == HEADER_UNSET || head == 0 {
        return None;
    }
    let ip = head + nh as u64;
    // One read covers an IPv4 header without options or an IPv6 header, plus the TCP ports and
    // flags: the common case costs a single probe read.
    // (Read into an uninitialised buffer: zeroing it first would cost a memset.)
    let b: [u8; 56] = unsafe { bpf_probe_read_kernel(ip as *const [u8; 56]) }.ok()?;
    let mut flow = zero_flow();
    flow.protocol = IPPROTO_TCP as u16;
    // The TCP ports and flags (bytes 0..14 of its header).
    let mut t = core::mem::MaybeUninit::<[u8; 14]>::uninit();
    // SAFETY: every arm below either fills all 14 bytes or returns.
    let t = unsafe { &mut *t.as_mut_ptr() };
    match b[0] >> 4 {
        4 => {
            let ihl = ((b[0] & 0x0f) as usize) * 4;
            if b[9] != IPPROTO_TCP || ihl < 20 {
                return None;
            }
            flow.family = AF_INET;
            flow.saddr[..4].copy_from_slice(&b[12..16]);
            flow.daddr[..4].copy_from_slice(&b[16..20]);
            if ihl == 20 {
                t.copy_from_slice(&b[20..34]);
            } else {
                read_buf(ip + ihl as u64, 0, t).ok()?;
            }
        }
        6 => {
            // Extension headers before TCP are rare on handshakes; such packets are skipped.
            if b[6] != IPPROTO_TCP {
                return None;
            }
            flow.family = AF_INET6;
            flow.saddr.copy_from_slice(&b[8..24]);
            flow.daddr.copy_from_slice(&b[24..40]);
            t.copy_from_slice(&b[40..54]);
        }
        _ => {
            count(counter::MALFORMED);
            return None;
        }
    }
    flow.sport = u16::from_be_bytes([t[0], t[1]]);
    flow.dport = u16::from_be_bytes([t[2], t[3]]);
    let flags = t[13];
    if flags & TCP_SYN == 0 {
        return None;
    }
    if flags & TCP_ACK != 0 {
        core::mem::swap(&mut flow.saddr, &mut flow.daddr);
        core::mem::swap(&mut flow.sport, &mut flow.dport);
    }
    Some(flow)
}
