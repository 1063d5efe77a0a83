//! `netladder diagnose HOST[:PORT]`: walks the ladder for one target, link -> address -> route
//! -> firewall -> DNS -> application, in this process's network namespace, and stops at the
//! first rung that is broken. Lower rungs read the kernel's own tables (rtnetlink, nf_tables);
//! the application rung makes a real connection while the eBPF programs watch it (`probe`), so
//! its verdict carries the same kernel evidence as a `watch` event.

mod probe;
pub(crate) mod target;

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::classify::Failure;
use crate::cli::DiagnoseArgs;
use crate::enrich::{dns, firewall, iptables, link, neigh, nft, route, tls};
use crate::ladder::{self, Layer, StepCtx};
use crate::{output, watch};

use target::Host;

/// Exit statuses (also in `cli::DIAGNOSE_EXIT` and the README).
pub const EXIT_REACHABLE: i32 = 0;
pub const EXIT_RUNG_FAILED: i32 = 3;

/// A rung's state in the checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    /// Passed, with something the operator should know.
    Warning,
    Failed,
    /// Not checked: a lower rung failed, or it does not apply.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub rung: Layer,
    pub status: Status,
    pub summary: String,
    pub evidence: Vec<String>,
}

/// The ladder order.
const ORDER: [Layer; 6] = [
    Layer::Link,
    Layer::Address,
    Layer::Route,
    Layer::Firewall,
    Layer::Dns,
    Layer::Application,
];

/// Why the target is not reachable.
struct Verdict {
    code: u16,
    cause: &'static str,
    /// The rung that broke.
    rung: Layer,
    summary: String,
    evidence: Vec<String>,
    next: Vec<String>,
    /// The kernel's classified failure, when the probe made one (rendered as `watch` does).
    failure: Option<Failure>,
}

struct Walk {
    checks: Vec<Check>,
    verdict: Option<Verdict>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            checks: ORDER
                .iter()
                .map(|&rung| Check {
                    rung,
                    status: Status::Skipped,
                    summary: "not checked: a lower rung failed".into(),
                    evidence: Vec::new(),
                })
                .collect(),
            verdict: None,
        }
    }

    fn set(&mut self, rung: Layer, status: Status, summary: String, evidence: Vec<String>) {
        if let Some(c) = self.checks.iter_mut().find(|c| c.rung == rung) {
            *c = Check {
                rung,
                status,
                summary,
                evidence,
            };
        }
    }

    fn get(&mut self, rung: Layer) -> &mut Check {
        self.checks
            .iter_mut()
            .find(|c| c.rung == rung)
            .expect("every rung is in the walk")
    }

    /// Marks `rung` failed with the verdict's words, and keeps the verdict.
    fn fail(&mut self, v: Verdict) {
        let mut evidence = v.evidence.clone();
        let c = self.get(v.rung);
        if c.status != Status::Skipped {
            // The static reading passed; the connection proved otherwise. Keep both.
            evidence.insert(0, format!("before the connection: {}", c.summary));
        }
        self.set(v.rung, Status::Failed, v.summary.clone(), evidence);
        self.verdict = Some(v);
    }
}

