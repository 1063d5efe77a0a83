//! Issue-7 scenarios: `netladder diagnose` run for real inside a throwaway client namespace,
//! against failures built in throwaway namespaces (10.240.x.x addresses only), asserting the
//! first failing rung, the ladder code and the exit status; and `netladder explain`.
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use netladder_tests::tls::{make_certs, openssl, tls_server, Leaf, Running, TempDir};
use netladder_tests::*;
use serde_json::Value;

/// Exit statuses documented in `netladder diagnose --help` and the README.
const REACHABLE: i32 = 0;
const BAD_INPUT: i32 = 1;
const RUNG_FAILED: i32 = 3;

/// Runs `cmd` (a `netladder diagnose --json ...` command) and returns its exit status and report.
fn report_of(cmd: &mut Command) -> (i32, Value) {
    let out = cmd.stdin(Stdio::null()).output().expect("run netladder");
    let status = out.status.code().expect("netladder exited normally");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "diagnose --json printed no JSON document ({e}): status {status}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (status, report)
}

/// `netladder diagnose --json ARGS` in `ns`.
fn diagnose(ns: &Netns, args: &[&str]) -> (i32, Value) {
    report_of(
        ns.command(netladder_bin())
            .arg("diagnose")
            .arg("--json")
            .args(args),
    )
}

