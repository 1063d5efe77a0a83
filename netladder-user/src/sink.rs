//! Where `watch` writes its lines: stdout, or a file (`--output`) that survives log rotation, and
//! the journald-friendly form (`--journal`, automatic when stdout is the journal): plain lines
//! with the `<N>` priority prefixes of sd-daemon(3), which journald stores as each line's priority.
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{sync_channel, SyncSender, TrySendError},
        Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// Syslog priorities, as journald reads them from a `<N>` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Err = 3,
    Warning = 4,
    Info = 6,
}

/// True when `JOURNAL_STREAM` (set by systemd for a service whose output goes to the journal)
/// names the file behind `fd`: then that output is the journal.
pub fn is_journal(fd: i32) -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // SAFETY: fstat on a descriptor number only reads its metadata into our buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Journal mode for netladder's own notes on stderr.
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// A line of netladder's own (status, degradation, statistics) on stderr, with its priority
/// prefix in journal mode.
pub fn note(priority: Priority, line: &str) {
    if JOURNAL.load(Ordering::Relaxed) {
        eprintln!("<{}>{line}", priority as u8);
    } else {
        eprintln!("{line}");
    }
}

/// The `<N>` prefix for an error line on stderr when stderr is the journal (main's last word).
pub fn error_prefix() -> String {
    if JOURNAL.load(Ordering::Relaxed) || is_journal(2) {
        format!("<{}>", Priority::Err as u8)
    } else {
        String::new()
    }
}

/// A file that is reopened when it is rotated away: before each line, when the path no longer
/// names the open file (renamed or deleted by logrotate), and on SIGHUP. Opened for appending,
/// so a `copytruncate` rotation also keeps working.
pub struct Reopening {
    path: PathBuf,
    file: File,
}

impl Reopening {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: open_append(path)?,
        })
    }

    fn rotated(&self) -> bool {
        let Ok(now) = std::fs::metadata(&self.path) else {
            return true;
        };
        self.file.metadata().map_or(true, |open| {
            (open.dev(), open.ino()) != (now.dev(), now.ino())
        })
    }

    pub fn reopen(&mut self) -> Result<()> {
        self.file = open_append(&self.path)?;
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        if self.rotated() {
            self.reopen()?;
        }
        // One write per line (O_APPEND): lines never interleave with another writer's.
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("--output {}: cannot open it for appending", path.display()))
}

enum Dest {
    Stdout,
    File(Reopening),
}

impl Dest {
    fn write_line(&mut self, line: &str) -> Result<()> {
        match self {
            Dest::File(f) => f.write_line(line),
            Dest::Stdout => {
                let mut stdout = std::io::stdout().lock();
                match writeln!(stdout, "{line}").and_then(|_| stdout.flush()) {
                    // Nobody reads any more (`netladder watch | head`): end quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
                    other => other.context("cannot write to stdout"),
                }
            }
        }
    }
}

/// The destination of `watch`'s event lines.
pub struct Sink {
    dest: Dest,
    journal: bool,
}

/// Lines waiting for the writer thread. A reader that stalls (a pipe nobody drains) fills it;
/// lines beyond it are counted in [`unwritten`], never buffered without bound, and the event
/// loop never blocks on output (so Ctrl-C and the kernel's ring buffer are always served).
const QUEUE: usize = 2048;

/// The installed sink's queue and its writer thread.
struct Writer {
    queue: SyncSender<Msg>,
    thread: JoinHandle<()>,
    journal: bool,
}

enum Msg {
    Line(String),
    Reopen,
}

static WRITER: Mutex<Option<Writer>> = Mutex::new(None);
static UNWRITTEN: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not written yet.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// The writer's last error (a full disk...), reported by the next [`emit`].
static FAILED: Mutex<Option<String>> = Mutex::new(None);

impl Sink {
    /// `output`: a file instead of stdout. `journal`: priority prefixes (also on stderr notes).
    pub fn new(output: Option<&Path>, journal: bool) -> Result<Self> {
        let dest = match output {
            Some(p) => Dest::File(Reopening::open(p)?),
            None => Dest::Stdout,
        };
        Ok(Self { dest, journal })
    }

