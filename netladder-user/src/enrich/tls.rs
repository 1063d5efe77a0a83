//! A TLS handshake with certificate verification (rustls, the system's trusted roots plus any
//! CA files given), and what is wrong with the certificate when it is refused: its dates against
//! the system clock, its names against the name asked, who issued it.

use std::io::Write as _;
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ladder::Cause;
use anyhow::{anyhow, Context as _, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
};

/// The outcome of the handshake.
#[derive(Debug, Clone)]
pub struct TlsOutcome {
    /// None: the handshake completed and the certificate was accepted.
    pub failure: Option<TlsFailure>,
    /// One sentence: what was checked and found.
    pub summary: String,
    /// The certificate's details and the checks made.
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// Machine-readable: cert_expired, cert_not_yet_valid, cert_name_mismatch,
    /// cert_unknown_issuer, cert_invalid, tls_handshake_failed.
    pub cause: Cause,
}

/// Records the certificates the server presented, then lets webpki decide.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    presented: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut p) = self.presented.lock() {
            p.push(end_entity.clone().into_owned());
            p.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The trusted roots: the system's (as rustls-native-certs finds them) and the `extra` PEM files.
/// Returns them with a note on what was loaded.
fn roots(extra: &[PathBuf]) -> Result<(RootCertStore, String)> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (system, _) = store.add_parsable_certificates(native.certs);
    let mut note = format!("{system} trusted roots from the system");
    for path in extra {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read the CA file {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
        if certs.is_empty() {
            return Err(anyhow!("{} holds no certificate", path.display()));
        }
        let (added, _) = store.add_parsable_certificates(certs);
        note += &format!(", {added} from {}", path.display());
    }
    Ok((store, note))
}

/// Makes a TLS handshake over `stream` for `server_name` (a DNS name or an address) and checks
/// the certificate. Errors are for problems on this side (bad CA file); a refused certificate or
/// a failed handshake is a `TlsOutcome` with a failure.
pub fn check(
    mut stream: TcpStream,
    server_name: &str,
    extra_ca: &[PathBuf],
    timeout: Duration,
) -> Result<TlsOutcome> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (store, roots_note) = roots(extra_ca)?;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .context("cannot build the certificate verifier (no trusted roots?)")?;
    let recording = Arc::new(Recording {
        inner,
        presented: Mutex::new(Vec::new()),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| anyhow!("'{server_name}' cannot be a TLS server name: {e}"))?;
    let mut conn = ClientConnection::new(Arc::new(config), name).context("TLS client")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut result = Ok(());
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut stream) {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        // Flush our Finished so the server is not left waiting; errors here do not matter.
        let _ = conn.complete_io(&mut stream);
        conn.send_close_notify();
        let _ = conn.write_tls(&mut stream);
        let _ = stream.flush();
    }
    let presented = recording
        .presented
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let now = SystemTime::now();
    let leaf = presented.first().and_then(|c| Cert::parse(c));
    let mut evidence = Vec::new();
    if let Some(c) = &leaf {
        evidence.push(c.describe());
    }
    if presented.len() > 1 {
        evidence.push(format!(
            "the server sent {} intermediate certificate{}",
            presented.len() - 1,
            crate::enrich::plural(presented.len() as u64 - 1)
        ));
    }
    evidence.push(format!("checked against {roots_note}"));
    let Err(e) = result else {
        let version = conn
            .protocol_version()
            .map_or("TLS".to_owned(), |v| format!("{v:?}").replace('_', "."));
        let until = leaf.as_ref().map_or(String::new(), |c| {
            format!(", valid until {}", date(c.not_after))
        });
        return Ok(TlsOutcome {
            failure: None,
            summary: format!(
                "{version} handshake with {server_name} completed; its certificate is trusted and \
                 names it{until}"
            ),
            evidence,
        });
    };
    let tls_error = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    let (cause, summary) = match (&tls_error, &leaf) {
        (Some(rustls::Error::InvalidCertificate(ce)), leaf) => {
            certificate_problem(ce, leaf.as_ref(), server_name, now)
        }
        _ => (
            Cause::TlsHandshakeFailed,
            format!(
                "the TLS handshake with {server_name} failed{}: {e}",
                if presented.is_empty() {
                    " before any certificate was checked"
                } else {
                    ""
                }
            ),
        ),
    };
    // Everything else wrong with the certificate, beyond the first problem webpki stopped at.
    if let Some(c) = &leaf {
        for p in c.problems(server_name, now) {
            if !summary.contains(&p) {
                evidence.push(format!("also: {p}"));
            }
        }
    }
    Ok(TlsOutcome {
        failure: Some(TlsFailure { cause }),
        summary,
        evidence,
    })
}

