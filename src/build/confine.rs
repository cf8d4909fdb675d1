//! Keeps every file a build reads inside the Kustomization's source root, as Flux does: the
//! controller builds on a filesystem rooted at the artifact (`fs-security-constraint … is not in
//! or below …`), and an artifact carries no symlinks (source-controller archives regular files and
//! directories only). kustomize here runs as a process with `LoadRestrictionsNone`, on a shadow
//! tree of symlinks, so nothing would stop `files: [host=/etc/hostname]` or `../../../etc` — this
//! module walks, before kustomize runs, every local reference a build can follow (resources,
//! components, generators' files, patches, plugin configs …) and refuses any that is absolute,
//! leaves the root, or goes through a symlink. Remote bases (URLs) are kustomize's to fetch.
//! Pure apart from reading the source tree.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::overlay::{OverlayError, find_kustomization_file};

/// Why a reference is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An absolute path: never inside an artifact.
    Absolute,
    /// A relative path that climbs above the source root.
    Escapes,
    /// A path through a symlink (`link` relative to the root): an artifact has none.
    Symlink {
        /// The symlink, relative to the source root.
        link: PathBuf,
        /// Whether it points outside the source root.
        outside: bool,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Absolute => f.write_str("an absolute path is not in or below the source root"),
            Refusal::Escapes => f.write_str("the path is not in or below the source root"),
            Refusal::Symlink {
                link,
                outside: true,
            } => write!(f, "{} is a symlink out of the source root", link.display()),
            Refusal::Symlink { link, .. } => write!(
                f,
                "{} is a symlink, and a Flux artifact carries no symlinks (source-controller leaves them out)",
                link.display()
            ),
        }
    }
}

/// Where `rel` (a `/`-path inside the source) leads: refused, or the path relative to `root`.
/// Every existing component is checked with `lstat`; a missing one ends the check (kustomize
/// reports what does not exist).
pub fn resolve(root: &Path, rel: &Path) -> Result<PathBuf, Refusal> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                let full = root.join(&out);
                match std::fs::symlink_metadata(&full) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let outside = full
                            .canonicalize()
                            .map(|t| !t.starts_with(root))
                            .unwrap_or(true);
                        return Err(Refusal::Symlink { link: out, outside });
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Does not exist (yet): the rest is checked lexically only.
                    }
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(Refusal::Escapes);
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Absolute),
        }
    }
    Ok(out)
}

/// A reference kustomize resolves against a kustomization's directory (`dir`, relative to the
/// source root): refused, or its path relative to the root.
fn reference(root: &Path, dir: &Path, value: &str) -> Result<PathBuf, Refusal> {
    if Path::new(value).is_absolute() {
        return Err(Refusal::Absolute);
    }
    resolve(root, &dir.join(value))
}

/// Whether a resource entry names something kustomize fetches (a URL or a git repository)
/// rather than a local path.
fn is_remote(root: &Path, dir: &Path, value: &str) -> bool {
    let looks_remote = value.contains("://")
        || value.starts_with("git@")
        || value.starts_with("git::")
        || value.contains("?ref=")
        || value.contains("?version=")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|h| value.starts_with(h));
    // A local path that exists wins, as kustomize tries the file system first.
    looks_remote && !root.join(dir).join(value).exists()
}

/// One refused reference, as an error naming the kustomization file, the field and the value.
fn refused(root: &Path, file: &Path, field: &str, value: &str, why: Refusal) -> OverlayError {
    OverlayError::OutsideRoot {
        file: file.to_path_buf(),
        field: field.to_string(),
        value: value.to_string(),
        root: root.to_path_buf(),
        reason: why.to_string(),
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The file of a `configMapGenerator`/`secretGenerator` `files` entry (`[key=]path`).
fn generator_file(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(_, p)| p)
}

/// A file kustomize-controller decrypts on disk before the build when it is SOPS-encrypted
/// (`DecryptSources`): a `secretGenerator` `files` or `envs` source, or a `patches` file, of the
/// kustomization built or one it reaches through its resources and components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SopsSource {
    /// The file, relative to the source root.
    pub path: PathBuf,
    /// Its format, as Flux tells it: from the key's name for `files` (`key=path`), from the
    /// file's name for `envs` (dotenv unless `.yaml`/`.json`) and patches.
    pub format: crate::decrypt::Format,
    /// The kustomization file naming it, relative to the source root.
    pub file: PathBuf,
    /// The field (`secretGenerator[0].envs`).
    pub field: String,
}

/// Checks the kustomization `kus` of `dir` (relative to `root`; `file` is its kustomization file
/// for messages) and, recursively, every local kustomization it reaches. Returns the files
/// kustomize-controller would decrypt before building it, should they be SOPS-encrypted.
pub fn check(
    root: &Path,
    dir: &Path,
    file: &Path,
    kus: &Map<String, Value>,
) -> Result<Vec<SopsSource>, OverlayError> {
    let mut seen = HashSet::new();
    let mut sops = Vec::new();
    Walk {
        root,
        seen: &mut seen,
        sops: &mut sops,
    }
    .kustomization(dir, file, kus, 0)?;
    Ok(sops)
}

