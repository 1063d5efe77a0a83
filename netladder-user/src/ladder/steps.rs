//! Next steps: the commands an operator runs next, filled in with the failure's real
//! addresses and ports. A command meant for another machine carries `# on HOST`;
//! commands that inspect the network run in the failing process's namespace.

use std::net::{IpAddr, SocketAddr};

use super::{Cause, Code};

/// What is known about a failure when choosing its next steps.
#[derive(Debug, Clone, Default)]
pub struct StepCtx {
    /// The remote end (for #027, the address being bound goes in `src`).
    pub dst: Option<SocketAddr>,
    /// The local end, or the address a bind()/listen() wanted.
    pub src: Option<SocketAddr>,
    /// The process that saw the failure.
    pub pid: Option<u32>,
    /// The name of the failure's network namespace under /run/netns, when it has one.
    pub netns_name: Option<String>,
    /// True when the failure happened in another network namespace than netladder's own:
    /// commands are then prefixed with `ip netns exec NAME` (name known) or
    /// `nsenter -t PID -n` (otherwise).
    pub other_netns: bool,
    /// The host name involved, when known: the DNS query (#024), the TLS server name (#025),
    /// the ssh target (#030).
    pub host_name: Option<String>,
    /// The account involved, when known (#030: the user ssh logs in as).
    pub user: Option<String>,
    /// The command that lists the firewall chain holding the rule that dropped the
    /// connection, with a comment naming the rule, once netladder has named it.
    pub rule_chain: Option<String>,
    /// #024: the nameservers of the failing process's own /etc/resolv.conf.
    pub nameservers: Vec<IpAddr>,
    /// A connection failure whose address the process got from getaddrinfo for this name:
    /// the name's resolution is worth a look (a stale /etc/hosts entry).
    pub resolved_name: Option<String>,
}

/// The next diagnostic commands for a failure with `code` and the classifier's `cause` (None
/// for the code's generic steps).
///
/// Each builder that reads the cause matches every cause by name, so a new cause has to be
/// given its steps (or the code's generic ones) before it compiles.
pub fn next_steps(code: Code, cause: Option<Cause>, ctx: &StepCtx) -> Vec<String> {
    let mut s = Steps::new(ctx);
    match code {
        Code::Refused => refused(&mut s, cause),
        Code::NoRoute => no_route(&mut s, cause),
        Code::Timeout => timed_out(&mut s, cause),
        Code::Dns => dns(&mut s, cause),
        Code::TlsVerify => tls(&mut s),
        Code::NetUnreachable => net_unreachable(&mut s, cause),
        Code::AddrInUse => addr_in_use(&mut s),
        Code::TimeWait => time_wait(&mut s),
        Code::ArpFailed => arp_failed(&mut s),
        Code::SshPublickey => ssh_publickey(&mut s, cause),
    }
    if code != Code::Dns {
        if let Some(name) = ctx.resolved_name.as_deref().map(sh_quote) {
            s.host(format!(
                "grep -n {name} /etc/hosts  # the address came from getaddrinfo for {name}: a stale static entry?"
            ));
            s.here(format!("dig {name}  # what DNS says about it now"));
        }
    }
    s.finish()
}

fn refused(s: &mut Steps, cause: Option<Cause>) {
    use Cause::*;
    let (port, dst) = (s.port(), s.dst());
    let Some(cause) = cause else {
        return refused_generic(s);
    };
    match cause {
        NoListener => {
            s.here(format!(
                "ss -tlnp 'sport = :{port}'  # who listens on port {port}, on which address and family"
            ));
            s.host("journalctl -u SERVICE -n 50 --no-pager  # did the service stop, crash or fail to start?");
        }
        PeerReset => {
            s.on_peer(format!(
                "ss -tlnp 'sport = :{port}'  # is the service listening there?"
            ));
            s.on_peer("journalctl -u SERVICE -n 50 --no-pager  # did it stop or crash?");
            s.here(format!(
                "{}  # who sends the reset: the server, or a REJECT on a firewall in between",
                s.tcpdump()
            ));
        }
        FirewallRejectRst | FirewallRejectIcmp => {
            let how = if cause == FirewallRejectRst {
                "tcp reset"
            } else {
                "icmp port-unreachable"
            };
            s.firewall(&format!(
                "the rule rejecting tcp port {port} to {dst} with {how}"
            ));
        }
        // The code's generic steps.
        Refused | HostUnreachable | RouteProhibited | AdminProhibited | RouteRefused | NoReply
        | AppGaveUp | FirewallDrop | HostDrop | ConntrackDrop | ReversePathDrop
        | NoRouteOnInput | NoRoute | AcceptQueueFull | SynQueueFull | Nxdomain | Servfail
        | DnsError | NoNameserver | NoAnswer | NotFoundLocally | NoAddress | ResolverFailed
        | Dns | CertExpired | CertNotYetValid | CertNameMismatch | CertSelfSigned
        | CertUnknownIssuer | CertRevoked | CertInvalid | CertUntrusted | CertWeak
        | TlsHandshakeFailed | NetUnreachable | LinkDown | AddrInUse | PortsExhausted
        | BindNonlocal | NeighbourFailed | ClientDenied | ServerBadModes | ServerUserNotAllowed
        | ServerInvalidUser | ServerKeyUnknown | ServerRefused => refused_generic(s),
    }
}

