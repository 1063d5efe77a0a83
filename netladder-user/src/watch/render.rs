//! How a failure becomes its line (`Render`: next steps, workload, metrics, the OTLP record,
//! JSON or human text), the ladder's step context, and the writing of a line. Used by the
//! enrichment worker and, for the lines that find its queue full, by the loop.
use std::{io::IsTerminal as _, sync::Arc, time::SystemTime};

use anyhow::Result;

use crate::{
    enrich,
    failure::Failure,
    ladder::{self, Code},
    metrics::Metrics,
    output, sink,
};

/// How a failure becomes its line: next steps, workload, metrics, JSON or human text. The
/// enrichment worker has one; the loop has its own for the lines that find the worker's queue
/// full.
pub(super) struct Render {
    pub(super) json: bool,
    pub(super) style: output::Style,
    /// kfree_skb is not attached: local drops and missing listeners are invisible.
    pub(super) no_drop_reasons: bool,
    /// Cgroup id -> container and pod (cached).
    workloads: enrich::container::Resolver,
    pub(super) metrics: Option<Arc<Metrics>>,
    /// `--otlp`: each failure also goes to the exporter.
    pub(super) otlp: bool,
}

impl Render {
    pub(super) fn new(json: bool) -> Self {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            json,
            style: output::Style { color },
            no_drop_reasons: false,
            workloads: enrich::container::Resolver::new(enrich::container::Paths::host()),
            metrics: None,
            otlp: false,
        }
    }

    /// The same settings, with a cache of its own (for another thread).
    pub(super) fn clone_for_thread(&self) -> Self {
        Self {
            json: self.json,
            style: output::Style {
                color: self.style.color,
            },
            no_drop_reasons: self.no_drop_reasons,
            workloads: enrich::container::Resolver::new(enrich::container::Paths::host()),
            metrics: self.metrics.clone(),
            otlp: self.otlp,
        }
    }

    /// The line of one failure (enriched or not); `repeats`: it stands for `f.count` repeats
    /// of an earlier line. Counts it in the metrics.
    pub(super) fn line(&mut self, mut f: Failure, repeats: bool) -> String {
        if repeats {
            f.summary = format!("{} more like this within a second: {}", f.count, f.summary);
        }
        // Where a local firewall or a missing listener could be the cause, say it is unseen.
        if self.no_drop_reasons
            && matches!(
                f.code,
                Code::Refused | Code::NoRoute | Code::Timeout | Code::NetUnreachable
            )
        {
            f.evidence.push(
                "degraded: no drop reasons on this kernel, so a local firewall drop or a missing \
                 local listener cannot be seen; the cause is the best reading without them"
                    .into(),
            );
        }
        let ctx = step_ctx(&f);
        let next = ladder::next_steps(f.code, Some(f.cause), &ctx);
        let who = self.workloads.resolve(f.proc.cgroup_id, f.proc.pid);
        if let Some(m) = &self.metrics {
            m.failure(&f, who.as_deref());
        }
        // The JSON event is also what the OTLP log record is made of (the same fields).
        let event = (self.json || self.otlp).then(|| {
            let mut v = output::failure_json(&f, &next, SystemTime::now());
            output::add_workload(&mut v, who.as_deref());
            v
        });
        if let (true, Some(v)) = (self.otlp, &event) {
            crate::otlp::failure(v);
        }
        match event {
            Some(v) if self.json => v.to_string(),
            _ => output::failure_line(&f, &next, &self.style, who.as_deref()),
        }
    }
}

/// Where the next steps should run: the namespace that holds the evidence (the server's for a
/// missing listener, else the client's).
pub(crate) fn step_ctx(f: &Failure) -> ladder::StepCtx {
    let netns = f.evidence_netns;
    let own = enrich::netns::own_netns_inode().ok();
    // An overloaded listener: its process is in the evidence namespace (the client may not be).
    let listener = f
        .overload
        .as_ref()
        .filter(|o| o.netns == netns && o.pid != 0)
        .map(|o| o.pid);
    ladder::StepCtx {
        dst: f.dst,
        src: f.src,
        pid: listener.or((netns == f.proc.netns).then_some(f.proc.pid)),
        netns_name: enrich::netns::netns_name(u64::from(netns)),
        other_netns: own.is_some_and(|o| o != u64::from(netns)),
        // The name a DNS, TLS or ssh failure is about; for a connection failure, the name its
        // address was resolved from goes to `resolved_name` instead.
        host_name: names_a_host(f.code)
            .then(|| {
                f.host_name.clone().or(match f.lookup {
                    crate::failure::Lookup::TlsChain { name, .. } if !name.is_empty() => {
                        Some(name.as_str().to_owned())
                    }
                    _ => None,
                })
            })
            .flatten(),
        user: f.user.clone(),
        rule_chain: f.firewall_rule.as_ref().map(rule_chain_command),
        nameservers: if f.code == Code::Dns && f.proc.pid != 0 {
            enrich::dns::process_resolv_conf(f.proc.pid)
                .map(|c| c.nameservers)
                .unwrap_or_default()
        } else {
            Vec::new()
        },
        resolved_name: (!names_a_host(f.code))
            .then(|| f.host_name.clone())
            .flatten(),
    }
}

/// Codes whose `host_name` is the name the failure is about (#024 DNS, #025 TLS, #030 ssh).
fn names_a_host(code: Code) -> bool {
    matches!(code, Code::Dns | Code::TlsVerify | Code::SshPublickey)
}

/// The command listing the chain that holds `r`, as its own tool shows it.
fn rule_chain_command(r: &crate::failure::FirewallRule) -> String {
    let v6 = r.family == "ipv6" || r.family == "ip6";
    match r.backend {
        "iptables-legacy" | "iptables-nft" => {
            let tool = match (r.backend, v6) {
                ("iptables-legacy", false) => "iptables-legacy",
                ("iptables-legacy", true) => "ip6tables-legacy",
                (_, false) => "iptables-nft",
                (_, true) => "ip6tables-nft",
            };
            format!(
                "{tool} -t {} -L {} -nv --line-numbers  # the {}: {}",
                r.table, r.chain, r.rule, r.text
            )
        }
        _ => format!(
            "nft -a list chain {} {} {}  # {}",
            r.family,
            r.table,
            r.chain,
            if r.rule == "policy" {
                "its drop policy".to_owned()
            } else {
                format!("the rule with {}", r.rule)
            }
        ),
    }
}

/// Writes one line to stdout and flushes it; a closed pipe ends netladder quietly.
pub(super) fn emit_line(line: &str) -> Result<()> {
    // Failures and warnings: in journal mode they are stored with priority "warning".
    sink::emit(sink::Priority::Warning, line)
}
