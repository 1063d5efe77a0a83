//! Running a look-up inside another network namespace, found by its inode number
//! (the `netns` of an event), and naming namespaces.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

/// The identity of a namespace file: nsfs device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NsId {
    dev: u64,
    ino: u64,
}

fn ns_id(meta: &fs::Metadata) -> NsId {
    NsId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// The namespace of the calling thread.
fn own_ns() -> anyhow::Result<NsId> {
    let path = "/proc/thread-self/ns/net";
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {path}"))?;
    Ok(ns_id(&meta))
}

/// The inode number of the calling thread's network namespace (what `ip netns identify`
/// and the kernel's `net->ns.inum` call it).
pub fn own_netns_inode() -> anyhow::Result<u64> {
    Ok(own_ns()?.ino)
}

/// The name under /run/netns of the network namespace with this inode, if it has one.
pub fn netns_name(netns_inode: u64) -> Option<String> {
    let want = NsId {
        dev: own_ns().ok()?.dev,
        ino: netns_inode,
    };
    let entries = fs::read_dir("/run/netns").ok()?;
    entries
        .flatten()
        .find(|e| fs::metadata(e.path()).is_ok_and(|m| ns_id(&m) == want))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// Runs `f` in the network namespace `netns_inode`: directly when it is the caller's own,
/// otherwise on a short-lived thread that joins that namespace first. Sockets that `f`
/// creates belong to that namespace. Blocks until `f` returns (call it from
/// `spawn_blocking` in async code). Needs CAP_SYS_ADMIN for another namespace.
pub fn run_in_netns<T: Send + 'static>(
    netns_inode: u64,
    hint_pid: Option<u32>,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let own = own_ns()?;
    if own.ino == netns_inode {
        return Ok(f());
    }
    let want = NsId {
        dev: own.dev,
        ino: netns_inode,
    };
    let handle = open_netns(want, hint_pid)?;
    let thread = std::thread::Builder::new()
        .name(format!("netns-{netns_inode}"))
        .spawn(move || -> anyhow::Result<T> {
            // SAFETY: setns only reads the descriptor; it changes this thread's namespace.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot enter network namespace {netns_inode}"));
            }
            Ok(f())
        })
        .context("cannot start a thread for a network namespace look-up")?;
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Opens a file that refers to the namespace: the hint process first, then the names under
/// /run/netns, then every process and thread. The identity is checked on the opened file,
/// so a pid reused meanwhile cannot hand over the wrong namespace.
fn open_netns(want: NsId, hint_pid: Option<u32>) -> anyhow::Result<File> {
    let hint = hint_pid.map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
    hint.into_iter()
        .chain(dir_entries("/run/netns"))
        .chain(proc_netns_files())
        .find_map(|path| open_if_matches(&path, want))
        .ok_or_else(|| {
            anyhow!(
                "network namespace {} is gone (no process, thread or /run/netns entry holds it)",
                want.ino
            )
        })
}

fn open_if_matches(path: &Path, want: NsId) -> Option<File> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    (ns_id(&meta) == want).then_some(file)
}

/// /proc/PID/ns/net of every process, then /proc/PID/task/TID/ns/net of every thread
/// (a thread may have entered a namespace alone).
fn proc_netns_files() -> impl Iterator<Item = PathBuf> {
    let pids: Vec<PathBuf> = dir_entries("/proc")
        .filter(|p| is_numeric_name(p))
        .collect();
    let processes: Vec<PathBuf> = pids.iter().map(|p| p.join("ns/net")).collect();
    let threads = pids.into_iter().flat_map(|p| {
        dir_entries(p.join("task"))
            .filter(|t| is_numeric_name(t))
            .map(|t| t.join("ns/net"))
    });
    processes.into_iter().chain(threads)
}

/// The entries of a directory; an unreadable directory (a process that exited, a missing
/// /run/netns) simply has none for this search.
fn dir_entries(dir: impl AsRef<Path>) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
}

fn is_numeric_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// A throwaway named network namespace, deleted on drop (also when a test panics).
    pub(crate) struct TestNetns {
        pub name: String,
    }

    impl TestNetns {
        pub fn new(tag: &str) -> Self {
            let name = format!("nlenrich-{}-{tag}", std::process::id());
            run(&["ip", "netns", "add", &name]);
            let ns = TestNetns { name };
            run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
            ns
        }

        pub fn inode(&self) -> u64 {
            fs::metadata(format!("/run/netns/{}", self.name))
                .expect("stat the test namespace")
                .ino()
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let status = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("NL-WARN could not delete netns {}", self.name);
            }
        }
    }

    pub(crate) fn run(args: &[&str]) {
        let status = Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        assert!(status.success(), "{args:?} failed: {status}");
    }

    pub(crate) fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn own_namespace_runs_inline() {
        let own = own_netns_inode().unwrap();
        let here = std::thread::current().id();
        let ran_on = run_in_netns(own, None, move || std::thread::current().id()).unwrap();
        assert_eq!(ran_on, here);
    }

    #[test]
    fn unknown_namespace_is_a_clear_error() {
        let err = run_in_netns(1, None, || ()).unwrap_err().to_string();
        assert_eq!(
            err,
            "network namespace 1 is gone (no process, thread or /run/netns entry holds it)"
        );
    }

    #[test]
    fn enters_and_names_a_namespace() {
        if !is_root() {
            println!("NL-SKIP enters_and_names_a_namespace: needs root");
            return;
        }
        let ns = TestNetns::new("enter");
        let inode = ns.inode();
        assert_ne!(inode, own_netns_inode().unwrap());
        assert_eq!(netns_name(inode).as_deref(), Some(ns.name.as_str()));
        let inside = run_in_netns(inode, None, || own_netns_inode().unwrap()).unwrap();
        assert_eq!(inside, inode);
        // The caller stays where it was.
        assert_ne!(own_netns_inode().unwrap(), inode);
    }

    #[test]
    fn finds_a_namespace_held_only_by_a_process() {
        if !is_root() {
            println!("NL-SKIP finds_a_namespace_held_only_by_a_process: needs root");
            return;
        }
        // `unshare -n` makes an unnamed namespace that only the sleeping process holds.
        let holder = ChildGuard(
            Command::new("unshare")
                .args(["-n", "sleep", "30"])
                .spawn()
                .expect("start unshare"),
        );
        let pid = holder.0.id();
        let inode = wait_for_other_netns(pid);
        assert_eq!(netns_name(inode), None);
        let by_hint = run_in_netns(inode, Some(pid), || own_netns_inode().unwrap());
        assert_eq!(by_hint.unwrap(), inode);
        let by_scan = run_in_netns(inode, None, || own_netns_inode().unwrap());
        assert_eq!(by_scan.unwrap(), inode);
    }

    /// A child process killed and reaped on drop (also when a test panics).
    pub(crate) struct ChildGuard(pub std::process::Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            // An error here means the child already exited: nothing left to clean up.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// unshare execs sleep after switching namespaces: wait for that switch.
    fn wait_for_other_netns(pid: u32) -> u64 {
        let own = own_netns_inode().unwrap();
        for _ in 0..200 {
            if let Ok(meta) = fs::metadata(format!("/proc/{pid}/ns/net")) {
                if meta.ino() != own {
                    return meta.ino();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("process {pid} never left the host network namespace");
    }
}
