//! iptables-legacy rules: the x_tables side of netfilter, read with `iptables-legacy-save -c`.
//!
//! The kernel exposes no easy netlink dump for x_tables, so we let the save tool do the
//! getsockopt work and parse its text. The tool is started from the calling thread, which makes
//! it inherit that thread's network namespace (the caller may have entered another one with
//! setns). Parsing and match evaluation are pure functions so they can be tested on fixed text.
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, Context};

use super::firewall::{Action, Backend, Hook, Matches, Packet, Rule};

/// What differs between the IPv4 and IPv6 sides of x_tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The name put in [`Rule::family`].
    pub name: &'static str,
    /// The /proc/thread-self/net file listing the loaded tables.
    names_file: &'static str,
    save_tool: &'static str,
    /// What REJECT sends when the rule does not say.
    default_reject: &'static str,
    /// The ICMP flavour in readable reject types.
    icmp: &'static str,
}

/// ip_tables, dumped by iptables-legacy-save.
pub const IPV4: Family = Family {
    name: "ipv4",
    names_file: "/proc/thread-self/net/ip_tables_names",
    save_tool: "iptables-legacy-save",
    default_reject: "icmp port-unreachable",
    icmp: "icmp",
};

/// ip6_tables, dumped by ip6tables-legacy-save.
pub const IPV6: Family = Family {
    name: "ipv6",
    names_file: "/proc/thread-self/net/ip6_tables_names",
    save_tool: "ip6tables-legacy-save",
    default_reject: "icmp6 port-unreachable",
    icmp: "icmp6",
};

/// Drop/reject rules and DROP policies of the iptables-legacy tables loaded in the calling
/// thread's network namespace, for the packet's family (IPv4 through `iptables-legacy-save`,
/// IPv6 through `ip6tables-legacy-save`), each with `matches` worked out against `packet`.
///
/// Returns an empty list when no legacy table of that family is loaded. Fails with a one-line
/// message when tables are loaded but the save tool is missing or fails.
pub fn terminal_rules(packet: &Packet) -> anyhow::Result<Vec<Rule>> {
    let family = if unmapped(packet.dst.ip()).is_ipv4() {
        IPV4
    } else {
        IPV6
    };
    if loaded_tables(family)?.is_empty() {
        return Ok(Vec::new());
    }
    let tool = family.save_tool;
    let path = find_tool(tool)
        .ok_or_else(|| anyhow!("{tool} is not installed: cannot name the iptables-legacy rule"))?;
    let out = Command::new(&path)
        .arg("-c")
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(anyhow!("{tool} failed ({}): {}", out.status, line.trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_save(&text, family, packet))
}

/// The table names listed in this thread's namespace for `family`; none when the file is
/// missing (x_tables never loaded there).
fn loaded_tables(family: Family) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(family.names_file) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow!("cannot read {}: {e}", family.names_file)),
    }
}

