//! `cargo xtask setup`: installs what is missing and nothing else, in two sets. What building
//! and running netladder needs (`cargo xtask run`, `build`): the LLVM libraries bpf-linker is
//! built against, rust-src for nightly, bpf-linker. What only the tests need on top (`cargo xtask
//! test`, `ci`, `vm-test`, `package`, `fuzz`, `bench`): the tools the scenarios drive, QEMU and
//! the initramfs tools, cargo-deb and cargo-fuzz. Every step prints one line.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

/// Debian packages building netladder needs (running it needs nothing beyond a base system).
const BUILD_PACKAGES: &[&str] = &[
    // bpf-linker is built against Debian's LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // The man pages are gzipped at build time.
    "gzip",
];

/// Debian packages only the tests, the VM suite, the package check and the benchmarks need.
const TEST_PACKAGES: &[&str] = &[
    // Tools the scenarios drive and the VM initramfs carries.
    "nftables",
    "iptables",
    "iproute2",
    "bpftool",
    "procps",
    // The benchmarks' tracer.
    "bpftrace",
    // Packaging checks: systemd-analyze verify on the unit, man -l on the man pages.
    "systemd",
    "man-db",
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
    // The OTLP scenarios' receiver (see `python_packages`).
    "python3-pip",
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

/// What building and running netladder needs.
pub fn run() -> Result<()> {
    apt_packages(BUILD_PACKAGES)?;
    nightly_rust_src()?;
    bpf_linker()?;
    Ok(())
}

/// What building netladder and running every test needs.
pub fn run_for_tests() -> Result<()> {
    let all: Vec<&str> = BUILD_PACKAGES
        .iter()
        .chain(TEST_PACKAGES)
        .copied()
        .collect();
    apt_packages(&all)?;
    nightly_rust_src()?;
    bpf_linker()?;
    lint_components()?;
    cargo_deb()?;
    cargo_fuzz()?;
    python_packages()?;
    Ok(())
}

/// Python modules only the tests need, for the python3 the tests run: the `watch --otlp`
/// scenarios' receiver (tests/src/otlp_receiver.py) is a gRPC and OTLP/HTTP server made of
/// grpcio and the OpenTelemetry protobuf definitions.
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("grpc", "grpcio"),
    (
        "opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc",
        "opentelemetry-proto",
    ),
];

/// Whether `cmd` runs and exits 0 (its output discarded).
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the [`PYTHON_PACKAGES`] whose module does not import yet, with pip (for the user,
/// beside the system's packages where the interpreter is the system's own).
fn python_packages() -> Result<()> {
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .filter(|(module, _)| {
            !succeeds(cmd::privileged("python3", &[]).args(["-c", &format!("import {module}")]))
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        report("python packages", "ok (already present)");
        return Ok(());
    }
    // Debian marks its interpreter as managed by apt (PEP 668); these packages are not in
    // Debian, so they go into the user's site-packages, which apt never touches.
    let managed = succeeds(cmd::privileged("python3", &[]).args([
        "-c",
        "import os, sysconfig, sys; \
         sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')) else 1)",
    ]));
    let mut pip = cmd::privileged("python3", &[]);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if managed {
        pip.args(["--user", "--break-system-packages"]);
    }
    cmd::run(pip.args(&missing))?;
    report(
        "python packages",
        &format!("installed {}", missing.join(" ")),
    );
    Ok(())
}

/// rustfmt and clippy for the default toolchain, and clippy for nightly (the eBPF crate and the
/// fuzz crate are checked with it): CI's fmt and clippy stages.
fn lint_components() -> Result<()> {
    for (toolchain, components) in [
        ("default", &["rustfmt", "clippy"][..]),
        ("nightly", &["clippy"]),
    ] {
        let mut list = Command::new("rustup");
        list.args(["component", "list", "--installed"]);
        if toolchain != "default" {
            list.args(["--toolchain", toolchain]);
        }
        let installed = cmd::capture(&mut list)?;
        let missing: Vec<&str> = components
            .iter()
            .copied()
            .filter(|c| {
                !installed
                    .lines()
                    .any(|l| l.trim().starts_with(&format!("{c}-")))
            })
            .collect();
        if missing.is_empty() {
            report(
                &format!("{} ({toolchain})", components.join(", ")),
                "ok (already present)",
            );
            continue;
        }
        let mut add = Command::new("rustup");
        add.args(["component", "add"]).args(&missing);
        if toolchain != "default" {
            add.args(["--toolchain", toolchain]);
        }
        cmd::run(&mut add)?;
        report(
            &format!("{} ({toolchain})", missing.join(", ")),
            "installed",
        );
    }
    Ok(())
}

fn report(step: &str, outcome: &str) {
    println!("setup: {step}: {outcome}");
}

fn apt_packages(wanted: &[&str]) -> Result<()> {
    let status = cmd::probe(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
            .args(wanted),
    );
    let Some(status) = status else {
        bail!("dpkg-query is not available: setup supports Debian-based machines only");
    };
    let missing = missing_packages(wanted, &status);
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
        bail!("rustup is not installed: install Rust with rustup (https://rustup.rs), then rerun");
    };
    if !has_nightly(&toolchains) {
        // The eBPF crate is built with nightly (-Z build-std), and the fuzz targets too.
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        report("nightly toolchain", "installed (with rust-src)");
        return Ok(());
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
        cmd::cargo()
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
    let version = cmd::probe(cmd::cargo().args(["deb", "--version"])).unwrap_or_default();
    if version
        .split_whitespace()
        .any(|w| w.trim_start_matches('v') == CARGO_DEB_VERSION)
    {
        report("cargo-deb", "ok (already present)");
        return Ok(());
    }
    cmd::run(cmd::cargo().args([
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
    let version = cmd::probe(cmd::cargo().args(["fuzz", "--version"])).unwrap_or_default();
    if version.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION) {
        report("cargo-fuzz", "ok (already present)");
        return Ok(());
    }
    cmd::run(cmd::cargo().args([
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
    fn test_packages_do_not_repeat_build_packages() {
        for p in TEST_PACKAGES {
            assert!(!BUILD_PACKAGES.contains(p), "{p} is in both sets");
        }
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
