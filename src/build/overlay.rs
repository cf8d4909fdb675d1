//! Prepares the directory kustomize builds, as Flux's generator does, without ever writing into the
//! user's repo: a "shadow" tree in a temp dir mirrors the source root with symlinks, except along
//! the Kustomization's path, where real directories hold a rewritten kustomization.yaml (the
//! user's, with Flux's overlay fields merged in), or one generated from the YAML files found.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::model::KustomizationSpec;

/// The file names kustomize recognises, in its order of preference.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Why the build directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Filesystem error.
    #[error("{}: {source}", crate::load::display_path(.path))]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The user's kustomization file does not parse.
    #[error("{}: invalid kustomization file: {message}", crate::load::display_path(.path))]
    BadKustomization {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A YAML file that Flux would list does not decode as Kubernetes YAML.
    #[error(
        "failed to decode Kubernetes YAML from {}: {message}",
        crate::load::display_path(.path)
    )]
    BadManifest {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// spec.components names a path that is not local and relative.
    #[error("component path '{0}' must be local and relative")]
    ComponentNotLocal(String),
    /// spec.components names a path that does not exist.
    #[error("component path '{0}' not found (set spec.ignoreMissingComponents to drop it)")]
    ComponentMissing(String),
    /// A file reference that Flux's rooted filesystem refuses (see [`super::confine`]).
    #[error(
        "security: {}: {field} '{value}': {reason} (source root {}); Flux refuses to build it",
        .file.display(),
        .root.display()
    )]
    OutsideRoot {
        /// The kustomization file holding the reference, relative to the source root.
        file: PathBuf,
        /// The field (`configMapGenerator[0].files`, `resources`, …).
        field: String,
        /// The reference as written.
        value: String,
        /// The source root.
        root: PathBuf,
        /// Why it is refused.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OverlayError + '_ {
    move |source| OverlayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kustomization file in `dir`, if any (a symlink is not one: a Flux artifact has none).
pub fn find_kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
}

/// What was prepared: the directory to build, and whether flux-order added origin annotations
/// (which it then strips from the output).
#[derive(Debug)]
pub struct Prepared {
    /// The directory to pass to kustomize.
    pub build_dir: PathBuf,
    /// The source path it shadows, relative to the source root.
    pub source_rel: PathBuf,
    /// True when `config.kubernetes.io/origin` annotations were requested only to learn which file
    /// each object came from, and must be removed from the output.
    pub strip_origin: bool,
    /// Whether its objects carry [`BUILD_LABEL`]; when not, every object comes from a file inside
    /// the slot and a batched build attributes it by its origin path.
    pub labelled: bool,
    /// The files kustomize-controller would decrypt before this build, if SOPS-encrypted.
    pub sops: Vec<super::confine::SopsSource>,
}

/// A shadow of one source root, shared by every build of a load: it starts as a directory of
/// symlinks to the root's entries; a directory on the way to a Kustomization's path becomes a real
/// directory of symlinks (once); each build then gets its own *slot*, a new sibling directory next
/// to its path (`<dir>.flux-order-<n>`) holding symlinks to the path's entries and the rewritten
/// kustomization file. Original paths are never shadowed, so no build sees another's rewritten
/// file, and relative references (`../base`) resolve as in the source.
#[derive(Debug)]
pub struct ShadowRoot {
    source: PathBuf,
    dir: PathBuf,
    materialized: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    slots: std::sync::atomic::AtomicUsize,
    /// Every directory is a real one (only files are symlinks): see [`ShadowRoot::deep`].
    deep: bool,
}

impl ShadowRoot {
    /// Mirrors `source` into the new directory `dir`.
    pub fn new(source: &Path, dir: PathBuf) -> Result<Self, OverlayError> {
        Self::mirror(source, dir, false)
    }

