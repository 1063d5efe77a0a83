//! `watch` filters: repeated values of one filter are alternatives, different filters all apply.
use std::os::unix::fs::MetadataExt as _;

use anyhow::{Context as _, Result};

use crate::classify::Failure;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    pub netns: Vec<u64>,
    pub codes: Vec<u16>,
}

impl Filter {
    pub fn new(
        pids: &[u32],
        comms: &[String],
        ports: &[u16],
        netns: &[String],
        codes: &[String],
    ) -> Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            comms: comms.to_vec(),
            ports: ports.to_vec(),
            netns: netns
                .iter()
                .map(|n| netns_inode(n))
                .collect::<Result<_>>()?,
            codes: codes
                .iter()
                .map(|c| crate::ladder::parse_code(c).map_err(anyhow::Error::msg))
                .collect::<Result<_>>()?,
        })
    }

    pub fn matches(&self, f: &Failure) -> bool {
        fn any<T: PartialEq>(set: &[T], v: impl Fn(&T) -> bool) -> bool {
            set.is_empty() || set.iter().any(v)
        }
        any(&self.pids, |p| *p == f.proc.pid)
            && any(&self.comms, |c| *c == f.proc.comm)
            && any(&self.ports, |p| {
                f.dst.map(|d| d.port()) == Some(*p) || f.src.map(|s| s.port()) == Some(*p)
            })
            && any(&self.netns, |n| *n == u64::from(f.proc.netns))
            && any(&self.codes, |c| *c == f.code)
    }
}

/// A namespace given as an inode number, a name under /run/netns, or a path.
fn netns_inode(spec: &str) -> Result<u64> {
    if let Ok(n) = spec.parse::<u64>() {
        return Ok(n);
    }
    let path = if spec.contains('/') {
        spec.to_owned()
    } else {
        format!("/run/netns/{spec}")
    };
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("--netns {spec}: no network namespace at {path}"))?;
    Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::{Lookup, Proc},
        ladder::Layer,
    };

    fn failure() -> Failure {
        Failure {
            code: 21,
            cause: "no_listener",
            layer: Layer::Application,
            errno: Some(111),
            proc: Proc {
                pid: 42,
                tid: 42,
                comm: "curl".into(),
                cgroup_id: 1,
                netns: 4026531840,
            },
            src: Some("127.0.0.1:50000".parse().unwrap()),
            dst: Some("127.0.0.1:8080".parse().unwrap()),
            summary: String::new(),
            evidence: vec![],
            duration_ns: None,
            ts_ns: 0,
            count: 1,
            lookup: Lookup::None,
            evidence_netns: 4026531840,
            firewall: Default::default(),
            firewall_rule: None,
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(Filter::default().matches(&failure()));
    }

    #[test]
    fn filters_combine() {
        let f = Filter::new(
            &[42],
            &["curl".into()],
            &[8080],
            &["4026531840".into()],
            &["021".into()],
        )
        .unwrap();
        assert!(f.matches(&failure()));
        let f = Filter::new(&[], &[], &[50000], &[], &["refused".into()]).unwrap();
        assert!(f.matches(&failure()), "source port and slug match");
        let f = Filter::new(&[1, 2], &[], &[], &[], &[]).unwrap();
        assert!(!f.matches(&failure()));
        let f = Filter::new(&[], &[], &[], &[], &["23".into()]).unwrap();
        assert!(!f.matches(&failure()));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = Filter::new(&[], &[], &[], &["no-such-ns-xyz".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("no network namespace"), "{e}");
        assert!(Filter::new(&[], &[], &[], &[], &["999".into()]).is_err());
    }
}
