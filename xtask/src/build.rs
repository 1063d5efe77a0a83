//! `cargo xtask build`: the `netladder` binary and the scenario test binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd;

const USER_PACKAGE: &str = "netladder-user";
/// The packages every build of the tests selects (the same set, the same features): not the
/// eBPF crate (built for its BPF target by netladder-user's build script) nor the fuzz crate
/// (built by cargo-fuzz, with sanitizers).
pub const WORKSPACE: &[&str] = &[
    "--workspace",
    "--exclude",
    "netladder-ebpf",
    "--exclude",
    "netladder-fuzz",
];
const TESTS_PACKAGE: &str = "netladder-tests";
const PEER_BIN: &str = "nl-peer";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn cargo_flag(self) -> Option<&'static str> {
        match self {
            Profile::Release => Some("--release"),
            Profile::Debug => None,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// Absolute paths of everything the host tests and the VM suite run.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub netladder: PathBuf,
    pub nl_peer: PathBuf,
    /// The integration test executables of `netladder-tests` (one per tests/*.rs).
    pub scenario_tests: Vec<PathBuf>,
}

/// One test executable of the workspace.
#[derive(Clone, Debug)]
pub struct TestBinary {
    /// The cargo target's name (`netladder_user`, `scenarios`; unique in this workspace).
    pub name: String,
    pub executable: PathBuf,
    /// The package's directory: `cargo test` runs each binary there.
    pub dir: PathBuf,
}

/// The netladder binary alone (what `cargo xtask run` needs), with its man pages and shell
/// completions.
pub fn netladder(profile: Profile) -> Result<PathBuf> {
    let root = cmd::workspace_root();
    cmd::run(
        cmd::cargo()
            .current_dir(&root)
            .args(["build", "-p", USER_PACKAGE])
            .args(profile.cargo_flag()),
    )?;
    let netladder = root.join("target").join(profile.dir()).join("netladder");
    if !netladder.is_file() {
        bail!(
            "cargo built {USER_PACKAGE} but {} is missing",
            netladder.display()
        );
    }

    // Man pages and shell completions, from the binary's own clap definition.
    assets(&netladder)?;
    Ok(netladder)
}

/// netladder, nl-peer and the scenario test binaries: what the VM suite needs. Every cargo run
/// here and in [`test_binaries`] selects the whole workspace (the eBPF crate aside: aya-build
/// builds it), so that dependency features resolve alike and nothing is compiled twice for the
/// host tests, the VM suite and the package.
pub fn run(profile: Profile) -> Result<Artifacts> {
    let root = cmd::workspace_root();
    cmd::run(
        cmd::cargo()
            .current_dir(&root)
            .args(["build", "--bins"])
            .args(WORKSPACE)
            .args(profile.cargo_flag()),
    )?;
    let netladder = root.join("target").join(profile.dir()).join("netladder");
    if !netladder.is_file() {
        bail!(
            "cargo built the workspace but {} is missing",
            netladder.display()
        );
    }
    assets(&netladder)?;

    let messages = cmd::capture(
        cmd::cargo()
            .current_dir(&root)
            .args(["test", "--no-run", "--message-format=json", "--test", "*"])
            .args(WORKSPACE)
            .args(profile.cargo_flag())
            .stderr(Stdio::inherit()),
    )?;
    let manifest = root.join("tests").join("Cargo.toml");
    let (scenario_tests, nl_peer) = test_executables(&messages, &manifest)?;
    let nl_peer =
        nl_peer.with_context(|| format!("{TESTS_PACKAGE} did not build a `{PEER_BIN}` binary"))?;
    if scenario_tests.is_empty() {
        bail!("{TESTS_PACKAGE} has no integration test binaries (tests/tests/*.rs)");
    }
    println!("build: {}", netladder.display());
    println!("build: {}", nl_peer.display());
    for test in &scenario_tests {
        println!("build: {}", test.display());
    }
    Ok(Artifacts {
        netladder,
        nl_peer,
        scenario_tests,
    })
}

/// Every test executable of the workspace (unit tests too), built (the integration tests are
/// already there after [`run`]) and listed by name.
pub fn test_binaries(profile: Profile) -> Result<Vec<TestBinary>> {
    let messages = cmd::capture(
        cmd::cargo()
            .current_dir(cmd::workspace_root())
            .args(["test", "--no-run", "--message-format=json"])
            .args(WORKSPACE)
            .args(profile.cargo_flag())
            .stderr(Stdio::inherit()),
    )?;
    parse_test_binaries(&messages)
}

