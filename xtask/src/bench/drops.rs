//! Benchmark 3: a drop storm. Inside a throwaway namespace (loopback only) whose own nftables
//! output chain rejects SYNs to one port with a TCP reset and drops UDP datagrams to another,
//! `nl-peer storm` connects to the rejected port as fast as its threads can, then
//! `nl-peer udp-flood` sends datagrams to the dropped one; untraced vs under netladder.
//!
//! Every rejected connect is a `#021` failure (cause `firewall_reject_rst`). The kernel
//! aggregates identical failures (one event per second per process, code and destination, the
//! rest counted), so the accounting to check is: failures the client made = failures netladder
//! classified (aggregated counts summed) + failures it reported lost. (A plain DROP of a SYN
//! would make each connect() wait for its timeout, so it cannot make a flood.)

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netladder_tests::Netns;
use serde_json::Value;

use super::child::{last_line, remove_if_present, Guarded};
use super::procfs::{rss_kib, system_busy_secs};
use super::report::{closing, escape_cell, lost_verdict, median, Machine, Spread};
use super::storm::Storm;
use super::tracer::{count_of, read_failures, FinalStats, Netladder};
use super::{first_failure, pair_rounds, Ctx, JsonLine, Mode, PairRound, SETTLE, STORM_GRACE};

/// The port whose SYNs the namespace's firewall rejects with a TCP reset.
const TCP_PORT: u16 = 7;
/// The port whose UDP datagrams it drops.
const UDP_PORT: u16 = 9;
/// How often netladder's RSS is sampled during the flood.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Target: failures classified per second.
const TARGET_RATE: f64 = 100_000.0;
/// Target: peak RSS, MB.
const RSS_LIMIT_MB: f64 = 50.0;

fn ruleset() -> String {
    format!(
        "table inet nlbench {{\n chain out {{\n  type filter hook output priority 0;\n  \
         tcp dport {TCP_PORT} tcp flags syn counter reject with tcp reset\n  \
         udp dport {UDP_PORT} counter drop\n }}\n}}\n"
    )
}

/// Runs the rounds.
pub(super) fn run(ctx: &Ctx) -> Result<DropResults> {
    let ns = Netns::new("bench-drops").context("cannot create the drop storm's namespace")?;
    ns.nft(&ruleset())
        .context("cannot load the drop storm's nftables rules")?;
    let lab = Lab { ctx, ns };
    eprintln!(
        "bench: drop storm: 127.0.0.1:{TCP_PORT} (SYN rejected with a reset) and \
         127.0.0.1:{UDP_PORT} (UDP dropped) inside {}; warming up",
        lab.ns.name()
    );
    lab.flood(Duration::from_secs(1), None)?;
    let (rounds, foreign) = pair_rounds(
        "drops",
        ctx.rounds,
        || lab.untraced(),
        || lab.traced(),
        Run::progress,
    )?;
    Ok(DropResults {
        rounds,
        foreign,
        seconds: ctx.seconds,
        threads: ctx.flood_threads,
    })
}

/// What `nl-peer udp-flood` printed.
#[derive(Clone, Copy, Debug, PartialEq)]
struct UdpFlood {
    attempts: u64,
    /// sendto() calls the firewall refused (EPERM).
    eperm: u64,
    /// Datagrams that left (none should: the firewall drops them all).
    sent: u64,
    other: u64,
    secs: f64,
    rate: f64,
}

impl UdpFlood {
    fn parse(line: &str) -> Result<UdpFlood> {
        let json = JsonLine::parse("nl-peer udp-flood", line)?;
        let (count, real) = (|k| json.count(k), |k| json.real(k));
        Ok(UdpFlood {
            attempts: count("attempts")?,
            eperm: count("eperm")?,
            sent: count("sent")?,
            other: count("other")?,
            secs: real("secs")?,
            rate: real("rate")?,
        })
    }
}

