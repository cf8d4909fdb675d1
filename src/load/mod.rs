//! The load stage: finds every Flux Kustomization of a fleet the way Flux meets them. PATH is built
//! like a Kustomization path; every Kustomization found in a build has its own path built in turn
//! (with Flux's overlays and substitution), so children that a parent patches or whose path holds
//! `${CLUSTER}` are found as Flux finds them. `--scan` instead reads every Kustomization in the
//! YAML files under PATH. Sources map to local directories ([`sources`]).

pub mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::build::postbuild::{self, Manifest, PostBuildError, PostBuildOptions, VarIndex, Vars};
use crate::build::{BuildError, BuildRequest, Builder, RawBuild};
use crate::model::{KsId, KustomizationSpec, SourceKey, is_flux_api, object_meta};
pub use sources::{Mapping, SourceError, Sources};

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The cluster directory (or, with `scan`, the tree to scan).
    pub path: PathBuf,
    /// Take every Kustomization in the YAML files under `path` instead of building it.
    pub scan: bool,
    /// `--source KIND/NS/NAME=DIR` mappings.
    pub sources: BTreeMap<SourceKey, PathBuf>,
    /// Fail on undefined variables without default (apply/diff, `--strict-substitute`).
    pub strict: bool,
    /// Extra substituteFrom sources (read from a cluster).
    pub cluster_vars: Option<VarIndex>,
}

/// A load error; each names the file and, where there is one, the Kustomization.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// PATH does not exist or is not a directory.
    #[error("{0}: no such directory")]
    PathNotFound(PathBuf),
    /// A build failed.
    #[error("{file}: Kustomization {ks}: building {path}: {source}")]
    Build {
        /// `namespace/name`, or `PATH` for the cluster root.
        ks: String,
        /// The file that defines it.
        file: String,
        /// The directory built.
        path: String,
        /// Why.
        source: BuildError,
    },
    /// A post-build step failed.
    #[error("{file}: Kustomization {ks}: {source}")]
    PostBuild {
        /// `namespace/name`.
        ks: String,
        /// The file that defines it.
        file: String,
        /// Why.
        source: PostBuildError,
    },
    /// A non-optional substituteFrom source is missing (strict).
    #[error(
        "{file}: Kustomization {ks}: substitute from '{source_ref}' error: not found in the fleet{hint}"
    )]
    MissingVarSource {
        /// `namespace/name`.
        ks: String,
        /// The file that defines it.
        file: String,
        /// `ConfigMap/name` or `Secret/name`.
        source_ref: String,
        /// What to do.
        hint: &'static str,
    },
    /// The Kustomization object is invalid.
    #[error("{file}: Kustomization {ks}: {message}")]
    Invalid {
        /// `namespace/name`.
        ks: String,
        /// The file that defines it.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The same namespace/name defined twice with different specs.
    #[error("Kustomization {ks} is defined twice with different specs: in {first} and in {second}")]
    Duplicate {
        /// `namespace/name`.
        ks: String,
        /// First file.
        first: String,
        /// Second file.
        second: String,
    },
    /// The source could not be mapped.
    #[error("{file}: Kustomization {ks}: {source}")]
    Source {
        /// `namespace/name`.
        ks: String,
        /// The file that defines it.
        file: String,
        /// Why.
        source: SourceError,
    },
    /// Reading PATH (with --scan) failed.
    #[error("{path}: {message}")]
    Scan {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// A fleet: every Kustomization reached from PATH, built.
#[derive(Debug)]
pub struct Fleet {
    /// PATH as given.
    pub path: PathBuf,
    /// Kustomizations by identity.
    pub nodes: BTreeMap<KsId, Node>,
    /// Objects at PATH that are not Flux objects and that no Kustomization applies.
    pub unowned: Vec<Manifest>,
    /// Things the user should know (never silent).
    pub warnings: Vec<String>,
    _tmp: tempfile::TempDir,
}

/// One Kustomization of the fleet.
#[derive(Debug, Clone)]
pub struct Node {
    /// namespace/name.
    pub id: KsId,
    /// The spec (after the parent's build: patches and substitution applied).
    pub spec: KustomizationSpec,
    /// The Kustomization object itself, as its parent's build (or the file) gives it: what
    /// `readyExpr` sees as `self` and `dep`.
    pub object: Value,
    /// The file that defines it (for messages).
    pub file: String,
    /// The Kustomization whose build contains it.
    pub parent: Option<KsId>,
    /// Its source, namespace defaulted.
    pub source: SourceKey,
    /// Local directory of the source.
    pub source_dir: PathBuf,
    /// How the source was mapped.
    pub mapping: Mapping,
    /// spec.path inside the source (normalised, relative).
    pub rel_path: PathBuf,
    /// kustomize output.
    pub raw: Option<RawBuild>,
    /// Variables used.
    pub vars: Vars,
    /// Objects to apply (Flux objects excluded).
    pub objects: Vec<Manifest>,
    /// Flux objects other than Kustomizations: not applied (need a Flux controller).
    pub flux_objects: Vec<Manifest>,
    /// Child Kustomizations found in the build.
    pub children: Vec<KsId>,
}

impl Node {
    /// The directory built.
    pub fn dir(&self) -> PathBuf {
        self.source_dir.join(&self.rel_path)
    }
}

/// Shows a path relative to the current directory when it is below it.
pub fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| c.canonicalize().ok());
    match cwd.as_deref().and_then(|c| p.strip_prefix(c).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => p.display().to_string(),
    }
}

