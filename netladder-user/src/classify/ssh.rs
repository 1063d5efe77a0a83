//! ssh authentication refusals (`kind::SSH_AUTH`): #030.
//!
//! Two views of one refusal, each complete on its own (a client and its server are usually on
//! different machines):
//! - the client: `ssh` printing "USER@HOST: Permission denied (publickey...)". The key files it
//!   opened before and the address it connected to (earlier records of the same process) are
//!   kept per process and reported with it.
//! - the server: sshd's log lines for one connection (one sshd process per connection): the
//!   reason it gives ("Authentication refused: bad ownership or modes ...", "User x from y not
//!   allowed because ...", "Invalid user ...", "Failed publickey ..." at LogLevel VERBOSE) is kept
//!   until the line that ends the connection without a login ("Connection closed by
//!   authenticating user U ADDR port P", "Disconnected from ...", "Disconnecting ...: Too many
//!   authentication failures"), which completes the failure. A reason whose closing line never
//!   comes is reported after [`SERVER_WAIT_NS`].
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use netladder_common::ssh;

use super::{Failure, Kind, Ledger, Observation, Proc};
use crate::ladder::{Cause, Code, Layer};

/// How long a client's key files and destination are kept waiting for a refusal.
const CLIENT_KEEP_NS: u64 = 600_000_000_000;
/// How long a server reason waits for the line that closes its connection.
pub const SERVER_WAIT_NS: u64 = 30_000_000_000;
/// How long a closed connection's process is remembered (a closing line repeated in other
/// words must not report it twice).
const CLOSED_KEEP_NS: u64 = 10_000_000_000;
/// Bounds on what is kept (processes tracked, key files per process, reasons per connection).
const MAX_PROCS: usize = 4096;
const MAX_KEYS: usize = 16;
const MAX_REASONS: usize = 8;

#[derive(Default)]
pub struct State {
    clients: HashMap<u32, Client>,
    servers: HashMap<u32, Server>,
    closed: HashMap<u32, u64>,
    /// Failures completed outside `feed`'s own record (a server evicted to make room), handed
    /// out with the next `feed` or `tick`.
    ready: Vec<Failure>,
    /// Where the records that made no failure ended.
    pub ledger: Ledger,
}

#[derive(Default)]
struct Client {
    keys: Vec<String>,
    dst: Option<SocketAddr>,
    seen: u64,
    /// Kernel records kept here (key files, the connect()).
    records: u32,
}

#[derive(Default)]
struct Server {
    proc: Proc,
    /// What sshd said was wrong, in its words, most important first once reported.
    reasons: Vec<Reason>,
    /// Keys sshd said it rejected ("ED25519 SHA256:..."), at LogLevel VERBOSE.
    failed_keys: Vec<String>,
    too_many: bool,
    user: Option<String>,
    from: Option<IpAddr>,
    first: u64,
    netns: u32,
    /// Kernel records kept here (sshd's log lines about this connection).
    records: u32,
}

