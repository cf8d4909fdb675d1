//! The end-of-rollout summary: a table of every selected Kustomization with its outcome,
//! duration, attempts and object counts, and the reason for anything not ready. Pure: returns a
//! string.

use std::fmt::Write as _;

use super::progress::{Paint, human};
use crate::execute::events::{KsResult, Outcome};

/// Renders the summary table.
pub fn table(results: &[KsResult], retries: u64, paint: Paint) -> String {
    let w = results
        .iter()
        .map(|r| r.id.to_string().len())
        .max()
        .unwrap_or(13)
        .max(13);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<w$}  {:<11}  {:>8}  {:>8}  {:>7}  {:>10}  {:>9}  DETAIL",
        "KUSTOMIZATION", "OUTCOME", "DURATION", "ATTEMPTS", "CREATED", "CONFIGURED", "UNCHANGED"
    );
    for r in results {
        let label = r.outcome.label();
        let painted = match r.outcome {
            Outcome::Ready | Outcome::Unchanged => paint.ok(&format!("{label:<11}")),
            Outcome::Failed { .. } => paint.bad(&format!("{label:<11}")),
            _ => paint.warn(&format!("{label:<11}")),
        };
        let detail = match &r.outcome {
            Outcome::Failed { reason, .. } => reason.clone(),
            Outcome::Skipped { blocked_by } => format!("blocked by {}", blocked_by.join(", ")),
            Outcome::NotStarted { reason } => reason.clone(),
            Outcome::Excluded { reason, .. } => reason.clone(),
            Outcome::Suspended => "spec.suspend: true".into(),
            Outcome::Ready => String::new(),
            Outcome::Unchanged => {
                "same build as the last run, still healthy: nothing written".into()
            }
        };
        let dur = if r.duration.is_zero() {
            "-".to_string()
        } else {
            human(r.duration)
        };
        let attempts = if r.attempts == 0 {
            "-".to_string()
        } else {
            r.attempts.to_string()
        };
        let c = &r.objects;
        let _ = writeln!(
            s,
            "{:<w$}  {painted}  {dur:>8}  {attempts:>8}  {:>7}  {:>10}  {:>9}  {detail}",
            r.id.to_string(),
            c.created,
            c.configured,
            c.unchanged
        );
    }
    let ready = results.iter().filter(|r| r.outcome.is_ready()).count();
    let _ = writeln!(
        s,
        "\n{ready}/{} Kustomizations ready{}",
        results.len(),
        if retries > 0 {
            format!(", {retries} API requests retried")
        } else {
            String::new()
        }
    );
    s
}
