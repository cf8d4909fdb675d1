//! A test-only Kubernetes API server on 127.0.0.1 for flux-order's end-to-end tests and
//! benchmarks.
//!
//! It speaks enough of the real API (discovery, CRUD, server-side apply with managed fields,
//! watch, status subresources, dry-run, immutable-field validation) for the `kube` client and
//! `kubectl` to work against it, simulates the controllers that make workloads ready, and offers
//! fault injection and a request log for assertions.
//!
//! ```no_run
//! use flux_order_test_apiserver::{ServerOptions, TestServer};
//! let server = TestServer::start(ServerOptions::default());
//! server.write_kubeconfig("/tmp/kubeconfig").unwrap();
//! // run kubectl / the plugin with KUBECONFIG=/tmp/kubeconfig
//! ```
//!
//! # Like kube-apiserver v1.36 where a client could tell
//!
//! A home-made server drifts toward what its client expects; this one is held to the shapes
//! a real kube-apiserver (v1.36, default feature gates, with kube-controller-manager) gives.
//! Each item below was once kinder here than there:
//!
//! - **LIST items are untyped.** The items of a LIST (and of a deletecollection) of a built-in
//!   kind carry no `kind` and no `apiVersion`; only the list says `kind: XList`. A GET, watch
//!   events (also a watch's initial ADDED events) and write responses are typed. Custom
//!   resources are listed as unstructured objects and keep their `kind`/`apiVersion`, as on
//!   the real server. ([`TestServer::list`] is a convenience API and returns typed objects.)
//! - **Defaulting.** Every write (create, update, patch, apply, dry-run too) gets the typed
//!   API's `SetDefaults_*`: Deployment `replicas: 1`, `progressDeadlineSeconds: 600`,
//!   `revisionHistoryLimit: 10`, `strategy` RollingUpdate 25%/25%; StatefulSet
//!   `podManagementPolicy`, `updateStrategy` (partition 0), PVC retention policy, typed
//!   `volumeClaimTemplates` with `status.phase: Pending`; DaemonSet `updateStrategy` (1/0);
//!   Job `backoffLimit: 6`, `completions`/`parallelism: 1`, `completionMode`, `suspend`,
//!   `manualSelector`, `podReplacementPolicy`; CronJob policies and history limits; pod
//!   templates' `restartPolicy`, `dnsPolicy`, `securityContext: {}`,
//!   `terminationGracePeriodSeconds: 30`, `schedulerName`; containers' `imagePullPolicy` (by
//!   tag), `terminationMessagePath`/`Policy`, port `protocol`, probe timings, volume
//!   `defaultMode: 420`; Service `type`, `sessionAffinity`, traffic policies, port
//!   `protocol`/`targetPort`, IP families, node ports (kept across updates by port name);
//!   PVC/PV `volumeMode`; CRD `singular`/`listKind`/`conversion`. For non-apply writes the
//!   creating manager owns the defaulted fields (the body is decoded with defaults); an
//!   applier owns only what it sent.
//! - **Registry strategies.** A Job gets its generated selector and template labels
//!   (`batch.kubernetes.io/controller-uid`, `job-name`), a DaemonSet its
//!   `deprecated.daemonset.template.generation` annotation (bumped with the template), a
//!   Namespace the `kubernetes` finalizer.
//! - **Status on create** is the typed status the API server returns, never a controller's:
//!   `status: {}` for Deployments, Jobs and CronJobs, `{replicas: 0}` for ReplicaSets,
//!   `{replicas: 0, availableReplicas: 0}` for StatefulSets, four zero counters for
//!   DaemonSets, `{phase: Pending}` for PVCs, `{phase: Pending, qosClass}` for Pods,
//!   `{loadBalancer: {}}` for Services and Ingresses, zero counters for PDBs, an unaccepted
//!   status for CRDs.
//! - **`metadata.generation`** exists only for kinds whose strategy keeps it (workloads, Pods,
//!   Ingresses, PDBs, CRDs, every custom resource) — not for ConfigMaps, Secrets, Services,
//!   Namespaces, PVCs, RBAC objects or HPAs. A Deployment's annotations bump it too; a custom
//!   resource without a status subresource bumps it for status changes.
//! - **Controllers act after the write**, [`ServerOptions::controller_delay`] later, and fill
//!   status in the real controllers' order. A Deployment first gets its new ReplicaSet's
//!   `deployment.kubernetes.io/revision` and `Progressing=True (NewReplicaSetCreated)`, then
//!   `observedGeneration` with `unavailableReplicas`, `terminatingReplicas: 0` and
//!   `Available=False (MinimumReplicasUnavailable)`, then `replicas`/`updatedReplicas` with
//!   `Progressing (ReplicaSetUpdated)`, and only when ready `readyReplicas`/`availableReplicas`,
//!   `Available=True` and `Progressing (NewReplicaSetAvailable)`, conditions in the real order.
//!   During a template change the old pods keep serving. Only a new template or a scale-up
//!   starts pods (`ready-after` applies to them); an annotation or scale-down is observed and
//!   done. StatefulSets replace pods from the highest ordinal, with `currentRevision` /
//!   `updateRevision`; Jobs report `active`, `ready`, `terminating`, and on failure
//!   `failed: backoffLimit + 1`; Pods go Pending/PodScheduled, Running not ready, then ready;
//!   CRDs go NamesAccepted and `Established=False (Installing)` before `Established=True`;
//!   a new Namespace gets the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap
//!   (the built-in ones have them at start, and `default` holds the `kubernetes` Service).
//! - **DELETE** answers a `Success` Status naming the object for most kinds (the object
//!   itself only for Pods, Services, PVCs, PVs, Namespaces, ServiceAccounts, ...); 200, or
//!   202 only with `orphanDependents: false`. Namespaces and CRDs terminate through their
//!   server-side finalizers ([`ServerOptions::finalizer_delay`]): a terminating Namespace
//!   refuses new content, a terminating CRD shows its cleanup finalizer and a `Terminating`
//!   condition.
//! - **Validation** repeated from the real server: undeclared top-level or `metadata` fields
//!   of a built-in kind fail a server-side apply with the real 500 ("failed to create typed
//!   patch object ... field not declared in schema") and are dropped from other writes; a
//!   workload's selector must select its template; a Job's `restartPolicy` must be `Never` or
//!   `OnFailure`; names, immutable fields.
//! - **Watch and list options** are validated as `ValidateListOptions` does
//!   (`sendInitialEvents` only with `resourceVersionMatch=NotOlderThan`, never on a LIST);
//!   `sendInitialEvents=true` starts with the current state whatever the resourceVersion, and
//!   ends it with the `k8s.io/initial-events-end` bookmark when bookmarks are allowed.
//! - **LIST pagination.** `limit` and `continue` as the etcd3 storage serves them: pages in
//!   key order (`namespace/name` across namespaces), the real server's opaque token, later
//!   pages read from the first page's snapshot (its `resourceVersion`), `remainingItemCount`
//!   only when no selector filters the list, 400 for a malformed token or a token with a
//!   `resourceVersion`, 410 Expired for a token older than the last compaction.
//! - `/version` says v1.36.
//!
//! # Simplifications that remain
//!
//! - No schemas: unknown fields are found at the top level and in `metadata` only, not deeper,
//!   and custom resources are not validated or pruned; non-apply writes drop unknown fields
//!   without the `Warning` header the real server sends.
//! - No child objects: Deployments create no ReplicaSets or Pods, StatefulSets no
//!   ControllerRevisions or PVCs, Services no EndpointSlices; so no garbage collection,
//!   `propagationPolicy` is ignored and nothing terminates gracefully (a Pod is gone at
//!   once, `terminatingReplicas` stays 0).
//! - Rollouts start all new pods at once (no `maxSurge`/`maxUnavailable` pacing); a
//!   Deployment with `paused: true` still rolls out; one node.
//! - Resource quantities are stored as sent (the real server canonicalises `0.5` to `500m`,
//!   `1024Mi` to `1Gi`).
//! - The watch history is never compacted: no `410 Gone` for old resourceVersions of a watch
//!   ([`TestServer::compact`] expires the `continue` tokens of paginated LISTs only); a
//!   resourceVersion in a server-side apply body is ignored, not a precondition; LIST ignores
//!   `resourceVersionMatch` semantics.
//! - Admission is not simulated (ServiceAccount token volumes, default tolerations,
//!   priority, the PVC protection finalizer, default StorageClasses).
//! - Fault injection and the `test.flux-order/ready-after` / `delete-after` annotations are
//!   deliberately unlike a real server: they make objects fail, hang or linger on demand.
#![warn(missing_docs)]

