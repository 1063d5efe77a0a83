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
use crate::enrich::{dns, firewall, iptables, link, neigh, nft, ports, route, tls};
use crate::ladder::{self, Cause, Code, Layer, StepCtx};
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
#[derive(Clone)]
struct Verdict {
    code: Code,
    cause: Cause,
    /// The rung that broke.
    rung: Layer,
    summary: String,
    evidence: Vec<String>,
    next: Vec<String>,
    /// The kernel's classified failure, when the probe made one (rendered as `watch` does).
    failure: Option<Failure>,
}

#[derive(Clone)]
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
            let before = std::iter::once(format!("before the connection: {}", c.summary));
            evidence.splice(0..0, before.chain(c.evidence.iter().cloned()));
        }
        self.set(v.rung, Status::Failed, v.summary.clone(), evidence);
        self.verdict = Some(v);
    }
}

/// At most this many of the addresses a name resolves to are tried, in the resolver's order
/// (each may cost up to `--timeout`).
pub const MAX_ADDRESSES: usize = 4;

/// One address tried: the rungs walked toward it.
struct Attempt {
    dst: SocketAddr,
    walk: Walk,
}

impl Attempt {
    /// "10.0.0.2:80: #021 Connection refused at the application rung: no listener ...".
    fn line(&self) -> String {
        match &self.walk.verdict {
            None => format!(
                "{}: reachable ({})",
                self.dst,
                self.walk.checks.last().map_or("", |c| c.summary.as_str())
            ),
            Some(v) => format!(
                "{}: #{} {} at the {} rung: {}",
                self.dst,
                ladder::id(v.code),
                ladder::rung(v.code).title,
                v.rung,
                v.summary
            ),
        }
    }

