//! Netlink and /proc look-ups that add the "why" to a classified failure.

pub mod acceptq;
pub mod container;
pub mod dns;
pub mod enricher;
pub mod firewall;
pub mod iptables;
pub mod link;
pub mod neigh;
mod netlink;
pub mod netns;
mod nfnl;
pub mod nft;
pub mod nftrace;
pub mod ports;
pub mod route;
pub mod sockdiag;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use sockdiag::Listener;

/// Who holds a socket, by inode: (pid, comm), as returned by [`sockdiag::socket_owners`].
pub type Owners = HashMap<u32, (u32, String)>;

/// The sentence for a connection to `dst` refused by a local stack that had no socket for it,
/// from the listeners now on `dst`'s port in that stack's namespace (and their owners).
pub fn describe_refused(dst: SocketAddr, listeners: &[Listener], owners: &Owners) -> String {
    let dst = SocketAddr::new(canonical(dst.ip()), dst.port());
    let mut on_port: Vec<&Listener> = listeners
        .iter()
        .filter(|l| l.addr.port() == dst.port())
        .collect();
    let mut seen = HashSet::new();
    on_port.retain(|l| seen.insert((l.addr, l.v6only)));
    if on_port.is_empty() {
        return format!("no listener on port {} at all", dst.port());
    }
    if let Some(l) = on_port.iter().find(|l| accepts(l, dst.ip())) {
        return format!(
            "nothing listened on {dst} when the SYN arrived, but {}{} accepts it now: the \
             listener probably started after the failure, or its accept queue overflowed",
            l.addr,
            owner(l, owners)
        );
    }
    let others: Vec<String> = on_port
        .iter()
        .take(MAX_SHOWN)
        .map(|l| format!("{}{}{}", l.addr, owner(l, owners), why_not(l, dst.ip())))
        .collect();
    let more = match on_port.len().saturating_sub(MAX_SHOWN) {
        0 => String::new(),
        n => format!(", and {n} more"),
    };
    let who = if on_port.len() == 1 {
        "one listens on"
    } else {
        "others listen on"
    };
    format!("no listener on {dst} ({who} {}{more})", others.join("; "))
}

pub(crate) use crate::words::{canonical, plural};

/// How many other listeners a sentence names before "and N more".
const MAX_SHOWN: usize = 3;

/// The refused-connection sentence for `dst`, from the listeners of the calling thread's network
/// namespace (run it where the SYN found no socket). Blocks on netlink and /proc.
pub fn refused_sentence(dst: SocketAddr) -> anyhow::Result<String> {
    let listeners = sockdiag::tcp_listeners(dst.port())?;
    let inodes: Vec<u32> = listeners.iter().map(|l| l.inode).collect();
    let owners = sockdiag::socket_owners(&inodes);
    Ok(describe_refused(dst, &listeners, &owners))
}

