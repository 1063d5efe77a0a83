//! The vocabulary shared by the stages: what the kernel layer decodes (`Observation`, `Proc`,
//! `Drops`), what the classifier makes of it (`Failure`, `Ledger`) and what the enrichment stage
//! looks up and adds (`Lookup`, `FirewallSeen`, `FirewallRule`, `Overload`).
//!
//! Plain data at the crate's lowest floor: it uses only the ladder's codes, causes and layers,
//! the wire types and std, so every stage can name it without reaching into another.
use std::net::{IpAddr, SocketAddr};

use netladder_common::{AggKey, TLS_NAME_LEN};

use crate::ladder::{Cause, Code, Layer};

/// The process a failure belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub netns: u32,
}

impl Proc {
    pub fn new(pid: u32, tid: u32, comm: impl Into<String>, cgroup_id: u64, netns: u32) -> Proc {
        Proc {
            pid,
            tid,
            comm: comm.into(),
            cgroup_id,
            netns,
        }
    }
}

/// Packet drops seen for the flow, with names already resolved by the kernel layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    pub netfilter: u32,
    pub no_socket: u32,
    pub other: u32,
    /// Name of the last drop reason (e.g. "NETFILTER_DROP").
    pub last_reason: Option<String>,
    /// Symbol where the last netfilter drop happened (e.g. "nft_do_chain+0x2f4").
    pub location: Option<String>,
    /// The dropped packet was locally generated (no input interface).
    pub outgoing: bool,
    pub incoming: bool,
    pub ifindex: u32,
    /// Network namespace where the last drop happened (0 = unknown).
    pub netns: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A connection left SYN_SENT without being established, with the in-kernel verdict.
    Conn { verdict: u32 },
    /// A syscall returned an error (`call` is its name, e.g. "connect").
    Syscall { call: &'static str },
    /// A neighbour entry (the observation's `dst` address) went FAILED on this device.
    Neighbour { ifindex: u32, netns: u32 },
    /// An application-layer signal (`netladder_common::AppEvent`): DNS, resolver, TLS, ssh.
    /// `kind` is its `netladder_common::kind` value; `code`, `aux` and `text` mean what that
    /// family documents.
    App {
        kind: u32,
        code: i32,
        aux: u64,
        text: Vec<u8>,
    },
}

/// One decoded kernel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub kind: Kind,
    pub ts_ns: u64,
    /// Socket identity (kernel address) for de-duplication; 0 for syscall events.
    pub sk: u64,
    pub proc: Proc,
    pub src: Option<SocketAddr>,
    /// Remote end; None for bind()/listen().
    pub dst: Option<SocketAddr>,
    /// Positive errno (socket error, or the syscall's error), 0 when none.
    pub err: i32,
    pub syn_retrans: u32,
    /// `netladder_common::eflag` bits.
    pub flags: u32,
    /// Time since the socket entered SYN_SENT.
    pub duration_ns: Option<u64>,
    pub drops: Drops,
    /// An ICMP error that answered the flow: (sender, type, code).
    pub icmp: Option<(IpAddr, u8, u8)>,
    /// The kernel's aggregation key of this failure: later identical failures that the kernel
    /// only counted are reported as repeats of this one (see `classify::Classifier::repeated`).
    pub agg: Option<AggKey>,
}

/// What the kernel saw of a firewall drop, for naming the rule that did it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FirewallSeen {
    /// The dropped packet was locally generated (output path) / came in (input path).
    pub outgoing: bool,
    pub incoming: bool,
    /// Interface of the dropped packet (0: unknown).
    pub ifindex: u32,
    /// What the rule did to the packet, as the failure shows it.
    pub verdict: FirewallVerdict,
}

/// What a firewall rule did to a packet: dropped it, or rejected it with an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FirewallVerdict {
    #[default]
    Dropped,
    /// Rejected, answering with a TCP reset.
    RejectedWithReset,
    /// Rejected, answering with an ICMP error.
    RejectedWithIcmp,
}

/// The firewall rule named as the cause of a failure (filled in by the enrichment stage).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallRule {
    /// "nftables", "iptables-nft", "iptables-legacy".
    pub backend: &'static str,
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The base chain's hook ("input"), None for a chain reached by a jump.
    pub hook: Option<&'static str>,
    pub priority: Option<i32>,
    /// "handle 7", "rule 2", "policy".
    pub rule: String,
    pub text: String,
    /// Packets the rule counted for this failure (None: no counter).
    pub packets: Option<u64>,
    /// "certain" or "likely".
    pub certainty: &'static str,
}

