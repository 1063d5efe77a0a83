//! DNS (#024): error answers parsed from the packets themselves, and glibc's getaddrinfo.
//!
//! - `cgroup_skb/ingress` (cgroup v2 root): a response from port 53 with an error RCODE becomes
//!   a DNS_ANSWER event with the question's name, the server and the process that owns the
//!   socket (softirq has no useful `current`). Reads go through bpf_skb_load_bytes (non-linear
//!   skbs), every loop is bounded by a constant, and a response that does not parse is counted
//!   (DNS_MALFORMED), never reported with a guessed name.
//! - No program runs on the packets a host sends: the owner of a socket that asks a nameserver is
//!   recorded by socket cookie where its connect() or unconnected send starts (the cgroup
//!   `connect4/6` and `sendmsg4/6` programs of route.rs, in the caller, on every kernel:
//!   DNS_SENDERS), and by the nameserver's address where that call succeeds (DNS_ASKERS, the
//!   fallback for a socket no cgroup program saw). The successful calls count the questions of
//!   a getaddrinfo in progress.
//! - `uprobe`/`uretprobe` on getaddrinfo: the name asked, the EAI_* result, the first address of
//!   a success, and the questions sent / responses received during the call (RESOLVER event).
//!
//! The cgroup program always returns 1: it observes, it never changes traffic.
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::{cgroup_skb, uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext, SkBuffContext},
};
use netladder_common::{counter, dns, kind, AppEvent, Flow, ProcInfo, AF_INET, AF_INET6};

use crate::{
    kernel::{current_netns, current_proc, is_self, opaque, other_netns},
    maps::{count, reserve_app, submit_app, GaiCall, Sender, DNS_ASKERS, DNS_SENDERS, GAI_CALLS},
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const DNS_HEADER: u32 = 12;
/// Bytes of the question section copied into the event (the longest legal name is 255 bytes).
const COPY_MAX: u32 = 255;
/// Labels walked in the kernel; a name with more is reported cut (reverse IPv6 names have 34).
const MAX_LABELS: usize = 64;
/// Offsets in glibc's struct addrinfo and struct sockaddr_in/in6 (x86_64 ABI).
const AI_FAMILY: u64 = 4;
const AI_ADDR: u64 = 24;

/// Where a DNS message starts in a packet, and the packet's addresses.
#[derive(Clone, Copy)]
struct Parsed {
    /// The packet's flow as the receiving socket sees it.
    flow: Flow,
    /// Offset of the DNS header.
    dns_off: u32,
    tcp: bool,
}

/// Reads `N` bytes at `off` of the packet (any part, linear or not).
#[inline(always)]
fn load<const N: usize>(ctx: &SkBuffContext, off: u32) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    load_into(ctx, off, &mut b).then_some(b)
}

/// Reads `N` bytes at `off` of the packet's linear part directly (no helper call), or through
/// [`load`] when they lie beyond it. Every packet a socket sends or receives passes the two
/// header reads of [`parse`], so they take the cheap path: the headers are in the linear part
/// (the stack itself reads them there).
#[inline(always)]
fn head<const N: usize>(ctx: &SkBuffContext, off: u32) -> Option<[u8; N]> {
    // SAFETY: data and data_end are fields of the program's context; the verifier checks the
    // packet read against data_end (the compare below).
    let (data, end) = unsafe {
        let skb = ctx.skb.skb;
        ((*skb).data as usize, (*skb).data_end as usize)
    };
    let at = data + off as usize;
    if at + N <= end {
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    } else {
        load(ctx, off)
    }
}

/// Fills `dst` from the packet at `off`.
#[inline(always)]
fn load_into(ctx: &SkBuffContext, off: u32, dst: &mut [u8]) -> bool {
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
        )
    };
    ret == 0
}

