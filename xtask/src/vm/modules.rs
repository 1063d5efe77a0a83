//! The kernel modules the scenarios need, with their dependencies in load order (from
//! modules.dep), decompressed on the host so busybox insmod can load them. A wider set is
//! shipped (indexed by the host's depmod) so that the kernel can autoload what a scenario asks
//! for through busybox modprobe, as it would on a real system.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Modules loaded at boot: veth pairs, VLANs, nftables, iptables (nft and legacy), conntrack.
/// Modules a kernel has built in, or lacks, are fine: they are reported, not loaded.
pub const PRELOAD: &[&str] = &[
    "veth",
    "8021q",
    "nfnetlink",
    "nf_tables",
    "nft_counter",
    "nft_ct",
    "nft_reject_inet",
    "nft_reject_ipv4",
    "nft_reject_ipv6",
    "nf_reject_ipv4",
    "nf_reject_ipv6",
    "nf_conntrack",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nft_compat",
    "x_tables",
    "ip_tables",
    "ip6_tables",
    "iptable_filter",
    "ip6table_filter",
    "ipt_REJECT",
    "ip6t_REJECT",
    "xt_tcpudp",
    "xt_conntrack",
];

/// Module paths (prefixes, relative to the modules directory) shipped for autoloading, as a
/// Debian system would load them on demand: the IPv4/IPv6 stacks' extras (socket diagnostics
/// for ss and sock_diag, tunnels), netfilter, traffic control, netlink/packet/unix diagnostics,
/// dummy links.
pub const ON_DEMAND: &[&str] = &[
    "kernel/net/ipv4/",
    "kernel/net/ipv6/",
    "kernel/net/netfilter/",
    "kernel/net/sched/",
    "kernel/net/core/",
    "kernel/net/netlink/",
    "kernel/net/packet/",
    "kernel/net/unix/",
    "kernel/drivers/net/dummy.ko",
];

struct Module {
    path: String,
    deps: Vec<String>,
}

pub struct ModuleIndex {
    modules: HashMap<String, Module>,
    builtin: HashSet<String>,
}

/// The modules to load, in order, the modules to ship, and what was not there as a module.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Paths relative to the modules directory, dependencies first.
    pub load_order: Vec<String>,
    /// Everything to put into the VM (load_order included), sorted.
    pub ship: Vec<String>,
    pub builtin: Vec<String>,
    pub absent: Vec<String>,
}

/// `kernel/net/netfilter/nf_tables.ko.xz` -> `nf_tables` (dashes and underscores are the same
/// to the kernel).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> ModuleIndex {
        let mut modules = HashMap::new();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let module = Module {
                path: path.trim().to_string(),
                deps: deps.split_whitespace().map(module_name).collect(),
            };
            modules.insert(module_name(path), module);
        }
        let builtin = modules_builtin.lines().map(module_name).collect();
        ModuleIndex { modules, builtin }
    }

    pub fn plan(&self, preload: &[&str], on_demand: &[&str]) -> Plan {
        let mut plan = Plan {
            load_order: Vec::new(),
            ship: Vec::new(),
            builtin: Vec::new(),
            absent: Vec::new(),
        };
        let mut visited = HashSet::new();
        for name in preload.iter().map(|n| n.replace('-', "_")) {
            if self.modules.contains_key(&name) {
                self.visit(&name, &mut visited, &mut plan.load_order);
            } else if self.builtin.contains(&name) {
                plan.builtin.push(name);
            } else {
                plan.absent.push(name);
            }
        }
        let mut ship = plan.load_order.clone();
        let mut extra: Vec<&String> = self
            .modules
            .iter()
            .filter(|(_, m)| on_demand.iter().any(|prefix| m.path.starts_with(prefix)))
            .map(|(name, _)| name)
            .collect();
        extra.sort();
        for name in extra {
            self.visit(name, &mut visited, &mut ship);
        }
        ship.sort();
        plan.ship = ship;
        plan
    }

    /// Depth-first: every dependency is pushed before the module that needs it.
    fn visit(&self, name: &str, visited: &mut HashSet<String>, order: &mut Vec<String>) {
        if !visited.insert(name.to_string()) {
            return;
        }
        let Some(module) = self.modules.get(name) else {
            return;
        };
        for dep in &module.deps {
            self.visit(dep, visited, order);
        }
        order.push(module.path.clone());
    }
}

/// Reads the index of the kernel whose module tree is `modules_dir` and plans PRELOAD and
/// ON_DEMAND.
pub fn plan_for(modules_dir: &Path) -> Result<Plan> {
    let read = |name: &str| {
        let path = modules_dir.join(name);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let builtin = read("modules.builtin").unwrap_or_default();
    Ok(ModuleIndex::parse(&read("modules.dep")?, &builtin).plan(PRELOAD, ON_DEMAND))
}

/// `kernel/net/netfilter/nf_tables.ko.xz` -> `kernel/net/netfilter/nf_tables.ko`
pub fn uncompressed_path(path: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| path.strip_suffix(ext))
        .unwrap_or(path)
}

