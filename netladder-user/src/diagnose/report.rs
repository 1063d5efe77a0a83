//! What a diagnosis prints: the exit statuses, each address tried in a line, and the report
//! (the checklist, the addresses, the verdict and next steps) as text or JSON.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::checklist::{join, Status, Walk};
use crate::{ladder, output};

/// Exit statuses (also in `cli::DIAGNOSE_EXIT` and the README).
pub const EXIT_REACHABLE: i32 = 0;
pub const EXIT_RUNG_FAILED: i32 = 3;

/// At most this many of the addresses a name resolves to are tried, in the resolver's order
/// (each may cost up to `--timeout`).
pub const MAX_ADDRESSES: usize = 4;

/// One address tried: the rungs walked toward it.
pub(super) struct Attempt {
    pub(super) dst: SocketAddr,
    pub(super) walk: Walk,
}

impl Attempt {
    /// "10.0.0.2:80: #021 Connection refused at the application rung: no listener ...".
    pub(super) fn line(&self) -> String {
        match &self.walk.verdict {
            None => format!(
                "{}: reachable ({})",
                self.dst,
                self.walk.checks.last().map_or("", |c| c.summary.as_str())
            ),
            Some(v) => format!(
                "{}: #{} {} at the {} rung: {}",
                self.dst,
                ladder::id(v.code),
                ladder::rung(v.code).title,
                v.rung,
                v.summary
            ),
        }
    }

    fn json(&self) -> Value {
        match &self.walk.verdict {
            None => json!({"address": self.dst.to_string(), "reachable": true}),
            Some(v) => json!({
                "address": self.dst.to_string(),
                "reachable": false,
                "code": ladder::id(v.code),
                "layer": v.rung,
                "cause": v.cause,
                "summary": v.summary,
            }),
        }
    }
}

pub(super) struct Report<'a> {
    pub(super) target: &'a str,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
    /// What the name resolved to (the address itself for an address).
    pub(super) addresses: Vec<IpAddr>,
    /// Where the checklist's rungs were walked toward.
    pub(super) checked: Option<SocketAddr>,
    /// Every address tried, in order (the checklist's one included).
    pub(super) tried: Vec<Attempt>,
    /// Addresses beyond `MAX_ADDRESSES`.
    pub(super) not_tried: Vec<IpAddr>,
    pub(super) walk: Walk,
}

