//! The load stage: finds every Flux Kustomization of a fleet the way Flux meets them. PATH is built
//! like a Kustomization path; every Kustomization found in a build has its own path built in turn
//! (with Flux's overlays and substitution), so children that a parent patches or whose path holds
//! `${CLUSTER}` are found as Flux finds them. `--scan` instead reads every Kustomization in the
//! YAML files under PATH. Sources map to local directories ([`sources`]); those the fleet defines
//! but nothing maps (OCIRepository, GitRepository) are fetched by the sources stage
//! ([`crate::sources`]) once their definition has been found in some build.

pub mod sources;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

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
    /// Extra substituteFrom sources and decryption Secrets (read from a cluster).
    pub cluster_vars: Option<VarIndex>,
    /// How sources are fetched (`--offline`, `--from`, `--registry-mirror`).
    pub fetch: crate::sources::FetchOptions,
    /// Age keys of `--age-key-file`, `SOPS_AGE_KEY_FILE` and `SOPS_AGE_KEY`, used for every
    /// Kustomization with `spec.decryption`, besides its own secretRef's.
    pub age_keys: crate::decrypt::Keyring,
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

impl LoadError {
    /// The Kustomization it belongs to, when it has an identity.
    pub fn ks(&self) -> Option<KsId> {
        match self {
            LoadError::Build { ks, .. }
            | LoadError::PostBuild { ks, .. }
            | LoadError::MissingVarSource { ks, .. }
            | LoadError::Invalid { ks, .. }
            | LoadError::Duplicate { ks, .. }
            | LoadError::Source { ks, .. } => KsId::parse(ks),
            LoadError::PathNotFound(_) | LoadError::Scan { .. } => None,
        }
    }

    /// The file it is about.
    pub fn file(&self) -> String {
        match self {
            LoadError::Build { file, .. }
            | LoadError::PostBuild { file, .. }
            | LoadError::MissingVarSource { file, .. }
            | LoadError::Invalid { file, .. }
            | LoadError::Source { file, .. } => file.clone(),
            LoadError::Duplicate { second, .. } => second.clone(),
            LoadError::PathNotFound(p) => p.display().to_string(),
            LoadError::Scan { path, .. } => path.clone(),
        }
    }
}

/// A stand-in spec for a Kustomization whose spec does not decode: its `dependsOn` (when that
/// part decodes) and `suspend`, so the graph still places it and blocks its dependents.
fn placeholder_spec(spec: &Value) -> KustomizationSpec {
    let mut v = serde_json::json!({
        "interval": "10m",
        "prune": false,
        "sourceRef": {"kind": "GitRepository", "name": "unknown"},
    });
    if let Some(deps) = spec
        .get("dependsOn")
        .filter(|d| serde_json::from_value::<Vec<crate::model::DependsOn>>((*d).clone()).is_ok())
    {
        v["dependsOn"] = deps.clone();
    }
    if let Some(s) = spec.get("suspend").filter(|s| s.is_boolean()) {
        v["suspend"] = s.clone();
    }
    if let Some(r) = spec
        .get("sourceRef")
        .filter(|r| serde_json::from_value::<crate::model::SourceRef>((*r).clone()).is_ok())
    {
        v["sourceRef"] = r.clone();
    }
    serde_json::from_value(v).expect("the placeholder spec decodes")
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
    /// The sources stage of this run: what was fetched, and charts on demand.
    pub fetcher: Arc<crate::sources::Fetcher>,
    /// Every problem found: each failed Kustomization is a node marked `failed`, the rest of the
    /// fleet is loaded as usual.
    pub failures: Vec<LoadError>,
    /// The plain text of every SOPS-encrypted value the fleet's builds decrypted, whatever the
    /// kind of object it went into: masked wherever output appears, as Secret data is.
    pub decrypted: Vec<String>,
    _tmp: crate::interrupt::TempTree,
}

/// A build post-built with its Secret-backed variables masked: (payload, Flux objects).
pub type MaskedBuild = (Vec<Manifest>, Vec<Manifest>);