struct Walk<'a> {
    root: &'a Path,
    seen: &'a mut HashSet<PathBuf>,
    sops: &'a mut Vec<SopsSource>,
}

impl Walk<'_> {
    fn kustomization(
        &mut self,
        dir: &Path,
        file: &Path,
        kus: &Map<String, Value>,
        depth: usize,
    ) -> Result<(), OverlayError> {
        if depth > 64 {
            return Ok(()); // kustomize reports the cycle
        }
        let root = self.root;
        let fail = |field: &str, value: &str, why| Err(refused(root, file, field, value, why));
        // Resources and components: files, or directories holding a kustomization of their own.
        for field in ["resources", "bases", "components"] {
            for value in strings(kus.get(field)) {
                if is_remote(root, dir, value) {
                    continue;
                }
                match reference(root, dir, value) {
                    Ok(target) => self.directory(&target, depth)?,
                    Err(why) => return fail(field, value, why),
                }
            }
        }
        // Plain file references.
        let mut files: Vec<(String, &str)> = Vec::new();
        for field in ["crds", "configurations"] {
            files.extend(
                strings(kus.get(field))
                    .into_iter()
                    .map(|v| (field.to_string(), v)),
            );
        }
        for field in ["patchesJson6902", "patches", "replacements"] {
            for (i, p) in kus
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(path) = p.get("path").and_then(Value::as_str) {
                    files.push((format!("{field}[{i}].path"), path));
                }
            }
        }
        for value in strings(kus.get("patchesStrategicMerge")) {
            // An entry is a file unless it is an inline patch.
            if !value.contains('\n') && !value.trim_start().starts_with('{') {
                files.push(("patchesStrategicMerge".into(), value));
            }
        }
        for field in ["configMapGenerator", "secretGenerator"] {
            for (i, g) in kus
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                files.extend(
                    generator_files(g)
                        .into_iter()
                        .map(|(k, v)| (format!("{field}[{i}].{k}"), v)),
                );
            }
        }
        for (i, h) in kus
            .get("helmCharts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for k in ["valuesFile", "additionalValuesFiles"] {
                files.extend(
                    strings(h.get(k))
                        .into_iter()
                        .map(|v| (format!("helmCharts[{i}].{k}"), v)),
                );
            }
        }
        if let Some(g) = kus.get("helmGlobals") {
            for k in ["chartHome", "configHome"] {
                files.extend(
                    strings(g.get(k))
                        .into_iter()
                        .map(|v| (format!("helmGlobals.{k}"), v)),
                );
            }
        }
        if let Some(p) = kus
            .get("openapi")
            .and_then(|o| o.get("path"))
            .and_then(Value::as_str)
        {
            files.push(("openapi.path".into(), p));
        }
        for (field, value) in files {
            if let Err(why) = reference(root, dir, value) {
                return fail(&field, value, why);
            }
        }
        self.sops_sources(dir, file, kus);
        // Generators, transformers and validators: plugin configs inline, in files, or built
        // from a directory; their own file references resolve against this kustomization.
        for field in ["generators", "transformers", "validators"] {
            for value in strings(kus.get(field)) {
                if value.contains('\n') {
                    self.plugin_configs(dir, file, field, value)?;
                    continue;
                }
                if is_remote(root, dir, value) {
                    continue;
                }
                let target = match reference(root, dir, value) {
                    Ok(t) => t,
                    Err(why) => return fail(field, value, why),
                };
                let full = root.join(&target);
                if full.is_dir() {
                    self.directory(&target, depth)?;
                } else if let Ok(text) = std::fs::read_to_string(&full) {
                    self.plugin_configs(dir, file, field, &text)?;
                }
            }
        }
        Ok(())
    }

    /// The files of `kus` that kustomize-controller decrypts before the build (their references
    /// are confined already).
    fn sops_sources(&mut self, dir: &Path, file: &Path, kus: &Map<String, Value>) {
        use crate::decrypt::Format;
        let mut add = |field: String, value: &str, format: Format| {
            if let Ok(path) = reference(self.root, dir, value) {
                self.sops.push(SopsSource {
                    path,
                    format,
                    file: file.to_path_buf(),
                    field,
                });
            }
        };
        let array = |k: &str| kus.get(k).and_then(Value::as_array).cloned();
        for (i, g) in array("secretGenerator").into_iter().flatten().enumerate() {
            for entry in strings(g.get("files")) {
                let key = entry.split_once('=').map_or(entry, |(k, _)| k);
                add(
                    format!("secretGenerator[{i}].files"),
                    generator_file(entry),
                    Format::for_path(key),
                );
            }
            for env in strings(g.get("envs")) {
                let format = match Format::for_path(env) {
                    Format::Binary => Format::Dotenv,
                    f => f,
                };
                add(format!("secretGenerator[{i}].envs"), env, format);
            }
        }
        for (i, p) in array("patches").into_iter().flatten().enumerate() {
            if let Some(path) = p.get("path").and_then(Value::as_str)
                && !path.contains("://")
            {
                add(format!("patches[{i}].path"), path, Format::for_path(path));
            }
        }
    }

    /// A resource or component: a directory's kustomization is checked in turn.
    fn directory(&mut self, target: &Path, depth: usize) -> Result<(), OverlayError> {
        let full = self.root.join(target);
        if !full.is_dir() || !self.seen.insert(target.to_path_buf()) {
            return Ok(());
        }
        let Some(file) = find_kustomization_file(&full) else {
            return Ok(());
        };
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(Value::Object(kus)) = crate::yaml::from_str::<Value>(&text)
        {
            let shown = target.join(file.file_name().unwrap_or_default());
            self.kustomization(target, &shown, &kus, depth + 1)?;
        }
        Ok(())
    }

    /// The file references of built-in plugin configs (`ConfigMapGenerator` files,
    /// `PatchTransformer` path, `HelmChartInflationGenerator` valuesFile …).
    fn plugin_configs(
        &mut self,
        dir: &Path,
        file: &Path,
        field: &str,
        text: &str,
    ) -> Result<(), OverlayError> {
        let Ok(docs) = crate::yaml::from_multi(text) else {
            return Ok(()); // kustomize reports it
        };
        for doc in docs {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let mut refs: Vec<(String, &str)> = generator_files(&doc);
            for k in [
                "path",
                "paths",
                "valuesFile",
                "additionalValuesFiles",
                "chartHome",
                "configHome",
            ] {
                refs.extend(strings(doc.get(k)).into_iter().map(|v| (k.to_string(), v)));
            }
            for r in doc
                .get("replacements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(p) = r.get("path").and_then(Value::as_str) {
                    refs.push(("replacements[].path".into(), p));
                }
            }
            for (k, value) in refs {
                if let Err(why) = reference(self.root, dir, value) {
                    return Err(refused(
                        self.root,
                        file,
                        &format!("{field} ({kind}.{k})"),
                        value,
                        why,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `files`, `envs` and `env` of a ConfigMap/Secret generator entry or plugin config.
fn generator_files(g: &Value) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = strings(g.get("files"))
        .into_iter()
        .map(|f| ("files".to_string(), generator_file(f)))
        .collect();
    for k in ["envs", "env"] {
        out.extend(strings(g.get(k)).into_iter().map(|v| (k.to_string(), v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kus(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn absolute_escaping_and_symlinked_references_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("apps/a")).unwrap();
        std::fs::write(root.join("apps/a/x.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("apps/a/out")).unwrap();
        std::os::unix::fs::symlink("x.txt", root.join("apps/a/in")).unwrap();
        let dir = Path::new("apps/a");
        let file = Path::new("apps/a/kustomization.yaml");
        let check = |k: Value| check(&root, dir, file, &kus(k));
        assert!(
            check(
                json!({"configMapGenerator": [{"name": "c", "files": ["x.txt", "k=../a/x.txt"]}]})
            )
            .is_ok()
        );
        for bad in [
            json!({"configMapGenerator": [{"name": "c", "files": ["host=/etc/hostname"]}]}),
            json!({"secretGenerator": [{"name": "c", "envs": ["../../../etc/passwd"]}]}),
            json!({"configMapGenerator": [{"name": "c", "files": ["out"]}]}),
            json!({"configMapGenerator": [{"name": "c", "files": ["in"]}]}),
            json!({"resources": ["/etc"]}),
            json!({"patches": [{"path": "../../../x.yaml"}]}),
            json!({"generators": ["apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: g}\nfiles: [/etc/hostname]\n"]}),
        ] {
            let err = check(bad.clone()).expect_err(&bad.to_string()).to_string();
            assert!(err.contains("apps/a/kustomization.yaml"), "{err}");
        }
        assert!(check(json!({"resources": ["github.com/org/repo//base?ref=v1", "https://example.com/x.yaml"]})).is_ok());
    }

    #[test]
    fn referenced_kustomizations_are_checked_in_turn() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("apps/a")).unwrap();
        std::fs::create_dir_all(root.join("apps/base")).unwrap();
        std::fs::write(
            root.join("apps/base/kustomization.yaml"),
            "configMapGenerator:\n- name: c\n  files: [/etc/hostname]\n",
        )
        .unwrap();
        let err = check(
            &root,
            Path::new("apps/a"),
            Path::new("apps/a/kustomization.yaml"),
            &kus(json!({"resources": ["../base"]})),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apps/base/kustomization.yaml"), "{err}");
        assert!(err.contains("/etc/hostname"), "{err}");
    }
}