impl Server {
    /// Whether sshd said anything that makes the connection a refusal.
    fn refused(&self) -> bool {
        !self.reasons.is_empty() || !self.failed_keys.is_empty() || self.too_many
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Reason {
    /// StrictModes: "bad ownership or modes for file|directory PATH".
    Modes(String),
    /// "not allowed because ...".
    NotAllowed(String),
    /// The account does not exist.
    InvalidUser,
    /// Another "Authentication refused: ..." text.
    Refused(String),
}

impl State {
    pub fn feed(&mut self, obs: &Observation, now: u64) -> Vec<Failure> {
        let Kind::App {
            code, aux, text, ..
        } = &obs.kind
        else {
            return Vec::new();
        };
        let pid = obs.proc.pid;
        let mut out = match *code {
            ssh::CLIENT_OPEN => {
                let path = String::from_utf8_lossy(text);
                match identity_file(&path) {
                    Some(key) => {
                        let c = self.client(pid, now);
                        c.records += 1;
                        if !c.keys.contains(&key) && c.keys.len() < MAX_KEYS {
                            c.keys.push(key);
                        }
                    }
                    None => self.ledger.context += 1,
                }
                Vec::new()
            }
            ssh::CLIENT_CONNECT => {
                match obs.dst {
                    Some(dst) => {
                        let c = self.client(pid, now);
                        c.records += 1;
                        c.dst = Some(dst);
                    }
                    None => self.ledger.context += 1,
                }
                Vec::new()
            }
            ssh::CLIENT_LINE => {
                let f = self.client_line(obs, text);
                if f.is_none() {
                    self.ledger.context += 1;
                }
                f.into_iter().collect()
            }
            ssh::SERVER_LINE => {
                let start = (*aux as usize).min(text.len());
                let line = String::from_utf8_lossy(&text[start..]);
                self.server_line(obs, &line, now).into_iter().collect()
            }
            _ => {
                self.ledger.malformed += 1;
                Vec::new()
            }
        };
        out.append(&mut self.ready);
        out
    }

    /// Records held for failures not complete yet.
    pub fn held(&self) -> u64 {
        let clients: u64 = self.clients.values().map(|c| u64::from(c.records)).sum();
        let servers: u64 = self.servers.values().map(|s| u64::from(s.records)).sum();
        let ready: u64 = self.ready.iter().map(|f| u64::from(f.records)).sum();
        clients + servers + ready
    }

    /// At exit: every server reason still waiting for its connection's end is reported, saying
    /// that watch stopped first; a client's key files and destination without a refusal are
    /// only context.
    pub fn flush(&mut self, now: u64) -> Vec<Failure> {
        let mut out = std::mem::take(&mut self.ready);
        for (_, c) in self.clients.drain() {
            self.ledger.context += u64::from(c.records);
        }
        let mut servers: Vec<Server> = self.servers.drain().map(|(_, s)| s).collect();
        servers.sort_by_key(|s| s.first);
        for s in servers {
            if s.refused() {
                let note = format!(
                    "watch stopped {} ms after sshd's first word on this connection, before sshd \
                     logged its end",
                    now.saturating_sub(s.first) / 1_000_000
                );
                out.push(server_failure(s, Err(note), now));
            } else {
                self.ledger.context += u64::from(s.records);
            }
        }
        out
    }

    /// Reports server reasons whose connection never logged its end, forgets old state.
    pub fn tick(&mut self, now: u64) -> Vec<Failure> {
        let mut expired = 0;
        self.clients.retain(|_, c| {
            let keep = now.saturating_sub(c.seen) < CLIENT_KEEP_NS;
            if !keep {
                expired += u64::from(c.records);
            }
            keep
        });
        self.ledger.context += expired;
        self.closed
            .retain(|_, at| now.saturating_sub(*at) < CLOSED_KEEP_NS);
        let due: Vec<u32> = self
            .servers
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.first) >= SERVER_WAIT_NS)
            .map(|(pid, _)| *pid)
            .collect();
        let mut out = std::mem::take(&mut self.ready);
        for pid in due {
            if let Some(s) = self.servers.remove(&pid) {
                if s.refused() {
                    let note = format!(
                        "sshd logged no end of this connection within {} s",
                        SERVER_WAIT_NS / 1_000_000_000
                    );
                    out.push(server_failure(s, Err(note), now));
                } else {
                    self.ledger.context += u64::from(s.records);
                }
            }
        }
        out
    }

