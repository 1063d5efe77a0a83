//! Reading kernel memory at offsets computed by userspace (aya has no CO-RE), and the config global.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
    bpf_probe_read_kernel_buf, bpf_probe_read_user,
};
use netladder_common::{Config, Flow, ProcInfo, ABSENT, AF_INET, AF_INET6};

/// Filled in by userspace before load (`EbpfLoader::override_global("CONFIG", ..)`).
#[unsafe(no_mangle)]
pub(crate) static CONFIG: Config = Config::empty();

/// Reads one config field without letting the compiler constant-fold the default value.
macro_rules! conf {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(&raw const crate::kernel::CONFIG.$field) };
        value
    }};
}
pub(crate) use conf;

/// Reads a `T` at `base + off`; fails when the offset is unknown on this kernel.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, i64> {
    if off == ABSENT || base == 0 {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.map_err(|e| e as i64)
}

/// Loads a `T` at `base + off` directly, for `base` a BTF-typed kernel pointer (a tp_btf or fexit
/// argument, or a pointer field loaded from one with `load`). The offset is a `CONFIG` field: the
/// global is a frozen read-only map, so the verifier knows its value and checks the access against
/// the BTF type like any field access (a faulting load reads 0). Far cheaper than a helper call.
/// The field must lie inside the pointer's own struct type (not in an enclosing struct such as
/// `inet_sock` around `sock`): use `read` for those. 0 when the offset is unknown here.
#[inline(always)]
pub fn load<T: Copy + Default>(base: u64, off: u32) -> T {
    if off == ABSENT || base == 0 {
        return T::default();
    }
    unsafe { core::ptr::read_volatile((base + off as u64) as *const T) }
}

/// Reads `dst.len()` bytes at `base + off`.
#[inline(always)]
pub fn read_buf(base: u64, off: u32, dst: &mut [u8]) -> Result<(), i64> {
    if off == ABSENT || base == 0 {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel_buf((base + off as u64) as *const u8, dst) }
        .map_err(|e| e as i64)
}

/// A zeroed `T`, written as 8-byte stores. A plain zero initialisation (`Default`, `[0; N]`)
/// compiles to a call of a byte-by-byte memset loop on BPF, which the hot paths cannot afford.
///
/// # Safety
/// `T` must be 8-byte aligned, a multiple of 8 bytes long, and valid when all zero.
#[inline(always)]
pub unsafe fn zeroed<T: Copy>() -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let p = v.as_mut_ptr() as *mut u64;
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        unsafe { p.add(i).write_volatile(0) };
        i += 1;
    }
    unsafe { v.assume_init() }
}

/// A flow with every field 0 (see [`zeroed`]).
#[inline(always)]
pub fn zero_flow() -> Flow {
    // SAFETY: Flow is 40 bytes, 8-byte aligned, plain integers.
    unsafe { zeroed() }
}

/// The calling task's name. The helper fills all 16 bytes (zeros on failure), so the buffer
/// needs no clearing first (aya's wrapper clears it: a memset call).
#[inline(always)]
pub fn current_comm() -> [u8; 16] {
    let mut comm = core::mem::MaybeUninit::<[u8; 16]>::uninit();
    unsafe {
        aya_ebpf::helpers::generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), 16);
        comm.assume_init()
    }
}

/// The calling task's identity. Only meaningful in process context.
#[inline(always)]
pub fn current_proc(netns: u32) -> ProcInfo {
    let id = bpf_get_current_pid_tgid();
    ProcInfo {
        tid: id as u32,
        pid: (id >> 32) as u32,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        netns,
        _pad: 0,
        comm: current_comm(),
    }
}

/// `true` when userspace asked every program to return at once (`cargo xtask bench`'s floor:
/// what the hooks cost with no work done in them). The value is in the frozen read-only config,
/// so the verifier knows it and removes the branch not taken: a normal load keeps one read of
/// the config at each program's start, and no branch.
#[inline(always)]
pub fn empty() -> bool {
    conf!(empty_programs) != 0
}

/// `true` when the calling task is netladder itself.
#[inline(always)]
pub fn is_self() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == conf!(self_tgid)
}