fn refused_generic(s: &mut Steps) {
    let port = s.port();
    s.here(format!("ss -tlnp 'sport = :{port}'"));
    s.here(s.tcpdump());
    s.firewall(&format!("a reject rule for tcp port {port}"));
}

fn no_route(s: &mut Steps, cause: Option<Cause>) {
    use Cause::*;
    let dst = s.dst();
    match cause {
        Some(AdminProhibited) => return admin_prohibited(s),
        Some(FirewallRejectIcmp) => {
            return s.firewall(&format!(
                "the rule rejecting traffic to {dst} with icmp host-unreachable or admin-prohibited"
            ))
        }
        // The code's generic steps.
        None
        | Some(
            NoListener | PeerReset | FirewallRejectRst | Refused | HostUnreachable
            | RouteProhibited | RouteRefused | NoReply | AppGaveUp | FirewallDrop | HostDrop
            | ConntrackDrop | ReversePathDrop | NoRouteOnInput | NoRoute | AcceptQueueFull
            | SynQueueFull | Nxdomain | Servfail | DnsError | NoNameserver | NoAnswer
            | NotFoundLocally | NoAddress | ResolverFailed | Dns | CertExpired | CertNotYetValid
            | CertNameMismatch | CertSelfSigned | CertUnknownIssuer | CertRevoked | CertInvalid
            | CertUntrusted | CertWeak | TlsHandshakeFailed | NetUnreachable | LinkDown | AddrInUse
            | PortsExhausted | BindNonlocal | NeighbourFailed | ClientDenied | ServerBadModes
            | ServerUserNotAllowed | ServerInvalidUser | ServerKeyUnknown | ServerRefused,
        ) => {}
    }
    s.here(format!(
        "ip route get {dst}  # the route the kernel picks for {dst}"
    ));
    s.here("ip route show table all type unreachable");
    s.here("ip route show table all type prohibit");
    s.here("ip rule show  # policy routing that sends the flow to another table");
    s.here(format!(
        "traceroute -n {dst}  # which router answers host-unreachable"
    ));
}

/// An ICMP administratively-prohibited: a firewall or a prohibit route where it came from.
fn admin_prohibited(s: &mut Steps) {
    let dst = s.dst();
    s.here(format!(
        "traceroute -n {dst}  # the router that answers administratively-prohibited"
    ));
    s.here("ip route show table all type prohibit  # where it is a namespace of this host");
    s.firewall(&format!(
        "the rule rejecting traffic to {dst} with admin-prohibited (here, or on that router)"
    ));
}