    fn client(&mut self, pid: u32, now: u64) -> &mut Client {
        if self.clients.len() >= MAX_PROCS && !self.clients.contains_key(&pid) {
            // Bounded: the oldest process goes first.
            if let Some(old) = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.seen)
                .map(|(p, _)| *p)
            {
                if let Some(c) = self.clients.remove(&old) {
                    self.ledger.context += u64::from(c.records);
                }
            }
        }
        let c = self.clients.entry(pid).or_default();
        c.seen = now;
        c
    }

    fn client_line(&mut self, obs: &Observation, text: &[u8]) -> Option<Failure> {
        let line = String::from_utf8_lossy(text);
        let line = line.trim_end_matches(['\r', '\n']);
        let (target, rest) = line.split_once(": Permission denied (")?;
        let methods = rest.strip_suffix(").")?;
        if !methods.split(',').any(|m| m == "publickey") {
            return None;
        }
        let client = self.clients.remove(&obs.proc.pid).unwrap_or_default();
        let records = client.records + 1;
        let (user, host) = match target.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h.to_owned()),
            None => (None, target.to_owned()),
        };
        let mut evidence = vec![format!(
            "{} wrote \"{line}\" (syscalls:sys_enter_write)",
            obs.proc.comm
        )];
        evidence.push(if client.keys.is_empty() {
            "it read no key file: the keys it offered came from ssh-agent or a security key, or it had none"
                .to_owned()
        } else {
            format!(
                "key files it read (openat): {}",
                client.keys.join(", ")
            )
        });
        if let Some(d) = client.dst {
            evidence.push(format!("it connected to {d} (connect)"));
        }
        let others = methods
            .split(',')
            .filter(|m| *m != "publickey")
            .collect::<Vec<_>>();
        let summary = format!(
            "the ssh server at {target} accepted none of the keys offered{}",
            if others.is_empty() {
                " (publickey is the only method it allows)".to_owned()
            } else {
                format!(" (it also allows {}, not tried)", others.join(", "))
            }
        );
        Some(Failure {
            dst: client.dst,
            evidence,
            host_name: Some(host),
            user,
            records,
            ..Failure::new(
                Code::SshPublickey,
                Cause::ClientDenied,
                Layer::Application,
                summary,
                obs.proc.clone(),
                obs.ts_ns,
            )
        })
    }

    fn server_line(&mut self, obs: &Observation, line: &str, now: u64) -> Option<Failure> {
        let line = line.trim_end_matches(['\r', '\n']);
        let line = line.strip_suffix(" [preauth]").unwrap_or(line);
        let msg = line.strip_prefix("error: ").unwrap_or(line);
        let pid = obs.proc.pid;
        if msg.starts_with("Accepted ") {
            let held = self.servers.remove(&pid).map_or(0, |s| s.records);
            self.ledger.context += 1 + u64::from(held);
            return None;
        }
        if let Some(end) = closing(msg) {
            if self.closed.insert(pid, now).is_some() {
                // The same end in other words: part of the failure already reported.
                let held = self.servers.remove(&pid).map_or(0, |s| s.records);
                self.ledger.merged += 1 + u64::from(held);
                return None;
            }
            let mut s = self.servers.remove(&pid).unwrap_or_default();
            s.records += 1;
            if s.first == 0 {
                s.proc = obs.proc.clone();
                s.netns = obs.proc.netns;
            }
            s.user = Some(end.user.clone());
            if end.too_many {
                s.too_many = true;
            }
            if end.invalid && !s.reasons.contains(&Reason::InvalidUser) {
                s.reasons.push(Reason::InvalidUser);
            }
            return Some(server_failure(s, Ok(end), obs.ts_ns));
        }
        let kept = self.server_reason(obs, msg, now);
        match self.servers.get_mut(&pid).filter(|_| kept) {
            Some(s) => s.records += 1,
            None => self.ledger.context += 1,
        }
        None
    }

    /// Keeps what one of sshd's lines says about its connection; false when the line says
    /// nothing netladder keeps.
    fn server_reason(&mut self, obs: &Observation, msg: &str, now: u64) -> bool {
        let reason = if let Some(r) = msg.strip_prefix("Authentication refused: ") {
            if r.starts_with("bad ownership or modes") || r.starts_with("bad owner or modes") {
                Reason::Modes(r.to_owned())
            } else {
                Reason::Refused(r.to_owned())
            }
        } else if let Some(r) = msg.strip_prefix("User ") {
            let Some((who, why)) = r.split_once(" not allowed because ") else {
                return false;
            };
            let user = who.split(" from ").next().unwrap_or(who);
            let from = who.split_once(" from ").map(|(_, a)| a);
            let s = self.server(obs, now);
            s.user = Some(user.to_owned());
            if let Some(ip) = from.and_then(|a| a.parse().ok()) {
                s.from = Some(ip);
            }
            Reason::NotAllowed(why.to_owned())
        } else if let Some(r) = msg.strip_prefix("Invalid user ") {
            let (user, from) = user_from(r);
            let s = self.server(obs, now);
            s.user = Some(user);
            s.from = from.or(s.from);
            Reason::InvalidUser
        } else if let Some(r) = msg.strip_prefix("Failed publickey for ") {
            let r = r.strip_prefix("invalid user ").unwrap_or(r);
            let (user, from) = user_from(r);
            let key = r.split_once(" ssh2: ").map(|(_, k)| k.to_owned());
            let s = self.server(obs, now);
            s.user = Some(user);
            s.from = from.or(s.from);
            if let Some(k) = key {
                if !s.failed_keys.contains(&k) && s.failed_keys.len() < MAX_KEYS {
                    s.failed_keys.push(k);
                }
            }
            return true;
        } else if let Some(r) = msg.strip_prefix("maximum authentication attempts exceeded for ") {
            let r = r.strip_prefix("invalid user ").unwrap_or(r);
            let (user, from) = user_from(r);
            let s = self.server(obs, now);
            s.user = Some(user);
            s.from = from.or(s.from);
            s.too_many = true;
            return true;
        } else {
            return false;
        };
        let s = self.server(obs, now);
        if !s.reasons.contains(&reason) && s.reasons.len() < MAX_REASONS {
            s.reasons.push(reason);
        }
        true
    }

    fn server(&mut self, obs: &Observation, now: u64) -> &mut Server {
        let pid = obs.proc.pid;
        if self.servers.len() >= MAX_PROCS && !self.servers.contains_key(&pid) {
            if let Some(old) = self
                .servers
                .iter()
                .min_by_key(|(_, s)| s.first)
                .map(|(p, _)| *p)
            {
                // Its reasons are not lost: reported as they are, the next time out.
                if let Some(s) = self.servers.remove(&old) {
                    if s.refused() {
                        let note = format!(
                            "sshd logged no end of this connection before netladder had to make \
                             room for newer ones ({MAX_PROCS} connections kept)"
                        );
                        self.ready.push(server_failure(s, Err(note), now));
                    } else {
                        self.ledger.context += u64::from(s.records);
                    }
                }
            }
        }
        // A new connection may reuse the pid of an old one: its story starts over.
        self.closed.remove(&pid);
        let s = self.servers.entry(pid).or_default();
        if s.first == 0 {
            s.first = now.max(1);
            s.proc = obs.proc.clone();
            s.netns = obs.proc.netns;
        }
        s
    }
}