/// The IP and transport headers of a UDP or TCP packet received from port 53 (the local end is
/// the packet's destination). Two direct reads for any other packet.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Parsed> {
    // Enough for the IPv4 fields used (version, header length, fragment offset, protocol) and
    // the IPv6 ones (version, next header).
    let ip: [u8; 10] = head(ctx, 0)?;
    let (family, l4, proto) = match ip[0] >> 4 {
        4 => {
            // Fragments after the first carry no transport header.
            if (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) != 0 {
                return None;
            }
            (AF_INET, u32::from(ip[0] & 0x0f) * 4, ip[9])
        }
        // Extension headers are not followed: DNS packets do not carry them.
        6 => (AF_INET6, 40, ip[6]),
        _ => return None,
    };
    if l4 < 20 || (proto != IPPROTO_UDP && proto != IPPROTO_TCP) {
        return None;
    }
    let ports: [u8; 4] = head(ctx, l4)?;
    let (sport, dport) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    if sport != DNS_PORT {
        return None;
    }
    let mut flow = Flow {
        family,
        sport: dport,
        dport: DNS_PORT,
        protocol: proto as u16,
        ..Flow::default()
    };
    let loaded = if family == AF_INET {
        load_into(ctx, 16, &mut flow.saddr[..4]) && load_into(ctx, 12, &mut flow.daddr[..4])
    } else {
        load_into(ctx, 24, &mut flow.saddr) && load_into(ctx, 8, &mut flow.daddr)
    };
    if !loaded {
        return None;
    }
    let dns_off = if proto == IPPROTO_UDP {
        l4 + 8
    } else {
        let doff: [u8; 1] = load(ctx, l4 + 12)?;
        // Data offset, then the 2-byte length that prefixes each DNS message over TCP.
        l4 + u32::from(doff[0] >> 4) * 4 + 2
    };
    Some(Parsed {
        flow,
        dns_off,
        tcp: proto == IPPROTO_TCP,
    })
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    if crate::kernel::empty() {
        return 1;
    }
    ingress(&ctx);
    1
}

/// The port of a sockaddr (network order, at the same offset in `sockaddr_in` and
/// `sockaddr_in6`, so two bytes read from a user or kernel sockaddr are enough) is DNS's.
#[inline(always)]
pub fn is_dns_port(port: [u8; 2]) -> bool {
    port == DNS_PORT.to_be_bytes()
}

/// The sockaddr (the 28 bytes the programs copy of one) is to a nameserver's port.
#[inline(always)]
pub fn to_nameserver(addr: &[u8; 28]) -> bool {
    is_dns_port([addr[2], addr[3]])
}

/// A question went out to a nameserver: a connect() to port 53 succeeded (its route was found),
/// or a datagram was sent there without connect(). Remembers the process by the nameserver's
/// address, the owner of last resort for an answer whose socket no cgroup `connect`/`sendmsg`
/// program saw, and counts a question of the thread's getaddrinfo call in progress. Any other
/// port is ignored.
#[inline(always)]
pub fn asked(id: u64, flow: &Flow) {
    if flow.dport != DNS_PORT {
        return;
    }
    if is_self() {
        return;
    }
    let netns = current_netns();
    if other_netns(netns) {
        return;
    }
    let sender = Sender {
        proc: current_proc(netns),
        pid_tgid: id,
    };
    let _ = DNS_ASKERS.insert(&flow.daddr, &sender, 0);
    if let Some(call) = GAI_CALLS.get_ptr_mut(&id) {
        unsafe {
            (*call).queries += 1;
            (*call).server = flow.daddr;
            (*call).server_family = flow.family;
        }
    }
}

/// A connect() or an unconnected send to port 53 starting (the cgroup `connect4/6` and
/// `sendmsg4/6` programs, in the caller): the socket's owner by cookie, which `dns_ingress`
/// finds the answer's process by. Only a socket's first call writes the map.
#[inline(always)]
pub fn owner(cookie: u64) {
    if unsafe { DNS_SENDERS.get(&cookie) }.is_some() || is_self() {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let netns = current_netns();
    if other_netns(netns) {
        return;
    }
    let sender = Sender {
        proc: current_proc(netns),
        pid_tgid: id,
    };
    let _ = DNS_SENDERS.insert(&cookie, &sender, 0);
}

#[inline(always)]
fn cookie(ctx: &SkBuffContext) -> u64 {
    unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) }
}

