//! Booting one kernel + initramfs under qemu-system-x86_64 with a time bound. KVM is used when
//! a short probe boot shows it works; on this project's machines it does not (the guest hangs
//! in the firmware, or QEMU reports a KVM internal error), and TCG is used instead.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const MEMORY_MB: &str = "2048";
/// How long the KVM probe waits for the kernel's first console line.
const KVM_PROBE: Duration = Duration::from_secs(10);
const KERNEL_BANNER: &[u8] = b"Linux version ";
const KVM_ERROR: &[u8] = b"KVM internal error";
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The CPU model. Under TCG, without CMPXCHG16B: QEMU 7.2's emulation of it corrupts the
    /// flags now and then, and Debian's 6.12 kernel, whose SLUB fast path uses it, then dies of
    /// a double fault in kmem_cache_alloc (measured: 3 crashes in 3 boots with it, none in 3
    /// without). The kernel falls back to its generic path when the CPU lacks the instruction.
    fn cpu(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "qemu64,-cx16",
        }
    }
}

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: String,
    /// Per-run directory for console.log (ttyS0), results.log (ttyS1) and qemu.log.
    pub dir: &'a Path,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum End {
    /// QEMU exited by itself (power-off, or a panic with -no-reboot).
    Exited,
    TimedOut,
    /// Stopped because KVM showed it does not work (never the final result of `boot`).
    KvmFailed(&'static str),
}

pub struct BootResult {
    pub accel: Accel,
    pub end: End,
    pub elapsed: Duration,
    /// QEMU's CPU use as last read from /proc before it exited.
    pub usage: Option<Usage>,
    pub console: PathBuf,
    pub results: PathBuf,
}

/// KVM when /dev/kvm opens and a probe boot of `probe` prints the kernel banner under it,
/// else TCG. Says which, and why.
pub fn choose_accel(probe: &Boot) -> Result<Accel> {
    let kvm_opens = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let verdict = if kvm_opens {
        probe_kvm(probe)?
    } else {
        Err("/dev/kvm cannot be opened")
    };
    Ok(match verdict {
        Ok(()) => {
            println!("vm-test: using KVM");
            Accel::Kvm
        }
        Err(why) => {
            println!("vm-test: using TCG (KVM unusable: {why})");
            Accel::Tcg
        }
    })
}

fn probe_kvm(probe: &Boot) -> Result<Result<(), &'static str>> {
    fs::create_dir_all(probe.dir)?;
    let paths = Logs::in_dir(probe.dir)?;
    let start = Instant::now();
    let mut child = spawn(probe, Accel::Kvm, &paths)?;
    let verdict = loop {
        if child.try_wait()?.is_some() {
            break Err("QEMU exited during the probe");
        }
        if let Some(why) = kvm_failure(&paths, start.elapsed() >= KVM_PROBE) {
            break Err(why);
        }
        if contains(&paths.console, KERNEL_BANNER) {
            break Ok(());
        }
        sleep(POLL);
    };
    stop(&mut child)?;
    Ok(verdict)
}

/// Boots once. A KVM boot that meets a KVM failure is retried under TCG.
pub fn boot(boot: &Boot, accel: Accel) -> Result<BootResult> {
    fs::create_dir_all(boot.dir)?;
    let result = attempt(boot, accel)?;
    match result.end {
        End::KvmFailed(why) => {
            println!("vm-test: KVM failed ({why}); booting again under TCG");
            attempt(boot, Accel::Tcg)
        }
        _ => Ok(result),
    }
}

struct Logs {
    console: PathBuf,
    results: PathBuf,
    qemu: PathBuf,
}

impl Logs {
    fn in_dir(dir: &Path) -> Result<Logs> {
        let logs = Logs {
            console: dir.join("console.log"),
            results: dir.join("results.log"),
            qemu: dir.join("qemu.log"),
        };
        for log in [&logs.console, &logs.results] {
            File::create(log).with_context(|| format!("creating {}", log.display()))?;
        }
        Ok(logs)
    }
}

fn attempt(boot: &Boot, accel: Accel) -> Result<BootResult> {
    let logs = Logs::in_dir(boot.dir)?;
    let start = Instant::now();
    let mut child = spawn(boot, accel, &logs)?;
    let mut usage: Option<Usage> = None;
    let end = loop {
        // The largest sums seen: when QEMU powers off its threads exit one by one, taking
        // their counts with them.
        usage = match (usage, usage_of(child.id())) {
            (Some(old), Some(new)) => Some(Usage {
                cpu: old.cpu.max(new.cpu),
                waited: old.waited.max(new.waited),
            }),
            (old, new) => new.or(old),
        };
        if child.try_wait()?.is_some() {
            break End::Exited;
        }
        if accel == Accel::Kvm {
            if let Some(why) = kvm_failure(&logs, false) {
                stop(&mut child)?;
                break End::KvmFailed(why);
            }
        }
        if start.elapsed() >= boot.timeout {
            stop(&mut child)?;
            break End::TimedOut;
        }
        sleep(POLL);
    };
    Ok(BootResult {
        accel,
        end,
        elapsed: start.elapsed(),
        usage,
        console: logs.console,
        results: logs.results,
    })
}

/// What a process's threads got from the scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Time on a CPU.
    pub cpu: Duration,
    /// Time runnable but waiting for a CPU: what other work on the machine cost it. The boot's
    /// wall time minus this is about what it takes on a machine of its own.
    pub waited: Duration,
}

/// The sums of /proc/PID/task/*/schedstat (time on a CPU, time waiting on a run queue, in ns).
fn usage_of(pid: u32) -> Option<Usage> {
    let mut total = Usage::default();
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(text) = fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(cpu)), Some(Ok(waited))) = (fields.next(), fields.next()) else {
            continue;
        };
        total.cpu += Duration::from_nanos(cpu);
        total.waited += Duration::from_nanos(waited);
    }
    Some(total)
}

/// Why KVM does not work, if it showed: QEMU said so, or (once `probe_over`) the kernel has
/// printed nothing.
fn kvm_failure(logs: &Logs, probe_over: bool) -> Option<&'static str> {
    if contains(&logs.qemu, KVM_ERROR) {
        return Some("QEMU reported a KVM internal error");
    }
    if probe_over && !contains(&logs.console, KERNEL_BANNER) {
        return Some("no kernel output within the probe time");
    }
    None
}

fn contains(path: &Path, needle: &[u8]) -> bool {
    fs::read(path).is_ok_and(|text| text.windows(needle.len()).any(|w| w == needle))
}

fn spawn(boot: &Boot, accel: Accel, logs: &Logs) -> Result<Child> {
    let log = File::create(&logs.qemu)?;
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", accel.name(), "-cpu", accel.cpu()])
        .args(["-m", MEMORY_MB, "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initramfs)
        .args(["-append", &boot.cmdline])
        .arg("-serial")
        .arg(format!("file:{}", logs.console.display()))
        .arg("-serial")
        .arg(format!("file:{}", logs.results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    command
        .spawn()
        .context("cannot start qemu-system-x86_64 (run `cargo xtask setup`)")
}

fn stop(child: &mut Child) -> Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_this_process() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        let usage = usage_of(std::process::id()).expect("/proc/self/task readable");
        assert!(usage.cpu > Duration::ZERO, "{usage:?}");
    }
}