pub fn run(args: DiagnoseArgs) -> Result<i32> {
    let tls_default = if args.tls { 443 } else { 80 };
    let target = target::parse(&args.target, tls_default).map_err(|e| anyhow!(e))?;
    if !(args.timeout > 0.0 && args.timeout <= 600.0) {
        bail!("--timeout must be a number of seconds above 0 and at most 600");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let use_tls = args.tls || target.port == 443;
    for ca in &args.ca {
        if !ca.is_file() {
            bail!("--ca {}: no such file", ca.display());
        }
    }
    let mut walk = Walk::new();
    let mut addresses = Vec::new();

    // The name is resolved first, since the lower rungs need an address; it is reported at its
    // own rung. When it does not resolve, the lower rungs are checked toward the nameserver.
    let (dns_check, resolved, nameserver) = match &target.host {
        Host::Ip(ip) => (
            Check {
                rung: Layer::Dns,
                status: Status::Skipped,
                summary: "the target is an address: nothing to resolve".into(),
                evidence: Vec::new(),
            },
            vec![*ip],
            None,
        ),
        Host::Name(name) => check_dns(name),
    };
    addresses.extend(resolved.iter().copied());
    let toward = match (resolved.first(), nameserver) {
        (Some(ip), _) => Some((*ip, target.port, None)),
        (None, Some(ns)) => Some((
            ns,
            53,
            Some(format!(
                "checked toward nameserver {ns}, since {} did not resolve",
                target.host.text()
            )),
        )),
        (None, None) => None,
    };

    let mut probe_dst = None;
    match toward {
        Some((ip, port, note)) => {
            let dst = SocketAddr::new(ip, port);
            if let Some(v) = lower_rungs(&mut walk, dst, note.as_deref())? {
                walk.fail(v);
            } else {
                firewall_rung(&mut walk, dst);
                probe_dst = Some(dst);
            }
        }
        None => {
            for rung in [Layer::Link, Layer::Address, Layer::Route, Layer::Firewall] {
                walk.set(
                    rung,
                    Status::Skipped,
                    "not checked: no address to check toward (the name did not resolve and \
                     /etc/resolv.conf names no nameserver)"
                        .into(),
                    Vec::new(),
                );
            }
        }
    }
    if walk.verdict.is_none() {
        let dns_failed = dns_check.status == Status::Failed;
        let (summary, evidence) = (dns_check.summary.clone(), dns_check.evidence.clone());
        walk.set(
            Layer::Dns,
            dns_check.status,
            summary.clone(),
            evidence.clone(),
        );
        if dns_failed {
            let name = target.host.text();
            walk.fail(Verdict {
                code: 24,
                cause: "dns",
                rung: Layer::Dns,
                summary,
                evidence,
                next: ladder::next_steps(
                    24,
                    "",
                    &StepCtx {
                        dst: probe_dst.filter(|d| d.port() == 53),
                        host_name: Some(name),
                        ..StepCtx::default()
                    },
                ),
                failure: None,
            });
        }
    }
    if walk.verdict.is_none() {
        if let Some(dst) = probe_dst {
            application_rung(&mut walk, dst, &target.host, use_tls, &args, timeout)?;
        }
    }
    let report = Report {
        target: &args.target,
        host: target.host.text(),
        port: target.port,
        tls: use_tls,
        addresses,
        walk,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", report.text(color));
    }
    Ok(if report.walk.verdict.is_some() {
        EXIT_RUNG_FAILED
    } else {
        EXIT_REACHABLE
    })
}

/// The DNS rung for a name: the system resolver, each nameserver asked directly, /etc/hosts.
/// Returns the check, the addresses programs would use, and a nameserver to check the lower
/// rungs toward when the name did not resolve.
fn check_dns(name: &str) -> (Check, Vec<IpAddr>, Option<IpAddr>) {
    let system = dns::system_resolve(name);
    let conf = dns::resolv_conf();
    let hosts = dns::etc_hosts(name);
    let mut evidence = Vec::new();
    let mut warnings = Vec::new();
    match &system {
        dns::SystemAnswer::Addrs(a) => {
            evidence.push(format!("system resolver (getaddrinfo): {}", join(a)))
        }
        dns::SystemAnswer::Failed {
            name: eai, message, ..
        } => evidence.push(format!("system resolver (getaddrinfo): {eai} ({message})")),
    }
    if !hosts.is_empty() {
        evidence.push(format!("/etc/hosts has {name}: {}", join(&hosts)));
    }
    // glibc asks at most three nameservers.
    let mut answers = Vec::new();
    for server in conf.nameservers.iter().take(3) {
        let a = dns::ask(*server, name, Duration::from_secs(2));
        evidence.push(format!("nameserver {server}: {}", a.describe()));
        answers.push((*server, a));
    }
    if conf.nameservers.is_empty() {
        evidence.push("/etc/resolv.conf names no nameserver".into());
    }
    if !name.contains('.') && !conf.search.is_empty() {
        evidence.push(format!(
            "the system resolver also tries the search domains ({}); the nameservers were asked \
             for {name} as written",
            conf.search.join(", ")
        ));
    }
    let answered: Vec<Vec<IpAddr>> = answers
        .iter()
        .map(|(_, a)| {
            let mut v = a.addrs();
            v.sort();
            v
        })
        .filter(|a| !a.is_empty())
        .collect();
    let silent: Vec<String> = answers
        .iter()
        .filter(|(_, a)| matches!(a, dns::ServerAnswer::NoAnswer(_)))
        .map(|(s, _)| s.to_string())
        .collect();
    let nameserver = conf.nameservers.first().copied();
    match system {
        dns::SystemAnswer::Addrs(addrs) => {
            if answered.windows(2).any(|w| w[0] != w[1]) {
                warnings.push("the nameservers give different answers".to_owned());
            }
            if !silent.is_empty() && !answered.is_empty() {
                warnings.push(format!("nameserver {} did not answer", silent.join(", ")));
            }
            let dns_addrs: Vec<IpAddr> = answered.iter().flatten().copied().collect();
            if !hosts.is_empty()
                && !dns_addrs.is_empty()
                && hosts.iter().any(|h| !dns_addrs.contains(h))
            {
                warnings.push(format!(
                    "/etc/hosts overrides DNS: it gives {}, DNS gives {}",
                    join(&hosts),
                    join(&dns_addrs)
                ));
            }
            let source = if !hosts.is_empty() && addrs.iter().all(|a| hosts.contains(a)) {
                " (from /etc/hosts)"
            } else {
                ""
            };
            let mut summary = format!("{name} resolves to {}{source}", join(&addrs));
            let status = if warnings.is_empty() {
                Status::Passed
            } else {
                summary += &format!("; but {}", warnings.join("; "));
                Status::Warning
            };
            (
                Check {
                    rung: Layer::Dns,
                    status,
                    summary,
                    evidence,
                },
                addrs,
                nameserver,
            )
        }
        dns::SystemAnswer::Failed { code, message, .. } => {
            let nx: Vec<String> = answers
                .iter()
                .filter(|(_, a)| a.nxdomain())
                .map(|(s, _)| s.to_string())
                .collect();
            let summary = if !nx.is_empty() {
                format!(
                    "{name} does not exist: nameserver {} answered NXDOMAIN",
                    nx.join(", ")
                )
            } else if !answers.is_empty() && silent.len() == answers.len() {
                format!(
                    "{name} could not be resolved: no nameserver answered ({})",
                    silent.join(", ")
                )
            } else if code == libc::EAI_NONAME || code == libc::EAI_NODATA {
                format!("{name} has no address record ({message})")
            } else {
                format!("{name} could not be resolved: {message}")
            };
            (
                Check {
                    rung: Layer::Dns,
                    status: Status::Failed,
                    summary,
                    evidence,
                },
                Vec::new(),
                nameserver,
            )
        }
    }
}

/// Link, address and route toward `dst`, from rtnetlink. Returns the verdict of the first one
/// that fails. `note`: why this destination (the nameserver instead of the target).
fn lower_rungs(walk: &mut Walk, dst: SocketAddr, note: Option<&str>) -> Result<Option<Verdict>> {
    let ip = dst.ip();
    let info = route::route_get(ip)?;
    let links = link::links_and_addrs()?;
    let defaults = route::default_routes(route::Family::of(ip))?;
    let base: Vec<String> = note.map(str::to_owned).into_iter().collect();
    let with = |mut more: Vec<String>| {
        let mut e = base.clone();
        e.append(&mut more);
        e
    };
    let how = format!("read over rtnetlink (as `ip route get {ip}`, `ip -br link`, `ip -br addr`)");
    let family = route::Family::of(ip);
    let same_family = |a: &route::Prefix| a.addr.is_ipv4() == ip.is_ipv4() && !a.addr.is_loopback();
    let verdict =
        |code: u16, cause: &'static str, rung: Layer, summary: String, evidence| Verdict {
            code,
            cause,
            rung,
            next: ladder::next_steps(
                code,
                cause,
                &StepCtx {
                    dst: Some(dst),
                    ..StepCtx::default()
                },
            ),
            summary,
            evidence,
            failure: None,
        };
    let r = match &info {
        route::RouteInfo::Found(r) => r.clone(),
        route::RouteInfo::Refused { errno, .. } => {
            let sentence = link::describe_egress(ip, &links, Some(&info));
            let down = links.iter().find(|l| {
                !l.usable()
                    && l.addrs
                        .iter()
                        .any(|a| same_family(a) && a.len > 0 && a.contains(ip))
            });
            let has_family = links.iter().any(|l| l.addrs.iter().any(&same_family));
            let up: Vec<&str> = links
                .iter()
                .filter(|l| l.usable() && l.name != "lo")
                .map(|l| l.name.as_str())
                .collect();
            if *errno == libc::ENETUNREACH {
                if down.is_some() {
                    return Ok(Some(verdict(
                        26,
                        "net_unreachable",
                        Layer::Link,
                        sentence,
                        with(vec![how]),
                    )));
                }
                walk.set(
                    Layer::Link,
                    Status::Passed,
                    format!("interfaces up: {}", list_or_none(&up)),
                    with(vec![how.clone()]),
                );
                if !has_family {
                    return Ok(Some(verdict(
                        26,
                        "net_unreachable",
                        Layer::Address,
                        format!("no interface has an {} address: {sentence}", family.name()),
                        with(vec![how]),
                    )));
                }
                walk.set(
                    Layer::Address,
                    Status::Passed,
                    format!("interfaces have {} addresses", family.name()),
                    with(vec![addresses_line(&links)]),
                );
                return Ok(Some(verdict(
                    26,
                    "net_unreachable",
                    Layer::Route,
                    route::describe_route(ip, &info, &defaults),
                    with(vec![how]),
                )));
            }
            walk.set(
                Layer::Link,
                Status::Passed,
                format!("interfaces up: {}", list_or_none(&up)),
                with(vec![how.clone()]),
            );
            walk.set(
                Layer::Address,
                if has_family {
                    Status::Passed
                } else {
                    Status::Warning
                },
                format!(
                    "{} {} addresses",
                    if has_family {
                        "interfaces have"
                    } else {
                        "no interface has"
                    },
                    family.name()
                ),
                with(vec![addresses_line(&links)]),
            );
            let cause = match *errno {
                libc::EACCES => "route_prohibited",
                libc::EHOSTUNREACH => "host_unreachable",
                _ => "route_refused",
            };
            return Ok(Some(verdict(
                22,
                cause,
                Layer::Route,
                route::describe_route(ip, &info, &defaults),
                with(vec![format!(
                    "the kernel refuses the look-up: {} ({how})",
                    std::io::Error::from_raw_os_error(*errno)
                )]),
            )));
        }
    };
    if r.kind == route::RouteKind::Local {
        let line = format!("{ip} is an address of this host: the connection stays on it");
        for rung in [Layer::Link, Layer::Address, Layer::Route] {
            walk.set(rung, Status::Passed, line.clone(), with(vec![how.clone()]));
        }
        return Ok(None);
    }
    // Link: the egress interface and, for a VLAN, its parent.
    let egress = r
        .dev
        .as_ref()
        .and_then(|d| links.iter().find(|l| l.index == d.index));
    let Some(egress) = egress else {
        walk.set(
            Layer::Link,
            Status::Warning,
            "the route names no interface this namespace shows".into(),
            with(vec![how.clone()]),
        );
        walk.set(
            Layer::Address,
            Status::Skipped,
            "no egress interface".into(),
            Vec::new(),
        );
        walk.set(
            Layer::Route,
            Status::Passed,
            route::describe_route(ip, &info, &defaults),
            with(vec![how]),
        );
        return Ok(None);
    };
    let parent = egress
        .vlan
        .as_ref()
        .and_then(|v| links.iter().find(|l| l.index == v.parent.index));
    let vlan = egress.vlan.as_ref().map_or(String::new(), |v| {
        format!(", VLAN {} on {}", v.id, v.parent.name)
    });
    let link_line = format!(
        "egress {}: {}, carrier {}, state {}{vlan}",
        egress.name,
        if egress.admin_up { "up" } else { "down" },
        if egress.carrier { "yes" } else { "no" },
        egress.oper_state
    );
    if !egress.usable() || parent.is_some_and(|p| !p.usable()) {
        return Ok(Some(verdict(
            26,
            "link_down",
            Layer::Link,
            link::describe_egress(ip, &links, Some(&info)),
            with(vec![link_line, how]),
        )));
    }
    walk.set(
        Layer::Link,
        Status::Passed,
        format!("{} is up with carrier{vlan}", egress.name),
        with(vec![link_line]),
    );
    // Address: a source of the destination's family on the egress interface.
    let sources: Vec<String> = egress
        .addrs
        .iter()
        .filter(|a| {
            same_family(a)
                && !matches!(a.addr, IpAddr::V6(v6) if v6.is_unicast_link_local()
                    && !matches!(ip, IpAddr::V6(d) if d.is_unicast_link_local()))
        })
        .map(ToString::to_string)
        .collect();
    let src_line = r.pref_src.map_or(String::new(), |s| {
        format!("; the kernel would use source {s}")
    });
    if sources.is_empty() {
        walk.set(
            Layer::Address,
            Status::Warning,
            format!(
                "{} has no {} address of its own{src_line}",
                egress.name,
                family.name()
            ),
            with(vec![addresses_line(&links)]),
        );
    } else {
        walk.set(
            Layer::Address,
            Status::Passed,
            format!("{} has {}{src_line}", egress.name, sources.join(", ")),
            Vec::new(),
        );
    }
    // Route: what the kernel picks, the default routes, and the next hop's neighbour entry.
    let mut evidence = with(vec![how]);
    evidence.push(match defaults.first() {
        Some(_) => format!(
            "default route{}: {}",
            if defaults.len() == 1 { "" } else { "s" },
            defaults
                .iter()
                .map(
                    |d| route::describe_route(ip, &route::RouteInfo::Found(d.clone()), &[])
                        .replacen(&format!("route to {ip}: "), "", 1)
                )
                .collect::<Vec<_>>()
                .join("; ")
        ),
        None => format!("no {} default route in table main", family.name()),
    });
    let mut status = Status::Passed;
    if r.kind == route::RouteKind::Unicast {
        let hop = r.gateway.unwrap_or(ip);
        let table = neigh::neighbours(Some(egress.index)).unwrap_or_default();
        let sentence = neigh::describe_neighbour(hop, &table);
        if table.iter().any(|n| n.addr == hop && n.state == "FAILED") {
            status = Status::Warning;
        }
        evidence.push(sentence);
    }
    walk.set(
        Layer::Route,
        status,
        route::describe_route(ip, &info, &defaults),
        evidence,
    );
    Ok(None)
}

