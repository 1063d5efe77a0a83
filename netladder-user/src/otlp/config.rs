//! Where the exporter sends and how: `--otlp ENDPOINT`, and the environment variables the
//! OpenTelemetry specification names for exporters.
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// How the records travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// OTLP over gRPC (HTTP/2 without TLS) to this `http://host:port` URI.
    Grpc { uri: String },
    /// OTLP/HTTP, protobuf bodies, HTTP/1.1 POSTs to these paths.
    Http {
        host: String,
        port: u16,
        logs_path: String,
        metrics_path: String,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub transport: Transport,
    /// Extra request headers (gRPC metadata): `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: Vec<(String, String)>,
    /// Resource attributes: netladder's own, then `OTEL_RESOURCE_ATTRIBUTES`, then
    /// `OTEL_SERVICE_NAME` (a later one replaces an earlier one of the same key).
    pub resource: Vec<(String, String)>,
    /// One request's time bound: `OTEL_EXPORTER_OTLP_TIMEOUT` (ms, default 10000).
    pub timeout: Duration,
    /// Records waiting at most: `OTEL_BLRP_MAX_QUEUE_SIZE` (default 2048).
    pub queue: usize,
    /// Records in one request at most: `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE` (default 512).
    pub batch: usize,
    /// The longest a record waits for its batch: `OTEL_BLRP_SCHEDULE_DELAY` (ms, default 1000).
    pub batch_delay: Duration,
    /// Between two metric exports: `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60000).
    pub metric_interval: Duration,
}

pub const DEFAULT_GRPC: &str = "http://localhost:4317";

impl Config {
    /// The configuration from `--otlp`'s value (`None`: the flag without one) and the
    /// environment as `env` reads it.
    pub fn new(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let endpoint = flag
            .map(str::to_owned)
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_GRPC.to_owned());
        let protocol = var("OTEL_EXPORTER_OTLP_PROTOCOL");
        let transport = transport(endpoint.trim(), protocol.as_deref())?;
        let headers = match var("OTEL_EXPORTER_OTLP_HEADERS") {
            Some(h) => pairs(&h).context("OTEL_EXPORTER_OTLP_HEADERS")?,
            None => Vec::new(),
        };
        for (k, v) in &headers {
            let bad = |s: &str| s.chars().any(|c| c.is_control());
            if k.is_empty() || bad(k) || bad(v) || k.contains(':') || k.contains(' ') {
                bail!("OTEL_EXPORTER_OTLP_HEADERS: {k:?} is not a valid header");
            }
        }
        let mut resource = vec![
            ("service.name".to_owned(), "netladder".to_owned()),
            (
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            ("host.name".to_owned(), host_name()),
        ];
        if let Some(r) = var("OTEL_RESOURCE_ATTRIBUTES") {
            for (k, v) in pairs(&r).context("OTEL_RESOURCE_ATTRIBUTES")? {
                set(&mut resource, k, v);
            }
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            set(&mut resource, "service.name".to_owned(), name);
        }
        let ms = |name: &str, default: u64| -> Result<Duration> {
            Ok(Duration::from_millis(number(name, var(name), default)?))
        };
        Ok(Self {
            transport,
            headers,
            resource,
            timeout: ms("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
            queue: number(
                "OTEL_BLRP_MAX_QUEUE_SIZE",
                var("OTEL_BLRP_MAX_QUEUE_SIZE"),
                2048,
            )? as usize,
            batch: number(
                "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
                var("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"),
                512,
            )? as usize,
            batch_delay: ms("OTEL_BLRP_SCHEDULE_DELAY", 1000)?,
            metric_interval: ms("OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
        })
    }

    /// The endpoint, as messages name it.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Grpc { uri } => format!("{uri} (gRPC)"),
            Transport::Http {
                host,
                port,
                logs_path,
                ..
            } => format!("http://{host}:{port}{logs_path} (OTLP/HTTP)"),
        }
    }
}

fn set(list: &mut Vec<(String, String)>, key: String, value: String) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key, value)),
    }
}

/// A positive whole number from the environment, else `default`.
fn number(name: &str, value: Option<String>, default: u64) -> Result<u64> {
    match value {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{name}={v}: not a positive whole number"),
        },
    }
}

