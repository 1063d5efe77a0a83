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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream one event per failed connection, as it fails.
    Watch(WatchArgs),
    /// Load and attach every program, show which hooks this kernel allows and what is degraded.
    Hooks(HooksArgs),
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
    /// Show the hook table at start.
    #[arg(short, long)]
    pub verbose: bool,
    /// Warn (#028, before connects fail) when TIME_WAIT sockets toward one destination hold more
    /// than this share of the local port range; 0 turns the check off. Checked every
    /// --stats-interval in the watched namespace (the one --netns, else netladder's own).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5)]
    pub tw_warn_share: f64,
    /// Seconds between lost-event reports (printed only when something was lost).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub stats_interval: f64,
    #[command(flatten)]
    pub hooks: HookOpts,
}
