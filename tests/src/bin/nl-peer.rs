//! `nl-peer`: a tiny, real TCP/UDP peer for netladder's scenario tests.
//!
//! ```text
//! nl-peer listen ADDR [--v6only] [--reuseaddr] [--backlog N] [--pair] [--wait-peer-close]
//!     [--no-accept]
//!     bind + listen on ADDR, print `ready ADDR` (the bound address), accept and close
//!     connections until killed. On failure print `error NAME ERRNO` and exit 1.
//!     --no-accept never calls accept(): connections pile up in the accept queue, and once it
//!     holds more than the backlog the kernel drops new SYNs (a stuck server).
//!     An IPv6 listener is dual-stack (also takes IPv4) unless --v6only is given.
//!     --pair binds two sockets to ADDR first, then listens on both (with --reuseaddr the
//!     binds succeed and the second listen() fails with EADDRINUSE); the first one serves, and
//!     the ready line ends with the second's result: `ready ADDR second=ok|error NAME ERRNO`.
//!     --wait-peer-close closes each accepted connection only after the client closed its end,
//!     so the client closes first and keeps the TIME_WAIT on its side.
//! nl-peer connect ADDR [--timeout SECS] [--bind ADDR] [--count N] [--nonblocking | --epoll |
//!     --close-at-once] [--hold SECS] [--spread N]
//!     make N real TCP connects; print one line per attempt: `ok` or `error NAME ERRNO`.
//!     --timeout: non-blocking connect with a deadline; when it expires the program closes
//!     the socket itself (the application gave up) and prints `error TIMEOUT_APP 0`.
//!     --nonblocking: what event loops and curl do: a non-blocking connect (EINPROGRESS), poll()
//!     for POLLOUT (POLLERR and POLLHUP end the wait too), getsockopt(SO_ERROR), which hands
//!     over and clears the socket's error, then close() (the socket may still be in SYN_SENT).
//!     --epoll: the same with epoll_wait() in place of poll().
//!     --close-at-once: a non-blocking connect closed right after it returned EINPROGRESS,
//!     before any answer: not a failure (a negative check); prints `abandoned`, exit 0.
//!     --hold: keep the connected sockets open SECS seconds before exiting.
//!     --spread N: attempt i goes to port PORT + i % N (distinct destinations).
//!     Exit 0 when every attempt succeeded, 1 otherwise.
//! nl-peer udp-send ADDR
//!     send one datagram to ADDR; print `ok` or `error NAME ERRNO`.
//! nl-peer dns-ask ADDR NAME
//!     ask ADDR for NAME's A record the way resolvers that never connect() their UDP socket do
//!     (musl, many event loops): sendto() from an unconnected socket, recvfrom() the answer
//!     (2 s at most); print `rcode N`, or `timeout`, or `error NAME ERRNO`.
//! nl-peer storm ADDR --duration SECS [--threads N]
//!     blocking TCP connects to ADDR, as fast as N threads (default 1) can, for SECS; print one
//!     JSON line {"attempts":N,"refused":N,"ok":N,"other":N,"secs":F,"rate":F,"user":F,"sys":F}
//!     (rate = attempts/s; user/sys = the CPU seconds this process used, kernel work included).
//!     Meant for a closed port on loopback (`cargo xtask bench`).
//! nl-peer sink ADDR
//!     bind + listen on ADDR, print `ready ADDR`, then read and discard everything each accepted
//!     connection sends (one thread per connection) until killed.
//! nl-peer blast ADDR --duration SECS
//!     one TCP connection to ADDR, written to as fast as possible for SECS; print one JSON line
//!     {"bytes":N,"secs":F,"rate":F,"user":F,"sys":F} (rate = bytes/s). A failed connect or
//!     write prints `error NAME ERRNO` and exits 1.
//! nl-peer churn ADDR --duration SECS
//!     blocking connects to ADDR, one after another, for SECS: each waits for the server's close
//!     (a `listen` peer closes every connection it accepts) and then closes its end, so the
//!     TIME_WAIT stays on the server's side. Print one JSON line
//!     {"connects":N,"failures":N,"secs":F,"rate":F,"user":F,"sys":F} (rate = connects/s).
//! nl-peer udp-flood ADDR --duration SECS
//!     64-byte datagrams to ADDR from one UDP socket, as fast as possible for SECS; print one JSON
//!     line {"attempts":N,"sent":N,"eperm":N,"other":N,"secs":F,"rate":F,"user":F,"sys":F}
//!     (eperm: sendto() refused with EPERM, what a local firewall's drop makes of it).
//! nl-peer rw --duration SECS
//!     no network at all: read() one byte of /dev/zero and write() it to /dev/null, as fast as
//!     possible for SECS (what `dd bs=1` does); an op is the pair. Print one JSON line
//!     {"ops":N,"secs":F,"rate":F,"user":F,"sys":F}. The VM benchmark's host-tax load.
//! ```
//! nl-peer dns-serve ADDR MODE
//!     a tiny UDP DNS responder for the DNS scenarios, print `ready ADDR` and answer every
//!     question until killed. MODE: `servfail` (the question copied back with RCODE 2),
//!     `nxcompressed` (NXDOMAIN with an SOA in the authority section whose names use
//!     compression pointers), `malformed` (the N-th question gets the N-th of the broken
//!     answers below, in a cycle: a header announcing a question that is not there, a question
//!     name that points at itself, a label running past the end, a reserved label type, five
//!     bytes, two questions; each with RCODE NXDOMAIN).
//! Usage errors exit 2. ADDR is `IPv4:port` or `[IPv6]:port`.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::mem;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Why one connect attempt did not succeed.
enum Failure {
    Errno(i32),
    AppTimeout,
    /// --close-at-once: closed while the connect was in progress, on purpose.
    Abandoned,
}

