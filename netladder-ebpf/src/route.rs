//! connect() and UDP sends that fail at once for want of a route, on kernels that refuse
//! fentry/fexit, without syscall tracepoints (which tax every system call of every task).
//!
//! Three cheap hooks stand in for the call's return:
//! - the cgroup `connect4/6` and `sendmsg4/6` programs on the cgroup v2 root run at the start of
//!   each connect() and unconnected UDP send, in the caller, and note the attempt per thread;
//! - the route lookup tracepoints (tp_btf `fib_table_lookup`, `fib6_table_lookup`) record the
//!   result of the lookup for that destination in that thread;
//! - the thread's next attempt, or the release of the socket (cgroup `sock_release`, one program
//!   with bind.rs's release), ends the attempt: if its last lookup failed, so did the call, with
//!   the error the lookup gives it.
//!
//! The same cgroup `connect4/6` and `sendmsg4/6` programs (`sock_connect4/6`, `sock_sendmsg4/6`)
//! record who owns a socket that calls a nameserver (port 53), by socket cookie, for the DNS
//! answer (dns.rs). That part runs on every kernel; the attempts are noted only where the
//! loader set ROUTE_MODE (the route-lookup programs attached).
//!
//! The cgroup programs always return 1: they never refuse a call.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_socket_cookie},
    macros::{btf_tracepoint, cgroup_sock, cgroup_sock_addr, map},
    maps::{Array, LruHashMap},
    programs::{BtfTracePointContext, SockAddrContext, SockContext},
};
use netladder_common::{eflag, syscall, ABSENT, AF_INET, AF_INET6};

use crate::{
    kernel::{blur, conf, current_netns, load, opaque, read, read_buf, sockaddr_flow},
    syscall::{emit_flow_error, failed_call_flow, ignored_caller},
};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const EAGAIN: i32 = 11;
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;
/// Route types (include/uapi/linux/rtnetlink.h, part of the ABI) of the reject routes.
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
const RTN_THROW: u8 = 9;
const LOOPBACK_IFINDEX: i32 = 1;

/// A thread's last connect() or UDP send with a destination, until its next one or the release
/// of its socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Attempt {
    /// The socket (kernel address).
    pub sk: u64,
    /// The destination as a struct sockaddr (what `emit_call_error` reads).
    pub addr: [u8; 28],
    /// `syscall::CONNECT` or `syscall::SEND`.
    pub call: u32,
    /// The last route lookup's error for the destination (0: found, or not looked up yet).
    pub err: i32,
    /// The IPv4 destination a lookup must match (also for IPv4-mapped IPv6), 0 when none.
    pub v4: u32,
    pub v6: u32,
    /// When what the call records is recorded (`NOTE_*`), once per attempt.
    pub noted: u32,
    pub _pad: u32,
}

/// A thread's entry in ROUTE_TRY: its attempt, and what outlives it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Entry {
    pub a: Attempt,
    /// The thread's last connect() destination that found its route (a struct sockaddr in its
    /// first 28 bytes; family 0: none yet), while the TLS hooks are attached: the peer of a TLS
    /// handshake it may start next (#025, tls.rs). Outside the attempt, so that a new attempt
    /// (built on the stack) neither clears nor copies it. (Words, not bytes: a zeroed byte
    /// array is a call of a byte-by-byte memset loop.)
    pub peer: [u64; 4],
}

/// Attempts by thread (pid_tgid). An attempt that ends stays as an ended entry (`finish`), so a
/// thread's next attempt updates its entry in place: no insert and delete per connect. LRU: the
/// entries of threads that are gone must not fill the map. The price: a failed attempt still
/// waiting for its thread's next attempt or its socket's release is pushed out, unreported, once
/// 16384 other threads have made attempts since.
#[map(name = "ROUTE_TRY")]
static ROUTE_TRY: LruHashMap<u64, Entry> = LruHashMap::with_max_entries(16384, 0);

/// `Attempt::noted`: what the call records (`note`) waits for a lookup that finds its route (a
/// UDP call to a nameserver's port: its question, #024, only leaves with a route).
const NOTE_AT_LOOKUP: u32 = 0;
/// Recorded, or nothing to record.
const NOTED: u32 = 1;
/// Waits for the socket's SYN_SENT (a TCP connect: its route was found).
const NOTE_AT_SYN_SENT: u32 = 2;

