//! Connection tracking: a socket enters SYN_SENT (process context: who connects), collects RSTs and
//! SYN retransmits, and when it leaves SYN_SENT without being established, one event is emitted with
//! the in-kernel verdict.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, fexit},
    programs::{BtfTracePointContext, FExitContext},
};
use netladder_common::{eflag, kind, syscall, verdict, ConnState, DropRecord, Event};

use crate::{
    kernel::{conf, current_proc, is_self, other_netns, read, read_buf, sock_flow, sock_netns},
    maps::{count, emit, CONNS, DROPS, ICMP_SEEN},
};

// TCP states (include/net/tcp_states.h): part of the kernel ABI, identical on every kernel.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const IPPROTO_TCP: u16 = 6;

const ECONNREFUSED: i32 = 111;
const ETIMEDOUT: i32 = 110;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if read::<u16>(sk, conf!(sk_protocol)).unwrap_or(0) != IPPROTO_TCP {
        return 0;
    }
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => track(sk),
        (TCP_SYN_SENT, TCP_ESTABLISHED) => forget(sk),
        (TCP_SYN_SENT, TCP_CLOSE) => finish(sk),
        (_, TCP_CLOSE) => {
            let _ = CONNS.remove(&sk);
        }
        _ => {}
    }
    0
}

/// Runs in the connecting task (connect() -> tcp_v4_connect -> tcp_set_state): record who it is.
#[inline(always)]
fn track(sk: u64) {
    if is_self() {
        return;
    }
    let netns = sock_netns(sk);
    if other_netns(netns) {
        return;
    }
    let state = ConnState {
        proc: current_proc(netns),
        start_ns: unsafe { bpf_ktime_get_ns() },
        syn_retrans: 0,
        flags: 0,
    };
    crate::syscall::mark_syn_sent();
    if CONNS.insert(&sk, &state, 0).is_err() {
        count(netladder_common::counter::CONN_MAP_FULL);
    }
}

/// Established: not a failure. Drop everything we kept about it.
#[inline(always)]
fn forget(sk: u64) {
    if CONNS.remove(&sk).is_ok() {
        if let Ok(flow) = sock_flow(sk) {
            let _ = DROPS.remove(&flow);
        }
    }
}

/// The socket left SYN_SENT for CLOSE: a failed connection (or an aborted one). Classify it.
#[inline(always)]
fn finish(sk: u64) {
    let Some(state) = (unsafe { CONNS.get(&sk) }).copied() else {
        return;
    };
    let _ = CONNS.remove(&sk);
    let Ok(flow) = sock_flow(sk) else {
        return;
    };
    let mut drops = unsafe { DROPS.get(&flow) }.copied().unwrap_or_default();
    let _ = DROPS.remove(&flow);
    if drops.last_ns < state.start_ns {
        // Left over from an earlier connection that used the same ports.
        drops = DropRecord::default();
    }

    let icmp = unsafe { ICMP_SEEN.get(&flow) }
        .copied()
        .filter(|r| r.last_ns >= state.start_ns);
    let _ = ICMP_SEEN.remove(&flow);
    let err: i32 = read(sk, conf!(sk_err)).unwrap_or(0);
    let err_soft: i32 = read(sk, conf!(sk_err_soft)).unwrap_or(0);
    let mut flags = state.flags | drops.flags;
    let Some(verdict) = classify(err, state.syn_retrans, &drops, &mut flags) else {
        return;
    };
    emit(&Event {
        kind: kind::CONN_FAILED,
        verdict,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        start_ns: state.start_ns,
        sk,
        proc: state.proc,
        flow,
        err,
        err_soft,
        syn_retrans: state.syn_retrans,
        flags,
        nf_drops: drops.nf_drops,
        nosock_drops: drops.nosock_drops,
        other_drops: drops.other_drops,
        last_drop_reason: drops.last_reason,
        drop_location: drops.location,
        drop_ifindex: drops.ifindex,
        drop_netns: drops.netns,
        icmp_from: icmp.map(|r| r.from).unwrap_or([0; 16]),
        icmp_type: icmp.map(|r| r.icmp_type).unwrap_or(0),
        icmp_code: icmp.map(|r| r.icmp_code).unwrap_or(0),
        _pad: [0; 6],
    });
}