    fn json(&self) -> Value {
        match &self.walk.verdict {
            None => json!({"address": self.dst.to_string(), "reachable": true}),
            Some(v) => json!({
                "address": self.dst.to_string(),
                "reachable": false,
                "code": ladder::id(v.code),
                "layer": v.rung,
                "cause": v.cause,
                "summary": v.summary,
            }),
        }
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

    // The name is resolved first, since the lower rungs need an address; it is reported at its
    // own rung. When it does not resolve, the lower rungs are checked toward the nameserver.
    let (dns_check, addresses, nameserver) = match &target.host {
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
    let mut candidates: Vec<IpAddr> = Vec::new();
    for ip in &addresses {
        if !candidates.contains(ip) {
            candidates.push(*ip);
        }
    }
    let not_tried = candidates.split_off(candidates.len().min(MAX_ADDRESSES));

    // Each address is walked as a client would try it, in order; every one is tried, so the
    // report says which work and which do not.
    let mut tried: Vec<Attempt> = Vec::new();
    let mut prober = probe::Prober::new(&args.hooks);
    for ip in &candidates {
        let dst = SocketAddr::new(*ip, target.port);
        let mut walk = Walk::new();
        if let Some(v) = lower_rungs(&mut walk, dst, None)? {
            walk.fail(v);
        } else {
            firewall_rung(&mut walk, dst);
            let (summary, evidence) = (dns_check.summary.clone(), dns_check.evidence.clone());
            walk.set(Layer::Dns, dns_check.status, summary, evidence);
            application_rung(
                &mut walk,
                dst,
                &target.host,
                use_tls,
                &args,
                timeout,
                &mut prober,
            )?;
        }
        tried.push(Attempt { dst, walk });
    }
    drop(prober);

    let (walk, checked) = if tried.is_empty() {
        let ns = nameserver.map(|ns| SocketAddr::new(ns, 53));
        (unresolved_walk(&target.host, &dns_check, ns)?, ns)
    } else {
        // The checklist shows the first address that works, else the first one tried.
        let chosen = tried
            .iter()
            .position(|a| a.walk.verdict.is_none())
            .unwrap_or(0);
        let mut walk = tried[chosen].walk.clone();
        let others: Vec<String> = tried
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != chosen)
            .map(|(_, a)| a.line())
            .collect();
        let failed = tried
            .iter()
            .enumerate()
            .filter(|(i, a)| *i != chosen && a.walk.verdict.is_some())
            .count();
        match &mut walk.verdict {
            Some(v) => v
                .evidence
                .extend(others.iter().map(|l| format!("also tried {l}"))),
            None if !others.is_empty() => {
                let app = walk.get(Layer::Application);
                if failed > 0 {
                    app.status = Status::Warning;
                    app.summary += &format!(
                        "; but {failed} of the {} addresses of {} failed",
                        tried.len(),
                        target.host.text()
                    );
                }
                app.evidence
                    .extend(others.iter().map(|l| format!("also tried {l}")));
            }
            None => {}
        }
        (walk, Some(tried[chosen].dst))
    };
    let report = Report {
        target: &args.target,
        host: target.host.text(),
        port: target.port,
        tls: use_tls,
        addresses,
        checked,
        tried,
        not_tried,
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

/// The walk when the name did not resolve: the lower rungs toward the nameserver `ns`, then
/// the DNS rung's failure.
fn unresolved_walk(host: &Host, dns_check: &Check, ns: Option<SocketAddr>) -> Result<Walk> {
    let mut walk = Walk::new();
    match ns {
        Some(dst) => {
            let note = format!(
                "checked toward nameserver {}, since {} did not resolve",
                dst.ip(),
                host.text()
            );
            if let Some(v) = lower_rungs(&mut walk, dst, Some(&note))? {
                walk.fail(v);
                return Ok(walk);
            }
            firewall_rung(&mut walk, dst);
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
    let (summary, evidence) = (dns_check.summary.clone(), dns_check.evidence.clone());
    walk.set(
        Layer::Dns,
        dns_check.status,
        summary.clone(),
        evidence.clone(),
    );
    if dns_check.status == Status::Failed {
        walk.fail(Verdict {
            code: Code::Dns,
            cause: Cause::Dns,
            rung: Layer::Dns,
            summary,
            evidence,
            next: ladder::next_steps(
                Code::Dns,
                None,
                &StepCtx {
                    dst: ns,
                    host_name: Some(host.text()),
                    ..StepCtx::default()
                },
            ),
            failure: None,
        });
    }
    Ok(walk)
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
    let verdict = |code: Code, cause: Cause, rung: Layer, summary: String, evidence| Verdict {
        code,
        cause,
        rung,
        next: ladder::next_steps(
            code,
            Some(cause),
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
            // Link and address when the kernel has no usable route: the interfaces up, and
            // whether any has an address of the destination's family.
            let up_rungs = |walk: &mut Walk, with_address: bool| {
                walk.set(
                    Layer::Link,
                    Status::Passed,
                    format!("interfaces up: {}", list_or_none(&up)),
                    with(vec![how.clone()]),
                );
                if with_address {
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
                }
            };
            let net_unreachable = *errno == libc::ENETUNREACH;
            if net_unreachable && down.is_some() {
                return Ok(Some(verdict(
                    Code::NetUnreachable,
                    Cause::NetUnreachable,
                    Layer::Link,
                    sentence,
                    with(vec![how]),
                )));
            }
            up_rungs(walk, has_family || !net_unreachable);
            if net_unreachable {
                if !has_family {
                    return Ok(Some(verdict(
                        Code::NetUnreachable,
                        Cause::NetUnreachable,
                        Layer::Address,
                        format!("no interface has an {} address: {sentence}", family.name()),
                        with(vec![how]),
                    )));
                }
                return Ok(Some(verdict(
                    Code::NetUnreachable,
                    Cause::NetUnreachable,
                    Layer::Route,
                    route::describe_route(ip, &info, &defaults),
                    with(vec![how]),
                )));
            }
            let cause = match *errno {
                libc::EACCES => Cause::RouteProhibited,
                libc::EHOSTUNREACH => Cause::HostUnreachable,
                _ => Cause::RouteRefused,
            };
            return Ok(Some(verdict(
                Code::NoRoute,
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
        local_ports(walk, dst);
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
        "egress {}: {}, {}, state {}{vlan}",
        egress.name,
        if egress.admin_up { "up" } else { "down" },
        match (egress.carrier, egress.admin_up) {
            (true, _) => "carrier",
            (false, true) => "no carrier (the other end or the cable is down)",
            (false, false) => "no carrier",
        },
        egress.oper_state
    );
    if !egress.usable() || parent.is_some_and(|p| !p.usable()) {
        return Ok(Some(verdict(
            Code::NetUnreachable,
            Cause::LinkDown,
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
    local_ports(walk, dst);
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

/// Adds the local ports toward `dst` to the address rung (the look-ups #028 reads): the
/// ephemeral range, the connections toward `dst` holding a port (open or in TIME_WAIT), and
/// whether TIME_WAIT ports are reused. A warning when at least half the range is held toward
/// `dst`; with none left, connect() fails with EADDRNOTAVAIL, which the connection then shows.
fn local_ports(walk: &mut Walk, dst: SocketAddr) {
    let read = || -> Result<(String, u64, u64)> {
        let (low, high) = ports::port_range()?;
        let size = (u64::from(high) + 1).saturating_sub(low.into()).max(1);
        let usage = ports::port_use(Some(dst))?;
        let held = usage.open_to_dst + usage.time_wait_to_dst;
        let reuse = ports::tw_reuse().map_or("?".to_owned(), |r| r.to_string());
        Ok((
            format!(
                "local ports: ip_local_port_range {low}-{high} ({size} port{}); toward {dst} \
                 {} open and {} in TIME_WAIT ({} TIME_WAIT in all); tcp_tw_reuse={reuse}",
                crate::enrich::plural(size),
                usage.open_to_dst,
                usage.time_wait_to_dst,
                usage.time_wait
            ),
            held,
            size,
        ))
    };
    let c = walk.get(Layer::Address);
    match read() {
        Ok((line, held, size)) => {
            c.evidence.push(line);
            if held * 2 >= size && c.status == Status::Passed {
                c.status = Status::Warning;
                c.summary += &if held >= size {
                    format!("; but no local port is left toward {dst}")
                } else {
                    format!("; but {held} of the {size} local ports are held toward {dst}")
                };
            }
        }
        Err(e) => c
            .evidence
            .push(format!("could not count the local ports: {e:#}")),
    }
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
    prober: &mut probe::Prober,
) -> Result<()> {
    let p = prober.connect(dst, timeout);
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
                    code: Code::TlsVerify,
                    cause: f.cause,
                    rung: Layer::Application,
                    summary: outcome.summary,
                    evidence,
                    next: ladder::next_steps(
                        Code::TlsVerify,
                        Some(f.cause),
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
            let next = ladder::next_steps(f.code, Some(f.cause), &ctx);
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
    /// What the name resolved to (the address itself for an address).
    addresses: Vec<IpAddr>,
    /// Where the checklist's rungs were walked toward.
    checked: Option<SocketAddr>,
    /// Every address tried, in order (the checklist's one included).
    tried: Vec<Attempt>,
    /// Addresses beyond `MAX_ADDRESSES`.
    not_tried: Vec<IpAddr>,
    walk: Walk,
}

impl Report<'_> {
    fn json(&self) -> Value {
        let mut verdict = match &self.walk.verdict {
            None => json!({"reachable": true}),
            Some(v) => {
                let mut o = json!({
                    "reachable": false,
                    "code": ladder::id(v.code),
                    "title": ladder::rung(v.code).title,
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
        let addrs = |ok: bool| -> Vec<String> {
            self.tried
                .iter()
                .filter(|a| a.walk.verdict.is_none() == ok)
                .map(|a| a.dst.to_string())
                .collect()
        };
        verdict["worked"] = json!(addrs(true));
        verdict["failed"] = json!(addrs(false));
        json!({
            "type": "diagnosis",
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "target": self.target,
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "addresses": self.addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            "checked": self.checked.map(|d| d.to_string()),
            "tried": self.tried.iter().map(Attempt::json).collect::<Vec<_>>(),
            "not_tried": self.not_tried.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
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
        if self.tried.len() > 1 {
            if let Some(d) = self.checked {
                out += &format!(
                    "{} resolves to {} addresses, each tried; the rungs below are toward {d}\n",
                    self.host,
                    self.addresses.len()
                );
            }
        }
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
        if self.tried.len() > 1 || !self.not_tried.is_empty() {
            out += "addresses:\n";
            for a in &self.tried {
                let mark = if a.walk.verdict.is_none() {
                    paint("PASS", "32")
                } else {
                    paint("FAIL", "31;1")
                };
                out += &format!("  {mark}  {}\n", a.line());
            }
            if !self.not_tried.is_empty() {
                out += &format!(
                    "  not tried (at most {MAX_ADDRESSES}): {}\n",
                    join(&self.not_tried)
                );
            }
        }
        let failed: Vec<String> = self
            .tried
            .iter()
            .filter(|a| a.walk.verdict.is_some())
            .map(|a| a.dst.to_string())
            .collect();
        match &self.walk.verdict {
            None if !failed.is_empty() => {
                let worked: Vec<String> = self
                    .tried
                    .iter()
                    .filter(|a| a.walk.verdict.is_none())
                    .map(|a| a.dst.to_string())
                    .collect();
                out += &format!(
                    "verdict: {} {} is reachable through {}, but not through {}\n",
                    paint("WARN", "33"),
                    self.host,
                    worked.join(", "),
                    failed.join(", ")
                );
            }
            None => out += &format!("verdict: {} is reachable\n", self.host),
            Some(v) => {
                let title = ladder::rung(v.code).title;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(dst: &str, failed: Option<Code>) -> Attempt {
        let mut walk = Walk::new();
        for rung in ORDER {
            walk.set(rung, Status::Passed, format!("{rung} ok"), Vec::new());
        }
        if let Some(code) = failed {
            walk.fail(Verdict {
                code,
                cause: Cause::NoListener,
                rung: Layer::Application,
                summary: "no listener".into(),
                evidence: Vec::new(),
                next: Vec::new(),
                failure: None,
            });
        }
        Attempt {
            dst: dst.parse().unwrap(),
            walk,
        }
    }

    fn report(tried: Vec<Attempt>, walk: Walk) -> Report<'static> {
        Report {
            target: "two.test:80",
            host: "two.test".into(),
            port: 80,
            tls: false,
            addresses: tried.iter().map(|a| a.dst.ip()).collect(),
            checked: tried.first().map(|a| a.dst),
            tried,
            not_tried: vec!["10.0.0.9".parse().unwrap()],
            walk,
        }
    }

    #[test]
    fn several_addresses_are_named_in_the_verdict() {
        let walk = attempt("10.0.0.3:80", None).walk;
        let r = report(
            vec![
                attempt("10.0.0.2:80", Some(Code::Refused)),
                attempt("10.0.0.3:80", None),
            ],
            walk,
        );
        let j = r.json();
        assert_eq!(j["verdict"]["reachable"], true);
        assert_eq!(j["verdict"]["worked"], json!(["10.0.0.3:80"]));
        assert_eq!(j["verdict"]["failed"], json!(["10.0.0.2:80"]));
        assert_eq!(j["tried"][0]["code"], "021");
        assert_eq!(
            j["tried"][1],
            json!({"address": "10.0.0.3:80", "reachable": true})
        );
        assert_eq!(j["not_tried"], json!(["10.0.0.9"]));
        assert_eq!(j["exit_code"], EXIT_REACHABLE);
        let text = r.text(false);
        assert!(
            text.contains(
                "verdict: WARN two.test is reachable through 10.0.0.3:80, but not through \
                 10.0.0.2:80\n"
            ),
            "{text}"
        );
        assert!(text.contains("  FAIL  10.0.0.2:80: #021 "), "{text}");
        assert!(
            text.contains("  PASS  10.0.0.3:80: reachable (application ok)"),
            "{text}"
        );
        assert!(text.contains("not tried (at most 4): 10.0.0.9"), "{text}");
    }

    #[test]
    fn a_failure_after_a_passed_reading_keeps_that_reading() {
        let mut walk = Walk::new();
        walk.set(
            Layer::Address,
            Status::Warning,
            "eth0 has 10.0.0.1/24".into(),
            vec!["local ports: ...".into()],
        );
        walk.fail(Verdict {
            code: Code::TimeWait,
            cause: Cause::PortsExhausted,
            rung: Layer::Address,
            summary: "no free local port".into(),
            evidence: vec!["connect() returned EADDRNOTAVAIL".into()],
            next: Vec::new(),
            failure: None,
        });
        let c = walk.get(Layer::Address);
        assert_eq!(c.status, Status::Failed);
        assert_eq!(
            c.evidence,
            [
                "before the connection: eth0 has 10.0.0.1/24",
                "local ports: ...",
                "connect() returned EADDRNOTAVAIL"
            ]
        );
    }
}