#[inline(always)]
fn ingress(ctx: &SkBuffContext) {
    let Some(p) = parse(ctx) else {
        return;
    };
    // One path on from here, whichever family, transport and header length the packet had
    // (see `opaque`: Linux 6.1's verifier walked the rest of this program once for each).
    let p = opaque(p);
    let len = ctx.len();
    if len < p.dns_off + DNS_HEADER {
        // A TCP segment without a message start (an ACK) is not a response; a short UDP one
        // from port 53 is malformed.
        if !p.tcp && len > p.dns_off {
            count(counter::DNS_MALFORMED);
        }
        return;
    }
    let Some(h) = load::<12>(ctx, p.dns_off) else {
        return;
    };
    let flags = u16::from_be_bytes([h[2], h[3]]);
    // Responses to standard queries only.
    if flags & 0x8000 == 0 || (flags >> 11) & 0xf != 0 {
        return;
    }
    let mut by_server = false;
    let sender: *const Sender = match unsafe { DNS_SENDERS.get(&cookie(ctx)) } {
        Some(s) => s,
        None => match unsafe { DNS_ASKERS.get(&p.flow.daddr) } {
            Some(s) => {
                by_server = true;
                s
            }
            None => core::ptr::null(),
        },
    };
    let mut in_resolver = false;
    let mut netns = 0;
    if !sender.is_null() {
        let id = unsafe { (*sender).pid_tgid };
        netns = unsafe { (*sender).proc.netns };
        if let Some(call) = GAI_CALLS.get_ptr_mut(&id) {
            unsafe { (*call).answers += 1 };
            in_resolver = true;
        }
    }
    let rcode = flags & 0xf;
    if rcode == 0 {
        return;
    }
    // Unknown sender: its namespace is unknown too (0), so a --netns watch leaves it out.
    if other_netns(netns) {
        return;
    }
    let qdcount = u16::from_be_bytes([h[4], h[5]]);
    if qdcount > 1 {
        malformed(p.tcp);
        return;
    }
    let Some(mut slot) = reserve_app() else {
        return;
    };
    let e: *mut AppEvent = slot.as_mut_ptr();
    // The sender's process first, so that its pointer is no longer live in the walk below: it
    // points into one of two maps or is null, three states that Linux 6.1's verifier kept apart
    // (a pointer's map is part of its state) and walked the rest of the program once for each.
    unsafe {
        if sender.is_null() {
            (*e).proc = ProcInfo::default();
        } else {
            (*e).proc = (*sender).proc;
        }
    }
    let mut aux = u64::from(u16::from_be_bytes([h[0], h[1]])) << 16;
    if p.tcp {
        aux |= dns::ANSWER_TCP;
    }
    if in_resolver {
        aux |= dns::ANSWER_IN_RESOLVER;
    }
    if flags & 0x0200 != 0 {
        aux |= dns::ANSWER_TRUNCATED;
    }
    if by_server {
        aux |= dns::ANSWER_ASKER_BY_SERVER;
    }
    let mut text_len = 0u32;
    if qdcount == 0 {
        aux |= dns::ANSWER_NO_QUESTION;
    } else {
        let q = p.dns_off + DNS_HEADER;
        let avail = len - q;
        let n = if avail > COPY_MAX { COPY_MAX } else { avail };
        // Through memory as well: one state for the walk below, not one for a full copy
        // (n exactly COPY_MAX) and another for a short one.
        let n = unsafe {
            write_volatile(&raw mut (*e).text_len, n);
            read_volatile(&raw const (*e).text_len)
        };
        let text = unsafe { &mut (*e).text };
        if n == 0 || !copy(ctx, q, text, n) {
            slot.discard(0);
            malformed(p.tcp);
            return;
        }
        // The walk's result goes through the event's own memory (volatile: not kept in
        // registers), so that the verifier meets one state here instead of one for each label
        // the walk could end at, and walks what follows once.
        let (tag, end) = match walk(text, n) {
            Walk::Whole(end) => (WALK_WHOLE, end),
            Walk::Cut(end) => (WALK_CUT, end),
            Walk::Bad => (WALK_BAD, 0),
        };
        let (tag, end) = unsafe {
            write_volatile(&raw mut (*e).code, tag);
            write_volatile(&raw mut (*e).text_len, end);
            (
                read_volatile(&raw const (*e).code),
                read_volatile(&raw const (*e).text_len),
            )
        };
        if tag == WALK_WHOLE {
            text_len = end;
            if end + 4 <= n {
                let at = (core::hint::black_box(end) & 0xff) as usize;
                let qtype = u16::from_be_bytes([text[at], text[(at + 1) & 0xff]]);
                aux |= u64::from(qtype);
            }
        } else if tag == WALK_CUT {
            text_len = end;
            aux |= dns::ANSWER_NAME_CUT;
        } else {
            slot.discard(0);
            malformed(p.tcp);
            return;
        }
    }
    unsafe {
        (*e).kind = kind::DNS_ANSWER;
        (*e).code = i32::from(rcode);
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).flow = p.flow;
        (*e).aux = aux;
        (*e).text_len = text_len;
        (*e)._pad = 0;
    }
    submit_app(slot);
}

