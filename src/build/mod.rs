//! The build stage: for one Kustomization, prepare a shadow of its path with Flux's overlay
//! fields merged into the kustomization file ([`overlay`]), run kustomize on it ([`kustomize`]),
//! then do what Flux does to the output ([`postbuild`], with [`envsubst`] for `${var}`).
//! The user's repo is never written.

// A complete port of fluxcd/pkg envsubst; a few entry points serve only its own tests.
pub mod confine;
#[allow(dead_code)]
pub mod envsubst;
pub mod kustomize;
pub mod overlay;
pub mod postbuild;
pub mod sops;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::model::KustomizationSpec;
pub use kustomize::{Kustomize, KustomizeError};
pub use overlay::OverlayError;

/// kustomize's raw output for one path, before Flux's post-build steps.
#[derive(Debug, Clone)]
pub struct RawBuild {
    /// kustomize's stdout.
    pub output: std::sync::Arc<str>,
    /// Origin annotations were added by flux-order and must be stripped.
    pub strip_origin: bool,
    /// Set when the build ran in a batch: how its origin paths map back.
    pub origin_map: Option<postbuild::OriginMap>,
    /// The plain text of the values of SOPS files decrypted before the build (masked wherever
    /// output appears).
    pub decrypted: Vec<String>,
    /// When SOPS files were decrypted before the build: the fingerprint of the keys (a build
    /// with other keys runs again; one that decrypted nothing serves any keys).
    pub decrypted_with: Option<String>,
}

/// One build to run: the source root, the path inside it, and the Kustomization's spec.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Source root.
    pub root: std::path::PathBuf,
    /// spec.path inside it.
    pub rel: std::path::PathBuf,
    /// The overlay.
    pub spec: KustomizationSpec,
    /// Its SOPS keys, with `spec.decryption`: SOPS-encrypted files of its secretGenerators and
    /// patches are decrypted before the build ([`sops`]).
    pub decrypt: Option<crate::decrypt::Keyring>,
}

/// Prepared builds of one source, with their request index.
type Group = (Arc<overlay::ShadowRoot>, Vec<(usize, overlay::Prepared)>);

/// A build ready to run: in a shared shadow, or in a private one holding decrypted files.
enum Ready {
    Shared(Arc<overlay::ShadowRoot>, overlay::Prepared),
    /// With the fingerprint of the keys.
    Private(Box<sops::Private>, String),
}

/// Most Kustomizations built by one kustomize process.
const MAX_BATCH: usize = 50;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Preparing the build directory failed.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// kustomize failed.
    #[error(transparent)]
    Kustomize(#[from] KustomizeError),
    /// Temp dir creation failed.
    #[error("cannot create a temporary build directory: {0}")]
    Temp(std::io::Error),
    /// A SOPS-encrypted source of the build could not be decrypted.
    #[error("decrypting {} ({by}): {source}", .file.display())]
    Decrypt {
        /// The file, relative to the source root.
        file: std::path::PathBuf,
        /// The field and kustomization file that reference it.
        by: String,
        /// Why.
        source: crate::decrypt::SopsError,
    },
}

/// Runs builds, at most `jobs` kustomize processes at once, in shadows of the source roots that
/// live as long as the builder.
#[derive(Debug, Clone)]
pub struct Builder {
    kustomize: Kustomize,
    permits: Arc<Semaphore>,
    jobs: usize,
    batch: bool,
    shadows: Arc<Shadows>,
    /// Builds already made in this process, by (root, path, spec): a second load (apply reloads
    /// once it has read substituteFrom sources from the cluster) runs no kustomize again.
    done: Arc<std::sync::Mutex<std::collections::HashMap<BuildKey, RawBuild>>>,
}

/// What determines a build's output: the source root, the path, and the overlay's spec.
type BuildKey = (std::path::PathBuf, std::path::PathBuf, String);

#[derive(Debug)]
struct Shadows {
    base: crate::interrupt::TempTree,
    roots:
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Arc<overlay::ShadowRoot>>>,
}

/// Where build shadows go: `$TMPDIR` when set, else the RAM-backed `/dev/shm` when writable
/// (a build makes thousands of symlinks; on a disk-backed /tmp each costs ~50x more), else the
/// system temp dir.
fn temp_base() -> std::path::PathBuf {
    if std::env::var_os("TMPDIR").is_none() {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
            return shm.to_path_buf();
        }
    }
    std::env::temp_dir()
}

