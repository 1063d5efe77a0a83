//! The host-tax loads (`xtask bench-load KIND`, started by the bench as a child of its own): tight
//! loops of cheap syscalls that a host runs all day, timed by the child itself. Each prints one
//! JSON line: `{"load":..,"ops":..,"secs":..,"rate":..,"user":..,"sys":..}` (ops per second;
//! user and system CPU seconds of the whole process during the timed loop).
//!
//! - `read-write`: read one byte from /dev/zero, write it to /dev/null (one op = both calls);
//! - `open-close`: open a file read-only and close it again (one op = both calls);
//! - `echo`: one established TCP connection on 127.0.0.1; the client sends a small message with
//!   send() and waits with recv() until it came back; a thread of the same process echoes it with
//!   read() and write() (one op = one round trip). Nothing leaves the loopback interface.
//!
//! The loops call libc directly and read the clock once every 256 ops, so the process spends
//! its time in the kernel, where a tracer's cost lands.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// The ops between two clock reads.
const BATCH: u64 = 256;
/// The echo load's message size in bytes.
pub(super) const ECHO_BYTES: usize = 32;

/// One host-tax load.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadKind {
    /// One-byte read() from /dev/zero and write() to /dev/null.
    ReadWrite,
    /// open() and close() of a file.
    OpenClose,
    /// Small send()/recv() round trips on one loopback TCP connection.
    Echo,
}

impl LoadKind {
    pub(super) const ALL: [LoadKind; 3] =
        [LoadKind::ReadWrite, LoadKind::OpenClose, LoadKind::Echo];

    pub(super) fn arg(self) -> &'static str {
        match self {
            LoadKind::ReadWrite => "read-write",
            LoadKind::OpenClose => "open-close",
            LoadKind::Echo => "echo",
        }
    }
}

/// Arguments of the hidden `xtask bench-load` child mode.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Which load to run.
    #[arg(value_enum)]
    kind: LoadKind,
    /// How long to run it, in seconds.
    #[arg(long)]
    seconds: f64,
    /// The file the open-close load opens (it must exist).
    #[arg(long)]
    file: Option<PathBuf>,
}

/// Runs one load and prints its JSON line.
pub fn run(args: &LoadArgs) -> Result<ExitCode> {
    ensure!(
        (0.1..=600.0).contains(&args.seconds),
        "--seconds must be 0.1..=600"
    );
    let length = Duration::from_secs_f64(args.seconds);
    let report = match args.kind {
        LoadKind::ReadWrite => read_write(length)?,
        LoadKind::OpenClose => {
            let file = args
                .file
                .as_ref()
                .context("the open-close load needs --file")?;
            open_close(file, length)?
        }
        LoadKind::Echo => echo(length)?,
    };
    println!("{}", report.json(args.kind));
    Ok(ExitCode::SUCCESS)
}

/// What one timed loop did.
struct Report {
    ops: u64,
    secs: f64,
    user: f64,
    sys: f64,
}

impl Report {
    fn json(&self, kind: LoadKind) -> String {
        serde_json::json!({
            "load": kind.arg(),
            "ops": self.ops,
            "secs": self.secs,
            "rate": self.ops as f64 / self.secs.max(1e-9),
            "user": self.user,
            "sys": self.sys,
        })
        .to_string()
    }
}

/// User and system CPU seconds of the whole process so far.
fn cpu_times() -> Result<(f64, f64)> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(io::Error::last_os_error()).context("getrusage failed");
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((secs(usage.ru_utime), secs(usage.ru_stime)))
}

/// Runs `op` in batches until `length` has passed; returns the ops done, the time and the CPU.
fn timed(length: Duration, mut op: impl FnMut() -> Result<()>) -> Result<Report> {
    let (user0, sys0) = cpu_times()?;
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < length {
        for _ in 0..BATCH {
            op()?;
        }
        ops += BATCH;
    }
    let secs = start.elapsed().as_secs_f64();
    let (user1, sys1) = cpu_times()?;
    Ok(Report {
        ops,
        secs,
        user: user1 - user0,
        sys: sys1 - sys0,
    })
}

