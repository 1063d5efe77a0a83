//! Connection tracking: a socket enters SYN_SENT (process context: who connects), collects RSTs and
//! SYN retransmits, and when it leaves SYN_SENT without being established, one event is emitted with
//! the in-kernel verdict.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fexit},
    programs::{BtfTracePointContext, FExitContext},
};
use netladder_common::{eflag, kind, syscall, verdict, ConnState, DropRecord, Event};

use crate::{
    kernel::{
        conf, current_proc, is_self, load, opaque, other_netns, read, read_buf, sock_flow,
        sock_netns, zero_flow,
    },
    maps::{
        agg_key, blank_records, count, counted_as_repeat, drop_writes, emit, tally, tally_add,
        BlankRecords, CALL_ARGS, CONNS, CONNS_USED, DROPS, ICMP_SEEN,
    },
};

// TCP states (include/net/tcp_states.h): part of the kernel ABI, identical on every kernel.
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const IPPROTO_TCP: u16 = 6;

const ECONNREFUSED: i32 = 111;
const EADDRNOTAVAIL: i32 = 99;
const ETIMEDOUT: i32 = 110;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;
const EACCES: i32 = 13;
const ENOPROTOOPT: i32 = 92;
const EOPNOTSUPP: i32 = 95;
const EHOSTDOWN: i32 = 112;
const ENONET: i32 = 64;
/// ICMP and ICMPv6 destination unreachable (ABI).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    // Only a socket in SYN_SENT is ever live in CONNS, so only the moves into and out of SYN_SENT
    // matter: every other state change (the bulk of them on a busy host) leaves here, but for
    // a listener's end (rare), which may be a listen() that failed.
    if old != TCP_SYN_SENT && !(old == TCP_CLOSE && new == TCP_SYN_SENT) {
        if old == TCP_LISTEN && new == TCP_CLOSE {
            crate::listen::left_listen(&ctx, sk);
        }
        return 0;
    }
    if load::<u16>(sk, conf!(sk_protocol)) != IPPROTO_TCP {
        return 0;
    }
    match new {
        TCP_SYN_SENT => track(sk),
        TCP_CLOSE => finish(sk),
        // Established (or SYN_RECV after a simultaneous open): not a failure.
        _ => forget(sk),
    }
    0
}

/// Runs in the connecting task (connect() -> tcp_v4_connect -> tcp_set_state): record who it is.
/// The socket's namespace is read at the failure, the rare case, unless one namespace is watched.
#[inline(always)]
fn track(sk: u64) {
    if is_self() {
        return;
    }
    let netns = if conf!(only_netns) != 0 {
        let netns = sock_netns(sk);
        if other_netns(netns) {
            return;
        }
        netns
    } else {
        0
    };
    let state = ConnState {
        proc: current_proc(netns),
        start_ns: unsafe { bpf_ktime_get_ns() },
        syn_retrans: 0,
        flags: 0,
        drop_writes: drop_writes(),
    };
    syn_sent(sk);
    started(sk, &state);
}

/// CONNS keeps the entry of an ended connection (`start_ns` 0) while it holds fewer entries
/// than this, so that the next connection of a socket at the same address (the kernel hands
/// freed sockets out again) takes it over in place: a look-up, no insert and delete per
/// connection. Past it, an ended connection's entry is deleted at once, so the map never
/// fills with ended entries: the connections in SYN_SENT always have the other half.
const CONNS_KEEP: u64 = 32768;

/// The entry of socket `sk` while its connection is in SYN_SENT.
#[inline(always)]
pub(crate) fn live(sk: u64) -> Option<*mut ConnState> {
    let p = CONNS.get_ptr_mut(&sk)?;
    // SAFETY: a map value; start_ns 0 marks an ended entry.
    if unsafe { (*p).start_ns } == 0 {
        None
    } else {
        Some(p)
    }
}

/// Socket `sk` entered SYN_SENT: its entry, in place where an ended one is there.
#[inline(always)]
pub(crate) fn started(sk: u64, state: &ConnState) -> bool {
    if let Some(p) = CONNS.get_ptr_mut(&sk) {
        // SAFETY: the entry of this socket, written only on its own state changes.
        unsafe { *p = *state };
        return true;
    }
    if CONNS.insert(&sk, state, 0).is_err() {
        count(netladder_common::counter::CONN_MAP_FULL);
        return false;
    }
    tally_add(&CONNS_USED, 1);
    true
}

