//! The session with the kernel that `watch` and `diagnose` share: every program loaded and
//! attached per the hook plan, the names its numbers need, and the ring buffer read into the
//! classifier.

use anyhow::{bail, Result};
use aya::maps::{MapData, RingBuf};
use netladder_common::{IcmpRanges, ABSENT};

use crate::{
    classify::{Classifier, Failure},
    cli::HookOpts,
    clock::monotonic_ns,
    kernel::{
        btf::KernelBtf,
        config,
        decode::{self, Names},
        kallsyms::OnDemand,
        loader::{self, Loaded},
        plan, tracefs,
    },
    preflight,
};

/// Everything running in the kernel, plus what we need to name its numbers.
pub(crate) struct Session {
    pub(crate) loaded: Loaded,
    pub(crate) names: Names,
    pub(crate) degraded: Vec<String>,
}

impl Session {
    /// Whether every packet drop on the host reaches netladder (the drop hook attached).
    pub(crate) fn drops_watched(&self) -> bool {
        drops_watched(&self.loaded.outcomes)
    }
}

pub(super) fn drops_watched(outcomes: &[plan::Outcome]) -> bool {
    outcomes
        .iter()
        .any(|o| o.hook.program == "kfree_skb" && o.status == plan::Status::Attached)
}

/// Loads and attaches everything. `only_netns`: the one namespace to watch, filtered in the kernel
/// so that failures elsewhere cost nothing (and cannot crowd the ring buffer). `include_self`:
/// also see netladder's own connections (`diagnose` makes its probe itself); `watch` ignores them.
pub(crate) fn start(
    opts: &HookOpts,
    only_netns: Option<u32>,
    include_self: bool,
) -> Result<Session> {
    for name in &opts.skip_hook {
        if !plan::HOOKS.iter().any(|h| h.program == name) {
            bail!("--skip-hook {name}: no such program (see `netladder hooks`)");
        }
        if plan::HOOKS.iter().any(|h| h.program == name && h.core) {
            bail!(
                "--skip-hook {name}: this program is the core of netladder and cannot be skipped"
            );
        }
    }
    preflight::require_privileges()?;
    let btf = KernelBtf::load()?;
    // Every type name start-up asks for, found in one pass over the kernel's types.
    let functions = plan::HOOKS.iter().filter_map(|h| match h.attach {
        plan::Attach::FExit(f) | plan::Attach::FEntry(f) => Some(f),
        _ => None,
    });
    btf.prefetch(
        config::btf_names()
            .into_iter()
            .chain(["btf_trace_kfree_skb", "btf_trace_consume_skb"])
            .chain(functions),
    );
    let root = tracefs::root()?;
    let mut resolved = config::resolve(&btf, &root);
    resolved.config.only_netns = only_netns.unwrap_or(0);
    if include_self {
        resolved.config.self_tgid = 0;
    }
    // The symbols are read at the first drop location to name, or when consume_skb is about
    // to attach and needs its ICMP receive ranges (where the fentry programs replace it, never
    // at start).
    let kallsyms = OnDemand::new();
    let mut unavailable = Vec::new();
    if resolved.config.reason_netfilter_drop == ABSENT
        || btf.tracepoint_args("kfree_skb").is_none_or(|n| n < 3)
    {
        unavailable.push((
            "kfree_skb",
            "this kernel has no drop reasons (5.17+)".to_owned(),
        ));
    }
    if btf.tracepoint_args("consume_skb").is_none_or(|n| n < 2) {
        unavailable.push((
            "consume_skb",
            "consume_skb has no location argument on this kernel (6.3+)".to_owned(),
        ));
    }
    let icmp_ranges = || {
        let k = kallsyms.get();
        match (k.range("icmp_rcv"), k.range("icmpv6_rcv")) {
            (Some(v4), Some(v6)) => Ok(IcmpRanges { v4, v6 }),
            _ => Err("icmp_rcv/icmpv6_rcv are not in /proc/kallsyms".to_owned()),
        }
    };
    let loaded = loader::load(
        &resolved.config,
        &loader::Options {
            optional_hooks: !opts.no_optional_hooks,
            syscall_hooks: opts.syscall_hooks,
            unavailable,
            functions: &|name| btf.has_function(name),
            skip: &opts.skip_hook,
            icmp_ranges: &icmp_ranges,
        },
    )?;
    let mut degraded = plan::degraded(&loaded.outcomes);
    degraded.extend(
        resolved
            .missing
            .iter()
            .map(|m| format!("kernel layout: {m}")),
    );
    Ok(Session {
        loaded,
        names: Names {
            drop_reasons: resolved.drop_reasons,
            kallsyms,
        },
        degraded,
    })
}

/// Reads every event on the ring buffer into the classifier and hands each failure it
/// completes to `emit`.
pub(crate) fn drain_with(
    ring: &mut RingBuf<MapData>,
    names: &Names,
    classifier: &mut Classifier,
    mut emit: impl FnMut(Failure) -> Result<()>,
) -> Result<()> {
    while let Some(item) = ring.next() {
        let obs = decode::record(&item, names);
        drop(item);
        match obs {
            Some(obs) => {
                for f in classifier.feed(obs, monotonic_ns()) {
                    emit(f)?;
                }
            }
            None => classifier.undecodable(),
        }
    }
    Ok(())
}
