//! Listening TCP sockets over NETLINK_SOCK_DIAG (what `ss -tln` shows), and the processes
//! that hold sockets, from /proc.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use anyhow::Context;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use super::netlink::{self, End, Flow};

/// A TCP socket in LISTEN state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The bound address and port (0.0.0.0 / [::] for a wildcard bind).
    pub addr: SocketAddr,
    /// IPV6_V6ONLY: an IPv6 socket that refuses IPv4 (mapped) connections. Always false for IPv4.
    pub v6only: bool,
    /// The socket's inode, as in /proc/PID/fd -> socket:[INODE].
    pub inode: u32,
    /// The socket owner's uid.
    pub uid: u32,
    /// Connections waiting in its accept queue (`ss -ltn` Recv-Q).
    pub queue: u32,
    /// Its accept queue's limit: the listen() backlog, capped by net.core.somaxconn
    /// (`ss -ltn` Send-Q).
    pub backlog: u32,
}

impl Listener {
    /// The kernel's own test for a full accept queue (`sk_acceptq_is_full`): more connections
    /// waiting than the backlog. A SYN that finds it so is dropped.
    pub fn queue_full(&self) -> bool {
        self.queue > self.backlog
    }
}

/// The TCP listeners on `port`, IPv4 and IPv6, in the calling thread's network namespace
/// (combine with `run_in_netns` for another one).
pub fn tcp_listeners(port: u16) -> anyhow::Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let sockets = dump_tcp(family, StateFlags::LISTEN).with_context(|| {
            format!("cannot list TCP listeners over sock_diag (family {family})")
        })?;
        listeners.extend(
            sockets
                .iter()
                .filter(|s| s.header.socket_id.source_port == port)
                .map(listener),
        );
    }
    Ok(listeners)
}

/// Every TCP listener, IPv4 and IPv6, of the calling thread's network namespace.
pub fn all_tcp_listeners() -> anyhow::Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let sockets = dump_tcp(family, StateFlags::LISTEN).with_context(|| {
            format!("cannot list TCP listeners over sock_diag (family {family})")
        })?;
        listeners.extend(sockets.iter().map(listener));
    }
    Ok(listeners)
}

fn listener(s: &InetResponse) -> Listener {
    let id = &s.header.socket_id;
    let addr = match id.source_address {
        IpAddr::V6(ip) => {
            SocketAddr::V6(SocketAddrV6::new(ip, id.source_port, 0, scope_id(ip, id)))
        }
        ip => SocketAddr::new(ip, id.source_port),
    };
    let v6only = s.nlas.iter().any(|n| matches!(n, Nla::SkV6Only(true)));
    Listener {
        addr,
        v6only,
        inode: s.header.inode,
        uid: s.header.uid,
        // For a listener, sock_diag reports the accept queue and its limit in these two.
        queue: s.header.recv_queue,
        backlog: s.header.send_queue,
    }
}

/// A link-local IPv6 listener is bound to one interface: keep it as the scope id.
fn scope_id(ip: std::net::Ipv6Addr, id: &SocketId) -> u32 {
    if ip.is_unicast_link_local() {
        id.interface_id
    } else {
        0
    }
}

/// One sock_diag dump of the TCP sockets of `family` in the given states.
pub(super) fn dump_tcp(family: u8, states: StateFlags) -> anyhow::Result<Vec<InetResponse>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("cannot open a netlink socket")?;
    socket
        .bind_auto()
        .context("cannot bind the netlink socket")?;
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states,
        socket_id,
    });
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut message = NetlinkMessage::new(header, request.into());
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send_to(&buf, &NetlinkAddr::new(0, 0), 0)
        .context("cannot send the sock_diag request")?;
    read_dump(&socket)
}

/// Reads the replies of a dump until NLMSG_DONE.
fn read_dump(socket: &Socket) -> anyhow::Result<Vec<InetResponse>> {
    let mut sockets = Vec::new();
    let reply = netlink::receive(socket, "sock_diag", |m| {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(m.bytes)
            .context("cannot decode a message")?;
        if let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(s)) = message.payload {
            sockets.push(*s);
        }
        Ok(Flow::More)
    })?;
    match reply.end {
        End::Done => Ok(sockets),
        End::Refused(e) => Err(e).context("the kernel refused the sock_diag dump"),
    }
}

