//! Applies the look-up a failure asks for (`failure::Lookup`) in the namespace where its evidence
//! is, and writes what it found into the failure: the summary sentence and one evidence line.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};

use super::acceptq::QueueWatch;
use super::firewall::{self, Attribution, Certainty, RuleKey};
use super::nftrace::{Armed, Flow, Tracer};
use super::{iptables, link, neigh, netns::run_in_netns, nft, ports, route};
use crate::failure::{Failure, FirewallRule, FirewallSeen, Lookup};
use crate::ladder::Cause;

/// Caches answers for a second per (lookup, namespace, address): a storm of identical failures
/// costs one netlink look-up, not one per connection.
#[derive(Default)]
pub struct Enricher {
    cache: HashMap<Key, (Instant, Result<Found, String>)>,
    /// Firewall rule counters as last read, per namespace: a rule whose counter rose since
    /// is one that dropped packets meanwhile.
    counters: HashMap<u32, HashMap<RuleKey, u64>>,
    /// `--trace-firewall`: traces the flows that firewall drops fail.
    tracer: Option<Tracer>,
    /// #025: whether to connect to a TLS peer to read the certificate it presents (`watch
    /// --probe-tls`, and `diagnose`); otherwise nothing connects anywhere.
    pub probe_tls: bool,
    /// #025: certificates read from TLS peers, per (namespace, peer, server name).
    tls_certs: HashMap<TlsKey, (Instant, Result<Option<super::tls::Cert>, String>)>,
    /// #023: the listen queues of the host's namespaces (`Lookup::ListenQueue`, and the
    /// server-side poll `watch` runs every second on a thread of its own: hence shared).
    pub queues: Arc<Mutex<QueueWatch>>,
}

type Key = (Lookup, u32, Option<SocketAddr>, Option<SocketAddr>);

/// (namespace, peer, server name, X509 code) of a certificate read from a TLS peer.
type TlsKey = (u32, SocketAddr, String, i32);

/// How long a certificate read from a TLS peer is reused (one handshake per peer and name).
const TLS_TTL: Duration = Duration::from_secs(5);
/// Connect and read timeout of that handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Found {
    /// Replaces the failure's summary; None keeps it.
    summary: Option<String>,
    evidence: String,
    /// Replaces the failure's cause when the look-up tells it more precisely than the kernel.
    cause: Option<Cause>,
}

impl Enricher {
    const TTL: Duration = Duration::from_secs(1);
    const MAX: usize = 4096;

    /// An enricher that also traces failing flows through nftables (`--trace-firewall`).
    pub fn tracing() -> Self {
        Enricher {
            tracer: Some(Tracer::new()),
            ..Enricher::default()
        }
    }

    /// Reads the trace messages waiting, so the kernel never has to discard them.
    pub fn poll_traces(&mut self) {
        if let Some(t) = &mut self.tracer {
            t.poll();
        }
    }

    pub fn enrich(&mut self, f: &mut Failure) {
        self.look_up(f);
        // After the look-up, which may rewrite the summary: the name's resolution (#024, or
        // the /etc/hosts entry a failed connection's address came from) is added to it.
        super::dns::explain_failure(f);
    }

    fn look_up(&mut self, f: &mut Failure) {
        if f.lookup == Lookup::None {
            return;
        }
        if f.lookup == Lookup::Firewall {
            self.firewall(f);
            return;
        }
        if f.lookup == Lookup::ListenQueue {
            self.queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .explain_timeout(f, crate::clock::monotonic_ns());
            return;
        }
        if let Lookup::TlsChain { code, name, asked } = f.lookup {
            self.tls_chain(f, code, name.as_str(), asked.as_str());
            return;
        }
        let key = (f.lookup, f.evidence_netns, f.src, f.dst);
        let now = Instant::now();
        let fresh = self
            .cache
            .get(&key)
            .is_some_and(|(at, _)| now.duration_since(*at) < Self::TTL);
        if !fresh {
            if self.cache.len() >= Self::MAX {
                self.cache
                    .retain(|_, (at, _)| now.duration_since(*at) < Self::TTL);
            }
            let found = look_up(f).map_err(|e| format!("{e:#}"));
            self.cache.insert(key, (now, found));
        }
        match &self.cache[&key].1 {
            Ok(found) => {
                if let Some(summary) = &found.summary {
                    f.summary = summary.clone();
                }
                if let Some(cause) = found.cause {
                    f.cause = cause;
                }
                f.evidence.push(found.evidence.clone());
            }
            Err(e) => f
                .evidence
                .push(format!("could not look up the details: {e}")),
        }
    }

