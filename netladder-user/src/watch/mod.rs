//! `netladder watch` and `netladder hooks`: start-up, the event loop, and shutdown. The session
//! with the kernel (load, attach, read the ring buffer), which `diagnose` shares, is in
//! `session.rs`; what becomes of a failure after classification (filter and repeats on this
//! loop; enrichment, metrics and the line on the enrichment worker) is in `pipeline.rs` and
//! `worker.rs`. The loop does none of the failures' look-ups: it reads, classifies and hands over.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::{MapData, RingBuf};
use netladder_common::AggKey;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    classify::{Classifier, Repeated},
    cli::{HooksArgs, WatchArgs},
    clock::monotonic_ns,
    enrich,
    filter::Filter,
    kernel::{
        aggregate::Aggregates,
        decode::Names,
        loader::{self, Loaded},
        plan,
    },
    metrics::Metrics,
    otlp, output, sink,
};

mod pipeline;
mod render;
mod session;
mod worker;

use pipeline::Output;
pub(crate) use render::step_ctx;
use render::{emit_line, Render};
use session::drops_watched;
pub(crate) use session::{drain_with, start, Session};

pub fn hooks(args: HooksArgs) -> Result<()> {
    let mut s = start(&args.hooks, None, false)?;
    if args.json {
        let mut v = output::hooks_json(&s.loaded.outcomes, &s.degraded, &s.loaded._ebpf.linked());
        v["tls_coverage"] = tls_coverage(&s.loaded.outcomes).into();
        println!("{v}");
    } else {
        print!(
            "{}",
            output::hooks_table(&s.loaded.outcomes, &s.loaded._ebpf.linked())
        );
        for d in &s.degraded {
            println!("degraded: {d}");
        }
        if s.degraded.is_empty() {
            println!("nothing degraded: every hook attached");
        }
        println!("{}", tls_coverage(&s.loaded.outcomes));
    }
    loader::detach_all(&mut s.loaded._ebpf);
    Ok(())
}

/// #025: which TLS stacks `watch` sees, and which it does not, in one line.
fn tls_coverage(outcomes: &[plan::Outcome]) -> String {
    let attached = |p: &str| {
        outcomes
            .iter()
            .any(|o| o.hook.program == p && o.status == plan::Status::Attached)
    };
    let openssl = attached("ssl_do_handshake") && attached("x509_verify_cert_ret");
    let seen = match (openssl, attached("curl_easy_perform_ret")) {
        (true, true) => "OpenSSL 3 (libssl.so.3) clients, and curl's own host name check",
        (true, false) => "OpenSSL 3 (libssl.so.3) clients (not curl's own host name check)",
        (false, _) => "none (OpenSSL 3 hooks not attached)",
    };
    format!(
        "tls (#025): seen: {seen}; not seen: GnuTLS, NSS, rustls, Go crypto/tls, BoringSSL or \
         OpenSSL linked statically, OpenSSL 1.1, and libraries outside the system library \
         path (a container's own filesystem)"
    )
}

