//! `diff` (and `apply --dry-run=server`): a server-side dry-run of every object of the selection
//! in apply order, printing per object created / configured / unchanged with a unified diff of
//! what would change (managedFields, status and server-set metadata left out; Secret values
//! masked). Objects whose CRD or namespace an earlier Kustomization of the selection creates are
//! reported as created without validation. Writes nothing. Exit: 0 no change, 1 changes, 2 error.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::build::postbuild;
use crate::cli::{ClusterArgs, DiffArgs, ExcludeArgs, FleetArgs};
use crate::cluster::Cluster;
use crate::execute::stages::sort_for_apply;
use crate::exit::AppError;
use crate::model::{object_meta, subject};
use crate::options::FleetSettings;
use crate::report::progress::Paint;

/// Runs `diff`.
pub async fn run(args: &DiffArgs) -> Result<(), AppError> {
    run_with(
        &args.fleet,
        &args.cluster,
        &args.exclude,
        DiffOptions {
            apply_flux_objects: args.apply_flux_objects,
            show_secrets: args.show_secrets,
            no_color: args.no_color,
        },
    )
    .await
}

/// How `diff` compares and prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffOptions {
    /// Flux's own objects are payload, as under `apply --apply-flux-objects`.
    pub apply_flux_objects: bool,
    /// Secret and decrypted values in clear.
    pub show_secrets: bool,
    /// No colours.
    pub no_color: bool,
}

/// Server-set or bookkeeping fields removed before comparing and printing.
fn clean(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "managedFields",
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "selfLink",
            ] {
                meta.remove(f);
            }
        }
    }
    v
}

/// Flux's diff masking: Secret values that changed become `*** (before)` / `*** (after)`, all
/// other values (kept, added or removed keys) `***`.
fn mask_pair(live: &mut Value, merged: &mut Value) {
    for field in ["data", "stringData"] {
        let before = live.get(field).cloned().unwrap_or(Value::Null);
        let after = merged.get(field).cloned().unwrap_or(Value::Null);
        let changed = |k: &str| {
            let (b, a) = (before.get(k), after.get(k));
            b.is_some() && a.is_some() && b != a
        };
        for (target, tag) in [(&mut *live, "before"), (&mut *merged, "after")] {
            if let Some(Value::Object(m)) = target.get_mut(field) {
                for (k, v) in m.iter_mut() {
                    *v = Value::String(if changed(k) {
                        format!("*** ({tag})")
                    } else {
                        "***".into()
                    });
                }
            }
        }
    }
}

fn is_secret(o: &Value) -> bool {
    let (api, kind, _, _) = object_meta(o);
    api == "v1" && kind == "Secret"
}

fn yaml(v: &Value) -> String {
    crate::yaml::to_string(v).unwrap_or_default()
}

