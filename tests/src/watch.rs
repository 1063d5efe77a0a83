//! A running `netladder watch --json` and helpers to check its failure events.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{netladder_bin, schema, unique_id};

/// How long `netladder watch` may take to attach its programs and create the ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Watch::stop`] waits after SIGINT before it kills netladder: a bound only a hang
/// exceeds. Detaching the programs waits for RCU grace periods, one per link (2-3 s on an idle
/// host); with CI's guests busy on both cores it was seen taking over 10 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The most instructions one of netladder's programs may take the kernel's verifier, a quarter
/// of the one million the kernel allows. Verifiers before Linux 6.3 follow branches that newer
/// ones merge, so a program that verifies in a few thousand on sid can come near the limit on
/// 6.1 (and fail to load after a small change) and take seconds of every start there.
pub const VERIFIED_INSNS_BUDGET: u64 = 250_000;
/// How long [`expect_single_failure`] waits for the first matching failure.
pub const FAILURE_TIMEOUT: Duration = Duration::from_secs(30);

/// One stdout line of netladder: JSON, or (a bug in netladder) anything else. A JSON line the
/// published schema does not allow is kept with the reason: a bug in netladder or in the schema.
enum Line {
    Json(Value),
    Unparsable(String),
    OffSchema { value: Value, why: String },
}

/// What the reader threads collected so far.
#[derive(Default)]
struct Collected {
    lines: Vec<Line>,
    stderr: String,
    stdout_closed: bool,
    /// Whether JSON lines are checked against the schema (not for the harness's own stand-ins).
    check_schema: bool,
    /// An error naming the lines off the schema was returned: dropping the watch need not
    /// fail the test again.
    off_schema_told: bool,
}

impl Collected {
    fn events(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter_map(|line| match line {
            Line::Json(value) | Line::OffSchema { value, .. } => Some(value),
            Line::Unparsable(_) => None,
        })
    }

    /// How many lines the schema does not allow.
    fn off_schema(&self) -> usize {
        self.lines
            .iter()
            .filter(|line| matches!(line, Line::OffSchema { .. }))
            .count()
    }

    /// An error (marking the lines as told) when a line does not match the schema.
    fn check_schema(&mut self) -> Result<()> {
        let n = self.off_schema();
        if n == 0 {
            return Ok(());
        }
        self.off_schema_told = true;
        bail!(
            "netladder watch --json printed {n} line(s) that schema/netladder-events.v1.schema.json \
             does not allow (fix netladder or the schema); {}",
            self.report()
        );
    }

    fn failures(&self) -> impl Iterator<Item = &Value> {
        self.events().filter(|ev| ev["type"] == "failure")
    }

    fn unparsable(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| match line {
                Line::Unparsable(text) => Some(text.as_str()),
                Line::Json(_) | Line::OffSchema { .. } => None,
            })
            .collect()
    }

    /// Every stdout line and the stderr, for error messages.
    fn report(&self) -> String {
        let mut text = format!("{} stdout line(s):\n", self.lines.len());
        for line in &self.lines {
            match line {
                Line::Json(value) => text += &format!("  {value}\n"),
                Line::Unparsable(raw) => text += &format!("  NOT JSON: {raw}\n"),
                Line::OffSchema { value, why } => {
                    text += &format!("  NOT IN THE SCHEMA ({why}): {value}\n");
                }
            }
        }
        text + &format!("stderr:\n{}", self.stderr)
    }
}

#[derive(Default)]
struct Shared {
    collected: Mutex<Collected>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Collected> {
        self.collected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `left` for the readers to collect something new.
    fn wait<'a>(
        &'a self,
        collected: MutexGuard<'a, Collected>,
        left: Duration,
    ) -> MutexGuard<'a, Collected> {
        self.changed
            .wait_timeout(collected, left)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

/// A running `netladder watch --json --ready-file ...`, its output collected in the background.
/// Dropping it kills netladder; [`Watch::stop`] ends it cleanly instead.
pub struct Watch {
    child: Option<Child>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    dir: PathBuf,
    ready_at: SystemTime,
}

impl Watch {
    /// The netladder process id (0 once it has been stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Spawns `<netladder_bin()> watch --json --ready-file <tmp> EXTRA_ARGS... <words of
    /// $NL_WATCH_ARGS>` and waits up to 60 s for the ready file. Fails with netladder's stderr if
    /// it exits first. Pass `&["--netns", &ns.inode().to_string()]` to see one namespace only.
    pub fn start(extra_args: &[&str]) -> Result<Watch> {
        let mut args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        if let Ok(words) = std::env::var("NL_WATCH_ARGS") {
            args.extend(words.split_whitespace().map(str::to_string));
        }
        Watch::launch(&netladder_bin(), &args, true)
    }

