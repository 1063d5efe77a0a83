use std::net::SocketAddr;

use netladder_common::{eflag, verdict};

use super::*;

const MS: u64 = 1_000_000;

fn dst() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

fn proc_(pid: u32) -> Proc {
    Proc {
        pid,
        tid: pid,
        comm: "curl".into(),
        cgroup_id: 7,
        netns: 4026531840,
    }
}

fn conn(v: u32, err: i32, flags: u32, drops: Drops, retrans: u32, ts: u64) -> Observation {
    Observation {
        kind: Kind::Conn { verdict: v },
        ts_ns: ts,
        sk: 0xffff_8880_1234_0000,
        proc: proc_(4211),
        src: Some("127.0.0.1:51234".parse().unwrap()),
        dst: Some(dst()),
        err,
        syn_retrans: retrans,
        flags,
        duration_ns: Some(3_000 * MS),
        drops,
        icmp: None,
        agg: None,
    }
}

fn syscall(err: i32, ts: u64) -> Observation {
    Observation {
        kind: Kind::Syscall { call: "connect" },
        ts_ns: ts,
        sk: 0,
        proc: proc_(4211),
        src: None,
        dst: Some(dst()),
        err,
        syn_retrans: 0,
        flags: 0,
        duration_ns: None,
        drops: Drops::default(),
        icmp: None,
        agg: None,
    }
}

fn nosock() -> Drops {
    Drops {
        no_socket: 1,
        netns: 0,
        last_reason: Some("NO_SOCKET".into()),
        ..Drops::default()
    }
}

fn nf(n: u32, location: &str, outgoing: bool) -> Drops {
    Drops {
        netfilter: n,
        last_reason: Some("NETFILTER_DROP".into()),
        location: Some(location.into()),
        outgoing,
        incoming: !outgoing,
        ifindex: if outgoing { 0 } else { 1 },
        ..Drops::default()
    }
}

#[test]
fn local_refusal_without_listener() {
    let mut c = Classifier::new();
    let out = c.feed(
        conn(
            verdict::REFUSED_NO_LISTENER,
            111,
            eflag::RST_RECEIVED,
            nosock(),
            0,
            10,
        ),
        10,
    );
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(
        (f.code, f.cause, f.layer),
        (Code::Refused, Cause::NoListener, Layer::Application)
    );
    assert_eq!(
        f.lookup,
        Lookup::Listeners,
        "falls back to the client's netns"
    );
    assert_eq!(f.errno, Some(111));
    assert!(f.evidence.iter().any(|e| e.contains("RST received")));
    assert!(f.evidence.iter().any(|e| e.contains("NO_SOCKET")));
}

#[test]
fn firewall_reset_is_firewall_not_no_listener() {
    let mut c = Classifier::new();
    let d = nf(1, "nft_do_chain+0x2f4", false);
    let out = c.feed(
        conn(
            verdict::FIREWALL_REJECT_RST,
            111,
            eflag::RST_RECEIVED,
            d,
            0,
            10,
        ),
        10,
    );
    let f = &out[0];
    assert_eq!(
        (f.code, f.cause, f.layer),
        (Code::Refused, Cause::FirewallRejectRst, Layer::Firewall)
    );
    assert!(f.summary.contains("nftables, input"), "{}", f.summary);
    assert!(f
        .evidence
        .iter()
        .any(|e| e.contains("NETFILTER_DROP at nft_do_chain+0x2f4")));
}

#[test]
fn icmp_reject_without_local_drop_blames_the_path() {
    let mut c = Classifier::new();
    let out = c.feed(
        conn(
            verdict::FIREWALL_REJECT_ICMP,
            111,
            0,
            Drops::default(),
            0,
            10,
        ),
        10,
    );
    assert_eq!(out[0].cause, Cause::FirewallRejectIcmp);
    assert!(out[0].summary.contains("no local drop seen"));
}

