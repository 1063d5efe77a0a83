//! Issue-8 reliability: a storm of failures is accounted for exactly (reported, or counted as
//! lost). Run as root in throwaway namespaces (NL-SKIP otherwise); traffic stays on the
//! namespace's loopback. What a killed netladder leaves behind is checked in cli.rs.
use std::time::Duration;

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
