//! The enrichment worker: the look-ups a failure asks for (netlink dumps and sock_diag reads in
//! other namespaces, `iptables-legacy-save`, a TLS handshake with `--probe-tls`) run on a thread
//! of their own, never on the event loop that reads the ring buffer. The loop hands each line to
//! come (a failure, or the repeat line of one) to a bounded queue and goes back to reading; the
//! worker takes them in order, enriches, renders and queues each line for the sink.
//!
//! Nothing is lost silently. A line is still written, without its look-up and with an evidence
//! line saying why, when the look-ups have fallen behind: more than [`BACKLOG`] lines waiting
//! when it is handed over, or [`MAX_AGE`] spent waiting by the time the worker reaches it (a
//! look-up then would describe a later state than the failure's), or the exit's time for
//! look-ups is over. Should the queue itself be full (one look-up stuck while [`QUEUE`] lines
//! arrived), the loop renders the line itself, also without the look-up; only such a line can
//! come out ahead of lines still waiting in the queue. Each of these is counted
//! ([`Worker::skipped`]: the stats line and `netladder_enrichment_skipped_total`).
//!
//! Also here: the server-side listen-queue poll (#023), which reads every namespace's sockets
//! once a second, on a thread of its own whose failures come back to the loop like the kernel's.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::render::{emit_line, Render};
use crate::{
    enrich::{acceptq::QueueWatch, enricher::Enricher},
    failure::Failure,
    sink,
};

/// Lines the queue holds; beyond that the loop writes them itself, without their look-up.
pub(super) const QUEUE: usize = 1024;
/// Lines waiting beyond which a new one is written without its look-up.
pub(super) const BACKLOG: usize = 256;
/// How long a line may wait for its look-up; longer, and it is written without it.
pub(super) const MAX_AGE: Duration = Duration::from_secs(5);
/// At exit, how long lines still waiting get their look-ups; after that, the rest are written
/// without them.
const EXIT_LOOKUPS: Duration = Duration::from_secs(2);
/// At exit, the longest wait for the worker once the rest go without look-ups (it may be inside
/// one look-up: their own timeouts bound them); past it, what it still holds is said on stderr.
const EXIT_MAX: Duration = Duration::from_secs(10);
/// How often `--trace-firewall`'s trace messages are read.
const TRACE_EVERY: Duration = Duration::from_millis(100);

/// Test hook (`NETLADDER_TEST_ENRICH_DELAY_MS`, read once at start): each look-up is preceded by
/// this many milliseconds of sleep, so that tests can make enrichment slow for real. Unset in use.
const DELAY_ENV: &str = "NETLADDER_TEST_ENRICH_DELAY_MS";

/// One line to come: `f` (its `count` repeats of an earlier line when `repeats`).
struct Job {
    f: Failure,
    repeats: bool,
    /// False: the look-ups were behind when it was handed over.
    enrich: bool,
    queued: Instant,
}

/// Why a line goes out without its look-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Skip {
    Backlog,
    Waited,
    Exit,
    Full,
}

/// The evidence line of a failure written without its look-up.
pub(super) fn skip_note(why: Skip) -> String {
    let reason = match why {
        Skip::Backlog => format!("more than {BACKLOG} lines were waiting for theirs"),
        Skip::Waited => format!(
            "it waited more than {}s behind others' (a look-up now would describe a later state)",
            MAX_AGE.as_secs()
        ),
        Skip::Exit => "netladder was exiting and its time for look-ups was over".to_owned(),
        Skip::Full => format!("{QUEUE} lines were queued for look-ups"),
    };
    format!(
        "enrichment skipped: {reason}; the code and the kernel's evidence stand, the details \
         netladder looks up (routes, listeners, firewall rules...) are missing"
    )
}

/// What the loop and the worker share.
#[derive(Default)]
struct Shared {
    /// Lines handed over and not yet queued for the sink.
    pending: AtomicUsize,
    /// Lines written without their look-up.
    skipped: AtomicU64,
    /// Set at exit once the time for look-ups is over.
    hurry: AtomicBool,
    /// The sink's error (a full disk...), reported by the next hand-over.
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn skip(&self, f: &mut Failure, why: Skip) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        f.evidence.push(skip_note(why));
    }
}

