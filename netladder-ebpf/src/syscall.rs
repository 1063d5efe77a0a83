//! Socket syscalls that fail synchronously: connect() returning an error the state machine of the
//! socket never shows (no route, no local port, ...). The arguments are saved at entry, in the
//! calling task, and the result read at exit.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use netladder_common::{kind, syscall, Event, Flow, AF_INET, AF_INET6};

use crate::{
    kernel::{conf, current_netns, current_proc, is_self},
    maps::{emit, ConnectArgs, CONNECT_ARGS},
};

// Errors that are not failures of the connection attempt itself.
const EINTR: i64 = 4;
const EAGAIN: i64 = 11;
const EISCONN: i64 = 106;
const EALREADY: i64 = 114;
const EINPROGRESS: i64 = 115;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(conf!(sys_enter_connect_fd) as usize) }) else {
        return 0;
    };
    let Ok(uaddr) = (unsafe { ctx.read_at::<u64>(conf!(sys_enter_connect_addr) as usize) }) else {
        return 0;
    };
    let mut args = ConnectArgs {
        addr: [0; 28],
        fd: fd as u32,
    };
    // A sockaddr_in is shorter than 28 bytes and may end a page: fall back to its 16 bytes.
    if unsafe { bpf_probe_read_user_buf(uaddr as *const u8, &mut args.addr) }.is_err()
        && unsafe { bpf_probe_read_user_buf(uaddr as *const u8, &mut args.addr[..16]) }.is_err()
    {
        return 0;
    }
    let family = u16::from_ne_bytes([args.addr[0], args.addr[1]]);
    if family == AF_INET || family == AF_INET6 {
        let _ = CONNECT_ARGS.insert(&bpf_get_current_pid_tgid(), &args, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { CONNECT_ARGS.get(&id) }).copied() else {
        return 0;
    };
    let _ = CONNECT_ARGS.remove(&id);
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(conf!(sys_exit_ret) as usize) }) else {
        return 0;
    };
    if ret >= 0 || matches!(-ret, EINTR | EAGAIN | EISCONN | EALREADY | EINPROGRESS) {
        return 0;
    }
    emit_connect_error(&args.addr, ret as i32, current_netns());
    0
}

/// Emits a SYSCALL_FAILED event for a connect() to the address in `raw` (a struct sockaddr).
#[inline(always)]
pub fn emit_connect_error(raw: &[u8; 28], ret: i32, netns: u32) {
    if matches!(
        -(ret as i64),
        EINTR | EAGAIN | EISCONN | EALREADY | EINPROGRESS
    ) {
        return;
    }
    let Some(flow) = sockaddr_flow(raw) else {
        return;
    };
    emit(&Event {
        kind: kind::SYSCALL_FAILED,
        verdict: syscall::CONNECT,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        proc: current_proc(netns),
        flow,
        err: ret,
        ..Event::default()
    });
}

/// Destination of a sockaddr_in / sockaddr_in6.
#[inline(always)]
fn sockaddr_flow(raw: &[u8; 28]) -> Option<Flow> {
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let mut flow = Flow {
        family,
        dport: u16::from_be_bytes([raw[2], raw[3]]),
        // The socket type is not known here (TCP or UDP): 0 = unknown.
        protocol: 0,
        ..Flow::default()
    };
    match family {
        AF_INET => flow.daddr[..4].copy_from_slice(&raw[4..8]),
        AF_INET6 => flow.daddr.copy_from_slice(&raw[8..24]),
        _ => return None,
    }
    Some(flow)
}
