//! Where artifacts live on disk: the shared cache (`$XDG_CACHE_HOME/flux-order/sources`, or
//! `$FLUX_ORDER_CACHE_DIR`) and air-gap bundles made by `pull`. Both use one layout: blobs by
//! sha256 (`blobs/sha256/<hex>`, the artifact exactly as fetched: a `.tar.gz` or a chart `.tgz`)
//! and resolutions (`refs/<hash of key>.json`: what a tag, branch or constraint resolved to). A
//! bundle adds `flux-order.lock`: every source of the selection with its resolution and the
//! checksum of its artifact. Files are written to a temporary name and renamed, so concurrent runs
//! sharing the cache never see half a blob.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The lock file name inside a bundle.
pub const LOCK_FILE: &str = "flux-order.lock";

/// What a source reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    /// The resolution key: URL plus what was asked (tag, constraint, branch...).
    pub key: String,
    /// The URL fetched.
    pub url: String,
    /// Flux's revision string (`v1.0.0@sha256:…`, `main@sha1:…`, a chart version).
    pub revision: String,
    /// Hex sha256 of the artifact file.
    pub sha256: String,
    /// Chart version or tag, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// OCI manifest digest (`sha256:…`), when fetched from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// One entry of a bundle's lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockEntry {
    /// Sources (`KIND/NAMESPACE/NAME`) or charts (`HelmRelease NAMESPACE/NAME`) that use it.
    pub used_by: Vec<String>,
    /// The resolution.
    #[serde(flatten)]
    pub resolved: Resolved,
    /// The artifact file, relative to the bundle.
    pub file: String,
}

/// The lock file of a bundle.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lock {
    /// Lock format version.
    pub version: u32,
    /// Every artifact.
    pub artifacts: Vec<LockEntry>,
}

/// A directory laid out as described in the module doc.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_file(key: &str) -> String {
    format!("{}.json", &sha256_hex(key.as_bytes())[..32])
}

/// Writes `data` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Store {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Store { root }
    }

    /// The user's cache: `$FLUX_ORDER_CACHE_DIR`, else `$XDG_CACHE_HOME/flux-order/sources`, else
    /// `~/.cache/flux-order/sources`.
    pub fn user_cache() -> Self {
        let root = if let Some(d) = std::env::var_os("FLUX_ORDER_CACHE_DIR") {
            PathBuf::from(d)
        } else {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            base.join("flux-order").join("sources")
        };
        Store { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of the blob with hex sha256 `sha`.
    pub fn blob_path(&self, sha: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(sha)
    }

    /// The blob's path if it is present.
    pub fn blob(&self, sha: &str) -> Option<PathBuf> {
        let p = self.blob_path(sha);
        p.is_file().then_some(p)
    }

    /// Stores a blob; returns its hex sha256 and path.
    pub fn put_blob(&self, data: &[u8]) -> std::io::Result<(String, PathBuf)> {
        let sha = sha256_hex(data);
        let p = self.blob_path(&sha);
        if !p.is_file() {
            write_atomic(&p, data)?;
        }
        Ok((sha, p))
    }

    /// The recorded resolution of `key`.
    pub fn resolution(&self, key: &str) -> Option<Resolved> {
        let text = fs::read_to_string(self.root.join("refs").join(key_file(key))).ok()?;
        let r: Resolved = serde_json::from_str(&text).ok()?;
        (r.key == key).then_some(r)
    }

    /// Records `r` under `key` (its own key, or a pinned alias such as a digest).
    pub fn record(&self, key: &str, r: &Resolved) -> std::io::Result<()> {
        let mut r = r.clone();
        r.key = key.to_string();
        let text = serde_json::to_vec_pretty(&r).expect("resolution serializes");
        write_atomic(&self.root.join("refs").join(key_file(key)), &text)
    }

    /// The directory a blob unpacks to (`trees/<sha>`), unpacking it on first use.
    pub fn tree(&self, sha: &str, blob: &Path) -> Result<PathBuf, String> {
        let dir = self.root.join("trees").join(sha);
        if dir.is_dir() {
            return Ok(dir);
        }
        let parent = self.root.join("trees");
        fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let data = fs::read(blob).map_err(|e| format!("{}: {e}", blob.display()))?;
        super::archive::unpack_tar_gz(&data, tmp.path())?;
        let staged = tmp.keep();
        if fs::rename(&staged, &dir).is_err() {
            // Another run unpacked it first.
            let _ = fs::remove_dir_all(&staged);
        }
        Ok(dir)
    }

    /// Reads the lock file of a bundle.
    pub fn read_lock(&self) -> Result<Lock, String> {
        let p = self.root.join(LOCK_FILE);
        let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Writes the lock file of a bundle.
    pub fn write_lock(&self, lock: &Lock) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(lock).expect("lock serializes");
        write_atomic(&self.root.join(LOCK_FILE), &text)
    }
}
