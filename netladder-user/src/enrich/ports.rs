//! Who holds a TCP port (for "address already in use"), and how full the ephemeral port
//! range is (for "cannot assign requested address" from connect), over sock_diag and
//! /proc/sys.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
use netlink_packet_sock_diag::inet::{InetResponse, StateFlags};

use super::sockdiag::{dump_tcp, socket_owners};
use super::{canonical, plural};

/// A TCP socket on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// LISTEN, TIME_WAIT, ESTABLISHED..., or BOUND for a socket bound but not listening
    /// (reported by kernels 6.8+).
    pub state: &'static str,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The socket's inode (0 for TIME_WAIT, which no process holds).
    pub inode: u32,
    /// (pid, comm) of the process holding the socket, when found.
    pub owner: Option<(u32, String)>,
}

/// Every TCP socket of the calling thread's network namespace whose local port is `port`,
/// IPv4 and IPv6, in any state (as `ss -tanp 'sport = :PORT'`, plus sockets only bound on
/// kernels that report them), with their owners.
pub fn port_holders(port: u16) -> anyhow::Result<Vec<Holder>> {
    let mut holders: Vec<Holder> = all_tcp()?
        .iter()
        .filter(|s| s.header.socket_id.source_port == port)
        .map(holder)
        .collect();
    let inodes: Vec<u32> = holders
        .iter()
        .map(|h| h.inode)
        .filter(|&i| i != 0)
        .collect();
    let mut owners = socket_owners(&inodes);
    for h in &mut holders {
        h.owner = owners.remove(&h.inode);
    }
    Ok(holders)
}

/// All TCP sockets, both families, every state (the bits past the known states ask
/// kernels 6.8+ for bound-only sockets too, which come back in CLOSE).
fn all_tcp() -> anyhow::Result<Vec<InetResponse>> {
    let mut sockets = Vec::new();
    for family in [AF_INET, AF_INET6] {
        sockets.extend(
            dump_tcp(family, StateFlags::from_bits_retain(u32::MAX))
                .with_context(|| format!("cannot list TCP sockets (family {family})"))?,
        );
    }
    Ok(sockets)
}

fn holder(s: &InetResponse) -> Holder {
    let id = &s.header.socket_id;
    Holder {
        state: state_name(s.header.state),
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        inode: s.header.inode,
        owner: None,
    }
}

/// The kernel's TCP state names (include/net/tcp_states.h), but BOUND for CLOSE.
fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "BOUND",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        LISTEN => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

const TIME_WAIT: u8 = 6;
/// Only bound-only sockets (asked for with the TCPF_BOUND_INACTIVE bit) are dumped in CLOSE.
const CLOSE: u8 = 7;
const LISTEN: u8 = 10;

/// The sentence naming what holds `port` for a bind() or listen() that failed with
/// EADDRINUSE, and whether SO_REUSEADDR would have helped.
pub fn describe_addr_in_use(port: u16, holders: &[Holder]) -> String {
    if let Some(l) = holders.iter().find(|h| h.state == "LISTEN") {
        return format!(
            "port {port} is held by a live listener on {}{}: SO_REUSEADDR would not help; \
             stop that listener or use another port",
            l.local,
            owner(l)
        );
    }
    if let Some(h) = holders.iter().find(|h| h.state != "TIME_WAIT") {
        let what = match h.state {
            "BOUND" => format!("a socket bound to {} but not listening", h.local),
            state => format!("a connection {} -> {} in {state}", h.local, h.remote),
        };
        return format!(
            "port {port} is held by {what}{}: SO_REUSEADDR helps only if that socket set \
             it too",
            owner(h)
        );
    }
    match holders {
        [] => format!(
            "nothing holds port {port} now: the holder has gone since, or it is a socket \
             only bound (not listening) that this kernel does not report"
        ),
        [h, ..] => format!(
            "port {port} is held only by {} connection{} in TIME_WAIT (such as {} -> {}): \
             SO_REUSEADDR would have let the bind succeed",
            holders.len(),
            plural(holders.len() as u64),
            h.local,
            h.remote
        ),
    }
}

fn owner(h: &Holder) -> String {
    h.owner
        .as_ref()
        .map_or(String::new(), |(pid, comm)| format!(" ({comm}[{pid}])"))
}

