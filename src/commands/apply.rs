//! `apply`: connect, load and validate everything (strict substitution, substituteFrom sources
//! read from the cluster when the fleet lacks them, every kind known to the server or defined by a
//! CRD of the selection, CEL compiled), and only then run the executor, rendering its events and
//! a summary. Exit 0 only if every selected Kustomization is ready (or suspended).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use serde_json::Value;

use super::{Exclusions, Loaded};
use crate::build::postbuild::VarIndex;
use crate::cli::{ApplyArgs, ClusterArgs, DryRun, ProgressFormat};
use crate::cluster::{Cluster, ConnectOptions};
use crate::execute::events::Outcome;
use crate::execute::{self, ExecOptions, Unit};
use crate::exit::AppError;
use crate::health::cel_expr::{HealthExprSpec, HealthExprs, ReadyExpr};
use crate::model::{GoDuration, KsId};
use crate::options::FleetSettings;
use crate::report::progress::{self, Mode, Paint};
use crate::report::summary;

/// Connects to the cluster named by the kubectl flags; a clear error before anything else runs.
pub async fn connect(args: &ClusterArgs) -> Result<Arc<Cluster>, AppError> {
    let timeout = crate::options::positive_duration("--request-timeout", &args.request_timeout)?;
    let opts = ConnectOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        request_timeout: Some(timeout),
    };
    Cluster::connect(&opts)
        .await
        .map(Arc::new)
        .map_err(AppError::from)
}

/// Connects (a clear error before anything is built when the cluster is unreachable), loads the
/// fleet strictly, then reads from the cluster any substituteFrom source the fleet lacks and
/// loads again with it.
pub async fn connect_and_load(
    cluster_args: &ClusterArgs,
    settings: &mut FleetSettings,
) -> Result<(Arc<Cluster>, Loaded), AppError> {
    let cluster = connect(cluster_args).await?;
    settings.load.strict = true;
    // Credentials of sources (secretRef) the fleet does not hold are read from the cluster.
    settings.load.fetch.cluster = Some(crate::sources::SecretSource(cluster.clone()));
    let loaded = super::load_fleet_keeping_builds(settings).await?;
    super::refuse_empty(&loaded, &settings.load.path)?;
    let loaded = with_cluster_vars(settings, &cluster, loaded).await?;
    // When nothing had to be read from the cluster, no second load followed.
    settings.builder.forget_outputs();
    Ok((cluster, loaded))
}

