//! Small helpers for running external programs with one-line errors.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};

/// `work` on every item, `jobs` at a time (at least one): each thread takes the next item when
/// it is done with one, so a long item does not hold the others up. The results come back in
/// the items' order.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let queue = Mutex::new(items.iter().enumerate());
    let done = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some((i, item)) = next else { break };
                let result = work(item);
                done.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((i, result));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

/// `cargo`, without the variables cargo set for this xtask process (`CARGO_PKG_NAME=xtask`,
/// `CARGO_MANIFEST_DIR`, ...). Build scripts such as ring's rerun when those change, so leaving
/// them in would rebuild ring, rustls and netladder-user every time a build alternates between
/// `cargo xtask ...` and a plain `cargo ...`.
pub fn cargo() -> Command {
    let mut command = Command::new("cargo");
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if is_package_variable(&key) {
            command.env_remove(&*key);
        }
    }
    command
}

/// The variables cargo sets for the package it runs (not CARGO itself, nor CARGO_HOME and other
/// configuration).
fn is_package_variable(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "OUT_DIR"
        )
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs `program` as root: directly when we are root, through sudo otherwise.
/// `env` is passed explicitly because sudo does not keep the caller's environment.
pub fn privileged(program: &str, env: &[(&str, &str)]) -> Command {
    if is_root() {
        let mut cmd = Command::new(program);
        cmd.envs(env.iter().copied());
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("env");
        cmd.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        cmd.arg(program);
        cmd
    }
}

/// `program arg1 arg2 ...`, shortened for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    const MAX: usize = 160;
    if text.chars().count() > MAX {
        text = text.chars().take(MAX).collect::<String>() + " ...";
    }
    text
}

/// Runs `cmd` with inherited stdio and fails when it does not exit successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; on failure the error carries the last line of stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        bail!(
            "`{}` failed ({}){}",
            describe(cmd),
            out.status,
            last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", describe(cmd)))
}

/// Runs `cmd` and returns its stdout whatever the exit status (for probes such as dpkg-query,
/// which exits 1 when some package is unknown). None when the program cannot be started.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_the_items_order_and_runs_each_once() {
        let items: Vec<u64> = (0..20).collect();
        let out = parallel(&items, 3, |&i| {
            std::thread::sleep(std::time::Duration::from_millis((20 - i) % 7));
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(parallel(&items[..2], 0, |&i| i), vec![0, 1]);
    }

    #[test]
    fn package_variables_are_told_from_configuration() {
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "OUT_DIR",
        ] {
            assert!(is_package_variable(key), "{key}");
        }
        for key in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_package_variable(key), "{key}");
        }
    }
}
