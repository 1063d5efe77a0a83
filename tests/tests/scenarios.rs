//! Issue-2 scenarios: real failures in throwaway namespaces, watched by the real netladder.
//! Each test makes one failure and asserts the one event it produced: code, cause, layer, the
//! process, and the evidence. Run as root (they print NL-SKIP otherwise).
use std::time::Duration;

use netladder_tests::*;
use serde_json::Value;

const CLIENT4: &str = "10.231.0.1";
const SERVER4: &str = "10.231.0.2";
const CLIENT6: &str = "fd00:231::1";
const SERVER6: &str = "fd00:231::2";
const SETTLE: Duration = Duration::from_millis(700);

/// A client and a server namespace joined by a veth pair (IPv4 and IPv6).
fn two_hosts(tag: &str) -> TwoHosts {
    TwoHosts::new(
        tag,
        &[&format!("{CLIENT4}/24"), &format!("{CLIENT6}/64")],
        &[&format!("{SERVER4}/24"), &format!("{SERVER6}/64")],
    )
    .expect("two hosts")
}

/// Whether netladder sees drop reasons on this kernel (kfree_skb attached; not on 5.10).
fn drop_reasons(w: &Watch) -> bool {
    hook_attached(w, "kfree_skb")
}

/// What a scenario expects: (cause, layer) with drop reasons, and the degraded reading without.
struct Reading<'a> {
    code: &'a str,
    full: (&'a str, &'a str),
    degraded: (&'a str, &'a str),
}

/// Refused with no listener (read as the peer's reset without drop reasons).
const NO_LISTENER: Reading = Reading {
    code: "021",
    full: ("no_listener", "application"),
    degraded: ("peer_reset", "application"),
};

/// Timed out behind a local firewall drop (no reply, without drop reasons).
const DROPPED: Reading = Reading {
    code: "023",
    full: ("firewall_drop", "firewall"),
    degraded: ("no_reply", "route"),
};

/// The clients give up after 1.5 s: one SYN retransmit (at 1 s) has been sent by then.
const GIVE_UP: Wait = Wait::GiveUpAfter(Duration::from_millis(1500));

/// Runs every client of `clients` from `ns` to `dst` under `w` and checks each one's event:
/// the code, cause and layer of `x` (full or degraded), the errno the kernel gives (`errno`;
/// none for a client that gave up first), and the fields every scenario shares. Returns the
/// runs and whether the full (drop-reason) classification applied.
fn failures(
    w: &Watch,
    ns: &Netns,
    dst: &str,
    clients: (&[Client], Wait),
    x: Reading,
    errno: &str,
) -> (Matrix, bool) {
    checked_failures(w, ns, dst, clients, x, errno, false)
}

/// [`failures`] for a failure an ICMP error answered: where the kernel shows none, the clients
/// that read SO_ERROR get the degraded check (see `Matrix::expect_answered`).
fn icmp_failures(
    w: &Watch,
    ns: &Netns,
    dst: &str,
    clients: (&[Client], Wait),
    x: Reading,
    errno: &str,
) -> (Matrix, bool) {
    checked_failures(w, ns, dst, clients, x, errno, true)
}

fn checked_failures(
    w: &Watch,
    ns: &Netns,
    dst: &str,
    (clients, wait): (&[Client], Wait),
    x: Reading,
    errno: &str,
    icmp: bool,
) -> (Matrix, bool) {
    let full = drop_reasons(w);
    let (cause, layer) = if full { x.full } else { x.degraded };
    let code = x.code;
    let mut m = Matrix::run(w, ns, dst, clients, wait);
    let x = Expect {
        code,
        cause,
        layer,
        errno: Some(errno),
        // Without drop reasons, nothing says who dropped the SYN: a client that gave up first
        // reads as the application's own timeout.
        gave_up_cause: (!full && cause == "no_reply").then_some("app_gave_up"),
        ..Expect::default()
    };
    if icmp {
        m.expect_answered(w, &x);
    } else {
        m.expect(&x);
    }
    m.each(|run, ev| {
        assert!(
            run.attempt.pid > 0 && ev["pid"] == run.attempt.pid,
            "pid: {ev:#}"
        );
        assert!(
            ev["src"].as_str().is_some_and(|s| !s.ends_with(":0")),
            "source port known: {ev:#}"
        );
        if !full && matches!(code, "021" | "023") {
            has(ev, "degraded: no drop reasons");
        }
    });
    (m, full)
}

