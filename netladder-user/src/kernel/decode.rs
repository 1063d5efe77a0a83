//! Raw ring-buffer records -> classifier observations: bytes to `Event`, numbers to names.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use netladder_common::{
    eflag, kind, syscall, AggKey, AppEvent, Event, Flow, ProcInfo, AF_INET, AF_INET6,
};

use zerocopy::FromBytes;

use super::kallsyms::OnDemand;
use crate::failure::{Drops, Kind, Observation, Proc};

/// Names for numbers that differ per kernel.
pub struct Names {
    pub drop_reasons: HashMap<u32, String>,
    pub kallsyms: OnDemand,
}

/// Reads one record; `None` when it is too short (never trusts the kernel blindly).
pub fn parse(bytes: &[u8]) -> Option<Event> {
    Event::read_from_prefix(bytes).ok().map(|(e, _)| e)
}

/// One ring-buffer record to an observation: an [`Event`] or, by its kind, an [`AppEvent`].
pub fn record(bytes: &[u8], names: &Names) -> Option<Observation> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    if kind::is_app(kind) {
        observe_app(&parse_app(bytes)?)
    } else {
        observe(&parse(bytes)?, names)
    }
}

/// Reads one application record; `None` when it is too short.
pub fn parse_app(bytes: &[u8]) -> Option<AppEvent> {
    AppEvent::read_from_prefix(bytes).ok().map(|(e, _)| e)
}

/// An application record: either end of its flow may be unknown (family 0).
pub fn observe_app(e: &AppEvent) -> Option<Observation> {
    let text_len = (e.text_len as usize).min(e.text.len());
    let (src, dst) = match endpoints(&e.flow) {
        Some((s, d)) => (
            (!s.ip().is_unspecified() || s.port() != 0).then_some(s),
            (!d.ip().is_unspecified() || d.port() != 0).then_some(d),
        ),
        None => (None, None),
    };
    Some(Observation {
        kind: Kind::App {
            kind: e.kind,
            code: e.code,
            aux: e.aux,
            text: e.text[..text_len].to_vec(),
        },
        ts_ns: e.ts_ns,
        sk: 0,
        proc: proc(&e.proc),
        src,
        dst,
        err: 0,
        syn_retrans: 0,
        flags: 0,
        duration_ns: None,
        drops: Drops::default(),
        icmp: None,
        agg: None,
    })
}

fn proc(p: &ProcInfo) -> Proc {
    Proc {
        pid: p.pid,
        tid: p.tid,
        comm: comm(&p.comm),
        cgroup_id: p.cgroup_id,
        netns: p.netns,
    }
}

pub fn observe(e: &Event, names: &Names) -> Option<Observation> {
    let kind = match e.kind {
        kind::CONN_FAILED => Kind::Conn { verdict: e.verdict },
        kind::SYSCALL_FAILED => Kind::Syscall {
            call: match e.verdict {
                syscall::CONNECT => "connect",
                syscall::BIND => "bind",
                syscall::LISTEN => "listen",
                syscall::SENDTO => "sendto",
                syscall::SENDMSG => "sendmsg",
                syscall::SEND => "send",
                _ => return None,
            },
        },
        kind::NEIGH_FAILED => Kind::Neighbour {
            ifindex: e.drop_ifindex,
            netns: e.drop_netns,
        },
        _ => return None,
    };
    let is_conn = e.kind == kind::CONN_FAILED;
    let local_end = matches!(e.verdict, syscall::BIND | syscall::LISTEN);
    let (src, dst) = match (endpoints(&e.flow), e.verdict) {
        (Some((s, d)), _) if is_conn => (Some(s), Some(d)),
        (Some((s, _)), _) if local_end => (Some(s), None),
        (Some((_, d)), _) => (None, Some(d)),
        // listen() on a socket whose bind was not seen: the port is unknown.
        (None, syscall::LISTEN) if !is_conn => (None, None),
        _ => return None,
    };
    let has_drop_location = e.nf_drops + e.other_drops > 0 && e.drop_location != 0;
    Some(Observation {
        kind,
        ts_ns: e.ts_ns,
        sk: e.sk,
        proc: proc(&e.proc),
        src,
        dst,
        err: e.err.abs(),
        syn_retrans: e.syn_retrans,
        flags: e.flags,
        duration_ns: (is_conn && e.start_ns != 0).then(|| e.ts_ns.saturating_sub(e.start_ns)),
        drops: Drops {
            netfilter: e.nf_drops,
            no_socket: e.nosock_drops,
            other: e.other_drops,
            last_reason: (e.nf_drops + e.nosock_drops + e.other_drops > 0)
                .then(|| names.drop_reasons.get(&e.last_drop_reason).cloned())
                .flatten(),
            location: has_drop_location
                .then(|| names.kallsyms.get().symbolize(e.drop_location))
                .flatten(),
            outgoing: e.flags & eflag::DROP_OUTGOING != 0,
            incoming: e.flags & eflag::DROP_INCOMING != 0,
            ifindex: e.drop_ifindex,
            netns: e.drop_netns,
        },
        icmp: (is_conn && e.icmp_type != 0).then(|| {
            let from = match e.flow.family {
                AF_INET6 => IpAddr::V6(Ipv6Addr::from(e.icmp_from)),
                _ => IpAddr::V4(Ipv4Addr::new(
                    e.icmp_from[0],
                    e.icmp_from[1],
                    e.icmp_from[2],
                    e.icmp_from[3],
                )),
            };
            (from, e.icmp_type, e.icmp_code)
        }),
        agg: matches!(e.kind, kind::CONN_FAILED | kind::SYSCALL_FAILED).then(|| AggKey::of(e, 0)),
    })
}