mod apply;
mod controllers;
mod defaults;
mod discovery;
mod faults;
mod handlers;
mod kubeconfig;
mod log;
mod paging;
mod protobuf;
mod selector;
mod store;
mod table;
mod verbs;
mod watch;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

pub use controllers::parse_duration;
pub use faults::{Fault, FaultAction, FaultId, Matcher, Trigger};
pub use log::{RequestLog, Verb};

/// Annotation setting how long a simulated controller takes to make an object ready:
/// a Go-like duration (`2s`, `500ms`), `never`, `fail`, or `fail:2s`.
pub const READY_AFTER_ANNOTATION: &str = "test.flux-order/ready-after";
/// Annotation making a DELETE set `deletionTimestamp` and remove the object after this duration.
pub const DELETE_AFTER_ANNOTATION: &str = "test.flux-order/delete-after";

/// How to start the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Delay before un-annotated workloads become ready.
    pub default_ready_after: Duration,
    /// Delay before a new CRD becomes Established (and its resources are served).
    pub crd_establish_delay: Duration,
    /// Create `default`, `kube-system`, `kube-public` and `kube-node-lease` at start.
    pub builtin_namespaces: bool,
    /// How long a simulated controller takes to notice a create or spec change (and, once more,
    /// for the pods it starts to exist). Until then the object shows the status the API server
    /// gave it (`status: {}` for a Deployment).
    pub controller_delay: Duration,
    /// How long the server-side finalizers of a deleted Namespace (`kubernetes`) or CRD
    /// (`customresourcecleanup.apiextensions.k8s.io`) take: until then the object is
    /// terminating (a Namespace refuses new content).
    pub finalizer_delay: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            port: 0,
            default_ready_after: Duration::ZERO,
            crd_establish_delay: Duration::from_millis(100),
            builtin_namespaces: true,
            controller_delay: Duration::from_millis(2),
            finalizer_delay: Duration::from_millis(50),
        }
    }
}

