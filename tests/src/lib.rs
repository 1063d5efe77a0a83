//! Support library for netladder's scenario tests.
//!
//! Every scenario runs as root in throwaway network namespaces and uses only addresses it assigned
//! there itself. The pieces:
//! - [`Netns`]: a named network namespace that kills its processes and deletes itself on drop
//!   (its veths and firewall rules go with it), with helpers to run commands and load rules inside;
//! - [`veth`]: a veth pair between two namespaces, with addresses, links up;
//! - [`Peer`] and [`connect`]: the `nl-peer` program as a real listener and a real client;
//! - [`Watch`]: a running `netladder watch --json`, with helpers to wait for and check failure events;
//! - [`Matrix`]: the same failure made by every [`Client`] (blocking, non-blocking with poll or
//!   epoll, curl, python asyncio) under one watch, each client's event checked alike.
//!
//! Tests that need root start with `if !require_root() { return; }` so that a non-root run reports
//! `NL-SKIP` lines instead of failing.

mod bins;
mod clients;
pub mod dns;
mod netns;
mod peer;
pub mod schema;
pub mod tls;
mod watch;

pub use bins::{netladder_bin, peer_bin};
pub use clients::{icmp_signal, Abandoned, Attempt, Client, Expect, Matrix, Run, Seen, Wait};
pub use netns::{veth, Netns, TwoHosts};
pub use peer::{connect, ConnectOutcome, Peer};
pub use watch::{evidence_has, expect_single_failure, Watch, FAILURE_TIMEOUT};

/// The current test's name (the test harness names each test's thread after the test).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed-test")
        .to_string()
}

/// Prints `NL-SKIP <test name>: <reason>`, the marker for a test that did not run its body.
pub fn skip(reason: &str) {
    println!("NL-SKIP {}: {reason}", test_name());
}

/// True when running as root; otherwise prints `NL-SKIP <test name>: needs root` and returns false.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip("needs root");
    }
    root
}

/// For a root-only scenario: None (after printing NL-SKIP) when not root; otherwise a guard that
/// keeps the test binary's scenarios one at a time (each starts its own netladder, which loads
/// its own programs, on a two-core machine). A panicking scenario does not poison the others.
pub fn root_serial() -> Option<std::sync::MutexGuard<'static, ()>> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !require_root() {
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `netladder watch` for one namespace (filtered in the kernel).
pub fn watch_netns(ns: &Netns) -> Watch {
    Watch::start(&["--netns", &ns.inode().to_string()]).expect("netladder watch starts")
}

/// [`watch_netns`] with the syscall tracepoint programs opted in (`--syscall-hooks`): the
/// rungs that need them where the kernel refuses fentry/fexit (bind/listen #027, connect()
/// out of local ports #028, ssh #030). Where fexit loads, the flag changes nothing.
pub fn watch_netns_syscalls(ns: &Netns) -> Watch {
    Watch::start(&["--netns", &ns.inode().to_string(), "--syscall-hooks"])
        .expect("netladder watch starts")
}

/// The evidence line of a call that failed at once with `errno`: read at the call's return (the
/// fexit programs, or the opt-in syscall tracepoints), or, where neither attached, at the
/// kernel's route lookup during the call (`route_fib_lookup`).
pub fn call_failed_line(w: &Watch, call_words: &str, errno: &str) -> String {
    if hook_attached(w, "route_fib_lookup") {
        format!("{call_words} failed with {errno}: the kernel's route lookup during the call")
    } else {
        format!("{call_words} returned {errno}")
    }
}

/// Whether `program` attached in this watch (from its "hooks" line): kernels differ. Waits for
/// that line, which another thread reads from netladder's output. Panics (the test fails, it
/// does not skip) when the line never comes: netladder died or broke, which no kernel excuses.
pub fn hook_attached(w: &Watch, program: &str) -> bool {
    let hooks = w
        .hooks(FAILURE_TIMEOUT)
        .unwrap_or_else(|err| panic!("cannot tell whether {program} attached: {err:#}"));
    hooks["hooks"].as_array().is_some_and(|hs| {
        hs.iter()
            .any(|h| h["program"] == program && h["status"] == "attached")
    })
}

/// Asserts that the summary blames a firewall on this host: the client's own ("the local
/// firewall") or another namespace's ("the firewall of network namespace N on this host"),
/// whichever the drop's namespace says; naming nftables exactly when the drop location proves it
/// (newer kernels drop inside nft_do_chain; older ones in nf_hook_slow for every netfilter
/// backend, which netladder must not pretend to tell apart).
pub fn blames_local_firewall(ev: &serde_json::Value) {
    if evidence_has(ev, ", in netns ") {
        summary_has(ev, "on this host (");
        summary_has(ev, "the firewall of network namespace ");
    } else {
        summary_has(ev, "the local firewall (");
    }
    if evidence_has(ev, "at nft_do_chain") {
        summary_has(ev, "nftables");
    }
}

/// Asserts that an event's summary mentions `needle`.
pub fn summary_has(ev: &serde_json::Value, needle: &str) {
    let s = ev["summary"].as_str().unwrap_or("");
    assert!(
        s.contains(needle),
        "summary should mention {needle:?}: {ev:#}"
    );
}

/// Asserts that a client attempt failed with `errno` (e.g. "ECONNREFUSED").
pub fn fails_with(out: ConnectOutcome, errno: &str) {
    assert!(
        out.lines.iter().any(|l| l.contains(errno)),
        "expected {errno}: {out:?}"
    );
}

/// A number unique within this process, for names of namespaces, interfaces and temp files.
fn unique_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
