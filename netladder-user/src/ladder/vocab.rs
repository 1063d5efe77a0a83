//! The ladder's two closed vocabularies, matched exhaustively: the ten codes (#021..#030),
//! written as their three digits, and the machine-readable causes, written as the same
//! snake_case words as ever (JSON, metrics, step choices).

use std::fmt;

/// One of the ten ladder codes; written "021".."030" (see its `Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// #021 connection refused.
    Refused,
    /// #022 no route to host.
    NoRoute,
    /// #023 connection timed out.
    Timeout,
    /// #024 name resolution failed.
    Dns,
    /// #025 TLS certificate verification failed.
    TlsVerify,
    /// #026 network unreachable.
    NetUnreachable,
    /// #027 address already in use.
    AddrInUse,
    /// #028 cannot assign requested address.
    TimeWait,
    /// #029 address resolution (ARP / neighbour discovery) failed.
    ArpFailed,
    /// #030 ssh publickey refused.
    SshPublickey,
}

impl Code {
    /// Every code, in order.
    pub const ALL: [Code; 10] = [
        Code::Refused,
        Code::NoRoute,
        Code::Timeout,
        Code::Dns,
        Code::TlsVerify,
        Code::NetUnreachable,
        Code::AddrInUse,
        Code::TimeWait,
        Code::ArpFailed,
        Code::SshPublickey,
    ];

    /// 21..=30.
    pub const fn number(self) -> u16 {
        match self {
            Code::Refused => 21,
            Code::NoRoute => 22,
            Code::Timeout => 23,
            Code::Dns => 24,
            Code::TlsVerify => 25,
            Code::NetUnreachable => 26,
            Code::AddrInUse => 27,
            Code::TimeWait => 28,
            Code::ArpFailed => 29,
            Code::SshPublickey => 30,
        }
    }

    /// The code numbered `n`, if there is one.
    pub fn from_number(n: u16) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.number() == n)
    }
}

/// The three-digit form: "021".
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.number())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Declares [`Cause`] from one list of (variant, word), so the enum, [`Cause::ALL`] and
/// [`Cause::as_str`] cannot disagree.
macro_rules! causes {
    ($($(#[$doc:meta])* $variant:ident = $word:literal,)*) => {
        /// Why a failure happened, as precisely as netladder could tell ("no_listener",
        /// "firewall_drop", ...). A code's generic reading has no cause of its own.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Cause {
            $($(#[$doc])* $variant,)*
        }

        impl Cause {
            /// Every cause, in declaration order.
            pub const ALL: &'static [Cause] = &[$(Cause::$variant,)*];

            /// The word used in JSON, metrics and steps, e.g. "no_listener".
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Cause::$variant => $word,)*
                }
            }
        }
    };
}