/// The connection of socket `sk` (entry `p`) ended: the entry is marked ended, or deleted
/// when CONNS holds CONNS_KEEP entries or more.
#[inline(always)]
pub(crate) fn ended(sk: u64, p: *mut ConnState) {
    if tally(&CONNS_USED) >= CONNS_KEEP {
        if CONNS.remove(&sk).is_ok() {
            tally_add(&CONNS_USED, u64::MAX);
        }
        return;
    }
    // SAFETY: a map value (see `live`).
    unsafe { (*p).start_ns = 0 };
}

/// Established: not a failure. Forget the socket. A drop record of its flow (a SYN that was
/// dropped once, then retransmitted) is left to the LRU: finish() ignores records older than
/// the connection, so it can never be taken for a later connection's.
#[inline(always)]
fn forget(sk: u64) {
    if let Some(p) = live(sk) {
        ended(sk, p);
    }
}

/// The socket left SYN_SENT for CLOSE: a failed connection (or an aborted one). Classify it.
#[inline(always)]
fn finish(sk: u64) {
    // Everything read from the socket is read before the map operations: the compiler may take
    // `sk` back from the stack slot that held the map key, and Linux 6.1 and 6.12 no longer know
    // that slot as a socket pointer once a helper has read it (direct loads from it are refused).
    // (A plain Flow and a flag, not a Result: the verifier refuses to spill the registers of a
    // payload that the error path never wrote.)
    let flow = sock_flow(sk);
    let flow_ok = flow.is_ok();
    let flow = flow.unwrap_or_else(|_| zero_flow());
    let netns = sock_netns(sk);
    let err: i32 = load(sk, conf!(sk_err));
    let err_soft: i32 = load(sk, conf!(sk_err_soft));
    // Past the end of struct sock (in inet_connection_sock): a direct load would be refused.
    let tried: u8 = read(sk, conf!(icsk_retransmits)).unwrap_or(0);
    let Some(p) = live(sk) else {
        return;
    };
    // SAFETY: a map value (see `live`).
    let mut state = unsafe { *p };
    ended(sk, p);
    if state.proc.netns == 0 {
        state.proc.netns = netns;
    }
    if !flow_ok {
        return;
    }
    // Both records start as zeros the verifier does not know (see `maps::blank_records`).
    // (Plain values, no Option: Linux 5.10's verifier refuses a read of a stack slot that one
    // path left unwritten, and the compiler reads an Option's payload on both paths.)
    let Some(BlankRecords {
        mut drops,
        mut icmp,
    }) = blank_records()
    else {
        return;
    };
    // No drop record written since the connection started: none can be its own.
    let record = if drop_writes() != state.drop_writes {
        unsafe { DROPS.get(&flow) }
    } else {
        None
    };
    if let Some(found) = record {
        // Older than this connection: left over from an earlier one that used the same ports.
        if found.last_ns >= state.start_ns {
            drops = *found;
        }
        let _ = DROPS.remove(&flow);
    }
    crate::drop::claim_no_socket(&flow, state.start_ns, &mut drops);
    let mut flags = state.flags | drops.flags;
    // ICMP errors matter only when no RST answered (a RST decides the verdict and the evidence).
    if flags & eflag::RST_RECEIVED == 0 {
        if let Some(found) = unsafe { ICMP_SEEN.get(&flow) } {
            if found.last_ns >= state.start_ns {
                icmp = *found;
            }
            let _ = ICMP_SEEN.remove(&flow);
        }
    }
    // An application that polls, reads SO_ERROR and closes (every event loop, curl) has taken
    // the socket's error by the time it closes: SO_ERROR returns and clears sk_err, or
    // sk_err_soft when sk_err is 0. What the kernel still holds answers in that order: the
    // pending soft error, then the ICMP error that answered the flow.
    let mut err = err;
    if err == 0 && err_soft != 0 {
        err = err_soft;
        flags |= eflag::ERR_SOFT;
    }
    if err == 0 {
        err = icmp_errno(icmp.icmp_type, icmp.icmp_code, flow.family);
        if err != 0 {
            flags |= eflag::ERR_FROM_ICMP;
        }
    }
    // A retry that failed on the way out (a local firewall drop before 5.17 shows none) never
    // reaches tcp_retransmit_skb; the kernel counted it all the same.
    if u32::from(tried) > state.syn_retrans {
        state.syn_retrans = u32::from(tried);
        flags |= eflag::RETRIES_NOT_SENT;
    }
    // No local port: connect() put the socket in SYN_SENT, found no free port for it and put it
    // back to CLOSE before any SYN (this runs in the connecting task, inside connect()). Where
    // nothing reads connect()'s return, that is its EADDRNOTAVAIL (#028).
    if flow.sport == 0 && err == 0 && state.syn_retrans == 0 && crate::route::reads_connect_errors()
    {
        let mut failed = flow;
        failed.saddr = [0; 16];
        failed.protocol = 0;
        crate::syscall::emit_flow_error(
            syscall::CONNECT,
            failed,
            -EADDRNOTAVAIL,
            state.proc.netns,
            eflag::NO_LOCAL_PORT,
        );
        return;
    }
    let Some(verdict) = classify(err, state.syn_retrans, &drops, &mut flags) else {
        return;
    };
    // From here on one path, whatever the ICMP table and the verdict gave (see `opaque`): one
    // copy of the three values, one helper call.
    let (err, verdict, flags) = opaque((err, verdict, flags));
    let now = unsafe { bpf_ktime_get_ns() };
    // A repeat of a failure already sent in this window (a storm) is only counted: the event
    // is built only when it is sent.
    if let Some(key) = agg_key() {
        unsafe {
            (*key).tgid = state.proc.pid;
            (*key).kind = kind::CONN_FAILED;
            (*key).verdict = verdict;
            (*key).err = err;
            (*key).flags = flags;
            (*key).netns = state.proc.netns;
            (*key).drop_netns = drops.netns;
            (*key).family = flow.family;
            (*key).dport = flow.dport;
            (*key).icmp_type = icmp.icmp_type;
            (*key).icmp_code = icmp.icmp_code;
            (*key).daddr = flow.daddr;
        }
        if counted_as_repeat(key, now) {
            return;
        }
    }
    emit(&Event {
        kind: kind::CONN_FAILED,
        verdict,
        ts_ns: now,
        start_ns: state.start_ns,
        sk,
        proc: state.proc,
        flow,
        err,
        _reserved: 0,
        syn_retrans: state.syn_retrans,
        flags,
        nf_drops: drops.nf_drops,
        nosock_drops: drops.nosock_drops,
        other_drops: drops.other_drops,
        last_drop_reason: drops.last_reason,
        drop_location: drops.location,
        drop_ifindex: drops.ifindex,
        drop_netns: drops.netns,
        icmp_from: icmp.from,
        icmp_type: icmp.icmp_type,
        icmp_code: icmp.icmp_code,
        _pad: [0; 6],
    });
}