/// One Kustomization of the fleet.
#[derive(Debug, Clone)]
pub struct Node {
    /// namespace/name.
    pub id: KsId,
    /// The spec (after the parent's build: patches and substitution applied).
    pub spec: KustomizationSpec,
    /// The Kustomization object itself, as its parent's build (or the file) gives it: what
    /// `readyExpr` sees as `self` and `dep`.
    pub object: Manifest,
    /// The file that defines it (for messages).
    pub file: String,
    /// The Kustomization whose build contains it.
    pub parent: Option<KsId>,
    /// Its source, namespace defaulted.
    pub source: SourceKey,
    /// Local directory of the source.
    pub source_dir: PathBuf,
    /// How the source was mapped (None: it could not be).
    pub mapping: Option<Mapping>,
    /// spec.path inside the source (normalised, relative).
    pub rel_path: PathBuf,
    /// kustomize output (its text emptied once loaded, unless the Kustomization has `postBuild`).
    pub raw: Option<RawBuild>,
    /// Variables used.
    pub vars: Vars,
    /// Objects to apply (Flux objects excluded).
    pub objects: Vec<Manifest>,
    /// Flux objects other than Kustomizations: not applied (need a Flux controller).
    pub flux_objects: Vec<Manifest>,
    /// Child Kustomizations found in the build.
    pub children: Vec<KsId>,
    /// It failed to load, build or validate ([`Fleet::failures`] says why): never applied.
    pub failed: bool,
    /// Its SOPS keys (with `spec.decryption`), as its build was decrypted with.
    pub decrypt_keys: Option<crate::decrypt::Keyring>,
}

impl Node {
    /// The directory built.
    pub fn dir(&self) -> PathBuf {
        self.source_dir.join(&self.rel_path)
    }

    /// The plain text of the SOPS-encrypted values its build decrypted: in source files before
    /// the build, and in encrypted objects after it.
    pub fn decrypted_values(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .raw
            .iter()
            .flat_map(|r| r.decrypted.iter().cloned())
            .collect();
        for m in self.objects.iter().chain(&self.flux_objects) {
            out.extend(m.decrypted_values());
        }
        out
    }

    /// Every object of the build (payload, then Flux objects) post-built again with its
    /// Secret-backed variables masked, in the order of [`Node::objects`] then
    /// [`Node::flux_objects`]; None when no variable comes from a Secret.
    pub fn masked_build(&self) -> Option<Result<MaskedBuild, PostBuildError>> {
        let raw = self.raw.as_ref().filter(|_| !self.vars.secret.is_empty())?;
        let masked = self.vars.masked();
        let dir = self.dir();
        Some(
            postbuild::post_build(
                &raw.output,
                &PostBuildOptions {
                    owner: Some(&self.id),
                    spec: Some(&self.spec),
                    vars: &masked,
                    strict: false,
                    strip_origin: raw.strip_origin,
                    origin_map: raw.origin_map.as_ref(),
                    decrypt: self
                        .decrypt_keys
                        .as_ref()
                        .map(|keys| crate::decrypt::DecryptWith { keys, dir: &dir }),
                },
            )
            .map(|objs| objs.into_iter().partition(|m| !is_flux_api(m.meta().0))),
        )
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
        .map(crate::interrupt::TempTree::new)
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
    let fetcher = crate::sources::Fetcher::new(opts.fetch.clone()).map_err(|message| {
        vec![LoadError::Scan {
            path: "sources".into(),
            message,
        }]
    })?;
    let mut loader = Loader {
        opts,
        builder,
        fetcher: Arc::new(fetcher),
        deferred: Vec::new(),
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
    let mut objects: Vec<&Manifest> = loader.root_objects.iter().collect();
    for n in loader.nodes.values() {
        objects.extend(n.flux_objects.iter());
    }
    loader.fetcher.add_objects(objects);
    loader.fetcher.set_secrets(loader.fleet_index());
    for (k, d) in loader.sources.local_dirs() {
        loader.fetcher.map_local(&k, &d);
    }
    loader.finish(&path);
    // Post-built for good: kustomize's output is read again only where `postBuild` can change
    // the objects (substitution; what plan lists as variables), so it is let go elsewhere.
    for n in loader.nodes.values_mut() {
        if let Some(raw) = n.raw.as_mut().filter(|_| n.spec.post_build.is_none()) {
            raw.output = Arc::from("");
        }
    }
    // A Kustomization that fails is found again by every later pass of its parent's build.
    let mut seen = BTreeSet::new();
    loader.errors.retain(|e| seen.insert(e.to_string()));
    for e in &loader.errors {
        if let Some(n) = e.ks().and_then(|k| loader.nodes.get_mut(&k)) {
            n.failed = true;
        }
    }
    let claimed = loader.nodes.values().any(|n| n.dir() == path);
    let unowned = if claimed || opts.scan {
        Vec::new()
    } else {
        loader
            .root_objects
            .iter()
            .filter(|m| !is_flux_api(m.meta().0))
            .cloned()
            .collect()
    };
    if loader.nodes.is_empty() && loader.errors.is_empty() {
        loader.warnings.push(format!(
            "no Flux Kustomization found under {}: the plan is empty",
            display_path(&path)
        ));
    }
    let decrypted: Vec<String> = crate::redact::secret_values(
        &[],
        &loader
            .nodes
            .values()
            .flat_map(Node::decrypted_values)
            .collect::<Vec<_>>(),
    );
    for w in &mut loader.warnings {
        *w = crate::redact::redact(w, &decrypted);
    }
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
        fetcher: loader.fetcher,
        failures: loader.errors,
        decrypted,
        _tmp: tmp,
    })
}

