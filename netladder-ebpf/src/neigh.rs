//! Neighbour resolution (ARP for IPv4, neighbour discovery for IPv6): an entry that goes FAILED is
//! reported, so a host-unreachable connection can be told apart as a link-layer failure even on
//! kernels without drop reasons.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use netladder_common::{kind, Event, Flow, AF_INET, AF_INET6};

use crate::{
    kernel::{conf, other_netns, read, read_buf},
    maps::emit,
};

/// NUD_FAILED (include/uapi/linux/neighbour.h): part of the ABI.
const NUD_FAILED: u8 = 0x20;

#[btf_tracepoint(function = "neigh_update")]
pub fn neigh_update(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let n: u64 = ctx.arg(0);
    let new: u8 = ctx.arg(2);
    if new == NUD_FAILED {
        report(n);
    }
    0
}

/// Resolution gave up after its probes: the timer moved the entry to FAILED.
#[btf_tracepoint(function = "neigh_timer_handler")]
pub fn neigh_timer_handler(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let n: u64 = ctx.arg(0);
    if read::<u8>(n, conf!(neigh_state)).unwrap_or(0) == NUD_FAILED {
        report(n);
    }
    0
}

#[inline(always)]
fn report(n: u64) {
    let Ok(tbl) = read::<u64>(n, conf!(neigh_tbl)) else {
        return;
    };
    let family: u16 = read::<u32>(tbl, conf!(tbl_family)).unwrap_or(0) as u16;
    let mut flow = Flow {
        family,
        ..Flow::default()
    };
    let ok = match family {
        AF_INET => read_buf(n, conf!(neigh_key), &mut flow.daddr[..4]),
        AF_INET6 => read_buf(n, conf!(neigh_key), &mut flow.daddr),
        _ => return,
    };
    if ok.is_err() {
        return;
    }
    let dev: u64 = read(n, conf!(neigh_dev)).unwrap_or(0);
    let netns = match read::<u64>(dev, conf!(dev_nd_net)) {
        Ok(net) => read::<u32>(net, conf!(net_ns_inum)).unwrap_or(0),
        Err(_) => 0,
    };
    if other_netns(netns) {
        return;
    }
    emit(&Event {
        kind: kind::NEIGH_FAILED,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        flow,
        drop_ifindex: read::<i32>(dev, conf!(dev_ifindex)).unwrap_or(0) as u32,
        drop_netns: netns,
        ..Event::default()
    });
}