fn timed_out(s: &mut Steps, cause: Option<Cause>) {
    use Cause::*;
    let (port, dst) = (s.port(), s.dst());
    let Some(cause) = cause else {
        return timed_out_generic(s);
    };
    match cause {
        // Run where the listener is: the failure's namespace is the listener's.
        AcceptQueueFull | SynQueueFull => {
            let port = s
                .ctx
                .dst
                .or(s.ctx.src)
                .map_or("PORT".into(), |a| a.port().to_string());
            s.here(format!(
                "ss -ltnp 'sport = :{port}'  # Recv-Q (connections waiting) above Send-Q (the backlog): the queue is full"
            ));
            if cause == SynQueueFull {
                s.here("nstat -az TcpExtTCPReqQFullDrop TcpExtTCPReqQFullDoCookies  # SYNs dropped (or answered with cookies) at a full SYN queue");
                s.here("sysctl net.ipv4.tcp_syncookies net.ipv4.tcp_max_syn_backlog  # syncookies keep a flooded listener answering");
                return;
            }
            s.here("nstat -az TcpExtListenOverflows TcpExtListenDrops  # rising while clients time out: SYNs dropped at the full queue");
            let pid = s.ctx.pid.map_or("PID".into(), |p| p.to_string());
            s.host(format!(
                "strace -f -e trace=accept,accept4 -p {pid}  # is the server's accept loop running, and keeping up?"
            ));
            s.here("sysctl net.core.somaxconn  # the cap on every listen() backlog: raise the backlog the server passes to listen() (and this cap) for bursts");
        }
        ReversePathDrop => {
            s.here("sysctl -a 2>/dev/null | grep '\\.rp_filter'  # 1 = strict: a packet whose route back leaves by another interface is dropped");
            let client = s
                .ctx
                .src
                .map_or("CLIENT".into(), |a| crate::words::canonical(a.ip()).to_string());
            s.here(format!("ip route get {client}  # the route back to the client: it should leave by the interface the SYN came in on"));
            s.here("nstat -az TcpExtIPReversePathFilter  # counts the packets the filter refused");
            s.here("sysctl -w net.ipv4.conf.all.rp_filter=2  # loose mode, if the asymmetric path is intended");
        }
        NoRouteOnInput | RouteRefused => {
            s.here(format!("ip route get {dst}  # in the namespace that dropped the SYN"));
            s.here("ip route show table all type unreachable");
            s.here("ip route show table all type prohibit");
            s.here("ip route show table all type blackhole");
            s.here("sysctl net.ipv4.ip_forward  # a router must forward");
        }
        ConntrackDrop => {
            s.host("conntrack -S  # insert_failed, drop, early_drop, invalid");
            s.host("sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max");
            s.here("nstat -az  # the namespace's drop counters");
        }
        HostDrop => {
            s.here(s.tcpdump());
            s.here("nstat -az  # which drop counter rises with each SYN");
            s.host("perf trace -e skb:kfree_skb  # the drop reason and location of each drop");
        }
        FirewallDrop => s.firewall(&format!(
            "the drop rule matching tcp port {port} to {dst}; its counter grows with every SYN retry"
        )),
        NoReply | AppGaveUp => {
            s.here(format!(
                "{}  # do the SYNs leave, and does anything come back?",
                s.tcpdump()
            ));
            s.here(format!(
                "ip route get {dst}  # egress interface and gateway; replies must come back the same way"
            ));
            s.here(format!(
                "traceroute -n -T -p {port} {dst}  # how far the SYN gets (firewalls on the path, security groups)"
            ));
            if cause == AppGaveUp {
                s.here("sysctl net.ipv4.tcp_syn_retries  # the application gave up before the kernel did: raise its connect timeout if the peer is only slow");
            } else {
                s.on_peer(format!(
                    "ss -tlnp 'sport = :{port}'  # is the peer up and listening?"
                ));
            }
        }
        // The code's generic steps.
        NoListener | PeerReset | FirewallRejectRst | FirewallRejectIcmp | Refused
        | HostUnreachable | RouteProhibited | AdminProhibited | NoRoute | Nxdomain | Servfail
        | DnsError | NoNameserver | NoAnswer | NotFoundLocally | NoAddress | ResolverFailed
        | Dns | CertExpired | CertNotYetValid | CertNameMismatch | CertSelfSigned
        | CertUnknownIssuer | CertRevoked | CertInvalid | CertUntrusted | CertWeak
        | TlsHandshakeFailed | NetUnreachable | LinkDown | AddrInUse | PortsExhausted
        | BindNonlocal | NeighbourFailed | ClientDenied | ServerBadModes
        | ServerUserNotAllowed | ServerInvalidUser | ServerKeyUnknown | ServerRefused => {
            timed_out_generic(s)
        }
    }
}

fn timed_out_generic(s: &mut Steps) {
    let (port, dst) = (s.port(), s.dst());
    s.here(s.tcpdump());
    s.here(format!("ip route get {dst}"));
    s.firewall(&format!("a drop rule for tcp port {port}"));
    s.on_peer(format!(
        "ss -ltn 'sport = :{port}'; nstat -az TcpExtListenOverflows  # Recv-Q above Send-Q and rising overflows: the listener's accept queue is full"
    ));
}