/// Every test executable in `cargo test --no-run --message-format=json` output, by name.
fn parse_test_binaries(messages: &str) -> Result<Vec<TestBinary>> {
    let mut binaries = Vec::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let msg: Value = serde_json::from_str(line).context("cargo printed invalid JSON")?;
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(executable), Some(manifest), Some(target)) = (
            msg["executable"].as_str(),
            msg["manifest_path"].as_str(),
            msg["target"]["name"].as_str(),
        ) else {
            continue;
        };
        let dir = Path::new(manifest)
            .parent()
            .context("a manifest path without a directory")?
            .to_path_buf();
        binaries.push(TestBinary {
            name: target.to_string(),
            executable: PathBuf::from(executable),
            dir,
        });
    }
    binaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(binaries)
}

/// From `cargo test --no-run --message-format=json` output: the integration test executables of
/// the package whose manifest is `manifest`, and its `nl-peer` binary.
fn test_executables(messages: &str, manifest: &Path) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let mut tests = Vec::new();
    let mut peer = None;
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let msg: Value = serde_json::from_str(line).context("cargo printed invalid JSON")?;
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"] != manifest.to_str().unwrap_or("")
        {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is_test_profile = msg["profile"]["test"].as_bool().unwrap_or(false);
        if kinds.iter().any(|k| k == "test") {
            tests.push(PathBuf::from(executable));
        } else if kinds.iter().any(|k| k == "bin")
            && msg["target"]["name"] == PEER_BIN
            && !is_test_profile
        {
            peer = Some(PathBuf::from(executable));
        }
    }
    tests.sort();
    tests.dedup();
    Ok((tests, peer))
}

/// Writes `<dir of netladder>/assets/{man,completions}` with the binary's hidden `assets`
/// command, and gzips the man pages (Debian policy; `man` reads them either way).
pub fn assets(netladder: &Path) -> Result<PathBuf> {
    let dir = netladder
        .parent()
        .context("the netladder binary has no directory")?
        .join("assets");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    cmd::run(Command::new(netladder).arg("assets").arg(&dir))?;
    let man = dir.join("man");
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            pages.push(path);
        }
    }
    if pages.is_empty() {
        bail!(
            "`netladder assets` wrote no man page into {}",
            man.display()
        );
    }
    cmd::run(Command::new("gzip").args(["-9", "-n", "-f"]).args(&pages))?;
    println!("build: {} (man pages, completions)", dir.display());
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(manifest: &str, kind: &str, name: &str, test: bool, exe: Option<&str>) -> String {
        serde_json::json!({
            "reason": "compiler-artifact",
            "manifest_path": manifest,
            "target": {"kind": [kind], "name": name},
            "profile": {"test": test},
            "executable": exe,
        })
        .to_string()
    }

    #[test]
    fn finds_integration_tests_and_peer_binary() {
        let m = "/w/tests/Cargo.toml";
        let lines = [
            artifact("/w/tests/Cargo.toml", "lib", "netladder_tests", false, None),
            artifact(
                "/w/tests/Cargo.toml",
                "bin",
                "nl-peer",
                true,
                Some("/w/target/release/deps/nl_peer-1"),
            ),
            artifact(
                "/w/tests/Cargo.toml",
                "bin",
                "nl-peer",
                false,
                Some("/w/target/release/nl-peer"),
            ),
            artifact(
                "/w/tests/Cargo.toml",
                "test",
                "refused",
                true,
                Some("/w/target/release/deps/refused-2"),
            ),
            artifact(
                "/w/other/Cargo.toml",
                "test",
                "other",
                true,
                Some("/w/target/release/deps/other-3"),
            ),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
        ];
        let (tests, peer) = test_executables(&lines.join("\n"), Path::new(m)).unwrap();
        assert_eq!(tests, [PathBuf::from("/w/target/release/deps/refused-2")]);
        assert_eq!(peer, Some(PathBuf::from("/w/target/release/nl-peer")));
        let all: Vec<(String, PathBuf)> = parse_test_binaries(&lines.join("\n"))
            .unwrap()
            .into_iter()
            .map(|b| (b.name, b.dir))
            .collect();
        assert_eq!(
            all,
            [
                ("nl-peer".to_string(), PathBuf::from("/w/tests")),
                ("other".to_string(), PathBuf::from("/w/other")),
                ("refused".to_string(), PathBuf::from("/w/tests")),
            ]
        );
    }
}
