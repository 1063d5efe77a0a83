//! The hook plan: every program netladder has, what it needs from the kernel, and what is lost
//! when the kernel refuses it. Every kernel-version difference lives here.

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// BTF-enabled raw tracepoint (tp_btf), 5.5+.
    TpBtf(&'static str),
    /// Classic tracepoint `category:name`.
    Tracepoint(&'static str, &'static str),
    /// fexit on a kernel function (needs BTF and a kernel that allows tracing programs).
    FExit(&'static str),
    /// fentry on a kernel function (same needs as fexit).
    FEntry(&'static str),
    /// uprobe (`ret`: uretprobe) on `symbol` of the shared library `lib` (a soname, found on
    /// the system library path at start: `kernel/libs.rs`), for every process that maps it.
    UProbe {
        lib: &'static str,
        symbol: &'static str,
        ret: bool,
    },
    /// cgroup_skb on the cgroup v2 root (every socket of every cgroup below it); `true` = ingress.
    CgroupSkb { ingress: bool },
    /// uprobe (`ret` false) or uretprobe on a function of the system's C library (every process
    /// that maps that file).
    LibcProbe { func: &'static str, ret: bool },
    /// cgroup sock_addr program (`connect4`, `sendmsg6`...) on the cgroup v2 root: runs at the
    /// start of those calls, in the caller.
    CgroupSockAddr(&'static str),
    /// cgroup sock program (`sock_release`...) on the cgroup v2 root.
    CgroupSock(&'static str),
}

impl Attach {
    pub fn describe(&self) -> String {
        match self {
            Attach::TpBtf(name) => format!("tp_btf/{name}"),
            Attach::Tracepoint(cat, name) => format!("tracepoint/{cat}/{name}"),
            Attach::FExit(func) => format!("fexit/{func}"),
            Attach::FEntry(func) => format!("fentry/{func}"),
            Attach::UProbe { lib, symbol, ret } => format!(
                "{}/{lib}:{symbol}",
                if *ret { "uretprobe" } else { "uprobe" }
            ),
            Attach::CgroupSkb { ingress: true } => "cgroup_skb/ingress (cgroup2 root)".into(),
            Attach::CgroupSkb { ingress: false } => "cgroup_skb/egress (cgroup2 root)".into(),
            Attach::LibcProbe { func, ret: false } => format!("uprobe/libc:{func}"),
            Attach::LibcProbe { func, ret: true } => format!("uretprobe/libc:{func}"),
            Attach::CgroupSockAddr(kind) | Attach::CgroupSock(kind) => {
                format!("cgroup/{kind} (cgroup2 root)")
            }
        }
    }
}

/// Who pays for a hook while it is attached, and how often: what `netladder hooks` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// Runs for packets (every packet freed, consumed, or crossing a cgroup's sockets).
    PerPacket,
    /// A syscall tracepoint: while one is enabled, every system call of every task takes the
    /// kernel's tracing slow path, whatever call the tracepoint is for.
    EverySyscall,
    /// Runs when one kernel function is called (fentry/fexit).
    PerCall,
    /// Runs on socket or neighbour events: state changes, resets, retransmits, updates.
    PerEvent,
    /// A uprobe: only processes that call that library function pay, each call a trap.
    PerLibraryCall,
}

impl Cost {
    /// A few words for the table.
    pub fn short(self) -> &'static str {
        match self {
            Cost::PerPacket => "per packet",
            Cost::EverySyscall => "EVERY SYSCALL",
            Cost::PerCall => "per call",
            Cost::PerEvent => "per event",
            Cost::PerLibraryCall => "per lib call",
        }
    }

    /// What it means, for the JSON form.
    pub fn explain(self) -> &'static str {
        match self {
            Cost::PerPacket => "runs for every packet its hook sees",
            Cost::EverySyscall => "while attached, every system call of every task on the host takes the kernel's tracing slow path",
            Cost::PerCall => "runs only when its kernel function (or socket call) is called",
            Cost::PerEvent => "runs on socket or neighbour events (state changes, resets, retransmits, neighbour updates)",
            Cost::PerLibraryCall => "runs only in processes that call its library function, as a trap on each call",
        }
    }
}

/// A program of the eBPF object and its place in the plan.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub attach: Attach,
    /// Core hooks must attach or netladder cannot work; the others degrade.
    pub core: bool,
    /// Optional extras: skipped with --no-optional-hooks.
    pub optional: bool,
    /// What the hook needs from the kernel, for the compatibility table.
    pub needs: &'static str,
    /// What netladder cannot see without it.
    pub without: &'static str,
    /// Programs that do this one's work better: when all of them attached (they come earlier in
    /// the plan), this one is not attached at all.
    pub replaced_by: &'static [&'static str],
    /// What userspace hands the program just before attaching it (not at start: only when the
    /// program is really going to be attached).
    pub input: Input,
}

