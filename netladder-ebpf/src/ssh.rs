//! ssh authentication refusals (#030), seen where ssh and sshd say them: the log lines they write.
//!
//! - Client: `ssh` writes "USER@HOST: Permission denied (METHODS)." to its stderr (or its -E file)
//!   with `write`. Every line it logs ends in "\r\n"; only those ending in ").\r\n" go to userspace.
//! - Server: sshd (sshd-session, sshd-auth on OpenSSH 9.8+) logs through syslog(3) (a `sendto` on
//!   the /dev/log socket, journald's or a syslog daemon's), or with -e / -E a `write` to stderr or
//!   its file. Only lines whose message starts like one of its authentication messages go to
//!   userspace (a syslog line's "<PRI>date sshd[PID]: " header is skipped to find it).
//! - The client's key files and destination: `openat` of files outside the system directories,
//!   and `connect` on IPv4 / IPv6 sockets, by processes named ssh.
//!
//! Cost: every write(), sendto(), openat() and connect() on the host runs one of these programs.
//! The first thing each does is compare the caller's name (one helper call and two compares); no
//! other process gets further. Where fentry/fexit load, the programs sit on the kernel functions
//! behind those calls (vfs_write, __sys_sendto, do_sys_openat2, inet_stream_connect) and run
//! only when those are called; elsewhere they sit on syscall tracepoints, which send every
//! system call of every task through the kernel's tracing slow path while attached. sshd's own
//! traffic (encrypted packets written to its socket) is told apart from log lines by 8 bytes read
//! at the start of the buffer.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated as gen},
    macros::{fentry, fexit, map, tracepoint},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext, TracePointContext},
};
use netladder_common::{kind, ssh, Flow, APP_TEXT_LEN};

use crate::{
    kernel::{
        conf, current_comm, current_netns, current_proc, read_ksockaddr, read_sockaddr,
        sockaddr_flow,
    },
    maps::{reserve_app, submit_app},
    syscall::{field, ignored_caller},
};

/// openat() calls of ssh clients in flight: thread -> the path's user address.
#[map(name = "SSH_OPENS")]
static SSH_OPENS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

/// Who is calling: not ours, an ssh client, or an sshd process.
const OTHER: u8 = 0;
const CLIENT: u8 = 1;
const SERVER: u8 = 2;

/// Log lines longer than this are not sshd's (its messages are cut at 1 KiB).
const MAX_LINE: u64 = 2048;

const fn word(b: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*b)
}