    /// Mirrors `source` into the new directory `dir` with real directories all the way down and
    /// only files as symlinks (`.git` left out), so that every path a build can name, by any
    /// route, stays inside the shadow: a file can then be replaced for this shadow's builds alone
    /// (a decrypted SOPS file).
    pub fn deep(source: &Path, dir: PathBuf) -> Result<Self, OverlayError> {
        Self::mirror(source, dir, true)
    }

    fn mirror(source: &Path, dir: PathBuf, deep: bool) -> Result<Self, OverlayError> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        link_tree(source, &dir, deep, &|_| false)?;
        let mut done = std::collections::HashSet::new();
        done.insert(PathBuf::new());
        Ok(ShadowRoot {
            source: source.to_path_buf(),
            dir,
            materialized: std::sync::Mutex::new(done),
            slots: std::sync::atomic::AtomicUsize::new(0),
            deep,
        })
    }

    /// Where a build prepared in this shadow reads the source file `rel` (relative to the source
    /// root): in the shadow, and in the build's slot when it is under the built path.
    pub fn views(&self, prepared: &Prepared, rel: &Path) -> Vec<PathBuf> {
        let mut out = vec![self.dir.join(rel)];
        if let Ok(inside) = rel.strip_prefix(&prepared.source_rel) {
            out.push(prepared.build_dir.join(inside));
        }
        out
    }

    /// Turns the shadow of `rel` (a directory of the source) into a real directory of symlinks,
    /// with all its ancestors.
    fn materialize(&self, rel: &Path) -> Result<PathBuf, OverlayError> {
        if self.deep {
            return Ok(self.dir.join(rel));
        }
        let mut done = self.materialized.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = PathBuf::new();
        for part in rel
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
        {
            cur.push(part);
            if done.contains(&cur) {
                continue;
            }
            let dst = self.dir.join(&cur);
            fs::remove_file(&dst).map_err(io_err(&dst))?;
            fs::create_dir(&dst).map_err(io_err(&dst))?;
            link_tree(&self.source.join(&cur), &dst, false, &|_| false)?;
            done.insert(cur.clone());
        }
        Ok(self.dir.join(rel))
    }

    /// A fresh build slot for `rel`: every entry of the source path but its kustomization file.
    fn slot(&self, rel: &Path) -> Result<PathBuf, OverlayError> {
        let n = self
            .slots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = self.materialize(parent)?;
                parent.join(format!("{}.flux-order-{n}", name.to_string_lossy()))
            }
            // The source root itself: `..` cannot leave it, so any directory will do.
            _ => self.dir.with_file_name(format!(
                "{}-root-{n}",
                self.dir.file_name().unwrap_or_default().to_string_lossy()
            )),
        };
        fs::create_dir(&slot).map_err(io_err(&slot))?;
        link_tree(&self.source.join(rel), &slot, self.deep, &|n| {
            KUSTOMIZATION_FILES.iter().any(|k| n == *k)
        })?;
        Ok(slot)
    }
}

/// Symlinks every entry of `src` into `dst` (but those `skip` names); `deep`: directories become
/// real directories mirrored in turn (`.git` left out), and only files are symlinks.
fn link_tree(
    src: &Path,
    dst: &Path,
    deep: bool,
    skip: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> Result<(), OverlayError> {
    for entry in fs::read_dir(src).map_err(io_err(src))? {
        let entry = entry.map_err(io_err(src))?;
        let name = entry.file_name();
        if skip(&name) {
            continue;
        }
        let target = dst.join(&name);
        // `file_type` does not follow symlinks: the source's own symlinks stay symlinks.
        if deep && entry.file_type().map_err(io_err(&entry.path()))?.is_dir() {
            if name == ".git" {
                continue;
            }
            fs::create_dir(&target).map_err(io_err(&target))?;
            link_tree(&entry.path(), &target, true, &|_| false)?;
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), &target).map_err(io_err(&target))?;
    }
    Ok(())
}

