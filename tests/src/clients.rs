//! The client matrix: one failure, made by the clients operators really run, must read the same.
//!
//! Clients learn that a connect failed in different ways. A blocking connect() returns the
//! error. Event loops (curl, nginx upstreams, Go, Node, Java NIO, python asyncio) connect
//! non-blocking, wait until the socket is writable, read the error with getsockopt(SO_ERROR),
//! which also clears it, and close the socket, which may still be in SYN_SENT then. Some give up
//! on their own timeout and close before the kernel does.
//!
//! [`Matrix::run`] runs each [`Client`] in turn inside one namespace against one address, under
//! one `netladder watch` (starting netladder is the expensive part), and pairs each client with
//! the failure event that carries its pid. [`Matrix::expect`] then checks that every client's
//! event has the code, cause, layer, errno and evidence the scenario expects, and
//! [`Matrix::each`] runs a scenario's own checks on each. A client that cannot run here (curl or
//! python3 missing) prints `NL-SKIP` with the reason, so it is counted, never silently passed.

use std::fmt;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::peer::wait_within;
use crate::{evidence_has, peer_bin, skip, test_name, Netns, Watch, FAILURE_TIMEOUT};

/// Upper bound for one client run: every client is given a shorter timeout of its own, or the
/// kernel's (scenarios that wait for the kernel keep `tcp_syn_retries` low).
const RUN_LIMIT: Duration = Duration::from_secs(90);
/// After the last client's event came: how long other events for the same clients may follow
/// (one failed connection must be one event).
const SETTLE: Duration = Duration::from_millis(700);
/// How long the next client waits for the previous one's event. Events come within a few
/// hundred milliseconds; one that never comes (a bug) costs this much per client, and the last
/// collection after all clients still finds a late one.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// A TCP client of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `nl-peer connect`: a blocking connect(); only the kernel's own timeout ends it.
    Blocking,
    /// `nl-peer connect --nonblocking`: EINPROGRESS, poll() for POLLOUT, SO_ERROR, close().
    NonBlocking,
    /// `nl-peer connect --epoll`: the same, waiting with epoll_wait().
    Epoll,
    /// curl: a non-blocking connect, poll(), SO_ERROR and close(), like most event loops.
    Curl,
    /// python3's `asyncio.open_connection` (its epoll selector loop and SO_ERROR), bounded by
    /// `asyncio.wait_for` when the scenario gives the clients a timeout.
    PythonAsyncio,
}

impl Client {
    /// Every client, in the order the matrix runs them.
    pub const ALL: [Client; 5] = [
        Client::Blocking,
        Client::NonBlocking,
        Client::Epoll,
        Client::Curl,
        Client::PythonAsyncio,
    ];