/// The status of each rung, in ladder order.
fn statuses(r: &Value) -> Vec<(String, String)> {
    r["rungs"]
        .as_array()
        .expect("rungs")
        .iter()
        .map(|c| {
            (
                c["rung"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Asserts: exit 3, verdict with `code` at `rung` (the first failed one), every rung below it
/// passed (or warned), every rung above it skipped except application when it explains.
fn fails_at(status: i32, r: &Value, rung: &str, code: &str) -> Value {
    assert_eq!(status, RUNG_FAILED, "{r:#}");
    let v = &r["verdict"];
    assert_eq!(v["reachable"], false, "{r:#}");
    assert_eq!(
        (v["code"].as_str(), v["layer"].as_str()),
        (Some(code), Some(rung)),
        "{r:#}"
    );
    assert_eq!(r["exit_code"], RUNG_FAILED, "{r:#}");
    let s = statuses(r);
    let first_failed = s
        .iter()
        .position(|(_, st)| st == "failed")
        .expect("a failed rung");
    assert_eq!(s[first_failed].0, rung, "first failed rung: {s:?}");
    for (name, st) in &s[..first_failed] {
        assert!(
            st == "passed" || st == "warning" || (name == "dns" && st == "skipped"),
            "{name} below the failure should have passed: {s:?}"
        );
    }
    assert!(!v["next"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(!v["summary"].as_str().unwrap().is_empty(), "{r:#}");
    v.clone()
}

/// Whether this kernel gives drop reasons (kfree_skb attaches; not on 5.10). Without them a
/// local firewall drop or a missing listener cannot be told apart from the peer's doing, and
/// diagnose reads them as `watch` does then.
fn drop_reasons() -> bool {
    let out = Command::new(netladder_bin())
        .args(["hooks", "--json"])
        .output()
        .expect("netladder hooks runs");
    let v = schema::parse_record(&String::from_utf8_lossy(&out.stdout));
    v["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .any(|h| h["program"] == "kfree_skb" && h["status"] == "attached")
}

/// Without drop reasons: the failure is still found and coded `code`, as the peer's doing;
/// the test body that needs the kernel's drop evidence is skipped.
fn degraded_reading(status: i32, r: &Value, code: &str) {
    assert_eq!(status, RUNG_FAILED, "{r:#}");
    assert_eq!(r["verdict"]["code"], code, "{r:#}");
    assert_eq!(r["verdict"]["reachable"], false, "{r:#}");
    skip("no drop reasons on this kernel: the local cause is not visible, only its effect");
}

fn summary_says(v: &Value, needle: &str) {
    let s = v["summary"].as_str().unwrap_or("");
    assert!(s.contains(needle), "summary should say {needle:?}: {v:#}");
}

fn two_hosts(tag: &str, net: u8) -> TwoHosts {
    TwoHosts::new(
        tag,
        &[&format!("10.240.{net}.1/24")],
        &[&format!("10.240.{net}.2/24")],
    )
    .expect("two namespaces joined by a veth")
}

/// The interface name of the veth end in `ns` (the one that is not lo).
fn veth_in(ns: &Netns) -> String {
    let out = ns.ip(&["-o", "link", "show"]).unwrap();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_owned())
        .find(|n| n != "lo")
        .expect("a veth in the namespace")
}

#[test]
fn reachable_target_passes_every_rung_and_exits_0() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-ok", 1);
    let _peer = Peer::listen(Some(&h.server), "10.240.1.2:9001", &[]).unwrap();
    let (status, r) = diagnose(&h.client, &["10.240.1.2:9001"]);
    assert_eq!(status, REACHABLE, "{r:#}");
    assert_eq!(r["verdict"]["reachable"], true, "{r:#}");
    let s = statuses(&r);
    let want: Vec<(String, String)> = [
        ("link", "passed"),
        ("address", "passed"),
        ("route", "passed"),
        ("firewall", "passed"),
        ("dns", "skipped"),
        ("application", "passed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(s, want, "{r:#}");
    let route = &r["rungs"][2];
    assert!(
        route["summary"]
            .as_str()
            .unwrap()
            .contains("directly connected"),
        "{r:#}"
    );
}

#[test]
fn no_listener_is_021_at_the_application_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-refused", 2);
    let (status, r) = diagnose(&h.client, &["10.240.2.2:9002"]);
    if !drop_reasons() {
        return degraded_reading(status, &r, "021");
    }
    let v = fails_at(status, &r, "application", "021");
    assert_eq!(v["cause"], "no_listener", "{r:#}");
    summary_says(&v, "no listener on port 9002");
    // The kernel's own failure, as `watch` reports it, with its evidence.
    assert_eq!(v["failure"]["type"], "failure", "{r:#}");
    assert_eq!(v["failure"]["errno"], "ECONNREFUSED", "{r:#}");
}

#[test]
fn link_down_is_026_at_the_link_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-down", 3);
    let dev = veth_in(&h.client);
    h.client.ip(&["link", "set", &dev, "down"]).unwrap();
    let (status, r) = diagnose(&h.client, &["10.240.3.2:80"]);
    let v = fails_at(status, &r, "link", "026");
    summary_says(&v, &format!("interface {dev} is down"));
    assert_eq!(r["rungs"][5]["status"], "skipped", "{r:#}");
}

#[test]
fn carrier_down_is_026_at_the_link_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-carrier", 13);
    // Our end stays up; the far end goes down, so ours loses its carrier (NO-CARRIER).
    let far = veth_in(&h.server);
    h.server.ip(&["link", "set", &far, "down"]).unwrap();
    let dev = veth_in(&h.client);
    let (status, r) = diagnose(&h.client, &["10.240.13.2:80"]);
    let v = fails_at(status, &r, "link", "026");
    assert_eq!(v["cause"], "link_down", "{r:#}");
    summary_says(&v, &format!("interface {dev} is up but without carrier"));
    let evidence = v["evidence"].to_string();
    assert!(
        evidence.contains(&format!("egress {dev}: up, no carrier")),
        "{r:#}"
    );
    assert_eq!(r["rungs"][5]["status"], "skipped", "{r:#}");
}

#[test]
fn exhausted_local_ports_are_028_at_the_address_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-ports", 12);
    // Two local ports; a TIME_WAIT port is never reused toward a remote host.
    h.client
        .sysctl("net.ipv4.ip_local_port_range", "40000 40001")
        .unwrap();
    h.client.sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
    let _srv = Peer::listen(Some(&h.server), "10.240.12.2:9012", &["--wait-peer-close"]).unwrap();
    // One port in TIME_WAIT (the client closes first), one held by an open connection.
    let out = connect(Some(&h.client), "10.240.12.2:9012", &[]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let _held = Running(
        h.client
            .command(peer_bin())
            .args(["connect", "10.240.12.2:9012", "--hold", "120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nl-peer connect --hold"),
    );
    // Both in place before the diagnosis: the held connection open, and the first one's close
    // finished (the server closes its end once it reads the client's FIN, which a busy machine
    // may take a while to do; until then the port is in FIN_WAIT, not TIME_WAIT).
    // (30 s: CI runs this beside two emulated guests and clippy, where 10 s once ran out.)
    let until = Instant::now() + Duration::from_secs(30);
    for (state, what) in [
        ("established", "the held connection did not open"),
        ("time-wait", "the first connection did not reach TIME_WAIT"),
    ] {
        while !h
            .client
            .sh(&format!("ss -Htn state {state} dst 10.240.12.2:9012"))
            .is_ok_and(|o| !o.trim().is_empty())
        {
            // What the client's sockets toward the server were when the wait ran out.
            assert!(
                Instant::now() < until,
                "{what}; the client's sockets: {:?}",
                h.client.sh("ss -Htna dst 10.240.12.2:9012")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (status, r) = diagnose(&h.client, &["10.240.12.2:9012"]);
    let v = fails_at(status, &r, "address", "028");
    assert_eq!(v["cause"], "ports_exhausted", "{r:#}");
    summary_says(&v, "no free local port toward 10.240.12.2:9012");
    summary_says(&v, "ip_local_port_range 40000-40001 has 2 ports");
    summary_says(&v, "1 connection open and 1 in TIME_WAIT");
    summary_says(&v, "tcp_tw_reuse=0");
    assert_eq!(v["failure"]["errno"], "EADDRNOTAVAIL", "{r:#}");
    // The address rung saw it before the connection, from the same look-ups.
    let address = r["rungs"][1]["evidence"].to_string();
    assert!(
        address.contains(
            "local ports: ip_local_port_range 40000-40001 (2 ports); toward 10.240.12.2:9012 \
             1 open and 1 in TIME_WAIT"
        ),
        "{r:#}"
    );
    assert!(
        address.contains("before the connection") && address.contains("no local port is left"),
        "{r:#}"
    );
    assert_eq!(r["rungs"][5]["status"], "failed", "{r:#}");
}

#[test]
fn no_address_is_026_at_the_address_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let client = Netns::new("dg-noaddr-c").unwrap();
    let server = Netns::new("dg-noaddr-s").unwrap();
    veth(&client, &[], &server, &["10.240.4.2/24"]).unwrap();
    let (status, r) = diagnose(&client, &["10.240.4.2:80"]);
    let v = fails_at(status, &r, "address", "026");
    summary_says(&v, "no interface has an IPv4 address");
}

#[test]
fn no_route_is_026_at_the_route_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-noroute", 5);
    let (status, r) = diagnose(&h.client, &["10.240.99.1:80"]);
    let v = fails_at(status, &r, "route", "026");
    summary_says(&v, "no default route");
}

#[test]
fn unreachable_route_is_022_at_the_route_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-unreach", 6);
    h.client
        .ip(&["route", "add", "unreachable", "10.240.66.0/24"])
        .unwrap();
    let (status, r) = diagnose(&h.client, &["10.240.66.1:80"]);
    let v = fails_at(status, &r, "route", "022");
    assert_eq!(v["cause"], "host_unreachable", "{r:#}");
    summary_says(&v, "`unreachable` route 10.240.66.0/24");
}

#[test]
fn neighbour_failure_is_029_at_the_link_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-arp", 7);
    // An address on the link's subnet that nobody holds: ARP fails (about 3 s).
    let (status, r) = diagnose(&h.client, &["--timeout", "10", "10.240.7.99:80"]);
    let v = fails_at(status, &r, "link", "029");
    assert_eq!(v["cause"], "neighbour_failed", "{r:#}");
    summary_says(&v, "10.240.7.99");
    assert_eq!(r["rungs"][5]["status"], "failed", "{r:#}");
}

#[test]
fn firewall_drop_on_the_peer_is_023_with_the_rule_named() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-drop", 8);
    let _peer = Peer::listen(Some(&h.server), "10.240.8.2:9008", &[]).unwrap();
    h.server
        .nft(
            "table inet nltest {\n chain input {\n  type filter hook input priority 0; policy accept;\n  \
             tcp dport 9008 counter drop\n }\n}\n",
        )
        .unwrap();
    let (status, r) = diagnose(&h.client, &["--timeout", "2", "10.240.8.2:9008"]);
    if !drop_reasons() {
        return degraded_reading(status, &r, "023");
    }
    let v = fails_at(status, &r, "firewall", "023");
    assert_eq!(v["cause"], "firewall_drop", "{r:#}");
    let fw = &v["firewall"];
    assert_eq!(
        (
            fw["table"].as_str(),
            fw["chain"].as_str(),
            fw["hook"].as_str()
        ),
        (Some("nltest"), Some("input"), Some("input")),
        "{r:#}"
    );
    assert!(
        fw["text"].as_str().unwrap().contains("tcp dport 9008"),
        "{r:#}"
    );
    assert_eq!(r["rungs"][5]["status"], "failed", "{r:#}");
}

#[test]
fn firewall_reject_on_the_client_is_021_at_the_firewall_rung() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-reject", 9);
    let _peer = Peer::listen(Some(&h.server), "10.240.9.2:9009", &[]).unwrap();
    h.client
        .nft(
            "table inet nltest {\n chain output {\n  type filter hook output priority 0; policy accept;\n  \
             tcp dport 9009 counter reject with tcp reset\n }\n}\n",
        )
        .unwrap();
    let (status, r) = diagnose(&h.client, &["10.240.9.2:9009"]);
    if !drop_reasons() {
        return degraded_reading(status, &r, "021");
    }
    let v = fails_at(status, &r, "firewall", "021");
    assert_eq!(v["cause"], "firewall_reject_rst", "{r:#}");
    assert_eq!(v["firewall"]["chain"], "output", "{r:#}");
    // The static reading saw the rule before the connection did.
    let fw_rung = r["rungs"][3]["evidence"].to_string();
    assert!(fw_rung.contains("before the connection"), "{r:#}");
}

/// A dnsmasq in `ns` answering for nl.test (good.nl.test -> `addr`, anything else NXDOMAIN).
fn dnsmasq(ns: &Netns, listen: &str, addr: &str, dir: &Path) -> Running {
    dnsmasq_with(ns, listen, addr, dir, &[])
}

/// `dnsmasq` with more options (e.g. `--host-record`).
fn dnsmasq_with(ns: &Netns, listen: &str, addr: &str, dir: &Path, extra: &[&str]) -> Running {
    let child = ns
        .command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            // No unprivileged user to switch to in the test VMs (and none needed here).
            "--user=root",
            "--group=root",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            &format!("--listen-address={listen}"),
            "--local=/nl.test/",
            &format!("--address=/good.nl.test/{addr}"),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq (apt-get install dnsmasq-base)");
    let child = Running(child);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if ns
            .sh("ss -Hlun 'sport = :53'")
            .is_ok_and(|o| !o.trim().is_empty())
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("dnsmasq did not listen within 10 s");
}

/// `netladder diagnose --json ARGS` in `ns`, with `resolv` bind-mounted over /etc/resolv.conf
/// in a private mount namespace (the machine's own file is never touched).
fn diagnose_with_resolv(ns: &Netns, resolv: &Path, args: &[&str]) -> (i32, Value) {
    let bin = netladder_bin();
    let mut cmd = ns.command("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/resolv.conf || exit 99; shift; exec \"$@\"")
        .arg("sh")
        .arg(resolv)
        .arg(bin)
        .args(["diagnose", "--json"])
        .args(args);
    report_of(&mut cmd)
}

#[test]
fn dns_nxdomain_is_024_and_a_good_name_is_reachable() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-dns", 10);
    let dir = TempDir::new("dns");
    let _dns = dnsmasq(&h.server, "10.240.10.2", "10.240.10.2", &dir.0);
    let resolv = dir.0.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.240.10.2\n").unwrap();
    let _peer = Peer::listen(Some(&h.server), "10.240.10.2:9010", &[]).unwrap();

    let (status, r) = diagnose_with_resolv(&h.client, &resolv, &["missing.nl.test:9010"]);
    let v = fails_at(status, &r, "dns", "024");
    summary_says(&v, "missing.nl.test does not exist");
    summary_says(&v, "NXDOMAIN");
    assert_eq!(r["rungs"][5]["status"], "skipped", "{r:#}");
    // The lower rungs were checked toward the nameserver.
    assert!(
        r["rungs"][2]["evidence"]
            .to_string()
            .contains("checked toward nameserver 10.240.10.2"),
        "{r:#}"
    );

    let (status, r) = diagnose_with_resolv(&h.client, &resolv, &["good.nl.test:9010"]);
    assert_eq!(status, REACHABLE, "{r:#}");
    assert_eq!(r["rungs"][4]["status"], "passed", "{r:#}");
    assert_eq!(r["addresses"][0], "10.240.10.2", "{r:#}");
    assert!(
        r["rungs"][4]["evidence"]
            .to_string()
            .contains("nameserver 10.240.10.2: A NOERROR 10.240.10.2"),
        "{r:#}"
    );
}

#[test]
fn each_address_of_a_name_is_tried_and_the_verdict_names_them() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = TwoHosts::new(
        "dg-multi",
        &["10.240.15.1/24"],
        &["10.240.15.2/24", "10.240.15.3/24"],
    )
    .unwrap();
    let dir = TempDir::new("multi");
    let _dns = dnsmasq_with(
        &h.server,
        "10.240.15.2",
        "10.240.15.2",
        &dir.0,
        &[
            "--host-record=two.nl.test,10.240.15.2",
            "--host-record=two.nl.test,10.240.15.3",
        ],
    );
    let resolv = dir.0.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.240.15.2\n").unwrap();
    // Only the second address has a listener on the port.
    let peer = Peer::listen(Some(&h.server), "10.240.15.3:9015", &[]).unwrap();
    let (status, r) = diagnose_with_resolv(&h.client, &resolv, &["two.nl.test:9015"]);
    let mut addresses: Vec<&str> = r["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    addresses.sort();
    assert_eq!(addresses, ["10.240.15.2", "10.240.15.3"], "{r:#}");
    // Reachable, as a client that tries each address reaches it; the one that fails is named.
    assert_eq!(status, REACHABLE, "{r:#}");
    let v = &r["verdict"];
    assert_eq!(v["reachable"], true, "{r:#}");
    assert_eq!(
        v["worked"],
        serde_json::json!(["10.240.15.3:9015"]),
        "{r:#}"
    );
    assert_eq!(
        v["failed"],
        serde_json::json!(["10.240.15.2:9015"]),
        "{r:#}"
    );
    assert_eq!(r["checked"], "10.240.15.3:9015", "{r:#}");
    let tried = r["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "{r:#}");
    let bad = tried
        .iter()
        .find(|t| t["address"] == "10.240.15.2:9015")
        .unwrap();
    assert_eq!(
        (bad["reachable"].as_bool(), bad["code"].as_str()),
        (Some(false), Some("021")),
        "{r:#}"
    );
    let app = &r["rungs"][5];
    assert_eq!(app["status"], "warning", "{r:#}");
    assert!(
        app["summary"]
            .as_str()
            .unwrap()
            .contains("but 1 of the 2 addresses of two.nl.test failed"),
        "{r:#}"
    );
    assert!(
        app["evidence"]
            .to_string()
            .contains("also tried 10.240.15.2:9015: #021"),
        "{r:#}"
    );

    // No address works: the verdict is the first address's failure, and names the others.
    drop(peer);
    let (status, r) = diagnose_with_resolv(&h.client, &resolv, &["two.nl.test:9015"]);
    let v = fails_at(status, &r, "application", "021");
    assert_eq!(v["worked"], serde_json::json!([]), "{r:#}");
    assert_eq!(v["failed"].as_array().unwrap().len(), 2, "{r:#}");
    let other = if r["checked"] == "10.240.15.2:9015" {
        "10.240.15.3:9015"
    } else {
        "10.240.15.2:9015"
    };
    assert!(
        v["evidence"]
            .to_string()
            .contains(&format!("also tried {other}: #021")),
        "{r:#}"
    );
}

/// A test CA and a leaf certificate signed by it with `san` and `days` of validity.
fn certs(dir: &Path, san: &str, days: &str) {
    certs_with(dir, san, Validity::Days(days))
}

/// How long a test leaf certificate is valid.
enum Validity<'a> {
    /// From now on, for this many days.
    Days(&'a str),
    /// From START to END (YYYYMMDDHHMMSSZ), through `openssl ca` (`openssl x509` of OpenSSL
    /// 3.0 cannot set a start date).
    Dates(&'a str, &'a str),
}

fn certs_with(dir: &Path, san: &str, validity: Validity) {
    let days = match validity {
        Validity::Days(days) => days,
        Validity::Dates(not_before, not_after) => {
            return make_certs(
                dir,
                Leaf::Signed {
                    san,
                    not_before,
                    not_after,
                },
            );
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=netladder test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("ext"), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            days,
            "-extfile",
            "ext",
        ],
    );
}

#[test]
fn tls_expired_and_wrong_name_are_025_and_a_good_certificate_passes() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-tls", 11);
    let target = "10.240.11.2:8443";
    for (tag, san, days, cause, says) in [
        ("ok", "IP:10.240.11.2", "30", None, ""),
        (
            "expired",
            "IP:10.240.11.2",
            "0",
            Some("cert_expired"),
            "expired on",
        ),
        (
            "name",
            "DNS:other.nl.test",
            "30",
            Some("cert_name_mismatch"),
            "does not name 10.240.11.2: it is for other.nl.test",
        ),
    ] {
        let dir = TempDir::new(&format!("tls-{tag}"));
        certs(&dir.0, san, days);
        if days == "0" {
            // Valid for zero days: expired one second after it was made.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let server = tls_server(&h.server, &dir.0, "10.240.11.2", 8443, &[]);
        let ca = dir.0.join("ca.pem");
        let (status, r) = diagnose(&h.client, &["--tls", "--ca", ca.to_str().unwrap(), target]);
        drop(server);
        match cause {
            None => {
                assert_eq!(status, REACHABLE, "{tag}: {r:#}");
                let app = r["rungs"][5]["summary"].as_str().unwrap();
                assert!(
                    app.contains("handshake with 10.240.11.2 completed"),
                    "{r:#}"
                );
            }
            Some(cause) => {
                let v = fails_at(status, &r, "application", "025");
                assert_eq!(v["cause"], cause, "{tag}: {r:#}");
                summary_says(&v, says);
            }
        }
    }
}

#[test]
fn tls_not_yet_valid_untrusted_wrong_purpose_and_no_tls_are_025() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("dg-tls2", 14);
    let target = "10.240.14.2:8443";
    // (tag, make the certificates, trust the test CA (else only an unrelated one), cause,
    // words of the summary)
    type Make = fn(&Path);
    let cases: [(&str, Make, bool, &str, &[&str]); 5] = [
        (
            "future",
            |d| {
                certs_with(
                    d,
                    "IP:10.240.14.2",
                    Validity::Dates("20990101000000Z", "20991231000000Z"),
                )
            },
            true,
            "cert_not_yet_valid",
            &[
                "the certificate of 10.240.14.2 is valid only from 2099-01-01 00:00:00 UTC",
                "the system clock says 20",
                "is the clock right?",
            ],
        ),
        (
            "untrusted",
            |d| certs(d, "IP:10.240.14.2", "30"),
            false,
            "cert_unknown_issuer",
            &[
                "no trusted CA vouches for the certificate of 10.240.14.2",
                "its issuer CN=netladder test CA is not among the trusted roots",
            ],
        ),
        (
            "selfsigned",
            |d| {
                // A leaf signed with its own key (no CA extensions).
                certs(d, "IP:10.240.14.2", "30");
                openssl(
                    d,
                    &[
                        "x509", "-req", "-in", "leaf.csr", "-signkey", "leaf.key", "-out",
                        "leaf.pem", "-days", "30", "-extfile", "ext",
                    ],
                )
            },
            false,
            "cert_unknown_issuer",
            &["the certificate of 10.240.14.2 is self-signed (CN=leaf)"],
        ),
        (
            // `openssl req -x509` marks its certificate as a CA (basicConstraints CA:TRUE).
            "ca-as-leaf",
            |d| {
                openssl(
                    d,
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:prime256v1",
                        "-nodes",
                        "-keyout",
                        "leaf.key",
                        "-out",
                        "leaf.pem",
                        "-days",
                        "30",
                        "-subj",
                        "/CN=self",
                        "-addext",
                        "subjectAltName=IP:10.240.14.2",
                    ],
                )
            },
            false,
            "cert_invalid",
            &["the certificate of 10.240.14.2 is a CA certificate (CN=self, self-signed)"],
        ),
        (
            "purpose",
            |d| certs(d, "IP:10.240.14.2\nextendedKeyUsage=clientAuth", "30"),
            true,
            "cert_invalid",
            &[
                "the certificate of 10.240.14.2 is not for TLS servers: its extended key usage \
               does not include serverAuth",
            ],
        ),
    ];
    for (tag, make, trust, cause, says) in cases {
        let dir = TempDir::new(&format!("tls2-{tag}"));
        make(&dir.0);
        let server = tls_server(&h.server, &dir.0, "10.240.14.2", 8443, &[]);
        let ca = if trust {
            dir.0.join("ca.pem")
        } else {
            unrelated_ca(&dir.0)
        };
        let args = ["--tls", "--ca", ca.to_str().unwrap(), target];
        let (status, r) = diagnose(&h.client, &args);
        drop(server);
        let v = fails_at(status, &r, "application", "025");
        assert_eq!(v["cause"], cause, "{tag}: {r:#}");
        for w in says {
            summary_says(&v, w);
        }
        // The TCP connection itself worked: the evidence says so, and names the certificate.
        let evidence = v["evidence"].to_string();
        assert!(
            evidence.contains("TCP connection to 10.240.14.2:8443 established"),
            "{tag}: {r:#}"
        );
        assert!(evidence.contains("certificate: subject"), "{tag}: {r:#}");
    }
    // A server that speaks no TLS: it accepts and closes at once.
    let _plain = Peer::listen(Some(&h.server), "10.240.14.2:8444", &[]).unwrap();
    let dir = TempDir::new("tls2-plain");
    let ca = unrelated_ca(&dir.0);
    let (status, r) = diagnose(
        &h.client,
        &["--tls", "--ca", ca.to_str().unwrap(), "10.240.14.2:8444"],
    );
    let v = fails_at(status, &r, "application", "025");
    assert_eq!(v["cause"], "tls_handshake_failed", "{r:#}");
    summary_says(
        &v,
        "the TLS handshake with 10.240.14.2 failed before any certificate was checked",
    );
}

/// A CA that vouches for nothing the tests serve, for `--ca`: results then never depend on the
/// system's roots (the test VMs have none, and without any root the verifier cannot be built).
fn unrelated_ca(dir: &std::path::Path) -> std::path::PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "30",
            "-subj",
            "/CN=unrelated CA",
        ],
    );
    dir.join("other.pem")
}

