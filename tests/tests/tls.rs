//! #025 scenarios: `netladder watch` sees OpenSSL 3 clients (curl, python3's ssl) refuse the
//! certificate of an `openssl s_server` in a throwaway namespace, with the exact X509 reason;
//! a valid certificate, the server's own checks, and a server refusing a client certificate
//! produce no event.
use std::process::{Output, Stdio};
use std::time::Duration;

use netladder_tests::tls::{have_program, make_certs, tls_server, Leaf, Running, TempDir};
use netladder_tests::*;
use serde_json::Value;

const SERVER: &str = "10.240.40.2";
const PORT: u16 = 8443;
const NAME: &str = "good.nl.test";

fn two_hosts(tag: &str) -> TwoHosts {
    TwoHosts::new(tag, &["10.240.40.1/24"], &[&format!("{SERVER}/24")])
        .expect("two namespaces joined by a veth")
}

/// curl in `ns` toward https://good.nl.test:8443/ (resolved to the server), trusting `ca`.
fn curl(ns: &Netns, dir: &TempDir, extra: &[&str]) -> Output {
    ns.command("curl")
        .args(["-sS", "-o", "/dev/null", "-m", "20", "--cacert", "ca.pem"])
        .arg("--resolve")
        .arg(format!("{NAME}:{PORT}:{SERVER}"))
        .args(extra)
        .arg(format!("https://{NAME}:{PORT}/"))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// python3's ssl in `ns`: connects to the server's address, asks for good.nl.test, trusts `ca`.
/// Prints "ok" or "verify CODE" (the X509 code Python itself read).
fn python(ns: &Netns, dir: &TempDir) -> Output {
    const SCRIPT: &str = "
import socket, ssl, sys
ctx = ssl.create_default_context(cafile='ca.pem')
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
try:
    ctx.wrap_socket(s, server_hostname=sys.argv[3]).close()
    print('ok')
except ssl.SSLCertVerificationError as e:
    print('verify', e.verify_code)
    sys.exit(3)
";
    ns.command("python3")
        .args(["-c", SCRIPT, SERVER, &PORT.to_string(), NAME])
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run python3")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}, stdout {}, stderr {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// #025 events of the two namespaces so far.
fn tls_events(w: &Watch, h: &TwoHosts) -> Vec<Value> {
    let ours = [h.client.inode(), h.server.inode()];
    w.failures()
        .into_iter()
        .filter(|e| e["code"] == "025" && ours.iter().any(|n| e["netns"] == *n))
        .collect()
}

fn is_from(e: &Value, comm: &str, h: &TwoHosts) -> bool {
    e["code"] == "025" && e["comm"] == comm && e["netns"] == h.client.inode()
}

/// Asserts the shared parts of a #025 event from the client namespace.
fn check_common(e: &Value, cause: &str, says: &str) {
    assert_eq!(e["cause"], cause, "{e:#}");
    assert_eq!(e["layer"], "application", "{e:#}");
    assert_eq!(e["dst"], format!("{SERVER}:{PORT}"), "{e:#}");
    summary_has(e, says);
    assert!(
        evidence_has(e, &format!("server name sent (SNI): {NAME}")),
        "{e:#}"
    );
    assert!(
        evidence_has(e, &format!("read from {SERVER}:{PORT}")),
        "the certificate's details come from the peer: {e:#}"
    );
}

/// The one #025 event that follows the first `seen` ones (waits for it, then 500 ms for a
/// second one that must not come).
fn next_event(w: &Watch, h: &TwoHosts, seen: usize, tag: &str, client: &str) -> Value {
    let deadline = std::time::Instant::now() + FAILURE_TIMEOUT;
    loop {
        if tls_events(w, h).len() > seen {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{tag} with {client}: no #025 event within {FAILURE_TIMEOUT:?}; seen: {:#?}",
            w.events()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let events = tls_events(w, h);
    assert_eq!(
        events.len(),
        seen + 1,
        "{tag} with {client}: one event per refused handshake: {:#?}",
        &events[seen..]
    );
    events[seen].clone()
}

/// An event that lost the thread's connect() record (the peer then unknown, or taken from the
/// process's socket instead) and another record written before the handshake: the SNI its
/// client certainly sent, or the host name python asked OpenSSL to check.
fn lost_pre_handshake_records(e: &Value, client: &str) -> bool {
    let no_connect =
        e["dst"].is_null() || evidence_has(e, "no connect() of the thread was recorded");
    let no_sni = evidence_has(e, "no server name (SNI) sent");
    let no_host =
        client == "python3" && !evidence_has(e, "host name the client asked OpenSSL to check");
    no_connect && (no_sni || no_host)
}

/// Runs of netladder's programs the kernel skipped so far (the latest stats line's count; the
/// watch writes one whenever it grows).
fn skipped_runs(w: &Watch) -> u64 {
    w.events()
        .iter()
        .rev()
        .find(|e| e["type"] == "stats")
        .and_then(|e| e["skipped_runs"].as_u64())
        .unwrap_or(0)
}

/// The OpenSSL hooks attached (libssl.so.3 present); prints NL-SKIP otherwise.
fn hooks_ready(w: &Watch) -> bool {
    if !hook_attached(w, "ssl_do_handshake") || !hook_attached(w, "x509_verify_cert_ret") {
        skip("OpenSSL 3 hooks not attached here (no libssl.so.3 on the library path?)");
        return false;
    }
    true
}

#[test]
fn certificate_failures_are_025_with_the_exact_x509_reason() {
    let Some(_one) = root_serial() else {
        return;
    };
    let clients: Vec<&str> = ["curl", "python3"]
        .into_iter()
        .filter(|c| have_program(c))
        .collect();
    for missing in ["curl", "python3"].iter().filter(|c| !clients.contains(c)) {
        skip(&format!(
            "{missing} is not installed here: its cases do not run"
        ));
    }
    if clients.is_empty() {
        return;
    }
    let h = two_hosts("tls");
    // The summaries below carry the certificate's dates and names: read with netladder's own
    // handshake, which only --probe-tls allows.
    // (--stats-interval: a stats line as soon as the kernel skips a run of a program.)
    let w =
        Watch::start(&["--probe-tls", "--stats-interval", "1"]).expect("netladder watch starts");
    if !hooks_ready(&w) {
        return;
    }
    // (tag, certificate, X509 code and name, cause, summary for both clients)
    let cases = [
        (
            "expired",
            Leaf::Signed {
                san: "DNS:good.nl.test",
                not_before: "20200101000000Z",
                not_after: "20200201000000Z",
            },
            "X509_V_ERR_CERT_HAS_EXPIRED (10)",
            10,
            "cert_expired",
            "expired on 2020-02-01 00:00:00 UTC (the system clock says ",
        ),
        (
            "not-yet-valid",
            Leaf::Signed {
                san: "DNS:good.nl.test",
                not_before: "20990101000000Z",
                not_after: "21000101000000Z",
            },
            "X509_V_ERR_CERT_NOT_YET_VALID (9)",
            9,
            "cert_not_yet_valid",
            "valid only from 2099-01-01 00:00:00 UTC (the system clock says ",
        ),
        (
            "wrong-name",
            Leaf::Signed {
                san: "DNS:other.nl.test",
                not_before: "20200101000000Z",
                not_after: "20991231000000Z",
            },
            "X509_V_ERR_HOSTNAME_MISMATCH (62)",
            62,
            "cert_name_mismatch",
            "does not name good.nl.test: it is for other.nl.test",
        ),
        (
            "self-signed",
            Leaf::SelfSigned {
                san: "DNS:good.nl.test",
            },
            "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18)",
            18,
            "cert_self_signed",
            "is self-signed and the client does not trust it",
        ),
    ];
    for (tag, leaf, x509, code, cause, says) in cases {
        let dir = TempDir::new(&format!("tls-{tag}"));
        make_certs(&dir.0, leaf);
        let _server = tls_server(&h.server, &dir.0, SERVER, PORT, &["-www"]);
        for client in &clients {
            let before = tls_events(&w, &h).len();
            let run = || {
                let out = if *client == "curl" {
                    curl(&h.client, &dir, &[])
                } else {
                    python(&h.client, &dir)
                };
                if *client == "curl" {
                    assert_eq!(out.status.code(), Some(60), "{tag}: curl {}", text(&out));
                } else {
                    let said = String::from_utf8_lossy(&out.stdout);
                    assert_eq!(
                        said.trim(),
                        format!("verify {code}"),
                        "{tag}: {}",
                        text(&out)
                    );
                }
            };
            run();
            let mut e = next_event(&w, &h, before, tag, client);
            let mut reported = before + 1;
            if lost_pre_handshake_records(&e, client) {
                // Seen three times on Debian sid (one CPU, TCG; twice in CI): the event came, with
                // its X509 code, but the thread's connect() and one more record written before the
                // handshake (the SNI once, python's host name once) were missing. Not reproduced
                // in 90 runs; cause unknown. The kernel's count of skipped program runs is printed
                // with it, after the second run (a stats line comes within a second of a skip; a
                // run skipped because another BPF program held the CPU would explain it). The
                // second run must be complete.
                let first = e;
                run();
                e = next_event(&w, &h, reported, tag, client);
                reported += 1;
                eprintln!(
                    "NL-NOTE {tag} with {client}: event without its connect() peer and another \
                     record from before the handshake ({} program runs skipped by the kernel so \
                     far), retried once: {first}",
                    skipped_runs(&w)
                );
            }
            assert!(
                is_from(&e, client, &h) && e["cause"] == cause,
                "{tag} with {client}: {e:#}"
            );
            check_common(&e, cause, says);
            if *client == "curl" && code == 62 {
                // curl checks host names itself, after OpenSSL accepted the chain.
                assert!(
                    evidence_has(&e, "CURLE_PEER_FAILED_VERIFICATION (60)"),
                    "{e:#}"
                );
            } else {
                assert!(evidence_has(&e, x509), "{tag} with {client}: {e:#}");
            }
            if code == 9 || code == 10 {
                assert!(evidence_has(&e, "the system clock says"), "{e:#}");
            }
            if *client == "python3" {
                assert!(
                    evidence_has(
                        &e,
                        &format!("host name the client asked OpenSSL to check: {NAME}")
                    ),
                    "{e:#}"
                );
            }
            // One event per refused handshake.
            assert_eq!(tls_events(&w, &h).len(), reported, "{tag} with {client}");
        }
    }

    // A valid certificate: both clients succeed and nothing is reported.
    let dir = TempDir::new("tls-valid");
    make_certs(
        &dir.0,
        Leaf::Signed {
            san: "DNS:good.nl.test",
            not_before: "20200101000000Z",
            not_after: "20991231000000Z",
        },
    );
    let before = tls_events(&w, &h).len();
    {
        let _server = tls_server(&h.server, &dir.0, SERVER, PORT, &["-www"]);
        for client in &clients {
            let out = if *client == "curl" {
                curl(&h.client, &dir, &[])
            } else {
                python(&h.client, &dir)
            };
            assert!(out.status.success(), "valid with {client}: {}", text(&out));
        }
        // curl -k: verification fails, the client goes on; not a failure either.
        if clients.contains(&"curl") {
            let other = TempDir::new("tls-other-ca");
            make_certs(
                &other.0,
                Leaf::SelfSigned {
                    san: "DNS:unused.nl.test",
                },
            );
            let out = curl(&h.client, &other, &["-k"]);
            assert!(out.status.success(), "curl -k: {}", text(&out));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let after = tls_events(&w, &h);
    assert_eq!(
        after.len(),
        before,
        "a valid certificate (and curl -k) must give no event: {:#?}",
        &after[before..]
    );
    assert!(
        after.iter().all(|e| e["comm"] != "openssl"),
        "the server's own chain checks are not reported: {after:#?}"
    );
    w.stop().expect("netladder exits cleanly");
}

#[test]
fn a_server_refusing_a_client_certificate_is_not_reported() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_program("curl") {
        skip("curl is not installed here");
        return;
    }
    let h = two_hosts("tls-mtls");
    let w = Watch::start(&[]).expect("netladder watch starts");
    if !hooks_ready(&w) {
        return;
    }
    let dir = TempDir::new("tls-mtls");
    make_certs(
        &dir.0,
        Leaf::Signed {
            san: "DNS:good.nl.test",
            not_before: "20200101000000Z",
            not_after: "20991231000000Z",
        },
    );
    // The client's certificate: self-signed, which the server (trusting the test CA) refuses.
    let client_dir = TempDir::new("tls-mtls-client");
    make_certs(
        &client_dir.0,
        Leaf::SelfSigned {
            san: "DNS:client.nl.test",
        },
    );
    let cert = client_dir.path("leaf.pem");
    let key = client_dir.path("leaf.key");
    let _server = tls_server(
        &h.server,
        &dir.0,
        SERVER,
        PORT,
        &[
            "-www",
            "-Verify",
            "1",
            "-verify_return_error",
            "-CAfile",
            "ca.pem",
        ],
    );
    let out = curl(
        &h.client,
        &dir,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        !out.status.success(),
        "the server should refuse the client's certificate: {}",
        text(&out)
    );
    // The server's own verification refused it (unknown CA), not anything else.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("alert unknown ca"),
        "{}",
        text(&out)
    );
    std::thread::sleep(Duration::from_secs(2));
    let events = tls_events(&w, &h);
    assert!(
        events.is_empty(),
        "the server's refusal of a client certificate is not a client's #025: {events:#?}"
    );
    w.stop().expect("netladder exits cleanly");
}

/// The two namespaces, `netladder watch WATCH_ARGS`, and an `openssl s_server` in the server's
/// with a certificate that expired in 2020 (`ca.pem` in the TempDir trusts it). None, after an
/// NL-SKIP, when the OpenSSL hooks are not attached.
fn expired_lab(tag: &str, watch_args: &[&str]) -> Option<(TwoHosts, Watch, TempDir, Running)> {
    let h = two_hosts(tag);
    let w = Watch::start(watch_args).expect("netladder watch starts");
    if !hooks_ready(&w) {
        return None;
    }
    let dir = TempDir::new(tag);
    make_certs(
        &dir.0,
        Leaf::Signed {
            san: "DNS:good.nl.test",
            not_before: "20200101000000Z",
            not_after: "20200201000000Z",
        },
    );
    let server = tls_server(&h.server, &dir.0, SERVER, PORT, &["-www"]);
    Some((h, w, dir, server))
}

/// With the thread's connect() unrecorded (`--skip-hook` on the connect() results: the fexit on
/// inet_stream_connect where it loads, the route-lookup programs' cgroup connect hooks or the
/// opt-in syscall tracepoint elsewhere; standing in for a run
/// the kernel skipped), the event still names its peer: curl's one connected TCP socket, found
/// through its open files.
#[test]
fn without_a_recorded_connect_the_peer_comes_from_the_process_socket() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_program("curl") {
        skip("curl is not installed here");
        return;
    }
    let Some((h, w, dir, _server)) = expired_lab(
        "tls-nocon",
        &[
            "--skip-hook",
            "sys_exit_connect",
            "--skip-hook",
            "inet_stream_connect_exit",
            "--skip-hook",
            "route_connect4",
            "--skip-hook",
            "route_connect6",
            "--probe-tls",
        ],
    ) else {
        return;
    };
    let out = curl(&h.client, &dir, &[]);
    assert_eq!(out.status.code(), Some(60), "curl {}", text(&out));
    let e = next_event(&w, &h, 0, "expired", "curl");
    assert!(is_from(&e, "curl", &h), "{e:#}");
    assert_eq!(e["cause"], "cert_expired", "{e:#}");
    assert_eq!(e["dst"], format!("{SERVER}:{PORT}"), "{e:#}");
    assert!(
        evidence_has(
            &e,
            &format!("peer {SERVER}:{PORT} (no connect() of the thread was recorded; the process's only connected TCP socket)")
        ),
        "{e:#}"
    );
    // The local end comes with it: the client's address.
    assert!(
        e["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("10.240.40.1:")),
        "{e:#}"
    );
    // The certificate is read from that peer as usual.
    assert!(
        evidence_has(&e, &format!("read from {SERVER}:{PORT}")),
        "{e:#}"
    );
    w.stop().expect("netladder exits cleanly");
}

/// The SNI belongs to the connection, not to the thread: python3 prepares its connection to
/// good.nl.test, then (same thread) another SSL object for other.nl.test, and only then runs the
/// first handshake, which fails. The event names good.nl.test.
#[test]
fn the_sni_is_the_one_of_the_failing_connection() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_program("python3") {
        skip("python3 is not installed here");
        return;
    }
    const SCRIPT: &str = "
import socket, ssl, sys
ctx = ssl.create_default_context(cafile='ca.pem')
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
conn = ctx.wrap_socket(s, server_hostname='good.nl.test', do_handshake_on_connect=False)
other = ssl.create_default_context()
other.check_hostname = False
other.verify_mode = ssl.CERT_NONE
decoy = other.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname='other.nl.test')
try:
    conn.do_handshake()
    print('ok')
except ssl.SSLCertVerificationError as e:
    print('verify', e.verify_code)
";
    let Some((h, w, dir, _server)) = expired_lab("tls-sni", &["--probe-tls"]) else {
        return;
    };
    let out = h
        .client
        .command("python3")
        .args(["-c", SCRIPT, SERVER, &PORT.to_string()])
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verify 10",
        "{}",
        text(&out)
    );
    let e = next_event(&w, &h, 0, "expired", "python3");
    assert!(is_from(&e, "python3", &h), "{e:#}");
    assert_eq!(e["cause"], "cert_expired", "{e:#}");
    assert!(
        evidence_has(&e, &format!("server name sent (SNI): {NAME}")),
        "{e:#}"
    );
    assert!(!e.to_string().contains("other.nl.test"), "{e:#}");
    w.stop().expect("netladder exits cleanly");
}

/// Without --probe-tls, watch makes no connection of its own: the event keeps the reason the
/// client's OpenSSL gave (X509 code, SNI, peer, clock), says that the certificate was not read
/// and what --probe-tls would add, and the server sees one TCP connection only, curl's. The
/// same count then sees the probe's connection once --probe-tls is given, so it would have
/// seen one without it.
#[test]
fn watch_is_passive_without_probe_tls() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !have_program("curl") {
        skip("curl is not installed here");
        return;
    }
    let Some((h, w, dir, _server)) = expired_lab("tls-passive", &[]) else {
        return;
    };
    // Every TCP connection the server's namespace receives on the port, counted by its firewall.
    h.server
        .nft(&format!(
            "table inet nlcount {{\n chain input {{\n type filter hook input priority 0;\n \
             tcp dport {PORT} tcp flags & (syn | ack) == syn counter\n }}\n}}\n"
        ))
        .expect("a SYN counter in the server's namespace");
    let out = curl(&h.client, &dir, &[]);
    assert_eq!(out.status.code(), Some(60), "curl {}", text(&out));
    let e = next_event(&w, &h, 0, "expired", "curl");
    assert_eq!(e["cause"], "cert_expired", "{e:#}");
    assert!(
        evidence_has(&e, "X509_V_ERR_CERT_HAS_EXPIRED (10)"),
        "{e:#}"
    );
    assert!(
        evidence_has(
            &e,
            &format!("the certificate {SERVER}:{PORT} presents was not read: netladder makes no connection of its own unless asked (`--probe-tls`")
        ),
        "{e:#}"
    );
    assert!(!evidence_has(&e, "read from "), "{e:#}");
    assert!(!evidence_has(&e, "presented certificate"), "{e:#}");
    // Time for a connection of netladder's own, were it to make one.
    std::thread::sleep(Duration::from_secs(2));
    let counted = h
        .server
        .exec(&["nft", "list", "table", "inet", "nlcount"])
        .expect("nft list");
    let listing = String::from_utf8_lossy(&counted.stdout).into_owned();
    assert!(
        listing.contains("counter packets 1 "),
        "one SYN reached the server, curl's: {listing}"
    );
    w.stop().expect("netladder exits cleanly");

    // The counter would have seen a connection of netladder's own: with --probe-tls the same
    // refusal costs the server one more, the probe's, made before the event is printed.
    let w = Watch::start(&["--probe-tls"]).expect("netladder watch --probe-tls starts");
    let out = curl(&h.client, &dir, &[]);
    assert_eq!(out.status.code(), Some(60), "curl {}", text(&out));
    let e = next_event(&w, &h, 0, "expired, --probe-tls", "curl");
    assert_eq!(e["cause"], "cert_expired", "{e:#}");
    assert!(
        evidence_has(&e, &format!("read from {SERVER}:{PORT}")),
        "{e:#}"
    );
    assert!(!evidence_has(&e, "was not read"), "{e:#}");
    let counted = h
        .server
        .exec(&["nft", "list", "table", "inet", "nlcount"])
        .expect("nft list");
    let listing = String::from_utf8_lossy(&counted.stdout).into_owned();
    assert!(
        listing.contains("counter packets 3 "),
        "curl's first SYN, then curl's and netladder's probe: {listing}"
    );
    w.stop().expect("netladder exits cleanly");
}
