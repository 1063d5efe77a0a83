//! The checklist a diagnosis fills: each rung's state, the ladder order, the verdict of the
//! rung that broke, and the walk that holds them for one address; `join`, for the address
//! lists in its lines.

use std::net::IpAddr;

use serde::Serialize;

use crate::failure::Failure;
use crate::ladder::{Cause, Code, Layer};

/// A rung's state in the checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    /// Passed, with something the operator should know.
    Warning,
    Failed,
    /// Not checked: a lower rung failed, or it does not apply.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub rung: Layer,
    pub status: Status,
    pub summary: String,
    pub evidence: Vec<String>,
}

/// The ladder order.
pub(super) const ORDER: [Layer; 6] = [
    Layer::Link,
    Layer::Address,
    Layer::Route,
    Layer::Firewall,
    Layer::Dns,
    Layer::Application,
];

/// Why the target is not reachable.
#[derive(Clone)]
pub(super) struct Verdict {
    pub(super) code: Code,
    pub(super) cause: Cause,
    /// The rung that broke.
    pub(super) rung: Layer,
    pub(super) summary: String,
    pub(super) evidence: Vec<String>,
    pub(super) next: Vec<String>,
    /// The kernel's classified failure, when the probe made one (rendered as `watch` does).
    pub(super) failure: Option<Failure>,
}

#[derive(Clone)]
pub(super) struct Walk {
    pub(super) checks: Vec<Check>,
    pub(super) verdict: Option<Verdict>,
}

impl Walk {
    pub(super) fn new() -> Self {
        Walk {
            checks: ORDER
                .iter()
                .map(|&rung| Check {
                    rung,
                    status: Status::Skipped,
                    summary: "not checked: a lower rung failed".into(),
                    evidence: Vec::new(),
                })
                .collect(),
            verdict: None,
        }
    }

    pub(super) fn set(
        &mut self,
        rung: Layer,
        status: Status,
        summary: String,
        evidence: Vec<String>,
    ) {
        if let Some(c) = self.checks.iter_mut().find(|c| c.rung == rung) {
            *c = Check {
                rung,
                status,
                summary,
                evidence,
            };
        }
    }

    pub(super) fn get(&mut self, rung: Layer) -> &mut Check {
        self.checks
            .iter_mut()
            .find(|c| c.rung == rung)
            .expect("every rung is in the walk")
    }

    /// Marks `rung` failed with the verdict's words, and keeps the verdict.
    pub(super) fn fail(&mut self, v: Verdict) {
        let mut evidence = v.evidence.clone();
        let c = self.get(v.rung);
        if c.status != Status::Skipped {
            // The static reading passed; the connection proved otherwise. Keep both.
            let before = std::iter::once(format!("before the connection: {}", c.summary));
            evidence.splice(0..0, before.chain(c.evidence.iter().cloned()));
        }
        self.set(v.rung, Status::Failed, v.summary.clone(), evidence);
        self.verdict = Some(v);
    }
}

pub(super) fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_a_passed_reading_keeps_that_reading() {
        let mut walk = Walk::new();
        walk.set(
            Layer::Address,
            Status::Warning,
            "eth0 has 10.0.0.1/24".into(),
            vec!["local ports: ...".into()],
        );
        walk.fail(Verdict {
            code: Code::TimeWait,
            cause: Cause::PortsExhausted,
            rung: Layer::Address,
            summary: "no free local port".into(),
            evidence: vec!["connect() returned EADDRNOTAVAIL".into()],
            next: Vec::new(),
            failure: None,
        });
        let c = walk.get(Layer::Address);
        assert_eq!(c.status, Status::Failed);
        assert_eq!(
            c.evidence,
            [
                "before the connection: eth0 has 10.0.0.1/24",
                "local ports: ...",
                "connect() returned EADDRNOTAVAIL"
            ]
        );
    }
}
