//! Issue-5 scenarios: a local firewall drops or rejects a connection, and netladder names the
//! backend, table, chain and rule (or says how unsure it is). Real rulesets in throwaway
//! namespaces; run as root (they print NL-SKIP otherwise). Without drop reasons (5.10) the
//! firewall is invisible: the tests then check that no rule is named.
use std::time::Duration;

use netladder_tests::*;
use serde_json::Value;

const CLIENT4: &str = "10.232.0.1";
const SERVER4: &str = "10.232.0.2";

/// A client and a server namespace joined by a veth pair, the client quick to give up.
fn two_hosts(tag: &str) -> TwoHosts {
    let h = TwoHosts::new(
        tag,
        &[&format!("{CLIENT4}/24")],
        &[&format!("{SERVER4}/24")],
    )
    .expect("two hosts");
    // Fail fast: few SYN retransmissions.
    h.client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    // The matrix sends several SYNs a second: no ICMP rate limit on the answering side.
    h.server.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    h
}

/// `table inet nltest` with one base chain on `hook` holding `rules` (one per line).
fn chain(hook: &str, rules: &[&str]) -> String {
    format!(
        "table inet nltest {{\n chain {hook} {{\n  type filter hook {hook} priority 0;\n  {}\n }}\n}}\n",
        rules.join("\n  ")
    )
}

/// Watches the client, has every client of the matrix connect to the server's `port` (those
/// that can give up do so after 1.5 s when a drop makes it time out; the blocking one waits for
/// the kernel's one retry), and passes each one's failure to `check` once its (code, cause),
/// firewall layer and errno are checked. Without drop reasons (5.10) the firewall is
/// invisible: it then checks that no rule is named instead, and says the test skipped its body.
fn provoke(
    h: &TwoHosts,
    port: u16,
    errno: &str,
    (code, cause): (&str, &str),
    check: impl Fn(&Value),
) {
    let dst = format!("{SERVER4}:{port}");
    let w = watch_netns(&h.client);
    let wait = if errno == "ETIMEDOUT" {
        Wait::GiveUpAfter(Duration::from_millis(1500))
    } else {
        Wait::Kernel
    };
    let mut m = Matrix::run(&w, &h.client, &dst, &Client::ALL, wait);
    if hook_attached(&w, "kfree_skb") {
        let x = Expect {
            code,
            cause,
            layer: "firewall",
            errno: Some(errno),
            ..Expect::default()
        };
        if cause == "firewall_reject_icmp" {
            // Answered by an ICMP error: degraded where the kernel shows none.
            m.expect_answered(&w, &x);
        } else {
            m.expect(&x);
        }
        m.each(|_, ev| check(ev));
        m.same("the rule named", |ev| {
            let fw = &ev["firewall"];
            serde_json::json!([fw["backend"], fw["table"], fw["chain"], fw["rule"]])
        });
    } else {
        m.each(|_, ev| {
            assert!(
                ev.get("firewall").is_none(),
                "no drop reasons, no rule: {ev:#}"
            );
        });
        skip("kfree_skb drop reasons are not available: the rule cannot be named here");
    }
    w.stop().unwrap();
}

/// Checks the named rule: (backend, family, table, chain, hook, certainty).
fn rule_is<'a>(ev: &'a Value, want: (&str, &str, &str, &str, &str, &str)) -> &'a Value {
    let fw = &ev["firewall"];
    let got = (
        fw["backend"].as_str(),
        fw["family"].as_str(),
        fw["table"].as_str(),
        fw["chain"].as_str(),
        fw["hook"].as_str(),
        fw["certainty"].as_str(),
    );
    let want = (
        Some(want.0),
        Some(want.1),
        Some(want.2),
        Some(want.3),
        Some(want.4),
        Some(want.5),
    );
    assert_eq!(got, want, "firewall rule: {ev:#}");
    fw
}