/// TCP sockets that use up local ports, in the calling thread's network namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortUse {
    /// TIME_WAIT sockets in total.
    pub time_wait: u64,
    /// TIME_WAIT sockets toward the destination asked about.
    pub time_wait_to_dst: u64,
    /// Other connections toward it (ESTABLISHED, SYN_SENT, FIN_WAIT...).
    pub open_to_dst: u64,
}

/// Counts TIME_WAIT sockets, and the connections toward `dst` (an IPv4-mapped IPv6 peer
/// counts as IPv4); with no `dst`, only the total.
pub fn port_use(dst: Option<SocketAddr>) -> anyhow::Result<PortUse> {
    let dst = dst.map(|d| SocketAddr::new(canonical(d.ip()), d.port()));
    let mut usage = PortUse::default();
    for s in all_tcp()? {
        let id = &s.header.socket_id;
        let remote = SocketAddr::new(canonical(id.destination_address), id.destination_port);
        let to_dst = Some(remote) == dst;
        match s.header.state {
            TIME_WAIT => {
                usage.time_wait += 1;
                usage.time_wait_to_dst += u64::from(to_dst);
            }
            LISTEN | CLOSE => {}
            _ => usage.open_to_dst += u64::from(to_dst),
        }
    }
    Ok(usage)
}

/// TIME_WAIT sockets per remote address (an IPv4-mapped IPv6 peer counts as IPv4), in the
/// calling thread's network namespace. Each holds a local port toward that destination.
pub fn time_wait_by_destination() -> anyhow::Result<HashMap<SocketAddr, u64>> {
    let mut out = HashMap::new();
    for s in all_tcp()? {
        if s.header.state == TIME_WAIT {
            let id = &s.header.socket_id;
            let remote = SocketAddr::new(canonical(id.destination_address), id.destination_port);
            *out.entry(remote).or_default() += 1;
        }
    }
    Ok(out)
}

/// The destinations whose TIME_WAIT sockets hold more than `share` (0..1) of the local port
/// range, most crowded first. Before connect() starts failing with EADDRNOTAVAIL.
pub fn crowded(
    time_wait: &HashMap<SocketAddr, u64>,
    range: (u16, u16),
    share: f64,
) -> Vec<(SocketAddr, u64)> {
    let size = (u64::from(range.1) + 1)
        .saturating_sub(range.0.into())
        .max(1);
    let mut out: Vec<(SocketAddr, u64)> = time_wait
        .iter()
        .filter(|(_, n)| **n as f64 > share * size as f64)
        .map(|(d, n)| (*d, *n))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// The warning sentence for `count` TIME_WAIT sockets toward `dst`.
pub fn describe_time_wait_pressure(dst: SocketAddr, count: u64, range: (u16, u16)) -> String {
    let size = (u64::from(range.1) + 1)
        .saturating_sub(range.0.into())
        .max(1);
    format!(
        "{count} TIME_WAIT sockets toward {dst} hold {:.0}% of the {size} local ports \
         ({}-{}): new connections to it will fail with EADDRNOTAVAIL once they are all used; \
         reuse connections (pooling, keep-alive) or widen ip_local_port_range",
        100.0 * count as f64 / size as f64,
        range.0,
        range.1
    )
}

/// net.ipv4.ip_local_port_range of the calling thread's network namespace (it applies to
/// IPv6 too).
pub fn port_range() -> anyhow::Result<(u16, u16)> {
    let text = read_sysctl("ip_local_port_range")?;
    let mut fields = text.split_whitespace().map(str::parse::<u16>);
    match (fields.next(), fields.next()) {
        (Some(Ok(low)), Some(Ok(high))) => Ok((low, high)),
        _ => bail!("unexpected ip_local_port_range: {text:?}"),
    }
}

/// net.ipv4.tcp_tw_reuse of the calling thread's network namespace: 0 off, 1 on, 2 for
/// loopback only.
pub fn tw_reuse() -> anyhow::Result<u8> {
    let text = read_sysctl("tcp_tw_reuse")?;
    text.trim()
        .parse()
        .with_context(|| format!("unexpected tcp_tw_reuse: {text:?}"))
}

/// /proc/sys/net is per network namespace, chosen by the reading thread's namespace.
fn read_sysctl(name: &str) -> anyhow::Result<String> {
    let path = format!("/proc/sys/net/ipv4/{name}");
    fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))
}