impl Hook {
    /// Who pays while this hook is attached.
    pub fn cost(&self) -> Cost {
        match self.attach {
            Attach::Tracepoint("syscalls", _) => Cost::EverySyscall,
            Attach::Tracepoint(..) => Cost::PerEvent,
            // A router looks a route up for every packet it forwards.
            Attach::TpBtf(
                "kfree_skb" | "consume_skb" | "fib_table_lookup" | "fib6_table_lookup",
            ) => Cost::PerPacket,
            Attach::TpBtf(_) => Cost::PerEvent,
            Attach::FEntry(_) | Attach::FExit(_) => Cost::PerCall,
            Attach::UProbe { .. } | Attach::LibcProbe { .. } => Cost::PerLibraryCall,
            Attach::CgroupSkb { .. } => Cost::PerPacket,
            Attach::CgroupSockAddr(_) | Attach::CgroupSock(_) => Cost::PerCall,
        }
    }
}

/// Data a program needs that is costly to find, so it is only found for a program the loader
/// is about to attach (after every reason to skip it was checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Nothing,
    /// The text ranges of icmp_rcv / icmpv6_rcv from /proc/kallsyms, written to the `ICMP_RCV`
    /// map (`loader::Options::icmp_ranges`); where they cannot be found, the program is skipped
    /// with the reason.
    IcmpRanges,
}

