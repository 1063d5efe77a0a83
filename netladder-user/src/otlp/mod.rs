//! `watch --otlp`: every failure as an OTLP log record and the `--metrics` counters as OTLP
//! metrics, sent to an OpenTelemetry collector over gRPC, or over OTLP/HTTP with protobuf
//! bodies (plain `http://` only: no TLS on either transport).
//!
//! The exporter is netladder's own, on a thread of its own with its own runtime: the event loop
//! only puts a record on a bounded queue ([`failure`], which never waits). The thread takes the
//! records in batches, sends each batch with retries and exponential back-off, and counts every
//! record exactly once: sent, dropped because the queue was full, or failed after the retries.
//! An unreachable collector therefore costs at most a full queue of memory; what could not be
//! sent is counted in [`counts`] (the stats line, `--metrics`) and said once per stats interval.
//! The message types are those of the `opentelemetry-proto` crate (prost), the gRPC client is
//! its tonic stub; OTLP/HTTP is a plain HTTP/1.1 POST of our own.
mod config;
mod convert;
mod send;
pub mod totals;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use tokio::sync::mpsc;

pub use config::Config;
pub use totals::Counts;

use crate::metrics::Metrics;

static LOGS_SENT: AtomicU64 = AtomicU64::new(0);
static LOGS_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static LOGS_FAILED: AtomicU64 = AtomicU64::new(0);
static METRICS_SENT: AtomicU64 = AtomicU64::new(0);
static METRICS_FAILED: AtomicU64 = AtomicU64::new(0);
/// Log records queued or in a batch, not counted yet.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// Set when the exit stopped waiting for the exporter: what it still held was counted as failed,
/// and nothing it does later is counted. Held while counting (see [`settle`]).
static ABANDONED: Mutex<bool> = Mutex::new(false);
/// The last reason a send failed, for the next report.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// The running exporter: the queue's sending end and the thread.
struct Exporter {
    queue: mpsc::Sender<LogRecord>,
    thread: JoinHandle<()>,
    endpoint: String,
}

static EXPORTER: Mutex<Option<Exporter>> = Mutex::new(None);

/// The totals so far (all zero without `--otlp`).
pub fn counts() -> Counts {
    Counts {
        logs_sent: LOGS_SENT.load(Ordering::Relaxed),
        logs_queue_full: LOGS_QUEUE_FULL.load(Ordering::Relaxed),
        logs_failed: LOGS_FAILED.load(Ordering::Relaxed),
        metrics_sent: METRICS_SENT.load(Ordering::Relaxed),
        metrics_failed: METRICS_FAILED.load(Ordering::Relaxed),
    }
}

/// Whether an exporter runs.
pub fn enabled() -> bool {
    lock(&EXPORTER).is_some()
}

/// The endpoint the exporter sends to (for messages).
pub fn endpoint() -> Option<String> {
    lock(&EXPORTER).as_ref().map(|e| e.endpoint.clone())
}

/// The last send error, taken (each is reported once).
pub fn take_last_error() -> Option<String> {
    lock(&LAST_ERROR).take()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the exporter thread for `config`; `metrics` are exported every
/// `config.metric_interval`.
pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<()> {
    let (queue, rx) = mpsc::channel(config.queue);
    let endpoint = config.describe();
    let thread = std::thread::Builder::new()
        .name("netladder-otlp".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    *lock(&LAST_ERROR) = Some(format!("cannot start the exporter: {e}"));
                    return;
                }
            };
            rt.block_on(run(config, metrics, rx));
        })
        .context("cannot start the OTLP exporter thread")?;
    *lock(&EXPORTER) = Some(Exporter {
        queue,
        thread,
        endpoint,
    });
    Ok(())
}

/// Queues one failure (its JSON event, the same fields `--json` prints) as a log record. Never
/// waits: a full queue drops the record and counts it.
pub fn failure(event: &serde_json::Value) {
    let guard = lock(&EXPORTER);
    let Some(e) = guard.as_ref() else {
        return;
    };
    let record = convert::log_record(event, now_ns());
    PENDING.fetch_add(1, Ordering::Relaxed);
    if e.queue.try_send(record).is_err() {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        LOGS_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
    }
}

/// Ends the exporter: what is queued is sent once more (no retries) with the last metrics,
/// waiting at most `bound`. Records still queued after that are counted as failed.
pub fn finish(bound: Duration) {
    let Some(Exporter { queue, thread, .. }) = lock(&EXPORTER).take() else {
        return;
    };
    drop(queue);
    let start = Instant::now();
    while !thread.is_finished() && start.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(10));
    }
    if thread.is_finished() {
        let _ = thread.join();
        return;
    }
    // Given up on: what it holds will not be sent before netladder leaves.
    let mut abandoned = lock(&ABANDONED);
    *abandoned = true;
    LOGS_FAILED.fetch_add(PENDING.swap(0, Ordering::Relaxed), Ordering::Relaxed);
}

