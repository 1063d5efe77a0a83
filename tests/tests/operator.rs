//! Issue-9 scenarios: what an operator plugs netladder into. Prometheus metrics scraped over HTTP
//! after real failures, the JSON Lines file across a rotation, journald priority prefixes, a
//! container and a pod named from a real cgroup, the `--container`/`--pod` filters, and the
//! systemd unit's capability set (netladder run with exactly those capabilities).
//! Root only (NL-SKIP otherwise); every namespace, cgroup and process is removed on drop.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use netladder_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_millis(700);
/// The alert rules shipped for Prometheus: every metric they use must be exported.
const ALERTS: &str = include_str!("../../deploy/prometheus/netladder-alerts.yml");
/// The systemd unit: its CapabilityBoundingSet is what netladder gets when run as a service.
const UNIT: &str = include_str!("../../packaging/netladder.service");

/// A port nothing listens on right now, on 127.0.0.1 of this (the host's) namespace.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET /metrics` over plain HTTP/1.0; the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn expect_sample(text: &str, series: &str, want: f64) {
    assert_eq!(sample(text, series), Some(want), "{series} in:\n{text}");
}

/// A refused connection to 127.0.0.1:`port` inside `ns` (nothing listens there).
fn refuse(ns: &Netns, port: u16) {
    fails_with(
        connect(Some(ns), &format!("127.0.0.1:{port}"), &[]).unwrap(),
        "ECONNREFUSED",
    );
}

fn to_port(port: u16) -> impl Fn(&Value) -> bool {
    let dst = format!("127.0.0.1:{port}");
    move |e: &Value| e["dst"] == dst.as_str()
}