/// Every client, waiting for the kernel.
const ALL: (&[Client], Wait) = (&Client::ALL, Wait::Kernel);

/// An nftables ruleset with one rule in an input chain of its own table.
fn input_rule(rule: &str) -> String {
    format!("table inet nltest {{\n chain input {{\n  type filter hook input priority 0;\n  {rule}\n }}\n}}\n")
}

fn has(ev: &Value, needle: &str) {
    assert!(
        evidence_has(ev, needle),
        "evidence should mention {needle:?}: {ev:#}"
    );
}

/// The number in front of `suffix` in the evidence (e.g. 3 in "3 SYNs sent").
fn count_before(ev: &Value, suffix: &str) -> u64 {
    ev["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.split_once(suffix))
        .find_map(|(n, _)| n.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {suffix:?} in {ev:#}"))
}

#[test]
fn refused_on_loopback_no_listener() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("lo-refused").unwrap();
    let w = watch_netns(&ns);
    // NL_EXPECT_FAIL_DEMO (vm-test --expect-fail-demo) asks for a deliberately wrong code, to
    // prove that the VM harness reports a failing scenario.
    let code = if std::env::var_os("NL_EXPECT_FAIL_DEMO").is_some() {
        "023"
    } else {
        "021"
    };
    let x = Reading {
        code,
        full: ("no_listener", "application"),
        degraded: ("peer_reset", "application"),
    };
    let (m, full) = failures(&w, &ns, "127.0.0.1:8080", ALL, x, "ECONNREFUSED");
    m.each(|_, ev| {
        has(ev, "RST received");
        if full {
            has(ev, "NO_SOCKET");
            has(ev, "sock_diag");
            summary_has(ev, "no listener on port 8080 at all");
        }
        assert_eq!(ev["errno"], "ECONNREFUSED");
        assert!(
            ev["next"][0].as_str().unwrap().contains("sport = :8080"),
            "{ev:#}"
        );
    });
    w.stop().unwrap();
}

#[test]
fn refused_across_veth_no_listener() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("veth-refused");
    let w = watch_netns(&h.client);
    let dst = format!("{SERVER4}:9000");
    let (m, full) = failures(&w, &h.client, &dst, ALL, NO_LISTENER, "ECONNREFUSED");
    m.each(|_, ev| {
        if full {
            has(ev, "NO_SOCKET");
            summary_has(ev, "no listener on port 9000 at all");
        }
    });
    w.stop().unwrap();
}

#[test]
fn refused_listener_bound_to_loopback_only() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("lo-only");
    // The server listens on its loopback only; the client uses the veth address.
    let _srv = Peer::listen(Some(&h.server), "127.0.0.1:9001", &[]).unwrap();
    let w = watch_netns(&h.client);
    let dst = format!("{SERVER4}:9001");
    let (m, full) = failures(&w, &h.client, &dst, ALL, NO_LISTENER, "ECONNREFUSED");
    m.each(|_, ev| {
        if full {
            summary_has(ev, &format!("no listener on {SERVER4}:9001"));
            summary_has(ev, "127.0.0.1:9001");
            summary_has(ev, "loopback");
        }
    });
    w.stop().unwrap();
}

#[test]
fn refused_ipv6_only_listener_from_ipv4() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("v6only").unwrap();
    let _srv = Peer::listen(Some(&ns), "[::1]:8080", &["--v6only"]).unwrap();
    let w = watch_netns(&ns);
    let (m, full) = failures(&w, &ns, "127.0.0.1:8080", ALL, NO_LISTENER, "ECONNREFUSED");
    m.each(|_, ev| {
        if full {
            summary_has(ev, "no listener on 127.0.0.1:8080");
            summary_has(ev, "[::1]:8080");
            summary_has(ev, "IPv6 only");
        }
    });
    w.stop().unwrap();
}

