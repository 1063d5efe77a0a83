//! Issue-8 reliability: a storm of failures is accounted for exactly (reported, or counted as
//! lost). Issue 15: nothing is lost at exit (Ctrl-C, SIGTERM, --duration), and the stats account
//! for every record the kernel wrote. Run as root in throwaway namespaces (NL-SKIP otherwise);
//! traffic stays on the namespaces' own addresses. What a killed netladder leaves behind is
//! checked in cli.rs.
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use netladder_tests::dns::{dns_hooks, have, lab, Lab};
use netladder_tests::*;
use serde_json::Value;

/// A namespace with only its loopback up.
fn lo_only(tag: &str) -> Netns {
    let ns = Netns::new(tag).expect("a namespace");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    ns
}

#[test]
fn a_refused_storm_is_accounted_for_exactly() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = lo_only("rel-storm");
    let w = watch_netns(&ns);
    let out = ns
        .command(peer_bin())
        .args(["storm", "127.0.0.1:9", "--duration", "3", "--threads", "2"])
        .output()
        .expect("nl-peer storm runs");
    assert!(out.status.success(), "storm: {out:?}");
    let storm: Value = serde_json::from_slice(&out.stdout).expect("the storm's JSON line");
    let refused = storm["refused"].as_u64().unwrap();
    assert!(refused > 1000, "a storm: {storm}");
    let (events, _) = w.stop().unwrap();
    let reported: u64 = events
        .iter()
        .filter(|e| e["type"] == "failure" && e["dst"] == "127.0.0.1:9")
        .inspect(|e| assert_eq!(e["code"], "021", "{e:#}"))
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    let stats = events
        .iter()
        .rev()
        .find(|e| e["type"] == "stats" && e["final"] == true)
        .expect("the final stats line");
    let lost = stats["lost"].as_u64().unwrap();
    println!("storm: {refused} refused, {reported} reported, {lost} lost: {stats}");
    // Every record the kernel wrote ended in one bucket, or was lost.
    accounted(&events);
    if lost == 0 {
        // Known residual (issue 8, open): on a one-CPU VM (sid) the kernel may skip a nested run
        // of both hooks that could report an attempt, about 1 in 9000 there; such a miss is not
        // counted yet. Never more than reported, and at most 0.1% missing.
        assert!(
            reported <= refused && (refused - reported) * 1000 <= refused,
            "nothing lost, so every refused connect is reported once: {reported} of {refused}: {stats}"
        );
    } else {
        // A lost kernel event can hide at most one failure, and nothing is reported twice.
        assert!(
            reported < refused && reported + lost >= refused,
            "reported {reported} + lost {lost} must account for {refused} refused: {stats}"
        );
    }
}

