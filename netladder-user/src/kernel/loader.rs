//! Loads netladder's eBPF object with the resolved config and attaches its programs according to
//! the hook plan. Every refusal is kept with the kernel's reason; nothing is swallowed.
//! Dropping the returned `Loaded` detaches and unloads everything netladder created (only that).
use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        cgroup_skb::CgroupSkbAttachType, uprobe::UProbeScope, BtfTracePoint, CgroupAttachMode,
        CgroupSkb, CgroupSock, CgroupSockAddr, FEntry, FExit, Program, ProgramError, TracePoint,
        UProbe,
    },
    Btf, Ebpf, EbpfLoader,
};
use netladder_common::{counter, Config, TextRange};

use super::plan::{self, Attach, Choices, Hook, Require, Status};
use super::startup::Timeline;
use super::targets::Targets;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netladder"));

/// What start-up knows about this kernel and what the operator chose; every decision made from
/// it is the plan's (`plan::run`, `plan::globals`, `plan::map_switches`).
pub struct Options<'a> {
    pub choices: Choices<'a>,
    /// The argument count of a BTF tracepoint (`Require::TracepointArgs`).
    pub tracepoint_args: &'a dyn Fn(&str) -> Option<usize>,
    /// Whether the kernel's drop reasons were resolved (`Require::DropReasons`).
    pub drop_reasons: bool,
    /// Whether the kernel has a function of this name (fexit targets).
    pub functions: &'a dyn Fn(&str) -> bool,
    /// The text range of a kernel function (`Require::TextRanges`), or None. Called only when
    /// such a program is about to be attached (reading kallsyms is a tenth of a start, and the
    /// programs are usually replaced by fentry ones).
    pub text_range: &'a dyn Fn(&str) -> Option<TextRange>,
}

/// The running kernel and system, as the plan's requirements ask.
struct System<'a> {
    opts: &'a Options<'a>,
    targets: &'a Targets,
}

impl plan::Kernel for System<'_> {
    fn check(&self, req: &Require) -> Result<(), String> {
        let yes = match req {
            Require::TracepointArgs {
                tracepoint, args, ..
            } => (self.opts.tracepoint_args)(tracepoint).is_some_and(|n| n >= *args),
            Require::DropReasons => self.opts.drop_reasons,
            Require::TextRanges { symbols, .. } => {
                symbols.iter().all(|s| (self.opts.text_range)(s).is_some())
            }
            Require::Function(f) => (self.opts.functions)(f),
            Require::Library(lib) => super::libs::find(lib).is_some(),
            // The targets' own reasons say what is missing.
            Require::Libc => return self.targets.libc.as_ref().map(drop).map_err(Clone::clone),
            Require::Cgroup2 => {
                return self.targets.cgroup.as_ref().map(drop).map_err(Clone::clone)
            }
        };
        if yes {
            Ok(())
        } else {
            Err(req.missing())
        }
    }
}

pub struct Loaded {
    /// Owns every program and link; dropping it detaches them.
    pub _ebpf: Programs,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Identical failures the kernel counted without an event.
    pub aggregates: super::aggregate::Aggregates,
    /// Set to stop the programs writing records (at exit), before the last drain.
    pub stop: aya::maps::Array<MapData, u32>,
    /// Names and descriptors of netladder's own loaded programs (for their run statistics).
    pub program_fds: Vec<(String, i32)>,
    pub outcomes: Vec<plan::Outcome>,
}

