//! #025: a TLS client refused the server's certificate. uprobes on OpenSSL 3 (libssl.so.3 and
//! libcrypto.so.3, attached by path for every process) and on libcurl's curl_easy_perform.
//!
//! A client handshake is one on an SSL object put in connect state (SSL_set_connect_state, which
//! SSL_connect also calls); SSL_set_accept_state takes the mark away, so a server that verifies a
//! client certificate is never reported. While a client handshake runs on a thread
//! (SSL_do_handshake, which SSL_connect calls), the uretprobe of X509_verify_cert notes a failed
//! verification and the next X509_STORE_CTX_get_error return is the X509_V_ERR code libssl
//! stores as the verify result. A handshake that returns <= 0 after such a failure is a
//! candidate; it is reported when the application's SSL_get_error says SSL_ERROR_SSL (fatal), and
//! dropped on anything else (SSL_ERROR_WANT_READ: a client that ignores verification, curl -k,
//! goes on).
//!
//! curl checks the host name itself, after OpenSSL accepted the chain: a curl_easy_perform that
//! returns CURLE_PEER_FAILED_VERIFICATION after a client handshake that succeeded on the thread
//! is reported with code 0 and `TLS_AUX_CURL`.
//!
//! Event (`AppEvent`, kind TLS_VERIFY): `code` = X509_V_ERR value (0 for curl's own refusal),
//! `aux` = `TLS_AUX_*` (which check refused), `text` = the SNI the client sent in bytes 0..128
//! and the host name it asked OpenSSL to check (X509_VERIFY_PARAM_set1_host) in 128..256, each
//! NUL-terminated (empty when not set), `flow.dst` = the thread's last connect() destination
//! (recorded by syscall.rs while `TLS_WATCH` is set), `flow.src` unknown. When no connect() of
//! the thread was recorded, `flow` (both ends) is the process's only connected TCP socket, found
//! through its open files, and `aux` carries `TLS_PEER_FROM_FILES`: a lost record then costs no
//! peer.
use core::{
    hint::black_box,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel_buf, bpf_probe_read_user_str_bytes, generated,
    },
    macros::{map, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use netladder_common::{
    kind, Flow, ABSENT, AF_INET, AF_INET6, TLS_AUX_CURL, TLS_AUX_OPENSSL, TLS_FD_SCAN,
    TLS_NAME_LEN, TLS_PEER_FROM_FILES,
};

use crate::{
    kernel::sockaddr_flow,
    kernel::{conf, current_netns, current_proc, is_self, other_netns, read, sock_flow_read},
    maps::{reserve_app, submit_app},
};

/// Set by userspace when the OpenSSL hooks are attached: syscall.rs then records each thread's
/// last connect() destination (the peer of a later handshake on that thread).
#[unsafe(no_mangle)]
pub(crate) static TLS_WATCH: u32 = 0;

#[inline(always)]
pub fn watching() -> bool {
    unsafe { core::ptr::read_volatile(&raw const TLS_WATCH) != 0 }
}

const SSL_CTRL_SET_TLSEXT_HOSTNAME: u64 = 55;
const SSL_ERROR_SSL: i32 = 1;
const CURLE_PEER_FAILED_VERIFICATION: i32 = 60;

/// A client handshake in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handshake {
    pub ssl: u64,
    /// 0: nothing yet; 1: X509_verify_cert failed, its error not read yet; 2: error read.
    pub stage: u32,
    pub err: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsNames {
    pub sni: [u8; TLS_NAME_LEN],
    pub host: [u8; TLS_NAME_LEN],
}

/// An SSL object of a process (pointers repeat across address spaces).
#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    ssl: u64,
    tgid: u64,
}

#[inline(always)]
fn ssl_key(ssl: u64) -> SslKey {
    SslKey {
        ssl,
        tgid: bpf_get_current_pid_tgid() >> 32,
    }
}

/// SSL objects in connect state.
#[map(name = "TLS_CLIENTS")]
static TLS_CLIENTS: LruHashMap<SslKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Client handshakes running, by pid_tgid.
#[map(name = "TLS_HS")]
static TLS_HS: LruHashMap<u64, Handshake> = LruHashMap::with_max_entries(8192, 0);

/// Handshakes that failed after a failed verification, until SSL_get_error says whether fatal.
#[map(name = "TLS_CAND")]
static TLS_CAND: LruHashMap<u64, Handshake> = LruHashMap::with_max_entries(4096, 0);

