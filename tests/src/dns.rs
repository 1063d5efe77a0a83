//! The DNS lab of the #024 scenarios: a client and a server namespace, a real dnsmasq on the
//! server (good.nl.test resolves, other names of nl.test are NXDOMAIN, names outside it are
//! REFUSED), and clients run with the test's own resolv.conf and hosts files bind-mounted in a
//! private mount namespace (the machine's own files are never touched).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{hook_attached, peer_bin, skip, Netns, TwoHosts, Watch};

/// Client 10.240.N.1, server 10.240.N.2, a dnsmasq on the server answering for nl.test
/// (good.nl.test -> 10.240.N.2, other names of nl.test NXDOMAIN, names outside it REFUSED).
pub struct Lab {
    pub h: TwoHosts,
    pub dir: TempDir,
    _dns: Running,
    pub server: String,
}

pub fn lab(tag: &str, n: u8) -> Lab {
    let h = TwoHosts::new(
        tag,
        &[&format!("10.240.{n}.1/24"), &format!("fd00:240:{n}::1/64")],
        &[&format!("10.240.{n}.2/24"), &format!("fd00:240:{n}::2/64")],
    )
    .expect("two namespaces");
    let dir = TempDir::new(tag);
    let server = format!("10.240.{n}.2");
    let dns = dnsmasq(&h.server, &[&server, &format!("fd00:240:{n}::2")], &dir.0);
    Lab {
        h,
        dir,
        _dns: dns,
        server,
    }
}

impl Lab {
    /// Writes resolv.conf and hosts files for the client's private mount namespace.
    pub fn files(&self, resolv: &str, hosts: &str) -> (PathBuf, PathBuf) {
        let r = self.dir.0.join("resolv.conf");
        let h = self.dir.0.join("hosts");
        std::fs::write(&r, resolv).unwrap();
        std::fs::write(&h, hosts).unwrap();
        (r, h)
    }

    /// Runs `argv` in the client namespace with `resolv` and `hosts` bound over /etc/resolv.conf
    /// and /etc/hosts in a private mount namespace. Returns its output and pid.
    pub fn run(&self, files: &(PathBuf, PathBuf), argv: &[&str]) -> (Output, u32) {
        let child = self
            .h
            .client
            .command("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/resolv.conf && mount --bind \"$2\" /etc/hosts || exit 99; \
                 shift 2; exec \"$@\"",
            )
            .arg("sh")
            .arg(&files.0)
            .arg(&files.1)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare");
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert_ne!(out.status.code(), Some(99), "bind mounts failed: {out:?}");
        (out, pid)
    }
}

/// dnsmasq on `listen`:53 in `ns`.
pub fn dnsmasq(ns: &Netns, listen: &[&str], dir: &Path) -> Running {
    let child = ns
        .command("dnsmasq")
        .args(listen.iter().map(|a| format!("--listen-address={a}")))
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--user=root",
            "--group=root",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--local=/nl.test/",
            &format!("--address=/good.nl.test/{}", listen[0]),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq (apt-get install dnsmasq-base)");
    let child = Running(child);
    wait_udp_53(ns);
    child
}

pub fn wait_udp_53(ns: &Netns) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if ns
            .sh("ss -Hlun 'sport = :53'")
            .is_ok_and(|o| !o.trim().is_empty())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no DNS server listened within 10 s");
}

/// `nl-peer dns-serve ADDR MODE` in `ns`.
pub fn responder(ns: &Netns, addr: &str, mode: &str) -> Running {
    let mut child = ns
        .command(peer_bin())
        .args(["dns-serve", addr, mode])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nl-peer dns-serve");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    assert!(line.starts_with("ready "), "nl-peer dns-serve: {line:?}");
    Running(child)
}

/// A helper process, killed and reaped on drop (also when a test panics).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nltest-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `tool` is installed (the VM initramfs carries only some clients).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the DNS programs attached in this watch; prints NL-SKIP and returns false otherwise.
pub fn dns_hooks(w: &Watch, programs: &[&str]) -> bool {
    // hook_attached waits for the hooks line (it may come just after "ready") and fails the
    // test when netladder never prints it.
    for p in programs {
        if !hook_attached(w, p) {
            let status: Vec<String> = w
                .events()
                .iter()
                .filter(|e| e["type"] == "hooks")
                .flat_map(|e| e["hooks"].as_array().cloned().unwrap_or_default())
                .filter(|h| h["program"] == *p)
                .map(|h| h.to_string())
                .collect();
            skip(&format!("{p} did not attach on this kernel: {status:?}"));
            return false;
        }
    }
    true
}