pub fn load(config: &Config, opts: &Options, timeline: &mut Timeline) -> Result<Loaded> {
    raise_memlock();
    let btf =
        Btf::from_sys_fs().context("cannot read the kernel's BTF from /sys/kernel/btf/vmlinux")?;
    timeline.mark("kernel types for attaching");
    let targets = Targets::discover();
    timeline.mark("libraries and cgroup");
    let system = System {
        opts,
        targets: &targets,
    };
    // The switches the programs read as globals are fixed when the object loads.
    let globals = plan::globals(&opts.choices, &system);
    let mut loader = EbpfLoader::new();
    timeline.mark("kernel types for relocating");
    loader
        .btf(Some(&btf))
        .override_global("CONFIG", config, true);
    for (name, value) in &globals {
        loader.override_global(name, value, true);
    }
    let mut ebpf = loader.load(OBJECT).map_err(|e| {
        anyhow!(
            "the kernel refused netladder's eBPF maps or object: {}",
            chain(&e)
        )
    })?;
    timeline.mark("maps");

    // uprobes become uprobe_multi links where the kernel has them (kernel/multi.rs); the
    // object is relocated for them once, at the first uprobe.
    let multi_kernel = (opts.functions)(super::multi::KERNEL_FUNCTION);
    let mut relocated: Option<Result<super::multi::Relocated, String>> = None;
    let mut links: Vec<super::multi::Link> = Vec::new();
    let outcomes = plan::run(&opts.choices, &system, |hook| {
        let began = std::time::Instant::now();
        if let Err(status) = give_input(&mut ebpf, hook, opts) {
            return status;
        }
        let status = match probe_target(hook, &targets) {
            Some(target) if multi_kernel => {
                let relocated = relocated
                    .get_or_insert_with(|| super::multi::Relocated::new(OBJECT, &ebpf, &btf));
                attach_multi(relocated, &mut links, hook, target)
                    .unwrap_or_else(|why| fallback(&mut ebpf, hook, &btf, &targets, why))
            }
            _ => attach_status(&mut ebpf, hook, &btf, &targets),
        };
        timeline.program(hook.program, began.elapsed());
        status
    })
    .map_err(|e| anyhow!(e))?;
    drop(relocated);

    for (name, value) in plan::map_switches(&outcomes) {
        if let Some(map) = ebpf.map_mut(name) {
            let mut switch: aya::maps::Array<_, u32> =
                aya::maps::Array::try_from(map).with_context(|| format!("map {name}"))?;
            switch
                .set(0, value, 0)
                .with_context(|| format!("cannot set {name}"))?;
        }
    }
    drop(btf);
    // Parsing the kernel's BTF and loading the object freed tens of MB: give them back to the
    // system instead of keeping them in the allocator for the whole run.
    // SAFETY: plain glibc call, no pointers.
    unsafe { libc::malloc_trim(0) };
    timeline.mark("programs");

    let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS is missing")?)?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map("COUNTERS")
            .context("map COUNTERS is missing")?,
    )?;
    let aggregates = super::aggregate::Aggregates::new(
        ebpf.take_map("AGG").context("map AGG is missing")?,
        ebpf.take_map("AGG_GEN").context("map AGG_GEN is missing")?,
    )?;
    let stop = aya::maps::Array::try_from(ebpf.take_map("STOP").context("map STOP is missing")?)?;
    let program_fds = ebpf
        .programs()
        .filter_map(|(name, p)| Some((name.to_string(), p.fd().ok()?)))
        .map(|(name, fd)| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd));
            (name, fd)
        })
        .chain(links.iter().map(|l| (l.name.clone(), l.prog_fd())))
        .collect();
    Ok(Loaded {
        _ebpf: Programs { ebpf, links },
        events,
        counters,
        aggregates,
        stop,
        program_fds,
        outcomes,
    })
}

/// Hands `hook` what its requirements found before it attaches (`Require::TextRanges`: the
/// map the program reads); the status to report instead of attaching when that fails.
fn give_input(ebpf: &mut Ebpf, hook: &Hook, opts: &Options) -> Result<(), Status> {
    for req in hook.requires {
        let Require::TextRanges { map: name, symbols } = req else {
            continue;
        };
        let refused = |e: String| Status::Refused(format!("cannot write map {name}: {e}"));
        let map = ebpf
            .map_mut(name)
            .ok_or_else(|| refused("not in the eBPF object".into()))?;
        let mut map: aya::maps::Array<_, TextRange> =
            aya::maps::Array::try_from(map).map_err(|e| refused(chain(&e)))?;
        for (i, symbol) in symbols.iter().enumerate() {
            let range = (opts.text_range)(symbol).ok_or_else(|| Status::Skipped(req.missing()))?;
            map.set(i as u32, range, 0)
                .map_err(|e| refused(chain(&e)))?;
        }
    }
    Ok(())
}