#[test]
fn refused_over_ipv6_across_veth() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("v6-refused");
    let w = watch_netns(&h.client);
    let dst = format!("[{SERVER6}]:9002");
    let (m, full) = failures(&w, &h.client, &dst, ALL, NO_LISTENER, "ECONNREFUSED");
    m.each(|_, ev| {
        if full {
            has(ev, "NO_SOCKET");
        }
    });
    w.stop().unwrap();
}

#[test]
fn timeout_syn_dropped_by_nftables_on_the_peer() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("nft-drop");
    h.client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:443"), &[]).unwrap();
    h.server.nft(&input_rule("tcp dport 443 drop")).unwrap();
    let w = watch_netns(&h.client);
    let dst = format!("{SERVER4}:443");
    let clients = (&Client::ALL[..], GIVE_UP);
    let (m, full) = failures(&w, &h.client, &dst, clients, DROPPED, "ETIMEDOUT");
    m.each(|run, ev| {
        if !run.gave_up() {
            assert_eq!(ev["errno"], "ETIMEDOUT");
        }
        if full {
            // Every SYN the client sent (first one and retransmits) was dropped by the server's
            // rule.
            let syns = count_before(ev, " SYNs sent");
            assert!(syns >= 2, "at least one retransmit: {ev:#}");
            assert_eq!(
                count_before(ev, " handshake packets dropped by netfilter"),
                syns,
                "{ev:#}"
            );
            has(ev, "NETFILTER_DROP at ");
            has(ev, "incoming packet");
            has(ev, &format!("in netns {}", h.server.inode()));
            blames_local_firewall(ev);
            summary_has(ev, "input)");
            // The next steps run where the rule is: the server's namespace.
            assert!(
                ev["next"][0].as_str().unwrap().contains(h.server.name()),
                "{ev:#}"
            );
        }
    });
    w.stop().unwrap();
}

#[test]
fn timeout_syn_dropped_by_iptables_output_on_the_client() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("ipt-out");
    h.client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    h.client
        .iptables(&["-A", "OUTPUT", "-p", "tcp", "--dport", "8443", "-j", "DROP"])
        .unwrap();
    let w = watch_netns(&h.client);
    let dst = format!("{SERVER4}:8443");
    let clients = (&Client::ALL[..], GIVE_UP);
    let (m, full) = failures(&w, &h.client, &dst, clients, DROPPED, "ETIMEDOUT");
    m.each(|_, ev| {
        if full {
            has(ev, "NETFILTER_DROP");
            has(ev, "outgoing packet");
            summary_has(ev, "output");
        }
    });
    w.stop().unwrap();
}

#[test]
fn timeout_application_gave_up_while_the_firewall_dropped() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("app-timeout");
    h.server.nft(&input_rule("tcp dport 7000 drop")).unwrap();
    let w = watch_netns(&h.client);
    // The clients give up after 1.5 s (one SYN retransmit at 1 s), before the kernel would
    // (a blocking connect cannot: it is not among them).
    let dst = format!("{SERVER4}:7000");
    let (m, full) = failures(
        &w,
        &h.client,
        &dst,
        (&Client::WAITING, GIVE_UP),
        Reading {
            code: "023",
            full: ("firewall_drop", "firewall"),
            degraded: ("app_gave_up", "route"),
        },
        "ETIMEDOUT",
    );
    m.each(|run, ev| {
        assert!(run.gave_up(), "{:?}", run.attempt);
        has(ev, "application closed the socket while still in SYN_SENT");
        if full {
            has(ev, "NETFILTER_DROP");
        }
        assert!(
            ev["errno"].is_null(),
            "no socket error when the application gives up: {ev:#}"
        );
    });
    w.stop().unwrap();
}

