//! What CI runs on which kernel: every scenario test binary placed by hand, with the reason.
//!
//! `cargo xtask vm-test --kernel all` runs every binary on every kernel in both modes (optional
//! hooks allowed, and forced off). CI cannot afford that under TCG: the emulated CPU is about
//! thirty times slower, every scenario starts its own netladder (the verifier, BTF: 5-7 s a
//! start in a guest, each test's `NL-WATCH-TIME` line), so a scenario that takes 3 s on the host
//! takes 8-25 s in a guest, and CI runs two guests on two cores beside the host tests. CI also runs every binary on the host kernel. So each binary
//! runs in the VMs where its readings can differ:
//! - the binaries whose readings depend on what the kernel offers (drop reasons and their values,
//!   the drop location, the ICMP sender, cgroup_skb helpers) run on every kernel of the matrix
//!   that offers something different: 6.12 is left out for those that 6.12 reads as sid;
//! - the others run on one end: on 5.10, the oldest, those with a reading of their own where
//!   drop reasons are missing; on sid, the newest, those whose kernel side (syscall tracepoints,
//!   uprobes, sock_diag) is alike everywhere;
//! - with the optional hooks forced off (`--no-optional-hooks`, which the test library passes to
//!   every `netladder watch` it starts), the binaries whose failures the optional programs see
//!   (fexit on tcp_v4/v6_connect: connects that fail at once; fentry on tcp_v4/v6_err: ICMP
//!   answers) run on 5.10. The host kernel of this project's machines refuses the fentry and
//!   fexit programs, so the host run covers a current kernel without them.
//! - the client matrix (tests/src/clients.rs: every connect failure made by five clients) runs in
//!   full on 5.10 with the optional hooks ([`FULL_MATRIX`]: ICMP answers from fentry, no drops
//!   seen), and on the host (ICMP answers from consume_skb, drops seen); the other boots run the
//!   two clients that reach the kernel differently ([`FEW_CLIENTS`]: the error from connect()
//!   itself, and from SO_ERROR after poll), since curl, epoll and python's asyncio take the
//!   second path (python's start alone is seconds on an emulated CPU).
//!
//! A kernel and mode with more than [`MAX_BINARIES_PER_BOOT`] binaries is split over two boots
//! (`5.10#1`, `5.10#2`), so the two guests CI runs at once end close together and no single
//! boot nears its time bound.
//!
//! Every kernel keeps at least one boot, so it keeps its column in the report. A binary is
//! placed consciously: one missing from [`PLACEMENTS`] (a new tests/tests/*.rs) fails the CI
//! selection check, and so does a placement for a binary that no longer exists.

use anyhow::{bail, Result};

use super::{debian, BootPlan};

/// The kernels a test binary runs on in CI, in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Every kernel of the matrix: 5.10, 6.1, 6.12 and sid.
    All,
    /// These kernels (labels of the matrix).
    Only(&'static [&'static str]),
    /// None.
    No,
}

/// The oldest: 5.10, where most is degraded (no drop reasons, no ICMP sender without the
/// optional hooks).
const OLDEST: Kernels = Kernels::Only(&["5.10"]);
/// The newest: sid, where every program attaches.
const NEWEST: Kernels = Kernels::Only(&["sid"]);
/// Every kernel but 6.12, whose readings of these binaries are those of sid: the same hooks
/// attach there (drop reasons with their location, consume_skb's location, fentry), where
/// 5.10 and 6.1 each lack some.
const ALL_BUT_6_12: Kernels = Kernels::Only(&["5.10", "6.1", "sid"]);

impl Kernels {
    fn includes(self, label: &str) -> bool {
        match self {
            Kernels::All => true,
            Kernels::Only(labels) => labels.contains(&label),
            Kernels::No => false,
        }
    }

    fn words(self) -> String {
        match self {
            Kernels::All => "every kernel".to_string(),
            Kernels::Only(labels) => labels.join(", "),
            Kernels::No => "no kernel".to_string(),
        }
    }
}

/// More binaries than this in one boot (kernel and mode) and they are split over two boots.
const MAX_BINARIES_PER_BOOT: usize = 5;