/// The transport for `endpoint`: a URL with a path (other than `/`) is OTLP/HTTP, and so is any
/// endpoint when `OTEL_EXPORTER_OTLP_PROTOCOL` is `http/protobuf`; otherwise gRPC.
fn transport(endpoint: &str, protocol: Option<&str>) -> Result<Transport> {
    let bad = |why: &str| anyhow::anyhow!("--otlp {endpoint}: {why}");
    let rest = if let Some(rest) = endpoint.strip_prefix("http://") {
        rest
    } else if endpoint.starts_with("https://") {
        return Err(bad(
            "https is not supported (netladder sends OTLP without TLS); use http:// to a \
             collector on this host or in its cluster",
        ));
    } else {
        return Err(bad("not an http://HOST:PORT[/PATH] URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("no host (or a user name, which is not supported)"));
    }
    let http = match protocol.map(str::trim) {
        None => !(path.is_empty() || path == "/"),
        Some("grpc") => false,
        Some("http/protobuf") => true,
        Some(other) => {
            bail!("OTEL_EXPORTER_OTLP_PROTOCOL={other}: not supported (grpc or http/protobuf)")
        }
    };
    let (host, port) = host_port(authority, if http { 4318 } else { 4317 })
        .ok_or_else(|| bad("the host or port is not valid"))?;
    if !http {
        if !(path.is_empty() || path == "/") {
            return Err(bad("gRPC takes no path"));
        }
        return Ok(Transport::Grpc {
            uri: format!("http://{authority}"),
        });
    }
    // The base the signal paths go under: a path naming one signal's path, or `/v1/`, stands
    // for its base.
    let mut base = path.trim_end_matches('/');
    for tail in ["/v1/logs", "/v1/metrics", "/v1"] {
        if let Some(b) = base.strip_suffix(tail) {
            base = b;
            break;
        }
    }
    if base.contains(['?', '#', ' ']) {
        return Err(bad("a query or fragment is not supported"));
    }
    Ok(Transport::Http {
        host,
        port,
        logs_path: format!("{base}/v1/logs"),
        metrics_path: format!("{base}/v1/metrics"),
    })
}

/// `host:port`, `[v6]:port`, or a host alone (`default` port).
fn host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default),
        }
    };
    (!host.is_empty() && port != 0).then_some((host, port))
}

/// `key=value,key2=value2`, each part percent-decoded (the W3C Baggage form the specification
/// uses for these variables).
fn pairs(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("{part:?} is not key=value");
        };
        let k = percent_decode(k.trim()).with_context(|| format!("in {part:?}"))?;
        let v = percent_decode(v.trim()).with_context(|| format!("in {part:?}"))?;
        if k.is_empty() {
            bail!("{part:?} has no key");
        }
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                bail!("a % is not followed by two hex digits");
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("not UTF-8 once decoded")
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn endpoints_choose_the_transport() {
        let c = Config::new(None, env(&[])).unwrap();
        assert_eq!(
            c.transport,
            Transport::Grpc {
                uri: "http://localhost:4317".into()
            }
        );
        let c = Config::new(Some("http://127.0.0.1:4318/v1/logs"), env(&[])).unwrap();
        assert_eq!(
            c.transport,
            Transport::Http {
                host: "127.0.0.1".into(),
                port: 4318,
                logs_path: "/v1/logs".into(),
                metrics_path: "/v1/metrics".into(),
            }
        );
        let c = Config::new(Some("http://[::1]/otlp/v1/"), env(&[])).unwrap();
        assert_eq!(
            c.transport,
            Transport::Http {
                host: "[::1]".into(),
                port: 4318,
                logs_path: "/otlp/v1/logs".into(),
                metrics_path: "/otlp/v1/metrics".into(),
            }
        );
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        let c = Config::new(None, e).unwrap();
        assert!(matches!(c.transport, Transport::Http { port: 4318, .. }));
        // The flag wins over the environment.
        let e = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1")]);
        let c = Config::new(Some("http://b:2"), e).unwrap();
        assert_eq!(
            c.transport,
            Transport::Grpc {
                uri: "http://b:2".into()
            }
        );
        for bad in [
            "https://x:4317",
            "x:4317",
            "http://",
            "http://h:notaport",
            "http://h:0",
        ] {
            assert!(Config::new(Some(bad), env(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_and_resource_attributes_from_the_environment() {
        let e = env(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcret, x-team = net",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=edge%20probe",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ]);
        let c = Config::new(None, e).unwrap();
        assert_eq!(
            c.headers,
            [
                ("api-key".to_owned(), "s=cret".to_owned()),
                ("x-team".to_owned(), "net".to_owned())
            ]
        );
        let get = |k: &str| {
            c.resource
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("edge probe"));
        assert_eq!(get("deployment.environment"), Some("prod"));
        assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert!(get("host.name").is_some_and(|h| !h.is_empty()));
        assert_eq!(c.metric_interval, Duration::from_secs(1));
        let e = env(&[
            ("OTEL_SERVICE_NAME", "nl"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=x"),
        ]);
        let c = Config::new(None, e).unwrap();
        assert!(c.resource.contains(&("service.name".into(), "nl".into())));
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ] {
            assert!(Config::new(None, env(&[(k, v)])).is_err(), "{k}={v}");
        }
    }
}