    /// #025: the system clock for the time-related X509 errors, and (with `probe_tls`) the
    /// certificate the peer presents: read with one handshake from the client's own namespace
    /// toward the address the client itself connected to, at most once per peer, name and X509
    /// code every `TLS_TTL`.
    fn tls_chain(&mut self, f: &mut Failure, code: i32, name: &str, asked: &str) {
        let now = std::time::SystemTime::now();
        if crate::classify::tls::time_related(code) {
            f.evidence.push(format!(
                "the system clock says {} (a clock far off makes valid certificates look expired or not yet valid)",
                super::tls::date(now)
            ));
        }
        let Some(peer) = f.dst else {
            return;
        };
        if !self.probe_tls {
            f.evidence.push(format!(
                "the certificate {peer} presents was not read: netladder makes no connection of \
                 its own unless asked (`--probe-tls` adds its dates and names, read against the \
                 name asked for and the clock)"
            ));
            return;
        }
        let key = (f.evidence_netns, peer, name.to_owned(), code);
        let at = Instant::now();
        let fresh = self
            .tls_certs
            .get(&key)
            .is_some_and(|(t, _)| at.duration_since(*t) < TLS_TTL);
        if !fresh {
            if self.tls_certs.len() >= Self::MAX {
                self.tls_certs
                    .retain(|_, (t, _)| at.duration_since(*t) < TLS_TTL);
            }
            let server = if name.is_empty() {
                peer.ip().to_string()
            } else {
                name.to_owned()
            };
            let read = in_evidence_netns(f, move || -> Result<Option<super::tls::Cert>> {
                let stream = std::net::TcpStream::connect_timeout(&peer, TLS_TIMEOUT)?;
                super::tls::presented_leaf(stream, &server, TLS_TIMEOUT)
            })
            .and_then(|r| r)
            .map_err(|e| format!("{e:#}"));
            self.tls_certs.insert(key.clone(), (at, read));
        }
        match &self.tls_certs[&key].1 {
            Ok(Some(cert)) => {
                let (summary, line) = super::tls::openssl_detail(code, cert, asked, now);
                if let Some(s) = summary {
                    f.summary = s;
                }
                f.evidence.push(format!(
                    "{line} (read from {peer} in netns {})",
                    f.evidence_netns
                ));
            }
            Ok(None) => f.evidence.push(format!(
                "{peer} presented no certificate when netladder asked for it"
            )),
            Err(e) => f.evidence.push(format!(
                "could not read the certificate {peer} presents: {e}"
            )),
        }
    }