/// The host name a thread asked OpenSSL to check, for its next handshake (NUL-terminated; per
/// thread: X509_VERIFY_PARAM_set1_host is not given the SSL object).
#[map(name = "TLS_HOST")]
static TLS_HOST: LruHashMap<u64, [u8; TLS_NAME_LEN]> = LruHashMap::with_max_entries(8192, 0);

/// The SNI set on each SSL object (NUL-terminated): kept per connection, so a thread that
/// prepares several before their handshakes reports each with its own.
#[map(name = "TLS_SNI")]
static TLS_SNI: LruHashMap<SslKey, [u8; TLS_NAME_LEN]> = LruHashMap::with_max_entries(16384, 0);

/// The names of the last client handshake that succeeded on a thread, inside curl_easy_perform.
#[map(name = "TLS_OK")]
static TLS_OK: LruHashMap<u64, TlsNames> = LruHashMap::with_max_entries(4096, 0);

/// Threads inside curl_easy_perform.
#[map(name = "TLS_CURL")]
static TLS_CURL: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);

/// The last connect() destination of each thread (a struct sockaddr), while TLS_WATCH is set,
/// where the fexit or syscall programs read connect() (route.rs keeps it in its ROUTE_TRY entries).
#[map(name = "TLS_PEER")]
pub static TLS_PEER: LruHashMap<u64, [u8; 28]> = LruHashMap::with_max_entries(16384, 0);

/// Where a TLS_OK entry is put together, and a zeroed name to start a TLS_SNI or TLS_HOST entry
/// from (too big for the stack).
#[map(name = "TLS_SCRATCH")]
static TLS_SCRATCH: PerCpuArray<TlsNames> = PerCpuArray::with_max_entries(1, 0);

#[uprobe]
pub fn ssl_set_connect_state(ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if let Some(ssl) = ctx.arg::<u64>(0) {
        let _ = TLS_CLIENTS.insert(&ssl_key(ssl), &1, 0);
    }
    0
}

#[uprobe]
pub fn ssl_set_accept_state(ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if let Some(ssl) = ctx.arg::<u64>(0) {
        let _ = TLS_CLIENTS.remove(&ssl_key(ssl));
    }
    0
}

#[uprobe]
pub fn ssl_do_handshake(ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let Some(ssl) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let id = bpf_get_current_pid_tgid();
    if unsafe { TLS_CLIENTS.get(&ssl_key(ssl)) }.is_none() {
        return 0;
    }
    let hs = Handshake {
        ssl,
        stage: 0,
        err: 0,
    };
    let _ = TLS_HS.insert(&id, &hs, 0);
    0
}

#[uretprobe]
pub fn ssl_do_handshake_ret(ctx: RetProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let ret: i64 = ctx.ret();
    let ret = ret as i32;
    let id = bpf_get_current_pid_tgid();
    let Some(hs) = (unsafe { TLS_HS.get(&id) }).copied() else {
        return 0;
    };
    let _ = TLS_HS.remove(&id);
    if ret == 1 {
        // Done and accepted: keep its names for curl's own host name check, if inside curl.
        if unsafe { TLS_CURL.get(&id) }.is_some() {
            if let Some(names) = TLS_SCRATCH.get_ptr_mut(0) {
                unsafe {
                    fill_names(
                        &mut (*names).sni,
                        &mut (*names).host,
                        TLS_SNI.get_ptr(&ssl_key(hs.ssl)),
                        TLS_HOST.get_ptr(&id),
                    );
                    let _ = TLS_OK.insert(&id, &*names, 0);
                }
            }
        }
        let _ = TLS_HOST.remove(&id);
        let _ = TLS_SNI.remove(&ssl_key(hs.ssl));
    } else if ret <= 0 && hs.stage == 2 && hs.err != 0 {
        let _ = TLS_CAND.insert(&id, &hs, 0);
    }
    0
}

#[uretprobe]
pub fn x509_verify_cert_ret(ctx: RetProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let ret: i64 = ctx.ret();
    let id = bpf_get_current_pid_tgid();
    if let Some(hs) = TLS_HS.get_ptr_mut(&id) {
        unsafe {
            if (ret as i32) <= 0 {
                (*hs).stage = 1;
            } else {
                (*hs).stage = 0;
                (*hs).err = 0;
            }
        }
    }
    0
}