/// Both floods in one mode.
#[derive(Debug)]
struct Run {
    tcp: Storm,
    udp: UdpFlood,
    traced: Option<Traced>,
}

/// What netladder said about the floods, and what it cost. Each flood has a netladder of its
/// own, so that the final stats lines count one flood each.
#[derive(Debug, Default)]
struct Traced {
    seen: Seen,
    stats: FinalStats,
    /// netladder's CPU seconds during the TCP flood.
    cpu_tcp: f64,
    /// The UDP flood's netladder: its final stats, its failure events about the UDP port (those
    /// in `udp_seen.udp`) and its CPU seconds during the flood.
    udp_stats: FinalStats,
    udp_seen: Seen,
    cpu_udp: f64,
    /// VmRSS sampled during the TCP flood: the largest sample, KiB.
    rss_max_kib: u64,
    /// VmHWM at the end, KiB.
    peak_rss_kib: u64,
}

/// netladder's failure events about the flood's namespace, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Seen {
    /// `#021` to the rejected port, aggregated counts summed.
    classified: u64,
    /// Of those, how many with a cause other than `firewall_reject_rst`.
    other_cause: u64,
    /// Any other code to the rejected port.
    other_code: u64,
    /// Failures about the UDP port.
    udp: u64,
    /// Anything else in the namespace.
    other: u64,
}

impl Seen {
    fn of(failures: &[Value], netns: u64) -> Seen {
        let tcp = format!("127.0.0.1:{TCP_PORT}");
        let udp = format!("127.0.0.1:{UDP_PORT}");
        let mut seen = Seen::default();
        for e in failures
            .iter()
            .filter(|e| e["netns"].as_u64() == Some(netns))
        {
            let n = count_of(e);
            match e["dst"].as_str() {
                Some(d) if d == tcp && e["code"] == "021" => {
                    seen.classified += n;
                    if e["cause"] != "firewall_reject_rst" {
                        seen.other_cause += n;
                    }
                }
                Some(d) if d == tcp => seen.other_code += n,
                Some(d) if d == udp => seen.udp += n,
                _ => seen.other += n,
            }
        }
        seen
    }
}

impl Run {
    /// Failures made minus failures classified minus failures reported lost (0 when exact).
    fn unaccounted(&self) -> Option<i64> {
        let t = self.traced.as_ref()?;
        Some(self.tcp.refused as i64 - t.seen.classified as i64 - t.stats.lost as i64)
    }

    /// Failures classified per second of the flood.
    fn classified_rate(&self) -> Option<f64> {
        Some(self.traced.as_ref()?.seen.classified as f64 / self.tcp.secs)
    }

    fn progress(result: &Result<Run, String>) -> String {
        let run = match result {
            Ok(run) => run,
            Err(why) => return format!("failed: {why}"),
        };
        let mut line = format!(
            "{:.0} rejected connects/s, {:.0} dropped datagrams/s",
            run.tcp.refused as f64 / run.tcp.secs,
            run.udp.eperm as f64 / run.udp.secs
        );
        if let Some(t) = &run.traced {
            line += &format!(
                ", {} of {} classified #021, {} lost, {} kernel events, netladder CPU {:.2} s, RSS {:.1} MiB",
                t.seen.classified,
                run.tcp.refused,
                t.stats.lost,
                t.stats.events,
                t.cpu_tcp,
                t.rss_max_kib as f64 / 1024.0
            );
        }
        line
    }
}

type Round = PairRound<Run>;

impl Round {
    /// Failures the client made per second.
    fn made_rate(&self, mode: Mode) -> Option<f64> {
        self.run(mode).map(|r| r.tcp.refused as f64 / r.tcp.secs)
    }

    fn ratio(&self) -> Option<f64> {
        Some(self.made_rate(Mode::Netladder)? / self.made_rate(Mode::Untraced)?)
    }