pub fn run(args: WatchArgs) -> Result<()> {
    let filter = Filter::new(&args.pid, &args.comm, &args.port, &args.netns, &args.code)?
        .with_workloads(&args.container, &args.pod)?;
    if args.metrics_label_limit == 0 {
        bail!("--metrics-label-limit must be at least 1");
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(args.stats_interval > 0.0 && args.stats_interval.is_finite()) {
        bail!("--stats-interval must be a positive number of seconds");
    }
    if !(0.0..=1.0).contains(&args.tw_warn_share) {
        bail!("--tw-warn-share must be a fraction between 0 and 1");
    }
    let only_netns = match filter.netns[..] {
        [one] => u32::try_from(one).ok(),
        _ => None,
    };
    // Where lines go, and the metrics listener: bad values fail before anything is loaded.
    let journal = args.journal || (!args.json && args.output.is_none() && sink::is_journal(1));
    sink::Sink::new(args.output.as_deref(), journal)?.install();
    let otlp = match &args.otlp {
        Some(flag) => Some(otlp::Config::new(
            Some(flag.as_str()).filter(|f| !f.is_empty()),
            |name| std::env::var(name).ok(),
        )?),
        None => None,
    };
    // The counters: served with --metrics, exported with --otlp.
    let metrics = (args.metrics.is_some() || otlp.is_some())
        .then(|| Arc::new(Metrics::new(args.metrics_label_limit)));
    if let (Some(addr), Some(m)) = (args.metrics, &metrics) {
        let bound = m.serve(addr)?;
        sink::note(
            sink::Priority::Info,
            &format!("netladder: metrics at http://{bound}/metrics"),
        );
    }
    if let (Some(config), Some(m)) = (otlp, &metrics) {
        let to = config.describe();
        otlp::start(config, Arc::clone(m))?;
        sink::note(
            sink::Priority::Info,
            &format!("netladder: sending failures and metrics over OTLP to {to}"),
        );
    }
    let session = start(&args.hooks, only_netns, false)?;
    if let Some(m) = &metrics {
        m.hooks(&session.loaded.outcomes, &session.degraded);
    }
    // A run killed while it traced (--trace-firewall, kernels before 5.12) left its table.
    for line in enrich::nftrace::clean_leftovers() {
        eprintln!("netladder: {line}");
    }
    announce(&session, &args)?;
    let tw = TimeWaitCheck {
        netns: only_netns,
        share: args.tw_warn_share,
        warned: HashMap::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(event_loop(session, filter, tw, metrics, &args))
}

/// Tells what attached: one line on stderr (the table with -v), a "hooks" line in JSON mode.
fn announce(s: &Session, args: &WatchArgs) -> Result<()> {
    let attached = s
        .loaded
        .outcomes
        .iter()
        .filter(|o| o.status == plan::Status::Attached)
        .count();
    sink::note(
        sink::Priority::Info,
        &format!(
            "netladder: watching ({attached} of {} hooks attached{})",
            s.loaded.outcomes.len(),
            if s.degraded.is_empty() {
                ""
            } else {
                "; degraded, see below"
            }
        ),
    );
    if args.verbose {
        eprint!(
            "{}",
            output::hooks_table(&s.loaded.outcomes, &s.loaded._ebpf.linked())
        );
        let verified = |program: &str| loader::verified_instructions(&s.loaded._ebpf, program);
        eprintln!("netladder: {}", s.timeline.summary(3, verified));
    }
    for d in &s.degraded {
        sink::note(
            sink::Priority::Warning,
            &format!("netladder: degraded: {d}"),
        );
    }
    if args.json {
        let linked = s.loaded._ebpf.linked();
        emit_line(&output::hooks_json(&s.loaded.outcomes, &s.degraded, &linked).to_string())?;
    }
    Ok(())
}

async fn event_loop(
    session: Session,
    filter: Filter,
    mut tw: TimeWaitCheck,
    metrics: Option<Arc<Metrics>>,
    args: &WatchArgs,
) -> Result<()> {
    let Session {
        loaded,
        names,
        degraded: _,
        timeline: _,
    } = session;
    let Loaded {
        events,
        counters,
        mut aggregates,
        mut stop,
        program_fds,
        outcomes,
        _ebpf: ebpf,
    } = loaded;
    // SAFETY: the ring buffer owns its fd and lives as long as the AsyncFd that wraps it.
    let mut ring: AsyncFd<RingBuf<MapData>> = unsafe {
        AsyncFd::register_with_interest(events, Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("cannot poll the event ring buffer: {}", e.into_parts().1))?;
    let mut counters = loader::CounterReader::new(counters, program_fds);
    let mut render = Render::new(args.json);
    render.metrics = metrics;
    render.otlp = otlp::enabled();
    if args.output.is_some() || args.journal {
        render.style.color = false;
    }
    render.no_drop_reasons = !drops_watched(&outcomes);
    let mut enricher = if args.trace_firewall {
        enrich::enricher::Enricher::tracing()
    } else {
        enrich::enricher::Enricher::default()
    };
    enricher.probe_tls = args.probe_tls;
    // The server side of #023 accept_queue_full: the namespaces --netns names (else all of
    // them), each overloaded listener reported at most once per stats interval.
    let queues = Arc::new(std::sync::Mutex::new(enrich::acceptq::QueueWatch::new(
        filter.netns.clone(),
        Duration::from_secs_f64(args.stats_interval.max(1.0)),
    )));
    enricher.queues = Arc::clone(&queues);
    let poll_queues =
        filter.codes.is_empty() || filter.codes.contains(&crate::ladder::Code::Timeout);
    // The server-side poll runs on a thread of its own; the first reading comes before
    // anything is reported as watched: connects from then on have a reading of the listeners'
    // counters from before they began.
    let mut polled = if poll_queues {
        queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poll(monotonic_ns());
        Some(worker::poll_queues(queues)?)
    } else {
        None
    };
    // Look-ups, rendering and writing run on the enrichment worker (`worker.rs`).
    let no_drop_reasons = render.no_drop_reasons;
    let mut out = Output::new(filter, &render, enricher)?;
    drop(render);
    let mut classifier = Classifier::new();
    classifier.set_drops_watched(!no_drop_reasons);
    let mut waiting = Waiting::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stats_tick = tokio::time::interval(Duration::from_secs_f64(args.stats_interval));
    let mut tw_seen = tw.start(Duration::from_secs_f64(args.stats_interval))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // SIGHUP reopens --output (logrotate); without --output it keeps its default (terminate).
    let mut sighup = match args.output {
        Some(_) => Some(signal(SignalKind::hangup())?),
        None => None,
    };
    // --program-costs: the kernel counts every BPF program's runs and run time while this
    // descriptor is open (it turns them off when netladder exits).
    // Only then are the programs' descriptors read at start, for the baseline.
    let costs = if args.program_costs {
        let on = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
            anyhow::anyhow!("cannot turn on the kernel's BPF run-time statistics: {e}")
        })?;
        Some((on, counters.program_costs()))
    } else {
        None
    };
    // Ready only once a signal can no longer kill netladder before its final report.
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")
            .with_context(|| format!("cannot create the ready file {}", path.display()))?;
    }
    let deadline = tokio::time::sleep(Duration::from_secs_f64(args.duration.unwrap_or(1e9)));
    tokio::pin!(deadline);
    let (mut last_lost, mut last_skipped, mut last_unwritten, mut last_unenriched) = (0, 0, 0, 0);
    let mut last_otlp = otlp::Counts::default();

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &names, &mut classifier, &mut out)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // Events submitted without a wakeup (the kernel batches them) wait for the tick.
                drain(ring.get_mut(), &names, &mut classifier, &mut out)?;
                out.flush_repeats(false)?;
                collect_repeats(&mut aggregates, &mut waiting, &mut classifier, &mut out)?;
                for f in classifier.tick(monotonic_ns()) {
                    out.failure(f)?;
                }
                if out.metrics.is_some() {
                    let c = loader::Counters { aggregated: aggregates.total, ..counters.read() };
                    let s = out.snapshot(&c, &classifier);
                    if let Some(m) = &out.metrics {
                        m.health(&s);
                    }
                }
            }
            Some(_) = async {
                match sighup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                sink::reopen()?;
            }
            Some(p) = async {
                match polled.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match p {
                    worker::Polled::Failure(f) => out.failure(*f)?,
                    worker::Polled::Note(note) => sink::note(sink::Priority::Warning, &note),
                }
            }
            Some(seen) = async {
                match tw_seen.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                for line in tw.lines(seen, &out) {
                    emit_line(&line)?;
                }
            }
            _ = stats_tick.tick() => {
                let c = counters.read();
                let o = otlp::counts();
                if o.unsent() > last_otlp.unsent() {
                    otlp_unsent_note(&last_otlp, &o);
                }
                if c.lost > last_lost
                    || c.skipped_runs > last_skipped
                    || sink::unwritten() > last_unwritten
                    || out.enrich_skipped() > last_unenriched
                    || o.unsent() > last_otlp.unsent()
                {
                    last_otlp = o;
                    last_lost = c.lost;
                    last_skipped = c.skipped_runs;
                    last_unwritten = sink::unwritten();
                    last_unenriched = out.enrich_skipped();
                    let c = loader::Counters { aggregated: aggregates.total, ..c };
                    out.stats(&c, &classifier, false)?;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
        }
    }
    // The end, in an order that loses nothing. First no new record: the programs stop writing
    // (and counting) them; a run that had already begun ends within microseconds. Should the
    // kernel refuse the write, the programs are detached instead (that takes longer).
    let stopped_at = monotonic_ns();
    let mut ebpf = Some(ebpf);
    if let Err(e) = stop.set(0, 1, 0) {
        sink::note(
            sink::Priority::Warning,
            &format!("netladder: cannot stop the programs' records ({e}); detaching them first"),
        );
        counters.forget_programs();
        if let Some(ebpf) = ebpf.as_mut() {
            loader::detach_all(ebpf);
        }
        ebpf = None;
    }
    std::thread::sleep(Duration::from_millis(10));
    // Then every record the kernel queued is read, and the kernel's last counts of repeats,
    // whose events have all been read by now.
    drain_to_end(ring.get_mut(), &names, &mut classifier, &mut out, &counters)?;
    collect_repeats(&mut aggregates, &mut waiting, &mut classifier, &mut out)?;
    for (_, n, _) in waiting.drain(..) {
        classifier.give_up(n);
    }
    // Then every failure still held (lookups waiting for late answers or their result, ssh
    // reasons waiting for their connection's end) goes out with what is known, and the repeat
    // lines not printed yet; and only then the stats.
    for f in classifier.flush(stopped_at) {
        out.failure(f)?;
    }
    // The listen-queue poll ends: what it had sent is reported.
    if let Some(mut rx) = polled.take() {
        rx.close();
        while let Ok(p) = rx.try_recv() {
            match p {
                worker::Polled::Failure(f) => out.failure(*f)?,
                worker::Polled::Note(note) => sink::note(sink::Priority::Warning, &note),
            }
        }
    }
    out.flush_repeats(true)?;
    // Every line handed to the enrichment worker is written before the final stats.
    out.finish();
    let c = loader::Counters {
        aggregated: aggregates.total,
        ..counters.read()
    };
    // The exporter's last batch and metrics (with the health counters as of now) before the
    // final stats, which count what it sent.
    if let (true, Some(m)) = (out.otlp, &out.metrics) {
        m.health(&out.snapshot(&c, &classifier));
    }
    otlp::finish(OTLP_FINISH);
    if let Some((_on, base)) = &costs {
        let costs = loader::costs_since(&counters.program_costs(), base);
        if args.json {
            emit_line(&output::costs_json(&costs).to_string())?;
        }
        for line in output::costs_lines(&costs) {
            sink::note(sink::Priority::Info, &line);
        }
    }
    out.stats(&c, &classifier, true)?;
    // A reader that stopped reading must not hold the exit: what it never took is said on
    // stderr. One that reads, however slowly, gets every line.
    let left = sink::finish(STALLED_READER);
    if left > 0 {
        sink::note(
            sink::Priority::Warning,
            &format!("netladder: {left} lines were still queued for a reader that stopped reading; exiting without them"),
        );
    }
    // Detaching the programs comes after the output.
    if let Some(ebpf) = ebpf.as_mut() {
        loader::detach_all(ebpf);
    }
    drop(ebpf);
    Ok(())
}