/// What the enrichment stage should look up for a failure.
// TlsChain carries two short names inline (Lookup is Copy and a cache key): a few hundred
// bytes per failure, which already owns its strings on the heap.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    None,
    /// Who listens on the destination port, in `Failure::evidence_netns` (where the SYN found no
    /// socket: the server's namespace, not necessarily the client's).
    Listeners,
    /// The route to the destination (`ip route get`) and the default routes.
    Route,
    /// The same, as evidence only: the summary already says more (e.g. who sent the ICMP).
    RouteEvidence,
    /// The route plus the state and addresses of the interfaces (network unreachable).
    Egress,
    /// The route's next hop in the neighbour table (ARP / neighbour discovery).
    Neighbour,
    /// Who holds the local port (address in use).
    Holders,
    /// Ephemeral port range, TIME_WAIT and open connections toward the destination.
    Ports,
    /// The firewall rule that dropped or rejected the handshake (`Failure::firewall`).
    Firewall,
    /// #023 with no answer: when the destination is an address of a network namespace on this
    /// host, the listener on its port and that namespace's overflow counters (a full accept
    /// queue drops SYNs without a drop reason).
    ListenQueue,
    /// Why this host's reverse-path filter refused the SYN, read in `Failure::evidence_netns`
    /// (where it was dropped): the interface it came in on (`Failure::firewall.ifindex`), the
    /// `rp_filter` settings, and the route back to the client (`Failure::src`).
    ReversePath,
    /// #025: the certificate the peer presents (fetched with `name` as SNI, at most once per
    /// peer every few seconds) and the system clock, to add dates and names to the X509_V_ERR
    /// `code`'s reason; `asked` is the name the certificate had to carry.
    TlsChain {
        code: i32,
        name: TlsName,
        asked: TlsName,
    },
}

/// A classified failure: one per failed connection or failed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    /// Machine-readable cause, e.g. `no_listener` (`Cause::NoListener`), `firewall_drop`.
    pub cause: Cause,
    pub layer: Layer,
    pub errno: Option<i32>,
    pub proc: Proc,
    pub src: Option<SocketAddr>,
    /// Remote end; None for bind()/listen() failures.
    pub dst: Option<SocketAddr>,
    /// One sentence: what happened.
    pub summary: String,
    /// The kernel signals seen, with counts.
    pub evidence: Vec<String>,
    pub duration_ns: Option<u64>,
    pub ts_ns: u64,
    pub count: u32,
    pub lookup: Lookup,
    /// The network namespace where the evidence is (where the packet was dropped or found no
    /// socket); the client's own namespace when nothing was dropped.
    pub evidence_netns: u32,
    /// What the kernel saw of a firewall drop (for `Lookup::Firewall`).
    pub firewall: FirewallSeen,
    /// The rule that did it, once the enrichment stage has named it.
    pub firewall_rule: Option<FirewallRule>,
    /// The host name involved, when known: the ssh target as the client names it (#030), the
    /// name a failed DNS lookup asked (#024), the name a TLS client asked for (#025), or the
    /// name a failed connection's address was resolved from (getaddrinfo in the same process).
    pub host_name: Option<String>,
    /// The account involved, when known (#030: the user ssh logs in as).
    pub user: Option<String>,
    /// How many kernel records this failure stands for (its own and those merged into it; 0 for
    /// repeats the kernel only counted).
    pub records: u32,
    /// #023 `accept_queue_full` / `syn_queue_full`: the overloaded listener.
    pub overload: Option<Box<Overload>>,
}

/// Where the kernel records read from the ring buffer ended: each record in exactly one bucket.
/// A failure made of several records (a DNS lookup and its answers, an ssh refusal and the log
/// lines before it) counts one of them as reported (or as a repeat) and the others as merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Became a failure printed on a line of its own.
    pub reported: u64,
    /// Became a failure identical to one printed less than a second before: counted in that
    /// failure's repeat line.
    pub repeats: u64,
    /// Folded into another failure: duplicates, the DNS answers of one lookup, the key files and
    /// log lines of one ssh refusal.
    pub merged: u64,
    /// Not failures by themselves: neighbour entries, successful lookups, ssh key reads and log
    /// lines that ended in no refusal (kept as evidence for others).
    pub context: u64,
    /// Errors outside the ladder.
    pub unclassified: u64,
    /// Records that did not decode.
    pub malformed: u64,
    /// Failures the filter (--pid, --comm, --port, --netns, --code, --container, --pod) hid.
    pub filtered: u64,
    /// Records a bounded table of the classifier had no room for.
    pub dropped: u64,
}