/// netladder's programs: those aya loaded, and the uprobes attached as uprobe_multi links.
pub struct Programs {
    pub ebpf: Ebpf,
    pub links: Vec<super::multi::Link>,
}

impl Programs {
    /// The programs attached as uprobe_multi links.
    pub fn linked(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.name.as_str()).collect()
    }
}

/// The file and function a uprobe hook attaches to; None for any other hook (or a library
/// that is not there: aya's path then says so).
fn probe_target(
    hook: &Hook,
    targets: &Targets,
) -> Option<(std::path::PathBuf, &'static str, bool)> {
    match hook.attach {
        Attach::UProbe { lib, symbol, ret } => Some((super::libs::find(lib)?, symbol, ret)),
        Attach::LibcProbe { func, ret } => Some((targets.libc.as_ref().ok()?.clone(), func, ret)),
        _ => None,
    }
}

/// Attaches `hook` as a uprobe_multi link; why not, when that fails.
fn attach_multi(
    relocated: &Result<super::multi::Relocated, String>,
    links: &mut Vec<super::multi::Link>,
    hook: &Hook,
    (path, symbol, ret): (std::path::PathBuf, &'static str, bool),
) -> Result<Status, String> {
    let relocated = relocated
        .as_ref()
        .map_err(|e| format!("cannot relocate the object: {e}"))?;
    links.push(relocated.attach(hook.program, &path, symbol, ret)?);
    Ok(Status::Attached)
}

/// `hook` attached through aya (a perf-event uprobe) after its uprobe_multi link failed for
/// `why`; both reasons when that fails too.
fn fallback(ebpf: &mut Ebpf, hook: &Hook, btf: &Btf, targets: &Targets, why: String) -> Status {
    match attach_status(ebpf, hook, btf, targets) {
        Status::Refused(e) => Status::Refused(format!("{e} (as a uprobe_multi link: {why})")),
        other => other,
    }
}

fn attach_status(ebpf: &mut Ebpf, hook: &Hook, btf: &Btf, targets: &Targets) -> Status {
    match attach(ebpf, hook, btf, targets) {
        Ok(()) => Status::Attached,
        Err(e) => Status::Refused(e),
    }
}

fn attach(ebpf: &mut Ebpf, hook: &Hook, btf: &Btf, targets: &Targets) -> Result<(), String> {
    // Work inside a program already attached (the plan checked): its switch map turns it on.
    if let Attach::PartOf(_) = hook.attach {
        return Ok(());
    }
    let prog = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} is not in the eBPF object", hook.program))?;
    let res: Result<(), ProgramError> = match hook.attach {
        Attach::TpBtf(name) => (|| {
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(name, btf)?;
            p.attach().map(drop)
        })(),
        Attach::Tracepoint(cat, name) => (|| {
            let p: &mut TracePoint = prog.try_into()?;
            p.load()?;
            p.attach(cat, name).map(drop)
        })(),
        Attach::FExit(func) => (|| {
            let p: &mut FExit = prog.try_into()?;
            p.load(func, btf)?;
            p.attach().map(drop)
        })(),
        Attach::FEntry(func) => (|| {
            let p: &mut FEntry = prog.try_into()?;
            p.load(func, btf)?;
            p.attach().map(drop)
        })(),
        Attach::UProbe { lib, symbol, .. } => {
            // The library's path goes with any error: which file the probe was meant for.
            let path = super::libs::find(lib).ok_or_else(|| format!("{lib} not found"))?;
            return (|| {
                let p: &mut UProbe = prog.try_into()?;
                p.load()?;
                p.attach(symbol, &path, UProbeScope::AllProcesses).map(drop)
            })()
            .map_err(|e| format!("{} ({})", describe(&e), path.display()));
        }
        // Attached beside any program already there (never replacing it); the programs
        // always let the packet through.
        Attach::CgroupSkb { ingress } => (|| {
            let Ok(cgroup) = &targets.cgroup else {
                return Ok(());
            };
            let p: &mut CgroupSkb = prog.try_into()?;
            p.load()?;
            let kind = if ingress {
                CgroupSkbAttachType::Ingress
            } else {
                CgroupSkbAttachType::Egress
            };
            p.attach(cgroup, kind, cgroup_mode()).map(drop)
        })(),
        // Attached beside any program already there; they return 1: they never refuse a call.
        Attach::CgroupSockAddr(_) => (|| {
            let Ok(cgroup) = &targets.cgroup else {
                return Ok(());
            };
            let p: &mut CgroupSockAddr = prog.try_into()?;
            p.load()?;
            p.attach(cgroup, cgroup_mode()).map(drop)
        })(),
        Attach::CgroupSock(_) => (|| {
            let Ok(cgroup) = &targets.cgroup else {
                return Ok(());
            };
            let p: &mut CgroupSock = prog.try_into()?;
            p.load()?;
            p.attach(cgroup, cgroup_mode()).map(drop)
        })(),
        Attach::LibcProbe { func, .. } => (|| {
            let Ok(libc) = &targets.libc else {
                return Ok(());
            };
            let p: &mut UProbe = prog.try_into()?;
            p.load()?;
            p.attach(func, libc, UProbeScope::AllProcesses).map(drop)
        })(),
        Attach::PartOf(_) => Ok(()),
    };
    res.map_err(|e| describe(&e))
}

