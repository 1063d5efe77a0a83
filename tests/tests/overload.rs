//! #023 `accept_queue_full`: a listener that never accepts, its accept queue filled by real
//! connections, and a client whose next connection times out. The kernel drops that client's
//! SYNs without a drop reason, so netladder reads the listener over sock_diag and its namespace's
//! TcpExt counters: the client's timeout names the listener, and the server side reports the
//! overloaded listener on its own. Run as root (NL-SKIP otherwise).
use std::time::Duration;

use netladder_tests::*;
use serde_json::Value;

const CLIENT4: &str = "10.233.0.1";
const SERVER4: &str = "10.233.0.2";
/// Seconds between two reports of one overloaded listener (`--stats-interval`).
const INTERVAL: &str = "2";
const SETTLE: Duration = Duration::from_millis(700);

fn two_hosts(tag: &str) -> TwoHosts {
    TwoHosts::new(
        tag,
        &[&format!("{CLIENT4}/24")],
        &[&format!("{SERVER4}/24")],
    )
    .expect("two hosts")
}

/// A listener with backlog 1 that never accepts, and its queue filled: two connections made and
/// closed by the client (closed connections stay queued until accepted), so Recv-Q is 2 and
/// the next SYN overflows it.
fn stuck_listener(h: &TwoHosts, port: u16) -> Peer {
    let addr = format!("{SERVER4}:{port}");
    let peer = Peer::listen(Some(&h.server), &addr, &["--backlog", "1", "--no-accept"])
        .expect("the stuck listener starts");
    let filled = connect(Some(&h.client), &addr, &["--count", "2"]).unwrap();
    assert!(
        filled.status.success() && filled.lines == ["ok", "ok"],
        "both connections fit in the queue: {filled:?}"
    );
    let ss = h
        .server
        .exec(&["ss", "-Hltn", &format!("sport = :{port}")])
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    assert!(
        ss.split_whitespace().nth(1) == Some("2") && ss.split_whitespace().nth(2) == Some("1"),
        "ss -ltn shows Recv-Q 2, Send-Q 1: {ss:?}"
    );
    peer
}

/// The client's connection that the full queue makes time out (its own 3 s timeout).
fn timed_out_client(h: &TwoHosts, port: u16) {
    fails_with(
        connect(
            Some(&h.client),
            &format!("{SERVER4}:{port}"),
            &["--timeout", "3"],
        )
        .unwrap(),
        "TIMEOUT_APP",
    );
}

fn has(ev: &Value, needle: &str) {
    assert!(
        evidence_has(ev, needle),
        "evidence should mention {needle:?}: {ev:#}"
    );
}

/// The namespace's ListenOverflows total, read with the same file `nstat` reads.
fn listen_overflows(ns: &Netns) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/netstat"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .find_map(|pair| {
            let names = pair.first()?.strip_prefix("TcpExt:")?;
            let values = pair.get(1)?.strip_prefix("TcpExt:")?;
            let at = names
                .split_whitespace()
                .position(|n| n == "ListenOverflows")?;
            values.split_whitespace().nth(at)?.parse().ok()
        })
        .expect("TcpExt ListenOverflows in /proc/net/netstat")
}