fn check(rc: isize, what: &str) -> Result<()> {
    if rc != 1 {
        bail!("{what} returned {rc}: {}", io::Error::last_os_error());
    }
    Ok(())
}

fn read_write(length: Duration) -> Result<Report> {
    let zero = std::fs::File::open("/dev/zero").context("cannot open /dev/zero")?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    let (zero, null) = (zero.as_raw_fd(), null.as_raw_fd());
    let mut byte = [0u8; 1];
    timed(length, || {
        // SAFETY: plain syscalls on descriptors this function owns, with a one-byte buffer.
        check(
            unsafe { libc::read(zero, byte.as_mut_ptr().cast(), 1) },
            "read",
        )?;
        check(
            unsafe { libc::write(null, byte.as_ptr().cast(), 1) },
            "write",
        )
    })
}

fn open_close(file: &std::path::Path, length: Duration) -> Result<Report> {
    let path = CString::new(file.as_os_str().as_bytes()).context("file name has a NUL byte")?;
    ensure!(file.is_file(), "{} is not a file", file.display());
    timed(length, || {
        // SAFETY: path is a valid C string; the descriptor is closed right away.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!("open failed: {}", io::Error::last_os_error());
        }
        // SAFETY: fd was opened just above and is not used again.
        if unsafe { libc::close(fd) } != 0 {
            bail!("close failed: {}", io::Error::last_os_error());
        }
        Ok(())
    })
}

fn echo(length: Duration) -> Result<Report> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot listen on 127.0.0.1")?;
    let addr: SocketAddr = listener.local_addr()?;
    let client = TcpStream::connect(addr).context("cannot connect to the echo thread")?;
    let (mut server, _) = listener.accept().context("cannot accept")?;
    drop(listener);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // The echo side: read() what came and write() it back, until the client closes.
    let echoer = thread::spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let n = server.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            server.write_all(&buf[..n])?;
        }
    });
    let fd = client.as_raw_fd();
    let message = [b'x'; ECHO_BYTES];
    let mut back = [0u8; ECHO_BYTES];
    let report = timed(length, || {
        // SAFETY: plain syscalls on the client's socket with buffers of the given lengths.
        let sent =
            unsafe { libc::send(fd, message.as_ptr().cast(), ECHO_BYTES, libc::MSG_NOSIGNAL) };
        ensure!(
            sent == ECHO_BYTES as isize,
            "send returned {sent}: {}",
            io::Error::last_os_error()
        );
        let mut got = 0;
        while got < ECHO_BYTES {
            // SAFETY: as above; the buffer has ECHO_BYTES - got bytes left from `got`.
            let n = unsafe { libc::recv(fd, back[got..].as_mut_ptr().cast(), ECHO_BYTES - got, 0) };
            ensure!(n > 0, "recv returned {n}: {}", io::Error::last_os_error());
            got += n as usize;
        }
        Ok(())
    })?;
    client
        .shutdown(std::net::Shutdown::Write)
        .context("cannot close the echo connection")?;
    match echoer.join() {
        Ok(result) => result.context("the echo thread failed")?,
        Err(_) => bail!("the echo thread panicked"),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_load_runs_and_counts() {
        let file = std::env::temp_dir().join(format!("xtask-load-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let short = Duration::from_millis(50);
        for report in [
            read_write(short).unwrap(),
            open_close(&file, short).unwrap(),
            echo(short).unwrap(),
        ] {
            assert!(report.ops >= BATCH && report.ops % BATCH == 0);
            assert!(report.secs >= 0.05);
        }
        std::fs::remove_file(&file).unwrap();
        let line = Report {
            ops: 10,
            secs: 2.0,
            user: 0.5,
            sys: 1.0,
        }
        .json(LoadKind::Echo);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["load"], "echo");
        assert_eq!(v["rate"], 5.0);
    }
}
