//! `netladder watch` and `netladder hooks`: start-up, the event loop, and shutdown.
use std::{
    collections::HashMap,
    io::IsTerminal as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::{MapData, RingBuf};
use netladder_common::{AggKey, IcmpRanges, ABSENT};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    classify::{Classifier, Failure, Ledger, Repeated},
    cli::{HookOpts, HooksArgs, WatchArgs},
    clock::monotonic_ns,
    enrich,
    filter::Filter,
    kernel::{
        aggregate::Aggregates,
        btf::KernelBtf,
        config,
        decode::{self, Names},
        kallsyms::OnDemand,
        loader::{self, Loaded},
        plan, tracefs,
    },
    ladder,
    metrics::Metrics,
    output, preflight, sink,
};

/// Everything running in the kernel, plus what we need to name its numbers.
pub(crate) struct Session {
    pub(crate) loaded: Loaded,
    pub(crate) names: Names,
    pub(crate) degraded: Vec<String>,
}

impl Session {
    /// Whether every packet drop on the host reaches netladder (the drop hook attached).
    pub(crate) fn drops_watched(&self) -> bool {
        drops_watched(&self.loaded.outcomes)
    }
}

fn drops_watched(outcomes: &[plan::Outcome]) -> bool {
    outcomes
        .iter()
        .any(|o| o.hook.program == "kfree_skb" && o.status == plan::Status::Attached)
}

/// Loads and attaches everything. `only_netns`: the one namespace to watch, filtered in the kernel
/// so that failures elsewhere cost nothing (and cannot crowd the ring buffer). `include_self`:
/// also see netladder's own connections (`diagnose` makes its probe itself); `watch` ignores them.
pub(crate) fn start(
    opts: &HookOpts,
    only_netns: Option<u32>,
    include_self: bool,
) -> Result<Session> {
    for name in &opts.skip_hook {
        if !plan::HOOKS.iter().any(|h| h.program == name) {
            bail!("--skip-hook {name}: no such program (see `netladder hooks`)");
        }
        if plan::HOOKS.iter().any(|h| h.program == name && h.core) {
            bail!(
                "--skip-hook {name}: this program is the core of netladder and cannot be skipped"
            );
        }
    }
    preflight::require_privileges()?;
    let btf = KernelBtf::load()?;
    // Every type name start-up asks for, found in one pass over the kernel's types.
    let functions = plan::HOOKS.iter().filter_map(|h| match h.attach {
        plan::Attach::FExit(f) | plan::Attach::FEntry(f) => Some(f),
        _ => None,
    });
    btf.prefetch(
        config::BTF_NAMES
            .iter()
            .copied()
            .chain(["btf_trace_kfree_skb", "btf_trace_consume_skb"])
            .chain(functions),
    );
    let root = tracefs::root()?;
    let mut resolved = config::resolve(&btf, &root);
    resolved.config.only_netns = only_netns.unwrap_or(0);
    if include_self {
        resolved.config.self_tgid = 0;
    }
    // The symbols are read at the first drop location to name, or when consume_skb is about
    // to attach and needs its ICMP receive ranges (where the fentry programs replace it, never
    // at start).
    let kallsyms = OnDemand::new();
    let mut unavailable = Vec::new();
    if resolved.config.reason_netfilter_drop == ABSENT
        || btf.tracepoint_args("kfree_skb").is_none_or(|n| n < 3)
    {
        unavailable.push((
            "kfree_skb",
            "this kernel has no drop reasons (5.17+)".to_owned(),
        ));
    }
    if btf.tracepoint_args("consume_skb").is_none_or(|n| n < 2) {
        unavailable.push((
            "consume_skb",
            "consume_skb has no location argument on this kernel (6.3+)".to_owned(),
        ));
    }
    let icmp_ranges = || {
        let k = kallsyms.get();
        match (k.range("icmp_rcv"), k.range("icmpv6_rcv")) {
            (Some(v4), Some(v6)) => Ok(IcmpRanges { v4, v6 }),
            _ => Err("icmp_rcv/icmpv6_rcv are not in /proc/kallsyms".to_owned()),
        }
    };
    let loaded = loader::load(
        &resolved.config,
        &loader::Options {
            optional_hooks: !opts.no_optional_hooks,
            unavailable,
            functions: &|name| btf.has_function(name),
            skip: &opts.skip_hook,
            icmp_ranges: &icmp_ranges,
        },
    )?;
    let mut degraded = plan::degraded(&loaded.outcomes);
    degraded.extend(
        resolved
            .missing
            .iter()
            .map(|m| format!("kernel layout: {m}")),
    );
    Ok(Session {
        loaded,
        names: Names {
            drop_reasons: resolved.drop_reasons,
            kallsyms,
        },
        degraded,
    })
}

