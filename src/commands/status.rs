//! `status`: what flux-order manages in the cluster, from its inventories — per Kustomization the
//! revision, when it was applied, the object count and whether every object is there and
//! healthy now (kstatus), in the spirit of `flux get kustomizations`.

use serde::Serialize;

use crate::cli::{StatusArgs, StatusFormat};
use crate::exit::AppError;
use crate::health::kstatus::{self, Status};
use crate::inventory;

/// One row of `status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    revision: String,
    applied_at: String,
    objects: usize,
    ready: bool,
    message: String,
}

/// Runs `status`.
pub async fn run(args: &StatusArgs) -> Result<(), AppError> {
    let cluster = super::apply::connect(&args.cluster).await?;
    let invs = inventory::list(&cluster, args.namespace.as_deref())
        .await
        .map_err(|e| AppError::Cluster(e.to_string()))?;
    let mut rows = Vec::new();
    for (id, inv) in invs {
        let mut pending = Vec::new();
        for e in &inv.entries {
            let Some((api, kind, ns, name)) = e.parse() else {
                continue;
            };
            let live = cluster
                .get_ref(&api, &kind, &ns, &name)
                .await
                .map_err(|e| AppError::Cluster(e.to_string()))?;
            let label = crate::model::subject_of(&kind, &ns, &name);
            match live {
                None => pending.push(format!("{label}: not found")),
                Some(obj) => {
                    let s = kstatus::compute(&api, &kind, &obj);
                    if s.status != Status::Current {
                        pending.push(format!(
                            "{label}: {}",
                            if s.message.is_empty() {
                                s.status.as_str().to_string()
                            } else {
                                s.message
                            }
                        ));
                    }
                }
            }
        }
        let n = inv.entries.len();
        let message = if pending.is_empty() {
            format!("{n}/{n} objects ready")
        } else {
            format!(
                "{}/{n} objects ready; {}",
                n - pending.len(),
                pending.join(", ")
            )
        };
        rows.push(Row {
            id: id.to_string(),
            revision: inv.revision.clone(),
            applied_at: inv.applied_at.clone(),
            objects: n,
            ready: pending.is_empty() && inv.ready,
            message,
        });
    }
    match args.output {
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(anyhow::Error::from)?
        ),
        StatusFormat::Text => {
            if rows.is_empty() {
                println!(
                    "No Kustomizations applied by flux-order{}.",
                    args.namespace
                        .as_deref()
                        .map(|n| format!(" in namespace {n}"))
                        .unwrap_or_default()
                );
                return Ok(());
            }
            let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(4).max(13);
            let rw = rows
                .iter()
                .map(|r| short_revision(&r.revision).len())
                .max()
                .unwrap_or(8)
                .max(8);
            println!(
                "{:<w$}  {:<rw$}  {:<24}  {:>7}  {:<5}  MESSAGE",
                "KUSTOMIZATION", "REVISION", "APPLIED", "OBJECTS", "READY"
            );
            for r in &rows {
                let rev = short_revision(&r.revision);
                println!(
                    "{:<w$}  {rev:<rw$}  {:<24}  {:>7}  {:<5}  {}",
                    r.id,
                    r.applied_at,
                    r.objects,
                    if r.ready { "True" } else { "False" },
                    r.message
                );
            }
        }
    }
    Ok(())
}

/// A revision as the table shows it: a git commit cut to 12 characters (keeping `-dirty`), a
/// digest to `sha256:` and 12 hex characters.
fn short_revision(rev: &str) -> String {
    let (base, dirty) = match rev.strip_suffix("-dirty") {
        Some(b) => (b, "-dirty"),
        None => (rev, ""),
    };
    let keep = if base.starts_with("sha256:") { 19 } else { 12 };
    format!("{}{dirty}", base.chars().take(keep).collect::<String>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn revisions_are_shortened_keeping_dirty() {
        assert_eq!(
            super::short_revision("b5ac77d8faa364786a42967fb5f8fe261484f50c-dirty"),
            "b5ac77d8faa3-dirty"
        );
        assert_eq!(
            super::short_revision("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
    }
}
