//! ICMP and ICMPv6 destination-unreachable codes, by what they mean for a connection.

/// What a destination-unreachable says (RFC 792, RFC 1812, RFC 4443).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No service: port unreachable (a REJECT rule answers this way too).
    Port,
    /// The host (or address) cannot be reached.
    Host,
    /// No route onward to the network.
    Net,
    /// Administratively prohibited: a firewall, or a prohibit route.
    Prohibited,
    /// Anything else (protocol unreachable, source route failed, precedence...).
    Other,
}

/// `icmp_type` is the destination-unreachable type of its family (3, or 1 for ICMPv6).
pub fn kind(v6: bool, _icmp_type: u8, code: u8) -> Kind {
    match (v6, code) {
        (false, 3) | (true, 4) => Kind::Port,
        (false, 1 | 7 | 12) | (true, 3) => Kind::Host,
        (false, 0 | 6 | 11) | (true, 0) => Kind::Net,
        (false, 9 | 10 | 13) | (true, 1 | 5 | 6) => Kind::Prohibited,
        _ => Kind::Other,
    }
}

impl Kind {
    pub fn words(self) -> &'static str {
        match self {
            Kind::Port => "port-unreachable",
            Kind::Host => "host-unreachable",
            Kind::Net => "net-unreachable",
            Kind::Prohibited => "administratively-prohibited",
            Kind::Other => "destination-unreachable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_both_families() {
        assert_eq!(kind(false, 3, 3), Kind::Port);
        assert_eq!(kind(true, 1, 4), Kind::Port);
        assert_eq!(kind(false, 3, 1), Kind::Host);
        assert_eq!(kind(true, 1, 3), Kind::Host);
        assert_eq!(kind(false, 3, 0), Kind::Net);
        assert_eq!(kind(true, 1, 0), Kind::Net);
        assert_eq!(kind(false, 3, 13), Kind::Prohibited);
        assert_eq!(kind(false, 3, 10), Kind::Prohibited);
        assert_eq!(kind(true, 1, 1), Kind::Prohibited);
        assert_eq!(kind(false, 3, 2), Kind::Other);
    }
}