/// The sentence for a connect() to `dst` that found no free local port (EADDRNOTAVAIL).
pub fn describe_port_exhaustion(
    dst: SocketAddr,
    range: (u16, u16),
    tw_reuse: u8,
    usage: &PortUse,
) -> String {
    let (low, high) = range;
    let size = (u32::from(high) + 1).saturating_sub(low.into());
    let reuse = match tw_reuse {
        0 => "new connections never reuse a TIME_WAIT port",
        1 => "TIME_WAIT ports may be reused",
        2 => "TIME_WAIT ports are reused for loopback connections only",
        _ => "unknown setting",
    };
    let hint = if usage.time_wait_to_dst >= usage.open_to_dst {
        "reuse connections (a pool, keep-alive) instead of opening one per request, or \
         widen ip_local_port_range"
    } else {
        "the ports are held by open connections: pool and cap them, or widen \
         ip_local_port_range"
    };
    format!(
        "no free local port toward {dst}: ip_local_port_range {low}-{high} has {size} \
         port{}; toward {dst}, {} connection{} open and {} in TIME_WAIT ({} TIME_WAIT in \
         all); tcp_tw_reuse={tw_reuse} ({reuse}). Hint: {hint}",
        plural(size),
        usage.open_to_dst,
        plural(usage.open_to_dst),
        usage.time_wait_to_dst,
        usage.time_wait
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::netns::tests::{is_root, ChildGuard};
    use crate::enrich::route::tests::Lab;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    fn h(state: &'static str, local: &str, remote: &str, owner: Option<(u32, &str)>) -> Holder {
        Holder {
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inode: if state == "TIME_WAIT" { 0 } else { 7 },
            owner: owner.map(|(pid, comm)| (pid, comm.to_string())),
        }
    }

    fn time_wait(local: &str, remote: &str) -> Holder {
        h("TIME_WAIT", local, remote, None)
    }

    #[test]
    fn a_live_listener_is_not_helped_by_reuseaddr() {
        let holders = [
            time_wait("127.0.0.1:8080", "127.0.0.1:40000"),
            h("LISTEN", "0.0.0.0:8080", "0.0.0.0:0", Some((812, "nginx"))),
        ];
        assert_eq!(
            describe_addr_in_use(8080, &holders),
            "port 8080 is held by a live listener on 0.0.0.0:8080 (nginx[812]): SO_REUSEADDR \
             would not help; stop that listener or use another port"
        );
        let unowned = [h("LISTEN", "[::]:8080", "[::]:0", None)];
        assert_eq!(
            describe_addr_in_use(8080, &unowned),
            "port 8080 is held by a live listener on [::]:8080: SO_REUSEADDR would not help; \
             stop that listener or use another port"
        );
    }

    #[test]
    fn only_time_wait_holders_would_yield_to_reuseaddr() {
        let one = [time_wait("10.231.0.1:8080", "10.231.0.2:51000")];
        assert_eq!(
            describe_addr_in_use(8080, &one),
            "port 8080 is held only by 1 connection in TIME_WAIT (such as 10.231.0.1:8080 -> \
             10.231.0.2:51000): SO_REUSEADDR would have let the bind succeed"
        );
        let two = [
            time_wait("10.231.0.1:8080", "10.231.0.2:51000"),
            time_wait("10.231.0.1:8080", "10.231.0.2:51001"),
        ];
        assert!(describe_addr_in_use(8080, &two)
            .starts_with("port 8080 is held only by 2 connections in TIME_WAIT"));
    }

    #[test]
    fn other_holders_and_none() {
        let bound = [h("BOUND", "127.0.0.1:8080", "0.0.0.0:0", Some((9, "app")))];
        assert_eq!(
            describe_addr_in_use(8080, &bound),
            "port 8080 is held by a socket bound to 127.0.0.1:8080 but not listening \
             (app[9]): SO_REUSEADDR helps only if that socket set it too"
        );
        let established = [
            time_wait("10.231.0.1:8080", "10.231.0.2:51000"),
            h(
                "ESTABLISHED",
                "10.231.0.1:8080",
                "10.231.0.3:52000",
                Some((9, "app")),
            ),
        ];
        assert_eq!(
            describe_addr_in_use(8080, &established),
            "port 8080 is held by a connection 10.231.0.1:8080 -> 10.231.0.3:52000 in \
             ESTABLISHED (app[9]): SO_REUSEADDR helps only if that socket set it too"
        );
        assert_eq!(
            describe_addr_in_use(8080, &[]),
            "nothing holds port 8080 now: the holder has gone since, or it is a socket only \
             bound (not listening) that this kernel does not report"
        );
    }

    #[test]
    fn port_exhaustion_sentences() {
        let dst = "10.231.0.2:80".parse().unwrap();
        let by_time_wait = PortUse {
            time_wait: 30_000,
            time_wait_to_dst: 28_000,
            open_to_dst: 232,
        };
        assert_eq!(
            describe_port_exhaustion(dst, (32768, 60999), 0, &by_time_wait),
            "no free local port toward 10.231.0.2:80: ip_local_port_range 32768-60999 has \
             28232 ports; toward 10.231.0.2:80, 232 connections open and 28000 in TIME_WAIT \
             (30000 TIME_WAIT in all); tcp_tw_reuse=0 (new connections never reuse a \
             TIME_WAIT port). Hint: reuse connections (a pool, keep-alive) instead of opening \
             one per request, or widen ip_local_port_range"
        );
        let by_open = PortUse {
            time_wait: 0,
            time_wait_to_dst: 0,
            open_to_dst: 1,
        };
        assert_eq!(
            describe_port_exhaustion(dst, (40000, 40000), 2, &by_open),
            "no free local port toward 10.231.0.2:80: ip_local_port_range 40000-40000 has 1 \
             port; toward 10.231.0.2:80, 1 connection open and 0 in TIME_WAIT (0 TIME_WAIT in \
             all); tcp_tw_reuse=2 (TIME_WAIT ports are reused for loopback connections only). \
             Hint: the ports are held by open connections: pool and cap them, or widen \
             ip_local_port_range"
        );
        let s = describe_port_exhaustion(dst, (50000, 40000), 1, &PortUse::default());
        assert!(s.contains("50000-40000 has 0 ports"), "{s}");
        assert!(
            s.contains("tcp_tw_reuse=1 (TIME_WAIT ports may be reused)"),
            "{s}"
        );
        let s = describe_port_exhaustion(dst, (1, 65535), 7, &PortUse::default());
        assert!(s.contains("has 65535 ports"), "{s}");
        assert!(s.contains("tcp_tw_reuse=7 (unknown setting)"), "{s}");
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(1), "ESTABLISHED");
        assert_eq!(state_name(6), "TIME_WAIT");
        assert_eq!(state_name(10), "LISTEN");
        assert_eq!(state_name(7), "BOUND");
        assert_eq!(state_name(200), "UNKNOWN");
    }

    /// Runs a python3 script in the lab; returns it once it printed "ready".
    fn python(lab: &Lab, script: &str) -> ChildGuard {
        let mut child = ChildGuard(
            Command::new("ip")
                .args(["netns", "exec", &lab.name, "python3", "-c", script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start python3 in the lab"),
        );
        assert_eq!(read_line(&mut child), "ready");
        child
    }

    fn read_line(child: &mut ChildGuard) -> String {
        let stdout = child.0.stdout.as_mut().expect("python3 stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    const HOLDERS: &str = "import socket, sys, time
def listen(port):
    s = socket.socket()
    s.bind(('127.0.0.1', port))
    s.listen()
    return s
# 18500: a listener, and a TIME_WAIT left by a connection its server side closed first.
l = listen(18500)
c = socket.create_connection(('127.0.0.1', 18500))
a, _ = l.accept()
a.close(); time.sleep(0.1); c.close(); time.sleep(0.1)
# 18501: bound, not listening.
b = socket.socket()
b.bind(('127.0.0.1', 18501))
# Toward 127.0.0.1:18502: one connection open, one in TIME_WAIT (its client closed first).
l2 = listen(18502)
c1 = socket.create_connection(('127.0.0.1', 18502))
a1, _ = l2.accept()
c2 = socket.create_connection(('127.0.0.1', 18502))
a2, _ = l2.accept()
c2.close(); time.sleep(0.1); a2.close(); time.sleep(0.1)
print('ready', flush=True)
sys.stdin.readline()
l.close()
print('closed', flush=True)
time.sleep(120)
";

    #[test]
    fn names_port_holders_in_a_namespace() {
        if !is_root() {
            println!("NL-SKIP names_port_holders_in_a_namespace: needs root");
            return;
        }
        let lab = Lab::new();
        let mut server = python(&lab, HOLDERS);
        let pid = server.0.id();
        let (listening, bound, usage, mapped) = lab.run(|| {
            (
                port_holders(18500).unwrap(),
                port_holders(18501).unwrap(),
                port_use(Some("127.0.0.1:18502".parse().unwrap())).unwrap(),
                port_use(Some("[::ffff:127.0.0.1]:18502".parse().unwrap())).unwrap(),
            )
        });
        let states: Vec<&str> = listening.iter().map(|h| h.state).collect();
        assert_eq!(states.len(), 2, "{listening:?}");
        assert!(states.contains(&"LISTEN") && states.contains(&"TIME_WAIT"));
        assert_eq!(
            describe_addr_in_use(18500, &listening),
            format!(
                "port 18500 is held by a live listener on 127.0.0.1:18500 (python3[{pid}]): \
                 SO_REUSEADDR would not help; stop that listener or use another port"
            )
        );
        assert_eq!(
            describe_addr_in_use(18501, &bound),
            format!(
                "port 18501 is held by a socket bound to 127.0.0.1:18501 but not listening \
                 (python3[{pid}]): SO_REUSEADDR helps only if that socket set it too"
            )
        );
        let want = PortUse {
            time_wait: 2,
            time_wait_to_dst: 1,
            open_to_dst: 1,
        };
        assert_eq!(usage, want);
        assert_eq!(mapped, want);

        let stdin = server.0.stdin.as_mut().expect("python3 stdin");
        stdin.write_all(b"close\n").unwrap();
        assert_eq!(read_line(&mut server), "closed");
        let left = lab.run(|| port_holders(18500).unwrap());
        let said = describe_addr_in_use(18500, &left);
        assert!(
            said.starts_with(
                "port 18500 is held only by 1 connection in TIME_WAIT (such as \
                 127.0.0.1:18500 -> 127.0.0.1:"
            ),
            "{said}"
        );
        assert!(
            said.ends_with("): SO_REUSEADDR would have let the bind succeed"),
            "{said}"
        );
        assert_eq!(left[0].owner, None);
    }

    const EXHAUST: &str = "import errno, socket, time
l = socket.socket()
l.bind(('127.0.0.1', 18503))
l.listen()
for _ in range(2):
    c = socket.create_connection(('127.0.0.1', 18503))
    a, _ = l.accept()
    c.close(); time.sleep(0.1); a.close(); time.sleep(0.1)
try:
    socket.create_connection(('127.0.0.1', 18503))
    print('connected', flush=True)
except OSError as e:
    print('ready' if e.errno == errno.EADDRNOTAVAIL else repr(e), flush=True)
time.sleep(120)
";

    #[test]
    fn explains_port_exhaustion_in_a_namespace() {
        if !is_root() {
            println!("NL-SKIP explains_port_exhaustion_in_a_namespace: needs root");
            return;
        }
        let host = (port_range().unwrap(), tw_reuse().unwrap());
        let lab = Lab::new();
        lab.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=40000 40001",
            "net.ipv4.tcp_tw_reuse=0",
        ]);
        let _client = python(&lab, EXHAUST);
        let dst: SocketAddr = "127.0.0.1:18503".parse().unwrap();
        let (range, reuse, usage) = lab.run(move || {
            (
                port_range().unwrap(),
                tw_reuse().unwrap(),
                port_use(Some(dst)).unwrap(),
            )
        });
        assert_eq!((range, reuse), ((40000, 40001), 0));
        assert_ne!(
            host,
            (range, reuse),
            "the host's settings are not the lab's"
        );
        assert_eq!(
            describe_port_exhaustion(dst, range, reuse, &usage),
            "no free local port toward 127.0.0.1:18503: ip_local_port_range 40000-40001 has \
             2 ports; toward 127.0.0.1:18503, 0 connections open and 2 in TIME_WAIT (2 \
             TIME_WAIT in all); tcp_tw_reuse=0 (new connections never reuse a TIME_WAIT \
             port). Hint: reuse connections (a pool, keep-alive) instead of opening one per \
             request, or widen ip_local_port_range"
        );
    }

    #[test]
    fn crowded_destinations_cross_the_share() {
        let a: SocketAddr = "10.0.0.5:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.6:443".parse().unwrap();
        let tw = HashMap::from([(a, 6), (b, 4)]);
        assert_eq!(crowded(&tw, (40000, 40009), 0.5), vec![(a, 6)]);
        assert_eq!(crowded(&tw, (40000, 40009), 0.3), vec![(a, 6), (b, 4)]);
        assert!(crowded(&tw, (32768, 60999), 0.5).is_empty());
        let s = describe_time_wait_pressure(a, 6, (40000, 40009));
        assert!(s.contains("60% of the 10 local ports (40000-40009)"), "{s}");
        assert!(s.contains("EADDRNOTAVAIL"), "{s}");
    }
}
