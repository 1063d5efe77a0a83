//! Firewall attribution: which table, chain and rule dropped or rejected a connection's packet.
//!
//! The backends ([`super::nft`] over nf_tables netlink, [`super::iptables`] for iptables-legacy)
//! each list, for the calling thread's network namespace, the rules that can end a packet's
//! journey (drop or reject verdicts, and base-chain drop policies), with their counters and
//! whether they match the dropped packet. This module picks the culprit and says how sure it is.
use std::net::SocketAddr;

use super::plural;

/// The packet a firewall dropped, as the rule saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// IPPROTO_TCP (6), IPPROTO_UDP (17)...
    pub l4proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Input interface name, when the packet came in through one.
    pub iif: Option<String>,
    /// Output interface name, when the packet was on its way out.
    pub oif: Option<String>,
}

/// A netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    /// Ingress/egress and anything else.
    Other,
}

impl Hook {
    /// The lower-case name nft uses ("input"); iptables chains print upper case.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::Other => "other",
        }
    }
}

/// What a rule does to the packets it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    /// A REJECT; the string says with what ("tcp reset", "icmp port-unreachable", "icmpx
    /// admin-prohibited"...), empty when unknown.
    Reject(String),
}

/// Whether a rule's match conditions accept the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matches {
    Yes,
    No,
    /// The rule tests something that cannot be evaluated from the packet alone (conntrack
    /// state, sets, marks...).
    Unknown,
}

/// Where a rule lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Nftables,
    /// Rules written by iptables-nft (the nf_tables kernel side, iptables syntax).
    IptablesNft,
    IptablesLegacy,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
        }
    }
}

/// One rule (or base-chain policy) that drops or rejects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub backend: Backend,
    /// "ip", "ip6", "inet", "bridge"...; "ipv4"/"ipv6" for iptables-legacy.
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The base chain's hook; None for a regular chain (reached by a jump).
    pub hook: Option<Hook>,
    /// The base chain's priority, when it has one.
    pub priority: Option<i32>,
    /// How to find the rule again: "handle 7" (nftables), "rule 2" (iptables position in the
    /// chain), "policy" (the chain's default verdict).
    pub id: String,
    /// The rule as its own tool prints it ("tcp dport 443 counter drop",
    /// "-p tcp --dport 9 -j REJECT --reject-with tcp-reset").
    pub text: String,
    /// Packets counted by the rule; None when it has no counter.
    pub packets: Option<u64>,
    pub action: Action,
    pub matches: Matches,
}

pub use crate::failure::FirewallSeen as Seen;
use crate::failure::FirewallVerdict;

/// Rule identity across reads, for counter deltas.
pub type RuleKey = (Backend, String, String, String, String);

pub fn key(r: &Rule) -> RuleKey {
    (
        r.backend,
        r.family.clone(),
        r.table.clone(),
        r.chain.clone(),
        r.id.clone(),
    )
}

/// How sure the attribution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Certainty {
    /// The rule's counter rose and nothing else could have done it.
    Certain,
    /// One candidate, but without a counter (or with tests netladder cannot check).
    Likely,
    /// The kernel's nftables trace of the flow named the rule (`--trace-firewall`).
    Traced,
}

/// The rule (or policy) an nftables trace saw give a packet its drop verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    /// "ip", "ip6", "inet"...
    pub family: String,
    pub table: String,
    pub chain: String,
    /// "handle 7", or "policy".
    pub id: String,
}

/// The verdict of the attribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    Rule {
        rule: Rule,
        /// Packets the counter rose by since netladder last read it (or its total, first time).
        delta: Option<u64>,
        first_read: bool,
        certainty: Certainty,
        why: String,
    },
    /// Several rules could have done it.
    Ambiguous(Vec<Rule>),
    /// No readable rule explains the drop.
    Unknown(String),
}

