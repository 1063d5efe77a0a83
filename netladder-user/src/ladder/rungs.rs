//! The texts of the ten rungs. Placeholders in commands are in capitals (DEST, PORT, DEV...).

use super::{Code, Layer, Rung};

pub(super) static RUNGS: &[Rung] = &[
    Rung {
        code: Code::Refused,
        slug: "refused",
        title: "connection refused",
        errno: Some("ECONNREFUSED"),
        layer: Layer::Application,
        meaning: "The SYN got an answer, and the answer was no: a TCP reset (or an ICMP \
                  port-unreachable). Something on the path is alive; nothing accepted the \
                  connection on that address and port.",
        causes: &[
            "the service is not running, crashed, or is still starting",
            "the service listens on another address (127.0.0.1 instead of 0.0.0.0) or only in \
             the other IP family (IPv6-only while the client uses IPv4, or the reverse)",
            "the client uses the wrong port or resolves the name to the wrong host",
            "a firewall rule REJECTs the connection with a TCP reset or ICMP port-unreachable",
            "the service runs in another network namespace (container) than the one the client \
             reaches",
        ],
        detection: "The connection's socket leaves SYN_SENT with error 111 \
                    (tp_btf/inet_sock_set_state), after a reset (tcp_receive_reset) or without one \
                    (an ICMP port-unreachable). Where the kernel has drop reasons (5.17+), \
                    skb:kfree_skb tells a SYN that found no socket (NO_SOCKET: netladder then asks \
                    sock_diag, in that namespace, who listens on the port and why it did not \
                    match) from one the firewall dropped to answer it (NETFILTER_DROP: a REJECT, \
                    never called a missing listener); the rule is then read from nftables or \
                    iptables with its counter.",
    },
    Rung {
        code: Code::NoRoute,
        slug: "no-route",
        title: "no route to host",
        errno: Some("EHOSTUNREACH"),
        layer: Layer::Route,
        meaning: "The kernel decided the host cannot be reached: the route lookup hit an \
                  unreachable or prohibit route, or a router (or the firewall) answered with an \
                  ICMP host-unreachable.",
        causes: &[
            "an 'unreachable' or 'prohibit' route (often left by a VPN, a routing daemon or policy \
             routing)",
            "a router on the path has no route to the destination and says so with ICMP",
            "a firewall rejects with icmp host-unreachable or admin-prohibited",
            "the next hop does not answer ARP / neighbour discovery (reported as #029 when seen)",
        ],
        detection: "connect() failing at once with EHOSTUNREACH or EACCES (syscall tracepoints), \
                    or the socket closing with error 113 after an ICMP host-unreachable (read \
                    where the kernel consumes it, 6.3+); the route the kernel would use is then \
                    read over rtnetlink, as `ip route get` does. A reject the local firewall \
                    generated is reported as firewall.",
    },
    Rung {
        code: Code::Timeout,
        slug: "timeout",
        title: "connection timed out",
        errno: Some("ETIMEDOUT"),
        layer: Layer::Firewall,
        meaning: "SYNs went out and nothing came back before the retries ran out (or before the \
                  application gave up). Unlike a refusal, there was no answer at all.",
        causes: &[
            "a firewall silently drops the SYN, locally or anywhere on the path",
            "the peer host is down or the address is not in use",
            "asymmetric routing: the reply takes another path and is dropped there (rp_filter, \
             stateful firewall)",
            "the server's accept queue is full (it does not accept() fast enough, or its backlog \
             is too small) and new SYNs are dropped (accept_queue_full; syn_queue_full)",
        ],
        detection: "SYN retransmissions on a socket in SYN_SENT (tcp:tcp_retransmit_skb) followed \
                    by socket error 110, or by a close without error when the application's own \
                    timeout fires first. A drop of that socket's packet with reason \
                    NETFILTER_DROP (skb:kfree_skb) pins it on the local firewall, with the hook; \
                    a drop in any other namespace of this host names its reason (the \
                    reverse-path filter with the route back and rp_filter settings, no route \
                    onward, a full queue, connection tracking). Only where the kernel shows \
                    drops (drop reasons, 5.17+) does a timeout without any say that nothing on \
                    this host dropped it: the answer is missing beyond this host. A client that \
                    closes the socket itself (its own timeout) gives the same reading. \
                    A SYN dropped at a full listen queue has no drop reason at all, so when the \
                    destination is an address of a network namespace on this host, netladder \
                    reads the listener on the port there over sock_diag (Recv-Q above the \
                    backlog, as `ss -ltn` shows) and that namespace's ListenOverflows and \
                    ListenDrops since the connect began: a full queue makes the cause \
                    accept_queue_full (layer application), naming the listener's process. The \
                    server side is reported on its own too, even with no client on this host: \
                    every second `watch` reads each namespace's counters and, when they rose, \
                    reports each listener whose accept queue is full (\"side\": \"server\"), \
                    at most once per listener per --stats-interval, with the counts.",
    },
    Rung {
        code: Code::Dns,
        slug: "dns",
        title: "name or service not known",
        errno: Some("EAI_NONAME"),
        layer: Layer::Dns,
        meaning: "The name could not be turned into an address: the resolver got a negative \
                  answer (NXDOMAIN), a server failure, or no answer at all.",
        causes: &[
            "a typo, or the record does not exist (NXDOMAIN)",
            "the nameserver failed or refused the query (SERVFAIL, REFUSED)",
            "no nameserver reachable: a network problem one rung lower",
            "a stale or wrong entry in /etc/hosts, or an unexpected nsswitch order",
            "the wrong search domain in /etc/resolv.conf",
        ],
        detection: "`watch` parses DNS responses (UDP and TCP, port 53) as sockets receive them \
                    (cgroup_skb): an error RCODE names the question, the nameserver and the process \
                    that asked. glibc's getaddrinfo is traced (uprobes): its EAI_* result joins the \
                    answers of the same call into one event, and a call that sent questions without \
                    an answer, or none at all, points at the network below. A connection to an \
                    address getaddrinfo took from /etc/hosts carries that name. `diagnose` resolves \
                    the name as programs do, asks every nameserver of /etc/resolv.conf directly, \
                    compares the answers, and says when /etc/hosts answered instead of DNS.",
    },
    Rung {
        code: Code::TlsVerify,
        slug: "tls-verify",
        title: "TLS certificate verify failed",
        errno: None,
        layer: Layer::Application,
        meaning: "The TCP connection worked, but the client rejected the certificate the server \
                  presented, so the TLS handshake was aborted.",
        causes: &[
            "the certificate expired (or is not yet valid)",
            "the name asked does not match the certificate's names",
            "a self-signed certificate or a private CA the client does not trust",
            "the server does not send its intermediate certificates",
            "the client's clock is far off (a restored snapshot or a fresh VM)",
        ],
        detection: "`watch`: uprobes on OpenSSL 3 (libssl.so.3, libcrypto.so.3 on the system \
                    library path, every process): a client handshake (SSL object in connect \
                    state) whose chain verification failed (X509_verify_cert, then the \
                    X509_V_ERR code from X509_STORE_CTX_get_error) and that then failed \
                    fatally (SSL_get_error = SSL_ERROR_SSL); curl's own host name check by \
                    curl_easy_perform returning CURLE_PEER_FAILED_VERIFICATION. The code names \
                    the reason; netladder then reads the certificate the peer presents (one \
                    handshake from the client's namespace) for its dates and names, and adds the \
                    system clock. GnuTLS, NSS, rustls, Go and statically linked TLS are not \
                    seen. `diagnose --tls` (implied on port 443) completes a TLS handshake after \
                    the TCP connection and checks the certificate against the system's trusted \
                    roots: its validity dates against the system clock, the name asked against \
                    the names it carries, and its chain to a trusted CA.",
    },
    Rung {
        code: Code::NetUnreachable,
        slug: "net-unreachable",
        title: "network is unreachable",
        errno: Some("ENETUNREACH"),
        layer: Layer::Route,
        meaning: "The local routing table has no route at all for the destination, so nothing \
                  was sent.",
        causes: &[
            "no default route (DHCP failed, a gateway was removed)",
            "the interface that carried the route is down, so its routes disappeared",
            "the interface has no address of that family (an IPv6 destination on an IPv4-only \
             host)",
            "a VLAN interface missing or misconfigured",
        ],
        detection: "connect() (or sendto()/sendmsg()) failing at once with ENETUNREACH (syscall \
                    tracepoints), or the socket closing with error 101; the interfaces, addresses \
                    and routes toward the destination are then read over rtnetlink.",
    },
    Rung {
        code: Code::AddrInUse,
        slug: "addr-in-use",
        title: "address already in use",
        errno: Some("EADDRINUSE"),
        layer: Layer::Application,
        meaning: "A program could not bind or listen on an address and port because another \
                  socket already holds it.",
        causes: &[
            "another instance of the service (or another service) already listens on the port",
            "the previous instance's connections linger in TIME_WAIT and SO_REUSEADDR is not set",
            "a wildcard bind (0.0.0.0 or [::]) collides with a specific one on the same port",
        ],
        detection: "bind() or listen() returning -98 (syscalls:sys_exit_bind / sys_exit_listen, \
                    in the process's own context); the holder's pid, command and socket state \
                    come from sock_diag and /proc.",
    },
    Rung {
        code: Code::TimeWait,
        slug: "time-wait",
        title: "too many TIME_WAIT sockets / ephemeral ports exhausted",
        errno: Some("EADDRNOTAVAIL"),
        layer: Layer::Application,
        meaning: "connect() found no free local port toward this destination: every port of the \
                  ephemeral range is taken by connections to it, usually in TIME_WAIT.",
        causes: &[
            "one new connection per request to the same server, no keep-alive or pooling",
            "a small net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse disabled for outgoing connections",
        ],
        detection: "connect() returning -99 from local port allocation (syscalls:sys_exit_connect), \
                    told apart from a bind() to an address the host does not have; TIME_WAIT \
                    counts per destination come from sock_diag.",
    },
    Rung {
        code: Code::ArpFailed,
        slug: "arp-failed",
        title: "ARP / neighbour resolution failed",
        errno: Some("EHOSTUNREACH"),
        layer: Layer::Link,
        meaning: "The next hop is on a directly connected network, but it never answered ARP \
                  (IPv4) or neighbour discovery (IPv6), so the kernel had no MAC address to send \
                  to.",
        causes: &[
            "the next hop (host or gateway) is down or has another address",
            "wrong VLAN, switch port or cabling: the broadcast does not reach it",
            "a stale or wrong static neighbour entry",
            "a host firewall dropping ARP or neighbour solicitations",
        ],
        detection: "neighbour entries reaching FAILED (neigh:neigh_update, \
                    neigh:neigh_timer_handler), drops with reason NEIGH_FAILED (skb:kfree_skb), \
                    then socket error 113, reported here instead of a bare \"no route to host\".",
    },
    Rung {
        code: Code::SshPublickey,
        slug: "ssh-publickey",
        title: "ssh: Permission denied (publickey)",
        errno: None,
        layer: Layer::Application,
        meaning: "The network works and sshd answered, but it accepted none of the keys the \
                  client offered.",
        causes: &[
            "the key is not in the user's ~/.ssh/authorized_keys on the server",
            "wrong ownership or modes on the home directory, ~/.ssh or authorized_keys \
             (sshd's StrictModes)",
            "the client offers another key than expected, or the wrong user name",
            "the user is not allowed by sshd_config (AllowUsers, AllowGroups)",
        ],
        detection: "The log lines ssh and sshd write: the client's \"Permission denied \
                    (publickey)\" (syscalls:sys_enter_write by ssh), with the key files it read \
                    (openat) and the address it connected to; on the server, sshd's reason \
                    (StrictModes, user not allowed, invalid user, rejected keys at LogLevel \
                    VERBOSE) and the end of the connection without a login, whether sshd logs \
                    to syslog or journald (sendto) or to stderr or a file (write).",
    },
];