/// Checks a server-side event of the stuck listener: its process, address, queue and counts.
fn server_event(ev: &Value, server: &Netns, peer: &Peer, port: u16) {
    assert_eq!(ev["code"], "023", "{ev:#}");
    assert_eq!(ev["cause"], "accept_queue_full", "{ev:#}");
    assert_eq!(ev["layer"], "application", "{ev:#}");
    assert_eq!(ev["side"], "server", "{ev:#}");
    assert_eq!(ev["pid"].as_u64(), Some(u64::from(peer.pid())), "{ev:#}");
    assert_eq!(ev["comm"], "nl-peer", "{ev:#}");
    assert_eq!(ev["netns"].as_u64(), Some(server.inode()), "{ev:#}");
    assert_eq!(ev["src"], format!("{SERVER4}:{port}"), "{ev:#}");
    assert!(ev["dst"].is_null(), "{ev:#}");
    let l = &ev["listener"];
    assert_eq!(l["addr"], format!("{SERVER4}:{port}"), "{ev:#}");
    assert_eq!(l["pid"].as_u64(), Some(u64::from(peer.pid())), "{ev:#}");
    assert_eq!(
        (l["recv_q"].as_u64(), l["backlog"].as_u64()),
        (Some(2), Some(1)),
        "{ev:#}"
    );
    assert!(l["listen_overflows"].as_u64().unwrap_or(0) >= 1, "{ev:#}");
    assert!(l["listen_drops"].as_u64().unwrap_or(0) >= 1, "{ev:#}");
    has(
        ev,
        "Recv-Q 2 (connections waiting to be accepted), Send-Q 1 (the backlog)",
    );
    has(ev, "TcpExtListenOverflows +");
    let next = ev["next"].to_string();
    assert!(
        next.contains(&format!("ss -ltnp 'sport = :{port}'")),
        "{ev:#}"
    );
    assert!(
        next.contains("TcpExtListenOverflows") && next.contains("somaxconn"),
        "{ev:#}"
    );
    assert!(
        next.contains(&format!("-p {}", peer.pid())),
        "the accept loop's process: {ev:#}"
    );
}

/// The server-side events of the listener on `port`, in order.
fn server_events(events: &[Value], port: u16) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "failure"
                && e["side"] == "server"
                && e["src"] == format!("{SERVER4}:{port}")
        })
        .cloned()
        .collect()
}

/// Once per interval: every report after the first counts from the one before it, so its window
/// is at least the interval (less half a poll: netladder polls every second); together they
/// count no more overflows than the namespace did.
fn once_per_interval(events: &[Value], server: &Netns) {
    let min_ms = INTERVAL.parse::<u64>().unwrap() * 1000 - 500;
    for ev in events.iter().skip(1) {
        let window = ev["listener"]["window_ms"].as_u64().unwrap_or(0);
        assert!(
            window >= min_ms,
            "reported again within the interval: {events:#?}"
        );
    }
    let reported: u64 = events
        .iter()
        .map(|e| e["listener"]["listen_overflows"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        reported <= listen_overflows(server),
        "more overflows reported than the namespace counted: {events:#?}"
    );
}

#[test]
fn full_accept_queue_client_and_server_side() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("aq");
    let port = 8080;
    let peer = stuck_listener(&h, port);
    let w = Watch::start(&[
        "--netns",
        &h.client.inode().to_string(),
        "--netns",
        &h.server.inode().to_string(),
        "--stats-interval",
        INTERVAL,
    ])
    .expect("netladder watch starts");
    timed_out_client(&h, port);
    let dst = format!("{SERVER4}:{port}");
    let ev = expect_single_failure(&w, |e| e["dst"] == dst, SETTLE).expect("the client's failure");
    assert_eq!(ev["code"], "023", "{ev:#}");
    assert_eq!(ev["cause"], "accept_queue_full", "{ev:#}");
    assert_eq!(ev["layer"], "application", "{ev:#}");
    assert_eq!(ev["side"], "client", "{ev:#}");
    assert_eq!(ev["comm"], "nl-peer", "the client process: {ev:#}");
    assert_eq!(ev["netns"].as_u64(), Some(h.client.inode()), "{ev:#}");
    let l = &ev["listener"];
    assert_eq!(l["addr"], dst, "{ev:#}");
    assert_eq!(l["pid"].as_u64(), Some(u64::from(peer.pid())), "{ev:#}");
    assert_eq!(l["comm"], "nl-peer", "{ev:#}");
    assert_eq!(l["netns"].as_u64(), Some(h.server.inode()), "{ev:#}");
    assert_eq!(
        (l["recv_q"].as_u64(), l["backlog"].as_u64()),
        (Some(2), Some(1)),
        "{ev:#}"
    );
    assert!(
        ev["summary"].as_str().unwrap().contains(&format!(
            "the accept queue of {dst} (nl-peer[{}], netns {}) is full",
            peer.pid(),
            h.server.inode()
        )),
        "{ev:#}"
    );
    assert!(
        !ev["summary"].as_str().unwrap().contains("nothing dropped"),
        "{ev:#}"
    );
    has(&ev, &format!("listener {dst} of nl-peer[{}]", peer.pid()));
    has(&ev, "Send-Q 1 (the backlog)");
    has(&ev, "TcpExtListenOverflows");
    has(&ev, "application closed the socket while still in SYN_SENT");
    // The client saw SYNs dropped: the poll, which read the server's namespace before the
    // connect, counted them.
    assert!(l["listen_overflows"].as_u64().unwrap_or(0) >= 1, "{ev:#}");
    let next = ev["next"].to_string();
    assert!(
        next.contains(&format!(
            "ip netns exec {} ss -ltnp 'sport = :{port}'",
            h.server.name()
        )),
        "the steps run in the listener's namespace: {ev:#}"
    );
    let first = w
        .wait_for(|e| e["side"] == "server", FAILURE_TIMEOUT)
        .expect("the server side's event");
    server_event(&first, &h.server, &peer, port);
    let (events, _) = w.stop().unwrap();
    let reports = server_events(&events, port);
    for ev in &reports {
        server_event(ev, &h.server, &peer, port);
    }
    once_per_interval(&reports, &h.server);
}

