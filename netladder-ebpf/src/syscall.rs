//! Socket syscalls that fail synchronously: connect() errors the socket's state machine never shows
//! (no route, no local port), bind() and listen() errors (address in use). The arguments are saved
//! at entry, in the calling task, and the result read at exit.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{fentry, fexit, tracepoint},
    programs::{FEntryContext, FExitContext, TracePointContext},
    EbpfContext as _,
};
use netladder_common::{kind, syscall, Event, Flow};

use crate::{
    kernel::{
        conf, current_netns, current_proc, is_self, load, other_netns, read_buf, read_ksockaddr,
        read_sockaddr, sock_flow, sockaddr_flow,
    },
    maps::{agg_key, counted_as_repeat, emit, PendingCall, BOUND, CALL_ARGS},
};

/// A 64-bit field of a syscall tracepoint's record at `off` (from its tracefs format file). The
/// offset is a `CONFIG` value the verifier knows, so exactly one of these arms is live: a direct
/// context load at a fixed offset (a context pointer cannot be moved by a register), instead of a
/// helper call. Any other offset falls back to the helper.
#[inline(always)]
pub(crate) fn field(ctx: &TracePointContext, off: u32) -> Option<u64> {
    let p = ctx.as_ptr() as *const u64;
    // SAFETY: the record of every syscall tracepoint holds its arguments as 8-byte fields
    // after its header; the verifier checks each access against the context's size.
    unsafe {
        if off == 8 {
            Some(core::ptr::read_volatile(p.add(1)))
        } else if off == 16 {
            Some(core::ptr::read_volatile(p.add(2)))
        } else if off == 24 {
            Some(core::ptr::read_volatile(p.add(3)))
        } else if off == 32 {
            Some(core::ptr::read_volatile(p.add(4)))
        } else if off == 40 {
            Some(core::ptr::read_volatile(p.add(5)))
        } else {
            ctx.read_at::<u64>(off as usize).ok()
        }
    }
}

// Errors that are not failures of the attempt itself.
const EINTR: i64 = 4;
const EAGAIN: i64 = 11;
const EISCONN: i64 = 106;
const EALREADY: i64 = 114;
const EINPROGRESS: i64 = 115;
const ENETUNREACH: i64 = 101;
const ETIMEDOUT: i64 = 110;
const ECONNREFUSED: i64 = 111;
const EHOSTUNREACH: i64 = 113;
// ICMP answers give these too (ICMPv6 administratively prohibited: EACCES; ICMP host unknown,
// protocol unreachable...), never before SYN_SENT: a local prohibit route fails connect()
// before the SYN exists.
const EACCES: i64 = 13;
const ENONET: i64 = 64;
const ENOPROTOOPT: i64 = 92;
const EHOSTDOWN: i64 = 112;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    save_with_addr(
        &ctx,
        syscall::CONNECT,
        conf!(sys_enter_connect_fd),
        conf!(sys_enter_connect_addr),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    exit(&ctx, syscall::CONNECT);
    0
}

/// sendto() with a destination (UDP and other datagram sockets).
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let Some(uaddr) = field(&ctx, conf!(sys_enter_sendto_addr)) else {
        return 0;
    };
    if uaddr != 0 {
        save(&ctx, syscall::SENDTO, conf!(sys_enter_sendto_fd), uaddr);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendto")]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    exit(&ctx, syscall::SENDTO);
    0
}

/// sendmsg() with a destination in its msghdr.
#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let Some(msg) = field(&ctx, conf!(sys_enter_sendmsg_msg)) else {
        return 0;
    };
    let off = conf!(msghdr_name) as u64;
    let Ok(uaddr) = (unsafe { bpf_probe_read_user((msg + off) as *const u64) }) else {
        return 0;
    };
    if uaddr != 0 {
        save(&ctx, syscall::SENDMSG, conf!(sys_enter_sendmsg_fd), uaddr);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmsg")]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    exit(&ctx, syscall::SENDMSG);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    save_with_addr(
        &ctx,
        syscall::BIND,
        conf!(sys_enter_bind_fd),
        conf!(sys_enter_bind_addr),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    exit(&ctx, syscall::BIND);
    0
}