/// The number of SYNs the evidence says were sent ("3 SYNs sent ...").
fn syns(ev: &Value) -> u64 {
    ev["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|l| l.split_once(" SYN").and_then(|(n, _)| n.parse().ok()))
        .unwrap_or_else(|| panic!("no SYN count in the evidence: {ev:#}"))
}

fn text_has(fw: &Value, needle: &str) {
    assert!(
        fw["text"].as_str().is_some_and(|t| t.contains(needle)),
        "rule text should contain {needle:?}: {fw:#}"
    );
}

#[test]
fn nftables_drop_with_counter_in_input_is_named_for_certain() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-nft-in");
    h.server
        .nft(&chain("input", &["tcp dport 443 counter drop"]))
        .unwrap();
    provoke(&h, 443, "ETIMEDOUT", ("023", "firewall_drop"), |ev| {
        let fw = rule_is(
            ev,
            ("nftables", "inet", "nltest", "input", "input", "certain"),
        );
        assert_eq!(fw["priority"], 0, "{ev:#}");
        assert!(
            fw["rule"].as_str().unwrap().starts_with("handle "),
            "{ev:#}"
        );
        assert_eq!(fw["packets"], syns(ev), "every SYN was counted: {ev:#}");
        text_has(fw, "tcp dport 443");
        text_has(fw, "drop");
        summary_has(
            ev,
            "table inet nltest, chain input (hook input, priority 0)",
        );
        assert!(
            evidence_has(ev, "dropped by nftables: table inet nltest, chain input"),
            "{ev:#}"
        );
        assert!(
            ev["next"][0]
                .as_str()
                .unwrap()
                .contains("nft -a list chain inet nltest input"),
            "{ev:#}"
        );
    });
}

#[test]
fn nftables_rule_without_counter_is_only_likely() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-nocount");
    h.server
        .nft(&chain("input", &["tcp dport 443 drop"]))
        .unwrap();
    provoke(&h, 443, "ETIMEDOUT", ("023", "firewall_drop"), |ev| {
        let fw = rule_is(
            ev,
            ("nftables", "inet", "nltest", "input", "input", "likely"),
        );
        assert!(fw["packets"].is_null(), "no counter, no count: {ev:#}");
        assert!(evidence_has(ev, "no counter to confirm"), "{ev:#}");
    });
}

#[test]
fn of_two_matching_rules_the_one_whose_counter_moved_is_named() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-two");
    // Both rules match the SYN, but the first drops it: the second never sees it.
    h.server
        .nft(&chain(
            "input",
            &[
                "tcp dport 8443 counter drop",
                &format!("ip daddr {SERVER4} counter drop"),
            ],
        ))
        .unwrap();
    provoke(&h, 8443, "ETIMEDOUT", ("023", "firewall_drop"), |ev| {
        let fw = rule_is(
            ev,
            ("nftables", "inet", "nltest", "input", "input", "certain"),
        );
        text_has(fw, "tcp dport 8443");
    });
}

#[test]
fn nftables_reject_with_tcp_reset_in_output_on_the_client() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-out-rst");
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:22"), &[]).unwrap();
    h.client
        .nft(&chain(
            "output",
            &["tcp dport 22 counter reject with tcp reset"],
        ))
        .unwrap();
    provoke(
        &h,
        22,
        "ECONNREFUSED",
        ("021", "firewall_reject_rst"),
        |ev| {
            let fw = rule_is(
                ev,
                ("nftables", "inet", "nltest", "output", "output", "certain"),
            );
            text_has(fw, "reject");
            assert!(
                evidence_has(ev, "rejected by nftables: table inet nltest, chain output"),
                "{ev:#}"
            );
        },
    );
}

#[test]
fn nftables_reject_with_icmpx_admin_prohibited_is_firewall_not_routing() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-admin");
    h.server
        .nft(&chain(
            "input",
            &["tcp dport 443 counter reject with icmpx type admin-prohibited"],
        ))
        .unwrap();
    provoke(
        &h,
        443,
        "EHOSTUNREACH",
        ("022", "firewall_reject_icmp"),
        |ev| {
            let fw = rule_is(
                ev,
                ("nftables", "inet", "nltest", "input", "input", "certain"),
            );
            text_has(fw, "reject");
        },
    );
}

#[test]
fn iptables_legacy_reject_in_output_names_table_chain_and_rule_number() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-legacy");
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:9"), &[]).unwrap();
    h.client
        .iptables_legacy(&["-A", "OUTPUT", "-p", "tcp", "--dport", "7", "-j", "DROP"])
        .unwrap();
    h.client
        .iptables_legacy(&[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            "9",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ])
        .unwrap();
    provoke(
        &h,
        9,
        "ECONNREFUSED",
        ("021", "firewall_reject_rst"),
        |ev| {
            let fw = rule_is(
                ev,
                (
                    "iptables-legacy",
                    "ipv4",
                    "filter",
                    "OUTPUT",
                    "output",
                    "certain",
                ),
            );
            assert_eq!(fw["rule"], "rule 2", "{ev:#}");
            assert_eq!(fw["packets"], 1, "{ev:#}");
            text_has(fw, "--reject-with tcp-reset");
            assert!(
                ev["next"][0]
                    .as_str()
                    .unwrap()
                    .contains("iptables-legacy -t filter -L OUTPUT -nv --line-numbers"),
                "{ev:#}"
            );
        },
    );
}

