//! Benchmark of the health gates and the scheduler: `apply` of a synthetic fleet against the
//! in-process test API server.
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/bench-apply
//! ```
//!
//! The fleet: 50 Flux Kustomizations in 5 dependency levels (10 per level, each depending on 2–3
//! of the previous level), 20 objects each (a Namespace, 7 ConfigMaps, 6 Services, 6
//! Deployments: 1,000 objects), every Deployment annotated `test.flux-order/ready-after: 2s`,
//! every Kustomization `wait: true`. The critical path of readiness is therefore 5 × 2 s = 10 s.
//!
//! It runs `kubectl-flux_order apply clusters/bench -o json --concurrency 50` (the release binary
//! next to this example) twice, each against a fresh server started in this process: once as
//! is, once with `--wave-barrier`; and reports
//!
//! * wall time ÷ 10 s (target ≤ 1.05 without the barrier);
//! * the delay between a Deployment becoming ready on the server (`TestServer::ready_events`,
//!   wall clock) and flux-order's `object-ready` event for it (`at_ms`, wall clock): median
//!   (target ≤ 100 ms), p90, max;
//! * where the time went: load, apply phase per Kustomization, dependency-to-start latency,
//!   per level, and the requests the server saw.
//!
//! It exits non-zero only on errors (including an apply that does not end all Ready), never
//! because a target is missed. `--keep` leaves the generated fleet in place (its path is printed)
//! for profiling.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{git_init, release_binary, write};
use flux_order_test_apiserver::{ServerOptions, TestServer};
use serde_json::Value;

const LEVELS: usize = 5;
const PER_LEVEL: usize = 10;
const READY_AFTER: Duration = Duration::from_secs(2);
const CONFIGMAPS: usize = 7;
const SERVICES: usize = 6;
const DEPLOYMENTS: usize = 6;
/// Objects per Kustomization: the Namespace plus the above.
const OBJECTS: usize = 1 + CONFIGMAPS + SERVICES + DEPLOYMENTS;
const RATIO_TARGET: f64 = 1.05;
const DELAY_TARGET_MS: f64 = 100.0;

fn main() -> anyhow::Result<()> {
    let bin = release_binary()?;
    let tmp = tempfile::Builder::new()
        .prefix("flux-order-bench-apply-")
        .tempdir()
        .context("create a temporary directory")?;
    let root = tmp.path().join("fleet");
    generate(&root)?;
    git_init(&root)?;
    let critical = READY_AFTER * LEVELS as u32;
    println!(
        "fleet: {} Kustomizations in {LEVELS} levels, {} objects ({} Deployments, ready after {:?}), in {}",
        LEVELS * PER_LEVEL,
        LEVELS * PER_LEVEL * OBJECTS,
        LEVELS * PER_LEVEL * DEPLOYMENTS,
        READY_AFTER,
        root.display()
    );
    println!("flux-order: {}", bin.display());
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("critical path of readiness: {LEVELS} × {READY_AFTER:?} = {critical:?}");

    let mut runs = Vec::new();
    for barrier in [false, true] {
        let r = run_once(&bin, &root, tmp.path(), barrier, &extra_args())?;
        r.print_details(critical);
        runs.push(r);
    }

    println!();
    println!(
        "{:<18} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "run", "wall s", "load s", "ratio", "target", "delay p50", "p90", "max"
    );
    for r in &runs {
        let ratio = r.wall.as_secs_f64() / critical.as_secs_f64();
        let target = if r.barrier {
            "-".to_string()
        } else {
            format!(
                "≤{RATIO_TARGET} {}",
                if ratio <= RATIO_TARGET { "ok" } else { "MISS" }
            )
        };
        println!(
            "{:<18} {:>7.2} {:>7.2} {:>8.3} {:>10} {:>7.0}ms {:>7.0}ms {:>7.0}ms",
            if r.barrier {
                "--wave-barrier"
            } else {
                "default (eager)"
            },
            r.wall.as_secs_f64(),
            r.load_s,
            ratio,
            target,
            percentile(&r.delays, 0.5),
            percentile(&r.delays, 0.9),
            percentile(&r.delays, 1.0),
        );
    }
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    let p50 = percentile(&runs[0].delays, 0.5);
    println!(
        "noticing delay median (default run): {p50:.0} ms (target ≤ {DELAY_TARGET_MS} ms: {})",
        if p50 <= DELAY_TARGET_MS {
            "met"
        } else {
            "missed"
        }
    );
    if keep {
        println!("kept the fleet in {}", tmp.keep().display());
    }
    Ok(())
}