/// An executable named `tool` in /usr/sbin, /sbin, or else on PATH.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let fixed = ["/usr/sbin", "/sbin"].into_iter().map(PathBuf::from);
    let path = std::env::var_os("PATH");
    let on_path = path
        .as_deref()
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    fixed.chain(on_path).map(|d| d.join(tool)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// An IPv4-mapped IPv6 address travels as IPv4, so rules of the IPv4 family see it.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One chain of a table while a dump is read.
#[derive(Default)]
struct ChainAcc {
    name: String,
    /// "ACCEPT"/"DROP" for a built-in chain; None (or "-") for a user chain.
    policy: Option<String>,
    policy_packets: Option<u64>,
    /// Its terminal rules: (id, text, packets, action, matches).
    rules: Vec<(String, String, Option<u64>, Action, Matches)>,
    /// Rules of this chain seen so far, terminal or not (gives the rule number).
    count: usize,
}

/// The terminal rules of an `iptables-save -c` (or `ip6tables-save -c`) dump, table by table
/// and chain by chain in declaration order; a chain's DROP policy comes after its rules.
/// Rules that jump elsewhere or only count are left out, but still take their rule number.
/// Lines without a leading counter are accepted too (then `packets` is None).
pub fn parse_save(text: &str, family: Family, packet: &Packet) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut table: Option<String> = None;
    let mut chains: Vec<ChainAcc> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            flush(&mut out, &mut chains, table.as_deref(), family);
            table = Some(name.trim().to_string());
        } else if line == "COMMIT" {
            flush(&mut out, &mut chains, table.as_deref(), family);
            table = None;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                continue;
            };
            let acc = chain_entry(&mut chains, name);
            acc.policy = Some(policy.to_string());
            acc.policy_packets = parts.next().and_then(counter_packets);
        } else if table.is_some() {
            let (packets, rest) = match line.strip_prefix('[') {
                Some(_) => match line.find(']') {
                    Some(end) => (counter_packets(&line[..=end]), line[end + 1..].trim_start()),
                    None => continue,
                },
                None => (None, line),
            };
            let Some(rest) = rest.strip_prefix("-A ") else {
                continue;
            };
            let rest = rest.trim_start();
            let (chain, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let args = args.trim();
            let acc = chain_entry(&mut chains, chain);
            acc.count += 1;
            let tokens = tokenize(args);
            let Some(action) = target_action(&tokens, family) else {
                continue;
            };
            let id = format!("rule {}", acc.count);
            let matches = evaluate(&tokens, packet);
            acc.rules
                .push((id, args.to_string(), packets, action, matches));
        }
    }
    flush(&mut out, &mut chains, table.as_deref(), family);
    out
}

fn chain_entry<'a>(chains: &'a mut Vec<ChainAcc>, name: &str) -> &'a mut ChainAcc {
    let at = chains
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| {
            let name = name.to_string();
            chains.push(ChainAcc {
                name,
                ..Default::default()
            });
            chains.len() - 1
        });
    &mut chains[at]
}

/// Moves the finished table's rules (with hook and priority filled in) and policies to `out`.
fn flush(out: &mut Vec<Rule>, chains: &mut Vec<ChainAcc>, table: Option<&str>, family: Family) {
    let Some(table) = table else {
        chains.clear();
        return;
    };
    for chain in chains.drain(..) {
        let builtin = chain.policy.as_deref().is_some_and(|p| p != "-");
        let hook = builtin.then(|| chain_hook(&chain.name));
        let priority = builtin
            .then(|| table_priority(table, &chain.name))
            .flatten();
        let policy = (chain.policy.as_deref() == Some("DROP")).then(|| {
            let text = format!("-P {} DROP", chain.name);
            (
                "policy".to_string(),
                text,
                chain.policy_packets,
                Action::Drop,
                Matches::Yes,
            )
        });
        for (id, text, packets, action, matches) in chain.rules.into_iter().chain(policy) {
            out.push(Rule {
                backend: Backend::IptablesLegacy,
                family: family.name.to_string(),
                table: table.to_string(),
                chain: chain.name.clone(),
                hook,
                priority,
                id,
                text,
                packets,
                action,
                matches,
            });
        }
    }
}

/// The packet count of a "[pkts:bytes]" counter.
fn counter_packets(s: &str) -> Option<u64> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.split(':').next()?.parse().ok()
}

fn chain_hook(chain: &str) -> Hook {
    match chain {
        "PREROUTING" => Hook::Prerouting,
        "INPUT" => Hook::Input,
        "FORWARD" => Hook::Forward,
        "OUTPUT" => Hook::Output,
        "POSTROUTING" => Hook::Postrouting,
        _ => Hook::Other,
    }
}

/// The netfilter priority x_tables registers a built-in chain of `table` at.
fn table_priority(table: &str, chain: &str) -> Option<i32> {
    match table {
        "raw" => Some(-300),
        "mangle" => Some(-150),
        "nat" => match chain {
            "PREROUTING" | "OUTPUT" => Some(-100),
            "INPUT" | "POSTROUTING" => Some(100),
            _ => None,
        },
        "filter" => Some(0),
        "security" => Some(50),
        _ => None,
    }
}

