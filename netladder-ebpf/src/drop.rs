//! Packet drops (skb:kfree_skb with a drop reason): a handshake packet (SYN or SYN-ACK) that the
//! local firewall dropped, or that reached a local stack with no socket for it, is recorded under
//! its flow (client's view) until the connection closes and picks the record up.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use netladder_common::{counter, eflag, DropRecord, Flow, AF_INET, AF_INET6};

use crate::{
    kernel::{conf, read, read_buf},
    maps::{count, DROPS},
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
    let reason: u32 = ctx.arg(2);
    // Cheap path first: almost every freed packet has another reason.
    let class = if reason == conf!(reason_netfilter_drop) {
        Class::Netfilter
    } else if reason == conf!(reason_no_socket) {
        Class::NoSocket
    } else if reason == conf!(reason_ip_outnoroutes) || reason == conf!(reason_neigh_failed) {
        Class::Other
    } else {
        return 0;
    };
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let Some(flow) = handshake_flow(skb) else {
        return 0;
    };
    let iif: i32 = read(skb, conf!(skb_iif)).unwrap_or(0);
    record(&flow, class, reason, location, iif, skb_netns(skb));
    0
}

#[inline(always)]
fn record(flow: &Flow, class: Class, reason: u32, location: u64, iif: i32, netns: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    let dir = if iif == 0 {
        eflag::DROP_OUTGOING
    } else {
        eflag::DROP_INCOMING
    };
    let update = |r: &mut DropRecord| {
        match class {
            Class::Netfilter => {
                r.nf_drops += 1;
                r.location = location;
                r.flags |= dir;
                r.ifindex = iif as u32;
            }
            Class::NoSocket => r.nosock_drops += 1,
            Class::Other => r.other_drops += 1,
        }
        r.last_reason = reason;
        r.last_ns = now;
        if netns != 0 {
            r.netns = netns;
        }
    };
    if let Some(existing) = DROPS.get_ptr_mut(flow) {
        update(unsafe { &mut *existing });
        return;
    }
    let mut fresh = DropRecord::default();
    update(&mut fresh);
    if DROPS.insert(flow, &fresh, 0).is_err() {
        count(counter::DROP_MAP_FULL);
    }
}

/// Network namespace where the packet was dropped: `skb->dev->nd_net->ns.inum` (0 if unknown).
#[inline(always)]
fn skb_netns(skb: u64) -> u32 {
    let Ok(dev) = read::<u64>(skb, conf!(skb_dev)) else {
        return 0;
    };
    match read::<u64>(dev, conf!(dev_nd_net)) {
        Ok(net) => read::<u32>(net, conf!(net_ns_inum)).unwrap_or(0),
        Err(_) => 0,
    }
}

/// The flow of a TCP SYN (as sent) or SYN-ACK (reversed, so the key is the client's view).
/// `None` for anything else, or when the headers cannot be read.
#[inline(always)]
fn handshake_flow(skb: u64) -> Option<Flow> {
    let head: u64 = read(skb, conf!(skb_head)).ok()?;
    let nh: u16 = read(skb, conf!(skb_network_header)).ok()?;
    if nh == HEADER_UNSET || head == 0 {
        return None;
    }
    let ip = head + nh as u64;
    // One read covers an IPv4 header without options or an IPv6 header, plus the TCP ports and
    // flags: the common case costs a single probe read.
    let mut b = [0u8; 56];
    read_buf(ip, 0, &mut b).ok()?;
    let mut flow = Flow {
        protocol: IPPROTO_TCP as u16,
        ..Flow::default()
    };
    let mut t = [0u8; 14];
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
                read_buf(ip + ihl as u64, 0, &mut t).ok()?;
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
