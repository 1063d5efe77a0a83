//! The hook plan: every program netladder has, what it needs from the kernel, and what is lost
//! when the kernel refuses it. Every kernel-version difference lives here: each row (`Hook`)
//! states its role (core, degrades, optional) and its requirements (`Require`); which hooks are
//! tried, the skip reasons, the degraded lines, the eBPF object's switches (`SWITCHES`), the
//! `netladder hooks` table and the table of docs/kernels.md all derive from the rows.

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
    /// No program of its own: work done inside the program of another row (named here, earlier
    /// in the plan), turned on by a switch map (`Switch::MapIfAttached`) once this row counts
    /// as attached, which it does where that program attached. It costs the host program a
    /// compare, not a run of its own.
    PartOf(&'static str),
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
            Attach::PartOf(host) => match hook(host) {
                Some(h) => format!("{} (in {host})", h.attach.describe()),
                None => format!("in {host}"),
            },
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
    /// fentry/fexit on a kernel function behind a system call that every task makes, network
    /// or not (write(), sendto(), openat()): every process on the host pays a trampoline and
    /// the program's first check on each such call.
    EveryTaskCall,
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
            Cost::EveryTaskCall => "EVERY TASK",
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
            Cost::EveryTaskCall => "runs on a call every task on the host makes (write(), sendto(), openat()), network or not: every process pays for it on each such call",
            Cost::PerCall => "runs only when its kernel function (or socket call) is called",
            Cost::PerEvent => "runs on socket or neighbour events (state changes, resets, retransmits, neighbour updates)",
            Cost::PerLibraryCall => "runs only in processes that call its library function, as a trap on each call",
        }
    }
}

/// What a hook is to netladder: whether start-up may go on without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Must attach: without it nothing can be classified, and start-up fails with one line.
    Core,
    /// Attached wherever the kernel allows it; where it does not, what it sees is said lost
    /// (the degraded lines) and netladder goes on.
    Degrades,
    /// Like `Degrades`, and also left out when the operator asks (`--no-optional-hooks`).
    Optional,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Core => "core",
            Role::Degrades => "degrades",
            Role::Optional => "optional",
        }
    }
}

/// Something a hook needs from the kernel or the system before it is worth trying. A row lists
/// those its attach point does not already say (`Hook::requires`); `Hook::requirements` adds
/// the ones its attach point implies (a kernel function, a library, a cgroup v2 mount).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Require {
    /// The BTF tracepoint `tracepoint` has at least `args` arguments (the last one came with a
    /// later kernel); `missing` is the reason given where it has fewer.
    TracepointArgs {
        tracepoint: &'static str,
        args: usize,
        missing: &'static str,
    },
    /// The kernel's drop reasons, resolved by name from BTF (5.17+).
    DropReasons,
    /// The text ranges of kernel functions from /proc/kallsyms, written to the program's array
    /// map `map` just before it attaches (entry i: the range of `symbols[i]`). Costly (a tenth
    /// of a start, once), so it is checked last, only for a program that is about to attach.
    TextRanges {
        map: &'static str,
        symbols: &'static [&'static str],
    },
    /// The kernel function an fentry/fexit program attaches to (in the kernel's BTF).
    Function(&'static str),
    /// A shared library on the system library path (`kernel/libs.rs`).
    Library(&'static str),
    /// The system's glibc file.
    Libc,
    /// A cgroup v2 mount (the programs attach to its root).
    Cgroup2,
}

/// consume_skb's: where the packets it sees were consumed.
pub const ICMP_RANGES: Require = Require::TextRanges {
    map: "ICMP_RCV",
    symbols: &["icmp_rcv", "icmpv6_rcv"],
};
/// listen_state's: whether the state change was made inside listen()'s start.
pub const LISTEN_RANGE: Require = Require::TextRanges {
    map: "LISTEN_START",
    symbols: &["inet_csk_listen_start"],
};
const NO_DROP_REASONS: &str = "this kernel has no drop reasons (5.17+)";

impl Require {
    /// A few words for the tables.
    pub fn describe(&self) -> String {
        match self {
            Require::TracepointArgs {
                tracepoint, args, ..
            } => format!("tracepoint {tracepoint} with {args} arguments"),
            Require::DropReasons => "drop reasons".into(),
            Require::TextRanges { symbols, .. } => format!("kallsyms ({})", symbols.join(", ")),
            Require::Function(f) => format!("function {f}"),
            Require::Library(lib) => format!("library {lib}"),
            Require::Libc => "glibc".into(),
            Require::Cgroup2 => "cgroup2".into(),
        }
    }

    /// Why a hook was not tried when the answer is a plain no (the system's own reason, where
    /// there is one, comes from `Kernel::check` instead).
    pub fn missing(&self) -> String {
        match self {
            Require::TracepointArgs { missing, .. } => (*missing).to_owned(),
            Require::DropReasons => NO_DROP_REASONS.to_owned(),
            Require::TextRanges { symbols, .. } => {
                format!("{} not in /proc/kallsyms", symbols.join("/"))
            }
            Require::Function(f) => format!("this kernel has no function {f}"),
            Require::Library(lib) => format!("not found: no {lib} on the system library path"),
            Require::Libc => "no glibc libc.so.6 found".to_owned(),
            Require::Cgroup2 => "no cgroup v2 mount".to_owned(),
        }
    }

    /// Costly to check: only once every other reason to skip the hook was checked.
    fn costly(&self) -> bool {
        matches!(self, Require::TextRanges { .. })
    }
}

/// Answers for the requirements, from the running kernel and system (`loader`), or made up in
/// the tests.
pub trait Kernel {
    /// `Ok` when the kernel or system has `req`, else why not, in one line.
    fn check(&self, req: &Require) -> Result<(), String>;
}

/// A program of the eBPF object and its place in the plan.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub attach: Attach,
    /// Whether netladder can go on without it, and whether the operator may leave it out.
    pub role: Role,
    /// What the hook needs from the kernel, in words, for the compatibility table.
    pub needs: &'static str,
    /// What netladder cannot see without it.
    pub without: &'static str,
    /// Programs that do this one's work better: when all of them attached (they come earlier in
    /// the plan), this one is not attached at all.
    pub replaced_by: &'static [&'static str],
    /// What it needs that its attach point does not say (see `requirements`).
    pub requires: &'static [Require],
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
            // The ssh rung's functions: every write(), sendto() and open of every task.
            Attach::FEntry("vfs_write" | "__sys_sendto") | Attach::FExit("do_sys_openat2") => {
                Cost::EveryTaskCall
            }
            Attach::FEntry(_) | Attach::FExit(_) => Cost::PerCall,
            Attach::UProbe { .. } | Attach::LibcProbe { .. } => Cost::PerLibraryCall,
            Attach::CgroupSkb { .. } => Cost::PerPacket,
            Attach::CgroupSockAddr(_) | Attach::CgroupSock(_) => Cost::PerCall,
            // Runs where its host runs.
            Attach::PartOf(host) => hook(host).map_or(Cost::PerEvent, Hook::cost),
        }
    }

    /// Every requirement, in the order start-up checks them: the row's own, then those its
    /// attach point implies, the costly ones last.
    pub fn requirements(&self) -> Vec<Require> {
        let implied = match self.attach {
            Attach::FEntry(f) | Attach::FExit(f) => Some(Require::Function(f)),
            Attach::UProbe { lib, .. } => Some(Require::Library(lib)),
            Attach::LibcProbe { .. } => Some(Require::Libc),
            Attach::CgroupSkb { .. } | Attach::CgroupSockAddr(_) | Attach::CgroupSock(_) => {
                Some(Require::Cgroup2)
            }
            Attach::TpBtf(_) | Attach::Tracepoint(..) | Attach::PartOf(_) => None,
        };
        let mut all: Vec<Require> = self.requires.iter().copied().chain(implied).collect();
        all.sort_by_key(Require::costly);
        all
    }

    /// Opt-in only (`--syscall-hooks`): a syscall tracepoint taxes every system call of every
    /// task while attached, and a fentry/fexit program on write(), sendto() or open taxes those
    /// calls of every task.
    pub fn opt_in(&self) -> bool {
        matches!(self.cost(), Cost::EverySyscall | Cost::EveryTaskCall)
    }
}