    fn udp_ratio(&self) -> Option<f64> {
        Some(self.run(Mode::Netladder)?.udp.rate / self.run(Mode::Untraced)?.udp.rate)
    }

    fn background(&self, mode: Mode) -> Option<f64> {
        let run = self.run(mode)?;
        let tracer = run.traced.as_ref().map_or(0.0, |t| t.cpu_tcp);
        Some(run.tcp.background_cpus(tracer))
    }
}

struct Lab<'a> {
    ctx: &'a Ctx,
    ns: Netns,
}

impl Lab<'_> {
    fn length(&self) -> Duration {
        Duration::from_secs_f64(self.ctx.seconds)
    }

    /// The TCP flood, with `sample` called every poll meanwhile.
    fn flood(&self, length: Duration, sample: Option<&mut dyn FnMut()>) -> Result<Storm> {
        let out = self.ctx.work.join("flood.out");
        let err = self.ctx.work.join("flood.err");
        let mut command = self.ns.command(&self.ctx.bins.nl_peer);
        command
            .args(["storm", &format!("127.0.0.1:{TCP_PORT}")])
            .args(["--duration", &length.as_secs_f64().to_string()])
            .args(["--threads", &self.ctx.flood_threads.to_string()]);
        let busy_before = system_busy_secs()?;
        let mut child = Guarded::spawn(&mut command, "nl-peer storm", &out, &err)?;
        let status = match sample {
            Some(sample) => child.wait_sampling(length + STORM_GRACE, sample)?,
            None => child.wait_for(length + STORM_GRACE)?,
        };
        let busy_cpu = system_busy_secs()? - busy_before;
        ensure!(
            status.success(),
            "nl-peer storm failed ({status}){}",
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read nl-peer's output")?;
        Ok(Storm {
            busy_cpu,
            ..Storm::parse(&text)?
        })
    }

    fn udp_flood(&self) -> Result<UdpFlood> {
        let out = self.ctx.work.join("udp.out");
        let err = self.ctx.work.join("udp.err");
        let mut command = self.ns.command(&self.ctx.bins.nl_peer);
        command
            .args(["udp-flood", &format!("127.0.0.1:{UDP_PORT}")])
            .args(["--duration", &self.ctx.seconds.to_string()]);
        let mut child = Guarded::spawn(&mut command, "nl-peer udp-flood", &out, &err)?;
        let status = child.wait_for(self.length() + STORM_GRACE)?;
        ensure!(
            status.success(),
            "nl-peer udp-flood failed ({status}){}",
            last_line(&err)
        );
        let text = fs::read_to_string(&out).context("cannot read nl-peer's output")?;
        UdpFlood::parse(&text)
    }

    fn untraced(&self) -> Result<Run> {
        let tcp = self.flood(self.length(), None)?;
        sleep(SETTLE);
        let udp = self.udp_flood()?;
        Ok(Run {
            tcp,
            udp,
            traced: None,
        })
    }

    fn netladder(&self) -> Result<Netladder> {
        Netladder::start(&self.ctx.bins, &self.ctx.work, self.ctx.seconds)
    }

    /// netladder's final stats and what it said about the namespace.
    fn finish(&self, netladder: Netladder) -> Result<(FinalStats, Seen)> {
        let stopped = netladder.stop()?;
        let (stats, failures) = read_failures(&stopped.out)?;
        remove_if_present(&stopped.out)?;
        Ok((stats, Seen::of(&failures, self.ns.inode())))
    }

    fn traced(&self) -> Result<Run> {
        let netladder = self.netladder()?;
        let pid = netladder.pid();
        let mut rss_max_kib = 0;
        let mut last_sample: Option<Instant> = None;
        let mut sample = || {
            if last_sample.is_none_or(|at| at.elapsed() >= RSS_EVERY) {
                last_sample = Some(Instant::now());
                rss_max_kib = rss_max_kib.max(rss_kib(pid).unwrap_or(0));
            }
        };
        let cpu_before = netladder.cpu_secs()?;
        let tcp = self.flood(self.length(), Some(&mut sample))?;
        let cpu_tcp = netladder.cpu_secs()? - cpu_before;
        let peak_rss_kib = netladder.peak_rss_kib()?;
        let (stats, seen) = self.finish(netladder)?;
        sleep(SETTLE);

        let netladder = self.netladder()?;
        let cpu_before = netladder.cpu_secs()?;
        let udp = self.udp_flood()?;
        let cpu_udp = netladder.cpu_secs()? - cpu_before;
        let (udp_stats, udp_seen) = self.finish(netladder)?;
        Ok(Run {
            tcp,
            udp,
            traced: Some(Traced {
                seen,
                stats,
                cpu_tcp,
                udp_stats,
                udp_seen,
                cpu_udp,
                rss_max_kib,
                peak_rss_kib,
            }),
        })
    }
}

