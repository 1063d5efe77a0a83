//! Where a start's time goes: each phase of loading, and the programs that took longest to
//! load and attach (mostly the kernel's verifier). `watch -v` prints it; on a slow or emulated
//! CPU a start takes seconds, and this says which part to look at. Only clock readings are
//! taken during the start; the verifier's counts are asked for when the line is printed.
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The phases of one start, in order, and the time of each program's load and attach.
#[derive(Debug)]
pub struct Timeline {
    began: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
    programs: Vec<(&'static str, Duration)>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        let now = Instant::now();
        Timeline {
            began: now,
            last: now,
            phases: Vec::new(),
            programs: Vec::new(),
        }
    }

    /// Ends the phase running since the last mark.
    pub fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push((phase, now - self.last));
        self.last = now;
    }

    /// Records one program's load and attach (part of the phase that is running).
    pub fn program(&mut self, program: &'static str, took: Duration) {
        self.programs.push((program, took));
    }

    /// One line: the whole, each phase, and the slowest programs, each with the instructions
    /// the verifier went through for it where `verified` knows (kernels 5.16 and later say).
    pub fn summary(&self, slowest: usize, verified: impl Fn(&str) -> Option<u32>) -> String {
        let mut s = format!(
            "loading took {:.2} s:",
            (self.last - self.began).as_secs_f64()
        );
        for (i, (phase, took)) in self.phases.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let _ = write!(s, "{sep}{phase} {:.2} s", took.as_secs_f64());
        }
        let mut programs = self.programs.clone();
        programs.sort_by_key(|p| std::cmp::Reverse(p.1));
        programs.truncate(slowest);
        if !programs.is_empty() {
            s += "; slowest programs:";
            for (i, (program, took)) in programs.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let _ = write!(s, "{sep}{program} {:.2} s", took.as_secs_f64());
                if let Some(n) = verified(program) {
                    let _ = write!(s, " ({n} instructions verified)");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_each_phase_and_the_slowest_programs_first() {
        let mut t = Timeline::new();
        t.mark("kernel types");
        t.program("a", Duration::from_millis(10));
        t.program("b", Duration::from_millis(300));
        t.program("c", Duration::from_millis(20));
        t.mark("programs");
        let s = t.summary(2, |p| (p == "b").then_some(5342));
        assert!(s.starts_with("loading took "), "{s}");
        assert!(s.contains(": kernel types 0."), "{s}");
        assert!(s.contains(", programs 0."), "{s}");
        assert!(
            s.ends_with("; slowest programs: b 0.30 s (5342 instructions verified), c 0.02 s"),
            "{s}"
        );
    }
}