/// The enrichment thread and its bounded queue.
pub(super) struct Worker {
    queue: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// The loop's own renderer, for lines that find the queue full.
    render: Render,
    /// Where lines go: the sink (`emit_line`).
    emit: fn(&str) -> Result<()>,
}

impl Worker {
    /// Starts the thread that enriches with `enricher` and renders with a copy of `render`.
    pub(super) fn start(enricher: Enricher, render: &Render) -> Result<Self> {
        let delay = std::env::var(DELAY_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        Self::start_with(enricher, render, delay, emit_line)
    }

    /// [`Worker::start`] with each look-up delayed by `delay`, and lines written by `emit`.
    fn start_with(
        mut enricher: Enricher,
        render: &Render,
        delay: Duration,
        emit: fn(&str) -> Result<()>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let (queue, rx) = sync_channel::<Job>(QUEUE);
        let mut own = render.clone_for_thread();
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("netladder-enrich".into())
            .spawn(move || run(&rx, &mut enricher, &mut own, &s, delay, emit))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            shared,
            render: render.clone_for_thread(),
            emit,
        })
    }

    /// Hands one line over; never blocks (see the module's description).
    pub(super) fn send(&mut self, f: Failure, repeats: bool) -> Result<()> {
        if let Some(e) = self
            .shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            anyhow::bail!(e);
        }
        let Some(queue) = &self.queue else {
            anyhow::bail!("the enrichment worker has ended");
        };
        let waiting = self.shared.pending.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            f,
            repeats,
            enrich: waiting < BACKLOG,
            queued: Instant::now(),
        };
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(mut job)) => {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                self.shared.skip(&mut job.f, Skip::Full);
                let line = self.render.line(job.f, job.repeats);
                (self.emit)(&line)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                anyhow::bail!("the enrichment worker has ended")
            }
        }
    }

    /// Lines written without their look-up so far.
    pub(super) fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Ends the worker once every line handed over is queued for the sink: with its look-ups for
    /// [`EXIT_LOOKUPS`], then without. Returns how many lines it still held when it gave up
    /// (after [`EXIT_MAX`]: a look-up that never returns).
    pub(super) fn finish(&mut self) -> usize {
        drop(self.queue.take());
        let Some(thread) = self.thread.take() else {
            return 0;
        };
        let start = Instant::now();
        while !thread.is_finished() {
            let waited = start.elapsed();
            if waited >= EXIT_LOOKUPS {
                self.shared.hurry.store(true, Ordering::Relaxed);
            }
            if waited >= EXIT_LOOKUPS + EXIT_MAX {
                return self.shared.pending.load(Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        if let Some(e) = self
            .shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            sink::note(sink::Priority::Err, &format!("netladder: {e}"));
        }
        self.shared.pending.load(Ordering::Relaxed)
    }
}

/// The worker thread: each line in order, then the trace messages every [`TRACE_EVERY`].
fn run(
    rx: &Receiver<Job>,
    enricher: &mut Enricher,
    render: &mut Render,
    shared: &Shared,
    delay: Duration,
    emit: fn(&str) -> Result<()>,
) {
    let mut traced = Instant::now();
    loop {
        match rx.recv_timeout(TRACE_EVERY) {
            Ok(job) => {
                let line = enriched(job, enricher, render, shared, delay);
                if let Err(e) = emit(&line) {
                    *shared.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("{e:#}"));
                }
                shared.pending.fetch_sub(1, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if traced.elapsed() >= TRACE_EVERY {
            enricher.poll_traces();
            traced = Instant::now();
        }
    }
}

/// The line of `job`, with its look-up unless it is to be skipped.
fn enriched(
    job: Job,
    enricher: &mut Enricher,
    render: &mut Render,
    shared: &Shared,
    delay: Duration,
) -> String {
    let Job {
        mut f,
        repeats,
        enrich,
        queued,
    } = job;
    let skip = if !enrich {
        Some(Skip::Backlog)
    } else if shared.hurry.load(Ordering::Relaxed) {
        Some(Skip::Exit)
    } else if queued.elapsed() > MAX_AGE {
        Some(Skip::Waited)
    } else {
        None
    };
    match skip {
        Some(why) => shared.skip(&mut f, why),
        None => {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            enricher.enrich(&mut f);
        }
    }
    render.line(f, repeats)
}

/// What the listen-queue poll found: a failure for the loop, or a note for stderr.
pub(super) enum Polled {
    Failure(Box<Failure>),
    Note(String),
}

/// The server-side #023 poll, once a second on a thread of its own; what it finds arrives on the
/// returned channel. It ends when the channel's receiver is dropped.
pub(super) fn poll_queues(
    queues: Arc<Mutex<QueueWatch>>,
) -> Result<tokio::sync::mpsc::Receiver<Polled>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    std::thread::Builder::new()
        .name("netladder-queues".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let (found, notes) = {
                let mut q = queues.lock().unwrap_or_else(|p| p.into_inner());
                let found = q.poll(crate::clock::monotonic_ns());
                (found, std::mem::take(&mut q.notes))
            };
            let found = found.into_iter().map(|f| Polled::Failure(Box::new(f)));
            for p in found.chain(notes.into_iter().map(Polled::Note)) {
                if tx.blocking_send(p).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        failure::Proc,
        ladder::{Cause, Code, Layer},
    };

    #[test]
    fn skip_notes_say_why() {
        assert!(skip_note(Skip::Backlog).contains("more than 256 lines were waiting"));
        assert!(skip_note(Skip::Full).contains("1024 lines were queued"));
        assert!(skip_note(Skip::Waited).contains("more than 5s"));
        for why in [Skip::Backlog, Skip::Waited, Skip::Exit, Skip::Full] {
            assert!(skip_note(why).starts_with("enrichment skipped: "));
        }
    }

    fn refused(port: u16) -> Failure {
        Failure {
            errno: Some(111),
            dst: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            ..Failure::new(
                Code::Refused,
                Cause::NoListener,
                Layer::Application,
                "refused".into(),
                Proc::new(0, 0, "test", 0, 1),
                0,
            )
        }
    }

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn collect(line: &str) -> Result<()> {
        LINES.lock().unwrap().push(line.to_owned());
        Ok(())
    }

    use std::net::SocketAddr;

    /// More lines than the queue holds, handed over at once to a worker whose look-ups are slow:
    /// every line is written, those beyond the backlog or the queue without their look-up and
    /// saying why, each of those counted; the queued ones keep their order.
    #[test]
    fn a_slow_worker_writes_every_line_and_counts_what_it_skipped() {
        let n = QUEUE + 100;
        let render = Render::new(true);
        let mut w = Worker::start_with(
            Enricher::default(),
            &render,
            Duration::from_millis(20),
            collect,
        )
        .unwrap();
        for i in 0..n {
            w.send(refused(10_000 + i as u16), false).unwrap();
        }
        assert_eq!(w.finish(), 0, "nothing left at exit");
        let lines = LINES.lock().unwrap().clone();
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let port = |e: &serde_json::Value| {
            e["dst"].as_str().unwrap()[10..].parse::<usize>().unwrap() - 10_000
        };
        let note = |e: &serde_json::Value, what: &str| {
            e["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l.as_str().unwrap().contains(what))
        };
        let mut ports: Vec<usize> = events.iter().map(port).collect();
        // The lines that found the queue full came out first, from the loop itself.
        let (full, queued): (Vec<_>, Vec<_>) = events
            .iter()
            .partition(|e| note(e, "lines were queued for look-ups"));
        assert!(!full.is_empty(), "some lines found the queue full");
        // The first line found the worker idle: it had its look-up.
        assert!(!note(queued[0], "enrichment skipped"), "{lines:?}");
        let queued: Vec<usize> = queued.into_iter().map(port).collect();
        assert_eq!(queued[0], 0);
        assert!(
            queued.windows(2).all(|p| p[0] < p[1]),
            "in order: {queued:?}"
        );
        ports.sort_unstable();
        assert_eq!(ports, (0..n).collect::<Vec<_>>(), "every line, once");
        let skipped = events
            .iter()
            .filter(|e| note(e, "enrichment skipped: "))
            .count();
        assert_eq!(w.skipped(), skipped as u64);
        assert!(
            events
                .iter()
                .filter(|e| note(e, "more than 256 lines were waiting"))
                .count()
                >= n - BACKLOG - full.len() - 200,
            "beyond the backlog, no look-up"
        );
        // The first line found the worker idle: it had its look-up.
        assert!(
            !note(&events[full.len()], "enrichment skipped"),
            "{lines:?}"
        );
    }
}
