//! A real control plane for flux-order's real-cluster test tier: etcd, kube-apiserver and
//! kube-controller-manager (built from their Go modules by `scripts/test-deps`, run by
//! `scripts/real-cluster` on 127.0.0.1), plus a small kubelet stand-in ([`kubelet`]) that binds pods
//! to one node and marks them Running/Ready, Succeeded or Failed after a delay chosen by annotation,
//! and binds PVCs.
//!
//! One control plane serves a whole test run ([`shared`]); each test takes a [`Session`]: its own
//! user (a static token of the API server), so the audit log tells its requests apart from every
//! other test's, and its own namespaces by convention. The control plane stops when the test
//! process exits (the supervisor script watches its standard input).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub mod kubelet;

/// How many per-test users the API server knows (`test-1` … `test-N`).
pub const USERS: usize = 400;

/// The annotation the kubelet stand-in reads on a pod (or its template): `2s`, `200ms`, `never`,
/// `fail`; absent means at once. The same annotation drives the test API server's simulated
/// controllers, so fixtures serve both tiers.
pub const READY_AFTER: &str = "test.flux-order/ready-after";

/// A running control plane.
pub struct RealCluster {
    dir: PathBuf,
    url: String,
    next_user: AtomicUsize,
    _supervisor: Mutex<(Child, ChildStdin)>,
    _kubelet: kubelet::Handle,
}

impl std::fmt::Debug for RealCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealCluster")
            .field("url", &self.url)
            .finish()
    }
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The control plane shared by every test of this process, started on first use. Panics with the
/// command that installs the binaries when they are missing: the README's test command installs
/// them, so a missing binary is a broken set-up, not a reason to skip.
pub fn shared() -> &'static RealCluster {
    static CLUSTER: OnceLock<RealCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        RealCluster::start().unwrap_or_else(|e| {
            panic!("cannot start the real control plane: {e}\n(run scripts/test-deps first; the README's test command does)")
        })
    })
}

impl RealCluster {
    /// Starts etcd, kube-apiserver, kube-controller-manager and the kubelet stand-in.
    pub fn start() -> Result<Self, String> {
        let tmp = tempfile::Builder::new()
            .prefix("flux-order-real-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        // The supervisor removes the directory when it stops (after the test process exits, when
        // no destructor runs).
        let dir = tmp.keep();
        let script = repo_root().join("scripts/real-cluster");
        let mut child = Command::new(&script)
            .env("REAL_CLUSTER_REMOVE", "1")
            .arg(&dir)
            .arg(USERS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("ready ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(dir.join("kube-apiserver.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                return Err(format!(
                    "scripts/real-cluster did not become ready; kube-apiserver.log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        };
        let kubelet = kubelet::start(&dir.join("kubeconfig-kubelet"))?;
        Ok(RealCluster {
            dir,
            url,
            next_user: AtomicUsize::new(0),
            _supervisor: Mutex::new((child, stdin)),
            _kubelet: kubelet,
        })
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig (user `admin`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A fresh session: a user of its own (`test-N`) with its kubeconfig.
    pub fn session(&self) -> Session {
        let n = self.next_user.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(n <= USERS, "more than {USERS} sessions in one test run");
        Session {
            user: format!("test-{n}"),
            kubeconfig: self.dir.join(format!("kubeconfig-test-{n}")),
            audit: self.dir.join("audit.log"),
        }
    }
}

/// One test's view of the shared control plane.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user its kubeconfig authenticates as.
    pub user: String,
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    audit: PathBuf,
}

/// One request of the audit log (stage ResponseComplete).
#[derive(Debug, Clone)]
pub struct Audited {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// Resource (plural), with `/subresource` when there is one.
    pub resource: String,
    /// Namespace, when namespaced.
    pub namespace: Option<String>,
    /// Object name, when the request names one.
    pub name: Option<String>,
    /// HTTP status code.
    pub code: u16,
    /// The request URI.
    pub uri: String,
}

impl Audited {
    /// Whether the request was a dry run.
    pub fn dry_run(&self) -> bool {
        self.uri.contains("dryRun=All")
    }

    /// Whether it changed state: a write verb, 2xx, not a dry run.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && (200..300).contains(&self.code)
            && !self.dry_run()
    }
}

impl std::fmt::Display for Audited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}{} -> {}{}",
            self.verb,
            self.resource,
            self.namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            self.name.as_deref().unwrap_or(""),
            self.code,
            if self.dry_run() { " (dry-run)" } else { "" }
        )
    }
}

impl Session {
    /// Every request this session's user made, in order, read from the real audit log.
    pub fn requests(&self) -> Vec<Audited> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["stage"] == "ResponseComplete" && e["user"]["username"] == self.user.as_str()
            })
            .map(|e| {
                let r = &e["objectRef"];
                let s = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
                let resource = match (s(&r["resource"]), s(&r["subresource"])) {
                    (Some(res), Some(sub)) => format!("{res}/{sub}"),
                    (Some(res), None) => res,
                    (None, _) => String::new(),
                };
                Audited {
                    verb: e["verb"].as_str().unwrap_or("").to_string(),
                    resource,
                    namespace: s(&r["namespace"]),
                    name: s(&r["name"]),
                    code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                    uri: e["requestURI"].as_str().unwrap_or("").to_string(),
                }
            })
            .collect()
    }

    /// The requests of this session that changed state.
    pub fn writes(&self) -> Vec<Audited> {
        self.requests()
            .into_iter()
            .filter(Audited::is_write)
            .collect()
    }
}
