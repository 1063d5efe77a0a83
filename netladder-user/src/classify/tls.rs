//! TLS certificate verification failures (`kind::TLS_VERIFY`): #025.
//!
//! The kernel reports a client handshake that OpenSSL 3 failed after its chain verification
//! failed (`code` = the X509_V_ERR value), or a certificate curl refused itself after OpenSSL
//! accepted it (`aux` = TLS_AUX_CURL). The X509_V_ERR code alone gives the reason in plain words;
//! the enrichment stage adds the certificate's dates and names (`Lookup::TlsChain`) and, for the
//! time-related codes, the system clock.
use netladder_common::{TLS_AUX_CURL, TLS_FD_SCAN, TLS_NAME_LEN, TLS_PEER_FROM_FILES};

use super::{Failure, Kind, Lookup, Observation};
use crate::failure::TlsName;
use crate::ladder::{Cause, Code, Layer};

#[derive(Default)]
pub struct State {}

impl State {
    pub fn feed(&mut self, obs: &Observation, _now: u64) -> Vec<Failure> {
        let Kind::App {
            code, aux, text, ..
        } = &obs.kind
        else {
            return Vec::new();
        };
        vec![failure(obs, *code, *aux, text)]
    }

    pub fn tick(&mut self, _now: u64) -> Vec<Failure> {
        Vec::new()
    }
}

/// The NUL-terminated name in `raw` (printable ASCII only; anything else ends it).
fn name_in(raw: &[u8]) -> String {
    raw.iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .take_while(|c| c.is_ascii_graphic())
        .collect()
}

fn failure(obs: &Observation, code: i32, aux: u64, text: &[u8]) -> Failure {
    let sni = name_in(text.get(..TLS_NAME_LEN).unwrap_or_default());
    let host = name_in(text.get(TLS_NAME_LEN..).unwrap_or_default());
    let curl = aux & 0xff == TLS_AUX_CURL;
    // The name the certificate had to carry: the one the client asked to check, else the SNI,
    // else the address it connected to.
    let asked = if !host.is_empty() {
        host.clone()
    } else if !sni.is_empty() {
        sni.clone()
    } else {
        obs.dst.map(|d| d.ip().to_string()).unwrap_or_default()
    };
    let (cause, summary) = if curl {
        (
            Cause::CertNameMismatch,
            format!(
                "curl refused the server's certificate after OpenSSL accepted its chain: it does \
                 not name {}",
                or_unknown(&asked)
            ),
        )
    } else {
        reason(code, &asked)
    };
    let mut evidence = Vec::new();
    if curl {
        evidence.push(
            "OpenSSL 3 accepted the chain and the handshake completed; curl_easy_perform then \
             returned CURLE_PEER_FAILED_VERIFICATION (60): curl's own host name check (uretprobe \
             on libcurl.so.4)"
                .to_owned(),
        );
    } else {
        evidence.push(format!(
            "OpenSSL 3 refused the server's chain: {} ({code}) (uretprobes X509_verify_cert, \
             X509_STORE_CTX_get_error)",
            x509_name(code)
        ));
        evidence.push(
            "the client handshake then failed: SSL_do_handshake returned <= 0 and SSL_get_error \
             said SSL_ERROR_SSL (uprobes on libssl.so.3)"
                .to_owned(),
        );
    }
    evidence.push(if sni.is_empty() {
        "no server name (SNI) sent".to_owned()
    } else {
        format!("server name sent (SNI): {sni}")
    });
    if !host.is_empty() {
        evidence.push(format!(
            "host name the client asked OpenSSL to check: {host}"
        ));
    }
    evidence.push(match obs.dst {
        Some(d) if aux & TLS_PEER_FROM_FILES != 0 => format!(
            "peer {d} (no connect() of the thread was recorded; the process's only \
             connected TCP socket)"
        ),
        Some(d) => format!("peer {d} (the thread's last connect())"),
        None => format!(
            "peer unknown: no connect() seen on this thread, and not exactly one connected TCP \
             socket among the process's first {TLS_FD_SCAN} file descriptors"
        ),
    });
    Failure {
        src: obs.src,
        dst: obs.dst,
        evidence,
        lookup: Lookup::TlsChain {
            code: if curl { X509_NAME_MISMATCH_CURL } else { code },
            name: TlsName::new(if sni.is_empty() { &asked } else { &sni }),
            asked: TlsName::new(&asked),
        },
        host_name: if !asked.is_empty() {
            Some(asked.to_string())
        } else if !sni.is_empty() {
            Some(sni.to_string())
        } else {
            None
        },
        ..Failure::new(
            Code::TlsVerify,
            cause,
            Layer::Application,
            summary,
            obs.proc.clone(),
            obs.ts_ns,
        )
    }
}

