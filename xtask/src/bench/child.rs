//! Child processes the bench starts, its scratch directory, and how Ctrl-C stops them all.

use std::fs::{self, File};
use std::io;
use std::mem;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::POLL;
use crate::cmd;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP make the bench stop its children and return an error.
pub(super) fn install_stop_handlers() -> Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic is valid.
        let rc = unsafe {
            let mut action: libc::sigaction = mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("cannot install a signal handler");
        }
    }
    Ok(())
}

pub(super) fn stop_requested() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted; every process the bench started has been stopped");
    }
    Ok(())
}

/// A child process that is stopped (SIGINT, then SIGKILL) when dropped, and that gets SIGTERM
/// from the kernel if the bench itself dies.
pub(super) struct Guarded {
    child: Child,
    what: &'static str,
}

impl Guarded {
    pub(super) fn spawn(
        command: &mut Command,
        what: &'static str,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<Guarded> {
        let out =
            File::create(stdout).with_context(|| format!("cannot create {}", stdout.display()))?;
        let err =
            File::create(stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(command)))?;
        Ok(Guarded { child, what })
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until `ready()` holds; fails if the child exits first, the time is up or the bench
    /// is interrupted. `stderr` is the child's stderr file, quoted in the error.
    pub(super) fn wait_until(
        &mut self,
        timeout: Duration,
        stderr: &Path,
        ready: impl Fn() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready{}",
                    self.what,
                    last_line(stderr)
                );
            }
            stop_requested()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready after {} s{}",
                    self.what,
                    timeout.as_secs(),
                    last_line(stderr)
                );
            }
            sleep(POLL);
        }
    }

    /// Waits for the child to exit on its own.
    pub(super) fn wait_for(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.wait_sampling(timeout, || {})
    }

    /// Waits for the child to exit on its own, calling `sample` every poll meanwhile.
    pub(super) fn wait_sampling(
        &mut self,
        timeout: Duration,
        mut sample: impl FnMut(),
    ) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            sample();
            stop_requested()?;
            if Instant::now() >= deadline {
                bail!("{} did not exit within {} s", self.what, timeout.as_secs());
            }
            sleep(POLL);
        }
    }

    /// Sends SIGINT (again every few seconds, in case one arrived before the child's handler was
    /// in place) until the child exits or `timeout` passes.
    pub(super) fn interrupt_and_wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        const RESEND: Duration = Duration::from_secs(5);
        let deadline = Instant::now() + timeout;
        loop {
            self.signal(libc::SIGINT);
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_for(left.min(RESEND)) {
                Ok(status) => return Ok(status),
                Err(err) if STOP.load(Ordering::SeqCst) => return Err(err),
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => bail!(
                    "{} did not exit within {} s of SIGINT",
                    self.what,
                    timeout.as_secs()
                ),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), signal) };
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            sleep(POLL);
        }
        eprintln!("bench: {} ignored SIGINT; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private scratch directory, removed with everything in it when dropped.
pub(super) struct WorkDir {
    pub(super) path: PathBuf,
}

impl WorkDir {
    const PREFIX: &'static str = "netladder-bench-";

    /// Creates this run's directory, after removing those of earlier runs that were killed.
    pub(super) fn create() -> Result<WorkDir> {
        let tmp = std::env::temp_dir();
        Self::remove_stale(&tmp);
        let path = tmp.join(format!("{}{}", Self::PREFIX, std::process::id()));
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path })
    }

    /// Removes `netladder-bench-PID` directories whose process no longer exists.
    fn remove_stale(tmp: &Path) {
        let Ok(entries) = fs::read_dir(tmp) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(Self::PREFIX)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                if let Err(err) = fs::remove_dir_all(entry.path()) {
                    eprintln!("bench: cannot remove {}: {err}", entry.path().display());
                }
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("bench: cannot remove {}: {err}", self.path.display());
        }
    }
}

pub(super) fn last_line(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default()
}

pub(super) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
