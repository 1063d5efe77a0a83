//! The DNS rung: what the system resolver, each nameserver and /etc/hosts say about the name.

use std::net::IpAddr;
use std::time::Duration;

use super::checklist::{join, Check, Status};
use crate::enrich::dns;
use crate::ladder::Layer;

/// The DNS rung for a name: the system resolver, each nameserver asked directly, /etc/hosts.
/// Returns the check, the addresses programs would use, and a nameserver to check the lower
/// rungs toward when the name did not resolve.
pub(super) fn check_dns(name: &str) -> (Check, Vec<IpAddr>, Option<IpAddr>) {
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