    /// Makes this the sink of [`emit`], written by a thread of its own; from now on stderr notes
    /// follow its journal mode.
    pub fn install(self) {
        JOURNAL.store(self.journal, Ordering::Relaxed);
        let (queue, rx) = sync_channel::<Msg>(QUEUE);
        let mut dest = self.dest;
        let thread = std::thread::Builder::new()
            .name("netladder-out".into())
            .spawn(move || {
                for msg in rx {
                    let done = match msg {
                        Msg::Line(line) => {
                            let done = dest.write_line(&line);
                            PENDING.fetch_sub(1, Ordering::Relaxed);
                            done
                        }
                        Msg::Reopen => match &mut dest {
                            Dest::File(f) => f.reopen(),
                            Dest::Stdout => Ok(()),
                        },
                    };
                    if let Err(e) = done {
                        *FAILED.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                    }
                }
            })
            .expect("cannot start the output thread");
        *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Writer {
            queue,
            thread,
            journal: self.journal,
        });
    }
}

/// Queues one event line for the installed sink (written to stdout at once when none is
/// installed). A line that finds the queue full is counted in [`unwritten`] and dropped.
pub fn emit(priority: Priority, line: &str) -> Result<()> {
    if let Some(e) = FAILED.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!(e);
    }
    let guard = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = guard.as_ref() else {
        drop(guard);
        return Dest::Stdout.write_line(line);
    };
    let line = if w.journal {
        format!("<{}>{line}", priority as u8)
    } else {
        line.to_owned()
    };
    PENDING.fetch_add(1, Ordering::Relaxed);
    match w.queue.try_send(Msg::Line(line)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            PENDING.fetch_sub(1, Ordering::Relaxed);
            UNWRITTEN.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(_)) => {
            PENDING.fetch_sub(1, Ordering::Relaxed);
            anyhow::bail!("the output thread ended")
        }
    }
    Ok(())
}

/// Lines dropped so far because the reader did not keep up.
pub fn unwritten() -> u64 {
    UNWRITTEN.load(Ordering::Relaxed)
}

/// Reopens the output file (on SIGHUP); nothing to do for stdout.
pub fn reopen() -> Result<()> {
    if let Some(w) = WRITER.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        // A full queue will see the file rotated anyway: each write checks the path.
        let _ = w.queue.try_send(Msg::Reopen);
    }
    Ok(())
}

/// The longest the exit waits for queued lines, even for a reader that keeps taking them.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Waits until every queued line is written, as long as the writer makes progress: it gives
/// up once no line was written for `stall` (a reader that stopped reading), or after
/// [`MAX_WAIT`]. Returns how many lines are still queued.
pub fn drain(stall: Duration) -> usize {
    wait_written(stall, || false)
}

/// Like [`drain`], then ends the writer thread. Lines still queued when it gives up are left
/// unwritten (a reader that never reads must not hold netladder's exit); returns how many.
pub fn finish(stall: Duration) -> usize {
    let Some(Writer { queue, thread, .. }) =
        WRITER.lock().unwrap_or_else(|e| e.into_inner()).take()
    else {
        return 0;
    };
    // Without a sender the thread ends once it has written what is queued.
    drop(queue);
    let left = wait_written(stall, || thread.is_finished());
    if thread.is_finished() {
        let _ = thread.join();
        return PENDING.load(Ordering::Relaxed);
    }
    left
}

/// Waits while lines are pending and the writer keeps writing them (see [`drain`]).
fn wait_written(stall: Duration, done: impl Fn() -> bool) -> usize {
    let start = Instant::now();
    let mut last = PENDING.load(Ordering::Relaxed);
    let mut progress = start;
    loop {
        let pending = PENDING.load(Ordering::Relaxed);
        if pending == 0 || done() {
            return pending;
        }
        let now = Instant::now();
        if pending < last {
            (last, progress) = (pending, now);
        }
        if now.duration_since(progress) >= stall || now.duration_since(start) >= MAX_WAIT {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_file_is_reopened() {
        let dir = std::env::temp_dir().join(format!("nl-sink-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut f = Reopening::open(&path).unwrap();
        f.write_line("one").unwrap();
        std::fs::rename(&path, dir.join("events.jsonl.1")).unwrap();
        f.write_line("two").unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_line("three").unwrap();
        // copytruncate: the file stays, emptied; appending starts at its new end.
        std::fs::write(&path, "").unwrap();
        f.write_line("four").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("events.jsonl.1")).unwrap(),
            "one\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "four\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_stream_must_match_the_descriptor() {
        // The test process's stdin is not what a made-up JOURNAL_STREAM names.
        std::env::set_var("JOURNAL_STREAM", "1:1");
        assert!(!is_journal(0));
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!is_journal(0));
    }
}