#[uretprobe]
pub fn x509_ctx_get_error_ret(ctx: RetProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let ret: i64 = ctx.ret();
    let id = bpf_get_current_pid_tgid();
    if let Some(hs) = TLS_HS.get_ptr_mut(&id) {
        unsafe {
            if (*hs).stage == 1 {
                (*hs).err = ret as i32;
                (*hs).stage = 2;
            }
        }
    }
    0
}

#[uretprobe]
pub fn ssl_get_error_ret(ctx: RetProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let ret: i64 = ctx.ret();
    let id = bpf_get_current_pid_tgid();
    let Some(hs) = (unsafe { TLS_CAND.get(&id) }).copied() else {
        return 0;
    };
    let _ = TLS_CAND.remove(&id);
    if ret as i32 == SSL_ERROR_SSL {
        emit(id, hs.ssl, hs.err, TLS_AUX_OPENSSL);
    }
    let _ = TLS_HOST.remove(&id);
    let _ = TLS_SNI.remove(&ssl_key(hs.ssl));
    0
}

/// SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, type, name): what SSL_set_tlsext_host_name does.
#[uprobe]
pub fn ssl_ctrl(ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if ctx.arg::<u64>(1) != Some(SSL_CTRL_SET_TLSEXT_HOSTNAME) {
        return 0;
    }
    let (Some(ssl), Some(name)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(3)) else {
        return 0;
    };
    let Some(sni) = name_entry(&TLS_SNI, &ssl_key(ssl)) else {
        return 0;
    };
    unsafe {
        if name == 0 || bpf_probe_read_user_str_bytes(name as *const u8, &mut *sni).is_err() {
            (*sni)[0] = 0;
        }
    }
    0
}

/// X509_VERIFY_PARAM_set1_host(param, name, namelen): the name the chain must carry (Python's
/// check_hostname, SSL_set1_host).
#[uprobe]
pub fn x509_param_set1_host(ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let (Some(name), Some(len)) = (ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return 0;
    };
    if let Some(dst) = name_entry(&TLS_HOST, &bpf_get_current_pid_tgid()) {
        unsafe {
            let dst = &mut *dst;
            if name == 0 || bpf_probe_read_user_str_bytes(name as *const u8, dst).is_err() {
                dst[0] = 0;
            } else if len > 0 && (len as usize) < TLS_NAME_LEN {
                // A length was given: the string need not end there. (Masked as well: 5.10's
                // verifier loses the bound of the compare above.)
                let at = core::hint::black_box(len as usize) & (TLS_NAME_LEN - 1);
                dst[at] = 0;
            }
        }
    }
    0
}

#[uprobe]
pub fn curl_easy_perform(_ctx: ProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let _ = TLS_OK.remove(&id);
    let _ = TLS_CURL.insert(&id, &1, 0);
    0
}

#[uretprobe]
pub fn curl_easy_perform_ret(ctx: RetProbeContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let ret: i64 = ctx.ret();
    let id = bpf_get_current_pid_tgid();
    let _ = TLS_CURL.remove(&id);
    if ret as i32 == CURLE_PEER_FAILED_VERIFICATION && unsafe { TLS_OK.get(&id) }.is_some() {
        emit(id, 0, 0, TLS_AUX_CURL);
    }
    let _ = TLS_OK.remove(&id);
    0
}

/// The name `map` holds for `key` (TLS_SNI, TLS_HOST), created empty when missing.
#[inline(always)]
fn name_entry<K>(
    map: &LruHashMap<K, [u8; TLS_NAME_LEN]>,
    key: &K,
) -> Option<*mut [u8; TLS_NAME_LEN]> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    let scratch = TLS_SCRATCH.get_ptr_mut(0)?;
    unsafe {
        (*scratch).host[0] = 0;
        let _ = map.insert(key, &(*scratch).host, 0);
    }
    map.get_ptr_mut(key)
}

const SOCK_STREAM: i16 = 1;
const TCP_ESTABLISHED: u8 = 1;
/// The peer closed its side: a server that read the client's fatal alert often has by the time
/// the client asks SSL_get_error.
const TCP_CLOSE_WAIT: u8 = 8;
const IPPROTO_TCP: u16 = 6;

/// The peer of an event while it is put together.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scan {
    pub flow: Flow,
}

/// [`Scan`]: the peer kept in map memory, not in registers, so that it is copied in words
/// rather than carried as forty byte values through every branch the verifier walks.
#[map(name = "TLS_SCAN")]
static TLS_SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