/// The shared implementation of `diff` and `apply --dry-run=server`.
pub async fn run_with(
    fleet: &FleetArgs,
    cluster_args: &ClusterArgs,
    exclude: &ExcludeArgs,
    opts: DiffOptions,
) -> Result<(), AppError> {
    let DiffOptions {
        show_secrets,
        no_color,
        ..
    } = opts;
    let mut settings = FleetSettings::resolve(fleet)?;
    let (cluster, mut loaded) = super::apply::connect_and_load(cluster_args, &mut settings).await?;
    if opts.apply_flux_objects {
        loaded.promote_flux_objects();
    }
    let exclusions =
        loaded.exclusions(exclude, super::apply::validate_objects(&loaded, &cluster))?;
    let paint = super::apply::paint(no_color);
    for w in &exclusions.notes {
        eprintln!("{} {w}", paint.warn("warning:"));
    }
    let mut namespaces_in_selection = BTreeSet::new();
    for id in &loaded.selection {
        for m in &loaded.fleet.nodes[id].objects {
            let (api, kind, _, name) = m.meta();
            if api == "v1" && kind == "Namespace" {
                namespaces_in_selection.insert(name.to_string());
            }
        }
    }
    let mut changes = 0usize;
    let mut failures = Vec::new();
    // Whether a failure was the server's (no answer, 5xx after the retries) rather than a refusal
    // of what the fleet holds: exit 3, not 2.
    let mut unreachable = false;
    let mut order: Vec<_> = loaded.selection.iter().collect();
    order.sort_by_key(|id| (loaded.graph.wave(id), (*id).clone()));
    // What apply would not run: suspended or remote Kustomizations, and (as its executor skips
    // them) everything whose dependency or parent is one of those.
    let mut skipped: std::collections::BTreeMap<&crate::model::KsId, String> = Default::default();
    for id in order {
        let n = &loaded.fleet.nodes[id];
        if let Some((reason, _)) = exclusions.excluded.get(id) {
            println!("{} Kustomization {id} excluded: {reason}", paint.dim("►"));
            continue;
        }
        if let Some(by) = exclusions.blocked.get(id) {
            let by: Vec<String> = by.iter().map(|b| b.to_string()).collect();
            println!(
                "{} Kustomization {id} skipped: blocked by excluded {}",
                paint.dim("►"),
                by.join(", ")
            );
            continue;
        }
        let why = if n.spec.suspend {
            Some("suspended".to_string())
        } else if n.spec.kube_config.is_some() {
            Some("remote cluster".to_string())
        } else {
            let with_expr: BTreeSet<crate::model::KsId> = n
                .spec
                .depends_on
                .iter()
                .filter(|d| d.ready_expr.is_some())
                .map(|d| {
                    crate::model::KsId::new(
                        d.namespace.as_deref().unwrap_or(&id.namespace),
                        &d.name,
                    )
                })
                .collect();
            let blockers: Vec<String> = n
                .spec
                .dependencies(&id.namespace)
                .into_iter()
                .filter(|d| !with_expr.contains(d))
                .chain(n.parent.clone())
                .filter(|d| skipped.contains_key(d))
                .map(|d| d.to_string())
                .collect();
            (!blockers.is_empty()).then(|| {
                format!(
                    "apply skips it: blocked by {} (not applied)",
                    blockers.join(", ")
                )
            })
        };
        if let Some(why) = why {
            println!("{} Kustomization {id} skipped: {why}", paint.dim("►"));
            skipped.insert(id, why);
            continue;
        }
        println!("{} Kustomization {id}", paint.dim("►"));
        let mut objects: Vec<Value> = n.objects.iter().map(|m| m.object()).collect();
        sort_for_apply(&mut objects);
        let masks = if show_secrets {
            Masks::default()
        } else {
            Masks::of(n, &loaded.fleet.decrypted)
        };
        for o in &objects {
            match diff_one(
                &cluster,
                o,
                n.spec.force,
                &namespaces_in_selection,
                (!show_secrets).then_some(&masks),
                paint,
            )
            .await
            {
                Ok((changed, text)) => {
                    if changed {
                        changes += 1;
                    }
                    print!("{}", masks.text(&text));
                }
                Err((e, server_failed)) => {
                    let e = masks.text(&e);
                    let subj = masks.text(&subject(o));
                    println!("  {} {subj} {e}", paint.bad("✗"));
                    unreachable |= server_failed;
                    failures.push(format!("Kustomization {id} ({}): {e}", n.file));
                }
            }
        }
        if n.spec.prune {
            for subj in stale(&cluster, id, &objects).await? {
                changes += 1;
                let subj = masks.text(&subj);
                println!("  {} {subj} deleted (prune)", paint.bad("-"));
            }
        }
    }
    // HelmReleases: what installing each now would change, object by object.
    let helm = super::apply::helm_env(&loaded, &settings, cluster_args, &exclusions)?;
    for id in &loaded.helm_selection {
        let r = &loaded.releases[id];
        if let Some((reason, _)) = exclusions.excluded.get(id) {
            println!("{} {} excluded: {reason}", paint.dim("►"), r.id.label());
            continue;
        }
        if r.spec.suspend || exclusions.leaves_out(r) {
            println!("{} {} skipped", paint.dim("►"), r.id.label());
            continue;
        }
        let Some(env) = &helm else { continue };
        println!("{} {}", paint.dim("►"), r.id.label());
        match crate::helm::install::objects_for_diff(&cluster, env, r).await {
            Ok((mut objects, secrets)) => {
                sort_for_apply(&mut objects);
                for o in &objects {
                    let no_vars = Masks::default();
                    match diff_one(
                        &cluster,
                        o,
                        false,
                        &namespaces_in_selection,
                        (!show_secrets).then_some(&no_vars),
                        paint,
                    )
                    .await
                    {
                        Ok((changed, text)) => {
                            if changed {
                                changes += 1;
                            }
                            let text = if show_secrets {
                                text
                            } else {
                                crate::helm::install::mask(&text, &secrets)
                            };
                            print!("{text}");
                        }
                        Err((e, server_failed)) => {
                            unreachable |= server_failed;
                            failures.push(format!("{} ({}): {e}", r.id.label(), r.file))
                        }
                    }
                }
            }
            Err(e) => failures.push(format!("{} ({}): {e}", r.id.label(), r.file)),
        }
    }
    if crate::interrupt::interrupted() {
        return Err(AppError::Interrupted);
    }
    if unreachable {
        return Err(AppError::Cluster(failures.join("\n")));
    }
    if !failures.is_empty() {
        return Err(AppError::Invalid(failures));
    }
    if changes > 0 {
        Err(AppError::Changes(changes))
    } else {
        Ok(())
    }
}