/// "root from 10.0.0.1 port 2222 ssh2..." -> ("root", Some(10.0.0.1)).
fn user_from(r: &str) -> (String, Option<IpAddr>) {
    match r.split_once(" from ") {
        Some((user, rest)) => (
            user.to_owned(),
            rest.split_whitespace().next().and_then(|a| a.parse().ok()),
        ),
        None => (r.split_whitespace().next().unwrap_or("").to_owned(), None),
    }
}

/// The line that ends a connection which never logged in.
#[derive(Debug)]
struct End {
    user: String,
    peer: Option<SocketAddr>,
    invalid: bool,
    too_many: bool,
    line: String,
}

/// "Connection closed by authenticating user U ADDR port P", "Disconnected from invalid user U
/// ADDR port P", "Disconnecting authenticating user U ADDR port P: Too many authentication
/// failures", "Connection reset by ...".
fn closing(msg: &str) -> Option<End> {
    let rest = [
        "Connection closed by ",
        "Disconnected from ",
        "Disconnecting ",
        "Connection reset by ",
    ]
    .iter()
    .find_map(|p| msg.strip_prefix(p))?;
    let (invalid, rest) = if let Some(r) = rest.strip_prefix("authenticating user ") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix("invalid user ") {
        (true, r)
    } else {
        return None;
    };
    let (head, tail) = rest.split_once(" port ")?;
    let (user, addr) = head.rsplit_once(' ')?;
    let port: Option<u16> = tail
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok());
    let peer = match (addr.parse::<IpAddr>(), port) {
        (Ok(ip), Some(p)) => Some(SocketAddr::new(ip, p)),
        _ => None,
    };
    Some(End {
        user: user.to_owned(),
        peer,
        invalid,
        too_many: tail.contains("Too many authentication failures"),
        line: msg.to_owned(),
    })
}

