//! Maps a Kustomization's `sourceRef` to a local directory: `--source KIND/NS/NAME=DIR`, the git
//! work tree holding PATH for the bootstrap `GitRepository/flux-system/flux-system`, and
//! `ExternalArtifact`s emulated from the fleet's ArtifactGenerators (their copy rules assemble a
//! temporary artifact directory, as Flux's source-watcher would), the fleet's own sync source (the
//! checkout holding PATH), and sources fetched by the sources stage ([`crate::sources`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::model::SourceKey;

/// The source that flux bootstrap creates and that maps to the git work tree by default.
pub fn default_source() -> SourceKey {
    SourceKey {
        kind: "GitRepository".into(),
        namespace: "flux-system".into(),
        name: "flux-system".into(),
    }
}

/// The root of the git work tree holding `path`, else `path` itself.
pub fn git_root(path: &Path) -> PathBuf {
    let mut cur = Some(path);
    while let Some(dir) = cur {
        if dir.join(".git").exists() {
            return dir.to_path_buf();
        }
        cur = dir.parent();
    }
    path.to_path_buf()
}

/// How a source was mapped (shown by `plan`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// From `--source`.
    Flag,
    /// The git work tree holding PATH (or PATH when not in git).
    GitRoot,
    /// Assembled from an ArtifactGenerator.
    ArtifactGenerator,
    /// The fleet's own sync source (gotk-sync.yaml, a FluxInstance's spec.sync): the checkout
    /// holding PATH, at the sync path's base.
    SyncSource,
    /// Fetched (or read from the cache or a `--from` bundle) by the sources stage.
    Fetched,
}

/// A source that could not be mapped or emulated.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No mapping for this source.
    #[error("source {key} is not available locally; map it with --source {key}=DIR")]
    Unmapped {
        /// The source.
        key: SourceKey,
    },
    /// The sources stage could not fetch it.
    #[error("{0}")]
    Fetch(crate::sources::FetchError),
    /// ArtifactGenerator emulation failed.
    #[error("ArtifactGenerator {generator}: artifact '{artifact}': {message}")]
    Generator {
        /// `namespace/name` of the generator.
        generator: String,
        /// Artifact name.
        artifact: String,
        /// What went wrong.
        message: String,
    },
}

/// One output artifact of an ArtifactGenerator found in the fleet.
#[derive(Debug, Clone)]
struct GeneratorArtifact {
    generator: String,
    namespace: String,
    /// alias → source key
    sources: BTreeMap<String, SourceKey>,
    spec: Value,
}

/// Resolves sources to directories.
#[derive(Debug)]
pub struct Sources {
    flags: BTreeMap<SourceKey, PathBuf>,
    git_root: PathBuf,
    generators: BTreeMap<SourceKey, GeneratorArtifact>,
    emulated: BTreeMap<SourceKey, PathBuf>,
    sync: BTreeMap<SourceKey, PathBuf>,
    fetched: BTreeMap<SourceKey, Result<PathBuf, crate::sources::FetchError>>,
    tmp: PathBuf,
}

impl Sources {
    /// `flags` from `--source`, `git_root` for the default source, `tmp` for emulated artifacts.
    pub fn new(flags: BTreeMap<SourceKey, PathBuf>, git_root: PathBuf, tmp: PathBuf) -> Self {
        Sources {
            flags,
            git_root,
            generators: BTreeMap::new(),
            emulated: BTreeMap::new(),
            sync: BTreeMap::new(),
            fetched: BTreeMap::new(),
            tmp,
        }
    }

    /// Whether `--source` maps `key`.
    pub fn is_flagged(&self, key: &SourceKey) -> bool {
        self.flags.contains_key(key)
    }

    /// Maps the fleet's own sync source to the checkout directory `dir`.
    pub fn map_sync(&mut self, key: SourceKey, dir: PathBuf) {
        self.sync.insert(key, dir);
    }

    /// Whether `key` is mapped as a sync source.
    pub fn is_synced(&self, key: &SourceKey) -> bool {
        self.sync.contains_key(key)
    }