/// Counts `n` log records as sent or failed (unless the exit already counted them).
fn settle(n: u64, sent: bool) {
    let abandoned = lock(&ABANDONED);
    if *abandoned {
        return;
    }
    PENDING.fetch_sub(n, Ordering::Relaxed);
    if sent {
        LOGS_SENT.fetch_add(n, Ordering::Relaxed);
    } else {
        LOGS_FAILED.fetch_add(n, Ordering::Relaxed);
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The exporter's loop: batches of log records by size or age, metrics on their interval.
async fn run(config: Config, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<LogRecord>) {
    let started = now_ns();
    let client = send::Client::new(&config);
    let resource = convert::resource(&config.resource);
    let mut batch: Vec<LogRecord> = Vec::new();
    let mut flush = tokio::time::interval(config.batch_delay);
    let mut metric_tick = tokio::time::interval(config.metric_interval);
    // Ticks missed while a request was retried are not made up in a burst.
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    metric_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first metrics go out after one interval, not at start.
    metric_tick.tick().await;
    loop {
        // In this order: the metrics once per interval (so a stream of records cannot starve
        // them), the records, and the age of a batch when no record waits.
        tokio::select! {
            biased;
            _ = metric_tick.tick() => {
                send_metrics(&client, &resource, &metrics, started, &config).await;
            }
            got = rx.recv() => match got {
                Some(r) => {
                    batch.push(r);
                    if batch.len() >= config.batch {
                        send_logs(&client, &resource, &mut batch, &config, true).await;
                    }
                }
                None => break,
            },
            _ = flush.tick() => {
                if !batch.is_empty() {
                    send_logs(&client, &resource, &mut batch, &config, true).await;
                }
            }
        }
    }
    // The end: what is left, one attempt each.
    while let Ok(r) = rx.try_recv() {
        batch.push(r);
    }
    while !batch.is_empty() {
        send_logs(&client, &resource, &mut batch, &config, false).await;
    }
    send_metrics(&client, &resource, &metrics, started, &config).await;
}

/// Sends up to one batch of `batch` (taken from its front); counts the records sent or failed.
async fn send_logs(
    client: &send::Client,
    resource: &opentelemetry_proto::tonic::resource::v1::Resource,
    batch: &mut Vec<LogRecord>,
    config: &Config,
    retry: bool,
) {
    let n = batch.len().min(config.batch);
    let records: Vec<LogRecord> = batch.drain(..n).collect();
    let request = convert::logs_request(resource.clone(), records);
    let request = &request;
    let sent = with_retries(retry, config, move || client.logs(request.clone())).await;
    settle(n as u64, sent);
}

/// One metrics export, tried once: the next one carries the same totals, so a retry would only
/// hold up the log records behind it.
async fn send_metrics(
    client: &send::Client,
    resource: &opentelemetry_proto::tonic::resource::v1::Resource,
    metrics: &Metrics,
    started: u64,
    config: &Config,
) {
    let request = convert::metrics_request(resource.clone(), &metrics.encode(), started, now_ns());
    let request = &request;
    let sent = with_retries(false, config, move || client.metrics(request.clone())).await;
    if *lock(&ABANDONED) {
        return;
    }
    if sent {
        METRICS_SENT.fetch_add(1, Ordering::Relaxed);
    } else {
        METRICS_FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The waits before the second, third and fourth attempt (`retry`), else one attempt only.
const BACKOFF: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Runs `attempt` until it succeeds, it fails for good, or the back-off is used up. True when
/// it was sent.
async fn with_retries<F, Fut>(retry: bool, config: &Config, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), send::Failed>>,
{
    let waits = if retry { &BACKOFF[..] } else { &[] };
    let mut waits = waits.iter();
    loop {
        let err = match tokio::time::timeout(config.timeout, attempt()).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e,
            Err(_) => send::Failed::again(format!(
                "no answer within {} ms",
                config.timeout.as_millis()
            )),
        };
        let permanent = err.permanent;
        *lock(&LAST_ERROR) = Some(err.reason);
        match waits.next() {
            Some(wait) if !permanent => tokio::time::sleep(*wait).await,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector that is not there (a closed port on loopback) and a queue of 2: the records
    /// beyond the queue are dropped and counted, the rest fail after their retries or are
    /// counted as failed when the exit stops waiting; each record is counted exactly once.
    #[test]
    fn an_unreachable_collector_costs_a_bounded_queue_and_everything_is_counted() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut config = Config::new(Some(&endpoint), |_| None).unwrap();
        config.queue = 2;
        config.batch = 1;
        config.timeout = Duration::from_millis(200);
        start(config, Arc::new(Metrics::new(4))).unwrap();
        assert!(enabled());
        let event = serde_json::json!({"type": "failure", "code": "021", "summary": "refused"});
        for _ in 0..10 {
            failure(&event);
        }
        // At most the queue and the batch being sent hold a record; the rest was dropped.
        assert!(counts().logs_queue_full >= 7, "{:?}", counts());
        finish(Duration::from_millis(300));
        assert!(!enabled());
        let c = counts();
        assert_eq!(c.logs_sent, 0, "{c:?}");
        assert_eq!(c.logs_queue_full + c.logs_failed, 10, "{c:?}");
        assert_eq!(c.unsent(), 10 + c.metrics_failed);
    }
}