struct ListenOpts {
    addr: SocketAddr,
    v6only: bool,
    reuseaddr: bool,
    backlog: i32,
    pair: bool,
    wait_peer_close: bool,
    no_accept: bool,
}

struct StormOpts {
    addr: SocketAddr,
    duration: Duration,
    threads: u32,
}

/// What one storm thread (or the whole storm) counted.
#[derive(Default, Clone, Copy)]
struct StormCounts {
    attempts: u64,
    refused: u64,
    ok: u64,
    other: u64,
}

struct ConnectOpts {
    addr: SocketAddr,
    timeout: Option<Duration>,
    bind: Option<SocketAddr>,
    count: u32,
    nonblocking: bool,
    /// Wait with epoll instead of poll (implies non-blocking).
    epoll: bool,
    /// Close right after a connect that returned EINPROGRESS.
    close_at_once: bool,
    hold: Option<Duration>,
    /// Attempt i goes to port + i % spread (distinct destinations, one event each).
    spread: u16,
}

fn main() -> ExitCode {
    set_comm("nl-peer");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("listen") => parse_listen(&args[1..]).map(run_listen),
        Some("connect") => parse_connect(&args[1..]).map(run_connect),
        Some("udp-send") => parse_udp("udp-send", &args[1..]).map(run_udp_send),
        Some("dns-ask") => parse_dns_ask(&args[1..]).map(|(a, n)| run_dns_ask(a, &n)),
        Some("storm") => parse_storm(&args[1..]).map(run_storm),
        Some("dns-serve") => parse_dns(&args[1..]).map(|(a, m)| run_dns_serve(a, &m)),
        Some("sink") => parse_udp("sink", &args[1..]).map(run_sink),
        Some("blast") => parse_timed("blast", &args[1..]).map(|(a, d)| run_blast(a, d)),
        Some("churn") => parse_timed("churn", &args[1..]).map(|(a, d)| run_churn(a, d)),
        Some("udp-flood") => parse_timed("udp-flood", &args[1..]).map(|(a, d)| run_udp_flood(a, d)),
        Some("rw") => parse_rw(&args[1..]).map(run_rw),
        _ => Err(
            "expected a command: listen | connect | udp-send | storm | dns-serve | sink | blast | \
             churn | udp-flood | rw"
                .to_string(),
        ),
    };
    result.unwrap_or_else(|msg| {
        eprintln!("nl-peer: {msg}");
        ExitCode::from(2)
    })
}