/// Identifies an object in [`ReadyEvent`]s.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `group/version` or `v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (None for cluster-scoped).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// A simulated controller finished an object (ready, or terminally failed).
#[derive(Clone, Debug)]
pub struct ReadyEvent {
    /// The object.
    pub object: ObjectKey,
    /// True for a terminal failure (`ready-after: fail`).
    pub failed: bool,
    /// When (monotonic).
    pub at: Instant,
    /// When (wall clock).
    pub wall: SystemTime,
    /// Time since the server started.
    pub since_start: Duration,
    /// The generation that became ready.
    pub generation: i64,
}

/// State shared by the HTTP handlers, the watch tasks and the controllers.
pub(crate) struct Shared {
    pub state: Mutex<store::State>,
    pub rv_tx: Arc<tokio::sync::watch::Sender<u64>>,
    pub timer_wake: Arc<tokio::sync::Notify>,
    pub faults: Mutex<faults::Faults>,
    pub log: Mutex<Vec<RequestLog>>,
    pub seq: AtomicU64,
    pub opts: ServerOptions,
    pub start: Instant,
}

/// Per-connection handle: setting `kill` makes the connection fail its next read/write,
/// so hyper drops it without sending a response.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    pub kill: Arc<AtomicBool>,
}

struct KillableListener(TcpListener);