/// `Lookup::TlsChain::code` for curl's own refusal (no X509_V_ERR value): read as a name
/// mismatch.
pub const X509_NAME_MISMATCH_CURL: i32 = -62;

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "the name asked"
    } else {
        s
    }
}

/// (cause, summary) for an X509_V_ERR code: the reason in plain words.
pub fn reason(code: i32, asked: &str) -> (Cause, String) {
    let asked = or_unknown(asked);
    let (cause, text) = match code {
        10 => (
            Cause::CertExpired,
            "the server's certificate has expired".to_owned(),
        ),
        9 => (
            Cause::CertNotYetValid,
            "the server's certificate is not valid yet: is the system clock right?".to_owned(),
        ),
        62 => (
            Cause::CertNameMismatch,
            format!("the server's certificate does not name {asked}"),
        ),
        64 => (
            Cause::CertNameMismatch,
            format!("the server's certificate does not name the address {asked}"),
        ),
        63 => (
            Cause::CertNameMismatch,
            format!("the server's certificate does not name the e-mail address {asked}"),
        ),
        18 => (
            Cause::CertSelfSigned,
            "the server's certificate is self-signed and the client does not trust it".to_owned(),
        ),
        19 => (
            Cause::CertSelfSigned,
            "the server's chain ends in a self-signed root the client does not trust".to_owned(),
        ),
        2 | 20 => (
            Cause::CertUnknownIssuer,
            "no CA the client trusts vouches for the server's certificate (unknown issuer)"
                .to_owned(),
        ),
        21 => (
            Cause::CertUnknownIssuer,
            "the server's certificate could not be verified against a trusted CA: its issuer is \
             unknown here (does the server send its intermediate certificates?)"
                .to_owned(),
        ),
        23 => (
            Cause::CertRevoked,
            "the server's certificate has been revoked".to_owned(),
        ),
        7 | 4 | 6 => (
            Cause::CertInvalid,
            "a signature in the server's chain does not verify".to_owned(),
        ),
        13 | 14 => (
            Cause::CertInvalid,
            "the server's certificate has a malformed validity date".to_owned(),
        ),
        22 | 25 | 38 => (
            Cause::CertInvalid,
            "the server's chain is longer than its CAs allow".to_owned(),
        ),
        24 | 79 | 37 => (
            Cause::CertInvalid,
            "a certificate in the server's chain is used as a CA but is not one".to_owned(),
        ),
        26 | 28 => (
            Cause::CertInvalid,
            "the server's certificate is not meant for this use (purpose / extended key usage)"
                .to_owned(),
        ),
        27 => (
            Cause::CertUntrusted,
            "the root of the server's chain is not trusted for this purpose".to_owned(),
        ),
        66..=68 => (
            Cause::CertWeak,
            "a key or signature in the server's chain is too weak for the client's security level"
                .to_owned(),
        ),
        47 | 48 => (
            Cause::CertInvalid,
            "the server's certificate names a host its CA may not issue for (name constraints)"
                .to_owned(),
        ),
        _ => (
            Cause::CertInvalid,
            format!(
                "OpenSSL refused the server's certificate: {}",
                x509_name(code)
            ),
        ),
    };
    (cause, text)
}