#[test]
fn timeout_with_local_drops_counts_them() {
    let mut c = Classifier::new();
    let d = nf(3, "nf_hook_slow+0x9a", true);
    let out = c.feed(conn(verdict::TIMEOUT_LOCAL_DROP, 110, 0, d, 2, 10), 10);
    let f = &out[0];
    assert_eq!(
        (f.code, f.cause, f.layer),
        (Code::Timeout, Cause::FirewallDrop, Layer::Firewall)
    );
    assert!(f.summary.contains("3 packets"));
    assert!(f.summary.contains("output"));
    assert!(f
        .evidence
        .iter()
        .any(|e| e.starts_with("3 SYNs sent (2 retransmits")));
    assert!(f
        .evidence
        .iter()
        .any(|e| e.contains("ETIMEDOUT after 3.0 s")));
}

#[test]
fn timeout_without_drop_and_application_gave_up() {
    let mut c = Classifier::new();
    let out = c.feed(
        conn(verdict::TIMEOUT_NO_REPLY, 110, 0, Drops::default(), 6, 10),
        10,
    );
    assert_eq!((out[0].cause, out[0].layer), (Cause::NoReply, Layer::Route));
    // The enrichment checks for a full listen queue when the destination is on this host.
    assert_eq!(out[0].lookup, Lookup::ListenQueue);
    let mut c = Classifier::new();
    let out = c.feed(
        conn(
            verdict::TIMEOUT_NO_REPLY,
            0,
            eflag::APP_GAVE_UP,
            Drops::default(),
            1,
            10,
        ),
        10,
    );
    assert_eq!(out[0].cause, Cause::AppGaveUp);
    assert_eq!(out[0].lookup, Lookup::ListenQueue);
    assert_eq!(out[0].errno, None);
    assert!(out[0]
        .evidence
        .iter()
        .any(|e| e.contains("application closed the socket")));
    // The retries the kernel tried but that never left (an OUTPUT drop where no drop is seen).
    let mut c = Classifier::new();
    let out = c.feed(
        conn(
            verdict::TIMEOUT_NO_REPLY,
            0,
            eflag::APP_GAVE_UP | eflag::RETRIES_NOT_SENT,
            Drops::default(),
            1,
            10,
        ),
        10,
    );
    assert_eq!(out[0].cause, Cause::AppGaveUp);
    assert!(
        out[0].evidence.iter().any(|e| e
            .contains("the kernel tried the SYN 2 times, but fewer retries left this host's TCP")),
        "{:?}",
        out[0].evidence
    );
    assert!(!out[0].evidence.iter().any(|e| e.contains("SYNs sent")));
}

#[test]
fn duplicate_summary_is_reported_once() {
    let mut c = Classifier::new();
    let ev = conn(
        verdict::REFUSED_PEER,
        111,
        eflag::RST_RECEIVED,
        Drops::default(),
        0,
        10,
    );
    assert_eq!(c.feed(ev.clone(), 10).len(), 1);
    assert_eq!(c.feed(ev, 20).len(), 0);
}

#[test]
fn a_syscall_error_is_an_attempt_of_its_own_even_beside_a_summary() {
    // The kernel reports each connect once: a syscall error comes from an attempt whose socket
    // was not tracked. In a storm toward one destination it must not vanish into the summary
    // of another attempt, before or after it.
    let mut c = Classifier::new();
    let ev = |ts| {
        conn(
            verdict::REFUSED_PEER,
            111,
            eflag::RST_RECEIVED,
            Drops::default(),
            0,
            ts,
        )
    };
    assert_eq!(c.feed(ev(10), 10).len(), 1);
    let alone = c.feed(syscall(111, 11), 11);
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].code, Code::Refused);
    assert!(alone[0]
        .evidence
        .iter()
        .any(|e| e == "connect() returned ECONNREFUSED"));
    assert_eq!(c.feed(ev(12), 12).len(), 1);
}

#[test]
fn syscall_errors_are_reported_at_once() {
    let mut c = Classifier::new();
    let out = c.feed(syscall(101, 5), 5);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].code, out[0].cause),
        (Code::NetUnreachable, Cause::NetUnreachable)
    );
    // Two errors are two attempts.
    assert_eq!(c.feed(syscall(101, 6), 6).len(), 1);
}

