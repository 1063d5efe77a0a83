//! `netladder watch --trace-firewall`: nftables tracing of the flows that fail.
//!
//! When a connection fails on a firewall drop, the tracer adds, in the namespace of that drop,
//! one table of its own (`inet netladder_trace_<pid>`) whose two base chains, at the very first
//! priority of prerouting and output, set `meta nftrace` on that flow only (same source
//! address, destination address and TCP port). It listens on the NFNLGRP_NFTRACE netlink group
//! of that namespace, where the kernel reports, for every traced packet, each chain it went
//! through and the rule (handle) or policy that gave the verdict. The next failure of the flow
//! then names the rule from the kernel's own trace, not from counters.
//!
//! Nothing else in the ruleset is touched. The table is removed on exit (also on Ctrl-C and
//! SIGTERM). Kernels since 5.12 also tie it to the netlink socket that created it
//! (NFT_TABLE_F_OWNER), so it vanishes with the process even on SIGKILL; for older kernels
//! each namespace that got a table is listed in /run/netladder/trace-<pid> first, and the next
//! start of netladder removes what a killed run left ([`clean_leftovers`]).
//!
//! Numbers come from linux/netfilter/nf_tables.h, linux/netfilter/nfnetlink.h, linux/netlink.h.
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NlAddr};

use super::firewall::Traced;
use super::netns::run_in_netns;
use super::nfnl::*;

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFNLGRP_NFTRACE: u32 = 9;
// NFT_MSG_*
const NEWTABLE: u16 = 0;
const GETTABLE: u16 = 1;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const NEWRULE: u16 = 6;
const DELRULE: u16 = 8;
const TRACE: u16 = 17;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NFT_TABLE_F_OWNER: u32 = 0x2;
// NF_INET_* hooks
const PRE_ROUTING: u32 = 0;
const LOCAL_OUT: u32 = 3;
// nft registers, payload bases, meta keys, trace types
const REG_1: u32 = 1;
const NETWORK: u32 = 1;
const TRANSPORT: u32 = 2;
const META_NFTRACE: u32 = 12;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const TRACETYPE_POLICY: u32 = 1;
const TRACETYPE_RULE: u32 = 3;
const NF_DROP: i32 = 0;

/// The two chains of the trace table: (name, hook).
const CHAINS: [(&str, u32); 2] = [("pre", PRE_ROUTING), ("out", LOCAL_OUT)];
/// Flows traced per namespace; the oldest half is dropped beyond this.
const MAX_FLOWS: usize = 64;
/// Trace ids and verdicts remembered per namespace.
const MAX_SEEN: usize = 4096;
const TABLE_PREFIX: &str = "netladder_trace_";
const STATE_DIR: &str = "/run/netladder";

/// The flow a trace rule selects: a TCP SYN's source, destination and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
}

/// The tracer of one `netladder watch --trace-firewall`.
pub struct Tracer {
    table: String,
    spaces: HashMap<u32, Space>,
    state_file: PathBuf,
}

/// What the tracer holds in one network namespace.
struct Space {
    /// Wrote the table, and owns it where the kernel knows table owners.
    ctl: Socket,
    /// Member of NFNLGRP_NFTRACE in that namespace; non-blocking.
    listen: Socket,
    seq: u32,
    flows: VecDeque<Flow>,
    seen: Seen,
    /// Trace messages the kernel could not queue (ENOBUFS).
    overruns: u64,
}

/// How arming a flow went.
pub enum Armed {
    /// A rule now traces the flow.
    New,
    /// It was traced already.
    Already,
}

impl Tracer {
    pub fn new() -> Tracer {
        let pid = std::process::id();
        Tracer {
            table: format!("{TABLE_PREFIX}{pid}"),
            spaces: HashMap::new(),
            state_file: PathBuf::from(format!("{STATE_DIR}/trace-{pid}")),
        }
    }

    /// The table the tracer adds, as `nft list tables` prints it.
    pub fn table(&self) -> String {
        format!("inet {}", self.table)
    }