    /// Records what the sources stage made of `key`.
    pub fn set_fetched(&mut self, key: SourceKey, r: Result<PathBuf, crate::sources::FetchError>) {
        self.fetched.insert(key, r);
    }

    /// Whether the sources stage was already asked for `key`.
    pub fn was_fetched(&self, key: &SourceKey) -> bool {
        self.fetched.contains_key(key)
    }

    /// Local directories of sources (flags, sync sources, the default), for chart lookups.
    pub fn local_dirs(&self) -> Vec<(SourceKey, PathBuf)> {
        let mut out: Vec<(SourceKey, PathBuf)> = self
            .sync
            .iter()
            .chain(self.flags.iter())
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        if !self.flags.contains_key(&default_source()) && !self.sync.contains_key(&default_source())
        {
            out.push((default_source(), self.git_root.clone()));
        }
        out
    }

    /// Records the ArtifactGenerators among `objects` (source.extensions.fluxcd.io).
    pub fn add_generators<'a>(
        &mut self,
        objects: impl IntoIterator<Item = &'a crate::build::postbuild::Manifest>,
    ) {
        for m in objects {
            let (api, kind, ns, name) = m.meta();
            if kind != "ArtifactGenerator"
                || crate::model::api_group(api) != "source.extensions.fluxcd.io"
            {
                continue;
            }
            let obj = &m.object();
            let mut sources = BTreeMap::new();
            for s in obj
                .pointer("/spec/sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let get = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let src_ns = Some(get("namespace"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| ns.to_string());
                sources.insert(
                    get("alias"),
                    SourceKey {
                        kind: get("kind"),
                        namespace: src_ns,
                        name: get("name"),
                    },
                );
            }
            for a in obj
                .pointer("/spec/artifacts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(aname) = a.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let key = SourceKey {
                    kind: "ExternalArtifact".into(),
                    namespace: ns.into(),
                    name: aname.into(),
                };
                self.generators.insert(
                    key,
                    GeneratorArtifact {
                        generator: format!("{ns}/{name}"),
                        namespace: ns.into(),
                        sources: sources.clone(),
                        spec: a.clone(),
                    },
                );
            }
        }
    }

    /// The directory of `key`, and how it was mapped.
    pub fn resolve(&mut self, key: &SourceKey) -> Result<(PathBuf, Mapping), SourceError> {
        if let Some(d) = self.flags.get(key) {
            return Ok((d.clone(), Mapping::Flag));
        }
        if let Some(d) = self.sync.get(key) {
            return Ok((d.clone(), Mapping::SyncSource));
        }
        if *key == default_source() {
            return Ok((self.git_root.clone(), Mapping::GitRoot));
        }
        match self.fetched.get(key) {
            Some(Ok(d)) => return Ok((d.clone(), Mapping::Fetched)),
            Some(Err(e)) => return Err(SourceError::Fetch(e.clone())),
            None => {}
        }
        if let Some(d) = self.emulated.get(key) {
            return Ok((d.clone(), Mapping::ArtifactGenerator));
        }
        if key.kind == "ExternalArtifact"
            && let Some(g) = self.generators.get(key).cloned()
        {
            let dir = self.emulate(key, &g)?;
            self.emulated.insert(key.clone(), dir.clone());
            return Ok((dir, Mapping::ArtifactGenerator));
        }
        Err(SourceError::Unmapped { key: key.clone() })
    }

    fn emulate(&mut self, key: &SourceKey, g: &GeneratorArtifact) -> Result<PathBuf, SourceError> {
        let fail = |message: String| SourceError::Generator {
            generator: g.generator.clone(),
            artifact: key.name.clone(),
            message,
        };
        let out = self
            .tmp
            .join(format!("artifact-{}-{}", g.namespace, key.name));
        fs::create_dir_all(&out).map_err(|e| fail(format!("{}: {e}", out.display())))?;
        let rules = g
            .spec
            .get("copy")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for rule in rules {
            let from = rule.get("from").and_then(Value::as_str).unwrap_or("");
            let to = rule.get("to").and_then(Value::as_str).unwrap_or("");
            let (alias, pattern) = split_alias(from)
                .ok_or_else(|| fail(format!("copy from '{from}' must start with @alias/")))?;
            let src_key = g
                .sources
                .get(alias)
                .cloned()
                .ok_or_else(|| fail(format!("unknown source alias '@{alias}'")))?;
            let (src_root, _) = self.resolve(&src_key).map_err(|e| fail(e.to_string()))?;
            let dest = to
                .strip_prefix("@artifact")
                .ok_or_else(|| fail(format!("copy to '{to}' must start with @artifact/")))?;
            let dest_rel = safe_rel(dest)
                .ok_or_else(|| fail(format!("copy to '{to}' escapes the artifact")))?;
            let to_dir = to.ends_with('/') || dest_rel.as_os_str().is_empty();
            copy_rule(&src_root, pattern, &out, &dest_rel, to_dir).map_err(fail)?;
        }
        Ok(out)
    }
}