/// The rounds of benchmark 3, for the report.
pub(super) struct DropResults {
    rounds: Vec<Round>,
    foreign: Vec<String>,
    seconds: f64,
    threads: u32,
}

impl DropResults {
    fn made_rates(&self, mode: Mode) -> Option<Spread> {
        Spread::of(self.rounds.iter().filter_map(|r| r.made_rate(mode)))
    }

    fn classified_rates(&self) -> Option<Spread> {
        Spread::of(
            self.rounds
                .iter()
                .filter_map(|r| r.run(Mode::Netladder)?.classified_rate()),
        )
    }

    fn traced_runs(&self) -> impl Iterator<Item = (usize, &Run, &Traced)> {
        self.rounds.iter().enumerate().filter_map(|(i, r)| {
            let run = r.netladder.as_ref().ok()?;
            Some((i + 1, run, run.traced.as_ref()?))
        })
    }

    fn why(&self, mode: Mode) -> &str {
        first_failure(&self.rounds, mode)
    }

    pub(super) fn markdown(&self, machine: &Machine, command_line: &str) -> String {
        let mut md =
            String::from("### Drop storm in a namespace's firewall (issue 8, benchmark 3)\n\n");
        md += &machine.measured(command_line);
        md += &format!(
            "Each of {} rounds runs, once per mode in rotating order, a {} s flood of blocking connects \
             ({} client threads) to 127.0.0.1:{TCP_PORT} inside a namespace whose nftables output chain \
             rejects those SYNs with a TCP reset, then a {} s flood of UDP datagrams to 127.0.0.1:{UDP_PORT}, \
             which the same chain drops. Ratios are per round against that round's untraced run.\n\n",
            self.rounds.len(),
            self.seconds,
            self.threads,
            self.seconds
        );
        md += &self.summary_table();
        md += "\n";
        md += &self.netladder_table();
        md += "\n";
        md += &self.udp_table();
        md += &closing(&self.foreign, &self.verdicts());
        md
    }

    fn summary_table(&self) -> String {
        let mut t = String::from(
            "| mode | rejected connects/s min | median | max | ratio to untraced: median | min | max \
             | client CPU per connect (median) | CPUs busy elsewhere (median) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for mode in Mode::PAIR {
            let Some(rates) = self.made_rates(mode) else {
                t += &format!(
                    "| {} | did not run: {} | | | | | | | |\n",
                    mode.label(),
                    escape_cell(self.why(mode))
                );
                continue;
            };
            let ratios = super::report::ratio_cells(
                mode == Mode::Untraced,
                Spread::of(self.rounds.iter().filter_map(Round::ratio)),
            );
            let per_connect = median(
                self.rounds
                    .iter()
                    .filter_map(|r| Some(r.run(mode)?.tcp.cpu_per_connect_us())),
            );
            let background = median(self.rounds.iter().filter_map(|r| r.background(mode)));
            t += &format!(
                "| {} | {} | {ratios} | {per_connect:.2} µs | {background:.2} |\n",
                mode.label(),
                rates.rate_cells()
            );
        }
        t
    }