fn dns(s: &mut Steps, cause: Option<Cause>) {
    use Cause::*;
    let name = s.host_name();
    s.here(format!(
        "getent ahosts {name}  # the answer through nsswitch, /etc/hosts included"
    ));
    // A direct question to the server that answered, then to every nameserver the process
    // has (its own resolv.conf), each bypassing /etc/hosts and the local cache.
    let mut servers: Vec<IpAddr> = s
        .ctx
        .dst
        .map(|d| crate::words::canonical(d.ip()))
        .into_iter()
        .collect();
    for ns in &s.ctx.nameservers {
        if !servers.contains(ns) {
            servers.push(*ns);
        }
    }
    if servers.is_empty() {
        s.here(format!("dig {name}  # ask DNS only, bypassing /etc/hosts"));
    }
    for server in servers.iter().take(4) {
        s.here(format!(
            "dig @{server} {name}  # ask nameserver {server} directly"
        ));
    }
    // No nameserver answered, or none could be asked: the way to it is worth a look.
    let unanswered = match cause {
        Some(NoAnswer | NoNameserver) => true,
        None
        | Some(
            NoListener | PeerReset | FirewallRejectRst | FirewallRejectIcmp | Refused
            | HostUnreachable | RouteProhibited | AdminProhibited | RouteRefused | NoReply
            | AppGaveUp | FirewallDrop | HostDrop | ConntrackDrop | ReversePathDrop
            | NoRouteOnInput | NoRoute | AcceptQueueFull | SynQueueFull | Nxdomain | Servfail
            | DnsError | NotFoundLocally | NoAddress | ResolverFailed | Dns | CertExpired
            | CertNotYetValid | CertNameMismatch | CertSelfSigned | CertUnknownIssuer | CertRevoked
            | CertInvalid | CertUntrusted | CertWeak | TlsHandshakeFailed | NetUnreachable
            | LinkDown | AddrInUse | PortsExhausted | BindNonlocal | NeighbourFailed | ClientDenied
            | ServerBadModes | ServerUserNotAllowed | ServerInvalidUser | ServerKeyUnknown
            | ServerRefused,
        ) => false,
    };
    if unanswered {
        let server = servers
            .first()
            .map_or("NAMESERVER".into(), IpAddr::to_string);
        s.here(format!(
            "ip route get {server}  # is there a route to the nameserver?"
        ));
        s.here(format!(
            "tcpdump -ni any 'port 53 and host {server}'  # do the questions leave, does anything come back?"
        ));
    }
    s.host("cat /etc/resolv.conf  # nameservers and search domains (the process's: /proc/PID/root/etc/resolv.conf)");
    s.host("resolvectl status  # when systemd-resolved is in use");
    s.host(format!(
        "grep -n {name} /etc/hosts  # a stale static entry?"
    ));
}

fn tls(s: &mut Steps) {
    let target = match s.ctx.dst {
        Some(d) => crate::words::canonical_addr(d).to_string(),
        None => "HOST:PORT".into(),
    };
    let sni = s.host_name();
    s.here(format!(
        "openssl s_client -connect {target} -servername {sni} -showcerts </dev/null  # the chain the server sends"
    ));
    s.here(format!(
        "openssl s_client -connect {target} -servername {sni} </dev/null 2>/dev/null | openssl x509 -noout -subject -dates -ext subjectAltName  # expiry and names"
    ));
    s.host("date -u  # a clock far off makes valid certificates look expired or not yet valid");
}

fn net_unreachable(s: &mut Steps, cause: Option<Cause>) {
    use Cause::*;
    match cause {
        Some(AdminProhibited) => return admin_prohibited(s),
        // The code's generic steps.
        None
        | Some(
            NoListener | PeerReset | FirewallRejectRst | FirewallRejectIcmp | Refused
            | HostUnreachable | RouteProhibited | RouteRefused | NoReply | AppGaveUp | FirewallDrop
            | HostDrop | ConntrackDrop | ReversePathDrop | NoRouteOnInput | NoRoute
            | AcceptQueueFull | SynQueueFull | Nxdomain | Servfail | DnsError | NoNameserver
            | NoAnswer | NotFoundLocally | NoAddress | ResolverFailed | Dns | CertExpired
            | CertNotYetValid | CertNameMismatch | CertSelfSigned | CertUnknownIssuer | CertRevoked
            | CertInvalid | CertUntrusted | CertWeak | TlsHandshakeFailed | NetUnreachable
            | LinkDown | AddrInUse | PortsExhausted | BindNonlocal | NeighbourFailed | ClientDenied
            | ServerBadModes | ServerUserNotAllowed | ServerInvalidUser | ServerKeyUnknown
            | ServerRefused,
        ) => {}
    }
    let dst = s.dst();
    let six = if s.is_v6() { "-6 " } else { "" };
    s.here(format!("ip route get {dst}"));
    s.here(format!(
        "ip {six}route show default  # is there a default route?"
    ));
    s.here("ip -br addr  # does the egress interface have an address of that family?");
    s.here("ip -br link  # is the interface (or its VLAN parent) up?");
}