async fn with_cluster_vars(
    settings: &mut FleetSettings,
    cluster: &Cluster,
    loaded: Loaded,
) -> Result<Loaded, AppError> {
    let mut missing: BTreeSet<(String, String, String)> = BTreeSet::new();
    for n in loaded.fleet.nodes.values() {
        for m in &n.vars.missing {
            if let Some((kind, name)) = m.split_once('/') {
                missing.insert((n.id.namespace.clone(), kind.to_string(), name.to_string()));
            }
        }
    }
    // spec.decryption.secretRef Secrets the fleet does not define are read from the cluster.
    for n in loaded.fleet.nodes.values() {
        let Some(name) = n
            .spec
            .decryption
            .as_ref()
            .and_then(|d| d.pointer("/secretRef/name"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let in_fleet = loaded.fleet.nodes.values().any(|m| {
            m.objects.iter().any(|o| {
                let (api, kind, ns, nm) = o.meta();
                api == "v1" && kind == "Secret" && ns == n.id.namespace && nm == name
            })
        });
        if !in_fleet {
            missing.insert((n.id.namespace.clone(), "Secret".into(), name.to_string()));
        }
    }
    if missing.is_empty() {
        return Ok(loaded);
    }
    let mut index = VarIndex::default();
    for (ns, kind, name) in missing {
        let got = cluster
            .get_ref("v1", &kind, &ns, &name)
            .await
            .map_err(AppError::from)?;
        if let Some(object) = got {
            // The same decoding as for the fleet's own ConfigMaps and Secrets.
            index.add_object(&object);
        }
    }
    settings.load.cluster_vars = Some(index);
    super::load_fleet(settings).await
}

/// Why an object cannot be applied, found before the first write.
pub fn validate_objects(loaded: &Loaded, cluster: &Cluster) -> Vec<(KsId, String)> {
    // Kinds defined by CRDs of the selection: (apiVersion, kind) → namespaced.
    let mut crd_kinds: BTreeMap<(String, String), bool> = BTreeMap::new();
    for id in &loaded.selection {
        for m in &loaded.fleet.nodes[id].objects {
            if m.meta().1 == "CustomResourceDefinition" {
                for (api, kind, namespaced) in crate::model::crd_served_kinds(&m.object()) {
                    crd_kinds.insert((api, kind), namespaced);
                }
            }
        }
    }
    let mut errors = Vec::new();
    for id in &loaded.selection {
        let n = &loaded.fleet.nodes[id];
        if n.spec.suspend || n.spec.kube_config.is_some() || n.failed {
            continue;
        }
        for m in &n.objects {
            let (api, kind, ns, _) = m.meta();
            let namespaced = match cluster.kind(api, kind) {
                Some(k) => k.namespaced,
                None => match crd_kinds.get(&(api.to_string(), kind.to_string())) {
                    Some(ns) => *ns,
                    None => {
                        errors.push((id.clone(), format!(
                            "{}: Kustomization {id}: {}: kind {kind} ({api}) is not served by the cluster and no CustomResourceDefinition in the selection defines it",
                            n.file,
                            m.subject()
                        )));
                        continue;
                    }
                },
            };
            if namespaced && ns.is_empty() {
                errors.push((id.clone(), format!("{}: Kustomization {id}: {} namespace not specified (Flux never defaults one; set metadata.namespace or spec.targetNamespace)", n.file, m.subject())));
            }
        }
    }
    errors
}

/// Turns the selection into executor units, compiling health expressions; left-out ones become
/// units the executor settles at once (and so skips their dependents).
/// The objects move from the fleet into the units (the fleet holds none afterwards): at 50,000
/// objects a second copy is tens of megabytes.
fn units(loaded: &mut Loaded, exclusions: &Exclusions) -> Result<Vec<Unit>, AppError> {
    let mut objects_of: BTreeMap<KsId, Vec<crate::build::postbuild::Manifest>> = loaded
        .fleet
        .nodes
        .iter_mut()
        .map(|(id, n)| (id.clone(), std::mem::take(&mut n.objects)))
        .collect();
    let loaded = &*loaded;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut revisions: BTreeMap<std::path::PathBuf, Option<String>> = BTreeMap::new();
    for id in &loaded.selection {
        let n = &loaded.fleet.nodes[id];
        if let Some((reason, invalid)) = exclusions.excluded.get(id) {
            out.push(Unit {
                revision: String::new(),
                id: id.clone(),
                spec: n.spec.clone(),
                objects: Vec::new(),
                file: n.file.clone(),
                deps: Vec::new(),
                parent: None,
                owner: n.parent.clone(),
                wave: loaded.graph.wave(id),
                exprs: None,
                refuse: None,
                object: n.object.clone(),
                ready_exprs: BTreeMap::new(),
                secrets: Vec::new(),
                helm: None,
                gated_by: Vec::new(),
                excluded: Some(Outcome::Excluded {
                    reason: reason.clone(),
                    invalid: *invalid,
                }),
            });
            continue;
        }
        let exprs = if n.spec.health_check_exprs.is_empty() {
            None
        } else {
            let specs: Result<Vec<HealthExprSpec>, _> = n
                .spec
                .health_check_exprs
                .iter()
                .map(|v| serde_json::from_value(v.clone()))
                .collect();
            match specs
                .map_err(|e| e.to_string())
                .and_then(|s| HealthExprs::compile(&s).map_err(|e| e.to_string()))
            {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    errors.push(format!(
                        "{}: Kustomization {id}: spec.healthCheckExprs: {e}",
                        n.file
                    ));
                    None
                }
            }
        };
        let mut ready_exprs = BTreeMap::new();
        for d in &n.spec.depends_on {
            let Some(src) = d.ready_expr.as_deref().filter(|e| !e.is_empty()) else {
                continue;
            };
            let dep = KsId::new(d.namespace.as_deref().unwrap_or(&id.namespace), &d.name);
            match ReadyExpr::compile(src) {
                Ok(e) => {
                    ready_exprs.insert(dep, Arc::new(e));
                }
                Err(e) => errors.push(format!(
                    "{}: Kustomization {id}: spec.dependsOn[{dep}].readyExpr: {e}",
                    n.file
                )),
            }
        }
        let refuse = if n.spec.kube_config.is_some() {
            Some("spec.kubeConfig targets another cluster; flux-order applies to the current cluster only".to_string())
        } else {
            None
        };
        let objects = objects_of.remove(id).unwrap_or_default();
        let revision = revisions
            .entry(n.source_dir.clone())
            .or_insert_with(|| crate::inventory::git_revision(&n.source_dir))
            .clone()
            .unwrap_or_else(|| crate::inventory::digest(&objects));
        let gated_by = crate::helm::gates(
            n,
            loaded
                .releases
                .values()
                .filter(|r| loaded.helm_selection.contains(&r.id)),
        );
        let secret_objects: Vec<Value> = objects
            .iter()
            .filter(|m| m.meta().1 == "Secret")
            .map(|m| m.object())
            .collect();
        out.push(Unit {
            secrets: crate::redact::secret_values(
                &secret_objects,
                n.vars.secret_values().chain(&loaded.fleet.decrypted),
            ),
            helm: None,
            gated_by,
            revision,
            id: id.clone(),
            spec: n.spec.clone(),
            objects,
            file: n.file.clone(),
            deps: n
                .spec
                .dependencies(&id.namespace)
                .into_iter()
                .filter(|d| loaded.selection.contains(d))
                .collect(),
            parent: n.parent.clone().filter(|p| loaded.selection.contains(p)),
            owner: n.parent.clone(),
            wave: loaded.graph.wave(id),
            exprs,
            refuse,
            object: n.object.clone(),
            ready_exprs,
            excluded: None,
        });
    }
    for id in &loaded.helm_selection {
        let r = &loaded.releases[id];
        let timeout = r.spec.timeout(false);
        let spec: crate::model::KustomizationSpec = serde_json::from_value(serde_json::json!({
            "interval": "10m",
            "sourceRef": {"kind": "HelmRelease", "name": r.id.name},
            "prune": false,
            "suspend": r.spec.suspend,
            "timeout": format!("{}s", timeout.as_secs().max(1)),
        }))
        .map_err(|e| AppError::Invalid(vec![format!("{}: {}: {e}", r.file, r.id.label())]))?;
        // HelmRelease dependsOn readyExpr, as for Kustomizations (dep: the HelmRelease object).
        let mut ready_exprs = BTreeMap::new();
        for d in &r.spec.depends_on {
            let Some(src) = d.ready_expr.as_deref().filter(|e| !e.is_empty()) else {
                continue;
            };
            let dep = KsId::helm_release(d.namespace.as_deref().unwrap_or(&id.namespace), &d.name);
            match ReadyExpr::compile(src) {
                Ok(e) => {
                    ready_exprs.insert(dep, Arc::new(e));
                }
                Err(e) => errors.push(format!(
                    "{}: {}: spec.dependsOn[{dep}].readyExpr: {e}",
                    r.file,
                    id.label()
                )),
            }
        }
        out.push(Unit {
            secrets: Vec::new(),
            object: crate::build::postbuild::Manifest::new(&r.object, None),
            ready_exprs,
            helm: Some(Arc::new(r.clone())),
            gated_by: Vec::new(),
            revision: String::new(),
            id: id.clone(),
            spec,
            objects: Vec::new(),
            file: r.file.clone(),
            deps: r
                .spec
                .dependencies(&id.namespace)
                .into_iter()
                .filter(|d| loaded.helm_selection.contains(d))
                .collect(),
            parent: Some(r.owner.clone()).filter(|p| loaded.selection.contains(p)),
            owner: Some(r.owner.clone()),
            wave: loaded.graph.wave(id),
            exprs: None,
            refuse: None,
            excluded: exclusions
                .excluded
                .get(id)
                .map(|(reason, invalid)| Outcome::Excluded {
                    reason: reason.clone(),
                    invalid: *invalid,
                }),
        });
    }
    if errors.is_empty() {
        // Held for the whole rollout: no spare capacity.
        out.shrink_to_fit();
        Ok(out)
    } else {
        Err(AppError::Invalid(errors))
    }
}

/// Everything installing the selected HelmReleases needs, checked before the first write: helm 4,
/// every chart available. None when no HelmRelease is selected.
pub fn helm_env(
    loaded: &Loaded,
    settings: &FleetSettings,
    cluster_args: &ClusterArgs,
    exclusions: &Exclusions,
) -> Result<Option<Arc<crate::helm::install::Env>>, AppError> {
    let active: Vec<&crate::helm::Release> = loaded
        .helm_selection
        .iter()
        .map(|id| &loaded.releases[id])
        .filter(|r| !r.spec.suspend && !exclusions.leaves_out(r))
        .collect();
    if active.is_empty() {
        return Ok(None);
    }
    let mut errors: Vec<String> = active
        .iter()
        .filter_map(|r| match &r.chart {
            crate::helm::Chart::Unavailable(why) => {
                Some(format!("{}: {}: chart: {why}", r.file, r.id.label()))
            }
            crate::helm::Chart::Local { .. } => None,
        })
        .collect();
    let helm = match crate::helm::render::Helm::detect(settings.helm.helm_bin.as_deref()) {
        Ok(h) => Some(h),
        Err(e) => {
            errors.push(format!("{} HelmRelease(s) selected: {e}", active.len()));
            None
        }
    };
    let kustomize = settings.builder.kustomize().clone();
    match helm {
        Some(helm) if errors.is_empty() => Ok(Some(Arc::new(crate::helm::install::Env {
            helm,
            kustomize,
            target: crate::helm::render::ClusterTarget {
                kubeconfig: cluster_args.kubeconfig.clone(),
                context: cluster_args.context.clone(),
            },
            fleet_values: crate::helm::fleet_value_sources(&loaded.fleet, active.iter().copied()),
        }))),
        _ => Err(AppError::Invalid(errors)),
    }
}

/// Whether colours are wanted.
pub fn paint(no_color: bool) -> Paint {
    Paint(!no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
}

/// Runs `apply`.
pub async fn run(args: &ApplyArgs) -> Result<(), AppError> {
    if args.dry_run == DryRun::Server {
        return super::diff::run_with(
            &args.fleet,
            &args.cluster,
            &args.exclude,
            super::diff::DiffOptions {
                apply_flux_objects: args.apply_flux_objects,
                show_secrets: false,
                no_color: args.no_color,
            },
        )
        .await;
    }
    let mut settings = FleetSettings::resolve(&args.fleet)?;
    let timeout = match &args.timeout {
        Some(t) => Some(crate::options::positive_duration("--timeout", t)?),
        None => None,
    };
    // Go's ParseDuration accepts a bare 0; so does --retry-for (no retries).
    let retry_for = match args.retry_for.as_str() {
        "0" => Duration::ZERO,
        d => GoDuration::parse(d)
            .context("--retry-for")
            .map_err(AppError::Usage)?
            .value(),
    };
    if args.concurrency == 0 || args.object_concurrency == 0 {
        return Err(AppError::Usage(anyhow::anyhow!(
            "--concurrency and --object-concurrency must be at least 1"
        )));
    }
    let (cluster, mut loaded) = connect_and_load(&args.cluster, &mut settings).await?;
    if args.apply_flux_objects {
        loaded.promote_flux_objects();
    }
    let exclusions = loaded.exclusions(&args.exclude, validate_objects(&loaded, &cluster))?;
    let helm = helm_env(&loaded, &settings, &args.cluster, &exclusions)?;
    let units = units(&mut loaded, &exclusions)?;
    let paint = paint(args.no_color);
    for w in loaded.fleet.warnings.iter().chain(&exclusions.notes) {
        eprintln!("{} {w}", paint.warn("warning:"));
    }
    let mode = match args.output {
        ProgressFormat::Json => Mode::Json,
        ProgressFormat::Text if std::io::stderr().is_terminal() => Mode::Tty,
        ProgressFormat::Text => Mode::Plain,
    };
    // The executor's events go to the renderer and, off the critical path, to the recorder of
    // Kubernetes Events.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<execute::events::Event>();
    let (render_tx, render_rx) = tokio::sync::mpsc::unbounded_channel();
    let (record_tx, record_rx) = tokio::sync::mpsc::unbounded_channel();
    let renderer = tokio::spawn(progress::render(mode, paint, render_rx));
    let revisions = units
        .iter()
        .map(|u| (u.id.clone(), u.revision.clone()))
        .collect();
    let recorder = tokio::spawn(crate::recorder::run(cluster.clone(), revisions, record_rx));
    let record = !args.no_events;
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if record {
                let _ = record_tx.send(e.clone());
            }
            let _ = render_tx.send(e);
        }
    });
    let cancel = crate::interrupt::token();
    let opts = ExecOptions {
        concurrency: args.concurrency,
        wave_barrier: args.wave_barrier,
        fail_fast: args.fail_fast,
        force: args.force,
        timeout,
        object_parallelism: args.object_concurrency,
        force_apply: args.force_apply,
        retry_for,
        helm,
    };
    // Every inventory in one request: what each Kustomization applied last time, and what
    // garbage collection of Kustomizations that left their parent needs afterwards.
    let inventories = crate::inventory::list(&cluster, None).await;
    let known = inventories
        .as_ref()
        .ok()
        .map(|l| l.iter().cloned().collect());
    let results = execute::run(cluster.clone(), units, known, opts, tx, cancel.clone()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), renderer).await;
    // Events still being written get a few seconds; they never hold the exit code.
    let _ = tokio::time::timeout(Duration::from_secs(5), recorder).await;
    let mut orphan_errors = Vec::new();
    if !cancel.is_cancelled() {
        for line in prune_orphans(&cluster, &loaded, &results, &inventories).await {
            match line {
                Ok(msg) if mode == Mode::Json => {
                    println!(
                        "{}",
                        serde_json::json!({"event": "pruned-kustomization", "message": msg})
                    )
                }
                Ok(msg) => println!("{msg}"),
                Err(e) => orphan_errors.push(e),
            }
        }
    }
    if mode == Mode::Json {
        let summary = serde_json::json!({"event": "summary", "results": results, "retries": cluster.retries()});
        println!("{summary}");
    } else {
        // Results on stdout, progress and diagnostics on stderr, as kubectl does.
        print!("{}", summary::table(&results, cluster.retries(), paint));
    }
    if cancel.is_cancelled() {
        return Err(AppError::Interrupted);
    }
    if !orphan_errors.is_empty() {
        return Err(AppError::Operation(orphan_errors));
    }
    let failed = results.iter().filter(|r| r.outcome.is_failure()).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(AppError::Failed(failed))
    }
}