/// listen() only has the fd: the address comes from the bind netladder saw on it.
#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if ignored_caller() {
        return 0;
    }
    let Some(fd) = field(&ctx, conf!(sys_enter_listen_fd)) else {
        return 0;
    };
    let id = bpf_get_current_pid_tgid();
    let addr = unsafe { BOUND.get(&bound_key(id, fd as u32)) }
        .copied()
        .unwrap_or([0; 28]);
    let call = PendingCall {
        addr,
        uaddr: 0,
        fd: fd as u32,
        call: syscall::LISTEN,
        reached_syn_sent: 0,
        sk: 0,
    };
    let _ = CALL_ARGS.insert(&id, &call, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_listen")]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    exit(&ctx, syscall::LISTEN);
    0
}

/// netladder itself, or a task outside the namespace it watches.
#[inline(always)]
pub(crate) fn ignored_caller() -> bool {
    is_self() || (conf!(only_netns) != 0 && other_netns(current_netns()))
}

/// Key of a bound socket: process and fd.
#[inline(always)]
fn bound_key(pid_tgid: u64, fd: u32) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | fd as u64
}

/// Saves fd and sockaddr of an IPv4/IPv6 call; other families are not ours.
#[inline(always)]
fn save_with_addr(ctx: &TracePointContext, call: u32, fd_off: u32, addr_off: u32) {
    let Some(uaddr) = field(ctx, addr_off) else {
        return;
    };
    save(ctx, call, fd_off, uaddr);
}

/// Saves fd and the sockaddr at user address `uaddr` of an IPv4/IPv6 call. For connect(), sendto()
/// and sendmsg() only the address of the sockaddr is kept: it is read at exit, and only when the
/// call failed (nearly every call succeeds; a connect may also fail after SYN_SENT, where the
/// socket itself reports). bind() needs it at entry: a successful bind is remembered (BOUND).
#[inline(always)]
fn save(ctx: &TracePointContext, call: u32, fd_off: u32, uaddr: u64) {
    if ignored_caller() {
        return;
    }
    let Some(fd) = field(ctx, fd_off) else {
        return;
    };
    let mut pending = PendingCall {
        addr: [0; 28],
        uaddr,
        fd: fd as u32,
        call,
        reached_syn_sent: 0,
        sk: 0,
    };
    if call == syscall::BIND {
        match read_sockaddr(uaddr) {
            Some(addr) => pending.addr = addr,
            None => return,
        }
    }
    let _ = CALL_ARGS.insert(&bpf_get_current_pid_tgid(), &pending, 0);
}

#[inline(always)]
fn exit(ctx: &TracePointContext, call: u32) {
    let ret = field(ctx, conf!(sys_exit_ret)).map(|r| r as i64);
    finish_call(call, ret, None);
}

