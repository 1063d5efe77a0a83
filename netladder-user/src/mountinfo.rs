//! The host's mounts as /proc/self/mountinfo lists them: where the cgroup2 file system is, for
//! attaching the cgroup programs (kernel/targets.rs) and for reading processes' cgroups
//! (enrich/container.rs).

use std::path::PathBuf;

/// The mount point of the cgroup2 file system (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host), from mountinfo. A mount of the whole tree is preferred: its root is "/", or
/// above our cgroup namespace ("/../.."), as when a container mounts the host's /sys.
pub fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    let mut found: Vec<(bool, PathBuf)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            // Fields: id parent major:minor root mount-point ...
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let mount = f.next()?;
            let whole = root == "/" || root.starts_with("/..");
            Some((whole, PathBuf::from(mount.replace("\\040", " "))))
        })
        .collect();
    found.sort_by_key(|(whole, _)| !*whole);
    found.into_iter().next().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_root(unified), Some("/sys/fs/cgroup".into()));
        assert_eq!(cgroup2_root("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        // In a container: its own subtree at /sys/fs/cgroup, the host's whole tree at /host.
        let container = "50 40 0:26 /kubepods.slice/x /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
                         61 40 0:26 /../../.. /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(container), Some("/host/sys/fs/cgroup".into()));
    }
}
