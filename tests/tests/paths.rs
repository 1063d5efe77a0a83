//! Issue-15 scenarios: the paths a connection really takes. A peer's firewall REJECT answering
//! with ICMP port-unreachable, a router between client and server answering from its routes
//! (prohibit, no route) and from its firewall (admin-prohibited, net-unreachable), and a
//! server whose reverse-path filter drops a SYN that came in by another link than the route
//! back (asymmetric routing). Each failure is made by every client of the matrix (blocking,
//! non-blocking with poll and epoll, curl, python asyncio) under one `netladder watch`, and each
//! client's event must carry the same code, cause, layer, errno and evidence: the rule when it
//! is on this host, the router that answered.
//!
//! Every watch here is limited with `--netns` to the client's namespace: the router and the
//! server are other namespaces, and their answers and drops must still be named.
//! Run as root (they print NL-SKIP otherwise).
use std::time::Duration;

use netladder_tests::*;
use serde_json::Value;

/// The clients that can give up do so after 1.5 s (one SYN retransmit at 1 s has been sent).
const GIVE_UP: Wait = Wait::GiveUpAfter(Duration::from_millis(1500));

/// client (10.233.1.1) -- router (10.233.1.254 | 10.233.2.254) -- server (10.233.2.2), IPv6
/// alike (fd00:233:1::/64, fd00:233:2::/64). The client and the server route everything through
/// the router, which forwards and answers ICMP errors without rate limit (the matrix sends
/// several SYNs per second to the same place).
struct Routed {
    client: Netns,
    router: Netns,
    server: Netns,
}

const CLIENT: &str = "10.233.1.1";
const ROUTER: &str = "10.233.1.254";
const ROUTER6: &str = "fd00:233:1::254";
const SERVER: &str = "10.233.2.2";

impl Routed {
    fn new(tag: &str) -> Routed {
        let client = Netns::new(&format!("{tag}-c")).unwrap();
        let router = Netns::new(&format!("{tag}-r")).unwrap();
        let server = Netns::new(&format!("{tag}-s")).unwrap();
        veth(
            &client,
            &[&format!("{CLIENT}/24"), "fd00:233:1::1/64"],
            &router,
            &[&format!("{ROUTER}/24"), &format!("{ROUTER6}/64")],
        )
        .unwrap();
        veth(
            &router,
            &["10.233.2.254/24", "fd00:233:2::254/64"],
            &server,
            &[&format!("{SERVER}/24"), "fd00:233:2::2/64"],
        )
        .unwrap();
        for (ns, v4, v6) in [
            (&client, ROUTER, ROUTER6),
            (&server, "10.233.2.254", "fd00:233:2::254"),
        ] {
            ns.ip(&["route", "add", "default", "via", v4]).unwrap();
            ns.ip(&["-6", "route", "add", "default", "via", v6])
                .unwrap();
        }
        client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
        router.sysctl("net.ipv4.ip_forward", "1").unwrap();
        router.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        router.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
        router.sysctl("net.ipv6.icmp.ratelimit", "0").unwrap();
        Routed {
            client,
            router,
            server,
        }
    }
}

/// Every client from `ns` to `dst`, each event checked against `x`.
/// The failures here are answered by an ICMP error: where the kernel shows none, the clients
/// that read SO_ERROR get the degraded check (see `Matrix::expect_answered`).
/// The router's own answers (from its routes) are rate limited per source address by host-wide
/// settings: the clients are a second apart (see `Matrix::run_spaced`).
fn every_client(w: &Watch, ns: &Netns, dst: &str, wait: Wait, x: Expect) -> Matrix {
    let gap = Duration::from_secs(1);
    let mut m = Matrix::run_spaced(w, ns, dst, &Client::ALL, wait, gap);
    m.expect_answered(w, &x);
    m
}

/// Whether the kernel shows who sent an ICMP error.
fn icmp_seen(w: &Watch) -> bool {
    icmp_signal(w)
}

/// Whether the kernel shows packet drops (kfree_skb with drop reasons, 5.17+).
fn drops_seen(w: &Watch) -> bool {
    hook_attached(w, "kfree_skb")
}

