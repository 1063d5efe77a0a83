//! Small helpers every layer's sentences and addresses share: one definition each.
use std::net::{IpAddr, SocketAddr};

/// "s" after a count other than one: "1 packet", "3 packets".
pub(crate) fn plural(n: impl Into<u64>) -> &'static str {
    if n.into() == 1 {
        ""
    } else {
        "s"
    }
}

/// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 peer: show, match and route it as one.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// [`canonical`] for a socket address (the port stays).
pub(crate) fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_and_mapped_addresses() {
        assert_eq!(plural(1u32), "");
        assert_eq!(plural(0u64), "s");
        assert_eq!(plural(3u32), "s");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(canonical(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let a: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(
            canonical_addr(a),
            "10.0.0.1:80".parse::<SocketAddr>().unwrap()
        );
    }
}
