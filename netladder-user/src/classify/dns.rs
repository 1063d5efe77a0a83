//! DNS answers (`kind::DNS_ANSWER`) and resolver calls (`kind::RESOLVER`): #024.
//!
//! One failed lookup is one failure, not a packet stream: the error answers a thread gets while
//! inside getaddrinfo (A and AAAA, search domains, every nameserver) wait for that call's result
//! and are reported with it; answers to programs without getaddrinfo (dig, gethostbyname) are
//! grouped per process and name and reported once the name has been quiet for `SETTLE_NS`.
//! Successful getaddrinfo results are kept for a minute per (process, address), so a later
//! failed connection to that address can say which name it came from, and whether DNS was
//! asked at all (no question sent: /etc/hosts or another nsswitch source answered).
use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use netladder_common::{dns as wire, kind};

use super::{Failure, Kind, Ledger, Observation, Proc};
use crate::words::{canonical, plural};
use crate::{
    dnswire::{rcode_name, wire_name},
    ladder::{Cause, Code, Layer},
};

/// Answers to a program without getaddrinfo are reported this long after the last one.
pub const SETTLE_NS: u64 = 1_000_000_000;
/// A getaddrinfo result is held this long for answers that arrive after it.
pub const GRACE_NS: u64 = 200_000_000;
/// A getaddrinfo call whose result never comes (killed, uretprobe missing) is reported from its
/// answers after this long.
pub const CALL_TIMEOUT_NS: u64 = 30_000_000_000;
/// How long a successful resolution explains a connection to its address.
pub const RESOLVED_TTL_NS: u64 = 60_000_000_000;
/// How long a sendto/connect error toward a nameserver explains a lookup that got no answer.
pub const SEND_ERROR_TTL_NS: u64 = 30_000_000_000;
/// Bound of every table here.
pub const MAX_ENTRIES: usize = 4096;

pub use crate::dnswire::{eai_name, EAI_ADDRFAMILY, EAI_AGAIN, EAI_FAIL, EAI_NODATA, EAI_NONAME};

/// One error answer from a nameserver.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    name: String,
    /// The kernel copied only the name's first labels.
    cut: bool,
    server: Option<SocketAddr>,
    client: Option<SocketAddr>,
    rcode: u8,
    qtype: u16,
    id: u16,
    tcp: bool,
    /// The process is the last one that connected or sent to this nameserver (no cgroup
    /// sock_addr program saw the socket).
    by_server: bool,
    ts: u64,
}

/// Error answers waiting for their lookup to end.
#[derive(Clone, Debug)]
struct Pending {
    proc: Proc,
    answers: Vec<Answer>,
    /// When the lookup is reported (now + settle, or the call timeout).
    deadline: u64,
    /// The getaddrinfo result, once it came: (code, name asked, queries, responses, last
    /// server asked, duration in µs, time).
    result: Option<Resolved>,
    /// Kernel records taken in: its answers (duplicates too) and its result.
    records: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Resolved {
    code: i32,
    name: String,
    queries: u32,
    responses: u32,
    micros: u64,
    /// First address (success) or last nameserver asked (failure).
    addr: Option<SocketAddr>,
    ts: u64,
}

#[derive(Default)]
pub struct State {
    /// Threads inside getaddrinfo: (pid, tid) -> their error answers and, later, the result.
    calls: HashMap<(u32, u32), Pending>,
    /// Programs without getaddrinfo: (pid, netns, lower-case name) -> their error answers.
    loose: HashMap<(u32, u32, String), Pending>,
    /// Calls already over: (pid, tid) -> time of their result (late answers are theirs), and
    /// whether the call was a failure (its late answers are merged into it) or not.
    closed: HashMap<(u32, u32), (u64, bool)>,
    /// Successful resolutions: (pid, address) -> what resolved it; oldest first in `order`.
    resolved: HashMap<(u32, IpAddr), Resolved>,
    order: VecDeque<(u64, (u32, IpAddr))>,
    /// connect()/sendto() errors toward port 53: (pid, server) -> (errno, call, until).
    send_errors: HashMap<(u32, IpAddr), (i32, &'static str, u64)>,
    /// Where the records that made no failure ended (malformed: a name that did not decode,
    /// which the kernel checks first, so this stays 0).
    pub ledger: Ledger,
}

impl State {
    pub fn feed(&mut self, obs: &Observation, now: u64) -> Vec<Failure> {
        let Kind::App {
            kind,
            code,
            aux,
            ref text,
        } = obs.kind
        else {
            return Vec::new();
        };
        match kind {
            kind::DNS_ANSWER => self.answer(obs, code, aux, text, now),
            kind::RESOLVER => self.result(obs, code, aux, text, now),
            _ => {}
        }
        Vec::new()
    }