fn endpoints(f: &Flow) -> Option<(SocketAddr, SocketAddr)> {
    let ip = |a: &[u8; 16]| -> Option<IpAddr> {
        match f.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
            _ => None,
        }
    };
    Some((
        SocketAddr::new(ip(&f.saddr)?, f.sport),
        SocketAddr::new(ip(&f.daddr)?, f.dport),
    ))
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netladder_common::{verdict, APP_TEXT_LEN};
    use zerocopy::IntoBytes;

    fn names() -> Names {
        Names {
            drop_reasons: HashMap::from([(12, "NETFILTER_DROP".to_owned())]),
            kallsyms: OnDemand::with(super::super::kallsyms::Kallsyms::parse(
                "ffffffff81100400 T nft_do_chain\n",
            )),
        }
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(parse(&[0u8; 10]).is_none());
        assert!(record(&[0u8; 3], &names()).is_none());
        let mut app = [0u8; 100];
        app[..4].copy_from_slice(&kind::DNS_ANSWER.to_ne_bytes());
        assert!(record(&app, &names()).is_none(), "shorter than an AppEvent");
    }

    #[test]
    fn records_are_read_at_any_alignment() {
        let e = Event {
            kind: kind::CONN_FAILED,
            ts_ns: 7,
            drop_location: 0xffffffff81100410,
            ..Event::default()
        };
        let mut bytes = vec![0u8; 1];
        bytes.extend_from_slice(e.as_bytes());
        bytes.extend_from_slice(&[0xaa; 8]);
        assert_eq!(
            parse(&bytes[1..]),
            Some(e),
            "odd address, trailing bytes ignored"
        );
        assert_eq!(parse(&bytes[1..1 + std::mem::size_of::<Event>() - 1]), None);
    }

    #[test]
    fn application_records_keep_their_text_within_bounds() {
        let mut e = AppEvent {
            kind: kind::DNS_ANSWER,
            code: 3,
            text_len: 9999,
            ..AppEvent::default()
        };
        e.flow.family = AF_INET;
        e.flow.daddr[..4].copy_from_slice(&[10, 0, 0, 53]);
        e.flow.dport = 53;
        e.text[..3].copy_from_slice(b"abc");
        let o = record(e.as_bytes(), &names()).unwrap();
        let Kind::App {
            kind, code, text, ..
        } = o.kind
        else {
            panic!("not an application observation: {o:?}");
        };
        assert_eq!(
            (kind, code, text.len()),
            (kind::DNS_ANSWER, 3, APP_TEXT_LEN)
        );
        assert_eq!(&text[..3], b"abc");
        assert_eq!(o.src, None, "unknown local end");
        assert_eq!(o.dst, Some("10.0.0.53:53".parse().unwrap()));
    }

    #[test]
    fn decodes_a_v4_connection_failure() {
        let mut e = Event {
            kind: kind::CONN_FAILED,
            verdict: verdict::TIMEOUT_LOCAL_DROP,
            ts_ns: 5_000,
            start_ns: 1_000,
            err: 110,
            nf_drops: 2,
            last_drop_reason: 12,
            drop_location: 0xffffffff81100410,
            flags: eflag::DROP_OUTGOING,
            ..Event::default()
        };
        e.flow.family = AF_INET;
        e.flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.flow.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        e.flow.sport = 40000;
        e.flow.dport = 443;
        e.proc.comm[..4].copy_from_slice(b"curl");
        let o = observe(&parse(e.as_bytes()).unwrap(), &names()).unwrap();
        assert_eq!(o.dst, Some("10.0.0.2:443".parse().unwrap()));
        assert_eq!(o.src, Some("10.0.0.1:40000".parse().unwrap()));
        assert_eq!(o.proc.comm, "curl");
        assert_eq!(o.duration_ns, Some(4_000));
        assert_eq!(o.drops.location.as_deref(), Some("nft_do_chain+0x10"));
        assert_eq!(o.drops.last_reason.as_deref(), Some("NETFILTER_DROP"));
        assert!(o.drops.outgoing && !o.drops.incoming);
    }

    #[test]
    fn bind_failures_carry_the_local_address() {
        let mut e = Event {
            kind: kind::SYSCALL_FAILED,
            verdict: syscall::BIND,
            err: -98,
            ..Event::default()
        };
        e.flow.family = AF_INET;
        e.flow.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.flow.sport = 9100;
        let o = observe(&e, &names()).unwrap();
        assert_eq!(o.kind, Kind::Syscall { call: "bind" });
        assert_eq!(o.src, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!((o.dst, o.err), (None, 98));
        let unknown = Event {
            verdict: syscall::LISTEN,
            flow: Flow::default(),
            ..e
        };
        let o = observe(&unknown, &names()).unwrap();
        assert_eq!((o.src, o.dst), (None, None));
    }

    #[test]
    fn unknown_family_or_kind_is_ignored() {
        let e = Event {
            kind: kind::CONN_FAILED,
            ..Event::default()
        };
        assert!(observe(&e, &names()).is_none(), "family 0");
        let mut e = Event {
            kind: 99,
            ..Event::default()
        };
        e.flow.family = AF_INET;
        assert!(observe(&e, &names()).is_none());
    }
}
