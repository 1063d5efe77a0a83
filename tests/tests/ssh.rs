//! #030 "ssh: Permission denied (publickey)": Debian's sshd, started by the test in a server
//! namespace with its own config, host key and authorized_keys (in a temp dir; the machine's sshd,
//! /etc/ssh and ~/.ssh are never used), and Debian's ssh client in a client namespace. An unknown
//! key and bad authorized_keys modes each give one client event and one server event with sshd's
//! reason; a good key logs in without any. sshd logs to stderr (-e, a write) or through syslog(3)
//! to a busybox syslogd in a private mount namespace (a sendto on /dev/log).
use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netladder_tests::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_millis(1500);
const SSHD: &str = "/usr/sbin/sshd";
const PORT: u16 = 2222;

/// What the scenario needs that a machine may lack: None when all is there, else the reason.
fn missing_tools() -> Option<String> {
    if !Path::new(SSHD).is_file() {
        return Some(format!(
            "{SSHD} is missing (openssh-server is not installed)"
        ));
    }
    for tool in ["ssh", "ssh-keygen"] {
        let found = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .any(|d| Path::new(d).join(tool).is_file());
        if !found {
            return Some(format!("{tool} is not installed (openssh-client)"));
        }
    }
    None
}

/// A directory whose every ancestor is owned by root and not group/world-writable: sshd's
/// StrictModes checks each directory above an authorized_keys file outside the user's home.
fn safe_base() -> Option<PathBuf> {
    ["/run", "/root", "/var/lib", "/"]
        .iter()
        .map(PathBuf::from)
        .find(|base| {
            base.ancestors()
                .all(|a| fs::metadata(a).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0))
        })
}

/// sshd's privilege-separation directory: created when missing, removed only if created here.
struct PrivsepDir(bool);

impl PrivsepDir {
    fn ensure() -> PrivsepDir {
        let dir = Path::new("/run/sshd");
        if dir.is_dir() {
            return PrivsepDir(false);
        }
        fs::create_dir(dir).expect("creating /run/sshd");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        PrivsepDir(true)
    }
}

impl Drop for PrivsepDir {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::remove_dir("/run/sshd");
        }
    }
}

/// How the test's sshd logs.
#[derive(Clone, Copy, PartialEq)]
enum Logging {
    /// `-D -e`: each line a write() to stderr.
    Stderr,
    /// `-D`: syslog(3), each line a sendto() on /dev/log, to a busybox syslogd in a private
    /// mount namespace (its own /dev).
    Syslog,
}

/// A temp dir with the server's host key, the user's keys and authorized_keys, and an sshd
/// running in the server namespace (killed on drop, the dir removed).
struct Sshd {
    dir: PathBuf,
    child: Option<Child>,
    addr: String,
    _privsep: PrivsepDir,
}

