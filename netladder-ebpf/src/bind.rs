//! bind() failures (#027 address in use, and a bind to an address this host does not have) on
//! kernels that refuse fentry/fexit, without syscall tracepoints (which tax every system call of
//! every task).
//!
//! The kernel runs two cgroup programs around a bind() that names a port:
//! - `bind4/6` at the start of the call, in the caller: the attempt is noted per thread;
//! - `post_bind4/6` once the port is the socket's: the attempt succeeded and is forgotten.
//!
//! An attempt that never reached its post-bind step failed. It ends at the thread's next bind()
//! or at the release of its socket (cgroup `sock_release`, route.rs's program), and is reported
//! only when the error is known from what was seen:
//! - IPv4: the kernel looks the address up in the local route table during the call (the
//!   `fib_table_lookup` tracepoint, read by route.rs). An address that is not there is
//!   EADDRNOTAVAIL; one that is (or the wildcard) leaves the port: EADDRINUSE.
//! - IPv6 `::` and `::1`, always local: EADDRINUSE. Any other IPv6 address is checked without a
//!   route lookup, so its error cannot be told and the attempt is not reported.
//! - A port below 1024 asked for by a process that is not root may have failed for want of
//!   privilege: not reported. A socket that already had a port fails with EINVAL: not noted.
//!
//! A bind() to port 0 (any free port) is not noted: with IP_BIND_ADDRESS_NO_PORT it succeeds
//! without a post-bind step.
//!
//! The cgroup programs always return 1: they never refuse a call.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid},
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::{Array, LruHashMap},
    programs::{SockAddrContext, SockContext},
};
use netladder_common::{eflag, syscall, AF_INET, AF_INET6};

use crate::{
    kernel::current_netns,
    maps::{tally, tally_add},
    syscall::{emit_call_error_flagged, ignored_caller},
};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const EADDRINUSE: i32 = 98;
const EADDRNOTAVAIL: i32 = 99;
const EAGAIN: i32 = 11;
/// The kernel's local route table (RT_TABLE_LOCAL): bind()'s check that an address is local.
const LOCAL_TABLE: u32 = 255;

/// What is known of the bind address being local.
const LOCAL_UNKNOWN: u32 = 0;
const LOCAL_YES: u32 = 1;
const LOCAL_NO: u32 = 2;

/// A thread's bind() that has not reached its post-bind step.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BindTry {
    /// The socket (kernel address).
    pub sk: u64,
    /// The local address asked for, as a struct sockaddr (what `emit_call_error` reads).
    pub addr: [u8; 28],
    /// The IPv4 address a local-table lookup must match (also for IPv4-mapped IPv6); 0 for
    /// the wildcard or IPv6.
    pub v4: u32,
    /// LOCAL_*.
    pub local: u32,
    pub _pad: u32,
}

/// Attempts by thread (pid_tgid). LRU: an attempt whose thread died without releasing its
/// socket must not fill the map.
#[map(name = "BIND_TRY")]
static BIND_TRY: LruHashMap<u64, BindTry> = LruHashMap::with_max_entries(4096, 0);

/// Index 0: how many entries BIND_TRY holds (binds under way, and failed ones waiting for their
/// thread's next bind() or their socket's release). While it is 0, the release of a socket and
/// a local-table route lookup have no attempt to look for: every socket the host closes and
/// many of its lookups skip the map. An entry the LRU pushes out leaves the count above 0 for
/// good, which only turns the shortcut off.
#[map(name = "BIND_PENDING")]
static BIND_PENDING: Array<u64> = Array::with_max_entries(1, 0);

/// Whether BIND_TRY may hold an attempt.
#[inline(always)]
pub(crate) fn pending() -> bool {
    tally(&BIND_PENDING) != 0
}

/// 1 once every program here attached (written by the loader): a bind() noted while its
/// post-bind program is missing would read as a failure.
#[map(name = "BIND_MODE")]
static BIND_MODE: Array<u32> = Array::with_max_entries(1, 0);