/// The local rules that would drop or reject the handshake, output and input paths, with
/// their counters. Only a reading: the connection decides whether one of them is hit.
fn firewall_rung(walk: &mut Walk, dst: SocketAddr) {
    let src_ip = match route::route_get(dst.ip()) {
        Ok(route::RouteInfo::Found(r)) => r.pref_src,
        _ => None,
    }
    .unwrap_or(if dst.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    });
    let src = SocketAddr::new(src_ip, 0);
    let out = firewall::Packet {
        l4proto: 6,
        src,
        dst,
        iif: None,
        oif: None,
    };
    let back = firewall::Packet {
        l4proto: 6,
        src: dst,
        dst: src,
        iif: None,
        oif: None,
    };
    let mut evidence = Vec::new();
    let mut hits = Vec::new();
    let mut maybe = 0usize;
    for (packet, outgoing) in [(out, true), (back, false)] {
        let mut rules = Vec::new();
        match nft::terminal_rules(&packet) {
            Ok(r) => rules.extend(r),
            Err(e) => evidence.push(format!("could not read the nftables rules: {e:#}")),
        }
        match iptables::terminal_rules(&packet) {
            Ok(r) => rules.extend(r),
            Err(e) => evidence.push(format!("could not read the iptables-legacy rules: {e:#}")),
        }
        for r in rules {
            let on_path = match r.hook {
                Some(firewall::Hook::Output | firewall::Hook::Postrouting) => outgoing,
                Some(firewall::Hook::Prerouting | firewall::Hook::Input) => !outgoing,
                Some(firewall::Hook::Forward) => false,
                None | Some(firewall::Hook::Other) => true,
            };
            if !on_path {
                continue;
            }
            match r.matches {
                firewall::Matches::Yes => hits.push((r, outgoing)),
                firewall::Matches::Unknown => maybe += 1,
                firewall::Matches::No => {}
            }
        }
    }
    for (r, outgoing) in &hits {
        let verb = match &r.action {
            firewall::Action::Drop => "drop".to_owned(),
            firewall::Action::Reject(with) if with.is_empty() => "reject".to_owned(),
            firewall::Action::Reject(with) => format!("reject with {with}"),
        };
        let counter = r.packets.map_or(" (no counter)".to_owned(), |n| {
            format!(" ({n} packets so far)")
        });
        evidence.push(format!(
            "would {verb} the {}: {} {}{counter}",
            if *outgoing {
                "SYN on its way out"
            } else {
                "answer on its way in"
            },
            r.backend.name(),
            firewall::describe_rule(r)
        ));
    }
    if maybe > 0 {
        evidence.push(format!(
            "{maybe} more drop or reject rule{} test what the rules alone cannot tell (connection \
             state, sets, marks)",
            crate::enrich::plural(maybe as u64)
        ));
    }
    let (status, summary) = if hits.is_empty() {
        (
            Status::Passed,
            "no local rule drops or rejects this flow (output and input paths)".to_owned(),
        )
    } else {
        (
            Status::Warning,
            format!(
                "{} local rule{} would drop or reject this flow if the packets reach {}; the \
                 connection below tells",
                hits.len(),
                crate::enrich::plural(hits.len() as u64),
                if hits.len() == 1 { "it" } else { "them" }
            ),
        )
    };
    walk.set(Layer::Firewall, status, summary, evidence);
}