impl Builder {
    /// A builder running `kustomize` with `jobs` parallel processes.
    pub fn new(kustomize: Kustomize, jobs: usize) -> std::io::Result<Self> {
        let base = crate::interrupt::TempTree::new(
            tempfile::Builder::new()
                .prefix("flux-order-")
                .tempdir_in(temp_base())
                .or_else(|_| tempfile::Builder::new().prefix("flux-order-").tempdir())?,
        );
        Ok(Builder {
            kustomize,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            jobs: jobs.max(1),
            batch: true,
            shadows: Arc::new(Shadows {
                base,
                roots: Default::default(),
            }),
            done: Default::default(),
        })
    }

    /// Lets go of the outputs kept for a second load of the same fleet (apply's reload with the
    /// cluster's variables): called once no load follows.
    pub fn forget_outputs(&self) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The kustomize binary builds run with (also used for HelmRelease post-renderers).
    pub fn kustomize(&self) -> &Kustomize {
        &self.kustomize
    }

    /// Whether Kustomizations of one source share a kustomize process (default: yes).
    pub fn batching(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    /// The default parallelism: the number of cores.
    pub fn default_jobs() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    }

    fn shadow(&self, root: &Path) -> Result<Arc<overlay::ShadowRoot>, BuildError> {
        let mut roots = self.shadows.roots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = roots.get(root) {
            return Ok(s.clone());
        }
        let dir = self.shadows.base.path().join(format!("src{}", roots.len()));
        let s = Arc::new(overlay::ShadowRoot::new(root, dir)?);
        roots.insert(root.to_path_buf(), s.clone());
        Ok(s)
    }