/// Resident memory of `pid` in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_reader_costs_lines_not_memory_nor_the_exit() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = lo_only("rel-slow");
    let dir = std::env::temp_dir().join(format!("nltest-{}-slow", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = dir.join("ready");
    // stdout is a pipe nobody reads: it fills after a few dozen lines.
    let mut child = std::process::Command::new(netladder_bin())
        .args(["watch", "--json", "--ready-file"])
        .arg(&ready)
        .args(["--netns", &ns.inode().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("netladder starts");
    let pid = child.id();
    let started = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "netladder exited early"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Distinct destinations, so repeats cannot fold them into one line each.
    let out = ns
        .command(peer_bin())
        .args([
            "connect",
            "127.0.0.1:20000",
            "--count",
            "10000",
            "--spread",
            "10000",
        ])
        .output()
        .expect("nl-peer connect runs");
    assert!(!out.status.success(), "every connect is refused");
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(pid);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let stopping = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        // A bound that only a deadlock exceeds (slow emulated CPUs included).
        if stopping.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("Ctrl-C did not end netladder: {stderr}"));
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("lines dropped (the output reader did not keep up)"),
        "the final stats count the lines the reader never took: {stderr}"
    );
    assert!(
        rss < 200 * 1024,
        "memory stays bounded while the reader stalls: {rss} KiB"
    );
}

/// Issue 8's flood: for NL_FLOOD_SECS (default 60; the VM suite sets a shorter one) two
/// threads make connections that the namespace's own firewall rejects with a TCP reset, as
/// fast as the machine allows. netladder must stay up, its memory must stay flat once the
/// flood is under way, and every rejected connect must be in its output: reported (events
/// plus the kernel's aggregated counts) or counted lost.
#[test]
fn a_long_firewall_flood_is_survived_and_accounted_for() {
    let Some(_one) = root_serial() else {
        return;
    };
    let secs: u64 = std::env::var("NL_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let ns = lo_only("rel-flood");
    ns.nft(
        "table inet flood {\n chain out {\n type filter hook output priority 0;\n \
         tcp dport 7 tcp flags syn counter reject with tcp reset\n }\n}\n",
    )
    .expect("the reject rule");
    let w = watch_netns(&ns);
    let pid = w.pid();
    // Without drop reasons (5.10) the firewall's reset cannot be told from a peer's: netladder
    // reads it as the peer's and says it is degraded (see scenarios.rs).
    let expected = if hook_attached(&w, "kfree_skb") {
        "firewall_reject_rst"
    } else {
        "peer_reset"
    };
    let mut storm = ns
        .command(peer_bin())
        .args(["storm", "127.0.0.1:7", "--duration", &secs.to_string()])
        .args(["--threads", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nl-peer storm starts");
    // RSS once a second: the first sample after the warm-up is the baseline.
    let mut samples = Vec::new();
    while storm.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_kib(pid);
        assert!(rss > 0, "netladder died during the flood");
        samples.push(rss);
    }
    let out = storm.wait_with_output().expect("the storm's output");
    assert!(out.status.success(), "storm: {out:?}");
    let storm: Value = serde_json::from_slice(&out.stdout).expect("the storm's JSON line");
    let refused = storm["refused"].as_u64().unwrap();
    assert!(refused > 1000, "a flood: {storm}");
    let (events, _) = w.stop().unwrap();
    let (mut reported, mut misread) = (0, 0);
    for e in events.iter().filter(|e| e["type"] == "failure") {
        assert_eq!(
            (&e["dst"], &e["code"]),
            (&"127.0.0.1:7".into(), &"021".into()),
            "{e:#}"
        );
        let n = e["count"].as_u64().unwrap_or(1);
        reported += n;
        if e["cause"] != expected {
            // The same residual as the storm's: a kfree_skb run the kernel skipped leaves the
            // reset without its firewall drop, and it reads as the peer's.
            println!("flood: {n} read as {}: {e}", e["cause"]);
            misread += n;
        }
    }
    // On one CPU (the sid VM under TCG) the kernel skips nested runs far more often: there up
    // to 5% were measured to read so during a flood (issue 8 keeps this residual open).
    let one_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let allowed = if one_cpu {
        refused / 20
    } else {
        refused / 1000
    };
    assert!(
        misread <= allowed,
        "at most {allowed} of the rejected connects read without their firewall drop: {misread} of {refused}"
    );
    let stats = events
        .iter()
        .rev()
        .find(|e| e["type"] == "stats" && e["final"] == true)
        .expect("the final stats line");
    let lost = stats["lost"].as_u64().unwrap();
    accounted(&events);
    // The kernel sent few events: the rest it counted (aggregated), and those counts came back.
    assert!(
        stats["aggregated"].as_u64().unwrap() > 0,
        "identical failures are aggregated in the kernel: {stats}"
    );
    // Same accounting as the refused storm (and its known residual of skipped nested runs).
    assert!(
        reported <= refused && reported + lost >= refused - allowed,
        "reported {reported} + lost {lost} must account for {refused} rejected: {stats}"
    );
    let warm = samples.len().min(5);
    let base = samples[..warm].iter().copied().max().unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    println!(
        "flood: {refused} rejected in {secs} s, {reported} reported ({} aggregated in the kernel, \
         {} events), {lost} lost; RSS {base} KiB after warm-up, peak {peak} KiB",
        stats["aggregated"], stats["events"]
    );
    assert!(
        peak <= base + 10 * 1024,
        "memory stays flat during the flood: {base} KiB after warm-up, peak {peak} KiB ({samples:?})"
    );
}

// --- Nothing lost at exit (issue 15) ---------------------------------------------------------

/// The name dnsmasq refuses (it has no upstream for names outside nl.test).
const OUTSIDE: &str = "www.outside.test";

/// A DNS lab whose client's resolv.conf names the lab's dnsmasq, and a watch of the client's
/// namespace; None (after NL-SKIP) when getent is missing or the DNS hooks did not attach.
fn refusing_lab(tag: &str, n: u8, watch_args: &[&str]) -> Option<(Lab, (PathBuf, PathBuf), Watch)> {
    if !have("getent") {
        skip("getent is not installed");
        return None;
    }
    let l = lab(tag, n);
    let files = l.files(
        &format!("nameserver {}\n", l.server),
        // Both families, so that getent hosts (IPv6 first) asks no DNS for it.
        &format!(
            "{} pinned.nl.test\nfd00:240:{n}::2 pinned.nl.test\n",
            l.server
        ),
    );
    let mut args = vec!["--netns".to_owned(), l.h.client.inode().to_string()];
    args.extend(watch_args.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = Watch::start(&args).expect("netladder watch starts");
    if !dns_hooks(&w, &["dns_ingress"]) {
        return None;
    }
    Some((l, files, w))
}

/// `getent hosts NAME` in the lab's client (gethostbyname2: no getaddrinfo call, so its answers
/// wait for a second of quiet before they are one lookup). Returns its pid; asserts it failed.
fn getent_refused(l: &Lab, files: &(PathBuf, PathBuf), how: &str) -> u32 {
    let (out, pid) = l.run(files, &["getent", how, OUTSIDE]);
    assert_eq!(out.status.code(), Some(2), "getent finds nothing: {out:?}");
    pid
}

/// The final stats line, which must be netladder's last line.
fn final_stats(events: &[Value]) -> &Value {
    let stats = events.last().expect("netladder printed something");
    assert!(
        stats["type"] == "stats" && stats["final"] == true,
        "the final stats come last: {events:#?}"
    );
    stats
}

/// Every record the kernel wrote is in exactly one bucket, or lost; nothing is held or unread
/// at exit; and, seen from outside, each failure line of its own is one reported record (repeat
/// lines, "N more like this", carry repeats). Returns the final stats' records object.
fn accounted(events: &[Value]) -> &Value {
    let stats = final_stats(events);
    let r = &stats["records"];
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("records.{k} missing: {stats:#}"))
    };
    assert_eq!(n("written"), n("read") + n("lost"), "{stats:#}");
    assert_eq!(
        n("written"),
        stats["events"].as_u64().unwrap() + stats["lost"].as_u64().unwrap(),
        "written = queued + lost, both counted by the kernel: {stats:#}"
    );
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
        buckets + n("lost"),
        "each record the kernel wrote ended in one bucket or was lost: {stats:#}"
    );
    assert_eq!((n("held"), n("unread")), (0, 0), "{stats:#}");
    let own_lines = events
        .iter()
        .filter(|e| e["type"] == "failure")
        .filter(|e| {
            !e["summary"]
                .as_str()
                .unwrap_or("")
                .contains(" more like this within a second: ")
        })
        .count() as u64;
    assert_eq!(n("reported"), own_lines, "{stats:#}");
    r
}

/// The one #024 for OUTSIDE, told by `pid`, with the refusal's evidence, before the final
/// stats (which account for every record).
fn lookup_told_before_the_stats(events: &[Value], l: &Lab, pid: u32) {
    let stats = final_stats(events);
    accounted(events);
    let lookups: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "failure" && e["code"] == "024" && e["name"] == OUTSIDE)
        .collect();
    assert_eq!(lookups.len(), 1, "one failure for the lookup: {events:#?}");
    let ev = lookups[0];
    assert_eq!(
        (ev["cause"].as_str(), ev["dst"].as_str(), ev["pid"].as_u64()),
        (
            Some("refused"),
            Some(format!("{}:53", l.server).as_str()),
            Some(u64::from(pid))
        ),
        "{ev:#}"
    );
    summary_has(ev, &format!("refused to resolve {OUTSIDE} (REFUSED)"));
    assert!(
        evidence_has(
            ev,
            &format!("REFUSED for {OUTSIDE} A from {}:53 over UDP", l.server)
        ),
        "{ev:#}"
    );
    println!(
        "the lookup at exit: {}; final stats: {}",
        ev["evidence"], stats["records"]
    );
}

