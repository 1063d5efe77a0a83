//! The classifier: a pure state machine from kernel observations to failures.
//!
//! It never touches the kernel. It turns one connection summary (and the synchronous syscall error
//! that may accompany it) into one `Failure` with its ladder code, layer, cause and evidence, and it
//! merges duplicates and out-of-order arrivals: a connect() error seen before or after the
//! connection's own summary, or the same summary delivered twice, yields one failure.
use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    net::IpAddr,
};

use netladder_common::{eflag, kind, verdict, AggKey};

use crate::failure::{
    Drops, Failure, FirewallSeen, FirewallVerdict, Kind, Ledger, Lookup, Observation, Proc,
};
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
        let summary = format!("{summary}: {} failed at once", evidence::call_words(call));
        Some(Failure {
            errno: Some(obs.err),
            evidence: vec![if obs.flags & eflag::ROUTE_LOOKUP != 0 {
                evidence::route_lookup_line(call, obs.err)
            } else if obs.flags & eflag::NO_LOCAL_PORT != 0 {
                evidence::no_local_port_line()
            } else if obs.flags & eflag::BIND_INCOMPLETE != 0 {
                evidence::bind_incomplete_line(obs.err)
            } else if obs.flags & eflag::LISTEN_STATE != 0 {
                evidence::listen_state_line()
            } else {
                evidence::syscall_line(call, obs.err)
            }],
            src: obs.src,
            dst: obs.dst,
            lookup,
            ..Failure::new(code, cause, layer, summary, obs.proc, obs.ts_ns)
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
        errno: (obs.err != 0).then_some(obs.err),
        src: obs.src,
        dst: obs.dst,
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
        ..Failure::new(code, cause, layer, summary, obs.proc.clone(), obs.ts_ns)
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
