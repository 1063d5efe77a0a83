//! Where the binaries under test are.

use std::path::{Path, PathBuf};

/// The `netladder` binary: `$NETLADDER_BIN` if set, else the first that exists of
/// `<target>/<profile of this test>/netladder`, `<workspace>/target/release/netladder`,
/// `<workspace>/target/debug/netladder`. Panics with the paths tried when none exists.
pub fn netladder_bin() -> PathBuf {
    find_bin(
        "netladder",
        "NETLADDER_BIN",
        "cargo build --release -p netladder-user",
    )
}

/// The `nl-peer` binary: `$NL_PEER_BIN` if set, else the same search as [`netladder_bin`].
/// `cargo test -p netladder-tests` builds it next to the test binaries, so the first candidate is
/// always fresh.
pub fn peer_bin() -> PathBuf {
    find_bin("nl-peer", "NL_PEER_BIN", "cargo build -p netladder-tests")
}

fn find_bin(name: &str, env_var: &str, build_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${env_var} is {} but no such file exists",
            path.display()
        );
        return path;
    }
    let candidates = candidate_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .collect::<Vec<_>>();
    match candidates.iter().find(|path| path.is_file()) {
        Some(path) => path.clone(),
        None => panic!(
            "no {name} binary found (tried {}); build it first ({build_hint}) or set ${env_var}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `<target>/<profile>` of the running test binary (which lives in `<target>/<profile>/deps`), then
/// the workspace's release and debug directories.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            dirs.push(profile_dir.to_path_buf());
        }
    }
    let target = workspace_root().join("target");
    for profile in ["release", "debug"] {
        let dir = target.join(profile);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}
