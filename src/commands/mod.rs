//! One module per subcommand. Each resolves its flags (`options`), runs the pipeline stages it
//! needs and hands data to a renderer. This is the binary's edge: errors become [`AppError`]s
//! with the whole list of problems, and nothing is printed as success before validation ends.

pub mod apply;
pub mod build;
pub mod delete;
pub mod diff;
pub mod graph;
pub mod plan;
pub mod pull;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use crate::cli::ExcludeArgs;
use crate::exit::AppError;
use crate::graph::{Graph, NodeInput};
use crate::load::{self, Fleet};
use crate::model::KsId;
use crate::options::FleetSettings;
use crate::problems::Problems;

/// A loaded fleet with its graph, the selected Kustomizations and every problem found.
pub struct Loaded {
    /// The fleet.
    pub fleet: Fleet,
    /// Its graph (Kustomizations and HelmReleases).
    pub graph: Graph,
    /// `--only` closure of Kustomizations (everything when not given).
    pub selection: BTreeSet<KsId>,
    /// Every HelmRelease of the fleet.
    pub releases: BTreeMap<KsId, crate::helm::Release>,
    /// The HelmReleases of selected Kustomizations, and the HelmReleases they depend on.
    pub helm_selection: BTreeSet<KsId>,
    /// Every problem; the Kustomizations they make fail.
    pub problems: Problems,
}

impl Loaded {
    /// `--apply-flux-objects`: Flux's own objects of every build (but Kustomizations, which are
    /// nodes of the graph, and ArtifactGenerators, which flux-order emulates) become payload like
    /// any other object — validated, applied, inventoried and health-checked — and HelmReleases
    /// are left to helm-controller instead of being rendered.
    pub fn promote_flux_objects(&mut self) {
        for n in self.fleet.nodes.values_mut() {
            let (keep, apply): (Vec<_>, Vec<_>) = std::mem::take(&mut n.flux_objects)
                .into_iter()
                .partition(|m| {
                    let (api, kind, _, _) = m.meta();
                    crate::model::api_group(api) == crate::model::KUSTOMIZE_GROUP
                        || kind == "ArtifactGenerator"
                });
            n.flux_objects = keep;
            n.objects.extend(apply);
        }
        self.helm_selection.clear();
    }

    /// The selected Kustomizations and HelmReleases.
    fn selected(&self) -> BTreeSet<KsId> {
        self.selection
            .iter()
            .chain(&self.helm_selection)
            .cloned()
            .collect()
    }

    /// For `plan`, `graph` and `build`, after printing: every problem of the selection on
    /// stderr and exit code [`crate::exit::PLANNED_WITH_FAILURES`], when there is one.
    pub fn partial(&self) -> Result<(), AppError> {
        let selected = self.selected();
        let messages = self.problems.messages(&selected);
        if messages.is_empty() {
            Ok(())
        } else {
            let (releases, kustomizations): (Vec<&KsId>, Vec<&KsId>) = selected
                .iter()
                .filter(|k| self.problems.failed.contains(*k))
                .partition(|k| k.is_helm_release());
            Err(AppError::Partial {
                messages,
                failed: kustomizations.len(),
                failed_releases: releases.len(),
            })
        }
    }

