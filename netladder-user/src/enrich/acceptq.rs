//! Full listen queues (#023 `accept_queue_full`, `syn_queue_full`).
//!
//! A SYN that finds its listener's accept queue full is dropped without a drop reason (the kernel
//! frees it as consumed), so the drop hooks never see it. What does see it: the listener itself
//! over sock_diag (Recv-Q, the connections waiting, above Send-Q, the backlog) and the TcpExt
//! counters of its network namespace (ListenOverflows, ListenDrops; TCPReqQFullDrop and
//! TCPReqQFullDoCookies for a full SYN queue).
//!
//! - Client side ([`QueueWatch::explain_timeout`], asked for by `Lookup::ListenQueue`): a
//!   connection that got no answer toward an address of a network namespace on this host is
//!   checked against that namespace's listener on the port and its counters since the connect
//!   began.
//! - Server side ([`QueueWatch::poll`], every second): each namespace's counters are read (one
//!   small /proc read per namespace); only when they rose are that namespace's listeners listed,
//!   and each one whose queue is full is reported, at most once per listener per interval.
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::sockdiag::{self, Listener};
use super::{accepts, canonical, link, plural};
use crate::failure::{Failure, Overload, Proc, QueueRises};
use crate::ladder::{Cause, Code, Layer};

/// At most this many network namespaces are polled and searched for addresses; more are
/// counted and said once.
pub const MAX_NETNS: usize = 256;
/// The host's namespaces are listed again (a stat of /proc/PID/ns/net per process) at most this
/// often.
const LIST_EVERY: Duration = Duration::from_secs(5);
/// The addresses of every namespace (one rtnetlink dump each) are read again at most this often,
/// and only when a timeout asks.
const ADDRS_TTL: Duration = Duration::from_secs(5);
/// A listener read for a client's timeout is reused this long for the same destination.
const READ_TTL: Duration = Duration::from_secs(1);
/// At most this many namespaces holding the same address are checked for one timeout.
const MAX_CANDIDATES: usize = 4;
/// Counter history kept per namespace: only changes are kept, at most this many, none older
/// than `HISTORY_NS` (beyond the kernel's longest connect with the default SYN retries).
const HISTORY_LEN: usize = 64;
const HISTORY_NS: u64 = 600_000_000_000;
/// Bounds of the per-listener report state and of the read cache.
const MAX_LISTENERS: usize = 4096;
const MAX_READS: usize = 4096;

/// A namespace's listen-queue counters, as totals (/proc/net/netstat, TcpExt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    pub overflows: u64,
    pub drops: u64,
    pub syn_queue_drops: u64,
    pub syn_queue_cookies: u64,
}

impl QueueCounters {
    /// How much each counter rose since `before` (0 when it did not, or went back: a new
    /// namespace that reused the inode number).
    pub fn since(&self, before: &QueueCounters) -> QueueRises {
        QueueRises {
            overflows: self.overflows.saturating_sub(before.overflows),
            drops: self.drops.saturating_sub(before.drops),
            syn_queue_drops: self.syn_queue_drops.saturating_sub(before.syn_queue_drops),
            syn_queue_cookies: self
                .syn_queue_cookies
                .saturating_sub(before.syn_queue_cookies),
        }
    }

    /// A SYN was dropped at a full queue since `before` (cookies answered theirs: not a drop).
    fn dropped_since(&self, before: &QueueCounters) -> bool {
        self.overflows > before.overflows
            || self.drops > before.drops
            || self.syn_queue_drops > before.syn_queue_drops
    }
}

/// The listen-queue counters of /proc/net/netstat's text: None without the TcpExt
/// ListenOverflows and ListenDrops pair (every kernel has them; the SYN-queue ones are 0 when
/// absent).
pub fn parse_netstat(text: &str) -> Option<QueueCounters> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        let (Some(names), Some(values)) = (
            names.strip_prefix("TcpExt:"),
            values.strip_prefix("TcpExt:"),
        ) else {
            continue;
        };
        let pairs: HashMap<&str, u64> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
            .collect();
        let get = |k: &str| pairs.get(k).copied();
        return Some(QueueCounters {
            overflows: get("ListenOverflows")?,
            drops: get("ListenDrops")?,
            syn_queue_drops: get("TCPReqQFullDrop").unwrap_or(0),
            syn_queue_cookies: get("TCPReqQFullDoCookies").unwrap_or(0),
        });
    }
    None
}

/// The counters of the calling thread's network namespace.
fn own_counters() -> Result<QueueCounters> {
    let path = "/proc/thread-self/net/netstat";
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    parse_netstat(&text).ok_or_else(|| anyhow!("{path} has no TcpExt ListenOverflows"))
}

/// A network namespace of this host: a process in it when one was seen, else its /run/netns
/// name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ns {
    inode: u64,
    pid: Option<u32>,
    path: Option<PathBuf>,
}