/// The cause and sentence for a certificate webpki refused.
fn certificate_problem(
    ce: &CertificateError,
    leaf: Option<&Cert>,
    server_name: &str,
    now: SystemTime,
) -> (Cause, String) {
    let clock = format!("the system clock says {}", date(now));
    match (ce, leaf) {
        (CertificateError::Expired | CertificateError::ExpiredContext { .. }, Some(c)) => (
            Cause::CertExpired,
            format!(
                "the certificate of {server_name} expired on {} ({clock})",
                date(c.not_after)
            ),
        ),
        (CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }, Some(c)) => (
            Cause::CertNotYetValid,
            format!(
                "the certificate of {server_name} is valid only from {} ({clock}: is the clock \
                 right?)",
                date(c.not_before)
            ),
        ),
        (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }, c) => (
            Cause::CertNameMismatch,
            format!(
                "the certificate does not name {server_name}: it is for {}",
                c.map_or("other names".to_owned(), |c| c.names_list())
            ),
        ),
        (CertificateError::UnknownIssuer, c) => (
            Cause::CertUnknownIssuer,
            match c {
                Some(c) if c.self_signed() => format!(
                    "the certificate of {server_name} is self-signed ({}), and no trusted CA vouches for it",
                    c.subject
                ),
                Some(c) => format!(
                    "no trusted CA vouches for the certificate of {server_name}: its issuer {} is \
                     not among the trusted roots (or the server does not send the intermediates)",
                    c.issuer
                ),
                None => format!("no trusted CA vouches for the certificate of {server_name}"),
            },
        ),
        (CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }, _) => (
            Cause::CertInvalid,
            format!(
                "the certificate of {server_name} is not for TLS servers: its extended key \
                 usage does not include serverAuth"
            ),
        ),
        // webpki's CaUsedAsEndEntity (rustls passes it on as an opaque error): what
        // `openssl req -x509` makes by default.
        (CertificateError::Other(o), Some(c)) if format!("{o:?}").contains("CaUsedAsEndEntity") => (
            Cause::CertInvalid,
            format!(
                "the certificate of {server_name} is a CA certificate ({}{}), which verifiers \
                 refuse as a server's own: it needs one without basicConstraints CA:TRUE",
                c.subject,
                if c.self_signed() { ", self-signed" } else { "" }
            ),
        ),
        (other, _) => (
            Cause::CertInvalid,
            format!("the certificate of {server_name} was refused: {other:?}"),
        ),
    }
}

/// What netladder reads from a certificate.
#[derive(Debug, Clone)]
pub struct Cert {
    subject: String,
    issuer: String,
    not_before: SystemTime,
    not_after: SystemTime,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    common_name: Option<String>,
}

impl Cert {
    fn parse(der: &CertificateDer<'_>) -> Option<Cert> {
        use x509_parser::extensions::GeneralName;
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let time = |t: &x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        let mut dns_names = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let common_name = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(Cert {
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            not_before: time(&x.validity().not_before),
            not_after: time(&x.validity().not_after),
            dns_names,
            ips,
            common_name,
        })
    }

    fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }

    fn names_list(&self) -> String {
        let mut names: Vec<String> = self.dns_names.clone();
        names.extend(self.ips.iter().map(IpAddr::to_string));
        if names.is_empty() {
            return match &self.common_name {
                Some(cn) => format!(
                    "no subject alternative name (only the common name {cn}, which verifiers ignore)"
                ),
                None => "no name at all".into(),
            };
        }
        names.join(", ")
    }

    fn describe(&self) -> String {
        format!(
            "certificate: subject {}, issuer {}{}, valid {} to {}, names {}",
            self.subject,
            self.issuer,
            if self.self_signed() {
                " (self-signed)"
            } else {
                ""
            },
            date(self.not_before),
            date(self.not_after),
            self.names_list()
        )
    }

    /// Whether the certificate names `host` (DNS names with a leading-label wildcard, or IPs).
    fn names(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
                None => n == host,
            }
        })
    }

    /// Every problem found by reading the certificate alone.
    fn problems(&self, host: &str, now: SystemTime) -> Vec<String> {
        let mut out = Vec::new();
        if now > self.not_after {
            out.push(format!("it expired on {}", date(self.not_after)));
        }
        if now < self.not_before {
            out.push(format!("it is valid only from {}", date(self.not_before)));
        }
        if !self.names(host) {
            out.push(format!(
                "it does not name {host} (it is for {})",
                self.names_list()
            ));
        }
        if self.self_signed() {
            out.push("it is self-signed".into());
        }
        out
    }
}