    /// Starts tracing `flow` in namespace `netns` (entered with the help of `hint_pid`).
    pub fn arm(&mut self, netns: u32, hint_pid: Option<u32>, flow: Flow) -> anyhow::Result<Armed> {
        if !self.spaces.contains_key(&netns) {
            self.remember(netns)?;
            let table = self.table.clone();
            let space = run_in_netns(u64::from(netns), hint_pid, move || Space::open(&table))??;
            self.spaces.insert(netns, space);
        }
        let space = self.spaces.get_mut(&netns).expect("inserted above");
        if space.flows.contains(&flow) {
            return Ok(Armed::Already);
        }
        let mut msgs = Vec::new();
        if space.flows.len() >= MAX_FLOWS {
            // Start over with the newer half: flushing a chain is one message.
            let keep = space.flows.split_off(MAX_FLOWS / 2);
            space.flows = keep;
            for (chain, _) in CHAINS {
                let attrs = [string(1, &self.table), string(2, chain)].concat();
                msgs.push((DELRULE, 0, attrs));
            }
            for f in space.flows.clone() {
                msgs.extend(trace_rules(&self.table, &f));
            }
        }
        msgs.extend(trace_rules(&self.table, &flow));
        space.transact(&msgs).context("cannot add the trace rule")?;
        space.flows.push_back(flow);
        Ok(Armed::New)
    }

    /// Reads the trace messages waiting in every namespace.
    pub fn poll(&mut self) {
        for space in self.spaces.values_mut() {
            space.read_traces(&self.table);
        }
    }

    /// The drop verdict traced for a connection from `src` to `dst` in `netns`, if any.
    pub fn hit(&mut self, netns: u32, src: SocketAddr, dst: SocketAddr) -> Option<Traced> {
        let space = self.spaces.get_mut(&netns)?;
        space.read_traces(&self.table);
        space.seen.hits.get(&(src, dst)).cloned()
    }

    /// Trace messages lost in `netns` because the socket was full.
    pub fn overruns(&self, netns: u32) -> u64 {
        self.spaces.get(&netns).map_or(0, |s| s.overruns)
    }

    /// Lists `netns` in the state file before a table goes there, so that the next start can
    /// remove it if this process is killed.
    fn remember(&self, netns: u32) -> anyhow::Result<()> {
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("cannot create {STATE_DIR}"))?;
        let mut list: Vec<u32> = self.spaces.keys().copied().collect();
        list.push(netns);
        let text: String = list.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(&self.state_file, text)
            .with_context(|| format!("cannot write {}", self.state_file.display()))
    }
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new()
    }
}

impl Drop for Tracer {
    /// Removes every table the tracer added, then its state file. A namespace whose table
    /// cannot be removed keeps the state file, so the next start tries again.
    fn drop(&mut self) {
        let mut all_gone = true;
        for (netns, space) in self.spaces.iter_mut() {
            let attrs = string(1, &self.table);
            if let Err(e) = space.transact(&[(DELTABLE, 0, attrs)]) {
                if !matches!(errno(&e), Some(libc::ENOENT)) {
                    eprintln!(
                        "netladder: could not remove the trace table {} in netns {netns}: {e:#}",
                        self.table
                    );
                    all_gone = false;
                }
            }
        }
        if all_gone {
            let _ = std::fs::remove_file(&self.state_file);
        }
    }
}

impl Space {
    /// Opens both sockets in the calling thread's namespace and adds the table and its chains.
    fn open(table: &str) -> anyhow::Result<Space> {
        let mut ctl =
            Socket::new(NETLINK_NETFILTER).context("cannot open a netfilter netlink socket")?;
        ctl.bind_auto().context("cannot bind a netlink socket")?;
        ctl.set_rx_buf_sz(1 << 20).ok();
        let mut listen =
            Socket::new(NETLINK_NETFILTER).context("cannot open a netfilter netlink socket")?;
        listen.bind_auto().context("cannot bind a netlink socket")?;
        listen
            .add_membership(NFNLGRP_NFTRACE)
            .context("cannot join the nftables trace group")?;
        listen.set_rx_buf_sz(4 << 20).ok();
        listen.set_non_blocking(true)?;
        let mut space = Space {
            ctl,
            listen,
            seq: 1,
            flows: VecDeque::new(),
            seen: Seen::default(),
            overruns: 0,
        };
        // The table belongs to this socket where the kernel allows it (5.12 and later).
        let created = space
            .transact(&table_and_chains(table, true))
            .or_else(|e| match errno(&e) {
                Some(libc::EOPNOTSUPP | libc::EINVAL) => {
                    space.transact(&table_and_chains(table, false))
                }
                _ => Err(e),
            });
        created.context("cannot add the trace table")?;
        Ok(space)
    }

    fn transact(&mut self, msgs: &[(u16, u16, Vec<u8>)]) -> anyhow::Result<()> {
        transact(&self.ctl, &mut self.seq, msgs)
    }

