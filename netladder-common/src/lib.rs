//! Wire types shared by the eBPF programs and the `netladder` binary.
//!
//! Everything here is `#[repr(C)]`, fixed-size and free of logic: the kernel side fills these
//! structs, userspace reads them back byte for byte. Each record derives zerocopy's `IntoBytes`
//! and `FromBytes`, which refuse a type with padding or with invalid bit patterns: that is the
//! proof the two sides see the same bytes, and what lets userspace read them without `unsafe`.
//! With the `user` feature the types implement `aya::Pod` so they can be handed to maps and
//! globals.
#![no_std]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Length of a task's `comm` in the kernel.
pub const COMM_LEN: usize = 16;

/// Marker for an offset or drop-reason value that this kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// Declares `Config` once: the struct (every field a `u32`), [`Config::empty`] (each field
/// `ABSENT` unless it says `= value`) and [`Config::FIELDS`], the field names in order.
macro_rules! config_struct {
    (@init) => { ABSENT };
    (@init $init:expr) => { $init };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident: u32 $(= $init:expr)?, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: u32, )*
        }

        impl $name {
            /// A config where every offset is absent; userspace fills in what the kernel has.
            pub const fn empty() -> Self {
                Self { $( $field: config_struct!(@init $($init)?), )* }
            }

            /// The field names, in declaration (and memory) order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

config_struct! {
    /// Offsets and values computed in userspace from the running kernel's BTF and tracefs at
    /// start-up and handed to the programs as a read-only global (aya has no CO-RE relocations).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    pub struct Config {
        /// Our own process id: events caused by netladder itself are ignored.
        pub self_tgid: u32 = 0,
        /// Only track connections and calls of this network namespace (inode); 0 = all.
        pub only_netns: u32 = 0,
        /// Not 0: every program returns at once, doing nothing (`cargo xtask bench`'s floor:
        /// what the hooks cost before any program does its work). Never set by `watch` itself.
        pub empty_programs: u32 = 0,

        // struct sock / struct sock_common
        pub sk_daddr: u32,
        pub sk_rcv_saddr: u32,
        pub sk_dport: u32,
        pub sk_num: u32,
        /// `struct inet_sock` -> `inet_sport`: unlike skc_num it survives the move to CLOSE.
        pub sk_sport: u32,
        pub sk_family: u32,
        pub sk_protocol: u32,
        pub sk_v6_daddr: u32,
        pub sk_v6_rcv_saddr: u32,
        pub sk_net: u32,
        pub sk_err: u32,
        pub sk_err_soft: u32,
        /// `struct net` -> `ns.inum`.
        pub net_ns_inum: u32,
        /// `struct task_struct` -> `nsproxy`, `struct nsproxy` -> `net_ns` (netns of the caller).
        pub task_nsproxy: u32,
        pub nsproxy_net_ns: u32,

        // struct sk_buff
        pub skb_head: u32,
        pub skb_network_header: u32,
        pub skb_iif: u32,
        pub skb_dev: u32,
        /// `struct net_device` -> `ifindex`.
        pub dev_ifindex: u32,
        // struct neighbour, struct neigh_table
        pub neigh_state: u32,
        pub neigh_key: u32,
        pub neigh_dev: u32,
        pub neigh_tbl: u32,
        pub tbl_family: u32,
        /// `struct net_device` -> `nd_net` (possible_net_t, whose first member is the net pointer).
        pub dev_nd_net: u32,

        // enum skb_drop_reason values, ABSENT when the kernel lacks them
        pub reason_no_socket: u32,
        pub reason_netfilter_drop: u32,

        // syscall tracepoint field offsets (tracefs format files)
        pub sys_enter_connect_fd: u32,
        pub sys_enter_connect_addr: u32,
        pub sys_enter_bind_fd: u32,
        pub sys_enter_bind_addr: u32,
        pub sys_enter_listen_fd: u32,
        pub sys_enter_sendto_fd: u32,
        pub sys_enter_sendto_addr: u32,
        pub sys_enter_sendmsg_fd: u32,
        pub sys_enter_sendmsg_msg: u32,
        /// `struct user_msghdr` -> `msg_name`.
        pub msghdr_name: u32,
        /// `ret` of every sys_exit_* event (struct syscall_trace_exit).
        pub sys_exit_ret: u32,
        // ssh (#030): sys_enter_write fd/buf/count, sys_enter_sendto buff/len, sys_enter_openat
        // filename (the fd of sendto and the sockaddr of connect are above).
        pub sys_enter_write_fd: u32,
        pub sys_enter_write_buf: u32,
        pub sys_enter_write_count: u32,
        pub sys_enter_sendto_buf: u32,
        pub sys_enter_sendto_len: u32,
        pub sys_enter_openat_filename: u32,
        // #025 without a recorded connect(): the process's sockets, read through its open files.
        /// `struct task_struct` -> `files`, `struct files_struct` -> `fdt`.
        pub task_files: u32,
        pub files_fdt: u32,
        /// `struct fdtable` -> `max_fds`, `fd`.
        pub fdt_max_fds: u32,
        pub fdt_fd: u32,
        /// `struct file` -> `private_data` (the `struct socket` of a socket file).
        pub file_private_data: u32,
        /// `struct socket` -> `file` (points back to the file), `sk`, `type`.
        pub socket_file: u32,
        pub socket_sk: u32,
        pub socket_type: u32,
        /// `struct sock` -> `__sk_common.skc_state`.
        pub sk_state: u32,
        /// `struct inet_connection_sock` -> `icsk_retransmits` (u8): the retransmissions the
        /// kernel tried, whether or not the packet left (a failed one never reaches
        /// tcp:tcp_retransmit_skb).
        pub icsk_retransmits: u32,
        /// `struct msghdr` (the kernel's copy) -> `msg_name`: the destination of a datagram send,
        /// read by the fexit programs on udp_sendmsg / udpv6_sendmsg.
        pub kmsghdr_name: u32,
        /// Route lookups (tp_btf fib_table_lookup and fib6_table_lookup): the flow's
        /// destination and input interface (loopback for a packet this host sends), in
        /// `struct flowi4` / `struct flowi6`.
        pub flowi4_daddr: u32,
        pub flowi4_iif: u32,
        pub flowi6_daddr: u32,
        pub flowi6_iif: u32,
        /// `struct fib6_result`: the route found and its type (RTN_*).
        pub fib6_res_f6i: u32,
        pub fib6_res_type: u32,
        /// `struct net` -> `ipv6.fib6_null_entry`: the entry an IPv6 lookup that matched no
        /// route returns.
        pub net_fib6_null: u32,
    }
}

