//! Command line.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "netladder",
    version,
    about = "Tells why network connections fail, while they fail (eBPF)",
    long_about = "netladder watches the kernel with eBPF and reports each failed connection with its \
                  ladder code (#021-#030), the layer that broke, the process, the evidence the kernel \
                  showed and the next step to take."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream one event per failed connection, as it fails.
    Watch(WatchArgs),
    /// Load and attach every program, show which hooks this kernel allows and what is degraded.
    Hooks(HooksArgs),
    /// Write the man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    Assets {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Walk the ladder for one target, link to application, and name the first broken rung.
    #[command(after_help = DIAGNOSE_EXIT)]
    Diagnose(DiagnoseArgs),
    /// Explain a ladder code (#021-#030): meaning, causes, detection, commands to confirm it.
    Explain(ExplainArgs),
}

/// The exit statuses of `diagnose`, shown by `netladder diagnose --help`.
pub const DIAGNOSE_EXIT: &str = "A name's addresses (at most 4, in the resolver's order) are each \
tried; the checklist shows the first that works, else the first tried, and the verdict names the \
addresses that failed.\n\nExit status: 0 the target is reachable (every rung passed; warnings \
allowed; for a name, at least one of its addresses works); 1 bad target or environment (one line on \
stderr); 2 bad command line; 3 a rung failed: the target is not reachable, the verdict names the \
code.";

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    /// HOST[:PORT], [IPV6]:PORT or an address; the port defaults to 443 with --tls, else 80.
    #[arg(value_name = "HOST[:PORT]")]
    pub target: String,
    /// Also make a TLS handshake and check the certificate (implied on port 443).
    #[arg(long)]
    pub tls: bool,
    /// Trust this CA certificate (PEM) for --tls, besides the system's roots (repeatable).
    #[arg(long, value_name = "PEM")]
    pub ca: Vec<PathBuf>,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the TCP connection (and for the TLS handshake).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub hooks: HookOpts,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The code: 021, 21, #021 or a short name such as refused; none lists them all.
    #[arg(value_name = "CODE")]
    pub code: Option<String>,
    /// Print JSON (an array without CODE).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct HookOpts {
    /// Do not try the optional hooks (fexit), even where the kernel allows them.
    #[arg(long)]
    pub no_optional_hooks: bool,
    /// Do not attach this program (a name from `netladder hooks`), e.g. to shed its cost;
    /// what it would have shown is reported as degraded (repeatable).
    #[arg(long, value_name = "PROGRAM")]
    pub skip_hook: Vec<String>,
    /// Also attach the programs every task on the host pays for, network or not: the ssh rung
    /// (#030) on write(), sendto() and open (fentry/fexit where the kernel allows it), and where
    /// it refuses fentry/fexit the syscall tracepoint programs, which also read listen()
    /// failures, bind() failures the bind programs cannot tell (#027) and connect() failures
    /// other than routing and local ports; while one of those is attached every system call of
    /// every task takes the kernel's slow path.
    #[arg(long)]
    pub syscall_hooks: bool,
    /// Benchmarks only (hidden): attach every program as usual, but make each one return at
    /// once, so that nothing is reported. `cargo xtask bench` measures with it what the hooks
    /// themselves cost the host, before any program does its work.
    #[arg(long, hide = true)]
    pub empty_programs: bool,
}

#[derive(Args, Debug)]
pub struct HooksArgs {
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hooks: HookOpts,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Print JSON Lines (schema in README.md) instead of human lines.
    #[arg(long)]
    pub json: bool,
    /// Create this file once every program is attached (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Stop by itself after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Only failures of these process ids (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only failures of processes with this command name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only failures whose source or destination port is this (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only failures in this network namespace: an inode number, a name under /run/netns, or a
    /// path such as /proc/PID/ns/net (repeatable).
    #[arg(long, value_name = "NETNS")]
    pub netns: Vec<String>,
    /// Only these ladder codes, e.g. 021 or 21 or refused (repeatable).
    #[arg(long, value_name = "CODE")]
    pub code: Vec<String>,
    /// Name the exact nftables rule with the kernel's own trace: a flow that fails on a
    /// firewall drop is traced from then on (its own table `inet netladder_trace_PID`, removed on
    /// exit), and its next failures name the rule and chain the trace saw drop it.
    #[arg(long)]
    pub trace_firewall: bool,
    /// When a TLS client refuses a certificate (#025), connect to that server with a handshake
    /// of netladder's own to read the certificate it presents: its dates and names go into the
    /// event. Off by default: `watch` makes no connection of its own, and the event carries the
    /// reason the client's TLS library gave.
    #[arg(long)]
    pub probe_tls: bool,
    /// At exit, say what each of netladder's programs cost since it was ready: runs and time in
    /// the kernel. This turns on the kernel's BPF run-time statistics while watch runs, which
    /// adds two clock reads to every run of every BPF program on the host (netladder's or not):
    /// for measuring, not for leaving on.
    #[arg(long)]
    pub program_costs: bool,
    /// Show the hook table at start, and where the start's time went: each phase of loading and
    /// the programs that took longest (mostly the kernel's verifier), with the instructions
    /// the verifier went through for each where the kernel says (5.16+).
    #[arg(short, long)]
    pub verbose: bool,
    /// Warn (#028, before connects fail) when TIME_WAIT sockets toward one destination hold more
    /// than this share of the local port range; 0 turns the check off. Checked every
    /// --stats-interval in the watched namespace (the one --netns, else netladder's own).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5)]
    pub tw_warn_share: f64,
    /// Seconds between lost-event reports (printed only when something was lost); also the
    /// least time between two reports of one listener whose accept queue overflows (#023,
    /// server side; at least 1).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub stats_interval: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT or a port; 127.0.0.1:9464
    /// when no address is given).
    /// Given twice, the last one counts.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, overrides_with = "metrics",
          default_missing_value = crate::metrics::DEFAULT_ADDR, value_parser = crate::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Send every failure as an OTLP log record, and the counters --metrics serves as OTLP
    /// metrics, to an OpenTelemetry collector: http://HOST:PORT for gRPC, a URL with a path
    /// (http://HOST:4318/v1/logs) for OTLP/HTTP with protobuf bodies. Plain http only. Without a
    /// value: $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4317. Also read:
    /// OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_TIMEOUT,
    /// OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, OTEL_METRIC_EXPORT_INTERVAL and the
    /// OTEL_BLRP_* batch settings.
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "")]
    pub otlp: Option<String>,
    /// Distinct values kept per open-ended metric label (comm, netns, container, pod, firewall
    /// chain); later values are counted as "other".
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub metrics_label_limit: usize,
    /// Append the lines to this file instead of stdout; it is reopened when rotated away (renamed
    /// or deleted) and on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Journald-friendly lines: human lines with <N> priority prefixes (the default when stdout
    /// is the journal and neither --json nor --output is given).
    #[arg(long, conflicts_with = "json")]
    pub journal: bool,
    /// Only failures from this container: a container id (or its first 12+ digits) or name
    /// (repeatable).
    #[arg(long, value_name = "ID|NAME")]
    pub container: Vec<String>,
    /// Only failures from this Kubernetes pod: NAME, NAMESPACE/NAME or the pod UID (repeatable).
    #[arg(long, value_name = "POD")]
    pub pod: Vec<String>,
    #[command(flatten)]
    pub hooks: HookOpts,
}