    /// Every client that can give up on its own timeout (all but the blocking connect).
    pub const WAITING: [Client; 4] = [
        Client::NonBlocking,
        Client::Epoll,
        Client::Curl,
        Client::PythonAsyncio,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Client::Blocking => "blocking",
            Client::NonBlocking => "nonblocking-poll",
            Client::Epoll => "nonblocking-epoll",
            Client::Curl => "curl",
            Client::PythonAsyncio => "python-asyncio",
        }
    }

    /// The process name netladder reports for this client.
    pub fn comm(self) -> String {
        match self {
            Client::Blocking | Client::NonBlocking | Client::Epoll => "nl-peer".to_string(),
            Client::Curl => "curl".to_string(),
            Client::PythonAsyncio => python()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .map(|n| n.chars().take(15).collect())
                .unwrap_or_default(),
        }
    }

    /// Why this client cannot run on this machine; None when it can.
    pub fn unavailable(self) -> Option<String> {
        match self {
            Client::Blocking | Client::NonBlocking | Client::Epoll => None,
            Client::Curl => curl().err(),
            Client::PythonAsyncio => python().err(),
        }
    }

    /// Connects once from `ns` to `dst` (`IPv4:port` or `[IPv6]:port`) and returns what the
    /// client saw, with its pid (netladder's events carry the pid of the connecting process).
    pub fn connect(self, ns: &Netns, dst: &str, wait: Wait) -> Result<Attempt> {
        let addr: SocketAddr = dst
            .parse()
            .with_context(|| format!("client address {dst:?}"))?;
        let give_up = match wait {
            Wait::Kernel => None,
            Wait::GiveUpAfter(d) => Some(d.as_secs_f64()),
        };
        let mut cmd = match self {
            Client::Blocking | Client::NonBlocking | Client::Epoll => {
                let mut cmd = ns.command(peer_bin());
                cmd.arg("connect").arg(dst);
                match self {
                    Client::NonBlocking => cmd.arg("--nonblocking"),
                    Client::Epoll => cmd.arg("--epoll"),
                    _ => &mut cmd,
                };
                if let (Some(secs), false) = (give_up, self == Client::Blocking) {
                    cmd.args(["--timeout", &secs.to_string()]);
                }
                cmd
            }
            Client::Curl => {
                let mut cmd = ns.command(curl().map_err(anyhow::Error::msg)?);
                // -q: no .curlrc; no proxy whatever the environment says; -v: the socket error.
                cmd.args(["-q", "-sS", "-v", "--noproxy", "*", "-o", "/dev/null"]);
                // Without a timeout of its own, curl waits for the kernel (bounded anyway).
                let secs = give_up.unwrap_or(RUN_LIMIT.as_secs_f64() - 10.0);
                cmd.args(["--connect-timeout", &secs.to_string()]);
                cmd.arg(format!("http://{dst}/"));
                cmd
            }
            Client::PythonAsyncio => {
                let mut cmd = ns.command(python().map_err(anyhow::Error::msg)?);
                // -I: no environment or user site; -S: no site module; -B: no .pyc written.
                cmd.args(["-I", "-S", "-B", "-c", PYTHON_CLIENT]);
                cmd.arg(addr.ip().to_string())
                    .arg(addr.port().to_string())
                    .arg(give_up.unwrap_or(0.0).to_string());
                cmd
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning the {} client", self.name()))?;
        let pid = child.id();
        let (status, stdout, stderr) =
            wait_within(child, RUN_LIMIT).with_context(|| format!("{} client", self.name()))?;
        let seen = match self {
            Client::Curl => curl_seen(status.code(), &stderr),
            _ => line_seen(&stdout),
        };
        Ok(Attempt {
            client: self,
            pid,
            seen,
            output: format!("exit {status}; stdout: {stdout:?}; stderr: {stderr:?}"),
        })
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long the clients wait for their connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Until the kernel says how it ended (its SYN timeout included: keep tcp_syn_retries low).
    Kernel,
    /// Each client gives up after this long and closes its socket (nl-peer --timeout, curl
    /// --connect-timeout, asyncio.wait_for); a blocking connect cannot, and waits for the kernel.
    GiveUpAfter(Duration),
}

/// What a client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Connected,
    /// The error the kernel gave it (connect()'s return or SO_ERROR), by name: `ECONNREFUSED`.
    Errno(String),
    /// Its own timeout expired first; it closed the socket.
    GaveUp,
    /// Anything else (the client's output is in [`Attempt::output`]).
    Other(String),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Connected => f.write_str("connected"),
            Seen::Errno(name) => f.write_str(name),
            Seen::GaveUp => f.write_str("gave up (its own timeout)"),
            Seen::Other(text) => write!(f, "unexpected: {text}"),
        }
    }
}

/// One client run.
#[derive(Debug)]
pub struct Attempt {
    pub client: Client,
    pub pid: u32,
    pub seen: Seen,
    /// Exit status, stdout and stderr, for failure messages.
    pub output: String,
}

/// A client run and the failure events netladder reported for its pid and destination.
#[derive(Debug)]
pub struct Run {
    pub attempt: Attempt,
    pub events: Vec<Value>,
}

impl Run {
    pub fn client(&self) -> Client {
        self.attempt.client
    }

    /// The client gave up before the kernel did.
    pub fn gave_up(&self) -> bool {
        self.attempt.seen == Seen::GaveUp
    }

    /// Its one event (checked by [`Matrix::expect`]).
    pub fn event(&self) -> &Value {
        self.events
            .first()
            .unwrap_or_else(|| panic!("{}: no event: {self:#?}", self.client()))
    }
}