#[test]
fn a_dns_failure_right_before_ctrl_c_is_told_before_the_final_stats() {
    let Some(_one) = root_serial() else {
        return;
    };
    let Some((l, files, w)) = refusing_lab("rel-int", 80, &[]) else {
        return;
    };
    let pid = getent_refused(&l, &files, "hosts");
    // Ctrl-C at once: the answers may still be in the ring buffer, and the lookup waits for
    // its second of quiet.
    let (events, stderr) = w.stop_with(libc::SIGINT).unwrap();
    lookup_told_before_the_stats(&events, &l, pid);
    assert!(
        stderr.contains("kernel records:") && stderr.contains("merged into another failure"),
        "the human stats line on stderr: {stderr}"
    );
}

#[test]
fn a_dns_failure_right_before_sigterm_is_told_before_the_final_stats() {
    let Some(_one) = root_serial() else {
        return;
    };
    let Some((l, files, w)) = refusing_lab("rel-term", 81, &[]) else {
        return;
    };
    // getent ahosts asks through getaddrinfo: where its probes attached, the lookup is a call
    // waiting for late answers after its result (else its answers wait as getent hosts's do).
    let pid = getent_refused(&l, &files, "ahosts");
    let (events, _) = w.stop_with(libc::SIGTERM).unwrap();
    lookup_told_before_the_stats(&events, &l, pid);
}

