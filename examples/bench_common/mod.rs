//! Helpers the benchmarks share: finding the release binary and the kustomize, and writing a
//! generated fleet into a git work tree. Included with `#[path]`; not an example of its own.

// Each benchmark uses a subset of these.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// `target/release/kubectl-flux_order`, found from the running example's own path
/// (`target/<profile>/examples/<name>`).
pub fn release_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("this example does not live in target/<profile>/examples")?;
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let bin = target_dir.join("release").join("kubectl-flux_order");
    if !bin.is_file() {
        bail!(
            "{} not found: run `cargo build --release` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// `git init` in `root` (the fleet's source is the git work tree holding it).
pub fn git_init(root: &Path) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .current_dir(root)
        .output()
        .context("run git init (git is needed: the fleet's source is the git work tree)")?;
    if !out.status.success() {
        bail!(
            "git init failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes the documents `doc(0..n)` into files of `per_file` documents each, file `k` at
/// `path(k)` (a generated fleet's Kustomizations).
pub fn write_grouped(
    n: usize,
    per_file: usize,
    path: impl Fn(usize) -> PathBuf,
    doc: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    for file in 0..n.div_ceil(per_file) {
        let text: String = (file * per_file..((file + 1) * per_file).min(n))
            .map(&doc)
            .collect();
        write(&path(file), &text)?;
    }
    Ok(())
}

/// Writes `text` to `path`, creating its directory.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The kustomize flux-order picks: FLUX_ORDER_KUSTOMIZE_BIN, else `kustomize`, else `kubectl`.
pub fn detect_kustomize() -> anyhow::Result<(PathBuf, &'static str)> {
    if let Some(p) = std::env::var_os("FLUX_ORDER_KUSTOMIZE_BIN") {
        let p = PathBuf::from(p);
        let kubectl = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("kubectl"));
        return Ok((p, if kubectl { "kustomize" } else { "build" }));
    }
    if let Some(p) = on_path("kustomize") {
        return Ok((p, "build"));
    }
    if let Some(p) = on_path("kubectl") {
        return Ok((p, "kustomize"));
    }
    bail!("neither `kustomize` nor `kubectl` is on PATH")
}