/// Can `r` have produced what the kernel saw (hook direction, drop vs reject kind)?
fn plausible(r: &Rule, seen: &Seen) -> bool {
    if r.matches == Matches::No {
        return false;
    }
    let hook_ok = match r.hook {
        None | Some(Hook::Other) => true,
        Some(Hook::Output | Hook::Postrouting) => seen.outgoing || !seen.incoming,
        Some(Hook::Prerouting | Hook::Input | Hook::Forward) => seen.incoming || !seen.outgoing,
    };
    let action_ok = match (&r.action, seen.verdict) {
        (Action::Drop, FirewallVerdict::Dropped) => true,
        (Action::Drop, _) | (Action::Reject(_), FirewallVerdict::Dropped) => false,
        (Action::Reject(with), v) => {
            with.is_empty() || with.contains("tcp") == (v == FirewallVerdict::RejectedWithReset)
        }
    };
    hook_ok && action_ok
}

/// Picks the rule that dropped the packet among `rules` (every drop/reject rule of the
/// namespace), using the counters of the previous read (`before`) where there was one.
pub fn attribute(
    rules: &[Rule],
    before: &std::collections::HashMap<RuleKey, u64>,
    seen: &Seen,
) -> Attribution {
    let candidates: Vec<&Rule> = rules.iter().filter(|r| plausible(r, seen)).collect();
    // Rules whose counter rose: they did drop something since the last look.
    let delta = |r: &Rule| -> Option<(u64, bool)> {
        let now = r.packets?;
        match before.get(&key(r)) {
            Some(prev) => Some((now.saturating_sub(*prev), false)),
            None => Some((now, true)),
        }
    };
    let moved: Vec<&&Rule> = candidates
        .iter()
        .filter(|r| delta(r).is_some_and(|(d, _)| d > 0))
        .collect();
    if moved.len() == 1 {
        let r = (*moved[0]).clone();
        let (d, first_read) = delta(&r).unwrap_or((0, true));
        let rose = if first_read {
            format!("its counter shows {d} packet{}", plural(d))
        } else {
            format!("its counter rose by {d}")
        };
        let (certainty, why) = match r.matches {
            Matches::Yes => (
                Certainty::Certain,
                format!("certain: the only drop rule that matches this connection and whose counter moved; {rose}"),
            ),
            _ => (
                Certainty::Likely,
                format!("likely: the only plausible drop rule whose counter moved ({rose}), but it tests things netladder cannot check from the packet alone, such as connection-tracking state"),
            ),
        };
        return Attribution::Rule {
            rule: r,
            delta: Some(d),
            first_read,
            certainty,
            why,
        };
    }
    if moved.len() > 1 {
        return Attribution::Ambiguous(moved.into_iter().map(|r| (*r).clone()).collect());
    }
    // No counter moved: only rules without a counter (and drop policies) remain.
    let uncounted: Vec<&Rule> = candidates
        .iter()
        .copied()
        .filter(|r| r.packets.is_none())
        .collect();
    let exact: Vec<&Rule> = uncounted
        .iter()
        .copied()
        .filter(|r| r.matches == Matches::Yes && r.id != "policy")
        .collect();
    let pick = match (exact.len(), uncounted.len()) {
        (1, _) => Some(exact[0]),
        (0, 1) => Some(uncounted[0]),
        _ => None,
    };
    if let Some(r) = pick {
        let why = if r.id == "policy" {
            "likely: no rule of the chain matched, so its drop policy applied (policies have no counter to confirm it)".to_owned()
        } else if r.matches == Matches::Yes {
            "likely: it matches this connection, but it has no counter to confirm it fired (add `counter` to the rule to make this certain)".to_owned()
        } else {
            "possible: the only plausible drop rule, without a counter, and with tests netladder cannot check".to_owned()
        };
        return Attribution::Rule {
            rule: r.clone(),
            delta: None,
            first_read: false,
            certainty: Certainty::Likely,
            why,
        };
    }
    if !uncounted.is_empty() {
        return Attribution::Ambiguous(uncounted.into_iter().cloned().collect());
    }
    Attribution::Unknown(if rules.is_empty() {
        "no drop or reject rule found in nftables or iptables-legacy in that namespace (the rule may be gone already)".to_owned()
    } else {
        format!(
            "none of the {} drop/reject rule{} in that namespace matches this connection with a counter that moved",
            rules.len(),
            plural(rules.len() as u64)
        )
    })
}

