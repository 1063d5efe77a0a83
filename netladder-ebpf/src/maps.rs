//! Maps shared by the programs, and the small helpers that touch them.
use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{ring_buf::RingBufEntry, Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use netladder_common::{
    counter, AggCount, AggKey, AppEvent, ConnState, DropRecord, Event, Flow, IcmpRecord, ProcInfo,
    TextRange, AGG_WINDOW_NS,
};

/// Failure events to userspace.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

const RING_BYTES: u32 = 4 << 20;
/// Userspace is woken each time the queue grows past a multiple of this; in between, its 100 ms
/// tick collects the events. A storm then costs one wakeup per thousand-odd events, not one each.
const WAKE_BYTES: u64 = (RING_BYTES / 16) as u64;
/// Ring space of one record: the record plus its 8-byte header, rounded up to 8 bytes.
const fn record_bytes(size: usize) -> u64 {
    ((size + 8 + 7) & !7) as u64
}

/// Per-socket state from SYN_SENT until the socket leaves it (kept after that as an ended entry,
/// see conn.rs `CONNS_KEEP`). Key: socket address.
#[map(name = "CONNS")]
pub static CONNS: HashMap<u64, ConnState> = HashMap::with_max_entries(65536, 0);
/// Index 0: how many entries CONNS holds, live and ended (conn.rs, `CONNS_KEEP`).
#[map(name = "CONNS_USED")]
pub static CONNS_USED: Array<u64> = Array::with_max_entries(1, 0);

/// Drops seen for a flow (client's view), merged into the connection's event at close.
#[map(name = "DROPS")]
pub static DROPS: LruHashMap<Flow, DropRecord> = LruHashMap::with_max_entries(16384, 0);

/// The last NO_SOCKET drop of a handshake on this CPU, not yet claimed (see `drop::NoSocketDrop`).
#[map(name = "NOSOCK_LAST")]
pub static NOSOCK_LAST: PerCpuArray<NoSocketDrop> = PerCpuArray::with_max_entries(1, 0);

/// Identical failures (see `AggKey`) counted in the current window. Keys carry a generation
/// (`AggKey::generation`, from `AGG_GEN`): userspace switches generations now and then and
/// removes the other generation's entries once no program can still be writing to them. A plain
/// hash, never LRU, and never an entry removed while in use: no count is lost unseen. When it is
/// full, failures are sent one event each.
#[map(name = "AGG")]
pub static AGG: HashMap<AggKey, AggCount> = HashMap::with_max_entries(8192, 0);
/// Where an aggregation key is built (one per CPU, see `agg_key`).
#[map(name = "AGG_SCRATCH")]
static AGG_SCRATCH: PerCpuArray<AggKey> = PerCpuArray::with_max_entries(1, 0);
/// The generation in use (0 or 1), written by userspace only.
#[map(name = "AGG_GEN")]
pub static AGG_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// A drop record and an ICMP record, both zero: never written. A connection's records start as
/// a copy of it instead of zeros written on the stack. The verifier knows written zeros, and a
/// known zero decides branches on its own (the ICMP table, the verdict): Linux 5.10 and 6.1 then
/// walked the rest of `inet_sock_set_state` once more for each way a record was or was not found.
/// A read of an array map's slot is a few instructions (the verifier inlines it), no helper call.
#[map(name = "BLANK_RECORDS")]
static BLANK_RECORDS: Array<BlankRecords> = Array::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlankRecords {
    pub drops: DropRecord,
    pub icmp: IcmpRecord,
}

/// An all-zero drop record and ICMP record the verifier knows nothing of (see `BLANK_RECORDS`);
/// `None` cannot happen (slot 0 of a one-slot array).
#[inline(always)]
pub fn blank_records() -> Option<BlankRecords> {
    BLANK_RECORDS.get(0).copied()
}

/// Writes to DROPS so far (one global slot, added to atomically): see `ConnState::drop_writes`.
#[map(name = "DROP_WRITES")]
pub static DROP_WRITES: Array<u64> = Array::with_max_entries(1, 0);

/// How many times DROPS has been written.
#[inline(always)]
pub fn drop_writes() -> u64 {
    match DROP_WRITES.get_ptr(0) {
        Some(n) => unsafe { core::ptr::read_volatile(n) },
        None => 0,
    }
}

/// Counts one write to DROPS (after the write, so a reader that sees the count sees the record).
#[inline(always)]
pub fn count_drop_write() {
    if let Some(n) = DROP_WRITES.get_ptr_mut(0) {
        add(n, 1);
    }
}

/// Atomic add whose result is unused. The bpf target has no atomic read-modify-write in
/// core::sync (no compare-and-swap): the intrinsic with its result unused is the BPF atomic add
/// every kernel has (XADD).
#[inline(always)]
fn add(n: *mut u64, v: u64) {
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            n, v,
        )
    };
}