    /// For `apply` and `diff`, before anything is written: what `--exclude` and
    /// `--skip-invalid` leave out, and what that blocks. Any other problem of the selection
    /// (`object_errors` included: why an object cannot be applied) refuses the whole run, every
    /// problem listed, as invalid input.
    pub fn exclusions(
        &self,
        args: &ExcludeArgs,
        object_errors: Vec<(KsId, String)>,
    ) -> Result<Exclusions, AppError> {
        let mut out = Exclusions::default();
        let mut unknown = Vec::new();
        for e in &args.exclude {
            let id = match e.strip_prefix("HelmRelease/") {
                Some(rest) => KsId::parse(rest)
                    .map(|k| KsId::helm_release(k.namespace, k.name))
                    .filter(|id| self.releases.contains_key(id)),
                None => KsId::parse(e).filter(|id| self.fleet.nodes.contains_key(id)),
            };
            match id {
                Some(id) => {
                    out.excluded.insert(id, ("--exclude".to_string(), false));
                }
                None => unknown.push(format!(
                    "--exclude {e}: no such Kustomization or HelmRelease in the fleet (expected NAMESPACE/NAME or HelmRelease/NAMESPACE/NAME)"
                )),
            }
        }
        if !unknown.is_empty() {
            return Err(AppError::Invalid(unknown));
        }
        let mut seen = BTreeSet::new();
        let mut refused = Vec::new();
        let mut invalid: BTreeMap<KsId, Vec<String>> = BTreeMap::new();
        let selected = self.selected();
        let problems = self
            .problems
            .within(&selected)
            .map(|p| (p.kustomization.clone(), p.message.clone()))
            .chain(object_errors.into_iter().map(|(k, m)| (Some(k), m)));
        // A HelmRelease goes with the Kustomization that applies it.
        let left_out = |k: &KsId, excluded: &BTreeMap<KsId, (String, bool)>| {
            excluded.contains_key(k)
                || self
                    .releases
                    .get(k)
                    .is_some_and(|r| excluded.contains_key(&r.owner))
        };
        for (ks, message) in problems {
            if ks.as_ref().is_some_and(|k| left_out(k, &out.excluded))
                || !seen.insert(message.clone())
            {
                continue;
            }
            match ks {
                Some(k) => invalid.entry(k).or_default().push(message.clone()),
                None => out.notes.push(message.clone()),
            }
            refused.push(message);
        }
        if !args.skip_invalid && !refused.is_empty() {
            refused.push(
                "nothing was written; fix these, or leave them out with --exclude NAMESPACE/NAME or --skip-invalid"
                    .to_string(),
            );
            return Err(AppError::Invalid(refused));
        }
        for (k, messages) in invalid {
            out.excluded
                .insert(k, (format!("invalid: {}", messages.join("; ")), true));
        }
        let roots: BTreeSet<KsId> = out.excluded.keys().cloned().collect();
        out.blocked = self
            .graph
            .blocked_by(&roots)
            .into_iter()
            .filter(|(k, _)| selected.contains(k) && !roots.contains(k))
            .collect();
        Ok(out)
    }
}

/// What `apply` and `diff` leave out of the selection.
#[derive(Debug, Default)]
pub struct Exclusions {
    /// Each left-out Kustomization or HelmRelease: why, and whether that is a failure (invalid)
    /// rather than the user's `--exclude`.
    pub excluded: BTreeMap<KsId, (String, bool)>,
    /// Kustomizations and HelmReleases that wait on left-out ones: never started.
    pub blocked: BTreeMap<KsId, BTreeSet<KsId>>,
    /// Problems of no Kustomization, skipped under `--skip-invalid`.
    pub notes: Vec<String>,
}

impl Exclusions {
    /// Whether the HelmRelease `r` is not installed: left out, waiting on something left out,
    /// or applied by a Kustomization left out.
    pub fn leaves_out(&self, r: &crate::helm::Release) -> bool {
        self.excluded.contains_key(&r.id)
            || self.blocked.contains_key(&r.id)
            || self.excluded.contains_key(&r.owner)
            || self.blocked.contains_key(&r.owner)
    }
}

/// Load, build, graph and select. A fleet that cannot be read at all (PATH, its own build,
/// `--only` naming nothing) is exit code 2; problems of single Kustomizations are collected in
/// [`Loaded::problems`] and the rest is loaded. kustomize's outputs are let go afterwards: only a
/// second load of the same fleet would reuse them ([`load_fleet_keeping_builds`]).
pub async fn load_fleet(settings: &FleetSettings) -> Result<Loaded, AppError> {
    let loaded = load_fleet_keeping_builds(settings).await;
    settings.builder.forget_outputs();
    loaded
}

