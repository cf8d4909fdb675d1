//! SOPS-encrypted files that kustomize-controller decrypts on disk before the kustomize build
//! (`DecryptSources`): the `files` and `envs` of `secretGenerator`s and `patches` files of the
//! kustomizations a build reaches. kustomize must read them in clear (it splits a dotenv into keys,
//! hashes the generated Secret's name from its data), so they are decrypted — MAC verified — into a
//! private, deep shadow of the source made for that one build (real directories, only files as
//! symlinks, so no route leads back to the encrypted file), each written `0600` and removed with
//! the shadow when the build ends, whatever its outcome. Shared shadows, and so other
//! Kustomizations' builds, never see a decrypted file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::BuildError;
use super::confine::SopsSource;
use super::overlay::{self, Prepared, ShadowRoot};
use crate::decrypt::Keyring;
use crate::model::KustomizationSpec;

/// Encrypted files kustomize-controller refuses to read (its `maxEncryptedFileSize`).
const MAX_FILE_SIZE: u64 = 5 << 20;

/// A source file of a build that is SOPS-encrypted.
#[derive(Debug)]
pub struct Encrypted {
    /// Where a build references it.
    pub source: SopsSource,
    /// Its content.
    pub text: String,
}

/// The files of `sources` (relative to `root`) that are SOPS-encrypted in their format, each once.
/// A file that does not exist is left to kustomize to report.
pub fn encrypted(root: &Path, sources: &[SopsSource]) -> Result<Vec<Encrypted>, BuildError> {
    let mut out: Vec<Encrypted> = Vec::new();
    for s in sources {
        if out.iter().any(|e| e.source.path == s.path) {
            continue;
        }
        let full = root.join(&s.path);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let fail = |message: String| BuildError::Decrypt {
            file: s.path.clone(),
            by: by(s),
            source: crate::decrypt::SopsError::Format(message),
        };
        let bytes = std::fs::read(&full).map_err(|e| fail(e.to_string()))?;
        if !s.format.is_encrypted(&bytes) {
            continue;
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(fail(format!(
                "cannot decrypt a file of {} bytes (kustomize-controller's limit is {MAX_FILE_SIZE})",
                meta.len()
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
        out.push(Encrypted {
            source: s.clone(),
            text,
        });
    }
    Ok(out)
}

/// `secretGenerator[0].envs of apps/x/kustomization.yaml`.
fn by(s: &SopsSource) -> String {
    format!("{} of {}", s.field, s.file.display())
}

/// A build prepared in a private shadow holding its decrypted files. Dropping it removes them.
#[derive(Debug)]
pub struct Private {
    /// The shadow (for kustomize's messages).
    pub shadow: ShadowRoot,
    /// The prepared build.
    pub prepared: Prepared,
    /// The plain text of every value that was encrypted (for masking).
    pub values: Vec<String>,
    // Last: removed after the shadow is no longer used.
    _dir: tempfile::TempDir,
}

/// Prepares the build of `rel` under `spec` in a new private shadow of `root` (in `base`), with
/// every file of `files` decrypted with `keys` in place of its symlink.
pub fn prepare_private(
    base: &Path,
    root: &Path,
    rel: &Path,
    spec: &KustomizationSpec,
    files: &[Encrypted],
    keys: &Keyring,
) -> Result<Private, BuildError> {
    let dir = tempfile::Builder::new()
        .prefix("decrypt-")
        .tempdir_in(base)
        .map_err(BuildError::Temp)?;
    let shadow = ShadowRoot::deep(root, dir.path().join("src"))?;
    let prepared = overlay::prepare(&shadow, rel, Some(spec), None)?;
    let mut values = Vec::new();
    for f in files {
        let fail = |source| BuildError::Decrypt {
            file: f.source.path.clone(),
            by: by(&f.source),
            source,
        };
        let plain = crate::decrypt::decrypt_file(&f.text, f.source.format, keys).map_err(fail)?;
        for view in shadow.views(&prepared, &f.source.path) {
            write_private(&view, &plain.bytes).map_err(|e| {
                fail(crate::decrypt::SopsError::Format(format!(
                    "cannot write the decrypted file for the build: {e}"
                )))
            })?;
        }
        values.extend(plain.values);
    }
    Ok(Private {
        shadow,
        prepared,
        values,
        _dir: dir,
    })
}

/// Replaces the symlink `path` by a regular file only its owner can read.
fn write_private(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sops");

    #[test]
    fn decrypted_files_are_private_to_the_build_and_go_with_it() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("apps/gen")).unwrap();
        std::fs::create_dir_all(root.join("apps/base")).unwrap();
        let enc = std::fs::read_to_string(format!("{FIXTURES}/gen.enc.env")).unwrap();
        std::fs::write(root.join("apps/base/gen.enc.env"), &enc).unwrap();
        std::fs::write(root.join("apps/gen/gen.enc.env"), &enc).unwrap();
        std::fs::write(root.join("apps/gen/plain.env"), "A=b\n").unwrap();
        std::fs::write(
            root.join("apps/gen/kustomization.yaml"),
            "secretGenerator:\n- name: a\n  envs: [gen.enc.env, plain.env]\n- name: b\n  envs: [../base/gen.enc.env]\n",
        )
        .unwrap();
        let spec: KustomizationSpec = serde_json::from_value(serde_json::json!({
            "interval": "10m", "prune": false, "path": "./apps/gen",
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
        }))
        .unwrap();
        let base = tempfile::tempdir().unwrap();
        let shared = ShadowRoot::new(&root, base.path().join("shared")).unwrap();
        let p = overlay::prepare(&shared, Path::new("apps/gen"), Some(&spec), None).unwrap();
        let files = encrypted(&root, &p.sops).unwrap();
        let found: Vec<_> = files.iter().map(|f| f.source.path.clone()).collect();
        assert_eq!(
            found,
            [
                PathBuf::from("apps/gen/gen.enc.env"),
                PathBuf::from("apps/base/gen.enc.env")
            ]
        );
        let mut keys = Keyring::default();
        keys.add_text(
            &std::fs::read_to_string(format!("{FIXTURES}/test.agekey")).unwrap(),
            "test.agekey",
        )
        .unwrap();
        let private = prepare_private(
            base.path(),
            &root,
            Path::new("apps/gen"),
            &spec,
            &files,
            &keys,
        )
        .unwrap();
        let plain = std::fs::read_to_string(format!("{FIXTURES}/plain/gen.env")).unwrap();
        let slot_file = private.prepared.build_dir.join("gen.enc.env");
        let base_file = private.shadow.dir().join("apps/base/gen.enc.env");
        for f in [&slot_file, &base_file] {
            let meta = std::fs::symlink_metadata(f).unwrap();
            assert!(meta.is_file(), "{f:?} is a regular file");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f:?}");
            assert_eq!(std::fs::read_to_string(f).unwrap(), plain);
        }
        // The source and the shared shadow still hold the encrypted file.
        assert_eq!(
            std::fs::read_to_string(root.join("apps/gen/gen.enc.env")).unwrap(),
            enc
        );
        assert_eq!(
            std::fs::read_to_string(p.build_dir.join("gen.enc.env")).unwrap(),
            enc
        );
        assert_eq!(
            private.values,
            ["genuser", "gen-pa55=word", "tok-gen-123456"].repeat(2)
        );
        let dir = private.shadow.dir().parent().unwrap().to_path_buf();
        drop(private);
        assert!(
            !dir.exists(),
            "the private shadow is removed with the build"
        );
    }
}