/// Index 0: the attempts in ROUTE_TRY a successful lookup would change: those whose last
/// lookup failed (`Attempt::err` below 0: a later lookup that finds the route clears it, as
/// when a policy rule's table misses before the main table answers) plus those that wait for
/// their route to record what they record (`NOTE_AT_LOOKUP`). While it is 0, the IPv4 lookup
/// program returns on a found route before any map look-up: nearly every route lookup of the
/// host. Kept exact by `reweigh` after each change of either field; an entry the LRU pushes
/// out while it counts here leaves the count above 0 for good, which only turns the shortcut
/// off.
#[map(name = "ROUTE_PENDING")]
static ROUTE_PENDING: Array<u64> = Array::with_max_entries(1, 0);

/// How much attempt `a` counts in ROUTE_PENDING.
#[inline(always)]
fn weight(a: &Attempt) -> u64 {
    u64::from(a.err < 0) + u64::from(a.noted == NOTE_AT_LOOKUP)
}

/// Moves ROUTE_PENDING by the change of `a`'s weight from `before`.
#[inline(always)]
fn reweigh(before: u64, a: &Attempt) {
    let after = weight(a);
    if after != before {
        crate::maps::tally_add(&ROUTE_PENDING, after.wrapping_sub(before));
    }
}

/// Sets the attempt's last lookup result.
#[inline(always)]
fn set_err(a: &mut Attempt, err: i32) {
    let before = weight(a);
    a.err = err;
    reweigh(before, a);
}

/// Whether a successful lookup may have an attempt to change (see ROUTE_PENDING).
#[inline(always)]
fn lookups_pending() -> bool {
    crate::maps::tally(&ROUTE_PENDING) != 0
}

/// 1 when the route-lookup programs attached (written by the loader): then neither the fexit
/// programs nor the syscall tracepoints see connect()'s errors, and the state-change program
/// reports a connect() that found no free local port (`reads_connect_errors`).
#[map(name = "ROUTE_MODE")]
static ROUTE_MODE: Array<u32> = Array::with_max_entries(1, 0);

/// Whether connect()'s own errors are read by nothing but these programs.
#[inline(always)]
pub fn reads_connect_errors() -> bool {
    ROUTE_MODE.get(0).copied() == Some(1)
}

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    if let Some(a) = attempt4(&ctx, syscall::CONNECT) {
        start(&ctx, a);
    }
    1
}

#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    if let Some(a) = attempt6(&ctx, syscall::CONNECT) {
        start(&ctx, a);
    }
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    if let Some(a) = attempt4(&ctx, syscall::SEND) {
        start(&ctx, a);
    }
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    if let Some(a) = attempt6(&ctx, syscall::SEND) {
        start(&ctx, a);
    }
    1
}

