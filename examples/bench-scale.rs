//! Benchmark of scale: flux-order's own memory and time on a fleet of 50,000 objects.
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/bench-scale            # 5,000 Kustomizations × 10 ConfigMaps
//! target/release/examples/bench-scale --quick    # 500 Kustomizations × 10 ConfigMaps
//! ```
//!
//! It generates, in a temporary git work tree, `clusters/scale/*.yaml` defining N Flux
//! Kustomizations (`flux-system/kNNNN`, 50 per file) whose paths `./apps/kNNNN` each hold a
//! kustomization.yaml (`namespace: team-NN`, one of 50) and 10 ConfigMaps; every third one has
//! `postBuild.substitute` with `${var}`s in its ConfigMaps, every fifth one `spec.patches`, and
//! they form `dependsOn` chains of depth 10 (10 waves). Then, in one run:
//!
//! * `plan clusters/scale -o json` (checked: N Kustomizations, 10 N objects);
//! * the same N paths built by the bare kustomize (`kustomize build`, else `kubectl kustomize`, with
//!   `--load-restrictor LoadRestrictionsNone`), one process per core at a time: the sum of their
//!   CPU time (user + system, from this process's reaped-children counters) ÷ cores is the work an
//!   ideal engine cannot avoid, and plan's wall time is reported as a ratio of it (target ≤ 0.5);
//! * against a fresh in-process test API server (the 50 namespaces created first): `apply`
//!   (checked: every Kustomization Ready), the same `apply` again (checked: every Kustomization
//!   unchanged) and `status` (checked: every row ready);
//!
//! and prints, per command, the wall time, flux-order's own peak RSS (`VmHWM` of its process,
//! sampled every 2 ms from `/proc/<pid>/status`: its kustomize and helm children are not counted,
//! and VmHWM is a high-water mark, so a sample taken any time after the peak sees it), objects per
//! second, and the requests the server saw by verb. Target: peak RSS ≤ 200 MB for plan and apply at
//! 50,000 objects. It exits non-zero only on errors (a failed command, output that does not match
//! the fleet), never because a target is missed. `--keep` leaves the fleet in place; `--generate
//! DIR` only writes the fleet into DIR (for profiling a command on it by hand); `--no-baseline`
//! skips the standalone kustomize builds (and so the ratio) for a quicker look at the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flux_order_test_apiserver::{ServerOptions, TestServer};
use serde_json::{Value, json};

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{detect_kustomize, git_init, release_binary, write, write_grouped};