/// #023 `syn_queue_full`: a listener without syncookies whose SYN queue is held full by two
/// half-open connections (the client's own firewall drops their SYN-ACKs), and a client whose
/// SYNs the full queue drops. The kernel frees those SYNs without a drop reason; the listener's
/// namespace counts them (TcpExtTCPReqQFullDrop), and the client's timeout must name the
/// listener, never say that nothing dropped it.
#[test]
fn full_syn_queue_without_syncookies_names_the_listener() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("sq");
    let port = 8082;
    let victim_port = "40000";
    // The two half-open connections come from these ports.
    let holders = [41001, 41002];
    h.server
        .sysctl("net.ipv4.tcp_syncookies", "0")
        .expect("syncookies off in the server's namespace");
    // The half-open connections' SYN-ACKs never arrive; every other client still gets its
    // answers (none will come: its SYNs are dropped at the listener).
    h.client
        .nft(&format!(
            "table ip nlsq {{\n chain input {{\n type filter hook input priority 0;\n \
             tcp sport {port} tcp dport {{ {}, {} }} drop\n }}\n}}\n",
            holders[0], holders[1]
        ))
        .expect("the client's rule for the half-open connections");
    // The blocking client of the matrix waits for the kernel: two SYNs, about 3 s.
    h.client
        .sysctl("net.ipv4.tcp_syn_retries", "1")
        .expect("fewer SYN retries for the client");
    let addr = format!("{SERVER4}:{port}");
    let listener = Peer::listen(Some(&h.server), &addr, &["--backlog", "1", "--no-accept"])
        .expect("the listener starts");
    let w = Watch::start(&[
        "--netns",
        &h.client.inode().to_string(),
        "--netns",
        &h.server.inode().to_string(),
    ])
    .expect("netladder watch starts");
    assert!(
        hook_attached(&w, "inet_sock_set_state"),
        "{:#?}",
        w.events()
    );
    // Two half-open connections: the server keeps them in SYN-RECV, retransmitting its
    // SYN-ACK for about a minute, and a listener with backlog 1 holds no more.
    let half_open: Vec<netladder_tests::tls::Running> = holders
        .iter()
        .map(|from| {
            netladder_tests::tls::Running(
                h.client
                    .command(peer_bin())
                    .args(["connect", &addr, "--timeout", "30", "--bind"])
                    .arg(format!("{CLIENT4}:{from}"))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("a half-open connection"),
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ss = h
            .server
            .exec(&[
                "ss",
                "-Htn",
                "state",
                "syn-recv",
                &format!("sport = :{port}"),
            ])
            .unwrap();
        if String::from_utf8_lossy(&ss.stdout).lines().count() >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two connections in SYN-RECV: {}",
            String::from_utf8_lossy(&ss.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fails_with(
        connect(
            Some(&h.client),
            &addr,
            &[
                "--timeout",
                "3",
                "--bind",
                &format!("{CLIENT4}:{victim_port}"),
            ],
        )
        .unwrap(),
        "TIMEOUT_APP",
    );
    let src = format!("{CLIENT4}:{victim_port}");
    let ev = expect_single_failure(&w, |e| e["src"] == src, SETTLE).expect("the client's failure");
    assert_eq!(ev["code"], "023", "{ev:#}");
    assert_eq!(ev["cause"], "syn_queue_full", "{ev:#}");
    assert_eq!(ev["layer"], "application", "{ev:#}");
    assert_eq!(ev["dst"], addr, "{ev:#}");
    assert_eq!(ev["comm"], "nl-peer", "{ev:#}");
    let summary = ev["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "the SYN queue of {addr} (nl-peer[{}], netns {}) was full",
            listener.pid(),
            h.server.inode()
        )),
        "{ev:#}"
    );
    assert!(!summary.contains("nothing dropped"), "{ev:#}");
    let l = &ev["listener"];
    assert_eq!(l["addr"], addr, "{ev:#}");
    assert_eq!(l["pid"].as_u64(), Some(u64::from(listener.pid())), "{ev:#}");
    has(&ev, "TcpExtTCPReqQFullDrop +");
    has(&ev, "freed without a drop reason");
    // Every client the same: the blocking one the kernel ends, the others give up first.
    every_client_times_out(
        &w,
        &h.client,
        &addr,
        "syn_queue_full",
        &["TcpExtTCPReqQFullDrop +", "freed without a drop reason"],
    );
    drop(half_open);
    let _ = w.stop();
}

/// Every client of the matrix toward a full queue's listener at `addr`: each one's own event,
/// #023 with `cause`, layer application, the evidence lines `evidence`, and never a claim that
/// nothing dropped it. The clients that can give up do after 1.5 s; the blocking one waits for
/// the kernel (keep the client's tcp_syn_retries low).
fn every_client_times_out(w: &Watch, client: &Netns, addr: &str, cause: &str, evidence: &[&str]) {
    let m = Matrix::run(
        w,
        client,
        addr,
        &Client::ALL,
        Wait::GiveUpAfter(Duration::from_millis(1500)),
    );
    m.expect(&Expect {
        code: "023",
        cause,
        layer: "application",
        errno: Some("ETIMEDOUT"),
        evidence,
        not_evidence: &["nothing dropped"],
        ..Expect::default()
    });
    m.each(|_, ev| {
        assert!(
            !ev["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("nothing dropped"),
            "{ev:#}"
        );
    });
}

/// #023 `accept_queue_full` for every client of the matrix: the listener that never accepts,
/// its queue filled, and each client's SYNs dropped for it.
#[test]
fn full_accept_queue_every_client() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("aq-all");
    let port = 8083;
    h.client
        .sysctl("net.ipv4.tcp_syn_retries", "1")
        .expect("fewer SYN retries for the client");
    let _peer = stuck_listener(&h, port);
    let w = Watch::start(&[
        "--netns",
        &h.client.inode().to_string(),
        "--netns",
        &h.server.inode().to_string(),
    ])
    .expect("netladder watch starts");
    assert!(
        hook_attached(&w, "inet_sock_set_state"),
        "{:#?}",
        w.events()
    );
    every_client_times_out(
        &w,
        &h.client,
        &format!("{SERVER4}:{port}"),
        "accept_queue_full",
        &["Send-Q 1 (the backlog)", "TcpExtListenOverflows"],
    );
    let _ = w.stop();
}

#[test]
fn server_side_alone_with_netns_limited_to_the_server() {
    let Some(_one) = root_serial() else {
        return;
    };
    let h = two_hosts("aq-srv");
    let port = 8081;
    let peer = stuck_listener(&h, port);
    let w = Watch::start(&[
        "--netns",
        &h.server.inode().to_string(),
        "--stats-interval",
        INTERVAL,
    ])
    .expect("netladder watch starts");
    timed_out_client(&h, port);
    let ev = w
        .wait_for(|e| e["side"] == "server", FAILURE_TIMEOUT)
        .expect("the server side's event");
    server_event(&ev, &h.server, &peer, port);
    std::thread::sleep(SETTLE);
    let (events, _) = w.stop().unwrap();
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "failure" && e["side"] == "client"),
        "the client's namespace is not watched: {events:#?}"
    );
    let reports = server_events(&events, port);
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "failure")
            .all(|e| e["netns"].as_u64() == Some(h.server.inode())),
        "only the server's namespace: {events:#?}"
    );
    once_per_interval(&reports, &h.server);
}