/// The namespace inode of a process (None when it is gone).
fn netns_of(pid: u32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Every network namespace a process or a /run/netns name holds, netladder's own first, at most
/// `max` of them; and how many more there were.
fn enumerate(max: usize) -> (Vec<Ns>, usize) {
    let Ok(own) = fs::metadata("/proc/self/ns/net") else {
        return (Vec::new(), 0);
    };
    let nsfs = own.dev();
    let mut out: Vec<Ns> = Vec::new();
    let mut index: HashMap<u64, Option<usize>> = HashMap::new();
    let mut add = |inode: u64, pid: Option<u32>, path: Option<PathBuf>| match index.get(&inode) {
        Some(Some(i)) => {
            let ns = &mut out[*i];
            if ns.pid.is_none() {
                ns.pid = pid;
            }
            if ns.path.is_none() {
                ns.path = path;
            }
        }
        Some(None) => {}
        None if out.len() >= max => {
            index.insert(inode, None);
        }
        None => {
            index.insert(inode, Some(out.len()));
            out.push(Ns { inode, pid, path });
        }
    };
    add(own.ino(), Some(std::process::id()), None);
    let entries = |dir: &str| {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
    };
    for path in entries("/proc") {
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(m) = fs::metadata(path.join("ns/net")) {
            add(m.ino(), Some(pid), None);
        }
    }
    // Names under /run/netns are bind mounts of nsfs files; anything else there is not one.
    for path in entries("/run/netns") {
        if let Ok(m) = fs::metadata(&path) {
            if m.dev() == nsfs {
                add(m.ino(), None, Some(path));
            }
        }
    }
    let beyond = index.values().filter(|i| i.is_none()).count();
    (out, beyond)
}

/// Reads the counters of a namespace a process is in from /proc/PID/net/netstat: no thread, no
/// setns. The pid is checked on both sides of the read (it may exit or move meanwhile).
fn counters_by_pid(inode: u64, pid: u32) -> Result<QueueCounters> {
    let moved = || anyhow!("process {pid} is no longer in network namespace {inode}");
    if netns_of(pid) != Some(inode) {
        return Err(moved());
    }
    let path = format!("/proc/{pid}/net/netstat");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    if netns_of(pid) != Some(inode) {
        return Err(moved());
    }
    parse_netstat(&text).ok_or_else(|| anyhow!("{path} has no TcpExt ListenOverflows"))
}

/// Enters a namespace on the calling thread, through its /proc/PID/ns/net or /run/netns file
/// (checked by inode, so a reused pid cannot hand over another namespace).
fn enter(ns: &Ns) -> Result<()> {
    let by_pid = ns
        .pid
        .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
    let file = by_pid
        .iter()
        .chain(&ns.path)
        .find_map(|path| {
            let file = fs::File::open(path).ok()?;
            (file.metadata().ok()?.ino() == ns.inode).then_some(file)
        })
        .ok_or_else(|| anyhow!("network namespace {} is gone", ns.inode))?;
    // SAFETY: setns only reads the descriptor; it changes this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot enter network namespace {}", ns.inode));
    }
    Ok(())
}

/// Runs `f` in each namespace in turn, on one short-lived thread that enters them one after
/// the other (one thread per round, not one per namespace). Sockets `f` opens belong to the
/// namespace it runs in.
fn visit<T: Send + 'static>(
    targets: Vec<Ns>,
    f: impl Fn() -> Result<T> + Send + 'static,
) -> Vec<(u64, Result<T>)> {
    if targets.is_empty() {
        return Vec::new();
    }
    let inodes: Vec<u64> = targets.iter().map(|n| n.inode).collect();
    let worker = std::thread::Builder::new()
        .name("netns-visit".into())
        .spawn(move || {
            targets
                .iter()
                .map(|ns| (ns.inode, enter(ns).and_then(|()| f())))
                .collect::<Vec<_>>()
        });
    match worker.map(|w| w.join()) {
        Ok(Ok(results)) => results,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => inodes
            .into_iter()
            .map(|i| {
                (
                    i,
                    Err(anyhow!("cannot start a thread for namespace look-ups: {e}")),
                )
            })
            .collect(),
    }
}

/// Runs `f` in one namespace (see [`visit`]).
fn visit_one<T: Send + 'static>(ns: Ns, f: impl Fn() -> Result<T> + Send + 'static) -> Result<T> {
    visit(vec![ns], f)
        .pop()
        .map_or_else(|| Err(anyhow!("no namespace visited")), |(_, r)| r)
}

/// What happened to a namespace's counters: their changes, with the monotonic time of the read
/// that found each.
struct History {
    /// The last read, and when it was made.
    last: QueueCounters,
    last_at: u64,
    samples: VecDeque<(u64, QueueCounters)>,
}

impl History {
    fn new(at: u64, c: QueueCounters) -> Self {
        History {
            last: c,
            last_at: at,
            samples: VecDeque::from([(at, c)]),
        }
    }

    fn record(&mut self, at: u64, c: QueueCounters) {
        if c != self.last {
            self.samples.push_back((at, c));
        }
        self.last = c;
        self.last_at = at;
        while self.samples.len() > HISTORY_LEN
            || (self.samples.len() > 1 && self.samples[1].0 < at.saturating_sub(HISTORY_NS))
        {
            self.samples.pop_front();
        }
    }

    /// The counters as last read at or before `t`; None when the first read came after.
    fn at(&self, t: u64) -> Option<(u64, QueueCounters)> {
        self.samples.iter().rev().find(|(at, _)| *at <= t).copied()
    }
}

