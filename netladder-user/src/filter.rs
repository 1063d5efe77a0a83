//! `watch` filters: repeated values of one filter are alternatives, different filters all apply.
use std::os::unix::fs::MetadataExt as _;

use anyhow::{Context as _, Result};

use crate::{enrich::container::Workload, failure::Failure};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    pub netns: Vec<u64>,
    pub codes: Vec<crate::ladder::Code>,
    /// `--container`: ids (or id prefixes of 12+ digits) or names.
    pub containers: Vec<String>,
    /// `--pod`: NAME, NAMESPACE/NAME or UID.
    pub pods: Vec<String>,
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
            ..Self::default()
        })
    }

    /// Adds `--container` and `--pod`; a container id prefix shorter than 12 digits is refused
    /// (it would match by accident).
    pub fn with_workloads(mut self, containers: &[String], pods: &[String]) -> Result<Self> {
        for c in containers {
            if c.is_empty() || (c.len() < 12 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
                anyhow::bail!(
                    "--container {c:?}: give a container name, or at least 12 digits of its id"
                );
            }
        }
        if let Some(p) = pods.iter().find(|p| p.is_empty() || p.ends_with('/')) {
            anyhow::bail!("--pod {p:?}: give NAME, NAMESPACE/NAME or the pod UID");
        }
        self.containers = containers.to_vec();
        self.pods = pods.to_vec();
        Ok(self)
    }

    /// Whether any filter needs the failure's container or pod.
    pub fn needs_workload(&self) -> bool {
        !self.containers.is_empty() || !self.pods.is_empty()
    }

    /// The `--container` and `--pod` filters, against what the failure's cgroup says.
    pub fn matches_workload(&self, w: Option<&Workload>) -> bool {
        let container = w.and_then(|w| w.container.as_ref());
        let pod = w.and_then(|w| w.pod.as_ref());
        let container_ok = self.containers.is_empty()
            || container.is_some_and(|c| {
                self.containers.iter().any(|want| {
                    c.name.as_deref() == Some(want.as_str())
                        || (want.len() >= 12 && c.id.starts_with(want.as_str()))
                })
            });
        let pod_ok = self.pods.is_empty()
            || pod.is_some_and(|p| {
                self.pods.iter().any(|want| {
                    *want == p.uid
                        || p.name.as_deref() == Some(want.as_str())
                        || match (&p.namespace, &p.name) {
                            (Some(ns), Some(name)) => *want == format!("{ns}/{name}"),
                            _ => false,
                        }
                })
            });
        container_ok && pod_ok
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
        failure::Proc,
        ladder::{Cause, Code, Layer},
    };

    fn failure() -> Failure {
        Failure {
            errno: Some(111),
            src: Some("127.0.0.1:50000".parse().unwrap()),
            dst: Some("127.0.0.1:8080".parse().unwrap()),
            records: 0,
            ..Failure::new(
                Code::Refused,
                Cause::NoListener,
                Layer::Application,
                String::new(),
                Proc::new(42, 42, "curl", 1, 4026531840),
                0,
            )
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
    fn container_and_pod_filters() {
        use crate::enrich::container::{Container, Pod};
        let id = "0bc5eac79e3ae7a0c2651f14722aa10fa333eb2325c2ca97da33aa284cda81b0";
        let w = Workload {
            cgroup: String::new(),
            container: Some(Container {
                runtime: Some("containerd"),
                id: id.into(),
                name: Some("nginx".into()),
            }),
            pod: Some(Pod {
                uid: "0b7632a2-a56e-4278-987a-22de18008dbe".into(),
                qos: "burstable",
                namespace: Some("shop".into()),
                name: Some("web-0".into()),
            }),
        };
        let f = |c: &[&str], p: &[&str]| {
            let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            Filter::default().with_workloads(&c, &p)
        };
        assert!(f(&[], &[]).unwrap().matches_workload(None), "no filter");
        assert!(f(&["0bc5eac79e3a"], &[])
            .unwrap()
            .matches_workload(Some(&w)));
        assert!(f(&[id], &[]).unwrap().matches_workload(Some(&w)));
        assert!(f(&["nginx"], &["shop/web-0"])
            .unwrap()
            .matches_workload(Some(&w)));
        assert!(f(&[], &["web-0"]).unwrap().matches_workload(Some(&w)));
        assert!(f(&[], &["0b7632a2-a56e-4278-987a-22de18008dbe"])
            .unwrap()
            .matches_workload(Some(&w)));
        assert!(!f(&["redis"], &[]).unwrap().matches_workload(Some(&w)));
        assert!(!f(&[], &["other/web-0"]).unwrap().matches_workload(Some(&w)));
        assert!(
            !f(&["nginx"], &[]).unwrap().matches_workload(None),
            "not a container"
        );
        assert!(f(&["0bc5"], &[]).is_err(), "too short an id");
        assert!(f(&[], &["shop/"]).is_err());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = Filter::new(&[], &[], &[], &["no-such-ns-xyz".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("no network namespace"), "{e}");
        assert!(Filter::new(&[], &[], &[], &[], &["999".into()]).is_err());
    }
}