#[test]
fn metrics_count_real_failures_by_code_netns_comm_and_chain() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("metrics").unwrap();
    ns.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    ns.nft("table inet nltest {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 9023 drop\n }\n}\n")
        .unwrap();
    let mport = free_port();
    let netns = ns.inode().to_string();
    let w = Watch::start(&["--netns", &netns, &format!("--metrics=127.0.0.1:{mport}")]).unwrap();

    // Before any failure: netladder's own health is there, no failure is counted.
    let text = scrape(mport);
    assert!(
        sample(&text, "netladder_hooks_attached").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    expect_sample(
        &text,
        r#"netladder_hook{program="inet_sock_set_state",status="attached"}"#,
        1.0,
    );
    assert!(!text.contains("netladder_failures_total{"), "{text}");

    // Two refused connections (one second apart, so each is its own line) and one timeout.
    refuse(&ns, 9021);
    let refused = w.wait_for(to_port(9021), FAILURE_TIMEOUT).unwrap();
    sleep(Duration::from_millis(1100));
    refuse(&ns, 9022);
    w.wait_for(to_port(9022), FAILURE_TIMEOUT).unwrap();
    fails_with(
        connect(Some(&ns), "127.0.0.1:9023", &[]).unwrap(),
        "ETIMEDOUT",
    );
    let timeout = w.wait_for(to_port(9023), FAILURE_TIMEOUT).unwrap();
    sleep(SETTLE);

    let text = scrape(mport);
    let rung = |ev: &Value| {
        format!(
            r#"netladder_failures_total{{code="{}",layer="{}",cause="{}"}}"#,
            ev["code"].as_str().unwrap(),
            ev["layer"].as_str().unwrap(),
            ev["cause"].as_str().unwrap()
        )
    };
    assert_eq!(refused["code"], "021");
    assert_eq!(timeout["code"], "023");
    expect_sample(&text, &rung(&refused), 2.0);
    expect_sample(&text, &rung(&timeout), 1.0);
    expect_sample(
        &text,
        &format!(r#"netladder_failures_by_netns_total{{code="021",netns="{netns}"}}"#),
        2.0,
    );
    expect_sample(
        &text,
        &format!(r#"netladder_failures_by_netns_total{{code="023",netns="{netns}"}}"#),
        1.0,
    );
    expect_sample(
        &text,
        r#"netladder_failures_by_comm_total{code="021",comm="nl-peer"}"#,
        2.0,
    );
    expect_sample(
        &text,
        r#"netladder_failures_by_comm_total{code="023",comm="nl-peer"}"#,
        1.0,
    );
    // The chain, when this kernel let netladder name the rule (drop reasons: 5.17+).
    if let Some(fw) = timeout.get("firewall") {
        expect_sample(
            &text,
            &format!(
                r#"netladder_firewall_failures_total{{code="023",backend="{}",family="inet",table="nltest",chain="input"}}"#,
                fw["backend"].as_str().unwrap()
            ),
            1.0,
        );
    } else {
        skip("no firewall rule named on this kernel: the chain counter is not checked");
    }
    assert!(
        sample(&text, "netladder_kernel_events_total").unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    expect_sample(&text, "netladder_lost_events_total", 0.0);
    // Every metric the shipped alert rules use is exported (a family without any sample is
    // not printed: the firewall one has none where no rule can be named).
    for name in ALERTS
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("netladder_"))
    {
        let family = name.trim_end_matches("_total");
        if family == "netladder_firewall_failures" && timeout.get("firewall").is_none() {
            continue;
        }
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the alert rules use {name}, which netladder does not export:\n{text}"
        );
    }
    // A scrape of anything else is a 404, and the event lines are unchanged by --metrics.
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.write_all(b"GET /nope HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains(" 404"),
        "{resp}"
    );
    let (events, _) = w.stop().unwrap();
    assert_eq!(events.iter().filter(|e| e["type"] == "failure").count(), 3);
}

/// Waits until `path` holds a failure line matching `pred`; returns every JSON line of it.
fn wait_in_file(path: &Path, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + FAILURE_TIMEOUT;
    loop {
        let lines: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(schema::parse_record)
            .collect();
        if lines.iter().any(|e| e["type"] == "failure" && pred(e)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no such failure in {}: {lines:#?}",
            path.display()
        );
        sleep(Duration::from_millis(100));
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("nltest-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn output_file_is_reopened_after_rotation_and_on_sighup() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("rotate").unwrap();
    let dir = TempDir::new("rotate");
    let file = dir.0.join("netladder.jsonl");
    let w = Watch::start(&[
        "--netns",
        &ns.inode().to_string(),
        "--output",
        file.to_str().unwrap(),
    ])
    .unwrap();
    refuse(&ns, 9031);
    let first = wait_in_file(&file, to_port(9031));
    assert_eq!(
        first[0]["type"], "hooks",
        "the file starts with the hooks line"
    );
    // logrotate's default: rename, and the writer must follow the name, not the old file.
    let rotated = dir.0.join("netladder.jsonl.1");
    std::fs::rename(&file, &rotated).unwrap();
    refuse(&ns, 9032);
    let after = wait_in_file(&file, to_port(9032));
    assert_eq!(
        after.len(),
        1,
        "only the new failure in the new file: {after:#?}"
    );
    // SIGHUP (`systemctl reload`-style) reopens, and does not end netladder.
    let pid = w.pid() as libc::pid_t;
    // SAFETY: plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    sleep(Duration::from_millis(300));
    refuse(&ns, 9033);
    wait_in_file(&file, to_port(9033));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("127.0.0.1:9031") && !old.contains("127.0.0.1:9032"),
        "{old}"
    );
    let (stdout_events, _) = w.stop().unwrap();
    assert!(
        stdout_events.iter().all(|e| e["type"] != "failure"),
        "nothing on stdout with --output: {stdout_events:#?}"
    );
    let last = std::fs::read_to_string(&file).unwrap();
    assert!(
        last.lines()
            .last()
            .unwrap_or("")
            .contains(r#""final":true"#),
        "{last}"
    );
}

/// A child process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn journal_mode_prefixes_priorities_when_stdout_is_the_journal() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("journal").unwrap();
    let dir = TempDir::new("journal");
    // systemd's JOURNAL_STREAM names the device and inode of the stream it gave the service;
    // a file stands in for that stream here.
    let out = dir.0.join("stdout");
    let stdout = std::fs::File::create(&out).unwrap();
    let meta = stdout.metadata().unwrap();
    let err = dir.0.join("stderr");
    let ready = dir.0.join("ready");
    let child = Command::new(netladder_bin())
        .args(["watch", "--netns", &ns.inode().to_string(), "--ready-file"])
        .arg(&ready)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "exited: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        sleep(Duration::from_millis(50));
    }
    refuse(&ns, 9041);
    let deadline = Instant::now() + FAILURE_TIMEOUT;
    let line = loop {
        let text = std::fs::read_to_string(&out).unwrap();
        if let Some(l) = text.lines().find(|l| l.contains("127.0.0.1:9041")) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line for the failure: {text:?}"
        );
        sleep(Duration::from_millis(100));
    };
    assert!(line.starts_with("<4>#021 refused  nl-peer["), "{line}");
    assert!(!line.contains('\x1b'), "no colour: {line:?}");
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let notes = std::fs::read_to_string(&err).unwrap();
    // stderr is not the journal stream here; its notes follow the stdout decision all the same.
    assert!(
        notes
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("<6>netladder: watching"),
        "{notes}"
    );
    assert!(
        notes
            .lines()
            .any(|l| l.starts_with("<6>netladder: ") && l.contains("failures reported")),
        "{notes}"
    );
}

/// A cgroup v2 directory tree made for a test, removed (after its processes) on drop.
struct Cgroup {
    top: PathBuf,
    leaf: PathBuf,
}

impl Cgroup {
    /// `rel` under a top directory of our own, in the cgroup2 mount; None when this machine has
    /// no writable cgroup2 mount.
    fn new(rel: &str) -> Option<Cgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let root = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.starts_with("cgroup2 "))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })?;
        let top = root.join(format!("nltest-{}.slice", std::process::id()));
        let leaf = top.join(rel);
        std::fs::create_dir_all(&leaf).ok()?;
        Some(Cgroup { top, leaf })
    }

    fn procs(&self) -> PathBuf {
        self.leaf.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for pid in std::fs::read_to_string(self.procs())
            .unwrap_or_default()
            .lines()
        {
            if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
                // SAFETY: plain syscall; our own test process left in the cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        sleep(Duration::from_millis(100));
        let mut dir = self.leaf.clone();
        while dir.starts_with(&self.top) {
            let _ = std::fs::remove_dir(&dir);
            if !dir.pop() {
                break;
            }
        }
    }
}