/// The socket and port of a TCP or UDP call (each attach type may read only its own family's
/// address fields, so the address is read by the callers).
#[inline(always)]
fn attempt(ctx: &SockAddrContext, call: u32) -> Option<Attempt> {
    let sa = ctx.sock_addr;
    // SAFETY: the context is the kernel's bpf_sock_addr; each field is read at its own size.
    let (protocol, port, sk) = unsafe {
        (
            (*sa).protocol,
            (*sa).user_port,
            (*sa).__bindgen_anon_1.sk as u64,
        )
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    let port = (port as u16).to_ne_bytes();
    // When what the call records is recorded (`note`): a TCP connect's at its SYN_SENT (its
    // route was found), a UDP call's to a nameserver at the lookup that finds its route, any
    // other UDP connect()'s at its start (`begin`: no question leaves with it).
    let noted = if call == syscall::CONNECT && protocol == IPPROTO_TCP {
        NOTE_AT_SYN_SENT
    } else if crate::dns::is_dns_port(port) {
        NOTE_AT_LOOKUP
    } else {
        NOTED
    };
    let mut a = Attempt {
        sk,
        addr: [0; 28],
        call,
        err: 0,
        v4: 0,
        v6: 0,
        noted,
        _pad: 0,
    };
    // struct sockaddr_in / sockaddr_in6: family (host order), port (network order), address.
    a.addr[2] = port[0];
    a.addr[3] = port[1];
    Some(a)
}

#[inline(always)]
fn attempt4(ctx: &SockAddrContext, call: u32) -> Option<Attempt> {
    let mut a = attempt(ctx, call)?;
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    a.addr[..2].copy_from_slice(&AF_INET.to_ne_bytes());
    a.addr[4..8].copy_from_slice(&ip.to_ne_bytes());
    a.v4 = ip;
    Some(a)
}

#[inline(always)]
fn attempt6(ctx: &SockAddrContext, call: u32) -> Option<Attempt> {
    let mut a = attempt(ctx, call)?;
    let sa = ctx.sock_addr;
    let ip = unsafe {
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    };
    a.addr[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
    a.addr[8..12].copy_from_slice(&ip[0].to_ne_bytes());
    a.addr[12..16].copy_from_slice(&ip[1].to_ne_bytes());
    a.addr[16..20].copy_from_slice(&ip[2].to_ne_bytes());
    a.addr[20..24].copy_from_slice(&ip[3].to_ne_bytes());
    // ::ffff:a.b.c.d: an IPv6 socket reaching an IPv4 peer looks its route up in IPv4.
    if ip[0] == 0 && ip[1] == 0 && ip[2] == 0xffffu32.to_be() {
        a.v4 = ip[3];
    } else {
        a.v6 = 1;
    }
    Some(a)
}

/// A call to a nameserver's port records the socket's owner by cookie, for the answer (dns.rs:
/// no program runs on the packets the host sends), on every kernel; the attempt is noted only
/// where these programs read connect() and sends (ROUTE_MODE).
#[inline(always)]
fn start(ctx: &SockAddrContext, a: Attempt) {
    if crate::dns::to_nameserver(&a.addr) {
        // SAFETY: the context is the kernel's bpf_sock_addr, which the helper takes.
        crate::dns::owner(unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) });
    }
    if reads_connect_errors() {
        begin(a);
    }
}