/// What every client's event must say (an empty `code`, `cause` or `layer` is not checked).
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect<'a> {
    pub code: &'a str,
    pub cause: &'a str,
    pub layer: &'a str,
    /// The error the kernel gives a client that waits for it (and the event's `errno`); a
    /// client that gave up first has none, and neither has its event.
    pub errno: Option<&'a str>,
    /// Text each event's evidence must contain (each string in some evidence line).
    pub evidence: &'a [&'a str],
    /// Text each event's evidence must not contain.
    pub not_evidence: &'a [&'a str],
    /// Text each event's summary must contain.
    pub summary: &'a [&'a str],
    /// The cause of a client that gave up before the kernel did, where it differs from `cause`:
    /// without drop reasons a timeout that the application ended itself reads as
    /// `app_gave_up`, one the kernel ended as `no_reply`.
    pub gave_up_cause: Option<&'a str>,
}

/// Every client's run of one scenario, under one watch.
#[derive(Debug)]
pub struct Matrix {
    test: String,
    dst: String,
    wait: Wait,
    netns: u64,
    pub runs: Vec<Run>,
    /// Clients that could not run here, with the reason (each also printed as NL-SKIP).
    pub skipped: Vec<(Client, String)>,
    /// Failures toward `dst` that no client's pid claims, and the stats records netladder had
    /// printed (it prints one when records are lost or runs skipped): shown when a client's
    /// event is missing or wrong, to tell a misattributed event from a lost one.
    unclaimed: Vec<Value>,
    stats: Vec<Value>,
}

impl Matrix {
    /// Runs `clients` one after the other from `ns` to `dst`, each once the previous one's
    /// failure event is out (same pid, same destination; at most [`EVENT_WAIT`]): netladder
    /// names a firewall rule by how far its counter rose since its previous read, so one
    /// client's packets must not fall into another's read. Then waits up to
    /// [`FAILURE_TIMEOUT`] for missing events, and [`SETTLE`] for late duplicates. Prints one
    /// `NL-CLIENT` line per client: what it saw and what netladder said.
    pub fn run(w: &Watch, ns: &Netns, dst: &str, clients: &[Client], wait: Wait) -> Matrix {
        Matrix::run_spaced(w, ns, dst, clients, wait, Duration::ZERO)
    }

    /// [`Matrix::run`] with `gap` between two clients: a router answers from its routes
    /// (unreachable, prohibit, no route) at most about five ICMP errors per source address in
    /// a burst, then one a second (`net.ipv4.route.error_cost` and `error_burst`, host-wide
    /// sysctls the tests leave alone), so those scenarios space their clients by a second.
    pub fn run_spaced(
        w: &Watch,
        ns: &Netns,
        dst: &str,
        clients: &[Client],
        wait: Wait,
        gap: Duration,
    ) -> Matrix {
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        let mine = |e: &Value, pid: u32| e["pid"].as_u64() == Some(pid.into()) && e["dst"] == dst;
        let event_of = |pid: u32, limit: Duration| {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if w.failures().iter().any(|e| mine(e, pid)) {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        };
        let chosen = chosen_clients();
        for &client in clients {
            if !chosen
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == client.name()))
            {
                println!(
                    "NL-CLIENT {} {client} -> {dst}: not run (not in $NL_CLIENTS)",
                    test_name()
                );
                continue;
            }
            if let Some(why) = client.unavailable() {
                skip(&format!("client {client}: {why}"));
                skipped.push((client, why));
                continue;
            }
            if let Some(last) = runs.last() {
                let last: &Run = last;
                event_of(last.attempt.pid, EVENT_WAIT);
                thread::sleep(gap);
            }
            let attempt = client
                .connect(ns, dst, wait)
                .unwrap_or_else(|e| panic!("client {client} toward {dst}: {e:#}"));
            runs.push(Run {
                attempt,
                events: Vec::new(),
            });
        }
        let deadline = Instant::now() + FAILURE_TIMEOUT;
        loop {
            let failures = w.failures();
            let all = runs
                .iter()
                .all(|r| failures.iter().any(|e| mine(e, r.attempt.pid)));
            if all || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(SETTLE);
        let failures = w.failures();
        for run in &mut runs {
            run.events = failures
                .iter()
                .filter(|e| mine(e, run.attempt.pid))
                .cloned()
                .collect();
        }
        let unclaimed = failures
            .iter()
            .filter(|e| e["dst"] == dst && !runs.iter().any(|r| mine(e, r.attempt.pid)))
            .cloned()
            .collect();
        let stats = w
            .events()
            .into_iter()
            .filter(|e| e["type"] == "stats")
            .collect();
        let matrix = Matrix {
            test: test_name(),
            dst: dst.to_string(),
            wait,
            netns: ns.inode(),
            runs,
            skipped,
            unclaimed,
            stats,
        };
        matrix.print();
        matrix
    }