    /// Reports the lookups whose time has come; forgets what expired.
    pub fn tick(&mut self, now: u64) -> Vec<Failure> {
        let mut out = Vec::new();
        let due: Vec<(u32, u32)> = self
            .calls
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(p) = self.calls.remove(&key) {
                if let Some(r) = &p.result {
                    self.closed.insert(key, (r.ts, true));
                }
                out.extend(self.report(p, now, None));
            }
        }
        let due: Vec<(u32, u32, String)> = self
            .loose
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.loose.remove(&key) {
                out.extend(self.report(p, now, None));
            }
        }
        self.closed
            .retain(|_, (ts, _)| ts.saturating_add(CALL_TIMEOUT_NS) > now);
        self.send_errors.retain(|_, (_, _, until)| *until > now);
        while let Some(&(ts, key)) = self.order.front() {
            if ts.saturating_add(RESOLVED_TTL_NS) > now && self.order.len() <= MAX_ENTRIES {
                break;
            }
            self.order.pop_front();
            if self.resolved.get(&key).is_some_and(|r| r.ts == ts) {
                self.resolved.remove(&key);
            }
        }
        out.sort_by_key(|f| f.ts_ns);
        out
    }

    /// At exit: every lookup still waiting is reported with what is known. A call whose result
    /// came is complete (only late answers were still awaited); one without a result, and the
    /// answers of a program without getaddrinfo that had not been quiet long enough, say that
    /// watch stopped first.
    pub fn flush(&mut self, now: u64) -> Vec<Failure> {
        let mut out = Vec::new();
        let mut calls: Vec<Pending> = self.calls.drain().map(|(_, p)| p).collect();
        calls.sort_by_key(first_ts);
        for p in calls {
            let note = p.result.is_none().then(|| {
                format!(
                    "watch stopped before getaddrinfo returned, {} ms after the first error \
                     answer: the call's own result is unknown",
                    now.saturating_sub(first_ts(&p)) / 1_000_000
                )
            });
            out.extend(self.report(p, now, note));
        }
        let mut loose: Vec<Pending> = self.loose.drain().map(|(_, p)| p).collect();
        loose.sort_by_key(first_ts);
        for p in loose {
            let last = p.answers.iter().map(|a| a.ts).max().unwrap_or(0);
            let note = format!(
                "watch stopped {} ms after the last answer for this name, before the {} ms of \
                 quiet that end a lookup: answers that came later are not included",
                now.saturating_sub(last) / 1_000_000,
                SETTLE_NS / 1_000_000
            );
            out.extend(self.report(p, now, Some(note)));
        }
        out
    }

    /// Records held by lookups still waiting.
    pub fn held(&self) -> u64 {
        self.calls
            .values()
            .chain(self.loose.values())
            .map(|p| u64::from(p.records))
            .sum()
    }

    /// The failure of a lookup that is over, with `note` added to its evidence; its records go
    /// to the ledger when it makes none.
    fn report(&mut self, p: Pending, now: u64, note: Option<String>) -> Option<Failure> {
        let records = p.records;
        let mut f = self.failure(p, now);
        match &mut f {
            Some(f) => f.evidence.extend(note),
            None => self.ledger.unclassified += u64::from(records),
        }
        f
    }

    /// A connect()/sendto() error toward port 53: the nameserver could not be reached.
    pub fn send_error(&mut self, obs: &Observation, call: &'static str, now: u64) {
        let Some(dst) = obs.dst.filter(|d| d.port() == 53) else {
            return;
        };
        if self.send_errors.len() < MAX_ENTRIES {
            self.send_errors.insert(
                (obs.proc.pid, dst.ip()),
                (obs.err, call, now.saturating_add(SEND_ERROR_TTL_NS)),
            );
        }
    }

