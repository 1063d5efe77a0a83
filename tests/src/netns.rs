//! Throwaway network namespaces and veth pairs.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::unique_id;

/// Where `ip netns add` puts the namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// Prefix of every namespace this library creates; only these are ever swept.
const PREFIX: &str = "nltest-";

/// Serialises `ip netns add/del` within this process: the first `add` on a machine sets up the
/// /run/netns mount, which parallel calls could otherwise race on.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace named `nltest-<pid>-<n>-<tag>`, with `lo` up.
///
/// Dropping it kills every process inside it and deletes it, which also removes its interfaces
/// (veths included, both ends) and its nftables/iptables rules. This happens during a panic's
/// unwinding too, so a failing test leaves nothing behind.
pub struct Netns {
    name: String,
    handle: File,
}

impl Netns {
    /// Creates the namespace and brings `lo` up. `tag` (letters, digits, `-`, `_`) makes the name
    /// readable in `ip netns list`. First removes stale `nltest-<pid>-*` namespaces whose pid no
    /// longer exists (left by a killed test run).
    pub fn new(tag: &str) -> Result<Netns> {
        if tag.is_empty()
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            bail!("namespace tag {tag:?} must be non-empty letters, digits, '-' or '_'");
        }
        sweep_stale_namespaces()?;
        let name = format!("{PREFIX}{}-{}-{tag}", std::process::id(), unique_id());
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        }
        let handle = match File::open(Path::new(NETNS_DIR).join(&name)) {
            Ok(file) => file,
            Err(err) => {
                remove_namespace(&name);
                return Err(err).with_context(|| format!("opening {NETNS_DIR}/{name}"));
            }
        };
        let ns = Netns { name, handle };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode number: what netladder reports as `netns` and takes as `--netns`.
    pub fn inode(&self) -> u64 {
        self.handle
            .metadata()
            .expect("fstat of an open namespace handle")
            .ino()
    }

    /// A [`Command`] for `program` that runs inside this namespace (the child enters it with
    /// setns before exec; nothing else about the child changes). Use it to spawn anything the
    /// helpers below do not cover; such processes are killed when the namespace is dropped, so
    /// spawn them while it is alive.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        // The Command owns its own (close-on-exec) duplicate of the handle, so the descriptor
        // stays valid however long the Command lives.
        let handle: OwnedFd = self
            .handle
            .try_clone()
            .expect("duplicating a namespace handle")
            .into();
        let mut cmd = Command::new(program);
        // SAFETY: the closure only makes the setns syscall, which is async-signal-safe, on a
        // descriptor it owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    /// Runs `argv` inside the namespace and returns its output, whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("exec: empty argv")?;
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("running {argv:?} in {}", self.name))
    }

    /// Runs `sh -c script` inside the namespace; returns its stdout, or an error with its stderr
    /// when it exits non-zero.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.run(&["sh", "-c", script])
    }

    /// Runs `ip ARGS` inside the namespace (for routes, links, addresses); returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        self.run(&[&["ip"], args].concat())
    }

    /// Sets a sysctl inside the namespace, e.g. `sysctl("net.ipv4.tcp_syn_retries", "1")`.
    /// Only per-namespace keys (most of `net.*`) stay inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(&[
            "sh",
            "-c",
            "printf '%s\\n' \"$1\" > \"$2\"",
            "sh",
            value,
            &path,
        ])
        .with_context(|| format!("sysctl {key}={value}"))?;
        Ok(())
    }

    /// Loads an nftables ruleset inside the namespace (`nft -f -` with `ruleset` on stdin).
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning nft (is the nftables package installed?)")?;
        let mut stdin = child.stdin.take().context("nft stdin")?;
        let written = stdin.write_all(ruleset.as_bytes());
        drop(stdin);
        let output = child.wait_with_output().context("waiting for nft")?;
        check_output(&["nft", "-f", "-"], &output)?;
        written.context("writing the ruleset to nft")
    }

    /// Runs `iptables -w ARGS` inside the namespace (Debian's default `iptables`, the nft backend).
    pub fn iptables(&self, args: &[&str]) -> Result<()> {
        self.run(&[&["iptables", "-w"], args].concat()).map(drop)
    }

    /// Runs `ip6tables -w ARGS` inside the namespace.
    pub fn ip6tables(&self, args: &[&str]) -> Result<()> {
        self.run(&[&["ip6tables", "-w"], args].concat()).map(drop)
    }

    /// Runs `iptables-legacy -w ARGS` inside the namespace; a clear error when that binary is
    /// not installed.
    pub fn iptables_legacy(&self, args: &[&str]) -> Result<()> {
        if find_in_path("iptables-legacy").is_none() {
            bail!("iptables-legacy is not installed (Debian's iptables package provides it)");
        }
        self.run(&[&["iptables-legacy", "-w"], args].concat())
            .map(drop)
    }

    /// Runs `argv` inside the namespace; stdout on success, an error with stderr otherwise.
    fn run(&self, argv: &[&str]) -> Result<String> {
        let output = self.exec(argv)?;
        check_output(argv, &output).with_context(|| format!("in namespace {}", self.name))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

/// Creates a veth pair between `a` and `b`, assigns the CIDR addresses (IPv4 and/or IPv6; IPv6
/// ones with `nodad`, so they are usable at once) and sets both ends up.
/// Returns the interface names `(in a, in b)`.
pub fn veth(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) -> Result<(String, String)> {
    let id = unique_id();
    let (a_if, b_if) = (format!("nlv{id}a"), format!("nlv{id}b"));
    a.ip(&[
        "link", "add", &a_if, "type", "veth", "peer", "name", &b_if, "netns", &b.name,
    ])?;
    for (ns, ifname, addrs) in [(a, &a_if, a_addrs), (b, &b_if, b_addrs)] {
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", ifname];
            if addr.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args)?;
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok((a_if, b_if))
}

/// Kills every process inside the namespace, then deletes it. Errors are reported on stderr: this
/// runs from Drop, where panicking could abort a test that is already unwinding.
fn remove_namespace(name: &str) {
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    remove_namespace_locked(name);
}

/// [`remove_namespace`] for a caller that holds `NETNS_LOCK`.
fn remove_namespace_locked(name: &str) {
    kill_processes_in(name);
    if let Err(err) = run_checked(Command::new("ip").args(["netns", "del", name])) {
        eprintln!("netladder-tests: could not delete namespace {name}: {err:#}");
    }
}

fn kill_processes_in(name: &str) {
    let output = match Command::new("ip").args(["netns", "pids", name]).output() {
        Ok(output) => output,
        Err(err) => {
            eprintln!("netladder-tests: listing processes in {name}: {err}");
            return;
        }
    };
    for pid in String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<libc::pid_t>().ok())
    {
        // SAFETY: plain syscall; a process that already exited yields ESRCH, which is fine.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Deletes `nltest-<pid>-*` namespaces whose creating process no longer exists. Holds
/// `NETNS_LOCK` throughout, so parallel tests do not delete the same namespace twice.
fn sweep_stale_namespaces() -> Result<()> {
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).context(format!("reading {NETNS_DIR}")),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(pid) = creator_pid(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_namespace_locked(&name);
            }
        }
    }
    Ok(())
}