/// [`load_fleet`], keeping kustomize's outputs for a second load of the same fleet that follows
/// (apply's reload with the cluster's variables runs no kustomize again).
pub async fn load_fleet_keeping_builds(settings: &FleetSettings) -> Result<Loaded, AppError> {
    let started = std::time::Instant::now();
    // A signal abandons the load: running kustomize processes are killed with their groups and
    // the temporary trees removed as the builds are dropped.
    let interrupt = crate::interrupt::token();
    let mut fleet = tokio::select! {
        r = load::load(&settings.load, &settings.builder) => r,
        _ = interrupt.cancelled() => return Err(AppError::Interrupted),
    }
    .map_err(|errs| AppError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    let found = crate::helm::discover(&fleet, &settings.helm);
    fleet.warnings.extend(found.warnings);
    if !found.errors.is_empty() {
        return Err(AppError::Invalid(found.errors));
    }
    let (releases, mut helm_problems) = (found.releases, found.problems);
    // A Kustomization that depends on another waits for that one's readiness, which includes the
    // HelmReleases gating it: edges to those too, so waves and cycles see them.
    let gates: BTreeMap<KsId, Vec<KsId>> = fleet
        .nodes
        .values()
        .map(|n| (n.id.clone(), crate::helm::gates(n, &releases)))
        .collect();
    let mut inputs: Vec<NodeInput> = fleet
        .nodes
        .values()
        .map(|n| {
            let mut depends_on = n.spec.dependencies(&n.id.namespace);
            let gating: Vec<KsId> = depends_on
                .iter()
                .flat_map(|d| gates.get(d).cloned().unwrap_or_default())
                .collect();
            depends_on.extend(gating);
            NodeInput {
                id: n.id.clone(),
                depends_on,
                parent: n.parent.clone(),
                suspended: n.spec.suspend,
                file: n.file.clone(),
            }
        })
        .collect();
    inputs.extend(releases.iter().map(|r| NodeInput {
        id: r.id.clone(),
        depends_on: r.spec.dependencies(&r.id.namespace),
        parent: Some(r.owner.clone()),
        suspended: r.spec.suspend,
        file: r.file.clone(),
    }));
    let graph = Graph::new(inputs);
    let closure = graph
        .select(&settings.only)
        .map_err(|errs| AppError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    // The HelmReleases of the selected Kustomizations come along, with what they depend on.
    let mut all = closure;
    loop {
        let more: Vec<KsId> = releases
            .iter()
            .filter(|r| all.contains(&r.owner) && !all.contains(&r.id))
            .map(|r| r.id.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        let grown = graph
            .select(&more)
            .map_err(|errs| AppError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
        all.extend(grown);
    }
    let (helm_selection, selection): (BTreeSet<KsId>, BTreeSet<KsId>) =
        all.into_iter().partition(|id| id.is_helm_release());
    let mut releases: BTreeMap<KsId, crate::helm::Release> =
        releases.into_iter().map(|r| (r.id.clone(), r)).collect();
    let broken: BTreeSet<KsId> = helm_problems
        .iter()
        .filter_map(|p| p.release.clone())
        .collect();
    helm_problems.extend(
        crate::helm::fetch_charts(
            &fleet.fetcher,
            releases
                .values_mut()
                .filter(|r| helm_selection.contains(&r.id)),
            &broken,
        )
        .await,
    );
    tracing::debug!(
        "loaded {} Kustomizations in {:?}",
        fleet.nodes.len(),
        started.elapsed()
    );
    let mut problems = Problems::collect(&fleet, &graph);
    problems.add_helm(helm_problems);
    Ok(Loaded {
        fleet,
        graph,
        selection,
        releases,
        helm_selection,
        problems,
    })
}

/// The plan's view of every selected HelmRelease, rendered offline by helm when helm and the
/// chart are at hand (a note says why not otherwise).
pub async fn helm_reports(
    loaded: &Loaded,
    settings: &FleetSettings,
) -> BTreeMap<KsId, crate::report::plan::HelmReport> {
    let mut out = BTreeMap::new();
    if loaded.helm_selection.is_empty() {
        return out;
    }
    let helm = crate::helm::render::Helm::detect(settings.helm.helm_bin.as_deref());
    let values = crate::helm::fleet_value_sources(
        &loaded.fleet,
        loaded.helm_selection.iter().map(|id| &loaded.releases[id]),
    );
    // Renders run in parallel (a helm process each), as many at once as kustomize builds.
    let jobs = crate::build::Builder::default_jobs().max(1);
    let reports = futures::stream::iter(loaded.helm_selection.iter())
        .map(|id| {
            let helm = &helm;
            let values = &values;
            async move {
                let r = &loaded.releases[id];
                // A failing one is listed with its failures, not rendered.
                let helm = if loaded.problems.failed.contains(id) {
                    None
                } else {
                    Some(helm)
                };
                (id.clone(), helm_report(r, helm, values, settings).await)
            }
        })
        .buffer_unordered(jobs)
        .collect::<Vec<_>>()
        .await;
    out.extend(reports);
    out
}

async fn helm_report(
    r: &crate::helm::Release,
    helm: Option<&Result<crate::helm::render::Helm, crate::helm::render::RenderError>>,
    values: &BTreeMap<(String, String, String), serde_json::Value>,
    settings: &FleetSettings,
) -> crate::report::plan::HelmReport {
    let id = &r.id;
    let mut rep = crate::report::plan::HelmReport {
        id: r.id.to_string(),
        file: r.file.clone(),
        kustomization: r.owner.to_string(),
        source: r.source.clone(),
        version: r.version.clone(),
        release_name: r.release_name.clone(),
        release_namespace: r.release_namespace.clone(),
        storage_namespace: r.storage_namespace.clone(),
        depends_on: r
            .spec
            .dependencies(&id.namespace)
            .iter()
            .map(|d| d.to_string())
            .collect(),
        suspended: r.spec.suspend,
        ..Default::default()
    };
    match helm {
        None => {}
        Some(Err(e)) => rep.notes.push(format!("not rendered: {e}")),
        Some(Ok(h)) => {
            match crate::helm::install::render_offline(h, settings.builder.kustomize(), values, r)
                .await
            {
                Ok((rendered, notes, _)) => {
                    rep.chart = format!("{}-{}", rendered.chart.0, rendered.chart.1);
                    rep.object_count = rendered.objects.len();
                    for o in &rendered.objects {
                        *rep.kinds
                            .entry(crate::model::object_meta(o).1.to_string())
                            .or_default() += 1;
                        rep.objects.push(crate::model::subject(o));
                    }
                    rep.hooks = rendered
                        .hooks
                        .iter()
                        .map(|h| {
                            format!(
                                "{}/{}: {}",
                                h.record["kind"].as_str().unwrap_or(""),
                                h.record["name"].as_str().unwrap_or(""),
                                h.events().join(",")
                            )
                        })
                        .collect();
                    rep.notes.extend(notes);
                }
                Err(e) => rep.notes.push(format!("not rendered: {e}")),
            }
        }
    }
    rep
}

/// An error for commands that act on a cluster when PATH holds nothing to apply (plan and graph
/// only warn): an empty or mistyped cluster directory must not pass as a successful rollout.
pub fn refuse_empty(loaded: &Loaded, path: &std::path::Path) -> Result<(), AppError> {
    if loaded.fleet.nodes.is_empty()
        && loaded.releases.is_empty()
        && loaded.fleet.failures.is_empty()
    {
        return Err(AppError::Invalid(vec![format!(
            "{}: no Flux Kustomization found: nothing to apply (is this a cluster directory such as clusters/production?)",
            path.display()
        )]));
    }
    Ok(())
}

/// Prints warnings to stderr, one per line.
pub fn print_warnings(fleet: &Fleet) {
    for w in &fleet.warnings {
        eprintln!("warning: {w}");
    }
}