#[test]
fn a_timeout_elsewhere_is_not_a_full_queue() {
    let Some(_one) = root_serial() else {
        return;
    };
    // Not on this host: the client's route leads into a link that swallows what it is sent
    // (dummy, or ifb where this kernel has no dummy), inside the client's own namespace; no
    // namespace here holds 10.233.9.9.
    let client = Netns::new("aq-none").unwrap();
    let sink = ["dummy", "ifb"]
        .into_iter()
        .find(|kind| client.ip(&["link", "add", "nlsink", "type", kind]).is_ok())
        .expect("a dummy or ifb link for the SYNs to vanish into");
    client
        .ip(&["addr", "add", "10.233.9.1/24", "dev", "nlsink"])
        .unwrap();
    client.ip(&["link", "set", "nlsink", "up"]).unwrap();
    println!("the SYNs vanish into a {sink} link");
    // On this host, with room: the server's listener takes connections, but the server has no
    // route back to the client (host addresses only), so its SYN-ACKs never leave.
    let c2 = Netns::new("aq-room-c").unwrap();
    let server = Netns::new("aq-room-s").unwrap();
    let (cdev, _) = veth(
        &c2,
        &[&format!("{CLIENT4}/32")],
        &server,
        &[&format!("{SERVER4}/32")],
    )
    .unwrap();
    c2.ip(&["route", "add", SERVER4, "dev", &cdev]).unwrap();
    let _srv = Peer::listen(Some(&server), &format!("{SERVER4}:8082"), &[]).unwrap();
    let w = Watch::start(&[
        "--netns",
        &client.inode().to_string(),
        "--netns",
        &c2.inode().to_string(),
    ])
    .expect("netladder watch starts");
    fails_with(
        connect(Some(&client), "10.233.9.9:8080", &["--timeout", "2"]).unwrap(),
        "TIMEOUT_APP",
    );
    let remote =
        expect_single_failure(&w, |e| e["dst"] == "10.233.9.9:8080", SETTLE).expect("one event");
    assert_eq!(
        (&remote["code"], &remote["cause"]),
        (&"023".into(), &"app_gave_up".into()),
        "{remote:#}"
    );
    assert!(
        remote.get("side").is_none() && remote.get("listener").is_none(),
        "{remote:#}"
    );
    assert!(
        !evidence_has(&remote, "the destination is in netns"),
        "{remote:#}"
    );

    fails_with(
        connect(Some(&c2), &format!("{SERVER4}:8082"), &["--timeout", "2"]).unwrap(),
        "TIMEOUT_APP",
    );
    let dst = format!("{SERVER4}:8082");
    let local = expect_single_failure(&w, |e| e["dst"] == dst, SETTLE).expect("one event");
    assert_eq!(
        (&local["code"], &local["cause"]),
        (&"023".into(), &"app_gave_up".into()),
        "{local:#}"
    );
    assert!(local.get("listener").is_none(), "{local:#}");
    has(
        &local,
        &format!(
            "the destination is in netns {} on this host: its listener {dst}",
            server.inode()
        ),
    );
    has(&local, "not full");
    w.stop().unwrap();
}
