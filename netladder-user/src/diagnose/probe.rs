//! The application rung's probe: one real TCP connection, made while netladder's eBPF programs
//! watch this namespace (netladder's own connections included), and the kernel's reading of it
//! from the same classifier and enricher `watch` uses.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::classify::Classifier;
use crate::cli::HookOpts;
use crate::enrich::{self, netns};
use crate::failure::{Failure, Kind, Observation, Proc};
use crate::watch;

/// What one connection attempt gave.
pub struct Probe {
    /// The connected stream, or the error the program got.
    pub result: io::Result<TcpStream>,
    /// The failure as the kernel saw it (None when the connection worked).
    pub failure: Option<Failure>,
    /// What limits the evidence (eBPF unavailable, hooks degraded).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

/// How long the probe waits for a failure's kernel events after connect() returned (the
/// ring buffer hands them over in batches).
const SETTLE: Duration = Duration::from_millis(1500);

/// Makes the probes of one diagnosis: the eBPF programs are started once, at the first
/// connection, and watch every address tried.
pub struct Prober {
    hooks: HookOpts,
    /// None before the first probe; Some(None) when the programs could not start.
    session: Option<Option<watch::Session>>,
    /// What limits the evidence, said once per probe.
    notes: Vec<String>,
}

impl Prober {
    pub fn new(hooks: &HookOpts) -> Self {
        Prober {
            hooks: hooks.clone(),
            session: None,
            notes: Vec::new(),
        }
    }

    /// Connects to `dst` within `timeout` while the eBPF programs watch (when they can load).
    pub fn connect(&mut self, dst: SocketAddr, timeout: Duration) -> Probe {
        if self.session.is_none() {
            let own = netns::own_netns_inode()
                .ok()
                .and_then(|n| u32::try_from(n).ok());
            let session = match watch::start(&self.hooks, own, true) {
                Ok(s) => {
                    self.notes
                        .extend(s.degraded.iter().map(|d| format!("degraded: {d}")));
                    Some(s)
                }
                Err(e) => {
                    self.notes.push(format!(
                        "no kernel evidence: the eBPF programs could not start ({e:#}); the \
                         verdict comes from the error alone"
                    ));
                    None
                }
            };
            self.session = Some(session);
        }
        let mut notes = self.notes.clone();
        let started = Instant::now();
        let result = TcpStream::connect_timeout(&dst, timeout);
        let elapsed = started.elapsed();
        let failure = match &result {
            Ok(_) => None,
            Err(e) => {
                let seen = self
                    .session
                    .as_mut()
                    .and_then(Option::as_mut)
                    .and_then(|s| kernel_failure(s, dst, &mut notes));
                let mut f = seen.unwrap_or_else(|| from_error(dst, e, elapsed));
                // diagnose is asked to connect: it reads a TLS peer's certificate itself.
                let mut enricher = enrich::enricher::Enricher::default();
                enricher.probe_tls = true;
                enricher.enrich(&mut f);
                Some(f)
            }
        };
        Probe {
            result,
            failure,
            notes,
            elapsed,
        }
    }
}

/// The classifier's failure for this process's connection to `dst`, from the ring buffer.
fn kernel_failure(
    s: &mut watch::Session,
    dst: SocketAddr,
    notes: &mut Vec<String>,
) -> Option<Failure> {
    let me = std::process::id();
    let mut classifier = Classifier::new();
    classifier.set_drops_watched(s.drops_watched());
    let mut found = None;
    let ours = |f: &Failure| f.proc.pid == me && f.dst.map(canonical) == Some(canonical(dst));
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut keep = |f: Failure| {
            if found.is_none() && ours(&f) {
                found = Some(f);
            }
            Ok(())
        };
        if let Err(e) =
            watch::drain_with(&mut s.loaded.events, &s.names, &mut classifier, &mut keep)
        {
            notes.push(format!("could not read the kernel's events: {e:#}"));
            return None;
        }
        let now = Instant::now();
        let at = if now >= deadline {
            u64::MAX
        } else {
            crate::clock::monotonic_ns()
        };
        for f in classifier.tick(at) {
            if found.is_none() && ours(&f) {
                found = Some(f);
            }
        }
        if found.is_some() || at == u64::MAX {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if found.is_none() {
        notes.push("the kernel reported nothing about this connection".into());
    }
    found
}

/// The classifier's reading of the error alone, as for a connect() that failed at once.
fn from_error(dst: SocketAddr, e: &io::Error, elapsed: Duration) -> Failure {
    // connect_timeout's own timeout carries no errno: the program gave up, as after ETIMEDOUT.
    let err = e.raw_os_error().unwrap_or(libc::ETIMEDOUT);
    let netns = netns::own_netns_inode()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let obs = Observation {
        kind: Kind::Syscall { call: "connect" },
        ts_ns: 0,
        sk: 0,
        proc: Proc {
            pid: std::process::id(),
            tid: std::process::id(),
            comm: "netladder".into(),
            cgroup_id: 0,
            netns,
        },
        src: None,
        dst: Some(dst),
        err,
        syn_retrans: 0,
        flags: 0,
        duration_ns: Some(elapsed.as_nanos() as u64),
        drops: Default::default(),
        icmp: None,
        agg: None,
    };
    let mut c = Classifier::new();
    let out = c.feed(obs, 0);
    out.into_iter().next().unwrap_or_else(|| Failure {
        errno: Some(err),
        dst: Some(dst),
        evidence_netns: netns,
        records: 0,
        ..Failure::new(
            crate::ladder::Code::Timeout,
            crate::ladder::Cause::NoReply,
            crate::ladder::Layer::Application,
            format!("the connection failed: {e}"),
            Proc::default(),
            0,
        )
    })
}

use crate::words::canonical_addr as canonical;