    fn netladder_table(&self) -> String {
        let mut t = String::from(
            "netladder, per round (made: rejected connects counted by the client; classified: `#021` \
             events for the rejected port in the flood's namespace, aggregated counts summed, and how \
             many of them had another cause than `firewall_reject_rst`; events, aggregated, lost: \
             netladder's final stats line; unaccounted: made - classified - lost, which must be 0; CPU: \
             netladder's user+system time during the flood, as a share of one CPU; RSS: the largest \
             VmRSS sampled every 0.1 s during the flood, and VmHWM at the end):\n\n\
             | round | order | made | made/s | classified #021 | classified/s | other cause | kernel events \
             | aggregated | lost | unaccounted | CPU | RSS during flood | peak RSS |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (i, round) in self.rounds.iter().enumerate() {
            let order: Vec<&str> = round.order.iter().map(|m| m.short()).collect();
            let order = order.join(" > ");
            match (&round.netladder, round.run(Mode::Netladder)) {
                (
                    Ok(run),
                    Some(Run {
                        traced: Some(tr), ..
                    }),
                ) => {
                    t += &format!(
                        "| {} | {order} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {} | {:.2} s ({:.0}%) | {:.1} MiB | {:.1} MiB |\n",
                        i + 1,
                        run.tcp.refused,
                        run.tcp.refused as f64 / run.tcp.secs,
                        tr.seen.classified,
                        run.classified_rate().unwrap_or(f64::NAN),
                        tr.seen.other_cause,
                        tr.stats.events,
                        tr.stats.aggregated,
                        tr.stats.lost,
                        run.unaccounted().unwrap_or(0),
                        tr.cpu_tcp,
                        100.0 * tr.cpu_tcp / run.tcp.secs,
                        tr.rss_max_kib as f64 / 1024.0,
                        tr.peak_rss_kib as f64 / 1024.0
                    );
                }
                (Err(why), _) => {
                    t += &format!(
                        "| {} | {order} | did not run: {} |\n",
                        i + 1,
                        escape_cell(why)
                    );
                }
                _ => {}
            }
        }
        t
    }

    fn udp_table(&self) -> String {
        let mut t = String::from(
            "UDP flood, per round (datagrams/s: sendto() calls per second, each refused with EPERM by \
             the firewall's drop; dropped: those of the traced run; kernel events, aggregated, outside \
             the ladder, lost: the final stats line of a netladder started for the UDP flood alone; \
             failure lines: netladder's failure events about the UDP port; CPU: netladder's during \
             the flood):\n\n\
             | round | untraced datagrams/s | under netladder | ratio | dropped | kernel events \
             | aggregated | outside the ladder | lost | failure lines | CPU |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (i, round) in self.rounds.iter().enumerate() {
            let rate = |mode| {
                round
                    .run(mode)
                    .map_or("-".to_owned(), |r| format!("{:.0}", r.udp.rate))
            };
            let ratio = round
                .udp_ratio()
                .map_or("-".to_owned(), |x| format!("{x:.3}"));
            let traced = match round.run(Mode::Netladder) {
                Some(Run {
                    udp,
                    traced: Some(tr),
                    ..
                }) => format!(
                    "{} | {} | {} | {} | {} | {} | {:.2} s",
                    udp.eperm,
                    tr.udp_stats.events,
                    tr.udp_stats.aggregated,
                    tr.udp_stats.unclassified,
                    tr.udp_stats.lost,
                    tr.udp_seen.udp,
                    tr.cpu_udp
                ),
                _ => "- | - | - | - | - | - | -".to_owned(),
            };
            t += &format!(
                "| {} | {} | {} | {ratio} | {traced} |\n",
                i + 1,
                rate(Mode::Untraced),
                rate(Mode::Netladder)
            );
        }
        t
    }