pub const HOOKS: &[Hook] = &[
    Hook {
        program: "inet_sock_set_state",
        attach: Attach::TpBtf("inet_sock_set_state"),
        core: true,
        optional: false,
        needs: "tp_btf (5.5+), sock:inet_sock_set_state",
        without: "connection tracking (nothing can be classified)",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "tcp_receive_reset",
        attach: Attach::TpBtf("tcp_receive_reset"),
        core: false,
        optional: false,
        needs: "tp_btf, tcp:tcp_receive_reset (4.16+)",
        without: "telling a RST answer apart from an ICMP port-unreachable",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "tcp_retransmit_skb",
        attach: Attach::TpBtf("tcp_retransmit_skb"),
        core: false,
        optional: false,
        needs: "tp_btf, tcp:tcp_retransmit_skb",
        without: "SYN retransmit counts and the application-timeout case",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "kfree_skb",
        attach: Attach::TpBtf("kfree_skb"),
        core: false,
        optional: false,
        needs: "tp_btf, skb:kfree_skb with a drop reason (5.17+)",
        without: "local firewall drops and the no-listener signal (REJECT looks like a peer's RST)",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "tcp_v4_err_entry",
        attach: Attach::FEntry("tcp_v4_err"),
        core: false,
        optional: true,
        needs: "fentry (5.5+, refused by some kernels)",
        without: ICMP_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "tcp_v6_err_entry",
        attach: Attach::FEntry("tcp_v6_err"),
        core: false,
        optional: true,
        needs: "fentry (5.5+, refused by some kernels)",
        without: ICMP_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    // Where fentry is refused: every consumed packet passes here (an inlined array look-up and
    // two compares each). The kallsyms ranges are only read when it is about to attach.
    Hook {
        program: "consume_skb",
        attach: Attach::TpBtf("consume_skb"),
        core: false,
        optional: false,
        needs: "tp_btf, skb:consume_skb with its location (6.3+), kallsyms",
        without: ICMP_WITHOUT,
        replaced_by: &["tcp_v4_err_entry", "tcp_v6_err_entry"],
        input: Input::IcmpRanges,
    },
    // Socket calls that fail at once (#022, #026, #027, #028), where fentry/fexit load: they
    // run only when the socket layer is called. The syscall tracepoint programs below do the
    // same work where these are refused, at a cost to every system call of every task.
    Hook {
        program: "inet_stream_connect_entry",
        attach: Attach::FEntry("inet_stream_connect"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: CONNECT_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "inet_stream_connect_exit",
        attach: Attach::FExit("inet_stream_connect"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: CONNECT_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "inet_dgram_connect_exit",
        attach: Attach::FExit("inet_dgram_connect"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: CONNECT_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "inet_bind_exit",
        attach: Attach::FExit("inet_bind"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: BIND_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "inet6_bind_exit",
        attach: Attach::FExit("inet6_bind"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: BIND_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "inet_listen_exit",
        attach: Attach::FExit("inet_listen"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: LISTEN_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "udp_sendmsg_exit",
        attach: Attach::FExit("udp_sendmsg"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: SEND_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "udpv6_sendmsg_exit",
        attach: Attach::FExit("udpv6_sendmsg"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: SEND_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_enter_connect",
        attach: Attach::Tracepoint("syscalls", "sys_enter_connect"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: CONNECT_TP_WITHOUT,
        replaced_by: &["inet_stream_connect_entry", "inet_stream_connect_exit", "inet_dgram_connect_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_exit_connect",
        attach: Attach::Tracepoint("syscalls", "sys_exit_connect"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: CONNECT_TP_WITHOUT,
        replaced_by: &["inet_stream_connect_entry", "inet_stream_connect_exit", "inet_dgram_connect_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_enter_bind",
        attach: Attach::Tracepoint("syscalls", "sys_enter_bind"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: BIND_TP_WITHOUT,
        replaced_by: &["inet_bind_exit", "inet6_bind_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_exit_bind",
        attach: Attach::Tracepoint("syscalls", "sys_exit_bind"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: BIND_TP_WITHOUT,
        replaced_by: &["inet_bind_exit", "inet6_bind_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_enter_listen",
        attach: Attach::Tracepoint("syscalls", "sys_enter_listen"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: LISTEN_WITHOUT,
        replaced_by: &["inet_listen_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_exit_listen",
        attach: Attach::Tracepoint("syscalls", "sys_exit_listen"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: LISTEN_WITHOUT,
        replaced_by: &["inet_listen_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_enter_sendto",
        attach: Attach::Tracepoint("syscalls", "sys_enter_sendto"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_exit_sendto",
        attach: Attach::Tracepoint("syscalls", "sys_exit_sendto"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_enter_sendmsg",
        attach: Attach::Tracepoint("syscalls", "sys_enter_sendmsg"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "sys_exit_sendmsg",
        attach: Attach::Tracepoint("syscalls", "sys_exit_sendmsg"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        input: Input::Nothing,
    },
    // Where neither the fexit programs nor (opt-in) the syscall tracepoints above attach:
    // connect() and UDP sends that fail for want of a route, read at the route lookup
    // (netladder-ebpf/src/route.rs). Each runs only for its own call or lookup.
    route_hook("route_connect4", Attach::CgroupSockAddr("connect4")),
    route_hook("route_connect6", Attach::CgroupSockAddr("connect6")),
    route_hook("route_sendmsg4", Attach::CgroupSockAddr("sendmsg4")),
    route_hook("route_sendmsg6", Attach::CgroupSockAddr("sendmsg6")),
    route_hook("route_release", Attach::CgroupSock("sock_release")),
    route_hook("route_fib_lookup", Attach::TpBtf("fib_table_lookup")),
    route_hook("route_fib6_lookup", Attach::TpBtf("fib6_table_lookup")),
    // bind() failures where neither the fexit programs nor (opt-in) the syscall tracepoints
    // attach: a bind() that never reached the kernel's post-bind step failed
    // (netladder-ebpf/src/bind.rs). IPv4 addresses are checked at route_fib_lookup.
    bind_hook("bind_try4", Attach::CgroupSockAddr("bind4")),
    bind_hook("bind_try6", Attach::CgroupSockAddr("bind6")),
    bind_hook("bind_done4", Attach::CgroupSock("post_bind4")),
    bind_hook("bind_done6", Attach::CgroupSock("post_bind6")),
    bind_hook("bind_release", Attach::CgroupSock("sock_release")),
    Hook {
        program: "neigh_update",
        attach: Attach::TpBtf("neigh_update"),
        core: false,
        optional: false,
        needs: "tp_btf, neigh:neigh_update",
        without: "neighbour (ARP/NDP) failures where drop reasons are missing",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "neigh_timer_handler",
        attach: Attach::TpBtf("neigh_timer_handler"),
        core: false,
        optional: false,
        needs: "tp_btf, neigh:neigh_timer_handler",
        without: "neighbour (ARP/NDP) failures where drop reasons are missing",
        replaced_by: &[],
        input: Input::Nothing,
    },
    // ssh (#030): log lines of ssh and sshd, the client's key files and destination. Where
    // fentry/fexit load, at the kernel functions behind the calls; elsewhere at syscall
    // tracepoints (below), which tax every system call of every task.
    Hook {
        program: "ssh_vfs_write",
        attach: Attach::FEntry("vfs_write"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: SSH_WRITE_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_sys_sendto",
        attach: Attach::FEntry("__sys_sendto"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: SSH_SEND_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_openat2_exit",
        attach: Attach::FExit("do_sys_openat2"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: SSH_OPEN_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_connect_entry",
        attach: Attach::FEntry("inet_stream_connect"),
        core: false,
        optional: true,
        needs: FEXIT_NEEDS,
        without: SSH_CONNECT_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_write",
        attach: Attach::Tracepoint("syscalls", "sys_enter_write"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SSH_WRITE_WITHOUT,
        replaced_by: &["ssh_vfs_write"],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_sendto",
        attach: Attach::Tracepoint("syscalls", "sys_enter_sendto"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SSH_SEND_WITHOUT,
        replaced_by: &["ssh_sys_sendto"],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_openat",
        attach: Attach::Tracepoint("syscalls", "sys_enter_openat"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SSH_OPEN_WITHOUT,
        replaced_by: &["ssh_openat2_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_openat_exit",
        attach: Attach::Tracepoint("syscalls", "sys_exit_openat"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SSH_OPEN_WITHOUT,
        replaced_by: &["ssh_openat2_exit"],
        input: Input::Nothing,
    },
    Hook {
        program: "ssh_connect",
        attach: Attach::Tracepoint("syscalls", "sys_enter_connect"),
        core: false,
        optional: false,
        needs: SYSCALL_NEEDS,
        without: SSH_CONNECT_WITHOUT,
        replaced_by: &["ssh_connect_entry"],
        input: Input::Nothing,
    },
    Hook {
        program: "tcp_v4_connect_exit",
        attach: Attach::FExit("tcp_v4_connect"),
        core: false,
        optional: true,
        needs: "fexit (5.5+, refused by some kernels)",
        without: "IPv4 connects outside connect() (io_uring) that fail at once",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "tcp_v6_connect_exit",
        attach: Attach::FExit("tcp_v6_connect"),
        core: false,
        optional: true,
        needs: "fexit (5.5+, refused by some kernels)",
        without: "IPv6 connects outside connect() (io_uring) that fail at once",
        replaced_by: &[],
        input: Input::Nothing,
    },
    // #025 TLS certificate verification (netladder-ebpf/src/tls.rs): OpenSSL 3 and curl.
    Hook {
        program: "ssl_set_connect_state",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_set_connect_state",
            ret: false,
        },
        core: false,
        optional: false,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssl_set_accept_state",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_set_accept_state",
            ret: false,
        },
        core: false,
        optional: false,
        needs: TLS_NEEDS,
        without: "telling an OpenSSL server that reuses an SSL object from a client",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssl_do_handshake",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_do_handshake",
            ret: false,
        },
        core: false,
        optional: false,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssl_do_handshake_ret",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_do_handshake",
            ret: true,
        },
        core: false,
        optional: false,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssl_get_error_ret",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_get_error",
            ret: true,
        },
        core: false,
        optional: false,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "ssl_ctrl",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_ctrl",
            ret: false,
        },
        core: false,
        optional: false,
        needs: TLS_NEEDS,
        without: "the server name (SNI) an OpenSSL client asked for",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "x509_verify_cert_ret",
        attach: Attach::UProbe {
            lib: "libcrypto.so.3",
            symbol: "X509_verify_cert",
            ret: true,
        },
        core: false,
        optional: false,
        needs: "uprobes, OpenSSL 3 (libcrypto.so.3) on the system library path",
        without: TLS_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "x509_ctx_get_error_ret",
        attach: Attach::UProbe {
            lib: "libcrypto.so.3",
            symbol: "X509_STORE_CTX_get_error",
            ret: true,
        },
        core: false,
        optional: false,
        needs: "uprobes, OpenSSL 3 (libcrypto.so.3) on the system library path",
        without: TLS_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "x509_param_set1_host",
        attach: Attach::UProbe {
            lib: "libcrypto.so.3",
            symbol: "X509_VERIFY_PARAM_set1_host",
            ret: false,
        },
        core: false,
        optional: false,
        needs: "uprobes, OpenSSL 3 (libcrypto.so.3) on the system library path",
        without: "the host name an OpenSSL client asked to be checked",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "curl_easy_perform",
        attach: Attach::UProbe {
            lib: "libcurl.so.4",
            symbol: "curl_easy_perform",
            ret: false,
        },
        core: false,
        optional: false,
        needs: CURL_NEEDS,
        without: CURL_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "curl_easy_perform_ret",
        attach: Attach::UProbe {
            lib: "libcurl.so.4",
            symbol: "curl_easy_perform",
            ret: true,
        },
        core: false,
        optional: false,
        needs: CURL_NEEDS,
        without: CURL_WITHOUT,
        replaced_by: &[],
        input: Input::Nothing,
    },
    // --- DNS (#024): packets and glibc's resolver ---
    Hook {
        program: "dns_ingress",
        attach: Attach::CgroupSkb { ingress: true },
        core: false,
        optional: false,
        needs: "cgroup_skb (4.10+) and a cgroup v2 mount",
        without: "DNS error answers (NXDOMAIN, SERVFAIL, REFUSED) seen in the packets",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "dns_egress",
        attach: Attach::CgroupSkb { ingress: false },
        core: false,
        optional: false,
        needs: "cgroup_skb with bpf_get_current_pid_tgid (refused by Debian 5.10 and 6.1), a cgroup v2 mount",
        without: "the proven owner of the socket that got a failed DNS answer: the process is then the last one that connected to that nameserver, and a getaddrinfo's questions are counted by its connects",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "getaddrinfo_enter",
        attach: Attach::LibcProbe {
            func: "getaddrinfo",
            ret: false,
        },
        core: false,
        optional: false,
        needs: "uprobes, glibc's libc.so.6 (programs using another libc file are not seen)",
        without: "getaddrinfo results: lookups failing before any packet, /etc/hosts answers",
        replaced_by: &[],
        input: Input::Nothing,
    },
    Hook {
        program: "getaddrinfo_exit",
        attach: Attach::LibcProbe {
            func: "getaddrinfo",
            ret: true,
        },
        core: false,
        optional: false,
        needs: "uretprobes, glibc's libc.so.6 (programs using another libc file are not seen)",
        without: "getaddrinfo results: lookups failing before any packet, /etc/hosts answers",
        replaced_by: &[],
        input: Input::Nothing,
    },
];

const ICMP_WITHOUT: &str = "ICMP errors that answered a connection: the router or peer that sent them, and the error itself when the application read it (SO_ERROR) before closing (non-blocking clients: curl, event loops)";
const FEXIT_NEEDS: &str = "fentry/fexit (5.5+, refused by some kernels)";
const CONNECT_WITHOUT: &str = "connect() calls that fail at once (no route, no free local port)";
const SYSCALL_NEEDS: &str = "syscall tracepoints (CONFIG_FTRACE_SYSCALLS); opt-in (--syscall-hooks) where fentry/fexit are refused";
/// Why a syscall tracepoint program was not attached: `--syscall-hooks` was not given.
pub const SYSCALL_OPT_IN: &str = "opt-in (--syscall-hooks): while attached, every system call of every task takes the kernel's slow path";
const CONNECT_TP_WITHOUT: &str =
    "connect() calls that fail at once for another reason than a route (no free local port, #028)";
const SEND_TP_WITHOUT: &str =
    "UDP sends that fail at once for another reason than a route (a local firewall's EPERM)";
const ROUTE_NEEDS: &str =
    "cgroup v2, cgroup sock_addr and sock_release programs (5.9+), tp_btf fib_table_lookup and fib6_table_lookup";
const ROUTE_WITHOUT: &str =
    "connect() calls and UDP sends that fail at once for want of a route (#022, #026)";
/// One of the route-lookup programs: they need, lose and stand in for the same.
const fn route_hook(program: &'static str, attach: Attach) -> Hook {
    Hook {
        program,
        attach,
        core: false,
        optional: false,
        needs: ROUTE_NEEDS,
        without: ROUTE_WITHOUT,
        replaced_by: ROUTE_REPLACED_BY,
        input: Input::Nothing,
    }
}

/// The route-lookup programs stand in for these; where they attached, or were themselves
/// replaced by fexit programs, the route-lookup programs are not needed.
const ROUTE_REPLACED_BY: &[&str] = &[
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_enter_sendto",
    "sys_exit_sendto",
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
];
const BIND_TP_WITHOUT: &str = "bind() failures the bind programs cannot tell: to an IPv6 address other \
     than :: and ::1, to a port below 1024 by a process that is not root, of a socket already bound";
const LISTEN_WITHOUT: &str = "listen() failures (address already in use)";
const BIND_NEEDS: &str =
    "cgroup v2, cgroup bind4/6, post_bind4/6 and sock_release programs (5.9+), \
     tp_btf fib_table_lookup (IPv4 addresses)";
const BIND_WITHOUT: &str =
    "bind() failures: address already in use (#027), an address this host does not have";
/// The programs that read bind() failures together: none notes a bind() unless all attached.
pub const BIND_PROGRAMS: &[&str] = &[
    "bind_try4",
    "bind_try6",
    "bind_done4",
    "bind_done6",
    "bind_release",
];
/// One of the bind programs: they need, lose and stand in for the same.
const fn bind_hook(program: &'static str, attach: Attach) -> Hook {
    Hook {
        program,
        attach,
        core: false,
        optional: false,
        needs: BIND_NEEDS,
        without: BIND_WITHOUT,
        replaced_by: &["sys_enter_bind", "sys_exit_bind"],
        input: Input::Nothing,
    }
}
const SEND_WITHOUT: &str =
    "sendto()/sendmsg() failures of datagram sockets (unreachable network or host)";
const SSH_WRITE_WITHOUT: &str = "ssh publickey refusals (#030) from the client's message, and from sshd logging to stderr or a file (-e, -E)";
const SSH_SEND_WITHOUT: &str = "ssh publickey refusals (#030) as sshd logs them through syslog or journald, with sshd's reason";
const SSH_OPEN_WITHOUT: &str = "the key files an ssh client read, in its #030 events";
const SSH_CONNECT_WITHOUT: &str =
    "the address and port an ssh client connected to, in its #030 events";
const TLS_NEEDS: &str = "uprobes, OpenSSL 3 (libssl.so.3) on the system library path";
const TLS_WITHOUT: &str = "TLS certificate verification failures in OpenSSL 3 clients (#025)";
const CURL_NEEDS: &str = "uprobes, libcurl.so.4 on the system library path";
const CURL_WITHOUT: &str =
    "certificates curl refuses itself after OpenSSL accepted them (host name mismatch)";

/// What happened to a hook at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Attached,
    /// The kernel refused to load or attach it; the message is the kernel's/aya's error.
    Refused(String),
    /// Not tried, and why.
    Skipped(String),
    /// Not attached because the programs that replace it (`Hook::replaced_by`) are: nothing is
    /// lost.
    Replaced(String),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub hook: Hook,
    pub status: Status,
}

/// The degraded capabilities implied by a set of outcomes, one line each.
/// The attached program that does the work of `program` when `program` is not attached (it lists
/// `program` in its `replaced_by`): nothing is lost then.
pub fn covered_by<'a>(outcomes: &'a [Outcome], program: &str) -> Option<&'a str> {
    outcomes
        .iter()
        .find(|o| o.status == Status::Attached && o.hook.replaced_by.contains(&program))
        .map(|o| o.hook.program)
}

/// Whether every program that replaces `hook` attached, or was itself replaced (it has some):
/// then `hook` is not attached, and nothing is lost without it.
pub fn replacements_attached(outcomes: &[Outcome], hook: &Hook) -> bool {
    !hook.replaced_by.is_empty()
        && hook.replaced_by.iter().all(|r| {
            outcomes.iter().any(|o| {
                o.hook.program == *r && matches!(o.status, Status::Attached | Status::Replaced(_))
            })
        })
}

/// Whether `o` is a syscall tracepoint program left out because `--syscall-hooks` was not given.
pub fn opted_out(o: &Outcome) -> bool {
    matches!(&o.status, Status::Skipped(why) if why == SYSCALL_OPT_IN)
}

/// Whether the work of `o` falls to syscall tracepoint programs left out for want of
/// `--syscall-hooks` (it is in their `replaced_by`): their opt-in line says what is lost.
fn left_to_opt_in(outcomes: &[Outcome], o: &Outcome) -> bool {
    outcomes
        .iter()
        .any(|t| opted_out(t) && t.hook.replaced_by.contains(&o.hook.program))
}

/// What is lost while `o` is not attached, for the hook table.
pub fn lost(outcomes: &[Outcome], o: &Outcome) -> String {
    if opted_out(o) {
        return format!("lost: {}", o.hook.without);
    }
    if let Some(other) = covered_by(outcomes, o.hook.program) {
        return format!("nothing lost: {other} does its work");
    }
    if left_to_opt_in(outcomes, o) {
        return "its work falls to syscall tracepoints, opt-in here (--syscall-hooks)".into();
    }
    format!("lost: {}", o.hook.without)
}

pub fn degraded(outcomes: &[Outcome]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for o in outcomes.iter().filter(|o| {
        !matches!(o.status, Status::Attached | Status::Replaced(_))
            && !left_to_opt_in(outcomes, o)
            // The route-lookup programs stand in for part of a syscall tracepoint's work: what
            // they cannot see is the tracepoint's `without`.
            && (opted_out(o) || covered_by(outcomes, o.hook.program).is_none())
            && !replacements_attached(outcomes, &o.hook)
    }) {
        let line = if opted_out(o) {
            format!("{} (opt-in here: --syscall-hooks)", o.hook.without)
        } else {
            o.hook.without.to_owned()
        };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_consistent() {
        let mut names: Vec<_> = HOOKS.iter().map(|h| h.program).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), HOOKS.len(), "program names are unique");
        assert_eq!(HOOKS.iter().filter(|h| h.core).count(), 1);
        assert!(HOOKS.iter().all(|h| !(h.core && h.optional)));
    }

    #[test]
    fn degraded_lists_what_is_lost_once() {
        let out: Vec<Outcome> = HOOKS
            .iter()
            .map(|h| Outcome {
                hook: *h,
                status: if [
                    CONNECT_WITHOUT,
                    BIND_WITHOUT,
                    BIND_TP_WITHOUT,
                    LISTEN_WITHOUT,
                    SEND_WITHOUT,
                    CONNECT_TP_WITHOUT,
                    SEND_TP_WITHOUT,
                ]
                .contains(&h.without)
                {
                    Status::Refused("EPERM".into())
                } else {
                    Status::Attached
                },
            })
            .collect();
        let lost = degraded(&out);
        assert_eq!(lost.len(), 5, "one line per capability: {lost:?}");
        assert!(lost[0].contains("connect()"));
        assert!(lost[1].contains("bind() failures: address already in use"));
        assert!(lost[2].contains("listen()"));
        assert!(lost[3].contains("sendto()"));
        assert!(lost[4].contains("the bind programs cannot tell"));
    }

    /// Where fentry is refused and the syscall tracepoints are not opted in, the route-lookup
    /// programs attach; what is lost is said once per capability, with how to opt in, and the
    /// refused fexit programs add no line of their own.
    #[test]
    fn without_fentry_the_syscall_tracepoints_are_opt_in() {
        let out: Vec<Outcome> = HOOKS
            .iter()
            .map(|h| Outcome {
                hook: *h,
                status: match h.attach {
                    Attach::FEntry(_) | Attach::FExit(_) => Status::Refused("EPERM".into()),
                    _ if h.cost() == Cost::EverySyscall => Status::Skipped(SYSCALL_OPT_IN.into()),
                    _ => Status::Attached,
                },
            })
            .collect();
        assert!(HOOKS
            .iter()
            .any(|h| h.program == "route_fib_lookup" && !replacements_attached(&out, h)));
        let lost = degraded(&out);
        assert!(
            lost.iter()
                .all(|l| l.ends_with("(opt-in here: --syscall-hooks)")
                    || l.contains("io_uring")
                    || l.contains("ICMP")),
            "{lost:?}"
        );
        assert!(lost.iter().any(|l| l.contains("bind()")), "{lost:?}");
        assert!(
            !lost.iter().any(|l| l.contains("for want of a route")),
            "{lost:?}"
        );
        let mut unique = lost.clone();
        unique.dedup();
        assert_eq!(unique, lost);
    }

    #[test]
    fn a_refused_syscall_tracepoint_loses_nothing_where_its_replacements_attached() {
        let out: Vec<Outcome> = HOOKS
            .iter()
            .map(|h| Outcome {
                hook: *h,
                status: if matches!(h.attach, Attach::Tracepoint("syscalls", _))
                    && !h.replaced_by.is_empty()
                {
                    Status::Refused("ENOENT".into())
                } else {
                    Status::Attached
                },
            })
            .collect();
        assert_eq!(degraded(&out), Vec::<String>::new());
    }
}
