//! Reading kernel memory at offsets computed by userspace (aya has no CO-RE), and the config global.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
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
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
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
    let family: u16 = load(sk, conf!(sk_family));
    let dport: u16 = load(sk, conf!(sk_dport));
    // skc_num is already 0 when a failed socket reaches CLOSE (the port is released first);
    // inet_sport (in struct inet_sock, beyond struct sock: not a direct load) still holds it then.
    let sport = match read::<u16>(sk, conf!(sk_sport)) {
        Ok(p) if p != 0 => u16::from_be(p),
        _ => load(sk, conf!(sk_num)),
    };
    let mut flow = Flow {
        family,
        sport,
        dport: u16::from_be(dport),
        protocol: 6,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        let d = load16(sk, conf!(sk_v6_daddr));
        if is_v4_mapped(&d) {
            flow.family = AF_INET;
        } else {
            flow.daddr = d;
            flow.saddr = load16(sk, conf!(sk_v6_rcv_saddr));
            return Ok(flow);
        }
    } else if family != AF_INET {
        return Err(-1);
    }
    // Addresses are in network byte order in memory: native-endian bytes keep that order.
    flow.daddr[..4].copy_from_slice(&load::<u32>(sk, conf!(sk_daddr)).to_ne_bytes());
    flow.saddr[..4].copy_from_slice(&load::<u32>(sk, conf!(sk_rcv_saddr)).to_ne_bytes());
    Ok(flow)
}

/// 16 bytes (an IPv6 address) at `base + off` of a BTF pointer, as two direct loads.
#[inline(always)]
fn load16(base: u64, off: u32) -> [u8; 16] {
    if off == ABSENT {
        return [0; 16];
    }
    let hi: u64 = load(base, off);
    let lo: u64 = load(base, off + 8);
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&hi.to_ne_bytes());
    a[8..].copy_from_slice(&lo.to_ne_bytes());
    a
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
