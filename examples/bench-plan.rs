//! Benchmark of the build engine: `plan` on a synthetic fleet of 500 Flux Kustomizations against
//! the bare kustomize builds it cannot avoid.
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/bench-plan
//! ```
//!
//! It generates, in a temporary git work tree, `clusters/bench/*.yaml` defining 500 Flux
//! Kustomizations whose paths `./apps/appNNN` each hold a kustomization.yaml and 10 objects
//! (Deployments, Services, ConfigMaps); every third one has `postBuild.substitute` and `${var}`s in
//! its manifests, every fifth one `spec.patches`, and they form `dependsOn` chains of depth 10.
//! Then it measures, in one run:
//!
//! * (a) the wall time of `kubectl-flux_order plan clusters/bench -o json` (the release binary
//!   next to this example: `target/release/kubectl-flux_order`);
//! * (b) the sum of standalone kustomize builds of the same 500 paths run one after another
//!   (`kustomize build` if on PATH, else `kubectl kustomize`, with
//!   `--load-restrictor LoadRestrictionsNone`: the binary flux-order uses), divided by the
//!   number of cores;
//!
//! and prints both and the ratio (a) ÷ (b) (target ≤ 1.1). It exits non-zero only on errors,
//! never because of the ratio. `--keep` leaves the generated fleet in place (its path is printed)
//! for profiling.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{detect_kustomize, git_init, release_binary, write, write_grouped};

/// Flux Kustomizations generated.
const APPS: usize = 500;
/// Length of each `dependsOn` chain (app i depends on app i-1 within a chain).
const CHAIN: usize = 10;
/// Kustomizations per file under clusters/bench.
const PER_FILE: usize = 10;
/// Target of the ratio plan ÷ (sequential builds ÷ cores).
const TARGET: f64 = 1.1;

