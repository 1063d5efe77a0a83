//! Self tests of the scenario-test library: namespaces, veths, rules and nl-peer, for real.
//! They need root; without it each prints an `NL-SKIP` line and passes.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netladder_tests::{
    connect, peer_bin, require_root, skip, veth, Client, Netns, Peer, Seen, Wait,
};

const A_ADDRS: [&str; 2] = ["10.231.0.1/24", "fd00:231::1/64"];
const B_ADDRS: [&str; 2] = ["10.231.0.2/24", "fd00:231::2/64"];

/// Two namespaces `a` and `b` joined by a veth carrying A_ADDRS / B_ADDRS.
fn pair(tag: &str) -> Result<(Netns, Netns)> {
    let a = Netns::new(&format!("{tag}-a"))?;
    let b = Netns::new(&format!("{tag}-b"))?;
    veth(&a, &A_ADDRS, &b, &B_ADDRS)?;
    Ok((a, b))
}

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Polls `cond` every 50 ms for up to `limit`.
fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A namespace made with plain `ip netns add`, deleted on drop whatever the test did.
struct RawNs(String);

impl RawNs {
    fn add(name: String) -> Result<RawNs> {
        let status = Command::new("ip").args(["netns", "add", &name]).status()?;
        anyhow::ensure!(status.success(), "ip netns add {name}: {status}");
        Ok(RawNs(name))
    }
}

impl Drop for RawNs {
    fn drop(&mut self) {
        if Path::new(&netns_path(&self.0)).exists() {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}

#[test]
fn netns_lives_until_dropped() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ns = Netns::new("life")?;
    let path = netns_path(ns.name());
    assert!(ns
        .name()
        .starts_with(&format!("nltest-{}-", std::process::id())));
    assert!(ns.name().ends_with("-life"));
    assert_eq!(ns.inode(), std::fs::metadata(&path)?.ino());
    assert_ne!(ns.inode(), std::fs::metadata("/proc/self/ns/net")?.ino());
    let lo = ns.ip(&["-o", "link", "show", "lo"])?;
    assert!(lo.contains(",UP"), "lo is not up: {lo}");
    let own_inode = ns.sh("stat -L -c %i /proc/self/ns/net")?;
    assert_eq!(own_inode.trim(), ns.inode().to_string(), "sh runs inside");
    drop(ns);
    assert!(!Path::new(&path).exists(), "{path} still exists after drop");
    Ok(())
}

#[test]
fn netns_removed_when_test_body_panics() {
    if !require_root() {
        return;
    }
    let mut name = String::new();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("panics").expect("create namespace");
        name = ns.name().to_string();
        panic!("deliberate panic with {} alive", ns.name());
    }));
    assert!(outcome.is_err());
    assert!(name.starts_with("nltest-"));
    assert!(
        !Path::new(&netns_path(&name)).exists(),
        "{name} survived the panic"
    );
}

#[test]
fn netns_drop_kills_processes_and_veths() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, b) = pair("kill")?;
    let mut sleeper = a.command("sleep").arg("600").spawn()?;
    let b_links = || {
        b.ip(&["-o", "link", "show", "type", "veth"])
            .unwrap_or_default()
    };
    assert!(b_links().contains("nlv"), "veth end missing in b");
    drop(a);
    let status = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            sleeper.try_wait().ok().flatten()
        })
        .context("process in the namespace still alive 5 s after drop")?;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        eventually(Duration::from_secs(5), || b_links().trim().is_empty()),
        "b's veth end survived deletion of a: {}",
        b_links()
    );
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut gone = Command::new("true").spawn()?;
    let dead_pid = gone.id();
    gone.wait()?;
    let stale = RawNs::add(format!("nltest-{dead_pid}-0-stale"))?;
    let foreign = RawNs::add(format!("nlkeep-{dead_pid}-0-foreign"))?;
    let _ns = Netns::new("sweeper")?;
    assert!(
        !Path::new(&netns_path(&stale.0)).exists(),
        "stale namespace kept"
    );
    assert!(
        Path::new(&netns_path(&foreign.0)).exists(),
        "foreign namespace touched"
    );
    Ok(())
}