/// Names the process `name` (what /proc/PID/comm and the kernel's `comm` show).
fn set_comm(name: &str) {
    let cname = CString::new(name).expect("comm has no NUL byte");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("bad address {text:?} (want IPv4:port or [IPv6]:port)"))
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: Option<&String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("bad value {value:?} for {flag}"))
}

fn parse_secs(flag: &str, value: Option<&String>) -> Result<Duration, String> {
    let secs: f64 = parse_num(flag, value)?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {secs} for {flag}"))
}

fn parse_listen(args: &[String]) -> Result<ListenOpts, String> {
    let (addr, mut rest) = split_addr(args)?;
    let mut opts = ListenOpts {
        addr,
        v6only: false,
        reuseaddr: false,
        backlog: 128,
        pair: false,
        wait_peer_close: false,
        no_accept: false,
    };
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--v6only" => opts.v6only = true,
            "--reuseaddr" => opts.reuseaddr = true,
            "--pair" => opts.pair = true,
            "--wait-peer-close" => opts.wait_peer_close = true,
            "--no-accept" => opts.no_accept = true,
            "--backlog" => opts.backlog = parse_num(flag, rest.next())?,
            other => return Err(format!("listen: unknown option {other:?}")),
        }
    }
    Ok(opts)
}

fn parse_connect(args: &[String]) -> Result<ConnectOpts, String> {
    let (addr, mut rest) = split_addr(args)?;
    let mut opts = ConnectOpts {
        addr,
        timeout: None,
        bind: None,
        count: 1,
        nonblocking: false,
        epoll: false,
        close_at_once: false,
        hold: None,
        spread: 1,
    };
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--timeout" => opts.timeout = Some(parse_secs(flag, rest.next())?),
            "--bind" => {
                let value = rest.next().ok_or("--bind needs an address")?;
                opts.bind = Some(parse_addr(value)?);
            }
            "--count" => opts.count = parse_num(flag, rest.next())?,
            "--nonblocking" => opts.nonblocking = true,
            "--epoll" => opts.epoll = true,
            "--close-at-once" => opts.close_at_once = true,
            "--hold" => opts.hold = Some(parse_secs(flag, rest.next())?),
            "--spread" => opts.spread = parse_num::<u16>(flag, rest.next())?.max(1),
            other => return Err(format!("connect: unknown option {other:?}")),
        }
    }
    let modes = [opts.nonblocking, opts.epoll, opts.close_at_once];
    if modes.iter().filter(|m| **m).count() > 1 {
        return Err(
            "connect: --nonblocking, --epoll and --close-at-once exclude each other".to_string(),
        );
    }
    if opts.close_at_once && opts.timeout.is_some() {
        return Err("connect: --close-at-once waits for nothing: no --timeout".to_string());
    }
    Ok(opts)
}

fn parse_storm(args: &[String]) -> Result<StormOpts, String> {
    let (addr, mut rest) = split_addr(args)?;
    let mut duration = None;
    let mut threads = 1;
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--duration" => duration = Some(parse_secs(flag, rest.next())?),
            "--threads" => threads = parse_num(flag, rest.next())?,
            other => return Err(format!("storm: unknown option {other:?}")),
        }
    }
    let duration = duration.ok_or("storm: --duration SECS is required")?;
    if threads == 0 {
        return Err("storm: --threads must be at least 1".to_string());
    }
    Ok(StormOpts {
        addr,
        duration,
        threads,
    })
}

/// ADDR with no option (`udp-send`, `sink`).
fn parse_udp(command: &str, args: &[String]) -> Result<SocketAddr, String> {
    let (addr, mut rest) = split_addr(args)?;
    match rest.next() {
        None => Ok(addr),
        Some(other) => Err(format!("{command}: unknown option {other:?}")),
    }
}