// Copied to the kernel as bytes: `IntoBytes` proves it has no padding, this that it is all there.
const _: () = assert!(core::mem::size_of::<Config>() == Config::FIELDS.len() * 4);

/// The text range [start, end) of one kernel function, from /proc/kallsyms: an address inside
/// it (a packet's free location, a return address on the stack) was in that function. Written
/// by the loader into a program's array map just before it attaches the program (only then:
/// reading kallsyms is a tenth of a start), so it is not part of `Config`. All 0 until then,
/// which matches nothing.
pub type TextRange = [u64; 2];

/// Address family values as the kernel uses them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A TCP/UDP flow as seen from the connecting socket: `src` is the local end.
/// Ports are in host byte order; IPv4 addresses use the first 4 bytes of the arrays.
/// Aligned to 8 bytes (every struct that holds one already placed it at a multiple of 8), so
/// the eBPF programs copy, clear and compare it in 8-byte words instead of byte loops.
#[repr(C, align(8))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Flow {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The process a failure belongs to, recorded in process context (the connect() caller),
/// never in softirq where `current` is unrelated.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ProcInfo {
    /// Thread id.
    pub tid: u32,
    /// Process id (thread group id).
    pub pid: u32,
    pub cgroup_id: u64,
    /// Inode number of the network namespace (`ip netns identify`, `/proc/PID/ns/net`).
    pub netns: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// Kinds of events on the ring buffer.
