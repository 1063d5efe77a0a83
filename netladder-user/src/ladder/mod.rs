//! The ten ladder codes #021..#030: one source for `watch` (title, layer, next steps),
//! `explain` (meaning, causes, detection, confirmation) and `diagnose` (verdicts).

mod rungs;
mod steps;
mod vocab;

use serde::Serialize;

pub use steps::{next_steps, StepCtx};
pub use vocab::{Cause, Code};

/// The layer of the diagnostic ladder a failure belongs to, walked bottom-up:
/// link -> address -> route -> firewall -> DNS -> application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Link,
    Address,
    Route,
    Firewall,
    Dns,
    Application,
}

impl Layer {
    /// The lowercase name used in JSON and human output.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Address => "address",
            Layer::Route => "route",
            Layer::Firewall => "firewall",
            Layer::Dns => "dns",
            Layer::Application => "application",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rung of the ladder: everything netladder says about one failure code.
#[derive(Debug, Serialize)]
pub struct Rung {
    /// #021..#030; shown as "#021" (see [`id`]).
    pub code: Code,
    /// Short stable name, accepted wherever a code is ("refused", "no-route", ...).
    pub slug: &'static str,
    /// The error as applications print it.
    pub title: &'static str,
    /// The errno (or resolver code) the application sees, when there is one.
    pub errno: Option<&'static str>,
    /// The layer this failure usually lives in; an event may say otherwise
    /// (a firewall REJECT shows up as #021 with layer firewall).
    pub layer: Layer,
    /// What the failure means, in one or two sentences.
    pub meaning: &'static str,
    /// The usual causes, most frequent first.
    pub causes: &'static [&'static str],
    /// How netladder sees it: the kernel signals `watch` uses, or what `diagnose` checks.
    pub detection: &'static str,
}

impl Rung {
    /// The manual commands that confirm it, with placeholders in capitals (DEST, PORT, NAME...):
    /// the same steps `watch` and `diagnose` fill in with a failure's real addresses.
    pub fn confirm(&self) -> Vec<String> {
        next_steps(self.code, None, &StepCtx::default())
    }
}

/// Every rung, in code order.
pub fn all() -> &'static [Rung] {
    rungs::RUNGS
}

/// The rung for a code.
pub fn rung(code: Code) -> &'static Rung {
    all()
        .iter()
        .find(|r| r.code == code)
        .expect("every code has a rung")
}

/// The three-digit form of a code: #021 -> "021".
pub fn id(code: Code) -> String {
    code.to_string()
}

/// Parses a code as a user types it: "21", "021", "#021" or a slug such as "refused".
pub fn parse_code(s: &str) -> Result<Code, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty ladder code: {}", expected()));
    }
    let digits = t.strip_prefix('#').unwrap_or(t);
    let code = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<u16>().ok().and_then(Code::from_number)
    } else {
        all()
            .iter()
            .find(|r| r.slug.eq_ignore_ascii_case(t))
            .map(|r| r.code)
    };
    code.ok_or_else(|| format!("unknown ladder code '{t}': {}", expected()))
}

fn expected() -> String {
    let slugs: Vec<&str> = all().iter().map(|r| r.slug).collect();
    format!(
        "expected a code from #021 to #030 or one of {}",
        slugs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_complete_rung() {
        let codes: Vec<u16> = all().iter().map(|r| r.code.number()).collect();
        assert_eq!(codes, (21..=30).collect::<Vec<u16>>());
        for r in all() {
            assert!(std::ptr::eq(rung(r.code), r));
            assert!(!r.slug.is_empty() && !r.title.is_empty());
            assert!(!r.meaning.is_empty() && !r.detection.is_empty());
            assert!(!r.causes.is_empty() && !r.confirm().is_empty());
        }
        assert!(Code::from_number(20).is_none() && Code::from_number(31).is_none());
        for c in Code::ALL {
            assert_eq!(rung(c).code, c);
        }
    }

    #[test]
    fn slugs_are_unique_and_not_numeric() {
        let mut slugs: Vec<&str> = all().iter().map(|r| r.slug).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), all().len());
        assert!(slugs
            .iter()
            .all(|s| !s.starts_with(|c: char| c.is_ascii_digit())));
    }

    #[test]
    fn usual_layers() {
        assert_eq!(rung(Code::Refused).layer, Layer::Application);
        assert_eq!(rung(Code::NoRoute).layer, Layer::Route);
        assert_eq!(rung(Code::Dns).layer, Layer::Dns);
        assert_eq!(rung(Code::ArpFailed).layer, Layer::Link);
        assert_eq!(Layer::Firewall.as_str(), "firewall");
        assert_eq!(
            serde_json::to_string(&Layer::Application).unwrap(),
            "\"application\""
        );
    }

    #[test]
    fn parse_code_accepts_all_spellings() {
        for s in ["21", "021", "#021", "#21", " 021 ", "refused", "REFUSED"] {
            assert_eq!(parse_code(s), Ok(Code::Refused), "{s}");
        }
        assert_eq!(parse_code("030"), Ok(Code::SshPublickey));
        assert_eq!(parse_code("no-route"), Ok(Code::NoRoute));
        assert_eq!(parse_code("time-wait"), Ok(Code::TimeWait));
        assert_eq!(parse_code("ssh-publickey"), Ok(Code::SshPublickey));
    }

    #[test]
    fn parse_code_rejects_clearly() {
        for s in [
            "", "#", "20", "031", "#999", "+21", "-21", "21a", "refuse", "70000",
        ] {
            let err = parse_code(s).unwrap_err();
            assert!(err.contains("#021 to #030"), "{s}: {err}");
            assert!(err.contains("refused"), "{s}: {err}");
        }
        assert!(parse_code("031").unwrap_err().contains("'031'"));
    }

    #[test]
    fn ids_are_three_digits() {
        assert_eq!(id(Code::Refused), "021");
        assert_eq!(id(Code::SshPublickey), "030");
    }
}
