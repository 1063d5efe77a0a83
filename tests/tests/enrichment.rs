//! Enrichment off the event loop: the look-ups a failure asks for run on a worker of their own,
//! behind a bounded queue. Made slow for real with the test hook NETLADDER_TEST_ENRICH_DELAY_MS
//! (each look-up sleeps first), a burst of distinct failures loses no line: each arrives with its
//! exact code, enriched or with the evidence line saying its look-up was skipped, the stats count
//! those skipped and account for every kernel record, and the ring buffer kept being read while
//! the look-ups were stalled. Run as root in a throwaway namespace (NL-SKIP otherwise); traffic
//! stays on its loopback.
use std::collections::BTreeSet;
use std::time::Duration;

use netladder_tests::*;
use serde_json::Value;

/// A namespace with only its loopback up.
fn lo_only(tag: &str) -> Netns {
    let ns = Netns::new(tag).expect("a namespace");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    ns
}

/// `netladder watch` on `ns` with each look-up slowed down by `delay_ms`.
fn slow_watch(ns: &Netns, delay_ms: u32) -> Watch {
    // Read by the child at its start; the test binary runs one test at a time (--test-threads=1
    // and root_serial), so no other child sees it.
    std::env::set_var("NETLADDER_TEST_ENRICH_DELAY_MS", delay_ms.to_string());
    let w = watch_netns(ns);
    std::env::remove_var("NETLADDER_TEST_ENRICH_DELAY_MS");
    w
}

/// `count` refused connects from `ns`, each to its own port from `first` on.
fn refused_burst(ns: &Netns, first: u16, count: u16) {
    let out = ns
        .command(peer_bin())
        .args([
            "connect",
            &format!("127.0.0.1:{first}"),
            "--count",
            &count.to_string(),
            "--spread",
            &count.to_string(),
        ])
        .output()
        .expect("nl-peer connect runs");
    assert!(!out.status.success(), "every connect is refused: {out:?}");
}

const SKIPPED: &str = "enrichment skipped: ";

fn skipped(ev: &Value) -> bool {
    ev["evidence"].as_array().is_some_and(|a| {
        a.iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with(SKIPPED)))
    })
}

/// The final stats, which must be netladder's last line; checks that every record the kernel
/// wrote ended in one bucket, nothing was lost, held or left unread, and that the failures
/// written without their look-ups are the ones the stats count.
fn final_accounting(events: &[Value]) -> &Value {
    let stats = events.last().expect("netladder printed something");
    assert!(
        stats["type"] == "stats" && stats["final"] == true,
        "the final stats come last: {events:#?}"
    );
    let r = &stats["records"];
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("records.{k} missing: {stats:#}"))
    };
    assert_eq!(n("lost"), 0, "the ring buffer kept being read: {stats:#}");
    assert_eq!(stats["lost"], 0, "{stats:#}");
    assert_eq!(n("written"), n("read"), "{stats:#}");
    let buckets: u64 = [
        "reported",
        "repeats",
        "merged",
        "context",
        "unclassified",
        "malformed",
        "filtered",
        "dropped",
    ]
    .iter()
    .map(|k| n(k))
    .sum();
    assert_eq!(
        n("written"),
        buckets,
        "every record in one bucket: {stats:#}"
    );
    assert_eq!((n("held"), n("unread")), (0, 0), "{stats:#}");
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "failure").collect();
    let own_lines = failures
        .iter()
        .filter(|e| {
            !e["summary"]
                .as_str()
                .unwrap_or("")
                .contains(" more like this within a second: ")
        })
        .count() as u64;
    assert_eq!(n("reported"), own_lines, "{stats:#}");
    let told: u64 = failures
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(stats["failures_reported"].as_u64(), Some(told), "{stats:#}");
    let without = failures.iter().filter(|e| skipped(e)).count() as u64;
    assert_eq!(
        stats["enrich_skipped"].as_u64(),
        Some(without),
        "the stats count each line written without its look-ups: {stats:#}"
    );
    stats
}

