//! Entry points for the fuzz targets in fuzz/ (cargo-fuzz): each feeds arbitrary bytes to one
//! parser of input netladder does not control (kernel replies and events, files, the command
//! line) and must return without panicking, whatever the bytes.
use std::net::SocketAddr;

use crate::enrich::{self, firewall::Packet};

fn packet() -> Packet {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("a valid address");
    Packet {
        l4proto: 6,
        src: addr("10.0.0.1:40000"),
        dst: addr("10.0.0.2:443"),
        iif: Some("eth0".into()),
        oif: None,
    }
}

/// An nf_tables dump reply (tables, chains, rules in any order), decoded and replayed.
pub fn nft_dump(data: &[u8]) {
    let _ = enrich::nft::rules_from_datagram(data, &packet());
}

/// An NFNLGRP_NFTRACE datagram (`--trace-firewall`).
pub fn nft_trace(data: &[u8]) {
    enrich::nftrace::read_datagram(data);
}

/// `iptables-legacy-save -c` output, both families.
pub fn iptables_save(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for family in [enrich::iptables::IPV4, enrich::iptables::IPV6] {
        let _ = enrich::iptables::parse_save(&text, family, &packet());
    }
}

/// A DNS response (the id it must carry is taken from the bytes themselves).
pub fn dns_response(data: &[u8]) {
    let id = data
        .first()
        .map_or(0, |b| u16::from(*b) << 8 | u16::from(*b));
    let _ = enrich::dns::parse_response(data, id);
    let _ = enrich::dns::parse_response(data, 0);
}

/// The text of a DNS_ANSWER / RESOLVER event (`kind::DNS_ANSWER`): the first byte chooses the
/// kind, the flags and the code, the rest is the text. Decoded as the question's name (whole
/// and cut), then fed to the #024 state machine in both kinds, ticked past every deadline.
pub fn dns_event(data: &[u8]) {
    use netladder_common::{dns, kind};
    let Some((&head, text)) = data.split_first() else {
        return;
    };
    let _ = crate::dnswire::wire_name(text, false);
    let _ = crate::dnswire::wire_name(text, true);
    let mut e = netladder_common::AppEvent {
        kind: if head & 1 == 0 {
            kind::DNS_ANSWER
        } else {
            kind::RESOLVER
        },
        code: i32::from(head >> 4) - 8,
        ts_ns: 1_000_000_000,
        aux: u64::from(head) << 16
            | if head & 2 != 0 {
                dns::ANSWER_IN_RESOLVER
            } else {
                0
            }
            | if head & 4 != 0 {
                dns::ANSWER_NAME_CUT
            } else {
                0
            }
            | if head & 8 != 0 {
                dns::ANSWER_NO_QUESTION
            } else {
                0
            },
        text_len: text.len() as u32,
        ..Default::default()
    };
    e.proc.pid = 7;
    e.flow.family = netladder_common::AF_INET;
    e.flow.dport = 53;
    let n = text.len().min(e.text.len());
    e.text[..n].copy_from_slice(&text[..n]);
    let Some(obs) = crate::kernel::decode::observe_app(&e) else {
        return;
    };
    let mut c = crate::classify::Classifier::new();
    let _ = c.feed(obs, 1_000_000_000);
    let _ = c.tick(u64::MAX / 4);
}

/// /etc/resolv.conf and /etc/hosts text.
pub fn resolver_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = enrich::dns::parse_resolv_conf(&text);
    let _ = enrich::dns::hosts_entries(&text, "example.test");
}

/// A cgroup path and /proc/self/mountinfo text (container attribution).
pub fn cgroup(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = enrich::container::parse(&text);
    let _ = crate::mountinfo::cgroup2_root(&text);
}

/// One ring-buffer record from the kernel.
pub fn kernel_event(data: &[u8]) {
    let names = crate::kernel::decode::Names {
        drop_reasons: Default::default(),
        kallsyms: crate::kernel::kallsyms::OnDemand::with(
            crate::kernel::kallsyms::Kallsyms::empty(),
        ),
    };
    let _ = crate::kernel::decode::record(data, &names);
}

/// Command-line values: `diagnose` targets and `--code` filters.
pub fn cli_values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::diagnose::target::parse(&text, 443);
    let codes: Vec<String> = text.split(',').map(str::to_owned).collect();
    let _ = crate::filter::Filter::new(&[], &[], &[], &[], &codes);
}