/// A word of a rule; `quoted` when any part of it was inside double quotes (so it is a value,
/// never an option, even if it starts with '-').
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Token {
    text: String,
    quoted: bool,
}

impl Token {
    fn is(&self, word: &str) -> bool {
        !self.quoted && self.text == word
    }

    fn is_option(&self) -> bool {
        !self.quoted && self.text.starts_with('-') && self.text.len() > 1
    }
}

/// Splits rule arguments on blanks, keeping double-quoted runs together (the save tool
/// escapes '"' and '\' inside them with a backslash).
fn tokenize(args: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut cur: Option<Token> = None;
    let mut in_quotes = false;
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        if !in_quotes && c.is_whitespace() {
            out.extend(cur.take());
            continue;
        }
        let tok = cur.get_or_insert_with(Token::default);
        match c {
            '"' => {
                in_quotes = !in_quotes;
                tok.quoted = true;
            }
            '\\' if in_quotes => tok.text.extend(chars.next()),
            _ => tok.text.push(c),
        }
    }
    out.extend(cur);
    out
}

/// DROP or REJECT (with what) when the rule's target is one of them.
fn target_action(tokens: &[Token], family: Family) -> Option<Action> {
    let at = tokens.iter().position(|t| t.is("-j") || t.is("--jump"))?;
    match tokens.get(at + 1)?.text.as_str() {
        "DROP" => Some(Action::Drop),
        "REJECT" => {
            let opts = &tokens[at + 2..];
            let with = opts
                .iter()
                .position(|t| t.is("--reject-with"))
                .and_then(|i| opts.get(i + 1))
                .map_or(family.default_reject.to_string(), |t| {
                    readable_reject(&t.text, family)
                });
            Some(Action::Reject(with))
        }
        _ => None,
    }
}

/// "tcp-reset" → "tcp reset", "icmp-admin-prohibited" → "icmp admin-prohibited"; the short
/// aliases ("no-route", "adm-prohibited") get the family's ICMP prefix.
fn readable_reject(with: &str, family: Family) -> String {
    for prefix in ["icmp6-", "icmp-", "tcp-"] {
        if let Some(rest) = with.strip_prefix(prefix) {
            return format!("{} {rest}", &prefix[..prefix.len() - 1]);
        }
    }
    format!("{} {with}", family.icmp)
}

/// Whether a rule's tests (its arguments before `-j`) accept `packet`: protocol, addresses,
/// interfaces and ports (including multiport) are evaluated, with `!` inverting the next test;
/// any other test (conntrack, state, set, mark, limit...) is Unknown. No wins over Unknown.
fn evaluate(tokens: &[Token], packet: &Packet) -> Matches {
    let src_ip = unmapped(packet.src.ip());
    let dst_ip = unmapped(packet.dst.ip());
    let (sport, dport) = (packet.src.port(), packet.dst.port());
    // Any false test gives No; else any test we cannot evaluate gives Unknown.
    let (mut failed, mut unknown) = (false, false);
    let mut negated = false;
    let mut i = 0;
    while i < tokens.len() {
        let tok = &tokens[i];
        if tok.is("!") {
            negated = !negated;
            i += 1;
            continue;
        }
        if !tok.is_option() {
            // A stray value: nothing to test.
            i += 1;
            continue;
        }
        let arg = tokens.get(i + 1).map(|t| t.text.as_str());
        let mut takes = 2;
        let result = match tok.text.as_str() {
            "-j" | "--jump" | "-g" | "--goto" => break,
            "-m" | "--match" | "--comment" => {
                i += 2;
                negated = false;
                continue;
            }
            "-c" | "--set-counters" => {
                i += 3;
                negated = false;
                continue;
            }
            "-p" | "--protocol" => arg.and_then(|a| protocol_matches(a, packet.l4proto)),
            "-s" | "--source" | "--src" => arg.and_then(|a| address_matches(a, src_ip)),
            "-d" | "--destination" | "--dst" => arg.and_then(|a| address_matches(a, dst_ip)),
            "-i" | "--in-interface" => arg.and_then(|a| iface_matches(a, packet.iif.as_deref())),
            "-o" | "--out-interface" => arg.and_then(|a| iface_matches(a, packet.oif.as_deref())),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                arg.and_then(|a| ports_match(a, dport))
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                arg.and_then(|a| ports_match(a, sport))
            }
            "--ports" => arg.and_then(|a| {
                let both = ports_match(a, sport).zip(ports_match(a, dport));
                both.map(|(s, d)| s || d)
            }),
            _ => {
                // Some other test: skip its values, whatever their number.
                takes = 1;
                while tokens
                    .get(i + takes)
                    .is_some_and(|t| !t.is_option() && !t.is("!"))
                {
                    takes += 1;
                }
                None
            }
        };
        match result {
            Some(r) => failed |= r == negated,
            None => unknown = true,
        }
        negated = false;
        i += takes;
    }
    if failed {
        Matches::No
    } else if unknown {
        Matches::Unknown
    } else {
        Matches::Yes
    }
}