pub mod kind {
    /// A TCP connection left SYN_SENT without being established: one event per failed connection.
    pub const CONN_FAILED: u32 = 1;
    /// A socket syscall returned an error (e.g. connect() = -ENETUNREACH).
    pub const SYSCALL_FAILED: u32 = 2;
    /// A neighbour entry (ARP / NDP) went FAILED: `Flow::daddr` is its address,
    /// `Event::drop_ifindex` / `drop_netns` its device and namespace.
    pub const NEIGH_FAILED: u32 = 3;
    /// Application-layer signals travel as [`AppEvent`](super::AppEvent) records (a record's
    /// first u32 is its kind, so userspace tells the two layouts apart).
    /// A DNS response with an error RCODE (or a malformed one), parsed from the packet.
    pub const DNS_ANSWER: u32 = 16;
    /// A resolver library call (glibc getaddrinfo) and its result.
    pub const RESOLVER: u32 = 17;
    /// A TLS library's certificate verification failed in a client handshake.
    pub const TLS_VERIFY: u32 = 18;
    /// An ssh client or server reported a refused authentication, or a client read a key file
    /// or connected: see [`ssh`](super::ssh) for what `code`, `aux` and `text` hold.
    pub const SSH_AUTH: u32 = 19;

    /// Whether records of this kind are [`AppEvent`](super::AppEvent)s.
    pub const fn is_app(kind: u32) -> bool {
        kind >= DNS_ANSWER && kind < 32
    }
}

/// `AppEvent::code` values of `kind::SSH_AUTH` records (#030). Every one is recorded in the
/// writing process's context: `proc` is the ssh client or the sshd process.
pub mod ssh {
    /// An ssh client wrote a log line ending in ")." (its "USER@HOST: Permission denied
    /// (METHODS)." message): `text` is the line from its start (at most `APP_TEXT_LEN` bytes,
    /// `text_len` of them valid), `aux` the file descriptor written to (2 for stderr).
    pub const CLIENT_LINE: i32 = 1;
    /// sshd (or sshd-session / sshd-auth) wrote or sent a log line that starts like one of its
    /// authentication messages: `text` is the buffer from its start (a syslog line keeps its
    /// "<PRI>date sshd[PID]: " header), `aux` the offset of the message itself in `text`.
    pub const SERVER_LINE: i32 = 2;
    /// An ssh client opened a file outside /etc, /usr, /lib, /proc, /sys and /dev (its key
    /// files, known_hosts, its config): `text` is the path as passed to openat (may be
    /// relative), `aux` the descriptor it got.
    pub const CLIENT_OPEN: i32 = 3;
    /// An ssh client called connect() on an IPv4 / IPv6 socket: `flow.dst` is the destination,
    /// `aux` the socket's descriptor; no text.
    pub const CLIENT_CONNECT: i32 = 4;
}

/// The in-kernel verdict on a failed connection, before userspace enrichment.
pub mod verdict {
    /// Error on the socket, no better classification.
    pub const UNKNOWN: u32 = 0;
    /// The SYN was answered with a RST that was not made by the local firewall and whose SYN did
    /// not reach a local stack without a listener (a remote peer refused).
    pub const REFUSED_PEER: u32 = 1;
    /// The SYN reached a local stack (any local netns) that had no socket for it.
    pub const REFUSED_NO_LISTENER: u32 = 2;
    /// The SYN was dropped by the local firewall and a RST came back: REJECT with tcp-reset.
    pub const FIREWALL_REJECT_RST: u32 = 3;
    /// ECONNREFUSED without any RST: an ICMP port-unreachable answered the SYN (a REJECT rule).
    pub const FIREWALL_REJECT_ICMP: u32 = 4;
    /// SYNs retransmitted, then ETIMEDOUT (or the application gave up), with local netfilter drops.
    pub const TIMEOUT_LOCAL_DROP: u32 = 5;
    /// SYNs retransmitted, then ETIMEDOUT (or the application gave up), no local drop seen.
    pub const TIMEOUT_NO_REPLY: u32 = 6;
    /// EHOSTUNREACH on the socket (ICMP host unreachable or neighbour failure).
    pub const HOST_UNREACHABLE: u32 = 7;
    /// ENETUNREACH on the socket.
    pub const NET_UNREACHABLE: u32 = 8;
    /// The local firewall dropped the SYN and an ICMP error (not port-unreachable) came back.
    pub const FIREWALL_REJECT_OTHER: u32 = 9;
    /// No answer (ETIMEDOUT, or the application gave up), and a handshake packet of the flow was
    /// dropped on this host for a reason other than netfilter (reverse-path filter, no route on
    /// input, a full backlog, connection tracking...): `last_drop_reason` says which.
    pub const TIMEOUT_HOST_DROP: u32 = 10;
}