fn has(ev: &Value, needle: &str) {
    assert!(
        evidence_has(ev, needle),
        "evidence should mention {needle:?}: {ev:#}"
    );
}

fn lacks(ev: &Value, needle: &str) {
    let text = ev.to_string();
    assert!(!text.contains(needle), "must not say {needle:?}: {ev:#}");
}

/// The named rule's (backend, family, table, chain, hook, certainty).
fn rule_is(ev: &Value, want: (&str, &str, &str, &str, &str, &str)) {
    let fw = &ev["firewall"];
    let got = [
        &fw["backend"],
        &fw["family"],
        &fw["table"],
        &fw["chain"],
        &fw["hook"],
        &fw["certainty"],
    ]
    .map(|v| v.as_str().unwrap_or("(none)").to_string());
    let want = [want.0, want.1, want.2, want.3, want.4, want.5].map(str::to_string);
    assert_eq!(got, want, "firewall rule: {ev:#}");
}

/// The peer's firewall answers the SYN with an ICMP port-unreachable although a listener is
/// there: an nftables `reject with icmp type port-unreachable` and an iptables `-j REJECT`
/// (icmp-port-unreachable) in the server's namespace of this host. Every client gets
/// ECONNREFUSED at once; each event is #021, a firewall REJECT via ICMP, with the rule named.
#[test]
fn peer_reject_with_icmp_port_unreachable_nft_and_iptables() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = TwoHosts::new("peer-reject", &["10.233.0.1/24"], &["10.233.0.2/24"]).unwrap();
    h.server.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    let _nft = Peer::listen(Some(&h.server), "10.233.0.2:9100", &[]).unwrap();
    let _ipt = Peer::listen(Some(&h.server), "10.233.0.2:9101", &[]).unwrap();
    h.server
        .nft(
            "table inet nltest {\n chain input {\n  type filter hook input priority 0;\n  \
             tcp dport 9100 counter reject with icmp type port-unreachable\n }\n}\n",
        )
        .unwrap();
    h.server
        .iptables(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "9101",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-port-unreachable",
        ])
        .unwrap();
    let w = watch_netns(&h.client);
    let (drops, icmp) = (drops_seen(&w), icmp_seen(&w));
    for (port, rule) in [
        (
            9100,
            ("nftables", "inet", "nltest", "input", "input", "certain"),
        ),
        (
            9101,
            ("iptables-nft", "ip", "filter", "INPUT", "input", "certain"),
        ),
    ] {
        let dst = format!("10.233.0.2:{port}");
        let m = every_client(
            &w,
            &h.client,
            &dst,
            Wait::Kernel,
            Expect {
                code: "021",
                cause: "firewall_reject_icmp",
                layer: "firewall",
                errno: Some("ECONNREFUSED"),
                not_evidence: &["RST received"],
                summary: &["port-unreachable"],
                ..Expect::default()
            },
        );
        m.each(|_, ev| {
            if icmp {
                has(ev, "port unreachable, code 3) from 10.233.0.2");
            }
            if drops {
                has(ev, "NETFILTER_DROP");
                has(ev, &format!("in netns {}", h.server.inode()));
                rule_is(ev, rule);
            } else {
                assert!(
                    ev.get("firewall").is_none(),
                    "no drops seen, no rule: {ev:#}"
                );
            }
        });
    }
    w.stop().unwrap();
}