/// How a cgroup program attaches beside the others: from 5.7 aya attaches with a BPF link,
/// which always sits beside the others and takes no flags; before, a plain attach needs the
/// "multi" flag to do the same.
fn cgroup_mode() -> CgroupAttachMode {
    let linked = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 7, 0));
    if linked {
        CgroupAttachMode::Single
    } else {
        CgroupAttachMode::AllowMultiple
    }
}

/// The instructions the kernel's verifier went through for one of netladder's programs (from
/// the program's info; kernels 5.16 and later report it).
pub fn verified_instructions(programs: &Programs, program: &str) -> Option<u32> {
    if let Some(link) = programs.links.iter().find(|l| l.name == program) {
        let info = fdinfo(link.prog_fd())?;
        return fdinfo_value(&info, "verified_insns:").and_then(|n| u32::try_from(n).ok());
    }
    programs
        .ebpf
        .program(program)?
        .info()
        .ok()?
        .verified_instruction_count()
}

/// Detaches and unloads every program of `ebpf`, all at once. Each detach waits for the
/// kernel's grace period (tens of milliseconds: a tracepoint or probe is only gone once no CPU
/// can still be running it); one after the other, thirty of them took 2.5 s at exit. Side by
/// side the waits overlap, and the whole takes about one of them (for uprobes only as
/// uprobe_multi links: the kernel closes perf-event uprobes one at a time). The maps stay with
/// `ebpf`.
pub fn detach_all(programs: &mut Programs) {
    let Programs { ebpf, links } = programs;
    std::thread::scope(|scope| {
        for link in links.drain(..) {
            scope.spawn(move || drop(link));
        }
        for (_, prog) in ebpf.programs_mut() {
            scope.spawn(move || {
                // An unload error leaves the program to the drop of `ebpf`, which tries again.
                let _ = match prog {
                    Program::TracePoint(p) => p.unload(),
                    Program::BtfTracePoint(p) => p.unload(),
                    Program::FExit(p) => p.unload(),
                    Program::FEntry(p) => p.unload(),
                    Program::UProbe(p) => p.unload(),
                    Program::CgroupSkb(p) => p.unload(),
                    Program::CgroupSockAddr(p) => p.unload(),
                    Program::CgroupSock(p) => p.unload(),
                    _ => Ok(()),
                };
            });
        }
    });
}