/// What one apply run showed.
struct Run {
    barrier: bool,
    wall: Duration,
    /// From process start to `rollout-started` (connect, load, build, validate).
    load_s: f64,
    /// Noticing delays of Deployments, ms, sorted.
    delays: Vec<f64>,
    /// Per Kustomization: `started` → `all-applied`, ms, sorted.
    apply_phase: Vec<f64>,
    /// Per Kustomization of levels > 0: last dependency `finished` → `started`, ms, sorted.
    start_latency: Vec<f64>,
    /// Per Kustomization: last `object-ready` → `finished`, ms, sorted.
    gate_tail: Vec<f64>,
    /// Per level: (first started, last server ready, last finished), seconds since process start.
    levels: Vec<(f64, f64, f64)>,
    /// Requests by verb (dry-run apart; failed ones by kind and status).
    requests: BTreeMap<String, usize>,
}

impl Run {
    fn print_details(&self, critical: Duration) {
        println!();
        println!(
            "== apply{}: wall {:.2} s ({:.3} × the {:?} critical path)",
            if self.barrier { " --wave-barrier" } else { "" },
            self.wall.as_secs_f64(),
            self.wall.as_secs_f64() / critical.as_secs_f64(),
            critical
        );
        println!(
            "   load (process start → rollout-started): {:.2} s",
            self.load_s
        );
        let stat = |name: &str, v: &[f64]| {
            println!(
                "   {name:<46} median {:>6.0} ms  p90 {:>6.0} ms  max {:>6.0} ms  (n={})",
                percentile(v, 0.5),
                percentile(v, 0.9),
                percentile(v, 1.0),
                v.len()
            );
        };
        stat("apply phase (started → all-applied)", &self.apply_phase);
        stat(
            "start latency (last dep finished → started)",
            &self.start_latency,
        );
        stat("gate tail (last object-ready → finished)", &self.gate_tail);
        stat("noticing delay (server ready → object-ready)", &self.delays);
        println!(
            "   level  first started  last server-ready  last finished   (s since process start)"
        );
        for (l, (s, r, f)) in self.levels.iter().enumerate() {
            println!("   {l:>5}  {s:>13.2}  {r:>17.2}  {f:>13.2}");
        }
        let reqs: Vec<String> = self
            .requests
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("   requests: {}", reqs.join(", "));
    }
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Arguments after `--`, passed on to every `apply` (e.g. `-- --no-events` to compare).
fn extra_args() -> Vec<String> {
    std::env::args().skip_while(|a| a != "--").skip(1).collect()
}

fn run_once(
    bin: &Path,
    root: &Path,
    tmp: &Path,
    barrier: bool,
    extra: &[String],
) -> anyhow::Result<Run> {
    let server = TestServer::start(ServerOptions {
        default_ready_after: Duration::from_millis(50),
        ..ServerOptions::default()
    });
    let kubeconfig = tmp.join(format!("kubeconfig-{}", server.port()));
    server
        .write_kubeconfig(&kubeconfig)
        .context("write the kubeconfig")?;

    let mut cmd = Command::new(bin);
    cmd.args(["apply", "clusters/bench", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["-o", "json", "--concurrency", "50"])
        .args(extra);
    if barrier {
        cmd.arg("--wave-barrier");
    }
    let t0 = Instant::now();
    let t0_ms = unix_ms(SystemTime::now());
    let mut child = cmd
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", bin.display()))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Every stdout line with the wall-clock time it arrived (unix ms).
    let mut lines: Vec<(f64, Value)> = Vec::new();
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line.context("read the apply output")?;
        let at = unix_ms(SystemTime::now());
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("apply printed a line that is not JSON: {line}"))?;
        lines.push((at, v));
    }
    let status = child.wait().context("wait for apply")?;
    let wall = t0.elapsed();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("apply failed ({status}): {}", stderr.trim());
    }
    let summary = lines
        .iter()
        .find(|(_, v)| v["event"] == "summary")
        .map(|(_, v)| v)
        .context("no summary event")?;
    let results = summary["results"].as_array().context("summary.results")?;
    let not_ready: Vec<String> = results
        .iter()
        .filter(|r| r["outcome"] != "ready")
        .map(|r| format!("{} {}", r["id"], r["outcome"]))
        .collect();
    if results.len() != LEVELS * PER_LEVEL || !not_ready.is_empty() {
        bail!(
            "expected {} Ready Kustomizations, got {} results; not ready: {}",
            LEVELS * PER_LEVEL,
            results.len(),
            not_ready.join(", ")
        );
    }

    // Server side: when each Deployment became ready.
    let ready_events = server.ready_events();
    let mut server_ready: BTreeMap<String, f64> = BTreeMap::new();
    for e in &ready_events {
        if e.failed {
            bail!("server reports {:?} failed", e.object);
        }
        let label = match &e.object.namespace {
            Some(ns) => format!("{} {ns}/{}", e.object.kind, e.object.name),
            None => format!("{} {}", e.object.kind, e.object.name),
        };
        server_ready.entry(label).or_insert(unix_ms(e.wall));
    }
    let deployments = LEVELS * PER_LEVEL * DEPLOYMENTS;
    if server_ready.len() != deployments {
        bail!(
            "the server made {} objects ready, expected {deployments} Deployments",
            server_ready.len()
        );
    }

    // Client side.
    let str_of = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let mut rollout_started = None;
    let mut started: BTreeMap<String, f64> = BTreeMap::new();
    let mut all_applied: BTreeMap<String, f64> = BTreeMap::new();
    let mut finished: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_ready: BTreeMap<String, f64> = BTreeMap::new();
    let mut delays = Vec::new();
    for (at, v) in &lines {
        let id = str_of(v, "id");
        match v["event"].as_str().unwrap_or_default() {
            "rollout-started" => rollout_started = Some(*at),
            "started" => {
                started.insert(id, *at);
            }
            "all-applied" => {
                all_applied.insert(id, *at);
            }
            "finished" => {
                finished.insert(id, *at);
            }
            "object-ready" => {
                let at_ms = v["at_ms"].as_f64().context("object-ready without at_ms")?;
                let e = last_ready.entry(id).or_insert(at_ms);
                *e = e.max(at_ms);
                if let Some(ready) = server_ready.get(&str_of(v, "object")) {
                    delays.push(at_ms - ready);
                }
            }
            _ => {}
        }
    }
    if delays.len() != deployments {
        bail!(
            "matched {} object-ready events to server ready events, expected {deployments}",
            delays.len()
        );
    }
    let rollout_started = rollout_started.context("no rollout-started event")?;

    let mut apply_phase = Vec::new();
    let mut start_latency = Vec::new();
    let mut gate_tail = Vec::new();
    let mut levels = Vec::new();
    for l in 0..LEVELS {
        let (mut first_start, mut last_fin) = (f64::MAX, 0f64);
        for j in 0..PER_LEVEL {
            let id = format!("flux-system/{}", ks_name(l, j));
            let s = *started
                .get(&id)
                .with_context(|| format!("{id} never started"))?;
            let a = *all_applied
                .get(&id)
                .with_context(|| format!("{id}: no all-applied"))?;
            let f = *finished
                .get(&id)
                .with_context(|| format!("{id}: no finished"))?;
            apply_phase.push(a - s);
            if let Some(r) = last_ready.get(&id) {
                gate_tail.push(f - r);
            }
            if l > 0 {
                let dep_done = deps(j)
                    .into_iter()
                    .map(|d| finished[&format!("flux-system/{}", ks_name(l - 1, d))])
                    .fold(0f64, f64::max);
                start_latency.push(s - dep_done);
            }
            first_start = first_start.min(s);
            last_fin = last_fin.max(f);
        }
        let prefix = format!(" bench-{}-", level_name(l));
        let last_server = server_ready
            .iter()
            .filter(|(k, _)| k.contains(&prefix))
            .map(|(_, v)| *v)
            .fold(0f64, f64::max);
        let rel = |t: f64| (t - t0_ms) / 1000.0;
        levels.push((rel(first_start), rel(last_server), rel(last_fin)));
    }

    let mut requests: BTreeMap<String, usize> = BTreeMap::new();
    for r in server.requests() {
        let mut k = r.verb.as_str().to_string();
        if r.dry_run {
            k.push_str(" (dry-run)");
        }
        if !(200..300).contains(&r.status) {
            k.push_str(&format!(" {} {}", r.kind, r.status));
        }
        *requests.entry(k).or_default() += 1;
    }

    Ok(Run {
        barrier,
        wall,
        load_s: (rollout_started - t0_ms) / 1000.0,
        delays: sorted(delays),
        apply_phase: sorted(apply_phase),
        start_latency: sorted(start_latency),
        gate_tail: sorted(gate_tail),
        levels,
        requests,
    })
}