#[test]
fn errors_outside_the_ladder_are_counted_not_dropped_silently() {
    let mut c = Classifier::new();
    assert!(c.feed(syscall(22, 5), 5).is_empty());
    assert_eq!(c.ledger().unclassified, 1);
}

#[test]
fn same_destination_other_process_is_not_merged() {
    let mut c = Classifier::new();
    c.feed(
        conn(
            verdict::REFUSED_PEER,
            111,
            eflag::RST_RECEIVED,
            Drops::default(),
            0,
            10,
        ),
        10,
    );
    let mut other = syscall(111, 11);
    other.proc.pid = 999;
    let out = c.feed(other, 11);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].proc.pid, 999);
}

#[test]
fn listener_lookup_goes_to_the_namespace_that_dropped_the_syn() {
    let mut c = Classifier::new();
    let d = Drops {
        netns: 4026532999,
        ..nosock()
    };
    let out = c.feed(
        conn(
            verdict::REFUSED_NO_LISTENER,
            111,
            eflag::RST_RECEIVED,
            d,
            0,
            10,
        ),
        10,
    );
    assert_eq!(out[0].evidence_netns, 4026532999);
}

#[test]
fn failed_neighbour_resolution_is_the_link_layer() {
    let mut c = Classifier::new();
    let d = Drops {
        other: 2,
        last_reason: Some("NEIGH_FAILED".into()),
        ..Drops::default()
    };
    let out = c.feed(conn(verdict::HOST_UNREACHABLE, 113, 0, d, 1, 10), 10);
    assert_eq!(
        (out[0].code, out[0].cause, out[0].layer),
        (Code::ArpFailed, Cause::NeighbourFailed, Layer::Link)
    );
    assert_eq!(out[0].lookup, Lookup::Neighbour);
    let out = c.feed(
        Observation {
            sk: 2,
            ..conn(verdict::HOST_UNREACHABLE, 113, 0, Drops::default(), 0, 20)
        },
        20,
    );
    assert_eq!((out[0].code, out[0].lookup), (Code::NoRoute, Lookup::Route));
}

#[test]
fn bind_and_listen_errors_are_reported_at_once() {
    let mut c = Classifier::new();
    let mut bind = syscall(98, 5);
    bind.kind = Kind::Syscall { call: "bind" };
    bind.dst = None;
    bind.src = Some("127.0.0.1:9100".parse().unwrap());
    let out = c.feed(bind.clone(), 5);
    assert_eq!(out.len(), 1, "no waiting for a connection summary");
    assert_eq!(
        (out[0].code, out[0].cause, out[0].lookup),
        (Code::AddrInUse, Cause::AddrInUse, Lookup::Holders)
    );
    assert_eq!(
        out[0].evidence,
        vec!["bind() returned EADDRINUSE".to_owned()]
    );
    // bind() to a non-local address is not port exhaustion, and says so.
    bind.err = 99;
    let out = c.feed(bind, 6);
    assert_eq!(
        (out[0].code, out[0].cause, out[0].layer),
        (Code::TimeWait, Cause::BindNonlocal, Layer::Address)
    );
    assert!(
        out[0].summary.contains("not port exhaustion"),
        "{}",
        out[0].summary
    );
}

#[test]
fn synchronous_connect_errors_map_to_their_rungs() {
    let cases = [
        (113, Code::NoRoute, Cause::HostUnreachable, Lookup::Route),
        (13, Code::NoRoute, Cause::RouteProhibited, Lookup::Route),
        (
            101,
            Code::NetUnreachable,
            Cause::NetUnreachable,
            Lookup::Egress,
        ),
        (99, Code::TimeWait, Cause::PortsExhausted, Lookup::Ports),
        (110, Code::Timeout, Cause::NoReply, Lookup::ListenQueue),
    ];
    for (errno, code, cause, lookup) in cases {
        let mut c = Classifier::new();
        let out = c.feed(syscall(errno, 5), 5);
        assert_eq!(
            (out[0].code, out[0].cause, out[0].lookup),
            (code, cause, lookup),
            "errno {errno}"
        );
    }
}