    /// A failed connection of a process that resolved its address with getaddrinfo shortly
    /// before: names the host, and says whether DNS was asked at all.
    pub fn annotate(&self, f: &mut Failure, now: u64) {
        let Some(dst) = f.dst else {
            return;
        };
        let ip = canonical(dst.ip());
        let Some(r) = self.resolved.get(&(f.proc.pid, ip)) else {
            return;
        };
        if r.ts.saturating_add(RESOLVED_TTL_NS) <= now || r.ts > f.ts_ns.max(now) {
            return;
        }
        let ago = f.ts_ns.saturating_sub(r.ts) / 1_000_000;
        let how = if r.queries == 0 && r.responses == 0 {
            "with no DNS question or answer seen (no connect() or datagram to port 53 and no \
             answer during the call): the address most likely came from /etc/hosts or another \
             nsswitch source, not from DNS"
                .to_owned()
        } else if r.queries == 0 {
            format!(
                "after {} response{} from a nameserver (its questions went on a socket \
                 connected before the call, which is not counted)",
                r.responses,
                plural(r.responses)
            )
        } else {
            format!(
                "after asking a nameserver {} time{} ({} response{})",
                r.queries,
                plural(r.queries),
                r.responses,
                plural(r.responses)
            )
        };
        f.evidence.push(format!(
            "this process resolved {} to {ip} with getaddrinfo {ago} ms before, {how}",
            r.name
        ));
        f.host_name = Some(r.name.clone());
    }

    fn answer(&mut self, obs: &Observation, code: i32, aux: u64, text: &[u8], now: u64) {
        let cut = aux & wire::ANSWER_NAME_CUT != 0;
        let name = if aux & wire::ANSWER_NO_QUESTION != 0 {
            String::new()
        } else {
            match wire_name(text, cut) {
                Ok(n) => n,
                Err(_) => {
                    self.ledger.malformed += 1;
                    return;
                }
            }
        };
        let a = Answer {
            name,
            cut,
            server: obs.dst,
            client: obs.src,
            rcode: (code & 0xff) as u8,
            qtype: (aux & 0xffff) as u16,
            id: ((aux >> 16) & 0xffff) as u16,
            tcp: aux & wire::ANSWER_TCP != 0,
            by_server: aux & wire::ANSWER_ASKER_BY_SERVER != 0,
            ts: obs.ts_ns,
        };
        let (pid, tid) = (obs.proc.pid, obs.proc.tid);
        if aux & wire::ANSWER_IN_RESOLVER != 0 && pid != 0 {
            // An answer from before a call already over belongs to that call.
            if let Some((_, failed)) = self.closed.get(&(pid, tid)).filter(|(ts, _)| a.ts <= *ts) {
                if *failed {
                    self.ledger.merged += 1;
                } else {
                    self.ledger.context += 1;
                }
                return;
            }
            if !self.calls.contains_key(&(pid, tid)) && self.calls.len() >= MAX_ENTRIES {
                self.ledger.dropped += 1;
                return;
            }
            let p = self.calls.entry((pid, tid)).or_insert_with(|| Pending {
                proc: obs.proc.clone(),
                answers: Vec::new(),
                deadline: now.saturating_add(CALL_TIMEOUT_NS),
                result: None,
                records: 0,
            });
            p.records += 1;
            add(&mut p.answers, a);
        } else {
            let key = (pid, obs.proc.netns, a.name.to_ascii_lowercase());
            if !self.loose.contains_key(&key) && self.loose.len() >= MAX_ENTRIES {
                self.ledger.dropped += 1;
                return;
            }
            let p = self.loose.entry(key).or_insert_with(|| Pending {
                proc: obs.proc.clone(),
                answers: Vec::new(),
                deadline: 0,
                result: None,
                records: 0,
            });
            p.records += 1;
            p.deadline = now.saturating_add(SETTLE_NS);
            add(&mut p.answers, a);
        }
    }