/// Bits of [`Event::flags`].
pub mod eflag {
    /// A RST was received while in SYN_SENT (tcp:tcp_receive_reset).
    pub const RST_RECEIVED: u32 = 1 << 0;
    /// The socket closed with no error after SYN retransmits: the application gave up.
    pub const APP_GAVE_UP: u32 = 1 << 1;
    /// A netfilter drop hit a packet of this flow that the local host sent (skb had no input iface).
    pub const DROP_OUTGOING: u32 = 1 << 2;
    /// A netfilter drop hit a packet of this flow after it was received on an interface.
    pub const DROP_INCOMING: u32 = 1 << 3;
    /// The socket's error was gone when it closed (the application had read it with SO_ERROR):
    /// `err` is the pending soft error (`sk_err_soft`) the kernel still held.
    pub const ERR_SOFT: u32 = 1 << 4;
    /// The socket's errors were both gone when it closed (read with SO_ERROR): `err` is the one
    /// the kernel derives from the ICMP destination-unreachable that answered the flow.
    pub const ERR_FROM_ICMP: u32 = 1 << 5;
    /// The kernel retried the SYN more often than tcp:tcp_retransmit_skb saw a retransmission
    /// leave: the retries failed on this host's way out (a local firewall drop or a send error).
    /// `syn_retrans` then counts the retries tried.
    pub const RETRIES_NOT_SENT: u32 = 1 << 6;
    /// SYSCALL_FAILED read at the kernel's route lookup (fib:fib_table_lookup or
    /// fib6:fib6_table_lookup during the call), not at the call's return: `err` is the error
    /// that lookup gives the call.
    pub const ROUTE_LOOKUP: u32 = 1 << 7;
    /// SYSCALL_FAILED read at the socket's state change: connect() put it in SYN_SENT and it
    /// went back to CLOSE with no local port (sock:inet_sock_set_state), which is how
    /// connect() fails with EADDRNOTAVAIL when no free local port is left.
    pub const NO_LOCAL_PORT: u32 = 1 << 8;
    /// SYSCALL_FAILED for a bind() that never reached the kernel's post-bind step (cgroup
    /// bind4/6 saw it start, post_bind4/6 never ran for it): `err` is the error its address
    /// gives it, EADDRNOTAVAIL when the local-table lookup during the call did not find the
    /// address, else EADDRINUSE.
    pub const BIND_INCOMPLETE: u32 = 1 << 9;
    /// SYSCALL_FAILED for a listen() read at the socket's state change: it moved from LISTEN
    /// back to CLOSE from inside the kernel's start of listening (inet_csk_listen_start),
    /// which is how listen() fails when it cannot have its port (EADDRINUSE).
    pub const LISTEN_STATE: u32 = 1 << 10;
}

/// Syscalls watched for error returns. For CONNECT the address is the destination (`Flow::daddr`);
/// for BIND and LISTEN it is the local address being bound (`Flow::saddr`, family 0 when a
/// listen() is on a socket whose bind netladder did not see).
pub mod syscall {
    pub const CONNECT: u32 = 1;
    pub const BIND: u32 = 2;
    pub const LISTEN: u32 = 3;
    pub const SENDTO: u32 = 4;
    pub const SENDMSG: u32 = 5;
    /// A datagram send seen inside the UDP stack (udp_sendmsg / udpv6_sendmsg), where the
    /// system call that carried it (sendto, sendmsg, sendmmsg, send) is not known.
    pub const SEND: u32 = 6;
}