#[test]
fn bad_targets_are_one_clear_line_and_exit_1() {
    for (target, says) in [
        ("", "empty target"),
        ("10.240.0.1:0", "out of range"),
        ("10.240.0.1:http", "not a number"),
        ("no spaces.test", "cannot appear in a host name"),
        ("[fd00::1", "closing ']'"),
        ("a:b:c", "[ADDRESS]:PORT"),
    ] {
        let out = Command::new(netladder_bin())
            .args(["diagnose", target])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(BAD_INPUT), "{target:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{target:?}: {stderr}");
        assert!(
            stderr.starts_with("netladder: ") && stderr.contains(says),
            "{target:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{target:?}");
    }
}

fn explain(args: &[&str]) -> Output {
    Command::new(netladder_bin())
        .arg("explain")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn explain_covers_the_ten_codes() {
    let list = String::from_utf8(explain(&[]).stdout).unwrap();
    for code in 21..=30 {
        let id = format!("#0{code}");
        assert!(list.contains(&id), "{list}");
        for spelling in [format!("0{code}"), code.to_string(), id.clone()] {
            let out = explain(&[&spelling]);
            assert!(out.status.success(), "{spelling}");
            let page = String::from_utf8(out.stdout).unwrap();
            assert!(page.starts_with(&id), "{page}");
            for part in [
                "What it means",
                "Usual causes",
                "How netladder sees it",
                "Confirm it by hand",
            ] {
                assert!(page.contains(part), "{page}");
            }
        }
    }
    let by_name = String::from_utf8(explain(&["no-route"]).stdout).unwrap();
    assert!(by_name.starts_with("#022 "), "{by_name}");
}

#[test]
fn explain_json_and_unknown_codes() {
    let all: Value = serde_json::from_slice(&explain(&["--json"]).stdout).unwrap();
    let codes: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["021", "022", "023", "024", "025", "026", "027", "028", "029", "030"]
    );
    let one: Value = serde_json::from_slice(&explain(&["29", "--json"]).stdout).unwrap();
    assert_eq!(one["layer"], "link");
    assert!(!one["confirm"].as_array().unwrap().is_empty());
    for bad in ["031", "20", "nope", "#"] {
        let out = explain(&[bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("unknown ladder code"), "{stderr}");
    }
}