struct KillableIo {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableIo;
    type Addr = ConnHandle;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (
                        KillableIo {
                            inner: s,
                            kill: kill.clone(),
                        },
                        ConnHandle { kill },
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnHandle {
            kill: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, KillableListener>>
    for ConnHandle
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A running test API server. Dropping it shuts it down.
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Start on 127.0.0.1 with its own runtime on a background thread. Panics if it cannot bind.
    pub fn start(opts: ServerOptions) -> TestServer {
        TestServer::try_start(opts).expect("start test API server")
    }

    /// Like [`TestServer::start`], for async callers (the server still runs on its own thread).
    pub async fn start_async(opts: ServerOptions) -> TestServer {
        TestServer::start(opts)
    }

    /// Start, returning bind errors.
    pub fn try_start(opts: ServerOptions) -> anyhow::Result<TestServer> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", opts.port))
            .with_context(|| format!("bind 127.0.0.1:{}", opts.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (rv_tx, _) = tokio::sync::watch::channel(1u64);
        let rv_tx = Arc::new(rv_tx);
        let timer_wake = Arc::new(tokio::sync::Notify::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(store::State::new(rv_tx.clone(), timer_wake.clone())),
            rv_tx,
            timer_wake,
            faults: Mutex::new(faults::Faults::default()),
            log: Mutex::new(vec![]),
            seq: AtomicU64::new(0),
            opts: opts.clone(),
            start: Instant::now(),
        });
        let mut server = TestServer {
            shared: shared.clone(),
            addr,
            shutdown: None,
            thread: None,
        };
        if opts.builtin_namespaces {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                server.create(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )?;
            }
            // A test starts on a cluster that has been up for a while: the controllers filled the
            // namespaces (later ones are filled asynchronously, as on a real cluster).
            {
                let mut st = server.lock();
                for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                    controllers::populate_namespace(&mut st, &opts, ns);
                }
            }
            // The Service kube-apiserver keeps for itself.
            server.create(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": "10.96.0.1",
                    "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}))?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("test-apiserver-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    tokio::spawn(controllers::run(shared.clone()));
                    let app = axum::Router::new()
                        .fallback(handlers::handle)
                        .with_state(shared)
                        .into_make_service_with_connect_info::<ConnHandle>();
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        _ = axum::serve(KillableListener(listener), app) => {}
                        _ = rx => {}
                    }
                });
                rt.shutdown_background();
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("server thread died"))??;
        server.shutdown = Some(tx);
        server.thread = Some(thread);
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Kubeconfig text: cluster/context/user `test`, current-context `test`.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(&self.url())
    }

    /// Write [`TestServer::kubeconfig`] to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<std::path::Path>) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Inject a fault; it stays until removed or cleared.
    pub fn inject(&self, fault: Fault) -> FaultId {
        self.shared
            .faults
            .lock()
            .expect("faults lock")
            .inject(fault)
    }

    /// Remove one fault.
    pub fn remove_fault(&self, id: FaultId) {
        self.shared
            .faults
            .lock()
            .expect("faults lock")
            .active
            .retain(|a| a.id != id);
    }

    /// Remove all faults.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .expect("faults lock")
            .active
            .clear();
    }

    /// How many times a fault triggered.
    pub fn fault_hits(&self, id: FaultId) -> u64 {
        self.shared
            .faults
            .lock()
            .expect("faults lock")
            .active
            .iter()
            .find(|a| a.id == id)
            .map_or(0, |a| a.triggered)
    }

    /// Every request so far, in completion order.
    pub fn requests(&self) -> Vec<RequestLog> {
        let mut v = self.shared.log.lock().expect("log lock").clone();
        v.sort_by_key(|r| r.seq);
        v
    }

    /// Forget logged requests.
    pub fn clear_requests(&self) {
        self.shared.log.lock().expect("log lock").clear();
    }

    /// Successful non-dry-run writes (create/update/patch/apply/delete).
    pub fn writes(&self) -> Vec<RequestLog> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_effective_write())
            .collect()
    }

    /// Simulated-controller completions so far.
    pub fn ready_events(&self) -> Vec<ReadyEvent> {
        self.lock().ready_events.clone()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Compacts history as etcd does, for paginated LISTs only: a `continue` token read at an
    /// older resourceVersion is answered 410 Expired from now on (watches keep the history).
    pub fn compact(&self) {
        let mut st = self.lock();
        st.compacted = st.rv;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, store::State> {
        self.shared.state.lock().expect("state lock")
    }

    fn resolve(
        st: &store::State,
        api_version: &str,
        kind: &str,
    ) -> anyhow::Result<discovery::ResourceInfo> {
        st.catalog_all()
            .find_kind(api_version, kind)
            .cloned()
            .ok_or_else(|| anyhow!("unknown kind {api_version} {kind}"))
    }

    /// One stored object (any version of its group is served as `api_version`).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let st = self.lock();
        let info = Self::resolve(&st, api_version, kind).ok()?;
        verbs::get(&st, &info, namespace.unwrap_or(""), name).ok()
    }

    /// All stored objects of a kind, in every namespace.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let st = self.lock();
        let Ok(info) = Self::resolve(&st, api_version, kind) else {
            return vec![];
        };
        st.list(&info, None)
            .into_iter()
            .map(|o| verbs::present(o.clone(), &info))
            .collect()
    }

    /// Replace an object's `.status` (as a controller would), emitting a MODIFIED event.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> anyhow::Result<Value> {
        let mut st = self.lock();
        let info = Self::resolve(&st, api_version, kind)?;
        let k = store::key(&info, namespace.unwrap_or(""), name);
        controllers::write_status(&mut st, &k, status)
            .map(|o| verbs::present(o, &info))
            .ok_or_else(|| anyhow!("{kind} {name} not found"))
    }

    fn params<'a>(
        &'a self,
        info: &'a discovery::ResourceInfo,
        ns: &'a str,
        manager: &str,
        force: bool,
    ) -> verbs::WriteParams<'a> {
        verbs::WriteParams {
            info,
            ns,
            sub: None,
            dry_run: false,
            manager: manager.into(),
            force,
            opts: &self.shared.opts,
        }
    }

    /// Create an object as a client would (POST; controllers react). For pre-loading state.
    pub fn create(&self, obj: Value) -> anyhow::Result<Value> {
        let mut st = self.lock();
        let info = Self::resolve(
            &st,
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = if info.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let p = self.params(&info, &ns, "test-preload", false);
        verbs::create(&mut st, &p, obj)
            .map(|r| r.0)
            .map_err(|e| anyhow!("{}", e.message))
    }

    /// Server-side apply an object with this field manager (force).
    pub fn apply(&self, obj: Value, manager: &str) -> anyhow::Result<Value> {
        let mut st = self.lock();
        let info = Self::resolve(
            &st,
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = if info.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .context("metadata.name")?
            .to_string();
        let p = self.params(&info, &ns, manager, true);
        let body = serde_json::to_vec(&obj)?;
        verbs::patch(&mut st, &p, &name, "application/apply-patch+yaml", &body)
            .map(|r| r.0)
            .map_err(|e| anyhow!("{}", e.message))
    }

    /// Create every document of a multi-document YAML (in order). For pre-loading state.
    pub fn preload_yaml(&self, yaml: &str) -> anyhow::Result<Vec<Value>> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| anyhow!("{e}"))?;
        docs.into_iter()
            .filter(|d| !d.is_null())
            .map(|d| self.create(d))
            .collect()
    }

    /// Delete an object as a client would.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<()> {
        let mut st = self.lock();
        let info = Self::resolve(&st, api_version, kind)?;
        let ns = namespace.unwrap_or("");
        let p = self.params(&info, ns, "test-preload", false);
        verbs::delete(&mut st, &p, name, &json!({}))
            .map(|_| ())
            .map_err(|e| anyhow!("{}", e.message))
    }

    /// Poll `cond` every few milliseconds until it holds or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&TestServer) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Usage of the standalone server.