#[test]
fn timeout_no_reply_and_nothing_dropped_locally() {
    let Some(_one) = root_serial() else {
        return;
    };
    // The server has no route back to the client: its SYN-ACK is never sent, and no firewall
    // on this machine drops anything. Only host routes, so nothing else answers either.
    let client = Netns::new("noreply-c").unwrap();
    let server = Netns::new("noreply-s").unwrap();
    let (cdev, _) = veth(
        &client,
        &[&format!("{CLIENT4}/32")],
        &server,
        &[&format!("{SERVER4}/32")],
    )
    .unwrap();
    client.ip(&["route", "add", SERVER4, "dev", &cdev]).unwrap();
    client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    let _srv = Peer::listen(Some(&server), &format!("{SERVER4}:8081"), &[]).unwrap();
    let w = watch_netns(&client);
    let dst = format!("{SERVER4}:8081");
    // Closed before any answer could come: not a failure, whatever the clients below get.
    let abandoned = Abandoned::connect(&client, &dst);
    // Every client waits for the kernel (two SYNs, 3 s): the same reading for all.
    let (m, full) = failures(
        &w,
        &client,
        &dst,
        ALL,
        Reading {
            code: "023",
            full: ("no_reply", "route"),
            degraded: ("no_reply", "route"),
        },
        "ETIMEDOUT",
    );
    m.each(|_, ev| {
        assert!(!evidence_has(ev, "NETFILTER_DROP"), "{ev:#}");
        if full {
            summary_has(ev, "nothing dropped it on this host");
        }
    });
    abandoned.assert_no_event(&w);
    w.stop().unwrap();
}

#[test]
fn refused_by_firewall_reject_with_tcp_reset() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("reject-rst");
    // A listener exists: only the firewall refuses, so this must never read as "no listener".
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:22"), &[]).unwrap();
    h.server
        .nft(&input_rule("tcp dport 22 reject with tcp reset"))
        .unwrap();
    let w = watch_netns(&h.client);
    let (m, full) = failures(
        &w,
        &h.client,
        &format!("{SERVER4}:22"),
        ALL,
        Reading {
            code: "021",
            full: ("firewall_reject_rst", "firewall"),
            degraded: ("peer_reset", "application"),
        },
        "ECONNREFUSED",
    );
    m.each(|_, ev| {
        has(ev, "RST received");
        if full {
            has(ev, "NETFILTER_DROP");
            assert!(!evidence_has(ev, "NO_SOCKET"), "{ev:#}");
            blames_local_firewall(ev);
        }
    });
    w.stop().unwrap();
}

#[test]
fn refused_by_firewall_reject_with_icmp_port_unreachable() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("reject-icmp");
    // The matrix sends several SYNs a second: no ICMP rate limit on the answering side.
    h.server.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:25"), &[]).unwrap();
    h.server
        .iptables(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "25",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-port-unreachable",
        ])
        .unwrap();
    let w = watch_netns(&h.client);
    let (m, full) = icmp_failures(
        &w,
        &h.client,
        &format!("{SERVER4}:25"),
        ALL,
        Reading {
            code: "021",
            full: ("firewall_reject_icmp", "firewall"),
            degraded: ("firewall_reject_icmp", "firewall"),
        },
        "ECONNREFUSED",
    );
    m.each(|_, ev| {
        assert!(!evidence_has(ev, "RST received"), "{ev:#}");
        summary_has(ev, "ICMP port-unreachable");
        if full {
            has(ev, "NETFILTER_DROP");
        } else {
            // Without drop reasons a local REJECT cannot be ruled out, and the event says so.
            summary_has(ev, "does not show packet drops");
        }
    });
    w.stop().unwrap();
}

#[test]
fn successful_connection_produces_no_event() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("healthy");
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:80"), &[]).unwrap();
    let w = watch_netns(&h.client);
    let ok = connect(Some(&h.client), &format!("{SERVER4}:80"), &["--count", "5"]).unwrap();
    assert!(ok.status.success(), "{ok:?}");
    // Every client connects, and one abandons its connect before the answer: no failure.
    for client in Client::ALL {
        if client.unavailable().is_none() {
            let got = client
                .connect(&h.client, &format!("{SERVER4}:80"), Wait::Kernel)
                .unwrap();
            assert_eq!(got.seen, Seen::Connected, "{got:?}");
        }
    }
    let abandoned = Abandoned::connect(&h.client, &format!("{SERVER4}:80"));
    // A failure afterwards proves netladder was watching all along.
    let dst = format!("{SERVER4}:81");
    let (m, _) = failures(&w, &h.client, &dst, ALL, NO_LISTENER, "ECONNREFUSED");
    m.each(|_, ev| assert_eq!(ev["dst"], dst));
    abandoned.assert_no_event(&w);
    let (all, _) = w.stop().unwrap();
    let failures: Vec<_> = all.iter().filter(|e| e["type"] == "failure").collect();
    assert_eq!(
        failures.len(),
        m.runs.len(),
        "only the refused connections are failures: {failures:#?}"
    );
}