/// Puts in `scan.flow` the flow of the calling process's only connected TCP socket (established,
/// or closed by the peer only) among its first `TLS_FD_SCAN` file descriptors
/// (`current->files->fdt->fd[i]`); false, and `scan.flow` untouched, when there is none or more
/// than one.
/// A socket file is recognised by its `struct socket` pointing back to it.
#[inline(always)]
fn sole_tcp_peer(scan: *mut Scan) -> bool {
    let task = unsafe { bpf_get_current_task() };
    let Ok(files) = read::<u64>(task, conf!(task_files)) else {
        return false;
    };
    let Ok(fdt) = read::<u64>(files, conf!(files_fdt)) else {
        return false;
    };
    let (Ok(max), Ok(fds)) = (
        read::<u32>(fdt, conf!(fdt_max_fds)),
        read::<u64>(fdt, conf!(fdt_fd)),
    ) else {
        return false;
    };
    // Without a branch inside the loop: the verifier then walks one path through it, not one
    // for every combination of what each descriptor turned out to be.
    let max = u64::from(max);
    let mut found = 0u64;
    let mut count = 0u64;
    let mut i = 0u64;
    while i < u64::from(TLS_FD_SCAN) {
        // All ones while i < max (both below 2^32), else 0: a slot beyond the table is read at
        // address 0, which fails and reads 0. (black_box: not turned into a compare either.)
        let live = opaque((i.wrapping_sub(black_box(max)) as i64 >> 63) as u64);
        let file: u64 = peek((fds + i * 8) & live, 0);
        let sk = connected_tcp(file);
        // All ones when `sk` is a connected TCP socket, else 0.
        let hit = ones_if_nonzero(sk);
        found = (found & !hit) | (sk & hit);
        // hit is -1 or 0. (Not `hit & 1`: recent verifiers split a value known to be -1 or 0
        // in two states when it is masked with a constant.)
        count = count.wrapping_sub(hit);
        i += 1;
    }
    if count != 1 || found == 0 {
        return false;
    }
    match sock_flow_read(found) {
        Ok(flow) => {
            unsafe { copy_flow(&raw mut (*scan).flow, &flow) };
            true
        }
        Err(_) => false,
    }
}

/// The `struct sock` of `file` when it is a connected TCP socket, else 0. Without a branch
/// until the end (each one would double the paths the verifier walks through every iteration of
/// the socket scan): every read is made, a failed one reads 0 (which no check accepts), and the
/// checks are combined into one number that is 0 only when all hold.
#[inline(always)]
fn connected_tcp(file: u64) -> u64 {
    let socket: u64 = peek(file, conf!(file_private_data));
    let back: u64 = peek(socket, conf!(socket_file));
    let ty: i16 = peek(socket, conf!(socket_type));
    let sk: u64 = peek(socket, conf!(socket_sk));
    let family: u16 = peek(sk, conf!(sk_family));
    let state: u8 = peek(sk, conf!(sk_state));
    let protocol: u16 = peek(sk, conf!(sk_protocol));
    // black_box: kept as arithmetic, not turned back into a chain of compares.
    let bad = black_box(back ^ file)
        | black_box((ty ^ SOCK_STREAM) as u64)
        | black_box(((family ^ AF_INET) & (family ^ AF_INET6)) as u64)
        | black_box(((state ^ TCP_ESTABLISHED) & (state ^ TCP_CLOSE_WAIT)) as u64)
        | black_box((protocol ^ IPPROTO_TCP) as u64);
    let keep = !ones_if_nonzero(bad);
    sk & keep
}

/// All ones when `x` is not 0, else 0, computed without a branch: `x | -x` has its top bit set
/// exactly when x is not 0.
#[inline(always)]
fn ones_if_nonzero(x: u64) -> u64 {
    opaque(((x | black_box(x.wrapping_neg())) as i64 >> 63) as u64)
}

/// `x`, as a number the compiler knows nothing about. Without it, the compiler sees that a
/// mask is all ones or 0 and turns `value & mask` back into a compare and a select, which in
/// eBPF is a branch: two paths for the verifier where there was one.
#[inline(always)]
fn opaque(x: u64) -> u64 {
    black_box(x)
}