impl Report<'_> {
    pub(super) fn json(&self) -> Value {
        let mut verdict = match &self.walk.verdict {
            None => json!({"reachable": true}),
            Some(v) => {
                let mut o = json!({
                    "reachable": false,
                    "code": ladder::id(v.code),
                    "title": ladder::rung(v.code).title,
                    "layer": v.rung,
                    "cause": v.cause,
                    "summary": v.summary,
                    "evidence": v.evidence,
                    "next": v.next,
                });
                if let Some(f) = &v.failure {
                    // The kernel's failure exactly as a `watch --json` line carries it.
                    o["failure"] = output::failure_json(f, &v.next, SystemTime::now());
                    if let Some(fw) = o["failure"].get("firewall").cloned() {
                        o["firewall"] = fw;
                    }
                }
                o
            }
        };
        let addrs = |ok: bool| -> Vec<String> {
            self.tried
                .iter()
                .filter(|a| a.walk.verdict.is_none() == ok)
                .map(|a| a.dst.to_string())
                .collect()
        };
        verdict["worked"] = json!(addrs(true));
        verdict["failed"] = json!(addrs(false));
        json!({
            "type": "diagnosis",
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "target": self.target,
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "addresses": self.addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            "checked": self.checked.map(|d| d.to_string()),
            "tried": self.tried.iter().map(Attempt::json).collect::<Vec<_>>(),
            "not_tried": self.not_tried.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            "rungs": self.walk.checks,
            "verdict": verdict,
            "exit_code": if self.walk.verdict.is_some() { EXIT_RUNG_FAILED } else { EXIT_REACHABLE },
        })
    }

    pub(super) fn text(&self, color: bool) -> String {
        let paint = |s: &str, code: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_owned()
            }
        };
        let mut out = format!(
            "netladder diagnose {} (port {}{})\n",
            self.host,
            self.port,
            if self.tls { ", TLS" } else { "" }
        );
        if self.tried.len() > 1 {
            if let Some(d) = self.checked {
                out += &format!(
                    "{} resolves to {} addresses, each tried; the rungs below are toward {d}\n",
                    self.host,
                    self.addresses.len()
                );
            }
        }
        for (i, c) in self.walk.checks.iter().enumerate() {
            let mark = match c.status {
                Status::Passed => paint("PASS", "32"),
                Status::Warning => paint("WARN", "33"),
                Status::Failed => paint("FAIL", "31;1"),
                Status::Skipped => paint("skip", "2"),
            };
            out += &format!("{}. {:<12} {mark}  {}\n", i + 1, c.rung.as_str(), c.summary);
            for e in &c.evidence {
                out += &format!("     - {e}\n");
            }
        }
        if self.tried.len() > 1 || !self.not_tried.is_empty() {
            out += "addresses:\n";
            for a in &self.tried {
                let mark = if a.walk.verdict.is_none() {
                    paint("PASS", "32")
                } else {
                    paint("FAIL", "31;1")
                };
                out += &format!("  {mark}  {}\n", a.line());
            }
            if !self.not_tried.is_empty() {
                out += &format!(
                    "  not tried (at most {MAX_ADDRESSES}): {}\n",
                    join(&self.not_tried)
                );
            }
        }
        let failed: Vec<String> = self
            .tried
            .iter()
            .filter(|a| a.walk.verdict.is_some())
            .map(|a| a.dst.to_string())
            .collect();
        match &self.walk.verdict {
            None if !failed.is_empty() => {
                let worked: Vec<String> = self
                    .tried
                    .iter()
                    .filter(|a| a.walk.verdict.is_none())
                    .map(|a| a.dst.to_string())
                    .collect();
                out += &format!(
                    "verdict: {} {} is reachable through {}, but not through {}\n",
                    paint("WARN", "33"),
                    self.host,
                    worked.join(", "),
                    failed.join(", ")
                );
            }
            None => out += &format!("verdict: {} is reachable\n", self.host),
            Some(v) => {
                let title = ladder::rung(v.code).title;
                out += &format!(
                    "verdict: {} #{} {title} at the {} rung: {}\n",
                    paint("FAIL", "31;1"),
                    ladder::id(v.code),
                    v.rung,
                    v.summary
                );
                if let Some(fw) = v.failure.as_ref().and_then(|f| f.firewall_rule.as_ref()) {
                    out += &format!(
                        "rule: {} {} {} chain {} {}: {} ({})\n",
                        fw.backend, fw.family, fw.table, fw.chain, fw.rule, fw.text, fw.certainty
                    );
                }
                if !v.next.is_empty() {
                    out += "next:\n";
                    for n in &v.next {
                        out += &format!("  $ {n}\n");
                    }
                }
                out += &format!("see also: netladder explain {}\n", ladder::id(v.code));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::checklist::{Verdict, ORDER};
    use super::*;
    use crate::ladder::{Cause, Code, Layer};

    fn attempt(dst: &str, failed: Option<Code>) -> Attempt {
        let mut walk = Walk::new();
        for rung in ORDER {
            walk.set(rung, Status::Passed, format!("{rung} ok"), Vec::new());
        }
        if let Some(code) = failed {
            walk.fail(Verdict {
                code,
                cause: Cause::NoListener,
                rung: Layer::Application,
                summary: "no listener".into(),
                evidence: Vec::new(),
                next: Vec::new(),
                failure: None,
            });
        }
        Attempt {
            dst: dst.parse().unwrap(),
            walk,
        }
    }

    fn report(tried: Vec<Attempt>, walk: Walk) -> Report<'static> {
        Report {
            target: "two.test:80",
            host: "two.test".into(),
            port: 80,
            tls: false,
            addresses: tried.iter().map(|a| a.dst.ip()).collect(),
            checked: tried.first().map(|a| a.dst),
            tried,
            not_tried: vec!["10.0.0.9".parse().unwrap()],
            walk,
        }
    }

    #[test]
    fn several_addresses_are_named_in_the_verdict() {
        let walk = attempt("10.0.0.3:80", None).walk;
        let r = report(
            vec![
                attempt("10.0.0.2:80", Some(Code::Refused)),
                attempt("10.0.0.3:80", None),
            ],
            walk,
        );
        let j = r.json();
        assert_eq!(j["verdict"]["reachable"], true);
        assert_eq!(j["verdict"]["worked"], json!(["10.0.0.3:80"]));
        assert_eq!(j["verdict"]["failed"], json!(["10.0.0.2:80"]));
        assert_eq!(j["tried"][0]["code"], "021");
        assert_eq!(
            j["tried"][1],
            json!({"address": "10.0.0.3:80", "reachable": true})
        );
        assert_eq!(j["not_tried"], json!(["10.0.0.9"]));
        assert_eq!(j["exit_code"], EXIT_REACHABLE);
        let text = r.text(false);
        assert!(
            text.contains(
                "verdict: WARN two.test is reachable through 10.0.0.3:80, but not through \
                 10.0.0.2:80\n"
            ),
            "{text}"
        );
        assert!(text.contains("  FAIL  10.0.0.2:80: #021 "), "{text}");
        assert!(
            text.contains("  PASS  10.0.0.3:80: reachable (application ok)"),
            "{text}"
        );
        assert!(text.contains("not tried (at most 4): 10.0.0.9"), "{text}");
    }
}