impl Sshd {
    fn start(h: &TwoHosts, addr: &str, logging: Logging) -> Sshd {
        let base = safe_base().expect("a root-owned directory without group/world write");
        let dir = base.join(format!("nltest-ssh-{}-{addr}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let mut sshd = Sshd {
            dir: dir.clone(),
            child: None,
            addr: addr.to_owned(),
            _privsep: PrivsepDir::ensure(),
        };
        for key in ["host", "good", "unknown"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(dir.join(key)));
        }
        let ssh_dir = dir.join("home/.ssh");
        fs::create_dir_all(&ssh_dir).unwrap();
        fs::set_permissions(dir.join("home"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::copy(dir.join("good.pub"), sshd.authorized_keys()).unwrap();
        sshd.set_keys_mode(0o600);
        let d = dir.display();
        fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {PORT}\nListenAddress {addr}\nHostKey {d}/host\nPidFile none\n\
                 AuthorizedKeysFile {d}/home/.ssh/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes yes\nLogLevel INFO\n"
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("sshd.log")).unwrap();
        let mut cmd = match logging {
            Logging::Stderr => {
                let mut c = h.server.command(SSHD);
                c.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
                c
            }
            Logging::Syslog => {
                fs::create_dir(dir.join("hostdev")).unwrap();
                let mut c = h.server.command("unshare");
                c.args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    SYSLOG_SCRIPT,
                    "sh",
                ])
                .arg(&dir);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        sshd.child = Some(child);
        sshd.wait_listening(h);
        sshd
    }

    fn authorized_keys(&self) -> PathBuf {
        self.dir.join("home/.ssh/authorized_keys")
    }

    fn set_keys_mode(&self, mode: u32) {
        fs::set_permissions(self.authorized_keys(), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn wait_listening(&mut self, h: &TwoHosts) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = format!("{}:{PORT}", self.addr);
        loop {
            let out = h.server.exec(&["ss", "-Htln"]).unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&want) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited ({status}): {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "sshd does not listen: {}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// sshd's stderr and, with syslog, what syslogd stored.
    fn logs(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "sshd output:\n{}\nsyslog:\n{}",
            read("sshd.log"),
            read("syslog.txt")
        )
    }

    /// Runs `ssh -i KEY root@ADDR true` in the client namespace; its exit status and stderr.
    fn login(&self, h: &TwoHosts, key: &str) -> (i32, String) {
        let out = h
            .client
            .command("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=30",
                "-p",
                &PORT.to_string(),
                "-i",
            ])
            .arg(self.key(key))
            .arg(format!("root@{}", self.addr))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .expect("running ssh");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs in a private mount namespace inside the server namespace: a /dev of its own (the host's
/// null, zero and random devices bound into a tmpfs) where busybox syslogd creates /dev/log and
/// writes what it receives to DIR/syslog.txt, then sshd logging through syslog(3).
const SYSLOG_SCRIPT: &str = r#"
set -e
D=$1
mount --bind /dev "$D/hostdev"
mount -t tmpfs -o mode=755 nltest-dev /dev
for n in null zero random urandom; do
    touch "/dev/$n"
    mount --bind "$D/hostdev/$n" "/dev/$n"
done
umount -l "$D/hostdev"
busybox syslogd -n -O "$D/syslog.txt" &
i=0
while [ ! -S /dev/log ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
exec /usr/sbin/sshd -D -f "$D/sshd_config"
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawning a helper");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hosts(tag: &str, net: u8) -> TwoHosts {
    TwoHosts::new(
        tag,
        &[&format!("10.234.{net}.1/24")],
        &[&format!("10.234.{net}.2/24")],
    )
    .expect("two namespaces joined by a veth")
}

/// The tools, or NL-SKIP with the reason.
fn ready() -> bool {
    if let Some(why) = missing_tools() {
        skip(&why);
        return false;
    }
    if safe_base().is_none() {
        skip("no root-owned directory without group/world write for sshd's StrictModes");
        return false;
    }
    true
}

/// netladder for both namespaces (the two ends of one refusal).
fn watch_both(h: &TwoHosts) -> Watch {
    // fentry on vfs_write where the kernel allows it, else the write() syscall tracepoint,
    // opted in.
    let w = Watch::start(&["--syscall-hooks"]).expect("netladder watch starts");
    assert!(
        hook_attached(&w, "ssh_vfs_write") || hook_attached(&w, "ssh_write"),
        "ssh_vfs_write or ssh_write must attach: {:#?}",
        w.events()
    );
    let _ = h;
    w
}

fn in_ns(ns: &Netns) -> impl Fn(&Value) -> bool + '_ {
    let inode = ns.inode();
    move |e: &Value| e["code"] == "030" && e["netns"].as_u64() == Some(inode)
}

fn client_event(w: &Watch, h: &TwoHosts, sshd: &Sshd) -> Value {
    let pred = in_ns(&h.client);
    let ev = expect_single_failure(w, |e| pred(e) && e["comm"] == "ssh", SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", sshd.logs()));
    assert_eq!(ev["cause"], "client_denied", "{ev:#}");
    assert_eq!(ev["layer"], "application", "{ev:#}");
    assert_eq!(ev["dst"], format!("{}:{PORT}", sshd.addr), "{ev:#}");
    assert_eq!(ev["user"], "root", "{ev:#}");
    assert_eq!(ev["name"], sshd.addr, "{ev:#}");
    assert!(evidence_has(&ev, "Permission denied (publickey)"), "{ev:#}");
    let next = ev["next"].as_array().unwrap();
    assert!(
        next[0]
            .as_str()
            .unwrap()
            .contains(&format!("ssh -vvv -p {PORT} root@{}", sshd.addr)),
        "{ev:#}"
    );
    ev
}

fn server_event(w: &Watch, h: &TwoHosts, sshd: &Sshd, cause: &str) -> Value {
    let pred = in_ns(&h.server);
    let ev = expect_single_failure(w, |e| pred(e) && e["comm"] == "sshd", SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", sshd.logs()));
    assert_eq!(ev["cause"], cause, "{ev:#}\n{}", sshd.logs());
    assert_eq!(ev["user"], "root", "{ev:#}");
    let client_ip = format!("{}.1", sshd.addr.rsplit_once('.').unwrap().0);
    assert!(
        ev["dst"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("{client_ip}:"))),
        "the client's address and port: {ev:#}"
    );
    summary_has(&ev, &format!("root from {client_ip}"));
    ev
}

#[test]
fn unknown_key_is_030_on_client_and_server() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !ready() {
        return;
    }
    let h = hosts("ssh-unknown", 1);
    let sshd = Sshd::start(&h, "10.234.1.2", Logging::Stderr);
    let w = watch_both(&h);
    let (status, stderr) = sshd.login(&h, "unknown");
    assert_eq!(status, 255, "{stderr}");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    let client = client_event(&w, &h, &sshd);
    let key = sshd.key("unknown").display().to_string();
    assert!(
        evidence_has(&client, &format!("key files it read (openat): {key}")),
        "the offered key file: {client:#}"
    );
    let server = server_event(&w, &h, &sshd, "server_key_unknown");
    assert!(evidence_has(&server, "LogLevel VERBOSE"), "{server:#}");
    w.stop().unwrap();
}

#[test]
fn bad_authorized_keys_modes_are_030_with_sshds_reason() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !ready() {
        return;
    }
    let h = hosts("ssh-modes", 2);
    let sshd = Sshd::start(&h, "10.234.2.2", Logging::Stderr);
    sshd.set_keys_mode(0o666);
    let w = watch_both(&h);
    let (status, stderr) = sshd.login(&h, "good");
    assert_eq!(status, 255, "{stderr}");
    client_event(&w, &h, &sshd);
    let server = server_event(&w, &h, &sshd, "server_bad_modes");
    let path = sshd.authorized_keys().display().to_string();
    summary_has(&server, "StrictModes");
    summary_has(&server, &format!("bad ownership or modes for file {path}"));
    let next = server["next"].as_array().unwrap();
    assert!(
        next[0]
            .as_str()
            .unwrap()
            .starts_with("ls -ld / ~root ~root/.ssh"),
        "{server:#}"
    );
    w.stop().unwrap();
}

#[test]
fn good_key_logs_in_without_an_event() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !ready() {
        return;
    }
    let h = hosts("ssh-good", 3);
    let sshd = Sshd::start(&h, "10.234.3.2", Logging::Stderr);
    let w = watch_both(&h);
    let (status, stderr) = sshd.login(&h, "good");
    assert_eq!(status, 0, "{stderr}\n{}", sshd.logs());
    // Then a refusal, so that "no event" is not merely "nothing seen yet".
    sshd.login(&h, "unknown");
    client_event(&w, &h, &sshd);
    server_event(&w, &h, &sshd, "server_key_unknown");
    let ours: Vec<Value> = w
        .failures()
        .into_iter()
        .filter(|e| in_ns(&h.client)(e) || in_ns(&h.server)(e))
        .collect();
    assert_eq!(
        ours.len(),
        2,
        "only the refused login is reported: {ours:#?}"
    );
    w.stop().unwrap();
}

#[test]
fn sshd_logging_through_syslog_is_read_from_its_sendto() {
    let Some(_one) = root_serial() else {
        return;
    };
    if !ready() {
        return;
    }
    if Command::new("busybox").arg("true").output().is_err() {
        skip("busybox is not installed (busybox-static): no syslogd to receive sshd's lines");
        return;
    }
    let h = hosts("ssh-syslog", 4);
    let sshd = Sshd::start(&h, "10.234.4.2", Logging::Syslog);
    sshd.set_keys_mode(0o666);
    let w = watch_both(&h);
    assert!(
        hook_attached(&w, "ssh_sys_sendto") || hook_attached(&w, "ssh_sendto"),
        "{:#?}",
        w.events()
    );
    let (status, stderr) = sshd.login(&h, "good");
    assert_eq!(status, 255, "{stderr}");
    let server = server_event(&w, &h, &sshd, "server_bad_modes");
    assert!(
        sshd.logs().contains("Authentication refused"),
        "syslogd got the line too: {}",
        sshd.logs()
    );
    summary_has(&server, "StrictModes");
    w.stop().unwrap();
}