#[test]
fn a_dns_failure_just_before_the_duration_ends_is_told_before_the_final_stats() {
    let Some(_one) = root_serial() else {
        return;
    };
    const DURATION: f64 = 3.0;
    let Some((l, files, mut w)) = refusing_lab("rel-dur", 82, &["--duration", "3"]) else {
        return;
    };
    // Aim the failure at about 0.6 s before the end, well inside the second of quiet its
    // answers wait for: time one getent run first, of a name its hosts file holds, which asks
    // no DNS. The clock of --duration starts right after netladder writes its ready file, so
    // that file's own time is the reference (not when the harness saw it, nor this line).
    let end = w.ready_at() + Duration::from_secs_f64(DURATION);
    let t = Instant::now();
    let (out, _) = l.run(&files, &["getent", "hosts", "pinned.nl.test"]);
    assert!(out.status.success(), "{out:?}");
    let one = t.elapsed();
    let aim = end - Duration::from_millis(600) - one;
    if let Ok(wait) = aim.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let pid = getent_refused(&l, &files, "hosts");
    // Its answers came before this instant; netladder's programs stop writing at `end`.
    if SystemTime::now() + Duration::from_millis(50) >= end {
        skip(&format!(
            "this machine was too slow to aim the failure before the end of --duration (one \
             getent took {one:?})"
        ));
        return;
    }
    assert!(
        !w.exited(),
        "netladder still runs before the end of --duration"
    );
    let (events, _) = w.wait_end(Duration::from_secs(30)).unwrap();
    lookup_told_before_the_stats(&events, &l, pid);
    // It was still held (waiting for quiet) when the programs stopped: the exit told it.
    let ev = events
        .iter()
        .find(|e| e["type"] == "failure" && e["code"] == "024")
        .unwrap();
    assert!(evidence_has(ev, "watch stopped "), "{ev:#}");
}

#[test]
fn every_kernel_record_of_a_mixed_burst_is_accounted_for() {
    let Some(_one) = root_serial() else {
        return;
    };
    // The default plan: every failure below is read whether or not the kernel loads fentry.
    let Some((l, files, w)) = refusing_lab("rel-sum", 83, &[]) else {
        return;
    };
    // Refused connects to ten closed ports of the server (the kernel folds the repeats of each).
    let refused = connect(
        Some(&l.h.client),
        "10.240.83.2:9000",
        &["--count", "40", "--spread", "10"],
    )
    .expect("nl-peer connect runs");
    fails_with(refused, "ECONNREFUSED");
    // connect() failing at once: no route to that network.
    let unreachable = connect(Some(&l.h.client), "10.99.83.1:80", &[]).expect("nl-peer runs");
    fails_with(unreachable, "ENETUNREACH");
    // listen() failing: the port is taken by a socket bound before it.
    let pair = Peer::listen(
        Some(&l.h.client),
        "10.240.83.1:7083",
        &["--pair", "--reuseaddr"],
    )
    .expect("nl-peer listen --pair");
    assert!(
        pair.addr().ends_with("second=error EADDRINUSE 98"),
        "{}",
        pair.addr()
    );
    drop(pair);
    // A lookup that works (context only), and one refused (its answers merge into one failure).
    let (ok, _) = l.run(&files, &["getent", "ahosts", "good.nl.test"]);
    assert!(ok.status.success(), "{ok:?}");
    let pid = getent_refused(&l, &files, "hosts");
    let (events, _) = w.stop().unwrap();
    let stats = final_stats(&events);
    let r = accounted(&events);
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "failure").collect();
    let has = |code: &str, pred: &dyn Fn(&Value) -> bool| {
        failures.iter().any(|e| e["code"] == code && pred(e))
    };
    assert!(
        has("021", &|e| e["dst"]
            .as_str()
            .is_some_and(|d| d.starts_with("10.240.83.2:900"))),
        "{failures:#?}"
    );
    assert!(
        has("026", &|e| e["dst"] == "10.99.83.1:80"),
        "{failures:#?}"
    );
    assert!(
        has("027", &|e| e["cause"] == "addr_in_use"),
        "{failures:#?}"
    );
    lookup_told_before_the_stats(&events, &l, pid);
    assert!(
        r["merged"].as_u64().unwrap() >= 1,
        "the refused lookup's answers are one failure: {stats:#}"
    );
    println!("mixed burst: {stats}");
}