/// Where a listener stands in its reporting.
struct Seen {
    /// The counters its next report counts from, and when they were read.
    base: QueueCounters,
    base_at: u64,
    reported_at: Option<u64>,
    /// The counters rose while its queue was full, and that is not reported yet.
    pending: bool,
}

/// What was read for one timed-out destination in one namespace.
type Read = (Vec<Listener>, QueueCounters);

/// The listen-queue state of the host's network namespaces: the server-side poll and the
/// client-side look-up share the namespace list and the counter history.
pub struct QueueWatch {
    /// Namespaces the poll reads: these only (`--netns`), else every one found.
    only: Vec<u64>,
    /// A listener is reported at most once per this many nanoseconds.
    interval_ns: u64,
    namespaces: Vec<Ns>,
    listed_at: Option<Instant>,
    /// Monotonic time of the listing before the last one, and the namespaces it found: a
    /// namespace new in the last one did not exist then, so its counters were all zero.
    listed_before_ns: u64,
    listed_before: HashSet<u64>,
    listed_ns: u64,
    beyond: usize,
    polled: bool,
    history: HashMap<u64, History>,
    listeners: HashMap<(u64, u32), Seen>,
    addrs: HashMap<IpAddr, Vec<u64>>,
    addrs_at: Option<Instant>,
    reads: HashMap<(u64, SocketAddr), (Instant, Result<Read, String>)>,
    cgroup_root: Option<PathBuf>,
    /// Lines for the operator (stderr), taken by the caller.
    pub notes: Vec<String>,
    said_beyond: bool,
}

impl Default for QueueWatch {
    fn default() -> Self {
        Self::new(Vec::new(), Duration::from_secs(10))
    }
}