/// The in-kernel verdict. `None`: the socket closed before anything failed on the wire
/// (e.g. the application aborted at once, or port allocation failed: reported by the syscall path).
#[inline(always)]
fn classify(err: i32, retrans: u32, drops: &DropRecord, flags: &mut u32) -> Option<u32> {
    let rst = *flags & eflag::RST_RECEIVED != 0;
    let fw = drops.nf_drops > 0;
    let v = if rst || err == ECONNREFUSED {
        match (fw, rst) {
            (true, true) => verdict::FIREWALL_REJECT_RST,
            (true, false) | (false, false) => verdict::FIREWALL_REJECT_ICMP,
            (false, true) if drops.nosock_drops > 0 => verdict::REFUSED_NO_LISTENER,
            (false, true) => verdict::REFUSED_PEER,
        }
    } else if err == ETIMEDOUT || (err == 0 && (retrans > 0 || fw)) {
        if err == 0 {
            *flags |= eflag::APP_GAVE_UP;
        }
        if fw {
            verdict::TIMEOUT_LOCAL_DROP
        } else {
            verdict::TIMEOUT_NO_REPLY
        }
    } else if err == EHOSTUNREACH || err == ENETUNREACH {
        match (fw, err) {
            (true, _) => verdict::FIREWALL_REJECT_OTHER,
            (false, EHOSTUNREACH) => verdict::HOST_UNREACHABLE,
            _ => verdict::NET_UNREACHABLE,
        }
    } else if err == 0 {
        return None;
    } else {
        verdict::UNKNOWN
    };
    Some(v)
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    if let Some(state) = CONNS.get_ptr_mut(&sk) {
        unsafe { (*state).flags |= eflag::RST_RECEIVED };
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    // Only sockets still in SYN_SENT are in CONNS: these are SYN retransmissions.
    if let Some(state) = CONNS.get_ptr_mut(&sk) {
        unsafe { (*state).syn_retrans += 1 };
    }
    0
}

/// Optional (kernels that allow fexit): the connect path itself, in process context. It sees
/// synchronous failures of connects that do not come through the connect() syscall (io_uring), and
/// records the connecting task if the state-change program missed it.
#[fexit(function = "tcp_v4_connect")]
pub fn tcp_v4_connect_exit(ctx: FExitContext) -> u32 {
    connect_exit(&ctx)
}

#[fexit(function = "tcp_v6_connect")]
pub fn tcp_v6_connect_exit(ctx: FExitContext) -> u32 {
    connect_exit(&ctx)
}

#[inline(always)]
fn connect_exit(ctx: &FExitContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let uaddr: u64 = ctx.arg(1);
    let ret: i32 = ctx.arg(3);
    if is_self() || other_netns(sock_netns(sk)) {
        return 0;
    }
    if ret < 0 {
        // Synchronous failure (no route, no local port...): the address comes from the kernel's
        // copy of the caller's sockaddr, since the socket may not have a destination yet.
        let mut raw = [0u8; 28];
        if read_buf(uaddr, 0, &mut raw).is_ok() {
            crate::syscall::emit_call_error(syscall::CONNECT, &raw, ret, sock_netns(sk));
        }
        return 0;
    }
    if unsafe { CONNS.get(&sk) }.is_none() {
        let state = ConnState {
            proc: current_proc(sock_netns(sk)),
            start_ns: unsafe { bpf_ktime_get_ns() },
            syn_retrans: 0,
            flags: 0,
        };
        let _ = CONNS.insert(&sk, &state, 0);
    }
    0
}