const CONTAINER_ID: &str = "3f4e1b2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
const POD_UID: &str = "6e7520b1-f6e3-45bd-8673-1d64d102fedf";

/// Runs `nl-peer connect ADDR` in `ns`, moved into `cgroup` first.
fn connect_in_cgroup(ns: &Netns, cgroup: &Cgroup, addr: &str) -> String {
    let out = ns
        .command("sh")
        .args(["-c", "echo $$ > \"$1\" && exec \"$2\" connect \"$3\"", "sh"])
        .arg(cgroup.procs())
        .arg(peer_bin())
        .arg(addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn container_and_pod_come_from_the_cgroup_and_filter() {
    let Some(_one) = root_serial() else {
        return;
    };
    // A kubelet (systemd driver) layout with a containerd container, below a directory of ours.
    let rel = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        POD_UID.replace('-', "_")
    );
    let Some(cg) = Cgroup::new(&rel) else {
        skip("no writable cgroup2 mount on this machine");
        return;
    };
    let ns = Netns::new("cgroup").unwrap();
    let mport = free_port();
    let w = Watch::start(&[
        "--netns",
        &ns.inode().to_string(),
        "--container",
        &CONTAINER_ID[..12],
        &format!("--metrics=127.0.0.1:{mport}"),
    ])
    .unwrap();
    // First a failure from outside the container: the filter must hide it.
    refuse(&ns, 9051);
    let said = connect_in_cgroup(&ns, &cg, "127.0.0.1:9052");
    assert!(said.contains("ECONNREFUSED"), "{said}");
    let ev = expect_single_failure(&w, to_port(9052), SETTLE).unwrap();
    assert_eq!(ev["comm"], "nl-peer");
    assert_eq!(ev["container"]["runtime"], "containerd", "{ev:#}");
    assert_eq!(ev["container"]["id"], CONTAINER_ID, "{ev:#}");
    assert_eq!(ev["pod"]["uid"], POD_UID, "{ev:#}");
    assert_eq!(ev["pod"]["qos"], "besteffort", "{ev:#}");
    assert!(
        ev["cgroup_path"].as_str().unwrap().ends_with(&rel),
        "{ev:#}"
    );
    let text = scrape(mport);
    expect_sample(
        &text,
        &format!(
            r#"netladder_failures_by_container_total{{code="021",runtime="containerd",container="{}"}}"#,
            &CONTAINER_ID[..12]
        ),
        1.0,
    );
    expect_sample(
        &text,
        &format!(r#"netladder_failures_by_pod_total{{code="021",namespace="",pod="{POD_UID}"}}"#),
        1.0,
    );
    let (events, _) = w.stop().unwrap();
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "failure").collect();
    assert_eq!(
        failures.len(),
        1,
        "the failure outside the container is filtered: {failures:#?}"
    );

    // --pod by UID sees the same; and without a filter, a host process has no container.
    let w = Watch::start(&["--netns", &ns.inode().to_string(), "--pod", POD_UID]).unwrap();
    refuse(&ns, 9053);
    connect_in_cgroup(&ns, &cg, "127.0.0.1:9054");
    expect_single_failure(&w, to_port(9054), SETTLE).unwrap();
    let (events, _) = w.stop().unwrap();
    assert!(!events.iter().any(to_port(9053)), "{events:#?}");
    let w = Watch::start(&["--netns", &ns.inode().to_string()]).unwrap();
    refuse(&ns, 9055);
    let ev = expect_single_failure(&w, to_port(9055), SETTLE).unwrap();
    // The client ran in this test's own cgroup.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_owned();
    assert_eq!(ev["cgroup_path"], own.as_str(), "{ev:#}");
    let in_a_container = own
        .split(['/', '-', '.'])
        .any(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()));
    if !in_a_container {
        assert!(ev["container"].is_null() && ev["pod"].is_null(), "{ev:#}");
    }
}