fn level_name(l: usize) -> String {
    format!("l{l}")
}

fn ks_name(l: usize, j: usize) -> String {
    format!("{}-k{j:02}", level_name(l))
}

/// Indexes in the previous level that Kustomization `j` depends on: 2 or 3 of them.
fn deps(j: usize) -> Vec<usize> {
    let mut d = vec![j, (j + 1) % PER_LEVEL];
    if j.is_multiple_of(2) {
        d.push((j + 5) % PER_LEVEL);
    }
    d
}

fn generate(root: &Path) -> anyhow::Result<()> {
    for l in 0..LEVELS {
        let mut y = String::new();
        for j in 0..PER_LEVEL {
            let name = ks_name(l, j);
            y.push_str(&format!(
                "---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: 10m
  timeout: 2m
  sourceRef:
    kind: GitRepository
    name: flux-system
  path: ./apps/{name}
  prune: true
  wait: true
"
            ));
            if l > 0 {
                y.push_str("  dependsOn:\n");
                for d in deps(j) {
                    y.push_str(&format!("    - name: {}\n", ks_name(l - 1, d)));
                }
            }
            write_app(&root.join("apps").join(&name), &name)?;
        }
        write(
            &root.join(format!("clusters/bench/{}.yaml", level_name(l))),
            &y,
        )?;
    }
    Ok(())
}