impl Ledger {
    pub fn total(&self) -> u64 {
        self.reported
            + self.repeats
            + self.merged
            + self.context
            + self.unclassified
            + self.malformed
            + self.filtered
            + self.dropped
    }

    pub fn plus(self, o: Ledger) -> Ledger {
        Ledger {
            reported: self.reported + o.reported,
            repeats: self.repeats + o.repeats,
            merged: self.merged + o.merged,
            context: self.context + o.context,
            unclassified: self.unclassified + o.unclassified,
            malformed: self.malformed + o.malformed,
            filtered: self.filtered + o.filtered,
            dropped: self.dropped + o.dropped,
        }
    }
}

/// A listener whose queue overflowed, as `ss -ltn` shows it, with what its namespace counted
/// (#023 `accept_queue_full`, `syn_queue_full`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overload {
    /// Reported by the host that runs the listener about the listener itself (its clients may
    /// be elsewhere); false: the reading of one client's timeout.
    pub server_side: bool,
    /// The listener's network namespace.
    pub netns: u32,
    pub addr: SocketAddr,
    /// The process holding the listener (0 and "?" when none was found).
    pub pid: u32,
    pub comm: String,
    /// Connections waiting to be accepted (`ss -ltn` Recv-Q) and the queue's limit (Send-Q).
    pub queue: u32,
    pub backlog: u32,
    /// How much the namespace's counters rose over `window_ns` (None: no earlier reading).
    pub rises: Option<QueueRises>,
    pub window_ns: Option<u64>,
}

/// Rises of a namespace's listen-queue counters (/proc/net/netstat, TcpExt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueRises {
    /// ListenOverflows: SYNs (or handshake ACKs) that found the accept queue full.
    pub overflows: u64,
    /// ListenDrops: every SYN a listener dropped (overflows included).
    pub drops: u64,
    /// TCPReqQFullDrop: SYNs dropped because the SYN queue was full and no syncookie was sent.
    pub syn_queue_drops: u64,
    /// TCPReqQFullDoCookies: SYNs answered with a syncookie because the SYN queue was full.
    pub syn_queue_cookies: u64,
}

impl Failure {
    /// A failure with what every one of them names; the rest neutral: no errno, no addresses,
    /// no evidence, no duration, one failure of one kernel record, nothing to look up, the
    /// evidence in the process's own namespace, no firewall drop, no host name or account.
    /// Set the others on the result (`Failure { errno, ..Failure::new(..) }`).
    pub fn new(
        code: Code,
        cause: Cause,
        layer: Layer,
        summary: String,
        proc: Proc,
        ts_ns: u64,
    ) -> Failure {
        Failure {
            code,
            cause,
            layer,
            errno: None,
            evidence_netns: proc.netns,
            proc,
            src: None,
            dst: None,
            summary,
            evidence: Vec::new(),
            duration_ns: None,
            ts_ns,
            count: 1,
            lookup: Lookup::None,
            firewall: FirewallSeen::default(),
            firewall_rule: None,
            host_name: None,
            user: None,
            records: 1,
            overload: None,
        }
    }

    /// The enrichment found the destination's listener overloaded: the timeout (still #023,
    /// the client saw no answer) was its full queue. `cause`: `accept_queue_full` or
    /// `syn_queue_full`. The evidence is now in the listener's namespace.
    pub fn overloaded(&mut self, cause: Cause, summary: String, o: Overload) {
        self.cause = cause;
        self.layer = Layer::Application;
        self.summary = summary;
        self.evidence_netns = o.netns;
        self.overload = Some(Box::new(o));
    }
}

/// A server name carried by a failure for its enrichment (fits in `Lookup`, which is `Copy`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlsName {
    len: u8,
    bytes: [u8; TLS_NAME_LEN],
}

impl TlsName {
    pub fn new(s: &str) -> TlsName {
        let mut n = TlsName {
            len: 0,
            bytes: [0; TLS_NAME_LEN],
        };
        // Cut at a character boundary within the buffer.
        let mut end = s.len().min(TLS_NAME_LEN - 1);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        n.bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        n.len = end as u8;
        n
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for TlsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}