causes! {
    // #021 connection refused
    /// The SYN reached this host and nothing listens on the port.
    NoListener = "no_listener",
    /// The peer answered the SYN with a reset.
    PeerReset = "peer_reset",
    /// A firewall rejected the SYN with a TCP reset.
    FirewallRejectRst = "firewall_reject_rst",
    /// A firewall rejected the SYN with an ICMP error (#021, #022, #026).
    FirewallRejectIcmp = "firewall_reject_icmp",
    /// Refused, with nothing more known (#021), or a nameserver's REFUSED (#024).
    Refused = "refused",
    // #022 no route to host
    /// No route to the host, or an ICMP host-unreachable.
    HostUnreachable = "host_unreachable",
    /// connect() got EACCES: a prohibit route.
    RouteProhibited = "route_prohibited",
    /// An ICMP administratively-prohibited (#022, #026).
    AdminProhibited = "admin_prohibited",
    /// The routing table refused the destination (#022 in diagnose; #023 when a SYN was
    /// dropped by a namespace's route).
    RouteRefused = "route_refused",
    // #023 connection timed out
    /// No answer to the SYN, nothing dropped it on this host.
    NoReply = "no_reply",
    /// No answer, and the application gave up before the kernel did.
    AppGaveUp = "app_gave_up",
    /// The local firewall dropped the handshake.
    FirewallDrop = "firewall_drop",
    /// This host dropped the handshake for a reason with no cause of its own.
    HostDrop = "host_drop",
    /// Connection tracking (netfilter) dropped the handshake.
    ConntrackDrop = "conntrack_drop",
    /// The reverse-path filter dropped the SYN.
    ReversePathDrop = "reverse_path_drop",
    /// The SYN came in and the namespace could not route it on.
    NoRouteOnInput = "no_route_on_input",
    /// The handshake was dropped for want of an output route (IP_OUTNOROUTES).
    NoRoute = "no_route",
    /// The listener's accept queue is full.
    AcceptQueueFull = "accept_queue_full",
    /// The listener's SYN queue is full and no syncookie was sent.
    SynQueueFull = "syn_queue_full",
    // #024 DNS
    /// The name does not exist (NXDOMAIN).
    Nxdomain = "nxdomain",
    /// The nameserver failed (SERVFAIL).
    Servfail = "servfail",
    /// Another DNS error code.
    DnsError = "dns_error",
    /// No DNS question was seen going out, and no nameserver is reachable.
    NoNameserver = "no_nameserver",
    /// Questions were sent and no nameserver answered.
    NoAnswer = "no_answer",
    /// Not found, and no DNS question or answer was seen.
    NotFoundLocally = "not_found_locally",
    /// The name exists without an address of the family asked.
    NoAddress = "no_address",
    /// The resolver failed another way.
    ResolverFailed = "resolver_failed",
    /// `diagnose`: the name did not resolve.
    Dns = "dns",
    // #025 TLS
    CertExpired = "cert_expired",
    CertNotYetValid = "cert_not_yet_valid",
    CertNameMismatch = "cert_name_mismatch",
    CertSelfSigned = "cert_self_signed",
    CertUnknownIssuer = "cert_unknown_issuer",
    CertRevoked = "cert_revoked",
    CertInvalid = "cert_invalid",
    CertUntrusted = "cert_untrusted",
    CertWeak = "cert_weak",
    /// `diagnose`: the handshake failed before or beside the certificate check.
    TlsHandshakeFailed = "tls_handshake_failed",
    // #026 network unreachable
    /// No route to the network, or an ICMP net-unreachable from a router.
    NetUnreachable = "net_unreachable",
    /// `diagnose`: the egress interface is down.
    LinkDown = "link_down",
    // #027 address in use
    AddrInUse = "addr_in_use",
    // #028 cannot assign requested address
    /// No free local port for the destination.
    PortsExhausted = "ports_exhausted",
    /// bind() asked for an address not on this host.
    BindNonlocal = "bind_nonlocal",
    // #029 neighbour
    /// The next hop never answered ARP / neighbour discovery (#029; #023 by drop reason).
    NeighbourFailed = "neighbour_failed",
    // #030 ssh publickey
    /// Seen on the client: the server accepted none of the keys offered.
    ClientDenied = "client_denied",
    /// Seen on the server: StrictModes refused the authorized keys.
    ServerBadModes = "server_bad_modes",
    /// Seen on the server: AllowUsers / DenyUsers and the like.
    ServerUserNotAllowed = "server_user_not_allowed",
    /// Seen on the server: no such user.
    ServerInvalidUser = "server_invalid_user",
    /// Seen on the server: no offered key is authorized.
    ServerKeyUnknown = "server_key_unknown",
    /// Seen on the server: sshd refused the authentication for another reason.
    ServerRefused = "server_refused",
}

impl Cause {
    /// The cause for its word, as [`Cause::as_str`] writes it.
    pub fn parse(s: &str) -> Result<Cause, String> {
        Cause::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown cause '{s}'"))
    }
}

impl std::str::FromStr for Cause {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cause::parse(s)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_numbered_21_to_30_and_written_with_three_digits() {
        let numbers: Vec<u16> = Code::ALL.iter().map(|c| c.number()).collect();
        assert_eq!(numbers, (21..=30).collect::<Vec<u16>>());
        for c in Code::ALL {
            assert_eq!(Code::from_number(c.number()), Some(c));
            assert_eq!(c.to_string(), format!("{:03}", c.number()));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::from(c.to_string())
            );
        }
        assert_eq!(Code::Refused.to_string(), "021");
        assert_eq!(Code::SshPublickey.to_string(), "030");
        assert_eq!(Code::from_number(20), None);
        assert_eq!(Code::from_number(31), None);
    }

    #[test]
    fn words_are_unique_snake_case_and_round_trip() {
        let mut words: Vec<&str> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Ok(*c));
            assert_eq!(c.as_str().parse::<Cause>(), Ok(*c));
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::from(c.as_str())
            );
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), Cause::ALL.len());
    }

    #[test]
    fn misspelt_causes_are_refused() {
        assert_eq!(
            Cause::parse("no_listenr"),
            Err("unknown cause 'no_listenr'".to_owned())
        );
        assert!(Cause::parse("").is_err() && Cause::parse("NO_LISTENER").is_err());
    }

    #[test]
    fn the_usual_words() {
        assert_eq!(Cause::NoListener.as_str(), "no_listener");
        assert_eq!(Cause::Nxdomain.as_str(), "nxdomain");
        assert_eq!(Cause::CertNotYetValid.as_str(), "cert_not_yet_valid");
        assert_eq!(
            serde_json::to_string(&Cause::ServerUserNotAllowed).unwrap(),
            "\"server_user_not_allowed\""
        );
    }
}