#[test]
fn neighbour_failure_makes_host_unreachable_a_link_failure_without_drop_reasons() {
    let mut c = Classifier::new();
    let neigh = Observation {
        kind: Kind::Neighbour {
            ifindex: 7,
            netns: 4026531840,
        },
        dst: Some("127.0.0.1:0".parse().unwrap()),
        ..syscall(0, 5)
    };
    assert!(
        c.feed(neigh, 5).is_empty(),
        "a neighbour failure alone is not a failed connection"
    );
    let out = c.feed(
        conn(verdict::HOST_UNREACHABLE, 113, 0, Drops::default(), 2, 6),
        6,
    );
    assert_eq!((out[0].code, out[0].layer), (Code::ArpFailed, Layer::Link));
    assert!(
        out[0]
            .evidence
            .iter()
            .any(|e| e.contains("interface index 7 went FAILED")),
        "{:?}",
        out[0].evidence
    );
    // Outside the window it no longer explains anything.
    c.tick(6 + NEIGHBOUR_WINDOW_NS);
    let later = Observation {
        sk: 9,
        ..conn(verdict::HOST_UNREACHABLE, 113, 0, Drops::default(), 2, 7)
    };
    let out = c.feed(later, 7 + NEIGHBOUR_WINDOW_NS);
    assert_eq!(out[0].code, Code::NoRoute);
}

#[test]
fn datagram_send_errors_map_to_route_rungs() {
    let mut c = Classifier::new();
    let mut send = syscall(101, 5);
    send.kind = Kind::Syscall { call: "sendto" };
    let out = c.feed(send.clone(), 5);
    assert_eq!(
        (out[0].code, out[0].lookup),
        (Code::NetUnreachable, Lookup::Egress)
    );
    send.kind = Kind::Syscall { call: "sendmsg" };
    send.err = 113;
    let out = c.feed(send, 6);
    assert_eq!((out[0].code, out[0].lookup), (Code::NoRoute, Lookup::Route));
}

#[test]
fn icmp_sender_is_named() {
    let mut c = Classifier::new();
    let mut o = conn(verdict::HOST_UNREACHABLE, 113, 0, Drops::default(), 0, 10);
    o.icmp = Some(("10.231.30.254".parse().unwrap(), 3, 1));
    let out = c.feed(o, 10);
    assert_eq!(
        (out[0].code, out[0].cause),
        (Code::NoRoute, Cause::HostUnreachable)
    );
    assert!(
        out[0].summary.contains("10.231.30.254 answered the SYN"),
        "{}",
        out[0].summary
    );
    assert!(
        out[0].evidence.iter().any(|e| e.contains(
            "ICMP destination unreachable (host unreachable, code 1) from 10.231.30.254"
        )),
        "{:?}",
        out[0].evidence
    );
}

#[test]
fn kernel_counted_repeats_take_the_classification_of_their_event() {
    let mut c = Classifier::new();
    let key = AggKey {
        tgid: 4211,
        kind: 1,
        dport: 8080,
        ..AggKey::default()
    };
    assert_eq!(c.repeated(&key, 5), Repeated::Unknown, "event not read yet");
    let first = Observation {
        agg: Some(key),
        ..conn(
            verdict::REFUSED_NO_LISTENER,
            111,
            eflag::RST_RECEIVED,
            nosock(),
            0,
            MS,
        )
    };
    let printed = c.feed(first, MS);
    assert_eq!(printed.len(), 1);
    let Repeated::Failure(f) = c.repeated(&key, 41) else {
        panic!("the repeats should be the event's failure");
    };
    assert_eq!(
        (f.code, f.cause, f.count),
        (Code::Refused, printed[0].cause, 41)
    );
    assert_eq!(c.outside_repeats, 0);

    // A syscall error outside the ladder: its repeats are counted as unclassified.
    let other = AggKey { tgid: 9, ..key };
    let outside = Observation {
        agg: Some(other),
        ..syscall(1, 2 * MS)
    };
    assert!(c.feed(outside, 2 * MS).is_empty());
    assert_eq!(
        c.ledger().unclassified,
        1,
        "the event itself is a record outside the ladder"
    );
    assert_eq!(c.repeated(&other, 7), Repeated::Unclassified);
    assert_eq!(c.outside_repeats, 7, "its repeats are counts, not records");

    // Forgotten once nothing refreshed it for the keeping time.
    c.tick(MS + REPRESENTATIVE_NS + 1);
    assert_eq!(c.repeated(&key, 1), Repeated::Unknown);
}