/// Objects in the inventory of `id` that the new build no longer has and that prune would delete
/// (present, owned by `id`, not protected), as `Kind/ns/name`.
pub async fn stale(
    cluster: &Cluster,
    id: &crate::model::KsId,
    objects: &[Value],
) -> Result<Vec<String>, AppError> {
    let cluster_err = AppError::from;
    let old = crate::inventory::read(cluster, id)
        .await
        .map_err(cluster_err)?;
    let new: Vec<crate::inventory::Entry> =
        objects.iter().map(crate::inventory::Entry::of).collect();
    let mut out = Vec::new();
    for e in crate::inventory::stale(&old.map(|i| i.entries).unwrap_or_default(), &new) {
        let Some((api, kind, ns, name)) = e.parse() else {
            continue;
        };
        let live = cluster
            .get_ref(&api, &kind, &ns, &name)
            .await
            .map_err(cluster_err)?;
        if live.is_some_and(|l| crate::execute::stages::prunable(&l, id)) {
            out.push(crate::model::subject_of(&kind, &ns, &name));
        }
    }
    Ok(out)
}

/// What must not print in clear for one Kustomization: where its Secret-backed variables land in
/// each object (by `Kind/ns/name`), and their values.
#[derive(Default)]
struct Masks {
    fields: std::collections::HashMap<String, Vec<(String, String)>>,
    secrets: Vec<String>,
}

impl Masks {
    /// `text` with every Secret-backed value masked.
    fn text(&self, text: &str) -> String {
        crate::redact::redact(text, &self.secrets)
    }

    /// The masks of `n`'s objects; `decrypted`: every value SOPS-encrypted in the fleet.
    fn of(n: &crate::load::Node, decrypted: &[String]) -> Masks {
        let mut fields: std::collections::HashMap<String, Vec<(String, String)>> =
            std::collections::HashMap::new();
        if let Some(Ok((masked, _))) = n.masked_build() {
            for (real, masked) in n.objects.iter().zip(&masked) {
                let f = postbuild::secret_fields(&masked.object());
                if !f.is_empty() {
                    fields.insert(real.subject(), f);
                }
            }
        }
        // A value that was SOPS-encrypted prints as `***` wherever it is, whatever the kind.
        for m in n.objects.iter().filter(|m| !m.decrypted.is_empty()) {
            fields.entry(m.subject()).or_default().extend(
                m.decrypted
                    .iter()
                    .map(|p| (p.clone(), postbuild::MASK.to_string())),
            );
        }
        Masks {
            fields,
            secrets: crate::redact::secret_values(&[], n.vars.secret_values().chain(decrypted)),
        }
    }