    /// `TARGET MET:` / `TARGET MISSED:` lines, then notes and warnings.
    pub(super) fn verdicts(&self) -> Vec<String> {
        let mut lines = vec![self.rate_verdict()];
        lines.extend(self.accounting_verdicts());
        lines.extend(self.rss_verdict());
        lines.extend(self.udp_note());
        lines.extend(self.warnings());
        lines
    }

    fn rate_verdict(&self) -> String {
        let Some(c) = self.classified_rates() else {
            return format!(
                "TARGET MISSED: the drop storm under netladder could not be measured: {}",
                self.why(Mode::Netladder)
            );
        };
        let verdict = if c.median >= TARGET_RATE {
            "MET"
        } else {
            "MISSED"
        };
        let mut line = format!(
            "TARGET {verdict}: netladder classified {:.0} rejected connects/s (median; min {:.0}, max {:.0}; \
             target >= {TARGET_RATE:.0}/s)",
            c.median, c.min, c.max
        );
        if let Some(u) = self.made_rates(Mode::Untraced) {
            line += &format!(
                "; the same flood made {:.0}/s untraced (median) with {} client threads",
                u.median, self.threads
            );
            if u.max < TARGET_RATE {
                line += ", so this machine cannot make the target's rate even without a tracer";
            }
        }
        line
    }

    fn accounting_verdicts(&self) -> Vec<String> {
        let runs: Vec<(usize, &Run, &Traced)> = self.traced_runs().collect();
        if runs.is_empty() {
            return Vec::new();
        }
        let off: Vec<String> = runs
            .iter()
            .filter(|(_, r, _)| r.unaccounted() != Some(0))
            .map(|(i, r, t)| {
                format!(
                    "round {i}: made {}, classified {}, lost {}, unaccounted {}",
                    r.tcp.refused,
                    t.seen.classified,
                    t.stats.lost,
                    r.unaccounted().unwrap_or(0)
                )
            })
            .collect();
        let lost: Vec<String> = runs
            .iter()
            .filter(|(_, _, t)| t.stats.lost != 0)
            .map(|(i, _, t)| format!("round {i}: {} lost", t.stats.lost))
            .collect();
        vec![
            if off.is_empty() {
                "TARGET MET: every rejected connect of every round was classified #021 or reported lost (made = classified + lost)".to_owned()
            } else {
                format!(
                    "TARGET MISSED: the accounting is not exact: {}",
                    off.join("; ")
                )
            },
            lost_verdict(
                &lost,
                "no event lost during the drop storm (identical failures aggregated in the kernel)",
            ),
        ]
    }

    fn rss_verdict(&self) -> Option<String> {
        let runs: Vec<(usize, &Run, &Traced)> = self.traced_runs().collect();
        let peak_kib = runs.iter().map(|(_, _, t)| t.peak_rss_kib).max()?;
        let flood_kib = runs.iter().map(|(_, _, t)| t.rss_max_kib).max()?;
        let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
        let verdict = if mb(peak_kib) < RSS_LIMIT_MB {
            "MET"
        } else {
            "MISSED"
        };
        Some(format!(
            "TARGET {verdict}: netladder's peak RSS (VmHWM) was {:.1} MB at most, {:.1} MB at most during the floods \
             (target: under {RSS_LIMIT_MB} MB)",
            mb(peak_kib),
            mb(flood_kib)
        ))
    }

