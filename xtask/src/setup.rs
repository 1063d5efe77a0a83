//! `cargo xtask setup`: installs what is missing (apt packages, rust-src for nightly, bpf-linker)
//! and nothing else. Every step prints one line.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

/// Debian packages the build, the tests and the VM suite need.
const APT_PACKAGES: &[&str] = &[
    // bpf-linker is built against Debian's LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Tools the scenarios drive and the VM initramfs carries.
    "nftables",
    "iptables",
    "iproute2",
    "bpftool",
    "bpftrace",
    "procps",
    // Packaging checks: systemd-analyze verify on the unit, man -l on the man pages, gzip.
    "systemd",
    "man-db",
    "gzip",
    // diagnose scenarios: a real DNS server; certificates and a TLS server (openssl).
    "dnsmasq-base",
    "openssl",
    // ssh scenarios (#030): the tests run their own sshd (own config, keys and port) in a
    // namespace; the package's system service is kept from starting (see `quiet_sshd_install`).
    "openssh-client",
    "openssh-server",
    // #025 watch scenarios: OpenSSL 3 clients.
    "curl",
    "python3",
    // watch's #024 scenarios: dig as a DNS client (getent is in libc-bin, python3 optional).
    "bind9-dnsutils",
    // The VM suite: QEMU, initramfs assembly, kernel modules.
    "qemu-system-x86",
    "cpio",
    "busybox-static",
    "xz-utils",
    "zstd",
    "kmod",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN_DIR: &str = "/usr/lib/llvm-22/bin";

pub fn run() -> Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    cargo_fuzz()?;
    Ok(())
}

fn report(step: &str, outcome: &str) {
    println!("setup: {step}: {outcome}");
}

fn apt_packages() -> Result<()> {
    let status = cmd::probe(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
            .args(APT_PACKAGES),
    );
    let Some(status) = status else {
        bail!("dpkg-query is not available: setup supports Debian-based machines only");
    };
    let missing = missing_packages(APT_PACKAGES, &status);
    if missing.is_empty() {
        report("apt packages", "ok (already present)");
        return Ok(());
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    cmd::run(cmd::privileged("apt-get", &env).args(["-q", "update"]))?;
    let _guard = if missing.iter().any(|p| p == "openssh-server") {
        quiet_sshd_install()?
    } else {
        None
    };
    cmd::run(
        cmd::privileged("apt-get", &env)
            .args(["-q", "-y", "install", "--no-install-recommends"])
            .args(&missing),
    )?;
    report("apt packages", &format!("installed {}", missing.join(" ")));
    Ok(())
}

/// Installing openssh-server must not start (or enable at boot) a system sshd on a machine
/// that had none: the tests run their own. Debian's ssh unit and init script do nothing while
/// /etc/ssh/sshd_not_to_be_run exists (created here, left in place: remove it to run the system
/// sshd), and a policy-rc.d that denies every start covers the install itself when the machine
/// has none (removed again by the returned guard). An sshd the machine already had is never
/// touched: this only runs when the package is not installed.
fn quiet_sshd_install() -> Result<Option<PolicyGuard>> {
    let marker = "/etc/ssh/sshd_not_to_be_run";
    if !std::path::Path::new(marker).exists() {
        cmd::run(cmd::privileged("mkdir", &[]).args(["-p", "/etc/ssh"]))?;
        cmd::run(cmd::privileged("touch", &[]).arg(marker))?;
        report(
            "openssh-server",
            &format!("{marker} keeps the system sshd from starting"),
        );
    }
    let policy = "/usr/sbin/policy-rc.d";
    if std::path::Path::new(policy).exists() {
        return Ok(None);
    }
    cmd::run(cmd::privileged("sh", &[]).args([
        "-c",
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d",
    ]))?;
    Ok(Some(PolicyGuard(policy)))
}

/// Removes the temporary policy-rc.d written by `quiet_sshd_install`.
struct PolicyGuard(&'static str);

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let _ = cmd::run(cmd::privileged("rm", &[]).args(["-f", self.0]));
    }
}

/// Packages of `wanted` that `dpkg-query -f '${Package} ${db:Status-Abbrev}\n'` does not list as
/// installed ("ii").
fn missing_packages(wanted: &[&str], dpkg_status: &str) -> Vec<String> {
    wanted
        .iter()
        .filter(|pkg| {
            !dpkg_status.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(**pkg) && words.next() == Some("ii")
            })
        })
        .map(|pkg| pkg.to_string())
        .collect()
}

fn nightly_rust_src() -> Result<()> {
    let Some(toolchains) = cmd::probe(Command::new("rustup").args(["toolchain", "list"])) else {
        bail!("rustup is not installed: install Rust with rustup, then rerun setup");
    };
    if !has_nightly(&toolchains) {
        bail!(
            "no nightly Rust toolchain is installed (the eBPF crate needs one): \
             run `rustup toolchain install nightly`, then rerun setup"
        );
    }
    let components = cmd::capture(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if components.lines().any(|l| l.trim() == "rust-src") {
        report("rust-src (nightly)", "ok (already present)");
        return Ok(());
    }
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    report("rust-src (nightly)", "installed");
    Ok(())
}

/// True when `rustup toolchain list` shows the plain `nightly` channel (not a dated one).
fn has_nightly(toolchain_list: &str) -> bool {
    toolchain_list.lines().any(|line| {
        line.split_whitespace()
            .next()
            .and_then(|name| name.strip_prefix("nightly-"))
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn bpf_linker() -> Result<()> {
    let version = cmd::probe(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
        report("bpf-linker", "ok (already present)");
        return Ok(());
    }
    let path = format!(
        "{LLVM_BIN_DIR}:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path),
    )?;
    report(
        "bpf-linker",
        &format!("installed {BPF_LINKER_VERSION} (LLVM 22)"),
    );
    Ok(())
}

const CARGO_DEB_VERSION: &str = "3.8.0";

/// cargo-deb builds the Debian package (`cargo xtask package`, CI). Debian has no package of it,
/// so it is built from crates.io once (about a minute and a half).
fn cargo_deb() -> Result<()> {
    let version = cmd::probe(Command::new("cargo").args(["deb", "--version"])).unwrap_or_default();
    if version
        .split_whitespace()
        .any(|w| w.trim_start_matches('v') == CARGO_DEB_VERSION)
    {
        report("cargo-deb", "ok (already present)");
        return Ok(());
    }
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))?;
    report("cargo-deb", &format!("installed {CARGO_DEB_VERSION}"));
    Ok(())
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz runs the fuzz targets in fuzz/ (`cargo xtask fuzz`, CI); built from crates.io once
/// (about a minute).
fn cargo_fuzz() -> Result<()> {
    let version = cmd::probe(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if version.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION) {
        report("cargo-fuzz", "ok (already present)");
        return Ok(());
    }
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))?;
    report("cargo-fuzz", &format!("installed {CARGO_FUZZ_VERSION}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_packages_lists_unknown_and_not_installed() {
        let status = "cpio ii \nkmod un \nzstd ii \nbusybox-static rc \n";
        let missing = missing_packages(
            &["cpio", "kmod", "zstd", "busybox-static", "xz-utils"],
            status,
        );
        assert_eq!(missing, ["kmod", "busybox-static", "xz-utils"]);
    }

    #[test]
    fn nightly_is_found_but_dated_nightlies_are_not() {
        assert!(has_nightly(
            "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly(
            "stable-x86_64-unknown-linux-gnu\nnightly-2026-05-19-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
    }
}