/// The start of a connect() or a UDP send with a destination: ends the thread's previous
/// attempt, then notes this one.
#[inline(always)]
fn begin(a: Attempt) {
    if ignored_caller() {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    // A UDP connect() to another port than a nameserver's records what it records here.
    let now = a.noted == NOTED && a.call == syscall::CONNECT;
    // The thread's previous attempt ends here; this one takes its entry (a UDP sender's
    // every datagram comes here: one look-up, no delete and insert).
    let p = match ROUTE_TRY.get_ptr_mut(&id) {
        Some(p) => {
            // SAFETY: the entry of this thread; only this thread writes it.
            let prev = unsafe { &mut (*p).a };
            report(prev);
            let before = weight(prev);
            *prev = a;
            reweigh(before, prev);
            p
        }
        None => {
            // A thread's first attempt (the TLS peer starts empty).
            if ROUTE_TRY.insert(&id, &Entry { a, peer: [0; 4] }, 0).is_ok() {
                reweigh(0, &a);
            }
            if !now {
                return;
            }
            match ROUTE_TRY.get_ptr_mut(&id) {
                Some(p) => p,
                None => return,
            }
        }
    };
    if now {
        // From the map's copy: the one on the stack holds the socket pointer, of which the
        // verifier lets no byte be read.
        // SAFETY: as above.
        connected_here(id, unsafe { &mut *p });
    }
}

/// What a connect() that found its route records (see `syscall::connected`), where these
/// programs read connect(): the TLS peer in the thread's own entry (no map of its own to look
/// up and write on every connect), who asks a nameserver in dns.rs.
#[inline(always)]
fn connected_here(id: u64, e: &mut Entry) {
    if crate::tls::watching() {
        // SAFETY: 28 bytes into the 32 of `peer`.
        unsafe { core::ptr::write_unaligned((&raw mut e.peer).cast::<[u8; 28]>(), e.a.addr) };
    }
    crate::dns::asked(id, &sockaddr_flow(&e.a.addr));
}

/// The destination of thread `id`'s last connect() that found its route (a struct sockaddr),
/// where these programs read connect() (`reads_connect_errors`).
#[inline(always)]
pub fn tls_peer(id: u64) -> Option<*const [u8; 28]> {
    // SAFETY: a map value, read in place; only its thread writes it.
    let e = unsafe { ROUTE_TRY.get(&id) }?;
    // The family, in the first two bytes.
    if e.peer[0] & 0xffff == 0 {
        return None;
    }
    Some((&raw const e.peer).cast())
}

/// Ends the attempt `a` in place: no lookup matches it, its release and the thread's next
/// attempt report nothing for it.
#[inline(always)]
fn finish(a: &mut Attempt) {
    let before = weight(a);
    a.sk = 0;
    a.err = 0;
    a.v4 = 0;
    a.v6 = 0;
    a.noted = NOTED;
    reweigh(before, a);
}

/// The end of an attempt: a last route lookup that failed is the call's failure.
#[inline(always)]
fn report(a: &Attempt) {
    if a.err >= 0 {
        return;
    }
    // What the lookup's error becomes for the call: no matching route (EAGAIN from every
    // table) is ENETUNREACH; an unreachable, prohibit or blackhole route gives its own error.
    let err = -a.err;
    let errno = if err == EAGAIN { ENETUNREACH } else { err };
    let Some(mut flow) = failed_call_flow(a.call, &a.addr, -errno) else {
        return;
    };
    // One path on from here, whatever the address family and the error (see `blur`; one
    // helper call, on a failed lookup only). Linux 5.10 and 6.1 otherwise walked the rest once
    // for each: these programs took 11,620 (IPv4) and 22,842 (IPv6) instructions on 6.1.
    let zero = opaque(0u64);
    // SAFETY: a Flow is 8-byte aligned, 40 bytes of plain integers.
    unsafe { blur(&mut flow, zero) };
    let ret = -errno | zero as i32;
    emit_flow_error(a.call, flow, ret, current_netns(), eflag::ROUTE_LOOKUP);
}

/// The calling thread's connect() put socket `sk` in SYN_SENT: its route was found, and the
/// socket's own summary reports what happens next (a router's lookup for its SYN, seen in this
/// thread when veth hands the packet on at once, is not its failure).
#[inline(always)]
pub fn reached_syn_sent(sk: u64) {
    // Every TCP connect passes here: where these programs are not attached, one array read.
    if !reads_connect_errors() {
        return;
    }
    let Some(e) = ROUTE_TRY.get_ptr_mut(&bpf_get_current_pid_tgid()) else {
        return;
    };
    // SAFETY: the entry of this thread; only this thread writes it.
    let e = unsafe { &mut *e };
    if e.a.sk == sk {
        note(e);
        finish(&mut e.a);
    }
}

/// A socket released (closed for the last time): the end of its thread's connect() or send
/// attempt on it (here) and of its bind() attempt (bind.rs). One program for both: every socket
/// the host closes passes here, once.
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    // Every socket of the host is released here, and almost every release has nothing pending:
    // two array reads, and no helper call for the thread's id.
    if !lookups_pending() && !crate::bind::pending() {
        return 1;
    }
    let id = bpf_get_current_pid_tgid();
    let sk = ctx.sock as u64;
    released(id, sk);
    crate::bind::released(id, sk);
    1
}

/// Socket `sk` of thread `id` released: ends the thread's attempt on it.
#[inline(always)]
fn released(id: u64, sk: u64) {
    // While ROUTE_PENDING is 0 no attempt holds a failed lookup or waits for its route: the
    // release has nothing to report, and nothing to end that a lookup could still change (a
    // successful one returns at once, see `route_fib_lookup`). The attempt keeps its socket
    // until the thread's next attempt takes the entry; a failed lookup for the same
    // destination in this thread before then (from a socket no cgroup program sees, a raw
    // one) is taken for this attempt's, as it is while the socket is open.
    if !lookups_pending() {
        return;
    }
    let Some(a) = ROUTE_TRY.get_ptr_mut(&id) else {
        return;
    };
    // SAFETY: the entry of this thread; only this thread writes it.
    let a = unsafe { &mut (*a).a };
    if a.sk != 0 && a.sk == sk {
        let ended = *a;
        finish(a);
        report(&ended);
    }
}