    fn result(&mut self, obs: &Observation, code: i32, aux: u64, text: &[u8], now: u64) {
        let name = String::from_utf8_lossy(text).into_owned();
        let r = Resolved {
            code,
            name,
            queries: (aux & 0xffff) as u32,
            responses: ((aux >> 16) & 0xffff) as u32,
            micros: aux >> 32,
            addr: obs.dst,
            ts: obs.ts_ns,
        };
        let key = (obs.proc.pid, obs.proc.tid);
        if code == 0 {
            // Error answers on the way (a search domain, one family) did not stop it.
            let held = self.calls.remove(&key).map_or(0, |p| p.records);
            self.ledger.context += 1 + u64::from(held);
            self.closed.insert(key, (r.ts, false));
            let literal = r.name.parse::<IpAddr>().is_ok();
            if let (Some(addr), false) = (r.addr, literal) {
                let k = (obs.proc.pid, canonical(addr.ip()));
                self.order.push_back((r.ts, k));
                self.resolved.insert(k, r);
            }
            return;
        }
        if !reported_code(code) {
            // A call that failed for another reason (bad arguments, memory): not the ladder's.
            let held = self.calls.remove(&key).map_or(0, |p| p.records);
            self.ledger.unclassified += 1 + u64::from(held);
            self.closed.insert(key, (r.ts, false));
            return;
        }
        let p = self.calls.entry(key).or_insert_with(|| Pending {
            proc: obs.proc.clone(),
            answers: Vec::new(),
            deadline: 0,
            result: None,
            records: 0,
        });
        p.records += 1;
        p.proc = obs.proc.clone();
        p.deadline = now.saturating_add(GRACE_NS);
        p.result = Some(r);
    }

    /// The failure a finished lookup stands for.
    fn failure(&self, p: Pending, _now: u64) -> Option<Failure> {
        let worst = p.answers.iter().max_by_key(|a| severity(a.rcode));
        let r = p.result.as_ref();
        let name = match (r, worst) {
            (Some(r), _) => r.name.clone(),
            (None, Some(a)) => shown(a),
            (None, None) => return None,
        };
        let mut evidence = Vec::new();
        for a in &p.answers {
            evidence.push(format!(
                "{} for {} {} from {} over {}{}",
                rcode_name(a.rcode),
                shown(a),
                qtype_name(a.qtype),
                a.server
                    .map_or("an unknown server".into(), |s| s.to_string()),
                if a.tcp { "TCP" } else { "UDP" },
                a.client.map(|c| format!(" to {c}")).unwrap_or_default()
            ));
        }
        if p.answers.iter().any(|a| a.by_server) {
            evidence.push(
                "process: the last one that connected or sent to this nameserver (netladder did not \
                 see the connect() or send of the socket that received the answer: it came before \
                 the watch, or the cgroup connect/sendmsg programs are not attached)"
                    .into(),
            );
        }
        let eai = r.map(|r| {
            format!(
                "getaddrinfo(\"{}\") returned {} after {} ms; during the call it asked a nameserver {} time{} \
                 (each connect() to port 53 and each datagram sent there without one counts) and got \
                 {} response{}",
                r.name,
                eai_name(r.code),
                r.micros / 1000,
                r.queries,
                plural(r.queries),
                r.responses,
                plural(r.responses)
            )
        });
        evidence.extend(eai);
        let mut layer = Layer::Dns;
        let mut dst = worst.and_then(|a| a.server);
        let src = worst.and_then(|a| a.client);
        let (cause, summary) = match (worst, r) {
            (Some(a), _) => {
                let server = a
                    .server
                    .map_or("the nameserver".into(), |s| s.ip().to_string());
                match a.rcode {
                    3 => (
                        Cause::Nxdomain,
                        format!("{name} does not exist: NXDOMAIN from {server}"),
                    ),
                    2 => (
                        Cause::Servfail,
                        format!("the nameserver {server} failed to resolve {name} (SERVFAIL)"),
                    ),
                    5 => (
                        Cause::Refused,
                        format!("the nameserver {server} refused to resolve {name} (REFUSED)"),
                    ),
                    n => (
                        Cause::DnsError,
                        format!(
                            "the nameserver {server} answered the question for {name} with {}",
                            rcode_name(n)
                        ),
                    ),
                }
            }
            (None, Some(r)) => {
                dst = r.addr.filter(|a| a.port() == 53);
                let send_error = match dst {
                    Some(d) => self
                        .send_errors
                        .get(&(p.proc.pid, d.ip()))
                        .map(|e| (d.ip(), e)),
                    // No question left: the server is the one the failed call went to.
                    None => self
                        .send_errors
                        .iter()
                        .filter(|((pid, _), _)| *pid == p.proc.pid)
                        .max_by_key(|(_, (_, _, until))| *until)
                        .map(|((_, ip), e)| (*ip, e)),
                };
                if dst.is_none() {
                    dst = send_error.map(|(ip, _)| SocketAddr::new(ip, 53));
                }
                let send_error = send_error.map(|(_, e)| e);
                match (r.code, r.queries, r.responses) {
                    (EAI_AGAIN, 0, 0) => {
                        if let Some((err, call, _)) = send_error {
                            layer = Layer::Route;
                            evidence.push(format!(
                                "{} toward the nameserver returned {}",
                                crate::classify::evidence::call_words(call),
                                super::errno::name(*err)
                            ));
                        }
                        (
                            Cause::NoNameserver,
                            format!(
                                "no DNS question for {name} was seen going out (no connect() or \
                                 datagram to port 53, and no answer, during the call): no nameserver \
                                 is reachable from here (a network problem, one rung lower)"
                            ),
                        )
                    }
                    (EAI_AGAIN, q, 0) => {
                        let server = dst.map_or("the nameservers".into(), |d| d.ip().to_string());
                        if send_error.is_some() {
                            layer = Layer::Route;
                        }
                        (
                            Cause::NoAnswer,
                            format!(
                                "no nameserver answered: {name} was asked {q} time{} (last of {server}) \
                                 without any response; the route or a firewall toward the nameserver, or \
                                 the nameserver is down",
                                plural(q)
                            ),
                        )
                    }
                    (EAI_NONAME | EAI_NODATA | EAI_ADDRFAMILY, 0, 0) => (
                        Cause::NotFoundLocally,
                        format!(
                            "{name} was not found and no DNS question or answer was seen (no \
                             connect() or datagram to port 53 during the call): /etc/hosts and the \
                             other nsswitch sources do not know it, and DNS was most likely not asked"
                        ),
                    ),
                    (EAI_NONAME | EAI_NODATA | EAI_ADDRFAMILY, _, _) => (
                        Cause::NoAddress,
                        format!("{name} has no address of the family asked (the name exists)"),
                    ),
                    _ => (
                        Cause::ResolverFailed,
                        format!("the resolver failed for {name} ({})", eai_name(r.code)),
                    ),
                }
            }
            (None, None) => return None,
        };
        if layer == Layer::Dns && matches!(cause, Cause::NoAnswer | Cause::NoNameserver) {
            evidence.push(
                "nothing was dropped on this host that netladder could see: check the route and \
                 firewalls toward the nameserver (#022/#023)"
                    .into(),
            );
        }
        let summary = match r {
            Some(r) if worst.is_some() => format!("{summary} (getaddrinfo: {})", eai_name(r.code)),
            _ => summary,
        };
        let ts = r.map_or_else(
            || p.answers.iter().map(|a| a.ts).max().unwrap_or(0),
            |r| r.ts,
        );
        Some(Failure {
            src,
            dst,
            evidence,
            duration_ns: r.map(|r| r.micros * 1000),
            host_name: (!name.is_empty() && !name.ends_with(CUT_MARK)).then_some(name),
            records: p.records,
            ..Failure::new(Code::Dns, cause, layer, summary, p.proc, ts)
        })
    }
}