    /// Builds a directory as it is (the cluster root, no overlay): read directly when it is a
    /// directory of plain YAML files, else by kustomize.
    pub async fn build_root(&self, root: &Path, rel: &Path) -> Result<RawBuild, BuildError> {
        let key: BuildKey = (root.to_path_buf(), rel.to_path_buf(), String::new());
        if let Some(raw) = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(raw.clone());
        }
        let raw = match self.plain(root, rel) {
            Some(raw) => raw,
            None => {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|e| BuildError::Temp(std::io::Error::other(e)))?;
                let shadow = self.shadow(root)?;
                let shadow_for_msgs = shadow.clone();
                let rel = rel.to_path_buf();
                // Filesystem work off the async threads.
                let prepared = tokio::task::spawn_blocking(move || {
                    overlay::prepare(&shadow, &rel, None, None)
                })
                .await
                .map_err(|e| BuildError::Temp(std::io::Error::other(e)))??;
                let output = self
                    .kustomize
                    .build(&prepared.build_dir)
                    .await
                    .map_err(|e| unshadow(&shadow_for_msgs, e))?;
                RawBuild {
                    output: output.into(),
                    strip_origin: prepared.strip_origin,
                    origin_map: None,
                    decrypted: Vec::new(),
                    decrypted_with: None,
                }
            }
        };
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, raw.clone());
        Ok(raw)
    }

    /// The output kustomize would give for a directory of plain YAML files (see
    /// [`overlay::plain_resources`]), without starting a process: every document, with its file
    /// as origin. None when the directory needs kustomize, or when kustomize would reject it (a
    /// document without kind or name, an id defined twice), so that its own message is shown.
    fn plain(&self, root: &Path, rel: &Path) -> Option<RawBuild> {
        let files = overlay::plain_resources(root, rel).ok()??;
        let dir = root.join(rel);
        let mut seen = std::collections::HashSet::new();
        let mut output = String::new();
        for f in files {
            let text = std::fs::read_to_string(&f).ok()?;
            let origin = f.strip_prefix(&dir).ok()?.display().to_string();
            for mut doc in crate::yaml::from_multi(&text).ok()? {
                let (api, kind, ns, name) = crate::model::object_meta(&doc);
                // A Flux Kustomization without a name goes on to the loader, which says so as
                // it does under --scan.
                let unnamed_kustomization =
                    name.is_empty() && postbuild::is_flux_kustomization(&doc);
                if api.is_empty()
                    || kind.is_empty()
                    || (name.is_empty() && !unnamed_kustomization)
                    || kind == "List"
                {
                    return None;
                }
                if !seen.insert((
                    crate::model::api_group(api).to_string(),
                    kind.to_string(),
                    ns.to_string(),
                    name.to_string(),
                )) {
                    return None;
                }
                postbuild::set_meta(
                    &mut doc,
                    "annotations",
                    postbuild::ORIGIN_ANNOTATION,
                    &format!("path: {origin}\n"),
                );
                output.push_str(&crate::yaml::to_string(&doc).ok()?);
                output.push_str("---\n");
            }
        }
        Some(RawBuild {
            output: output.into(),
            strip_origin: true,
            origin_map: None,
            decrypted: Vec::new(),
            decrypted_with: None,
        })
    }

    /// Builds many Kustomizations. kubectl's start-up dominates a small build (~35 of 40 ms), so
    /// Kustomizations of the same source are built in batches: one aggregate kustomization lists
    /// their slots, one kustomize process builds them all, and each object is given back to its
    /// Kustomization by the build label its slot adds. A batch that fails (one broken
    /// Kustomization, or two defining the same object) is rebuilt one by one, so errors and
    /// results are exactly those of separate builds.
    pub async fn build_many(&self, reqs: Vec<BuildRequest>) -> Vec<Result<RawBuild, BuildError>> {
        let key = |r: &BuildRequest| -> BuildKey {
            (
                r.root.clone(),
                r.rel.clone(),
                serde_json::to_string(&r.spec).unwrap_or_default(),
            )
        };
        let mut results: Vec<Option<Result<RawBuild, BuildError>>> = {
            let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            reqs.iter()
                .map(|r| {
                    let keys = r.decrypt.as_ref().map(crate::decrypt::Keyring::fingerprint);
                    done.get(&key(r))
                        .filter(|raw| raw.decrypted_with.is_none() || raw.decrypted_with == keys)
                        .cloned()
                        .map(Ok)
                })
                .collect()
        };
        let (misses, keys): (Vec<_>, Vec<_>) = reqs
            .into_iter()
            .zip(&results)
            .filter(|(_, hit)| hit.is_none())
            .map(|(r, _)| {
                let k = key(&r);
                (r, k)
            })
            .unzip();
        let mut fresh = self.build_fresh(misses).await.into_iter();
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = keys.into_iter();
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            let (Some(r), Some(k)) = (fresh.next(), keys.next()) else {
                break;
            };
            if let Ok(raw) = &r {
                done.insert(k, raw.clone());
            }
            *slot = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(BuildError::Temp(std::io::Error::other("build not run"))))
            })
            .collect()
    }

    /// [`Builder::build_many`] without the memo.
    async fn build_fresh(&self, reqs: Vec<BuildRequest>) -> Vec<Result<RawBuild, BuildError>> {
        let n = reqs.len();
        let mut results: Vec<Option<Result<RawBuild, BuildError>>> = (0..n).map(|_| None).collect();
        let mut shadows = Vec::with_capacity(n);
        for r in &reqs {
            shadows.push(self.shadow(&r.root));
        }
        let work: Vec<_> = reqs.into_iter().zip(shadows).enumerate().collect();
        let base = self.shadows.base.path().to_path_buf();
        // Prepare every slot (filesystem work, off the async threads); a build whose sources
        // need decrypting is prepared again, alone, in a private shadow.
        let prepared = tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(i, (r, sh))| {
                    let sh = sh?;
                    let p = overlay::prepare(&sh, &r.rel, Some(&r.spec), Some(i))?;
                    let Some(keys) = &r.decrypt else {
                        return Ok(Ready::Shared(sh, p));
                    };
                    let files = sops::encrypted(&r.root, &p.sops)?;
                    if files.is_empty() {
                        return Ok(Ready::Shared(sh, p));
                    }
                    let private =
                        sops::prepare_private(&base, &r.root, &r.rel, &r.spec, &files, keys)?;
                    Ok::<_, BuildError>(Ready::Private(Box::new(private), keys.fingerprint()))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| {
            (0..n)
                .map(|_| Err(BuildError::Temp(std::io::Error::other(e.to_string()))))
                .collect()
        });
        // Group batchable builds (no origin annotations of their own) by source.
        let mut groups: Vec<Group> = Vec::new();
        let mut singles = Vec::new();
        let mut privates = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Err(e) => results[i] = Some(Err(e)),
                Ok(Ready::Shared(sh, p)) if p.strip_origin && self.batch => {
                    match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sh)) {
                        Some((_, members)) => members.push((i, p)),
                        None => groups.push((sh, vec![(i, p)])),
                    }
                }
                Ok(Ready::Shared(sh, p)) => singles.push((i, sh, p)),
                Ok(Ready::Private(private, keys)) => privates.push((i, private, keys)),
            }
        }
        let jobs = self.jobs;
        let mut batches = Vec::new();
        for (sh, members) in groups {
            let size = members.len().div_ceil(jobs).clamp(1, MAX_BATCH);
            let mut it = members.into_iter().peekable();
            while it.peek().is_some() {
                let chunk: Vec<_> = it.by_ref().take(size).collect();
                batches.push((sh.clone(), chunk));
            }
        }
        let batch_runs = batches.into_iter().map(|(sh, chunk)| async move {
            if chunk.len() > 1 {
                if let Some(outs) = self.run_batch(&sh, &chunk).await {
                    tracing::debug!("built {} Kustomizations in one kustomize run", chunk.len());
                    return outs;
                }
                tracing::debug!("batch of {} failed; building them one by one", chunk.len());
            }
            let mut outs = Vec::new();
            for (i, p) in &chunk {
                outs.push((*i, self.run_single(&sh, p).await));
            }
            outs
        });
        let single_runs = singles
            .into_iter()
            .map(|(i, sh, p)| async move { vec![(i, self.run_single(&sh, &p).await)] });
        let private_runs = privates.into_iter().map(|(i, private, keys)| async move {
            let r = self
                .run_single(&private.shadow, &private.prepared)
                .await
                .map(|raw| RawBuild {
                    decrypted: private.values.clone(),
                    decrypted_with: Some(keys),
                    ..raw
                });
            // The decrypted files go now, whatever the outcome.
            drop(private);
            vec![(i, r)]
        });
        let (a, b, c) = futures::join!(
            futures::future::join_all(batch_runs),
            futures::future::join_all(single_runs),
            futures::future::join_all(private_runs)
        );
        for (i, r) in a.into_iter().chain(b).chain(c).flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(BuildError::Temp(std::io::Error::other("build not run"))))
            })
            .collect()
    }

    async fn run_single(
        &self,
        sh: &overlay::ShadowRoot,
        p: &overlay::Prepared,
    ) -> Result<RawBuild, BuildError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| BuildError::Temp(std::io::Error::other(e)))?;
        let output = self
            .kustomize
            .build(&p.build_dir)
            .await
            .map_err(|e| unshadow(sh, e))?;
        Ok(RawBuild {
            output: output.into(),
            strip_origin: p.strip_origin,
            origin_map: None,
            decrypted: Vec::new(),
            decrypted_with: None,
        })
    }

    /// One kustomize run for `chunk`; None when it fails or its output cannot be split.
    async fn run_batch(
        &self,
        sh: &overlay::ShadowRoot,
        chunk: &[(usize, overlay::Prepared)],
    ) -> Option<Vec<(usize, Result<RawBuild, BuildError>)>> {
        let dirs: Vec<&Path> = chunk.iter().map(|(_, p)| p.build_dir.as_path()).collect();
        let batch_dir = sh.batch(&dirs).ok()?;
        let output = {
            let _permit = self.permits.acquire().await.ok()?;
            self.kustomize.build(&batch_dir).await.ok()?
        };
        let mut texts: std::collections::HashMap<usize, String> =
            chunk.iter().map(|(i, _)| (*i, String::new())).collect();
        // Unlabelled members are recognised by their slot in the origin path.
        let slots: Vec<(String, usize)> = chunk
            .iter()
            .filter(|(_, p)| !p.labelled)
            .map(|(i, p)| (format!("../{}/", sh.relative(sh.dir(), &p.build_dir)), *i))
            .collect();
        for doc in postbuild::split_documents(&output) {
            let owner = label_of(doc).or_else(|| {
                let origin = origin_of(doc)?;
                slots
                    .iter()
                    .find(|(slot, _)| origin.starts_with(slot.as_str()))
                    .map(|(_, i)| *i)
            })?;
            let text = texts.get_mut(&owner)?;
            text.push_str(doc);
            if !doc.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("---\n");
        }
        let batch_rel = sh.relative(sh.dir(), &batch_dir);
        Some(
            chunk
                .iter()
                .map(|(i, p)| {
                    let map = postbuild::OriginMap {
                        batch: batch_rel.clone(),
                        slot: sh.relative(sh.dir(), &p.build_dir),
                        path: p.source_rel.display().to_string(),
                    };
                    let output = texts.remove(i).unwrap_or_default();
                    (
                        *i,
                        Ok(RawBuild {
                            output: output.into(),
                            strip_origin: p.strip_origin,
                            origin_map: Some(map),
                            decrypted: Vec::new(),
                            decrypted_with: None,
                        }),
                    )
                })
                .collect(),
        )
    }
}

/// kustomize's message with the shadow's paths turned back into the source's.
fn unshadow(sh: &overlay::ShadowRoot, e: KustomizeError) -> KustomizeError {
    match e {
        KustomizeError::Failed { message } => KustomizeError::Failed {
            message: sh.unshadow(&message),
        },
        e => e,
    }
}

/// The build label's value in one document of kustomize's output.
fn label_of(doc: &str) -> Option<usize> {
    doc.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix(overlay::BUILD_LABEL)?
            .strip_prefix(':')?;
        v.trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .parse::<usize>()
            .ok()
    })
}

/// The file (or, for generated objects, the kustomization) named by the origin annotation of one
/// document of kustomize's output.
fn origin_of(doc: &str) -> Option<&str> {
    let mut lines = doc
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(postbuild::ORIGIN_ANNOTATION));
    lines.next()?;
    lines.take(6).find_map(|l| {
        let l = l.trim();
        l.strip_prefix("path: ")
            .or_else(|| l.strip_prefix("configuredIn: "))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\''))
    })
}
