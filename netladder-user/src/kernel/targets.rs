//! Where the programs that do not hook the kernel itself attach: the cgroup v2 root (cgroup_skb)
//! and the system's C library (uprobes).
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use crate::mountinfo::cgroup2_root;

/// The attach targets found at start-up; each is the reason it is missing when not found.
pub struct Targets {
    pub cgroup: Result<File, String>,
    pub libc: Result<PathBuf, String>,
}

impl Targets {
    pub fn discover() -> Self {
        Targets {
            cgroup: cgroup_root(),
            libc: libc_path(),
        }
    }
}

fn cgroup_root() -> Result<File, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let root = cgroup2_root(&mountinfo).ok_or_else(|| {
        "no cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup to see DNS packets)".to_owned()
    })?;
    File::open(&root).map_err(|e| format!("cannot open the cgroup2 root {}: {e}", root.display()))
}

/// Candidates when netladder itself does not map glibc (a static build).
const LIBC_PATHS: &[&str] = &[
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/aarch64-linux-gnu/libc.so.6",
    "/usr/lib/aarch64-linux-gnu/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/lib/libc.so.6",
];

/// The libc.so.6 the system's programs load: the one netladder maps itself, else the first
/// of the usual places that exists.
fn libc_path() -> Result<PathBuf, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if let Some(p) = libc_in_maps(&maps) {
        return Ok(p);
    }
    LIBC_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| "no glibc libc.so.6 found (static, musl or non-glibc system)".to_owned())
}

/// The path of the mapped file named libc.so.6 in /proc/PID/maps text.
pub fn libc_in_maps(maps: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.starts_with('/') && Path::new(p).file_name().is_some_and(|f| f == "libc.so.6"))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_from_maps() {
        let maps = "55d0 r-xp 0 08:01 1 /usr/bin/netladder\n\
                    7f00 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f10 rw-p 0 00:00 0 \n";
        assert_eq!(
            libc_in_maps(maps),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(libc_in_maps("7f00 r-xp 0 08:01 2 /lib/libc.so.60\n"), None);
    }
}