fn main() -> anyhow::Result<()> {
    let bin = release_binary()?;
    let (kustomize, subcommand) = detect_kustomize()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let tmp = tempfile::Builder::new()
        .prefix("flux-order-bench-plan-")
        .tempdir()
        .context("create a temporary directory")?;
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    let root = tmp.path().to_path_buf();
    let root = root.as_path();
    generate(root)?;
    git_init(root)?;
    println!(
        "fleet: {APPS} Kustomizations × 10 objects in {} (git work tree)",
        root.display()
    );
    println!("flux-order: {}", bin.display());
    println!("kustomize:  {} {subcommand}", kustomize.display());
    println!("cores:      {cores}");

    // (a) plan, once.
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["plan", "clusters/bench", "-o", "json"])
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    let plan_wall = t.elapsed();
    if !out.status.success() {
        bail!(
            "plan failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parse the plan's JSON output")?;
    let (ks, objects) = (
        report["kustomizations"].as_u64(),
        report["objects"].as_u64(),
    );
    if ks != Some(APPS as u64) || objects != Some(APPS as u64 * 10) {
        bail!(
            "plan saw {ks:?} Kustomizations and {objects:?} objects, expected {APPS} and {}",
            APPS * 10
        );
    }
    let waves = report["waves"].as_array().map_or(0, Vec::len);

    // (b) the same paths, built one after another by the bare kustomize.
    let mut sum = Duration::ZERO;
    for i in 0..APPS {
        let path = format!("apps/app{i:03}");
        let t = Instant::now();
        let out = Command::new(&kustomize)
            .arg(subcommand)
            .args(["--load-restrictor", "LoadRestrictionsNone"])
            .arg(&path)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("run {}", kustomize.display()))?;
        sum += t.elapsed();
        if !out.status.success() {
            bail!(
                "{} {subcommand} {path} failed: {}",
                kustomize.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let per_core = sum / cores as u32;
    let ratio = plan_wall.as_secs_f64() / per_core.as_secs_f64();

    println!();
    println!(
        "plan: {APPS} Kustomizations, {} objects, {waves} waves",
        APPS * 10
    );
    println!("{:<52} {:>9}", "measure", "seconds");
    println!(
        "{:<52} {:>9.3}",
        "(a) plan clusters/bench -o json, wall",
        plan_wall.as_secs_f64()
    );
    println!(
        "{:<52} {:>9.3}",
        format!("    sum of {APPS} sequential kustomize builds"),
        sum.as_secs_f64()
    );
    println!(
        "{:<52} {:>9.3}",
        "    mean kustomize build",
        sum.as_secs_f64() / APPS as f64
    );
    println!(
        "{:<52} {:>9.3}",
        format!("(b) sum ÷ {cores} cores"),
        per_core.as_secs_f64()
    );
    println!(
        "ratio (a) ÷ (b): {ratio:.3} (target ≤ {TARGET}: {})",
        if ratio <= TARGET { "met" } else { "missed" }
    );
    if keep {
        println!("kept the fleet in {}", tmp.keep().display());
    }
    Ok(())
}

fn generate(root: &Path) -> anyhow::Result<()> {
    write_grouped(
        APPS,
        PER_FILE,
        |file| root.join(format!("clusters/bench/apps-{file:02}.yaml")),
        flux_kustomization,
    )?;
    for i in 0..APPS {
        write_app(&root.join(format!("apps/app{i:03}")), i)?;
    }
    Ok(())
}

fn substituted(i: usize) -> bool {
    i.is_multiple_of(3)
}

fn flux_kustomization(i: usize) -> String {
    let mut y = format!(
        "---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: app{i:03}
  namespace: flux-system
spec:
  interval: 10m
  retryInterval: 1m
  timeout: 5m
  sourceRef:
    kind: GitRepository
    name: flux-system
  path: ./apps/app{i:03}
  prune: true
"
    );
    if i.is_multiple_of(2) {
        y.push_str("  wait: true\n");
    } else {
        let _ = write!(
            y,
            "  healthChecks:\n    - apiVersion: apps/v1\n      kind: Deployment\n      name: app{i:03}-web\n      namespace: app{i:03}\n"
        );
    }
    if !i.is_multiple_of(CHAIN) {
        let _ = write!(y, "  dependsOn:\n    - name: app{:03}\n", i - 1);
    }
    if substituted(i) {
        let _ = write!(
            y,
            "  postBuild:\n    substitute:\n      app_name: app{i:03}\n      cluster_env: bench\n      replicas: \"{}\"\n",
            1 + i % 3
        );
    }
    if i.is_multiple_of(5) {
        let _ = write!(
            y,
            "  patches:
    - target:
        kind: Deployment
        name: app{i:03}-web
      patch: |
        - op: replace
          path: /spec/replicas
          value: 3
    - target:
        kind: ConfigMap
        name: app{i:03}-settings
      patch: |
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: app{i:03}-settings
        data:
          patched: \"true\"
"
        );
    }
    y
}

fn write_app(dir: &Path, i: usize) -> anyhow::Result<()> {
    let app = format!("app{i:03}");
    let sub = substituted(i);
    write(
        &dir.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {app}
labels:
  - pairs:
      app.kubernetes.io/part-of: {app}
resources:
  - deployments.yaml
  - services.yaml
  - configmaps.yaml
"
        ),
    )?;
    let image = if sub {
        "registry.example.com/${app_name}/COMP:${version:=1.0.0}".to_string()
    } else {
        format!("registry.example.com/{app}/COMP:1.0.0")
    };
    let replicas = if sub { "${replicas}" } else { "2" };
    let mut d = String::new();
    for comp in ["web", "api", "worker", "scheduler"] {
        let _ = write!(
            d,
            "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}-{comp}
  labels:
    app.kubernetes.io/name: {app}-{comp}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app.kubernetes.io/name: {app}-{comp}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {app}-{comp}
    spec:
      containers:
        - name: {comp}
          image: {image}
          ports:
            - containerPort: 8080
          envFrom:
            - configMapRef:
                name: {app}-settings
          resources:
            requests:
              cpu: 10m
              memory: 32Mi
",
            image = image.replace("COMP", comp)
        );
    }
    write(&dir.join("deployments.yaml"), &d)?;
    let mut s = String::new();
    for comp in ["web", "api", "worker"] {
        let _ = write!(
            s,
            "---
apiVersion: v1
kind: Service
metadata:
  name: {app}-{comp}
spec:
  selector:
    app.kubernetes.io/name: {app}-{comp}
  ports:
    - name: http
      port: 80
      targetPort: 8080
"
        );
    }
    write(&dir.join("services.yaml"), &s)?;
    let env = if sub { "${cluster_env}" } else { "bench" };
    let name = if sub { "${app_name}" } else { app.as_str() };
    let c = format!(
        "---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {app}-settings
data:
  APP_NAME: {name}
  CLUSTER_ENV: {env}
  LOG_LEVEL: info
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {app}-features
data:
  features.yaml: |
    search: true
    beta: false
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {app}-scripts
data:
  start.sh: |
    #!/bin/sh
    exec /app/server --port 8080
"
    );
    write(&dir.join("configmaps.yaml"), &c)?;
    Ok(())
}
