//! What the bench reads from /proc and the bpf() syscall (read-only).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::mem;

use anyhow::{bail, Context, Result};

/// CPU time (user + system) of process `pid` so far, from /proc/PID/stat.
pub(super) fn cpu_secs(pid: i32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_sec())
        .with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line; the command name may hold spaces.
pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds all CPUs together have spent busy since boot (/proc/stat: user, nice, system, irq
/// and softirq; guest time is already part of user time, and steal is another VM's).
pub(super) fn system_busy_secs() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_busy_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_sec())
        .context("cannot parse /proc/stat")
}

pub(super) fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(7)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
    Some(ticks.iter().sum::<u64>() - idle - iowait)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Peak resident set size (VmHWM) of process `pid`, in KiB.
pub(super) fn peak_rss_kib(pid: i32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_vm_hwm(&status).with_context(|| format!("/proc/{pid}/status has no VmHWM line"))
}

pub(super) fn parse_vm_hwm(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmHWM:")
}

/// Current resident set size (VmRSS) of process `pid`, in KiB; None once it is gone.
pub(super) fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

/// The value of a `KEY:   N kB` line of /proc/PID/status.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix(key))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// How many perf event descriptors process `pid` holds.
pub(super) fn perf_event_fds(pid: i32) -> usize {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:[perf_event]")
        .count()
}

/// IDs of the BPF programs process `pid` holds (program and link descriptors both name theirs
/// in /proc/PID/fdinfo).
pub(super) fn bpf_programs_held_by(pid: i32) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))?;
    Ok(entries
        .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| parse_prog_id(&info))
        .collect())
}

pub(super) fn parse_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// IDs of every BPF program loaded on the host (read-only: BPF_PROG_GET_NEXT_ID).
pub(super) fn loaded_bpf_programs() -> Result<BTreeSet<u32>> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    // No host has this many programs; the bound only keeps the loop finite.
    const MAX_PROGRAMS: usize = 1 << 20;
    let mut ids = BTreeSet::new();
    let mut start_id = 0u32;
    while ids.len() < MAX_PROGRAMS {
        // union bpf_attr for this command: start_id, next_id, open_flags.
        let mut attr = [start_id, 0u32, 0u32];
        // SAFETY: attr is a valid, writable bpf_attr prefix of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                mem::size_of_val(&attr),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(ids);
            }
            return Err(err).context("cannot list BPF programs (bpf BPF_PROG_GET_NEXT_ID)");
        }
        start_id = attr[1];
        ids.insert(start_id);
    }
    bail!("more than {MAX_PROGRAMS} BPF programs loaded")
}

/// Other netladder or bpftrace processes (not started by this bench): they would skew the numbers.
pub(super) fn foreign_tracers() -> Vec<String> {
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own && !is_our_child(*pid, own))
        .filter_map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            (comm == "netladder" || comm == "bpftrace").then(|| format!("{comm}[{pid}]"))
        })
        .collect()
}

fn is_our_child(pid: u32, own: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ppid = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    ppid == Some(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        let fdinfo = "pos:\t0\nflags:\t02000002\nlink_type:\ttracing\nlink_id:\t7\nprog_tag:\tab\nprog_id:\t1371\n";
        assert_eq!(parse_prog_id(fdinfo), Some(1371));
        assert_eq!(parse_prog_id("pos:\t0\n"), None);
        let stat = "cpu  10 1 5 100 7 2 3 0 4 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n";
        assert_eq!(parse_busy_ticks(stat), Some(21));
    }
}