/// The patterns source-controller and `flux build` exclude by default (gitignore syntax).
const DEFAULT_IGNORES: &[&str] = &[
    ".git/",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];

/// The source's ignore rules: Flux's defaults plus every `.sourceignore` from the source root
/// down to `dir` (each applying below its own directory).
fn ignore_rules(root: &Path, dir: &Path) -> ignore::gitignore::Gitignore {
    let mut b = ignore::gitignore::GitignoreBuilder::new(root);
    for p in DEFAULT_IGNORES {
        let _ = b.add_line(None, p);
    }
    let mut cur = Some(dir);
    let mut files = Vec::new();
    while let Some(d) = cur {
        files.push(d.join(".sourceignore"));
        if d == root {
            break;
        }
        cur = d.parent().filter(|p| p.starts_with(root));
    }
    for f in files.into_iter().rev().filter(|f| f.is_file()) {
        let _ = b.add(f);
    }
    b.build()
        .unwrap_or_else(|_| ignore::gitignore::Gitignore::empty())
}

/// Flux's generator: every `.yaml`/`.yml` file under `dir` (each must decode as Kubernetes YAML),
/// and every sub-directory holding a kustomization file as one resource (not descended into);
/// paths the source's ignore rules exclude are left out, as in the artifact Flux builds.
fn scan_resources(root: &Path, dir: &Path) -> Result<Vec<String>, OverlayError> {
    let mut out = Vec::new();
    let rules = ignore_rules(root, dir);
    scan_into(dir, dir, &rules, &mut out)?;
    Ok(out)
}

