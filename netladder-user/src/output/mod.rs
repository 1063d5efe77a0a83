//! Rendering: one human line or one JSON object per failure, plus status lines (hooks, stats).
//! The JSON schema is documented in README.md and is stable: fields are only ever added.
use std::{fmt::Write as _, time::SystemTime};

use serde_json::{json, Value};

use crate::{
    classify::{Failure, Ledger},
    enrich::container::Workload,
    kernel::loader::Counters,
    kernel::plan::{Outcome, Status},
    ladder,
};

pub struct Style {
    pub color: bool,
}

/// One failure as a JSON Lines object.
pub fn failure_json(f: &Failure, next: &[String], at: SystemTime) -> Value {
    let rung = ladder::rung(f.code);
    let mut value = json!({
        "type": "failure",
        "time": humantime::format_rfc3339_millis(at).to_string(),
        "code": ladder::id(f.code),
        "title": rung.title,
        "layer": f.layer.as_str(),
        "cause": f.cause,
        "summary": f.summary,
        "errno": f.errno.map(crate::classify::errno::name),
        "pid": f.proc.pid,
        "tid": f.proc.tid,
        "comm": f.proc.comm,
        "cgroup": f.proc.cgroup_id,
        "netns": f.proc.netns,
        "src": f.src.map(|a| a.to_string()),
        "dst": f.dst.map(|a| a.to_string()),
        "duration_ms": f.duration_ns.map(|ns| ns / 1_000_000),
        "evidence": f.evidence,
        "next": next,
        "count": f.count,
        "name": f.host_name,
    });
    // #030: the account ssh logs in as.
    if let (Some(u), Some(obj)) = (&f.user, value.as_object_mut()) {
        obj.insert("user".into(), json!(u));
    }
    // #023 accept_queue_full / syn_queue_full: the overloaded listener, and whose reading it is.
    if let (Some(o), Some(obj)) = (&f.overload, value.as_object_mut()) {
        obj.insert(
            "side".into(),
            json!(if o.server_side { "server" } else { "client" }),
        );
        obj.insert(
            "listener".into(),
            json!({
                "addr": o.addr.to_string(),
                "pid": o.pid,
                "comm": o.comm,
                "netns": o.netns,
                "recv_q": o.queue,
                "backlog": o.backlog,
                "listen_overflows": o.rises.map(|r| r.overflows),
                "listen_drops": o.rises.map(|r| r.drops),
                "syn_queue_drops": o.rises.map(|r| r.syn_queue_drops),
                "syn_queue_cookies": o.rises.map(|r| r.syn_queue_cookies),
                "window_ms": o.window_ns.map(|ns| ns / 1_000_000),
            }),
        );
    }
    if let (Some(r), Some(obj)) = (&f.firewall_rule, value.as_object_mut()) {
        obj.insert(
            "firewall".into(),
            json!({
                "backend": r.backend,
                "family": r.family,
                "table": r.table,
                "chain": r.chain,
                "hook": r.hook,
                "priority": r.priority,
                "rule": r.rule,
                "text": r.text,
                "packets": r.packets,
                "certainty": r.certainty,
            }),
        );
    }
    value
}

/// Adds what the failure's cgroup says: `cgroup_path`, `container` ({runtime, id, name}) and
/// `pod` ({uid, qos, namespace, name}), each null when unknown.
pub fn add_workload(value: &mut Value, w: Option<&Workload>) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    obj.insert("cgroup_path".into(), json!(w.map(|w| &w.cgroup)));
    let container = w
        .and_then(|w| w.container.as_ref())
        .map(|c| json!({"runtime": c.runtime, "id": c.id, "name": c.name}));
    obj.insert("container".into(), json!(container));
    let pod = w
        .and_then(|w| w.pod.as_ref())
        .map(|p| json!({"uid": p.uid, "qos": p.qos, "namespace": p.namespace, "name": p.name}));
    obj.insert("pod".into(), json!(pod));
}

