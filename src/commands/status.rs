//! `status`: what flux-order manages in the cluster, from its inventories — per Kustomization the
//! revision, when it was applied, the object count and whether every object is there and
//! healthy now (kstatus), in the spirit of `flux get kustomizations`; with `NAMESPACE/NAME`, one
//! Kustomization in detail, like `kubectl describe`: its last outcome and attempts, revision, the
//! objects not ready and its last Events.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::build::postbuild::OWNER_NAME_LABEL;
use crate::cli::{StatusArgs, StatusFormat};
use crate::exit::AppError;
use crate::health::kstatus::{self, Status, StatusResult};
use crate::health::live::ObjRef;
use crate::helm::render::RELEASE_NAME_LABEL;
use crate::inventory;
use crate::model::KsId;

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

/// Everything whose objects `status` checks: an inventory's entries and the owner label Flux put
/// on those objects (a server-side filter for the lists).
type Checked<'a> = (&'a [inventory::Entry], &'static str);

/// kstatus now of every object the inventories name, read with one paginated LIST per
/// (apiVersion, kind, namespace) shared by all of them; an object missing from the result is not
/// there (or its kind is not served).
async fn survey(
    cluster: &crate::cluster::Cluster,
    checked: &[Checked<'_>],
) -> Result<HashMap<ObjRef, StatusResult>, AppError> {
    let refs = checked.iter().flat_map(|(entries, label)| {
        entries
            .iter()
            .filter_map(|e| e.parse())
            .map(move |r| (r, Some(*label)))
    });
    crate::health::live::read(cluster, refs, |api, kind, obj| {
        kstatus::compute(api, kind, obj)
    })
    .await
    .map_err(|e| AppError::Cluster(e.to_string()))
}

/// The objects of `entries` that are missing or not Current in `live`, as `Kind/ns/name: why`.
fn not_ready(live: &HashMap<ObjRef, StatusResult>, entries: &[inventory::Entry]) -> Vec<String> {
    let mut pending = Vec::new();
    for e in entries {
        let Some(r) = e.parse() else {
            continue;
        };
        let label = crate::model::subject_of(&r.1, &r.2, &r.3);
        match live.get(&r) {
            None => pending.push(format!("{label}: not found")),
            Some(s) if s.status != Status::Current => pending.push(format!(
                "{label}: {}",
                if s.message.is_empty() {
                    s.status.as_str()
                } else {
                    &s.message
                }
            )),
            Some(_) => {}
        }
    }
    pending
}

/// The newest revision in Helm's storage of every HelmRelease flux-order installed, by
/// (namespace, name), with the inventory of the objects its manifest holds.
async fn releases(
    cluster: &crate::cluster::Cluster,
    namespace: Option<&str>,
) -> Result<Vec<((String, String), Value, Vec<inventory::Entry>)>, AppError> {
    let selector = format!("owner=helm,{}", crate::helm::install::SPEC_DIGEST_LABEL);
    let secrets = cluster
        .list("v1", "Secret", namespace, &selector)
        .await
        .map_err(|e| AppError::Cluster(e.to_string()))?;
    let mut newest: std::collections::BTreeMap<(String, String), Value> = Default::default();
    for s in &secrets {
        let label = |k: &str| {
            s.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let key = (
            label("helm.toolkit.fluxcd.io/namespace"),
            label("helm.toolkit.fluxcd.io/name"),
        );
        let Some(rel) = crate::helm::storage::decode_secret(s) else {
            continue;
        };
        let newer = newest
            .get(&key)
            .is_none_or(|r| r["version"].as_u64() < rel["version"].as_u64());
        if newer {
            newest.insert(key, rel);
        }
    }
    Ok(newest
        .into_iter()
        .map(|(key, rel)| {
            let entries = crate::helm::install::manifest_objects(cluster, &rel)
                .iter()
                .map(inventory::Entry::of)
                .collect();
            (key, rel, entries)
        })
        .collect())
}

/// The row of a HelmRelease flux-order installed: chart and revision, when, and whether its
/// objects are there and healthy now.
fn release_row(
    (ns, name): (String, String),
    rel: &Value,
    entries: &[inventory::Entry],
    live: &HashMap<ObjRef, StatusResult>,
) -> Row {
    let pending = not_ready(live, entries);
    let n = entries.len();
    let status = crate::helm::storage::status(rel).to_string();
    let chart = format!(
        "{}-{}",
        rel.pointer("/chart/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(""),
        rel.pointer("/chart/metadata/version")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let mut message = format!(
        "release {} revision {} {status}; {}/{n} objects ready",
        rel["name"].as_str().unwrap_or(""),
        rel["version"],
        n - pending.len()
    );
    if !pending.is_empty() {
        message.push_str(&format!("; {}", pending.join(", ")));
    }
    Row {
        id: KsId::helm_release(ns, name).to_string(),
        revision: chart,
        applied_at: rel
            .pointer("/info/last_deployed")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        objects: n,
        ready: pending.is_empty() && status == "deployed",
        message,
    }
}

/// Runs `status`.
pub async fn run(args: &StatusArgs) -> Result<(), AppError> {
    let cluster = super::apply::connect(&args.cluster).await?;
    if let Some(id) = &args.id {
        return describe(&cluster, id, args.output).await;
    }
    let invs = inventory::list(&cluster, args.namespace.as_deref())
        .await
        .map_err(AppError::from)?;
    let releases = releases(&cluster, args.namespace.as_deref()).await?;
    let checked: Vec<Checked> = invs
        .iter()
        .map(|(_, inv)| (inv.entries.as_slice(), OWNER_NAME_LABEL))
        .chain(
            releases
                .iter()
                .map(|(_, _, entries)| (entries.as_slice(), RELEASE_NAME_LABEL)),
        )
        .collect();
    let live = survey(&cluster, &checked).await?;
    let mut rows = Vec::new();
    for (id, inv) in &invs {
        let pending = not_ready(&live, &inv.entries);
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
    for (key, rel, entries) in releases {
        rows.push(release_row(key, &rel, &entries, &live));
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

/// Events shown by `status NAMESPACE/NAME`.
const LAST_EVENTS: usize = 10;

/// One Kustomization in detail.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    id: String,
    inventory: String,
    revision: String,
    applied_at: String,
    ready: bool,
    last_outcome: String,
    message: String,
    attempts: u32,
    objects: usize,
    not_ready: Vec<String>,
    events: Vec<EventRow>,
}

/// One Event of a Kustomization.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventRow {
    last_timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    reason: String,
    message: String,
}

/// `status NAMESPACE/NAME`.
async fn describe(
    cluster: &crate::cluster::Cluster,
    id: &str,
    output: StatusFormat,
) -> Result<(), AppError> {
    let id = KsId::parse(id).ok_or_else(|| {
        AppError::Usage(anyhow::anyhow!(
            "{id}: expected NAMESPACE/NAME of a Kustomization"
        ))
    })?;
    let inv = inventory::read(cluster, &id)
        .await
        .map_err(|e| AppError::Cluster(e.to_string()))?
        .ok_or_else(|| {
            AppError::Operation(vec![format!(
                "Kustomization {id}: flux-order has no inventory for it (ConfigMap {}/{} not found): it was never applied",
                id.namespace,
                inventory::configmap_name(&id)
            )])
        })?;
    let live = survey(cluster, &[(inv.entries.as_slice(), OWNER_NAME_LABEL)]).await?;
    let not_ready = not_ready(&live, &inv.entries);
    let cm = inventory::configmap_name(&id);
    let mut events: Vec<EventRow> = cluster
        .list("v1", "Event", Some(&id.namespace), "")
        .await
        .map_err(|e| AppError::Cluster(e.to_string()))?
        .iter()
        .filter(|e| {
            e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(cm.as_str())
                && e.pointer("/involvedObject/kind").and_then(Value::as_str) == Some("ConfigMap")
        })
        .map(|e| {
            let s = |p: &str| {
                e.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let at = match s("/lastTimestamp") {
                t if t.is_empty() => s("/eventTime"),
                t => t,
            };
            EventRow {
                last_timestamp: at,
                kind: s("/type"),
                reason: s("/reason"),
                message: s("/message"),
            }
        })
        .collect();
    // Oldest first, as `kubectl describe`; the last few.
    events.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
    let events = events.split_off(events.len().saturating_sub(LAST_EVENTS));
    let d = Detail {
        id: id.to_string(),
        inventory: format!("ConfigMap/{}/{cm}", id.namespace),
        revision: inv.revision.clone(),
        applied_at: inv.applied_at.clone(),
        ready: inv.ready && not_ready.is_empty(),
        last_outcome: inv.outcome.clone(),
        message: inv.message.clone(),
        attempts: inv.attempts,
        objects: inv.entries.len(),
        not_ready,
        events,
    };
    match output {
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&d).map_err(anyhow::Error::from)?
        ),
        StatusFormat::Text => print!("{}", describe_text(&d)),
    }
    Ok(())
}

/// The text of `status NAMESPACE/NAME`, laid out like `kubectl describe`.
fn describe_text(d: &Detail) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let or_dash = |v: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    let _ = writeln!(s, "Name:          {}", d.id);
    let _ = writeln!(s, "Inventory:     {}", d.inventory);
    let _ = writeln!(s, "Revision:      {}", or_dash(&d.revision));
    let _ = writeln!(s, "Applied:       {}", or_dash(&d.applied_at));
    let _ = writeln!(
        s,
        "Ready:         {}",
        if d.ready { "True" } else { "False" }
    );
    let _ = writeln!(s, "Last Outcome:  {}", or_dash(&d.last_outcome));
    if !d.message.is_empty() {
        let _ = writeln!(s, "Message:       {}", d.message);
    }
    let _ = writeln!(s, "Attempts:      {}", d.attempts);
    let _ = writeln!(
        s,
        "Objects:       {} ({} ready)",
        d.objects,
        d.objects.saturating_sub(d.not_ready.len())
    );
    if !d.not_ready.is_empty() {
        let _ = writeln!(s, "Not Ready:");
        for o in &d.not_ready {
            let _ = writeln!(s, "  {o}");
        }
    }
    if d.events.is_empty() {
        let _ = writeln!(s, "Events:        <none>");
    } else {
        let _ = writeln!(s, "Events:");
        let rw = d
            .events
            .iter()
            .map(|e| e.reason.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "  {:<7}  {:<rw$}  {:<20}  MESSAGE",
            "TYPE", "REASON", "LAST SEEN"
        );
        for e in &d.events {
            let msg = e.message.replace('\n', "; ");
            let _ = writeln!(
                s,
                "  {:<7}  {:<rw$}  {:<20}  {msg}",
                e.kind, e.reason, e.last_timestamp
            );
        }
    }
    s
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
