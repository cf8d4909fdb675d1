//! Unpacks `.tar.gz` artifacts into a directory without ever writing outside it: entry paths are
//! checked (no absolute paths, no `..` escaping the root), symlinks and hard links are refused
//! unless they resolve inside the target, and device files are skipped.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Unpacks the gzip-compressed tarball `data` into `dest` (created if missing).
pub fn unpack_tar_gz(data: &[u8], dest: &Path) -> Result<(), String> {
    let gz = flate2::read::GzDecoder::new(data);
    unpack_tar(gz, dest)
}

/// Unpacks an uncompressed or already-decompressed tar stream into `dest`.
pub fn unpack_tar(reader: impl Read, dest: &Path) -> Result<(), String> {
    fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("reading tarball: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading tarball: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("reading tarball: {e}"))?
            .into_owned();
        let Some(rel) = inside(&raw) else {
            return Err(format!(
                "tarball entry '{}' points outside the artifact",
                raw.display()
            ));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| format!("reading tarball: {e}"))?
                .ok_or_else(|| format!("tarball entry '{}': link without target", raw.display()))?;
            let resolved = if kind.is_symlink() && !link.is_absolute() {
                rel.parent().unwrap_or(Path::new("")).join(&link)
            } else {
                link.to_path_buf()
            };
            if link.is_absolute() || inside(&resolved).is_none() {
                return Err(format!(
                    "tarball entry '{}' links outside the artifact ({})",
                    raw.display(),
                    link.display()
                ));
            }
        } else if !(kind.is_file() || kind.is_dir() || kind.is_contiguous()) {
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        // `unpack_in` re-checks the path and refuses to follow symlinked parents out of `dest`.
        entry
            .unpack_in(dest)
            .map_err(|e| format!("unpacking '{}': {e}", raw.display()))?;
    }
    Ok(())
}

/// `p` as a relative path that stays inside its root, else `None`.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name as an attacker would.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        if let Some((name, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn unpacks_inside_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let ok = tarball(&[("a/b.yaml", b"x: 1\n")], Some(("a/l", "b.yaml")));
        unpack_tar_gz(&ok, dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("a/b.yaml")).unwrap(), b"x: 1\n");
        let bad = tarball(&[("../evil", b"x")], None);
        let e = unpack_tar_gz(&bad, &dir.path().join("d")).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        assert!(!dir.path().join("evil").exists());
        let bad_link = tarball(&[], Some(("l", "../../etc/passwd")));
        let e = unpack_tar_gz(&bad_link, &dir.path().join("e")).unwrap_err();
        assert!(e.contains("links outside"), "{e}");
    }
}