/// The clients of the matrix that every boot but the full-matrix one runs (`NL_CLIENTS`; every
/// client otherwise).
pub const FEW_CLIENTS: &str = "blocking,nonblocking-poll";

/// The boot that runs the whole client matrix: the oldest kernel with the optional hooks, where
/// the ICMP answers come from fentry and drops are not seen (the host runs it where they come
/// from consume_skb and drops are seen).
const FULL_MATRIX: &str = "5.10";

pub struct Placement {
    /// The test binary (tests/tests/NAME.rs).
    pub binary: &'static str,
    /// Where it runs with the optional hooks allowed.
    pub optional_on: Kernels,
    /// Where it runs with them forced off.
    pub optional_off: Kernels,
    /// Why.
    pub why: &'static str,
}

/// Binaries placed on no kernel at all, deliberately: what they need cannot be in the guests
/// (each says why in its placement). CI runs them on the host only.
#[cfg(test)]
const HOST_ONLY: &[&str] = &["enrichment", "otlp"];

/// Every scenario test binary, and where CI runs it.
pub const PLACEMENTS: &[Placement] = &[
    Placement {
        binary: "cli",
        optional_on: NEWEST,
        optional_off: Kernels::No,
        why: "argument errors, missing BTF or privileges, what a stopped or killed netladder \
              leaves behind, and `hooks` with and without the optional hooks; every boot lists \
              its hooks anyway, and a program the verifier refuses fails the boot",
    },
    Placement {
        binary: "diagnose",
        optional_on: OLDEST,
        optional_off: Kernels::No,
        why: "`netladder diagnose` (not a watch: the mode does not reach it): netlink, \
              sock_diag and the connect() error, and kernel evidence from the programs checked \
              on every kernel; 5.10 is where that evidence is degraded and its tests branch",
    },
    Placement {
        binary: "dns",
        optional_on: Kernels::All,
        optional_off: Kernels::No,
        why: "the answer's owner from the cgroup connect/sendmsg programs beside the fexit \
              programs that read connect() there, uprobes on each Debian glibc, and UDP sends \
              counted as questions at the fexit of udp_sendmsg",
    },
    Placement {
        binary: "enrichment",
        optional_on: Kernels::No,
        optional_off: Kernels::No,
        why: "the enrichment worker's queue, order and accounting are userspace over refused \
              connects that every boot reads already, and its delays of a second per look-up \
              would cost minutes under TCG; it runs on the host only",
    },
    Placement {
        binary: "firewall",
        optional_on: Kernels::All,
        optional_off: Kernels::No,
        why: "drop reasons (none on 5.10, numbered differently on each kernel) and the drop \
              location (nf_hook_slow on 6.1, nft_do_chain later) decide what is named; its \
              failures come after the SYN left, where the optional hooks see nothing",
    },
    Placement {
        binary: "harness_selftest",
        optional_on: NEWEST,
        optional_off: Kernels::No,
        why: "the test library itself (namespaces, veths, rules, nl-peer): no netladder",
    },
    Placement {
        binary: "operator",
        optional_on: OLDEST,
        optional_off: Kernels::No,
        why: "metrics, output files, journald prefixes, cgroup names, capabilities: userspace \
              over the readings checked on every kernel; on 5.10 it checks the reading without \
              drop reasons (the host run has the full one)",
    },
    Placement {
        binary: "otlp",
        optional_on: Kernels::No,
        optional_off: Kernels::No,
        why: "the OTLP exporter is userspace over readings checked elsewhere, and its receiver \
              (python3 with grpcio) is not in the guests; it runs on the host only",
    },
    Placement {
        binary: "overload",
        optional_on: NEWEST,
        optional_off: Kernels::No,
        why: "the full listen queue: a timeout read through sock_diag and the namespace's \
              TcpExt counters (userspace, alike on every kernel), and the server-side report \
              polled from them",
    },
    Placement {
        binary: "paths",
        optional_on: ALL_BUT_6_12,
        optional_off: OLDEST,
        why: "the issue-15 paths under every client: ICMP answers come from fentry on \
              tcp_v4_err/tcp_v6_err, or consume_skb (6.3+) without it, or nowhere (5.10 with the \
              optional hooks off: the degraded reading); drops in a router's or the \
              server's namespace need drop reasons (6.12 reads as sid: the same hooks \
              attach)",
    },
    Placement {
        binary: "reliability",
        optional_on: OLDEST,
        optional_off: Kernels::No,
        why: "ring buffer accounting under load (one ring buffer since 5.8) and the trace \
              table's cleanup, which differs on 5.10 (no NFT_TABLE_F_OWNER before 5.12); the \
              host run has the newer kernel",
    },
    Placement {
        binary: "rungs",
        optional_on: Kernels::All,
        optional_off: OLDEST,
        why: "#022 and #026-#029 rest on drop reasons, the ICMP sender (consume_skb's location \
              argument, 6.12+) and neighbour tracepoints, which differ per kernel; its connects \
              that fail at once and its ICMP answers are what the optional programs report, \
              the connect() exit and consume_skb (or nothing) without them",
    },
    Placement {
        binary: "scenarios",
        optional_on: ALL_BUT_6_12,
        optional_off: OLDEST,
        why: "the core #021/#023 readings: kfree_skb drop reasons (5.17+: 6.1 and sid; 6.12 \
              reads as sid), RST vs ICMP, the degraded reading on 5.10; and the core must read \
              the same with the optional hooks off",
    },
    Placement {
        binary: "ssh",
        optional_on: NEWEST,
        optional_off: Kernels::No,
        why: "#030 from ssh's and sshd's log writes: syscall tracepoints alike on every kernel",
    },
    Placement {
        binary: "tls",
        optional_on: NEWEST,
        optional_off: Kernels::No,
        why: "#025 from uprobes on the machine's libssl, libcrypto and libcurl: the same files \
              and the same uprobe interface on every kernel",
    },
];