/// The attribution an nftables trace gives: the traced rule, completed from the ruleset just
/// read (its text, hook and counter) when it is still there.
pub fn attribute_traced(
    rules: &[Rule],
    before: &std::collections::HashMap<RuleKey, u64>,
    hit: &Traced,
) -> Attribution {
    let found = rules.iter().find(|r| {
        matches!(r.backend, Backend::Nftables | Backend::IptablesNft)
            && (&r.family, &r.table, &r.chain, &r.id)
                == (&hit.family, &hit.table, &hit.chain, &hit.id)
    });
    let rule = found.cloned().unwrap_or_else(|| Rule {
        backend: Backend::Nftables,
        family: hit.family.clone(),
        table: hit.table.clone(),
        chain: hit.chain.clone(),
        hook: None,
        priority: None,
        id: hit.id.clone(),
        text: "(no longer in the ruleset)".to_owned(),
        packets: None,
        action: Action::Drop,
        matches: Matches::Unknown,
    });
    let (delta, first_read) = match rule.packets {
        Some(now) => match before.get(&key(&rule)) {
            Some(prev) => (Some(now.saturating_sub(*prev)), false),
            None => (Some(now), true),
        },
        None => (None, false),
    };
    Attribution::Rule {
        rule,
        delta,
        first_read,
        certainty: Certainty::Traced,
        why: "traced: the kernel's nftables trace of this connection shows this verdict".to_owned(),
    }
}

/// What the named rule's own test says about the cause, when it is not the packet's addresses
/// or ports: a conntrack INVALID match means connection tracking rejected the packet first.
pub fn hint(r: &Rule) -> Option<String> {
    let t = r.text.to_ascii_lowercase();
    let invalid = (t.contains("ct state") && t.contains("invalid"))
        || ((t.contains("--ctstate") || t.contains("--state")) && t.contains("invalid"));
    invalid.then(|| {
        "connection tracking found the packet INVALID (it fits no connection conntrack tracks):          typically a reply to a packet a `notrack` rule exempted, a stale or half-closed entry,          or replies taking another path than requests; list the raw-table notrack rules          and `conntrack -L` for this flow"
            .to_owned()
    })
}

/// "table inet filter, chain input (hook input, priority 0), rule handle 7 "tcp dport 443 drop"".
pub fn describe_rule(r: &Rule) -> String {
    let hook = match (r.hook, r.priority) {
        (Some(h), Some(p)) => format!(" (hook {}, priority {p})", h.name()),
        (Some(h), None) => format!(" (hook {})", h.name()),
        (None, _) => String::new(),
    };
    let what = if r.id == "policy" {
        "its drop policy".to_owned()
    } else {
        format!("{} \"{}\"", r.id.replace("handle", "rule handle"), r.text)
    };
    format!(
        "table {} {}, chain {}{hook}, {what}",
        r.family, r.table, r.chain
    )
}

