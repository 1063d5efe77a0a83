//! Maps shared by the programs, and the small helpers that touch them.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use netladder_common::{counter, ConnState, DropRecord, Event, Flow, IcmpRecord};

/// Failure events to userspace.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

const RING_BYTES: u32 = 4 << 20;
/// Userspace is woken once this much is queued; below it, its 100 ms tick collects the events.
/// A storm then costs one wakeup per few hundred events instead of one each.
const WAKE_BYTES: u64 = (RING_BYTES / 16) as u64;

/// Per-socket state from SYN_SENT until the socket leaves it. Key: socket address.
#[map(name = "CONNS")]
pub static CONNS: HashMap<u64, ConnState> = HashMap::with_max_entries(65536, 0);

/// Drops seen for a flow (client's view), merged into the connection's event at close.
#[map(name = "DROPS")]
pub static DROPS: LruHashMap<Flow, DropRecord> = LruHashMap::with_max_entries(16384, 0);

/// ICMP errors received for a flow (client's view), merged into the connection's event at close.
#[map(name = "ICMP_SEEN")]
pub static ICMP_SEEN: LruHashMap<Flow, IcmpRecord> = LruHashMap::with_max_entries(4096, 0);

/// Arguments of a socket syscall saved at entry, keyed by pid_tgid.
#[map(name = "CALL_ARGS")]
pub static CALL_ARGS: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

/// Addresses of successful bind() calls by (process, fd), so a failing listen() can name its port.
#[map(name = "BOUND")]
pub static BOUND: LruHashMap<u64, [u8; 28]> = LruHashMap::with_max_entries(16384, 0);

/// netladder's own counters (lost events, full maps...). Index: `netladder_common::counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    /// The struct sockaddr as the caller passed it.
    pub addr: [u8; 28],
    pub fd: u32,
    /// `netladder_common::syscall` id.
    pub call: u32,
    /// The connect() put its socket in SYN_SENT: the socket's own summary reports its fate.
    pub reached_syn_sent: u32,
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer can race with us.
        unsafe { *slot += 1 };
    }
}

/// Puts `event` on the ring buffer, or counts it as lost when the buffer is full.
#[inline(always)]
pub fn emit(event: &Event) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(*event);
            let wake = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKE_BYTES {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            slot.submit(wake as u64);
            count(counter::EVENTS);
        }
        None => count(counter::RINGBUF_FULL),
    }
}
