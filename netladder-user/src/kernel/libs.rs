//! Shared libraries that uprobes attach to (#025: OpenSSL 3, libcurl), found on the system
//! library path the way the dynamic loader would: the multiarch and standard directories and
//! the ones /etc/ld.so.conf.d lists. A uprobe on a library file fires in every process that maps
//! that file, including processes started later. Libraries elsewhere (a container's own
//! filesystem, an application's private copy, static linking) are not covered.
use std::path::{Path, PathBuf};

/// The directories searched, in order.
fn search_path() -> Vec<PathBuf> {
    let triplet = match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => other,
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in ["/lib", "/usr/lib", "/usr/local/lib"] {
        dirs.push(Path::new(base).join(triplet));
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"] {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(entries) = std::fs::read_dir("/etc/ld.so.conf.d") {
        let mut confs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        confs.sort();
        for conf in confs
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        {
            if let Ok(text) = std::fs::read_to_string(conf) {
                dirs.extend(conf_dirs(&text));
            }
        }
    }
    dirs
}

/// The directory lines of an ld.so.conf file (comments and include lines skipped).
fn conf_dirs(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// The file of library `soname` (e.g. "libssl.so.3"), with symbolic links resolved.
pub fn find(soname: &str) -> Option<PathBuf> {
    search_path()
        .iter()
        .map(|d| d.join(soname))
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_lines() {
        let dirs = conf_dirs(
            "# multiarch\n/usr/local/lib/x86_64-linux-gnu\ninclude /x/*.conf\n\n/opt/l # here\n",
        );
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/usr/local/lib/x86_64-linux-gnu"),
                PathBuf::from("/opt/l")
            ]
        );
    }

    #[test]
    fn absent_library_is_none() {
        assert!(find("libnetladder-does-not-exist.so.9").is_none());
    }
}