/// The router's routes answer: a `prohibit` route (ICMP communication administratively
/// prohibited, code 13; ICMPv6 administratively prohibited, which the client gets as EACCES)
/// and no route at all (ICMP net unreachable: ENETUNREACH). Each event names the router.
#[test]
fn a_router_s_prohibit_route_and_missing_route_name_the_router() {
    let Some(_one) = root_serial() else {
        return;
    };
    let n = Routed::new("rt-routes");
    n.router
        .ip(&["route", "add", "prohibit", "10.233.10.0/24"])
        .unwrap();
    n.router
        .ip(&["-6", "route", "add", "prohibit", "fd00:233:10::/64"])
        .unwrap();
    // 10.233.11.0/24: the router has no route for it (and no default route).
    let w = watch_netns(&n.client);
    let icmp = icmp_seen(&w);

    for (dst, errno, router, words) in [
        (
            "10.233.10.5:80",
            "EHOSTUNREACH",
            ROUTER,
            "communication administratively prohibited, code 13",
        ),
        (
            "[fd00:233:10::5]:80",
            "EACCES",
            ROUTER6,
            "administratively prohibited, code 1",
        ),
    ] {
        let m = every_client(
            &w,
            &n.client,
            dst,
            Wait::Kernel,
            // Without the ICMP answer (no fentry and no consume_skb: 5.10 and 6.1 with the
            // optional hooks off) only the socket's error is left: no route to the host, and
            // the route look-up (in the router's namespace where drops are seen) says which.
            if icmp {
                Expect {
                    code: "022",
                    cause: "admin_prohibited",
                    layer: "firewall",
                    errno: Some(errno),
                    ..Expect::default()
                }
            } else {
                Expect {
                    code: "022",
                    cause: "host_unreachable",
                    layer: "route",
                    errno: Some(errno),
                    ..Expect::default()
                }
            },
        );
        m.each(|_, ev| {
            if icmp {
                has(ev, &format!("{words}) from {router}"));
                summary_has(ev, &format!("the router {router}"));
            }
        });
    }

    let m = every_client(
        &w,
        &n.client,
        "10.233.11.5:80",
        Wait::Kernel,
        Expect {
            code: "026",
            cause: "net_unreachable",
            layer: "route",
            errno: Some("ENETUNREACH"),
            ..Expect::default()
        },
    );
    m.each(|_, ev| {
        if icmp {
            has(ev, &format!("net unreachable, code 0) from {ROUTER}"));
            summary_has(ev, &format!("beyond {ROUTER}"));
        }
    });
    w.stop().unwrap();
}

/// The router's firewall answers in its forward chain: `reject with icmp type admin-prohibited`,
/// `reject with icmpx type admin-prohibited` (#022) and `reject with icmp type net-unreachable`
/// (#026). The rules are on this host: each event names the rule, in the router's namespace.
#[test]
fn a_router_s_firewall_reject_names_the_rule() {
    let Some(_one) = root_serial() else {
        return;
    };
    let n = Routed::new("rt-fw");
    let _servers: Vec<Peer> = [8000, 8001, 8002]
        .iter()
        .map(|port| Peer::listen(Some(&n.server), &format!("{SERVER}:{port}"), &[]).unwrap())
        .collect();
    n.router
        .nft(
            "table inet nltest {\n chain forward {\n  type filter hook forward priority 0;\n  \
             meta nfproto ipv4 tcp dport 8000 counter reject with icmp type admin-prohibited\n  \
             tcp dport 8001 counter reject with icmpx type admin-prohibited\n  \
             meta nfproto ipv4 tcp dport 8002 counter reject with icmp type net-unreachable\n \
             }\n}\n",
        )
        .unwrap();
    let w = watch_netns(&n.client);
    let (drops, icmp) = (drops_seen(&w), icmp_seen(&w));
    for (port, code, errno, words) in [
        (
            8000,
            "022",
            "EHOSTUNREACH",
            "communication administratively prohibited, code 13",
        ),
        (
            8001,
            "022",
            "EHOSTUNREACH",
            "communication administratively prohibited, code 13",
        ),
        (8002, "026", "ENETUNREACH", "net unreachable, code 0"),
    ] {
        let dst = format!("{SERVER}:{port}");
        let mut m = Matrix::run(&w, &n.client, &dst, &Client::ALL, Wait::Kernel);
        if drops {
            m.expect_answered(
                &w,
                &Expect {
                    code,
                    cause: "firewall_reject_icmp",
                    layer: "firewall",
                    errno: Some(errno),
                    evidence: &["NETFILTER_DROP"],
                    ..Expect::default()
                },
            );
        } else {
            // The REJECT in another namespace is invisible without drop reasons: the answer
            // reads as the router's, never as a local rule.
            m.expect_answered(
                &w,
                &Expect {
                    code,
                    errno: Some(errno),
                    ..Expect::default()
                },
            );
        }
        m.each(|_, ev| {
            if icmp {
                has(ev, &format!("{words}) from {ROUTER}"));
            }
            if drops {
                has(ev, &format!("in netns {}", n.router.inode()));
                rule_is(
                    ev,
                    (
                        "nftables", "inet", "nltest", "forward", "forward", "certain",
                    ),
                );
                assert!(
                    ev["firewall"]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("tcp dport {port}"))),
                    "the rule of port {port}: {ev:#}"
                );
            }
        });
    }
    w.stop().unwrap();
}