    /// Names the rule that dropped or rejected the failure's handshake. Not cached: each read
    /// refreshes the counters the next attribution compares with.
    fn firewall(&mut self, f: &mut Failure) {
        let (Some(src), Some(dst)) = (f.src, f.dst) else {
            return;
        };
        let netns = f.evidence_netns;
        let seen = f.firewall;
        let read = in_evidence_netns(f, move || read_firewall(src, dst, &seen));
        let (rules, notes) = match read {
            Ok(found) => found,
            Err(e) => {
                f.evidence
                    .push(format!("could not read the firewall rules: {e:#}"));
                return;
            }
        };
        let before = self.counters.remove(&netns).unwrap_or_default();
        let traced = self.tracer.as_mut().and_then(|t| t.hit(netns, src, dst));
        let att = match &traced {
            Some(hit) => firewall::attribute_traced(&rules, &before, hit),
            None => firewall::attribute(&rules, &before, &seen),
        };
        // The next baseline is this read: rules deleted meanwhile are forgotten, and the
        // namespaces remembered stay bounded like the look-up cache.
        if self.counters.len() >= Self::MAX {
            self.counters.clear();
        }
        let now: HashMap<RuleKey, u64> = rules
            .iter()
            .filter_map(|r| Some((firewall::key(r), r.packets?)))
            .collect();
        self.counters.insert(netns, now);
        if let Attribution::Rule {
            rule,
            delta,
            certainty,
            ..
        } = &att
        {
            f.summary = format!(
                "{}: {} {}",
                f.summary,
                rule.backend.name(),
                firewall::describe_rule(rule)
            );
            f.firewall_rule = Some(FirewallRule {
                backend: rule.backend.name(),
                family: rule.family.clone(),
                table: rule.table.clone(),
                chain: rule.chain.clone(),
                hook: rule.hook.map(firewall::Hook::name),
                priority: rule.priority,
                rule: rule.id.clone(),
                text: rule.text.clone(),
                packets: *delta,
                certainty: match certainty {
                    Certainty::Certain => "certain",
                    Certainty::Likely => "likely",
                    Certainty::Traced => "traced",
                },
            });
        }
        f.evidence.push(format!(
            "{} (rules and counters read in netns {netns})",
            firewall::describe(&att, &seen)
        ));
        if let Attribution::Rule { rule, .. } = &att {
            f.evidence.extend(firewall::hint(rule));
        }
        f.evidence.extend(notes);
        if traced.is_none() {
            if let Some(line) = self.trace_next(f, src, dst) {
                f.evidence.push(line);
            }
        }
    }

    /// With `--trace-firewall`, has the flow of a failure the trace did not explain traced
    /// from now on; returns the evidence line that says so (or why not).
    fn trace_next(&mut self, f: &Failure, src: SocketAddr, dst: SocketAddr) -> Option<String> {
        let tracer = self.tracer.as_mut()?;
        let netns = f.evidence_netns;
        let flow = Flow {
            src: src.ip(),
            dst: dst.ip(),
            dport: dst.port(),
        };
        let hint = (netns == f.proc.netns).then_some(f.proc.pid);
        let lost = match tracer.overruns(netns) {
            0 => String::new(),
            n => format!(" ({n} trace reads overran: messages may be missing)"),
        };
        Some(match tracer.arm(netns, hint, flow) {
            Ok(Armed::New) => format!(
                "--trace-firewall: the next connections from {} to {dst} are traced through nftables in netns {netns} (table {}); their failures will name the rule from the kernel's trace",
                src.ip(),
                tracer.table()
            ),
            Ok(Armed::Already) => format!(
                "--trace-firewall: no nftables rule or policy was traced dropping this connection: the drop came from outside nftables (iptables-legacy, connection tracking...) or the connection began before tracing did{lost}"
            ),
            Err(e) => format!("--trace-firewall: could not trace this flow: {e:#}"),
        })
    }
}

/// Every drop/reject rule of the calling thread's namespace, nftables and iptables-legacy,
/// matched against the handshake's SYN; plus a note for each backend that could not be read.
fn read_firewall(
    src: SocketAddr,
    dst: SocketAddr,
    seen: &FirewallSeen,
) -> (Vec<firewall::Rule>, Vec<String>) {
    let dev = (seen.ifindex != 0).then(|| if_name(seen.ifindex)).flatten();
    let packet = firewall::Packet {
        l4proto: 6,
        src,
        dst,
        iif: dev.clone().filter(|_| seen.incoming && !seen.outgoing),
        oif: dev.filter(|_| seen.outgoing && !seen.incoming),
    };
    let mut rules = Vec::new();
    let mut notes = Vec::new();
    match nft::terminal_rules(&packet) {
        Ok(r) => rules.extend(r),
        Err(e) => notes.push(format!("could not read the nftables rules: {e:#}")),
    }
    match iptables::terminal_rules(&packet) {
        Ok(r) => rules.extend(r),
        Err(e) => notes.push(format!("could not read the iptables-legacy rules: {e:#}")),
    }
    (rules, notes)
}

/// The name of interface `index` in the calling thread's namespace.
fn if_name(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Runs `g` in the failure's evidence namespace.
fn in_evidence_netns<T: Send + 'static>(
    f: &Failure,
    g: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let netns = f.evidence_netns;
    // The pid helps find the namespace only when it is the process's own.
    let hint = (netns == f.proc.netns).then_some(f.proc.pid);
    run_in_netns(u64::from(netns), hint, g)
}