/// A TCP segment that does not parse may be the middle of a long message: not counted.
#[inline(always)]
fn malformed(tcp: bool) {
    if !tcp {
        count(counter::DNS_MALFORMED);
    }
}

/// Copies `n` (1..=COPY_MAX) packet bytes at `off` into `dst`.
#[inline(always)]
fn copy(ctx: &SkBuffContext, off: u32, dst: &mut [u8; 256], n: u32) -> bool {
    if n == 0 || n > COPY_MAX {
        return false;
    }
    // In a form every verifier can bound: 1..=256, and `dst` has 256 bytes. (black_box keeps
    // the compiler from proving the mask useless and dropping it.)
    let size = (core::hint::black_box(n - 1) & 0xff) + 1;
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off,
            dst.as_mut_ptr().cast(),
            size,
        )
    };
    ret == 0
}

/// [`Walk`] as a number.
const WALK_WHOLE: i32 = 1;
const WALK_CUT: i32 = 2;
const WALK_BAD: i32 = 3;

enum Walk {
    /// The name ends (zero label included) after this many bytes.
    Whole(u32),
    /// Complete labels up to here; the name goes on beyond what was copied or walked.
    Cut(u32),
    /// Not a name: a compression pointer or reserved label type, or the packet ends inside it.
    Bad,
}

/// Walks the labels of the name at the start of `text` (`n` valid bytes, `n` <= COPY_MAX).
#[inline(always)]
fn walk(text: &[u8; 256], n: u32) -> Walk {
    let mut pos: u32 = 0;
    for _ in 0..MAX_LABELS {
        if pos >= n {
            // The packet ended before the name did (the copy was shorter than COPY_MAX), or
            // the name is longer than a legal one.
            return if n == COPY_MAX {
                Walk::Cut(pos)
            } else {
                Walk::Bad
            };
        }
        // The mask is what the verifier checks the read against (black_box: kept as written).
        let l = u32::from(text[(core::hint::black_box(pos) & 0xff) as usize]);
        if l == 0 {
            return Walk::Whole(pos + 1);
        }
        if l & 0xc0 != 0 {
            // The question's name comes first in the message: nothing earlier to point at.
            return Walk::Bad;
        }
        if pos + 1 + l > n {
            return if n == COPY_MAX {
                Walk::Cut(pos)
            } else {
                Walk::Bad
            };
        }
        pos += 1 + l;
    }
    Walk::Cut(pos)
}