/// Asymmetric routing: the client's SYN comes from 10.233.30.1 over the direct link, but the
/// server's route back to 10.233.30.0/24 leaves by its other link, and its reverse-path filter
/// is strict (rp_filter=1): the server's kernel drops the SYN. The event must say that this
/// host dropped it (reason, namespace, interface, direction, the rp_filter setting), layer
/// route, and never that nothing dropped it.
#[test]
fn reverse_path_filter_drop_on_the_server_is_named() {
    let Some(_one) = root_serial() else {
        return;
    };
    let client = Netns::new("rpf-c").unwrap();
    let server = Netns::new("rpf-s").unwrap();
    let other = Netns::new("rpf-o").unwrap();
    let (cdev, sdev) = veth(&client, &["10.233.20.1/24"], &server, &["10.233.20.2/24"]).unwrap();
    veth(&server, &["10.233.21.2/24"], &other, &["10.233.21.3/24"]).unwrap();
    client
        .ip(&["addr", "add", "10.233.30.1/32", "dev", &cdev])
        .unwrap();
    client
        .ip(&[
            "route",
            "replace",
            "10.233.20.2/32",
            "dev",
            &cdev,
            "src",
            "10.233.30.1",
        ])
        .unwrap();
    // Address resolution asks from 10.233.20.1 (the address of that link), so the server's
    // filter lets the ARP through and answers it: only the SYN is refused.
    client
        .sysctl(&format!("net.ipv4.conf.{cdev}.arp_announce"), "2")
        .unwrap();
    client.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    server
        .ip(&["route", "add", "10.233.30.0/24", "via", "10.233.21.3"])
        .unwrap();
    for conf in ["all", "default", sdev.as_str()] {
        server
            .sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "1")
            .unwrap();
    }
    let _srv = Peer::listen(Some(&server), "10.233.20.2:8080", &[]).unwrap();
    let w = watch_netns(&client);
    let drops = drops_seen(&w);
    let m = Matrix::run(&w, &client, "10.233.20.2:8080", &Client::ALL, GIVE_UP);
    if drops {
        m.expect(&Expect {
            code: "023",
            cause: "reverse_path_drop",
            layer: "route",
            errno: Some("ETIMEDOUT"),
            ..Expect::default()
        });
        m.each(|_, ev| {
            assert_eq!(
                ev["src"].as_str().map(|s| s.split(':').next()),
                Some(Some("10.233.30.1"))
            );
            has(ev, &format!("in netns {}", server.inode()));
            let text = ev.to_string();
            assert!(
                text.contains("IP_RPFILTER") || text.contains("IP_INNOROUTES"),
                "the drop reason: {ev:#}"
            );
            assert!(text.contains("rp_filter"), "the rp_filter setting: {ev:#}");
            assert!(text.contains(&sdev), "the interface it came in on: {ev:#}");
            lacks(ev, "nothing dropped it");
        });
    } else {
        // Without drop reasons the drop cannot be seen: a timeout without an answer, and no
        // claim that nothing dropped it.
        m.expect(&Expect {
            code: "023",
            layer: "route",
            errno: Some("ETIMEDOUT"),
            ..Expect::default()
        });
        m.each(|_, ev| lacks(ev, "nothing dropped it"));
    }
    w.stop().unwrap();
}