/// ADDR --duration SECS (`blast`, `churn`, `udp-flood`).
fn parse_timed(command: &str, args: &[String]) -> Result<(SocketAddr, Duration), String> {
    let (addr, mut rest) = split_addr(args)?;
    let mut duration = None;
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--duration" => duration = Some(parse_secs(flag, rest.next())?),
            other => return Err(format!("{command}: unknown option {other:?}")),
        }
    }
    let duration = duration.ok_or_else(|| format!("{command}: --duration SECS is required"))?;
    Ok((addr, duration))
}

/// `rw --duration SECS`.
fn parse_rw(args: &[String]) -> Result<Duration, String> {
    match args {
        [flag, value] if flag == "--duration" => parse_secs(flag, Some(value)),
        _ => Err("rw: expected --duration SECS".to_string()),
    }
}

fn split_addr(args: &[String]) -> Result<(SocketAddr, std::slice::Iter<'_, String>), String> {
    let (first, rest) = args.split_first().ok_or("missing ADDR")?;
    Ok((parse_addr(first)?, rest.iter()))
}

fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout only means nobody reads our report any more; nothing useful to do.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn error_line(errno: i32) -> String {
    format!("error {} {errno}", errno_name(errno))
}

fn run_listen(opts: ListenOpts) -> ExitCode {
    match open_listener(&opts) {
        Ok((listener, second)) => {
            let bound = listener
                .local_addr()
                .map_or_else(|_| opts.addr.to_string(), |a| a.to_string());
            match &second {
                Some((_, outcome)) => print_line(&format!("ready {bound} second={outcome}")),
                None => print_line(&format!("ready {bound}")),
            }
            if opts.no_accept {
                loop {
                    std::thread::park();
                }
            }
            accept_forever(&listener, opts.wait_peer_close)
        }
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            eprintln!("nl-peer: listen on {}: {err}", opts.addr);
            ExitCode::FAILURE
        }
    }
}

fn accept_forever(listener: &TcpListener, wait_peer_close: bool) -> ! {
    loop {
        // Each accepted stream is closed by dropping it: at once, or after the peer's close.
        match listener.accept() {
            Ok((mut stream, _)) if wait_peer_close => {
                let mut buf = [0u8; 512];
                while matches!(io::Read::read(&mut stream, &mut buf), Ok(n) if n > 0) {}
            }
            Ok(_) => {}
            Err(err) => eprintln!("nl-peer: accept: {err}"),
        }
    }
}

/// The listener, plus with --pair the outcome of the second socket's listen() (kept open).
fn open_listener(opts: &ListenOpts) -> io::Result<(TcpListener, Option<(OwnedFd, String)>)> {
    let fd = bound_socket(opts)?;
    let second = opts.pair.then(|| bound_socket(opts)).transpose()?;
    listen_fd(&fd, opts.backlog)?;
    let second = second.map(|s| {
        let outcome = match listen_fd(&s, opts.backlog) {
            Ok(()) => "ok".to_string(),
            Err(err) => error_line(err.raw_os_error().unwrap_or(0)),
        };
        (s, outcome)
    });
    Ok((TcpListener::from(fd), second))
}