/// An application record (DNS, resolver, TLS, ssh) of process `pid`.
fn app(kind: u32, code: i32, aux: u64, text: &[u8], pid: u32, ts: u64) -> Observation {
    Observation {
        kind: Kind::App {
            kind,
            code,
            aux,
            text: text.to_vec(),
        },
        ts_ns: ts,
        sk: 0,
        proc: proc_(pid),
        src: Some("10.0.0.1:40000".parse().unwrap()),
        dst: Some("10.0.0.53:53".parse().unwrap()),
        err: 0,
        syn_retrans: 0,
        flags: 0,
        duration_ns: None,
        drops: Drops::default(),
        icmp: None,
        agg: None,
    }
}

/// A DNS name in wire form.
fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for l in name.split('.') {
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    w
}

/// Every record taken in is in a failure handed out, still held, or in one ledger bucket.
fn balanced(c: &Classifier, step: &str) {
    let (fed, emitted) = c.fed_and_emitted();
    let ledger = c.ledger();
    assert_eq!(
        fed,
        emitted + c.held() + ledger.total(),
        "after {step}: fed {fed}, emitted {emitted}, held {}, {ledger:?}",
        c.held()
    );
}

#[test]
fn every_record_ends_in_exactly_one_place() {
    use netladder_common::{dns as wire_flags, kind, ssh};
    let mut c = Classifier::new();
    let mut emitted: Vec<Failure> = Vec::new();
    let mut t = MS;
    let mut feed = |c: &mut Classifier, o: Observation, step: &str| {
        t += MS;
        emitted.extend(c.feed(o, t));
        balanced(c, step);
    };
    // Connections: a failure, its duplicate, a verdict outside the ladder.
    let refused = conn(
        verdict::REFUSED_NO_LISTENER,
        111,
        eflag::RST_RECEIVED,
        nosock(),
        0,
        MS,
    );
    feed(&mut c, refused.clone(), "a refusal");
    feed(&mut c, refused, "its duplicate");
    feed(
        &mut c,
        conn(verdict::UNKNOWN, 1, 0, Drops::default(), 0, 2 * MS),
        "unknown verdict",
    );
    // Syscalls: one on the ladder, one outside it.
    feed(&mut c, syscall(111, 3 * MS), "a refused connect()");
    feed(&mut c, syscall(1, 4 * MS), "EPERM");
    // A neighbour entry, and an application record of a kind this build does not know.
    let mut neigh = syscall(0, 5 * MS);
    neigh.kind = Kind::Neighbour {
        ifindex: 2,
        netns: 4026531840,
    };
    feed(&mut c, neigh, "a neighbour");
    feed(&mut c, app(99, 0, 0, b"", 1, 6 * MS), "an unknown kind");
    // DNS: a getaddrinfo call (two answers, one twice, then its result), a late answer,
    // answers of a program without getaddrinfo, a malformed name, a successful lookup after a
    // search-domain miss, and a call whose result never comes.
    let in_call = wire_flags::ANSWER_IN_RESOLVER;
    let nx = wire("gone.test");
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 3, 1 | in_call, &nx, 10, 7 * MS),
        "answer A",
    );
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 3, 28 | 1 << 16 | in_call, &nx, 10, 8 * MS),
        "AAAA",
    );
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 3, 28 | 1 << 16 | in_call, &nx, 10, 8 * MS),
        "again",
    );
    let gai = app(kind::RESOLVER, -2, 2 | 2 << 16, b"gone.test", 10, 9 * MS);
    feed(&mut c, gai, "the result");
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 5, 1, &wire("x.test"), 11, 10 * MS),
        "dig",
    );
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 5, 28, &wire("x.test"), 11, 11 * MS),
        "dig AAAA",
    );
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 3, 1, &[0xc0, 12], 11, 12 * MS),
        "a bad name",
    );
    let miss = wire("db.corp.test");
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 3, 1 | in_call, &miss, 12, 13 * MS),
        "a miss",
    );
    let mut ok = app(kind::RESOLVER, 0, 3 | 3 << 16, b"db", 12, 14 * MS);
    ok.dst = Some("10.0.0.9:0".parse().unwrap());
    feed(&mut c, ok, "a success");
    feed(
        &mut c,
        app(kind::RESOLVER, -8, 0, b"db", 12, 15 * MS),
        "EAI_SERVICE",
    );
    let cut = wire("cut.test");
    feed(
        &mut c,
        app(kind::DNS_ANSWER, 2, 1 | in_call, &cut, 13, 16 * MS),
        "no result yet",
    );
    // TLS: one record, one failure.
    let mut tls = vec![0u8; 2 * netladder_common::TLS_NAME_LEN];
    tls[..8].copy_from_slice(b"a.test\0\0");
    feed(
        &mut c,
        app(kind::TLS_VERIFY, 10, 0, &tls, 14, 17 * MS),
        "an expired certificate",
    );
    // ssh: a client's key and destination, then its refusal; a client without one; sshd's
    // reason and end, the same end again, a login, a line that says nothing, and a reason
    // still waiting for its end at exit.
    feed(
        &mut c,
        app(
            kind::SSH_AUTH,
            ssh::CLIENT_OPEN,
            0,
            b"/k/id_ed25519",
            20,
            18 * MS,
        ),
        "key",
    );
    feed(
        &mut c,
        app(
            kind::SSH_AUTH,
            ssh::CLIENT_OPEN,
            0,
            b"/k/known_hosts",
            20,
            18 * MS,
        ),
        "kh",
    );
    feed(
        &mut c,
        app(kind::SSH_AUTH, ssh::CLIENT_CONNECT, 0, b"", 20, 19 * MS),
        "connect",
    );
    let denied = b"root@srv: Permission denied (publickey).\r\n";
    feed(
        &mut c,
        app(kind::SSH_AUTH, ssh::CLIENT_LINE, 0, denied, 20, 20 * MS),
        "denied",
    );
    feed(
        &mut c,
        app(
            kind::SSH_AUTH,
            ssh::CLIENT_OPEN,
            0,
            b"/k/id_rsa",
            21,
            21 * MS,
        ),
        "alone",
    );
    let sshd = |pid: u32, line: &str, ts: u64| {
        app(
            kind::SSH_AUTH,
            ssh::SERVER_LINE,
            0,
            line.as_bytes(),
            pid,
            ts,
        )
    };
    feed(
        &mut c,
        sshd(30, "Invalid user bob from 10.0.0.1 port 9", 22 * MS),
        "invalid",
    );
    let end = "Connection closed by invalid user bob 10.0.0.1 port 9 [preauth]";
    feed(&mut c, sshd(30, end, 23 * MS), "the end");
    feed(
        &mut c,
        sshd(
            30,
            "Disconnected from invalid user bob 10.0.0.1 port 9",
            24 * MS,
        ),
        "again",
    );
    feed(
        &mut c,
        sshd(
            31,
            "Failed publickey for root from 10.0.0.1 port 8 ssh2: RSA x",
            25 * MS,
        ),
        "k",
    );
    feed(
        &mut c,
        sshd(
            31,
            "Accepted publickey for root from 10.0.0.1 port 8 ssh2",
            26 * MS,
        ),
        "ok",
    );
    feed(
        &mut c,
        sshd(32, "Connection from 10.0.0.1 port 7", 27 * MS),
        "nothing",
    );
    let modes = "Authentication refused: bad ownership or modes for directory /h";
    feed(&mut c, sshd(33, modes, 28 * MS), "waiting at exit");
    // Time passes (the dig answers settle), then watch stops.
    emitted.extend(c.tick(2_000 * MS));
    balanced(&c, "tick");
    assert!(
        c.held() > 0,
        "the call without result and the sshd reason are held"
    );
    emitted.extend(c.flush(2_100 * MS));
    balanced(&c, "flush");
    assert_eq!(c.held(), 0, "nothing is held after the flush");
    let (fed, out) = c.fed_and_emitted();
    assert_eq!(fed, 31);
    assert_eq!(
        out,
        emitted.iter().map(|f| u64::from(f.records)).sum::<u64>()
    );
    let l = c.ledger();
    assert_eq!(l.malformed, 2, "{l:?}");
    assert_eq!(
        l.unclassified, 3,
        "unknown verdict, EPERM, EAI_SERVICE: {l:?}"
    );
    let codes: Vec<(Code, Cause)> = emitted.iter().map(|f| (f.code, f.cause)).collect();
    assert_eq!(
        codes,
        [
            (Code::Refused, Cause::NoListener),
            (Code::Refused, Cause::Refused),
            (Code::TlsVerify, Cause::CertExpired),
            (Code::SshPublickey, Cause::ClientDenied),
            (Code::SshPublickey, Cause::ServerInvalidUser),
            (Code::Dns, Cause::Nxdomain),
            (Code::Dns, Cause::Refused),
            (Code::Dns, Cause::Servfail),
            (Code::SshPublickey, Cause::ServerBadModes),
        ],
        "{emitted:#?}"
    );
    let gone = &emitted[5];
    assert_eq!(gone.records, 4, "two answers, a duplicate, the result");
}

