//! Name resolution as programs see it and as each nameserver answers: the system resolver
//! (getaddrinfo), direct A/AAAA queries to every nameserver of /etc/resolv.conf (a small,
//! bounds-checked DNS codec), and the entries of /etc/hosts.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::dnswire::{rcode_name, Reader};

/// What /etc/resolv.conf says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// Parses resolv.conf text: `nameserver`, `search` and `domain` lines; comments with # or ;.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // An IPv6 link-local server may carry a zone (fe80::1%eth0): not ours to ask.
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    conf.nameservers.push(ip);
                }
            }
            Some("search" | "domain") => conf.search = words.map(str::to_owned).collect(),
            _ => {}
        }
    }
    conf
}

pub fn resolv_conf() -> ResolvConf {
    parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// The addresses /etc/hosts-format `text` gives `name` (case-insensitive, aliases included).
pub fn hosts_entries(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.any(|w| w.trim_end_matches('.').eq_ignore_ascii_case(name)) && !found.contains(&ip)
        {
            found.push(ip);
        }
    }
    found
}

pub fn etc_hosts(name: &str) -> Vec<IpAddr> {
    hosts_entries(
        &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        name,
    )
}

/// /etc/resolv.conf as process `pid` sees it (its mount namespace: a container's own file);
/// None when it cannot be read (the process has exited).
pub fn process_resolv_conf(pid: u32) -> Option<ResolvConf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf")).ok()?;
    Some(parse_resolv_conf(&text))
}

/// The addresses /etc/hosts gives `name` as process `pid` sees the file; None when unreadable.
pub fn process_hosts_entries(pid: u32, name: &str) -> Option<Vec<IpAddr>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/root/etc/hosts")).ok()?;
    Some(hosts_entries(&text, name))
}

/// Evidence from the failing process's own resolver files (#024, and connection failures whose
/// address a getaddrinfo of the same process returned): its nameservers and search domains,
/// and the /etc/hosts entries for the name.
pub fn explain_failure(f: &mut crate::failure::Failure) {
    let Some(name) = f.host_name.clone() else {
        return;
    };
    let pid = f.proc.pid;
    if pid == 0 {
        return;
    }
    if f.code == crate::ladder::Code::Dns {
        match process_resolv_conf(pid) {
            Some(conf) => {
                let servers: Vec<String> = conf.nameservers.iter().map(|n| n.to_string()).collect();
                f.evidence.push(format!(
                    "/etc/resolv.conf of pid {pid}: nameservers {}{}",
                    if servers.is_empty() {
                        "none (glibc then asks 127.0.0.1)".to_owned()
                    } else {
                        servers.join(", ")
                    },
                    if conf.search.is_empty() {
                        String::new()
                    } else {
                        format!("; search {}", conf.search.join(" "))
                    }
                ));
            }
            None => f.evidence.push(format!(
                "/etc/resolv.conf of pid {pid} could not be read (the process has exited)"
            )),
        }
        if let Some(addrs) = process_hosts_entries(pid, &name).filter(|a| !a.is_empty()) {
            let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            f.evidence.push(format!(
                "/etc/hosts of pid {pid} has {name} -> {} (used only where nsswitch lists files)",
                list.join(", ")
            ));
        }
        return;
    }
    let Some(dst) = f.dst else {
        return;
    };
    let ip = match dst.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(dst.ip(), IpAddr::V4),
        v4 => v4,
    };
    if let Some(addrs) = process_hosts_entries(pid, &name) {
        if addrs.contains(&ip) {
            f.summary = format!(
                "{}; {ip} came from /etc/hosts for {name}: a stale entry?",
                f.summary
            );
            f.evidence.push(format!(
                "/etc/hosts of pid {pid} maps {name} to {ip}: the connection used that static \
                 entry, not DNS (compare with `dig {name}`)"
            ));
        }
    }
}

/// What the system resolver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemAnswer {
    Addrs(Vec<IpAddr>),
    /// getaddrinfo's EAI_* code and its message.
    Failed {
        code: i32,
        name: &'static str,
        message: String,
    },
}