/// Loads, builds and validates a fleet. Returns every error found, not just the first.
pub async fn load(opts: &LoadOptions, builder: &Builder) -> Result<Fleet, Vec<LoadError>> {
    let path = opts
        .path
        .canonicalize()
        .map_err(|_| vec![LoadError::PathNotFound(opts.path.clone())])?;
    if !path.is_dir() {
        return Err(vec![LoadError::PathNotFound(opts.path.clone())]);
    }
    let tmp = tempfile::Builder::new()
        .prefix("flux-order-sources-")
        .tempdir()
        .map_err(|e| {
            vec![LoadError::Scan {
                path: "temporary directory".into(),
                message: e.to_string(),
            }]
        })?;
    let git_root = sources::git_root(&path);
    let mut flags = BTreeMap::new();
    for (k, d) in &opts.sources {
        let c = d.canonicalize().map_err(|_| {
            vec![LoadError::Scan {
                path: d.display().to_string(),
                message: format!("--source {k}: no such directory"),
            }]
        })?;
        flags.insert(k.clone(), c);
    }
    let mut loader = Loader {
        opts,
        builder,
        sources: Sources::new(flags, git_root.clone(), tmp.path().to_path_buf()),
        nodes: BTreeMap::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        root_objects: Vec::new(),
        post_built: BTreeSet::new(),
    };
    if opts.scan {
        loader.scan_files(&path)?;
    } else {
        loader.load_root(&path, &git_root).await?;
    }
    loader.discover().await;
    loader.finish(&path);
    if !loader.errors.is_empty() {
        return Err(loader.errors);
    }
    let claimed = loader.nodes.values().any(|n| n.dir() == path);
    let unowned = if claimed || opts.scan {
        Vec::new()
    } else {
        loader
            .root_objects
            .iter()
            .filter(|m| !is_flux_api(object_meta(&m.object).0))
            .cloned()
            .collect()
    };
    if !unowned.is_empty() {
        loader.warnings.push(format!(
            "{} object(s) directly under {} belong to no Kustomization (Flux's bootstrap Kustomization would apply them): not applied",
            unowned.len(),
            display_path(&path)
        ));
    }
    Ok(Fleet {
        path: opts.path.clone(),
        nodes: loader.nodes,
        unowned,
        warnings: loader.warnings,
        _tmp: tmp,
    })
}

struct Loader<'a> {
    opts: &'a LoadOptions,
    builder: &'a Builder,
    sources: Sources,
    nodes: BTreeMap<KsId, Node>,
    errors: Vec<LoadError>,
    warnings: Vec<String>,
    root_objects: Vec<Manifest>,
    /// Kustomizations post-built with their current variables.
    post_built: BTreeSet<KsId>,
}