pub const HOOKS: &[Hook] = &[
    Hook {
        program: "inet_sock_set_state",
        attach: Attach::TpBtf("inet_sock_set_state"),
        role: Role::Core,
        needs: "tp_btf (5.5+), sock:inet_sock_set_state",
        without: "connection tracking (nothing can be classified)",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "tcp_receive_reset",
        attach: Attach::TpBtf("tcp_receive_reset"),
        role: Role::Degrades,
        needs: "tp_btf, tcp:tcp_receive_reset (4.16+)",
        without: "telling a RST answer apart from an ICMP port-unreachable",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "tcp_retransmit_skb",
        attach: Attach::TpBtf("tcp_retransmit_skb"),
        role: Role::Degrades,
        needs: "tp_btf, tcp:tcp_retransmit_skb",
        without: "SYN retransmit counts and the application-timeout case",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "kfree_skb",
        attach: Attach::TpBtf("kfree_skb"),
        role: Role::Degrades,
        needs: "tp_btf, skb:kfree_skb with a drop reason (5.17+)",
        without: "local firewall drops and the no-listener signal (REJECT looks like a peer's RST)",
        replaced_by: &[],
        requires: &[
            Require::TracepointArgs {
                tracepoint: "kfree_skb",
                args: 3,
                missing: NO_DROP_REASONS,
            },
            Require::DropReasons,
        ],
    },
    Hook {
        program: "tcp_v4_err_entry",
        attach: Attach::FEntry("tcp_v4_err"),
        role: Role::Optional,
        needs: "fentry (5.5+, refused by some kernels)",
        without: ICMP_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "tcp_v6_err_entry",
        attach: Attach::FEntry("tcp_v6_err"),
        role: Role::Optional,
        needs: "fentry (5.5+, refused by some kernels)",
        without: ICMP_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    // Where fentry is refused: every consumed packet passes here (an inlined array look-up and
    // two compares each). The kallsyms ranges are only read when it is about to attach.
    Hook {
        program: "consume_skb",
        attach: Attach::TpBtf("consume_skb"),
        role: Role::Degrades,
        needs: "tp_btf, skb:consume_skb with its location (6.3+), kallsyms",
        without: ICMP_WITHOUT,
        replaced_by: &["tcp_v4_err_entry", "tcp_v6_err_entry"],
        requires: &[
            Require::TracepointArgs {
                tracepoint: "consume_skb",
                args: 2,
                missing: "consume_skb has no location argument on this kernel (6.3+)",
            },
            ICMP_RANGES,
        ],
    },
    // Socket calls that fail at once (#022, #026, #027, #028), where fentry/fexit load: they
    // run only when the socket layer is called. The syscall tracepoint programs below do the
    // same work where these are refused, at a cost to every system call of every task.
    Hook {
        program: "inet_stream_connect_entry",
        attach: Attach::FEntry("inet_stream_connect"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: CONNECT_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "inet_stream_connect_exit",
        attach: Attach::FExit("inet_stream_connect"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: CONNECT_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "inet_dgram_connect_exit",
        attach: Attach::FExit("inet_dgram_connect"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: CONNECT_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "inet_bind_exit",
        attach: Attach::FExit("inet_bind"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: BIND_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "inet6_bind_exit",
        attach: Attach::FExit("inet6_bind"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: BIND_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "inet_listen_exit",
        attach: Attach::FExit("inet_listen"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: LISTEN_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "udp_sendmsg_exit",
        attach: Attach::FExit("udp_sendmsg"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: SEND_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "udpv6_sendmsg_exit",
        attach: Attach::FExit("udpv6_sendmsg"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: SEND_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "sys_enter_connect",
        attach: Attach::Tracepoint("syscalls", "sys_enter_connect"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: CONNECT_TP_WITHOUT,
        replaced_by: &[
            "inet_stream_connect_entry",
            "inet_stream_connect_exit",
            "inet_dgram_connect_exit",
        ],
        requires: &[],
    },
    Hook {
        program: "sys_exit_connect",
        attach: Attach::Tracepoint("syscalls", "sys_exit_connect"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: CONNECT_TP_WITHOUT,
        replaced_by: &[
            "inet_stream_connect_entry",
            "inet_stream_connect_exit",
            "inet_dgram_connect_exit",
        ],
        requires: &[],
    },
    Hook {
        program: "sys_enter_bind",
        attach: Attach::Tracepoint("syscalls", "sys_enter_bind"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: BIND_TP_WITHOUT,
        replaced_by: &["inet_bind_exit", "inet6_bind_exit"],
        requires: &[],
    },
    Hook {
        program: "sys_exit_bind",
        attach: Attach::Tracepoint("syscalls", "sys_exit_bind"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: BIND_TP_WITHOUT,
        replaced_by: &["inet_bind_exit", "inet6_bind_exit"],
        requires: &[],
    },
    // Where fexit is refused, listen() failing is read at the socket's move from LISTEN back
    // to CLOSE, by the state-change program (switched on only there: LISTEN_MODE).
    Hook {
        program: "listen_state",
        attach: Attach::PartOf("inet_sock_set_state"),
        role: Role::Degrades,
        needs: "the state-change program, kallsyms (inet_csk_listen_start)",
        without: LISTEN_WITHOUT,
        replaced_by: &["inet_listen_exit"],
        requires: &[LISTEN_RANGE],
    },
    Hook {
        program: "sys_enter_listen",
        attach: Attach::Tracepoint("syscalls", "sys_enter_listen"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: LISTEN_WITHOUT,
        replaced_by: &["listen_state"],
        requires: &[],
    },
    Hook {
        program: "sys_exit_listen",
        attach: Attach::Tracepoint("syscalls", "sys_exit_listen"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: LISTEN_WITHOUT,
        replaced_by: &["listen_state"],
        requires: &[],
    },
    Hook {
        program: "sys_enter_sendto",
        attach: Attach::Tracepoint("syscalls", "sys_enter_sendto"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        requires: &[],
    },
    Hook {
        program: "sys_exit_sendto",
        attach: Attach::Tracepoint("syscalls", "sys_exit_sendto"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        requires: &[],
    },
    Hook {
        program: "sys_enter_sendmsg",
        attach: Attach::Tracepoint("syscalls", "sys_enter_sendmsg"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        requires: &[],
    },
    Hook {
        program: "sys_exit_sendmsg",
        attach: Attach::Tracepoint("syscalls", "sys_exit_sendmsg"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SEND_TP_WITHOUT,
        replaced_by: &["udp_sendmsg_exit", "udpv6_sendmsg_exit"],
        requires: &[],
    },
    // Where neither the fexit programs nor (opt-in) the syscall tracepoints above attach:
    // connect() and UDP sends that fail for want of a route, read at the route lookup
    // (netladder-ebpf/src/route.rs). Each runs only for its own call or lookup.
    // One program ends the route and bind programs' attempts at a socket's release (every
    // socket the host closes runs it once); their rows below are parts of it.
    Hook {
        program: "sock_release",
        attach: Attach::CgroupSock("sock_release"),
        role: Role::Degrades,
        needs: "cgroup v2, cgroup sock_release programs (5.9+)",
        without: "the end of a failed connect(), UDP send or bind() when its socket is closed \
                  (what the route and bind programs lose without it is in their rows)",
        replaced_by: RELEASE_REPLACED_BY,
        requires: &[],
    },
    // The cgroup connect/sendmsg programs run once per connect() and unconnected UDP send, on
    // every kernel: they record who owns a socket that asks a nameserver (#024), and host the
    // route-lookup programs' start of an attempt (the parts below).
    sock_addr_hook("sock_connect4", Attach::CgroupSockAddr("connect4")),
    sock_addr_hook("sock_connect6", Attach::CgroupSockAddr("connect6")),
    sock_addr_hook("sock_sendmsg4", Attach::CgroupSockAddr("sendmsg4")),
    sock_addr_hook("sock_sendmsg6", Attach::CgroupSockAddr("sendmsg6")),
    route_hook("route_connect4", Attach::PartOf("sock_connect4")),
    route_hook("route_connect6", Attach::PartOf("sock_connect6")),
    route_hook("route_sendmsg4", Attach::PartOf("sock_sendmsg4")),
    route_hook("route_sendmsg6", Attach::PartOf("sock_sendmsg6")),
    route_hook("route_release", Attach::PartOf("sock_release")),
    route_hook("route_fib_lookup", Attach::TpBtf("fib_table_lookup")),
    route_hook("route_fib6_lookup", Attach::TpBtf("fib6_table_lookup")),
    // bind() failures where neither the fexit programs nor (opt-in) the syscall tracepoints
    // attach: a bind() that never reached the kernel's post-bind step failed
    // (netladder-ebpf/src/bind.rs). IPv4 addresses are checked at route_fib_lookup.
    bind_hook("bind_try4", Attach::CgroupSockAddr("bind4")),
    bind_hook("bind_try6", Attach::CgroupSockAddr("bind6")),
    bind_hook("bind_done4", Attach::CgroupSock("post_bind4")),
    bind_hook("bind_done6", Attach::CgroupSock("post_bind6")),
    bind_hook("bind_release", Attach::PartOf("sock_release")),
    Hook {
        program: "neigh_update",
        attach: Attach::TpBtf("neigh_update"),
        role: Role::Degrades,
        needs: "tp_btf, neigh:neigh_update",
        without: "neighbour (ARP/NDP) failures where drop reasons are missing",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "neigh_timer_handler",
        attach: Attach::TpBtf("neigh_timer_handler"),
        role: Role::Degrades,
        needs: "tp_btf, neigh:neigh_timer_handler",
        without: "neighbour (ARP/NDP) failures where drop reasons are missing",
        replaced_by: &[],
        requires: &[],
    },
    // ssh (#030): log lines of ssh and sshd, the client's key files and destination. Where
    // fentry/fexit load, at the kernel functions behind the calls; elsewhere at syscall
    // tracepoints (below), which tax every system call of every task. The log lines and key
    // files come from write(), sendto() and open, which every task makes: those programs are
    // opt-in (--syscall-hooks) on every kernel (a VM measurement: fentry on vfs_write alone
    // took 0.80 of a one-byte read/write loop's speed, docs/benchmarks.md).
    Hook {
        program: "ssh_vfs_write",
        attach: Attach::FEntry("vfs_write"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: SSH_WRITE_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssh_sys_sendto",
        attach: Attach::FEntry("__sys_sendto"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: SSH_SEND_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssh_openat2_exit",
        attach: Attach::FExit("do_sys_openat2"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: SSH_OPEN_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssh_connect_entry",
        attach: Attach::FEntry("inet_stream_connect"),
        role: Role::Optional,
        needs: FEXIT_NEEDS,
        without: SSH_CONNECT_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssh_write",
        attach: Attach::Tracepoint("syscalls", "sys_enter_write"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SSH_WRITE_WITHOUT,
        replaced_by: &["ssh_vfs_write"],
        requires: &[],
    },
    Hook {
        program: "ssh_sendto",
        attach: Attach::Tracepoint("syscalls", "sys_enter_sendto"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SSH_SEND_WITHOUT,
        replaced_by: &["ssh_sys_sendto"],
        requires: &[],
    },
    Hook {
        program: "ssh_openat",
        attach: Attach::Tracepoint("syscalls", "sys_enter_openat"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SSH_OPEN_WITHOUT,
        replaced_by: &["ssh_openat2_exit"],
        requires: &[],
    },
    Hook {
        program: "ssh_openat_exit",
        attach: Attach::Tracepoint("syscalls", "sys_exit_openat"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SSH_OPEN_WITHOUT,
        replaced_by: &["ssh_openat2_exit"],
        requires: &[],
    },
    Hook {
        program: "ssh_connect",
        attach: Attach::Tracepoint("syscalls", "sys_enter_connect"),
        role: Role::Degrades,
        needs: SYSCALL_NEEDS,
        without: SSH_CONNECT_WITHOUT,
        replaced_by: &["ssh_connect_entry"],
        requires: &[],
    },
    Hook {
        program: "tcp_v4_connect_exit",
        attach: Attach::FExit("tcp_v4_connect"),
        role: Role::Optional,
        needs: "fexit (5.5+, refused by some kernels)",
        without: "IPv4 connects outside connect() (io_uring) that fail at once",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "tcp_v6_connect_exit",
        attach: Attach::FExit("tcp_v6_connect"),
        role: Role::Optional,
        needs: "fexit (5.5+, refused by some kernels)",
        without: "IPv6 connects outside connect() (io_uring) that fail at once",
        replaced_by: &[],
        requires: &[],
    },
    // #025 TLS certificate verification (netladder-ebpf/src/tls.rs): OpenSSL 3 and curl.
    Hook {
        program: "ssl_set_connect_state",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_set_connect_state",
            ret: false,
        },
        role: Role::Degrades,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssl_set_accept_state",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_set_accept_state",
            ret: false,
        },
        role: Role::Degrades,
        needs: TLS_NEEDS,
        without: "telling an OpenSSL server that reuses an SSL object from a client",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssl_do_handshake",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_do_handshake",
            ret: false,
        },
        role: Role::Degrades,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssl_do_handshake_ret",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_do_handshake",
            ret: true,
        },
        role: Role::Degrades,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssl_get_error_ret",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_get_error",
            ret: true,
        },
        role: Role::Degrades,
        needs: TLS_NEEDS,
        without: TLS_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "ssl_ctrl",
        attach: Attach::UProbe {
            lib: "libssl.so.3",
            symbol: "SSL_ctrl",
            ret: false,
        },
        role: Role::Degrades,
        needs: TLS_NEEDS,
        without: "the server name (SNI) an OpenSSL client asked for",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "x509_verify_cert_ret",
        attach: Attach::UProbe {
            lib: "libcrypto.so.3",
            symbol: "X509_verify_cert",
            ret: true,
        },
        role: Role::Degrades,
        needs: "uprobes, OpenSSL 3 (libcrypto.so.3) on the system library path",
        without: TLS_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "x509_ctx_get_error_ret",
        attach: Attach::UProbe {
            lib: "libcrypto.so.3",
            symbol: "X509_STORE_CTX_get_error",
            ret: true,
        },
        role: Role::Degrades,
        needs: "uprobes, OpenSSL 3 (libcrypto.so.3) on the system library path",
        without: TLS_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "x509_param_set1_host",
        attach: Attach::UProbe {
            lib: "libcrypto.so.3",
            symbol: "X509_VERIFY_PARAM_set1_host",
            ret: false,
        },
        role: Role::Degrades,
        needs: "uprobes, OpenSSL 3 (libcrypto.so.3) on the system library path",
        without: "the host name an OpenSSL client asked to be checked",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "curl_easy_perform",
        attach: Attach::UProbe {
            lib: "libcurl.so.4",
            symbol: "curl_easy_perform",
            ret: false,
        },
        role: Role::Degrades,
        needs: CURL_NEEDS,
        without: CURL_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "curl_easy_perform_ret",
        attach: Attach::UProbe {
            lib: "libcurl.so.4",
            symbol: "curl_easy_perform",
            ret: true,
        },
        role: Role::Degrades,
        needs: CURL_NEEDS,
        without: CURL_WITHOUT,
        replaced_by: &[],
        requires: &[],
    },
    // --- DNS (#024): packets and glibc's resolver ---
    Hook {
        program: "dns_ingress",
        attach: Attach::CgroupSkb { ingress: true },
        role: Role::Degrades,
        needs: "cgroup_skb (4.10+) and a cgroup v2 mount",
        without: "DNS error answers (NXDOMAIN, SERVFAIL, REFUSED) seen in the packets",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "getaddrinfo_enter",
        attach: Attach::LibcProbe {
            func: "getaddrinfo",
            ret: false,
        },
        role: Role::Degrades,
        needs: "uprobes, glibc's libc.so.6 (programs using another libc file are not seen)",
        without: "getaddrinfo results: lookups failing before any packet, /etc/hosts answers",
        replaced_by: &[],
        requires: &[],
    },
    Hook {
        program: "getaddrinfo_exit",
        attach: Attach::LibcProbe {
            func: "getaddrinfo",
            ret: true,
        },
        role: Role::Degrades,
        needs: "uretprobes, glibc's libc.so.6 (programs using another libc file are not seen)",
        without: "getaddrinfo results: lookups failing before any packet, /etc/hosts answers",
        replaced_by: &[],
        requires: &[],
    },
];

const ICMP_WITHOUT: &str = "ICMP errors that answered a connection: the router or peer that sent them, and the error itself when the application read it (SO_ERROR) before closing (non-blocking clients: curl, event loops)";
const FEXIT_NEEDS: &str = "fentry/fexit (5.5+, refused by some kernels)";
const CONNECT_WITHOUT: &str = "connect() calls that fail at once (no route, no free local port)";
const SYSCALL_NEEDS: &str = "syscall tracepoints (CONFIG_FTRACE_SYSCALLS); opt-in (--syscall-hooks) where fentry/fexit are refused";
/// Why a syscall tracepoint program was not attached: `--syscall-hooks` was not given.
pub const SYSCALL_OPT_IN: &str = "opt-in (--syscall-hooks): every task on the host would pay for it on its system calls, network or not";
const CONNECT_TP_WITHOUT: &str =
    "connect() calls that fail at once for another reason than a route (no free local port, #028)";
const SEND_TP_WITHOUT: &str =
    "UDP sends that fail at once for another reason than a route (a local firewall's EPERM)";
const ROUTE_NEEDS: &str =
    "cgroup v2, cgroup sock_addr and sock_release programs (5.9+), tp_btf fib_table_lookup and fib6_table_lookup";
const ROUTE_WITHOUT: &str =
    "connect() calls and UDP sends that fail at once for want of a route (#022, #026)";
/// One of the cgroup connect/sendmsg programs.
const fn sock_addr_hook(program: &'static str, attach: Attach) -> Hook {
    Hook {
        program,
        attach,
        role: Role::Degrades,
        needs: "cgroup v2, cgroup sock_addr programs (4.17+; sendmsg 4.18+)",
        without: "the proven owner of a socket that gets a DNS error answer (#024: the last process \
                  that connected or sent to that nameserver stands in), and where fentry is refused \
                  the route-lookup programs' connect() and UDP send failures",
        replaced_by: &[],
        requires: &[],
    }
}
/// One of the route-lookup programs: they need, lose and stand in for the same.
const fn route_hook(program: &'static str, attach: Attach) -> Hook {
    Hook {
        program,
        attach,
        role: Role::Degrades,
        needs: ROUTE_NEEDS,
        without: ROUTE_WITHOUT,
        replaced_by: ROUTE_REPLACED_BY,
        requires: &[],
    }
}

/// The syscall tracepoints the route-lookup programs (the first six) and the bind programs (the
/// last two) stand in for. `sock_release` does both families' work at a socket's release: it is
/// not needed where all of them attached or were replaced by fexit programs.
const RELEASE_REPLACED_BY: &[&str] = &[
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_enter_sendto",
    "sys_exit_sendto",
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    "sys_enter_bind",
    "sys_exit_bind",
];
/// The route-lookup programs stand in for these; where they attached, or were themselves
/// replaced by fexit programs, the route-lookup programs are not needed.
const ROUTE_REPLACED_BY: &[&str] = RELEASE_REPLACED_BY.split_at(6).0;
/// The same for the bind programs.
const BIND_REPLACED_BY: &[&str] = RELEASE_REPLACED_BY.split_at(6).1;
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
        role: Role::Degrades,
        needs: BIND_NEEDS,
        without: BIND_WITHOUT,
        replaced_by: BIND_REPLACED_BY,
        requires: &[],
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

/// How a program learns what else runs: a value of the eBPF object the loader sets from the
/// plan, never by a program name of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Global `name` (read-only data: fixed when the object loads, before anything attaches)
    /// is 1 where `program` is going to be tried: the operator's choices keep it and its cheap
    /// requirements are met (`planned`).
    GlobalIfPlanned {
        name: &'static str,
        program: &'static str,
    },
    /// Entry 0 of the u32 array map `name` is 1 where `program` attached.
    MapIfAttached {
        name: &'static str,
        program: &'static str,
    },
    /// Entry 0 of the u32 array map `name` is 1 where every one of `programs` attached (they
    /// work only together).
    MapIfAllAttached {
        name: &'static str,
        programs: &'static [&'static str],
    },
}

/// For the tests that check the table against the eBPF object.
#[cfg(test)]
impl Switch {
    pub fn name(&self) -> &'static str {
        match self {
            Switch::GlobalIfPlanned { name, .. }
            | Switch::MapIfAttached { name, .. }
            | Switch::MapIfAllAttached { name, .. } => name,
        }
    }

    pub fn program(&self) -> &'static str {
        match self {
            Switch::GlobalIfPlanned { program, .. } | Switch::MapIfAttached { program, .. } => {
                program
            }
            Switch::MapIfAllAttached { programs, .. } => programs[0],
        }
    }
}

pub const SWITCHES: &[Switch] = &[
    // #025: where the OpenSSL hooks can attach, connect() records each thread's peer for them.
    Switch::GlobalIfPlanned {
        name: "TLS_WATCH",
        program: "ssl_do_handshake",
    },
    // Where the route-lookup programs see connect(), the state-change program reports a
    // connect() that found no free local port.
    Switch::MapIfAttached {
        name: "ROUTE_MODE",
        program: "route_connect4",
    },
    // The bind programs note a bind() only when all of them attached: without its post-bind
    // program, every bind() would read as a failure.
    Switch::MapIfAllAttached {
        name: "BIND_MODE",
        programs: BIND_PROGRAMS,
    },
    // The state-change program reads listen() failures only where listen_state counts as
    // attached: neither inet_listen's fexit program nor the listen() tracepoints do.
    Switch::MapIfAttached {
        name: "LISTEN_MODE",
        program: "listen_state",
    },
];

/// What happened to a hook at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Attached,
    /// The kernel refused to load or attach it; the message is the kernel's/aya's error.
    Refused(String),
    /// Not tried, and why.
    Skipped(String),
    /// A hook every task would pay for (a syscall tracepoint, a fentry on write()...) not
    /// tried because `--syscall-hooks` was not given.
    OptIn,
    /// Not attached because the programs that replace it (`Hook::replaced_by`) are: nothing is
    /// lost.
    Replaced(String),
}

impl Status {
    /// The word `netladder hooks --json` and the metrics give it (an opt-in hook is "skipped").
    pub fn word(&self) -> &'static str {
        match self {
            Status::Attached => "attached",
            Status::Refused(_) => "refused",
            Status::Skipped(_) | Status::OptIn => "skipped",
            Status::Replaced(_) => "replaced",
        }
    }

    /// Why it is not attached (none when it is).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Attached => None,
            Status::Refused(why) | Status::Skipped(why) | Status::Replaced(why) => Some(why),
            Status::OptIn => Some(SYSCALL_OPT_IN),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub hook: Hook,
    pub status: Status,
}

/// What the operator chose at start.
#[derive(Clone, Copy, Debug)]
pub struct Choices<'a> {
    /// Attach the `Role::Optional` hooks (not `--no-optional-hooks`).
    pub optional_hooks: bool,
    /// Attach syscall tracepoint programs that nothing cheaper replaced (`--syscall-hooks`).
    pub syscall_hooks: bool,
    /// Programs the operator asked not to attach (`--skip-hook`).
    pub skip: &'a [String],
}

/// Checks `--skip-hook` names against the table: each must be a program, and not the core.
pub fn check_skip(names: &[String]) -> Result<(), String> {
    for name in names {
        let why = match HOOKS.iter().find(|h| h.program == name) {
            None => "no such program (see `netladder hooks`)",
            Some(h) if h.role == Role::Core => {
                "this program is the core of netladder and cannot be skipped"
            }
            Some(_) => continue,
        };
        return Err(format!("--skip-hook {name}: {why}"));
    }
    Ok(())
}

/// Why the operator's choices leave `hook` out, if they do.
fn chosen_out(hook: &Hook, choices: &Choices) -> Option<Status> {
    if choices.skip.iter().any(|p| p == hook.program) {
        Some(Status::Skipped("disabled by --skip-hook".into()))
    } else if hook.role == Role::Optional && !choices.optional_hooks {
        Some(Status::Skipped("disabled by --no-optional-hooks".into()))
    } else if hook.opt_in() && !choices.syscall_hooks {
        Some(Status::OptIn)
    } else {
        None
    }
}

/// The status `hook` gets without being tried, given what the hooks before it did; `None`:
/// try it. Checked in this order: replaced, the operator's choices, then each requirement
/// (`Hook::requirements`: the costly ones only once all else allows it).
pub fn decide(
    hook: &Hook,
    earlier: &[Outcome],
    choices: &Choices,
    kernel: &dyn Kernel,
) -> Option<Status> {
    if replacements_attached(earlier, hook) {
        return Some(Status::Replaced(format!(
            "not needed: {} attached",
            hook.replaced_by.join(", ")
        )));
    }
    if let Some(status) = chosen_out(hook, choices) {
        return Some(status);
    }
    if let Attach::PartOf(host) = hook.attach {
        let attached = earlier
            .iter()
            .any(|o| o.hook.program == host && o.status == Status::Attached);
        if !attached {
            return Some(Status::Skipped(format!(
                "{host}, which does its work, is not attached"
            )));
        }
    }
    hook.requirements()
        .iter()
        .find_map(|r| kernel.check(r).err())
        .map(Status::Skipped)
}

/// Whether `hook` is going to be tried, as far as can be told before the object loads: the
/// choices keep it and its cheap requirements are met (what `Switch::GlobalIfPlanned` says).
pub fn planned(hook: &Hook, choices: &Choices, kernel: &dyn Kernel) -> bool {
    chosen_out(hook, choices).is_none()
        && hook
            .requirements()
            .iter()
            .filter(|r| !r.costly())
            .all(|r| kernel.check(r).is_ok())
}

/// The values of the globals (`Switch::GlobalIfPlanned`), to set before the object loads.
pub fn globals(choices: &Choices, kernel: &dyn Kernel) -> Vec<(&'static str, u32)> {
    SWITCHES
        .iter()
        .filter_map(|s| match s {
            Switch::GlobalIfPlanned { name, program } => {
                let hook = hook(program)?;
                Some((*name, u32::from(planned(hook, choices, kernel))))
            }
            _ => None,
        })
        .collect()
}

/// The values of the switch maps, from what attached.
pub fn map_switches(outcomes: &[Outcome]) -> Vec<(&'static str, u32)> {
    let attached = |p: &str| {
        outcomes
            .iter()
            .any(|o| o.hook.program == p && o.status == Status::Attached)
    };
    SWITCHES
        .iter()
        .filter_map(|s| match s {
            Switch::MapIfAttached { name, program } => Some((*name, u32::from(attached(program)))),
            Switch::MapIfAllAttached { name, programs } => {
                Some((*name, u32::from(programs.iter().all(|p| attached(p)))))
            }
            Switch::GlobalIfPlanned { .. } => None,
        })
        .collect()
}

/// The row of `program`.
pub fn hook(program: &str) -> Option<&'static Hook> {
    HOOKS.iter().find(|h| h.program == program)
}

/// The one-line error that ends start-up when a core hook did not attach.
pub fn core_failure(o: &Outcome) -> Option<String> {
    if o.hook.role != Role::Core || o.status == Status::Attached {
        return None;
    }
    let why = o.status.reason().unwrap_or_default();
    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(format!(
        "the kernel refused the core hook {}: {why}",
        o.hook.attach.describe()
    ))
}

/// Goes through the table in order: `attach` is called for each hook `decide` lets through and
/// says how that went. Stops at the first core hook that did not attach, with its one-line error.
pub fn run(
    choices: &Choices,
    kernel: &dyn Kernel,
    mut attach: impl FnMut(&Hook) -> Status,
) -> Result<Vec<Outcome>, String> {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(HOOKS.len());
    for hook in HOOKS {
        let status = decide(hook, &outcomes, choices, kernel).unwrap_or_else(|| attach(hook));
        let outcome = Outcome {
            hook: *hook,
            status,
        };
        if let Some(error) = core_failure(&outcome) {
            return Err(error);
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The attached program that does the work of `program` when `program` is not attached (it lists
/// `program` in its `replaced_by`): nothing is lost then.
/// A program that hosts the work of other rows (`Attach::PartOf`) covers nothing by itself:
/// its parts do, each by its own row.
pub fn covered_by<'a>(outcomes: &'a [Outcome], program: &str) -> Option<&'a str> {
    outcomes
        .iter()
        .find(|o| {
            o.status == Status::Attached
                && o.hook.replaced_by.contains(&program)
                && !hosts_parts(o.hook.program)
        })
        .map(|o| o.hook.program)
}

/// Whether rows of the table are parts of `program` (`Attach::PartOf`).
fn hosts_parts(program: &str) -> bool {
    HOOKS
        .iter()
        .any(|h| matches!(h.attach, Attach::PartOf(host) if host == program))
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

/// Whether the work of `o` falls to syscall tracepoint programs left out for want of
/// `--syscall-hooks` (it is in their `replaced_by`): their opt-in line says what is lost.
fn left_to_opt_in(outcomes: &[Outcome], o: &Outcome) -> bool {
    outcomes
        .iter()
        .any(|t| t.status == Status::OptIn && t.hook.replaced_by.contains(&o.hook.program))
}

/// What is lost while `o` is not attached, for the hook table.
pub fn lost(outcomes: &[Outcome], o: &Outcome) -> String {
    if o.status == Status::OptIn {
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

/// The degraded capabilities implied by a set of outcomes, one line each, each a row's
/// `without` (with how to opt in for a syscall tracepoint left out).
pub fn degraded(outcomes: &[Outcome]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for o in outcomes.iter().filter(|o| {
        !matches!(o.status, Status::Attached | Status::Replaced(_))
            && !left_to_opt_in(outcomes, o)
            // The route-lookup programs stand in for part of a syscall tracepoint's work: what
            // they cannot see is the tracepoint's `without`.
            && (o.status == Status::OptIn || covered_by(outcomes, o.hook.program).is_none())
            && !replacements_attached(outcomes, &o.hook)
    }) {
        let line = if o.status == Status::OptIn {
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

/// The table of docs/kernels.md ("What each program needs"), made from the plan; a unit test
/// keeps the document equal to it.
#[cfg(test)]
fn markdown_table() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut s = String::from(
        "| program | hook | role | requires | replaced by | cost | without it |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for h in HOOKS {
        let requires: Vec<String> = h.requirements().iter().map(Require::describe).collect();
        let role = if h.opt_in() {
            format!("{}, opt-in (--syscall-hooks)", h.role.name())
        } else {
            h.role.name().to_owned()
        };
        let dash = |v: String| if v.is_empty() { "-".to_owned() } else { v };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            h.program,
            cell(&h.attach.describe()),
            role,
            cell(&dash(requires.join(", "))),
            dash(h.replaced_by.join(", ")),
            h.cost().short(),
            cell(h.without),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A made-up kernel: every requirement met but those listed, and a record of what was asked.
    #[derive(Default)]
    struct Fake {
        lacks: Vec<Require>,
        /// Attach points the kernel refuses (their `describe`).
        refuses: Vec<&'static str>,
        asked: RefCell<Vec<Require>>,
    }

    impl Fake {
        /// A kernel that refuses fentry and fexit (the host here).
        fn without_fentry() -> Self {
            Fake {
                refuses: vec!["fentry", "fexit"],
                ..Fake::default()
            }
        }

        fn lacking(lacks: &[Require]) -> Self {
            Fake {
                lacks: lacks.to_vec(),
                ..Fake::default()
            }
        }

        fn attach(&self, h: &Hook) -> Status {
            let refused = match h.attach {
                Attach::FEntry(_) => self.refuses.contains(&"fentry"),
                Attach::FExit(_) => self.refuses.contains(&"fexit"),
                _ => self.refuses.contains(&h.program),
            };
            if refused {
                Status::Refused("load failed: Operation not permitted (os error 1)".into())
            } else {
                Status::Attached
            }
        }
    }

    impl Kernel for Fake {
        fn check(&self, req: &Require) -> Result<(), String> {
            self.asked.borrow_mut().push(*req);
            if self.lacks.contains(req) {
                Err(req.missing())
            } else {
                Ok(())
            }
        }
    }

    const DEFAULT: Choices = Choices {
        optional_hooks: true,
        syscall_hooks: false,
        skip: &[],
    };

    fn replaced(out: &[Outcome], program: &str) -> bool {
        matches!(status_of(out, program), Status::Replaced(_))
    }

    fn status_of<'a>(out: &'a [Outcome], program: &str) -> &'a Status {
        &out.iter()
            .find(|o| o.hook.program == program)
            .unwrap()
            .status
    }

    #[test]
    fn plan_is_consistent() {
        let mut names: Vec<_> = HOOKS.iter().map(|h| h.program).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), HOOKS.len(), "program names are unique");
        for h in HOOKS {
            for r in h.replaced_by {
                let pos = |p: &str| HOOKS.iter().position(|h| h.program == p);
                assert!(
                    pos(r).is_some_and(|i| i < pos(h.program).unwrap()),
                    "{}: its replacement {r} comes earlier in the plan",
                    h.program
                );
            }
        }
    }

    /// Every row has a role; exactly one is core, and the core cannot be left out by any
    /// choice or replaced.
    #[test]
    fn every_row_has_a_role_and_the_core_is_one() {
        let core: Vec<_> = HOOKS.iter().filter(|h| h.role == Role::Core).collect();
        assert_eq!(core.len(), 1, "{core:?}");
        let core = core[0];
        assert!(!core.opt_in() && core.replaced_by.is_empty(), "{core:?}");
        for h in HOOKS {
            assert!(
                ["core", "degrades", "optional"].contains(&h.role.name()),
                "{}",
                h.program
            );
        }
        let off = Choices {
            optional_hooks: false,
            syscall_hooks: false,
            skip: &[],
        };
        assert!(chosen_out(core, &off).is_none());
        assert!(check_skip(&[core.program.to_owned()]).is_err());
        assert!(check_skip(&["no_such_program".to_owned()])
            .is_err_and(|e| e.contains("no such program") && !e.contains('\n')));
        assert_eq!(check_skip(&["dns_ingress".to_owned()]), Ok(()));
    }

    /// listen() failures: where inet_listen's fexit program attaches, the state-change program's
    /// part is replaced and switched off; where fexit is refused, it counts as attached (its
    /// host did), is switched on, and the listen() tracepoints are not needed, --syscall-hooks
    /// or not.
    #[test]
    fn listen_state_stands_in_for_the_fexit_program_only_where_that_is_refused() {
        let mode = |out: &[Outcome]| {
            map_switches(out)
                .into_iter()
                .find(|(name, _)| *name == "LISTEN_MODE")
                .unwrap()
                .1
        };
        let kernel = Fake::default();
        let out = run(&DEFAULT, &kernel, |h| kernel.attach(h)).unwrap();
        assert!(replaced(&out, "listen_state"));
        assert!(replaced(&out, "sys_exit_listen"));
        assert_eq!(mode(&out), 0);
        let kernel = Fake::without_fentry();
        for choices in [
            DEFAULT,
            Choices {
                syscall_hooks: true,
                ..DEFAULT
            },
        ] {
            let out = run(&choices, &kernel, |h| kernel.attach(h)).unwrap();
            assert_eq!(status_of(&out, "listen_state"), &Status::Attached);
            assert!(replaced(&out, "sys_enter_listen"));
            assert!(replaced(&out, "sys_exit_listen"));
            assert_eq!(mode(&out), 1);
            assert!(!degraded(&out).iter().any(|l| l.contains("listen()")));
        }
        // Without kallsyms it cannot tell a failed listen() from a listener's end: skipped, and
        // the listen() tracepoints are the opt-in way.
        let kernel = Fake {
            refuses: vec!["fentry", "fexit"],
            lacks: vec![LISTEN_RANGE],
            ..Fake::default()
        };
        let out = run(&DEFAULT, &kernel, |h| kernel.attach(h)).unwrap();
        assert!(matches!(
            status_of(&out, "listen_state"),
            Status::Skipped(_)
        ));
        assert_eq!(status_of(&out, "sys_exit_listen"), &Status::OptIn);
        assert_eq!(mode(&out), 0);
    }

    /// The requirements of each row: the ones its attach point implies come with it, a
    /// tracepoint's argument count only on that tracepoint, the costly ones last.
    #[test]
    fn requirements_follow_the_rows() {
        for h in HOOKS {
            let reqs = h.requirements();
            match h.attach {
                Attach::FEntry(f) | Attach::FExit(f) => {
                    assert!(reqs.contains(&Require::Function(f)), "{}", h.program)
                }
                Attach::UProbe { lib, .. } => {
                    assert!(reqs.contains(&Require::Library(lib)), "{}", h.program)
                }
                Attach::LibcProbe { .. } => assert!(reqs.contains(&Require::Libc)),
                Attach::CgroupSkb { .. } | Attach::CgroupSockAddr(_) | Attach::CgroupSock(_) => {
                    assert!(reqs.contains(&Require::Cgroup2), "{}", h.program)
                }
                Attach::TpBtf(_) | Attach::Tracepoint(..) | Attach::PartOf(_) => {}
            }
            for r in &reqs {
                if let Require::TracepointArgs { tracepoint, .. } = r {
                    assert_eq!(h.attach, Attach::TpBtf(tracepoint), "{}", h.program);
                }
            }
            let first_costly = reqs.iter().position(Require::costly).unwrap_or(reqs.len());
            assert!(reqs[first_costly..].iter().all(Require::costly), "{reqs:?}");
        }
        let kfree = hook("kfree_skb").unwrap();
        assert!(kfree.requirements().contains(&Require::DropReasons));
        let consume = hook("consume_skb").unwrap();
        assert_eq!(consume.requirements().last(), Some(&ICMP_RANGES));
    }

    /// The skip reasons that watch/session.rs once wrote by hand come from the rows.
    #[test]
    fn a_kernel_without_drop_reasons_or_a_location_argument_skips_with_the_reason() {
        let kernel = Fake::lacking(&[
            Require::DropReasons,
            *hook("consume_skb")
                .unwrap()
                .requires
                .iter()
                .find(|r| matches!(r, Require::TracepointArgs { .. }))
                .unwrap(),
        ]);
        let choices = Choices {
            optional_hooks: false,
            ..DEFAULT
        };
        let out = run(&choices, &kernel, |h| kernel.attach(h)).unwrap();
        assert_eq!(
            status_of(&out, "kfree_skb"),
            &Status::Skipped("this kernel has no drop reasons (5.17+)".into())
        );
        assert_eq!(
            status_of(&out, "consume_skb"),
            &Status::Skipped("consume_skb has no location argument on this kernel (6.3+)".into())
        );
        // Skipped for want of the argument: kallsyms was never read for it.
        assert!(!kernel.asked.borrow().contains(&ICMP_RANGES));
        assert!(degraded(&out)
            .iter()
            .any(|l| l.starts_with("local firewall drops")));
    }

    /// Where the fentry pair attached, consume_skb is replaced before anything is asked for it:
    /// the kallsyms ranges are not read.
    #[test]
    fn a_replaced_hook_asks_the_kernel_nothing() {
        let kernel = Fake::default();
        let out = run(&DEFAULT, &kernel, |h| kernel.attach(h)).unwrap();
        assert!(replaced(&out, "consume_skb"));
        assert!(!kernel.asked.borrow().contains(&ICMP_RANGES));
        // The syscall tracepoints are replaced, not opt-in, where fexit attached, but for the
        // ssh rung's: its programs on write(), sendto() and open are opt-in, whatever their hook.
        for o in &out {
            let ssh_log = o.hook.program.starts_with("ssh_")
                && o.hook.program != "ssh_connect_entry"
                && o.hook.program != "ssh_connect";
            assert_eq!(o.status == Status::OptIn, ssh_log, "{o:?}");
        }
        assert_eq!(
            degraded(&out),
            vec![
                format!("{SSH_WRITE_WITHOUT} (opt-in here: --syscall-hooks)"),
                format!("{SSH_SEND_WITHOUT} (opt-in here: --syscall-hooks)"),
                format!("{SSH_OPEN_WITHOUT} (opt-in here: --syscall-hooks)"),
            ]
        );
        // With --syscall-hooks the fentry/fexit programs attach and replace the tracepoints.
        let opted = Choices {
            syscall_hooks: true,
            ..DEFAULT
        };
        let out = run(&opted, &kernel, |h| kernel.attach(h)).unwrap();
        assert_eq!(status_of(&out, "ssh_vfs_write"), &Status::Attached);
        assert!(matches!(status_of(&out, "ssh_write"), Status::Replaced(_)));
        assert_eq!(degraded(&out), Vec::<String>::new());
    }

    /// A core hook the kernel refuses ends start-up with one line naming it and the reason.
    #[test]
    fn a_refused_core_hook_fails_start_with_one_line() {
        let kernel = Fake {
            refuses: vec!["inet_sock_set_state"],
            ..Fake::default()
        };
        let mut tried = 0;
        let err = run(&DEFAULT, &kernel, |h| {
            tried += 1;
            kernel.attach(h)
        })
        .unwrap_err();
        assert_eq!(
            err,
            "the kernel refused the core hook tp_btf/inet_sock_set_state: load failed: \
             Operation not permitted (os error 1)"
        );
        assert_eq!(tried, 1, "nothing after the core hook is tried");
        // A reason of several lines (a verifier's) still makes one line.
        let o = Outcome {
            hook: HOOKS[0],
            status: Status::Refused("load failed\nverifier: bad".into()),
        };
        assert!(!core_failure(&o).unwrap().contains('\n'));
        let fine = Outcome {
            hook: *hook("dns_ingress").unwrap(),
            status: Status::Refused("EINVAL".into()),
        };
        assert_eq!(core_failure(&fine), None);
    }

    /// Each degraded line is a row's `without`: with everything but the core refused, exactly
    /// the rows' `without`s, once each.
    #[test]
    fn degraded_lines_come_from_the_rows() {
        let out: Vec<Outcome> = HOOKS
            .iter()
            .map(|h| Outcome {
                hook: *h,
                status: if h.role == Role::Core {
                    Status::Attached
                } else {
                    Status::Refused("EPERM".into())
                },
            })
            .collect();
        let mut lines = degraded(&out);
        let mut rows: Vec<String> = HOOKS
            .iter()
            .filter(|h| h.role != Role::Core)
            .map(|h| h.without.to_owned())
            .collect();
        rows.sort();
        rows.dedup();
        lines.sort();
        assert_eq!(lines, rows);
    }

    #[test]
    fn the_operators_choices_come_before_the_kernel() {
        let kernel = Fake::lacking(&[Require::Cgroup2]);
        let skip = ["getaddrinfo_enter".to_owned()];
        let choices = Choices {
            optional_hooks: false,
            syscall_hooks: false,
            skip: &skip,
        };
        let out = run(&choices, &kernel, |h| kernel.attach(h)).unwrap();
        assert_eq!(
            status_of(&out, "getaddrinfo_enter"),
            &Status::Skipped("disabled by --skip-hook".into())
        );
        assert_eq!(
            status_of(&out, "dns_ingress"),
            &Status::Skipped("no cgroup v2 mount".into())
        );
        assert_eq!(
            status_of(&out, "tcp_v4_err_entry"),
            &Status::Skipped("disabled by --no-optional-hooks".into())
        );
        // Without the fexit programs the syscall tracepoints are opt-in, and say so.
        assert_eq!(status_of(&out, "sys_enter_bind"), &Status::OptIn);
        assert_eq!(Status::OptIn.word(), "skipped");
        assert_eq!(Status::OptIn.reason(), Some(SYSCALL_OPT_IN));
        // With --syscall-hooks they are tried.
        let opted = Choices {
            syscall_hooks: true,
            ..choices
        };
        let out = run(&opted, &kernel, |h| kernel.attach(h)).unwrap();
        assert_eq!(status_of(&out, "sys_enter_bind"), &Status::Attached);
    }

    /// One release program for the route and bind programs: where fentry is refused it
    /// attaches and its two parts count as attached; where fexit or the syscall tracepoints do
    /// their work it is not needed, and it never claims to cover a syscall tracepoint's work.
    #[test]
    fn one_release_program_hosts_the_route_and_bind_parts() {
        let no_fentry = Fake::without_fentry();
        let out = run(&DEFAULT, &no_fentry, |h| no_fentry.attach(h)).unwrap();
        for p in ["sock_release", "route_release", "bind_release"] {
            assert_eq!(status_of(&out, p), &Status::Attached, "{p}");
        }
        assert_eq!(covered_by(&out, "sys_enter_bind"), Some("bind_try4"));
        let opted = Choices {
            syscall_hooks: true,
            ..DEFAULT
        };
        let out = run(&opted, &no_fentry, |h| no_fentry.attach(h)).unwrap();
        assert!(replaced(&out, "sock_release"));
        let fentry = Fake::default();
        let out = run(&DEFAULT, &fentry, |h| fentry.attach(h)).unwrap();
        assert!(replaced(&out, "sock_release"));
        assert!(replaced(&out, "bind_release"));
    }

    /// No program runs on every packet the host sends: DNS questions are seen at their
    /// connect() or send (per call), only answers are read from the packets.
    #[test]
    fn nothing_runs_on_the_packets_sent() {
        for h in HOOKS {
            assert!(
                !matches!(h.attach, Attach::CgroupSkb { ingress: false }),
                "{}",
                h.program
            );
        }
    }

    /// The switches name programs of the table, and follow what attached.
    #[test]
    fn switches_derive_from_the_outcomes() {
        for s in SWITCHES {
            assert!(hook(s.program()).is_some(), "{s:?}");
        }
        let kernel = Fake::without_fentry();
        let out = run(&DEFAULT, &kernel, |h| kernel.attach(h)).unwrap();
        let maps = map_switches(&out);
        assert!(maps.contains(&("ROUTE_MODE", 1)), "{maps:?}");
        let kernel = Fake::default();
        let out = run(&DEFAULT, &kernel, |h| kernel.attach(h)).unwrap();
        let maps = map_switches(&out);
        assert!(maps.contains(&("ROUTE_MODE", 0)), "{maps:?}");
        assert_eq!(globals(&DEFAULT, &kernel), vec![("TLS_WATCH", 1)]);
        let no_ssl = Fake::lacking(&[Require::Library("libssl.so.3")]);
        assert_eq!(globals(&DEFAULT, &no_ssl), vec![("TLS_WATCH", 0)]);
        let skip = ["ssl_do_handshake".to_owned()];
        let skipped = Choices {
            skip: &skip,
            ..DEFAULT
        };
        assert_eq!(globals(&skipped, &kernel), vec![("TLS_WATCH", 0)]);
    }

    /// docs/kernels.md holds the table made from the plan (NETLADDER_BLESS_DOCS=1 rewrites it).
    #[test]
    fn the_docs_table_is_the_plans() {
        const BEGIN: &str = "<!-- plan table: made by plan::markdown_table -->\n";
        const END: &str = "<!-- end of plan table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kernels.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = doc.find(BEGIN).expect("the plan table's start marker") + BEGIN.len();
        let end = doc.find(END).expect("the plan table's end marker");
        let table = markdown_table();
        if std::env::var_os("NETLADDER_BLESS_DOCS").is_some() {
            let new = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(path, new).unwrap();
            return;
        }
        assert_eq!(
            &doc[start..end],
            table,
            "docs/kernels.md is not the plan's table: NETLADDER_BLESS_DOCS=1 cargo test rewrites it"
        );
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
        let kernel = Fake::without_fentry();
        let out = run(&DEFAULT, &kernel, |h| kernel.attach(h)).unwrap();
        assert!(HOOKS
            .iter()
            .any(|h| h.program == "route_fib_lookup" && !replacements_attached(&out, h)));
        assert_eq!(status_of(&out, "route_fib_lookup"), &Status::Attached);
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
