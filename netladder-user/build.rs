use anyhow::{anyhow, Context as _};
use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("netladder-user has no parent directory"))?
        .join("netladder-ebpf");
    let root = root
        .to_str()
        .context("the eBPF crate path is not UTF-8")?
        .to_owned();
    build_ebpf(
        [Package {
            name: "netladder-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
