//! The VM's initramfs: a cpio (newc) with busybox, the netladder and scenario binaries, the host
//! tools the scenarios drive (ip, ss, nft, iptables nft/legacy, dnsmasq, openssl, unshare,
//! setpriv, curl) with their libraries and data, a trimmed python3 (the client matrix's asyncio
//! client, the DNS and TLS python cases),
//! and, per kernel, the modules to load.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::debian::Kernel;
use super::modules;
use crate::build::Artifacts;
use crate::cmd;

/// PID 1 inside the VM.
const INIT_SCRIPT: &str = include_str!("../../vm/init");
/// The hook plans benchmark, run by init instead of the tests when NL_BENCH is set.
const BENCH_SCRIPT: &str = include_str!("../../vm/bench");
const BENCH_IN_VM: &str = "nl/bench";
const BUSYBOX: &str = "/bin/busybox";

/// Where things live inside the VM (the init script uses the same paths).
pub const NETLADDER_IN_VM: &str = "/usr/local/bin/netladder";
pub const NL_PEER_IN_VM: &str = "/usr/local/bin/nl-peer";
const TESTS_DIR_IN_VM: &str = "nl/tests";
const MODULE_LIST_IN_VM: &str = "etc/nl/modules";

/// Host programs copied to /usr/sbin in the VM.
const TOOLS: &[&str] = &[
    "bpftool",
    "ip",
    "ss",
    "tc",
    "nft",
    "xtables-nft-multi",
    "xtables-legacy-multi",
    // diagnose's DNS and TLS scenarios, and the capability-set check.
    "dnsmasq",
    "openssl",
    "unshare",
    "setpriv",
    // ssh scenarios (#030): the test's own sshd, the client and its keys.
    "sshd",
    "ssh",
    "ssh-keygen",
    // #025 watch scenarios: an OpenSSL 3 client; the client matrix's curl.
    "curl",
    // The #024 scenarios' DNS clients (python3 comes trimmed, see `python`).
    "dig",
    "getent",
];

/// Programs sshd runs by absolute path on OpenSSH 9.8+ (one process per connection, one for
/// authentication), copied to the same path when the host has them (bookworm's 9.2 has none).
const SSH_HELPERS: &[&str] = &[
    "/usr/lib/openssh/sshd-session",
    "/usr/lib/openssh/sshd-auth",
];

/// Names that run the iptables multi-binaries (as on Debian, plain iptables is the nft variant).
const IPTABLES_LINKS: &[(&str, &str)] = &[
    ("iptables", "xtables-nft-multi"),
    ("iptables-save", "xtables-nft-multi"),
    ("iptables-restore", "xtables-nft-multi"),
    ("ip6tables", "xtables-nft-multi"),
    ("ip6tables-save", "xtables-nft-multi"),
    ("ip6tables-restore", "xtables-nft-multi"),
    ("iptables-nft", "xtables-nft-multi"),
    ("iptables-nft-save", "xtables-nft-multi"),
    ("iptables-nft-restore", "xtables-nft-multi"),
    ("ip6tables-nft", "xtables-nft-multi"),
    ("ip6tables-nft-save", "xtables-nft-multi"),
    ("ip6tables-nft-restore", "xtables-nft-multi"),
    ("iptables-legacy", "xtables-legacy-multi"),
    ("iptables-legacy-save", "xtables-legacy-multi"),
    ("iptables-legacy-restore", "xtables-legacy-multi"),
    ("ip6tables-legacy", "xtables-legacy-multi"),
    ("ip6tables-legacy-save", "xtables-legacy-multi"),
    ("ip6tables-legacy-restore", "xtables-legacy-multi"),
];

/// Data files and directories the tools read, copied when the host has them.
const DATA: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/xtables",
    "/etc/protocols",
    "/etc/services",
    "/etc/ethertypes",
    "/etc/iproute2",
    "/usr/share/iproute2",
    "/usr/lib/ssl/openssl.cnf",
];

const HOST_TOOL_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// What the python scripts of the scenarios import: the client matrix's asyncio client
/// (asyncio, errno, sys), the #024 getaddrinfo cases (socket, time; and encodings.idna, which
/// getaddrinfo loads only when it is given a host name) and the #025 client (ssl).
/// `python` runs this on the build machine, as the VM runs python (empty environment, site
/// imported), and carries only the modules it loaded: about 100 files instead of the whole
/// standard library (see `python`).
const PYTHON_LISTER: &str = r#"
import asyncio, encodings.idna, errno, json, os, socket, ssl, sys, time
print(os.path.realpath(sys.executable))
print(sys.implementation.cache_tag)
files = {os.__file__}
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f:
        files.add(f)
for f in sorted(files):
    print(f)
"#;

