//! #024 "name or service not known", seen by `netladder watch`: a real dnsmasq serving the
//! nl.test zone in a server namespace, real clients (dig, getent, python's getaddrinfo) in a
//! client namespace whose /etc/resolv.conf and /etc/hosts are files of the test bind-mounted in
//! a private mount namespace (the machine's own files are never touched), and nl-peer's small
//! DNS responder for SERVFAIL, compressed and malformed answers. Each scenario asserts the one
//! failure it produced (or none), with its cause, server, name and process.
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use netladder_tests::dns::{dns_hooks, have, lab, responder, Lab};
use netladder_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_millis(2500);

fn is_dns(ev: &Value, name: &str) -> bool {
    ev["code"] == "024" && ev["name"] == name
}

/// The answer's code, cause, nameserver and process; and how the process is known: where the
/// cgroup connect/sendmsg programs run (every kernel of the matrix), as the socket's proven
/// owner; elsewhere as the last process that asked that nameserver, which the evidence says.
fn check(w: &Watch, ev: &Value, cause: &str, dst: &str, pid: u32) {
    assert_eq!(
        (
            ev["code"].as_str(),
            ev["cause"].as_str(),
            ev["dst"].as_str()
        ),
        (Some("024"), Some(cause), Some(dst)),
        "{ev:#}"
    );
    assert_eq!(ev["pid"].as_u64(), Some(u64::from(pid)), "{ev:#}");
    assert!(!ev["next"].as_array().unwrap().is_empty(), "{ev:#}");
    // Only an answer has an owner to name.
    if ["nxdomain", "servfail", "refused"].contains(&cause) {
        let by_server = evidence_has(ev, "the last one that connected or sent to this nameserver");
        assert_eq!(by_server, !hook_attached(w, "sock_connect4"), "{ev:#}");
    }
}

fn dig(l: &Lab, files: &(PathBuf, PathBuf), server: &str, name: &str) -> (Output, u32) {
    l.run(
        files,
        &["dig", &format!("@{server}"), name, "+tries=1", "+time=2"],
    )
}

#[test]
fn nxdomain_from_dig_is_one_024_and_a_good_name_is_none() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have("dig") {
        return skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    let l = lab("dns-nx", 40);
    let files = l.files(&format!("nameserver {}\n", l.server), "");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["dns_ingress"]) {
        return;
    }
    let (out, _) = dig(&l, &files, &l.server, "good.nl.test");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOERROR"));
    let (out, pid) = dig(&l, &files, &l.server, "missing.nl.test");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"));
    let ev = expect_single_failure(&w, |e| is_dns(e, "missing.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", &format!("{}:53", l.server), pid);
    assert_eq!(ev["layer"], "dns", "{ev:#}");
    summary_has(
        &ev,
        "missing.nl.test does not exist: NXDOMAIN from 10.240.40.2",
    );
    assert!(
        evidence_has(
            &ev,
            "NXDOMAIN for missing.nl.test A from 10.240.40.2:53 over UDP"
        ),
        "{ev:#}"
    );
    let next = ev["next"].to_string();
    assert!(next.contains("dig @10.240.40.2 missing.nl.test"), "{ev:#}");
    let (events, _) = w.stop().unwrap();
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "failure").collect();
    assert_eq!(
        failures.len(),
        1,
        "the good name is no failure: {failures:#?}"
    );
}

/// A resolver that never connect()s its UDP socket (musl, many event loops: sendto() and
/// recvfrom()) gets the same event, with its process, as one that connects (dig, glibc); over
/// IPv6 too.
#[test]
fn an_asker_that_never_connects_is_named_too() {
    let Some(_one) = root_serial() else {
        return;
    };
    let l = lab("dns-sendto", 48);
    let files = l.files(&format!("nameserver {}\n", l.server), "");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["dns_ingress"]) {
        return;
    }
    let peer = peer_bin();
    for (server, name) in [
        (format!("{}:53", l.server), "nowhere.nl.test"),
        ("[fd00:240:48::2]:53".to_owned(), "nowhere6.nl.test"),
    ] {
        let (out, pid) = l.run(&files, &[peer.to_str().unwrap(), "dns-ask", &server, name]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "rcode 3",
            "{out:?}"
        );
        let ev = expect_single_failure(&w, |e| is_dns(e, name), SETTLE).unwrap();
        check(&w, &ev, "nxdomain", &server, pid);
        assert_eq!(ev["comm"], "nl-peer", "{ev:#}");
    }
    w.stop().unwrap();
}