/// The container and pod of a human line, e.g. " (pod shop/web-0, containerd 0bc5eac79e3a)".
fn workload_tag(w: Option<&Workload>) -> String {
    let Some(w) = w else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(p) = &w.pod {
        parts.push(match (&p.namespace, &p.name) {
            (Some(ns), Some(name)) => format!("pod {ns}/{name}"),
            _ => format!("pod uid {}", p.uid),
        });
    }
    if let Some(c) = &w.container {
        let id = c.name.clone().unwrap_or_else(|| c.short_id().to_owned());
        parts.push(match c.runtime {
            Some(rt) => format!("{rt} {id}"),
            None => format!("container {id}"),
        });
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// One failure as a human line: code, short name, who (with its container and pod), flow, why,
/// next step.
pub fn failure_line(f: &Failure, next: &[String], style: &Style, who: Option<&Workload>) -> String {
    let slug = ladder::rung(f.code).slug;
    let mut s = String::new();
    let code = format!("#{} {slug}", ladder::id(f.code));
    if style.color {
        let _ = write!(s, "\x1b[1;31m{code}\x1b[0m");
    } else {
        s.push_str(&code);
    }
    let flow = match (f.src, f.dst) {
        (src, Some(dst)) => format!(
            "{} -> {dst}",
            src.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
        ),
        (Some(local), None) => local.to_string(),
        (None, None) => "(address unknown)".into(),
    };
    let _ = write!(
        s,
        "  {}[{}]{} {flow}  {}",
        f.proc.comm,
        f.proc.pid,
        workload_tag(who),
        f.summary
    );
    let _ = write!(s, " [{}]", f.layer.as_str());
    if let Some(first) = next.first() {
        if style.color {
            let _ = write!(s, "  \x1b[2mnext:\x1b[0m {first}");
        } else {
            let _ = write!(s, "  next: {first}");
        }
    }
    s
}

/// The hook table: what attached, what the kernel refused, what that costs.
pub fn hooks_table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:<40} {:<9} {:<13} detail",
        "program", "hook", "status", "cost"
    );
    for o in outcomes {
        let lost = crate::kernel::plan::lost(outcomes, o);
        let (status, detail) = match &o.status {
            Status::Attached => ("attached", o.hook.needs.to_owned()),
            Status::Refused(why) => ("REFUSED", format!("{why}; {lost}")),
            Status::Skipped(why) => ("skipped", format!("{why}; {lost}")),
            Status::Replaced(why) => ("replaced", why.clone()),
        };
        let _ = writeln!(
            s,
            "{:<26} {:<40} {:<9} {:<13} {detail}",
            o.hook.program,
            o.hook.attach.describe(),
            status,
            o.hook.cost().short()
        );
    }
    s
}

pub fn hooks_json(outcomes: &[Outcome], degraded: &[String]) -> Value {
    let hooks: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let (status, reason) = match &o.status {
                Status::Attached => ("attached", None),
                Status::Refused(r) => ("refused", Some(r.clone())),
                Status::Skipped(r) => ("skipped", Some(r.clone())),
                Status::Replaced(r) => ("replaced", Some(r.clone())),
            };
            json!({
                "program": o.hook.program,
                "hook": o.hook.attach.describe(),
                "optional": o.hook.optional,
                "status": status,
                "reason": reason,
                "needs": o.hook.needs,
                "without": o.hook.without,
                // What is lost while it is not attached (null when it is).
                "lost": (o.status != Status::Attached)
                    .then(|| crate::kernel::plan::lost(outcomes, o)),
                "cost": o.hook.cost().short(),
                "cost_means": o.hook.cost().explain(),
            })
        })
        .collect();
    json!({"type": "hooks", "hooks": hooks, "degraded": degraded})
}

/// What the stats lines say: the kernel's counters, and where every record it wrote ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub kernel: Counters,
    /// Records read from the ring buffer.
    pub read: u64,
    /// Where the records read ended (each in one bucket).
    pub ledger: Ledger,
    /// Records the classifier still holds for a failure not complete yet (0 at exit).
    pub held: u64,
    /// Failures the kernel only counted that repeat one outside the ladder.
    pub outside_repeats: u64,
    /// Failures told: lines of their own plus the repeats counted in repeat lines.
    pub reported: u64,
    /// Lines the output reader did not take in time.
    pub unwritten: u64,
    /// What the OTLP exporter sent and could not send (`--otlp` only).
    pub otlp: Option<crate::otlp::Counts>,
}

impl Stats {
    /// Records the kernel wrote: queued on the ring buffer, or lost because it was full.
    pub fn written(&self) -> u64 {
        self.kernel.events + self.kernel.lost
    }

    /// Queued records not read (yet): 0 once watch has drained the ring buffer at exit.
    pub fn unread(&self) -> u64 {
        self.kernel.events.saturating_sub(self.read)
    }
}