/// Runs the failure's look-up inside its evidence namespace.
fn look_up(f: &Failure) -> Result<Found> {
    let (lookup, src, dst, pid) = (f.lookup, f.src, f.dst, f.proc.pid);
    let where_ = format!("in netns {}", f.evidence_netns);
    if lookup == Lookup::ReversePath {
        let ifindex = f.firewall.ifindex;
        return in_evidence_netns(f, move || reverse_path(src, dst, ifindex, &where_))?;
    }
    let mut found = in_evidence_netns(f, move || in_namespace(lookup, src, dst, pid, &where_))??;
    // The route that failed is another namespace's of this host (where the packet was dropped:
    // a router's): say whose, and how the client reaches it.
    if lookup == Lookup::Route && f.evidence_netns != f.proc.netns {
        if let (Some(summary), Some(dst)) = (found.summary.as_mut(), dst) {
            let netns = f.evidence_netns;
            *summary = match client_next_hop(f, dst.ip()) {
                Some(gw) => format!(
                    "the router reached via {gw} (network namespace {netns} on this host) has \
                     no usable route onward: {summary}"
                ),
                None => format!("in network namespace {netns} on this host: {summary}"),
            };
        }
    }
    Ok(found)
}

/// The gateway of the client's own route to `dst` (its namespace, entered through the process),
/// when it has one.
fn client_next_hop(f: &Failure, dst: IpAddr) -> Option<IpAddr> {
    run_in_netns(u64::from(f.proc.netns), Some(f.proc.pid), move || {
        route::route_get(dst).ok()
    })
    .ok()
    .flatten()
    .and_then(|info| match info {
        route::RouteInfo::Found(r) => r.gateway,
        route::RouteInfo::Refused { .. } => None,
    })
}

fn need<T>(v: Option<T>, what: &str) -> Result<T> {
    v.ok_or_else(|| anyhow!("the event has no {what}"))
}

fn in_namespace(
    lookup: Lookup,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    pid: u32,
    where_: &str,
) -> Result<Found> {
    Ok(match lookup {
        Lookup::None
        | Lookup::Firewall
        | Lookup::ListenQueue
        | Lookup::TlsChain { .. }
        | Lookup::ReversePath => {
            unreachable!("callers handle these")
        }
        Lookup::Listeners => {
            let dst = need(dst, "destination")?;
            Found {
                cause: None,
                summary: Some(super::refused_sentence(dst)?),
                evidence: format!(
                    "listeners on port {} checked over sock_diag {where_}",
                    dst.port()
                ),
            }
        }
        Lookup::Route | Lookup::RouteEvidence => {
            let ip = need(dst, "destination")?.ip();
            let info = route::route_get(ip)?;
            let defaults = route::default_routes(route::Family::of(ip))?;
            let sentence = route::describe_route(ip, &info, &defaults);
            let how = format!("route look-up over rtnetlink {where_} (as `ip route get {ip}`)");
            if lookup == Lookup::Route {
                Found {
                    cause: None,
                    summary: Some(sentence),
                    evidence: how,
                }
            } else {
                Found {
                    cause: None,
                    summary: None,
                    evidence: format!("{sentence} ({how})"),
                }
            }
        }
        Lookup::Egress => {
            let ip = need(dst, "destination")?.ip();
            let info = route::route_get(ip).ok();
            let links = link::links_and_addrs()?;
            let mut summary = link::describe_egress(ip, &links, info.as_ref());
            if route::default_routes(route::Family::of(ip))?.is_empty() {
                summary.push_str("; and no default route in table main");
            }
            Found {
                cause: None,
                summary: Some(summary),
                evidence: format!("interfaces, addresses and routes read over rtnetlink {where_}"),
            }
        }
        Lookup::Neighbour => {
            let ip = need(dst, "destination")?.ip();
            let (next_hop, dev) = next_hop(ip)?;
            let table = neigh::neighbours(dev)?;
            Found {
                cause: None,
                // The kernel saw the resolution fail; the table may have moved on (re-probing).
                summary: Some(format!(
                    "address resolution failed: {}",
                    neigh::describe_neighbour(next_hop, &table)
                )),
                evidence: format!("neighbour table read over rtnetlink {where_}"),
            }
        }
        Lookup::Holders => {
            let port = need(src, "local address")?.port();
            // The failing socket itself is bound to the port too: it is not a holder.
            let holders: Vec<_> = ports::port_holders(port)?
                .into_iter()
                .filter(|h| {
                    !(h.state == "BOUND" && h.owner.as_ref().is_some_and(|(p, _)| *p == pid))
                })
                .collect();
            Found {
                cause: None,
                summary: Some(ports::describe_addr_in_use(port, &holders)),
                evidence: format!("sockets on port {port} read over sock_diag {where_}"),
            }
        }
        Lookup::Ports => {
            let dst = need(dst, "destination")?;
            let usage = ports::port_use(Some(dst))?;
            Found {
                cause: None,
                summary: Some(ports::describe_port_exhaustion(
                    dst,
                    ports::port_range()?,
                    ports::tw_reuse()?,
                    &usage,
                )),
                evidence: format!(
                    "ip_local_port_range, tcp_tw_reuse and sockets toward {dst} read {where_}"
                ),
            }
        }
    })
}