fn listen_fd(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a socket we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// A socket with the listener's options, bound to its address.
fn bound_socket(opts: &ListenOpts) -> io::Result<OwnedFd> {
    let fd = new_socket(&opts.addr, false)?;
    if opts.reuseaddr {
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    if opts.addr.is_ipv6() {
        set_int_option(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            opts.v6only.into(),
        )?;
    }
    bind_fd(&fd, &opts.addr)?;
    Ok(fd)
}

fn run_connect(opts: ConnectOpts) -> ExitCode {
    let mut all_ok = true;
    let mut held = Vec::new();
    for i in 0..opts.count {
        let port = opts
            .addr
            .port()
            .wrapping_add((i % u32::from(opts.spread)) as u16);
        let attempt = ConnectOpts {
            addr: SocketAddr::new(opts.addr.ip(), port),
            ..opts
        };
        match connect_once(&attempt) {
            Ok(fd) => {
                print_line("ok");
                if opts.hold.is_some() {
                    held.push(fd);
                }
            }
            Err(Failure::Errno(errno)) => {
                all_ok = false;
                print_line(&error_line(errno));
            }
            Err(Failure::AppTimeout) => {
                all_ok = false;
                print_line("error TIMEOUT_APP 0");
            }
            Err(Failure::Abandoned) => print_line("abandoned"),
        }
    }
    if let Some(hold) = opts.hold {
        std::thread::sleep(hold);
    }
    drop(held);
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One connect attempt. The socket is closed when the returned fd (or the error path) drops it.
fn connect_once(opts: &ConnectOpts) -> Result<OwnedFd, Failure> {
    let errno = |e: io::Error| Failure::Errno(e.raw_os_error().unwrap_or(0));
    let waits = opts.nonblocking || opts.epoll || opts.close_at_once || opts.timeout.is_some();
    let fd = new_socket(&opts.addr, waits).map_err(errno)?;
    if let Some(local) = &opts.bind {
        bind_fd(&fd, local).map_err(errno)?;
    }
    let (storage, len) = sockaddr_of(&opts.addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), storage_ptr(&storage), len) };
    match check(rc) {
        Ok(()) => Ok(fd),
        // The caller's drop of the error closes the socket, still in SYN_SENT.
        Err(e) if opts.close_at_once && e.raw_os_error() == Some(libc::EINPROGRESS) => {
            Err(Failure::Abandoned)
        }
        Err(e) if waits && e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if opts.epoll {
                wait_connected_epoll(&fd, opts.timeout)?;
            } else {
                wait_connected(&fd, opts.timeout)?;
            }
            Ok(fd)
        }
        Err(e) => Err(errno(e)),
    }
}

/// Milliseconds left until `deadline` for poll()/epoll_wait(); -1 (no limit) without one.
fn wait_ms(deadline: Option<Instant>) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
        }
    }
}

/// [`wait_connected`] with epoll: one level-triggered EPOLLOUT registration, then epoll_wait()
/// until the socket is writable or has an error (EPOLLERR and EPOLLHUP are always reported).
fn wait_connected_epoll(fd: &OwnedFd, timeout: Option<Duration>) -> Result<(), Failure> {
    let fail = || Failure::Errno(last_errno());
    // SAFETY: plain syscall; the fd is owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(fail());
    }
    // SAFETY: ep is a fresh descriptor nobody else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut interest = libc::epoll_event {
        events: libc::EPOLLOUT as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are open; interest is a valid epoll_event.
    let rc = unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            &mut interest,
        )
    };
    check(rc).map_err(|_| fail())?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut ready = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: room for one event.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), &mut ready, 1, wait_ms(deadline)) };
        match n {
            0 => return Err(Failure::AppTimeout),
            n if n > 0 => return socket_error(fd),
            _ if last_errno() == libc::EINTR => continue,
            _ => return Err(fail()),
        }
    }
}

/// Waits for a non-blocking connect to finish; `None` deadline waits as long as the kernel tries.
fn wait_connected(fd: &OwnedFd, timeout: Option<Duration>) -> Result<(), Failure> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, wait_ms(deadline)) };
        match ready {
            0 => return Err(Failure::AppTimeout),
            n if n > 0 => return socket_error(fd),
            _ if last_errno() == libc::EINTR => continue,
            _ => return Err(Failure::Errno(last_errno())),
        }
    }
}

fn socket_error(fd: &OwnedFd) -> Result<(), Failure> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value/len describe a c_int buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Failure::Errno(last_errno()));
    }
    match value {
        0 => Ok(()),
        err => Err(Failure::Errno(err)),
    }
}