fn split_alias(from: &str) -> Option<(&str, &str)> {
    let rest = from.strip_prefix('@')?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// A relative path without `..` that stays inside its root.
pub fn safe_rel(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Matches a glob component (`*`, `?`) against a file name.
fn glob_match(pat: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pat.as_bytes(), name.as_bytes())
}

fn copy_rule(
    src_root: &Path,
    pattern: &str,
    out: &Path,
    dest: &Path,
    to_dir: bool,
) -> Result<(), String> {
    let pattern = pattern.trim_start_matches("./");
    if let Some(base) =
        pattern
            .strip_suffix("/**")
            .or(if pattern == "**" { Some("") } else { None })
    {
        let from = src_root.join(safe_rel(base).ok_or("copy source escapes the source root")?);
        return copy_tree(&from, &out.join(dest));
    }
    let (dir, last) = match pattern.rsplit_once('/') {
        Some((d, l)) => (d, l),
        None => ("", pattern),
    };
    if last.contains('*') || last.contains('?') {
        let (dir, recursive) =
            match dir
                .strip_suffix("/**")
                .or(if dir == "**" { Some("") } else { None })
            {
                Some(d) => (d, true),
                None => (dir, false),
            };
        let from = src_root.join(safe_rel(dir).ok_or("copy source escapes the source root")?);
        return copy_matching(&from, &from, last, recursive, &out.join(dest));
    }
    let from = src_root.join(safe_rel(pattern).ok_or("copy source escapes the source root")?);
    let target = if to_dir {
        out.join(dest).join(from.file_name().unwrap_or_default())
    } else {
        out.join(dest)
    };
    if from.is_dir() {
        copy_tree(&from, &target)
    } else if from.is_file() {
        copy_file(&from, &target)
    } else {
        Err(format!("{} not found", from.display()))
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(p) = to.parent() {
        fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", from.display()))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    if !from.is_dir() {
        return Err(format!("{} is not a directory", from.display()));
    }
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let p = entry.path();
        if p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        let t = to.join(entry.file_name());
        if p.is_dir() {
            copy_tree(&p, &t)?
        } else {
            copy_file(&p, &t)?
        }
    }
    Ok(())
}

fn copy_matching(
    base: &Path,
    dir: &Path,
    pat: &str,
    recursive: bool,
    to: &Path,
) -> Result<(), String> {
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let p = entry.path();
        if p.is_dir() {
            if recursive {
                copy_matching(base, &p, pat, recursive, to)?;
            }
        } else if glob_match(pat, &entry.file_name().to_string_lossy()) {
            let rel = p.strip_prefix(base).unwrap_or(&p);
            copy_file(&p, &to.join(rel))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_relative_paths() {
        assert!(glob_match("*.yaml", "a.yaml"));
        assert!(!glob_match("*.yaml", "a.yml"));
        assert!(glob_match("a?c", "abc"));
        assert_eq!(safe_rel("./a/../b"), Some(PathBuf::from("b")));
        assert_eq!(safe_rel("../x"), None);
    }
}
