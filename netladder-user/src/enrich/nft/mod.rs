//! The nf_tables backend of firewall attribution.
//!
//! Reads the ruleset of the calling thread's network namespace over NETLINK_NETFILTER (dumps of
//! tables, chains and rules of every family), decodes each rule's expressions, and keeps what can
//! end a packet: drop verdicts, `reject` statements, iptables-nft REJECT targets, and base chains
//! whose policy is drop. Each kept rule is rendered close to `nft list ruleset` syntax, and its
//! match conditions are replayed on a model of the dropped packet's headers.
//!
//! Numbers come from the uapi headers linux/netlink.h, linux/netfilter/nfnetlink.h,
//! linux/netfilter/nf_tables.h and linux/netfilter/nf_tables_compat.h.
//!
//! This file reads the ruleset and keeps its terminal rules. `dump` runs the netlink dumps,
//! `expressions` decodes tables, chains, rules and their expressions, `replay` walks a rule
//! against the packet and `render` prints values as nft does.

mod dump;
mod expressions;
#[cfg(test)]
mod fixtures;
mod render;
mod replay;

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::firewall::{Action, Backend, Hook, Matches, Packet, Rule};
use super::nfnl::*;
pub(super) use dump::dump;
use dump::{no_nftables, GET_MSGS};
use expressions::*;
use replay::{analyse, family_sees, Analysis, View};

/// Tables and base chains iptables-nft creates.
const XT_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];
const XT_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// Drop/reject rules and drop policies of every nf_tables base and regular chain in this thread's
/// netns, with `matches` evaluated against `packet`. A kernel without nf_tables gives an empty
/// list; reading needs CAP_NET_ADMIN in the namespace.
pub fn terminal_rules(packet: &Packet) -> anyhow::Result<Vec<Rule>> {
    let mut socket = match Socket::new(NETLINK_NETFILTER) {
        Err(e) if e.raw_os_error().is_some_and(|c| no_nftables(c, true)) => return Ok(vec![]),
        s => s.context("cannot open a netfilter netlink socket")?,
    };
    socket
        .bind_auto()
        .context("cannot bind the netfilter netlink socket")?;
    let mut dumps = Vec::new();
    for (i, msg) in GET_MSGS.into_iter().enumerate() {
        match dump(&socket, msg, i == 0)? {
            Some(msgs) => dumps.push(msgs),
            None => return Ok(vec![]),
        }
    }
    fn parse<T>(msgs: &[NfMsg], get: u16, f: fn(u8, &[u8]) -> Option<T>) -> Vec<T> {
        let kind = get - 1;
        msgs.iter()
            .filter(|m| m.kind == kind)
            .filter_map(|m| f(m.family, &m.attrs))
            .collect()
    }
    let tables = parse(&dumps[0], GET_MSGS[0], parse_table);
    let chains = parse(&dumps[1], GET_MSGS[1], parse_chain);
    let rules = parse(&dumps[2], GET_MSGS[2], parse_rule);
    Ok(collect(&tables, &chains, &rules, packet))
}

/// The terminal rules in one datagram of dump replies (tables, chains and rules mixed), as
/// [`terminal_rules`] decodes a live dump; for the fuzz targets. Malformed input gives what
/// could be read.
pub(crate) fn rules_from_datagram(buf: &[u8], packet: &Packet) -> Vec<Rule> {
    let Ok(batch) = parse_datagram(buf) else {
        return vec![];
    };
    let of = |get: u16| batch.msgs.iter().filter(move |m| m.kind == get - 1);
    let tables: Vec<_> = of(GET_MSGS[0])
        .filter_map(|m| parse_table(m.family, &m.attrs))
        .collect();
    let chains: Vec<_> = of(GET_MSGS[1])
        .filter_map(|m| parse_chain(m.family, &m.attrs))
        .collect();
    let rules: Vec<_> = of(GET_MSGS[2])
        .filter_map(|m| parse_rule(m.family, &m.attrs))
        .collect();
    collect(&tables, &chains, &rules, packet)
}

