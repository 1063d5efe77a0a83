//! `cargo xtask test`: unit tests and scenario tests on this host.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::build::Artifacts;
use crate::cmd;
use crate::libtest::{self, Counts};

pub struct HostSummary {
    pub counts: Counts,
    pub success: bool,
}

impl HostSummary {
    pub fn exit_code(&self) -> ExitCode {
        if self.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo test` for the workspace (the eBPF crate only builds for the BPF target), every
/// test binary even after a failure, echoing its output and adding up libtest's result lines.
pub fn run(artifacts: &Artifacts) -> Result<HostSummary> {
    let mut command = Command::new("cargo");
    command
        .current_dir(cmd::workspace_root())
        .args([
            "test",
            "--workspace",
            "--exclude",
            "netladder-ebpf",
            "--release",
            "--no-fail-fast",
        ])
        .env("NETLADDER_BIN", &artifacts.netladder)
        .env("NL_PEER_BIN", &artifacts.nl_peer)
        .stdout(Stdio::piped());
    if !cmd::is_root() {
        println!("test: not root: the scenario tests will skip (run as root to exercise them)");
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::describe(&command)))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo test has no stdout pipe")?;
    let mut counts = Counts::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(c) = libtest::parse_summary(&line) {
            counts.add(c);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "host tests: {} passed, {} failed, {} ignored",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(HostSummary {
        counts,
        success: status.success(),
    })
}
