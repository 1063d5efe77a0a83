//! Packaging: the Debian package, with the man pages and shell completions that `build` wrote
//! (`build::assets`): the package (`cargo deb --no-build`, from the release
//! binary already built), and its checks. Nothing is installed on this machine: the package is
//! unpacked with `dpkg-deb -x` into a temporary directory and run from there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::Artifacts;
use crate::cmd;

/// The systemd unit, as shipped in the package.
const UNIT_IN_PACKAGE: &str = "usr/lib/systemd/system/netladder.service";

/// What `package` checked, one line each.
pub struct PackageReport {
    pub deb: PathBuf,
    pub checks: Vec<String>,
}

/// Builds the .deb from the release binary and checks it: it unpacks, `netladder --version` runs
/// from it, the man pages and completions are in place, and the unit passes
/// `systemd-analyze verify` without a warning (its man: links resolved against the package).
pub fn run(artifacts: &Artifacts) -> Result<PackageReport> {
    let root = cmd::workspace_root();
    let out = cmd::capture(cmd::cargo().current_dir(&root).args([
        "deb",
        "--no-build",
        "--strip",
        "-p",
        "netladder-user",
    ]))
    .context("building the Debian package (is cargo-deb installed? `cargo xtask setup`)")?;
    let deb = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb printed no package path")?;
    let mut checks = vec![format!("built {}", deb.display())];
    let tmp = std::env::temp_dir().join(format!("netladder-deb-{}", std::process::id()));
    let result = check(&deb, &tmp, artifacts, &mut checks);
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    for c in &checks {
        println!("package: {c}");
    }
    Ok(PackageReport { deb, checks })
}

fn check(deb: &Path, tmp: &Path, artifacts: &Artifacts, checks: &mut Vec<String>) -> Result<()> {
    let tree = tmp.join("root");
    std::fs::create_dir_all(&tree)?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    let control = cmd::capture(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Package"),
    )?;
    if control.trim() != "netladder" {
        bail!("the package is called {:?}, not netladder", control.trim());
    }
    checks.push("unpacked with dpkg-deb -x (nothing installed on this machine)".into());

    let bin = tree.join("usr/bin/netladder");
    let version = cmd::capture(Command::new(&bin).arg("--version"))?;
    let expected = cmd::capture(Command::new(&artifacts.netladder).arg("--version"))?;
    if version.trim() != expected.trim() || !version.starts_with("netladder ") {
        bail!("the packaged netladder says {version:?}, the built one {expected:?}");
    }
    checks.push(format!("usr/bin/netladder --version: {}", version.trim()));

    for file in [
        "usr/share/man/man1/netladder.1.gz",
        "usr/share/man/man1/netladder-watch.1.gz",
        "usr/share/man/man1/netladder-hooks.1.gz",
        "usr/share/bash-completion/completions/netladder",
        "usr/share/zsh/vendor-completions/_netladder",
        "usr/share/fish/vendor_completions.d/netladder.fish",
        "etc/default/netladder",
        UNIT_IN_PACKAGE,
    ] {
        let path = tree.join(file);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("the package has no {file}"))?
            .len();
        if len == 0 {
            bail!("{file} is empty in the package");
        }
    }
    // The man page renders and documents the watch flags this work added.
    let page = cmd::capture(
        Command::new("man")
            .arg("-l")
            .arg(tree.join("usr/share/man/man1/netladder-watch.1.gz"))
            .env("MANWIDTH", "100")
            // ASCII output: in a UTF-8 locale groff renders '-' as a Unicode hyphen.
            .env("LC_ALL", "C"),
    )?;
    for flag in ["--metrics", "--output", "--journal", "--container", "--pod"] {
        if !page.contains(flag) {
            bail!("netladder-watch(1) does not mention {flag}");
        }
    }
    let bash =
        std::fs::read_to_string(tree.join("usr/share/bash-completion/completions/netladder"))?;
    if !bash.contains("--metrics") || !bash.contains("watch") {
        bail!("the bash completion does not know `watch --metrics`");
    }
    checks.push("man pages (gzipped, render with man -l) and bash/zsh/fish completions".into());

    // The unit as installed, with ExecStart pointing at the unpacked binary (verify checks that
    // it exists) and man pages looked up in the package.
    let unit = std::fs::read_to_string(tree.join(UNIT_IN_PACKAGE))?;
    if !unit.contains("ExecStart=/usr/bin/netladder watch") {
        bail!("the unit does not start /usr/bin/netladder watch");
    }
    let unit_copy = tmp.join("netladder.service");
    std::fs::write(
        &unit_copy,
        unit.replace("/usr/bin/netladder", &bin.to_string_lossy()),
    )?;
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_copy)
        .env("MANPATH", tree.join("usr/share/man"))
        .output()
        .context("cannot run systemd-analyze (the systemd package; `cargo xtask setup`)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    if !verify.status.success() || !said.trim().is_empty() {
        bail!(
            "systemd-analyze verify netladder.service ({}): {}",
            verify.status,
            said.trim()
        );
    }
    checks.push("systemd-analyze verify netladder.service: no error, no warning".into());
    Ok(())
}