/// Takes the certificate a server presents and abandons the handshake right there: nothing is
/// trusted, nothing is sent after the ClientHello but the alert that ends it.
#[derive(Debug)]
struct Grab {
    schemes: Vec<rustls::SignatureScheme>,
    leaf: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Grab {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut l) = self.leaf.lock() {
            *l = Some(end_entity.clone().into_owned());
        }
        Err(rustls::Error::General(
            "netladder only reads the certificate".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not verified".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not verified".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// The certificate the server behind `stream` presents for `server_name` (a DNS name, sent as
/// SNI, or an address). `None` when the handshake ended before a certificate came.
pub fn presented_leaf(
    mut stream: TcpStream,
    server_name: &str,
    timeout: Duration,
) -> Result<Option<Cert>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let grab = Arc::new(Grab {
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
        leaf: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(grab.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| anyhow!("'{server_name}' cannot be a TLS server name: {e}"))?;
    let mut conn = ClientConnection::new(Arc::new(config), name).context("TLS client")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    while conn.is_handshaking() {
        if conn.complete_io(&mut stream).is_err() {
            break;
        }
    }
    let leaf = grab.leaf.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(leaf.as_ref().and_then(Cert::parse))
}

/// The reason for OpenSSL's X509_V_ERR `code` with the certificate's own dates and names
/// (`asked`: the name the certificate had to carry; `code` -62: curl's own name check), and the
/// certificate's description. `None` for the summary when the certificate adds nothing to it.
pub fn openssl_detail(
    code: i32,
    cert: &Cert,
    asked: &str,
    now: SystemTime,
) -> (Option<String>, String) {
    let clock = format!("the system clock says {}", date(now));
    // The certificate read now must show the problem OpenSSL reported (it may have changed).
    let consistent = match code {
        10 => now > cert.not_after,
        9 => now < cert.not_before,
        62 | 64 | -62 => !cert.names(asked),
        18 => cert.self_signed(),
        _ => true,
    };
    let summary = match code {
        _ if !consistent => None,
        10 => Some(format!(
            "the server's certificate expired on {} ({clock})",
            date(cert.not_after)
        )),
        9 => Some(format!(
            "the server's certificate is valid only from {} ({clock}: is it right?)",
            date(cert.not_before)
        )),
        62 | 64 | -62 => Some(format!(
            "{}the server's certificate does not name {asked}: it is for {}",
            if code == -62 {
                "curl refused the certificate after OpenSSL accepted its chain: "
            } else {
                ""
            },
            cert.names_list()
        )),
        18 => Some(format!(
            "the server's certificate ({}) is self-signed and the client does not trust it",
            cert.subject
        )),
        2 | 19 | 20 | 21 => Some(format!(
            "the server's certificate was issued by {}, which the client does not trust{}",
            cert.issuer,
            if code == 21 {
                " (or the server does not send its intermediates)"
            } else {
                ""
            }
        )),
        _ => None,
    };
    let mut line = format!("presented {}", cert.describe());
    if !consistent {
        line += " (read after the failure: it does not show the problem OpenSSL reported; the \
                 server's certificate may have changed since)";
    }
    let problems = cert.problems(asked, now);
    if !problems.is_empty() {
        line += &format!(
            "; read against {asked} and the clock: {}",
            problems.join(", ")
        );
    }
    (summary, line)
}

/// "2024-05-01 12:00:00 UTC".
pub fn date(t: SystemTime) -> String {
    if t < UNIX_EPOCH {
        return "a date before 1970".into();
    }
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dns: &[&str], ips: &[&str]) -> Cert {
        Cert {
            subject: "CN=a".into(),
            issuer: "CN=ca".into(),
            not_before: UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            not_after: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            common_name: Some("a".into()),
        }
    }

    #[test]
    fn name_matching() {
        let c = cert(&["www.example.test", "*.api.example.test"], &["10.240.0.1"]);
        assert!(c.names("www.example.test") && c.names("WWW.example.test."));
        assert!(c.names("v1.api.example.test"));
        assert!(!c.names("api.example.test") && !c.names("a.b.api.example.test"));
        assert!(c.names("10.240.0.1") && !c.names("10.240.0.2"));
        assert!(!c.names("example.test"));
    }

    #[test]
    fn problems_and_dates() {
        let c = cert(&["good.test"], &[]);
        let later = UNIX_EPOCH + Duration::from_secs(2_100_000_000);
        let p = c.problems("bad.test", later);
        assert!(
            p[0].starts_with("it expired on 2033-05-18 03:33:20 UTC"),
            "{p:?}"
        );
        assert!(
            p[1].contains("does not name bad.test (it is for good.test)"),
            "{p:?}"
        );
        let early = UNIX_EPOCH + Duration::from_secs(10);
        assert!(c.problems("good.test", early)[0].starts_with("it is valid only from 2001"));
        assert!(c
            .problems("good.test", UNIX_EPOCH + Duration::from_secs(1_500_000_000))
            .is_empty());
        let none = cert(&[], &[]);
        assert!(none.names_list().contains("only the common name a"));
    }
}
