//! listen() failures (#027: the port is taken) on kernels that refuse fentry/fexit, without
//! syscall tracepoints (which tax every system call of every task). Part of the state-change
//! program (conn.rs), switched on by `LISTEN_MODE` only where neither the fexit program on
//! inet_listen nor the listen() syscall tracepoints attached.
//!
//! `inet_csk_listen_start` moves the socket to LISTEN, then asks for its port; when the port
//! cannot be had it moves the socket back to CLOSE with `inet_sk_set_state`, which fires
//! `sock:inet_sock_set_state` in the caller, inside listen(). listen() then returns EADDRINUSE.
//!
//! A listener that is closed, shut down or disconnected later makes the same move (LISTEN to
//! CLOSE) from other functions (tcp_close, tcp_disconnect). What tells a failed listen() apart
//! is where the move is made: the kernel stack at the tracepoint holds a return address inside
//! `inet_csk_listen_start`, whose text range the loader writes to `LISTEN_START` (from
//! /proc/kallsyms) before it switches this on. The stack is read only for moves from LISTEN to
//! CLOSE, which are rare.
use aya_ebpf::{
    helpers::generated::bpf_get_stack, macros::map, maps::Array, programs::BtfTracePointContext,
    EbpfContext as _,
};
use netladder_common::{eflag, syscall, TextRange};

use crate::{
    kernel::{conf, current_netns, load, sock_flow},
    syscall::{emit_flow_error, ignored_caller},
};

const IPPROTO_TCP: u16 = 6;
const EADDRINUSE: i32 = 98;
/// Kernel stack frames looked at: the tracepoint's own frames (the program, the BPF run, the
/// tracepoint's stub), inet_sk_set_state, then its caller.
const FRAMES: usize = 10;

/// 1 when the plan's listen_state row counts as attached (written by the loader).
#[map(name = "LISTEN_MODE")]
static LISTEN_MODE: Array<u32> = Array::with_max_entries(1, 0);

/// Index 0: the text range of inet_csk_listen_start, written by userspace before it sets
/// `LISTEN_MODE`. All 0 (matches nothing) until then.
#[map(name = "LISTEN_START")]
static LISTEN_START: Array<TextRange> = Array::with_max_entries(1, 0);

/// Socket `sk` moved from LISTEN to CLOSE: a failed listen() when that happened inside
/// inet_csk_listen_start.
#[inline(always)]
pub fn left_listen(ctx: &BtfTracePointContext, sk: u64) {
    if LISTEN_MODE.get(0).copied() != Some(1)
        || load::<u16>(sk, conf!(sk_protocol)) != IPPROTO_TCP
        || !inside_listen_start(ctx)
        || ignored_caller()
    {
        return;
    }
    let Ok(mut flow) = sock_flow(sk) else {
        return;
    };
    // Only the local end: what the socket is bound to.
    flow.daddr = [0; 16];
    flow.dport = 0;
    emit_flow_error(
        syscall::LISTEN,
        flow,
        -EADDRINUSE,
        current_netns(),
        eflag::LISTEN_STATE,
    );
}

/// Whether the state change was made from inside inet_csk_listen_start.
#[inline(always)]
fn inside_listen_start(ctx: &BtfTracePointContext) -> bool {
    let Some(range) = LISTEN_START.get(0) else {
        return false;
    };
    let (start, end) = (range[0], range[1]);
    if start == 0 {
        return false;
    }
    let mut frames = [0u64; FRAMES];
    // SAFETY: the buffer is ours and its size is given; flags 0: the kernel stack.
    let got = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames.as_mut_ptr().cast(),
            (FRAMES * 8) as u32,
            0,
        )
    };
    if got <= 0 {
        return false;
    }
    let n = (got as usize / 8).min(FRAMES);
    let mut i = 0;
    // Bounded by the constant (the verifier's loop bound), then by what the kernel wrote.
    while i < FRAMES {
        if i >= n {
            break;
        }
        let addr = frames[i];
        if addr >= start && addr < end {
            return true;
        }
        i += 1;
    }
    false
}