/// One line for a program error: the syscall error, plus the verifier's last words if any.
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // The log ends with statistics ("processed N insns", "stack depth", "verification
            // time"): the verifier's reason is the line before them.
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| {
                    let l = l.trim();
                    !(l.is_empty()
                        || l.starts_with("processed ")
                        || l.starts_with("stack depth")
                        || l.starts_with("verification time"))
                })
                .collect();
            let tail = tail[tail.len().saturating_sub(2)..].join(" / ");
            if tail.is_empty() {
                format!("load failed: {io_error}")
            } else {
                format!("load failed: {io_error} (verifier: {tail})")
            }
        }
        other => chain(other),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // Failure only matters on old kernels, where the map creation error will say so.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Sums of netladder's in-kernel counters over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records the programs queued on the ring buffer (in `emit` and `submit_app`).
    pub events: u64,
    /// Records they could not queue (the ring buffer was full).
    pub lost: u64,
    pub conn_map_full: u64,
    pub drop_map_full: u64,
    pub malformed: u64,
    /// DNS responses the kernel could not parse (bad, truncated or compressed question names).
    pub dns_malformed: u64,
    /// Failures the kernel counted without an event (identical to one it sent in the same
    /// second), as collected so far from AGG.
    pub aggregated: u64,
    /// Runs of netladder's programs the kernel skipped because another BPF program was
    /// already running on that CPU (`recursion_misses`, 5.12+; 0 where the kernel does not say).
    /// A failure whose only chance to be seen was such a run is missing from the output.
    pub skipped_runs: u64,
}

/// Reads the per-CPU counters once the rest of `Loaded` has been taken apart.
pub struct CounterReader {
    map: PerCpuArray<MapData, u64>,
    program_fds: Vec<(String, i32)>,
    /// The programs' skipped runs as last read before they were detached.
    skipped_final: Option<u64>,
    /// Their run statistics as last read before they were detached.
    costs_final: Option<Vec<ProgramCost>>,
}

/// What one of netladder's programs has cost so far, as the kernel counts it while its BPF
/// run-time statistics are on (`watch --program-costs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramCost {
    /// The program's name in the object (`netladder hooks` lists them).
    pub name: String,
    /// How many times it ran.
    pub runs: u64,
    /// Its time in all those runs, in nanoseconds (the kernel's clock reads around each run
    /// included).
    pub run_ns: u64,
}

/// `now` less `base` for each program of `now` (a program missing from `base` counts from 0),
/// keeping the programs that ran, the costliest first.
pub fn costs_since(now: &[ProgramCost], base: &[ProgramCost]) -> Vec<ProgramCost> {
    let mut out: Vec<ProgramCost> = now
        .iter()
        .map(|p| {
            let b = base.iter().find(|b| b.name == p.name);
            ProgramCost {
                name: p.name.clone(),
                runs: p.runs.saturating_sub(b.map_or(0, |b| b.runs)),
                run_ns: p.run_ns.saturating_sub(b.map_or(0, |b| b.run_ns)),
            }
        })
        .filter(|p| p.runs > 0)
        .collect();
    out.sort_by(|a, b| b.run_ns.cmp(&a.run_ns).then_with(|| a.name.cmp(&b.name)));
    out
}

impl CounterReader {
    /// `program_fds`: netladder's own programs, which must stay loaded while this is used.
    pub fn new(map: PerCpuArray<MapData, u64>, program_fds: Vec<(String, i32)>) -> Self {
        Self {
            map,
            program_fds,
            skipped_final: None,
            costs_final: None,
        }
    }

    /// Reads the programs' skipped runs and run statistics a last time and forgets their
    /// descriptors: call it before the programs are detached (their descriptors close; the
    /// counters stay readable).
    pub fn forget_programs(&mut self) {
        self.skipped_final = Some(self.skipped_runs());
        self.costs_final = Some(self.program_costs());
        self.program_fds.clear();
    }

    /// Every program's runs and run time so far, from /proc/self/fdinfo (`run_cnt:` and
    /// `run_time_ns:`, which the kernel advances only while its BPF statistics are on).
    pub fn program_costs(&self) -> Vec<ProgramCost> {
        if let Some(c) = &self.costs_final {
            return c.clone();
        }
        self.program_fds
            .iter()
            .filter_map(|(name, fd)| {
                let info = fdinfo(*fd)?;
                Some(ProgramCost {
                    name: name.clone(),
                    runs: fdinfo_value(&info, "run_cnt:").unwrap_or(0),
                    run_ns: fdinfo_value(&info, "run_time_ns:").unwrap_or(0),
                })
            })
            .collect()
    }