    /// Drains the trace group, keeping the drop verdicts of traced packets.
    fn read_traces(&mut self, own_table: &str) {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match self.listen.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.overruns += 1;
                    continue;
                }
                Err(_) => return,
            };
            let Ok(batch) = parse_datagram(&buf[..n]) else {
                continue;
            };
            for m in batch.msgs.iter().filter(|m| m.kind == TRACE) {
                self.seen.message(m, own_table);
            }
        }
    }
}

/// What the trace messages of one namespace told so far.
#[derive(Default)]
struct Seen {
    /// Trace id -> the packet's (source, destination), from the first message of the id.
    ids: HashMap<u32, (SocketAddr, SocketAddr)>,
    /// The drop verdict last traced for each (source, destination).
    hits: HashMap<(SocketAddr, SocketAddr), Traced>,
}

impl Seen {
    fn message(&mut self, m: &NfMsg, own_table: &str) {
        let a = &m.attrs[..];
        let Some(id) = attr_u32(a, 6) else { return };
        if let Some(flow) = packet_flow(a) {
            if self.ids.len() >= MAX_SEEN {
                self.ids.clear();
            }
            self.ids.insert(id, flow);
        }
        let Some(table) = attr_str(a, 1) else { return };
        if table == own_table {
            return;
        }
        let kind = attr_u32(a, 4).unwrap_or(0);
        let code = attr(a, 5).and_then(|v| attr_u32(v, 1)).map(|c| c as i32);
        if code != Some(NF_DROP) || !matches!(kind, TRACETYPE_RULE | TRACETYPE_POLICY) {
            return;
        }
        let Some(flow) = self.ids.get(&id).copied() else {
            return;
        };
        let id = match (kind, attr_u64(a, 3)) {
            (TRACETYPE_RULE, Some(handle)) => format!("handle {handle}"),
            _ => "policy".to_owned(),
        };
        if self.hits.len() >= MAX_SEEN {
            self.hits.clear();
        }
        let hit = Traced {
            family: family_name(m.family),
            table,
            chain: attr_str(a, 2).unwrap_or_default(),
            id,
        };
        self.hits.insert(flow, hit);
    }
}

/// Sends `msgs` (type, extra flags, attributes; family inet) as one transaction and waits for
/// the kernel to acknowledge each of them.
fn transact(ctl: &Socket, seq: &mut u32, msgs: &[(u16, u16, Vec<u8>)]) -> anyhow::Result<()> {
    let first = *seq;
    let framed: Vec<Vec<u8>> = msgs
        .iter()
        .enumerate()
        .map(|(i, (kind, flags, attrs))| {
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
            let flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            message(kind, flags, first + 1 + i as u32, NFPROTO_INET, attrs)
        })
        .collect();
    let last = first + 1 + msgs.len() as u32;
    *seq = last + 1;
    ctl.send_to(&batch(&framed, first, last), &NlAddr::new(0, 0), 0)
        .context("cannot send to nf_tables")?;
    let (mut acked, mut failure) = (0, None);
    let mut buf = vec![0u8; 1 << 16];
    while acked < msgs.len() {
        let n = recv_timeout(ctl, &mut buf, Duration::from_secs(2))?;
        for (seq, code) in acks(&buf[..n]) {
            if seq > first && seq < last {
                acked += 1;
                failure = failure.or((code != 0).then_some(code));
            }
        }
    }
    match failure {
        Some(code) => Err(io::Error::from_raw_os_error(code)).context("nf_tables refused"),
        None => Ok(()),
    }
}

/// Reads one trace datagram as the tracer does, without sockets (for the fuzz targets):
/// the drop verdicts it would keep.
pub(crate) fn read_datagram(buf: &[u8]) -> usize {
    let Ok(batch) = parse_datagram(buf) else {
        return 0;
    };
    let mut seen = Seen::default();
    for m in batch.msgs.iter().filter(|m| m.kind == TRACE) {
        seen.message(m, "netladder_trace_0");
    }
    seen.hits.len()
}