/// ConfigMaps per Kustomization.
const OBJECTS: usize = 10;
/// Length of each `dependsOn` chain.
const CHAIN: usize = 10;
/// Kustomizations per file under clusters/scale.
const PER_FILE: usize = 50;
/// Namespaces the objects are spread over.
const NAMESPACES: usize = 50;
/// Peak RSS target for plan and apply, bytes.
const RSS_TARGET: u64 = 200 * 1024 * 1024;
/// Target of plan wall ÷ (kustomize CPU ÷ cores).
const RATIO_TARGET: f64 = 0.5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let n = if flag("--quick") { 500 } else { 5000 };
    let bin = release_binary()?;
    let (kustomize, subcommand) = detect_kustomize()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    if let Some(dir) = args
        .iter()
        .position(|a| a == "--generate")
        .and_then(|i| args.get(i + 1))
    {
        // Only write the fleet, for profiling a command on it by hand.
        let root = Path::new(dir);
        generate(root, n)?;
        git_init(root)?;
        println!("wrote {n} Kustomizations × {OBJECTS} ConfigMaps to {dir}");
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("flux-order-bench-scale-")
        .tempdir()
        .context("create a temporary directory")?;
    let root = tmp.path().join("fleet");
    generate(&root, n)?;
    git_init(&root)?;
    let objects = n * OBJECTS;
    println!(
        "fleet: {n} Kustomizations × {OBJECTS} ConfigMaps = {objects} objects, {CHAIN} waves, in {}",
        root.display()
    );
    println!("flux-order: {}", bin.display());
    println!("kustomize:  {} {subcommand}", kustomize.display());
    println!("cores:      {cores}");

    let mut rows = Vec::new();

    // plan
    let plan = measure(&bin, &root, &["plan", "clusters/scale", "-o", "json"])?;
    plan.expect_success("plan")?;
    let report: Value =
        serde_json::from_slice(&plan.stdout).context("parse the plan's JSON output")?;
    if report["kustomizations"].as_u64() != Some(n as u64)
        || report["objects"].as_u64() != Some(objects as u64)
    {
        bail!(
            "plan saw {} Kustomizations and {} objects, expected {n} and {objects}",
            report["kustomizations"],
            report["objects"]
        );
    }
    rows.push(("plan -o json", plan, BTreeMap::new()));

    // The bare kustomize builds of the same paths, one process per core at a time.
    let cpu = if flag("--no-baseline") {
        None
    } else {
        Some(kustomize_cpu(&kustomize, subcommand, &root, n, cores)?)
    };

    // apply, apply again, status: against a fresh test API server.
    let server = TestServer::start(ServerOptions::default());
    for t in 0..NAMESPACES {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": format!("team-{t:02}")}}))
            .context("create a namespace")?;
    }
    let kubeconfig = tmp.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .context("write the kubeconfig")?;
    let kc = kubeconfig.to_str().context("kubeconfig path")?;
    let apply_args = [
        "apply",
        "clusters/scale",
        "--kubeconfig",
        kc,
        "-o",
        "json",
        "--no-events",
        "--retry-for",
        "0",
    ];
    for (name, expect) in [("apply", "ready"), ("apply (unchanged)", "unchanged")] {
        server.clear_requests();
        let run = measure(&bin, &root, &apply_args)?;
        run.expect_success(name)?;
        let summary = String::from_utf8_lossy(&run.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .context("apply printed no summary event")?;
        let results = summary["results"].as_array().context("summary.results")?;
        let off: Vec<String> = results
            .iter()
            .filter(|r| r["outcome"] != expect)
            .take(5)
            .map(|r| format!("{} {}", r["id"], r["outcome"]))
            .collect();
        if results.len() != n || !off.is_empty() {
            bail!(
                "{name}: expected {n} Kustomizations {expect}, got {} results; e.g. {}",
                results.len(),
                off.join(", ")
            );
        }
        rows.push((name, run, requests_by_verb(&server)));
    }
    server.clear_requests();
    let status = measure(&bin, &root, &["status", "--kubeconfig", kc, "-o", "json"])?;
    status.expect_success("status")?;
    let st: Value = serde_json::from_slice(&status.stdout).context("parse status JSON")?;
    let st_rows = st
        .as_array()
        .or_else(|| st["kustomizations"].as_array())
        .context("status JSON rows")?;
    let not_ready = st_rows.iter().filter(|r| r["ready"] != true).count();
    if st_rows.len() < n || not_ready > 0 {
        bail!(
            "status: {} rows, {not_ready} not ready (expected {n} ready)",
            st_rows.len()
        );
    }
    rows.push(("status", status, requests_by_verb(&server)));

    println!();
    println!(
        "{:<20} {:>9} {:>12} {:>10}  requests by verb",
        "command", "wall s", "peak RSS MB", "objects/s"
    );
    for (name, run, requests) in &rows {
        let verbs = requests
            .iter()
            .map(|(v, c)| format!("{v} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<20} {:>9.2} {:>12.1} {:>10.0}  {}",
            name,
            run.wall.as_secs_f64(),
            mb(run.peak_rss),
            objects as f64 / run.wall.as_secs_f64(),
            if verbs.is_empty() { "-" } else { &verbs }
        );
    }
    println!();
    if let Some(cpu) = cpu {
        let ideal = cpu / cores as u32;
        let ratio = rows[0].1.wall.as_secs_f64() / ideal.as_secs_f64();
        println!(
            "kustomize CPU of {n} standalone builds: {:.2} s ({:.1} ms each); ÷ {cores} cores = {:.2} s",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0 / n as f64,
            ideal.as_secs_f64()
        );
        println!(
            "ratio plan wall ÷ (kustomize CPU ÷ cores): {ratio:.3} (target ≤ {RATIO_TARGET}: {})",
            met(ratio <= RATIO_TARGET)
        );
    }
    for (name, run, _) in rows.iter().filter(|(name, ..)| !name.starts_with("status")) {
        println!(
            "peak RSS {name}: {:.1} MB (target ≤ {} MB at 50,000 objects: {})",
            mb(run.peak_rss),
            RSS_TARGET / 1024 / 1024,
            met(run.peak_rss <= RSS_TARGET)
        );
    }
    if flag("--keep") {
        println!("kept the fleet in {}", tmp.keep().display());
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// One run of the binary.
struct Run {
    status: std::process::ExitStatus,
    wall: Duration,
    /// flux-order's own VmHWM, bytes.
    peak_rss: u64,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn expect_success(&self, what: &str) -> anyhow::Result<()> {
        if !self.status.success() {
            bail!("{what} failed ({}): {}", self.status, self.stderr.trim());
        }
        Ok(())
    }
}

/// Runs `bin args` in `dir`, sampling its VmHWM until it exits.
fn measure(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("run {}", bin.display()))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|s| vm_hwm(&s))
        {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().context("wait")? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = t.elapsed();
    Ok(Run {
        status,
        wall,
        peak_rss: peak,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// `VmHWM:  123456 kB` → bytes.
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) of this process's reaped children so far, from /proc/self/stat.
fn children_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("parse /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of stat(5), i.e. 13 and 14 after the name.
    let ticks: u64 = fields
        .get(13..15)
        .context("parse /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// Builds the N paths with the bare kustomize, `cores` at a time; the CPU time they took.
fn kustomize_cpu(
    kustomize: &Path,
    subcommand: &str,
    root: &Path,
    n: usize,
    cores: usize,
) -> anyhow::Result<Duration> {
    let before = children_cpu()?;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..cores)
        .map(|_| {
            let next = next.clone();
            let (kustomize, subcommand, root) = (
                kustomize.to_path_buf(),
                subcommand.to_string(),
                root.to_path_buf(),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let path = format!("apps/k{i:04}");
                    let out = Command::new(&kustomize)
                        .arg(&subcommand)
                        .args(["--load-restrictor", "LoadRestrictionsNone"])
                        .arg(&path)
                        .current_dir(&root)
                        .stdin(Stdio::null())
                        .output()
                        .with_context(|| format!("run {}", kustomize.display()))?;
                    if !out.status.success() {
                        bail!(
                            "{} {subcommand} {path} failed: {}",
                            kustomize.display(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a build worker panicked"))??;
    }
    Ok(children_cpu()? - before)
}

/// Requests the server saw, by verb (dry-run apart).
fn requests_by_verb(server: &TestServer) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in server.requests() {
        let verb = format!("{:?}{}", r.verb, if r.dry_run { " (dry-run)" } else { "" });
        *by.entry(verb).or_default() += 1;
    }
    by
}

fn substituted(i: usize) -> bool {
    i.is_multiple_of(3)
}

fn generate(root: &Path, n: usize) -> anyhow::Result<()> {
    write_grouped(
        n,
        PER_FILE,
        |file| root.join(format!("clusters/scale/ks-{file:03}.yaml")),
        flux_kustomization,
    )?;
    for i in 0..n {
        write_app(&root.join(format!("apps/k{i:04}")), i)?;
    }
    Ok(())
}

fn flux_kustomization(i: usize) -> String {
    let mut y = format!(
        "---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: k{i:04}
  namespace: flux-system
spec:
  interval: 10m
  timeout: 5m
  sourceRef:
    kind: GitRepository
    name: flux-system
  path: ./apps/k{i:04}
  prune: true
  wait: true
"
    );
    if !i.is_multiple_of(CHAIN) {
        let _ = write!(y, "  dependsOn:\n    - name: k{:04}\n", i - 1);
    }
    if substituted(i) {
        let _ = write!(
            y,
            "  postBuild:\n    substitute:\n      app_name: k{i:04}\n      cluster_env: scale\n"
        );
    }
    if i.is_multiple_of(5) {
        let _ = write!(
            y,
            "  patches:
    - target:
        kind: ConfigMap
        name: k{i:04}-cm0
      patch: |
        - op: add
          path: /data/patched
          value: \"true\"
"
        );
    }
    y
}

fn write_app(dir: &Path, i: usize) -> anyhow::Result<()> {
    let app = format!("k{i:04}");
    write(
        &dir.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: team-{:02}
labels:
  - pairs:
      app.kubernetes.io/part-of: {app}
resources:
  - configmaps.yaml
",
            i % NAMESPACES
        ),
    )?;
    let (name, env) = if substituted(i) {
        ("${app_name}", "${cluster_env}")
    } else {
        (app.as_str(), "scale")
    };
    let mut c = String::new();
    for j in 0..OBJECTS {
        let _ = write!(
            c,
            "---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {app}-cm{j}
data:
  APP_NAME: {name}
  CLUSTER_ENV: {env}
  LOG_LEVEL: info
  settings.yaml: |
    replicas: {j}
    features:
      search: true
      beta: false
"
        );
    }
    write(&dir.join("configmaps.yaml"), &c)
}