#[test]
fn nxdomain_over_tcp_and_ipv6_is_seen_too() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have("dig") {
        return skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    let l = lab("dns-tcp6", 47);
    let files = l.files("nameserver fd00:240:47::2\n", "");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["dns_ingress"]) {
        return;
    }
    let (out, pid) = l.run(
        &files,
        &[
            "dig",
            "@fd00:240:47::2",
            "tcp6.nl.test",
            "+tcp",
            "+tries=1",
            "+time=2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| is_dns(e, "tcp6.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", "[fd00:240:47::2]:53", pid);
    assert!(
        evidence_has(&ev, "from [fd00:240:47::2]:53 over TCP"),
        "{ev:#}"
    );
    let (out, pid) = l.run(
        &files,
        &[
            "dig",
            "@10.240.47.2",
            "tcp4.nl.test",
            "+tcp",
            "+tries=1",
            "+time=2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| is_dns(e, "tcp4.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", "10.240.47.2:53", pid);
    assert!(evidence_has(&ev, "over TCP"), "{ev:#}");
    w.stop().unwrap();
}

#[test]
fn a_refusing_nameserver_is_024_refused() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have("dig") {
        return skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    let l = lab("dns-ref", 41);
    let files = l.files(&format!("nameserver {}\n", l.server), "");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["dns_ingress"]) {
        return;
    }
    // dnsmasq has no upstream for names outside nl.test: it refuses them.
    let (out, pid) = dig(&l, &files, &l.server, "www.outside.test");
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED"));
    let ev = expect_single_failure(&w, |e| is_dns(e, "www.outside.test"), SETTLE).unwrap();
    check(&w, &ev, "refused", "10.240.41.2:53", pid);
    summary_has(&ev, "refused to resolve www.outside.test (REFUSED)");
    w.stop().unwrap();
}

#[test]
fn servfail_and_compressed_answers_name_the_question_exactly() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have("dig") {
        return skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    let l = lab("dns-sf", 42);
    let off_port = responder(&l.h.server, "10.240.42.2:5300", "servfail");
    let files = l.files("nameserver 10.240.42.2\n", "");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["dns_ingress"]) {
        return;
    }
    // Port 5300 is no DNS port to netladder: nothing. The same answer from port 53 counts.
    let (out, _) = l.run(
        &files,
        &[
            "dig",
            "@10.240.42.2",
            "-p",
            "5300",
            "db.broken.test",
            "+tries=1",
            "+time=2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SERVFAIL"),
        "{out:?}"
    );
    drop(off_port);
    // A second responder on :53 of another address: SERVFAIL, then compressed NXDOMAIN.
    l.h.server
        .ip(&["addr", "add", "10.240.42.3/32", "dev", "lo"])
        .unwrap();
    let fail = responder(&l.h.server, "10.240.42.3:53", "servfail");
    let (_, pid) = dig(&l, &files, "10.240.42.3", "db.broken.test");
    let ev = expect_single_failure(&w, |e| is_dns(e, "db.broken.test"), SETTLE).unwrap();
    check(&w, &ev, "servfail", "10.240.42.3:53", pid);
    summary_has(&ev, "failed to resolve db.broken.test (SERVFAIL)");
    drop(fail);
    let _nx = responder(&l.h.server, "10.240.42.3:53", "nxcompressed");
    let (out, pid) = dig(&l, &files, "10.240.42.3", "deep.label.nl.test");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| is_dns(e, "deep.label.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", "10.240.42.3:53", pid);
    let (events, _) = w.stop().unwrap();
    let n = events
        .iter()
        .filter(|e| e["type"] == "failure" && e["code"] == "024")
        .count();
    assert_eq!(n, 2, "nothing for port 5300: {events:#?}");
}

#[test]
fn malformed_answers_are_counted_never_reported() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have("dig") {
        return skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    let l = lab("dns-bad", 43);
    l.h.server
        .ip(&["addr", "add", "10.240.43.3/32", "dev", "lo"])
        .unwrap();
    let _bad = responder(&l.h.server, "10.240.43.3:53", "malformed");
    let files = l.files("nameserver 10.240.43.3\n", "");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["dns_ingress"]) {
        return;
    }
    // Six questions, six broken answers (dig gives up on each after one second).
    for i in 0..6 {
        let _ = l.run(
            &files,
            &[
                "dig",
                "@10.240.43.3",
                &format!("q{i}.nl.test"),
                "+tries=1",
                "+time=1",
            ],
        );
    }
    std::thread::sleep(SETTLE);
    let (events, _) = w.stop().unwrap();
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "failure").collect();
    assert!(
        failures.is_empty(),
        "no failure from broken answers: {failures:#?}"
    );
    let stats = events
        .iter()
        .rev()
        .find(|e| e["type"] == "stats" && e["final"] == true)
        .expect("final stats");
    assert_eq!(stats["dns_malformed"], 6, "{stats:#}");
    assert_eq!(stats["unclassified"], 0, "{stats:#}");
}