/// One event on the ring buffer. Fixed size so both sides agree without framing.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Event {
    /// One of [`kind`].
    pub kind: u32,
    /// One of [`verdict`] (CONN_FAILED) or [`syscall`] (SYSCALL_FAILED).
    pub verdict: u32,
    /// Kernel monotonic time of the event (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// When the connection entered SYN_SENT (0 when unknown).
    pub start_ns: u64,
    /// Kernel address of the socket, used only as an identity for de-duplication.
    pub sk: u64,
    pub proc: ProcInfo,
    pub flow: Flow,
    /// sk_err at close (positive errno), or the negative syscall return for SYSCALL_FAILED.
    pub err: i32,
    /// Always 0: keeps `drop_location` on its 8-byte boundary with no implicit padding (a
    /// pending soft error is already folded into `err`, see [`eflag::ERR_SOFT`]).
    pub _reserved: u32,
    /// SYN retransmissions seen (tcp:tcp_retransmit_skb in SYN_SENT).
    pub syn_retrans: u32,
    /// [`eflag`] bits.
    pub flags: u32,
    /// Packets of this flow dropped by netfilter (NETFILTER_DROP).
    pub nf_drops: u32,
    /// Packets of this flow dropped because no socket wanted them (NO_SOCKET).
    pub nosock_drops: u32,
    /// Packets of this flow dropped for any other reason.
    pub other_drops: u32,
    /// The last drop reason seen for this flow (kernel enum value; userspace names it via BTF).
    pub last_drop_reason: u32,
    /// Kernel address where the last netfilter drop happened (symbolized in userspace).
    pub drop_location: u64,
    /// Input interface index of the last dropped packet (0 = locally generated).
    pub drop_ifindex: u32,
    /// Network namespace inode where the last drop happened.
    pub drop_netns: u32,
    /// Sender of an ICMP error that answered this flow (a router or the peer), same family as
    /// the flow; all zero when none was seen.
    pub icmp_from: [u8; 16],
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<Flow>() == 40);
const _: () = assert!(core::mem::size_of::<Event>() == 184);
const _: () = assert!(core::mem::offset_of!(Event, flow) == 72);

/// Bytes of free-form payload an [`AppEvent`] carries (a DNS name in wire format, a host name,
/// a message line).
pub const APP_TEXT_LEN: usize = 256;

/// One application-layer event on the ring buffer (kinds DNS_ANSWER and above). Each family
/// documents what `code`, `aux` and `text` hold next to its kind constant and in its eBPF file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct AppEvent {
    /// One of the application kinds in [`kind`].
    pub kind: u32,
    /// The family's result number (DNS RCODE, EAI_* value, X509_V_ERR code, ...).
    pub code: i32,
    /// Kernel monotonic time of the event (bpf_ktime_get_ns).
    pub ts_ns: u64,
    pub proc: ProcInfo,
    /// Local end (`src`) and remote end (`dst`, e.g. the nameserver or TLS peer); family 0 when
    /// unknown.
    pub flow: Flow,
    /// A second family-specific number.
    pub aux: u64,
    /// Valid bytes in `text`.
    pub text_len: u32,
    pub _pad: u32,
    pub text: [u8; APP_TEXT_LEN],
}

// Copied as bytes (`IntoBytes` proves it has no padding): the size both sides agree on.
const _: () = assert!(core::mem::size_of::<AppEvent>() == 16 + 40 + 40 + 16 + APP_TEXT_LEN);
const _: () = assert!(core::mem::offset_of!(AppEvent, flow) == 56);

impl Default for AppEvent {
    fn default() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }
}

/// What makes two failures the same for in-kernel aggregation: the process, what failed
/// (kind, verdict or syscall, errno, the evidence flags and ICMP answer), toward which
/// destination, and in which namespaces. Only the client's port is left out.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct AggKey {
    pub tgid: u32,
    pub kind: u32,
    pub verdict: u32,
    pub err: i32,
    pub flags: u32,
    pub netns: u32,
    pub drop_netns: u32,
    pub family: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The aggregation generation the kernel counted it in (`AGG_GEN`).
    pub generation: u8,
    pub _pad: [u8; 5],
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<AggKey>() == 56);

impl AggKey {
    /// The key of a failure event (CONN_FAILED or SYSCALL_FAILED). Both sides use this one
    /// definition: the kernel to count, userspace to pair the counts with the event it printed.
    #[inline(always)]
    pub fn of(e: &Event, generation: u8) -> Self {
        Self {
            tgid: e.proc.pid,
            kind: e.kind,
            verdict: e.verdict,
            err: e.err,
            flags: e.flags,
            netns: e.proc.netns,
            drop_netns: e.drop_netns,
            family: e.flow.family,
            dport: e.flow.dport,
            icmp_type: e.icmp_type,
            icmp_code: e.icmp_code,
            generation,
            _pad: [0; 5],
            daddr: e.flow.daddr,
        }
    }
}