#[test]
fn filters_keep_only_matching_failures() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("filters").unwrap();
    let inode = ns.inode().to_string();
    let w = Watch::start(&[
        "--netns", &inode, "--port", "82", "--comm", "nl-peer", "--code", "refused",
    ])
    .unwrap();
    fails_with(
        connect(Some(&ns), "127.0.0.1:81", &[]).unwrap(),
        "ECONNREFUSED",
    );
    fails_with(
        connect(Some(&ns), "127.0.0.1:82", &[]).unwrap(),
        "ECONNREFUSED",
    );
    let ev = expect_single_failure(&w, |e| e["dst"] == "127.0.0.1:82", SETTLE).unwrap();
    assert_eq!(ev["code"], "021");
    let (all, _) = w.stop().unwrap();
    let failures: Vec<_> = all.iter().filter(|e| e["type"] == "failure").collect();
    assert_eq!(failures.len(), 1, "port 81 is filtered out: {failures:#?}");
}

/// Without kfree_skb (as on 5.10, forced here with --skip-hook): a firewall REJECT reads as the
/// peer's reset and a firewall drop as no reply, and each event says it is degraded.
#[test]
fn degraded_without_drop_reasons() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("degraded");
    h.client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    h.server
        .nft(&input_rule(
            "tcp dport 22 reject with tcp reset\n  tcp dport 443 drop",
        ))
        .unwrap();
    let inode = h.client.inode().to_string();
    let w = Watch::start(&["--netns", &inode, "--skip-hook", "kfree_skb"]).unwrap();
    assert!(!drop_reasons(&w));
    let x = Reading {
        code: "021",
        full: ("", ""),
        degraded: ("peer_reset", "application"),
    };
    failures(
        &w,
        &h.client,
        &format!("{SERVER4}:22"),
        ALL,
        x,
        "ECONNREFUSED",
    );
    // Every client waits for the kernel: a client that gives up reads as app_gave_up.
    let x = Reading {
        code: "023",
        full: ("", ""),
        degraded: ("no_reply", "route"),
    };
    failures(
        &w,
        &h.client,
        &format!("{SERVER4}:443"),
        ALL,
        x,
        "ETIMEDOUT",
    );
    let hooks = w
        .events()
        .into_iter()
        .find(|e| e["type"] == "hooks")
        .unwrap();
    assert!(
        hooks["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("local firewall drops")),
        "{hooks:#}"
    );
    w.stop().unwrap();
}

/// A burst of identical failures prints a few lines whose counts add up to every connect, with
/// nothing lost; the final stats say the same.
#[test]
fn repeated_failures_are_aggregated_and_add_up() {
    let Some(_one) = root_serial() else {
        return;
    };
    let ns = Netns::new("burst").unwrap();
    let w = watch_netns(&ns);
    let out = connect(Some(&ns), "127.0.0.1:8090", &["--count", "3000"]).unwrap();
    assert_eq!(out.lines.len(), 3000, "{:?}", out.stderr);
    assert!(out.lines.iter().all(|l| l.contains("ECONNREFUSED")));
    let (events, _) = w.stop().unwrap();
    let lines: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "failure" && e["dst"] == "127.0.0.1:8090")
        .collect();
    let total: u64 = lines.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3000, "counts add up: {lines:#?}");
    assert!(
        lines.len() < 100,
        "aggregated, not one line each: {}",
        lines.len()
    );
    assert!(lines.iter().all(|e| e["code"] == "021"));
    let stats = events
        .iter()
        .find(|e| e["type"] == "stats" && e["final"] == true)
        .unwrap();
    assert_eq!(stats["failures_reported"], 3000, "{stats}");
    assert_eq!(stats["lost"], 0, "{stats}");
}