/// The lines of the burst to ports `first..first+count`: exactly one each, #021 refused, and
/// either enriched (the listeners were read) or saying why not.
fn burst_lines(events: &[Value], first: u16, count: u16) -> Vec<&Value> {
    let lines: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "failure")
        .filter(|e| {
            e["dst"]
                .as_str()
                .and_then(|d| d.strip_prefix("127.0.0.1:"))
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| (first..first + count).contains(&p))
        })
        .collect();
    let ports: BTreeSet<u16> = lines
        .iter()
        .map(|e| e["dst"].as_str().unwrap()[10..].parse().unwrap())
        .collect();
    assert_eq!(
        (lines.len(), ports),
        (usize::from(count), (first..first + count).collect()),
        "one line for each refused port: {events:#?}"
    );
    for e in &lines {
        assert_eq!(
            (e["code"].as_str(), e["cause"].as_str(), e["count"].as_u64()),
            (Some("021"), Some("no_listener"), Some(1)),
            "{e:#}"
        );
        let port = &e["dst"].as_str().unwrap()[10..];
        let looked_up = evidence_has(
            e,
            &format!("listeners on port {port} checked over sock_diag"),
        );
        assert!(
            looked_up != skipped(e),
            "enriched, or saying its look-up was skipped (not both, not neither): {e:#}"
        );
    }
    lines
}

#[test]
fn slow_enrichment_loses_no_failure_and_the_ring_keeps_being_read() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = lo_only("enr-slow");
    // Each look-up takes a second: 30 of them would take half a minute.
    let w = slow_watch(&ns, 1000);
    refused_burst(&ns, 21000, 30);
    // While the worker is still on the first look-ups, a second burst: the loop reads it.
    refused_burst(&ns, 22000, 10);
    // The first line of the first burst is enriched: the worker was free.
    let first = w
        .wait_for(
            |e| e["type"] == "failure" && e["dst"] == "127.0.0.1:21000",
            Duration::from_secs(30),
        )
        .expect("the first line");
    assert!(
        evidence_has(&first, "listeners on port 21000 checked over sock_diag"),
        "{first:#}"
    );
    // Lines that waited too long behind the slow look-ups go out without theirs: the last line
    // of the second burst is one of them (it queued behind 39 look-ups of a second each).
    let last = w
        .wait_for(
            |e| e["type"] == "failure" && e["dst"] == "127.0.0.1:22009",
            Duration::from_secs(60),
        )
        .expect("the last line");
    assert!(
        evidence_has(
            &last,
            "enrichment skipped: it waited more than 5s behind others'"
        ),
        "its record was read and handed over while the look-ups were stalled: {last:#}"
    );
    let (events, stderr) = w.stop().unwrap();
    let stats = final_accounting(&events);
    burst_lines(&events, 21000, 30);
    burst_lines(&events, 22000, 10);
    assert!(
        stderr.contains("failures written without their look-ups (enrichment fell behind)"),
        "the human stats line says it too: {stderr}"
    );
    println!("slow enrichment: {stats}");
}

#[test]
fn lines_waiting_for_look_ups_are_written_at_exit() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = lo_only("enr-exit");
    let w = slow_watch(&ns, 1000);
    refused_burst(&ns, 23000, 20);
    // Stop while the worker is on its first look-ups: nothing may be lost at exit.
    w.wait_for(
        |e| e["type"] == "failure" && e["dst"] == "127.0.0.1:23000",
        Duration::from_secs(30),
    )
    .expect("the first line");
    let (events, _) = w.stop().unwrap();
    final_accounting(&events);
    let lines = burst_lines(&events, 23000, 20);
    assert!(
        lines.iter().any(|e| skipped(e)),
        "twenty look-ups of a second each cannot all run within the exit's time: {events:#?}"
    );
}