/// The server's failure for one connection: `end` is the line that ended it, or why there is
/// none (evidence).
fn server_failure(s: Server, end: Result<End, String>, ts: u64) -> Failure {
    let user = s.user.clone().unwrap_or_else(|| "?".into());
    let peer = end.as_ref().ok().and_then(|e| e.peer);
    let from = peer
        .map(|p| p.ip().to_string())
        .or(s.from.map(|ip| ip.to_string()))
        .unwrap_or_else(|| "an unknown address".into());
    let first = s.reasons.first().cloned();
    let (cause, why) = match &first {
        Some(Reason::Modes(r)) => (
            Cause::ServerBadModes,
            format!("sshd ignored the authorized keys because of StrictModes: {r}"),
        ),
        Some(Reason::NotAllowed(r)) => (
            Cause::ServerUserNotAllowed,
            format!("the user is not allowed to log in: {r}"),
        ),
        Some(Reason::InvalidUser) => (
            Cause::ServerInvalidUser,
            "no such user on this server".to_owned(),
        ),
        Some(Reason::Refused(r)) => (Cause::ServerRefused, format!("sshd refused it: {r}")),
        None if !s.failed_keys.is_empty() => (
            Cause::ServerKeyUnknown,
            format!(
                "none of the {} key{} it offered is in the user's authorized keys",
                s.failed_keys.len(),
                if s.failed_keys.len() == 1 { "" } else { "s" }
            ),
        ),
        None => (
            Cause::ServerKeyUnknown,
            "no key it offered was accepted: not in the user's authorized keys, or none offered"
                .to_owned(),
        ),
    };
    let mut evidence = Vec::new();
    for r in &s.reasons {
        evidence.push(match r {
            Reason::Modes(t) => format!("sshd: Authentication refused: {t}"),
            Reason::NotAllowed(t) => format!("sshd: User {user} not allowed because {t}"),
            Reason::InvalidUser => format!("sshd: Invalid user {user}"),
            Reason::Refused(t) => format!("sshd: Authentication refused: {t}"),
        });
    }
    if !s.failed_keys.is_empty() {
        evidence.push(format!(
            "sshd rejected the key{}: {}",
            if s.failed_keys.len() == 1 { "" } else { "s" },
            s.failed_keys.join(", ")
        ));
    } else if first.is_none() {
        evidence.push(
            "sshd logs the fingerprint of each rejected key only at LogLevel VERBOSE".to_owned(),
        );
    }
    if s.too_many {
        evidence.push("sshd: maximum authentication attempts exceeded (MaxAuthTries)".to_owned());
    }
    match &end {
        Ok(e) => evidence.push(format!("sshd: {}", e.line)),
        Err(why) => evidence.push(why.to_string()),
    }
    let summary = format!("sshd refused the login of {user} from {from}: {why}");
    Failure {
        dst: peer,
        evidence,
        evidence_netns: s.netns,
        user: s.user,
        records: s.records,
        ..Failure::new(
            Code::SshPublickey,
            cause,
            Layer::Application,
            summary,
            s.proc,
            ts,
        )
    }
}