/// Copies a flow in 8-byte words (a plain assignment between two maps' memory becomes a byte
/// loop, which the verifier walks byte by byte).
#[inline(always)]
unsafe fn copy_flow(dst: *mut Flow, src: *const Flow) {
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    for w in 0..core::mem::size_of::<Flow>() / 8 {
        write_volatile(dst.add(w), read_volatile(src.add(w)));
    }
}

/// A `T` at `base + off` in kernel memory, 0 when the read fails or the offset is unknown here
/// (a constant to the verifier: that test costs no path). The helper's result is not looked at:
/// it clears the destination when it fails.
#[inline(always)]
fn peek<T: Copy + Default>(base: u64, off: u32) -> T {
    let mut v = T::default();
    if off != ABSENT {
        unsafe {
            generated::bpf_probe_read_kernel(
                (&raw mut v).cast(),
                core::mem::size_of::<T>() as u32,
                (base + u64::from(off)) as *const core::ffi::c_void,
            );
        }
    }
    v
}

/// Copies the names `sni` and `host` (empty when absent) into the two halves.
#[inline(always)]
unsafe fn fill_names(
    sni_out: &mut [u8],
    host_out: &mut [u8],
    sni: Option<*const [u8; TLS_NAME_LEN]>,
    host: Option<*const [u8; TLS_NAME_LEN]>,
) {
    let sni_ok = match sni {
        Some(p) => bpf_probe_read_kernel_buf((*p).as_ptr(), &mut sni_out[..TLS_NAME_LEN]).is_ok(),
        None => false,
    };
    if !sni_ok {
        sni_out[0] = 0;
    }
    let host_ok = match host {
        Some(p) => bpf_probe_read_kernel_buf((*p).as_ptr(), &mut host_out[..TLS_NAME_LEN]).is_ok(),
        None => false,
    };
    if !host_ok {
        host_out[0] = 0;
    }
}

/// One TLS_VERIFY event for thread `id`: OpenSSL's refusal in a handshake on `ssl` (its names
/// from TLS_SNI and TLS_HOST), or with `ssl` 0 curl's own refusal (names kept in TLS_OK).
#[inline(always)]
fn emit(id: u64, ssl: u64, code: i32, aux: u64) {
    if is_self() {
        return;
    }
    let netns = current_netns();
    if other_netns(netns) {
        return;
    }
    // The peer first, before any other map value or the ring buffer slot is held: the verifier
    // walks the socket scan's loop once for every combination of what is live across it, and
    // three possibly-null pointers there made this program take a second to load (over 10 s
    // in a TCG guest), against 10 ms without them.
    let Some(scan) = TLS_SCAN.get_ptr_mut(0) else {
        return;
    };
    // Where the route-lookup programs read connect(), the peer is kept in the thread's ROUTE_TRY
    // entry (route.rs), not in TLS_PEER.
    let peer = if crate::route::reads_connect_errors() {
        crate::route::tls_peer(id)
    } else {
        TLS_PEER.get_ptr(&id)
    };
    let from_files = match peer {
        Some(p) => {
            unsafe { copy_flow(&raw mut (*scan).flow, &sockaddr_flow(&*p)) };
            false
        }
        None => {
            let found = sole_tcp_peer(scan);
            if !found {
                unsafe { copy_flow(&raw mut (*scan).flow, &Flow::default()) };
            }
            found
        }
    };
    let (sni, host) = if ssl == 0 {
        match TLS_OK.get_ptr(&id) {
            Some(n) => unsafe { (Some(&raw const (*n).sni), Some(&raw const (*n).host)) },
            None => (None, None),
        }
    } else {
        (TLS_SNI.get_ptr(&ssl_key(ssl)), TLS_HOST.get_ptr(&id))
    };
    let Some(mut slot) = reserve_app() else {
        return;
    };
    let e = slot.as_mut_ptr();
    unsafe {
        (*e).kind = kind::TLS_VERIFY;
        (*e).code = code;
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).proc = current_proc(netns);
        (*e).aux = if from_files {
            aux | TLS_PEER_FROM_FILES
        } else {
            aux
        };
        copy_flow(&raw mut (*e).flow, &raw const (*scan).flow);
        (*e).flow.protocol = 6;
        (*e)._pad = 0;
        (*e).text_len = (2 * TLS_NAME_LEN) as u32;
        let (sni_out, host_out) = (*e).text.split_at_mut(TLS_NAME_LEN);
        fill_names(sni_out, host_out, sni, host);
    }
    submit_app(slot);
}