/// Would this listener take a connection to `dst` (canonical)? Dual-stack rules: an IPv6
/// socket without IPV6_V6ONLY also takes IPv4 on [::] or on its mapped address.
pub(crate) fn accepts(l: &Listener, dst: IpAddr) -> bool {
    match (l.addr.ip(), dst) {
        (IpAddr::V4(a), IpAddr::V4(d)) => a.is_unspecified() || a == d,
        (IpAddr::V6(a), IpAddr::V6(d)) => a.is_unspecified() || a == d,
        (IpAddr::V6(a), IpAddr::V4(d)) => {
            !l.v6only && (a.is_unspecified() || a.to_ipv4_mapped() == Some(d))
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Why a listener that does not accept `dst` (canonical) does not.
fn why_not(l: &Listener, dst: IpAddr) -> &'static str {
    let bound = canonical(l.addr.ip());
    match (bound.is_ipv4(), dst.is_ipv4()) {
        (false, true) => ", IPv6 only",
        (true, false) => ", IPv4 only",
        _ if bound.is_loopback() && !dst.is_loopback() => " only: bound to loopback",
        _ => " only: bound to another address",
    }
}

fn owner(l: &Listener, owners: &Owners) -> String {
    owners
        .get(&l.inode)
        .map_or(String::new(), |(pid, comm)| format!(" ({comm}[{pid}])"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    fn l(addr: &str, v6only: bool, inode: u32) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            v6only,
            inode,
            uid: 0,
            queue: 0,
            backlog: 128,
        }
    }

    fn say(dst: &str, listeners: &[Listener]) -> String {
        describe_refused(dst.parse().unwrap(), listeners, &Owners::new())
    }

    #[test]
    fn nothing_on_the_port() {
        assert_eq!(
            say("127.0.0.1:8080", &[]),
            "no listener on port 8080 at all"
        );
        assert_eq!(
            say("[::1]:8080", &[l("0.0.0.0:9090", false, 1)]),
            "no listener on port 8080 at all"
        );
    }

    #[test]
    fn ipv6_only_listener_for_an_ipv4_client() {
        assert_eq!(
            say("127.0.0.1:8080", &[l("[::1]:8080", true, 1)]),
            "no listener on 127.0.0.1:8080 (one listens on [::1]:8080, IPv6 only)"
        );
        assert_eq!(
            say("10.0.0.2:8080", &[l("[::]:8080", true, 1)]),
            "no listener on 10.0.0.2:8080 (one listens on [::]:8080, IPv6 only)"
        );
        // [::1] without V6ONLY still takes only IPv6 (and ::ffff:127.0.0.1 would not match).
        assert_eq!(
            say("127.0.0.1:8080", &[l("[::1]:8080", false, 1)]),
            "no listener on 127.0.0.1:8080 (one listens on [::1]:8080, IPv6 only)"
        );
    }

    #[test]
    fn ipv4_only_listener_for_an_ipv6_client() {
        assert_eq!(
            say("[::1]:8080", &[l("0.0.0.0:8080", false, 1)]),
            "no listener on [::1]:8080 (one listens on 0.0.0.0:8080, IPv4 only)"
        );
        assert_eq!(
            say("[fd00::2]:8080", &[l("[::ffff:10.0.0.2]:8080", false, 1)]),
            "no listener on [fd00::2]:8080 (one listens on [::ffff:10.0.0.2]:8080, IPv4 only)"
        );
    }

    #[test]
    fn bound_to_loopback_or_another_address() {
        assert_eq!(
            say("10.231.1.2:8080", &[l("127.0.0.1:8080", false, 1)]),
            "no listener on 10.231.1.2:8080 (one listens on 127.0.0.1:8080 only: bound to loopback)"
        );
        assert_eq!(
            say("[fd00::2]:8080", &[l("[::1]:8080", true, 1)]),
            "no listener on [fd00::2]:8080 (one listens on [::1]:8080 only: bound to loopback)"
        );
        assert_eq!(
            say("10.0.0.2:8080", &[l("10.0.0.3:8080", false, 1)]),
            "no listener on 10.0.0.2:8080 (one listens on 10.0.0.3:8080 only: bound to another address)"
        );
        assert_eq!(
            say("127.0.0.2:8080", &[l("127.0.0.1:8080", false, 1)]),
            "no listener on 127.0.0.2:8080 (one listens on 127.0.0.1:8080 only: bound to another address)"
        );
    }

    #[test]
    fn a_listener_that_would_accept_exists_now() {
        let now = "accepts it now: the listener probably started after the failure, or its \
                   accept queue overflowed";
        for (dst, listener) in [
            ("127.0.0.1:8080", l("0.0.0.0:8080", false, 1)),
            ("127.0.0.1:8080", l("127.0.0.1:8080", false, 1)),
            ("127.0.0.1:8080", l("[::]:8080", false, 1)),
            ("127.0.0.1:8080", l("[::ffff:127.0.0.1]:8080", false, 1)),
            ("[::ffff:127.0.0.1]:8080", l("0.0.0.0:8080", false, 1)),
            ("[::1]:8080", l("[::]:8080", true, 1)),
            ("[::1]:8080", l("[::1]:8080", true, 1)),
        ] {
            let s = say(dst, std::slice::from_ref(&listener));
            assert!(s.ends_with(now), "{dst} {listener:?}: {s}");
            assert!(s.contains(&format!("but {} accepts", listener.addr)), "{s}");
        }
        assert!(
            say("[::ffff:127.0.0.1]:8080", &[l("0.0.0.0:8080", false, 1)])
                .starts_with("nothing listened on 127.0.0.1:8080 when the SYN arrived")
        );
    }

    #[test]
    fn mapped_destination_counts_as_ipv4() {
        assert_eq!(
            say("[::ffff:127.0.0.1]:8080", &[l("[::1]:8080", true, 1)]),
            "no listener on 127.0.0.1:8080 (one listens on [::1]:8080, IPv6 only)"
        );
    }

    #[test]
    fn owners_and_many_listeners() {
        let listeners = [
            l("[::1]:8080", true, 7),
            l("127.0.0.1:8080", false, 8),
            l("127.0.0.1:8080", false, 9),
            l("10.0.0.3:8080", false, 10),
            l("10.0.0.4:8080", false, 11),
            l("10.0.0.5:8080", false, 12),
        ];
        let owners = Owners::from([(7, (812, "python3".to_string()))]);
        let s = describe_refused("10.0.0.2:8080".parse().unwrap(), &listeners, &owners);
        assert_eq!(
            s,
            "no listener on 10.0.0.2:8080 (others listen on [::1]:8080 (python3[812]), IPv6 only; \
             127.0.0.1:8080 only: bound to loopback; 10.0.0.3:8080 only: bound to another address, \
             and 2 more)"
        );
        let one = describe_refused("127.0.0.1:8080".parse().unwrap(), &listeners[..1], &owners);
        assert_eq!(
            one,
            "no listener on 127.0.0.1:8080 (one listens on [::1]:8080 (python3[812]), IPv6 only)"
        );
    }

    /// Starts python3 in the named namespace, listening on each (address, port, v6only);
    /// returns once every socket listens. The caller kills it (see `ChildGuard`).
    pub(crate) fn python_listeners(netns: &str, socks: &[(&str, u16, bool)]) -> Child {
        let specs: Vec<String> = socks
            .iter()
            .map(|(a, p, v6only)| format!("('{a}', {p}, {})", if *v6only { 1 } else { 0 }))
            .collect();
        let script = format!(
            "import socket, sys, time\n\
             keep = []\n\
             for addr, port, v6only in [{}]:\n\
             \x20   fam = socket.AF_INET6 if ':' in addr else socket.AF_INET\n\
             \x20   s = socket.socket(fam, socket.SOCK_STREAM)\n\
             \x20   if fam == socket.AF_INET6:\n\
             \x20       s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)\n\
             \x20   s.bind((addr, port))\n\
             \x20   s.listen()\n\
             \x20   keep.append(s)\n\
             print('ready', flush=True)\n\
             time.sleep(120)\n",
            specs.join(", ")
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 in the test namespace");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("python3 stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read python3 readiness");
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 listeners did not start in {netns}");
        }
        child
    }

    fn refused_detail(
        netns_inode: u64,
        hint_pid: Option<u32>,
        dst: SocketAddr,
    ) -> anyhow::Result<String> {
        netns::run_in_netns(netns_inode, hint_pid, move || refused_sentence(dst))?
    }

    #[test]
    fn refused_detail_in_a_real_namespace() {
        use super::netns::tests::{is_root, ChildGuard, TestNetns};
        if !is_root() {
            println!("NL-SKIP refused_detail_in_a_real_namespace: needs root");
            return;
        }
        let ns = TestNetns::new("refused");
        let server = ChildGuard(python_listeners(
            &ns.name,
            &[("::1", 18090, true), ("127.0.0.1", 18091, false)],
        ));
        let pid = server.0.id();
        let inode = ns.inode();
        let detail = |dst: &str| refused_detail(inode, None, dst.parse().unwrap()).unwrap();
        assert_eq!(
            detail("127.0.0.1:18090"),
            format!("no listener on 127.0.0.1:18090 (one listens on [::1]:18090 (python3[{pid}]), IPv6 only)")
        );
        assert_eq!(
            detail("10.231.1.2:18091"),
            format!("no listener on 10.231.1.2:18091 (one listens on 127.0.0.1:18091 (python3[{pid}]) only: bound to loopback)")
        );
        assert_eq!(
            detail("127.0.0.1:18092"),
            "no listener on port 18092 at all"
        );
        let via_hint = refused_detail(inode, Some(pid), "127.0.0.1:18091".parse().unwrap());
        assert!(via_hint.unwrap().contains("accepts it now"));
    }
}