#[test]
fn iptables_nft_drop_on_the_peer_is_named() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-iptnft");
    h.server
        .iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "8443", "-j", "DROP"])
        .unwrap();
    provoke(&h, 8443, "ETIMEDOUT", ("023", "firewall_drop"), |ev| {
        let fw = rule_is(
            ev,
            ("iptables-nft", "ip", "filter", "INPUT", "input", "certain"),
        );
        assert_eq!(fw["packets"], syns(ev), "every SYN was counted: {ev:#}");
    });
}

/// The ruleset of `ns` as `nft -s -a list ruleset` prints it (handles, no counter values).
fn ruleset(ns: &Netns) -> String {
    ns.sh("nft -s -a list ruleset")
        .expect("nft lists the ruleset")
}

fn watch_tracing(ns: &Netns) -> Watch {
    Watch::start(&["--netns", &ns.inode().to_string(), "--trace-firewall"])
        .expect("netladder watch --trace-firewall starts")
}

/// Connects from the client to `dst` (timing out on a drop) and returns the failure that
/// satisfies `pred`.
fn trace_round(h: &TwoHosts, w: &Watch, dst: &str, pred: impl Fn(&Value) -> bool) -> Value {
    fails_with(connect(Some(&h.client), dst, &[]).unwrap(), "ETIMEDOUT");
    w.wait_for(|e| e["dst"] == dst && pred(e), Duration::from_secs(20))
        .expect("the failure event")
}

/// Every client of the matrix connects to `dst` once the flow is traced (each giving up after
/// 1.5 s, the blocking one after the kernel's one retry): each failure is the firewall's drop.
fn traced_round(h: &TwoHosts, w: &Watch, dst: &str) -> Matrix {
    let wait = Wait::GiveUpAfter(Duration::from_millis(1500));
    let m = Matrix::run(w, &h.client, dst, &Client::ALL, wait);
    m.expect(&Expect {
        code: "023",
        cause: "firewall_drop",
        layer: "firewall",
        errno: Some("ETIMEDOUT"),
        ..Expect::default()
    });
    m
}

fn arms_the_trace(ev: &Value) -> bool {
    evidence_has(ev, "--trace-firewall: the next connections")
}

#[test]
fn trace_firewall_names_the_rule_counters_cannot_and_leaves_the_ruleset_as_found() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-trace");
    // Two drop rules without counters both match: only a trace can say which one fired (the
    // chain with the lower priority, in table inet nltest).
    let second_table = format!(
        "table ip nltest2 {{\n chain output {{\n  type filter hook output priority 10;\n  ip daddr {SERVER4} drop\n }}\n}}\n"
    );
    let rules = chain("output", &["tcp dport 443 drop"]) + &second_table;
    h.client.nft(&rules).unwrap();
    let before = ruleset(&h.client);
    let dst = format!("{SERVER4}:443");

    let w = watch_tracing(&h.client);
    let table = format!("netladder_trace_{}", w.pid());
    let first = trace_round(&h, &w, &dst, |_| true);
    if !hook_attached(&w, "kfree_skb") {
        w.stop().unwrap();
        assert_eq!(
            ruleset(&h.client),
            before,
            "nothing traced, nothing changed"
        );
        skip("kfree_skb drop reasons are not available: no firewall drop is seen, none traced");
        return;
    }
    assert_eq!(first["cause"], "firewall_drop", "{first:#}");
    assert!(
        arms_the_trace(&first),
        "the first failure arms the trace: {first:#}"
    );
    assert!(
        ruleset(&h.client).contains(&table),
        "the trace table {table} is in place while tracing"
    );
    // From then on, every client's failure names the rule the trace saw.
    traced_round(&h, &w, &dst).each(|_, second| {
        let fw = rule_is(
            second,
            ("nftables", "inet", "nltest", "output", "output", "traced"),
        );
        text_has(fw, "tcp dport 443 drop");
        assert!(
            evidence_has(
                second,
                "dropped by nftables: table inet nltest, chain output"
            ),
            "{second:#}"
        );
    });
    w.stop().unwrap();
    assert_eq!(ruleset(&h.client), before, "after Ctrl-C, byte for byte");

    // Killed while tracing: the table goes with the process (5.12+) or at the next start.
    let w = watch_tracing(&h.client);
    let ev = trace_round(&h, &w, &dst, arms_the_trace);
    assert!(arms_the_trace(&ev));
    w.kill().unwrap();
    let w = watch_netns(&h.client);
    assert_eq!(
        ruleset(&h.client),
        before,
        "after SIGKILL and a new start, byte for byte"
    );
    w.stop().unwrap();
}

