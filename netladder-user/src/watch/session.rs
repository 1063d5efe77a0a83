//! The session with the kernel that `watch` and `diagnose` share: every program loaded and
//! attached per the hook plan, the names its numbers need, and the ring buffer read into the
//! classifier.

use anyhow::{anyhow, Result};
use aya::maps::{MapData, RingBuf};
use netladder_common::ABSENT;

use crate::{
    classify::Classifier,
    cli::HookOpts,
    clock::monotonic_ns,
    failure::Failure,
    kernel::{
        btf::KernelBtf,
        config,
        decode::{self, Names},
        kallsyms::OnDemand,
        loader::{self, Loaded},
        plan,
        startup::Timeline,
        tracefs,
    },
    preflight,
};

/// Everything running in the kernel, plus what we need to name its numbers.
pub(crate) struct Session {
    pub(crate) loaded: Loaded,
    pub(crate) names: Names,
    pub(crate) degraded: Vec<String>,
    /// Where the start's time went (`watch -v`).
    pub(crate) timeline: Timeline,
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
    plan::check_skip(&opts.skip_hook).map_err(|e| anyhow!(e))?;
    preflight::require_privileges()?;
    let mut timeline = Timeline::new();
    let btf = KernelBtf::load()?;
    // Every type name start-up asks for, found in one pass over the kernel's types: the
    // config's, and those the plan's requirements name.
    let tracepoints: Vec<String> = plan::HOOKS
        .iter()
        .flat_map(|h| h.requirements())
        .filter_map(|r| match r {
            plan::Require::TracepointArgs { tracepoint, .. } => {
                Some(format!("btf_trace_{tracepoint}"))
            }
            _ => None,
        })
        .collect();
    let functions = plan::HOOKS
        .iter()
        .flat_map(|h| h.requirements())
        .filter_map(|r| match r {
            plan::Require::Function(f) => Some(f),
            _ => None,
        });
    btf.prefetch(
        config::btf_names()
            .into_iter()
            .chain(tracepoints.iter().map(String::as_str))
            .chain(functions),
    );
    let root = tracefs::root()?;
    let mut resolved = config::resolve(&btf, &root);
    timeline.mark("kernel layout");
    resolved.config.only_netns = only_netns.unwrap_or(0);
    if opts.empty_programs {
        resolved.config.empty_programs = 1;
        eprintln!(
            "netladder: --empty-programs: every program returns at once; nothing will be reported \
             (a benchmark of what the hooks themselves cost)"
        );
    }
    if include_self {
        resolved.config.self_tgid = 0;
    }
    // The symbols are read at the first drop location to name, or when a program that needs
    // the text range of a kernel function is about to attach (consume_skb, listen_state: where
    // the fentry programs replace them, never at start).
    let kallsyms = OnDemand::new();
    let text_range = |symbol: &str| kallsyms.get().range(symbol);
    let loaded = loader::load(
        &resolved.config,
        &loader::Options {
            choices: plan::Choices {
                optional_hooks: !opts.no_optional_hooks,
                syscall_hooks: opts.syscall_hooks,
                skip: &opts.skip_hook,
            },
            tracepoint_args: &|name| btf.tracepoint_args(name),
            drop_reasons: resolved.config.reason_netfilter_drop != ABSENT,
            functions: &|name| btf.has_function(name),
            text_range: &text_range,
        },
        &mut timeline,
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
        timeline,
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