/// Who holds each socket inode: (pid, comm) of the lowest pid with a descriptor on it, from
/// /proc/PID/fd. Processes whose descriptors cannot be read (exited, or no permission) are
/// skipped; inodes nobody was found for are absent from the map.
pub fn socket_owners(inodes: &[u32]) -> HashMap<u32, (u32, String)> {
    let mut wanted: HashSet<u32> = inodes.iter().copied().collect();
    let mut owners = HashMap::new();
    for pid in pids() {
        if wanted.is_empty() {
            break;
        }
        let held: Vec<u32> = socket_inodes(pid)
            .filter(|ino| wanted.remove(ino))
            .collect();
        if held.is_empty() {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| "?".into());
        for ino in held {
            owners.insert(ino, (pid, comm.clone()));
        }
    }
    owners
}

/// All pids in /proc, ascending.
fn pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// The socket inodes behind a process's descriptors.
fn socket_inodes(pid: u32) -> impl Iterator<Item = u32> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::netns::{own_netns_inode, run_in_netns, tests as ns};
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;

    fn inode_of(listener: &TcpListener) -> u32 {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", listener.as_raw_fd());
        fs::metadata(path).unwrap().ino() as u32
    }

    #[test]
    fn sees_our_own_listener_and_its_owner() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = tcp_listeners(port).unwrap();
        let inode = inode_of(&l);
        let ours = found
            .iter()
            .find(|x| x.inode == inode)
            .expect("our listener");
        assert_eq!(ours.addr, l.local_addr().unwrap());
        assert!(!ours.v6only);
        // SAFETY: getuid has no preconditions.
        assert_eq!(ours.uid, unsafe { libc::getuid() });
        let owners = socket_owners(&[inode, 0]);
        assert_eq!(owners.get(&inode), Some(&(std::process::id(), comm())));
        assert!(!owners.contains_key(&0));
    }

    fn comm() -> String {
        fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn reads_the_accept_queue_and_its_backlog() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let inode = inode_of(&l);
        let before = tcp_listeners(addr.port()).unwrap();
        let ours = before.iter().find(|x| x.inode == inode).unwrap();
        assert_eq!(ours.queue, 0);
        assert!(ours.backlog > 0, "{ours:?}");
        // Two connections nobody accepts wait in the queue, as `ss -ltn` Recv-Q shows.
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        // (The listener may take the handshakes' last ACKs a moment after connect() returns.)
        let mut ours = None;
        for _ in 0..100 {
            let after = all_tcp_listeners().unwrap();
            ours = after.into_iter().find(|x| x.inode == inode);
            if ours.as_ref().is_some_and(|o| o.queue == 2) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let ours = ours.unwrap();
        assert_eq!(ours.queue, 2, "{ours:?}");
        assert!(!ours.queue_full());
    }

    #[test]
    fn other_ports_are_left_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let other = tcp_listeners(port.wrapping_add(1)).unwrap();
        assert!(other.iter().all(|x| x.addr.port() == port.wrapping_add(1)));
        assert!(other.iter().all(|x| x.inode != inode_of(&l)));
    }

    #[test]
    fn reads_listeners_inside_another_namespace() {
        if !ns::is_root() {
            println!("NL-SKIP reads_listeners_inside_another_namespace: needs root");
            return;
        }
        let netns = ns::TestNetns::new("diag");
        let _server = ns::ChildGuard(crate::enrich::tests::python_listeners(
            &netns.name,
            &[
                ("::1", 18080, true),
                ("127.0.0.1", 18081, false),
                ("::", 18082, false),
            ],
        ));
        let inode = netns.inode();
        assert_ne!(inode, own_netns_inode().unwrap());
        let (a, b, c) = run_in_netns(inode, None, || {
            (
                tcp_listeners(18080),
                tcp_listeners(18081),
                tcp_listeners(18082),
            )
        })
        .unwrap();
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].addr, "[::1]:18080".parse().unwrap());
        assert!(a[0].v6only);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].addr, "127.0.0.1:18081".parse().unwrap());
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].addr, "[::]:18082".parse().unwrap());
        assert!(!c[0].v6only);
        // The host namespace does not see them.
        assert!(tcp_listeners(18080)
            .unwrap()
            .iter()
            .all(|l| l.inode != a[0].inode));
        let owners = socket_owners(&[a[0].inode, b[0].inode]);
        assert_eq!(
            owners.get(&a[0].inode).map(|o| o.1.as_str()),
            Some("python3")
        );
        assert_eq!(owners.get(&b[0].inode).map(|o| o.0), Some(_server.0.id()));
    }
}
