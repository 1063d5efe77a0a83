//! `watch --metrics`: Prometheus counters of the failures netladder reports, and of its own
//! health, served over HTTP at `/metrics` (prometheus-client's text encoder; tiny_http serves it
//! from a thread of its own, so a slow scraper never holds up the event loop).
//!
//! Label cardinality is bounded: the ladder labels (code, layer, cause) are fixed sets; every
//! open-ended label (comm, netns, container, pod, firewall table/chain) keeps the first
//! `label_limit` distinct values it sees, and counts any later value under `other` (and in
//! `netladder_label_overflow_total`). Each open-ended label lives in its own family beside
//! `code`, never multiplied with another, so a watch produces at most about
//! 10 codes x (label_limit + 1) series per family.
use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, Result};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    enrich::container::Workload, failure::Failure, kernel::plan::Outcome, ladder, output::Stats,
};

/// Where `--metrics` without an address listens.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";
/// The value an open-ended label takes once its limit is reached.
pub const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rung {
    code: String,
    layer: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByNetns {
    code: String,
    netns: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByComm {
    code: String,
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByContainer {
    code: String,
    runtime: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByPod {
    code: String,
    namespace: String,
    pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByChain {
    code: String,
    backend: String,
    family: String,
    table: String,
    chain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Hook {
    program: String,
    status: String,
}

/// Where a kernel record ended (see `failure::Ledger`), or `lost`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Fate {
    fate: &'static str,
}

/// Every value of [`Fate`], in the order [`fates`] gives their totals.
const FATES: [&str; 9] = [
    "lost",
    "reported",
    "repeat",
    "merged",
    "context",
    "unclassified",
    "malformed",
    "filtered",
    "dropped",
];

/// The totals of [`FATES`] in `s`.
fn fates(s: &Stats) -> [u64; 9] {
    let l = &s.ledger;
    [
        s.kernel.lost,
        l.reported,
        l.repeats,
        l.merged,
        l.context,
        l.unclassified,
        l.malformed,
        l.filtered,
        l.dropped,
    ]
}

/// What became of what was given to the OTLP exporter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Otlp {
    signal: &'static str,
    outcome: &'static str,
}

/// Every (signal, outcome) of [`Otlp`], in the order [`otlp_counts`] gives their totals.
const OTLP: [(&str, &str); 5] = [
    ("logs", "sent"),
    ("logs", "queue_full"),
    ("logs", "failed"),
    ("metrics", "sent"),
    ("metrics", "failed"),
];

fn otlp_counts(o: &crate::otlp::totals::Counts) -> [u64; 5] {
    [
        o.logs_sent,
        o.logs_queue_full,
        o.logs_failed,
        o.metrics_sent,
        o.metrics_failed,
    ]
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Label {
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: String,
}

/// The first `limit` distinct values of one label; later ones are `other`.
struct Bounded {
    name: &'static str,
    seen: HashSet<String>,
}

impl Bounded {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            seen: HashSet::new(),
        }
    }
}

/// Kernel counters as last exported (they are totals; the counters get the difference).
#[derive(Default)]
struct Last {
    events: u64,
    lost: u64,
    conn_map_full: u64,
    drop_map_full: u64,
    malformed: u64,
    unclassified: u64,
    enrich_skipped: u64,
    fates: [u64; 9],
    otlp: [u64; 5],
}

pub struct Metrics {
    registry: Arc<Registry>,
    limit: usize,
    bounded: Mutex<Vec<Bounded>>,
    last: Mutex<Last>,
    failures: Family<Rung, Counter>,
    by_netns: Family<ByNetns, Counter>,
    by_comm: Family<ByComm, Counter>,
    by_container: Family<ByContainer, Counter>,
    by_pod: Family<ByPod, Counter>,
    by_chain: Family<ByChain, Counter>,
    warnings: Family<Code, Counter>,
    overflow: Family<Label, Counter>,
    events: Counter,
    lost: Counter,
    conn_map_full: Counter,
    drop_map_full: Counter,
    malformed: Counter,
    unclassified: Counter,
    enrich_skipped: Counter,
    records: Family<Fate, Counter>,
    otlp: Family<Otlp, Counter>,
    held: Gauge,
    hook: Family<Hook, Gauge>,
    hooks_attached: Gauge,
    hooks_not_attached: Gauge,
    degraded: Gauge,
}

const COMM: usize = 0;
const NETNS: usize = 1;
const CONTAINER: usize = 2;
const POD: usize = 3;
const CHAIN: usize = 4;

impl Metrics {
    pub fn new(label_limit: usize) -> Self {
        let mut r = Registry::default();
        let m = Self {
            registry: Arc::new(Registry::default()),
            limit: label_limit,
            bounded: Mutex::new(vec![
                Bounded::new("comm"),
                Bounded::new("netns"),
                Bounded::new("container"),
                Bounded::new("pod"),
                Bounded::new("chain"),
            ]),
            last: Mutex::new(Last::default()),
            failures: Family::default(),
            by_netns: Family::default(),
            by_comm: Family::default(),
            by_container: Family::default(),
            by_pod: Family::default(),
            by_chain: Family::default(),
            warnings: Family::default(),
            overflow: Family::default(),
            events: Counter::default(),
            lost: Counter::default(),
            conn_map_full: Counter::default(),
            drop_map_full: Counter::default(),
            malformed: Counter::default(),
            unclassified: Counter::default(),
            enrich_skipped: Counter::default(),
            records: Family::default(),
            otlp: Family::default(),
            held: Gauge::default(),
            hook: Family::default(),
            hooks_attached: Gauge::default(),
            hooks_not_attached: Gauge::default(),
            degraded: Gauge::default(),
        };
        // Present from the start (at 0), so that rate() and increase() see its first warning.
        drop(m.warnings.get_or_create(&Code { code: "028".into() }));
        for fate in FATES {
            drop(m.records.get_or_create(&Fate { fate }));
        }
        let version = Family::<Version, Gauge>::default();
        version
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register(
            "netladder_build_info",
            "netladder's version (always 1)",
            version,
        );
        r.register(
            "netladder_failures",
            "Failed connections reported, by ladder code, layer and cause",
            m.failures.clone(),
        );
        r.register(
            "netladder_failures_by_netns",
            "Failed connections by network namespace inode of the process (bounded, then \"other\")",
            m.by_netns.clone(),
        );
        r.register(
            "netladder_failures_by_comm",
            "Failed connections by command name of the process (bounded, then \"other\")",
            m.by_comm.clone(),
        );
        r.register(
            "netladder_failures_by_container",
            "Failed connections from containers, by runtime and container name or short id \
             (bounded, then \"other\")",
            m.by_container.clone(),
        );
        r.register(
            "netladder_failures_by_pod",
            "Failed connections from Kubernetes pods, by namespace and pod name (the pod UID when \
             the name is unknown; bounded, then \"other\")",
            m.by_pod.clone(),
        );
        r.register(
            "netladder_firewall_failures",
            "Failed connections whose firewall rule was named, by backend, family, table and chain \
             (bounded, then \"other\")",
            m.by_chain.clone(),
        );
        r.register(
            "netladder_warnings",
            "Early warnings (#028: TIME_WAIT crowding the local ports)",
            m.warnings.clone(),
        );
        r.register(
            "netladder_label_overflow",
            "Failures counted under \"other\" because a label reached its limit",
            m.overflow.clone(),
        );
        r.register(
            "netladder_kernel_events",
            "Events read from the kernel",
            m.events.clone(),
        );
        r.register(
            "netladder_lost_events",
            "Events lost because the ring buffer was full",
            m.lost.clone(),
        );
        r.register(
            "netladder_untracked_connections",
            "Connections not tracked because the kernel's connection map was full",
            m.conn_map_full.clone(),
        );
        r.register(
            "netladder_lost_drop_records",
            "Packet drop records lost because the kernel's drop map was full",
            m.drop_map_full.clone(),
        );
        r.register(
            "netladder_malformed_events",
            "Kernel events that could not be decoded",
            m.malformed.clone(),
        );
        r.register(
            "netladder_unclassified_errors",
            "Connection errors outside the ladder",
            m.unclassified.clone(),
        );
        r.register(
            "netladder_enrichment_skipped",
            "Failures reported without the details netladder looks up (routes, listeners, \
             firewall rules...) because those look-ups had fallen behind",
            m.enrich_skipped.clone(),
        );
        r.register(
            "netladder_kernel_records",
            "Records the kernel wrote, by where each ended: lost (ring buffer full), or read and \
             reported, repeat, merged (into another failure), context (no failure by itself), \
             unclassified (outside the ladder), malformed, filtered, dropped (classifier tables full)",
            m.records.clone(),
        );
        r.register(
            "netladder_kernel_records_held",
            "Records read and held for a failure that is not complete yet",
            m.held.clone(),
        );
        r.register(
            "netladder_otlp",
            "With --otlp: log records (signal logs) and metric exports (signal metrics) by what \
             became of them: sent, queue_full (dropped, the queue was full), failed (after \
             retries)",
            m.otlp.clone(),
        );
        r.register(
            "netladder_hook",
            "Each eBPF program and its status (attached, refused, skipped); always 1",
            m.hook.clone(),
        );
        r.register(
            "netladder_hooks_attached",
            "eBPF programs attached",
            m.hooks_attached.clone(),
        );
        r.register(
            "netladder_hooks_not_attached",
            "eBPF programs refused by the kernel or skipped (degraded)",
            m.hooks_not_attached.clone(),
        );
        r.register(
            "netladder_degraded",
            "Capabilities lost on this kernel or by choice (see `netladder hooks`)",
            m.degraded.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The value to use for one open-ended label, counting an overflow.
    fn bounded(&self, which: usize, value: &str) -> String {
        let mut b = self.bounded.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut b[which];
        if b.seen.contains(value) {
            return value.to_owned();
        }
        if b.seen.len() < self.limit {
            b.seen.insert(value.to_owned());
            return value.to_owned();
        }
        self.overflow
            .get_or_create(&Label {
                label: b.name.into(),
            })
            .inc();
        OTHER.to_owned()
    }

    /// Counts one printed failure line, standing for `f.count` failures.
    pub fn failure(&self, f: &Failure, who: Option<&Workload>) {
        let n = u64::from(f.count.max(1));
        let code = ladder::id(f.code);
        self.failures
            .get_or_create(&Rung {
                code: code.clone(),
                layer: f.layer.as_str().into(),
                cause: f.cause.as_str().into(),
            })
            .inc_by(n);
        let netns = self.bounded(NETNS, &f.proc.netns.to_string());
        self.by_netns
            .get_or_create(&ByNetns {
                code: code.clone(),
                netns,
            })
            .inc_by(n);
        let comm = self.bounded(COMM, &f.proc.comm);
        self.by_comm
            .get_or_create(&ByComm {
                code: code.clone(),
                comm,
            })
            .inc_by(n);
        if let Some(c) = who.and_then(|w| w.container.as_ref()) {
            let name = c.name.clone().unwrap_or_else(|| c.short_id().to_owned());
            let runtime = c.runtime.unwrap_or("unknown").to_owned();
            let key = self.bounded(CONTAINER, &format!("{runtime}\0{name}"));
            let (runtime, container) = if key == OTHER {
                (OTHER.to_owned(), OTHER.to_owned())
            } else {
                (runtime, name)
            };
            self.by_container
                .get_or_create(&ByContainer {
                    code: code.clone(),
                    runtime,
                    container,
                })
                .inc_by(n);
        }
        if let Some(p) = who.and_then(|w| w.pod.as_ref()) {
            let namespace = p.namespace.clone().unwrap_or_default();
            let pod = p.name.clone().unwrap_or_else(|| p.uid.clone());
            let key = self.bounded(POD, &format!("{namespace}/{pod}"));
            let (namespace, pod) = if key == OTHER {
                (OTHER.to_owned(), OTHER.to_owned())
            } else {
                (namespace, pod)
            };
            self.by_pod
                .get_or_create(&ByPod {
                    code: code.clone(),
                    namespace,
                    pod,
                })
                .inc_by(n);
        }
        if let Some(r) = &f.firewall_rule {
            let key = self.bounded(
                CHAIN,
                &format!("{}\0{}\0{}\0{}", r.backend, r.family, r.table, r.chain),
            );
            let labels = if key == OTHER {
                ByChain {
                    code,
                    backend: OTHER.into(),
                    family: OTHER.into(),
                    table: OTHER.into(),
                    chain: OTHER.into(),
                }
            } else {
                ByChain {
                    code,
                    backend: r.backend.to_string(),
                    family: r.family.to_string(),
                    table: r.table.to_string(),
                    chain: r.chain.to_string(),
                }
            };
            self.by_chain.get_or_create(&labels).inc_by(n);
        }
    }

    pub fn warning(&self, code: ladder::Code) {
        self.warnings
            .get_or_create(&Code {
                code: ladder::id(code),
            })
            .inc();
    }

    /// The kernel's totals, and where the records read ended.
    pub fn health(&self, s: &Stats) {
        let c = &s.kernel;
        let unclassified = s.ledger.unclassified + s.outside_repeats;
        let mut guard = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let last = &mut *guard;
        for ((fate, now), last) in FATES.iter().zip(fates(s)).zip(last.fates.iter_mut()) {
            if now > *last {
                self.records
                    .get_or_create(&Fate { fate })
                    .inc_by(now - *last);
                *last = now;
            }
        }
        if let Some(o) = &s.otlp {
            for ((&(signal, outcome), now), last) in
                OTLP.iter().zip(otlp_counts(o)).zip(last.otlp.iter_mut())
            {
                let c = self.otlp.get_or_create(&Otlp { signal, outcome });
                if now > *last {
                    c.inc_by(now - *last);
                    *last = now;
                }
            }
        }
        self.held.set(i64::try_from(s.held).unwrap_or(i64::MAX));
        let pairs = [
            (&self.events, &mut last.events, c.events),
            (&self.lost, &mut last.lost, c.lost),
            (
                &self.conn_map_full,
                &mut last.conn_map_full,
                c.conn_map_full,
            ),
            (
                &self.drop_map_full,
                &mut last.drop_map_full,
                c.drop_map_full,
            ),
            (&self.malformed, &mut last.malformed, c.malformed),
            (&self.unclassified, &mut last.unclassified, unclassified),
            (
                &self.enrich_skipped,
                &mut last.enrich_skipped,
                s.enrich_skipped,
            ),
        ];
        for (counter, last, now) in pairs {
            if now > *last {
                counter.inc_by(now - *last);
                *last = now;
            }
        }
    }

    pub fn hooks(&self, outcomes: &[Outcome], degraded: &[String]) {
        let mut attached = 0;
        for o in outcomes {
            let status = o.status.word();
            attached += i64::from(status == "attached");
            self.hook
                .get_or_create(&Hook {
                    program: o.hook.program.into(),
                    status: status.into(),
                })
                .set(1);
        }
        self.hooks_attached.set(attached);
        self.hooks_not_attached
            .set(outcomes.len() as i64 - attached);
        self.degraded.set(degraded.len() as i64);
    }

    /// The exposition text, as a scrape gets it (and as `--otlp` exports it).
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }

    /// Serves `/metrics` on `addr` from a thread of its own, for as long as netladder runs.
    pub fn serve(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow!("--metrics {addr}: cannot listen there: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("--metrics {addr}: not an IP listener"))?;
        let registry = Arc::clone(&self.registry);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let response = match (req.method(), req.url()) {
                        (tiny_http::Method::Get, "/metrics") => {
                            tiny_http::Response::from_string(encode(&registry)).with_header(header(
                                "Content-Type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ))
                        }
                        (tiny_http::Method::Get, "/") => {
                            tiny_http::Response::from_string("netladder: metrics are at /metrics\n")
                                .with_header(header("Content-Type", "text/plain; charset=utf-8"))
                        }
                        _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
                    };
                    let _ = req.respond(response);
                }
            })?;
        Ok(bound)
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header is valid")
}

fn encode(registry: &Registry) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, registry);
    s
}

/// `--metrics` value: `HOST:PORT`, `[V6]:PORT`, or a bare port (on 127.0.0.1).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("{s:?} is not an address: give HOST:PORT (e.g. 0.0.0.0:9464) or a port")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        enrich::container::{Container, Pod},
        failure::{FirewallRule, Proc},
        kernel::loader::Counters,
        ladder::{Cause, Code, Layer},
    };

    fn failure(code: Code, comm: &str, netns: u32) -> Failure {
        let (cause, layer) = if code == Code::Refused {
            (Cause::NoListener, Layer::Application)
        } else {
            (Cause::FirewallDrop, Layer::Firewall)
        };
        let proc = Proc::new(1, 1, comm, 1, netns);
        Failure {
            records: 0,
            ..Failure::new(code, cause, layer, String::new(), proc, 0)
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn counts_by_code_and_bounds_open_labels() {
        let m = Metrics::new(2);
        m.failure(&failure(Code::Refused, "curl", 10), None);
        let mut twice = failure(Code::Refused, "curl", 10);
        twice.count = 2;
        m.failure(&twice, None);
        m.failure(&failure(Code::Refused, "wget", 11), None);
        m.failure(&failure(Code::Refused, "nc", 12), None);
        let text = m.encode();
        assert_eq!(
            line(&text, "netladder_failures_total{code=\"021\""),
            Some(
                r#"netladder_failures_total{code="021",layer="application",cause="no_listener"} 5"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"netladder_failures_by_comm_total{code="021",comm="curl"} 3"#));
        assert!(text.contains(r#"netladder_failures_by_comm_total{code="021",comm="wget"} 1"#));
        assert!(text.contains(r#"netladder_failures_by_comm_total{code="021",comm="other"} 1"#));
        assert!(text.contains(r#"netladder_failures_by_netns_total{code="021",netns="other"} 1"#));
        assert!(text.contains(r#"netladder_label_overflow_total{label="comm"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn containers_pods_and_chains() {
        let m = Metrics::new(8);
        let mut f = failure(Code::Timeout, "java", 10);
        f.firewall_rule = Some(FirewallRule {
            backend: "nftables",
            family: "inet".into(),
            table: "filter".into(),
            chain: "input".into(),
            ..Default::default()
        });
        let w = Workload {
            cgroup: "/x".into(),
            container: Some(Container {
                runtime: Some("containerd"),
                id: "a".repeat(64),
                name: None,
            }),
            pod: Some(Pod {
                uid: "0b7632a2-a56e-4278-987a-22de18008dbe".into(),
                qos: "burstable",
                namespace: Some("shop".into()),
                name: Some("web-0".into()),
            }),
        };
        m.failure(&f, Some(&w));
        let text = m.encode();
        assert!(text.contains(&format!(
            r#"netladder_failures_by_container_total{{code="023",runtime="containerd",container="{}"}} 1"#,
            "a".repeat(12)
        )), "{text}");
        assert!(text.contains(
            r#"netladder_failures_by_pod_total{code="023",namespace="shop",pod="web-0"} 1"#
        ));
        assert!(text.contains(
            r#"netladder_firewall_failures_total{code="023",backend="nftables",family="inet",table="filter",chain="input"} 1"#
        ));
    }

    #[test]
    fn health_counters_follow_kernel_totals() {
        let m = Metrics::new(8);
        let c = Counters {
            events: 5,
            lost: 1,
            ..Default::default()
        };
        let s = Stats {
            kernel: c,
            outside_repeats: 2,
            ..Default::default()
        };
        m.health(&s);
        let mut s = Stats {
            kernel: Counters { events: 9, ..c },
            ..s
        };
        s.ledger.merged = 3;
        s.held = 4;
        s.enrich_skipped = 2;
        m.health(&s);
        let text = m.encode();
        assert!(
            text.contains(r#"netladder_kernel_records_total{fate="merged"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"netladder_kernel_records_total{fate="lost"} 1"#));
        assert!(text.contains(r#"netladder_kernel_records_total{fate="filtered"} 0"#));
        assert!(text.contains("netladder_kernel_records_held 4"));
        assert!(text.contains("netladder_kernel_events_total 9"), "{text}");
        assert!(text.contains("netladder_lost_events_total 1"));
        assert!(text.contains("netladder_unclassified_errors_total 2"));
        assert!(
            text.contains("netladder_enrichment_skipped_total 2"),
            "{text}"
        );
        assert!(text.contains("netladder_build_info{version="));
        assert!(
            text.contains(r#"netladder_warnings_total{code="028"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_addr("0.0.0.0:1").unwrap().to_string(), "0.0.0.0:1");
        assert_eq!(parse_addr("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_addr("localhost").is_err());
    }
}