pub fn stats_json(s: &Stats, final_: bool) -> Value {
    let (c, l) = (&s.kernel, &s.ledger);
    let mut v = json!({
        "type": "stats",
        "final": final_,
        "events": c.events,
        "aggregated": c.aggregated,
        "lost": c.lost,
        "skipped_runs": c.skipped_runs,
        "failures_reported": s.reported,
        "unclassified": l.unclassified + s.outside_repeats,
        "conn_map_full": c.conn_map_full,
        "drop_map_full": c.drop_map_full,
        "malformed": c.malformed,
        "dns_malformed": c.dns_malformed,
        "unwritten": s.unwritten,
        "records": {
            "written": s.written(),
            "read": s.read,
            "lost": c.lost,
            "unread": s.unread(),
            "reported": l.reported,
            "repeats": l.repeats,
            "merged": l.merged,
            "context": l.context,
            "unclassified": l.unclassified,
            "malformed": l.malformed,
            "filtered": l.filtered,
            "dropped": l.dropped,
            "held": s.held,
        },
    });
    // Only with --otlp: what the exporter sent, and what it could not send and why.
    if let (Some(o), Some(obj)) = (&s.otlp, v.as_object_mut()) {
        obj.insert(
            "otlp".into(),
            json!({
                "logs_sent": o.logs_sent,
                "logs_queue_full": o.logs_queue_full,
                "logs_failed": o.logs_failed,
                "metrics_sent": o.metrics_sent,
                "metrics_failed": o.metrics_failed,
            }),
        );
    }
    v
}

pub fn stats_line(s: &Stats, final_: bool) -> String {
    let (c, l) = (&s.kernel, &s.ledger);
    let slow = match s.unwritten {
        0 => String::new(),
        n => format!(", {n} lines dropped (the output reader did not keep up)"),
    };
    let slow = match s.otlp {
        Some(o) => format!(
            "{slow}; OTLP: {} log records sent, {} not sent ({} queue full, {} failed after \
             retries), {} metric exports sent, {} failed",
            o.logs_sent,
            o.logs_queue_full + o.logs_failed,
            o.logs_queue_full,
            o.logs_failed,
            o.metrics_sent,
            o.metrics_failed
        ),
        None => slow,
    };
    let skipped = match c.skipped_runs {
        0 => String::new(),
        n => format!(", {n} program runs skipped by the kernel (nested in another BPF program)"),
    };
    let slow = match c.dns_malformed {
        0 => slow,
        n => format!(", {n} DNS responses malformed (not parsed){slow}"),
    };
    let unread = match (s.unread(), final_) {
        (0, _) => String::new(),
        (n, false) => format!(", {n} not read yet"),
        (n, true) => format!(", {n} queued but never read"),
    };
    let mut buckets = format!(
        "{} reported, {} repeats, {} merged into another failure, {} context only (not failures \
         themselves), {} outside the ladder, {} malformed",
        l.reported, l.repeats, l.merged, l.context, l.unclassified, l.malformed
    );
    if l.filtered > 0 {
        let _ = write!(buckets, ", {} filtered out", l.filtered);
    }
    if l.dropped > 0 {
        let _ = write!(buckets, ", {} dropped (classifier tables full)", l.dropped);
    }
    if s.held > 0 {
        let _ = write!(buckets, ", {} held for a failure not complete yet", s.held);
    }
    // Each record ends in one bucket by construction: a difference is a bug, said openly.
    match s.read.checked_sub(l.total() + s.held) {
        Some(0) => {}
        Some(n) => {
            let _ = write!(buckets, ", {n} unaccounted for (a netladder bug)");
        }
        None => {
            let _ = write!(buckets, " (more than were read: a netladder bug)");
        }
    }
    let outside = match s.outside_repeats {
        0 => String::new(),
        n => format!(" ({n} of them outside the ladder)"),
    };
    format!(
        "netladder: {} kernel records: {} read, {} lost (ring buffer full){unread}; of those read: \
         {buckets}; {} more failures counted in the kernel as repeats{outside}; {} failures \
         reported in all; {} connections untracked (map full), {} drop records lost (map full)\
         {skipped}{slow}",
        s.written(),
        s.read,
        c.lost,
        c.aggregated,
        s.reported,
        c.conn_map_full,
        c.drop_map_full
    )
}
