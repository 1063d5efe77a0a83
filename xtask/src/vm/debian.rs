//! Debian kernels for the VM suite: pick the newest package of a suite with a private apt state
//! (the machine's apt configuration is never touched), download it once, extract it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::debversion;
use crate::cmd;

const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const FLAVOUR_SUFFIX: &str = "-cloud-amd64";
const IMAGE_PREFIX: &str = "linux-image-";

pub struct KernelSpec {
    pub label: &'static str,
    suites: &'static [&'static str],
    /// The kernel release starts with this (empty: any).
    release_prefix: &'static str,
}

pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "5.10",
        suites: &["bullseye"],
        release_prefix: "5.10.",
    },
    KernelSpec {
        label: "6.1",
        suites: &["bookworm"],
        release_prefix: "6.1.",
    },
    KernelSpec {
        label: "6.12",
        suites: &["bookworm-backports"],
        release_prefix: "6.12.",
    },
    KernelSpec {
        label: "sid",
        suites: &["sid"],
        release_prefix: "",
    },
];

/// `all`, one label, or a comma-separated list of labels.
pub fn select(list: &str) -> Result<Vec<&'static KernelSpec>> {
    if list.trim() == "all" {
        return Ok(KERNELS.iter().collect());
    }
    let mut chosen: Vec<&'static KernelSpec> = Vec::new();
    for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let Some(spec) = KERNELS.iter().find(|k| k.label == label) else {
            let known: Vec<&str> = KERNELS.iter().map(|k| k.label).collect();
            bail!(
                "unknown kernel `{label}` (known: {}, or all)",
                known.join(", ")
            );
        };
        if !chosen.iter().any(|k| k.label == label) {
            chosen.push(spec);
        }
    }
    if chosen.is_empty() {
        bail!("--kernel names no kernel");
    }
    Ok(chosen)
}

