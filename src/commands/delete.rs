//! `delete PATH`: removes the objects flux-order applied for the selected Kustomizations, in
//! reverse dependency order (dependents first, each in reverse apply order), honouring
//! `deletionPolicy` (MirrorPrune deletes only with `prune: true`; Delete; WaitForTermination waits
//! until the objects are gone; Orphan keeps them), the owner labels and the prune-protection
//! annotation. Asks for confirmation unless `--yes`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use crate::cli::DeleteArgs;
use crate::execute::events::Action;
use crate::execute::stages;
use crate::exit::AppError;
use crate::inventory;
use crate::model::KsId;
use crate::options::FleetSettings;

/// Runs `delete`.
pub async fn run(args: &DeleteArgs) -> Result<(), AppError> {
    let mut settings = FleetSettings::resolve(&args.fleet)?;
    let only = std::mem::take(&mut settings.only);
    let cluster = super::apply::connect(&args.cluster).await?;
    let loaded = super::load_fleet(&settings).await?;
    super::refuse_empty(&loaded, &settings.load.path)?;
    // `--only` means exactly those Kustomizations (never their dependencies), plus the children
    // they apply, as deleting a parent Kustomization does in Flux. A Kustomization that left the
    // fleet can still be named: its inventory says what to delete.
    let mut selected: std::collections::BTreeSet<KsId> = if only.is_empty() {
        loaded.selection.clone()
    } else {
        only.iter().cloned().collect()
    };
    let mut stack: Vec<KsId> = selected.iter().cloned().collect();
    while let Some(id) = stack.pop() {
        for c in loaded
            .fleet
            .nodes
            .get(&id)
            .map(|n| n.children.as_slice())
            .unwrap_or_default()
        {
            if selected.insert(c.clone()) {
                stack.push(c.clone());
            }
        }
    }
    let mut order: Vec<KsId> = selected.into_iter().collect();
    order.sort_by_key(|id| (std::cmp::Reverse(loaded.graph.wave(id)), id.clone()));
    let mut plan = Vec::new();
    let mut unknown = Vec::new();
    for id in &order {
        let inv = inventory::read(&cluster, id)
            .await
            .map_err(AppError::from)?;
        let node = loaded.fleet.nodes.get(id);
        let Some(mut inv) = inv else {
            if node.is_none() {
                unknown.push(format!("--only {id}: no such Kustomization in the fleet, and flux-order has no inventory for it"));
            }
            continue;
        };
        if let Some(n) = node {
            // The fleet's current spec decides, as the live object's would in Flux.
            inv.prune = n.spec.prune;
            inv.deletion_policy = n.spec.deletion_policy.clone().unwrap_or_default();
        }
        let policy = if inv.deletion_policy.is_empty() {
            "MirrorPrune".to_string()
        } else {
            inv.deletion_policy.clone()
        };
        let delete_objects = inv.deletes_objects();
        plan.push((id.clone(), policy, delete_objects, inv));
    }
    if !unknown.is_empty() {
        return Err(AppError::Invalid(unknown));
    }
    if plan.is_empty() {
        println!("Nothing to delete: flux-order has no inventory for the selected Kustomizations.");
        return Ok(());
    }
    let total: usize = plan.iter().filter(|p| p.2).map(|p| p.3.entries.len()).sum();
    for (id, policy, del, inv) in &plan {
        let what = if *del {
            format!("delete {} objects", inv.entries.len())
        } else {
            format!("keep {} objects", inv.entries.len())
        };
        eprintln!(
            "  {id}: {what} (deletionPolicy {policy}{})",
            if policy == "MirrorPrune" && !del {
                ", prune: false"
            } else {
                ""
            }
        );
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(AppError::Usage(anyhow::anyhow!(
                "refusing to delete without confirmation: pass --yes"
            )));
        }
        eprint!(
            "Delete {total} objects of {} Kustomizations? [y/N] ",
            plan.len()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Aborted; nothing deleted.");
            return Ok(());
        }
    }
    let mut failures = Vec::new();
    let watchers = crate::health::watch::Watchers::new(
        cluster.client().clone(),
        tokio_util::sync::CancellationToken::new(),
        false,
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    for (id, policy, del, inv) in plan {
        // Its HelmReleases go first, uninstalled as `helm uninstall` does, when deleting it
        // deletes its objects (Flux would delete the HelmRelease objects, and helm-controller
        // uninstall them).
        if del {
            for rel in loaded.releases.values().filter(|r| r.owner == id) {
                match crate::helm::install::uninstall(&cluster, &watchers, rel, &cancel).await {
                    Ok(Some(gone)) => {
                        for s in gone {
                            println!("{}: {s} deleted", rel.id);
                        }
                        println!("{}: release {} uninstalled", rel.id, rel.release_name);
                    }
                    Ok(None) => {}
                    Err(e) => failures.push(format!("{}: {e}", rel.id.label())),
                }
            }
        }
        if del {
            let (kept, err) = stages::prune(&cluster, &id, &inv.entries, |s, a| {
                let verb = if a == Action::Deleted {
                    "deleted"
                } else {
                    "skipped (not owned or protected)"
                };
                println!("{id}: {s} {verb}");
            })
            .await;
            if let Some(e) = err {
                let mut left = inv.clone();
                left.entries = kept;
                let unrecorded = inventory::write(&cluster, &id, &left)
                    .await
                    .err()
                    .map(|w| format!("; and writing its inventory failed: {w}"))
                    .unwrap_or_default();
                failures.push(format!("Kustomization {id}: {e}{unrecorded}"));
                continue;
            }
            if policy == "WaitForTermination" {
                let timeout = loaded
                    .fleet
                    .nodes
                    .get(&id)
                    .map_or(Duration::from_secs(300), |n| n.spec.effective_timeout());
                for e in &inv.entries {
                    if let Some((a, k, ns, name)) = e.parse()
                        && let Err(err) = cluster
                            .wait_deleted(&a, &k, &ns, &name, timeout.min(Duration::from_secs(600)))
                            .await
                    {
                        eprintln!("warning: {id}: {err}");
                    }
                }
            }
        }
        inventory::remove(&cluster, &id)
            .await
            .map_err(AppError::from)?;
        println!("{id}: inventory removed");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(AppError::Operation(failures))
    }
}