/// Builds the part shared by every kernel; returns the cpio path.
pub fn build_common(artifacts: &Artifacts, work: &Path) -> Result<PathBuf> {
    let root = fresh_dir(&work.join("common"))?;
    skeleton(&root)?;
    write_executable(&root.join("init"), INIT_SCRIPT)?;
    write_executable(&root.join(BENCH_IN_VM), BENCH_SCRIPT)?;

    let mut binaries = vec![copy_file(Path::new(BUSYBOX), &root.join("bin/busybox"))?];
    for tool in TOOLS {
        let host = find_host_tool(tool)?;
        binaries.push(copy_file(&host, &root.join("usr/sbin").join(tool))?);
    }
    for helper in SSH_HELPERS.iter().map(Path::new).filter(|p| p.is_file()) {
        binaries.push(copy_file(helper, &root.join(helper.strip_prefix("/")?))?);
    }
    for (name, target) in IPTABLES_LINKS {
        symlink(target, root.join("usr/sbin").join(name))?;
    }
    binaries.extend(python(&root)?);
    busybox_applets(&root)?;
    for data in DATA.iter().map(Path::new).filter(|p| p.exists()) {
        let dest = root.join(data.strip_prefix("/")?);
        copy_tree(data, &dest)?;
        binaries.extend(shared_objects_under(&dest)?);
    }

    binaries.push(strip_copy(
        &artifacts.netladder,
        &in_root(&root, NETLADDER_IN_VM),
    )?);
    binaries.push(strip_copy(
        &artifacts.nl_peer,
        &in_root(&root, NL_PEER_IN_VM),
    )?);
    for test in &artifacts.scenario_tests {
        let name = test
            .file_name()
            .context("test binary without a file name")?
            .to_string_lossy();
        let dest = root.join(TESTS_DIR_IN_VM).join(test_stem(&name));
        binaries.push(strip_copy(test, &dest)?);
    }
    copy_libraries(&binaries, &root)?;

    let cpio = work.join("common.cpio");
    write_cpio(&root, &cpio)?;
    Ok(cpio)
}

/// Appends the modules `kernel` needs to the common archive; returns the combined cpio path.
pub fn build_for_kernel(common: &Path, kernel: &Kernel, work: &Path) -> Result<PathBuf> {
    let plan = modules::plan_for(&kernel.modules_dir)?;
    let not_modules: Vec<String> = plan.builtin.iter().chain(&plan.absent).cloned().collect();
    if !not_modules.is_empty() {
        println!(
            "vm-test: {}: not modules in this kernel (built in or absent): {}",
            kernel.label,
            not_modules.join(" ")
        );
    }
    let root = fresh_dir(&work.join(format!("{}-modules", kernel.label)))?;
    let files = modules::stage(
        &plan,
        &kernel.modules_dir,
        &root.join("usr"),
        &kernel.release,
    )?;
    let list = root.join(MODULE_LIST_IN_VM);
    fs::create_dir_all(list.parent().context("module list path")?)?;
    fs::write(
        &list,
        files.iter().map(|f| format!("{f}\n")).collect::<String>(),
    )?;

    let modules_cpio = work.join(format!("{}-modules.cpio", kernel.label));
    write_cpio(&root, &modules_cpio)?;
    let combined = work.join(format!("{}.cpio", kernel.label));
    let mut out = File::create(&combined)?;
    for part in [common, modules_cpio.as_path()] {
        std::io::copy(&mut File::open(part)?, &mut out)?;
    }
    Ok(combined)
}

/// python3 with only the standard library modules the scenarios' scripts load (`PYTHON_LISTER`),
/// each with its compiled `__pycache__` file and its source's modification time (so the
/// compiled file stays valid and nothing is compiled at boot), and the interpreter at its own
/// path (it finds its library from there). Returns the ELF files (interpreter, extension
/// modules) whose libraries must be copied. Kept small on purpose: the whole standard library
/// would be about 50 MiB more; these are about 10 MiB (the interpreter itself 7), and the
/// initramfs is unpacked at every boot. Without python3 on this machine, nothing is added and
/// the python cases print NL-SKIP in the VM.
fn python(root: &Path) -> Result<Vec<PathBuf>> {
    let Ok(host) = find_host_tool("python3") else {
        println!("vm-test: python3 is not installed here: the python cases will skip in the VM");
        return Ok(Vec::new());
    };
    let listing = cmd::capture(
        Command::new(&host)
            .args(["-c", PYTHON_LISTER])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root"),
    )
    .context("listing the python modules the scenarios need")?;
    let mut lines = listing.lines().map(str::trim).filter(|l| !l.is_empty());
    let exe = PathBuf::from(lines.next().context("python printed nothing")?);
    let tag = lines
        .next()
        .context("python printed no cache tag")?
        .to_string();
    let mut elves = vec![copy_file(&exe, &in_root(root, &exe.to_string_lossy()))?];
    let name = exe.file_name().context("python without a file name")?;
    if name != "python3" {
        symlink(name, root.join("usr/bin/python3"))?;
    }
    for file in lines.map(Path::new) {
        let dest = in_root(root, &file.to_string_lossy());
        if file.extension().is_some_and(|e| e == "so") {
            elves.push(copy_file(file, &dest)?);
            continue;
        }
        copy_keeping_mtime(file, &dest)?;
        // asyncio/base_events.py -> asyncio/__pycache__/base_events.cpython-311.pyc
        let (Some(dir), Some(stem)) = (file.parent(), file.file_stem()) else {
            continue;
        };
        let pyc = dir
            .join("__pycache__")
            .join(format!("{}.{tag}.pyc", stem.to_string_lossy()));
        if pyc.is_file() {
            copy_keeping_mtime(&pyc, &in_root(root, &pyc.to_string_lossy()))?;
        }
    }
    Ok(elves)
}