/// The X509_V_ERR constant's name of `code` (OpenSSL 3's numbering, an ABI).
pub fn x509_name(code: i32) -> String {
    const NAMES: &[&str] = &[
        "X509_V_OK",
        "UNSPECIFIED",
        "UNABLE_TO_GET_ISSUER_CERT",
        "UNABLE_TO_GET_CRL",
        "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
        "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
        "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
        "CERT_SIGNATURE_FAILURE",
        "CRL_SIGNATURE_FAILURE",
        "CERT_NOT_YET_VALID",
        "CERT_HAS_EXPIRED",
        "CRL_NOT_YET_VALID",
        "CRL_HAS_EXPIRED",
        "ERROR_IN_CERT_NOT_BEFORE_FIELD",
        "ERROR_IN_CERT_NOT_AFTER_FIELD",
        "ERROR_IN_CRL_LAST_UPDATE_FIELD",
        "ERROR_IN_CRL_NEXT_UPDATE_FIELD",
        "OUT_OF_MEM",
        "DEPTH_ZERO_SELF_SIGNED_CERT",
        "SELF_SIGNED_CERT_IN_CHAIN",
        "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        "CERT_CHAIN_TOO_LONG",
        "CERT_REVOKED",
        "NO_ISSUER_PUBLIC_KEY",
        "PATH_LENGTH_EXCEEDED",
        "INVALID_PURPOSE",
        "CERT_UNTRUSTED",
        "CERT_REJECTED",
    ];
    let name = match code {
        0..=28 => NAMES[code as usize],
        37 => "INVALID_NON_CA",
        47 => "PERMITTED_VIOLATION",
        48 => "EXCLUDED_VIOLATION",
        62 => "HOSTNAME_MISMATCH",
        63 => "EMAIL_MISMATCH",
        64 => "IP_ADDRESS_MISMATCH",
        65 => "DANE_NO_MATCH",
        66 => "EE_KEY_TOO_SMALL",
        67 => "CA_KEY_TOO_SMALL",
        68 => "CA_MD_TOO_WEAK",
        79 => "INVALID_CA",
        _ => return format!("X509_V_ERR code {code}"),
    };
    if code == 0 {
        name.to_owned()
    } else {
        format!("X509_V_ERR_{name}")
    }
}