/// In-kernel aggregation of identical failures (map `AGG`, keys of two generations): the first failure of a key in a
/// window is sent as an event, the others in the same window are only counted. `total` and
/// `emitted` only grow, so `total - emitted` is the number of failures that were counted
/// without an event; userspace reads it and reports those as repeats of the event.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct AggCount {
    /// Kernel time the current window began (its event was sent then).
    pub window_start: u64,
    /// Failures of this key (the kernel adds to `emitted` before `total`, so a reader never
    /// sees more counted-only failures than there were).
    pub total: u64,
    /// Failures of this key sent as events (lost ones included: those are counted as lost).
    pub emitted: u64,
}

/// Length of an aggregation window: identical failures within it become one event and a count.
pub const AGG_WINDOW_NS: u64 = 1_000_000_000;

/// TLS_VERIFY records (#025, netladder-ebpf/src/tls.rs): `code` is the X509_V_ERR value OpenSSL
/// stored as the verify result (0 when curl refused a certificate OpenSSL accepted), `aux` says
/// which check refused (`TLS_AUX_*`), `text` holds two NUL-terminated names of at most
/// `TLS_NAME_LEN` bytes each: the SNI the client sent (bytes 0..128) and the host name it asked
/// OpenSSL to check (bytes 128..256), empty when not set; `flow.dst` is the thread's last
/// connect() destination, or with `TLS_PEER_FROM_FILES` set in `aux` the remote end of the
/// process's only connected TCP socket (family 0 when neither is known).
pub const TLS_NAME_LEN: usize = 128;
/// OpenSSL 3's chain verification failed in a client handshake that then failed.
pub const TLS_AUX_OPENSSL: u64 = 1;
/// curl_easy_perform returned CURLE_PEER_FAILED_VERIFICATION after OpenSSL accepted the chain:
/// curl's own host name check refused it.
pub const TLS_AUX_CURL: u64 = 2;
/// The low byte of `aux` is the `TLS_AUX_*` value; this bit says where `flow` came from: no
/// connect() of the thread was recorded, and the process had exactly one connected TCP socket
/// (established, or closed by the peer only) among its first `TLS_FD_SCAN` file descriptors.
pub const TLS_PEER_FROM_FILES: u64 = 1 << 8;
/// How many file descriptors the kernel side looks through for that socket.
pub const TLS_FD_SCAN: u32 = 32;
const _: () = assert!(2 * TLS_NAME_LEN == APP_TEXT_LEN);

/// What an [`AppEvent`] of kind `DNS_ANSWER` or `RESOLVER` holds (#024).
///
/// `DNS_ANSWER`, one DNS response with an error RCODE received by a local socket (UDP or TCP,
/// source port 53), parsed by `cgroup_skb/ingress`:
/// - `code`: the RCODE (2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, ...);
/// - `aux`: bits 0..16 the question's QTYPE, 16..32 the message id, and the `ANSWER_*` flags;
/// - `text`: the question's name in wire format (length-prefixed labels, ending with the zero
///   label unless `ANSWER_NAME_CUT`), never compressed (a pointer there makes it malformed);
/// - `flow`: `src` the receiving socket's address and port, `dst` the nameserver and port 53;
/// - `proc`: the process that owns the socket (recorded by socket cookie where its connect() or
///   unconnected send to port 53 started, in the caller), or with `ANSWER_ASKER_BY_SERVER` the
///   last process that connect()ed or sent to that nameserver; all zero when unknown.
///
/// `RESOLVER`, one return of glibc's getaddrinfo (uprobe + uretprobe):
/// - `code`: its result, 0 or a (negative) EAI_* value;
/// - `aux`: bits 0..16 the times this thread asked a nameserver during the call (each connect()
///   to port 53, each datagram sent to port 53 without connect(); questions sent on a connected
///   socket are not counted one by one), 16..32 DNS responses its sockets received during the
///   call, 32..64 the call's duration in microseconds;
/// - `text`: the name asked (as the caller passed it, without its NUL);
/// - `flow`: `dst` the first address of the result on success (port as returned), else the last
///   nameserver the thread asked (port 53); family 0 when neither.
pub mod dns {
    /// The question's name was longer than the kernel copies: `text` holds its first labels.
    pub const ANSWER_NAME_CUT: u64 = 1 << 32;
    /// The response came over TCP.
    pub const ANSWER_TCP: u64 = 1 << 33;
    /// The sender was inside a getaddrinfo call when it got the answer (a `RESOLVER` event
    /// for the same thread follows).
    pub const ANSWER_IN_RESOLVER: u64 = 1 << 34;
    /// The response had no question section (some servers answer FORMERR/REFUSED that way).
    pub const ANSWER_NO_QUESTION: u64 = 1 << 35;
    /// The TC bit: the UDP answer was truncated (the resolver retries over TCP).
    pub const ANSWER_TRUNCATED: u64 = 1 << 36;
    /// The process is the last one that connect()ed or sent to this nameserver, not the
    /// socket's proven owner (no cgroup sock_addr program saw the socket).
    pub const ANSWER_ASKER_BY_SERVER: u64 = 1 << 37;
}

