//! tracefs: where it is mounted (mounting it when absent) and field offsets of classic tracepoints.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting tracefs at /sys/kernel/tracing if no instance is mounted.
pub fn root() -> Result<PathBuf> {
    for c in CANDIDATES {
        if Path::new(c).join("events").is_dir() {
            return Ok(PathBuf::from(c));
        }
    }
    let target = CANDIDATES[0];
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", target])
        .status()
        .context("cannot run mount to mount tracefs")?;
    if status.success() && Path::new(target).join("events").is_dir() {
        Ok(PathBuf::from(target))
    } else {
        bail!("tracefs is not mounted and mounting it at {target} failed")
    }
}

/// Offset of `field` in the tracepoint's record, from its `format` file.
pub fn field_offset(root: &Path, category: &str, event: &str, field: &str) -> Result<u32> {
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{event} is missing ({})",
            path.display()
        )
    })?;
    parse_offset(&text, field)
        .ok_or_else(|| anyhow!("tracepoint {category}:{event} has no field {field}"))
}

/// Parses `field:<decl> <name>;\toffset:N;` lines.
fn parse_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if name != field {
            return None;
        }
        let off = line.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_offset;

    const FORMAT: &str = "name: sys_enter_connect\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:struct sockaddr * uservaddr;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;\n";

    #[test]
    fn parses_fields() {
        assert_eq!(parse_offset(FORMAT, "fd"), Some(16));
        assert_eq!(parse_offset(FORMAT, "uservaddr"), Some(24));
        assert_eq!(parse_offset(FORMAT, "saddr"), Some(22));
        assert_eq!(parse_offset(FORMAT, "common_type"), Some(0));
        assert_eq!(parse_offset(FORMAT, "addrlen"), None);
    }
}