/// Whether `code` is about time (the system clock is worth showing).
pub fn time_related(code: i32) -> bool {
    matches!(code, 9..=12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Drops, Proc};
    use netladder_common::{kind, TLS_AUX_OPENSSL};

    fn obs(code: i32, aux: u64, sni: &str, host: &str) -> Observation {
        let mut text = vec![0u8; 2 * TLS_NAME_LEN];
        text[..sni.len()].copy_from_slice(sni.as_bytes());
        text[TLS_NAME_LEN..TLS_NAME_LEN + host.len()].copy_from_slice(host.as_bytes());
        Observation {
            kind: Kind::App {
                kind: kind::TLS_VERIFY,
                code,
                aux,
                text,
            },
            ts_ns: 5,
            sk: 0,
            proc: Proc {
                pid: 7,
                tid: 7,
                comm: "python3".into(),
                cgroup_id: 1,
                netns: 4026531840,
            },
            src: None,
            dst: Some("10.240.12.2:8443".parse().unwrap()),
            err: 0,
            syn_retrans: 0,
            flags: 0,
            duration_ns: None,
            drops: Drops::default(),
            icmp: None,
            agg: None,
        }
    }

    #[test]
    fn each_reason_in_plain_words() {
        let mut s = State::default();
        for (code, cause, says) in [
            (10, Cause::CertExpired, "has expired"),
            (9, Cause::CertNotYetValid, "not valid yet"),
            (62, Cause::CertNameMismatch, "does not name good.nl.test"),
            (18, Cause::CertSelfSigned, "self-signed"),
            (20, Cause::CertUnknownIssuer, "unknown issuer"),
            (99, Cause::CertInvalid, "X509_V_ERR code 99"),
        ] {
            let f = s.feed(
                &obs(code, TLS_AUX_OPENSSL, "good.nl.test", "good.nl.test"),
                0,
            );
            assert_eq!(f.len(), 1);
            let f = &f[0];
            assert_eq!((f.code, f.cause), (Code::TlsVerify, cause), "{code}");
            assert!(f.summary.contains(says), "{code}: {}", f.summary);
            assert!(f.evidence.iter().any(|e| e.contains("SNI): good.nl.test")));
            assert!(f
                .evidence
                .iter()
                .any(|e| e.contains("peer 10.240.12.2:8443")));
            assert_eq!(f.dst, Some("10.240.12.2:8443".parse().unwrap()));
        }
    }

    #[test]
    fn the_peer_says_where_it_came_from() {
        let mut s = State::default();
        let said = |f: &Failure| f.evidence.iter().find(|e| e.starts_with("peer")).cloned();
        let f = &s.feed(&obs(10, TLS_AUX_OPENSSL, "a.nl.test", ""), 0)[0];
        assert_eq!(
            said(f).as_deref(),
            Some("peer 10.240.12.2:8443 (the thread's last connect())")
        );
        // No connect() recorded: the kernel took the process's one connected TCP socket.
        let from_files = TLS_AUX_OPENSSL | TLS_PEER_FROM_FILES;
        let f = &s.feed(&obs(10, from_files, "a.nl.test", ""), 0)[0];
        assert_eq!(f.cause, Cause::CertExpired);
        assert!(said(f)
            .unwrap()
            .contains("the process's only connected TCP socket"));
        // The flag leaves curl's own refusal recognised.
        let f = &s.feed(
            &obs(0, TLS_AUX_CURL | TLS_PEER_FROM_FILES, "a.nl.test", ""),
            0,
        )[0];
        assert_eq!(f.cause, Cause::CertNameMismatch);
        let mut none = obs(10, TLS_AUX_OPENSSL, "", "");
        none.dst = None;
        let f = &s.feed(&none, 0)[0];
        assert!(said(f)
            .unwrap()
            .starts_with("peer unknown: no connect() seen"));
    }

    #[test]
    fn curl_refusal_and_names() {
        let f = &State::default().feed(&obs(0, TLS_AUX_CURL, "wrong.nl.test", ""), 0)[0];
        assert_eq!(f.cause, Cause::CertNameMismatch);
        assert!(
            f.summary.contains("does not name wrong.nl.test"),
            "{}",
            f.summary
        );
        assert!(f.evidence[0].contains("CURLE_PEER_FAILED_VERIFICATION"));
        let Lookup::TlsChain { code, name, asked } = f.lookup else {
            panic!("{:?}", f.lookup)
        };
        assert_eq!(
            (code, name.as_str(), asked.as_str()),
            (-62, "wrong.nl.test", "wrong.nl.test")
        );
        // No names at all: the peer's address is what was asked.
        let f = &State::default().feed(&obs(64, TLS_AUX_OPENSSL, "", ""), 0)[0];
        assert!(
            f.summary.contains("the address 10.240.12.2"),
            "{}",
            f.summary
        );
        assert!(f.evidence.iter().any(|e| e == "no server name (SNI) sent"));
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(name_in(b"a.test\0junk"), "a.test");
        assert_eq!(name_in(b"bad\x01name"), "bad");
        let long = "x".repeat(300);
        assert_eq!(TlsName::new(&long).as_str().len(), TLS_NAME_LEN - 1);
        assert_eq!(x509_name(10), "X509_V_ERR_CERT_HAS_EXPIRED");
        assert_eq!(x509_name(62), "X509_V_ERR_HOSTNAME_MISMATCH");
    }
}