/// When a lookup's first record came (for reporting held lookups in order).
fn first_ts(p: &Pending) -> u64 {
    let answers = p.answers.iter().map(|a| a.ts).min();
    let result = p.result.as_ref().map(|r| r.ts);
    answers.into_iter().chain(result).min().unwrap_or(0)
}

/// Appended to a name the kernel copied only in part.
const CUT_MARK: &str = "...(cut)";

fn shown(a: &Answer) -> String {
    match (a.name.is_empty(), a.cut) {
        (true, _) => "(no question in the response)".into(),
        (false, true) => format!("{}{CUT_MARK}", a.name),
        (false, false) => a.name.clone(),
    }
}

/// Adds `a` unless the same answer (server, id, type, code) is already there.
fn add(list: &mut Vec<Answer>, a: Answer) {
    let dup = list.iter().any(|b| {
        b.server == a.server
            && b.id == a.id
            && b.qtype == a.qtype
            && b.rcode == a.rcode
            && b.name == a.name
    });
    if !dup && list.len() < 32 {
        list.push(a);
    }
}

/// Which answer names a lookup: a name that does not exist says most.
fn severity(rcode: u8) -> u8 {
    match rcode {
        3 => 4,
        2 => 3,
        5 => 2,
        _ => 1,
    }
}

/// getaddrinfo results that are name-resolution failures (not bad arguments or memory).
fn reported_code(code: i32) -> bool {
    matches!(
        code,
        EAI_NONAME | EAI_AGAIN | EAI_FAIL | EAI_NODATA | EAI_ADDRFAMILY
    )
}