/// How long the exit waits for the OTLP exporter's last requests (one attempt each).
const OTLP_FINISH: Duration = Duration::from_secs(5);

/// Says, once per stats interval, what the OTLP exporter could not send since the last report.
fn otlp_unsent_note(last: &otlp::Counts, now: &otlp::Counts) {
    let mut parts = Vec::new();
    let full = now.logs_queue_full.saturating_sub(last.logs_queue_full);
    if full > 0 {
        parts.push(format!("{full} log records dropped (the queue was full)"));
    }
    let failed = now.logs_failed.saturating_sub(last.logs_failed);
    if failed > 0 {
        parts.push(format!("{failed} log records failed after retries"));
    }
    let metrics = now.metrics_failed.saturating_sub(last.metrics_failed);
    if metrics > 0 {
        parts.push(format!("{metrics} metric exports failed"));
    }
    let why = otlp::take_last_error()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default();
    sink::note(
        sink::Priority::Warning,
        &format!(
            "netladder: OTLP: not sent to {} since the last report: {}{why}",
            otlp::endpoint().unwrap_or_default(),
            parts.join(", ")
        ),
    );
}

/// How long the exit waits for an output reader that takes no line at all.
pub(super) const STALLED_READER: Duration = Duration::from_secs(2);

/// Reads the ring buffer until it is empty and every record the kernel counted as queued has
/// been read (the programs write no more, so the count no longer grows), for at most a second.
fn drain_to_end(
    ring: &mut RingBuf<MapData>,
    names: &Names,
    classifier: &mut Classifier,
    out: &mut Output,
    counters: &loader::CounterReader,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        drain(ring, names, classifier, out)?;
        let queued = counters.read().events;
        if classifier.fed_and_emitted().0 >= queued || Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The periodic #028 early warning: TIME_WAIT sockets crowding one destination's local ports.
/// The look (a thread in the namespace, a sock_diag dump) runs on a thread of its own, once per
/// stats interval; the loop only turns what it found into warning lines.
struct TimeWaitCheck {
    /// The namespace to check (None: netladder's own).
    netns: Option<u32>,
    share: f64,
    /// When each destination was last warned about: once a minute at most.
    warned: HashMap<SocketAddr, Instant>,
}

/// What one look of the #028 early-warning thread found.
enum TimeWaitSeen {
    /// In namespace `inode`, with local ports `range`: destinations and their TIME_WAIT count.
    Crowded {
        inode: u64,
        range: (u16, u16),
        crowded: Vec<(SocketAddr, u64)>,
    },
    Failed(String),
}

impl TimeWaitCheck {
    const REPEAT: Duration = Duration::from_secs(60);

    /// Starts the thread that looks every `every`; None when the warning is off.
    fn start(&self, every: Duration) -> Result<Option<tokio::sync::mpsc::Receiver<TimeWaitSeen>>> {
        if self.share <= 0.0 {
            return Ok(None);
        }
        let (netns, share) = (self.netns, self.share);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        std::thread::Builder::new()
            .name("netladder-timewait".into())
            .spawn(move || loop {
                if tx.blocking_send(Self::look(netns, share)).is_err() {
                    return;
                }
                std::thread::sleep(every);
            })?;
        Ok(Some(rx))
    }

    /// One look: the destinations over the share in the namespace.
    fn look(netns: Option<u32>, share: f64) -> TimeWaitSeen {
        let inode = match netns {
            Some(n) => u64::from(n),
            None => match enrich::netns::own_netns_inode() {
                Ok(n) => n,
                Err(e) => return TimeWaitSeen::Failed(format!("{e:#}")),
            },
        };
        let found = enrich::netns::run_in_netns(inode, None, move || -> Result<_> {
            let range = enrich::ports::port_range()?;
            let tw = enrich::ports::time_wait_by_destination()?;
            Ok((range, enrich::ports::crowded(&tw, range, share)))
        });
        match found {
            Ok(Ok((range, crowded))) => TimeWaitSeen::Crowded {
                inode,
                range,
                crowded,
            },
            Ok(Err(e)) | Err(e) => TimeWaitSeen::Failed(format!("{e:#}")),
        }
    }

    /// Warning lines (JSON or human, as `out` prints) for what a look found.
    fn lines(&mut self, seen: TimeWaitSeen, out: &Output) -> Vec<String> {
        let (inode, range, crowded) = match seen {
            TimeWaitSeen::Crowded {
                inode,
                range,
                crowded,
            } => (inode, range, crowded),
            TimeWaitSeen::Failed(e) => {
                return vec![format!("netladder: TIME_WAIT check failed: {e}")]
            }
        };
        let now = Instant::now();
        let mut lines = Vec::new();
        for (dst, count) in crowded {
            if self
                .warned
                .get(&dst)
                .is_some_and(|t| now.duration_since(*t) < Self::REPEAT)
            {
                continue;
            }
            self.warned.insert(dst, now);
            let summary = enrich::ports::describe_time_wait_pressure(dst, count, range);
            lines.push(out.warning_028(inode, dst, count, range, &summary));
            if let Some(m) = &out.metrics {
                m.warning(crate::ladder::Code::TimeWait);
            }
        }
        lines
    }
}

/// Counts whose event was not read yet: (key, count, ticks waited).
type Waiting = Vec<(AggKey, u64, u32)>;

/// Reports the failures the kernel counted without an event as repeats of the one it sent.
/// A count read before its event (submitted after the last drain) waits a few ticks for it.
fn collect_repeats(
    aggregates: &mut Aggregates,
    waiting: &mut Waiting,
    classifier: &mut Classifier,
    out: &mut Output,
) -> Result<()> {
    let fresh = aggregates.collect().into_iter().map(|(k, n)| (k, n, 0));
    let all: Waiting = waiting.drain(..).chain(fresh).collect();
    for (key, n, ticks) in all {
        match classifier.repeated(&key, n) {
            Repeated::Failure(f) => out.repeated(*f)?,
            Repeated::Unclassified => {}
            Repeated::Unknown if ticks < 10 => waiting.push((key, n, ticks + 1)),
            Repeated::Unknown => classifier.give_up(n),
        }
    }
    Ok(())
}

/// Reads every event on the ring buffer into the classifier and prints what it completes.
fn drain(
    ring: &mut RingBuf<MapData>,
    names: &Names,
    classifier: &mut Classifier,
    out: &mut Output,
) -> Result<()> {
    drain_with(ring, names, classifier, |f| out.failure(f))
}