/// The CI boots for these test binaries (their names in the VM), in table order: each kernel
/// with the optional hooks allowed, then forced off, each with the binaries placed there (all
/// of them: None). Fails when a binary has no placement, or a placement names no binary.
pub fn ci_boots(binaries: &[String]) -> Result<Vec<BootPlan>> {
    check(binaries)?;
    let mut boots = Vec::new();
    for kernel in debian::KERNELS {
        for optional in [true, false] {
            let chosen: Vec<&'static str> = PLACEMENTS
                .iter()
                .filter(|p| {
                    let kernels = if optional {
                        p.optional_on
                    } else {
                        p.optional_off
                    };
                    kernels.includes(kernel.label)
                })
                .map(|p| p.binary)
                .collect();
            if chosen.is_empty() {
                continue;
            }
            // A boot of many binaries is split in two, alternately, so that the two guests CI
            // runs at once end close together and no boot nears its time bound.
            let parts: Vec<Vec<&'static str>> = if chosen.len() > MAX_BINARIES_PER_BOOT {
                (0..2)
                    .map(|k| chosen.iter().skip(k).step_by(2).copied().collect())
                    .collect()
            } else {
                vec![chosen]
            };
            let split = parts.len() > 1;
            for (n, part) in parts.into_iter().enumerate() {
                let tests = (part.len() < PLACEMENTS.len()).then_some(part);
                let mut boot = BootPlan::new(kernel, optional, tests);
                if split {
                    boot.part = Some(n as u8 + 1);
                }
                if !optional || kernel.label != FULL_MATRIX {
                    boot.env.push(("NL_CLIENTS", FEW_CLIENTS));
                }
                boots.push(boot);
            }
        }
    }
    for kernel in debian::KERNELS {
        if !boots.iter().any(|b| b.kernel.label == kernel.label) {
            bail!(
                "the CI selection boots kernel {} for no test binary (every kernel keeps a boot)",
                kernel.label
            );
        }
    }
    Ok(boots)
}