fn run_storm(opts: StormOpts) -> ExitCode {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let workers: Vec<_> = (0..opts.threads)
        .map(|_| {
            let addr = opts.addr;
            std::thread::spawn(move || storm_worker(&addr, deadline))
        })
        .collect();
    let mut total = StormCounts::default();
    for worker in workers {
        let Ok(counts) = worker.join() else {
            eprintln!("nl-peer: storm: a worker thread panicked");
            return ExitCode::FAILURE;
        };
        total.attempts += counts.attempts;
        total.refused += counts.refused;
        total.ok += counts.ok;
        total.other += counts.other;
    }
    let secs = start.elapsed().as_secs_f64();
    let (user, sys) = cpu_used();
    print_line(&format!(
        r#"{{"attempts":{},"refused":{},"ok":{},"other":{},"secs":{secs:.6},"rate":{:.1},"user":{user:.6},"sys":{sys:.6}}}"#,
        total.attempts,
        total.refused,
        total.ok,
        total.other,
        total.attempts as f64 / secs
    ));
    ExitCode::SUCCESS
}

/// User and system CPU seconds this process (all its threads) has used.
fn cpu_used() -> (f64, f64) {
    // SAFETY: an all-zero rusage is a valid buffer for getrusage to fill.
    let mut usage: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: usage is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// Blocking connects until `deadline`: socket, connect, close; nothing is allocated per attempt.
fn storm_worker(addr: &SocketAddr, deadline: Instant) -> StormCounts {
    let family = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let (storage, len) = sockaddr_of(addr);
    let mut counts = StormCounts::default();
    while Instant::now() < deadline {
        counts.attempts += 1;
        // SAFETY: plain syscall; the fd is closed below on every path.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            counts.other += 1;
            continue;
        }
        // SAFETY: storage holds a valid sockaddr of length len.
        let rc = unsafe { libc::connect(fd, storage_ptr(&storage), len) };
        match rc {
            0 => counts.ok += 1,
            _ if last_errno() == libc::ECONNREFUSED => counts.refused += 1,
            _ => counts.other += 1,
        }
        // SAFETY: fd is ours and closed exactly once.
        unsafe { libc::close(fd) };
    }
    counts
}

/// The JSON fields every timed load prints last: elapsed seconds, the rate and the CPU used.
fn timing_fields(start: Instant, count: u64) -> String {
    let secs = start.elapsed().as_secs_f64();
    let (user, sys) = cpu_used();
    format!(
        r#""secs":{secs:.6},"rate":{:.1},"user":{user:.6},"sys":{sys:.6}"#,
        count as f64 / secs
    )
}

fn run_sink(addr: SocketAddr) -> ExitCode {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            eprintln!("nl-peer: sink on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().map_or(addr, |a| a);
    print_line(&format!("ready {bound}"));
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    while matches!(io::Read::read(&mut stream, &mut buf), Ok(n) if n > 0) {}
                });
            }
            Err(err) => eprintln!("nl-peer: accept: {err}"),
        }
    }
}

fn run_blast(addr: SocketAddr, duration: Duration) -> ExitCode {
    let mut stream = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            return ExitCode::FAILURE;
        }
    };
    let buf = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    let deadline = start + duration;
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        match io::Write::write(&mut stream, &buf) {
            Ok(n) => bytes += n as u64,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                print_line(&error_line(err.raw_os_error().unwrap_or(0)));
                return ExitCode::FAILURE;
            }
        }
    }
    // The rate counts what was written in the time; the close after it is not timed.
    let timing = timing_fields(start, bytes);
    drop(stream);
    print_line(&format!(r#"{{"bytes":{bytes},{timing}}}"#));
    ExitCode::SUCCESS
}

fn run_churn(addr: SocketAddr, duration: Duration) -> ExitCode {
    let opts = ConnectOpts {
        addr,
        timeout: None,
        bind: None,
        count: 1,
        nonblocking: false,
        epoll: false,
        close_at_once: false,
        hold: None,
        spread: 1,
    };
    let start = Instant::now();
    let deadline = start + duration;
    let (mut connects, mut failures) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match connect_once(&opts) {
            Ok(fd) => {
                // Wait for the server's close (read returns 0), then close ours.
                loop {
                    // SAFETY: buf is valid for writes of its length.
                    let n =
                        unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n > 0 || (n < 0 && last_errno() == libc::EINTR) {
                        continue;
                    }
                    break;
                }
                connects += 1;
            }
            Err(_) => failures += 1,
        }
    }
    let timing = timing_fields(start, connects);
    print_line(&format!(
        r#"{{"connects":{connects},"failures":{failures},{timing}}}"#
    ));
    ExitCode::SUCCESS
}