/// The packet's (source, destination) from the network and transport headers a trace message
/// carries (the first message of each chain traversal has them).
fn packet_flow(a: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let net = attr(a, 8)?;
    let th = attr(a, 9)?;
    let ports = (
        u16::from_be_bytes([*th.first()?, *th.get(1)?]),
        u16::from_be_bytes([*th.get(2)?, *th.get(3)?]),
    );
    let (src, dst): (IpAddr, IpAddr) = match net.first()? >> 4 {
        4 => {
            let s: [u8; 4] = net.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = net.get(16..20)?.try_into().ok()?;
            (s.into(), d.into())
        }
        6 => {
            let s: [u8; 16] = net.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = net.get(24..40)?.try_into().ok()?;
            (s.into(), d.into())
        }
        _ => return None,
    };
    Some((SocketAddr::new(src, ports.0), SocketAddr::new(dst, ports.1)))
}

fn family_name(family: u8) -> String {
    match family {
        NFPROTO_INET => "inet".into(),
        NFPROTO_IPV4 => "ip".into(),
        NFPROTO_IPV6 => "ip6".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        n => format!("family {n}"),
    }
}

/// The table (owned by the sending socket when `owner`) and its two base chains, each at the
/// first priority of its hook so that every other chain sees the trace bit.
fn table_and_chains(table: &str, owner: bool) -> Vec<(u16, u16, Vec<u8>)> {
    let flags = if owner { NFT_TABLE_F_OWNER } else { 0 };
    let mut msgs = vec![(
        NEWTABLE,
        NLM_F_CREATE,
        [string(1, table), be32(2, flags)].concat(),
    )];
    for (name, hook) in CHAINS {
        let hook = nest(4, &[be32(1, hook), be32(2, i32::MIN as u32)]);
        let attrs = [
            string(1, table),
            string(3, name),
            hook,
            be32(5, 1), // policy accept
            string(7, "filter"),
        ]
        .concat();
        msgs.push((NEWCHAIN, NLM_F_CREATE, attrs));
    }
    msgs
}

/// One rule per chain: `meta nfproto P <ip|ip6> saddr S <ip|ip6> daddr D meta l4proto tcp
/// tcp dport N meta nftrace set 1`.
fn trace_rules(table: &str, f: &Flow) -> Vec<(u16, u16, Vec<u8>)> {
    let (proto, src, dst, s_off, d_off) = match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            NFPROTO_IPV4,
            s.octets().to_vec(),
            d.octets().to_vec(),
            12,
            16,
        ),
        (s, d) => (NFPROTO_IPV6, v6(s).to_vec(), v6(d).to_vec(), 8, 24),
    };
    let exprs = [
        meta_load(META_NFPROTO),
        cmp_eq(&[proto]),
        payload(NETWORK, s_off, src.len() as u32),
        cmp_eq(&src),
        payload(NETWORK, d_off, dst.len() as u32),
        cmp_eq(&dst),
        meta_load(META_L4PROTO),
        cmp_eq(&[libc::IPPROTO_TCP as u8]),
        payload(TRANSPORT, 2, 2),
        cmp_eq(&f.dport.to_be_bytes()),
        expr("immediate", &[be32(1, REG_1), data(2, &[1])]),
        expr("meta", &[be32(2, META_NFTRACE), be32(3, REG_1)]),
    ];
    CHAINS
        .iter()
        .map(|(chain, _)| {
            let attrs = [string(1, table), string(2, chain), nest(4, &exprs)].concat();
            (NEWRULE, NLM_F_CREATE | NLM_F_APPEND, attrs)
        })
        .collect()
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// An NFTA_LIST_ELEM holding one expression.
fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
    nest(1, &[string(1, name), nest(2, data)])
}

fn meta_load(key: u32) -> Vec<u8> {
    expr("meta", &[be32(2, key), be32(1, REG_1)])
}

fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
    expr(
        "payload",
        &[be32(1, REG_1), be32(2, base), be32(3, offset), be32(4, len)],
    )
}

fn cmp_eq(bytes: &[u8]) -> Vec<u8> {
    expr("cmp", &[be32(1, REG_1), be32(2, 0), data(3, bytes)])
}

/// (sequence, errno) of every NLMSG_ERROR (an acknowledgement when errno is 0) in a datagram.
fn acks(buf: &[u8]) -> Vec<(u32, i32)> {
    super::netlink::split(buf)
        .map_while(Result::ok)
        .filter(|m| m.kind == NLMSG_ERROR && m.bytes.len() >= 36)
        .map(|m| {
            // The error code, then a copy of the request's header: its sequence number.
            let b = m.bytes;
            let code = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
            let seq = u32::from_ne_bytes([b[28], b[29], b[30], b[31]]);
            (seq, code.saturating_neg())
        })
        .collect()
}