/// The capabilities the unit keeps, as setpriv names them ("bpf,perfmon,...").
fn unit_capabilities() -> String {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn the_units_capabilities_are_enough_for_the_full_reading() {
    let Some(_one) = root_serial() else {
        return;
    };
    // The util-linux one, by path: a busybox shell would run its own applet for a bare name.
    let setpriv = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("setpriv"))
        .find(|p| p.is_file() && std::fs::read_link(p).is_err())
        .unwrap_or_else(|| "setpriv".into());
    let usable = Command::new(&setpriv)
        .args(["--bounding-set=-all,+bpf", "--", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        skip("no setpriv (util-linux) that can narrow the bounding set");
        return;
    }
    let caps = unit_capabilities();
    assert_eq!(
        caps,
        "bpf,perfmon,net_admin,net_raw,sys_admin,sys_ptrace,dac_read_search,sys_resource"
    );
    // A wrapper that runs netladder as root with only the unit's capabilities, as systemd would
    // (CapabilityBoundingSet, NoNewPrivileges).
    let dir = TempDir::new("caps");
    let wrapper = dir.0.join("netladder-with-unit-caps");
    let bounding: String = caps.split(',').map(|c| format!(",+{c}")).collect();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --bounding-set=-all{bounding} --inh-caps=-all --no-new-privs -- {} \"$@\"\n",
            setpriv.display(),
            netladder_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    // A client and a server namespace: the listener is found in the server's namespace (setns,
    // sock_diag, /proc of its owner), the firewall rule read over netlink.
    let h = TwoHosts::new("caps", &["10.231.9.1/24"], &["10.231.9.2/24"]).unwrap();
    h.client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    let _srv = Peer::listen(Some(&h.server), "127.0.0.1:9061", &[]).unwrap();
    h.client
        .nft("table inet nltest {\n chain output {\n  type filter hook output priority 0;\n  tcp dport 9062 counter drop\n }\n}\n")
        .unwrap();
    let w = Watch::start_bin(&wrapper, &["--netns", &h.client.inode().to_string()]).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let bnd = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .to_owned();
    assert_ne!(
        bnd.trim_end(),
        "CapBnd:\t000001ffffffffff",
        "the bounding set was narrowed"
    );

    fails_with(
        connect(Some(&h.client), "10.231.9.2:9061", &[]).unwrap(),
        "ECONNREFUSED",
    );
    let refused = expect_single_failure(&w, |e| e["dst"] == "10.231.9.2:9061", SETTLE).unwrap();
    fails_with(
        connect(Some(&h.client), "10.231.9.2:9062", &[]).unwrap(),
        "ETIMEDOUT",
    );
    let dropped = expect_single_failure(&w, |e| e["dst"] == "10.231.9.2:9062", SETTLE).unwrap();
    let (_, stderr) = w.stop().unwrap();
    assert!(
        !stderr.to_ascii_lowercase().contains("permission denied")
            && !stderr.contains("Operation not permitted"),
        "nothing refused for want of a capability: {stderr}"
    );
    if hook_attached_in(&refused, &dropped) {
        // With drop reasons: the listener on loopback only, and the rule named.
        assert_eq!(refused["cause"], "no_listener", "{refused:#}");
        summary_has(&refused, "127.0.0.1:9061");
        assert_eq!(dropped["firewall"]["table"], "nltest", "{dropped:#}");
        assert_eq!(dropped["firewall"]["chain"], "output", "{dropped:#}");
    } else {
        skip("no drop reasons on this kernel: the listener and rule readings are not checked");
    }
}

/// Whether these events carry the readings that need drop reasons (not on 5.10).
fn hook_attached_in(refused: &Value, dropped: &Value) -> bool {
    !evidence_has(refused, "degraded: no drop reasons")
        && !evidence_has(dropped, "degraded: no drop reasons")
}

/// Exit status 1 and exactly one line on stderr containing `needle` (no root needed: these are
/// checked before anything is loaded).
fn one_line_error(args: &[&str], needle: &str) {
    let out = Command::new(netladder_bin()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line on stderr, got: {stderr}"
    );
    assert!(
        lines[0].contains(needle),
        "{args:?}: {needle:?} not in: {stderr}"
    );
}

#[test]
fn bad_operator_flags_are_one_line_errors() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    one_line_error(
        &["watch", &format!("--metrics=127.0.0.1:{port}")],
        &format!("--metrics 127.0.0.1:{port}: cannot listen there"),
    );
    one_line_error(
        &["watch", "--output", "/nonexistent-nl-dir/events.jsonl"],
        "--output /nonexistent-nl-dir/events.jsonl: cannot open it for appending",
    );
    one_line_error(
        &["watch", "--container", "0bc5"],
        "at least 12 digits of its id",
    );
    one_line_error(
        &["watch", "--pod", "shop/"],
        "give NAME, NAMESPACE/NAME or the pod UID",
    );
    one_line_error(
        &["watch", "--metrics-label-limit", "0"],
        "--metrics-label-limit must be at least 1",
    );
    // Malformed values are clap's usage errors (status 2), like every other flag's.
    let out = Command::new(netladder_bin())
        .args(["watch", "--metrics=localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an address"));
    let out = Command::new(netladder_bin())
        .args(["watch", "--json", "--journal"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--journal and --json exclude each other"
    );
}
