//! Where a load's kernel time goes, program by program: one extra run of the load under
//! `netladder watch --program-costs`, after the rounds and never counted in a ratio (the
//! kernel's BPF run-time statistics add two clock reads to every program run, so they would
//! change what the rounds measure).

use std::fs;
use std::path::Path;
use std::thread::sleep;

use anyhow::{Context, Result};
use serde_json::Value;

use super::child::remove_if_present;
use super::report::escape_cell;
use super::tracer::Netladder;
use super::{Ctx, SETTLE};

/// What one of netladder's programs cost during the load.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ProgramCost {
    pub(super) name: String,
    pub(super) runs: u64,
    pub(super) run_ns: u64,
}

/// The programs' costs during one load of `units` units (connections, refused connects).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Costs {
    /// What one unit is, singular ("connection").
    pub(super) unit: &'static str,
    pub(super) units: u64,
    /// The costliest first, as netladder lists them.
    pub(super) programs: Vec<ProgramCost>,
}

/// Runs a benchmark's load once more under `netladder watch --program-costs`, apart from its
/// rounds; `load` returns how many `unit`s it made. A failed run is kept as its message (also
/// said on stderr, as `bench: NAME: ...`), for the report to say why the table is missing.
pub(super) fn measure(
    ctx: &Ctx,
    bench: &str,
    unit: &'static str,
    load: impl FnOnce(&Netladder) -> Result<u64>,
) -> Result<Costs, String> {
    sleep(SETTLE);
    let run = || -> Result<Costs> {
        let netladder =
            Netladder::start_with(&ctx.bins, &ctx.work, ctx.seconds, &["--program-costs"])?;
        let units = load(&netladder)?;
        let stopped = netladder.stop()?;
        let programs = read_costs(&stopped.out)?;
        remove_if_present(&stopped.out)?;
        Ok(Costs {
            unit,
            units,
            programs,
        })
    };
    run().map_err(|e| {
        let e = format!("{e:#}");
        eprintln!("bench: {bench}: the program costs run failed: {e}");
        e
    })
}

/// The report's part for a [`measure`] run: its table, or why it failed.
pub(super) fn section(costs: &Result<Costs, String>) -> String {
    match costs {
        Ok(c) => c.markdown(),
        Err(e) => format!("The program costs run failed: {}\n", escape_cell(e)),
    }
}

/// The `costs` record of a `netladder watch --json --program-costs` output file.
fn read_costs(path: &Path) -> Result<Vec<ProgramCost>> {
    let text = fs::read_to_string(path).context("cannot read netladder's output")?;
    parse_costs(&text)
}

fn parse_costs(text: &str) -> Result<Vec<ProgramCost>> {
    let record = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "costs")
        .context("netladder printed no costs record (--program-costs)")?;
    let programs = record["programs"]
        .as_array()
        .context("the costs record has no programs")?;
    programs
        .iter()
        .map(|p| {
            Ok(ProgramCost {
                name: p["name"]
                    .as_str()
                    .context("a program without a name")?
                    .into(),
                runs: p["runs"].as_u64().context("a program without runs")?,
                run_ns: p["run_ns"].as_u64().context("a program without run_ns")?,
            })
        })
        .collect()
}

/// The unit's plural: a unit of measure (MB) stays as it is.
fn plural(unit: &str) -> String {
    if unit.chars().all(|c| c.is_ascii_uppercase()) {
        unit.to_string()
    } else {
        format!("{unit}s")
    }
}

impl Costs {
    /// Program time per unit, in nanoseconds.
    pub(super) fn ns_per_unit(&self) -> f64 {
        let all: u64 = self.programs.iter().map(|p| p.run_ns).sum();
        all as f64 / self.units.max(1) as f64
    }

    /// A table: each program's runs and time per unit, and the sum.
    pub(super) fn markdown(&self) -> String {
        let unit = self.unit;
        let per = |x: u64| x as f64 / self.units.max(1) as f64;
        let mut t = format!(
            "Where the programs' time goes: one more run of this load, outside the rounds, under \
             `netladder watch --program-costs` ({} {}; the kernel's figures include about \
             20-30 ns of clock reads per run):\n\n\
             | program | runs per {unit} | ns per run | ns per {unit} |\n|---|---:|---:|---:|\n",
            self.units,
            plural(unit)
        );
        for p in &self.programs {
            let per_unit = per(p.run_ns);
            // Programs that cost under a nanosecond per unit (another namespace's traffic, a
            // timer) would only lengthen the table.
            if per_unit < 1.0 {
                continue;
            }
            t += &format!(
                "| `{}` | {:.2} | {} | {:.0} |\n",
                p.name,
                per(p.runs),
                p.run_ns / p.runs.max(1),
                per_unit
            );
        }
        let runs: u64 = self.programs.iter().map(|p| p.runs).sum();
        t += &format!("| all | {:.2} | | {:.0} |\n", per(runs), self.ns_per_unit());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_costs_record_is_read_and_tabled_per_unit() {
        let text = [
            r#"{"type":"hooks","hooks":[]}"#,
            r#"{"type":"costs","programs":[{"name":"inet_sock_set_state","runs":40,"run_ns":8000},{"name":"dns_egress","runs":2,"run_ns":9}]}"#,
            r#"{"type":"stats","final":true}"#,
        ]
        .join("\n");
        let costs = Costs {
            unit: "connection",
            units: 10,
            programs: parse_costs(&text).unwrap(),
        };
        assert_eq!(costs.programs[0].runs, 40);
        assert_eq!(costs.ns_per_unit(), 800.9);
        let md = costs.markdown();
        assert!(
            md.contains("| `inet_sock_set_state` | 4.00 | 200 | 800 |"),
            "{md}"
        );
        assert!(!md.contains("dns_egress"), "{md}");
        assert!(md.contains("| all | 4.20 | | 801 |"), "{md}");
        assert!(md.contains("(10 connections;"), "{md}");
        assert_eq!(plural("MB"), "MB");
        assert!(parse_costs(r#"{"type":"stats","final":true}"#).is_err());
    }
}