/// Whether a connection or call in `netns` is outside the one namespace netladder watches.
#[inline(always)]
pub fn other_netns(netns: u32) -> bool {
    let only = conf!(only_netns);
    only != 0 && netns != only
}

/// Network namespace inode of a socket: `sock_net(sk)->ns.inum`. `sk` is a BTF pointer.
#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    load::<u32>(load::<u64>(sk, conf!(sk_net)), conf!(net_ns_inum))
}

/// The TCP flow of a socket, local end as source. IPv4-mapped IPv6 sockets are reported as IPv4,
/// matching what their packets carry on the wire. `sk` is a BTF pointer.
#[inline(always)]
pub fn sock_flow(sk: u64) -> Result<Flow, i64> {
    flow_of(sk, true)
}

/// [`sock_flow`] for a socket pointer that is a plain number to the verifier (found through
/// memory the program read, not given as a typed argument): every field through the read helper.
#[inline(always)]
pub fn sock_flow_read(sk: u64) -> Result<Flow, i64> {
    flow_of(sk, false)
}

/// One field of `base`: a direct load (`direct`, BTF pointers) or a helper read (0 on failure).
#[inline(always)]
fn field<T: Copy + Default>(base: u64, off: u32, direct: bool) -> T {
    if direct {
        load(base, off)
    } else {
        read(base, off).unwrap_or_default()
    }
}

#[inline(always)]
fn flow_of(sk: u64, direct: bool) -> Result<Flow, i64> {
    let family: u16 = field(sk, conf!(sk_family), direct);
    let dport: u16 = field(sk, conf!(sk_dport), direct);
    // skc_num is already 0 when a failed socket reaches CLOSE (the port is released first);
    // inet_sport (in struct inet_sock, beyond struct sock: not a direct load) still holds it then.
    let sport = match read::<u16>(sk, conf!(sk_sport)) {
        Ok(p) if p != 0 => u16::from_be(p),
        _ => field(sk, conf!(sk_num), direct),
    };
    let mut flow = zero_flow();
    flow.family = family;
    flow.sport = sport;
    flow.dport = u16::from_be(dport);
    flow.protocol = 6;
    if family == AF_INET6 {
        let d = load16(sk, conf!(sk_v6_daddr), direct);
        if is_v4_mapped(&d) {
            flow.family = AF_INET;
        } else {
            flow.daddr = d;
            flow.saddr = load16(sk, conf!(sk_v6_rcv_saddr), direct);
            return Ok(flow);
        }
    } else if family != AF_INET {
        return Err(-1);
    }
    // Addresses are in network byte order in memory: native-endian bytes keep that order.
    flow.daddr[..4].copy_from_slice(&field::<u32>(sk, conf!(sk_daddr), direct).to_ne_bytes());
    flow.saddr[..4].copy_from_slice(&field::<u32>(sk, conf!(sk_rcv_saddr), direct).to_ne_bytes());
    Ok(flow)
}

/// 16 bytes (an IPv6 address) at `base + off`, as two 8-byte fields.
#[inline(always)]
fn load16(base: u64, off: u32, direct: bool) -> [u8; 16] {
    let (hi, lo): (u64, u64) = if off == ABSENT {
        (0, 0)
    } else {
        (field(base, off, direct), field(base, off + 8, direct))
    };
    // SAFETY: two u64 are 16 bytes; no clearing first (see `zeroed`).
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([hi, lo]) }
}

#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