fn addr_in_use(s: &mut Steps) {
    let port = s
        .ctx
        .src
        .or(s.ctx.dst)
        .map_or("PORT".into(), |a| a.port().to_string());
    s.here(format!(
        "ss -tlnp 'sport = :{port}'  # the listener holding the port: pid and command"
    ));
    s.here(format!(
        "ss -tanp state time-wait 'sport = :{port}'  # only TIME_WAIT left? SO_REUSEADDR on the new socket fixes that"
    ));
}

fn time_wait(s: &mut Steps) {
    let dst = s.dst_with_port();
    s.here("ss -s  # socket totals, TIME_WAIT included");
    s.here(format!(
        "ss -Htan state time-wait 'dst {dst}' | wc -l  # TIME_WAIT toward this destination"
    ));
    s.here("sysctl net.ipv4.ip_local_port_range net.ipv4.tcp_tw_reuse  # the port budget; better: reuse connections (keep-alive, a pool)");
}

fn arp_failed(s: &mut Steps) {
    let dst = s.dst();
    s.here(format!("ip route get {dst}  # the next hop and the device"));
    s.here("ip neigh show nud failed  # neighbours that never answered");
    s.here("tcpdump -ni any 'arp or icmp6'  # do requests leave, does anyone answer?");
}

fn ssh_publickey(s: &mut Steps, cause: Option<Cause>) {
    use Cause::*;
    let user = s.ctx.user.as_deref().map_or("USER".into(), sh_quote);
    let home = format!("~{user}");
    match cause {
        // Seen on the server: sshd's own reason, checked here.
        Some(ServerBadModes) => {
            let owner = if user == "root" {
                "root".to_owned()
            } else {
                format!("{user} or root")
            };
            s.host(format!(
                "ls -ld / {home} {home}/.ssh {home}/.ssh/authorized_keys  # StrictModes: owned by {owner}, no group/world write"
            ));
            s.host(format!(
                "chmod go-w {home} && chmod 700 {home}/.ssh && chmod 600 {home}/.ssh/authorized_keys  # the usual fix"
            ));
        }
        Some(ServerUserNotAllowed) => {
            s.host("sshd -T | grep -iE '^(allow|deny)(users|groups)'  # who may log in");
            s.host(format!("id {user}  # the user's groups"));
        }
        Some(ServerInvalidUser) => {
            s.host(format!(
                "getent passwd {user}  # the account does not exist here"
            ));
        }
        Some(ServerKeyUnknown | ServerRefused) => {
            s.host(format!(
                "ssh-keygen -lf {home}/.ssh/authorized_keys  # the keys {user} accepts; compare with the client's ssh-keygen -lf KEY.pub"
            ));
            s.host("sshd -T | grep -iE '^(authorizedkeysfile|pubkeyacceptedalgorithms|loglevel)'  # where sshd looks; LogLevel VERBOSE logs each rejected key");
        }
        // Seen on the client, or the code's generic steps.
        None
        | Some(
            NoListener | PeerReset | FirewallRejectRst | FirewallRejectIcmp | Refused
            | HostUnreachable | RouteProhibited | AdminProhibited | RouteRefused | NoReply
            | AppGaveUp | FirewallDrop | HostDrop | ConntrackDrop | ReversePathDrop
            | NoRouteOnInput | NoRoute | AcceptQueueFull | SynQueueFull | Nxdomain | Servfail
            | DnsError | NoNameserver | NoAnswer | NotFoundLocally | NoAddress | ResolverFailed
            | Dns | CertExpired | CertNotYetValid | CertNameMismatch | CertSelfSigned
            | CertUnknownIssuer | CertRevoked | CertInvalid | CertUntrusted | CertWeak
            | TlsHandshakeFailed | NetUnreachable | LinkDown | AddrInUse | PortsExhausted
            | BindNonlocal | NeighbourFailed | ClientDenied,
        ) => return ssh_client(s, &user),
    }
    s.host("journalctl -u ssh -n 50 --no-pager  # sshd's log around the refusal");
}

/// #030 as the client sees it.
fn ssh_client(s: &mut Steps, user: &str) {
    let host = match (&s.ctx.host_name, s.ctx.dst) {
        (Some(_), _) | (None, None) => s.host_name(),
        (None, Some(d)) => crate::words::canonical(d.ip()).to_string(),
    };
    let port = match s.ctx.dst.map(|d| d.port()) {
        Some(p) if p != 22 => format!(" -p {p}"),
        _ => String::new(),
    };
    s.here(format!(
        "ssh -vvv{port} {user}@{host}  # which keys are offered and what the server answers"
    ));
    s.host("ssh-keygen -lf ~/.ssh/id_ed25519.pub  # the offered key's fingerprint: is it in the server's authorized_keys?");
    s.on_peer(format!(
        "ls -ld ~{user} ~{user}/.ssh ~{user}/.ssh/authorized_keys  # not group/world-writable; 700 and 600"
    ));
    s.on_peer("journalctl -u ssh -n 50 --no-pager  # sshd's reason");
}

