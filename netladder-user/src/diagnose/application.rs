//! The application rung: a real connection watched by the eBPF programs (`probe`), then TLS.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use super::checklist::{Status, Verdict, Walk};
use super::probe;
use super::target::Host;
use crate::cli::DiagnoseArgs;
use crate::enrich::tls;
use crate::ladder::{self, Code, Layer, StepCtx};
use crate::watch;

/// The application rung: a real connection watched by the eBPF programs, then TLS when asked.
pub(super) fn application_rung(
    walk: &mut Walk,
    dst: SocketAddr,
    host: &Host,
    use_tls: bool,
    args: &DiagnoseArgs,
    timeout: Duration,
    prober: &mut probe::Prober,
) -> Result<()> {
    let p = prober.connect(dst, timeout);
    let ms = p.elapsed.as_millis();
    match (p.result, p.failure) {
        (Ok(stream), _) => {
            let mut evidence = vec![format!("TCP connection to {dst} established in {ms} ms")];
            evidence.extend(p.notes);
            if walk.get(Layer::Firewall).status == Status::Warning {
                walk.get(Layer::Firewall)
                    .evidence
                    .push("the connection went through: none of these rules was hit".into());
                walk.get(Layer::Firewall).status = Status::Passed;
            }
            if !use_tls {
                walk.set(
                    Layer::Application,
                    Status::Passed,
                    format!("{dst} accepts TCP connections"),
                    evidence,
                );
                return Ok(());
            }
            let name = host.text();
            let outcome = tls::check(stream, &name, &args.ca, timeout)?;
            evidence.extend(outcome.evidence.iter().cloned());
            match outcome.failure {
                None => walk.set(
                    Layer::Application,
                    Status::Passed,
                    outcome.summary,
                    evidence,
                ),
                Some(f) => walk.fail(Verdict {
                    code: Code::TlsVerify,
                    cause: f.cause,
                    rung: Layer::Application,
                    summary: outcome.summary,
                    evidence,
                    next: ladder::next_steps(
                        Code::TlsVerify,
                        Some(f.cause),
                        &StepCtx {
                            dst: Some(dst),
                            host_name: Some(name),
                            ..StepCtx::default()
                        },
                    ),
                    failure: None,
                }),
            }
        }
        (Err(e), failure) => {
            let f = failure.expect("a failed connection has a failure");
            let mut ctx = watch::step_ctx(&f);
            if let Host::Name(n) = host {
                ctx.host_name = Some(n.clone());
            }
            let next = ladder::next_steps(f.code, Some(f.cause), &ctx);
            let mut evidence = vec![format!("connect() to {dst} failed after {ms} ms: {e}")];
            evidence.extend(f.evidence.iter().cloned());
            evidence.extend(p.notes);
            let rung = f.layer;
            if rung != Layer::Application {
                walk.set(
                    Layer::Application,
                    Status::Failed,
                    format!("connect() to {dst} failed: {e}"),
                    vec![format!("the {rung} rung explains it")],
                );
            }
            walk.fail(Verdict {
                code: f.code,
                cause: f.cause,
                rung,
                summary: f.summary.clone(),
                evidence,
                next,
                failure: Some(f),
            });
        }
    }
    Ok(())
}