/// The sentence naming the culprit: "dropped by nftables: table ..., 3 packets (certain: ...)".
pub fn describe(att: &Attribution, seen: &Seen) -> String {
    let verb = match seen.verdict {
        FirewallVerdict::Dropped => "dropped",
        FirewallVerdict::RejectedWithReset | FirewallVerdict::RejectedWithIcmp => "rejected",
    };
    match att {
        Attribution::Rule {
            rule,
            delta,
            first_read,
            why,
            ..
        } => {
            let count = match delta {
                Some(d) if *first_read => format!(", {d} packet{} in total", plural(*d)),
                Some(d) => format!(", {d} packet{}", plural(*d)),
                None => String::new(),
            };
            format!(
                "{verb} by {}: {}{count} ({why})",
                rule.backend.name(),
                describe_rule(rule)
            )
        }
        Attribution::Ambiguous(rules) => {
            let shown: Vec<String> = rules
                .iter()
                .take(3)
                .map(|r| format!("{}: {}", r.backend.name(), describe_rule(r)))
                .collect();
            let more = match rules.len().saturating_sub(3) {
                0 => String::new(),
                n => format!("; and {n} more"),
            };
            format!(
                "{verb} by one of {} firewall rules, netladder cannot tell which (add counters to tell them apart): {}{more}",
                rules.len(),
                shown.join("; ")
            )
        }
        Attribution::Unknown(why) => format!("the firewall rule is unknown: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rule(id: &str, hook: Hook, action: Action, packets: Option<u64>, m: Matches) -> Rule {
        Rule {
            backend: Backend::Nftables,
            family: "inet".into(),
            table: "filter".into(),
            chain: hook.name().into(),
            hook: Some(hook),
            priority: Some(0),
            id: id.into(),
            text: "tcp dport 443 counter drop".into(),
            packets,
            action,
            matches: m,
        }
    }

    fn dropped_in() -> Seen {
        Seen {
            incoming: true,
            ..Seen::default()
        }
    }

    #[test]
    fn the_only_matching_rule_whose_counter_moved_is_certain() {
        let rules = vec![
            rule("handle 4", Hook::Input, Action::Drop, Some(5), Matches::Yes),
            rule("handle 7", Hook::Input, Action::Drop, Some(3), Matches::Yes),
            rule("handle 9", Hook::Input, Action::Drop, Some(9), Matches::No),
            rule(
                "handle 2",
                Hook::Output,
                Action::Drop,
                Some(9),
                Matches::Yes,
            ),
        ];
        let before = HashMap::from([(key(&rules[0]), 5)]);
        match attribute(&rules, &before, &dropped_in()) {
            Attribution::Rule {
                rule,
                delta,
                certainty,
                ..
            } => {
                assert_eq!(rule.id, "handle 7");
                assert_eq!(delta, Some(3));
                assert_eq!(certainty, Certainty::Certain);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_moved_counters_are_ambiguous_and_say_so() {
        let rules = vec![
            rule("handle 4", Hook::Input, Action::Drop, Some(1), Matches::Yes),
            rule(
                "handle 7",
                Hook::Input,
                Action::Drop,
                Some(3),
                Matches::Unknown,
            ),
        ];
        let att = attribute(&rules, &HashMap::new(), &dropped_in());
        assert!(matches!(&att, Attribution::Ambiguous(r) if r.len() == 2));
        assert!(describe(&att, &dropped_in()).contains("one of 2 firewall rules"));
    }

    #[test]
    fn a_rule_without_counter_is_only_likely() {
        let rules = vec![
            rule("handle 4", Hook::Input, Action::Drop, None, Matches::Yes),
            rule("policy", Hook::Input, Action::Drop, None, Matches::Yes),
        ];
        let att = attribute(&rules, &HashMap::new(), &dropped_in());
        let text = describe(&att, &dropped_in());
        assert!(text.starts_with("dropped by nftables: table inet filter, chain input (hook input, priority 0), rule handle 4"), "{text}");
        assert!(text.contains("likely"), "{text}");
    }

    #[test]
    fn rejects_are_told_apart_by_kind_and_drops_are_not_rejects() {
        let rules = vec![
            rule("handle 1", Hook::Input, Action::Drop, Some(1), Matches::Yes),
            rule(
                "handle 2",
                Hook::Input,
                Action::Reject("icmp port-unreachable".into()),
                Some(1),
                Matches::Yes,
            ),
            rule(
                "handle 3",
                Hook::Input,
                Action::Reject("tcp reset".into()),
                Some(1),
                Matches::Yes,
            ),
        ];
        let rst = Seen {
            verdict: FirewallVerdict::RejectedWithReset,
            ..dropped_in()
        };
        let icmp = Seen {
            verdict: FirewallVerdict::RejectedWithIcmp,
            ..dropped_in()
        };
        for (seen, want) in [
            (rst, "handle 3"),
            (icmp, "handle 2"),
            (dropped_in(), "handle 1"),
        ] {
            match attribute(&rules, &HashMap::new(), &seen) {
                Attribution::Rule { rule, .. } => assert_eq!(rule.id, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nothing_plausible_is_unknown() {
        let rules = vec![rule(
            "handle 1",
            Hook::Output,
            Action::Drop,
            Some(1),
            Matches::Yes,
        )];
        let att = attribute(&rules, &HashMap::new(), &dropped_in());
        assert!(matches!(att, Attribution::Unknown(_)), "{att:?}");
    }
}