/// Resolves `name` through getaddrinfo (nsswitch: /etc/hosts, DNS, whatever is configured),
/// as a program connecting to it would; addresses in the order it gives them, deduplicated.
pub fn system_resolve(name: &str) -> SystemAnswer {
    let Ok(c_name) = CString::new(name) else {
        return SystemAnswer::Failed {
            code: libc::EAI_NONAME,
            name: "EAI_NONAME",
            message: "the name contains a NUL byte".into(),
        };
    };
    // SAFETY: zeroed addrinfo is a valid "no hints" value; we set the fields we want.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and pointers; the result is freed below.
    let rc = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static string.
        let message = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }
            .to_string_lossy()
            .into_owned();
        let message = if rc == libc::EAI_SYSTEM {
            format!("{message}: {}", std::io::Error::last_os_error())
        } else {
            message
        };
        return SystemAnswer::Failed {
            code: rc,
            name: crate::dnswire::eai_name(rc),
            message,
        };
    }
    let mut addrs = Vec::new();
    let mut p = res;
    while !p.is_null() {
        // SAFETY: p walks the list getaddrinfo returned.
        let ai = unsafe { &*p };
        let ip = match ai.ai_family {
            libc::AF_INET if !ai.ai_addr.is_null() => {
                // SAFETY: AF_INET entries hold a sockaddr_in.
                let sin = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in) };
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 if !ai.ai_addr.is_null() => {
                // SAFETY: AF_INET6 entries hold a sockaddr_in6.
                let sin6 = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in6) };
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        };
        if let Some(ip) = ip.filter(|ip| !addrs.contains(ip)) {
            addrs.push(ip);
        }
        p = ai.ai_next;
    }
    // SAFETY: res came from a successful getaddrinfo.
    unsafe { libc::freeaddrinfo(res) };
    SystemAnswer::Addrs(addrs)
}

/// Record types netladder asks for.
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

/// Encodes a recursive query for `name` (no trailing dot needed) of type `qtype`, class IN.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD=1, AN=NS=AR=0
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        bail!("'{name}' is not a name DNS can carry");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("'{name}' has an empty or over-long label");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

/// A parsed answer to one of our queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub rcode: u8,
    pub truncated: bool,
    /// A and AAAA records of the answer section (any owner: CNAME chains end in them).
    pub addrs: Vec<IpAddr>,
}

/// Parses the response to the query with `id`; refuses anything else.
pub fn parse_response(buf: &[u8], id: u16) -> Result<Response> {
    let mut r = Reader { buf, pos: 0 };
    if r.u16()? != id {
        bail!("the response's id does not match the query");
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        bail!("the packet is not a response");
    }
    let (qd, an) = (r.u16()?, r.u16()?);
    r.take(4)?; // NS and AR counts: not read
    for _ in 0..qd {
        r.skip_name()?;
        r.take(4)?;
    }
    let mut addrs = Vec::new();
    for _ in 0..an {
        r.skip_name()?;
        let (rtype, class) = (r.u16()?, r.u16()?);
        r.take(4)?; // TTL
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        match (rtype, class, len) {
            (TYPE_A, 1, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 1, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
    }
    Ok(Response {
        rcode: (flags & 0x000f) as u8,
        truncated: flags & 0x0200 != 0,
        addrs,
    })
}

/// One nameserver's answer for one record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeAnswer {
    pub qtype: u16,
    pub rcode: u8,
    pub addrs: Vec<IpAddr>,
}

/// One nameserver's answer for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAnswer {
    /// Both queries answered: A, then AAAA.
    Answered(Vec<TypeAnswer>),
    /// No usable answer: timeout, unreachable, malformed.
    NoAnswer(String),
}

impl ServerAnswer {
    /// Every address it gave, A then AAAA.
    pub fn addrs(&self) -> Vec<IpAddr> {
        match self {
            ServerAnswer::Answered(t) => t.iter().flat_map(|t| t.addrs.iter().copied()).collect(),
            ServerAnswer::NoAnswer(_) => Vec::new(),
        }
    }

    /// It said the name does not exist (NXDOMAIN) and gave no address.
    pub fn nxdomain(&self) -> bool {
        matches!(self, ServerAnswer::Answered(t) if t.iter().any(|t| t.rcode == 3))
            && self.addrs().is_empty()
    }