/// Writes the shipped modules of `plan` uncompressed into `<usr_root>/lib/modules/<release>` and
/// indexes them with the host's depmod. Returns the load order as paths relative to that
/// directory.
pub fn stage(
    plan: &Plan,
    modules_dir: &Path,
    usr_root: &Path,
    release: &str,
) -> Result<Vec<String>> {
    let dest = usr_root.join("lib/modules").join(release);
    for rel in &plan.ship {
        let target = dest.join(uncompressed_path(rel));
        fs::create_dir_all(target.parent().context("module path without parent")?)?;
        unpack(&modules_dir.join(rel), &target)?;
    }
    for index in ["modules.builtin", "modules.order"] {
        if modules_dir.join(index).is_file() {
            fs::copy(modules_dir.join(index), dest.join(index))?;
        }
    }
    cmd::capture(Command::new("depmod").arg("-b").arg(usr_root).arg(release))
        .context("depmod could not index the VM's modules")?;
    Ok(plan
        .load_order
        .iter()
        .map(|p| uncompressed_path(p).to_string())
        .collect())
}

fn unpack(source: &Path, target: &Path) -> Result<()> {
    let name = source.to_string_lossy();
    let decompressor = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else if name.ends_with(".ko") {
        None
    } else {
        bail!("unknown module compression: {name}");
    };
    match decompressor {
        Some(tool) => decompress(tool, source, target),
        None => fs::copy(source, target)
            .map(|_| ())
            .with_context(|| format!("copying {}", source.display())),
    }
}

fn decompress(tool: &str, source: &Path, target: &Path) -> Result<()> {
    let out = File::create(target).with_context(|| format!("creating {}", target.display()))?;
    cmd::run(
        Command::new(tool)
            .args(["-d", "-c", "-q"])
            .arg(source)
            .stdout(Stdio::from(out)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/net/netfilter/nft_reject_inet.ko.xz: kernel/net/netfilter/nft_reject.ko.xz kernel/net/ipv4/netfilter/nf_reject_ipv4.ko.xz kernel/net/ipv6/netfilter/nf_reject_ipv6.ko.xz kernel/net/netfilter/nf_tables.ko.xz kernel/net/netfilter/nfnetlink.ko.xz
kernel/net/netfilter/nft_reject.ko.xz: kernel/net/netfilter/nf_tables.ko.xz kernel/net/netfilter/nfnetlink.ko.xz
kernel/net/ipv4/netfilter/nf_reject_ipv4.ko.xz:
kernel/net/ipv6/netfilter/nf_reject_ipv6.ko.xz:
kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz
kernel/net/netfilter/nfnetlink.ko.xz:
kernel/drivers/net/veth.ko.xz:
kernel/net/netfilter/xt_tcpudp.ko.zst: kernel/net/netfilter/x_tables.ko.zst
kernel/net/netfilter/x_tables.ko.zst:
";

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name("kernel/net/netfilter/nf_tables.ko.xz"),
            "nf_tables"
        );
        assert_eq!(
            module_name("kernel/net/ipv4/netfilter/ipt_REJECT.ko"),
            "ipt_REJECT"
        );
        assert_eq!(module_name("kernel/x/nf-conntrack.ko.zst"), "nf_conntrack");
    }

    #[test]
    fn dependencies_come_first_once() {
        let index = ModuleIndex::parse(DEP, "kernel/net/netfilter/nft_ct.ko\n");
        let plan = index.plan(
            &[
                "veth",
                "nft_reject_inet",
                "nf_tables",
                "xt_tcpudp",
                "nft_ct",
                "nft_nope",
            ],
            &[],
        );
        assert_eq!(
            plan.load_order,
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/net/netfilter/nfnetlink.ko.xz",
                "kernel/net/netfilter/nf_tables.ko.xz",
                "kernel/net/netfilter/nft_reject.ko.xz",
                "kernel/net/ipv4/netfilter/nf_reject_ipv4.ko.xz",
                "kernel/net/ipv6/netfilter/nf_reject_ipv6.ko.xz",
                "kernel/net/netfilter/nft_reject_inet.ko.xz",
                "kernel/net/netfilter/x_tables.ko.zst",
                "kernel/net/netfilter/xt_tcpudp.ko.zst",
            ]
        );
        assert_eq!(plan.builtin, ["nft_ct"]);
        assert_eq!(plan.absent, ["nft_nope"]);
        assert_eq!(plan.ship.len(), plan.load_order.len());
    }

    #[test]
    fn on_demand_modules_are_shipped_with_their_dependencies_but_not_loaded() {
        let index = ModuleIndex::parse(DEP, "");
        let plan = index.plan(
            &["veth"],
            &[
                "kernel/net/netfilter/nft_reject_inet",
                "kernel/net/netfilter/xt_",
            ],
        );
        assert_eq!(plan.load_order, ["kernel/drivers/net/veth.ko.xz"]);
        assert_eq!(
            plan.ship,
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/net/ipv4/netfilter/nf_reject_ipv4.ko.xz",
                "kernel/net/ipv6/netfilter/nf_reject_ipv6.ko.xz",
                "kernel/net/netfilter/nf_tables.ko.xz",
                "kernel/net/netfilter/nfnetlink.ko.xz",
                "kernel/net/netfilter/nft_reject.ko.xz",
                "kernel/net/netfilter/nft_reject_inet.ko.xz",
                "kernel/net/netfilter/x_tables.ko.zst",
                "kernel/net/netfilter/xt_tcpudp.ko.zst",
            ]
        );
        assert_eq!(
            uncompressed_path("kernel/net/netfilter/x_tables.ko.zst"),
            "kernel/net/netfilter/x_tables.ko"
        );
    }
}