/// An ICMP error seen for a flow (client's view), until the connection closes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IcmpRecord {
    pub from: [u8; 16],
    pub last_ns: u64,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: [u8; 6],
}

/// Per-flow drop record kept in the kernel until the connection closes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DropRecord {
    pub nf_drops: u32,
    pub nosock_drops: u32,
    pub other_drops: u32,
    pub last_reason: u32,
    pub location: u64,
    pub ifindex: u32,
    pub netns: u32,
    pub flags: u32,
    pub _pad: u32,
    /// Kernel time of the last drop: a record older than the connection is someone else's.
    pub last_ns: u64,
}

/// Per-socket connection state kept in the kernel from SYN_SENT until close.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ConnState {
    pub proc: ProcInfo,
    pub start_ns: u64,
    pub syn_retrans: u32,
    pub flags: u32,
    /// How many times any drop record had been written when the connection started: unchanged
    /// at its close, no record can be its own, and the close skips the look-up.
    pub drop_writes: u64,
}

/// Indexes of the per-CPU counters netladder keeps in the kernel (map `COUNTERS`).
pub mod counter {
    /// An event could not be put on the ring buffer (full): it is lost and counted here.
    pub const RINGBUF_FULL: u32 = 0;
    /// A connection could not be tracked because the state map was full.
    pub const CONN_MAP_FULL: u32 = 1;
    /// A drop record could not be stored because the drop map was full.
    pub const DROP_MAP_FULL: u32 = 2;
    /// Records queued on the ring buffer. Every record a program writes is counted once, here
    /// or in RINGBUF_FULL.
    pub const EVENTS: u32 = 3;
    /// A packet could not be parsed (bad or truncated headers).
    pub const MALFORMED: u32 = 4;
    /// A DNS response that could not be parsed (bad, truncated or looping names).
    pub const DNS_MALFORMED: u32 = 5;
    pub const COUNT: u32 = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_is_absent_but_for_the_three_switches() {
        let empty = Config::empty();
        let words = <[u32]>::ref_from_bytes(empty.as_bytes()).unwrap();
        assert_eq!(words.len(), Config::FIELDS.len());
        assert_eq!(
            Config::FIELDS[..3],
            ["self_tgid", "only_netns", "empty_programs"]
        );
        assert_eq!(words[..3], [0, 0, 0]);
        assert!(words[3..].iter().all(|w| *w == ABSENT));
    }

    #[test]
    fn a_default_app_event_is_zero() {
        assert!(AppEvent::default().as_bytes().iter().all(|b| *b == 0));
    }
}

#[cfg(feature = "user")]
mod pod {
    /// The types are `IntoBytes` (no padding) and `FromBytes` (any bytes are a value), which is
    /// what `aya::Pod` asks for.
    const fn proven<T: zerocopy::IntoBytes + zerocopy::FromBytes>() {}

    macro_rules! pod {
        ($($t:ident),* $(,)?) => {$(
            const _: () = proven::<super::$t>();
            // SAFETY: `proven` above: no padding, every bit pattern valid.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }

    pod!(Config, Event, AppEvent, AggKey, AggCount, Flow, DropRecord, ConnState, IcmpRecord,);
}