/// The application rung: a real connection watched by the eBPF programs, then TLS when asked.
fn application_rung(
    walk: &mut Walk,
    dst: SocketAddr,
    host: &Host,
    use_tls: bool,
    args: &DiagnoseArgs,
    timeout: Duration,
) -> Result<()> {
    let p = probe::connect(dst, timeout, &args.hooks);
    let ms = p.elapsed.as_millis();
    match (p.result, p.failure) {
        (Ok(stream), _) => {
            let mut evidence = vec![format!("TCP connection to {dst} established in {ms} ms")];
            evidence.extend(p.notes);
            if walk.get(Layer::Firewall).status == Status::Warning {
                walk.get(Layer::Firewall)
                    .evidence
                    .push("the connection went through: none of these rules was hit".into());
                walk.get(Layer::Firewall).status = Status::Passed;
            }
            if !use_tls {
                walk.set(
                    Layer::Application,
                    Status::Passed,
                    format!("{dst} accepts TCP connections"),
                    evidence,
                );
                return Ok(());
            }
            let name = host.text();
            let outcome = tls::check(stream, &name, &args.ca, timeout)?;
            evidence.extend(outcome.evidence.iter().cloned());
            match outcome.failure {
                None => walk.set(
                    Layer::Application,
                    Status::Passed,
                    outcome.summary,
                    evidence,
                ),
                Some(f) => walk.fail(Verdict {
                    code: 25,
                    cause: f.cause,
                    rung: Layer::Application,
                    summary: outcome.summary,
                    evidence,
                    next: ladder::next_steps(
                        25,
                        f.cause,
                        &StepCtx {
                            dst: Some(dst),
                            host_name: Some(name),
                            ..StepCtx::default()
                        },
                    ),
                    failure: None,
                }),
            }
        }
        (Err(e), failure) => {
            let f = failure.expect("a failed connection has a failure");
            let mut ctx = watch::step_ctx(&f);
            if let Host::Name(n) = host {
                ctx.host_name = Some(n.clone());
            }
            let next = ladder::next_steps(f.code, f.cause, &ctx);
            let mut evidence = vec![format!("connect() to {dst} failed after {ms} ms: {e}")];
            evidence.extend(f.evidence.iter().cloned());
            evidence.extend(p.notes);
            let rung = f.layer;
            if rung != Layer::Application {
                walk.set(
                    Layer::Application,
                    Status::Failed,
                    format!("connect() to {dst} failed: {e}"),
                    vec![format!("the {rung} rung explains it")],
                );
            }
            walk.fail(Verdict {
                code: f.code,
                cause: f.cause,
                rung,
                summary: f.summary.clone(),
                evidence,
                next,
                failure: Some(f),
            });
        }
    }
    Ok(())
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none but lo".into()
    } else {
        names.join(", ")
    }
}