/// Why a namespace of this host dropped a SYN on input with no route (IP_INNOROUTES or
/// IP_RPFILTER), in the calling thread's namespace: the reverse-path filter (its settings, the
/// interface the SYN came in on, and the interface the route back to the client leaves by), or
/// no route to the destination at all.
fn reverse_path(
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    ifindex: u32,
    where_: &str,
) -> Result<Found> {
    let client = need(src, "source address")?.ip();
    let target = need(dst, "destination")?.ip();
    let came_in = (ifindex != 0).then(|| route::Dev::from_index(ifindex).name);
    let sysctl = |dev: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
    };
    let all = sysctl("all");
    let own = came_in.as_deref().and_then(sysctl);
    // The kernel applies the larger of the two settings.
    let effective = all.max(own);
    let mode = |v: Option<u8>| match v {
        Some(0) => "0 (off)".to_owned(),
        Some(1) => "1 (strict)".to_owned(),
        Some(2) => "2 (loose)".to_owned(),
        Some(n) => n.to_string(),
        None => "unknown".to_owned(),
    };
    let back = match route::route_get(client) {
        Ok(route::RouteInfo::Found(r)) => r.dev.map(|d| d.name),
        _ => None,
    };
    let came = came_in
        .clone()
        .unwrap_or_else(|| "an unknown interface".into());
    let filtering = effective.is_some_and(|m| m > 0);
    let mut cause = Cause::ReversePathDrop;
    let summary = match (&back, came_in.as_deref()) {
        (Some(out), Some(inn)) if filtering && effective == Some(1) && out != inn => format!(
            "asymmetric routing: the SYN from {client} came in on {inn}, but the route back to {client} leaves by {out}, and the strict reverse-path filter (rp_filter {}) drops such packets",
            mode(effective)
        ),
        (None, _) if filtering => format!(
            "the SYN from {client} came in on {came} and there is no route back to {client}: the reverse-path filter (rp_filter {}) drops it",
            mode(effective)
        ),
        _ => {
            cause = Cause::NoRouteOnInput;
            let defaults = route::default_routes(route::Family::of(target))?;
            let info = route::route_get(target)?;
            format!(
                "the SYN came in on {came} and this namespace could not route it on: {}",
                route::describe_route(target, &info, &defaults)
            )
        }
    };
    Ok(Found {
        cause: Some(cause),
        summary: Some(summary),
        evidence: format!(
            "rp_filter: all={}, {came}={}; route back to {client}: {} (read over rtnetlink and /proc/sys {where_})",
            mode(all),
            mode(own),
            back.as_deref().unwrap_or("none")
        ),
    })
}

/// The address ARP/ND resolves for `dst`: the route's gateway, or `dst` itself on a link.
fn next_hop(dst: IpAddr) -> Result<(IpAddr, Option<u32>)> {
    match route::route_get(dst)? {
        route::RouteInfo::Found(r) => Ok((r.gateway.unwrap_or(dst), r.dev.map(|d| d.index))),
        route::RouteInfo::Refused { .. } => Ok((dst, None)),
    }
}