    /// [`Watch::start`] with another program in netladder's place (e.g. a wrapper that runs it
    /// with fewer capabilities); it gets the same arguments.
    pub fn start_bin(bin: &Path, extra_args: &[&str]) -> Result<Watch> {
        let args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Watch::launch(bin, &args, true)
    }

    /// Every JSON line is checked against the published schema when `check_schema`; a line
    /// that does not match fails the test (the next wait, stop, or the drop of the watch).
    fn launch(bin: &Path, args: &[String], check_schema: bool) -> Result<Watch> {
        let dir = std::env::temp_dir().join(format!(
            "nltest-{}-{}-watch",
            std::process::id(),
            unique_id()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ready = dir.join("ready");
        let spawned_at = Instant::now();
        let spawned = Command::new(bin)
            .args(["watch", "--json", "--ready-file"])
            .arg(&ready)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err).with_context(|| format!("spawning {}", bin.display()));
            }
        };
        let shared = Arc::new(Shared::default());
        shared.lock().check_schema = check_schema;
        let readers = vec![
            spawn_stdout_reader(child.stdout.take(), Arc::clone(&shared)),
            spawn_stderr_reader(child.stderr.take(), Arc::clone(&shared)),
        ];
        let mut watch = Watch {
            child: Some(child),
            shared,
            readers,
            dir,
            ready_at: SystemTime::UNIX_EPOCH,
        };
        watch.wait_ready(&ready)?;
        // On the test's output (shown for the VM runs): where a slow kernel spends its time.
        println!(
            "NL-WATCH-TIME ready after {:.1} s",
            spawned_at.elapsed().as_secs_f64()
        );
        watch.check_verified_insns()?;
        Ok(watch)
    }