/// `-p` value against the packet's protocol number; None for a name we do not know.
fn protocol_matches(spec: &str, proto: u8) -> Option<bool> {
    let spec = spec.to_ascii_lowercase();
    let num: u8 = match spec.as_str() {
        "all" => return Some(true),
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" | "icmp6" => 58,
        "mh" | "ipv6-mh" => 135,
        "sctp" => 132,
        "udplite" => 136,
        other => other.parse().ok()?,
    };
    Some(num == 0 || num == proto)
}

/// `-s`/`-d` value (address, address/prefix or address/mask, comma-separated list) against
/// `ip`; None when an entry is not an address (a host name).
fn address_matches(spec: &str, ip: IpAddr) -> Option<bool> {
    any_of(spec.split(','), |entry| {
        let (addr, mask) = entry.split_once('/').unwrap_or((entry, ""));
        let addr: IpAddr = addr.parse().ok()?;
        let (a, b, width) = match (addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return Some(false),
        };
        let mask: u128 = if mask.is_empty() {
            prefix_mask(width, width)
        } else if let Ok(len) = mask.parse::<u32>() {
            if len > width {
                return None;
            }
            prefix_mask(len, width)
        } else {
            match mask.parse::<IpAddr>().ok()? {
                IpAddr::V4(m) if width == 32 => u32::from(m) as u128,
                IpAddr::V6(m) if width == 128 => u128::from(m),
                _ => return None,
            }
        };
        Some(a & mask == b & mask)
    })
}

/// The mask of a `len`-bit prefix in a `width`-bit address, right-aligned in a u128.
fn prefix_mask(len: u32, width: u32) -> u128 {
    let all = u128::MAX >> (128 - width);
    all ^ all.checked_shr(len).unwrap_or(0)
}

/// `-i`/`-o` value ("eth0", or "eth+" for any name starting "eth") against the packet's
/// interface; None when the packet's interface is not known.
fn iface_matches(spec: &str, iface: Option<&str>) -> Option<bool> {
    let iface = iface?;
    Some(match spec.strip_suffix('+') {
        Some(prefix) => iface.starts_with(prefix),
        None => iface == spec,
    })
}

/// A port list ("9", "1000:2000", "53,80,100:200"; an open end of a range means 0 or 65535)
/// against `port`; None for a service name.
fn ports_match(spec: &str, port: u16) -> Option<bool> {
    any_of(spec.split(','), |entry| {
        let (lo, hi) = match entry.split_once(':') {
            Some((lo, hi)) => (port_or(lo, 0)?, port_or(hi, u16::MAX)?),
            None => {
                let p: u16 = entry.parse().ok()?;
                (p, p)
            }
        };
        Some((lo..=hi).contains(&port))
    })
}