fn run_rw(duration: Duration) -> ExitCode {
    let (zero, null) = match (File::open("/dev/zero"), File::create("/dev/null")) {
        (Ok(z), Ok(n)) => (z, n),
        (Err(err), _) | (_, Err(err)) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let deadline = start + duration;
    let mut ops = 0u64;
    let mut byte = [0u8; 1];
    loop {
        // The clock is read once every 256 ops, so the time goes to the two syscalls.
        for _ in 0..256 {
            // SAFETY: both descriptors are open for the whole loop; `byte` is valid for one byte.
            let ok = unsafe {
                libc::read(zero.as_raw_fd(), byte.as_mut_ptr().cast(), 1) == 1
                    && libc::write(null.as_raw_fd(), byte.as_ptr().cast(), 1) == 1
            };
            if !ok {
                print_line(&error_line(last_errno()));
                return ExitCode::FAILURE;
            }
        }
        ops += 256;
        if Instant::now() >= deadline {
            break;
        }
    }
    let timing = timing_fields(start, ops);
    print_line(&format!(r#"{{"ops":{ops},{timing}}}"#));
    ExitCode::SUCCESS
}

/// A UDP socket bound to any local address and port of `to`'s family, never connected.
fn unconnected_udp(to: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().expect("valid literal")
    } else {
        "0.0.0.0:0".parse().expect("valid literal")
    };
    UdpSocket::bind(local)
}

fn run_udp_flood(addr: SocketAddr, duration: Duration) -> ExitCode {
    let socket = match unconnected_udp(addr) {
        Ok(s) => s,
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            return ExitCode::FAILURE;
        }
    };
    let payload = [0x5au8; 64];
    let start = Instant::now();
    let deadline = start + duration;
    let (mut attempts, mut sent, mut eperm, mut other) = (0u64, 0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        attempts += 1;
        match socket.send_to(&payload, addr) {
            Ok(_) => sent += 1,
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => eperm += 1,
            Err(_) => other += 1,
        }
    }
    let timing = timing_fields(start, attempts);
    print_line(&format!(
        r#"{{"attempts":{attempts},"sent":{sent},"eperm":{eperm},"other":{other},{timing}}}"#
    ));
    ExitCode::SUCCESS
}

fn run_udp_send(addr: SocketAddr) -> ExitCode {
    let sent = unconnected_udp(addr).and_then(|s| s.send_to(b"nl-peer\n", addr));
    match sent {
        Ok(_) => {
            print_line("ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            ExitCode::FAILURE
        }
    }
}

/// ADDR NAME (`dns-ask`).
fn parse_dns_ask(args: &[String]) -> Result<(SocketAddr, String), String> {
    let (addr, mut rest) = split_addr(args)?;
    let name = rest.next().ok_or("dns-ask: missing NAME")?;
    if let Some(other) = rest.next() {
        return Err(format!("dns-ask: unknown argument {other:?}"));
    }
    if name.is_empty() || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("dns-ask: not a host name: {name:?}"));
    }
    Ok((addr, name.clone()))
}

fn run_dns_ask(addr: SocketAddr, name: &str) -> ExitCode {
    // Header: id, RD, one question; then the name's labels, QTYPE A, QCLASS IN.
    let mut q = vec![0x4e, 0x4c, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let asked = unconnected_udp(addr).and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(&q, addr)?;
        let mut buf = [0u8; 1500];
        loop {
            let (len, from) = s.recv_from(&mut buf)?;
            if from == addr && len >= 12 && buf[..2] == q[..2] {
                return Ok(buf[3] & 0x0f);
            }
        }
    });
    match asked {
        Ok(rcode) => {
            print_line(&format!("rcode {rcode}"));
            ExitCode::SUCCESS
        }
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            print_line("timeout");
            ExitCode::FAILURE
        }
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            ExitCode::FAILURE
        }
    }
}