#[test]
fn veth_carries_tcp_between_namespaces() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, b) = pair("tcp")?;
    let v4 = Peer::listen(Some(&b), "10.231.0.2:8080", &[])?;
    let v6 = Peer::listen(Some(&b), "[fd00:231::2]:8080", &["--reuseaddr"])?;
    assert_eq!(v4.addr(), "10.231.0.2:8080");
    assert_eq!(v6.addr(), "[fd00:231::2]:8080");

    let out = connect(Some(&a), "10.231.0.2:8080", &["--count", "3"])?;
    assert_eq!(out.lines, ["ok", "ok", "ok"], "{out:?}");
    assert!(out.status.success());
    let out = connect(
        Some(&a),
        "[fd00:231::2]:8080",
        &["--bind", "[fd00:231::1]:0"],
    )?;
    assert_eq!(out.lines, ["ok"], "{out:?}");
    let out = connect(
        Some(&a),
        "10.231.0.2:8080",
        &["--nonblocking", "--timeout", "5"],
    )?;
    assert_eq!(out.lines, ["ok"], "{out:?}");

    let comm = std::fs::read_to_string(format!("/proc/{}/comm", v4.pid()))?;
    assert_eq!(comm.trim(), "nl-peer");
    Ok(())
}

/// Every client of the matrix, without netladder: it connects to a listener, is refused by a
/// closed port (IPv4 and IPv6), gives up on its own timeout behind a drop, and reports each the
/// same way. nl-peer's --close-at-once abandons the connect and says so.
#[test]
fn every_matrix_client_connects_is_refused_and_gives_up() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, b) = pair("clients")?;
    let _v4 = Peer::listen(Some(&b), "10.231.0.2:8080", &[])?;
    let _v6 = Peer::listen(Some(&b), "[fd00:231::2]:8080", &["--v6only"])?;
    b.nft(
        "table inet nltest {
           chain input { type filter hook input priority 0; tcp dport 8082 drop; }
         }",
    )?;
    a.sysctl("net.ipv4.tcp_syn_retries", "1")?;
    let kernel = Wait::Kernel;
    let give_up = Wait::GiveUpAfter(Duration::from_secs(1));
    for client in Client::ALL {
        if let Some(why) = client.unavailable() {
            skip(&format!("client {client}: {why}"));
            continue;
        }
        for (dst, wait, want) in [
            ("10.231.0.2:8080", kernel, Seen::Connected),
            ("[fd00:231::2]:8080", kernel, Seen::Connected),
            (
                "10.231.0.2:8081",
                kernel,
                Seen::Errno("ECONNREFUSED".into()),
            ),
            (
                "[fd00:231::2]:8081",
                kernel,
                Seen::Errno("ECONNREFUSED".into()),
            ),
        ] {
            let got = client.connect(&a, dst, wait)?;
            assert_eq!(got.seen, want, "{client} -> {dst}: {got:?}");
            assert!(got.pid > 0);
        }
        let got = client.connect(&a, "10.231.0.2:8082", give_up)?;
        let want = if client == Client::Blocking {
            // A blocking connect has no timeout of its own: the kernel's (one retry) ends it.
            Seen::Errno("ETIMEDOUT".into())
        } else {
            Seen::GaveUp
        };
        assert_eq!(got.seen, want, "{client}: {got:?}");
    }
    let out = connect(Some(&a), "10.231.0.2:8082", &["--close-at-once"])?;
    assert_eq!(out.lines, ["abandoned"], "{out:?}");
    assert!(out.status.success());
    Ok(())
}

#[test]
fn refused_connect_prints_econnrefused() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, _b) = pair("refused")?;
    for (ns, addr, extra) in [
        (&a, "127.0.0.1:9", &[][..]),
        (&a, "[::1]:9", &["--nonblocking"][..]),
        (&a, "10.231.0.2:9", &[][..]),
    ] {
        let out = connect(Some(ns), addr, extra)?;
        assert_eq!(out.lines, ["error ECONNREFUSED 111"], "{addr}: {out:?}");
        assert_eq!(out.status.code(), Some(1));
    }

    // Host loopback: a port that was just listened on and is closed again.
    let port = {
        let listener = Peer::listen(None, "127.0.0.1:0", &[])?;
        listener.addr().to_string()
    };
    let out = connect(None, &port, &[])?;
    assert_eq!(out.lines, ["error ECONNREFUSED 111"], "{port}: {out:?}");
    Ok(())
}