impl QueueWatch {
    /// `only`: the namespaces to poll (empty: all of them); `interval`: the least time between
    /// two reports of one listener.
    pub fn new(only: Vec<u64>, interval: Duration) -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        QueueWatch {
            only,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            namespaces: Vec::new(),
            listed_at: None,
            listed_before_ns: 0,
            listed_before: HashSet::new(),
            listed_ns: 0,
            beyond: 0,
            polled: false,
            history: HashMap::new(),
            listeners: HashMap::new(),
            addrs: HashMap::new(),
            addrs_at: None,
            reads: HashMap::new(),
            cgroup_root: crate::mountinfo::cgroup2_root(&mountinfo),
            notes: Vec::new(),
            said_beyond: false,
        }
    }

    /// Lists the host's namespaces again when the last listing is older than `LIST_EVERY`.
    fn refresh_namespaces(&mut self, now: u64) {
        if self.listed_at.is_some_and(|t| t.elapsed() < LIST_EVERY) {
            return;
        }
        let (list, beyond) = enumerate(MAX_NETNS);
        self.listed_before = self.namespaces.iter().map(|n| n.inode).collect();
        self.namespaces = list;
        self.beyond = beyond;
        self.listed_at = Some(Instant::now());
        self.listed_before_ns = self.listed_ns;
        self.listed_ns = now;
        if beyond > 0 && !self.said_beyond {
            self.said_beyond = true;
            self.notes.push(format!(
                "netladder: {beyond} network namespaces beyond the first {MAX_NETNS} are not \
                 checked for full listen queues"
            ));
        }
    }

    /// One server-side round (call it every second; `now` is monotonic time): reads each
    /// namespace's counters and, where they rose, reports each listener whose accept queue is
    /// full, at most once per listener per interval, with the counts since its last report.
    pub fn poll(&mut self, now: u64) -> Vec<Failure> {
        self.refresh_namespaces(now);
        let targets: Vec<Ns> = self
            .namespaces
            .iter()
            .filter(|n| self.only.is_empty() || self.only.contains(&n.inode))
            .cloned()
            .collect();
        let mut out = Vec::new();
        let mut alive = HashSet::new();
        // Namespaces with a listener whose unreported overflows are due now.
        let due: HashSet<u64> = self
            .listeners
            .iter()
            .filter(|(_, s)| s.pending && self.due(s, now))
            .map(|((n, _), _)| *n)
            .collect();
        // A namespace a process is in is read through /proc/PID; the others (and those whose
        // process left) by one thread that enters each in turn.
        let mut read: Vec<(Ns, QueueCounters)> = Vec::new();
        let mut enter = Vec::new();
        for ns in targets {
            match ns.pid.map(|pid| counters_by_pid(ns.inode, pid)) {
                Some(Ok(c)) => read.push((ns, c)),
                _ if ns.path.is_some() => enter.push(Ns { pid: None, ..ns }),
                _ => {}
            }
        }
        let by_inode: HashMap<u64, Ns> = enter.iter().map(|n| (n.inode, n.clone())).collect();
        for (inode, c) in visit(enter, own_counters) {
            if let (Ok(c), Some(ns)) = (c, by_inode.get(&inode)) {
                read.push((ns.clone(), c));
            }
        }
        for (ns, c) in read {
            alive.insert(ns.inode);
            let (prev, prev_at) = match self.history.get(&ns.inode) {
                Some(h) => (h.last, h.last_at),
                // New since the listing before (after the first round): it did not exist
                // then, so every count it holds is new. One that was listed but could not
                // be read starts from its current counts, like every namespace at start.
                None if self.polled && !self.listed_before.contains(&ns.inode) => {
                    (QueueCounters::default(), self.listed_before_ns)
                }
                None => (c, now),
            };
            self.history
                .entry(ns.inode)
                .or_insert_with(|| History::new(prev_at, prev))
                .record(now, c);
            let rose = c.dropped_since(&prev);
            if rose || due.contains(&ns.inode) {
                out.extend(self.report(&ns, prev, prev_at, c, now, rose));
            }
        }
        // Only namespaces this round could read keep their history and listeners.
        self.history.retain(|n, _| alive.contains(n));
        self.listeners.retain(|(n, _), _| alive.contains(n));
        self.polled = true;
        out
    }

    fn due(&self, s: &Seen, now: u64) -> bool {
        report_due(s.reported_at, now, self.interval_ns)
    }

    /// Lists one namespace's listeners and reports the full ones that are due.
    fn report(
        &mut self,
        ns: &Ns,
        prev: QueueCounters,
        prev_at: u64,
        c: QueueCounters,
        now: u64,
        rose: bool,
    ) -> Vec<Failure> {
        let listeners = match visit_one(ns.clone(), sockdiag::all_tcp_listeners) {
            Ok(l) => l,
            Err(e) => {
                self.notes.push(format!(
                    "netladder: the listen queue counters of netns {} rose, but its listeners \
                     could not be read: {e:#}",
                    ns.inode
                ));
                return Vec::new();
            }
        };
        let present: HashSet<u32> = listeners.iter().map(|l| l.inode).collect();
        self.listeners
            .retain(|(n, inode), _| *n != ns.inode || present.contains(inode));
        let mut due = Vec::new();
        for l in listeners {
            let key = (ns.inode, l.inode);
            let full = at_limit(&l);
            if !full && !self.listeners.contains_key(&key) {
                continue;
            }
            if !self.listeners.contains_key(&key) && self.listeners.len() >= MAX_LISTENERS {
                continue;
            }
            let interval = self.interval_ns;
            let seen = self.listeners.entry(key).or_insert(Seen {
                base: prev,
                base_at: prev_at,
                reported_at: None,
                pending: false,
            });
            if rose && full {
                seen.pending = true;
            }
            let is_due = report_due(seen.reported_at, now, interval);
            if seen.pending && is_due {
                due.push((l, c.since(&seen.base), now.saturating_sub(seen.base_at)));
                *seen = Seen {
                    base: c,
                    base_at: now,
                    reported_at: Some(now),
                    pending: false,
                };
            } else if !seen.pending && !full && is_due {
                // Quiet for a whole interval: its next overflow counts from a fresh base.
                self.listeners.remove(&key);
            }
        }
        if due.is_empty() {
            return Vec::new();
        }
        let inodes: Vec<u32> = due.iter().map(|(l, ..)| l.inode).collect();
        let owners = sockdiag::socket_owners(&inodes);
        due.into_iter()
            .map(|(l, rises, window)| {
                let owner = owners.get(&l.inode).cloned();
                let cgroup = match (&self.cgroup_root, &owner) {
                    (Some(root), Some((pid, _))) => cgroup_id_of(root, *pid),
                    _ => 0,
                };
                server_failure(ns.inode, &l, owner, rises, window, now, cgroup)
            })
            .collect()
    }

    /// The counters of namespace `ns` as read at or before `t` (monotonic), when the poll has
    /// read them since before then.
    fn baseline(&self, ns: u64, t: u64) -> Option<(u64, QueueCounters)> {
        self.history.get(&ns)?.at(t)
    }

    /// The namespaces that hold `ip` (canonical): the client's own alone when it is one of
    /// them (the SYN then never leaves it).
    fn holders(&mut self, ip: IpAddr, client: u64, now: u64) -> Vec<u64> {
        if ip.is_loopback() {
            return vec![client];
        }
        if self.addrs_at.is_none_or(|t| t.elapsed() >= ADDRS_TTL) {
            self.refresh_namespaces(now);
            self.addrs.clear();
            for (inode, list) in visit(self.namespaces.clone(), link::addresses) {
                for a in list.into_iter().flatten() {
                    let holders = self.addrs.entry(canonical(a)).or_default();
                    if !holders.contains(&inode) {
                        holders.push(inode);
                    }
                }
            }
            self.addrs_at = Some(Instant::now());
        }
        match self.addrs.get(&ip) {
            Some(list) if list.contains(&client) => vec![client],
            Some(list) => list.iter().take(MAX_CANDIDATES).copied().collect(),
            None => Vec::new(),
        }
    }

    /// The listeners on `dst`'s port and the counters of namespace `ns`, read at most once a
    /// second per destination.
    fn read(&mut self, ns: Ns, dst: SocketAddr) -> Result<Read, String> {
        let key = (ns.inode, dst);
        if let Some((at, r)) = self.reads.get(&key) {
            if at.elapsed() < READ_TTL {
                return r.clone();
            }
        }
        if self.reads.len() >= MAX_READS {
            self.reads.retain(|_, (at, _)| at.elapsed() < READ_TTL);
        }
        let port = dst.port();
        let read = visit_one(ns, move || -> Result<Read> {
            Ok((sockdiag::tcp_listeners(port)?, own_counters()?))
        })
        .map_err(|e| format!("{e:#}"));
        self.reads.insert(key, (Instant::now(), read.clone()));
        read
    }

    /// A #023 timeout (`Lookup::ListenQueue`): when its destination is an address of a network
    /// namespace on this host and the listener there has a full queue (now, or its namespace's
    /// overflow counters rose since the connect began), the failure becomes that listener's
    /// `accept_queue_full` (or `syn_queue_full`); otherwise the listener's state is added as
    /// evidence. Nothing is added for a destination that is not on this host.
    pub fn explain_timeout(&mut self, f: &mut Failure, now: u64) {
        let Some(dst) = f.dst else {
            return;
        };
        let dst = SocketAddr::new(canonical(dst.ip()), dst.port());
        let client = u64::from(f.proc.netns);
        for ns in self.holders(dst.ip(), client, now) {
            let known = self.namespaces.iter().find(|n| n.inode == ns).cloned();
            let handle = match known {
                Some(n) => n,
                // The client's own, entered through the client itself.
                None => Ns {
                    inode: ns,
                    pid: Some(f.proc.pid),
                    path: None,
                },
            };
            let (listeners, counters) = match self.read(handle, dst) {
                Ok(r) => r,
                Err(e) => {
                    f.evidence.push(format!(
                        "the destination is in netns {ns} on this host, but its listeners could not be read: {e}"
                    ));
                    continue;
                }
            };
            let Some(l) = best_listener(&listeners, dst.ip()) else {
                f.evidence.push(format!(
                    "the destination is in netns {ns} on this host; no listener takes port {} there (sock_diag)",
                    dst.port()
                ));
                continue;
            };
            let start = f.duration_ns.map(|d| f.ts_ns.saturating_sub(d));
            let base = start.and_then(|t| self.baseline(ns, t));
            let rises = base.map(|(_, b)| counters.since(&b));
            let owner = sockdiag::socket_owners(&[l.inode]).remove(&l.inode);
            apply(
                f,
                ns,
                l,
                owner,
                rises,
                counters,
                base.map(|(at, _)| now.saturating_sub(at)),
            );
            return;
        }
    }
}

