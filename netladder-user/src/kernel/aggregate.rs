//! Counts of identical failures the kernel aggregated (maps `AGG`, `AGG_GEN`): the kernel sends
//! the first failure of each `AggKey` in a one-second window as an event and only counts the
//! rest; this reads those counts every tick so they are reported as repeats of that event.
//!
//! Entries are never removed while the kernel may still add to them. The kernel counts in the
//! generation `AGG_GEN` names; every [`SWITCH_EVERY`] the generation switches, and once
//! [`GRACE`] has passed (no program run lasts a fraction of that) the old generation's entries
//! are read one last time and removed.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use netladder_common::{AggCount, AggKey};

pub const SWITCH_EVERY: Duration = Duration::from_secs(30);
pub const GRACE: Duration = Duration::from_secs(1);

pub struct Aggregates {
    counts: BpfHashMap<MapData, AggKey, AggCount>,
    generation: Array<MapData, u32>,
    current: u8,
    switched: Instant,
    /// The generation being retired and when it stopped being written.
    retiring: Option<(u8, Instant)>,
    /// Counted-only failures already collected, per key (with its generation).
    collected: HashMap<AggKey, u64>,
    /// All counted-only failures collected so far.
    pub total: u64,
}

impl Aggregates {
    pub fn new(counts: Map, generation: Map) -> Result<Self> {
        Ok(Self {
            counts: BpfHashMap::try_from(counts).context("map AGG")?,
            generation: Array::try_from(generation).context("map AGG_GEN")?,
            current: 0,
            switched: Instant::now(),
            retiring: None,
            collected: HashMap::new(),
            total: 0,
        })
    }

    /// Failures counted without an event since the last call, per key (generation 0, as
    /// [`AggKey::of`] gives for the event they repeat).
    pub fn collect(&mut self) -> Vec<(AggKey, u64)> {
        self.collect_at(Instant::now())
    }

    fn collect_at(&mut self, now: Instant) -> Vec<(AggKey, u64)> {
        // Decided before reading: the last read of a retired generation must come after GRACE.
        let retire = self
            .retiring
            .filter(|(_, since)| now.duration_since(*since) >= GRACE)
            .map(|(g, _)| g);
        let entries: Vec<(AggKey, AggCount)> = self.counts.iter().filter_map(Result::ok).collect();
        let mut out: Vec<(AggKey, u64)> = Vec::new();
        for (key, count) in &entries {
            let counted = count.total.saturating_sub(count.emitted);
            let seen = self.collected.entry(*key).or_insert(0);
            if counted > *seen {
                let mut plain = *key;
                plain.generation = 0;
                out.push((plain, counted - *seen));
                self.total += counted - *seen;
                *seen = counted;
            }
        }
        if let Some(old) = retire {
            for (key, _) in entries.iter().filter(|(k, _)| k.generation == old) {
                let _ = self.counts.remove(key);
                self.collected.remove(key);
            }
            self.retiring = None;
            self.switched = now;
        } else if self.retiring.is_none() && now.duration_since(self.switched) >= SWITCH_EVERY {
            let next = 1 - self.current;
            if self.generation.set(0, u32::from(next), 0).is_ok() {
                self.retiring = Some((self.current, now));
                self.current = next;
            }
        }
        out
    }
}
