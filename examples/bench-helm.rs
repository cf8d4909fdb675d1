//! HelmRelease render benchmark: a fleet of N HelmReleases (default 100) of one chart (the
//! `plain` test fixture) with different values; `kubectl flux-order plan -o json` renders every one
//! with the real helm and Flux's post-renderers. Compared with the same renders done the usual way,
//! one `helm template` process each, one after another. Prints renders per second and the ratio
//! (flux-order's plan time ÷ the helm template loop), from one run.
//!
//!   cargo build --release && cargo run --release --example bench-helm [-- N]
//!
//! Needs helm (v4) on PATH (scripts/test-deps installs it) and kustomize or kubectl.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(100);
    let bin = bench_common::release_binary()?;
    let root = tempfile::tempdir()?;
    let repo = root.path();
    bench_common::git_init(repo)?;
    let chart_src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts/plain");
    let chart = repo.join("charts/plain");
    copy_dir(&chart_src, &chart)?;
    bench_common::write(
        &repo.join("clusters/c/apps.yaml"),
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  interval: 10m\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  path: ./apps\n",
    )?;
    let mut releases = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n");
    for i in 0..n {
        releases.push_str(&format!(
            "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: app{i}\n  namespace: bench\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: ./charts/plain\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n        namespace: flux-system\n  values:\n    message: hello-{i}\n    replicas: {}\n",
            1 + i % 3
        ));
    }
    bench_common::write(&repo.join("apps/releases.yaml"), &releases)?;

    // flux-order: one plan renders them all.
    let start = Instant::now();
    let out = Command::new(&bin)
        .args(["plan", "clusters/c", "-o", "json"])
        .current_dir(repo)
        .output()
        .context("run flux-order plan")?;
    let ours = start.elapsed();
    if !out.status.success() {
        bail!("plan failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rendered = plan["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["helmReleases"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["objectCount"].as_u64().unwrap_or(0) > 0)
        .count();
    if rendered != n {
        bail!("only {rendered} of {n} HelmReleases were rendered");
    }

    // The usual way: one helm template process per release, one after another.
    let home = tempfile::tempdir()?;
    let start = Instant::now();
    for i in 0..n {
        let values = home.path().join(format!("v{i}.yaml"));
        std::fs::write(
            &values,
            format!("message: hello-{i}\nreplicas: {}\n", 1 + i % 3),
        )?;
        let out = Command::new("helm")
            .env("HELM_CACHE_HOME", home.path())
            .env("HELM_CONFIG_HOME", home.path())
            .env("HELM_DATA_HOME", home.path())
            .args(["template", &format!("app{i}"), "-n", "bench", "-f"])
            .arg(&values)
            .arg(&chart)
            .output()
            .context("run helm template")?;
        if !out.status.success() {
            bail!(
                "helm template failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let theirs = start.elapsed();
    println!("bench-helm: {n} HelmReleases of one chart, different values");
    println!(
        "  flux-order plan (render + Flux post-renderers + plan): {:.2}s, {:.1} renders/s",
        ours.as_secs_f64(),
        n as f64 / ours.as_secs_f64()
    );
    println!(
        "  helm template, one process each:                      {:.2}s, {:.1} renders/s",
        theirs.as_secs_f64(),
        n as f64 / theirs.as_secs_f64()
    );
    println!(
        "  ratio (flux-order ÷ helm template loop): {:.2}",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), t)?;
        }
    }
    Ok(())
}