fn recv_timeout(socket: &Socket, buf: &mut [u8], timeout: Duration) -> anyhow::Result<usize> {
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(socket),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if ready <= 0 {
        bail!("nf_tables did not answer within {timeout:?}");
    }
    Ok(socket.recv(&mut &mut buf[..], 0)?)
}

fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain()
        .find_map(|c| c.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// Removes the trace tables of earlier netladder runs that are gone (killed before they could
/// clean up): in every namespace their state file lists, and in netladder's own. Returns one
/// line per table removed, and per namespace it could not clean.
pub fn clean_leftovers() -> Vec<String> {
    let mut report = Vec::new();
    let own = std::process::id();
    let mut spaces: Vec<(Option<u32>, u64)> = Vec::new();
    if let Ok(inode) = super::netns::own_netns_inode() {
        spaces.push((None, inode));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(STATE_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("trace-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own || alive(pid) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for inode in text.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
            spaces.push((Some(pid), inode));
        }
        files.push(entry.path());
    }
    let mut unclean = false;
    for (_, inode) in spaces {
        match run_in_netns(inode, None, stale_tables_removed) {
            Ok(Ok(tables)) => report.extend(tables.into_iter().map(|t| {
                format!("removed the trace table {t} that a killed netladder left in netns {inode}")
            })),
            Ok(Err(e)) => {
                unclean = true;
                report.push(format!(
                    "could not remove old trace tables in netns {inode}: {e:#}"
                ));
            }
            // The namespace is gone, and its tables with it.
            Err(_) => {}
        }
    }
    if !unclean {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }
    report
}

/// Whether `pid` is a running netladder.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "netladder")
}

/// Deletes, in the calling thread's namespace, the `inet netladder_trace_<pid>` tables whose
/// netladder is not running. Returns their names.
fn stale_tables_removed() -> anyhow::Result<Vec<String>> {
    let mut socket = match Socket::new(NETLINK_NETFILTER) {
        Ok(s) => s,
        Err(_) => return Ok(vec![]),
    };
    socket.bind_auto()?;
    let Some(msgs) = super::nft::dump(&socket, GETTABLE, true)? else {
        return Ok(vec![]);
    };
    let stale: Vec<String> = msgs
        .iter()
        .filter(|m| m.kind == NEWTABLE && m.family == NFPROTO_INET)
        .filter_map(|m| attr_str(&m.attrs, 1))
        .filter(|name| {
            name.strip_prefix(TABLE_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| pid != std::process::id() && !alive(pid))
        })
        .collect();
    if stale.is_empty() {
        return Ok(stale);
    }
    let msgs: Vec<_> = stale.iter().map(|t| (DELTABLE, 0, string(1, t))).collect();
    transact(&socket, &mut 1, &msgs)?;
    Ok(stale.into_iter().map(|t| format!("inet {t}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_flow_from_trace_headers() {
        let mut ip = vec![0x45u8; 20];
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let mut tcp = vec![0u8; 20];
        tcp[..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        let attrs = [nla(8, &ip), nla(9, &tcp)].concat();
        assert_eq!(
            packet_flow(&attrs),
            Some((
                "10.0.0.1:40000".parse().unwrap(),
                "10.0.0.2:443".parse().unwrap()
            ))
        );
        assert_eq!(packet_flow(&nla(8, &ip)), None, "no transport header");
    }

    #[test]
    fn reads_acks_and_errors() {
        let ack = |seq: u32, code: i32| {
            let mut m = vec![0u8; 36];
            m[..4].copy_from_slice(&36u32.to_ne_bytes());
            m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m[16..20].copy_from_slice(&code.to_ne_bytes());
            m[28..32].copy_from_slice(&seq.to_ne_bytes());
            m
        };
        let d = [ack(3, 0), ack(4, -libc::EPERM)].concat();
        assert_eq!(acks(&d), vec![(3, 0), (4, libc::EPERM)]);
        assert_eq!(acks(&d[..20]), vec![]);
    }

    #[test]
    fn trace_rules_cover_both_chains_and_families() {
        let f4 = Flow {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            dport: 443,
        };
        let r = trace_rules("t", &f4);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(k, _, _)| *k == NEWRULE));
        let f6 = Flow {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            dport: 443,
        };
        let (_, _, a6) = &trace_rules("t", &f6)[0];
        let needle = nla(1, &v6(f6.dst));
        assert!(a6.windows(needle.len()).any(|w| w == needle));
    }
}