fn scan_into(
    base: &Path,
    dir: &Path,
    rules: &ignore::gitignore::Gitignore,
    out: &mut Vec<String>,
) -> Result<(), OverlayError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    // Go's filepath.Walk visits in lexical order.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(base).unwrap_or(&path);
        let rel_str = format!("./{}", rel.display());
        // A Flux artifact has no symlinks (source-controller archives regular files and
        // directories only): the generator never sees one.
        if entry.file_type().map_err(io_err(&path))?.is_symlink() {
            continue;
        }
        let ft = fs::metadata(&path).map_err(io_err(&path))?;
        if path.starts_with(rules.path())
            && rules
                .matched_path_or_any_parents(&path, ft.is_dir())
                .is_ignore()
        {
            continue;
        }
        if ft.is_dir() {
            if find_kustomization_file(&path).is_some() {
                out.push(rel_str);
            } else {
                scan_into(base, &path, rules, out)?;
            }
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "yaml" && ext != "yml" {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let docs = crate::yaml::from_multi(&text).map_err(|e| OverlayError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for d in &docs {
            if d.get("apiVersion").is_none() || d.get("kind").is_none() {
                return Err(OverlayError::BadManifest {
                    path: path.clone(),
                    message: "missing apiVersion or kind".into(),
                });
            }
        }
        out.push(rel_str);
    }
    Ok(())
}

/// The YAML files Flux's generator would list for `root/rel`, when that directory has no
/// kustomization file and nothing to list but plain files (no sub-directory with its own
/// kustomization): then kustomize would only concatenate them. None otherwise.
pub fn plain_resources(root: &Path, rel: &Path) -> Result<Option<Vec<PathBuf>>, OverlayError> {
    let dir = root.join(rel);
    if find_kustomization_file(&dir).is_some() {
        return Ok(None);
    }
    let listed = scan_resources(root, &dir)?;
    let files: Vec<PathBuf> = listed
        .iter()
        .map(|r| dir.join(r.trim_start_matches("./")))
        .collect();
    Ok(files.iter().all(|f| f.is_file()).then_some(files))
}

/// Prepares the source path `rel` for a build under the Flux overlay of `spec` (None for the
/// cluster root, which is built as it is) in a fresh slot of `shadow`.
pub fn prepare(
    shadow: &ShadowRoot,
    rel: &Path,
    spec: Option<&KustomizationSpec>,
    build_label: Option<usize>,
) -> Result<Prepared, OverlayError> {
    let root = shadow.source.as_path();
    let src_dir = root.join(rel);
    let build_dir = shadow.slot(rel)?;
    let mut kus: Map<String, Value> = match find_kustomization_file(&src_dir) {
        Some(file) => {
            let text = fs::read_to_string(&file).map_err(io_err(&file))?;
            let v: Value = if text.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                crate::yaml::from_str(&text).map_err(|e| OverlayError::BadKustomization {
                    path: file.clone(),
                    message: e.to_string(),
                })?
            };
            match v {
                Value::Object(m) => m,
                Value::Null => Map::new(),
                _ => {
                    return Err(OverlayError::BadKustomization {
                        path: file,
                        message: "not a mapping".into(),
                    });
                }
            }
        }
        None => {
            let resources = scan_resources(root, &src_dir)?;
            let mut m = Map::new();
            m.insert(
                "apiVersion".into(),
                json!("kustomize.config.k8s.io/v1beta1"),
            );
            m.insert("kind".into(), json!("Kustomization"));
            if resources.is_empty() {
                m.insert("namespace".into(), json!("_placeholder"));
            } else {
                m.insert("resources".into(), json!(resources));
            }
            m
        }
    };
    if let Some(spec) = spec {
        merge_flux_fields(&mut kus, spec, &src_dir)?;
    }
    // Every file this build can read must be inside the source root, as Flux enforces.
    let kus_file = match find_kustomization_file(&src_dir) {
        Some(f) => rel.join(f.file_name().unwrap_or_default()),
        None => rel.join("(generated kustomization.yaml)"),
    };
    let sops = super::confine::check(root, rel, &kus_file, &kus)?;
    let has_resources = kus
        .get("resources")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if !has_resources && !kus.contains_key("buildMetadata") && spec.is_some() {
        // Flux sets this to avoid kustomize's "kustomization.yaml is empty" error.
        kus.insert("buildMetadata".into(), json!(["originAnnotations"]));
    }
    let wants_origin = kus
        .get("buildMetadata")
        .and_then(Value::as_array)
        .is_some_and(|b| b.iter().any(|x| x == "originAnnotations"));
    let mut strip_origin = false;
    if !wants_origin {
        let bm = kus.entry("buildMetadata").or_insert_with(|| json!([]));
        if let Some(a) = bm.as_array_mut() {
            a.push(json!("originAnnotations"));
            strip_origin = true;
        }
    }
    let labelled = build_label.is_some() && !self_contained(&src_dir, &kus, 0);
    if let (Some(n), true) = (build_label, labelled) {
        // Marks this build's objects so that a batched build can be split again; only
        // metadata.labels is touched, and post-build removes it. Not needed (and it costs ~15 %
        // of kustomize's work) when every object comes from a file inside the path.
        array_field(&mut kus, "labels").push(json!({
            "pairs": {BUILD_LABEL: n.to_string()},
            "includeSelectors": false,
            "includeTemplates": false,
        }));
    }
    let text = crate::yaml::to_string(&Value::Object(kus)).map_err(|e| {
        OverlayError::BadKustomization {
            path: src_dir.clone(),
            message: e.to_string(),
        }
    })?;
    let file = build_dir.join("kustomization.yaml");
    fs::write(&file, text).map_err(io_err(&file))?;
    Ok(Prepared {
        build_dir,
        source_rel: rel.to_path_buf(),
        strip_origin,
        labelled,
        sops,
    })
}