    /// "A NOERROR 10.0.0.2; AAAA NOERROR (no record)", or why there was no answer.
    pub fn describe(&self) -> String {
        match self {
            ServerAnswer::NoAnswer(why) => format!("no answer ({why})"),
            ServerAnswer::Answered(types) => types
                .iter()
                .map(|t| {
                    let kind = if t.qtype == TYPE_A { "A" } else { "AAAA" };
                    let addrs = if t.addrs.is_empty() {
                        "(no record)".to_owned()
                    } else {
                        t.addrs
                            .iter()
                            .map(IpAddr::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    format!("{kind} {} {addrs}", rcode_name(t.rcode))
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// Asks `server` (port 53, over UDP) for `name`'s A and AAAA records; `timeout` per query.
pub fn ask(server: IpAddr, name: &str, timeout: Duration) -> ServerAnswer {
    let mut types = Vec::new();
    for qtype in [TYPE_A, TYPE_AAAA] {
        match query(SocketAddr::new(server, 53), name, qtype, timeout) {
            Ok(r) => types.push(TypeAnswer {
                qtype,
                rcode: r.rcode,
                addrs: r.addrs,
            }),
            Err(e) => return ServerAnswer::NoAnswer(format!("{e:#}")),
        }
    }
    ServerAnswer::Answered(types)
}

fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Result<Response> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind).context("cannot open a UDP socket")?;
    sock.connect(server)
        .with_context(|| format!("cannot reach {server}"))?;
    let id = query_id(qtype);
    sock.send(&encode_query(id, name, qtype)?)
        .with_context(|| format!("cannot send to {server}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no answer within {} s", timeout.as_secs_f64());
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv(&mut buf) {
            Ok(n) => match parse_response(&buf[..n], id) {
                Ok(r) => return Ok(r),
                // A stray or late datagram: keep waiting for ours.
                Err(_) => continue,
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("no answer within {} s", timeout.as_secs_f64())
            }
            Err(e) => return Err(e).with_context(|| format!("no answer from {server}")),
        }
    }
}

/// A query id that differs between runs and between the two queries.
fn query_id(qtype: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos as u16) ^ (std::process::id() as u16) ^ qtype
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lines() {
        let c = parse_resolv_conf(
            "# comment\nnameserver 10.0.0.53\nnameserver fd00::53 # v6\nnameserver fe80::1%eth0\n\
             search a.example b.example\noptions ndots:2\n",
        );
        assert_eq!(
            c.nameservers,
            vec![
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "fd00::53".parse().unwrap()
            ]
        );
        assert_eq!(c.search, vec!["a.example", "b.example"]);
        assert_eq!(parse_resolv_conf(""), ResolvConf::default());
    }

    #[test]
    fn hosts_file_names_and_aliases() {
        let text = "127.0.0.1 localhost\n10.1.2.3 db.internal db # main\n\
                    # 10.9.9.9 db.internal\nfd00::3 DB.internal.\nbogus db.internal\n";
        assert_eq!(
            hosts_entries(text, "db.internal"),
            vec![
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fd00::3".parse().unwrap()
            ]
        );
        assert_eq!(
            hosts_entries(text, "db"),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_entries(text, "other").is_empty());
    }

    #[test]
    fn query_encoding() {
        let q = encode_query(0x1234, "a.bc.", TYPE_AAAA).unwrap();
        assert_eq!(
            q,
            [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 28, 0, 1]
        );
        assert!(encode_query(1, "", TYPE_A).is_err());
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
    }

    /// A response to "a.bc" A with a CNAME (compressed owner) and one A record.
    fn response(id: u16, rcode: u8) -> Vec<u8> {
        let mut r = vec![
            (id >> 8) as u8,
            id as u8,
            0x81,
            0x80 | rcode,
            0,
            1,
            0,
            2,
            0,
            0,
            0,
            0,
        ];
        r.extend_from_slice(&[1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
        // CNAME: owner pointer to offset 12, rdata "x" + pointer.
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 12]);
        // A for x.a.bc (pointer to the CNAME's rdata at offset 34).
        r.extend_from_slice(&[0xc0, 34, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 240, 0, 7]);
        r
    }

    #[test]
    fn response_parsing() {
        let r = parse_response(&response(7, 0), 7).unwrap();
        assert_eq!(r.rcode, 0);
        assert_eq!(r.addrs, vec!["10.240.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(parse_response(&response(7, 3), 7).unwrap().rcode, 3);
        assert!(parse_response(&response(7, 0), 8).is_err());
        // Every truncation is an error, never a panic.
        let full = response(7, 0);
        for n in 0..full.len() {
            assert!(parse_response(&full[..n], 7).is_err(), "{n}");
        }
        // A query (QR clear) is not a response.
        let mut q = full.clone();
        q[2] &= 0x7f;
        assert!(parse_response(&q, 7).is_err());
        assert_eq!(rcode_name(3), "NXDOMAIN");
    }

    #[test]
    fn system_resolver_knows_localhost() {
        match system_resolve("localhost") {
            SystemAnswer::Addrs(a) => assert!(a.iter().all(IpAddr::is_loopback), "{a:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            system_resolve("a\0b"),
            SystemAnswer::Failed { .. }
        ));
    }
}