fn new_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let mut kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        kind |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd: RawFd = unsafe { libc::socket(family, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int_option(fd: &OwnedFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: value is a c_int and its size is passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

fn bind_fd(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    check(unsafe { libc::bind(fd.as_raw_fd(), storage_ptr(&storage), len) })
}

fn storage_ptr(storage: &libc::sockaddr_storage) -> *const libc::sockaddr {
    (storage as *const libc::sockaddr_storage).cast()
}

fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The symbolic name of the errno values a connect, bind or send can report.
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EISCONN => "EISCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EPROTO => "EPROTO",
        libc::EMSGSIZE => "EMSGSIZE",
        _ => "UNKNOWN",
    }
}

fn parse_dns(args: &[String]) -> Result<(SocketAddr, String), String> {
    let (addr, mut rest) = split_addr(args)?;
    let mode = rest.next().ok_or("dns-serve: missing MODE")?;
    if !["servfail", "nxcompressed", "malformed"].contains(&mode.as_str()) {
        return Err(format!("dns-serve: unknown mode {mode:?}"));
    }
    match rest.next() {
        None => Ok((addr, mode.clone())),
        Some(other) => Err(format!("dns-serve: unknown option {other:?}")),
    }
}

/// The answer `mode` gives to `query` (the `n`-th one received); None ignores it.
fn dns_answer(query: &[u8], mode: &str, n: usize) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: the name's labels, then type and class.
    let mut end = 12;
    while end < query.len() && query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let header = |flags_lo: u8, qd: u8, ns: u8| -> Vec<u8> {
        vec![query[0], query[1], 0x81, flags_lo, 0, qd, 0, 0, 0, ns, 0, 0]
    };
    let mut r;
    match mode {
        "servfail" => {
            r = header(0x82, 1, 0);
            r.extend_from_slice(question);
        }
        "nxcompressed" => {
            r = header(0x83, 1, 1);
            r.extend_from_slice(question);
            // SOA owned by the question's name (pointer to offset 12), class IN, TTL 60.
            r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 60]);
            let mut rdata = vec![2, b'n', b's', 0xc0, 12, 4, b'h', b'o', b's', b't', 0xc0, 12];
            rdata.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 60, 0, 0, 0, 60]);
            rdata.extend_from_slice(&[0, 0, 0, 60, 0, 0, 0, 60]);
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(&rdata);
        }
        _ => {
            r = header(0x83, 1, 0);
            match n % 6 {
                // A header that announces a question, and nothing after it.
                0 => {}
                // The question's name is a pointer to itself.
                1 => r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]),
                // A label longer than what follows.
                2 => r.extend_from_slice(&[40, b'a', b'b', b'c']),
                // A reserved label type (0x40).
                3 => r.extend_from_slice(&[0x41, b'a', 0, 0, 1, 0, 1]),
                // Five bytes.
                4 => r.truncate(5),
                // Two questions.
                _ => {
                    r[5] = 2;
                    r.extend_from_slice(question);
                    r.extend_from_slice(question);
                }
            }
        }
    }
    Some(r)
}

fn run_dns_serve(addr: SocketAddr, mode: &str) -> ExitCode {
    let sock = match UdpSocket::bind(addr) {
        Ok(s) => s,
        Err(err) => {
            print_line(&error_line(err.raw_os_error().unwrap_or(0)));
            return ExitCode::FAILURE;
        }
    };
    let bound = sock.local_addr().map_or(addr, |a| a);
    print_line(&format!("ready {bound}"));
    let mut buf = [0u8; 1500];
    let mut n = 0usize;
    loop {
        let Ok((len, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(answer) = dns_answer(&buf[..len], mode, n) {
            let _ = sock.send_to(&answer, from);
            n += 1;
        }
    }
}