/// A kernel ready to boot: its image and its (uncompressed-on-demand) module tree.
pub struct Kernel {
    pub label: &'static str,
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` with modules.dep.
    pub modules_dir: PathBuf,
}

/// Downloads (once) and extracts (once) the newest kernel package matching `spec`.
pub fn prepare(spec: &KernelSpec, cache: &Path) -> Result<Kernel> {
    let dir = cache.join("kernels").join(spec.label);
    let debs = dir.join("debs");
    if debs.is_dir() {
        println!(
            "vm-test: {}: using cached {}",
            spec.label,
            deb_names(&debs)?.join(", ")
        );
    } else {
        download(spec, &cache.join("apt").join(spec.label), &debs)?;
    }
    let root = dir.join("root");
    let done = dir.join("root.complete");
    if !done.exists() {
        extract(&debs, &root)?;
        fs::write(&done, b"")?;
    }
    locate(spec.label, &root)
}

fn deb_names(debs: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(debs).with_context(|| format!("reading {}", debs.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        bail!(
            "{} has no .deb files: delete it to download again",
            debs.display()
        );
    }
    Ok(names)
}

/// apt options that keep every bit of state under `apt_dir`.
fn apt_options(apt_dir: &Path) -> Vec<String> {
    let d = apt_dir.display();
    [
        format!("Dir::Etc::SourceList={d}/sources.list"),
        "Dir::Etc::SourceParts=/dev/null".to_string(),
        format!("Dir::State::Lists={d}/lists"),
        format!("Dir::Cache={d}/cache"),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_string(),
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".to_string(),
        "APT::Sandbox::User=root".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

fn sources_list(suites: &[&str]) -> String {
    suites
        .iter()
        .map(|s| format!("deb [signed-by={KEYRING}] {MIRROR} {s} main\n"))
        .collect()
}

fn download(spec: &KernelSpec, apt_dir: &Path, debs: &Path) -> Result<()> {
    fs::create_dir_all(apt_dir.join("lists/partial"))?;
    fs::create_dir_all(apt_dir.join("cache/archives/partial"))?;
    fs::write(apt_dir.join("sources.list"), sources_list(spec.suites))?;
    let opts = apt_options(apt_dir);
    println!(
        "vm-test: {}: reading the package lists of {}",
        spec.label,
        spec.suites.join(", ")
    );
    cmd::capture(Command::new("apt-get").args(&opts).args(["-q", "update"]))?;

    let names = cmd::capture(
        Command::new("apt-cache")
            .args(&opts)
            .args(["pkgnames", IMAGE_PREFIX]),
    )?;
    let names: Vec<&str> = names.lines().filter(|n| matches_spec(spec, n)).collect();
    if names.is_empty() {
        bail!(
            "no {IMAGE_PREFIX}*{FLAVOUR_SUFFIX} package for {} in {}",
            spec.label,
            spec.suites.join(", ")
        );
    }
    let stanzas = cmd::capture(
        Command::new("apt-cache")
            .args(&opts)
            .arg("show")
            .args(&names),
    )?;
    let newest = newest(&parse_stanzas(&stanzas))
        .with_context(|| format!("apt-cache show gave no versions for {}", names.join(" ")))?;
    let mut wanted = vec![format!("{}={}", newest.package, newest.version)];
    wanted.extend(companions(&newest));

    let partial = debs.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    println!("vm-test: {}: downloading {}", spec.label, wanted.join(" "));
    cmd::capture(
        Command::new("apt-get")
            .current_dir(&partial)
            .args(&opts)
            .args(["-q", "download"])
            .args(&wanted),
    )?;
    fs::rename(&partial, debs)?;
    Ok(())
}

fn matches_spec(spec: &KernelSpec, package: &str) -> bool {
    package
        .strip_prefix(IMAGE_PREFIX)
        .and_then(|release| release.strip_suffix(FLAVOUR_SUFFIX))
        .is_some_and(|middle| {
            middle.starts_with(|c: char| c.is_ascii_digit())
                && middle.starts_with(spec.release_prefix)
        })
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stanza {
    package: String,
    version: String,
    depends: String,
}

/// Package, Version and Depends of each stanza of `apt-cache show`.
fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut stanzas = Vec::new();
    for block in text.split("\n\n") {
        let mut stanza = Stanza::default();
        for line in block.lines() {
            if let Some((key, value)) = line.split_once(": ") {
                match key {
                    "Package" => stanza.package = value.trim().to_string(),
                    "Version" => stanza.version = value.trim().to_string(),
                    "Depends" => stanza.depends = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        if !stanza.package.is_empty() && !stanza.version.is_empty() {
            stanzas.push(stanza);
        }
    }
    stanzas
}

fn newest(stanzas: &[Stanza]) -> Option<Stanza> {
    stanzas
        .iter()
        .max_by(|a, b| debversion::compare(&a.version, &b.version))
        .cloned()
}

/// Packages that carry the rest of this kernel (newer Debian splits the image into
/// linux-binary-*, linux-modules-*, linux-base-* of the same release): dependencies whose name
/// ends with the kernel release, pinned to the version the image asks for.
fn companions(image: &Stanza) -> Vec<String> {
    let Some(release) = image.package.strip_prefix(IMAGE_PREFIX) else {
        return Vec::new();
    };
    image
        .depends
        .split([',', '|'])
        .filter_map(|dep| {
            let dep = dep.trim();
            let (name, constraint) = match dep.split_once(' ') {
                Some((name, rest)) => (name, rest.trim()),
                None => (dep, ""),
            };
            if !name.starts_with("linux-") || !name.ends_with(release) {
                return None;
            }
            let pinned = constraint
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(str::trim);
            Some(match pinned {
                Some(version) => format!("{name}={version}"),
                None => name.to_string(),
            })
        })
        .collect()
}

fn extract(debs: &Path, root: &Path) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::create_dir_all(root)?;
    for name in deb_names(debs)? {
        cmd::run(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(debs.join(&name))
                .arg(root),
        )?;
    }
    // Newer packages ship /usr/lib/modules only; depmod -b looks under lib/modules.
    let lib_modules = root.join("lib/modules");
    if !lib_modules.exists() && root.join("usr/lib/modules").is_dir() {
        fs::create_dir_all(root.join("lib"))?;
        std::os::unix::fs::symlink("../usr/lib/modules", &lib_modules)?;
    }
    let release = single_release(&lib_modules)?;
    cmd::capture(Command::new("depmod").arg("-b").arg(root).arg(&release))
        .context("depmod (from kmod) could not index the kernel's modules")?;
    Ok(())
}

fn single_release(lib_modules: &Path) -> Result<String> {
    let mut releases = Vec::new();
    for entry in
        fs::read_dir(lib_modules).with_context(|| format!("reading {}", lib_modules.display()))?
    {
        let entry = entry?;
        if entry.path().is_dir() {
            releases.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {:?}",
            lib_modules.display(),
            releases
        ),
    }
}

fn locate(label: &'static str, root: &Path) -> Result<Kernel> {
    let modules_dir_parent = root.join("lib/modules");
    let release = single_release(&modules_dir_parent)?;
    let modules_dir = modules_dir_parent.join(&release);
    let candidates = [
        root.join("boot").join(format!("vmlinuz-{release}")),
        modules_dir.join("vmlinuz"),
    ];
    let vmlinuz = candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("no vmlinuz for {release} under {}", root.display()))?;
    Ok(Kernel {
        label,
        release,
        vmlinuz,
        modules_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(label: &str) -> &'static KernelSpec {
        KERNELS.iter().find(|k| k.label == label).unwrap()
    }

    #[test]
    fn package_names_match_their_kernel_only() {
        assert!(matches_spec(
            spec("6.1"),
            "linux-image-6.1.0-50-cloud-amd64"
        ));
        assert!(!matches_spec(
            spec("6.1"),
            "linux-image-6.12.95+deb12-cloud-amd64"
        ));
        assert!(matches_spec(
            spec("6.12"),
            "linux-image-6.12.95+deb12-cloud-amd64"
        ));
        assert!(!matches_spec(
            spec("6.1"),
            "linux-image-6.1.0-50-cloud-amd64-unsigned"
        ));
        assert!(!matches_spec(
            spec("6.1"),
            "linux-image-6.1.0-50-cloud-amd64-dbg"
        ));
        assert!(!matches_spec(spec("6.1"), "linux-image-6.1.0-50-amd64"));
        assert!(matches_spec(
            spec("sid"),
            "linux-image-7.2.13+deb14-cloud-amd64"
        ));
        assert!(!matches_spec(spec("sid"), "linux-image-cloud-amd64"));
    }

    #[test]
    fn picks_the_newest_version() {
        let text = "Package: linux-image-6.12.90+deb12-cloud-amd64\nVersion: 6.12.90-1~bpo12+1\n\n\
                    Package: linux-image-6.12.95+deb12-cloud-amd64\nVersion: 6.12.95-1~bpo12+1\nSize: 3\n\n\
                    Package: linux-image-6.12.90+deb12.1-cloud-amd64\nVersion: 6.12.90-2~bpo12+1\n";
        let newest = newest(&parse_stanzas(text)).unwrap();
        assert_eq!(newest.package, "linux-image-6.12.95+deb12-cloud-amd64");
        assert_eq!(newest.version, "6.12.95-1~bpo12+1");
    }

    #[test]
    fn companion_packages_of_a_split_kernel() {
        let image = Stanza {
            package: "linux-image-7.2.13+deb14-cloud-amd64".into(),
            version: "7.2.13-1".into(),
            depends: "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                      linux-base-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), \
                      linux-binary-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), \
                      linux-modules-7.2.13+deb14-cloud-amd64 (= 7.2.13-1)"
                .into(),
        };
        assert_eq!(
            companions(&image),
            [
                "linux-base-7.2.13+deb14-cloud-amd64=7.2.13-1",
                "linux-binary-7.2.13+deb14-cloud-amd64=7.2.13-1",
                "linux-modules-7.2.13+deb14-cloud-amd64=7.2.13-1",
            ]
        );
        let classic = Stanza {
            package: "linux-image-6.1.0-50-cloud-amd64".into(),
            version: "6.1.176-1".into(),
            depends: "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2)".into(),
        };
        assert!(companions(&classic).is_empty());
    }

    #[test]
    fn kernel_lists() {
        let labels = |s: &str| {
            select(s)
                .unwrap()
                .iter()
                .map(|k| k.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels("all"), ["5.10", "6.1", "6.12", "sid"]);
        assert_eq!(labels("6.12, 6.1,6.12"), ["6.12", "6.1"]);
        assert!(select("4.19").is_err());
        assert!(select(",").is_err());
    }
}
