//! Rendering: one human line or one JSON object per failure, plus status lines (hooks, stats).
//! The JSON schema is documented in README.md and is stable: fields are only ever added.
use std::{fmt::Write as _, time::SystemTime};

use serde_json::{json, Value};

use crate::{
    enrich::container::Workload,
    failure::{Failure, Ledger},
    kernel::loader::Counters,
    kernel::plan::{Outcome, Require, Role, Status},
    ladder,
};

/// The version every JSON record carries in its `schema` field: the schema it follows is
/// `schema/netladder-events.v1.schema.json` (fields are only ever added within a version).
pub const SCHEMA: &str = "netladder/v1";

pub struct Style {
    pub color: bool,
}

/// One failure as a JSON Lines object.
pub fn failure_json(f: &Failure, next: &[String], at: SystemTime) -> Value {
    let rung = ladder::rung(f.code);
    let mut value = json!({
        "schema": SCHEMA,
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
/// `linked`: the programs attached as uprobe_multi links (the other uprobes are perf events).
pub fn hooks_table(outcomes: &[Outcome], linked: &[&str]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:<40} {:<9} {:<13} detail",
        "program", "hook", "status", "cost"
    );
    for o in outcomes {
        let lost = crate::kernel::plan::lost(outcomes, o);
        let why = o.status.reason().unwrap_or_default();
        let (status, detail) = match &o.status {
            Status::Attached if linked.contains(&o.hook.program) => (
                "attached",
                format!("{} (a uprobe_multi link)", o.hook.needs),
            ),
            Status::Attached => ("attached", o.hook.needs.to_owned()),
            Status::Refused(_) => ("REFUSED", format!("{why}; {lost}")),
            Status::Skipped(_) | Status::OptIn => ("skipped", format!("{why}; {lost}")),
            Status::Replaced(_) => ("replaced", why.to_owned()),
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

/// `linked` as for [`hooks_table`].
pub fn hooks_json(outcomes: &[Outcome], degraded: &[String], linked: &[&str]) -> Value {
    let hooks: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let requires: Vec<String> = o
                .hook
                .requirements()
                .iter()
                .map(Require::describe)
                .collect();
            json!({
                "program": o.hook.program,
                "hook": o.hook.attach.describe(),
                "role": o.hook.role.name(),
                "optional": o.hook.role == Role::Optional,
                "opt_in": o.hook.opt_in(),
                "status": o.status.word(),
                "reason": o.status.reason(),
                "needs": o.hook.needs,
                "requires": requires,
                "without": o.hook.without,
                // What is lost while it is not attached (null when it is).
                "lost": (o.status != Status::Attached)
                    .then(|| crate::kernel::plan::lost(outcomes, o)),
                "cost": o.hook.cost().short(),
                "cost_means": o.hook.cost().explain(),
                // Attached as a uprobe_multi link (a uprobe otherwise is a perf event).
                "uprobe_multi": linked.contains(&o.hook.program),
            })
        })
        .collect();
    json!({"schema": SCHEMA, "type": "hooks", "hooks": hooks, "degraded": degraded})
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
    /// Failure lines written without their look-ups (the enrichment worker was behind).
    pub enrich_skipped: u64,
    /// What the OTLP exporter sent and could not send (`--otlp` only).
    pub otlp: Option<crate::otlp::totals::Counts>,
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
        "schema": SCHEMA,
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
        "enrich_skipped": s.enrich_skipped,
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

/// The `costs` record of `watch --program-costs --json`: each program that ran since netladder
/// was ready, with its runs and run time, the costliest first.
pub fn costs_json(costs: &[crate::kernel::loader::ProgramCost]) -> Value {
    let programs: Vec<Value> = costs
        .iter()
        .map(|p| json!({"name": p.name, "runs": p.runs, "run_ns": p.run_ns}))
        .collect();
    json!({"schema": SCHEMA, "type": "costs", "programs": programs})
}

/// The same as text: a heading, then one line per program.
pub fn costs_lines(costs: &[crate::kernel::loader::ProgramCost]) -> Vec<String> {
    let all: u64 = costs.iter().map(|p| p.run_ns).sum();
    let mut lines = vec![format!(
        "netladder: program costs since ready (the kernel's BPF run-time statistics): {} programs \
         ran, {:.1} ms in all",
        costs.len(),
        all as f64 / 1e6
    )];
    for p in costs {
        lines.push(format!(
            "netladder:   {}: {} runs, {} ns per run, {:.1} ms in all",
            p.name,
            p.runs,
            p.run_ns / p.runs.max(1),
            p.run_ns as f64 / 1e6
        ));
    }
    lines
}

pub fn stats_line(s: &Stats, final_: bool) -> String {
    let (c, l) = (&s.kernel, &s.ledger);
    let slow = match s.unwritten {
        0 => String::new(),
        n => format!(", {n} lines dropped (the output reader did not keep up)"),
    };
    let slow = match s.enrich_skipped {
        0 => slow,
        n => {
            format!(", {n} failures written without their look-ups (enrichment fell behind){slow}")
        }
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

#[cfg(test)]
mod tests {
    //! The published schema (`schema/netladder-events.v1.schema.json`) against the code that
    //! writes the records: the closed vocabularies listed there are exactly the ladder's, and
    //! every field a record can carry is described (the scenario tests validate real lines).
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::{
        enrich::container::{Container, Pod},
        failure::{FirewallRule, Overload, Proc, QueueRises},
        kernel::plan::HOOKS,
        ladder::{Cause, Code, Layer},
    };

    const SCHEMA_FILE: &str = include_str!("../../../schema/netladder-events.v1.schema.json");

    fn schema() -> Value {
        serde_json::from_str(SCHEMA_FILE).expect("the schema file is JSON")
    }

    fn enum_of(schema: &Value, def: &str) -> Vec<String> {
        schema["$defs"][def]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("$defs.{def}.enum is an array"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect()
    }

    /// The keys of an object.
    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    }

    /// The fields a schema definition allows (`properties`) and those it requires.
    fn fields(def: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
        let required = def["required"]
            .as_array()
            .expect("required")
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        (keys(&def["properties"]), required)
    }

    /// `record` has every required field and no field the definition does not describe.
    fn conforms(record: &Value, def: &Value, what: &str) {
        let (allowed, required) = fields(def);
        let have = keys(record);
        let missing: Vec<_> = required.difference(&have).collect();
        let unknown: Vec<_> = have.difference(&allowed).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{what}: missing {missing:?}, not in the schema {unknown:?}"
        );
        assert_eq!(def["additionalProperties"], false, "{what} is closed");
    }

    #[test]
    fn schema_version_is_the_records_version() {
        let s = schema();
        assert_eq!(s["$defs"]["version"]["const"], SCHEMA);
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let v = SCHEMA.rsplit('/').next().unwrap();
        assert_eq!(s["$id"], format!("urn:netladder:schema:events:{v}"));
        // The file name carries the same version.
        assert_eq!(v, "v1", "rename schema/netladder-events.v1.schema.json too");
    }

    #[test]
    fn schema_lists_exactly_the_ladder_vocabulary() {
        let s = schema();
        let causes: Vec<String> = Cause::ALL.iter().map(|c| c.as_str().to_owned()).collect();
        assert_eq!(
            enum_of(&s, "cause"),
            causes,
            "$defs.cause.enum must list Cause::ALL in its order"
        );
        let codes: Vec<String> = Code::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(enum_of(&s, "code"), codes);
        let layer = |l: Layer| match l {
            // A new layer fails to compile here until the schema lists it.
            Layer::Link
            | Layer::Address
            | Layer::Route
            | Layer::Firewall
            | Layer::Dns
            | Layer::Application => l.as_str().to_owned(),
        };
        let layers: Vec<String> = [
            Layer::Link,
            Layer::Address,
            Layer::Route,
            Layer::Firewall,
            Layer::Dns,
            Layer::Application,
        ]
        .into_iter()
        .map(layer)
        .collect();
        assert_eq!(enum_of(&s, "layer"), layers);
    }

    fn failure() -> Failure {
        Failure {
            errno: Some(111),
            src: Some("10.0.0.1:50000".parse().unwrap()),
            dst: Some("[fe80::1%2]:8080".parse().unwrap()),
            evidence: vec!["a reset".into()],
            duration_ns: Some(3_000_000),
            ..Failure::new(
                Code::Refused,
                Cause::NoListener,
                Layer::Application,
                "nothing listens".into(),
                Proc::new(42, 43, "curl", 7, 4026531840),
                0,
            )
        }
    }

    #[test]
    fn every_failure_field_is_in_the_schema() {
        let s = schema();
        let def = &s["$defs"]["failure"];
        let at = SystemTime::UNIX_EPOCH;
        // The fewest fields: no optional object, no workload found.
        let mut plain = failure_json(&failure(), &[], at);
        add_workload(&mut plain, None);
        conforms(&plain, def, "a plain failure");
        assert_eq!(plain["time"], "1970-01-01T00:00:00.000Z");
        // Every optional field at once.
        let mut f = failure();
        f.user = Some("alice".into());
        f.host_name = Some("db.example.test".into());
        f.firewall_rule = Some(FirewallRule {
            backend: "nftables",
            family: "inet".into(),
            table: "filter".into(),
            chain: "input".into(),
            hook: Some("input"),
            priority: Some(0),
            rule: "handle 7".into(),
            text: "tcp dport 8080 drop".into(),
            packets: Some(1),
            certainty: "certain",
        });
        f.overload = Some(Box::new(Overload {
            server_side: true,
            netns: 1,
            addr: "10.0.0.2:80".parse().unwrap(),
            pid: 9,
            comm: "nginx".into(),
            queue: 5,
            backlog: 4,
            rises: Some(QueueRises::default()),
            window_ns: Some(1_000_000_000),
        }));
        let mut full = failure_json(&f, &["ss -ltn".into()], at);
        let w = Workload {
            cgroup: "/kubepods.slice/x".into(),
            container: Some(Container {
                runtime: Some("containerd"),
                id: "0".repeat(64),
                name: None,
            }),
            pod: Some(Pod {
                uid: "u".into(),
                qos: "burstable",
                namespace: None,
                name: None,
            }),
        };
        add_workload(&mut full, Some(&w));
        conforms(&full, def, "a failure with every field");
        let props = &def["properties"];
        conforms(&full["listener"], &props["listener"], "listener");
        conforms(&full["firewall"], &props["firewall"], "firewall");
        conforms(&full["container"], &props["container"], "container");
        conforms(&full["pod"], &props["pod"], "pod");
    }

    #[test]
    fn every_stats_and_hooks_field_is_in_the_schema() {
        let s = schema();
        let stats = stats_json(&Stats::default(), true);
        conforms(&stats, &s["$defs"]["stats"], "stats");
        conforms(
            &stats["records"],
            &s["$defs"]["stats"]["properties"]["records"],
            "stats.records",
        );
        let outcomes: Vec<Outcome> = HOOKS
            .iter()
            .take(2)
            .map(|h| Outcome {
                hook: *h,
                status: Status::Attached,
            })
            .collect();
        let costs = costs_json(&[crate::kernel::loader::ProgramCost {
            name: "inet_sock_set_state".into(),
            runs: 3,
            run_ns: 600,
        }]);
        conforms(&costs, &s["$defs"]["costs"], "costs");
        conforms(
            &costs["programs"][0],
            &s["$defs"]["costs"]["properties"]["programs"]["items"],
            "a program's costs",
        );
        assert_eq!(
            costs_lines(&[crate::kernel::loader::ProgramCost {
                name: "kfree_skb".into(),
                runs: 4,
                run_ns: 1_000_000,
            }])[1],
            "netladder:   kfree_skb: 4 runs, 250000 ns per run, 1.0 ms in all"
        );
        let hooks = hooks_json(&outcomes, &[], &[]);
        let def = &s["$defs"]["hooks"];
        conforms(&hooks, def, "hooks");
        conforms(
            &hooks["hooks"][0],
            &def["properties"]["hooks"]["items"],
            "a hook",
        );
    }
}