/// The caller by its task name. The one check every call on the host pays.
#[inline(always)]
fn caller() -> u8 {
    let comm = current_comm();
    let w = u64::from_le_bytes([
        comm[0], comm[1], comm[2], comm[3], comm[4], comm[5], comm[6], comm[7],
    ]);
    if w & 0xffff_ffff == word(b"ssh\0\0\0\0\0") {
        CLIENT
    } else if w & 0xff_ffff_ffff == word(b"sshd\0\0\0\0")
        || w == word(b"sshd-ses")
        || w == word(b"sshd-aut")
    {
        SERVER
    } else {
        OTHER
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn ssh_write(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let who = caller();
    if who == OTHER {
        return 0;
    }
    let (Some(fd), Some(buf), Some(count)) = (
        field(&ctx, conf!(sys_enter_write_fd)),
        field(&ctx, conf!(sys_enter_write_buf)),
        field(&ctx, conf!(sys_enter_write_count)),
    ) else {
        return 0;
    };
    line(who, fd, buf, count);
    0
}

/// syslog(3) sends each line with send(), which is the sendto syscall on x86_64.
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn ssh_sendto(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != SERVER {
        return 0;
    }
    let (Some(fd), Some(buf), Some(len)) = (
        field(&ctx, conf!(sys_enter_sendto_fd)),
        field(&ctx, conf!(sys_enter_sendto_buf)),
        field(&ctx, conf!(sys_enter_sendto_len)),
    ) else {
        return 0;
    };
    line(SERVER, fd, buf, len);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn ssh_openat(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != CLIENT || ignored_caller() {
        return 0;
    }
    let Some(path) = field(&ctx, conf!(sys_enter_openat_filename)) else {
        return 0;
    };
    let _ = SSH_OPENS.insert(&bpf_get_current_pid_tgid(), &path, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn ssh_openat_exit(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != CLIENT {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let Some(path) = (unsafe { SSH_OPENS.get(&id) }).copied() else {
        return 0;
    };
    let _ = SSH_OPENS.remove(&id);
    let Some(ret) = field(&ctx, conf!(sys_exit_ret)).map(|r| r as i64) else {
        return 0;
    };
    opened(path, ret);
    0
}

/// An ssh client's openat() of the path at user address `path` returned `ret`: a record when
/// it opened a file outside the system directories.
#[inline(always)]
fn opened(path: u64, ret: i64) {
    if ret < 0 {
        return;
    }
    let Some(mut slot) = reserve_app() else {
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: `e` points at a reserved ring record of AppEvent size; every field is written
    // before it is submitted (text beyond text_len may stay unwritten).
    unsafe {
        let text = (*e).text.as_mut_ptr();
        let n = gen::bpf_probe_read_user_str(text.cast(), APP_TEXT_LEN as u32, path as *const _);
        let head = u64::from_le_bytes([
            *text,
            *text.add(1),
            *text.add(2),
            *text.add(3),
            *text.add(4),
            *text.add(5),
            *text.add(6),
            *text.add(7),
        ]);
        if n <= 1 || system_path(head) {
            slot.discard(0);
            return;
        }
        fill(e, ssh::CLIENT_OPEN, ret as u64, (n - 1) as u32);
    }
    submit_app(slot);
}

/// Paths of the system (libraries, system config, kernel files) are not key files.
#[inline(always)]
fn system_path(head: u64) -> bool {
    let five = head & 0xff_ffff_ffff;
    let four = head & 0xffff_ffff;
    five == word(b"/etc/\0\0\0")
        || five == word(b"/usr/\0\0\0")
        || five == word(b"/sys/\0\0\0")
        || five == word(b"/dev/\0\0\0")
        || four == word(b"/lib\0\0\0\0")
        || head & 0xffff_ffff_ffff == word(b"/proc/\0\0")
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn ssh_connect(ctx: TracePointContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != CLIENT || ignored_caller() {
        return 0;
    }
    let (Some(fd), Some(uaddr)) = (
        field(&ctx, conf!(sys_enter_connect_fd)),
        field(&ctx, conf!(sys_enter_connect_addr)),
    ) else {
        return 0;
    };
    if let Some(raw) = read_sockaddr(uaddr) {
        connecting(fd, &raw);
    }
    0
}

/// An ssh client connects to the address in `raw` (a struct sockaddr) on socket `fd` (0 where
/// it is not known).
#[inline(always)]
fn connecting(fd: u64, raw: &[u8; 28]) {
    let flow = sockaddr_flow(raw);
    let Some(mut slot) = reserve_app() else {
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: as in `opened`.
    unsafe {
        fill(e, ssh::CLIENT_CONNECT, fd, 0);
        (*e).flow = flow;
    }
    submit_app(slot);
}

/// A buffer written or sent by ssh (`who` CLIENT) or sshd (SERVER): to userspace when it looks
/// like one of the log lines #030 is about.
#[inline(always)]
fn line(who: u8, fd: u64, buf: u64, count: u64) {
    if !(8..=MAX_LINE).contains(&count) || ignored_caller() {
        return;
    }
    let mut msg_off = 0u64;
    if who == CLIENT {
        // "USER@HOST: Permission denied (publickey).\r\n": the line ends in ").\r\n".
        let Ok(tail) = (unsafe { bpf_probe_read_user((buf + count - 4) as *const [u8; 4]) }) else {
            return;
        };
        if tail != *b").\r\n" {
            return;
        }
    } else {
        let Ok(head) = (unsafe { bpf_probe_read_user(buf as *const u64) }) else {
            return;
        };
        let mut msg = head;
        if head as u8 == b'<' {
            // syslog: "<PRI>Mmm dd hh:mm:ss IDENT[PID]: message". The message starts after the
            // first "]: " of the first 64 bytes.
            let Ok(start) = (unsafe { bpf_probe_read_user(buf as *const [u8; 64]) }) else {
                return;
            };
            for i in 16..61usize {
                if start[i] == b']' && start[i + 1] == b':' && start[i + 2] == b' ' {
                    msg_off = i as u64 + 3;
                    break;
                }
            }
            if msg_off == 0 || msg_off + 8 > count {
                return;
            }
            let Ok(m) = (unsafe { bpf_probe_read_user((buf + msg_off) as *const u64) }) else {
                return;
            };
            msg = m;
        }
        if !server_message(msg) {
            return;
        }
    }
    let Some(mut slot) = reserve_app() else {
        return;
    };
    let e = slot.as_mut_ptr();
    let n = if count > APP_TEXT_LEN as u64 {
        APP_TEXT_LEN as u32
    } else {
        count as u32
    };
    // SAFETY: as in `opened`; `n` is at most the size of `text`.
    unsafe {
        let text = (*e).text.as_mut_ptr();
        if gen::bpf_probe_read_user(text.cast(), n & 0x1ff, buf as *const _) != 0 {
            slot.discard(0);
            return;
        }
        let code = if who == CLIENT {
            ssh::CLIENT_LINE
        } else {
            ssh::SERVER_LINE
        };
        fill(e, code, if who == CLIENT { fd } else { msg_off }, n);
    }
    submit_app(slot);
}

/// The first 8 bytes of the sshd messages about refused authentication (userspace reads the
/// rest): "Authentication refused: ...", "User X from Y not allowed because ...", "Invalid user",
/// "Failed publickey for", "Connection closed by authenticating user", "Disconnected from ...",
/// "error: maximum authentication attempts exceeded" and "Accepted publickey" (which ends a
/// connection's story without a failure).
#[inline(always)]
fn server_message(m: u64) -> bool {
    m == word(b"Authenti")
        || m & 0xff_ffff_ffff == word(b"User \0\0\0")
        || m == word(b"Invalid ")
        || m == word(b"Failed p")
        || m == word(b"Connecti")
        || m == word(b"Disconne")
        || m == word(b"error: m")
        || m == word(b"maximum ")
        || m == word(b"Accepted")
}

/// Fills every field of a reserved record but `text` (and `flow`, left unknown).
#[inline(always)]
unsafe fn fill(e: *mut netladder_common::AppEvent, code: i32, aux: u64, text_len: u32) {
    unsafe {
        (*e).kind = kind::SSH_AUTH;
        (*e).code = code;
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).proc = current_proc(current_netns());
        (*e).flow = Flow::default();
        (*e).aux = aux;
        (*e).text_len = text_len;
        (*e)._pad = 0;
    }
}

// --- The same, where fentry/fexit load (no syscall tracepoint) ---

/// `vfs_write(file, buf, count, pos)`: every write() and its relatives, the client's message and
/// sshd's -e / -E log lines among them. (Kernel-internal writes pass kernel buffers, which the
/// user-memory reads of `line` refuse.)
#[fentry(function = "vfs_write")]
pub fn ssh_vfs_write(ctx: FEntryContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    let who = caller();
    if who == OTHER {
        return 0;
    }
    let buf: u64 = ctx.arg(1);
    let count: u64 = ctx.arg(2);
    line(who, 0, buf, count);
    0
}

/// `__sys_sendto(fd, buff, len, flags, addr, addr_len)`: sshd's syslog(3) lines.
#[fentry(function = "__sys_sendto")]
pub fn ssh_sys_sendto(ctx: FEntryContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != SERVER {
        return 0;
    }
    let fd: i32 = ctx.arg(0);
    let buf: u64 = ctx.arg(1);
    let len: u64 = ctx.arg(2);
    line(SERVER, fd as u64, buf, len);
    0
}

/// `do_sys_openat2(dfd, filename, how)` returning the new fd: the files an ssh client opened.
#[fexit(function = "do_sys_openat2")]
pub fn ssh_openat2_exit(ctx: FExitContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != CLIENT || ignored_caller() {
        return 0;
    }
    let path: u64 = ctx.arg(1);
    let ret: i64 = ctx.arg(3);
    opened(path, ret);
    0
}

/// `inet_stream_connect(sock, uaddr, addr_len, flags)`: where an ssh client connects (the
/// kernel's copy of its sockaddr).
#[fentry(function = "inet_stream_connect")]
pub fn ssh_connect_entry(ctx: FEntryContext) -> u32 {
    if crate::kernel::empty() {
        return 0;
    }
    if caller() != CLIENT || ignored_caller() {
        return 0;
    }
    let uaddr: u64 = ctx.arg(1);
    if let Some(raw) = read_ksockaddr(uaddr) {
        connecting(0, &raw);
    }
    0
}