    /// What netladder makes of the UDP flood (not a target: a firewall's EPERM on sendto() is not
    /// a rung of the ladder; netladder classifies only unreachable network or host there).
    fn udp_note(&self) -> Option<String> {
        let runs: Vec<(usize, &Run, &Traced)> = self.traced_runs().collect();
        if runs.is_empty() {
            return None;
        }
        let dropped: u64 = runs.iter().map(|(_, r, _)| r.udp.eperm).sum();
        let lines: u64 = runs.iter().map(|(_, _, t)| t.udp_seen.udp).sum();
        let seen: u64 = runs
            .iter()
            .map(|(_, _, t)| t.udp_stats.events + t.udp_stats.aggregated)
            .sum();
        let outside: u64 = runs.iter().map(|(_, _, t)| t.udp_stats.unclassified).sum();
        let ratio = Spread::of(self.rounds.iter().filter_map(Round::udp_ratio));
        Some(format!(
            "NOTE: UDP: {dropped} datagrams refused by the firewall under netladder; its kernel side saw {seen} \
             failed sendto() calls (events + aggregated), userspace counted {outside} errors outside the ladder \
             and printed {lines} failure lines about them; the UDP flood kept {} of its untraced rate (median)",
            ratio.map_or("-".to_owned(), |r| format!("{:.3}", r.median))
        ))
    }