/// Index 0 of a one-counter array map (CONNS_USED, ROUTE_PENDING, BIND_PENDING); `u64::MAX`
/// when it cannot be read, which every caller takes as "not zero, not small".
#[inline(always)]
pub(crate) fn tally(map: &Array<u64>) -> u64 {
    map.get(0).copied().unwrap_or(u64::MAX)
}

/// Adds `v` to index 0 of a one-counter array map, atomically; a wrapping `v` takes off (the
/// two's complement of 1 is one less).
#[inline(always)]
pub(crate) fn tally_add(map: &Array<u64>, v: u64) {
    if let Some(n) = map.get_ptr_mut(0) {
        add(n, v);
    }
}

/// ICMP errors received for a flow (client's view), merged into the connection's event at close.
#[map(name = "ICMP_SEEN")]
pub static ICMP_SEEN: LruHashMap<Flow, IcmpRecord> = LruHashMap::with_max_entries(4096, 0);

/// The text ranges of icmp_rcv (index 0) and icmpv6_rcv (index 1) for `consume_skb`, written
/// by userspace just before it attaches that program (never when the fentry programs replace
/// it, so that start-up reads no kallsyms for it). An array look-up is inlined by the verifier:
/// the per-packet cost stays a few instructions.
#[map(name = "ICMP_RCV")]
pub static ICMP_RCV: Array<TextRange> = Array::with_max_entries(2, 0);

/// Arguments of a socket syscall saved at entry, keyed by pid_tgid.
#[map(name = "CALL_ARGS")]
pub static CALL_ARGS: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

/// Addresses of successful bind() calls by (process, fd), so a failing listen() can name its port.
#[map(name = "BOUND")]
pub static BOUND: LruHashMap<u64, [u8; 28]> = LruHashMap::with_max_entries(16384, 0);

/// netladder's own counters (lost events, full maps...). Index: `netladder_common::counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// A SYN that reached a local stack with no socket for it. On loopback and veth the refused
/// connection usually closes on the same CPU right after (the RST is handled in the same softirq,
/// or in the connecting task when it releases the socket), so the drop is parked here, per CPU,
/// and claimed by that close without touching DROPS. A drop nobody claimed moves to DROPS when the
/// next one arrives on this CPU, where a close on another CPU finds it as before.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NoSocketDrop {
    pub flow: Flow,
    /// Time of the last drop: also what a close compares before it claims the slot.
    pub last_ns: u64,
    pub drops: u32,
    pub reason: u32,
    pub netns: u32,
    /// Non-zero while the drop is parked here, unclaimed.
    pub parked: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    /// The struct sockaddr as the caller passed it.
    pub addr: [u8; 28],
    pub fd: u32,
    /// User address of the sockaddr (connect(): read at exit, only when the call failed).
    pub uaddr: u64,
    /// `netladder_common::syscall` id.
    pub call: u32,
    /// The connect() put its socket in SYN_SENT: the socket's own summary reports its fate.
    pub reached_syn_sent: u32,
    /// That socket (its CONNS key), so the exit can tell whether its summary was emitted.
    pub sk: u64,
}

/// Adds one to a per-CPU counter. Atomically: a program on this CPU can be interrupted (a
/// softirq) or preempted by another run of netladder's programs between a load and a store,
/// and the record counts (`EVENTS` + `RINGBUF_FULL`) must be exact for the stats to add up.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        add(slot, 1);
    }
}

/// This CPU's slot for an aggregation key, its generation already set: the caller fills every
/// other field (as `AggKey::of` does) and asks [`counted_as_repeat`]. The key is built in a
/// per-CPU slot, not on the stack: the state-change program already uses most of the 512 bytes,
/// and 5.10 counts the memset helpers' frames on top of it.
#[inline(always)]
pub fn agg_key() -> Option<*mut AggKey> {
    let key = AGG_SCRATCH.get_ptr_mut(0)?;
    let generation = match AGG_GEN.get(0) {
        Some(g) => *g as u8,
        None => 0,
    };
    unsafe { (*key).generation = generation };
    Some(key)
}