/// Network namespace inode of the calling task: `current->nsproxy->net_ns->ns.inum`.
#[inline(always)]
pub fn current_netns() -> u32 {
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let Ok(nsproxy) = read::<u64>(task, conf!(task_nsproxy)) else {
        return 0;
    };
    match read::<u64>(nsproxy, conf!(nsproxy_net_ns)) {
        Ok(net) => read::<u32>(net, conf!(net_ns_inum)).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Whether two flows are the same, as five 8-byte compares (`Flow` is 8-byte aligned). The
/// derived `==` compares the address arrays with a byte-by-byte loop on BPF.
#[inline(always)]
pub fn same_flow(a: &Flow, b: &Flow) -> bool {
    const _: () = assert!(core::mem::size_of::<Flow>() == 40 && core::mem::align_of::<Flow>() == 8);
    // SAFETY: Flow is 40 bytes, 8-byte aligned, and every bit pattern is a valid u64.
    let (a, b) = unsafe {
        (
            &*(a as *const Flow as *const [u64; 5]),
            &*(b as *const Flow as *const [u64; 5]),
        )
    };
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4]
}

// --- struct sockaddr, as callers pass it (AF_INET / AF_INET6 layouts are ABI) ---

/// The struct sockaddr at user address `uaddr`, when it is IPv4 or IPv6.
#[inline(always)]
pub fn read_sockaddr(uaddr: u64) -> Option<[u8; 28]> {
    // A sockaddr_in is shorter than 28 bytes and may end a page: fall back to its 16 bytes.
    let addr = match unsafe { bpf_probe_read_user(uaddr as *const [u8; 28]) } {
        Ok(a) => a,
        Err(_) => {
            let short = unsafe { bpf_probe_read_user(uaddr as *const [u8; 16]) }.ok()?;
            let mut a = [0u8; 28];
            a[..16].copy_from_slice(&short);
            a
        }
    };
    let family = u16::from_ne_bytes([addr[0], addr[1]]);
    (family == AF_INET || family == AF_INET6).then_some(addr)
}

/// The struct sockaddr at kernel address `kaddr` (the copy the kernel made of the caller's),
/// when it is IPv4 or IPv6. The copy lives in a `sockaddr_storage`: 28 bytes are always there.
#[inline(always)]
pub fn read_ksockaddr(kaddr: u64) -> Option<[u8; 28]> {
    let mut addr = [0u8; 28];
    read_buf(kaddr, 0, &mut addr).ok()?;
    let family = u16::from_ne_bytes([addr[0], addr[1]]);
    (family == AF_INET || family == AF_INET6).then_some(addr)
}

/// The address of a sockaddr_in / sockaddr_in6 as the destination of a flow (family 0 if neither).
#[inline(always)]
pub fn sockaddr_flow(raw: &[u8; 28]) -> Flow {
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    // The socket type is not known here (TCP or UDP): protocol 0 = unknown.
    let mut flow = zero_flow();
    match family {
        AF_INET => flow.daddr[..4].copy_from_slice(&raw[4..8]),
        AF_INET6 => flow.daddr.copy_from_slice(&raw[8..24]),
        _ => return flow,
    }
    flow.family = family;
    flow.dport = u16::from_be_bytes([raw[2], raw[3]]);
    flow
}

/// ORs every 8-byte word of `v` with `zero` (a 0 from [`opaque`], which the verifier cannot see
/// through): afterwards the verifier knows none of `v`, as after `opaque(v)`, but for 8 bytes
/// of stack instead of two more copies of `v` (programs whose stack is nearly full).
///
/// # Safety
/// `T` must be 8-byte aligned and a multiple of 8 bytes long, of plain integers.
#[inline(always)]
pub unsafe fn blur<T: Copy>(v: &mut T, zero: u64) {
    let p = (v as *mut T).cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: word i of `v` (see above).
        unsafe {
            let w = p.add(i).read_volatile();
            p.add(i).write_volatile(w | zero);
        }
        i += 1;
    }
}

/// `v`, copied by a helper so that the verifier no longer knows its value. Verifiers before
/// Linux 6.3 (Debian's 5.10 and 6.1) follow every constant that a branch of an inlined table
/// or classification gives down the rest of the program as a path of its own: one copy after
/// such a table leaves one path. Costs one helper call: once per failed connection, once per
/// packet from port 53 that parses as DNS (placed later in `dns_ingress`, after the answers
/// without an error leave, it makes LLVM exceed the BPF stack), and once per getaddrinfo() that
/// returns.
#[inline(always)]
pub fn opaque<T: Copy>(v: T) -> T {
    let src = v;
    let mut out = v;
    // SAFETY: both are our own stack values of the same size; the helper copies one into the
    // other (reading our own stack cannot fail), and the verifier marks `out` as written.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&mut out as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            (&src as *const T).cast(),
        );
        core::ptr::read_volatile(&out)
    }
}