    /// Skipped runs of our programs, from /proc/self/fdinfo (`recursion_misses:` lines).
    fn skipped_runs(&self) -> u64 {
        if let Some(n) = self.skipped_final {
            return n;
        }
        self.program_fds
            .iter()
            .filter_map(|(_, fd)| fdinfo(*fd))
            .map(|info| fdinfo_value(&info, "recursion_misses:").unwrap_or(0))
            .sum()
    }

    pub fn read(&self) -> Counters {
        let sum = |i: u32| -> u64 { self.map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        Counters {
            events: sum(counter::EVENTS),
            lost: sum(counter::RINGBUF_FULL),
            conn_map_full: sum(counter::CONN_MAP_FULL),
            drop_map_full: sum(counter::DROP_MAP_FULL),
            malformed: sum(counter::MALFORMED),
            dns_malformed: sum(counter::DNS_MALFORMED),
            aggregated: 0,
            skipped_runs: self.skipped_runs(),
        }
    }
}

/// The /proc fdinfo text of our descriptor `fd` (a program's counters and verifier figures).
fn fdinfo(fd: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()
}

/// The number after `key` in a /proc fdinfo text.
fn fdinfo_value(info: &str, key: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod fdinfo_tests {
    use super::{costs_since, ProgramCost};

    fn cost(name: &str, runs: u64, run_ns: u64) -> ProgramCost {
        ProgramCost {
            name: name.into(),
            runs,
            run_ns,
        }
    }

    #[test]
    fn costs_since_a_base_keep_the_programs_that_ran_costliest_first() {
        let base = [cost("a", 10, 1000), cost("b", 5, 500), cost("c", 7, 70)];
        let now = [
            cost("a", 12, 1300),
            cost("b", 5, 500),
            cost("c", 17, 2070),
            cost("d", 1, 40),
        ];
        assert_eq!(
            costs_since(&now, &base),
            [cost("c", 10, 2000), cost("a", 2, 300), cost("d", 1, 40)]
        );
    }
    #[test]
    fn reads_a_counter_line() {
        let info = "prog_type:\t26\nrun_cnt:\t5\nrecursion_misses:\t3\nverified_insns:\t9\n";
        assert_eq!(super::fdinfo_value(info, "recursion_misses:"), Some(3));
        assert_eq!(
            super::fdinfo_value("prog_type:\t26\n", "recursion_misses:"),
            None
        );
    }
}

/// The embedded eBPF object against the plan, without root: every program of the object is in
/// the plan and the reverse, each in the section kind its `Attach` needs, and every map and
/// global the loader uses is there.
#[cfg(test)]
mod object_tests {
    use std::collections::BTreeMap;

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::{plan, plan::HOOKS, Attach, OBJECT};

    /// Symbol name -> section name, for the symbols defined in the object.
    fn symbols() -> BTreeMap<String, (SymbolKind, String)> {
        assert!(
            !OBJECT.is_empty(),
            "this build has no eBPF object (built with AYA_BUILD_SKIP): nothing to check"
        );
        let file = object::File::parse(OBJECT).expect("the embedded eBPF object is an ELF file");
        file.symbols()
            .filter_map(|s| {
                let section = file.section_by_index(s.section_index()?).ok()?;
                Some((
                    s.name().ok()?.to_owned(),
                    (s.kind(), section.name().ok()?.to_owned()),
                ))
            })
            .collect()
    }

    /// The section name prefix aya gives a program attached this way.
    fn section_kind(attach: &Attach) -> &'static str {
        match attach {
            Attach::TpBtf(_) => "tp_btf",
            Attach::Tracepoint(..) => "tracepoint",
            Attach::FExit(_) => "fexit",
            Attach::FEntry(_) => "fentry",
            Attach::UProbe { ret: false, .. } | Attach::LibcProbe { ret: false, .. } => "uprobe",
            Attach::UProbe { ret: true, .. } | Attach::LibcProbe { ret: true, .. } => "uretprobe",
            Attach::CgroupSkb { .. } => "cgroup_skb",
            Attach::CgroupSockAddr(_) | Attach::CgroupSock(_) => "cgroup",
            Attach::PartOf(_) => unreachable!("no program of its own"),
        }
    }

    #[test]
    fn the_object_and_the_plan_agree() {
        let syms = symbols();
        let programs: BTreeMap<&str, &str> = syms
            .iter()
            // Programs sit in sections named by their kind ("fentry/FUNC", "uprobe"); helper
            // functions in ".text".
            .filter(|(_, (kind, section))| *kind == SymbolKind::Text && !section.starts_with('.'))
            .map(|(name, (_, section))| (name.as_str(), section.as_str()))
            .collect();
        // A row that is part of another program has none of its own; its host is planned.
        let own = || {
            HOOKS
                .iter()
                .filter(|h| !matches!(h.attach, Attach::PartOf(_)))
        };
        let mut planned: Vec<&str> = own().map(|h| h.program).collect();
        planned.sort_unstable();
        assert_eq!(
            programs.keys().copied().collect::<Vec<_>>(),
            planned,
            "the programs of the object and of the plan"
        );
        for hook in own() {
            let section = programs[hook.program];
            let kind = section.split('/').next().unwrap_or_default();
            assert_eq!(
                kind,
                section_kind(&hook.attach),
                "{}: section {section}, planned as {}",
                hook.program,
                hook.attach.describe()
            );
            // Where the section names its target, it is the plan's.
            match hook.attach {
                Attach::FEntry(f) | Attach::FExit(f) | Attach::TpBtf(f) => {
                    assert_eq!(section, format!("{kind}/{f}"), "{}", hook.program)
                }
                Attach::Tracepoint(cat, name) => {
                    assert_eq!(
                        section,
                        format!("tracepoint/{cat}/{name}"),
                        "{}",
                        hook.program
                    )
                }
                Attach::CgroupSkb { ingress } => assert_eq!(
                    section,
                    if ingress {
                        "cgroup_skb/ingress"
                    } else {
                        "cgroup_skb/egress"
                    },
                    "{}",
                    hook.program
                ),
                Attach::CgroupSockAddr(kind) | Attach::CgroupSock(kind) => {
                    assert_eq!(section, format!("cgroup/{kind}"), "{}", hook.program)
                }
                Attach::UProbe { .. } | Attach::LibcProbe { .. } | Attach::PartOf(_) => {}
            }
        }
        // A part's host is a program of the object, planned earlier.
        for hook in HOOKS {
            if let Attach::PartOf(host) = hook.attach {
                let at = |p: &str| HOOKS.iter().position(|h| h.program == p);
                assert!(at(host) < at(hook.program), "{}", hook.program);
                assert!(programs.contains_key(host), "{}", hook.program);
            }
        }
    }

    #[test]
    fn the_maps_and_globals_the_loader_uses_exist() {
        let syms = symbols();
        let switches = plan::SWITCHES.iter();
        let map_switches = switches
            .clone()
            .filter(|s| !matches!(s, plan::Switch::GlobalIfPlanned { .. }))
            .map(plan::Switch::name);
        for map in ["EVENTS", "COUNTERS", "AGG", "AGG_GEN", "STOP"]
            .into_iter()
            .chain(map_switches)
            .chain(
                plan::HOOKS
                    .iter()
                    .flat_map(|h| h.requires)
                    .filter_map(|r| match r {
                        plan::Require::TextRanges { map, .. } => Some(*map),
                        _ => None,
                    }),
            )
        {
            let (_, section) = syms
                .get(map)
                .unwrap_or_else(|| panic!("map {map} is not in the eBPF object"));
            assert_eq!(section, "maps", "{map}");
        }
        let globals = switches
            .filter(|s| matches!(s, plan::Switch::GlobalIfPlanned { .. }))
            .map(plan::Switch::name);
        for global in std::iter::once("CONFIG").chain(globals) {
            let (_, section) = syms
                .get(global)
                .unwrap_or_else(|| panic!("global {global} is not in the eBPF object"));
            assert!(
                section.starts_with(".rodata") || section.starts_with(".data"),
                "{global} in {section}"
            );
        }
    }
}
