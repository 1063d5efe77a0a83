//! The classifier: a pure state machine from kernel observations to failures.
//!
//! It never touches the kernel. It turns one connection summary (and the synchronous syscall error
//! that may accompany it) into one `Failure` with its ladder code, layer, cause and evidence, and it
//! merges duplicates and out-of-order arrivals: a connect() error seen before or after the
//! connection's own summary, or the same summary delivered twice, yields one failure.
use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::{IpAddr, SocketAddr},
};

use netladder_common::{eflag, kind, verdict, AggKey};

use crate::ladder::{Cause, Code, Layer};
use crate::words::plural;

mod dns;
pub mod errno;
mod evidence;
mod icmp;
mod ssh;
pub mod tls;

/// How long a neighbour failure explains host-unreachable connections to that address.
pub const NEIGHBOUR_WINDOW_NS: u64 = 10_000_000_000;
/// How long the failure of an aggregation key is kept for the kernel's counts of its repeats:
/// the kernel sends a fresh event every window (1 s) while the failures go on, and its counts
/// are read every tick (100 ms).
pub const REPRESENTATIVE_NS: u64 = 10_000_000_000;
/// How long a failure is remembered to absorb its late duplicates.
pub const DEDUP_WINDOW_NS: u64 = 1_000_000_000;

/// The process a failure belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub netns: u32,
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
    /// only counted are reported as repeats of this one (see [`Classifier::repeated`]).
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
        name: tls::TlsName,
        asked: tls::TlsName,
    },
}