/// Whether every object a build of `dir` (with kustomization `kus`) produces comes from a file
/// or generator inside `dir`: resources and components are local paths without `..`, recursively,
/// and nothing else produces objects. Conservative: anything unusual is "no".
fn self_contained(dir: &Path, kus: &Map<String, Value>, depth: usize) -> bool {
    const PRODUCERS_ELSEWHERE: [&str; 3] = ["helmCharts", "generators", "transformers"];
    if depth > 8 || PRODUCERS_ELSEWHERE.iter().any(|k| kus.contains_key(*k)) {
        return false;
    }
    let entries = ["resources", "components", "bases"]
        .iter()
        .filter_map(|k| kus.get(*k))
        .flat_map(|v| v.as_array().cloned().unwrap_or_default());
    for e in entries {
        let Some(r) = e.as_str() else { return false };
        let p = Path::new(r);
        if r.contains("://")
            || r.contains('@')
            || p.is_absolute()
            || p.components().any(|c| c == Component::ParentDir)
        {
            return false;
        }
        let target = dir.join(p);
        if target.is_dir() {
            let Some(file) = find_kustomization_file(&target) else {
                return false;
            };
            let Ok(text) = fs::read_to_string(&file) else {
                return false;
            };
            let Ok(Value::Object(sub)) = crate::yaml::from_str::<Value>(&text) else {
                return false;
            };
            if !self_contained(&target, &sub, depth + 1) {
                return false;
            }
        } else if !target.is_file() {
            return false;
        }
    }
    true
}

/// The label that marks each object with the build it belongs to (removed after the build).
pub const BUILD_LABEL: &str = "flux-order.dev/build";

impl ShadowRoot {
    /// A new directory at the top of the shadow for an aggregate kustomization, with `resources`
    /// naming each of `dirs` relative to it (and origin annotations on, to map objects back to
    /// their files). Returns the directory.
    pub fn batch(&self, dirs: &[&Path]) -> Result<PathBuf, OverlayError> {
        let n = self
            .slots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join(format!("flux-order-batch-{n}"));
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        let resources: Vec<String> = dirs
            .iter()
            .map(|d| format!("../{}", d.strip_prefix(&self.dir).unwrap_or(d).display()))
            .collect();
        let kus = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
            "buildMetadata": ["originAnnotations"],
        });
        let text = crate::yaml::to_string(&kus).map_err(|e| OverlayError::BadKustomization {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let file = dir.join("kustomization.yaml");
        fs::write(&file, text).map_err(io_err(&file))?;
        Ok(dir)
    }

    /// The shadow's own directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `text` (kustomize's message) with every path inside this shadow turned back into the
    /// source path it stands for: the shadow root and root slots become the source root, and a
    /// slot `<dir>.flux-order-<n>` its directory.
    pub fn unshadow(&self, text: &str) -> String {
        // Source paths show relative to the current directory where they can.
        let shown = crate::load::display_path(&self.source);
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|c| c.canonicalize().ok());
        let prefix = if cwd.as_deref() == Some(self.source.as_path()) {
            String::new()
        } else {
            format!("{shown}/")
        };
        let path_end = |t: &str| {
            t.find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ':' | ','))
                .unwrap_or(t.len())
        };
        let render = |tail: &str| {
            let parts: Vec<&str> = tail
                .split('/')
                .filter(|p| !p.is_empty())
                .map(|p| match p.rsplit_once(".flux-order-") {
                    Some((name, n)) if n.bytes().all(|b| b.is_ascii_digit()) => name,
                    _ => p,
                })
                .collect();
            if parts.is_empty() {
                shown.clone()
            } else {
                format!("{prefix}{}", parts.join("/"))
            }
        };
        let mut text = text.to_string();
        // The shadow (with its root slots `srcN-root-M`), then the source itself: kustomize
        // resolves the shadow's symlinks, so both appear.
        let shadow = self.dir.to_string_lossy().into_owned();
        let source = self.source.to_string_lossy().into_owned();
        for (base, slots) in [(shadow, true), (source, false)] {
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            while let Some(at) = rest.find(base.as_str()) {
                let mut after = &rest[at + base.len()..];
                if slots && let Some(r) = after.strip_prefix("-root-") {
                    after = r.trim_start_matches(|c: char| c.is_ascii_digit());
                }
                if !(after.is_empty() || after.starts_with('/') || path_end(after) == 0) {
                    // Another name that merely starts the same way.
                    out.push_str(&rest[..at + base.len()]);
                    rest = after;
                    continue;
                }
                out.push_str(&rest[..at]);
                let end = path_end(after);
                out.push_str(&render(&after[..end]));
                rest = &after[end..];
            }
            out.push_str(rest);
            text = out;
        }
        text
    }

    /// `to` relative to `from` (both inside the shadow), e.g. `../../flux-order-batch-3`.
    pub fn relative(&self, from: &Path, to: &Path) -> String {
        let a: Vec<_> = from
            .strip_prefix(&self.dir)
            .unwrap_or(from)
            .components()
            .collect();
        let b: Vec<_> = to
            .strip_prefix(&self.dir)
            .unwrap_or(to)
            .components()
            .collect();
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let mut out: Vec<String> = vec!["..".to_string(); a.len() - common];
        out.extend(
            b[common..]
                .iter()
                .map(|c| c.as_os_str().to_string_lossy().into_owned()),
        );
        out.join("/")
    }
}