#[cgroup_sock_addr(bind4)]
pub fn bind_try4(ctx: SockAddrContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    if let Some(mut b) = attempt(&ctx) {
        let ip = unsafe { (*ctx.sock_addr).user_ip4 };
        b.addr[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        b.addr[4..8].copy_from_slice(&ip.to_ne_bytes());
        if ip == 0 {
            b.local = LOCAL_YES;
        } else {
            b.v4 = ip;
        }
        begin(b);
    }
    1
}

#[cgroup_sock_addr(bind6)]
pub fn bind_try6(ctx: SockAddrContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    if let Some(mut b) = attempt(&ctx) {
        let sa = ctx.sock_addr;
        let ip = unsafe {
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ]
        };
        b.addr[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        b.addr[8..12].copy_from_slice(&ip[0].to_ne_bytes());
        b.addr[12..16].copy_from_slice(&ip[1].to_ne_bytes());
        b.addr[16..20].copy_from_slice(&ip[2].to_ne_bytes());
        b.addr[20..24].copy_from_slice(&ip[3].to_ne_bytes());
        if ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && (ip[3] == 0 || ip[3] == 1u32.to_be()) {
            // :: and ::1 are always this host's.
            b.local = LOCAL_YES;
        } else if ip[0] == 0 && ip[1] == 0 && ip[2] == 0xffffu32.to_be() {
            // ::ffff:a.b.c.d is checked as IPv4 (0.0.0.0 included).
            if ip[3] == 0 {
                b.local = LOCAL_YES;
            } else {
                b.v4 = ip[3];
            }
        }
        begin(b);
    }
    1
}

/// The socket and port of a TCP or UDP bind() worth noting (see the module's notes).
#[inline(always)]
fn attempt(ctx: &SockAddrContext) -> Option<BindTry> {
    let sa = ctx.sock_addr;
    // SAFETY: the context is the kernel's bpf_sock_addr; each field is read at its own size.
    let (protocol, port, sock) =
        unsafe { ((*sa).protocol, (*sa).user_port, (*sa).__bindgen_anon_1.sk) };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    // A socket that already has a port: its bind() fails with EINVAL, not one of ours.
    // SAFETY: the kernel hands every sock_addr program its socket (never null).
    if unsafe { (*sock).src_port } != 0 {
        return None;
    }
    let sk = sock as u64;
    let port = port as u16;
    if port == 0 {
        return None;
    }
    // A privileged port asked for by a process that is not root: its failure may be EACCES.
    if u16::from_be(port) < 1024 && bpf_get_current_uid_gid() as u32 != 0 {
        return None;
    }
    let mut b = BindTry {
        sk,
        addr: [0; 28],
        v4: 0,
        local: LOCAL_UNKNOWN,
        _pad: 0,
    };
    // struct sockaddr_in / sockaddr_in6: family (host order), port (network order), address.
    let port = port.to_ne_bytes();
    b.addr[2] = port[0];
    b.addr[3] = port[1];
    Some(b)
}

/// The start of a bind(): ends the thread's previous attempt (a failure if it is still
/// there), then notes this one.
#[inline(always)]
fn begin(b: BindTry) {
    if BIND_MODE.get(0).copied() != Some(1) || ignored_caller() {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    if let Some(prev) = (unsafe { BIND_TRY.get(&id) }).copied() {
        report(&prev);
        // Takes the entry over: the count stays.
        let _ = BIND_TRY.insert(&id, &b, 0);
        return;
    }
    if BIND_TRY.insert(&id, &b, 0).is_ok() {
        tally_add(&BIND_PENDING, 1);
    }
}

/// The port is the socket's: the thread's bind() on it succeeded.
#[inline(always)]
fn bound(ctx: &SockContext) {
    let id = bpf_get_current_pid_tgid();
    if let Some(b) = unsafe { BIND_TRY.get(&id) } {
        if b.sk == ctx.sock as u64 && BIND_TRY.remove(&id).is_ok() {
            tally_add(&BIND_PENDING, u64::MAX);
        }
    }
}

#[cgroup_sock(post_bind4)]
pub fn bind_done4(ctx: SockContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    bound(&ctx);
    1
}

#[cgroup_sock(post_bind6)]
pub fn bind_done6(ctx: SockContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    bound(&ctx);
    1
}

/// Socket `sk` of thread `id` released (route.rs's `sock_release` program): a bind() on it that
/// never reached its post-bind step failed.
#[inline(always)]
pub fn released(id: u64, sk: u64) {
    if !pending() {
        return;
    }
    if let Some(b) = (unsafe { BIND_TRY.get(&id) }).copied() {
        if b.sk == sk {
            if BIND_TRY.remove(&id).is_ok() {
                tally_add(&BIND_PENDING, u64::MAX);
            }
            report(&b);
        }
    }
}

/// A bind() that failed, with the error its address gives it; not reported when that is unknown.
#[inline(always)]
fn report(b: &BindTry) {
    let err = match b.local {
        LOCAL_YES => EADDRINUSE,
        LOCAL_NO => EADDRNOTAVAIL,
        _ => return,
    };
    emit_call_error_flagged(
        syscall::BIND,
        &b.addr,
        -err,
        current_netns(),
        eflag::BIND_INCOMPLETE,
    );
}

/// A route lookup in the local table by a thread with a bind() pending: bind()'s check that its
/// IPv4 address is this host's (`err` 0: found; -EAGAIN: not in the table). Called by route.rs's
/// `fib_table_lookup` program for lookups with no input interface.
#[inline(always)]
pub fn local_lookup(tb_id: u32, dst: u32, err: i32) {
    if tb_id != LOCAL_TABLE || !pending() {
        return;
    }
    let Some(b) = BIND_TRY.get_ptr_mut(&bpf_get_current_pid_tgid()) else {
        return;
    };
    // SAFETY: the entry of this thread; only this thread writes it.
    let b = unsafe { &mut *b };
    if b.v4 == 0 || b.v4 != dst {
        return;
    }
    if err == 0 {
        b.local = LOCAL_YES;
    } else if err == -EAGAIN {
        b.local = LOCAL_NO;
    }
}