#[test]
fn held_lookups_and_reasons_come_out_at_exit_saying_they_were_cut_short() {
    use netladder_common::{dns as wire_flags, kind, ssh};
    let mut c = Classifier::new();
    let t = 1_000 * MS;
    // getent hosts (no getaddrinfo): REFUSED for AAAA and A, Ctrl-C 300 ms later.
    let name = wire("www.outside.test");
    assert!(c
        .feed(app(kind::DNS_ANSWER, 5, 28, &name, 40, t), t)
        .is_empty());
    assert!(c
        .feed(app(kind::DNS_ANSWER, 5, 1 | 1 << 16, &name, 40, t), t)
        .is_empty());
    // A getaddrinfo call that got an NXDOMAIN and has not returned.
    let other = app(
        kind::DNS_ANSWER,
        3,
        1 | wire_flags::ANSWER_IN_RESOLVER,
        &wire("slow.test"),
        41,
        t + 100 * MS,
    );
    assert!(c.feed(other, t + 100 * MS).is_empty());
    // sshd's reason whose connection has not ended.
    let line = "Authentication refused: bad ownership or modes for directory /home/x";
    let reason = app(kind::SSH_AUTH, ssh::SERVER_LINE, 0, line.as_bytes(), 42, t);
    assert!(c.feed(reason, t).is_empty());
    assert!(c.tick(t + 300 * MS).is_empty(), "nothing is due yet");
    let out = c.flush(t + 300 * MS);
    assert_eq!(out.len(), 3, "{out:#?}");
    let refused = out
        .iter()
        .find(|f| f.host_name.as_deref() == Some("www.outside.test"))
        .unwrap();
    assert_eq!(
        (refused.code, refused.cause, refused.records),
        (Code::Dns, Cause::Refused, 2)
    );
    assert!(
        refused.evidence.iter().any(|e| e.contains(
            "watch stopped 300 ms after the last answer for this name, before the 1000 ms of quiet"
        )),
        "{:#?}",
        refused.evidence
    );
    let slow = out
        .iter()
        .find(|f| f.host_name.as_deref() == Some("slow.test"))
        .unwrap();
    assert_eq!((slow.code, slow.cause), (Code::Dns, Cause::Nxdomain));
    assert!(
        slow.evidence
            .iter()
            .any(|e| e.contains("watch stopped before getaddrinfo returned, 200 ms after")),
        "{:#?}",
        slow.evidence
    );
    let sshd = out.iter().find(|f| f.code == Code::SshPublickey).unwrap();
    assert_eq!(sshd.cause, Cause::ServerBadModes);
    assert!(
        sshd.evidence
            .iter()
            .any(|e| e.contains("watch stopped 300 ms after sshd's first word")),
        "{:#?}",
        sshd.evidence
    );
    assert!(c.flush(t + 400 * MS).is_empty(), "each once");
    balanced(&c, "the flush");
}