fn qtype_name(qtype: u16) -> String {
    match qtype {
        0 => "(type unknown)".into(),
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        n => format!("TYPE{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Drops;

    const MS: u64 = 1_000_000;

    fn proc(pid: u32, tid: u32) -> Proc {
        Proc {
            pid,
            tid,
            comm: "client".into(),
            cgroup_id: 1,
            netns: 7,
        }
    }

    fn wire(name: &str) -> Vec<u8> {
        let mut w = Vec::new();
        for l in name.split('.') {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w.push(0);
        w
    }

    fn obs(kind: u32, code: i32, aux: u64, text: &[u8], p: Proc, ts: u64) -> Observation {
        Observation {
            kind: Kind::App {
                kind,
                code,
                aux,
                text: text.to_vec(),
            },
            ts_ns: ts,
            sk: 0,
            proc: p,
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

    fn answer(name: &str, rcode: i32, qtype: u64, id: u64, in_call: bool, ts: u64) -> Observation {
        let mut aux = qtype | id << 16;
        if in_call {
            aux |= wire::ANSWER_IN_RESOLVER;
        }
        obs(kind::DNS_ANSWER, rcode, aux, &wire(name), proc(10, 11), ts)
    }

    fn result(name: &str, code: i32, queries: u64, responses: u64, ts: u64) -> Observation {
        let aux = queries | responses << 16 | 1500 << 32;
        obs(kind::RESOLVER, code, aux, name.as_bytes(), proc(10, 11), ts)
    }

    /// Feeds everything at its own time, then ticks far ahead.
    fn run(events: &[Observation]) -> Vec<Failure> {
        let mut s = State::default();
        let mut out = Vec::new();
        for e in events {
            out.extend(s.feed(e, e.ts_ns));
        }
        out.extend(s.tick(events.last().map_or(0, |e| e.ts_ns) + 5 * GRACE_NS));
        out.extend(s.tick(u64::MAX / 2));
        out
    }

    #[test]
    fn getaddrinfo_nxdomain_for_a_and_aaaa_is_one_failure() {
        let t = 1_000 * MS;
        let out = run(&[
            answer("missing.nl.test", 3, 1, 0x10, true, t),
            answer("missing.nl.test", 3, 28, 0x11, true, t + MS),
            // A duplicate delivery of the first answer.
            answer("missing.nl.test", 3, 1, 0x10, true, t + MS),
            result("missing.nl.test", EAI_NONAME, 2, 2, t + 2 * MS),
        ]);
        assert_eq!(out.len(), 1, "{out:#?}");
        let f = &out[0];
        assert_eq!(
            (f.code, f.cause, f.layer),
            (Code::Dns, Cause::Nxdomain, Layer::Dns)
        );
        assert_eq!(f.dst, Some("10.0.0.53:53".parse().unwrap()));
        assert!(f
            .summary
            .contains("missing.nl.test does not exist: NXDOMAIN from 10.0.0.53"));
        assert!(f.summary.contains("EAI_NONAME"), "{}", f.summary);
        assert_eq!(f.evidence.len(), 3, "{:#?}", f.evidence);
        assert!(f.evidence[1].contains("AAAA"));
        assert_eq!(f.host_name.as_deref(), Some("missing.nl.test"));
    }

    #[test]
    fn an_answer_after_the_result_still_joins_it() {
        let t = 1_000 * MS;
        let mut s = State::default();
        assert!(s
            .feed(&result("late.nl.test", EAI_NONAME, 2, 2, t), t)
            .is_empty());
        s.feed(&answer("late.nl.test", 3, 1, 1, true, t - MS), t + MS);
        let out = s.tick(t + GRACE_NS + MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cause, Cause::Nxdomain);
        // Another copy after the report is that call's too: nothing new.
        s.feed(
            &answer("late.nl.test", 3, 28, 2, true, t - MS),
            t + GRACE_NS + 2 * MS,
        );
        assert!(s.tick(u64::MAX / 2).is_empty());
    }

    #[test]
    fn a_search_domain_miss_before_success_is_no_failure() {
        let t = 1_000 * MS;
        let mut ok = result("db", 0, 3, 3, t + 2 * MS);
        ok.dst = Some("10.0.0.9:0".parse().unwrap());
        let out = run(&[answer("db.corp.test", 3, 1, 1, true, t), ok]);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn dig_like_answers_settle_into_one_failure_per_name() {
        let t = 1_000 * MS;
        let mut s = State::default();
        s.feed(&answer("a.test", 2, 1, 1, false, t), t);
        s.feed(&answer("a.test", 2, 28, 2, false, t + 10 * MS), t + 10 * MS);
        s.feed(&answer("b.test", 5, 1, 3, false, t + 20 * MS), t + 20 * MS);
        assert!(s.tick(t + 500 * MS).is_empty(), "still settling");
        let out = s.tick(t + 20 * MS + SETTLE_NS);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[0].cause, Cause::Servfail);
        assert!(out[0]
            .summary
            .contains("failed to resolve a.test (SERVFAIL)"));
        assert_eq!(out[1].cause, Cause::Refused);
        assert!(s.tick(u64::MAX / 2).is_empty());
    }

    #[test]
    fn no_answer_from_any_nameserver() {
        let t = 1_000 * MS;
        let out = run(&[result("x.test", EAI_AGAIN, 4, 0, t)]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].cause, out[0].layer), (Cause::NoAnswer, Layer::Dns));
        assert!(out[0]
            .summary
            .contains("no nameserver answered: x.test was asked 4 times"));
        assert_eq!(out[0].src, None);
        assert_eq!(out[0].dst, Some("10.0.0.53:53".parse().unwrap()));
    }

    #[test]
    fn an_unreachable_nameserver_points_at_the_route() {
        let t = 1_000 * MS;
        let mut s = State::default();
        let mut err = obs(kind::DNS_ANSWER, 0, 0, b"", proc(10, 11), t);
        err.err = 101;
        s.send_error(&err, "connect", t);
        s.feed(&result("x.test", EAI_AGAIN, 0, 0, t + MS), t + MS);
        let out = s.tick(t + SETTLE_NS);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].cause, out[0].layer),
            (Cause::NoNameserver, Layer::Route)
        );
        assert!(
            out[0]
                .evidence
                .iter()
                .any(|e| e.contains("connect() toward the nameserver returned ENETUNREACH")),
            "{:#?}",
            out[0].evidence
        );
    }

    #[test]
    fn a_hosts_answer_explains_a_later_connection_failure() {
        let t = 1_000 * MS;
        let mut s = State::default();
        let mut ok = result("stale.test", 0, 0, 0, t);
        ok.dst = Some("[::ffff:10.9.9.9]:80".parse().unwrap());
        s.feed(&ok, t);
        let mut f = s
            .failure(
                Pending {
                    proc: proc(10, 11),
                    answers: vec![],
                    deadline: 0,
                    records: 1,
                    result: Some(Resolved {
                        code: EAI_AGAIN,
                        name: "n".into(),
                        queries: 1,
                        responses: 0,
                        micros: 0,
                        addr: None,
                        ts: t,
                    }),
                },
                t,
            )
            .unwrap();
        f.code = Code::Timeout;
        f.host_name = None;
        f.dst = Some("10.9.9.9:80".parse().unwrap());
        f.ts_ns = t + 50 * MS;
        s.annotate(&mut f, t + 50 * MS);
        assert_eq!(f.host_name.as_deref(), Some("stale.test"));
        assert!(f.evidence.last().unwrap().contains("resolved stale.test to 10.9.9.9 with getaddrinfo 50 ms before, with no DNS question or answer seen"));
        // Another process, or long after: nothing.
        let mut other = f.clone();
        other.proc.pid = 99;
        other.host_name = None;
        s.annotate(&mut other, t + 50 * MS);
        assert_eq!(other.host_name, None);
        s.tick(t + RESOLVED_TTL_NS + 1);
        let mut late = f.clone();
        late.host_name = None;
        s.annotate(&mut late, t + RESOLVED_TTL_NS + 2);
        assert_eq!(late.host_name, None);
    }

    #[test]
    fn bad_names_are_counted_not_reported() {
        let t = 1_000 * MS;
        let mut s = State::default();
        let bad = obs(kind::DNS_ANSWER, 3, 1, &[0xc0, 12], proc(1, 1), t);
        s.feed(&bad, t);
        assert_eq!(s.ledger.malformed, 1);
        assert!(s.tick(u64::MAX / 2).is_empty());
    }

    #[test]
    fn a_call_without_result_is_reported_after_its_timeout() {
        let t = 1_000 * MS;
        let mut s = State::default();
        s.feed(&answer("gone.test", 3, 1, 1, true, t), t);
        assert!(s.tick(t + SETTLE_NS * 5).is_empty());
        let out = s.tick(t + CALL_TIMEOUT_NS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cause, Cause::Nxdomain);
    }
}
