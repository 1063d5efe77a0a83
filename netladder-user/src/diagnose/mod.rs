//! `netladder diagnose HOST[:PORT]`: walks the ladder for one target, link -> address -> route
//! -> firewall -> DNS -> application, in this process's network namespace, and stops at the
//! first rung that is broken. Lower rungs read the kernel's own tables (rtnetlink, nf_tables);
//! the application rung makes a real connection while the eBPF programs watch it (`probe`), so
//! its verdict carries the same kernel evidence as a `watch` event.
//!
//! This file runs the walk for each address; `checklist` holds the rungs' states and the
//! verdict, `lower` (link, address, route), `firewall`, `dns` and `application` check the
//! rungs, and `report` prints the result.

mod application;
mod checklist;
mod dns;
mod firewall;
mod lower;
mod probe;
mod report;
pub(crate) mod target;

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::cli::DiagnoseArgs;
use crate::ladder::{self, Cause, Code, Layer, StepCtx};

use application::application_rung;
pub use checklist::{Check, Status};
use checklist::{Verdict, Walk};
use dns::check_dns;
use firewall::firewall_rung;
use lower::lower_rungs;
use report::{Attempt, Report};
pub use report::{EXIT_REACHABLE, EXIT_RUNG_FAILED, MAX_ADDRESSES};
use target::Host;

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