    fn warnings(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, r, t) in self.traced_runs() {
            if t.seen.other_cause != 0 {
                lines.push(format!(
                    "WARNING: drops round {i}: {} rejected connects were classified #021 with another cause than \
                     firewall_reject_rst (the kernel skipped {} nested program runs)",
                    t.seen.other_cause, t.stats.skipped_runs
                ));
            }
            if t.seen.other_code + t.seen.other != 0 {
                lines.push(format!(
                    "WARNING: drops round {i}: {} other failures reported in the flood's namespace",
                    t.seen.other_code + t.seen.other
                ));
            }
            if r.udp.sent != 0 {
                lines.push(format!(
                    "WARNING: drops round {i}: {} datagrams left although the firewall drops them",
                    r.udp.sent
                ));
            }
        }
        for (i, round) in self.rounds.iter().enumerate() {
            for mode in Mode::PAIR {
                if let Some(run) = round.run(mode) {
                    if run.tcp.ok + run.tcp.other + run.udp.other != 0 {
                        lines.push(format!(
                            "WARNING: drops round {}, {}: {} connects succeeded, {} failed otherwise, {} datagrams failed otherwise (expected rejections only)",
                            i + 1,
                            mode.short(),
                            run.tcp.ok,
                            run.tcp.other,
                            run.udp.other
                        ));
                    }
                }
            }
        }
        const NOISY_CPUS: f64 = 0.25;
        let busiest = Mode::PAIR
            .iter()
            .map(|&mode| median(self.rounds.iter().filter_map(|r| r.background(mode))))
            .filter(|load| !load.is_nan())
            .fold(0.0, f64::max);
        if busiest > NOISY_CPUS {
            lines.push(format!(
                "WARNING: other work kept {busiest:.2} CPUs busy during the floods (median, worst mode): \
                 rates are noisy; the client CPU per connect is the steadier measure"
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_udp_flood_line() {
        let line = r#"{"attempts":10,"sent":1,"eperm":8,"other":1,"secs":2.0,"rate":5.0,"user":0.1,"sys":0.2}"#;
        let u = UdpFlood::parse(line).unwrap();
        assert_eq!(
            (u.attempts, u.sent, u.eperm, u.other, u.rate),
            (10, 1, 8, 1, 5.0)
        );
        assert!(UdpFlood::parse(r#"{"attempts":1}"#).is_err());
    }

    #[test]
    fn events_are_sorted_by_port_and_namespace() {
        let lines = [
            r#"{"netns":5,"dst":"127.0.0.1:7","code":"021","cause":"firewall_reject_rst","count":100}"#,
            r#"{"netns":5,"dst":"127.0.0.1:7","code":"021","cause":"peer_reset"}"#,
            r#"{"netns":5,"dst":"127.0.0.1:7","code":"023","cause":"x"}"#,
            r#"{"netns":5,"dst":"127.0.0.1:9","code":"025","count":2}"#,
            r#"{"netns":5,"dst":"127.0.0.1:80","code":"021"}"#,
            r#"{"netns":6,"dst":"127.0.0.1:7","code":"021","count":1000}"#,
        ];
        let failures: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            Seen::of(&failures, 5),
            Seen {
                classified: 101,
                other_cause: 1,
                other_code: 1,
                udp: 2,
                other: 1
            }
        );
        assert!(ruleset().contains("tcp dport 7 tcp flags syn counter reject with tcp reset"));
    }

    fn storm(refused: u64, secs: f64) -> Storm {
        Storm {
            attempts: refused,
            refused,
            ok: 0,
            other: 0,
            secs,
            rate: refused as f64 / secs,
            client_cpu: 1.0,
            busy_cpu: 1.0,
        }
    }

    fn udp() -> UdpFlood {
        UdpFlood {
            attempts: 100,
            eperm: 100,
            sent: 0,
            other: 0,
            secs: 1.0,
            rate: 100.0,
        }
    }

    fn round(made: u64, classified: u64, lost: u64) -> Round {
        Round {
            order: Mode::PAIR,
            untraced: Ok(Run {
                tcp: storm(90_000, 1.0),
                udp: udp(),
                traced: None,
            }),
            netladder: Ok(Run {
                tcp: storm(made, 1.0),
                udp: udp(),
                traced: Some(Traced {
                    seen: Seen {
                        classified,
                        ..Seen::default()
                    },
                    stats: FinalStats {
                        lost,
                        events: 3,
                        aggregated: classified.saturating_sub(3),
                        ..FinalStats::default()
                    },
                    cpu_tcp: 0.1,
                    udp_stats: FinalStats {
                        events: 1,
                        aggregated: 99,
                        unclassified: 100,
                        ..FinalStats::default()
                    },
                    udp_seen: Seen::default(),
                    cpu_udp: 0.0,
                    rss_max_kib: 20 * 1024,
                    peak_rss_kib: 45 * 1024,
                }),
            }),
        }
    }

    #[test]
    fn accounting_and_targets() {
        let results = DropResults {
            rounds: vec![round(80_000, 80_000, 0), round(70_000, 69_990, 5)],
            foreign: vec![],
            seconds: 1.0,
            threads: 2,
        };
        assert_eq!(
            results.rounds[1]
                .run(Mode::Netladder)
                .unwrap()
                .unaccounted(),
            Some(5)
        );
        let v = results.verdicts();
        assert!(
            v[0].starts_with("TARGET MISSED: netladder classified 74995 rejected connects/s"),
            "{}",
            v[0]
        );
        assert!(v[0].contains("90000/s untraced"));
        assert!(v[0].contains("cannot make the target's rate even without a tracer"));
        assert!(
            v[1].contains("round 2: made 70000, classified 69990, lost 5, unaccounted 5"),
            "{}",
            v[1]
        );
        assert!(v[2].starts_with("TARGET MISSED: events were lost: round 2: 5 lost"));
        assert!(
            v[3].starts_with("TARGET MET: netladder's peak RSS (VmHWM) was 47.2 MB"),
            "{}",
            v[3]
        );
        assert!(
            v[4].starts_with("NOTE: UDP: 200 datagrams refused by the firewall under netladder; its kernel side saw 200 failed sendto() calls (events + aggregated), userspace counted 200 errors outside the ladder and printed 0 failure lines"),
            "{}",
            v[4]
        );
        let machine = Machine {
            kernel: "6.18".into(),
            cpus: 2,
            cpu_model: "cpu".into(),
            date: "today".into(),
        };
        let md = results.markdown(&machine, "cmd");
        assert!(md.contains("| 1 | untraced > netladder | 80000 | 80000 | 80000 | 80000 | 0 | 3 | 79997 | 0 | 0 | 0.10 s (10%) | 20.0 MiB | 45.0 MiB |"), "{md}");
        assert!(
            md.contains("| 1 | 100 | 100 | 1.000 | 100 | 1 | 99 | 100 | 0 | 0 | 0.00 s |"),
            "{md}"
        );
    }
}