/// The pid in a name of the form `nltest-<pid>-...`, if the name has that form.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let argv = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    check_output(&argv, &output)
}

fn check_output(argv: &[&str], output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{} failed ({}): {}",
        argv.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// A client namespace and a server namespace joined by a veth pair.
pub struct TwoHosts {
    pub client: Netns,
    pub server: Netns,
}

impl TwoHosts {
    /// Namespaces `TAG-c` and `TAG-s`, with the CIDR addresses given to each end of the veth.
    pub fn new(tag: &str, client_addrs: &[&str], server_addrs: &[&str]) -> Result<TwoHosts> {
        let client = Netns::new(&format!("{tag}-c")).context("client netns")?;
        let server = Netns::new(&format!("{tag}-s")).context("server netns")?;
        veth(&client, client_addrs, &server, server_addrs).context("veth")?;
        Ok(TwoHosts { client, server })
    }
}

#[cfg(test)]
mod tests {
    use super::creator_pid;

    #[test]
    fn creator_pid_only_for_our_names() {
        assert_eq!(creator_pid("nltest-1234-0-veth"), Some(1234));
        assert_eq!(creator_pid("nltest-1234-7-a-b"), Some(1234));
        assert_eq!(creator_pid("nltest-x-0-a"), None);
        assert_eq!(creator_pid("other-1234-0-a"), None);
        assert_eq!(creator_pid("nltest-1234"), None);
    }
}