/// A Kustomization object found in a build or a file, not yet resolved.
struct Found {
    object: Value,
    file: String,
    parent: Option<KsId>,
}

impl Loader<'_> {
    async fn load_root(&mut self, path: &Path, git_root: &Path) -> Result<(), Vec<LoadError>> {
        // Build PATH inside the source that holds it, so `../` references resolve.
        let root = match self.sources.resolve(&sources::default_source()) {
            Ok((d, _)) if path.starts_with(&d) => d,
            _ => git_root.to_path_buf(),
        };
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let shown = display_path(path);
        let raw = self
            .builder
            .build_root(&root, &rel)
            .await
            .map_err(|source| {
                vec![LoadError::Build {
                    ks: "(cluster root)".into(),
                    file: shown.clone(),
                    path: shown.clone(),
                    source,
                }]
            })?;
        let no_vars = Vars::default();
        let objs = postbuild::post_build(
            &raw.output,
            &PostBuildOptions {
                owner: None,
                spec: None,
                vars: &no_vars,
                strict: false,
                strip_origin: raw.strip_origin,
                origin_map: raw.origin_map.as_ref(),
            },
        )
        .map_err(|source| {
            vec![LoadError::PostBuild {
                ks: "(cluster root)".into(),
                file: shown.clone(),
                source,
            }]
        })?;
        self.sources.add_generators(objs.iter().map(|m| &m.object));
        let found: Vec<Found> = objs
            .iter()
            .filter(|m| postbuild::is_flux_kustomization(&m.object))
            .map(|m| Found {
                object: m.object.clone(),
                file: origin_file(path, m),
                parent: None,
            })
            .collect();
        self.root_objects = objs;
        for f in found {
            self.add_found(f, None);
        }
        Ok(())
    }

    fn scan_files(&mut self, path: &Path) -> Result<(), Vec<LoadError>> {
        let mut files = Vec::new();
        for entry in ignore::WalkBuilder::new(path)
            .standard_filters(false)
            .hidden(true)
            .build()
        {
            let entry = entry.map_err(|e| {
                vec![LoadError::Scan {
                    path: display_path(path),
                    message: e.to_string(),
                }]
            })?;
            let p = entry.path();
            if p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            {
                files.push(p.to_path_buf());
            }
        }
        files.sort();
        let mut all = Vec::new();
        for f in files {
            let shown = display_path(&f);
            let text = std::fs::read_to_string(&f).map_err(|e| {
                vec![LoadError::Scan {
                    path: shown.clone(),
                    message: e.to_string(),
                }]
            })?;
            let docs = match crate::yaml::from_multi(&text) {
                Ok(d) => d,
                Err(e) => {
                    self.errors.push(LoadError::Scan {
                        path: shown,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for d in docs {
                if postbuild::is_flux_kustomization(&d) {
                    self.add_found(
                        Found {
                            object: d.clone(),
                            file: shown.clone(),
                            parent: None,
                        },
                        None,
                    );
                }
                all.push(d);
            }
        }
        self.sources.add_generators(all.iter());
        Ok(())
    }

    /// Turns a found Kustomization object into a node (or reconciles it with a known one).
    fn add_found(&mut self, f: Found, claimer_spec_changed: Option<&mut bool>) {
        let (api, _, ns, name) = object_meta(&f.object);
        let shown_id = format!("{}/{}", if ns.is_empty() { "?" } else { ns }, name);
        let invalid = |message: String| LoadError::Invalid {
            ks: shown_id.clone(),
            file: f.file.clone(),
            message,
        };
        let version = api.rsplit('/').next().unwrap_or("");
        match version {
            "v1" => {}
            "v1beta2" => self.warnings.push(format!(
                "{}: Kustomization {shown_id} uses the deprecated {api}; read as kustomize.toolkit.fluxcd.io/v1",
                f.file
            )),
            other => {
                self.errors.push(invalid(format!("unsupported apiVersion {api} ({other}); use kustomize.toolkit.fluxcd.io/v1")));
                return;
            }
        }
        if ns.is_empty() {
            self.errors.push(invalid(
                "metadata.namespace is not set (Flux never defaults a namespace)".into(),
            ));
            return;
        }
        let id = KsId::new(ns, name);
        let spec_value = f.object.get("spec").cloned().unwrap_or(Value::Null);
        let spec: KustomizationSpec = match serde_path_to_error::deserialize(spec_value) {
            Ok(s) => s,
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." {
                    "spec".to_string()
                } else {
                    format!("spec.{path}")
                };
                self.errors.push(invalid(format!("{field}: {}", e.inner())));
                return;
            }
        };
        if let Some(existing) = self.nodes.get_mut(&id) {
            if existing.parent.is_none() && f.parent.is_some() && f.parent.as_ref() != Some(&id) {
                // The bootstrap Kustomization claims what PATH holds; its version is the one applied.
                existing.parent = f.parent.clone();
                existing.object = f.object.clone();
                if existing.spec != spec {
                    existing.spec = spec;
                    existing.raw = None;
                    existing.file = f.file;
                    if let Some(c) = claimer_spec_changed {
                        *c = true;
                    }
                }
            } else if existing.spec != spec {
                self.errors.push(LoadError::Duplicate {
                    ks: id.to_string(),
                    first: existing.file.clone(),
                    second: f.file,
                });
            }
            return;
        }
        let source = spec.source_key(ns);
        let (source_dir, mapping) = match self.sources.resolve(&source) {
            Ok(r) => r,
            Err(source) => {
                self.errors.push(LoadError::Source {
                    ks: id.to_string(),
                    file: f.file,
                    source,
                });
                return;
            }
        };
        let path_str = spec.path.clone().unwrap_or_default();
        let Some(rel_path) = sources::safe_rel(&path_str) else {
            self.errors.push(invalid(format!(
                "spec.path '{path_str}' escapes the source root of {source}"
            )));
            return;
        };
        let full = source_dir.join(&rel_path);
        match full.canonicalize() {
            Ok(c) if !c.starts_with(&source_dir) => {
                self.errors.push(invalid(format!(
                    "spec.path '{path_str}' escapes the source root of {source} through a symlink"
                )));
                return;
            }
            Ok(c) if c.is_dir() => {}
            _ => {
                let hint = if mapping == Mapping::GitRoot && !source_dir.join(".git").exists() {
                    format!(
                        "; {} is not in a git work tree, so {source} maps to it: pass --source {source}=REPO_ROOT",
                        display_path(&source_dir)
                    )
                } else {
                    String::new()
                };
                self.errors.push(invalid(format!(
                    "kustomization path not found: spec.path '{path_str}' is not a directory in {source} ({}){hint}",
                    display_path(&full)
                )));
                return;
            }
        }
        self.nodes.insert(
            id.clone(),
            Node {
                id,
                spec,
                object: f.object,
                file: f.file,
                parent: f.parent,
                source,
                source_dir,
                mapping,
                rel_path,
                raw: None,
                vars: Vars::default(),
                objects: Vec::new(),
                flux_objects: Vec::new(),
                children: Vec::new(),
            },
        );
    }

    /// Builds until no new Kustomization appears.
    async fn discover(&mut self) {
        let mut built_ok = std::mem::take(&mut self.post_built);
        let mut failed: BTreeSet<KsId> = BTreeSet::new();
        loop {
            // 1. Build every node not built yet, in parallel.
            let pending: Vec<KsId> = self
                .nodes
                .values()
                .filter(|n| n.raw.is_none() && !failed.contains(&n.id))
                .map(|n| n.id.clone())
                .collect();
            for id in &pending {
                built_ok.remove(id);
            }
            let requests = pending
                .iter()
                .map(|id| {
                    let n = &self.nodes[id];
                    BuildRequest {
                        root: n.source_dir.clone(),
                        rel: n.rel_path.clone(),
                        spec: n.spec.clone(),
                    }
                })
                .collect();
            let t = std::time::Instant::now();
            let results = self.builder.build_many(requests).await;
            tracing::debug!(
                "built {} Kustomizations in {:?}",
                results.len(),
                t.elapsed()
            );
            for (id, r) in pending.into_iter().zip(results) {
                let n = self.nodes.get_mut(&id).expect("pending node exists");
                match r {
                    Ok(raw) => n.raw = Some(raw),
                    Err(source) => {
                        failed.insert(id.clone());
                        self.errors.push(LoadError::Build {
                            ks: id.to_string(),
                            file: n.file.clone(),
                            path: format!(
                                "{} ({})",
                                display_path(&n.dir()),
                                n.spec.path.as_deref().unwrap_or("./")
                            ),
                            source,
                        });
                    }
                }
            }
            // 2. Post-build everything with the variables known so far.
            let t = std::time::Instant::now();
            self.post_build_all(false, &mut built_ok);
            self.post_built = built_ok.clone();
            tracing::debug!("post-built in {:?}", t.elapsed());
            // 3. Children.
            let mut found = Vec::new();
            for n in self.nodes.values() {
                for m in n.objects_with_children() {
                    found.push(Found {
                        object: m.object.clone(),
                        file: origin_file(&n.dir(), m),
                        parent: Some(n.id.clone()),
                    });
                }
            }
            let before: BTreeSet<KsId> = self.nodes.keys().cloned().collect();
            let mut changed = false;
            for f in found {
                let (_, _, ns, name) = object_meta(&f.object);
                if f.parent
                    .as_ref()
                    .is_some_and(|p| p.namespace == ns && p.name == name)
                {
                    continue; // the bootstrap Kustomization contains itself
                }
                self.add_found(f, Some(&mut changed));
            }
            for n in self.nodes.values_mut() {
                n.children.clear();
            }
            let links: Vec<(KsId, KsId)> = self
                .nodes
                .values()
                .filter_map(|n| n.parent.clone().map(|p| (p, n.id.clone())))
                .collect();
            for (p, c) in links {
                if let Some(pn) = self.nodes.get_mut(&p) {
                    pn.children.push(c);
                }
            }
            let after: BTreeSet<KsId> = self.nodes.keys().cloned().collect();
            if before == after && !changed {
                break;
            }
        }
    }

    /// ConfigMaps and Secrets substituteFrom can read: the cluster's (when connected), overridden
    /// by the fleet's own (which the rollout applies before any dependent runs).
    fn var_index(&self) -> VarIndex {
        let mut index = self.opts.cluster_vars.clone().unwrap_or_default();
        index.add(&self.root_objects);
        for n in self.nodes.values() {
            index.add(&n.objects);
        }
        index
    }

    fn post_build_all(&mut self, strict: bool, done: &mut BTreeSet<KsId>) {
        let index = self.var_index();
        let ids: Vec<KsId> = self.nodes.keys().cloned().collect();
        for id in ids {
            let n = &self.nodes[&id];
            let Some(raw) = n.raw.clone() else { continue };
            let vars = match postbuild::resolve_vars(&id, &n.spec, &index) {
                Ok(v) => v,
                Err(source) => {
                    if strict {
                        self.errors.push(LoadError::PostBuild {
                            ks: id.to_string(),
                            file: n.file.clone(),
                            source,
                        });
                    }
                    continue;
                }
            };
            // Already post-built with the same variables: only a strict pass over a build that
            // substitutes can give a different answer.
            let substitutes = !vars.values.is_empty()
                || n.spec
                    .post_build
                    .as_ref()
                    .and_then(|p| p.substitute_strategy.as_deref())
                    == Some("Always");
            if done.contains(&id) && vars.values == n.vars.values && (!strict || !substitutes) {
                continue;
            }
            let spec = n.spec.clone();
            let opts = |strict_subst: bool| PostBuildOptions {
                owner: Some(&id),
                spec: Some(&spec),
                vars: &vars,
                strict: strict_subst,
                strip_origin: raw.strip_origin,
                origin_map: raw.origin_map.as_ref(),
            };
            // Undefined variables fail only when asked (apply, diff, --strict-substitute) and
            // every substituteFrom source is known; otherwise the final pass warns about them.
            let enforce = strict && self.opts.strict && vars.missing.is_empty();
            let result = postbuild::post_build(&raw.output, &opts(enforce));
            if strict
                && !enforce
                && result.is_ok()
                && let Err(e) = postbuild::post_build(&raw.output, &opts(true))
            {
                self.warnings.push(format!(
                    "{}: Kustomization {id}: {e} (an empty string is substituted; apply fails on this)",
                    n.file
                ));
            }
            let file = n.file.clone();
            match result {
                Ok(objs) => {
                    let n = self.nodes.get_mut(&id).expect("node exists");
                    let (flux, payload): (Vec<_>, Vec<_>) = objs
                        .into_iter()
                        .partition(|m| is_flux_api(object_meta(&m.object).0));
                    n.objects = payload;
                    n.flux_objects = flux;
                    n.vars = vars;
                    done.insert(id.clone());
                }
                Err(source) => {
                    if strict {
                        self.errors.push(LoadError::PostBuild {
                            ks: id.to_string(),
                            file,
                            source,
                        });
                    }
                }
            }
        }
        let generators: Vec<Value> = self
            .nodes
            .values()
            .flat_map(|n| n.flux_objects.iter().map(|m| m.object.clone()))
            .collect();
        self.sources.add_generators(generators.iter());
    }

    /// The final, strict-as-requested post-build, and the checks that need the whole fleet.
    /// The final pass (`strict` = report errors): syntax errors are errors in any mode; undefined
    /// variables are errors only under `opts.strict`, warnings otherwise.
    fn finish(&mut self, _path: &Path) {
        let mut done = std::mem::take(&mut self.post_built);
        self.post_build_all(true, &mut done);
        let ids: Vec<KsId> = self.nodes.keys().cloned().collect();
        for id in ids {
            let n = &self.nodes[&id];
            for m in &n.vars.missing {
                if self.opts.strict && self.opts.cluster_vars.is_some() {
                    self.errors.push(LoadError::MissingVarSource {
                        ks: id.to_string(),
                        file: n.file.clone(),
                        source_ref: m.clone(),
                        hint: " nor in the cluster",
                    });
                } else {
                    self.warnings.push(format!(
                        "{}: Kustomization {id}: substituteFrom {m} is not in the fleet; only the cluster can supply it (apply resolves it there)",
                        n.file
                    ));
                }
            }
            for d in &n.spec.depends_on {
                if let Some(Err(e)) = d
                    .ready_expr
                    .as_deref()
                    .map(crate::health::cel_expr::ReadyExpr::compile)
                {
                    self.errors.push(LoadError::Invalid {
                        ks: id.to_string(),
                        file: n.file.clone(),
                        message: format!("spec.dependsOn[{}].readyExpr: {e}", d.name),
                    });
                }
            }
            if n.spec.decryption.is_some() {
                self.warnings.push(format!(
                    "{}: Kustomization {id}: spec.decryption (SOPS) is not supported yet; apply refuses this Kustomization",
                    n.file
                ));
            }
            if n.spec.kube_config.is_some() {
                self.warnings.push(format!(
                    "{}: Kustomization {id}: spec.kubeConfig targets another cluster; apply refuses it",
                    n.file
                ));
            }
        }
    }
}

impl Node {
    fn objects_with_children(&self) -> impl Iterator<Item = &Manifest> {
        self.flux_objects
            .iter()
            .filter(|m| postbuild::is_flux_kustomization(&m.object))
    }
}

/// The file an object came from: `dir` joined with its origin annotation, else `dir` itself.
fn origin_file(dir: &Path, m: &Manifest) -> String {
    match &m.origin {
        Some(o) => display_path(Path::new(&postbuild::lexical_join(
            &dir.to_string_lossy(),
            o,
        ))),
        None => display_path(dir),
    }
}