/// The identity behind a file an ssh client opened: the private key's path for a key file
/// ("id_ed25519", "id_ed25519.pub", "id_ed25519-cert.pub" are one identity), None for its other
/// files (known_hosts, config, its log file).
fn identity_file(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let other = name.is_empty()
        || name.starts_with("known_hosts")
        || name == "config"
        || name == "authorized_keys"
        || name.ends_with(".log")
        || path.starts_with("/run/user/") && name.starts_with("agent");
    if other {
        return None;
    }
    let base = path.strip_suffix(".pub").unwrap_or(path);
    let base = base.strip_suffix("-cert").unwrap_or(base);
    Some(base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netladder_common::kind;

    const S: u64 = 1_000_000_000;

    fn proc_(pid: u32, comm: &str) -> Proc {
        Proc {
            pid,
            tid: pid,
            comm: comm.into(),
            cgroup_id: 1,
            netns: 4026531840,
        }
    }

    fn app(pid: u32, comm: &str, code: i32, aux: u64, text: &str, ts: u64) -> Observation {
        Observation {
            kind: Kind::App {
                kind: kind::SSH_AUTH,
                code,
                aux,
                text: text.as_bytes().to_vec(),
            },
            ts_ns: ts,
            sk: 0,
            proc: proc_(pid, comm),
            src: None,
            dst: None,
            err: 0,
            syn_retrans: 0,
            flags: 0,
            duration_ns: None,
            drops: Default::default(),
            icmp: None,
            agg: None,
        }
    }

    fn sshd(state: &mut State, pid: u32, line: &str, ts: u64) -> Vec<Failure> {
        state.feed(&app(pid, "sshd", ssh::SERVER_LINE, 0, line, ts), ts)
    }

    #[test]
    fn client_denial_names_target_keys_and_destination() {
        let mut st = State::default();
        for path in [
            "bad",
            "bad.pub",
            "/root/.ssh/known_hosts",
            "/root/.ssh/config",
            "/k/id_ed25519-cert.pub",
            "/k/id_ed25519",
        ] {
            assert!(st
                .feed(&app(7, "ssh", ssh::CLIENT_OPEN, 4, path, S), S)
                .is_empty());
        }
        let mut conn = app(7, "ssh", ssh::CLIENT_CONNECT, 3, "", S);
        conn.dst = Some("10.0.0.2:2222".parse().unwrap());
        assert!(st.feed(&conn, S).is_empty());
        let line = "root@srv: Permission denied (publickey,password).\r\n";
        let out = st.feed(&app(7, "ssh", ssh::CLIENT_LINE, 2, line, 2 * S), 2 * S);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!((f.code, f.cause), (Code::SshPublickey, Cause::ClientDenied));
        assert_eq!(f.dst, Some("10.0.0.2:2222".parse().unwrap()));
        assert_eq!(f.user.as_deref(), Some("root"));
        assert_eq!(f.host_name.as_deref(), Some("srv"));
        assert!(
            f.summary.contains("root@srv") && f.summary.contains("password"),
            "{}",
            f.summary
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e == "key files it read (openat): bad, /k/id_ed25519"),
            "{:?}",
            f.evidence
        );
        assert!(
            st.clients.is_empty(),
            "the process's state is gone with its report"
        );
    }

    #[test]
    fn other_client_lines_are_not_failures() {
        let mut st = State::default();
        for line in [
            "root@srv: Permission denied (password).\r\n",
            "Host key verification failed (really).\r\n",
            "some remote output ending in ).\r\n",
        ] {
            assert!(
                st.feed(&app(7, "ssh", ssh::CLIENT_LINE, 2, line, S), S)
                    .is_empty(),
                "{line}"
            );
        }
    }

    #[test]
    fn strict_modes_refusal_completes_at_the_connection_end() {
        let mut st = State::default();
        let refused =
            "Authentication refused: bad ownership or modes for file /h/.ssh/authorized_keys\r\n";
        assert!(sshd(&mut st, 40, refused, S).is_empty());
        assert!(sshd(&mut st, 40, refused, S).is_empty());
        let out = sshd(
            &mut st,
            40,
            "Connection closed by authenticating user root 10.0.0.1 port 34762 [preauth]\r\n",
            2 * S,
        );
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(
            (f.code, f.cause),
            (Code::SshPublickey, Cause::ServerBadModes)
        );
        assert_eq!(f.dst, Some("10.0.0.1:34762".parse().unwrap()));
        assert_eq!(f.user.as_deref(), Some("root"));
        assert!(
            f.summary.contains("root from 10.0.0.1")
                && f.summary.contains("/h/.ssh/authorized_keys"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.evidence
                .iter()
                .filter(|e| e.contains("bad ownership"))
                .count(),
            1
        );
        // The same end in other words (Disconnecting, then Connection closed) is one failure.
        assert!(sshd(
            &mut st,
            40,
            "Disconnected from authenticating user root 10.0.0.1 port 34762 [preauth]",
            2 * S
        )
        .is_empty());
    }

    #[test]
    fn syslog_offsets_and_verbose_keys() {
        let mut st = State::default();
        let line = "<38>Nov 21 23:41:42 sshd[41]: Failed publickey for root from 10.0.0.1 port 5 ssh2: ED25519 SHA256:abc\n";
        let off = line.find("]: ").unwrap() as u64 + 3;
        assert!(st
            .feed(&app(41, "sshd", ssh::SERVER_LINE, off, line, S), S)
            .is_empty());
        let end = "<38>Nov 21 23:41:42 sshd[41]: Connection closed by authenticating user root 10.0.0.1 port 5 [preauth]\n";
        let off = end.find("]: ").unwrap() as u64 + 3;
        let out = st.feed(&app(41, "sshd", ssh::SERVER_LINE, off, end, S), S);
        assert_eq!(out[0].cause, Cause::ServerKeyUnknown);
        assert!(
            out[0]
                .evidence
                .iter()
                .any(|e| e.contains("ED25519 SHA256:abc")),
            "{:?}",
            out[0].evidence
        );
    }

    #[test]
    fn unknown_key_at_info_level_and_accepted_logins() {
        let mut st = State::default();
        let out = sshd(
            &mut st,
            50,
            "Connection closed by authenticating user git 192.0.2.9 port 1 [preauth]",
            S,
        );
        assert_eq!(out[0].cause, Cause::ServerKeyUnknown);
        assert!(out[0]
            .evidence
            .iter()
            .any(|e| e.contains("LogLevel VERBOSE")));
        // A good key: no failure, whatever came before.
        assert!(sshd(
            &mut st,
            51,
            "Failed publickey for root from 10.0.0.1 port 6 ssh2: RSA SHA256:x",
            S
        )
        .is_empty());
        assert!(sshd(
            &mut st,
            51,
            "Accepted publickey for root from 10.0.0.1 port 6 ssh2: ED25519 SHA256:y",
            S
        )
        .is_empty());
        assert!(sshd(
            &mut st,
            51,
            "Disconnected from user root 10.0.0.1 port 6",
            S
        )
        .is_empty());
        assert!(st.tick(100 * S).is_empty());
        // A port scanner's connection never authenticated anyone: not #030.
        assert!(sshd(
            &mut st,
            52,
            "Connection closed by 10.0.0.1 port 7 [preauth]",
            S
        )
        .is_empty());
    }

    #[test]
    fn not_allowed_invalid_and_too_many() {
        let mut st = State::default();
        sshd(
            &mut st,
            60,
            "User bob from 10.0.0.1 not allowed because not listed in AllowUsers",
            S,
        );
        let out = sshd(
            &mut st,
            60,
            "Connection closed by invalid user bob 10.0.0.1 port 9 [preauth]",
            S,
        );
        assert_eq!(out[0].cause, Cause::ServerUserNotAllowed);
        assert!(out[0].summary.contains("AllowUsers"));
        sshd(&mut st, 61, "Invalid user nobody from 10.0.0.1 port 10", S);
        let out = sshd(
            &mut st,
            61,
            "Disconnected from invalid user nobody 10.0.0.1 port 10 [preauth]",
            S,
        );
        assert_eq!(out[0].cause, Cause::ServerInvalidUser);
        sshd(&mut st, 62, "error: maximum authentication attempts exceeded for root from 10.0.0.1 port 11 ssh2 [preauth]", S);
        let out = sshd(&mut st, 62, "Disconnecting authenticating user root 10.0.0.1 port 11: Too many authentication failures [preauth]", S);
        assert_eq!(out[0].cause, Cause::ServerKeyUnknown);
        assert!(out[0].evidence.iter().any(|e| e.contains("MaxAuthTries")));
    }

    #[test]
    fn a_reason_without_an_end_is_reported_by_tick() {
        let mut st = State::default();
        sshd(
            &mut st,
            70,
            "Authentication refused: bad ownership or modes for directory /home/x",
            S,
        );
        assert!(st.tick(S + SERVER_WAIT_NS - 1).is_empty());
        let out = st.tick(S + SERVER_WAIT_NS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cause, Cause::ServerBadModes);
        assert!(st.tick(S + 2 * SERVER_WAIT_NS).is_empty());
    }

    #[test]
    fn identity_files() {
        assert_eq!(
            identity_file("/root/.ssh/id_rsa.pub").as_deref(),
            Some("/root/.ssh/id_rsa")
        );
        assert_eq!(identity_file("/root/.ssh/known_hosts"), None);
        assert_eq!(identity_file("/root/.ssh/known_hosts2"), None);
        assert_eq!(identity_file("k-cert.pub").as_deref(), Some("k"));
    }
}