#[test]
fn v6only_listener_refuses_ipv4_and_second_bind_fails() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ns = Netns::new("v6only")?;
    let _v6 = Peer::listen(Some(&ns), "[::]:8080", &["--v6only"])?;
    assert_eq!(connect(Some(&ns), "[::1]:8080", &[])?.lines, ["ok"]);
    let out = connect(Some(&ns), "127.0.0.1:8080", &[])?;
    assert_eq!(out.lines, ["error ECONNREFUSED 111"], "{out:?}");

    let err = Peer::listen(Some(&ns), "[::]:8080", &[])
        .err()
        .context("a second listener on [::]:8080 must fail")?;
    assert!(
        format!("{err:#}").contains("error EADDRINUSE 98"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn app_timeout_and_syn_timeout_behind_nft_drop() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, b) = pair("drop")?;
    let _listener = Peer::listen(Some(&b), "10.231.0.2:8080", &[])?;
    assert_eq!(connect(Some(&a), "10.231.0.2:8080", &[])?.lines, ["ok"]);
    b.nft(
        "table inet nltest {
           chain input { type filter hook input priority 0; policy accept; tcp dport 8080 drop; }
         }",
    )?;
    let rules = b.exec(&["nft", "list", "ruleset"])?;
    assert!(String::from_utf8_lossy(&rules.stdout).contains("tcp dport 8080 drop"));

    let started = Instant::now();
    let out = connect(Some(&a), "10.231.0.2:8080", &["--timeout", "1"])?;
    assert_eq!(out.lines, ["error TIMEOUT_APP 0"], "{out:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let host_retries = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syn_retries")?;
    a.sysctl("net.ipv4.tcp_syn_retries", "1")?;
    assert_eq!(a.sh("cat /proc/sys/net/ipv4/tcp_syn_retries")?.trim(), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syn_retries")?,
        host_retries,
        "the sysctl leaked to the host"
    );
    let out = connect(Some(&a), "10.231.0.2:8080", &[])?;
    assert_eq!(out.lines, ["error ETIMEDOUT 110"], "{out:?}");
    Ok(())
}

#[test]
fn iptables_rules_reject_and_drop() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, b) = pair("ipt")?;
    b.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "8081",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ])?;
    b.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "8082",
        "-j",
        "REJECT",
        "--reject-with",
        "icmp-port-unreachable",
    ])?;
    b.ip6tables(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "8081",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ])?;
    for addr in ["10.231.0.2:8081", "10.231.0.2:8082", "[fd00:231::2]:8081"] {
        let out = connect(Some(&a), addr, &[])?;
        assert_eq!(out.lines, ["error ECONNREFUSED 111"], "{addr}: {out:?}");
    }

    let legacy = ["-A", "INPUT", "-p", "tcp", "--dport", "8083", "-j", "DROP"];
    match b.iptables_legacy(&legacy) {
        Ok(()) => {
            let out = connect(Some(&a), "10.231.0.2:8083", &["--timeout", "1"])?;
            assert_eq!(out.lines, ["error TIMEOUT_APP 0"], "{out:?}");
        }
        Err(err) if err.to_string().contains("not installed") => skip(&err.to_string()),
        Err(err) => return Err(err),
    }
    Ok(())
}

#[test]
fn udp_send_reaches_the_other_namespace() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (a, b) = pair("udp")?;
    let receiver = udp_socket_in(&b, "10.231.0.2:5353")?;
    receiver.set_read_timeout(Some(Duration::from_secs(5)))?;
    let out = a
        .command(peer_bin())
        .args(["udp-send", "10.231.0.2:5353"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let mut buf = [0u8; 64];
    let (len, from) = receiver.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"nl-peer\n");
    assert_eq!(from.ip().to_string(), "10.231.0.1");
    Ok(())
}

/// A UDP socket bound inside `ns`: made by a thread that entered the namespace (setns changes
/// only the calling thread, and the socket stays in the namespace it was created in).
fn udp_socket_in(ns: &Netns, addr: &str) -> Result<UdpSocket> {
    let handle = std::fs::File::open(netns_path(ns.name()))?;
    let addr = addr.to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on this short-lived thread with a valid namespace fd.
        if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        UdpSocket::bind(&addr).with_context(|| format!("bind {addr}"))
    })
    .join()
    .expect("the setns thread does not panic")
}