/// What [`Classifier::repeated`] makes of the kernel's count of identical failures.
#[derive(Debug, PartialEq, Eq)]
pub enum Repeated {
    /// Repeats of this failure (`count` of them).
    Failure(Box<Failure>),
    /// Repeats of a failure outside the ladder: counted as unclassified.
    Unclassified,
    /// The event they repeat has not been read yet.
    Unknown,
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

/// Keys remembered until a deadline, forgotten in deadline order (O(expired) per tick).
struct Expiring<K> {
    until: HashMap<K, u64>,
    order: VecDeque<(u64, K)>,
}

impl<K: Eq + Hash + Copy> Default for Expiring<K> {
    fn default() -> Self {
        Self {
            until: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Eq + Hash + Copy> Expiring<K> {
    /// Remembers `key` until `deadline`; true when it was already remembered.
    fn insert(&mut self, key: K, deadline: u64, now: u64) -> bool {
        let known = self.contains(&key, now);
        self.until.insert(key, deadline);
        self.order.push_back((deadline, key));
        known
    }

    fn contains(&self, key: &K, now: u64) -> bool {
        self.until.get(key).is_some_and(|d| *d > now)
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(deadline, key)) = self.order.front() {
            if deadline > now {
                break;
            }
            self.order.pop_front();
            // Re-inserted keys carry a later deadline: keep them.
            if self.until.get(&key) == Some(&deadline) {
                self.until.remove(&key);
            }
        }
    }
}

#[derive(Default)]
pub struct Classifier {
    /// Connection summaries already handled, by (socket, time).
    seen: Expiring<(u64, u64)>,
    /// Neighbours that went FAILED recently: (netns, address) -> (ifindex, until).
    failed_neighbours: HashMap<(u32, IpAddr), (u32, u64)>,
    /// Failures the kernel only counted (AGG) that repeat one outside the ladder, or whose
    /// event never came (reported in stats; these are counts, not records).
    pub outside_repeats: u64,
    /// Records taken in ([`Classifier::feed`] and [`Classifier::undecodable`]).
    fed: u64,
    /// Records in the failures handed out.
    emitted: u64,
    /// Records that ended here without a failure (context, merged, unclassified, malformed).
    ledger: Ledger,
    /// The failure each aggregation key last produced, with the time it stops being kept: the
    /// kernel's counts of identical failures are reported as repeats of it.
    representatives: HashMap<AggKey, (Option<Failure>, u64)>,
    /// Application-layer families, each a state machine of its own.
    dns: dns::State,
    tls: tls::State,
    ssh: ssh::State,
    /// The kernel shows no drops (no drop reasons, or the drop hook is off): no event may say
    /// that nothing dropped a packet.
    drops_unwatched: bool,
}

impl Classifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether every packet drop on the host is visible to netladder (see `drops_unwatched`).
    pub fn set_drops_watched(&mut self, watched: bool) {
        self.drops_unwatched = !watched;
    }

    /// Feeds one observation; returns the failures it completes. `now` is kernel monotonic
    /// time. Nothing expires here (that is `tick`'s job), so feeding costs O(1).
    pub fn feed(&mut self, obs: Observation, now: u64) -> Vec<Failure> {
        self.fed += 1;
        let out = self.classify(obs, now);
        self.handed_out(out)
    }

    /// A record that did not decode (counted as read and malformed).
    pub fn undecodable(&mut self) {
        self.fed += 1;
        self.ledger.malformed += 1;
    }

    /// Counts the records of failures leaving the classifier.
    fn handed_out(&mut self, out: Vec<Failure>) -> Vec<Failure> {
        self.emitted += out.iter().map(|f| u64::from(f.records)).sum::<u64>();
        out
    }

    /// Where the records taken in so far ended without a failure.
    pub fn ledger(&self) -> Ledger {
        self.ledger.plus(self.dns.ledger).plus(self.ssh.ledger)
    }

    /// Records still held, waiting for what completes their failure (a lookup's result, an
    /// ssh connection's end).
    pub fn held(&self) -> u64 {
        self.dns.held() + self.ssh.held()
    }

    /// Records taken in, and records handed out in failures.
    pub fn fed_and_emitted(&self) -> (u64, u64) {
        (self.fed, self.emitted)
    }

    fn classify(&mut self, obs: Observation, now: u64) -> Vec<Failure> {
        let mut out = Vec::new();
        match obs.kind {
            Kind::Neighbour { ifindex, netns } => {
                self.ledger.context += 1;
                if let Some(dst) = obs.dst {
                    let until = now.saturating_add(NEIGHBOUR_WINDOW_NS);
                    self.failed_neighbours
                        .insert((netns, dst.ip()), (ifindex, until));
                }
            }
            Kind::Conn { verdict } => {
                if self
                    .seen
                    .insert((obs.sk, obs.ts_ns), now + DEDUP_WINDOW_NS, now)
                {
                    self.ledger.merged += 1;
                    return out;
                }
                let neighbour = obs.dst.and_then(|d| {
                    let hit = self.failed_neighbours.get(&(obs.proc.netns, d.ip()));
                    hit.filter(|(_, until)| *until > now)
                        .map(|(ifindex, _)| *ifindex)
                });
                let f = from_conn(&obs, verdict, neighbour, !self.drops_unwatched);
                if f.is_none() {
                    self.ledger.unclassified += 1;
                }
                out.extend(f);
                for f in &mut out {
                    self.dns.annotate(f, now);
                }
                if let Some(key) = obs.agg {
                    self.keep(key, out.first(), now);
                }
            }
            // The kernel reports each attempt once: a connect() that reached SYN_SENT through
            // a tracked socket reports its error in the connection summary only, so a syscall
            // error is always an attempt of its own (in a storm toward one destination, pairing
            // it with another attempt's summary would hide it).
            Kind::Syscall { call } => {
                let agg = obs.agg;
                self.dns.send_error(&obs, call, now);
                out.extend(self.standalone(obs));
                for f in &mut out {
                    self.dns.annotate(f, now);
                }
                if let Some(key) = agg {
                    self.keep(key, out.first(), now);
                }
            }
            Kind::App { kind, .. } => match kind {
                kind::DNS_ANSWER | kind::RESOLVER => out.extend(self.dns.feed(&obs, now)),
                kind::TLS_VERIFY => out.extend(self.tls.feed(&obs, now)),
                kind::SSH_AUTH => out.extend(self.ssh.feed(&obs, now)),
                _ => self.ledger.malformed += 1,
            },
        }
        out
    }

    /// `n` more failures identical to the one the kernel sent under `key` (it only counted
    /// them): that failure with `count` = n. Counted as unclassified when that one was outside
    /// the ladder; `Unknown` while its event has not been read yet (ask again after the next
    /// drain).
    pub fn repeated(&mut self, key: &AggKey, n: u64) -> Repeated {
        match self.representatives.get(key) {
            Some((Some(f), _)) => Repeated::Failure(Box::new(Failure {
                count: u32::try_from(n).unwrap_or(u32::MAX),
                records: 0,
                ..f.clone()
            })),
            Some((None, _)) => {
                self.outside_repeats += n;
                Repeated::Unclassified
            }
            None => Repeated::Unknown,
        }
    }

    /// Forgets the repeats of a key whose event never came (counted as outside the ladder).
    pub fn give_up(&mut self, n: u64) {
        self.outside_repeats += n;
    }

    /// Remembers what an aggregated failure was classified as (None: outside the ladder).
    fn keep(&mut self, key: AggKey, f: Option<&Failure>, now: u64) {
        let until = now.saturating_add(REPRESENTATIVE_NS);
        self.representatives.insert(key, (f.cloned(), until));
    }

    /// Forgets what is older than the de-duplication window, and returns the failures that only
    /// time completes (e.g. a question that never got an answer). Call periodically.
    pub fn tick(&mut self, now: u64) -> Vec<Failure> {
        self.seen.expire(now);
        let mut out = self.dns.tick(now);
        for f in &mut out {
            self.neighbour_of_nameserver(f, now);
        }
        out.extend(self.tls.tick(now));
        out.extend(self.ssh.tick(now));
        self.failed_neighbours.retain(|_, (_, until)| *until > now);
        self.representatives.retain(|_, (_, until)| *until > now);
        self.handed_out(out)
    }

    /// At exit: every failure still held (lookups waiting for late answers or for their
    /// result, ssh reasons waiting for their connection's end), with what is known and a word
    /// on what was cut short. What `tick` would report at `now` goes first, as it would.
    pub fn flush(&mut self, now: u64) -> Vec<Failure> {
        let mut out = self.tick(now);
        let mut rest = self.dns.flush(now);
        for f in &mut rest {
            self.neighbour_of_nameserver(f, now);
        }
        rest.extend(self.ssh.flush(now));
        out.extend(self.handed_out(rest));
        out
    }

    /// A DNS lookup that got no answer, toward a nameserver whose neighbour entry failed: the
    /// link rung (#029) is the cause.
    fn neighbour_of_nameserver(&self, f: &mut Failure, now: u64) {
        if f.code != Code::Dns || !matches!(f.cause, Cause::NoAnswer | Cause::NoNameserver) {
            return;
        }
        let Some(dst) = f.dst else {
            return;
        };
        let hit = self.failed_neighbours.get(&(f.proc.netns, dst.ip()));
        if let Some((ifindex, _)) = hit.filter(|(_, until)| *until > now) {
            f.layer = Layer::Link;
            f.evidence.retain(|e| !e.starts_with("nothing was dropped"));
            f.evidence.push(format!(
                "the neighbour entry for the nameserver {} on interface index {ifindex} went FAILED: \
                 it never answered ARP / neighbour discovery (#029)",
                dst.ip()
            ));
        }
    }

    /// A syscall error with no connection summary: classified by the call and its errno.
    fn standalone(&mut self, obs: Observation) -> Option<Failure> {
        let call = match obs.kind {
            Kind::Syscall { call } => call,
            Kind::Conn { .. } | Kind::Neighbour { .. } | Kind::App { .. } => "connect",
        };
        let Some((code, cause, layer, summary, lookup)) = by_errno(call, obs.err) else {
            self.ledger.unclassified += 1;
            return None;
        };
        let netns = obs.proc.netns;
        Some(Failure {
            code,
            cause,
            layer,
            errno: Some(obs.err),
            summary: format!("{summary}: {} failed at once", evidence::call_words(call)),
            evidence: vec![if obs.flags & eflag::ROUTE_LOOKUP != 0 {
                evidence::route_lookup_line(call, obs.err)
            } else if obs.flags & eflag::NO_LOCAL_PORT != 0 {
                evidence::no_local_port_line()
            } else if obs.flags & eflag::BIND_INCOMPLETE != 0 {
                evidence::bind_incomplete_line(obs.err)
            } else {
                evidence::syscall_line(call, obs.err)
            }],
            proc: obs.proc,
            src: obs.src,
            dst: obs.dst,
            duration_ns: None,
            ts_ns: obs.ts_ns,
            count: 1,
            lookup,
            evidence_netns: netns,
            firewall: FirewallSeen::default(),
            firewall_rule: None,
            host_name: None,
            user: None,
            records: 1,
            overload: None,
        })
    }
}

/// The ladder reading of a syscall that failed at once: (code, cause, layer, summary, lookup).
fn by_errno(call: &str, err: i32) -> Option<(Code, Cause, Layer, &'static str, Lookup)> {
    Some(match (call, err) {
        ("connect", 111) => (
            Code::Refused,
            Cause::Refused,
            Layer::Application,
            "the connection was refused",
            Lookup::None,
        ),
        ("connect", 110) => (
            Code::Timeout,
            Cause::NoReply,
            Layer::Route,
            "the connection timed out",
            Lookup::ListenQueue,
        ),
        ("connect", 113) => (
            Code::NoRoute,
            Cause::HostUnreachable,
            Layer::Route,
            "no route to the host",
            Lookup::Route,
        ),
        ("connect", 13) => (
            Code::NoRoute,
            Cause::RouteProhibited,
            Layer::Route,
            "the routing table forbids this destination",
            Lookup::Route,
        ),
        ("connect", 101) => (
            Code::NetUnreachable,
            Cause::NetUnreachable,
            Layer::Route,
            "the network is unreachable",
            Lookup::Egress,
        ),
        ("connect", 99) => (
            Code::TimeWait,
            Cause::PortsExhausted,
            Layer::Address,
            "no free local port for this destination",
            Lookup::Ports,
        ),
        ("sendto" | "sendmsg" | "send", 101) => (
            Code::NetUnreachable,
            Cause::NetUnreachable,
            Layer::Route,
            "the network is unreachable",
            Lookup::Egress,
        ),
        ("sendto" | "sendmsg" | "send", 113) => (
            Code::NoRoute,
            Cause::HostUnreachable,
            Layer::Route,
            "no route to the host",
            Lookup::Route,
        ),
        // Not port exhaustion: the address asked for is not on this host. Reported beside #028
        // because programs see the same error text ("Cannot assign requested address").
        ("bind", 99) => (
            Code::TimeWait,
            Cause::BindNonlocal,
            Layer::Address,
            "bind() asked for an address that is not assigned on this host (not port exhaustion)",
            Lookup::None,
        ),
        ("bind" | "listen", 98) => (
            Code::AddrInUse,
            Cause::AddrInUse,
            Layer::Application,
            "the address is already in use",
            Lookup::Holders,
        ),
        _ => return None,
    })
}

/// Turns a connection summary into a failure. `None` for a verdict the ladder has no code for.
/// `neighbour`: the interface on which the destination's neighbour entry recently went FAILED.
/// `drops_watched`: every drop on the host was visible (drop reasons attached), so an absence
/// of drops may be stated.
fn from_conn(
    obs: &Observation,
    v: u32,
    neighbour: Option<u32>,
    drops_watched: bool,
) -> Option<Failure> {
    let d = &obs.drops;
    let gave_up = obs.flags & eflag::APP_GAVE_UP != 0;
    let client_netns = obs.proc.netns;
    let fw = || evidence::firewall_name(d, client_netns);
    let icmp = obs.icmp.map(|(from, t, c)| {
        let by = match obs.dst {
            Some(dst) if dst.ip() == from => format!("the peer {from}"),
            _ => format!("the router {from}"),
        };
        (from, icmp::kind(from.is_ipv6(), t, c), by)
    });
    let (code, cause, layer, summary, lookup) = match v {
        verdict::REFUSED_NO_LISTENER => (
            Code::Refused,
            Cause::NoListener,
            Layer::Application,
            "the SYN reached this host but nothing listens on the port".to_owned(),
            Lookup::Listeners,
        ),
        verdict::REFUSED_PEER => (
            Code::Refused,
            Cause::PeerReset,
            Layer::Application,
            "the peer answered the SYN with a reset: no service on that port there".to_owned(),
            Lookup::None,
        ),
        verdict::FIREWALL_REJECT_RST => (
            Code::Refused,
            Cause::FirewallRejectRst,
            Layer::Firewall,
            format!("{} rejected the SYN with a TCP reset", fw()),
            Lookup::Firewall,
        ),
        verdict::FIREWALL_REJECT_ICMP if d.netfilter > 0 => (
            Code::Refused,
            Cause::FirewallRejectIcmp,
            Layer::Firewall,
            format!("{} rejected the SYN with an ICMP port-unreachable", fw()),
            Lookup::Firewall,
        ),
        verdict::FIREWALL_REJECT_ICMP => (
            Code::Refused,
            Cause::FirewallRejectIcmp,
            Layer::Firewall,
            match (&icmp, drops_watched) {
                (Some((_, _, by)), true) => format!(
                    "{by} answered the SYN with an ICMP port-unreachable: a REJECT rule there (no local drop seen)"
                ),
                (Some((_, _, by)), false) => format!(
                    "{by} answered the SYN with an ICMP port-unreachable: a REJECT rule there or on the path ({UNWATCHED})"
                ),
                (None, true) => "an ICMP port-unreachable answered the SYN: a REJECT rule on the path (no local drop seen)".to_owned(),
                (None, false) => format!("an ICMP port-unreachable answered the SYN: a REJECT rule on the path ({UNWATCHED})"),
            },
            Lookup::None,
        ),
        verdict::TIMEOUT_LOCAL_DROP => (
            Code::Timeout,
            Cause::FirewallDrop,
            Layer::Firewall,
            format!(
                "{} dropped the handshake ({} packet{})",
                fw(),
                d.netfilter,
                plural(d.netfilter)
            ),
            Lookup::Firewall,
        ),
        verdict::TIMEOUT_HOST_DROP => {
            let reason = d.last_reason.as_deref().unwrap_or("unknown");
            let (cause, layer, lookup) = drop_cause(reason, d.location.as_deref());
            (
                Code::Timeout,
                cause,
                layer,
                format!(
                    "no answer: this host dropped the handshake ({}){}",
                    evidence::reason_words(reason),
                    evidence::in_netns(d, client_netns)
                ),
                lookup,
            )
        }
        verdict::TIMEOUT_NO_REPLY if gave_up => (
            Code::Timeout,
            Cause::AppGaveUp,
            Layer::Route,
            if drops_watched {
                "no answer to the SYN and the application gave up first; nothing dropped it on this host"
                    .to_owned()
            } else {
                format!("no answer to the SYN and the application gave up first; {UNWATCHED}")
            },
            Lookup::ListenQueue,
        ),
        verdict::TIMEOUT_NO_REPLY => (
            Code::Timeout,
            Cause::NoReply,
            Layer::Route,
            if drops_watched {
                "no answer to the SYN; nothing dropped it on this host: peer down, a firewall on the path, or asymmetric routing".to_owned()
            } else {
                format!("no answer to the SYN; {UNWATCHED}: peer down, a firewall on the path or on this host, or asymmetric routing")
            },
            Lookup::ListenQueue,
        ),
        verdict::HOST_UNREACHABLE | verdict::NET_UNREACHABLE
            if matches!(icmp, Some((_, icmp::Kind::Prohibited, _))) =>
        {
            let by = icmp.as_ref().map(|(_, _, by)| by.clone()).unwrap_or_default();
            let on_host = if d.other > 0 && d.netns != 0 && d.netns != client_netns {
                format!(" (it is network namespace {} of this host: its route or rules, read below)", d.netns)
            } else {
                String::new()
            };
            (
                if obs.err == 101 { Code::NetUnreachable } else { Code::NoRoute },
                Cause::AdminProhibited,
                Layer::Firewall,
                format!(
                    "{by} refused to forward the SYN: ICMP administratively prohibited (a firewall rule or a prohibit route there){on_host}"
                ),
                if on_host.is_empty() {
                    Lookup::None
                } else {
                    Lookup::RouteEvidence
                },
            )
        }
        verdict::HOST_UNREACHABLE
            if neighbour.is_some() || d.last_reason.as_deref() == Some("NEIGH_FAILED") =>
        {
            (
            Code::ArpFailed,
            Cause::NeighbourFailed,
            Layer::Link,
            "the next hop never answered address resolution (ARP / neighbour discovery)".to_owned(),
            Lookup::Neighbour,
        )
        }
        verdict::HOST_UNREACHABLE => (
            Code::NoRoute,
            Cause::HostUnreachable,
            Layer::Route,
            match &icmp {
                Some((_, _, by)) => format!(
                    "the host is unreachable: {by} answered the SYN with an ICMP host-unreachable"
                ),
                None => "the host is unreachable: an ICMP host-unreachable answered the SYN".to_owned(),
            },
            if icmp.is_some() {
                Lookup::RouteEvidence
            } else {
                Lookup::Route
            },
        ),
        verdict::NET_UNREACHABLE => match &icmp {
            // A router said it has no route onward: the network is unreachable beyond it.
            Some((from, _, _)) if obs.dst.is_none_or(|dst| dst.ip() != *from) => (
                Code::NetUnreachable,
                Cause::NetUnreachable,
                Layer::Route,
                format!("the network is unreachable beyond {from}: that router answered the SYN with an ICMP net-unreachable"),
                Lookup::RouteEvidence,
            ),
            // The destination itself answered net-unreachable: its address is reached, the
            // host behind it is not.
            Some((_, _, by)) => (
                Code::NoRoute,
                Cause::HostUnreachable,
                Layer::Route,
                format!("{by} answered the SYN with an ICMP net-unreachable"),
                Lookup::RouteEvidence,
            ),
            None => (
                Code::NetUnreachable,
                Cause::NetUnreachable,
                Layer::Route,
                "the network is unreachable".to_owned(),
                Lookup::Egress,
            ),
        },
        verdict::FIREWALL_REJECT_OTHER => (
            if obs.err == 101 { Code::NetUnreachable } else { Code::NoRoute },
            Cause::FirewallRejectIcmp,
            Layer::Firewall,
            match &icmp {
                Some((_, kind, _)) => format!("{} rejected the SYN with an ICMP {}", fw(), kind.words()),
                None => format!("{} rejected the SYN with an ICMP error", fw()),
            },
            Lookup::Firewall,
        ),
        _ => match obs.err {
            111 => (Code::Refused, Cause::Refused, Layer::Application, "the connection was refused".to_owned(), Lookup::None),
            110 => (Code::Timeout, Cause::NoReply, Layer::Route, "the connection timed out".to_owned(), Lookup::None),
            _ => return None,
        },
    };
    Some(Failure {
        code,
        cause,
        layer,
        errno: (obs.err != 0).then_some(obs.err),
        proc: obs.proc.clone(),
        src: obs.src,
        dst: obs.dst,
        summary,
        evidence: {
            let mut lines = evidence::conn_lines(obs);
            if let (Some(ifindex), Some(dst)) = (neighbour, obs.dst) {
                lines.push(format!(
                    "the neighbour entry for {} on interface index {ifindex} went FAILED (neigh tracepoints)",
                    dst.ip()
                ));
            }
            lines
        },
        duration_ns: obs.duration_ns,
        ts_ns: obs.ts_ns,
        count: 1,
        lookup,
        evidence_netns: if d.netns != 0 {
            d.netns
        } else {
            obs.proc.netns
        },
        firewall: FirewallSeen {
            outgoing: d.outgoing,
            incoming: d.incoming,
            ifindex: d.ifindex,
            verdict: match cause {
                Cause::FirewallRejectRst => FirewallVerdict::RejectedWithReset,
                Cause::FirewallRejectIcmp => FirewallVerdict::RejectedWithIcmp,
                _ => FirewallVerdict::Dropped,
            },
        },
        firewall_rule: None,
        host_name: None,
        user: None,
        records: 1,
        overload: None,
    })
}

/// What an event says where the kernel shows no drops.
const UNWATCHED: &str =
    "this kernel does not show packet drops, so a drop on this host cannot be ruled out";

/// The cause, layer and look-up of a timeout whose handshake this host dropped, by drop reason.
fn drop_cause(reason: &str, location: Option<&str>) -> (Cause, Layer, Lookup) {
    // ip_error: the namespace's route for the destination refused to forward it (an
    // `unreachable`, `prohibit` or `blackhole` route, or none), and no ICMP error came back
    // (rate-limited, or the route is a blackhole): the route says which.
    if location.is_some_and(|l| l.starts_with("ip_error+") || l.starts_with("ip6_pkt_drop")) {
        return (Cause::RouteRefused, Layer::Route, Lookup::Route);
    }
    match reason {
        // A strict reverse-path filter refuses a packet whose source is routed back out another
        // interface; the same check reports IP_INNOROUTES when no route back exists at all.
        "IP_RPFILTER" | "IP_INNOROUTES" => {
            (Cause::ReversePathDrop, Layer::Route, Lookup::ReversePath)
        }
        // The listener and its namespace's counters name the process and the queue.
        "TCP_LISTEN_OVERFLOW" | "SOCKET_BACKLOG" | "TCP_REQQFULLDROP" => (
            Cause::AcceptQueueFull,
            Layer::Application,
            Lookup::ListenQueue,
        ),
        "NEIGH_FAILED" | "NEIGH_QUEUEFULL" | "NEIGH_DEAD" | "NEIGH_CREATEFAIL" => {
            (Cause::NeighbourFailed, Layer::Link, Lookup::None)
        }
        r if r.starts_with("NF_") || r.contains("CONNTRACK") || r.starts_with("NETFILTER") => {
            (Cause::ConntrackDrop, Layer::Firewall, Lookup::None)
        }
        "IP_OUTNOROUTES" => (Cause::NoRoute, Layer::Route, Lookup::Route),
        _ => (Cause::HostDrop, Layer::Route, Lookup::None),
    }
}

#[cfg(test)]
mod tests;