/// Python's socket.getaddrinfo for `name`; prints the EAI code, or connects to the first
/// address's `port` and prints the errno; then waits `hold` seconds (so netladder can read
/// the process's files).
fn python(l: &Lab, files: &(PathBuf, PathBuf), name: &str, port: u16, hold: f32) -> (Output, u32) {
    let script = format!(
        "import socket,time\n\
         try:\n    ai = socket.getaddrinfo('{name}', {port}, type=socket.SOCK_STREAM)\n\
         except socket.gaierror as e:\n    print('gaierror', e.errno); time.sleep({hold}); raise SystemExit(0)\n\
         s = socket.socket(ai[0][0], socket.SOCK_STREAM)\n\
         try:\n    s.connect(ai[0][4]); print('connected')\n\
         except OSError as e:\n    print('connect', e.errno)\n\
         time.sleep({hold})\n"
    );
    l.run(files, &["python3", "-c", &script])
}

fn have_python() -> bool {
    if have("python3") {
        return true;
    }
    skip("python3 is not installed here (the VM initramfs does not carry it)");
    false
}

#[test]
fn getaddrinfo_nxdomain_for_both_families_is_one_failure() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_python() {
        return;
    }
    let l = lab("dns-gai", 44);
    let files = l.files("nameserver 10.240.44.2\n", "127.0.0.1 localhost\n");
    let w = watch_netns(&l.h.client);
    if !dns_hooks(
        &w,
        &["dns_ingress", "getaddrinfo_enter", "getaddrinfo_exit"],
    ) {
        return;
    }
    let (out, pid) = python(&l, &files, "missing.nl.test", 80, 1.0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gaierror -2"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| is_dns(e, "missing.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", "10.240.44.2:53", pid);
    summary_has(&ev, "EAI_NONAME");
    // A and AAAA answers, and the call's own record, in one event.
    assert!(
        evidence_has(&ev, "NXDOMAIN for missing.nl.test A "),
        "{ev:#}"
    );
    assert!(
        evidence_has(&ev, "NXDOMAIN for missing.nl.test AAAA "),
        "{ev:#}"
    );
    assert!(
        evidence_has(&ev, "getaddrinfo(\"missing.nl.test\") returned EAI_NONAME"),
        "{ev:#}"
    );
    assert!(evidence_has(&ev, "/etc/resolv.conf of pid"), "{ev:#}");

    // getent ahosts goes through getaddrinfo too; getent hosts (gethostbyname2) is seen in
    // the packets only.
    let (_, pid) = l.run(&files, &["getent", "ahosts", "gone.nl.test"]);
    let ev = expect_single_failure(&w, |e| is_dns(e, "gone.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", "10.240.44.2:53", pid);
    summary_has(&ev, "EAI_NONAME");
    let (_, pid) = l.run(&files, &["getent", "hosts", "absent.nl.test"]);
    let ev = expect_single_failure(&w, |e| is_dns(e, "absent.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "nxdomain", "10.240.44.2:53", pid);

    // A name that exists: no failure.
    let (out, _) = python(&l, &files, "good.nl.test", 9, 0.0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connect"),
        "{out:?}"
    );
    std::thread::sleep(SETTLE);
    assert!(!w
        .failures()
        .iter()
        .any(|e| e["code"] == "024" && e["name"] == "good.nl.test"));
    w.stop().unwrap();
}

#[test]
fn no_answer_from_the_nameserver_is_024_pointing_lower() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_python() {
        return;
    }
    let l = lab("dns-noans", 45);
    // Nobody has 10.240.45.9: the questions leave and nothing answers.
    let files = l.files(
        "nameserver 10.240.45.9\noptions timeout:1 attempts:1\n",
        "127.0.0.1 localhost\n",
    );
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["getaddrinfo_enter", "getaddrinfo_exit"]) {
        return;
    }
    let (out, pid) = python(&l, &files, "any.nl.test", 80, 1.0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gaierror -3"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| is_dns(e, "any.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "no_answer", "10.240.45.9:53", pid);
    summary_has(&ev, "no nameserver answered");
    assert!(
        matches!(ev["layer"].as_str(), Some("dns" | "link")),
        "{ev:#}"
    );
    assert!(evidence_has(&ev, "returned EAI_AGAIN"), "{ev:#}");
    assert!(
        ev["next"].to_string().contains("ip route get 10.240.45.9"),
        "{ev:#}"
    );

    // No route at all to the nameserver: not one question can leave.
    let files = l.files("nameserver 10.99.45.9\noptions timeout:1 attempts:1\n", "");
    let (out, pid) = python(&l, &files, "other.nl.test", 80, 1.0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gaierror -3"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| is_dns(e, "other.nl.test"), SETTLE).unwrap();
    check(&w, &ev, "no_nameserver", "10.99.45.9:53", pid);
    assert_eq!(ev["layer"], "route", "{ev:#}");
    assert!(
        evidence_has(&ev, "toward the nameserver returned ENETUNREACH"),
        "{ev:#}"
    );
    w.stop().unwrap();
}

#[test]
fn a_stale_hosts_entry_is_named_in_the_connection_failure() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_python() {
        return;
    }
    let l = lab("dns-hosts", 46);
    // db.nl.test is pinned to the server's address, where nothing listens on 5432.
    let files = l.files(
        "nameserver 10.240.46.2\n",
        "127.0.0.1 localhost\n10.240.46.2 db.nl.test\n",
    );
    let w = watch_netns(&l.h.client);
    if !dns_hooks(&w, &["getaddrinfo_enter", "getaddrinfo_exit"]) {
        return;
    }
    let (out, pid) = python(&l, &files, "db.nl.test", 5432, 2.0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connect 111"),
        "{out:?}"
    );
    let ev = expect_single_failure(&w, |e| e["dst"] == "10.240.46.2:5432", SETTLE).unwrap();
    assert_eq!(ev["code"], "021", "{ev:#}");
    assert_eq!(ev["pid"].as_u64(), Some(u64::from(pid)), "{ev:#}");
    assert_eq!(ev["name"], "db.nl.test", "{ev:#}");
    assert!(
        evidence_has(&ev, "resolved db.nl.test to 10.240.46.2 with getaddrinfo")
            && evidence_has(&ev, "with no DNS question or answer seen"),
        "{ev:#}"
    );
    assert!(evidence_has(&ev, "/etc/hosts of pid"), "{ev:#}");
    summary_has(&ev, "came from /etc/hosts for db.nl.test");
    assert!(
        ev["next"]
            .to_string()
            .contains("grep -n db.nl.test /etc/hosts"),
        "{ev:#}"
    );
    // No DNS failure: the lookup itself worked.
    assert!(!w.failures().iter().any(|e| e["code"] == "024"));
    w.stop().unwrap();
}