#[test]
fn trace_firewall_names_an_iptables_nft_rule_on_the_peer() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("fw-trace-ipt");
    h.server
        .iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "8443", "-j", "DROP"])
        .unwrap();
    let before = ruleset(&h.server);
    let dst = format!("{SERVER4}:8443");
    let w = watch_tracing(&h.client);
    let first = trace_round(&h, &w, &dst, |_| true);
    if !hook_attached(&w, "kfree_skb") {
        w.stop().unwrap();
        skip("kfree_skb drop reasons are not available: no firewall drop is seen, none traced");
        return;
    }
    assert!(arms_the_trace(&first), "{first:#}");
    traced_round(&h, &w, &dst).each(|_, second| {
        let fw = rule_is(
            second,
            ("iptables-nft", "ip", "filter", "INPUT", "input", "traced"),
        );
        text_has(fw, "8443");
    });
    w.stop().unwrap();
    assert_eq!(
        ruleset(&h.server),
        before,
        "the peer's ruleset, byte for byte"
    );
}

/// Removes a file when dropped, also when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_trace_table_left_by_a_run_killed_on_an_old_kernel_is_removed_at_the_next_start() {
    let Some(_one) = root_serial() else {
        return;
    };
    // Before 5.12 the table outlives a killed netladder; what such a run leaves behind is a
    // table without owner and the state file naming its namespace. Recreate exactly that.
    let h = two_hosts("fw-leftover");
    let before = ruleset(&h.client);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let table = format!("netladder_trace_{dead}");
    h.client
        .nft(&format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority -2147483648;\n }}\n}}\n"
        ))
        .unwrap();
    std::fs::create_dir_all("/run/netladder").unwrap();
    let state = RemoveOnDrop(format!("/run/netladder/trace-{dead}").into());
    std::fs::write(&state.0, format!("{}\n", h.client.inode())).unwrap();
    assert!(ruleset(&h.client).contains(&table));

    let w = watch_netns(&h.server);
    let (_, stderr) = w.stop().unwrap();
    assert_eq!(ruleset(&h.client), before, "the leftover table is gone");
    assert!(
        stderr.contains(&format!("removed the trace table inet {table}")),
        "netladder says what it removed: {stderr}"
    );
    assert!(!state.0.exists(), "the state file is gone");
}

#[test]
fn conntrack_invalid_reply_dropped_after_a_notrack_rule_is_named() {
    let Some(_one) = root_serial() else {
        return;
    };
    // A classic: a notrack rule exempts the outgoing SYN from connection tracking, so the
    // server's SYN-ACK arrives for a connection conntrack never saw: INVALID, and dropped.
    let h = two_hosts("fw-ctinvalid");
    let _server = Peer::listen(Some(&h.server), &format!("{SERVER4}:7000"), &[]).unwrap();
    h.client
        .nft(&format!(
            "table inet nltest {{\n chain raw {{\n  type filter hook output priority -300;\n  tcp dport 7000 notrack\n }}\n{}",
            chain("input", &["ct state invalid counter drop"]).trim_start_matches("table inet nltest {\n")
        ))
        .unwrap();
    provoke(&h, 7000, "ETIMEDOUT", ("023", "firewall_drop"), |ev| {
        let fw = rule_is(
            ev,
            ("nftables", "inet", "nltest", "input", "input", "likely"),
        );
        text_has(fw, "ct state invalid");
        assert!(fw["packets"].as_u64().is_some_and(|n| n >= 1), "{ev:#}");
        assert!(
            evidence_has(ev, "connection tracking found the packet INVALID"),
            "{ev:#}"
        );
    });
}

#[test]
fn reject_with_icmp_port_unreachable_on_the_peer_is_told_from_a_closed_port() {
    let Some(_one) = root_serial() else {
        return;
    };
    // The client gets ECONNREFUSED as from a closed port, yet a listener is there: the peer's
    // firewall answered for it.
    let h = two_hosts("fw-icmpport");
    let _srv = Peer::listen(Some(&h.server), &format!("{SERVER4}:9090"), &[]).unwrap();
    h.server
        .iptables(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "9090",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-port-unreachable",
        ])
        .unwrap();
    provoke(
        &h,
        9090,
        "ECONNREFUSED",
        ("021", "firewall_reject_icmp"),
        |ev| {
            let fw = rule_is(
                ev,
                ("iptables-nft", "ip", "filter", "INPUT", "input", "certain"),
            );
            text_has(fw, "--reject-with icmp-port-unreachable");
            assert!(
                fw["packets"].as_u64().is_some_and(|n| n >= 1),
                "the SYNs were counted: {ev:#}"
            );
        },
    );
}