/// Kustomizations flux-order applied earlier whose parent (selected, now ready, `prune: true`) no
/// longer holds them: as Flux prunes the child Kustomization and its finalizer applies the child's
/// deletionPolicy, their objects are deleted (or orphaned) and their inventory removed.
async fn prune_orphans(
    cluster: &Cluster,
    loaded: &Loaded,
    results: &[crate::execute::events::KsResult],
    inventories: &Result<Vec<(KsId, crate::inventory::Inventory)>, crate::cluster::ClusterError>,
) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    let invs = match inventories {
        Ok(i) => i,
        Err(e) => return vec![Err(format!("listing inventories: {e}"))],
    };
    for (id, inv) in invs {
        let Some(parent) = KsId::parse(&inv.parent) else {
            continue;
        };
        let parent_ready = results
            .iter()
            .any(|r| r.id == parent && r.outcome.is_ready());
        if loaded.fleet.nodes.contains_key(id)
            || !loaded.selection.contains(&parent)
            || !loaded.fleet.nodes[&parent].spec.prune
            || !parent_ready
        {
            continue;
        }
        let mut deleted = 0;
        if inv.deletes_objects() {
            let (kept, err) = crate::execute::stages::prune(cluster, id, &inv.entries, |_, a| {
                if a == crate::execute::events::Action::Deleted {
                    deleted += 1;
                }
            })
            .await;
            if let Some(e) = err {
                let mut left = inv.clone();
                left.entries = kept;
                let write = crate::inventory::write(cluster, id, &left).await;
                let unrecorded = write
                    .err()
                    .map(|w| format!("; and writing its inventory failed: {w}"))
                    .unwrap_or_default();
                out.push(Err(format!(
                    "Kustomization {id} (no longer in {parent}): {e}{unrecorded}"
                )));
                continue;
            }
        }
        match crate::inventory::remove(cluster, id).await {
            Ok(()) => out.push(Ok(format!(
                "Kustomization {id} is no longer in {parent}'s build: {deleted} objects deleted (deletionPolicy {})",
                if inv.deletion_policy.is_empty() { "MirrorPrune" } else { &inv.deletion_policy }
            ))),
            Err(e) => out.push(Err(format!("Kustomization {id}: removing its inventory: {e}"))),
        }
    }
    out
}