/// Whether a listener last reported at `reported_at` may be reported again: an interval has
/// passed, give or take half a poll (the polls come every second, not on the nanosecond).
fn report_due(reported_at: Option<u64>, now: u64, interval_ns: u64) -> bool {
    reported_at.is_none_or(|t| now.saturating_sub(t) + POLL_SLACK_NS >= interval_ns)
}

/// Half of the poll period.
const POLL_SLACK_NS: u64 = 500_000_000;

/// Full, or at the limit with the counters rising: the next connection overflows it.
fn at_limit(l: &Listener) -> bool {
    l.queue_full() || (l.backlog > 0 && l.queue >= l.backlog)
}

/// The listener that takes connections to `dst`: one bound to that very address before a
/// wildcard one, as the kernel prefers.
fn best_listener(listeners: &[Listener], dst: IpAddr) -> Option<&Listener> {
    let takes: Vec<&Listener> = listeners.iter().filter(|l| accepts(l, dst)).collect();
    takes
        .iter()
        .find(|l| canonical(l.addr.ip()) == dst)
        .or(takes.first())
        .copied()
}

/// The cause a timed-out connection's listener explains: a full accept queue (now, or its
/// namespace counted overflows during the connect), else a full SYN queue that dropped SYNs.
pub fn judge(l: &Listener, rises: Option<QueueRises>) -> Option<Cause> {
    let r = rises.unwrap_or_default();
    if l.queue_full() || r.overflows > 0 {
        Some(Cause::AcceptQueueFull)
    } else if r.syn_queue_drops > 0 {
        Some(Cause::SynQueueFull)
    } else {
        None
    }
}

/// "nl-peer[812]", or "an unknown process" when no process holds the socket any more.
fn who(owner: Option<&(u32, String)>) -> String {
    owner.map_or("an unknown process".to_owned(), |(pid, comm)| {
        format!("{comm}[{pid}]")
    })
}

/// The listener as `ss -ltn` shows it.
fn ss_line(ns: u64, l: &Listener, owner: Option<&(u32, String)>) -> String {
    format!(
        "listener {} of {} in netns {ns}: Recv-Q {} (connections waiting to be accepted), \
         Send-Q {} (the backlog), as `ss -ltn` shows it (sock_diag)",
        l.addr,
        who(owner),
        l.queue,
        l.backlog
    )
}