    /// Masks the live and merged versions of `o`: a field holding a Secret-backed value prints
    /// as the build's text with `***` where the value went when both sides agree, else as
    /// `*** (before)` / `*** (after)`; any other echo of a value is masked too.
    fn apply(&self, o: &Value, before: &mut Value, after: &mut Value) {
        for (ptr, shown) in self.fields.get(&subject(o)).into_iter().flatten() {
            let same = before.pointer(ptr) == after.pointer(ptr);
            for (side, tag) in [(&mut *before, "before"), (&mut *after, "after")] {
                if let Some(v) = side.pointer_mut(ptr) {
                    *v = Value::String(if same {
                        shown.clone()
                    } else {
                        format!("{} ({tag})", postbuild::MASK)
                    });
                }
            }
        }
        crate::redact::redact_value(before, &self.secrets);
        crate::redact::redact_value(after, &self.secrets);
    }
}

async fn diff_one(
    cluster: &Cluster,
    o: &Value,
    force: bool,
    namespaces: &BTreeSet<String>,
    masks: Option<&Masks>,
    paint: Paint,
) -> Result<(bool, String), (String, bool)> {
    let (api, kind, ns, _) = object_meta(o);
    let subj = subject(o);
    if cluster.kind(api, kind).is_none() {
        return Ok((
            true,
            format!(
                "  {} {subj} created (CRD not yet installed, not validated)\n",
                paint.ok("+")
            ),
        ));
    }
    let live = cluster
        .get(o)
        .await
        .map_err(|e| (e.to_string(), e.is_unreachable()))?;
    let dry = match cluster.apply(o, true).await {
        Ok(d) => d,
        Err(e) if live.is_none() && e.code() == Some(404) && namespaces.contains(ns) => {
            return Ok((
                true,
                format!(
                    "  {} {subj} created (namespace not yet created, not validated)\n",
                    paint.ok("+")
                ),
            ));
        }
        Err(e)
            if e.is_immutable() && (force || crate::execute::stages::forced(o, live.as_ref())) =>
        {
            return Ok((
                true,
                format!(
                    "  {} {subj} created (recreated: immutable field changed under force)\n",
                    paint.ok("+")
                ),
            ));
        }
        Err(e) => return Err((format!("dry-run failed: {e}"), e.is_unreachable())),
    };
    let Some(live) = live else {
        return Ok((true, format!("  {} {subj} created\n", paint.ok("+"))));
    };
    let (mut before, mut after) = (clean(&live), clean(&dry));
    if before == after {
        return Ok((false, format!("  {} {subj} unchanged\n", paint.dim("="))));
    }
    if let Some(masks) = masks {
        if is_secret(o) {
            mask_pair(&mut before, &mut after);
        }
        masks.apply(o, &mut before, &mut after);
    }
    let (a, b) = (yaml(&before), yaml(&after));
    let diff = similar::TextDiff::from_lines(&a, &b);
    let mut text = format!("  {} {subj} configured\n", paint.warn("~"));
    for line in diff
        .unified_diff()
        .context_radius(3)
        .header("live", "merged")
        .to_string()
        .lines()
    {
        let painted = if line.starts_with('+') && !line.starts_with("+++") {
            paint.ok(line)
        } else if line.starts_with('-') && !line.starts_with("---") {
            paint.bad(line)
        } else {
            line.to_string()
        };
        text.push_str(&format!("    {painted}\n"));
    }
    Ok((true, text))
}
