//! After classification: each failure filtered and counted as a repeat or not on the event loop
//! (`Output`), then handed to the enrichment worker (`worker.rs`) which enriches it, counts it in
//! the metrics and renders its line (`render.rs`) for the sink.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;

use super::{
    render::{emit_line, Render},
    worker::Worker,
};
use crate::{
    classify::Classifier,
    enrich,
    failure::{Failure, Ledger},
    filter::Filter,
    kernel::loader::{self},
    ladder::{self, Cause, Code},
    metrics::Metrics,
    output, sink,
};

/// Failures that count as the same one: process, code, cause, addresses, evidence namespace.
type RepeatKey = (
    u32,
    Code,
    Cause,
    Option<SocketAddr>,
    Option<SocketAddr>,
    u32,
);

/// The first failure of a kind is printed at once; identical ones in the next second are counted
/// and printed as one line with their `count` when the second is over.
struct Repeat {
    since: Instant,
    count: u32,
    last: Option<Failure>,
}

/// Where failures go: filtered and aggregated here, on the event loop; then handed, in order, to
/// the enrichment worker (`worker.rs`), which looks them up, renders and writes their lines.
pub(super) struct Output {
    json: bool,
    pub(super) filter: Filter,
    /// Failures told: lines of their own and the repeats counted in repeat lines.
    reported: u64,
    /// Where the records of the failures handed here ended: reported, repeats, merged (the
    /// other records of a failure made of several), filtered.
    ledger: Ledger,
    repeats: HashMap<RepeatKey, Repeat>,
    /// Cgroup id -> container and pod (cached), for `--container` and `--pod`.
    workloads: enrich::container::Resolver,
    pub(super) metrics: Option<Arc<Metrics>>,
    /// `--otlp`: the stats count what the exporter sent (also once it has finished).
    pub(super) otlp: bool,
    worker: Worker,
}

impl Output {
    /// Starts the enrichment worker with `enricher` and `render`.
    pub(super) fn new(
        filter: Filter,
        render: &Render,
        enricher: enrich::enricher::Enricher,
    ) -> Result<Self> {
        Ok(Self {
            json: render.json,
            filter,
            reported: 0,
            ledger: Ledger::default(),
            repeats: HashMap::new(),
            workloads: enrich::container::Resolver::new(enrich::container::Paths::host()),
            metrics: render.metrics.clone(),
            otlp: render.otlp,
            worker: Worker::start(enricher, render)?,
        })
    }

    const REPEAT_WINDOW: Duration = Duration::from_secs(1);

    pub(super) fn failure(&mut self, f: Failure) -> Result<()> {
        self.add(f, None)
    }

    /// `f.count` failures identical to one the kernel already sent (it only counted these):
    /// added to the repeat count, never printed on their own.
    pub(super) fn repeated(&mut self, f: Failure) -> Result<()> {
        let n = f.count;
        self.add(f, Some(n))
    }

    /// A failure (`counted` None), printed at once unless one like it was printed less than a
    /// second ago; or `counted` repeats of one, added to the count of the current second.
    fn add(&mut self, f: Failure, counted: Option<u32>) -> Result<()> {
        if !self.filter.matches(&f) {
            self.ledger.filtered += u64::from(f.records);
            return Ok(());
        }
        if self.filter.needs_workload() {
            let who = self.workloads.resolve(f.proc.cgroup_id, f.proc.pid);
            if !self.filter.matches_workload(who.as_deref()) {
                self.ledger.filtered += u64::from(f.records);
                return Ok(());
            }
        }
        // One record of the failure is the line (or the repeat); the others were merged in.
        let records = u64::from(f.records);
        let (own, merged) = (records.min(1), records.saturating_sub(1));
        let key = (
            f.proc.pid,
            f.code,
            f.cause,
            f.dst,
            f.dst.is_none().then_some(f.src).flatten(),
            f.evidence_netns,
        );
        let now = Instant::now();
        let n = counted.unwrap_or(1);
        if let Some(r) = self.repeats.get_mut(&key) {
            if now.duration_since(r.since) < Self::REPEAT_WINDOW {
                r.count = r.count.saturating_add(n);
                r.last = Some(f);
                self.reported += u64::from(n);
                self.ledger.repeats += own;
                self.ledger.merged += merged;
                return Ok(());
            }
        }
        // A window that ended before the tick flushed it is printed first, never overwritten.
        let ended = self.repeats.insert(
            key,
            Repeat {
                since: now,
                count: counted.unwrap_or(0),
                last: None,
            },
        );
        if let Some(Repeat {
            count,
            last: Some(mut last),
            ..
        }) = ended
        {
            last.count = count;
            self.print(last, true)?;
        }
        match counted {
            None => {
                self.ledger.reported += own;
                self.ledger.merged += merged;
                self.print(f, false)
            }
            Some(n) => {
                self.reported += u64::from(n);
                if let Some(r) = self.repeats.get_mut(&key) {
                    r.last = Some(f);
                }
                Ok(())
            }
        }
    }