/// Collects the steps, prefixing the ones that must run in the process's namespace.
struct Steps<'a> {
    ctx: &'a StepCtx,
    prefix: String,
    out: Vec<String>,
}

impl<'a> Steps<'a> {
    fn new(ctx: &'a StepCtx) -> Self {
        let mut out = Vec::new();
        let prefix = match (ctx.other_netns, &ctx.netns_name, ctx.pid) {
            (false, _, _) => String::new(),
            (true, Some(name), _) => format!("ip netns exec {} ", sh_quote(name)),
            (true, None, Some(pid)) => format!("nsenter -t {pid} -n "),
            (true, None, None) => {
                out.push("# run these in the failing process's network namespace".into());
                String::new()
            }
        };
        Steps { ctx, prefix, out }
    }

    /// A command that inspects this host's network, in the process's namespace.
    fn here(&mut self, cmd: impl Into<String>) {
        self.out.push(format!("{}{}", self.prefix, cmd.into()));
    }

    /// A command that does not depend on the network namespace.
    fn host(&mut self, cmd: impl Into<String>) {
        self.out.push(cmd.into());
    }

    /// A command for the peer: here when the peer is this host (loopback), else on it.
    fn on_peer(&mut self, cmd: impl Into<String>) {
        let cmd: String = cmd.into();
        match self.ctx.dst.map(|d| crate::words::canonical(d.ip())) {
            Some(ip) if ip.is_loopback() => self.here(cmd),
            peer => {
                let peer = peer.map_or("DEST".into(), |ip| ip.to_string());
                let cmd = match cmd.split_once("  # ") {
                    Some((c, why)) => format!("{c}  # on {peer}: {why}"),
                    None => format!("{cmd}  # on {peer}"),
                };
                self.out.push(cmd);
            }
        }
    }

    /// The local firewall listings (IPv4 or IPv6 tables as fits the destination).
    fn firewall(&mut self, what: &str) {
        if let Some(cmd) = self.ctx.rule_chain.clone() {
            self.here(cmd);
            return;
        }
        let ipt = if self.is_v6() {
            "ip6tables"
        } else {
            "iptables"
        };
        self.here(format!(
            "nft -a list ruleset  # rules with their handles: look for {what}"
        ));
        self.here(format!(
            "{ipt} -L -nv --line-numbers  # {ipt} rules with their packet counters"
        ));
    }

    fn tcpdump(&self) -> String {
        format!(
            "tcpdump -ni any 'tcp port {} and host {}'",
            self.port(),
            self.dst()
        )
    }

    fn finish(self) -> Vec<String> {
        self.out
    }

    fn dst(&self) -> String {
        self.ctx.dst.map_or("DEST".into(), |d| {
            crate::words::canonical(d.ip()).to_string()
        })
    }

    fn dst_with_port(&self) -> String {
        self.ctx.dst.map_or("DEST:PORT".into(), |d| {
            crate::words::canonical_addr(d).to_string()
        })
    }

    fn port(&self) -> String {
        self.ctx.dst.map_or("PORT".into(), |d| d.port().to_string())
    }

    fn is_v6(&self) -> bool {
        self.ctx
            .dst
            .is_some_and(|d| crate::words::canonical(d.ip()).is_ipv6())
    }

    fn host_name(&self) -> String {
        self.ctx
            .host_name
            .as_deref()
            .map_or("NAME".into(), sh_quote)
    }
}

