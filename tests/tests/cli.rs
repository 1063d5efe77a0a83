//! The binary's behaviour at its edges: bad input, missing privileges or BTF, and leaving nothing
//! attached behind when it stops or is killed.
use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output},
    sync::Mutex,
    thread::sleep,
    time::{Duration, Instant},
};

use netladder_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn netladder(args: &[&str]) -> Command {
    let mut c = Command::new(netladder_bin());
    c.args(args);
    c
}

/// Exit status non-zero and exactly one line on stderr containing `needle`.
fn one_line_error(out: Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_flag_values_are_one_line_errors() {
    let out = netladder(&["watch", "--duration", "0"]).output().unwrap();
    one_line_error(out, "--duration must be a positive number");
    let out = netladder(&["watch", "--code", "031"]).output().unwrap();
    one_line_error(out, "unknown ladder code");
    let out = netladder(&["watch", "--netns", "nl-no-such-namespace"])
        .output()
        .unwrap();
    one_line_error(
        out,
        "no network namespace at /run/netns/nl-no-such-namespace",
    );
    let out = netladder(&["watch", "--skip-hook", "nope"])
        .output()
        .unwrap();
    one_line_error(out, "--skip-hook nope: no such program");
    let out = netladder(&["watch", "--skip-hook", "inet_sock_set_state"])
        .output()
        .unwrap();
    one_line_error(out, "cannot be skipped");
    let out = netladder(&["watch", "--port", "http"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = netladder(&["watch", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn not_root_is_a_one_line_error() {
    if !require_root() {
        return;
    }
    // Drop to nobody for the child only.
    let out = netladder(&["watch"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    one_line_error(out, "needs root");
}

#[test]
fn missing_btf_is_a_one_line_error() {
    if !require_root() {
        return;
    }
    let out = netladder(&["watch"])
        .env("NETLADDER_BTF", "/nonexistent/vmlinux")
        .output()
        .unwrap();
    one_line_error(out, "no kernel BTF at /nonexistent/vmlinux");
}

#[test]
fn hooks_reports_every_program() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = netladder(&["hooks", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hooks = v["hooks"].as_array().unwrap();
    let status = |p: &str| {
        hooks
            .iter()
            .find(|h| h["program"] == p)
            .map(|h| h["status"].clone())
    };
    assert_eq!(status("inet_sock_set_state").unwrap(), "attached", "{v:#}");
    for h in hooks {
        let s = h["status"].as_str().unwrap();
        assert!(["attached", "refused", "skipped"].contains(&s), "{h}");
        if s != "attached" {
            assert!(
                h["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "a reason for {h}"
            );
            let lost = h["without"].as_str().unwrap();
            assert!(
                v["degraded"].as_array().unwrap().iter().any(|d| d == lost),
                "{v:#}"
            );
        }
    }
    let off = netladder(&["hooks", "--json", "--no-optional-hooks"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&off.stdout).unwrap();
    for h in v["hooks"].as_array().unwrap() {
        if h["optional"] == true {
            assert_eq!(h["status"], "skipped", "{h}");
            assert_eq!(h["reason"], "disabled by --no-optional-hooks");
        }
    }
}

/// Program names netladder loads. bpftool shows the full name from BTF where it can, else the
/// kernel's first 15 bytes.
const OURS: [&str; 6] = [
    "inet_sock_set_state",
    "tcp_receive_reset",
    "tcp_retransmit_skb",
    "sys_enter_connect",
    "sys_exit_connect",
    "kfree_skb",
];

fn is_ours(name: &str) -> bool {
    OURS.iter()
        .any(|o| *o == name || (name.len() == 15 && o.starts_with(name)))
}

/// How many loaded BPF programs carry one of our names. Other tools' programs with the same names
/// are part of the baseline, never touched.
fn loaded_with_our_names() -> Option<usize> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter(|p| p["name"].as_str().is_some_and(is_ours))
            .count(),
    )
}

fn wait_until(pred: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if pred() {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn stopping_or_killing_leaves_nothing_attached() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(baseline) = loaded_with_our_names() else {
        skip("bpftool is not installed");
        return;
    };
    let ns = Netns::new("detach").unwrap();
    let args = ["--netns".to_string(), ns.inode().to_string()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let w = Watch::start(&args).unwrap();
    let attached = loaded_with_our_names().unwrap();
    assert!(
        attached >= baseline + 5,
        "our programs are loaded: {attached} vs {baseline}"
    );
    let (events, stderr) = w.stop().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "stats" && e["final"] == true && e["lost"] == 0),
        "a final stats line: {events:?}"
    );
    assert!(stderr.contains("0 lost"), "{stderr}");
    assert!(
        wait_until(|| loaded_with_our_names() == Some(baseline)),
        "detached after SIGINT"
    );

    // SIGKILL: the kernel releases everything with the last file descriptor.
    let w = Watch::start(&args).unwrap();
    assert!(loaded_with_our_names().unwrap() >= baseline + 5);
    drop(w);
    assert!(
        wait_until(|| loaded_with_our_names() == Some(baseline)),
        "detached after SIGKILL"
    );
}