/// Counts the failure of the filled `key` at `now` in AGG. `true`: it repeats one already sent
/// in the current window, and is only counted (no event, and nothing else to build). `false`:
/// the caller sends it as an event.
#[inline(always)]
pub fn counted_as_repeat(key: *mut AggKey, now: u64) -> bool {
    let key = unsafe { &*key };
    match AGG.get_ptr_mut(key) {
        Some(c) => unsafe {
            if now.wrapping_sub((*c).window_start) < AGG_WINDOW_NS {
                add(&raw mut (*c).total, 1);
                return true;
            }
            // A new window (two CPUs may both open it: then both send an event, none is lost).
            (*c).window_start = now;
            add(&raw mut (*c).emitted, 1);
            add(&raw mut (*c).total, 1);
        },
        None => {
            let first = AggCount {
                window_start: now,
                total: 1,
                emitted: 1,
            };
            // Full, or another CPU inserted it first: this event is sent uncounted, which is
            // still exact (only counted-only failures are reported from AGG).
            let _ = AGG.insert(key, &first, BPF_NOEXIST as u64);
        }
    }
    false
}

/// Index 0: non-zero once userspace stops taking records (watch is ending). From then on the
/// programs write no record and count none, so the counts userspace reads after it has drained
/// the ring buffer are final; the programs themselves are detached later, after the output.
#[map(name = "STOP")]
pub static STOP: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn stopped() -> bool {
    matches!(STOP.get(0), Some(s) if *s != 0)
}

/// Puts `event` on the ring buffer, or counts it as lost when the buffer is full. Every record
/// the programs write is counted here or in [`submit_app`] / [`reserve_app`]: queued
/// (`counter::EVENTS`) or lost (`counter::RINGBUF_FULL`), so userspace can account for each.
#[inline(always)]
pub fn emit(event: &Event) {
    if stopped() {
        return;
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(*event);
            slot.submit(wake_flags(record_bytes(core::mem::size_of::<Event>())));
            count(counter::EVENTS);
        }
        None => count(counter::RINGBUF_FULL),
    }
}

/// Reserves ring space for an application record, or counts it as lost when the buffer is
/// full. The record is too big for the eBPF stack: fill it in place (every field, `text`
/// beyond `text_len` may stay unwritten), then hand it to [`submit_app`].
#[inline(always)]
pub fn reserve_app() -> Option<RingBufEntry<AppEvent>> {
    if stopped() {
        return None;
    }
    let slot = EVENTS.reserve::<AppEvent>(0);
    if slot.is_none() {
        count(counter::RINGBUF_FULL);
    }
    slot
}

#[inline(always)]
pub fn submit_app(slot: RingBufEntry<AppEvent>) {
    slot.submit(wake_flags(record_bytes(core::mem::size_of::<AppEvent>())));
    count(counter::EVENTS);
}

/// Wake userspace only when this record makes the queue cross a multiple of WAKE_BYTES: once
/// per WAKE_BYTES of events, also while userspace lags behind. (A wakeup is an irq_work, a
/// self-interrupt that costs a VM exit under virtualisation: forcing one for every event above
/// the threshold tripled the cost of an event.)
#[inline(always)]
fn wake_flags(record: u64) -> u64 {
    let queued = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let wake = if queued / WAKE_BYTES != queued.saturating_sub(record) / WAKE_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    wake as u64
}

// --- DNS (#024, dns.rs) ---

/// The process that owns a socket asking a nameserver (its first connect() or unconnected send
/// to port 53, seen by the cgroup sock_addr programs). Key: socket cookie.
#[map(name = "DNS_SENDERS")]
pub static DNS_SENDERS: LruHashMap<u64, Sender> = LruHashMap::with_max_entries(16384, 0);

/// getaddrinfo calls in progress. Key: pid_tgid of the calling thread.
#[map(name = "GAI_CALLS")]
pub static GAI_CALLS: LruHashMap<u64, GaiCall> = LruHashMap::with_max_entries(8192, 0);

/// The owner of last resort, where no cgroup sock_addr program saw the socket (it connected
/// before they attached, or they were refused): the last process that connect()ed or sent to a
/// nameserver, by the server's address (recorded when the call succeeds).
#[map(name = "DNS_ASKERS")]
pub static DNS_ASKERS: LruHashMap<[u8; 16], Sender> = LruHashMap::with_max_entries(1024, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Sender {
    pub proc: ProcInfo,
    /// The sending thread, to find its getaddrinfo call when the answer comes.
    pub pid_tgid: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GaiCall {
    pub start_ns: u64,
    /// The name asked (user address, read at return).
    pub node: u64,
    /// `struct addrinfo **res` (user address).
    pub res: u64,
    /// DNS questions the thread sent, responses its sockets got, during the call.
    pub queries: u32,
    pub answers: u32,
    /// The last nameserver asked.
    pub server: [u8; 16],
    pub server_family: u16,
    pub _pad: [u8; 6],
}