/// "addresses: eth0 10.0.0.2/24, fd00::2/64; lo 127.0.0.1/8".
fn addresses_line(links: &[link::LinkInfo]) -> String {
    let parts: Vec<String> = links
        .iter()
        .filter(|l| !l.addrs.is_empty())
        .map(|l| {
            let a: Vec<String> = l.addrs.iter().map(ToString::to_string).collect();
            format!("{} {}", l.name, a.join(", "))
        })
        .collect();
    format!(
        "addresses: {}",
        list_or_none(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    )
}

struct Report<'a> {
    target: &'a str,
    host: String,
    port: u16,
    tls: bool,
    addresses: Vec<IpAddr>,
    walk: Walk,
}

impl Report<'_> {
    fn json(&self) -> Value {
        let verdict = match &self.walk.verdict {
            None => json!({"reachable": true}),
            Some(v) => {
                let mut o = json!({
                    "reachable": false,
                    "code": ladder::id(v.code),
                    "title": ladder::rung(v.code).map_or("", |r| r.title),
                    "layer": v.rung,
                    "cause": v.cause,
                    "summary": v.summary,
                    "evidence": v.evidence,
                    "next": v.next,
                });
                if let Some(f) = &v.failure {
                    // The kernel's failure exactly as a `watch --json` line carries it.
                    o["failure"] = output::failure_json(f, &v.next, SystemTime::now());
                    if let Some(fw) = o["failure"].get("firewall").cloned() {
                        o["firewall"] = fw;
                    }
                }
                o
            }
        };
        json!({
            "type": "diagnosis",
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "target": self.target,
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "addresses": self.addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            "rungs": self.walk.checks,
            "verdict": verdict,
            "exit_code": if self.walk.verdict.is_some() { EXIT_RUNG_FAILED } else { EXIT_REACHABLE },
        })
    }

    fn text(&self, color: bool) -> String {
        let paint = |s: &str, code: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_owned()
            }
        };
        let mut out = format!(
            "netladder diagnose {} (port {}{})\n",
            self.host,
            self.port,
            if self.tls { ", TLS" } else { "" }
        );
        for (i, c) in self.walk.checks.iter().enumerate() {
            let mark = match c.status {
                Status::Passed => paint("PASS", "32"),
                Status::Warning => paint("WARN", "33"),
                Status::Failed => paint("FAIL", "31;1"),
                Status::Skipped => paint("skip", "2"),
            };
            out += &format!("{}. {:<12} {mark}  {}\n", i + 1, c.rung.as_str(), c.summary);
            for e in &c.evidence {
                out += &format!("     - {e}\n");
            }
        }
        match &self.walk.verdict {
            None => out += &format!("verdict: {} is reachable\n", self.host),
            Some(v) => {
                let title = ladder::rung(v.code).map_or("", |r| r.title);
                out += &format!(
                    "verdict: {} #{} {title} at the {} rung: {}\n",
                    paint("FAIL", "31;1"),
                    ladder::id(v.code),
                    v.rung,
                    v.summary
                );
                if let Some(fw) = v.failure.as_ref().and_then(|f| f.firewall_rule.as_ref()) {
                    out += &format!(
                        "rule: {} {} {} chain {} {}: {} ({})\n",
                        fw.backend, fw.family, fw.table, fw.chain, fw.rule, fw.text, fw.certainty
                    );
                }
                if !v.next.is_empty() {
                    out += "next:\n";
                    for n in &v.next {
                        out += &format!("  $ {n}\n");
                    }
                }
                out += &format!("see also: netladder explain {}\n", ladder::id(v.code));
            }
        }
        out
    }
}
