//! The target of `diagnose`: HOST[:PORT], [IPV6]:PORT, or a bare address.

use std::net::IpAddr;

/// What the operator asked to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, without a trailing dot.
    Name(String),
}

impl Host {
    /// The name as the operator wrote it (an address in its usual form).
    pub fn text(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

/// Parses a target; `default_port` when it names none. Errors are one sentence.
pub fn parse(s: &str, default_port: u16) -> Result<Target, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "empty target: expected HOST[:PORT], e.g. db.internal:5432 or [fd00::2]:443".into(),
        );
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad target '{t}': '[' without its closing ']'"))?;
        let ip: std::net::Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("bad target '{t}': '{inside}' is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("bad target '{t}': expected ':PORT' after ']'"))?,
            ),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else if let Ok(ip) = t.parse::<IpAddr>() {
        // A bare IPv6 address (its colons are not a port).
        (Host::Ip(ip), None)
    } else {
        let (h, p) = match t.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        };
        if h.contains(':') {
            return Err(format!(
                "bad target '{t}': write an IPv6 address with a port as [ADDRESS]:PORT"
            ));
        }
        let host = match h.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(check_name(h).map_err(|why| format!("bad target '{t}': {why}"))?),
        };
        (host, p)
    };
    let port = match port {
        None => default_port,
        Some(p) => parse_port(p).map_err(|why| format!("bad target '{t}': {why}"))?,
    };
    Ok(Target { host, port })
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("empty port after ':'".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port '{p}' is not a number"));
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("port {p} is out of range (1-65535)")),
    }
}

/// A host name as DNS can carry it: letters, digits, '-' and '_', dot-separated labels of
/// 1 to 63 characters, 253 in all, no label starting or ending with '-'.
fn check_name(h: &str) -> Result<String, String> {
    let name = h.strip_suffix('.').unwrap_or(h);
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if name.len() > 253 {
        return Err("host name longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("'{h}' has an empty label (two dots in a row?)"));
        }
        if label.len() > 63 {
            return Err(format!("label '{label}' is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("'{c}' cannot appear in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label '{label}' starts or ends with '-'"));
        }
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("'{h}' is neither an IPv4 address nor a host name"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Host, u16) {
        let t = parse(s, 80).unwrap_or_else(|e| panic!("{s}: {e}"));
        (t.host, t.port)
    }

    #[test]
    fn accepted_forms() {
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert_eq!(ok("10.240.0.2"), (ip("10.240.0.2"), 80));
        assert_eq!(ok("10.240.0.2:9001"), (ip("10.240.0.2"), 9001));
        assert_eq!(ok("[fd00::2]:443"), (ip("fd00::2"), 443));
        assert_eq!(ok("[fd00::2]"), (ip("fd00::2"), 80));
        assert_eq!(ok("fd00::2"), (ip("fd00::2"), 80));
        assert_eq!(
            ok("db.internal:5432"),
            (Host::Name("db.internal".into()), 5432)
        );
        assert_eq!(
            ok(" Example.TEST. "),
            (Host::Name("Example.TEST".into()), 80)
        );
        assert_eq!(
            ok("_srv.x-y.test:1"),
            (Host::Name("_srv.x-y.test".into()), 1)
        );
        assert_eq!(parse("h", 443).unwrap().port, 443);
    }

    #[test]
    fn refused_forms_say_why() {
        for (s, why) in [
            ("", "empty target"),
            ("   ", "empty target"),
            ("host:", "empty port"),
            ("host:0", "out of range"),
            ("host:65536", "out of range"),
            ("host:99999999999", "out of range"),
            ("host:http", "not a number"),
            ("host:-1", "not a number"),
            ("[fd00::2", "closing"),
            ("[nothex]:80", "not an IPv6 address"),
            ("[fd00::2]80", "expected ':PORT'"),
            ("a:b:c", "[ADDRESS]:PORT"),
            ("bad host", "' ' cannot appear"),
            ("a..b", "empty label"),
            ("-a.b", "starts or ends with '-'"),
            ("10.0.0.300", "neither an IPv4 address"),
            ("x/y:80", "'/' cannot appear"),
        ] {
            let e = parse(s, 80).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(parse(&"a".repeat(64), 80).unwrap_err().contains("63"));
    }
}
