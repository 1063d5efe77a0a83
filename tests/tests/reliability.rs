//! Issue-8 reliability: a killed netladder leaves nothing loaded behind, and a storm of failures
//! is accounted for exactly (reported, or counted as lost). Run as root in throwaway
//! namespaces (they print NL-SKIP otherwise); traffic stays on the namespace's loopback.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netladder_tests::*;
use serde_json::Value;

/// A namespace with only its loopback up.
fn lo_only(tag: &str) -> Netns {
    let ns = Netns::new(tag).expect("a namespace");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    ns
}

/// IDs of the BPF programs `pid` holds (program and link descriptors name theirs in fdinfo).
fn programs_held_by(pid: u32) -> BTreeSet<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// IDs of every BPF program loaded on the host, read-only (BPF_PROG_GET_NEXT_ID): nothing is
/// opened, so nothing is kept alive.
fn loaded_programs() -> Result<BTreeSet<u32>> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    let mut ids = BTreeSet::new();
    let mut start_id = 0u32;
    for _ in 0..1 << 20 {
        // union bpf_attr for this command: start_id, next_id, open_flags.
        let mut attr = [start_id, 0u32, 0u32];
        // SAFETY: attr is a writable bpf_attr prefix of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(ids);
            }
            return Err(err).context("BPF_PROG_GET_NEXT_ID");
        }
        start_id = attr[1];
        ids.insert(start_id);
    }
    bail!("the program list does not end")
}

#[test]
fn sigkill_leaves_no_program_of_netladder_loaded_and_a_new_start_works() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = lo_only("rel-kill");
    let w = watch_netns(&ns);
    let held = programs_held_by(w.pid());
    assert!(
        held.len() >= 5,
        "netladder holds its programs while it runs: {held:?}"
    );
    w.kill().unwrap();
    // The kernel releases programs once their last descriptor and link are gone; that may
    // take an RCU grace period, so look for a little while.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: BTreeSet<u32> = loaded_programs()
            .unwrap()
            .intersection(&held)
            .copied()
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        left.is_empty(),
        "programs of the killed netladder still loaded: {left:?}"
    );

    let w = watch_netns(&ns);
    fails_with(
        connect(Some(&ns), "127.0.0.1:9", &[]).unwrap(),
        "ECONNREFUSED",
    );
    let ev = expect_single_failure(
        &w,
        |e| e["dst"] == "127.0.0.1:9",
        Duration::from_millis(500),
    )
    .expect("the new netladder reports");
    assert_eq!(ev["code"], "021", "{ev:#}");
    w.stop().unwrap();
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
    if lost == 0 {
        assert_eq!(
            reported, refused,
            "nothing lost, so every refused connect is reported once: {stats}"
        );
    } else {
        // A lost kernel event can hide at most one failure, and nothing is reported twice.
        assert!(
            reported < refused && reported + lost >= refused,
            "reported {reported} + lost {lost} must account for {refused} refused: {stats}"
        );
    }
}