/// A range end: a port number, or `open` when empty.
fn port_or(s: &str, open: u16) -> Option<u16> {
    if s.is_empty() {
        Some(open)
    } else {
        s.parse().ok()
    }
}

/// True if any entry is true; else None if any is unknown; else false.
fn any_of<'a>(
    entries: impl Iterator<Item = &'a str>,
    test: impl Fn(&str) -> Option<bool>,
) -> Option<bool> {
    let mut unknown = false;
    for entry in entries.map(str::trim).filter(|e| !e.is_empty()) {
        match test(entry) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    if unknown {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(proto: u8, src: &str, dst: &str, iif: Option<&str>, oif: Option<&str>) -> Packet {
        Packet {
            l4proto: proto,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            iif: iif.map(String::from),
            oif: oif.map(String::from),
        }
    }

    const DUMP: &str = r#"# Generated by iptables-save v1.8.9 on Sat Nov 21 18:48:52 2026
*raw
:PREROUTING ACCEPT [10:600]
:OUTPUT ACCEPT [12:700]
[3:180] -A PREROUTING -s 192.0.2.0/24 -j DROP
COMMIT
# Completed on Sat Nov 21 18:48:52 2026
*filter
:INPUT ACCEPT [100:5000]
:FORWARD DROP [7:420]
:OUTPUT ACCEPT [90:4000]
:MYCH - [0:0]
[5:300] -A INPUT -i lo -j ACCEPT
[2:120] -A INPUT -s 10.0.0.0/8 ! -i lo -p tcp -m tcp --dport 443 -m comment --comment "no  https \"here\"" -j DROP
[40:2000] -A INPUT -j MYCH
[1:60] -A OUTPUT -p tcp -m tcp --dport 9 -j REJECT --reject-with tcp-reset
[0:0] -A MYCH -p udp -m multiport --dports 53,100:200 -j REJECT --reject-with icmp-port-unreachable
[4:240] -A MYCH -m conntrack --ctstate INVALID -j DROP
[0:0] -A MYCH -p icmp -j REJECT --reject-with icmp-admin-prohibited
COMMIT
# Completed on Sat Nov 21 18:48:52 2026
"#;

    /// One line per rule: where it is, its counter, verdict and match.
    fn brief(r: &Rule) -> String {
        let hook = r.hook.map_or("-", Hook::name);
        let prio = r.priority.map_or("-".into(), |p| p.to_string());
        let (act, m) = (&r.action, r.matches);
        format!(
            "{} {} {} {hook} {prio} {:?} {act:?} {m:?}",
            r.table, r.chain, r.id, r.packets
        )
    }

    #[test]
    fn parses_a_dump_with_counters() {
        let p = pkt(6, "10.0.0.1:4000", "10.0.0.2:9", Some("eth0"), None);
        let rules = parse_save(DUMP, IPV4, &p);
        let got: Vec<String> = rules.iter().map(brief).collect();
        let want = [
            "raw PREROUTING rule 1 prerouting -300 Some(3) Drop No",
            "filter INPUT rule 2 input 0 Some(2) Drop No",
            "filter FORWARD policy forward 0 Some(7) Drop Yes",
            "filter OUTPUT rule 1 output 0 Some(1) Reject(\"tcp reset\") Yes",
            "filter MYCH rule 1 - - Some(0) Reject(\"icmp port-unreachable\") No",
            "filter MYCH rule 2 - - Some(4) Drop Unknown",
            "filter MYCH rule 3 - - Some(0) Reject(\"icmp admin-prohibited\") No",
        ];
        assert_eq!(got, want);
        assert!(rules
            .iter()
            .all(|r| r.backend == Backend::IptablesLegacy && r.family == "ipv4"));
        let texts: Vec<&str> = rules[1..4].iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                r#"-s 10.0.0.0/8 ! -i lo -p tcp -m tcp --dport 443 -m comment --comment "no  https \"here\"" -j DROP"#,
                "-P FORWARD DROP",
                "-p tcp -m tcp --dport 9 -j REJECT --reject-with tcp-reset",
            ]
        );
    }

    #[test]
    fn ipv6_defaults_and_no_counters() {
        let dump = "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT DROP\n\
                    -A INPUT -p ipv6-icmp -j REJECT\n\
                    -A INPUT -s fd00::/64 -p tcp -j REJECT --reject-with icmp6-adm-prohibited\n\
                    -A INPUT -j REJECT --reject-with no-route\nCOMMIT\n";
        let p = pkt(6, "[fd00::1]:4000", "[fd00::2]:80", None, None);
        let rules = parse_save(dump, IPV6, &p);
        let got: Vec<String> = rules.iter().map(brief).collect();
        let want = [
            "filter INPUT rule 1 input 0 None Reject(\"icmp6 port-unreachable\") No",
            "filter INPUT rule 2 input 0 None Reject(\"icmp6 adm-prohibited\") Yes",
            "filter INPUT rule 3 input 0 None Reject(\"icmp6 no-route\") Yes",
            "filter OUTPUT policy output 0 None Drop Yes",
        ];
        assert_eq!(got, want);
        assert!(rules.iter().all(|r| r.family == "ipv6"));
        assert_eq!(parse_save("", IPV6, &p), []);
    }

    #[test]
    fn tokenizer_keeps_quoted_text() {
        let t = tokenize(r#"-m comment --comment "a \"b\"  c" --comment "-j DROP" -j ACCEPT"#);
        let words: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        let want = r#"-m|comment|--comment|a "b"  c|--comment|-j DROP|-j|ACCEPT"#;
        assert_eq!(words.join("|"), want);
        assert!(t[3].quoted && t[5].quoted && !t[6].quoted);
        assert_eq!(target_action(&t, IPV4), None);
    }

    /// Evaluates each "rule arguments => Yes|No|Unknown" line against `p`.
    fn check(p: &Packet, cases: &str) {
        for case in cases.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (args, want) = case.rsplit_once("=>").expect(case);
            let got = format!("{:?}", evaluate(&tokenize(args.trim()), p));
            assert_eq!(got, want.trim(), "{case}");
        }
    }

    #[test]
    fn evaluates_ports_protocols_and_addresses() {
        let p = pkt(6, "10.0.0.1:4000", "10.0.0.2:9", None, None);
        check(
            &p,
            "-p tcp -m tcp --dport 9 => Yes
             -p tcp --dport 1:100 => Yes
             -p tcp --dport 10:100 => No
             -p tcp --dport :9 => Yes
             -p tcp --sport 3000: => Yes
             -p tcp --destination-port 8 => No
             -p tcp -m multiport --dports 53,80,5:10 => Yes
             -p tcp -m multiport --dports 53,80 => No
             -p tcp -m multiport --sports 4000 => Yes
             -p tcp -m multiport --ports 4000 => Yes
             -p tcp -m multiport --ports 22,80 => No
             -p tcp --dport ssh => Unknown
             -p udp --dport 9 => No",
        );
        let p = pkt(17, "10.0.0.1:4000", "10.0.0.2:53", None, None);
        check(
            &p,
            " => Yes
             -p all => Yes
             -p 17 => Yes
             ! -p udp => No
             ! -p tcp => Yes
             -p frobnicate => Unknown
             -s 10.0.0.0/8 -d 10.0.0.2/32 => Yes
             -d 10.0.0.2 => Yes
             ! -d 10.0.0.2 => No
             -s 192.168.0.0/16 => No
             -s 192.168.0.0/16,10.0.0.1 => Yes
             -s 10.0.0.0/255.0.0.0 => Yes
             -s 0.0.0.0/0 => Yes
             -p udp ! --dport 53 => No
             -p udp -m udp ! --sport 53 => Yes
             -p udp -m multiport ! --dports 1:100 => No",
        );
        let mapped = pkt(6, "[::ffff:10.0.0.1]:1", "[::ffff:10.0.0.2]:2", None, None);
        check(&mapped, "-s 10.0.0.1 -d 10.0.0.0/24 => Yes");
        let v6 = pkt(6, "[fd00::1]:1", "[2001:db8::2]:2", None, None);
        check(
            &v6,
            "-s fd00::/8 -d 2001:db8::/32 => Yes
             -d 2001:db8:1::/48 => No
             -d ::/0 => Yes",
        );
    }

    #[test]
    fn interfaces_and_untestable_matches() {
        let p = pkt(6, "10.0.0.1:4000", "10.0.0.2:9", Some("eth0"), None);
        check(
            &p,
            r#"-i eth+ => Yes
               -i eth0 => Yes
               -i + => Yes
               -i wlan+ => No
               ! -i lo => Yes
               ! -i eth+ => No
               -o eth0 => Unknown
               -o eth0 -p udp => No
               -m conntrack --ctstate INVALID => Unknown
               -m conntrack ! --ctstate NEW,ESTABLISHED -p tcp => Unknown
               -m state --state NEW -p tcp --dport 10 => No
               -m set --match-set blocked src,dst -p tcp => Unknown
               -m mark --mark 0x1/0xff => Unknown
               -m limit --limit 5/min --limit-burst 10 -d 10.0.0.3 => No
               -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN --dport 9 => Unknown
               -p tcp --syn --dport 8 => No
               -p tcp -m comment --comment "--dport 10 -m set" --dport 9 -c 1 2 => Yes
               -p tcp -j REJECT --reject-with tcp-reset => Yes"#,
        );
    }

    /// Runs a command; Err(stderr) when it fails.
    fn run(tool: &std::path::Path, args: &[&str]) -> Result<(), String> {
        let out = Command::new(tool).args(args).output();
        let out = out.map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    #[test]
    fn rules_of_a_private_namespace() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("NL-SKIP rules_of_a_private_namespace: needs root");
            return;
        }
        let (Some(tool), Some(_)) = (
            find_tool("iptables-legacy"),
            find_tool("iptables-legacy-save"),
        ) else {
            eprintln!("NL-SKIP rules_of_a_private_namespace: iptables-legacy is not installed");
            return;
        };
        // Everything happens in a thread that left the host's namespace: the iptables children
        // inherit the new one, and it disappears with the thread.
        let rules = std::thread::spawn(move || -> Result<Vec<Rule>, String> {
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            }
            let reject = "-A OUTPUT -p tcp --dport 9 -j REJECT --reject-with tcp-reset";
            run(&tool, &reject.split(' ').collect::<Vec<_>>())?;
            let drop = "-A INPUT -p tcp -s 10.0.0.0/8 --dport 443 -j DROP";
            run(&tool, &drop.split(' ').collect::<Vec<_>>()).expect("add the INPUT rule");
            let p = pkt(6, "10.0.0.1:4000", "10.0.0.2:9", None, None);
            Ok(terminal_rules(&p).expect("terminal_rules"))
        })
        .join()
        .expect("namespace thread");
        let rules = match rules {
            Ok(rules) => rules,
            Err(e) => {
                return eprintln!("NL-SKIP rules_of_a_private_namespace: iptables-legacy: {e}")
            }
        };
        assert_eq!(rules.len(), 2, "{rules:#?}");
        let find = |chain: &str| rules.iter().find(|r| r.chain == chain).expect(chain);
        let output = find("OUTPUT");
        assert_eq!(output.id, "rule 1");
        assert_eq!(output.action, Action::Reject("tcp reset".into()));
        assert_eq!(output.matches, Matches::Yes);
        assert_eq!(output.packets, Some(0));
        assert_eq!(output.hook, Some(Hook::Output));
        assert_eq!(
            (output.table.as_str(), output.priority),
            ("filter", Some(0))
        );
        assert_eq!(
            output.text,
            "-p tcp -m tcp --dport 9 -j REJECT --reject-with tcp-reset"
        );
        assert_eq!(
            brief(find("INPUT")),
            "filter INPUT rule 1 input 0 Some(0) Drop No"
        );
    }
}