/// The end of a call whose start saved a `PendingCall`: `ret` is its result; the sockaddr is
/// read from `kaddr` (the kernel's copy, at the fexit programs) or else from the caller's memory
/// (`PendingCall::uaddr`, at the syscall tracepoints).
#[inline(always)]
fn finish_call(call: u32, ret: Option<i64>, kaddr: Option<u64>) {
    let id = bpf_get_current_pid_tgid();
    let read = |p: &PendingCall| match kaddr {
        Some(k) => read_ksockaddr(k),
        None => read_sockaddr(p.uaddr),
    };
    if call == syscall::CONNECT {
        if let Some(ret) = ret {
            // The common outcomes of connect() need nothing that was saved at entry: success and
            // a connect still in progress. One map operation instead of two. (Errors still look
            // at the saved call: a refused or timed-out connect whose socket was not tracked, for
            // example because its state-change program was skipped as nested on its CPU, is
            // reported from here.)
            if ret >= 0 || ignored_error(ret) {
                // #025: the thread's last connect() destination, the peer of a TLS handshake
                // it may start next (only while the TLS hooks are attached); #024: who asks
                // which nameserver.
                if ret >= 0 || -ret == EINPROGRESS {
                    if let Some(p) = unsafe { CALL_ARGS.get(&id) } {
                        if let Some(addr) = read(p).filter(|_| p.call == call) {
                            connected(id, &addr);
                        }
                    }
                }
                let _ = CALL_ARGS.remove(&id);
                return;
            }
        }
    }
    // A datagram sent: nothing to report, nothing to keep; one sent to a nameserver is a
    // question (#024).
    if (call == syscall::SENDTO || call == syscall::SENDMSG) && ret.is_some_and(|r| r >= 0) {
        if let Some(p) = unsafe { CALL_ARGS.get(&id) } {
            if let Some(addr) = read(p).filter(|a| p.call == call && crate::dns::to_nameserver(a)) {
                crate::dns::asked(id, &sockaddr_flow(&addr));
            }
        }
        let _ = CALL_ARGS.remove(&id);
        return;
    }
    let Some(pending) = (unsafe { CALL_ARGS.get(&id) }).copied() else {
        return;
    };
    let _ = CALL_ARGS.remove(&id);
    let Some(ret) = ret else {
        return;
    };
    if pending.call != call {
        return;
    }
    if ret == 0 && call == syscall::BIND {
        let _ = BOUND.insert(&bound_key(id, pending.fd), &pending.addr, 0);
        return;
    }
    // Errors that reach a socket after SYN_SENT are in its summary already (one event, not two),
    // unless the summary never came: the socket is then still in CONNS, because the kernel
    // skipped the state-change run that would have closed it (a nested run on a busy CPU).
    // Reporting from here keeps that attempt from vanishing.
    let after_syn_sent = matches!(
        -ret,
        ECONNREFUSED
            | ETIMEDOUT
            | EHOSTUNREACH
            | ENETUNREACH
            | EACCES
            | ENONET
            | ENOPROTOOPT
            | EHOSTDOWN
    );
    if ret < 0 && pending.reached_syn_sent != 0 && after_syn_sent {
        let sk = pending.sk;
        let Some(p) = crate::conn::live(sk) else {
            return;
        };
        crate::conn::ended(sk, p);
    }
    if ret < 0 {
        let mut addr = pending.addr;
        if call != syscall::BIND && call != syscall::LISTEN {
            // connect(), sendto() and sendmsg() read their sockaddr only now that they failed
            // (see `save`).
            let Some(read) = read(&pending) else {
                return;
            };
            addr = read;
        }
        emit_call_error(call, &addr, ret as i32, current_netns());
    }
}

/// Errors that are not failures of the attempt itself (the call was interrupted, is still in
/// progress, or was already done).
#[inline(always)]
fn ignored_error(ret: i64) -> bool {
    matches!(-ret, EINTR | EAGAIN | EISCONN | EALREADY | EINPROGRESS)
}

/// Thread `id` connected (or is connecting) to the address in `addr`: #025, the peer of a TLS
/// handshake it may start next (only while the TLS hooks are attached); #024, who asks which
/// nameserver (kernels without dns_egress).
#[inline(always)]
pub(crate) fn connected(id: u64, addr: &[u8; 28]) {
    if crate::tls::watching() {
        // A thread that connects again overwrites its entry in place: an LRU update would take
        // a free node and give back the old one on every connect.
        match crate::tls::TLS_PEER.get_ptr_mut(&id) {
            // SAFETY: the entry of this thread; only this thread writes it.
            Some(p) => unsafe { *p = *addr },
            None => {
                let _ = crate::tls::TLS_PEER.insert(&id, addr, 0);
            }
        }
    }
    crate::dns::asked(id, &sockaddr_flow(addr));
}

/// Marks the calling task's pending connect() as having put socket `sk` in SYN_SENT.
#[inline(always)]
pub fn mark_syn_sent(sk: u64) {
    // Where the route-lookup programs read connect(), neither the syscall tracepoints nor the
    // fexit programs note a pending connect(): nothing to mark, no map look-up.
    if crate::route::reads_connect_errors() {
        return;
    }
    if let Some(p) = CALL_ARGS.get_ptr_mut(&bpf_get_current_pid_tgid()) {
        unsafe {
            (*p).reached_syn_sent = 1;
            (*p).sk = sk;
        }
    }
}