pub const STANDALONE_USAGE: &str = "test-apiserver [--port N] [--kubeconfig FILE] [--default-ready-after DUR] [--crd-establish-delay DUR] [--controller-delay DUR] [--finalizer-delay DUR] [--fault RULE]... [--request-log FILE]

  --kubeconfig FILE    written (atomically) once the server listens: wait for it to exist
  --fault RULE         inject a fault, e.g. verb=apply,name=web,status=503,retry-after=2,first=3
                       (keys: method verb resource group namespace name path dry-run;
                       status=CODE [retry-after=S] | drop | latency=DUR; nth=N | first=K |
                       fraction=P [seed=S])
  --request-log FILE   append one JSON line per request (Kubernetes verb, object, status, fault)
Stop it with Ctrl-C or kill.";

/// Entry point of `cargo run --example test-apiserver -- [--port N] [--kubeconfig FILE]
/// [--default-ready-after DUR] [--crd-establish-delay DUR] [--controller-delay DUR]
/// [--finalizer-delay DUR] [--fault RULE]... [--request-log FILE]`: prints `listening on
/// http://127.0.0.1:PORT`, writes the kubeconfig (atomically, so a script can wait for the file)
/// and serves until killed.
pub fn standalone_main() -> anyhow::Result<()> {
    let mut opts = ServerOptions::default();
    let mut kubeconfig: Option<String> = None;
    let mut faults: Vec<Fault> = Vec::new();
    let mut request_log: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().ok_or_else(|| anyhow!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--port" => opts.port = value()?.parse().context("--port")?,
            "--kubeconfig" => kubeconfig = Some(value()?),
            "--default-ready-after" => {
                let v = value()?;
                opts.default_ready_after =
                    parse_duration(&v).ok_or_else(|| anyhow!("bad duration {v}"))?
            }
            "--crd-establish-delay" => {
                let v = value()?;
                opts.crd_establish_delay =
                    parse_duration(&v).ok_or_else(|| anyhow!("bad duration {v}"))?
            }
            "--controller-delay" => {
                let v = value()?;
                opts.controller_delay =
                    parse_duration(&v).ok_or_else(|| anyhow!("bad duration {v}"))?
            }
            "--finalizer-delay" => {
                let v = value()?;
                opts.finalizer_delay =
                    parse_duration(&v).ok_or_else(|| anyhow!("bad duration {v}"))?
            }
            "--fault" => {
                let v = value()?;
                faults.push(v.parse().map_err(|e| anyhow!("--fault {v}: {e}"))?);
            }
            "--request-log" => request_log = Some(value()?),
            "-h" | "--help" => {
                println!("{STANDALONE_USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{STANDALONE_USAGE}"),
        }
    }
    let server = TestServer::try_start(opts)?;
    for f in faults {
        server.inject(f);
    }
    let mut log_file = match &request_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("--request-log {p}"))?,
        ),
        None => None,
    };
    println!("listening on {}", server.url());
    if let Some(k) = kubeconfig {
        // Written once the server listens, and atomically: a script waits for the file.
        let tmp = format!("{k}.tmp-{}", std::process::id());
        server
            .write_kubeconfig(&tmp)
            .and_then(|_| std::fs::rename(&tmp, &k))
            .with_context(|| format!("write {k}"))?;
        println!("kubeconfig written to {k}");
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut written = std::collections::HashSet::new();
    loop {
        match log_file.as_mut() {
            Some(file) => {
                for r in server.requests() {
                    if written.insert(r.seq) {
                        writeln!(file, "{}", r.to_json())?;
                    }
                }
                file.flush()?;
                std::thread::sleep(Duration::from_millis(50));
            }
            None => std::thread::park(),
        }
    }
}