pub fn hooks(args: HooksArgs) -> Result<()> {
    let mut s = start(&args.hooks, None, false)?;
    if args.json {
        let mut v = output::hooks_json(&s.loaded.outcomes, &s.degraded);
        v["tls_coverage"] = tls_coverage(&s.loaded.outcomes).into();
        println!("{v}");
    } else {
        print!("{}", output::hooks_table(&s.loaded.outcomes));
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
    let metrics = match args.metrics {
        Some(addr) => {
            let m = Arc::new(Metrics::new(args.metrics_label_limit));
            let bound = m.serve(addr)?;
            sink::note(
                sink::Priority::Info,
                &format!("netladder: metrics at http://{bound}/metrics"),
            );
            Some(m)
        }
        None => None,
    };
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
        eprint!("{}", output::hooks_table(&s.loaded.outcomes));
    }
    for d in &s.degraded {
        sink::note(
            sink::Priority::Warning,
            &format!("netladder: degraded: {d}"),
        );
    }
    if args.json {
        emit_line(&output::hooks_json(&s.loaded.outcomes, &s.degraded).to_string())?;
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
    let mut out = Output::new(args.json, filter);
    out.metrics = metrics;
    if args.output.is_some() || args.journal {
        out.style.color = false;
    }
    if args.trace_firewall {
        out.enricher = enrich::failure::Enricher::tracing();
    }
    // The server side of #023 accept_queue_full: the namespaces --netns names (else all of
    // them), each overloaded listener reported at most once per stats interval.
    out.enricher.queues = enrich::acceptq::QueueWatch::new(
        out.filter.netns.clone(),
        Duration::from_secs_f64(args.stats_interval.max(1.0)),
    );
    let poll_queues = out.filter.codes.is_empty() || out.filter.codes.contains(&23);
    if poll_queues {
        // The first reading, before anything is reported as watched: connects from then on
        // have a reading of the listeners' counters from before they began.
        out.enricher.queues.poll(monotonic_ns());
    }
    out.no_drop_reasons = !drops_watched(&outcomes);
    let mut classifier = Classifier::new();
    classifier.set_drops_watched(!out.no_drop_reasons);
    let mut waiting = Waiting::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stats_tick = tokio::time::interval(Duration::from_secs_f64(args.stats_interval));
    let mut queue_tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // SIGHUP reopens --output (logrotate); without --output it keeps its default (terminate).
    let mut sighup = match args.output {
        Some(_) => Some(signal(SignalKind::hangup())?),
        None => None,
    };
    // Ready only once a signal can no longer kill netladder before its final report.
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")
            .with_context(|| format!("cannot create the ready file {}", path.display()))?;
    }
    let deadline = tokio::time::sleep(Duration::from_secs_f64(args.duration.unwrap_or(1e9)));
    tokio::pin!(deadline);
    let (mut last_lost, mut last_skipped, mut last_unwritten) = (0, 0, 0);

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
                out.enricher.poll_traces();
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
            _ = queue_tick.tick(), if poll_queues => {
                for f in out.enricher.queues.poll(monotonic_ns()) {
                    out.failure(f)?;
                }
                for note in std::mem::take(&mut out.enricher.queues.notes) {
                    sink::note(sink::Priority::Warning, &note);
                }
            }
            _ = stats_tick.tick() => {
                for line in tw.check(&out) {
                    emit_line(&line)?;
                }
                let c = counters.read();
                if c.lost > last_lost
                    || c.skipped_runs > last_skipped
                    || sink::unwritten() > last_unwritten
                {
                    last_lost = c.lost;
                    last_skipped = c.skipped_runs;
                    last_unwritten = sink::unwritten();
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
    out.flush_repeats(true)?;
    let c = loader::Counters {
        aggregated: aggregates.total,
        ..counters.read()
    };
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

/// How long the exit waits for an output reader that takes no line at all.
const STALLED_READER: Duration = Duration::from_secs(2);

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
struct TimeWaitCheck {
    /// The namespace to check (None: netladder's own).
    netns: Option<u32>,
    share: f64,
    /// When each destination was last warned about: once a minute at most.
    warned: HashMap<SocketAddr, Instant>,
}

impl TimeWaitCheck {
    const REPEAT: Duration = Duration::from_secs(60);

    /// Warning lines (JSON or human, as `out` prints) for destinations over the share.
    fn check(&mut self, out: &Output) -> Vec<String> {
        if self.share <= 0.0 {
            return Vec::new();
        }
        let inode = match self.netns {
            Some(n) => u64::from(n),
            None => match enrich::netns::own_netns_inode() {
                Ok(n) => n,
                Err(_) => return Vec::new(),
            },
        };
        let share = self.share;
        let found = enrich::netns::run_in_netns(inode, None, move || -> Result<_> {
            let range = enrich::ports::port_range()?;
            let tw = enrich::ports::time_wait_by_destination()?;
            Ok((range, enrich::ports::crowded(&tw, range, share)))
        });
        let (range, crowded) = match found {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                return vec![format!("netladder: TIME_WAIT check failed: {e:#}")];
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
                m.warning(28);
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

/// Reads every event on the ring buffer into the classifier and hands each failure it
/// completes to `emit`.
pub(crate) fn drain_with(
    ring: &mut RingBuf<MapData>,
    names: &Names,
    classifier: &mut Classifier,
    mut emit: impl FnMut(Failure) -> Result<()>,
) -> Result<()> {
    while let Some(item) = ring.next() {
        let obs = decode::record(&item, names);
        drop(item);
        match obs {
            Some(obs) => {
                for f in classifier.feed(obs, monotonic_ns()) {
                    emit(f)?;
                }
            }
            None => classifier.undecodable(),
        }
    }
    Ok(())
}

/// Failures that count as the same one: process, code, cause, addresses, evidence namespace.
type RepeatKey = (
    u32,
    u16,
    &'static str,
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

/// Where failures go: filtered, aggregated, enriched, rendered, flushed line by line.
struct Output {
    json: bool,
    filter: Filter,
    style: output::Style,
    /// Failures told: lines of their own and the repeats counted in repeat lines.
    reported: u64,
    /// Where the records of the failures handed here ended: reported, repeats, merged (the
    /// other records of a failure made of several), filtered.
    ledger: Ledger,
    enricher: enrich::failure::Enricher,
    /// kfree_skb is not attached: local drops and missing listeners are invisible.
    no_drop_reasons: bool,
    repeats: HashMap<RepeatKey, Repeat>,
    /// Cgroup id -> container and pod (cached).
    workloads: enrich::container::Resolver,
    metrics: Option<Arc<Metrics>>,
}

impl Output {
    fn new(json: bool, filter: Filter) -> Self {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            json,
            filter,
            style: output::Style { color },
            reported: 0,
            ledger: Ledger::default(),
            enricher: enrich::failure::Enricher::default(),
            no_drop_reasons: false,
            repeats: HashMap::new(),
            workloads: enrich::container::Resolver::new(enrich::container::Paths::host()),
            metrics: None,
        }
    }

    const REPEAT_WINDOW: Duration = Duration::from_secs(1);

    fn failure(&mut self, f: Failure) -> Result<()> {
        self.add(f, None)
    }

    /// `f.count` failures identical to one the kernel already sent (it only counted these):
    /// added to the repeat count, never printed on their own.
    fn repeated(&mut self, f: Failure) -> Result<()> {
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
    fn flush_repeats(&mut self, all: bool) -> Result<()> {
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

    /// Prints one failure; `repeats`: it stands for `f.count` repeats of an earlier line.
    fn print(&mut self, mut f: Failure, repeats: bool) -> Result<()> {
        self.enricher.enrich(&mut f);
        if repeats {
            f.summary = format!("{} more like this within a second: {}", f.count, f.summary);
        }
        // Where a local firewall or a missing listener could be the cause, say it is unseen.
        if self.no_drop_reasons && matches!(f.code, 21 | 22 | 23 | 26) {
            f.evidence.push(
                "degraded: no drop reasons on this kernel, so a local firewall drop or a missing \
                 local listener cannot be seen; the cause is the best reading without them"
                    .into(),
            );
        }
        let ctx = step_ctx(&f);
        let next = ladder::next_steps(f.code, f.cause, &ctx);
        let who = self.workloads.resolve(f.proc.cgroup_id, f.proc.pid);
        if let Some(m) = &self.metrics {
            m.failure(&f, who.as_deref());
        }
        let line = if self.json {
            let mut v = output::failure_json(&f, &next, SystemTime::now());
            output::add_workload(&mut v, who.as_deref());
            v.to_string()
        } else {
            output::failure_line(&f, &next, &self.style, who.as_deref())
        };
        if !repeats {
            self.reported += 1;
        }
        emit_line(&line)
    }

    /// A #028 early-warning line (no process: it is about the namespace's ports).
    fn warning_028(
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
        let next = ladder::next_steps(28, "ports_exhausted", &ctx);
        if self.json {
            serde_json::json!({
                "type": "warning",
                "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "code": "028",
                "title": ladder::rung(28).map(|r| r.title).unwrap_or(""),
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
    fn snapshot(&self, c: &loader::Counters, classifier: &Classifier) -> output::Stats {
        output::Stats {
            kernel: *c,
            read: classifier.fed_and_emitted().0,
            ledger: classifier.ledger().plus(self.ledger),
            held: classifier.held(),
            outside_repeats: classifier.outside_repeats,
            reported: self.reported,
            unwritten: sink::unwritten(),
        }
    }

    /// The stats line (JSON on stdout, human on stderr). The final one comes after every line
    /// before it was written (a reader that stopped reading is waited for a bounded time).
    fn stats(&self, c: &loader::Counters, classifier: &Classifier, final_: bool) -> Result<()> {
        let s = self.snapshot(c, classifier);
        if let Some(m) = &self.metrics {
            m.health(&s);
        }
        if self.json {
            emit_line(&output::stats_json(&s, final_).to_string())?;
        }
        if final_ {
            sink::drain(STALLED_READER);
        }
        if final_ || !self.json {
            sink::note(sink::Priority::Info, &output::stats_line(&s, final_));
        }
        Ok(())
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
                    crate::classify::Lookup::TlsChain { name, .. } if !name.is_empty() => {
                        Some(name.as_str().to_owned())
                    }
                    _ => None,
                })
            })
            .flatten(),
        user: f.user.clone(),
        rule_chain: f.firewall_rule.as_ref().map(rule_chain_command),
        nameservers: if f.code == 24 && f.proc.pid != 0 {
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
fn names_a_host(code: u16) -> bool {
    matches!(code, 24 | 25 | 30)
}

/// The command listing the chain that holds `r`, as its own tool shows it.
fn rule_chain_command(r: &crate::classify::FirewallRule) -> String {
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
fn emit_line(line: &str) -> Result<()> {
    // Failures and warnings: in journal mode they are stored with priority "warning".
    sink::emit(sink::Priority::Warning, line)
}
