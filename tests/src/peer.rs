//! The `nl-peer` program as a real TCP listener and client.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{peer_bin, Netns};

/// How long a listener may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one `connect` run (the kernel's default SYN retries give up after ~130 s).
const CONNECT_LIMIT: Duration = Duration::from_secs(180);

/// A running `nl-peer listen`; killed and reaped on drop.
pub struct Peer {
    child: Child,
    addr: String,
}

impl Peer {
    /// Starts `nl-peer listen ADDR EXTRA_ARGS...` in `ns` (None: the host namespace, loopback
    /// addresses only) and waits up to 10 s for its `ready` line. Extra args: `--v6only` (an
    /// IPv6 listener is dual-stack without it), `--reuseaddr`, `--backlog N`, `--no-accept`
    /// (never accept: the accept queue fills). When it cannot listen (e.g. `error EADDRINUSE 98`), the error
    /// message contains nl-peer's stdout line and its stderr.
    pub fn listen(ns: Option<&Netns>, addr: &str, extra_args: &[&str]) -> Result<Peer> {
        let mut child = peer_command(ns)
            .arg("listen")
            .arg(addr)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning nl-peer listen {addr}"))?;
        let first_line = read_first_line(&mut child, READY_TIMEOUT);
        match first_line.as_deref().and_then(|l| l.strip_prefix("ready ")) {
            Some(bound) => Ok(Peer {
                addr: bound.trim().to_string(),
                child,
            }),
            None => {
                let _ = child.kill();
                let stderr = drain(child.stderr.take());
                let _ = child.wait();
                bail!(
                    "nl-peer listen {addr}{}: {}; stderr: {}",
                    ns.map(|n| format!(" in {}", n.name())).unwrap_or_default(),
                    first_line.unwrap_or_else(|| "no ready line within 10 s".to_string()),
                    stderr.trim()
                )
            }
        }
    }

    /// The address the listener is bound to, as printed by nl-peer (`ip:port`, `[ip6]:port`);
    /// useful after listening on port 0.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The listener's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // It may already be gone (its namespace was deleted first); both calls are then harmless.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `nl-peer connect` run printed.
#[derive(Debug)]
pub struct ConnectOutcome {
    /// One line per attempt: `ok`, `error <ERRNO_NAME> <errno>` or `error TIMEOUT_APP 0`.
    pub lines: Vec<String>,
    /// Success only when every attempt connected.
    pub status: ExitStatus,
    /// nl-peer's stderr (usage errors).
    pub stderr: String,
}

/// Runs `nl-peer connect ADDR EXTRA_ARGS...` in `ns` (None: the host namespace, loopback
/// addresses only) and waits for it (at most 180 s). Extra args: `--timeout SECS` (the
/// application gives up: `error TIMEOUT_APP 0`), `--bind ADDR`, `--count N`, `--nonblocking`,
/// `--epoll`, `--close-at-once` (prints `abandoned`), `--hold SECS` (keep the connections open
/// that long before exiting). The client matrix (`clients.rs`) runs it too.
pub fn connect(ns: Option<&Netns>, addr: &str, extra_args: &[&str]) -> Result<ConnectOutcome> {
    let mut cmd = peer_command(ns);
    cmd.arg("connect").arg(addr).args(extra_args);
    let (status, stdout, stderr) = output_within(&mut cmd, CONNECT_LIMIT)
        .with_context(|| format!("nl-peer connect {addr}"))?;
    Ok(ConnectOutcome {
        lines: stdout.lines().map(str::to_string).collect(),
        status,
        stderr,
    })
}

fn peer_command(ns: Option<&Netns>) -> Command {
    match ns {
        Some(ns) => ns.command(peer_bin()),
        None => Command::new(peer_bin()),
    }
}

/// The child's first stdout line, or None on EOF or when `timeout` passes first.
fn read_first_line(child: &mut Child, timeout: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        if matches!(read, Ok(n) if n > 0) {
            // The receiver may have timed out and gone; then nobody wants the line.
            let _ = tx.send(line.trim_end().to_string());
        }
    });
    rx.recv_timeout(timeout).ok()
}

/// Reads a pipe to its end, lossily as UTF-8 (empty for no pipe or a read error).
fn drain(pipe: Option<impl Read>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs `cmd` to completion, killing it after `limit`. Returns (status, stdout, stderr).
fn output_within(cmd: &mut Command, limit: Duration) -> Result<(ExitStatus, String, String)> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning")?;
    wait_within(child, limit)
}

/// Waits for a child spawned with piped stdout and stderr, killing it after `limit`. Returns
/// (status, stdout, stderr); an error (with what it printed) when it had to be killed.
pub(crate) fn wait_within(
    mut child: Child,
    limit: Duration,
) -> Result<(ExitStatus, String, String)> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader = thread::spawn(move || drain(stdout));
    let err_reader = thread::spawn(move || drain(stderr));
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        bail!("still running after {limit:?}, killed; stdout: {stdout:?}; stderr: {stderr:?}");
    }
    Ok((status, stdout, stderr))
}