/// Quotes a word for a POSIX shell unless it is plainly safe.
fn sh_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:@/+".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dst: &str) -> StepCtx {
        StepCtx {
            dst: Some(dst.parse().unwrap()),
            ..StepCtx::default()
        }
    }

    fn joined(code: Code, cause: Option<Cause>, c: &StepCtx) -> String {
        next_steps(code, cause, c).join("\n")
    }

    #[test]
    fn every_code_and_cause_gives_steps() {
        let c = ctx("10.0.0.2:443");
        let causes = std::iter::once(None).chain(Cause::ALL.iter().copied().map(Some));
        for cause in causes {
            for code in Code::ALL {
                assert!(!next_steps(code, cause, &c).is_empty(), "{code} {cause:?}");
                assert!(
                    !next_steps(code, cause, &StepCtx::default()).is_empty(),
                    "{code} {cause:?}"
                );
            }
        }
    }

    #[test]
    fn no_listener_names_the_port() {
        let steps = next_steps(
            Code::Refused,
            Some(Cause::NoListener),
            &ctx("127.0.0.1:8080"),
        );
        assert!(
            steps[0].starts_with("ss -tlnp 'sport = :8080'"),
            "{steps:?}"
        );
        assert!(steps.iter().any(|s| s.starts_with("journalctl ")));
    }

    #[test]
    fn firewall_causes_list_rules_for_the_family() {
        let v4 = joined(
            Code::Refused,
            Some(Cause::FirewallRejectRst),
            &ctx("10.0.0.2:9"),
        );
        assert!(v4.contains("nft -a list ruleset") && v4.contains("tcp port 9"));
        assert!(v4.contains("iptables -L -nv --line-numbers") && v4.contains("tcp reset"));
        let v6 = joined(
            Code::Refused,
            Some(Cause::FirewallRejectIcmp),
            &ctx("[fd00::2]:9"),
        );
        assert!(v6.contains("ip6tables -L -nv --line-numbers") && v6.contains("port-unreachable"));
        let drop = joined(
            Code::Timeout,
            Some(Cause::FirewallDrop),
            &ctx("10.0.0.2:443"),
        );
        assert!(drop.contains("nft -a list ruleset") && drop.contains("10.0.0.2"));
        let prohibited = joined(
            Code::NoRoute,
            Some(Cause::FirewallRejectIcmp),
            &ctx("10.0.0.2:443"),
        );
        assert!(prohibited.contains("admin-prohibited") && prohibited.contains("iptables"));
    }

    #[test]
    fn no_reply_captures_the_right_flow() {
        let steps = joined(
            Code::Timeout,
            Some(Cause::NoReply),
            &ctx("198.51.100.2:443"),
        );
        assert!(steps.contains("tcpdump -ni any 'tcp port 443 and host 198.51.100.2'"));
        assert!(steps.contains("ip route get 198.51.100.2"));
        assert!(steps.contains("# on 198.51.100.2: is the peer up"));
        let gave_up = joined(
            Code::Timeout,
            Some(Cause::AppGaveUp),
            &ctx("198.51.100.2:443"),
        );
        assert!(gave_up.contains("tcp_syn_retries") && !gave_up.contains("# on "));
    }

    #[test]
    fn a_full_queue_is_checked_where_the_listener_is() {
        // Client side: the listener's namespace has a name; the port is the destination's.
        let mut c = ctx("10.0.0.2:8080");
        c.other_netns = true;
        c.netns_name = Some("srv".into());
        c.pid = Some(812);
        let steps = next_steps(Code::Timeout, Some(Cause::AcceptQueueFull), &c);
        assert!(
            steps[0].starts_with("ip netns exec srv ss -ltnp 'sport = :8080'"),
            "{steps:?}"
        );
        let all = steps.join("\n");
        assert!(all.contains("nstat -az TcpExtListenOverflows"), "{all}");
        assert!(
            all.contains("strace -f -e trace=accept,accept4 -p 812"),
            "{all}"
        );
        assert!(all.contains("net.core.somaxconn"), "{all}");
        // Server side: no destination, the listener's own address.
        let server = StepCtx {
            src: Some("0.0.0.0:9000".parse().unwrap()),
            ..StepCtx::default()
        };
        assert!(joined(Code::Timeout, Some(Cause::AcceptQueueFull), &server)
            .starts_with("ss -ltnp 'sport = :9000'"));
        assert!(
            joined(Code::Timeout, Some(Cause::SynQueueFull), &server).contains("tcp_syncookies")
        );
        // explain's generic steps name the queue too.
        assert!(joined(Code::Timeout, None, &StepCtx::default()).contains("TcpExtListenOverflows"));
    }

    #[test]
    fn peer_commands_are_local_on_loopback() {
        let remote = joined(Code::Refused, Some(Cause::PeerReset), &ctx("10.0.0.2:80"));
        assert!(remote.contains("ss -tlnp 'sport = :80'  # on 10.0.0.2: is the service"));
        let local = joined(Code::Refused, Some(Cause::PeerReset), &ctx("[::1]:80"));
        assert!(!local.contains("# on "), "{local}");
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let steps = joined(
            Code::NoRoute,
            Some(Cause::HostUnreachable),
            &ctx("[::ffff:10.0.0.2]:80"),
        );
        assert!(steps.contains("ip route get 10.0.0.2 "), "{steps}");
        let fw = joined(
            Code::Timeout,
            Some(Cause::FirewallDrop),
            &ctx("[::ffff:10.0.0.2]:80"),
        );
        assert!(fw.contains("iptables -L") && !fw.contains("ip6tables"));
    }

    #[test]
    fn other_netns_prefixes_network_commands() {
        let mut c = ctx("127.0.0.1:8080");
        c.other_netns = true;
        c.pid = Some(4211);
        let by_pid = next_steps(Code::Refused, Some(Cause::NoListener), &c);
        assert_eq!(
            by_pid[0].split("  #").next().unwrap(),
            "nsenter -t 4211 -n ss -tlnp 'sport = :8080'"
        );
        assert!(by_pid[1].starts_with("journalctl "), "{by_pid:?}");

        c.netns_name = Some("blue".into());
        let by_name = next_steps(Code::Timeout, Some(Cause::NoReply), &c);
        assert!(
            by_name.iter().all(|s| s.starts_with("ip netns exec blue ")),
            "{by_name:?}"
        );

        c.netns_name = None;
        c.pid = None;
        let unknown = next_steps(Code::NetUnreachable, Some(Cause::NetUnreachable), &c);
        assert!(unknown[0].starts_with("# run these in"), "{unknown:?}");
    }

    #[test]
    fn own_netns_is_not_prefixed() {
        let mut c = ctx("127.0.0.1:8080");
        c.netns_name = Some("ignored".into());
        c.pid = Some(1);
        assert!(next_steps(Code::Refused, Some(Cause::NoListener), &c)[0].starts_with("ss "));
    }

    #[test]
    fn bind_failures_use_the_bound_port() {
        let c = StepCtx {
            src: Some("0.0.0.0:5432".parse().unwrap()),
            ..StepCtx::default()
        };
        assert!(joined(Code::AddrInUse, None, &c).contains("ss -tlnp 'sport = :5432'"));
    }

    #[test]
    fn time_wait_counts_toward_the_destination() {
        assert!(joined(Code::TimeWait, None, &ctx("[fd00::2]:443")).contains("'dst [fd00::2]:443'"));
    }

    #[test]
    fn names_are_filled_and_quoted() {
        let mut c = ctx("10.0.0.53:53");
        c.host_name = Some("db.internal".into());
        let dns = joined(Code::Dns, None, &c);
        assert!(
            dns.contains("getent ahosts db.internal") && dns.contains("dig @10.0.0.53 db.internal")
        );
        c.host_name = Some("a b;rm".into());
        assert!(joined(Code::Dns, None, &c).contains("getent ahosts 'a b;rm'"));
        c.host_name = Some("db.internal".into());
        c.nameservers = vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()];
        let each = joined(Code::Dns, Some(Cause::NoAnswer), &c);
        assert!(each.contains("dig @fd00::53 db.internal"), "{each}");
        assert_eq!(each.matches("dig @10.0.0.53").count(), 1, "{each}");
        assert!(each.contains("ip route get 10.0.0.53"), "{each}");
        let stale = StepCtx {
            resolved_name: Some("db.internal".into()),
            ..ctx("10.9.9.9:5432")
        };
        assert!(joined(Code::Timeout, Some(Cause::NoReply), &stale)
            .contains("grep -n db.internal /etc/hosts"));
        let tls = joined(Code::TlsVerify, None, &ctx("[::1]:8443"));
        assert!(tls.contains("-connect [::1]:8443 -servername NAME"));
        let ssh = joined(Code::SshPublickey, None, &ctx("10.0.0.2:2222"));
        assert!(ssh.contains("ssh -vvv -p 2222 USER@10.0.0.2"), "{ssh}");
        let mut c = ctx("10.0.0.2:2222");
        c.host_name = Some("srv".into());
        c.user = Some("git".into());
        let client = joined(Code::SshPublickey, Some(Cause::ClientDenied), &c);
        assert!(client.contains("ssh -vvv -p 2222 git@srv"), "{client}");
        assert!(client.contains("ls -ld ~git ~git/.ssh"), "{client}");
        let modes = joined(Code::SshPublickey, Some(Cause::ServerBadModes), &c);
        assert!(
            modes.starts_with("ls -ld / ~git ~git/.ssh ~git/.ssh/authorized_keys"),
            "{modes}"
        );
        assert!(
            !modes.contains("ssh -vvv"),
            "server steps run on the server: {modes}"
        );
    }
}
