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

/// Runs builds, at most `jobs` kustomize processes at once.
#[derive(Debug, Clone)]
pub struct Builder {
    kustomize: Kustomize,
    permits: Arc<Semaphore>,
}

impl Builder {
    /// A builder running `kustomize` with `jobs` parallel processes.
    pub fn new(kustomize: Kustomize, jobs: usize) -> Self {
        Builder {
            kustomize,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
        }
    }

    /// The default parallelism: the number of cores.
    pub fn default_jobs() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
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
        let tmp = tempfile::Builder::new()
            .prefix("flux-order-build-")
            .tempdir()
            .map_err(BuildError::Temp)?;
        let prepared = overlay::prepare(root, rel, spec, tmp.path())?;
        let output = self.kustomize.build(&prepared.build_dir).await?;
        Ok(RawBuild {
            output,
            strip_origin: prepared.strip_origin,
        })
    }
}