fn write_app(dir: &Path, name: &str) -> anyhow::Result<()> {
    let ns = format!("bench-{name}");
    write(
        &dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - namespace.yaml
  - configmaps.yaml
  - services.yaml
  - deployments.yaml
",
    )?;
    write(
        &dir.join("namespace.yaml"),
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    )?;
    let mut c = String::new();
    for i in 0..CONFIGMAPS {
        c.push_str(&format!(
            "---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-{i}
  namespace: {ns}
data:
  LOG_LEVEL: info
  INDEX: \"{i}\"
"
        ));
    }
    write(&dir.join("configmaps.yaml"), &c)?;
    let mut s = String::new();
    for i in 0..SERVICES {
        s.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata:
  name: svc-{i}
  namespace: {ns}
spec:
  selector:
    app.kubernetes.io/name: app-{i}
  ports:
    - name: http
      port: 80
      targetPort: 8080
"
        ));
    }
    write(&dir.join("services.yaml"), &s)?;
    let mut d = String::new();
    for i in 0..DEPLOYMENTS {
        d.push_str(&format!(
            "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: {ns}
  annotations:
    test.flux-order/ready-after: {ready}s
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: app-{i}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app-{i}
    spec:
      containers:
        - name: app
          image: registry.example.com/app:1.0.0
          ports:
            - containerPort: 8080
",
            ready = READY_AFTER.as_secs()
        ));
    }
    write(&dir.join("deployments.yaml"), &d)?;
    Ok(())
}