/// The counter line: rises over a window, or the totals when nothing earlier was read.
fn counters_line(ns: u64, rises: Option<QueueRises>, totals: QueueCounters, over: &str) -> String {
    match rises {
        Some(r) => {
            let mut s = format!(
                "netns {ns} counted {over}: TcpExtListenOverflows +{}, TcpExtListenDrops +{}",
                r.overflows, r.drops
            );
            if r.syn_queue_drops > 0 {
                s += &format!(", TcpExtTCPReqQFullDrop +{}", r.syn_queue_drops);
            }
            if r.syn_queue_cookies > 0 {
                s += &format!(", TcpExtTCPReqQFullDoCookies +{}", r.syn_queue_cookies);
            }
            s + " (/proc/net/netstat of that namespace; the whole namespace's listeners)"
        }
        None => format!(
            "netns {ns}'s totals now: TcpExtListenOverflows {}, TcpExtListenDrops {}, \
             TcpExtTCPReqQFullDrop {} (no reading of that namespace from before the connect to \
             compare with)",
            totals.overflows, totals.drops, totals.syn_queue_drops
        ),
    }
}

/// A SYN dropped at a full queue leaves no drop reason: say why the drop hooks did not see it.
const UNSEEN: &str = "a SYN that finds a full listen queue is freed without a drop reason, so the \
                      kernel's drop tracepoint does not show it; the listener's queue and the \
                      namespace's counters do";

/// Writes what the destination's listener says into a timed-out connection's failure.
fn apply(
    f: &mut Failure,
    ns: u64,
    l: &Listener,
    owner: Option<(u32, String)>,
    rises: Option<QueueRises>,
    totals: QueueCounters,
    window_ns: Option<u64>,
) {
    let listener = format!("{} ({}, netns {ns})", l.addr, who(owner.as_ref()));
    let Some(cause) = judge(l, rises) else {
        let quiet = match rises {
            Some(_) => "; TcpExtListenOverflows did not rise since the connect began",
            None => "",
        };
        f.evidence.push(format!(
            "the destination is in netns {ns} on this host: its listener {listener} has Recv-Q {} \
             with a backlog of {}, not full{quiet} (sock_diag, /proc/net/netstat)",
            l.queue, l.backlog
        ));
        return;
    };
    let r = rises.unwrap_or_default();
    let summary = match cause {
        Cause::SynQueueFull => format!(
            "no answer to the SYN: the SYN queue of {listener} was full and no syncookie was sent \
             ({} SYN{} dropped in that namespace since the connect began): too many half-open \
             connections (a SYN flood, or net.ipv4.tcp_syncookies off)",
            r.syn_queue_drops,
            plural(r.syn_queue_drops)
        ),
        _ if l.queue_full() => format!(
            "no answer to the SYN: the accept queue of {listener} is full ({} connection{} \
             waiting, backlog {}), so the kernel dropped the SYN: the server does not accept() \
             its connections fast enough",
            l.queue,
            plural(u64::from(l.queue)),
            l.backlog
        ),
        _ => format!(
            "no answer to the SYN: the accept queue of {listener} overflowed while the client \
             tried ({} ListenOverflows in that namespace since the connect began; now {} waiting, \
             backlog {}): the server does not accept() its connections fast enough",
            r.overflows, l.queue, l.backlog
        ),
    };
    f.evidence.push(ss_line(ns, l, owner.as_ref()));
    f.evidence
        .push(counters_line(ns, rises, totals, "since the connect began"));
    f.evidence.push(UNSEEN.to_owned());
    let (pid, comm) = owner.unwrap_or((0, "?".to_owned()));
    f.overloaded(
        cause,
        summary,
        Overload {
            server_side: false,
            netns: u32::try_from(ns).unwrap_or(0),
            addr: l.addr,
            pid,
            comm,
            queue: l.queue,
            backlog: l.backlog,
            rises,
            window_ns,
        },
    );
}

/// The server side's own failure: a listener whose queue overflowed in the last `window_ns`.
fn server_failure(
    ns: u64,
    l: &Listener,
    owner: Option<(u32, String)>,
    rises: QueueRises,
    window_ns: u64,
    now: u64,
    cgroup_id: u64,
) -> Failure {
    let secs = window_ns as f64 / 1e9;
    let over = format!("in the last {secs:.1} s");
    let state = if l.queue_full() {
        format!(
            "is full ({} connection{} waiting, backlog {})",
            l.queue,
            plural(u64::from(l.queue)),
            l.backlog
        )
    } else {
        format!(
            "overflowed (now {} waiting, backlog {})",
            l.queue, l.backlog
        )
    };
    let summary = format!(
        "the accept queue of {} {state}: {} SYN{} dropped {over} (ListenOverflows, netns {ns}); \
         its clients get no answer and time out (server side: the clients may be on other hosts)",
        l.addr,
        rises.overflows,
        plural(rises.overflows),
    );
    let netns = u32::try_from(ns).unwrap_or(0);
    let evidence = vec![
        ss_line(ns, l, owner.as_ref()),
        counters_line(ns, Some(rises), QueueCounters::default(), &over),
        UNSEEN.to_owned(),
    ];
    let (pid, comm) = owner.unwrap_or((0, "?".to_owned()));
    let proc = Proc::new(pid, pid, comm.clone(), cgroup_id, netns);
    Failure {
        src: Some(l.addr),
        evidence,
        // Not a kernel record: read from the namespace's counters and sock_diag.
        records: 0,
        overload: Some(Box::new(Overload {
            server_side: true,
            netns,
            addr: l.addr,
            pid,
            comm,
            queue: l.queue,
            backlog: l.backlog,
            rises: Some(rises),
            window_ns: Some(window_ns),
        })),
        ..Failure::new(
            Code::Timeout,
            Cause::AcceptQueueFull,
            Layer::Application,
            summary,
            proc,
            now,
        )
    }
}

