//! The exporter's totals, as the stats and the metrics read them (a leaf: it imports nothing).

/// What became of the records so far (totals since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Log records the collector accepted.
    pub logs_sent: u64,
    /// Log records dropped because the queue was full (the collector did not keep up).
    pub logs_queue_full: u64,
    /// Log records given up after every retry failed (or the collector refused them).
    pub logs_failed: u64,
    /// Metric exports (each a snapshot of every counter) the collector accepted.
    pub metrics_sent: u64,
    /// Metric exports that failed (each is tried once).
    pub metrics_failed: u64,
}

impl Counts {
    /// Log records and metric exports that did not reach the collector.
    pub fn unsent(&self) -> u64 {
        self.logs_queue_full + self.logs_failed + self.metrics_failed
    }
}