/// The selection in words: which binaries run where, and why.
pub fn describe() -> String {
    let mut text = String::from("vm-test: CI selection (xtask/src/vm/selection.rs):\n");
    for p in PLACEMENTS {
        text += &format!(
            "  {:<17} optional hooks on: {}; off: {}\n  {:<17} ({})\n",
            p.binary,
            p.optional_on.words(),
            p.optional_off.words(),
            "",
            p.why.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    text
}

/// Every built binary has a placement, and every placement a binary.
fn check(binaries: &[String]) -> Result<()> {
    let unplaced: Vec<&str> = binaries
        .iter()
        .map(String::as_str)
        .filter(|b| !PLACEMENTS.iter().any(|p| p.binary == *b))
        .collect();
    if !unplaced.is_empty() {
        bail!(
            "scenario test binaries without a place in the CI selection: {} (add each to \
             PLACEMENTS in xtask/src/vm/selection.rs, saying why it runs where)",
            unplaced.join(", ")
        );
    }
    let stale: Vec<&str> = PLACEMENTS
        .iter()
        .map(|p| p.binary)
        .filter(|p| !binaries.iter().any(|b| b == p))
        .collect();
    if !stale.is_empty() {
        bail!(
            "the CI selection (xtask/src/vm/selection.rs) places test binaries that were not \
             built: {}",
            stale.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binaries of the tests crate: one per tests/tests/*.rs.
    fn test_files() -> Vec<String> {
        let dir = crate::cmd::workspace_root().join("tests").join("tests");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".rs").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_scenario_file_is_placed() {
        check(&test_files()).unwrap();
    }

    #[test]
    fn an_unplaced_or_stale_binary_fails_the_check() {
        let mut files = test_files();
        files.push("new_scenarios".to_string());
        let err = ci_boots(&files).err().unwrap().to_string();
        assert!(
            err.contains("without a place") && err.contains("new_scenarios"),
            "{err}"
        );
        files.retain(|f| f != "new_scenarios" && f != "cli");
        let err = ci_boots(&files).err().unwrap().to_string();
        assert!(err.contains("not built: cli"), "{err}");
    }

    #[test]
    fn every_kernel_keeps_a_boot() {
        let boots = ci_boots(&test_files()).unwrap();
        let labels: Vec<String> = boots.iter().map(BootPlan::label).collect();
        assert_eq!(
            labels,
            [
                "5.10#1",
                "5.10#2",
                "5.10/no-optional",
                "6.1",
                "6.12",
                "sid#1",
                "sid#2"
            ]
        );
        let tests: Vec<Vec<&str>> = boots
            .iter()
            .map(|b| b.tests.clone().unwrap_or_default())
            .collect();
        // 5.10's eight binaries, alternately over two boots.
        assert_eq!(tests[0], ["diagnose", "firewall", "paths", "rungs"]);
        assert_eq!(tests[1], ["dns", "operator", "reliability", "scenarios"]);
        assert_eq!(tests[2], ["paths", "rungs", "scenarios"]);
        assert_eq!(tests[3], ["dns", "firewall", "paths", "rungs", "scenarios"]);
        assert_eq!(tests[4], ["dns", "firewall", "rungs"]);
        assert_eq!(tests[5], ["cli", "firewall", "overload", "rungs", "ssh"]);
        assert_eq!(
            tests[6],
            ["dns", "harness_selftest", "paths", "scenarios", "tls"]
        );
        let clients: Vec<bool> = boots.iter().map(|b| b.env.is_empty()).collect();
        assert_eq!(
            clients,
            [true, true, false, false, false, false, false],
            "every client on 5.10 with the optional hooks only"
        );
        // Every binary runs in some VM, but those that cannot.
        for p in PLACEMENTS {
            let anywhere = tests.iter().any(|t| t.contains(&p.binary));
            assert_eq!(anywhere, !HOST_ONLY.contains(&p.binary), "{}", p.binary);
        }
    }

    #[test]
    fn every_placement_says_why() {
        for p in PLACEMENTS {
            assert!(p.why.len() > 20, "{}", p.binary);
            let somewhere = p.optional_on != Kernels::No || p.optional_off != Kernels::No;
            assert_eq!(somewhere, !HOST_ONLY.contains(&p.binary), "{}", p.binary);
        }
    }
}
