//! One export request to the collector: gRPC (the tonic client stubs of `opentelemetry-proto`)
//! or OTLP/HTTP (a protobuf body in an HTTP/1.1 POST, written here).
use std::str::FromStr as _;

use opentelemetry_proto::tonic::collector::{
    logs::v1::{logs_service_client::LogsServiceClient, ExportLogsServiceRequest},
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{
    metadata::{MetadataKey, MetadataValue},
    transport::Channel,
};

use super::config::{Config, Transport};

/// Why a request was not accepted, and whether trying again could help.
pub struct Failed {
    pub reason: String,
    pub permanent: bool,
}

impl Failed {
    pub fn again(reason: String) -> Self {
        Self {
            reason,
            permanent: false,
        }
    }
}

#[derive(Clone)]
pub enum Client {
    /// The channel connects when first used and again after the collector went away.
    Grpc {
        channel: Channel,
        headers: Vec<(String, String)>,
    },
    Http {
        host: String,
        port: u16,
        logs_path: String,
        metrics_path: String,
        headers: Vec<(String, String)>,
    },
}

impl Client {
    pub fn new(config: &Config) -> Self {
        match &config.transport {
            Transport::Grpc { uri } => {
                // The URI was checked when the configuration was read.
                let endpoint = Channel::from_shared(uri.clone())
                    .expect("a valid gRPC endpoint")
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout);
                Client::Grpc {
                    channel: endpoint.connect_lazy(),
                    headers: config.headers.clone(),
                }
            }
            Transport::Http {
                host,
                port,
                logs_path,
                metrics_path,
            } => Client::Http {
                host: host.clone(),
                port: *port,
                logs_path: logs_path.clone(),
                metrics_path: metrics_path.clone(),
                headers: config.headers.clone(),
            },
        }
    }

    pub async fn logs(&self, request: ExportLogsServiceRequest) -> Result<(), Failed> {
        match self {
            Client::Grpc { channel, headers } => {
                let mut client = LogsServiceClient::new(channel.clone());
                let answer = client.export(grpc_request(request, headers)).await;
                grpc_outcome(answer.map(|a| {
                    a.into_inner()
                        .partial_success
                        .map(|p| (p.rejected_log_records, p.error_message))
                }))
            }
            Client::Http {
                logs_path, headers, ..
            } => self.post(logs_path, request.encode_to_vec(), headers).await,
        }
    }

    pub async fn metrics(&self, request: ExportMetricsServiceRequest) -> Result<(), Failed> {
        match self {
            Client::Grpc { channel, headers } => {
                let mut client = MetricsServiceClient::new(channel.clone());
                let answer = client.export(grpc_request(request, headers)).await;
                grpc_outcome(answer.map(|a| {
                    a.into_inner()
                        .partial_success
                        .map(|p| (p.rejected_data_points, p.error_message))
                }))
            }
            Client::Http {
                metrics_path,
                headers,
                ..
            } => {
                self.post(metrics_path, request.encode_to_vec(), headers)
                    .await
            }
        }
    }

    /// One POST on a connection of its own (`Connection: close`); the answer's status decides.
    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<(), Failed> {
        let Client::Http { host, port, .. } = self else {
            unreachable!("post is for OTLP/HTTP")
        };
        let connect_host = host.trim_start_matches('[').trim_end_matches(']');
        let mut stream = tokio::net::TcpStream::connect((connect_host, *port))
            .await
            .map_err(|e| Failed::again(format!("cannot connect to {host}:{port}: {e}")))?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: netladder/{}\r\n",
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let io = |e: std::io::Error| Failed::again(format!("{host}:{port}: {e}"));
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(&body).await.map_err(io)?;
        // The status line is all that is needed; the rest of the answer is read to its end (at
        // most 64 KiB) so the collector sees the exchange complete.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 || answer.len() > 65536 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failed::again(format!("{host}:{port}{path}: no HTTP answer")))?;
        match status {
            200..=299 => Ok(()),
            // The specification's retryable answers.
            429 | 502 | 503 | 504 => Err(Failed::again(format!(
                "{host}:{port}{path} answered {status}"
            ))),
            _ => Err(Failed {
                reason: format!("{host}:{port}{path} refused the records: HTTP {status}"),
                permanent: true,
            }),
        }
    }
}

fn grpc_request<T>(message: T, headers: &[(String, String)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (k, v) in headers {
        // Checked when read (no control characters); a key gRPC refuses is left out.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_str(&k.to_ascii_lowercase()),
            MetadataValue::from_str(v),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    request
}

/// The outcome of a gRPC export; a partial success that rejected some counts as sent (the
/// collector has answered and will not take them on a retry either), with its message kept.
fn grpc_outcome(answer: Result<Option<(i64, String)>, tonic::Status>) -> Result<(), Failed> {
    use tonic::Code;
    match answer {
        Ok(_) => Ok(()),
        Err(status) => {
            let retryable = matches!(
                status.code(),
                Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss
                    | Code::ResourceExhausted
                    | Code::Unknown
            );
            let reason = format!("gRPC {:?}: {}", status.code(), status.message());
            Err(Failed {
                reason,
                permanent: !retryable,
            })
        }
    }
}