/// What a connect() records where the fexit and syscall paths record it when one succeeds (#025:
/// the peer of a TLS handshake the thread may start next; #024: who asks which nameserver), and
/// a datagram to a nameserver as a question (#024); once per attempt, when its route was found
/// (`Attempt::noted` says when that is seen), so a call that finds no route records nothing, as
/// there.
#[inline(always)]
fn note(e: &mut Entry) {
    if e.a.noted == NOTED {
        return;
    }
    let before = weight(&e.a);
    e.a.noted = NOTED;
    reweigh(before, &e.a);
    if e.a.call == syscall::CONNECT {
        connected_here(bpf_get_current_pid_tgid(), e);
    } else {
        crate::dns::asked(bpf_get_current_pid_tgid(), &sockaddr_flow(&e.a.addr));
    }
}

/// An IPv4 route lookup: `fib_table_lookup(tb_id, flp, nhc, err)`. An output lookup (input
/// interface loopback: a packet this host sends, not one a router namespace forwards, whose
/// lookup can run in the sending thread when veth hands the packet on at once) is looked at only
/// in a thread with an attempt, for its destination. A lookup with no input interface in the
/// local table is bind()'s check of its address (bind.rs).
#[btf_tracepoint(function = "fib_table_lookup")]
pub fn route_fib_lookup(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    // Every route lookup of the host comes here (about nine per connection over a veth pair,
    // both ends counted): the fields are loaded directly, not through a helper call.
    let flp: u64 = ctx.arg(1);
    if conf!(flowi4_iif) == ABSENT || conf!(flowi4_daddr) == ABSENT {
        return 0;
    }
    let iif: i32 = load(flp, conf!(flowi4_iif));
    if iif != LOOPBACK_IFINDEX && iif != 0 {
        return 0;
    }
    let dst: u32 = load(flp, conf!(flowi4_daddr));
    let err: i32 = ctx.arg(3);
    if iif == 0 {
        let tb_id: u32 = ctx.arg(0);
        crate::bind::local_lookup(tb_id, dst, err);
        return 0;
    }
    // A lookup that found a route changes nothing while no attempt holds a failed lookup or
    // waits for its route (ROUTE_PENDING).
    if err == 0 && !lookups_pending() {
        return 0;
    }
    let Some(a) = ROUTE_TRY.get_ptr_mut(&bpf_get_current_pid_tgid()) else {
        return 0;
    };
    // SAFETY: the entry of this thread; only this thread writes it.
    let e = unsafe { &mut *a };
    if e.a.v4 == 0 || e.a.v4 != dst {
        return 0;
    }
    record(err, e);
    0
}

/// The lookup's result `err` for the attempt of entry `e`.
#[inline(always)]
fn record(err: i32, e: &mut Entry) {
    set_err(&mut e.a, err);
    if err == 0 && e.a.noted == NOTE_AT_LOOKUP {
        note(e);
    }
}

/// An IPv6 route lookup: `fib6_table_lookup(net, res, table, flp)`. The error the lookup gives
/// the call follows from the route found: none (the null entry) is "no route"; a reject route
/// gives its type's error.
#[btf_tracepoint(function = "fib6_table_lookup")]
pub fn route_fib6_lookup(ctx: BtfTracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let flp: u64 = ctx.arg(3);
    if conf!(flowi6_iif) == ABSENT || load::<i32>(flp, conf!(flowi6_iif)) != LOOPBACK_IFINDEX {
        return 0;
    }
    let Some(a) = ROUTE_TRY.get_ptr_mut(&bpf_get_current_pid_tgid()) else {
        return 0;
    };
    let mut dst = [0u8; 16];
    if read_buf(flp, conf!(flowi6_daddr), &mut dst).is_err() {
        return 0;
    }
    // SAFETY: `a` points into the map's value for this thread; only this thread writes it.
    let e = unsafe { &mut *a };
    if e.a.v6 == 0 || e.a.addr[8..24] != dst {
        return 0;
    }
    let (net, res): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    let null = read::<u64>(net, conf!(net_fib6_null));
    let f6i = read::<u64>(res, conf!(fib6_res_f6i));
    let err = if f6i.is_ok() && f6i == null {
        -EAGAIN
    } else {
        match read::<u8>(res, conf!(fib6_res_type)) {
            Ok(RTN_UNREACHABLE) => -EHOSTUNREACH,
            Ok(RTN_PROHIBIT) => -EACCES,
            Ok(RTN_BLACKHOLE) => -EINVAL,
            Ok(RTN_THROW) => -EAGAIN,
            Ok(_) => 0,
            Err(_) => return 0,
        }
    };
    record(err, e);
    0
}