/// Merges the Flux overlay fields into a kustomization, in Flux's order and with Flux's rules:
/// namespace/prefix/suffix override, patches and components append, images merge by name,
/// buildMetadata replaces.
fn merge_flux_fields(
    kus: &mut Map<String, Value>,
    spec: &KustomizationSpec,
    src_dir: &Path,
) -> Result<(), OverlayError> {
    if let Some(ns) = &spec.target_namespace {
        kus.insert("namespace".into(), json!(ns));
    }
    if let Some(p) = &spec.name_prefix {
        kus.insert("namePrefix".into(), json!(p));
    }
    if let Some(s) = &spec.name_suffix {
        kus.insert("nameSuffix".into(), json!(s));
    }
    if !spec.patches.is_empty() {
        let list = array_field(kus, "patches");
        for p in &spec.patches {
            let mut entry = Map::new();
            entry.insert("patch".into(), json!(p.patch));
            if let Some(t) = &p.target {
                entry.insert("target".into(), t.clone());
            }
            list.push(Value::Object(entry));
        }
    }
    if !spec.components.is_empty() {
        let mut keep = Vec::new();
        for c in &spec.components {
            let p = Path::new(c);
            if p.is_absolute() || c.contains("://") {
                return Err(OverlayError::ComponentNotLocal(c.clone()));
            }
            if !src_dir.join(p).exists() {
                if spec.ignore_missing_components {
                    continue;
                }
                return Err(OverlayError::ComponentMissing(c.clone()));
            }
            keep.push(json!(c));
        }
        array_field(kus, "components").extend(keep);
    }
    if !spec.images.is_empty() {
        let list = array_field(kus, "images");
        for img in &spec.images {
            let existing = list
                .iter_mut()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(&img.name));
            match existing.and_then(Value::as_object_mut) {
                Some(e) => {
                    if let Some(n) = &img.new_name {
                        e.insert("newName".into(), json!(n));
                    }
                    if img.new_tag.is_some() || img.digest.is_some() {
                        e.remove("newTag");
                        e.remove("digest");
                        if let Some(t) = &img.new_tag {
                            e.insert("newTag".into(), json!(t));
                        }
                        if let Some(d) = &img.digest {
                            e.insert("digest".into(), json!(d));
                        }
                    }
                }
                None => list.push(serde_json::to_value(img).unwrap_or(Value::Null)),
            }
        }
    }
    if let Some(bm) = &spec.build_metadata {
        kus.insert("buildMetadata".into(), json!(bm));
    }
    Ok(())
}

fn array_field<'a>(kus: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = kus.entry(key).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    match v {
        Value::Array(a) => a,
        _ => unreachable!("just set to an array"),
    }
}
