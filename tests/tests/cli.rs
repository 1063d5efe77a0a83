//! The binary's behaviour at its edges: bad input, missing privileges or BTF, and leaving nothing
//! attached behind when it stops or is killed.
use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt as _,
    process::{Command, Output},
    sync::Mutex,
    thread::sleep,
    time::{Duration, Instant},
};

use netladder_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn netladder(args: &[&str]) -> Command {
    let mut c = Command::new(netladder_bin());
    c.args(args);
    c
}

/// `netladder hooks --json`, which must succeed, as its record (checked against the schema).
fn hooks_json() -> serde_json::Value {
    let out = netladder(&["hooks", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    schema::parse_record(&String::from_utf8_lossy(&out.stdout))
}

/// Exit status non-zero and exactly one line on stderr containing `needle`.
fn one_line_error(out: Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_flag_values_are_one_line_errors() {
    let out = netladder(&["watch", "--duration", "0"]).output().unwrap();
    one_line_error(out, "--duration must be a positive number");
    let out = netladder(&["watch", "--code", "031"]).output().unwrap();
    one_line_error(out, "unknown ladder code");
    let out = netladder(&["watch", "--netns", "nl-no-such-namespace"])
        .output()
        .unwrap();
    one_line_error(
        out,
        "no network namespace at /run/netns/nl-no-such-namespace",
    );
    let out = netladder(&["watch", "--skip-hook", "nope"])
        .output()
        .unwrap();
    one_line_error(out, "--skip-hook nope: no such program");
    let out = netladder(&["watch", "--skip-hook", "inet_sock_set_state"])
        .output()
        .unwrap();
    one_line_error(out, "cannot be skipped");
    let out = netladder(&["watch", "--port", "http"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = netladder(&["watch", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn not_root_is_a_one_line_error() {
    if !require_root() {
        return;
    }
    // Drop to nobody for the child only.
    let out = netladder(&["watch"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    one_line_error(out, "needs root");
}

#[test]
fn missing_btf_is_a_one_line_error() {
    if !require_root() {
        return;
    }
    let out = netladder(&["watch"])
        .env("NETLADDER_BTF", "/nonexistent/vmlinux")
        .output()
        .unwrap();
    one_line_error(out, "no kernel BTF at /nonexistent/vmlinux");
}

/// Where the kernel has uprobe_multi links (6.6+: their attach function is named in its BTF),
/// every attached uprobe is one (they close side by side at exit; perf-event uprobes close one
/// at a time); elsewhere none is.
#[test]
fn uprobes_are_uprobe_multi_links_where_the_kernel_has_them() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let name = b"\0bpf_uprobe_multi_link_attach\0";
    let multi = btf.windows(name.len()).any(|w| w == name);
    let v = hooks_json();
    let hooks = v["hooks"].as_array().unwrap();
    let mut uprobes = 0;
    for h in hooks {
        let hook = h["hook"].as_str().unwrap();
        let is_uprobe = hook.starts_with("uprobe/") || hook.starts_with("uretprobe/");
        if is_uprobe && h["status"] == "attached" {
            uprobes += 1;
            assert_eq!(h["uprobe_multi"], multi, "{h}");
        } else {
            assert_eq!(h["uprobe_multi"], false, "{h}");
        }
    }
    // glibc's getaddrinfo at least (every machine of the suite has it).
    assert!(uprobes >= 2, "{v:#}");
}

#[test]
fn hooks_reports_every_program() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let v = hooks_json();
    let hooks = v["hooks"].as_array().unwrap();
    let status = |p: &str| {
        hooks
            .iter()
            .find(|h| h["program"] == p)
            .map(|h| h["status"].clone())
    };
    assert_eq!(status("inet_sock_set_state").unwrap(), "attached", "{v:#}");
    for h in hooks {
        let s = h["status"].as_str().unwrap();
        assert!(
            ["attached", "refused", "skipped", "replaced"].contains(&s),
            "{h}"
        );
        // A replaced hook is one whose work the hooks that replace it do (attached).
        if s == "replaced" {
            assert!(
                h["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("not needed: ") && r.ends_with(" attached")),
                "{h}"
            );
        }
        if s != "attached" {
            assert!(
                h["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "a reason for {h}"
            );
        }
        // What is lost without a hook that did not attach (a replaced one loses nothing) is
        // in the degraded list; for a syscall tracepoint left out, with how to opt in.
        if s == "skipped" || s == "refused" {
            let lost = h["without"].as_str().unwrap();
            if h["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("opt-in (--syscall-hooks)"))
            {
                let line = format!("{lost} (opt-in here: --syscall-hooks)");
                assert!(
                    v["degraded"].as_array().unwrap().iter().any(|d| *d == line),
                    "{line}: {v:#}"
                );
                continue;
            }
            // A refused fexit program whose work falls to syscall tracepoints left out: their
            // opt-in lines (checked above) say what is lost.
            if h["lost"]
                .as_str()
                .is_some_and(|l| l.starts_with("its work falls to syscall tracepoints"))
            {
                continue;
            }
            // Not lost when another attached hook gives the same (the ICMP answers: fentry on
            // tcp_v4_err/tcp_v6_err where allowed, else consume_skb).
            let covered = hooks
                .iter()
                .any(|o| o["status"] == "attached" && o["without"] == lost);
            assert!(
                covered || v["degraded"].as_array().unwrap().iter().any(|d| d == lost),
                "{v:#}"
            );
        }
    }
    // Every hook says who pays for it; the syscall tracepoints say they tax every system call.
    for h in hooks {
        let cost = h["cost"].as_str().unwrap_or_default();
        let hook = h["hook"].as_str().unwrap();
        assert!(
            [
                "per packet",
                "EVERY SYSCALL",
                "EVERY TASK",
                "per call",
                "per event",
                "per lib call"
            ]
            .contains(&cost),
            "{h}"
        );
        assert_eq!(
            cost == "EVERY SYSCALL",
            hook.starts_with("tracepoint/syscalls/"),
            "{h}"
        );
        assert_eq!(
            cost == "EVERY TASK",
            [
                "fentry/vfs_write",
                "fentry/__sys_sendto",
                "fexit/do_sys_openat2"
            ]
            .contains(&hook),
            "{h}"
        );
    }
    // Where the socket layer's fexit programs (or what stands in for them) attach, no syscall
    // tracepoint does their work: those are replaced, not attached as well.
    for (fexit, tracepoints) in [
        (
            &[
                "inet_stream_connect_entry",
                "inet_stream_connect_exit",
                "inet_dgram_connect_exit",
            ][..],
            &["sys_enter_connect", "sys_exit_connect"][..],
        ),
        (
            &["inet_bind_exit", "inet6_bind_exit"][..],
            &["sys_enter_bind", "sys_exit_bind"][..],
        ),
        // listen(): the state-change program does the work where inet_listen_exit is refused,
        // and is itself replaced where it attaches.
        (
            &["listen_state"][..],
            &["sys_enter_listen", "sys_exit_listen"][..],
        ),
        (
            &["udp_sendmsg_exit", "udpv6_sendmsg_exit"][..],
            &[
                "sys_enter_sendto",
                "sys_exit_sendto",
                "sys_enter_sendmsg",
                "sys_exit_sendmsg",
            ][..],
        ),
    ] {
        let all_attached = fexit
            .iter()
            .all(|p| status(p).is_some_and(|s| s == "attached" || s == "replaced"));
        for t in tracepoints {
            let s = status(t).unwrap();
            if all_attached {
                assert_eq!(s, "replaced", "{t} beside {fexit:?}: {v:#}");
            } else {
                assert_ne!(s, "replaced", "{t} without {fexit:?}: {v:#}");
            }
        }
    }
    // Without --syscall-hooks no syscall tracepoint attaches, whatever the kernel; where the
    // fexit programs did not attach either, the route-lookup programs stand in for them.
    let connect_fexit = status("inet_stream_connect_exit").is_some_and(|s| s == "attached");
    for h in hooks {
        if h["hook"]
            .as_str()
            .unwrap()
            .starts_with("tracepoint/syscalls/")
        {
            assert_ne!(h["status"], "attached", "{h}");
        }
        // Nor does a program on write(), sendto() or open, which every task makes, even where
        // fentry/fexit load.
        if h["cost"] == "EVERY TASK" {
            assert_eq!(h["status"], "skipped", "{h}");
            assert_eq!(h["opt_in"], true, "{h}");
        }
        if h["program"].as_str().unwrap().starts_with("route_") && connect_fexit {
            assert_eq!(h["status"], "replaced", "{h}");
        }
    }
    let opted = netladder(&["hooks", "--json", "--syscall-hooks"])
        .output()
        .unwrap();
    let opted = schema::parse_record(&String::from_utf8_lossy(&opted.stdout));
    for h in opted["hooks"].as_array().unwrap() {
        let program = h["program"].as_str().unwrap();
        if h["hook"]
            .as_str()
            .unwrap()
            .starts_with("tracepoint/syscalls/")
        {
            assert!(
                h["status"] == "attached" || h["status"] == "replaced",
                "{h}"
            );
        }
        // Those on write(), sendto() and open are tried: attached, or refused where fentry is.
        if h["cost"] == "EVERY TASK" {
            assert!(h["status"] == "attached" || h["status"] == "refused", "{h}");
        }
        // With the syscall tracepoints (or the fexit programs that replace them) the
        // route-lookup programs are not needed.
        if program.starts_with("route_") {
            assert_eq!(h["status"], "replaced", "{h}");
        }
    }
    let off = netladder(&["hooks", "--json", "--no-optional-hooks"])
        .output()
        .unwrap();
    let v = schema::parse_record(&String::from_utf8_lossy(&off.stdout));
    for h in v["hooks"].as_array().unwrap() {
        if h["optional"] == true {
            assert_eq!(h["status"], "skipped", "{h}");
            assert_eq!(h["reason"], "disabled by --no-optional-hooks");
        }
    }
}

/// IDs of the BPF programs a process holds (its fds and links name them in fdinfo): exactly
/// netladder's own, never another tool's.
fn prog_ids_held_by(pid: u32) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids
}

/// Whether a BPF program with this ID still exists (BPF_PROG_GET_FD_BY_ID).
fn prog_exists(id: u32) -> bool {
    #[repr(C)]
    struct GetFdById {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let attr = GetFdById {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: a valid bpf_attr prefix for this command, and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &attr as *const GetFdById,
            std::mem::size_of::<GetFdById>(),
        )
    };
    if fd >= 0 {
        // SAFETY: we own the fd the kernel just returned.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

/// Polls `pred` until it holds; false after 60 s (a bound only a leak exceeds: the kernel frees
/// programs after RCU grace periods, slower on a loaded machine).
fn wait_until(pred: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if pred() {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn stopping_or_killing_leaves_nothing_attached() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::new("detach").unwrap();
    let args = ["--netns".to_string(), ns.inode().to_string()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let w = Watch::start(&args).unwrap();
    let ours = prog_ids_held_by(w.pid());
    assert!(ours.len() >= 6, "netladder holds its programs: {ours:?}");
    assert!(ours.iter().all(|id| prog_exists(*id)));
    let (events, stderr) = w.stop().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "stats" && e["final"] == true && e["lost"] == 0),
        "a final stats line: {events:?}"
    );
    assert!(stderr.contains("0 lost"), "{stderr}");
    assert!(
        wait_until(|| !ours.iter().any(|id| prog_exists(*id))),
        "detached after SIGINT"
    );

    // SIGKILL: the kernel releases everything with the last file descriptor.
    let w = Watch::start(&args).unwrap();
    let ours = prog_ids_held_by(w.pid());
    assert!(ours.len() >= 6, "{ours:?}");
    drop(w);
    assert!(
        wait_until(|| !ours.iter().any(|id| prog_exists(*id))),
        "detached after SIGKILL"
    );

    // And a new start after the kill works as the first did.
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let w = Watch::start(&args).unwrap();
    fails_with(
        connect(Some(&ns), "127.0.0.1:9", &[]).unwrap(),
        "ECONNREFUSED",
    );
    let ev = w
        .wait_for(|e| e["dst"] == "127.0.0.1:9", Duration::from_secs(10))
        .unwrap();
    assert_eq!(ev["code"], "021", "{ev:#}");
    w.stop().unwrap();
}

/// `--program-costs`: one `costs` record, just before the final stats, names the programs that
/// ran with their runs and run time as the kernel counted them; the text goes to stderr.
#[test]
fn program_costs_name_the_programs_that_ran() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::new("costs").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let inode = ns.inode().to_string();
    let w = Watch::start(&["--netns", &inode, "--program-costs"]).unwrap();
    let out = connect(Some(&ns), "127.0.0.1:9", &["--count", "20"]).unwrap();
    assert!(
        out.lines.len() == 20 && out.lines.iter().all(|l| l.contains("ECONNREFUSED")),
        "{out:?}"
    );
    w.wait_for(|e| e["dst"] == "127.0.0.1:9", Duration::from_secs(10))
        .unwrap();
    let (events, stderr) = w.stop().unwrap();
    let at = |kind: &str| {
        let found: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["type"] == kind && (kind != "stats" || e["final"] == true))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} record: {events:#?}");
        found[0]
    };
    let (costs, last) = (at("costs"), at("stats"));
    assert_eq!(costs + 1, last, "costs just before the final stats");
    let programs = events[costs]["programs"].as_array().unwrap();
    let state = programs
        .iter()
        .find(|p| p["name"] == "inet_sock_set_state")
        .unwrap_or_else(|| panic!("the state-change program ran: {programs:#?}"));
    // Each refused connect moves its socket into SYN_SENT and out of it.
    assert!(state["runs"].as_u64().unwrap() >= 40, "{state}");
    assert!(state["run_ns"].as_u64().unwrap() > 0, "{state}");
    assert!(
        programs.iter().all(|p| p["runs"].as_u64() > Some(0)),
        "only programs that ran: {programs:#?}"
    );
    assert!(
        stderr.contains("program costs since ready") && stderr.contains("inet_sock_set_state: "),
        "{stderr}"
    );
}

/// netladder pins nothing: a read-only BPF filesystem (or none at all) changes nothing. Run in
/// a mount namespace of its own, so the machine's /sys/fs/bpf is never touched.
#[test]
fn a_read_only_bpf_filesystem_changes_nothing() {
    if !require_root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for mount in [
        "mount -t bpf -o ro bpf /sys/fs/bpf",
        "mount -t tmpfs -o ro,size=4k none /sys/fs/bpf",
    ] {
        // The mount is made private first (unshare does), then shadowed by our own mount.
        let script = format!(
            "{mount} && if touch /sys/fs/bpf/nl-probe 2>/dev/null; then echo writable; exit 3; fi; \
             exec {} watch --json --duration 1",
            netladder_bin().display()
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mount}: {stdout} {stderr}");
        assert!(
            !stderr.contains("/sys/fs/bpf") && !stderr.to_lowercase().contains("read-only"),
            "{mount}: nothing to say about it: {stderr}"
        );
        let hooks: serde_json::Value = stdout
            .lines()
            .map(schema::parse_record)
            .find(|v| v["type"] == "hooks")
            .unwrap_or_else(|| panic!("{mount}: a hooks line: {stdout}"));
        assert!(
            hooks["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["program"] == "inet_sock_set_state" && h["status"] == "attached"),
            "{mount}: the core hook attached: {hooks}"
        );
    }
}