/// The cgroup id of a process (the inode of its cgroup v2 directory), 0 when unknown.
fn cgroup_id_of(root: &Path, pid: u32) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| fs::metadata(root.join(p.trim_start_matches('/'))).ok())
        .map_or(0, |m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Lookup;

    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop TCPTimeouts\n\
TcpExt: 0 7 9 2 3 11\n\
IpExt: InNoRoutes InTruncatedPkts\n\
IpExt: 0 0\n";

    fn listener(addr: &str, queue: u32, backlog: u32) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            v6only: false,
            inode: 7,
            uid: 0,
            queue,
            backlog,
        }
    }

    #[test]
    fn reads_the_four_counters() {
        assert_eq!(
            parse_netstat(NETSTAT),
            Some(QueueCounters {
                overflows: 7,
                drops: 9,
                syn_queue_drops: 3,
                syn_queue_cookies: 2,
            })
        );
        // The SYN-queue counters may be missing; the listen ones may not.
        let old = "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 2\n";
        assert_eq!(
            parse_netstat(old),
            Some(QueueCounters {
                overflows: 1,
                drops: 2,
                ..QueueCounters::default()
            })
        );
        assert_eq!(parse_netstat("IpExt: A\nIpExt: 1\n"), None);
        assert_eq!(parse_netstat("TcpExt: ListenDrops\nTcpExt: 1\n"), None);
        assert_eq!(parse_netstat("TcpExt: ListenOverflows ListenDrops\n"), None);
        assert_eq!(parse_netstat(""), None);
    }

    #[test]
    fn reads_this_hosts_counters() {
        assert!(own_counters().is_ok());
    }

    #[test]
    fn rises_never_go_negative() {
        let before = QueueCounters {
            overflows: 5,
            drops: 5,
            syn_queue_drops: 1,
            syn_queue_cookies: 0,
        };
        let after = QueueCounters {
            overflows: 8,
            drops: 4,
            syn_queue_drops: 1,
            syn_queue_cookies: 2,
        };
        let r = after.since(&before);
        assert_eq!(
            (r.overflows, r.drops, r.syn_queue_drops, r.syn_queue_cookies),
            (3, 0, 0, 2)
        );
        assert!(after.dropped_since(&before));
        let cookies_only = QueueCounters {
            syn_queue_cookies: 9,
            ..before
        };
        assert!(
            !cookies_only.dropped_since(&before),
            "a syncookie is an answer"
        );
    }

    #[test]
    fn the_kernels_test_for_a_full_queue() {
        // Backlog 0 still takes one connection; the next SYN finds the queue full.
        assert!(!listener("10.0.0.2:80", 0, 0).queue_full());
        assert!(listener("10.0.0.2:80", 1, 0).queue_full());
        assert!(!listener("10.0.0.2:80", 5, 5).queue_full());
        assert!(at_limit(&listener("10.0.0.2:80", 5, 5)));
        assert!(!at_limit(&listener("10.0.0.2:80", 0, 0)));
        assert!(!at_limit(&listener("10.0.0.2:80", 4, 5)));
    }

    #[test]
    fn judging_a_timeout() {
        let full = listener("10.0.0.2:80", 2, 1);
        let idle = listener("10.0.0.2:80", 0, 128);
        let overflowed = QueueRises {
            overflows: 2,
            drops: 2,
            ..QueueRises::default()
        };
        let syn = QueueRises {
            drops: 1,
            syn_queue_drops: 1,
            ..QueueRises::default()
        };
        assert_eq!(judge(&full, None), Some(Cause::AcceptQueueFull));
        assert_eq!(judge(&idle, Some(overflowed)), Some(Cause::AcceptQueueFull));
        assert_eq!(judge(&idle, Some(syn)), Some(Cause::SynQueueFull));
        assert_eq!(judge(&idle, Some(QueueRises::default())), None);
        assert_eq!(judge(&idle, None), None);
    }

    #[test]
    fn the_listener_bound_to_the_address_wins() {
        let any = listener("0.0.0.0:80", 0, 128);
        let exact = listener("10.0.0.2:80", 3, 2);
        let other = listener("10.0.0.3:80", 9, 1);
        let all = [any.clone(), other.clone(), exact.clone()];
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(best_listener(&all, ip), Some(&exact));
        assert_eq!(best_listener(&[other.clone(), any.clone()], ip), Some(&any));
        assert_eq!(best_listener(&[other], ip), None);
    }

    #[test]
    fn history_answers_for_a_time() {
        let c = |n| QueueCounters {
            overflows: n,
            ..QueueCounters::default()
        };
        let mut h = History::new(100, c(0));
        h.record(200, c(0));
        h.record(300, c(4));
        h.record(400, c(4));
        assert_eq!(h.at(50), None);
        assert_eq!(h.at(100), Some((100, c(0))));
        assert_eq!(h.at(299), Some((100, c(0))));
        assert_eq!(h.at(350), Some((300, c(4))));
        assert_eq!(h.samples.len(), 2, "only changes are kept");
        for i in 0..200 {
            h.record(500 + i, c(10 + i));
        }
        assert!(h.samples.len() <= HISTORY_LEN);
    }

    fn timeout() -> Failure {
        Failure {
            src: Some("10.0.0.1:40000".parse().unwrap()),
            dst: Some("10.0.0.2:80".parse().unwrap()),
            duration_ns: Some(2_000_000_000),
            lookup: Lookup::ListenQueue,
            ..Failure::new(
                Code::Timeout,
                Cause::AppGaveUp,
                Layer::Route,
                "no answer to the SYN".into(),
                Proc::new(40, 40, "curl", 0, 1),
                5_000_000_000,
            )
        }
    }

    #[test]
    fn a_full_listener_becomes_the_cause() {
        let mut f = timeout();
        let l = listener("10.0.0.2:80", 1, 0);
        let rises = QueueRises {
            overflows: 3,
            drops: 3,
            ..QueueRises::default()
        };
        let owner = Some((812, "server".to_owned()));
        apply(
            &mut f,
            9,
            &l,
            owner,
            Some(rises),
            QueueCounters::default(),
            Some(3),
        );
        assert_eq!(
            (f.code, f.cause, f.layer),
            (Code::Timeout, Cause::AcceptQueueFull, Layer::Application)
        );
        assert_eq!(f.evidence_netns, 9);
        assert!(f.summary.contains("accept queue of 10.0.0.2:80 (server[812], netns 9) is full (1 connection waiting, backlog 0)"), "{}", f.summary);
        assert!(!f.summary.contains("nothing dropped"), "{}", f.summary);
        let ev = f.evidence.join("\n");
        assert!(
            ev.contains("Recv-Q 1 (connections waiting to be accepted), Send-Q 0 (the backlog)"),
            "{ev}"
        );
        assert!(
            ev.contains("TcpExtListenOverflows +3, TcpExtListenDrops +3"),
            "{ev}"
        );
        let o = f.overload.unwrap();
        assert_eq!(
            (o.pid, o.comm.as_str(), o.queue, o.backlog, o.server_side),
            (812, "server", 1, 0, false)
        );
    }

    #[test]
    fn a_listener_with_room_is_only_evidence() {
        let mut f = timeout();
        apply(
            &mut f,
            9,
            &listener("0.0.0.0:80", 0, 128),
            None,
            Some(QueueRises::default()),
            QueueCounters::default(),
            Some(3),
        );
        assert_eq!(
            (f.cause, f.layer, f.evidence_netns),
            (Cause::AppGaveUp, Layer::Route, 1)
        );
        assert!(f.overload.is_none());
        assert!(
            f.evidence[0].contains("not full; TcpExtListenOverflows did not rise"),
            "{:?}",
            f.evidence
        );
    }

    #[test]
    fn a_syn_queue_drop_without_cookies() {
        let mut f = timeout();
        let rises = QueueRises {
            drops: 2,
            syn_queue_drops: 2,
            ..QueueRises::default()
        };
        apply(
            &mut f,
            9,
            &listener("10.0.0.2:80", 0, 4),
            None,
            Some(rises),
            QueueCounters::default(),
            None,
        );
        assert_eq!(f.cause, Cause::SynQueueFull);
        assert!(
            f.summary
                .contains("SYN queue of 10.0.0.2:80 (an unknown process, netns 9)"),
            "{}",
            f.summary
        );
        assert!(f
            .evidence
            .iter()
            .any(|e| e.contains("TcpExtTCPReqQFullDrop +2")));
    }

    #[test]
    fn the_server_side_event() {
        let rises = QueueRises {
            overflows: 4,
            drops: 4,
            ..QueueRises::default()
        };
        let f = server_failure(
            9,
            &listener("10.0.0.2:80", 2, 1),
            Some((812, "server".into())),
            rises,
            2_000_000_000,
            77,
            5,
        );
        assert_eq!(
            (f.code, f.cause, f.layer),
            (Code::Timeout, Cause::AcceptQueueFull, Layer::Application)
        );
        assert_eq!(
            (
                f.proc.pid,
                f.proc.comm.as_str(),
                f.proc.netns,
                f.proc.cgroup_id
            ),
            (812, "server", 9, 5)
        );
        assert_eq!((f.src, f.dst), (Some("10.0.0.2:80".parse().unwrap()), None));
        assert!(f.summary.starts_with("the accept queue of 10.0.0.2:80 is full (2 connections waiting, backlog 1): 4 SYNs dropped in the last 2.0 s"), "{}", f.summary);
        assert!(f.overload.as_ref().unwrap().server_side);
    }

    #[test]
    fn enumerates_this_namespace_first() {
        let (list, _) = enumerate(MAX_NETNS);
        let own = fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(
            (list[0].inode, list[0].pid),
            (own, Some(std::process::id()))
        );
        // (Other namespaces may come and go meanwhile: only the bound is checked.)
        let (one, _) = enumerate(1);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].inode, own);
    }
}