/// The error the kernel gives a connecting socket for an ICMP destination unreachable (the
/// tables of net/ipv4/icmp.c and net/ipv6/icmp.c; part of the ABI applications see), 0 for
/// none or for one that is not an error (fragmentation needed: path MTU discovery).
#[inline(always)]
fn icmp_errno(icmp_type: u8, code: u8, family: u16) -> i32 {
    if family == netladder_common::AF_INET6 {
        if icmp_type != ICMPV6_DEST_UNREACH {
            return 0;
        }
        return match code {
            0 => ENETUNREACH,
            // Administratively prohibited, source address failed policy, reject route.
            1 | 5 | 6 => EACCES,
            4 => ECONNREFUSED,
            _ => EHOSTUNREACH,
        };
    }
    if icmp_type != ICMP_DEST_UNREACH {
        return 0;
    }
    match code {
        // Network unreachable, unknown, prohibited; TOS network unreachable.
        0 | 6 | 9 | 11 => ENETUNREACH,
        3 => ECONNREFUSED,
        4 => 0,
        2 => ENOPROTOOPT,
        5 => EOPNOTSUPP,
        7 => EHOSTDOWN,
        8 => ENONET,
        _ => EHOSTUNREACH,
    }
}

/// The in-kernel verdict. `None`: the socket closed before anything failed on the wire
/// (e.g. the application aborted at once, or port allocation failed: reported by the syscall path).
#[inline(always)]
fn classify(err: i32, retrans: u32, drops: &DropRecord, flags: &mut u32) -> Option<u32> {
    let rst = *flags & eflag::RST_RECEIVED != 0;
    let fw = drops.nf_drops > 0;
    let host_drop = drops.other_drops > 0;
    let v = if rst || err == ECONNREFUSED {
        match (fw, rst) {
            (true, true) => verdict::FIREWALL_REJECT_RST,
            (true, false) | (false, false) => verdict::FIREWALL_REJECT_ICMP,
            (false, true) if drops.nosock_drops > 0 => verdict::REFUSED_NO_LISTENER,
            (false, true) => verdict::REFUSED_PEER,
        }
    } else if err == ETIMEDOUT || (err == 0 && (retrans > 0 || fw || host_drop)) {
        if err == 0 {
            *flags |= eflag::APP_GAVE_UP;
        }
        if fw {
            verdict::TIMEOUT_LOCAL_DROP
        } else if host_drop {
            verdict::TIMEOUT_HOST_DROP
        } else {
            verdict::TIMEOUT_NO_REPLY
        }
    } else if err == EHOSTUNREACH || err == ENETUNREACH || err == EACCES {
        match (fw, err) {
            (true, _) => verdict::FIREWALL_REJECT_OTHER,
            (false, ENETUNREACH) => verdict::NET_UNREACHABLE,
            _ => verdict::HOST_UNREACHABLE,
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
    if crate::kernel::empty() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    if let Some(state) = live(sk) {
        unsafe { (*state).flags |= eflag::RST_RECEIVED };
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    // Only sockets still in SYN_SENT are live in CONNS: these are SYN retransmissions.
    if let Some(state) = live(sk) {
        unsafe { (*state).syn_retrans += 1 };
    }
    0
}

/// Optional (kernels that allow fexit): the connect path itself, in process context. It sees
/// synchronous failures of connects that do not come through the connect() syscall (io_uring), and
/// records the connecting task if the state-change program missed it.
#[fexit(function = "tcp_v4_connect")]
pub fn tcp_v4_connect_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    connect_exit(&ctx)
}

#[fexit(function = "tcp_v6_connect")]
pub fn tcp_v6_connect_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    connect_exit(&ctx)
}

#[inline(always)]
fn connect_exit(ctx: &FExitContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let uaddr: u64 = ctx.arg(1);
    let ret: i32 = ctx.arg(3);
    // Read once, before any map operation (see finish()).
    let netns = sock_netns(sk);
    if is_self() || other_netns(netns) {
        return 0;
    }
    if ret < 0 {
        // Synchronous failure (no route, no local port...): the address comes from the kernel's
        // copy of the caller's sockaddr, since the socket may not have a destination yet.
        let mut raw = [0u8; 28];
        if read_buf(uaddr, 0, &mut raw).is_ok() {
            crate::syscall::emit_call_error(syscall::CONNECT, &raw, ret, netns);
            // Reported: the connect() exit (when this came through the syscall) must not
            // report the same attempt again.
            let _ = CALL_ARGS.remove(&bpf_get_current_pid_tgid());
        }
        return 0;
    }
    if live(sk).is_none() {
        let state = ConnState {
            proc: current_proc(netns),
            start_ns: unsafe { bpf_ktime_get_ns() },
            syn_retrans: 0,
            flags: 0,
            drop_writes: drop_writes(),
        };
        // The state-change program missed SYN_SENT: the summary will come from this entry,
        // so the connect() exit must not report the attempt's error too.
        if started(sk, &state) {
            syn_sent(sk);
        }
    }
    0
}

/// Socket `sk` reached SYN_SENT inside the calling task's connect(): the attempt pending in
/// whichever program noted it (the fexit or syscall tracepoint programs, or the route-lookup
/// programs) now belongs to the socket's own summary.
#[inline(always)]
fn syn_sent(sk: u64) {
    crate::route::reached_syn_sent(sk);
    crate::syscall::mark_syn_sent(sk);
}