    /// Prints the counted repeats whose second is over (all of them when `all`), one line each.
    pub(super) fn flush_repeats(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        let mut due = Vec::new();
        self.repeats.retain(|_, r| {
            if !all && now.duration_since(r.since) < Self::REPEAT_WINDOW {
                return true;
            }
            if let Some(mut f) = r.last.take() {
                f.count = r.count;
                due.push(f);
            }
            false
        });
        for f in due {
            self.print(f, true)?;
        }
        Ok(())
    }

    /// Hands one failure to the enrichment worker, which writes its line; `repeats`: it stands
    /// for `f.count` repeats of an earlier line.
    fn print(&mut self, f: Failure, repeats: bool) -> Result<()> {
        if !repeats {
            self.reported += 1;
        }
        self.worker.send(f, repeats)
    }

    /// At exit: waits until every failure handed over is written (see `Worker::finish`).
    pub(super) fn finish(&mut self) {
        let left = self.worker.finish();
        if left > 0 {
            sink::note(
                sink::Priority::Warning,
                &format!(
                    "netladder: {left} failures were still waiting for a look-up that did not \
                     return; exiting without them"
                ),
            );
        }
    }

    /// Lines written without their look-up so far.
    pub(super) fn enrich_skipped(&self) -> u64 {
        self.worker.skipped()
    }

    /// A #028 early-warning line (no process: it is about the namespace's ports).
    pub(super) fn warning_028(
        &self,
        netns: u64,
        dst: SocketAddr,
        count: u64,
        range: (u16, u16),
        summary: &str,
    ) -> String {
        let ctx = ladder::StepCtx {
            dst: Some(dst),
            netns_name: enrich::netns::netns_name(netns),
            other_netns: enrich::netns::own_netns_inode().is_ok_and(|o| o != netns),
            ..ladder::StepCtx::default()
        };
        let next = ladder::next_steps(Code::TimeWait, Some(Cause::PortsExhausted), &ctx);
        if self.json {
            serde_json::json!({
                "schema": output::SCHEMA,
                "type": "warning",
                "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "code": "028",
                "title": ladder::rung(Code::TimeWait).title,
                "layer": "address",
                "netns": netns,
                "dst": dst.to_string(),
                "time_wait": count,
                "port_range": [range.0, range.1],
                "summary": summary,
                "next": next,
            })
            .to_string()
        } else {
            let first = next
                .first()
                .map(|n| format!("  next: {n}"))
                .unwrap_or_default();
            format!("warning #028 time-wait  netns {netns}  {summary}{first}")
        }
    }

    /// The stats as of now: the kernel's counters `c`, and where the records read ended.
    pub(super) fn snapshot(&self, c: &loader::Counters, classifier: &Classifier) -> output::Stats {
        output::Stats {
            kernel: *c,
            read: classifier.fed_and_emitted().0,
            ledger: classifier.ledger().plus(self.ledger),
            held: classifier.held(),
            outside_repeats: classifier.outside_repeats,
            reported: self.reported,
            unwritten: sink::unwritten(),
            enrich_skipped: self.worker.skipped(),
            otlp: self.otlp.then(crate::otlp::counts),
        }
    }

    /// The stats line (JSON on stdout, human on stderr). The final one comes after every line
    /// before it was written (a reader that stopped reading is waited for a bounded time).
    pub(super) fn stats(
        &self,
        c: &loader::Counters,
        classifier: &Classifier,
        final_: bool,
    ) -> Result<()> {
        let s = self.snapshot(c, classifier);
        if let Some(m) = &self.metrics {
            m.health(&s);
        }
        if self.json {
            emit_line(&output::stats_json(&s, final_).to_string())?;
        }
        if final_ {
            sink::drain(super::STALLED_READER);
        }
        if final_ || !self.json {
            sink::note(sink::Priority::Info, &output::stats_line(&s, final_));
        }
        Ok(())
    }
}