/// Emits a SYSCALL_FAILED event for `call` on the address in `raw` (a struct sockaddr).
#[inline(always)]
pub fn emit_call_error(call: u32, raw: &[u8; 28], ret: i32, netns: u32) {
    emit_call_error_flagged(call, raw, ret, netns, 0);
}

/// [`emit_call_error`] with `eflag` bits saying how the error was read.
#[inline(always)]
pub fn emit_call_error_flagged(call: u32, raw: &[u8; 28], ret: i32, netns: u32, flags: u32) {
    if let Some(flow) = failed_call_flow(call, raw, ret) {
        emit_flow_error(call, flow, ret, netns, flags);
    }
}

/// The flow a failed `call` reports, from the address in `raw`: `None` when its error is not
/// a failure or the address is not IPv4 or IPv6.
#[inline(always)]
pub fn failed_call_flow(call: u32, raw: &[u8; 28], ret: i32) -> Option<Flow> {
    if ignored_error(ret as i64) {
        return None;
    }
    let mut flow = sockaddr_flow(raw);
    if call == syscall::BIND || call == syscall::LISTEN {
        // bind/listen: the address is the local end.
        core::mem::swap(&mut flow.saddr, &mut flow.daddr);
        core::mem::swap(&mut flow.sport, &mut flow.dport);
    } else if flow.family == 0 {
        return None;
    }
    Some(flow)
}

/// Emits a SYSCALL_FAILED event for `call` on `flow` (for bind() and listen(), the local end is
/// its source).
#[inline(always)]
pub(crate) fn emit_flow_error(call: u32, flow: Flow, ret: i32, netns: u32, flags: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    // A repeat within its window (a flood of refused sends) is only counted: the process's
    // details and the event are gathered only for the one that is sent.
    if let Some(key) = agg_key() {
        unsafe {
            (*key).tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            (*key).kind = kind::SYSCALL_FAILED;
            (*key).verdict = call;
            (*key).err = ret;
            (*key).flags = flags;
            (*key).netns = netns;
            (*key).drop_netns = 0;
            (*key).family = flow.family;
            (*key).dport = flow.dport;
            (*key).icmp_type = 0;
            (*key).icmp_code = 0;
            (*key).daddr = flow.daddr;
        }
        if counted_as_repeat(key, now) {
            return;
        }
    }
    emit(&Event {
        kind: kind::SYSCALL_FAILED,
        verdict: call,
        ts_ns: now,
        proc: current_proc(netns),
        flow,
        err: ret,
        flags,
        ..Event::default()
    });
}

// --- The same calls at the kernel functions behind them (kernels that allow fentry/fexit) ---
//
// A syscall tracepoint, once enabled, sends every system call of every task through the kernel's
// tracing slow path. These programs run only when the socket layer itself is called (connect,
// bind, listen, a UDP send), from any path that reaches it (system calls, io_uring), and read the
// kernel's copy of the caller's sockaddr. Where they attach, the syscall tracepoint programs
// above are not attached at all (the hook plan's `replaced_by`).

/// connect() on a TCP socket, start: the attempt is pending until the exit below, so that the
/// state-change program can mark it as having reached SYN_SENT (the socket's own summary then
/// reports its fate).
#[fentry(function = "inet_stream_connect")]
pub fn inet_stream_connect_entry(_ctx: FEntryContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if ignored_caller() {
        return 0;
    }
    let call = PendingCall {
        addr: [0; 28],
        uaddr: 0,
        fd: 0,
        call: syscall::CONNECT,
        reached_syn_sent: 0,
        sk: 0,
    };
    let _ = CALL_ARGS.insert(&bpf_get_current_pid_tgid(), &call, 0);
    0
}

/// connect() on a TCP socket, result: `inet_stream_connect(sock, uaddr, addr_len, flags)`.
#[fexit(function = "inet_stream_connect")]
pub fn inet_stream_connect_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let uaddr: u64 = ctx.arg(1);
    let ret: i32 = ctx.arg(4);
    finish_call(syscall::CONNECT, Some(ret as i64), Some(uaddr));
    0
}