/// getaddrinfo(node, service, hints, res): remember the call per thread.
#[uprobe]
pub fn getaddrinfo_enter(ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if is_self() {
        return 0;
    }
    let node: u64 = ctx.arg(0).unwrap_or(0);
    let res: u64 = ctx.arg(3).unwrap_or(0);
    if node == 0 {
        // A passive or numeric-service-only call: no name to resolve.
        return 0;
    }
    let call = GaiCall {
        start_ns: unsafe { bpf_ktime_get_ns() },
        node,
        res,
        queries: 0,
        answers: 0,
        server: [0; 16],
        server_family: 0,
        _pad: [0; 6],
    };
    let _ = GAI_CALLS.insert(&bpf_get_current_pid_tgid(), &call, 0);
    0
}

#[uretprobe]
pub fn getaddrinfo_exit(ctx: RetProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { GAI_CALLS.get(&id) }).copied() else {
        return 0;
    };
    let _ = GAI_CALLS.remove(&id);
    let ret: i64 = ctx.ret();
    let netns = current_netns();
    if other_netns(netns) {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let mut flow = Flow::default();
    if ret == 0 {
        first_address(call.res, &mut flow);
    } else if call.server_family != 0 {
        flow.family = call.server_family;
        flow.daddr = call.server;
        flow.dport = DNS_PORT;
    }
    // One path on from here (see `opaque`): each way out of `first_address` left the flow's
    // bytes in another state (zero, read, unread), and Linux 6.1's verifier walked the rest of
    // this program once for each: 58,121 instructions there, against 688 on 6.18. Once per
    // getaddrinfo() that returns.
    let flow = opaque(flow);
    let micros = (now - call.start_ns) / 1000;
    let aux = u64::from(call.queries.min(0xffff))
        | (u64::from(call.answers.min(0xffff)) << 16)
        | (micros.min(0xffff_ffff) << 32);
    let Some(mut slot) = reserve_app() else {
        return 0;
    };
    let e: *mut AppEvent = slot.as_mut_ptr();
    let text = unsafe { &mut (*e).text };
    let text_len = match unsafe { bpf_probe_read_user_str_bytes(call.node as *const u8, text) } {
        Ok(s) => s.len() as u32,
        Err(_) => 0,
    };
    unsafe {
        (*e).kind = kind::RESOLVER;
        (*e).code = ret as i32;
        (*e).ts_ns = now;
        (*e).proc = current_proc(netns);
        (*e).flow = flow;
        (*e).aux = aux;
        (*e).text_len = text_len;
        (*e)._pad = 0;
    }
    submit_app(slot);
    0
}

/// The first address of the result list (`*res`), as the destination of `flow`.
#[inline(always)]
fn first_address(res: u64, flow: &mut Flow) {
    if res == 0 {
        return;
    }
    let Ok(ai) = (unsafe { bpf_probe_read_user(res as *const u64) }) else {
        return;
    };
    if ai == 0 {
        return;
    }
    let Ok(family) = (unsafe { bpf_probe_read_user((ai + AI_FAMILY) as *const i32) }) else {
        return;
    };
    let Ok(addr) = (unsafe { bpf_probe_read_user((ai + AI_ADDR) as *const u64) }) else {
        return;
    };
    if addr == 0 {
        return;
    }
    // struct sockaddr_in6 is 28 bytes; a sockaddr_in is 16 (read it alone: it may end a page).
    if family == i32::from(AF_INET) {
        if let Ok(sa) = unsafe { bpf_probe_read_user(addr as *const [u8; 16]) } {
            flow.family = AF_INET;
            flow.dport = u16::from_be_bytes([sa[2], sa[3]]);
            flow.daddr[..4].copy_from_slice(&sa[4..8]);
        }
    } else if family == i32::from(AF_INET6) {
        if let Ok(sa) = unsafe { bpf_probe_read_user(addr as *const [u8; 28]) } {
            flow.family = AF_INET6;
            flow.dport = u16::from_be_bytes([sa[2], sa[3]]);
            flow.daddr.copy_from_slice(&sa[8..24]);
        }
    }
}