/// The terminal rules of the decoded ruleset, chain by chain: the drop/reject rules in order,
/// then the chain's drop policy.
fn collect(tables: &[Table], chains: &[Chain], rules: &[NftRule], packet: &Packet) -> Vec<Rule> {
    let dormant: HashSet<(u8, &str)> = tables
        .iter()
        .filter(|t| t.dormant)
        .map(|t| (t.family, &*t.name))
        .collect();
    let has_xt = |r: &NftRule| r.exprs.iter().any(|e| matches!(e, Expr::Xt { .. }));
    let xt_table = |family, table| matches!(family, IPV4 | IPV6) && XT_TABLES.contains(&table);
    let mut xt_tables: HashSet<(u8, &str)> = HashSet::new();
    for c in chains.iter().filter(|c| XT_CHAINS.contains(&&*c.name)) {
        if xt_table(c.family, &*c.table) {
            xt_tables.insert((c.family, &c.table));
        }
    }
    let mut by_chain: HashMap<(u8, &str, &str), Vec<&NftRule>> = HashMap::new();
    for r in rules {
        if has_xt(r) && xt_table(r.family, &*r.table) {
            xt_tables.insert((r.family, &r.table));
        }
        by_chain
            .entry((r.family, &r.table, &r.chain))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for c in chains {
        if dormant.contains(&(c.family, &*c.table)) {
            continue;
        }
        let table_backend = match xt_tables.contains(&(c.family, &*c.table)) {
            true => Backend::IptablesNft,
            false => Backend::Nftables,
        };
        let rule = |backend, id, text, packets, action, matches| Rule {
            backend,
            family: family_name(c.family),
            table: c.table.clone(),
            chain: c.name.clone(),
            hook: c.hook.map(|(num, _)| hook(c.family, num)),
            priority: c.hook.map(|(_, prio)| prio),
            id,
            text,
            packets,
            action,
            matches,
        };
        for r in by_chain
            .get(&(c.family, &c.table, &c.name))
            .into_iter()
            .flatten()
        {
            let Analysis {
                text,
                action: Some(action),
                matches,
            } = analyse(r, packet)
            else {
                continue;
            };
            let backend = if has_xt(r) {
                Backend::IptablesNft
            } else {
                table_backend
            };
            let packets = r.exprs.iter().find_map(|e| match e {
                Expr::Counter { packets } => Some(*packets),
                _ => None,
            });
            let id = format!("handle {}", r.handle);
            out.push(rule(backend, id, text, packets, action, matches));
        }
        if c.hook.is_some() && c.policy == Some(NF_DROP as u32) {
            let matches = match family_sees(c.family, View::new(packet).v4) {
                true => Matches::Yes,
                false => Matches::No,
            };
            let (id, text) = ("policy".to_string(), "policy drop".to_string());
            out.push(rule(table_backend, id, text, None, Action::Drop, matches));
        }
    }
    out
}

fn family_name(family: u8) -> String {
    let name = match family {
        INET => "inet",
        IPV4 => "ip",
        ARP => "arp",
        NETDEV => "netdev",
        BRIDGE => "bridge",
        IPV6 => "ip6",
        other => return format!("family {other}"),
    };
    name.to_string()
}

/// A base chain's hook, numbered per family (ip, ip6, inet and bridge share the numbering;
/// inet's 5 is ingress).
fn hook(family: u8, num: u32) -> Hook {
    match (family, num) {
        (ARP, 0) => Hook::Input,
        (ARP, 1) => Hook::Output,
        (ARP, 2) => Hook::Forward,
        (ARP | NETDEV, _) => Hook::Other,
        (_, 0) => Hook::Prerouting,
        (_, 1) => Hook::Input,
        (_, 2) => Hook::Forward,
        (_, 3) => Hook::Output,
        (_, 4) => Hook::Postrouting,
        _ => Hook::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::fixtures::*;
    use super::*;

    #[test]
    fn collects_rules_and_policies() {
        let chain = |family, table: &str, name: &str, hook, policy| {
            let (table, name) = (table.to_string(), name.to_string());
            Chain {
                family,
                table,
                name,
                hook,
                policy,
            }
        };
        let chains = [
            chain(IPV4, "filter", "INPUT", Some((1, 0)), Some(0)),
            chain(INET, "fw", "sub", None, None),
            chain(INET, "off", "output", Some((3, 0)), Some(0)),
        ];
        let tables = [Table {
            family: INET,
            name: "off".into(),
            dormant: true,
        }];
        let on = |family, table: &str, chain: &str, exprs: &[Vec<u8>]| {
            let r = rule(family, exprs);
            NftRule {
                table: table.into(),
                chain: chain.into(),
                ..r
            }
        };
        let saddr = [
            payload(1, 12, 4),
            cmp(0, &[1, 2, 3, 4]),
            counter(5),
            verdict(0, ""),
        ];
        let rules = [
            on(IPV4, "filter", "INPUT", &saddr),
            on(
                INET,
                "fw",
                "sub",
                &[dport(443), vec![reject(1, 0)]].concat(),
            ),
            on(INET, "fw", "sub", &[verdict(-3, "x")]),
            on(INET, "off", "output", &[verdict(0, "")]),
        ];
        let out = collect(&tables, &chains, &rules, &v4());
        let brief: Vec<_> = out
            .iter()
            .map(|r| (r.backend, &*r.id, r.hook, r.matches))
            .collect();
        let (xt, nft, input) = (Backend::IptablesNft, Backend::Nftables, Some(Hook::Input));
        let expected = [
            (xt, "handle 7", input, Matches::No),
            (xt, "policy", input, Matches::Yes),
            (nft, "handle 7", None, Matches::Yes),
        ];
        assert_eq!(brief, expected);
        assert_eq!(
            (&*out[0].text, out[0].packets),
            ("ip saddr 1.2.3.4 counter drop", Some(5))
        );
        assert_eq!((&*out[1].text, &*out[1].family), ("policy drop", "ip"));
        assert_eq!((hook(INET, 5), hook(ARP, 1)), (Hook::Other, Hook::Output));
    }

    /// Loads a ruleset into a throwaway network namespace of a new thread, and reads it back.
    #[test]
    fn reads_a_real_ruleset() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("NL-SKIP reads_a_real_ruleset: needs root");
            return;
        }
        let rules = std::thread::spawn(|| {
            // Only this thread (and what it forks) is in the new namespace; it dies with it.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(unshared, 0, "unshare: {}", io::Error::last_os_error());
            let ruleset = "table inet nltest {\n\
                 chain input {\n\
                 type filter hook input priority 0; policy accept;\n\
                 tcp dport 443 counter drop\n\
                 ip daddr 10.9.9.9 tcp dport 9 reject with tcp reset\n\
                 ct state invalid drop comment \"bad state\"\n\
                 }\n\
                 chain output {\n\
                 type filter hook output priority 0; policy drop;\n\
                 }\n\
                 }\n";
            let tid = unsafe { libc::gettid() };
            let name = format!("netladder-nft-{}-{tid}.nft", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, ruleset).unwrap();
            let status = std::process::Command::new("nft")
                .arg("-f")
                .arg(&path)
                .status();
            let _ = std::fs::remove_file(&path);
            assert!(status.expect("run nft").success(), "nft -f failed");
            terminal_rules(&v4())
        });
        let rules = rules
            .join()
            .expect("the namespace thread")
            .expect("terminal_rules");
        let find = |needle: &str| {
            let found = rules.iter().find(|r| r.text.contains(needle));
            found.unwrap_or_else(|| panic!("no {needle:?} in {rules:#?}"))
        };
        let d = find("tcp dport 443");
        assert_eq!(
            (d.matches, &d.action, d.packets),
            (Matches::Yes, &Action::Drop, Some(0))
        );
        assert_eq!(
            (&*d.family, &*d.table, d.backend),
            ("inet", "nltest", Backend::Nftables)
        );
        assert_eq!((d.hook, d.priority), (Some(Hook::Input), Some(0)));
        assert!(d.id.starts_with("handle "), "{d:?}");
        let r = find("reject");
        assert_eq!(
            r.text,
            "ip daddr 10.9.9.9 tcp dport 9 reject with tcp reset"
        );
        assert_eq!(r.matches, Matches::No);
        assert!(
            matches!(&r.action, Action::Reject(w) if w.contains("tcp reset")),
            "{r:?}"
        );
        let ct = find("ct state invalid");
        assert_eq!(ct.text, "ct state invalid drop comment \"bad state\"");
        assert_eq!(ct.matches, Matches::Unknown);
        let policy = rules
            .iter()
            .find(|r| r.id == "policy")
            .expect("the output policy");
        assert_eq!(
            (&*policy.chain, policy.hook),
            ("output", Some(Hook::Output))
        );
        assert_eq!(
            (&policy.action, policy.matches),
            (&Action::Drop, Matches::Yes)
        );
        assert_eq!(rules.len(), 4, "{rules:#?}");
    }
}