/// [`copy_file`], and the copy gets the original's modification time (which a compiled python
/// file records for its source).
fn copy_keeping_mtime(from: &Path, to: &Path) -> Result<()> {
    copy_file(from, to)?;
    let mtime = fs::metadata(from)?.modified()?;
    File::options()
        .write(true)
        .open(to)?
        .set_modified(mtime)
        .with_context(|| format!("setting the time of {}", to.display()))
}

fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

fn in_root(root: &Path, vm_path: &str) -> PathBuf {
    root.join(vm_path.trim_start_matches('/'))
}

/// Mount points and a merged-/usr layout (lib and lib64 point into usr, as on Debian).
fn skeleton(root: &Path) -> Result<()> {
    for dir in [
        "bin",
        "sbin",
        "dev",
        "etc",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "var/tmp",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "usr/local/bin",
        TESTS_DIR_IN_VM,
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    symlink("usr/lib", root.join("lib"))?;
    symlink("usr/lib64", root.join("lib64"))?;
    symlink("../run", root.join("var/run"))?;
    // sshd (ssh scenarios) needs its privilege-separation user.
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    // A mount point for the DNS scenarios, which bind their own file over it.
    fs::write(root.join("etc/resolv.conf"), "")?;
    // The same for /etc/hosts, and the usual lookup order (files, then DNS).
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn find_host_tool(name: &str) -> Result<PathBuf> {
    HOST_TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{name}` is not installed on this machine (run `cargo xtask setup`)")
        })
}

/// Copies `from` (following symlinks) to `to`, creating parent directories; returns `to`.
fn copy_file(from: &Path, to: &Path) -> Result<PathBuf> {
    fs::create_dir_all(to.parent().context("destination without parent")?)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(to.to_path_buf())
}

/// Copies a binary without its debug information (keeps the initramfs small).
fn strip_copy(from: &Path, to: &Path) -> Result<PathBuf> {
    fs::create_dir_all(to.parent().context("destination without parent")?)?;
    cmd::run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(from)
            .arg(to),
    )?;
    Ok(to.to_path_buf())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        copy_file(from, to).map(|_| ())
    }
}

fn shared_objects_under(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "so") {
            found.push(path);
        }
    }
    Ok(found)
}

/// A link in /bin for every busybox applet that no real tool shadows.
fn busybox_applets(root: &Path) -> Result<()> {
    let list = cmd::capture(Command::new(BUSYBOX).arg("--list"))?;
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let shadowed = root.join("usr/sbin").join(applet).exists();
        if !shadowed && applet != "busybox" {
            symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    Ok(())
}

/// Copies every shared library the given ELF files load (per ldd) to the same path in `root`.
fn copy_libraries(binaries: &[PathBuf], root: &Path) -> Result<()> {
    let mut libraries = BTreeSet::new();
    for elf in binaries {
        let out = cmd::probe(Command::new("ldd").arg(elf))
            .with_context(|| format!("cannot run ldd on {}", elf.display()))?;
        if out.contains("not found") {
            bail!(
                "{} needs a library this machine lacks:\n{}",
                elf.display(),
                out.trim()
            );
        }
        libraries.extend(parse_ldd(&out));
    }
    for lib in libraries {
        copy_file(Path::new(&lib), &in_root(root, &lib))?;
    }
    Ok(())
}

/// Absolute library paths from ldd output (the vDSO has none).
fn parse_ldd(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

/// The name a test binary has in the VM (and in the report): its file name without cargo's hash.
pub fn test_name(binary: &Path) -> String {
    let file = binary.file_name().unwrap_or_default().to_string_lossy();
    test_stem(&file).to_string()
}

/// `scenarios-6391c55ade847f01` -> `scenarios` (cargo's hash suffix is 16 hex digits).
fn test_stem(file_name: &str) -> &str {
    match file_name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            stem
        }
        _ => file_name,
    }
}

/// `find . | sort | cpio -o -H newc` in `root`, every file owned by root.
fn write_cpio(root: &Path, out: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    cmd::run(
        Command::new("sh")
            .args([
                "-c",
                "find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0",
            ])
            .current_dir(root)
            .stdout(Stdio::from(file)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f1c)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c3)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libmnl.so.0",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn test_binary_names_lose_the_hash() {
        assert_eq!(test_stem("scenarios-6391c55ade847f01"), "scenarios");
        assert_eq!(test_stem("nl-refused-6391c55ade847f01"), "nl-refused");
        assert_eq!(test_stem("my-test"), "my-test");
    }
}
