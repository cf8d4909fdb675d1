//! The build stage: for one Kustomization, prepare a shadow of its path with Flux's overlay
//! fields merged into the kustomization file ([`overlay`]), run kustomize on it ([`kustomize`]),
//! then do what Flux does to the output ([`postbuild`], with [`envsubst`] for `${var}`).
//! The user's repo is never written.

// A complete port of fluxcd/pkg envsubst; a few entry points serve only its own tests.
#[allow(dead_code)]
pub mod envsubst;
pub mod kustomize;
pub mod overlay;
pub mod postbuild;

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
    pub output: String,
    /// Origin annotations were added by flux-order and must be stripped.
    pub strip_origin: bool,
}

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
}

/// Runs builds, at most `jobs` kustomize processes at once, in shadows of the source roots that
/// live as long as the builder.
#[derive(Debug, Clone)]
pub struct Builder {
    kustomize: Kustomize,
    permits: Arc<Semaphore>,
    shadows: Arc<Shadows>,
}

#[derive(Debug)]
struct Shadows {
    base: tempfile::TempDir,
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
        let base = tempfile::Builder::new()
            .prefix("flux-order-")
            .tempdir_in(temp_base())
            .or_else(|_| tempfile::Builder::new().prefix("flux-order-").tempdir())?;
        Ok(Builder {
            kustomize,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            shadows: Arc::new(Shadows {
                base,
                roots: Default::default(),
            }),
        })
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

    /// Builds `root/rel` with the overlay of `spec` (None: build the directory as it is).
    pub async fn build(
        &self,
        root: &Path,
        rel: &Path,
        spec: Option<&KustomizationSpec>,
    ) -> Result<RawBuild, BuildError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| BuildError::Temp(std::io::Error::other(e)))?;
        let shadow = self.shadow(root)?;
        let (rel, spec) = (rel.to_path_buf(), spec.cloned());
        // Filesystem work off the async threads, so builds overlap with it.
        let prepared =
            tokio::task::spawn_blocking(move || overlay::prepare(&shadow, &rel, spec.as_ref()))
                .await
                .map_err(|e| BuildError::Temp(std::io::Error::other(e)))??;
        let output = self.kustomize.build(&prepared.build_dir).await?;
        Ok(RawBuild {
            output,
            strip_origin: prepared.strip_origin,
        })
    }
}