struct Loader<'a> {
    opts: &'a LoadOptions,
    builder: &'a Builder,
    fetcher: Arc<crate::sources::Fetcher>,
    /// Kustomizations waiting for their source to be fetched.
    deferred: Vec<Found>,
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
                decrypt: None,
            },
        )
        .map_err(|source| {
            vec![LoadError::PostBuild {
                ks: "(cluster root)".into(),
                file: shown.clone(),
                source,
            }]
        })?;
        self.sources.add_generators(objs.iter());
        self.map_sync_sources(path, git_root, &objs);
        let found: Vec<Found> = objs
            .iter()
            .filter(|m| m.is_flux_kustomization())
            .map(|m| Found {
                object: m.object(),
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
            // Symlinks are left out, as a Flux artifact leaves them out.
            if !entry.path_is_symlink()
                && p.is_file()
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
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
                all.push(Manifest::new(&d, None));
            }
        }
        self.sources.add_generators(all.iter());
        Ok(())
    }

    /// Turns a found Kustomization object into a node (or reconciles it with a known one). A
    /// Kustomization that cannot be used still becomes a node, marked failed, so the graph shows
    /// it and what it blocks; only one without a namespace (no identity) stays outside.
    fn add_found(&mut self, f: Found, claimer_spec_changed: Option<&mut bool>) {
        let (api, _, ns, name) = object_meta(&f.object);
        let or_unset = |s: &str| {
            if s.is_empty() {
                "?".to_string()
            } else {
                s.to_string()
            }
        };
        let shown_id = format!("{}/{}", or_unset(ns), or_unset(name));
        let invalid = |message: String| LoadError::Invalid {
            ks: shown_id.clone(),
            file: f.file.clone(),
            message,
        };
        if ns.is_empty() {
            self.errors.push(invalid(
                "metadata.namespace is not set (Flux never defaults a namespace)".into(),
            ));
            return;
        }
        // The API server would refuse the name; flux-order must refuse it before writing, or the
        // payload would be applied and its inventory rejected.
        if let Some(why) = crate::model::invalid_kustomization_name(name)
            .or_else(|| crate::model::invalid_namespace(ns))
        {
            self.errors.push(invalid(why));
            return;
        }
        let id = KsId::new(ns, name);
        let spec_value = f.object.get("spec").cloned().unwrap_or(Value::Null);
        // The API server drops fields its schema does not have, with a warning: so does this.
        for (field, close) in crate::model::unknown_fields(&spec_value) {
            let hint = close
                .map(|c| {
                    format!(
                        "; did you mean {}?",
                        field
                            .rsplit_once('.')
                            .map_or(c.to_string(), |(p, _)| format!("{p}.{c}"))
                    )
                })
                .unwrap_or_default();
            let warning = format!(
                "{}: Kustomization {shown_id}: unknown field \"{field}\" (ignored, as the API server drops it{hint})",
                f.file
            );
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
        }
        let version = api.rsplit('/').next().unwrap_or("");
        let parsed = match version {
            "v1" | "v1beta2" => {
                if version == "v1beta2" {
                    self.warnings.push(format!(
                        "{}: Kustomization {shown_id} uses the deprecated {api}; read as kustomize.toolkit.fluxcd.io/v1",
                        f.file
                    ));
                }
                serde_path_to_error::deserialize(spec_value.clone()).map_err(|e| {
                    let path = e.path().to_string();
                    let field = if path == "." {
                        "spec".to_string()
                    } else {
                        format!("spec.{path}")
                    };
                    invalid(format!("{field}: {}", e.inner()))
                })
            }
            other => Err(invalid(format!(
                "unsupported apiVersion {api} ({other}); use kustomize.toolkit.fluxcd.io/v1"
            ))),
        };
        let spec: KustomizationSpec = match parsed {
            Ok(s) => s,
            Err(e) => {
                let spec = placeholder_spec(&spec_value);
                self.add_failed(&id, spec, &f, e);
                return;
            }
        };
        if let Some(existing) = self.nodes.get_mut(&id) {
            if existing.parent.is_none() && f.parent.is_some() && f.parent.as_ref() != Some(&id) {
                // The bootstrap Kustomization claims what PATH holds; its version is the one applied.
                existing.parent = f.parent.clone();
                existing.object = Manifest::new(&f.object, None);
                if existing.spec != spec {
                    existing.spec = spec;
                    existing.raw = None;
                    existing.file = f.file;
                    if let Some(c) = claimer_spec_changed {
                        *c = true;
                    }
                }
            } else if existing.spec != spec {
                existing.failed = true;
                self.errors.push(LoadError::Duplicate {
                    ks: id.to_string(),
                    first: existing.file.clone(),
                    second: f.file,
                });
            }
            return;
        }
        let source = spec.source_key(ns);
        let (source_dir, mapping) =
            match self.sources.resolve(&source) {
                Ok(r) => r,
                Err(SourceError::Unmapped { .. })
                    if matches!(
                        source.kind.as_str(),
                        "OCIRepository" | "GitRepository" | "Bucket"
                    ) && !self.sources.was_fetched(&source) =>
                {
                    // Fetched once its definition is known (see `fetch_deferred`).
                    if !self.deferred.iter().any(|d| {
                        d.file == f.file && object_meta(&d.object) == object_meta(&f.object)
                    }) {
                        self.deferred.push(f);
                    }
                    return;
                }
                Err(e) => {
                    let err = LoadError::Source {
                        ks: id.to_string(),
                        file: f.file.clone(),
                        source: e,
                    };
                    self.add_failed(&id, spec, &f, err);
                    return;
                }
            };
        let path_str = spec.path.clone().unwrap_or_default();
        let problem = match sources::safe_rel(&path_str) {
            None => Err(format!(
                "spec.path '{path_str}' escapes the source root of {source}"
            )),
            Some(rel_path) => {
                let full = source_dir.join(&rel_path);
                // As in a Flux artifact, a symlink on the way does not exist (or leads out of
                // the root).
                let confined = crate::build::confine::resolve(&source_dir, &rel_path);
                match (confined, full.canonicalize()) {
                    (Err(why), _) => Err(format!(
                        "kustomization path not found: spec.path '{path_str}' in {source}: {why}"
                    )),
                    (Ok(_), Ok(c)) if c.is_dir() => Ok(rel_path),
                    _ => {
                        let hint = if mapping == Mapping::GitRoot
                            && !source_dir.join(".git").exists()
                        {
                            format!(
                                "; {} is not in a git work tree, so {source} maps to it: pass --source {source}=REPO_ROOT",
                                display_path(&source_dir)
                            )
                        } else {
                            String::new()
                        };
                        Err(format!(
                            "kustomization path not found: spec.path '{path_str}' is not a directory in {source} ({}){hint}",
                            display_path(&full)
                        ))
                    }
                }
            }
        };
        let rel_path = match problem {
            Ok(r) => r,
            Err(message) => {
                let err = invalid(message);
                self.add_failed(&id, spec, &f, err);
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.source_dir = source_dir;
                    n.mapping = Some(mapping);
                }
                return;
            }
        };
        self.nodes.insert(
            id.clone(),
            Node {
                id,
                spec,
                object: Manifest::new(&f.object, None),
                file: f.file,
                parent: f.parent,
                source,
                source_dir,
                mapping: Some(mapping),
                rel_path,
                raw: None,
                vars: Vars::default(),
                objects: Vec::new(),
                flux_objects: Vec::new(),
                children: Vec::new(),
                failed: false,
                decrypt_keys: None,
            },
        );
    }

    /// Records `error` and keeps the Kustomization as a failed node (never built), unless one of
    /// that name is known already (then that one is marked failed).
    fn add_failed(&mut self, id: &KsId, spec: KustomizationSpec, f: &Found, error: LoadError) {
        if let Some(existing) = self.nodes.get_mut(id) {
            // Found again on a later discovery round: reported once.
            if !existing.failed {
                existing.failed = true;
                self.errors.push(error);
            }
            return;
        }
        self.errors.push(error);
        let source = spec.source_key(&id.namespace);
        let rel_path = PathBuf::from(spec.path.as_deref().unwrap_or("").trim_start_matches("./"));
        self.nodes.insert(
            id.clone(),
            Node {
                id: id.clone(),
                spec,
                object: Manifest::new(&f.object, None),
                file: f.file.clone(),
                parent: f.parent.clone(),
                source,
                source_dir: PathBuf::new(),
                mapping: None,
                rel_path,
                raw: None,
                vars: Vars::default(),
                objects: Vec::new(),
                flux_objects: Vec::new(),
                children: Vec::new(),
                failed: true,
                decrypt_keys: None,
            },
        );
    }

    /// Builds until no new Kustomization appears.
    async fn discover(&mut self) {
        let mut built_ok = std::mem::take(&mut self.post_built);
        let mut failed: BTreeSet<KsId> = BTreeSet::new();
        // Builds whose SOPS sources no key decrypts yet, with the keys tried: the Secret of their
        // `spec.decryption.secretRef` may come with a build of a later round.
        let mut awaiting_keys: BTreeMap<KsId, (String, LoadError)> = BTreeMap::new();
        loop {
            // 0. Fetch the sources of Kustomizations waiting for one.
            let fetched = self.fetch_deferred(false).await;
            // 1. Build every node not built yet, in parallel.
            let index = self.var_index();
            let pending: Vec<(KsId, Option<crate::decrypt::Keyring>)> = self
                .nodes
                .values()
                .filter(|n| n.raw.is_none() && !n.failed && !failed.contains(&n.id))
                .map(|n| (n.id.clone(), self.keyring(&n.id, &index).ok().flatten()))
                .filter(|(id, keys)| {
                    awaiting_keys.get(id).is_none_or(|(tried, _)| {
                        keys.as_ref().map(crate::decrypt::Keyring::fingerprint)
                            != Some(tried.clone())
                    })
                })
                .collect();
            for (id, _) in &pending {
                built_ok.remove(id);
                awaiting_keys.remove(id);
            }
            let requests = pending
                .iter()
                .map(|(id, keys)| {
                    let n = &self.nodes[id];
                    BuildRequest {
                        root: n.source_dir.clone(),
                        rel: n.rel_path.clone(),
                        spec: n.spec.clone(),
                        decrypt: keys.clone(),
                    }
                })
                .collect();
            let t = std::time::Instant::now();
            let results = self.builder.build_many(requests).await;
            let built = results.len();
            tracing::debug!(
                "built {} Kustomizations in {:?}",
                results.len(),
                t.elapsed()
            );
            for ((id, keys), r) in pending.into_iter().zip(results) {
                let n = self.nodes.get_mut(&id).expect("pending node exists");
                match r {
                    Ok(raw) => n.raw = Some(raw),
                    Err(source) => {
                        let waits = matches!(
                            &source,
                            BuildError::Decrypt {
                                source: crate::decrypt::SopsError::Key(_),
                                ..
                            }
                        );
                        let error = LoadError::Build {
                            ks: id.to_string(),
                            file: n.file.clone(),
                            path: format!(
                                "{} ({})",
                                display_path(&n.dir()),
                                n.spec.path.as_deref().unwrap_or("./")
                            ),
                            source,
                        };
                        if waits && let Some(keys) = keys {
                            awaiting_keys.insert(id, (keys.fingerprint(), error));
                            continue;
                        }
                        failed.insert(id.clone());
                        n.failed = true;
                        self.errors.push(error);
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
                        object: m.object(),
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
            if before == after && !changed && !fetched && built == 0 {
                if self.deferred.is_empty() {
                    // No key came for them.
                    for (id, (_, error)) in std::mem::take(&mut awaiting_keys) {
                        if let Some(n) = self.nodes.get_mut(&id) {
                            n.failed = true;
                        }
                        self.errors.push(error);
                    }
                    break;
                }
                // Sources nobody defines: report them, then settle what remains.
                self.fetch_deferred(true).await;
            }
        }
    }

    /// Fetches the sources of deferred Kustomizations whose definition is now known (all of
    /// them when `last`: undefined ones become errors). Returns whether any was settled.
    async fn fetch_deferred(&mut self, last: bool) -> bool {
        if self.deferred.is_empty() {
            return false;
        }
        let mut objects: Vec<&Manifest> = self.root_objects.iter().collect();
        for n in self.nodes.values() {
            objects.extend(n.flux_objects.iter());
            objects.extend(n.objects.iter());
        }
        self.fetcher.add_objects(objects);
        self.fetcher.set_secrets(self.fleet_index());
        let keys: BTreeSet<SourceKey> = self
            .deferred
            .iter()
            .filter_map(|f| {
                let (_, _, ns, _) = object_meta(&f.object);
                let spec: KustomizationSpec =
                    serde_json::from_value(f.object.get("spec").cloned()?).ok()?;
                Some(spec.source_key(ns))
            })
            .filter(|k| last || k.kind == "Bucket" || self.fetcher.object(k).is_some())
            .collect();
        if keys.is_empty() {
            return false;
        }
        let fetcher = self.fetcher.clone();
        // A handful at a time: registries rate-limit, and each git fetch is a process.
        let results: Vec<(SourceKey, Result<PathBuf, crate::sources::FetchError>)> =
            futures::stream::iter(keys.into_iter().map(|k| {
                let fetcher = fetcher.clone();
                async move {
                    let r = fetcher.fetch_source(&k).await.map(|f| f.dir);
                    (k, r)
                }
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        for (k, r) in results {
            self.sources.set_fetched(k, r);
        }
        for f in std::mem::take(&mut self.deferred) {
            self.add_found(f, None);
        }
        true
    }

    /// The fleet's own sync source needs no flag: the source of the sync Kustomization (from
    /// gotk-sync.yaml: a Kustomization whose path is PATH's tail) or of a FluxInstance's
    /// `spec.sync`, when GitRepository or OCIRepository, maps to the checkout holding PATH at
    /// the sync path's base.
    fn map_sync_sources(&mut self, path: &Path, git_root: &Path, objs: &[Manifest]) {
        let mut found: Vec<(SourceKey, String, String)> = Vec::new();
        for m in objs {
            let (api, kind, ns, name) = m.meta();
            if kind == "FluxInstance" && crate::model::api_group(api) == "fluxcd.controlplane.io" {
                let object = m.object();
                let Some(sync) = object.pointer("/spec/sync") else {
                    continue;
                };
                let get = |k: &str| {
                    sync.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let sname = Some(get("name"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(ns.to_string());
                found.push((
                    SourceKey {
                        kind: get("kind"),
                        namespace: ns.into(),
                        name: sname,
                    },
                    get("path"),
                    format!("FluxInstance {ns}/{name}"),
                ));
            } else if m.is_flux_kustomization() {
                let object = m.object();
                let get = |p: &str| {
                    object
                        .pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let sns = Some(get("/spec/sourceRef/namespace"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(ns.to_string());
                found.push((
                    SourceKey {
                        kind: get("/spec/sourceRef/kind"),
                        namespace: sns,
                        name: get("/spec/sourceRef/name"),
                    },
                    get("/spec/path"),
                    format!("Kustomization {ns}/{name}"),
                ));
            }
        }
        let defined: BTreeSet<SourceKey> = objs
            .iter()
            .map(|m| {
                let (_, kind, ns, name) = m.meta();
                SourceKey {
                    kind: kind.into(),
                    namespace: ns.into(),
                    name: name.into(),
                }
            })
            .collect();
        for (key, sync_path, by) in found {
            let from_instance = by.starts_with("FluxInstance");
            // gotk-sync.yaml defines the sync Kustomization and its source side by side.
            if !matches!(key.kind.as_str(), "GitRepository" | "OCIRepository")
                || self.sources.is_flagged(&key)
                || (!from_instance
                    && (!defined.contains(&key) || sync_path.trim_start_matches("./").is_empty()))
            {
                continue;
            }
            let Some(rel) = sources::safe_rel(&sync_path) else {
                continue;
            };
            let base = if rel.as_os_str().is_empty() {
                Some(path.to_path_buf())
            } else if path.ends_with(&rel) {
                path.ancestors()
                    .nth(rel.components().count())
                    .map(Path::to_path_buf)
            } else {
                None
            };
            // A FluxInstance names the sync source even when its path is not PATH's.
            let Some(base) = base.or_else(|| from_instance.then(|| git_root.to_path_buf())) else {
                continue;
            };
            if key == sources::default_source() {
                continue; // the git work tree, as always
            }
            if !self.sources.is_synced(&key) {
                self.warnings.push(format!(
                    "{key} is the fleet's own sync source ({by}, path '{sync_path}'): read from the checkout {} instead of fetching it (--source {key}=DIR overrides)",
                    display_path(&base)
                ));
                self.sources.map_sync(key, base);
            }
        }
    }

    /// Every Secret of the fleet (the cluster's under them, when connected): what the sources
    /// stage reads `secretRef` Secrets from, as it always did.
    fn fleet_index(&self) -> VarIndex {
        let mut index = self.opts.cluster_vars.clone().unwrap_or_default();
        let secret = |(_, kind, _): (&str, &str, &str)| kind == "Secret";
        index.add_wanted(&self.root_objects, secret);
        for n in self.nodes.values() {
            index.add_wanted(&n.objects, secret);
        }
        index
    }

    /// ConfigMaps and Secrets substituteFrom can read: the cluster's (when connected), overridden
    /// by those the rollout itself applies (before any dependent runs). An object flux-order will
    /// not apply — in a suspended Kustomization, or directly under PATH with no Kustomization
    /// applying it — is not read from the fleet: Flux would read the cluster. Only those some
    /// Kustomization reads (`substituteFrom`, `decryption.secretRef`) are indexed.
    fn var_index(&self) -> VarIndex {
        let mut wanted: HashSet<(&str, &str, &str)> = HashSet::new();
        for n in self.nodes.values() {
            let ns = n.id.namespace.as_str();
            if let Some(pb) = &n.spec.post_build {
                for r in &pb.substitute_from {
                    wanted.insert((ns, &r.kind, &r.name));
                }
            }
            if let Some(name) = n
                .spec
                .decryption
                .as_ref()
                .and_then(|d| d.pointer("/secretRef/name"))
                .and_then(Value::as_str)
            {
                wanted.insert((ns, "Secret", name));
            }
        }
        let wanted = |key: (&str, &str, &str)| wanted.contains(&key);
        let mut index = self.opts.cluster_vars.clone().unwrap_or_default();
        // Suspended, or applied by a suspended parent (at any height): never applied.
        let applied = |n: &Node| {
            let mut cur = Some(n);
            for _ in 0..=self.nodes.len() {
                match cur {
                    None => return true,
                    Some(c) if c.spec.suspend => return false,
                    Some(c) => cur = c.parent.as_ref().and_then(|p| self.nodes.get(p)),
                }
            }
            true
        };
        for n in self.nodes.values().filter(|n| applied(n)) {
            index.add_wanted(&n.objects, wanted);
        }
        index
    }

    /// The age keys for a Kustomization with `spec.decryption`: the global ones and those of its
    /// `secretRef` (keys ending in `.agekey`), from the fleet or, when connected, the cluster.
    /// None without `spec.decryption`.
    fn keyring(
        &self,
        id: &KsId,
        index: &VarIndex,
    ) -> Result<Option<crate::decrypt::Keyring>, String> {
        let n = &self.nodes[id];
        let Some(dec) = n.spec.decryption.as_ref() else {
            return Ok(None);
        };
        let provider = dec.get("provider").and_then(Value::as_str).unwrap_or("");
        if provider != "sops" {
            return Err(format!(
                "spec.decryption.provider '{provider}' is not supported (Flux supports sops)"
            ));
        }
        let mut keys = self.opts.age_keys.clone();
        if let Some(name) = dec
            .pointer("/secretRef/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            match index.get(&id.namespace, "Secret", name) {
                Some(data) => {
                    for (k, v) in data.iter().filter(|(k, _)| k.ends_with(".agekey")) {
                        keys.add_text(v, &format!("Secret/{}/{name}[{k}]", id.namespace))
                            .map_err(|e| format!("spec.decryption.secretRef: {e}"))?;
                    }
                }
                None if self.opts.cluster_vars.is_some() => {
                    return Err(format!(
                        "spec.decryption.secretRef: Secret {}/{name} not found in the fleet nor in the cluster",
                        id.namespace
                    ));
                }
                None => {}
            }
        }
        Ok(Some(keys))
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
            let keys = match self.keyring(&id, &index) {
                Ok(k) => k,
                Err(message) => {
                    if strict {
                        self.errors.push(LoadError::Invalid {
                            ks: id.to_string(),
                            file: n.file.clone(),
                            message,
                        });
                    }
                    continue;
                }
            };
            let dir = n.dir();
            let opts = |strict_subst: bool| PostBuildOptions {
                decrypt: keys
                    .as_ref()
                    .map(|keys| crate::decrypt::DecryptWith { keys, dir: &dir }),
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
                    let (mut flux, mut payload): (Vec<_>, Vec<_>) =
                        objs.into_iter().partition(|m| is_flux_api(m.meta().0));
                    // Kept for the whole run: no spare capacity.
                    payload.shrink_to_fit();
                    flux.shrink_to_fit();
                    n.objects = payload;
                    n.flux_objects = flux;
                    n.vars = vars;
                    n.decrypt_keys = keys;
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
        self.sources
            .add_generators(self.nodes.values().flat_map(|n| n.flux_objects.iter()));
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
            for m in &n.objects {
                for (path, v) in crate::model::huge_integers(&m.object()) {
                    self.warnings.push(format!(
                        "{}: Kustomization {id}: {} {path}: {v} is an integer beyond 64 bits, which kustomize and the API server keep only as a float (precision lost); quote it to keep it as text",
                        n.file,
                        m.subject()
                    ));
                }
            }
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
            .filter(|m| m.is_flux_kustomization())
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