    /// One line per client: `NL-CLIENT <test> <client>: saw <errno>; #<code> <cause> [<layer>]`.
    fn print(&self) {
        for run in &self.runs {
            let said = match run.events.as_slice() {
                [] => "no event".to_string(),
                events => events
                    .iter()
                    .map(|e| {
                        format!(
                            "#{} {} [{}] errno {}",
                            e["code"].as_str().unwrap_or("?"),
                            e["cause"].as_str().unwrap_or("?"),
                            e["layer"].as_str().unwrap_or("?"),
                            e["errno"].as_str().unwrap_or("none"),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" AND "),
            };
            println!(
                "NL-CLIENT {} {} -> {}: saw {}; {said}",
                self.test,
                run.client(),
                self.dst,
                run.attempt.seen
            );
        }
    }

    /// Checks every client's run against `x`: exactly one event, its code, cause and layer,
    /// the process (pid, comm, namespace), next steps, the errno (the one the client saw, the
    /// one expected; none when the client gave up) and the evidence and summary texts. Reports
    /// every client's mismatches at once, with the events.
    pub fn expect(&self, x: &Expect) {
        let mut problems = Vec::new();
        for run in &self.runs {
            let client = run.client();
            let mut bad = |what: String| problems.push(format!("{client}: {what}"));
            let ev = match run.events.as_slice() {
                [ev] => ev,
                [] => {
                    bad(format!(
                        "no event (client saw {}; {})",
                        run.attempt.seen, run.attempt.output
                    ));
                    continue;
                }
                many => {
                    bad(format!("{} events for one connection", many.len()));
                    &many[0]
                }
            };
            let cause = match x.gave_up_cause {
                Some(c) if run.gave_up() => c,
                _ => x.cause,
            };
            for (field, want) in [("code", x.code), ("cause", cause), ("layer", x.layer)] {
                if !want.is_empty() && ev[field] != want {
                    bad(format!("{field} {} instead of {want:?}", ev[field]));
                }
            }
            if ev["comm"] != client.comm() {
                bad(format!(
                    "comm {} instead of {:?}",
                    ev["comm"],
                    client.comm()
                ));
            }
            if ev["netns"].as_u64() != Some(self.netns) {
                bad(format!("netns {} instead of {}", ev["netns"], self.netns));
            }
            if ev["next"].as_array().is_none_or(Vec::is_empty) {
                bad("no next steps".to_string());
            }
            match (&run.attempt.seen, x.errno) {
                (Seen::Errno(seen), want) => {
                    if want.is_some_and(|w| w != seen) {
                        bad(format!("the client saw {seen}, not {want:?}"));
                    }
                    if ev["errno"] != seen.as_str() {
                        bad(format!(
                            "event errno {} but the client saw {seen}",
                            ev["errno"]
                        ));
                    }
                }
                (Seen::GaveUp, _) if matches!(self.wait, Wait::GiveUpAfter(_)) => {
                    if !ev["errno"].is_null() {
                        bad(format!(
                            "event errno {} but the client gave up without one",
                            ev["errno"]
                        ));
                    }
                }
                (seen, _) => bad(format!(
                    "the client saw {seen} (expected {:?}): {}",
                    x.errno, run.attempt.output
                )),
            }
            for needle in x.evidence {
                if !evidence_has(ev, needle) {
                    bad(format!("evidence lacks {needle:?}"));
                }
            }
            for needle in x.not_evidence {
                if evidence_has(ev, needle) {
                    bad(format!("evidence has {needle:?}"));
                }
            }
            for needle in x.summary {
                if !ev["summary"].as_str().is_some_and(|s| s.contains(needle)) {
                    bad(format!("summary lacks {needle:?}"));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{} client(s) toward {} read differently from the scenario:\n  {}\nevents:\n{}",
            problems.len(),
            self.dst,
            problems.join("\n  "),
            self.dump()
        );
    }

    /// [`Matrix::expect`] for a failure that an ICMP error answered. Where the kernel shows no
    /// ICMP answer ([`icmp_signal`]: 5.10 and 6.1 without the optional tcp_v4_err/tcp_v6_err
    /// hooks), a client that read the error with SO_ERROR before it closed the socket leaves
    /// nothing to read: only the blocking client is held to `x`; each other client must give at
    /// most one event, whose errno is none or the one it saw, and it is then left out of
    /// [`Matrix::each`] and [`Matrix::same`] (its `NL-CLIENT` line says so). Returns whether the
    /// full reading applied.
    pub fn expect_answered(&mut self, w: &Watch, x: &Expect) -> bool {
        if icmp_signal(w) {
            self.expect(x);
            return true;
        }
        let (held, degraded): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|r| r.client() == Client::Blocking);
        self.runs = held;
        self.expect(x);
        for run in &degraded {
            println!(
                "NL-CLIENT {} {}: degraded (this kernel shows no ICMP answer): only checked \
                 for one event at most, with the errno it saw or none",
                self.test,
                run.client()
            );
            assert!(run.events.len() <= 1, "{}: {:#?}", run.client(), run.events);
            if let (Some(ev), Seen::Errno(seen)) = (run.events.first(), &run.attempt.seen) {
                assert!(
                    ev["errno"].is_null() || ev["errno"] == seen.as_str(),
                    "{}: the event's errno is not what the client saw: {ev:#}",
                    run.client()
                );
            }
        }
        false
    }

    /// Runs a scenario's own checks on each client's (one) event; every client is checked,
    /// and a failure names the clients whose event failed, with every client's events.
    pub fn each(&self, check: impl Fn(&Run, &Value)) {
        let failed: Vec<Client> = self
            .runs
            .iter()
            .filter(|run| {
                let checked = panic::catch_unwind(AssertUnwindSafe(|| check(run, run.event())));
                if checked.is_err() {
                    println!(
                        "NL-CLIENT {} {}: the scenario's check failed (above)",
                        self.test,
                        run.client()
                    );
                }
                checked.is_err()
            })
            .map(Run::client)
            .collect();
        assert!(
            failed.is_empty(),
            "the scenario's checks failed for {failed:?} toward {}; events:\n{}",
            self.dst,
            self.dump()
        );
    }

    /// Asserts that `key` of the event is the same for every client (e.g. the firewall rule,
    /// the router that answered).
    pub fn same(&self, what: &str, key: impl Fn(&Value) -> Value) {
        let keys: Vec<(Client, Value)> = self
            .runs
            .iter()
            .map(|r| (r.client(), key(r.event())))
            .collect();
        if let Some((_, first)) = keys.first() {
            assert!(
                keys.iter().all(|(_, k)| k == first),
                "{what} differs between clients: {keys:#?}\nevents:\n{}",
                self.dump()
            );
        }
    }

    /// The run of `client`, if it ran.
    pub fn run_of(&self, client: Client) -> Option<&Run> {
        self.runs.iter().find(|r| r.client() == client)
    }

    /// Every client's events, for failure messages.
    fn dump(&self) -> String {
        let mut out: String = self
            .runs
            .iter()
            .map(|r| {
                format!(
                    "--- {} (pid {}, saw {}):\n{}\n",
                    r.client(),
                    r.attempt.pid,
                    r.attempt.seen,
                    r.events
                        .iter()
                        .map(|e| format!("{e:#}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .collect();
        for (what, records) in [
            (
                "failures toward it that no client's pid claims",
                &self.unclaimed,
            ),
            ("netladder's stats records so far", &self.stats),
        ] {
            out += &format!("--- {what}: {}\n", records.len());
            for r in records {
                out += &format!("{r}\n");
            }
        }
        out
    }
}

/// Whether this watch shows the ICMP errors that answer a SYN (who sent them, which code): the
/// optional fentry hooks on tcp_v4_err/tcp_v6_err, or consume_skb with its location (6.3+).
pub fn icmp_signal(w: &Watch) -> bool {
    crate::hook_attached(w, "tcp_v4_err_entry") || crate::hook_attached(w, "consume_skb")
}

/// The clients named in `$NL_CLIENTS` (comma-separated [`Client::name`]s), when it is set: a
/// run can leave out the slower clients (python's start is seconds on an emulated CPU). Unset,
/// every client runs; a client left out is said on its `NL-CLIENT` line.
fn chosen_clients() -> Option<Vec<String>> {
    let list = std::env::var("NL_CLIENTS").ok()?;
    Some(list.split(',').map(|n| n.trim().to_string()).collect())
}

/// A non-blocking connect closed right after connect() returned EINPROGRESS: the application
/// changed its mind before any answer could come, which is not a failure.
pub struct Abandoned {
    pid: u32,
    dst: String,
}

impl Abandoned {
    /// Runs `nl-peer connect --close-at-once` from `ns` to `dst`.
    pub fn connect(ns: &Netns, dst: &str) -> Abandoned {
        let child = ns
            .command(peer_bin())
            .args(["connect", dst, "--close-at-once"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning nl-peer connect --close-at-once");
        let pid = child.id();
        let (status, stdout, stderr) =
            wait_within(child, RUN_LIMIT).expect("nl-peer connect --close-at-once");
        assert!(
            status.success() && stdout.trim() == "abandoned",
            "closed at once: {status}; {stdout:?}; {stderr:?}"
        );
        Abandoned {
            pid,
            dst: dst.to_string(),
        }
    }

    /// Asserts that netladder reported no failure for it (call after the events of a later
    /// client came, so netladder had the time to report this one too).
    pub fn assert_no_event(&self, w: &Watch) {
        let mine: Vec<Value> = w
            .failures()
            .into_iter()
            .filter(|e| e["pid"].as_u64() == Some(self.pid.into()))
            .collect();
        println!(
            "NL-CLIENT {} close-at-once -> {}: {} event(s)",
            test_name(),
            self.dst,
            mine.len()
        );
        assert!(
            mine.is_empty(),
            "a connect closed before any answer is not a failure: {mine:#?}"
        );
    }
}

/// The asyncio client: prints `ok`, `error NAME ERRNO` or `error TIMEOUT_APP 0` like nl-peer.
/// argv: host, port, the seconds it waits (0: as long as the kernel tries). It never uses TLS:
/// asyncio is loaded without the ssl module (asyncio supports that), which saves a third of
/// python's start (much more in the VMs, where the CPU is emulated).
const PYTHON_CLIENT: &str = r#"
import sys
sys.modules["ssl"] = None
import asyncio, errno

async def main(host, port, limit):
    try:
        conn = asyncio.open_connection(host, port)
        if limit > 0:
            reader, writer = await asyncio.wait_for(conn, limit)
        else:
            reader, writer = await conn
    except OSError as e:
        # asyncio.wait_for's timeout is a TimeoutError (an OSError) without an errno.
        if e.errno is None:
            print("error TIMEOUT_APP 0")
        else:
            print("error %s %d" % (errno.errorcode.get(e.errno, "UNKNOWN"), e.errno))
        return 1
    writer.close()
    print("ok")
    return 0

sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
"#;

/// What an nl-peer or python client printed: its first line.
fn line_seen(stdout: &str) -> Seen {
    let line = stdout.lines().next().unwrap_or("").trim();
    if line == "ok" {
        return Seen::Connected;
    }
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["error", "TIMEOUT_APP", _] => Seen::GaveUp,
        ["error", name, _] => Seen::Errno(name.to_string()),
        _ => Seen::Other(line.to_string()),
    }
}

/// What curl saw, from its exit code and its verbose output: the socket error it printed
/// ("connect to ADDR port P failed: Connection refused", "Immediate connect fail for ADDR:
/// Network is unreachable"), its own connect timeout (exit 28), or a connection ("Connected to
/// ADDR", whatever the HTTP exchange then gave: nl-peer's listener closes at once).
fn curl_seen(code: Option<i32>, stderr: &str) -> Seen {
    if code == Some(0) || stderr.lines().any(|l| l.starts_with("* Connected to ")) {
        return Seen::Connected;
    }
    let errno = stderr.lines().find_map(|line| {
        let (_, text) = line.rsplit_once(": ")?;
        errno_by_text(text.trim())
    });
    match (errno, code) {
        (Some(name), _) => Seen::Errno(name.to_string()),
        (None, Some(28)) => Seen::GaveUp,
        _ => Seen::Other(format!(
            "curl exit {code:?}: {}",
            stderr.lines().last().unwrap_or("")
        )),
    }
}

/// The errno values a connect can end with, by name.
const ERRNOS: &[(i32, &str)] = &[
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::EACCES, "EACCES"),
    (libc::EPERM, "EPERM"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::EHOSTDOWN, "EHOSTDOWN"),
    (libc::EPROTO, "EPROTO"),
    (libc::ENOPROTOOPT, "ENOPROTOOPT"),
];

/// The errno whose C library message (strerror, what curl prints) is `text`.
fn errno_by_text(text: &str) -> Option<&'static str> {
    ERRNOS.iter().find_map(|&(n, name)| {
        let message = std::io::Error::from_raw_os_error(n).to_string();
        let message = message.split(" (os error").next().unwrap_or("");
        (message == text).then_some(name)
    })
}

/// curl's path, or why it cannot run.
fn curl() -> Result<PathBuf, String> {
    static CURL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CURL.get_or_init(|| {
        find_on_path("curl").ok_or_else(|| "curl is not installed here".to_string())
    })
    .clone()
}

/// The python3 interpreter itself, or why it cannot run (missing, or without asyncio). Its
/// own path, not a wrapper script's (pyenv's shims are shell scripts), so that the pid spawned
/// is the pid that connects; asking a wrapper for it runs python once more, which costs
/// seconds in the VMs, so an ELF file is taken as it is.
fn python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let found = find_on_path("python3").ok_or("python3 is not installed here")?;
            let mut magic = [0u8; 4];
            let elf = std::fs::File::open(&found)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok_and(|()| &magic == b"\x7fELF");
            if elf {
                return Ok(found);
            }
            let out = Command::new(&found)
                .args([
                    "-I",
                    "-S",
                    "-B",
                    "-c",
                    "import asyncio, sys; print(sys.executable)",
                ])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("python3 does not run: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "python3 cannot import asyncio: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(if exe.is_empty() { found } else { exe.into() })
        })
        .clone()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_output_is_read() {
        let refused = "*   Trying 127.0.0.1:1...\n* connect to 127.0.0.1 port 1 failed: \
                       Connection refused\n* Failed to connect to 127.0.0.1 port 1 after 0 ms: \
                       Couldn't connect to server\n";
        assert_eq!(
            curl_seen(Some(7), refused),
            Seen::Errno("ECONNREFUSED".into())
        );
        let immediate = "* Immediate connect fail for 10.231.11.1: Network is unreachable\n";
        assert_eq!(
            curl_seen(Some(7), immediate),
            Seen::Errno("ENETUNREACH".into())
        );
        let timeout = "* Connection timed out after 1501 milliseconds\n\
                       curl: (28) Connection timed out after 1501 milliseconds\n";
        assert_eq!(curl_seen(Some(28), timeout), Seen::GaveUp);
        assert!(matches!(curl_seen(Some(6), "x: y\n"), Seen::Other(_)));
        assert_eq!(curl_seen(Some(0), ""), Seen::Connected);
        let empty = "* Connected to 10.231.0.2 (10.231.0.2) port 80 (#0)\n\
                     curl: (52) Empty reply from server\n";
        assert_eq!(curl_seen(Some(52), empty), Seen::Connected);
    }

    #[test]
    fn nl_peer_lines_are_read() {
        assert_eq!(line_seen("ok\n"), Seen::Connected);
        assert_eq!(
            line_seen("error EHOSTUNREACH 113\n"),
            Seen::Errno("EHOSTUNREACH".into())
        );
        assert_eq!(line_seen("error TIMEOUT_APP 0\n"), Seen::GaveUp);
        assert!(matches!(line_seen(""), Seen::Other(_)));
    }
}