    /// Fails when one of netladder's programs took the verifier more than
    /// [`VERIFIED_INSNS_BUDGET`] instructions (`verified_insns:` in the fdinfo of netladder's
    /// own program descriptors, Linux 5.16+; older kernels do not say, and nothing is checked).
    fn check_verified_insns(&self) -> Result<()> {
        let pid = self.pid();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return Ok(());
        };
        let mut most = (0u64, String::new());
        for fd in fds.flatten() {
            let is_prog = std::fs::read_link(fd.path())
                .is_ok_and(|l| l.to_string_lossy().contains("bpf-prog"));
            if !is_prog {
                continue;
            }
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            let Ok(info) = std::fs::read_to_string(&info) else {
                continue;
            };
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_string())
            };
            let Some(n) = field("verified_insns:").and_then(|v| v.parse::<u64>().ok()) else {
                continue;
            };
            if n > most.0 {
                let id = field("prog_id:").unwrap_or_default();
                most = (
                    n,
                    format!(
                        "program id {id} (type {})",
                        field("prog_type:").unwrap_or_default()
                    ),
                );
            }
        }
        if most.0 > 0 {
            println!("NL-WATCH-VERIFIED most {} instructions: {}", most.0, most.1);
        }
        if most.0 > VERIFIED_INSNS_BUDGET {
            bail!(
                "{} took the kernel's verifier {} instructions, more than the budget of {}: \
                 `bpftool prog show id` names it",
                most.1,
                most.0,
                VERIFIED_INSNS_BUDGET
            );
        }
        Ok(())
    }

    fn wait_ready(&mut self, ready: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            if let Some(status) = self.child_mut().try_wait()? {
                self.join_readers();
                bail!(
                    "netladder watch exited ({status}) before it was ready; {}",
                    self.shared.lock().report()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "netladder watch not ready within {READY_TIMEOUT:?}; {}",
                    self.shared.lock().report()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        // When netladder wrote it (the file's own time), not when this poll saw it.
        self.ready_at = std::fs::metadata(ready)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Ok(())
    }

    /// When netladder wrote its ready file, by the wall clock: `--duration` counts from then.
    pub fn ready_at(&self) -> SystemTime {
        self.ready_at
    }

    /// Waits up to `timeout` for a `"type":"failure"` event matching `pred` (events seen before
    /// this call count too) and returns it. On timeout, or if netladder exits, the error lists
    /// every line netladder printed and its stderr.
    pub fn wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut collected = self.shared.lock();
        loop {
            collected.check_schema()?;
            if let Some(event) = collected.failures().find(|ev| pred(ev)) {
                return Ok(event.clone());
            }
            if collected.stdout_closed {
                bail!(
                    "netladder watch exited while waiting for a failure event; {}",
                    collected.report()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(collected);
                // Let netladder print its final statistics (lost events, full maps,
                // unclassified errors): they tell a missing event from a late one.
                let collected = self.final_report();
                bail!(
                    "no matching failure event within {timeout:?} (netladder was interrupted \
                     to get its final statistics); {}",
                    collected.report()
                );
            }
            collected = self.shared.wait(collected, left);
        }
    }

    /// Sends SIGINT and waits up to [`STOP_TIMEOUT`] for netladder to close its stdout, so the
    /// collected output ends with its final statistics.
    fn final_report(&self) -> MutexGuard<'_, Collected> {
        if let Ok(pid) = libc::pid_t::try_from(self.pid()) {
            // SAFETY: plain syscall on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut collected = self.shared.lock();
        while !collected.stdout_closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            collected = self.shared.wait(collected, left);
        }
        collected
    }

    /// netladder's `"type":"hooks"` line, waiting up to `timeout` for it (another thread reads
    /// the output). Never interrupts netladder. An error, with everything netladder printed,
    /// when the line does not come: netladder prints it before it is ready, so its absence
    /// means netladder died or broke, never that the kernel lacks something.
    pub fn hooks(&self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut collected = self.shared.lock();
        loop {
            collected.check_schema()?;
            if let Some(h) = collected.events().find(|e| e["type"] == "hooks") {
                return Ok(h.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if collected.stdout_closed || left.is_zero() {
                let why = if collected.stdout_closed {
                    "netladder watch closed its output"
                } else {
                    "netladder watch is still running"
                };
                bail!(
                    "no \"hooks\" line from netladder watch within {timeout:?} ({why}); {}",
                    collected.report()
                );
            }
            collected = self.shared.wait(collected, left);
        }
    }

    /// Whether netladder has already exited (by itself: `--duration`, or an error).
    pub fn exited(&mut self) -> bool {
        self.child_mut().try_wait().ok().flatten().is_some()
    }

    /// Every `"type":"failure"` event so far.
    pub fn failures(&self) -> Vec<Value> {
        self.shared.lock().failures().cloned().collect()
    }

    /// Every JSON line so far (failures, stats, hooks).
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events().cloned().collect()
    }

    /// Sends SIGINT and waits for netladder to exit (killing it after 60 s). Returns every JSON
    /// line and the stderr. Errors, with the full output, when netladder had to be killed, exited
    /// non-zero, or printed a stdout line that is not JSON.
    pub fn stop(self) -> Result<(Vec<Value>, String)> {
        self.stop_with(libc::SIGINT)
    }

    /// [`Watch::stop`] with another signal (SIGTERM: what systemd and `kill` send).
    pub fn stop_with(mut self, signal: libc::c_int) -> Result<(Vec<Value>, String)> {
        let asked = Instant::now();
        let status = self.signal_and_wait(Some(signal), STOP_TIMEOUT)?;
        println!(
            "NL-WATCH-TIME stopped after {:.1} s",
            asked.elapsed().as_secs_f64()
        );
        self.finished(status, &format!("signal {signal}"))
    }

    /// Waits up to `timeout` for netladder to end by itself (`--duration`), killing it after
    /// that. Returns and errors as [`Watch::stop`].
    pub fn wait_end(mut self, timeout: Duration) -> Result<(Vec<Value>, String)> {
        let status = self.signal_and_wait(None, timeout)?;
        self.finished(status, "its --duration")
    }

    fn finished(mut self, status: Option<ExitStatus>, after: &str) -> Result<(Vec<Value>, String)> {
        self.join_readers();
        let mut collected = self.shared.lock();
        match status {
            None => bail!(
                "netladder watch did not exit in time after {after} (killed); {}",
                collected.report()
            ),
            Some(status) if !status.success() => bail!(
                "netladder watch exited with {status} after {after}; {}",
                collected.report()
            ),
            Some(_) => {}
        }
        let unparsable = collected.unparsable();
        if !unparsable.is_empty() {
            bail!(
                "netladder watch --json printed {} non-JSON line(s); {}",
                unparsable.len(),
                collected.report()
            );
        }
        collected.check_schema()?;
        Ok((
            collected.events().cloned().collect(),
            collected.stderr.clone(),
        ))
    }

    /// SIGKILL, as an operator's `kill -9` or the OOM killer would: netladder gets no chance
    /// to clean up. Returns the events it printed until then.
    pub fn kill(mut self) -> Result<Vec<Value>> {
        let child = self.child_mut();
        child.kill().context("SIGKILL netladder")?;
        child.wait().context("waiting for the killed netladder")?;
        self.join_readers();
        let events = self.shared.lock().events().cloned().collect();
        Ok(events)
    }

    /// `signal` (if any), then wait up to `timeout`; `None` when it had to be killed.
    fn signal_and_wait(
        &mut self,
        signal: Option<libc::c_int>,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>> {
        let child = self.child_mut();
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        if let Some(signal) = signal {
            // SAFETY: plain syscall on our own child, not yet reaped.
            unsafe { libc::kill(pid, signal) };
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the child lives until drop")
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// How long a failing test gives netladder to print its final stats before it is killed.
const STATS_AT_FAILURE: Duration = Duration::from_secs(10);

impl Drop for Watch {
    fn drop(&mut self) {
        // A test failed while netladder ran: stop it the normal way, so that its final stats
        // line (records reported, lost, filtered, merged, unclassified, skipped program runs)
        // goes into the test's output beside the failure. Otherwise kill it.
        let stopped = thread::panicking()
            && self.child.is_some()
            && self
                .signal_and_wait(Some(libc::SIGINT), STATS_AT_FAILURE)
                .is_ok_and(|status| status.is_some());
        if let Some(mut child) = self.child.take() {
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.join_readers();
        if thread::panicking() {
            let collected = self.shared.lock();
            match collected
                .events()
                .filter(|e| e["type"] == "stats" && e["final"] == true)
                .last()
            {
                Some(stats) => println!("NL-WATCH-FINAL-STATS {stats}"),
                None => println!("NL-WATCH-FINAL-STATS none (netladder did not exit in time)"),
            }
            let tail: Vec<&str> = collected.stderr.lines().rev().take(8).collect();
            for line in tail.iter().rev() {
                println!("NL-WATCH-STDERR {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // A line off the schema fails the test even when no wait or stop told it (a test that
        // only read failures, or ignored what stop returned).
        let mut collected = self.shared.lock();
        if !collected.off_schema_told && !thread::panicking() {
            if let Err(e) = collected.check_schema() {
                drop(collected);
                panic!("{e:#}");
            }
        }
    }
}

fn spawn_stdout_reader(
    pipe: Option<impl Read + Send + 'static>,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        if let Some(pipe) = pipe {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let check = shared.lock().check_schema;
                let parsed = match serde_json::from_str(&line) {
                    Ok(value) if check => match schema::check_record(&value) {
                        Ok(()) => Line::Json(value),
                        Err(why) => Line::OffSchema { value, why },
                    },
                    Ok(value) => Line::Json(value),
                    Err(_) => Line::Unparsable(line),
                };
                shared.lock().lines.push(parsed);
                shared.changed.notify_all();
            }
        }
        shared.lock().stdout_closed = true;
        shared.changed.notify_all();
    })
}

fn spawn_stderr_reader(
    pipe: Option<impl Read + Send + 'static>,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        if let Some(pipe) = pipe {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut collected = shared.lock();
                collected.stderr += &line;
                collected.stderr.push('\n');
            }
        }
    })
}

/// True when any string in the event's `evidence` array contains `needle`.
pub fn evidence_has(ev: &Value, needle: &str) -> bool {
    ev["evidence"].as_array().is_some_and(|items| {
        items
            .iter()
            .filter_map(Value::as_str)
            .any(|item| item.contains(needle))
    })
}

/// Waits (up to [`FAILURE_TIMEOUT`]) for a failure matching `pred`, then lets `settle` pass and
/// checks that exactly one failure matches: one failed connection must be one event. Returns it.
pub fn expect_single_failure(
    watch: &Watch,
    pred: impl Fn(&Value) -> bool,
    settle: Duration,
) -> Result<Value> {
    let first = watch.wait_for(&pred, FAILURE_TIMEOUT)?;
    thread::sleep(settle);
    let collected = watch.shared.lock();
    let matching = collected.failures().filter(|ev| pred(ev)).count();
    if matching != 1 {
        bail!(
            "expected exactly one matching failure, found {matching}; {}",
            collected.report()
        );
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stand-in for netladder: creates the ready file given after `--ready-file`, prints a
    /// stats line, two failures and one non-JSON line, then waits for SIGINT and exits 0.
    const FAKE_NETLADDER: &str = r#"#!/bin/sh
shift 3
touch "$1"
echo '{"type":"stats","lost":0}'
echo '{"type":"failure","code":"021","dst":"10.231.0.2:9","evidence":["tcp_receive_reset x1"]}'
echo '{"type":"failure","code":"023","dst":"10.231.0.2:80","evidence":[]}'
echo "$EXTRA"
echo "warming up" >&2
trap 'exit 0' INT
while :; do sleep 0.05; done
"#;

    fn fake_bin(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-netladder");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nltest-{}-{}-{tag}",
            std::process::id(),
            unique_id()
        ));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn collects_events_and_stops_cleanly() {
        let dir = scratch_dir("fake");
        let script = FAKE_NETLADDER.replace("echo \"$EXTRA\"\n", "");
        let watch = Watch::launch(&fake_bin(&dir, &script), &[], false).unwrap();
        let ev = watch
            .wait_for(|ev| ev["code"] == "023", Duration::from_secs(10))
            .unwrap();
        assert_eq!(ev["dst"], "10.231.0.2:80");
        assert_eq!(watch.failures().len(), 2);
        let refused =
            expect_single_failure(&watch, |ev| ev["code"] == "021", Duration::ZERO).unwrap();
        assert!(evidence_has(&refused, "tcp_receive_reset"));
        assert!(!evidence_has(&refused, "netfilter"));
        let (events, stderr) = watch.stop().unwrap();
        assert_eq!(events.len(), 3, "stats + 2 failures: {events:?}");
        assert!(stderr.contains("warming up"), "{stderr}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stop_reports_non_json_lines() {
        let dir = scratch_dir("fake");
        let script = FAKE_NETLADDER.replace("echo \"$EXTRA\"", "echo 'not json'");
        let watch = Watch::launch(&fake_bin(&dir, &script), &[], false).unwrap();
        watch
            .wait_for(|ev| ev["code"] == "023", Duration::from_secs(10))
            .unwrap();
        let err = watch.stop().unwrap_err().to_string();
        assert!(err.contains("NOT JSON: not json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn timeout_and_early_exit_are_errors_with_output() {
        let dir = scratch_dir("fake");
        let script = FAKE_NETLADDER.replace("echo \"$EXTRA\"\n", "");
        let watch = Watch::launch(&fake_bin(&dir, &script), &[], false).unwrap();
        let err = watch
            .wait_for(|ev| ev["code"] == "029", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no matching failure") && err.contains("\"021\""),
            "{err}"
        );
        let duplicate = expect_single_failure(&watch, |ev| ev["type"] == "failure", Duration::ZERO);
        assert!(duplicate.unwrap_err().to_string().contains("found 2"));
        drop(watch);

        let failing = fake_bin(
            &dir,
            "#!/bin/sh\necho 'cannot attach: no BTF' >&2\nexit 1\n",
        );
        let err = Watch::launch(&failing, &[], false)
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("before it was ready") && err.contains("no BTF"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_hooks_line_is_an_error() {
        let dir = scratch_dir("fake");
        let script = FAKE_NETLADDER.replace("echo \"$EXTRA\"\n", "");
        let watch = Watch::launch(&fake_bin(&dir, &script), &[], false).unwrap();
        let err = watch
            .hooks(Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no \"hooks\" line") && err.contains("\"021\""),
            "{err}"
        );
        drop(watch);

        let script = FAKE_NETLADDER.replace(
            "echo \"$EXTRA\"",
            "echo '{\"type\":\"hooks\",\"hooks\":[]}'",
        );
        let watch = Watch::launch(&fake_bin(&dir, &script), &[], false).unwrap();
        let hooks = watch.hooks(Duration::from_secs(10)).unwrap();
        assert_eq!(hooks["hooks"], json!([]));
        drop(watch);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The fake's lines lack most fields: checked against the schema, each wait and the stop
    /// fail with the lines and why; a watch dropped before anything told it fails the test.
    #[test]
    fn lines_off_the_schema_fail_the_test() {
        let dir = scratch_dir("fake");
        let script = FAKE_NETLADDER.replace("echo \"$EXTRA\"\n", "");
        let watch = Watch::launch(&fake_bin(&dir, &script), &[], true).unwrap();
        let err = watch
            .wait_for(|ev| ev["code"] == "023", Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not allow") && err.contains("NOT IN THE SCHEMA"),
            "{err}"
        );
        let err = watch.stop().unwrap_err().to_string();
        assert!(
            err.contains("does not allow") && err.contains("\"021\""),
            "{err}"
        );

        let watch = Watch::launch(&fake_bin(&dir, &script), &[], true).unwrap();
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(watch)));
        let msg = dropped.expect_err("the drop fails the test");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("does not allow"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn evidence_has_needs_an_evidence_array() {
        assert!(!evidence_has(&json!({"evidence": "x"}), "x"));
        assert!(evidence_has(&json!({"evidence": ["a", "xyz"]}), "y"));
    }
}