/// connect() on a datagram socket (UDP: a resolver fixing its nameserver):
/// `inet_dgram_connect(sock, uaddr, addr_len, flags)`. Nothing is pending: the result is final.
#[fexit(function = "inet_dgram_connect")]
pub fn inet_dgram_connect_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let uaddr: u64 = ctx.arg(1);
    let ret: i32 = ctx.arg(4);
    if ignored_caller() {
        return 0;
    }
    if ret < 0 && ignored_error(ret as i64) {
        return 0;
    }
    let Some(addr) = read_ksockaddr(uaddr) else {
        return 0;
    };
    if ret >= 0 {
        connected(bpf_get_current_pid_tgid(), &addr);
        return 0;
    }
    emit_call_error(syscall::CONNECT, &addr, ret, current_netns());
    0
}

/// bind() of an IPv4 socket: `inet_bind(sock, uaddr, addr_len)`.
#[fexit(function = "inet_bind")]
pub fn inet_bind_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    bind_exit(ctx.arg(1), ctx.arg(3))
}

/// bind() of an IPv6 socket: `inet6_bind(sock, uaddr, addr_len)`.
#[fexit(function = "inet6_bind")]
pub fn inet6_bind_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    bind_exit(ctx.arg(1), ctx.arg(3))
}

#[inline(always)]
fn bind_exit(kaddr: u64, ret: i32) -> u32 {
    if ret >= 0 || ignored_caller() {
        return 0;
    }
    if let Some(addr) = read_ksockaddr(kaddr) {
        emit_call_error(syscall::BIND, &addr, ret, current_netns());
    }
    0
}

/// listen() of a TCP socket (both families): `inet_listen(sock, backlog)`. The address is the
/// one the socket is bound to, read from the socket itself.
#[fexit(function = "inet_listen")]
pub fn inet_listen_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let sock: u64 = ctx.arg(0);
    let ret: i32 = ctx.arg(2);
    if ret >= 0 || ignored_caller() {
        return 0;
    }
    let sk: u64 = load(sock, conf!(socket_sk));
    let Ok(mut flow) = sock_flow(sk) else {
        return 0;
    };
    // Only the local end: what the socket is bound to.
    flow.daddr = [0; 16];
    flow.dport = 0;
    emit_flow_error(syscall::LISTEN, flow, ret, current_netns(), 0);
    0
}

/// A UDP send with a destination (sendto(), sendmsg() with a name, sendmmsg()):
/// `udp_sendmsg(sk, msg, len)` / `udpv6_sendmsg(sk, msg, len)`. Successful sends leave at once.
#[fexit(function = "udp_sendmsg")]
pub fn udp_sendmsg_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    send_exit(ctx.arg(1), ctx.arg(3))
}

#[fexit(function = "udpv6_sendmsg")]
pub fn udpv6_sendmsg_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    send_exit(ctx.arg(1), ctx.arg(3))
}

#[inline(always)]
fn send_exit(msg: u64, ret: i32) -> u32 {
    if ignored_caller() {
        return 0;
    }
    let name: u64 = load(msg, conf!(kmsghdr_name));
    if name == 0 {
        // A send on a connected socket: the destination is the socket's, and its errors
        // (an ICMP answer turned into ECONNREFUSED) are no failure of a route.
        return 0;
    }
    if ret >= 0 {
        // A datagram sent to a nameserver without connect() is a question (#024). The port is
        // read first.
        let mut port = [0u8; 2];
        if read_buf(name, 2, &mut port).is_err() || !crate::dns::is_dns_port(port) {
            return 0;
        }
        if let Some(addr) = read_ksockaddr(name) {
            crate::dns::asked(bpf_get_current_pid_tgid(), &sockaddr_flow(&addr));
        }
        return 0;
    }
    if let Some(addr) = read_ksockaddr(name) {
        emit_call_error(syscall::SEND, &addr, ret, current_netns());
    }
    0
}
