//! The cluster connection: a kube client from kubeconfig (`--kubeconfig`, KUBECONFIG,
//! `--context`, in-cluster), API discovery (aggregated, falling back to per-group), and the object
//! verbs flux-order needs — get, list (paginated), server-side apply (field manager
//! `kustomize-controller`, force, as Flux), dry-run, delete — each with one retry policy for
//! transient failures. With the health watchers and reads, the only code that talks to the API
//! server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::{Client, Config};
use serde_json::Value;

use crate::model::{object_meta, subject_of};

/// The field manager Flux's kustomize-controller applies with.
pub const FIELD_MANAGER: &str = "kustomize-controller";

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// Bound on one API request (retried when exceeded).
    pub request_timeout: Option<Duration>,
}

/// A cluster error; API errors keep the server's code, reason and message.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig / in-cluster config.
    #[error("cannot load a kubeconfig: {0}")]
    Config(String),
    /// The API server did not answer.
    #[error("cannot reach the API server at {url}: {message}")]
    Unreachable {
        /// Server URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The API server refused a request.
    #[error("{subject}: {message} ({reason}, {code})")]
    Api {
        /// `Kind/ns/name`.
        subject: String,
        /// HTTP code.
        code: u16,
        /// Status reason (`Invalid`, `Conflict`, …).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// A transport failure that outlived the retries.
    #[error("{subject}: {message}")]
    Transport {
        /// `Kind/ns/name` or the request.
        subject: String,
        /// Why.
        message: String,
    },
    /// The server does not serve this kind.
    #[error("{subject}: the server does not know kind {kind} in {api_version}")]
    UnknownKind {
        /// `Kind/ns/name`.
        subject: String,
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
    },
    /// A namespaced object without a namespace (Flux never defaults one).
    #[error("{subject}: namespace not specified")]
    NoNamespace {
        /// `Kind/name`.
        subject: String,
    },
    /// SIGINT/SIGTERM arrived: the request, its retries and waits were abandoned.
    #[error("{subject}: interrupted")]
    Interrupted {
        /// `Kind/ns/name` or the request.
        subject: String,
    },
}

impl ClusterError {
    /// HTTP code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the API server could not be reached or kept failing (no answer, a dropped
    /// connection, 5xx after the retries), as opposed to refusing the request.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } | ClusterError::Transport { .. } => true,
            ClusterError::Api { code, .. } => *code >= 500,
            _ => false,
        }
    }

    /// Whether Flux treats this error as an immutable-field error (any 409 or 422, or a message
    /// saying so) that `force` resolves by recreating the object.
    pub fn is_immutable(&self) -> bool {
        match self {
            ClusterError::Api { code, message, .. } => {
                *code == 409
                    || *code == 422
                    || message.contains("is immutable")
                    || message.contains("immutable field")
            }
            _ => false,
        }
    }
}

/// A discovered kind: its resource and scope.
#[derive(Debug, Clone)]
pub struct Kind {
    /// The resource (plural, group, version).
    pub resource: ApiResource,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

/// An object read from the cluster as a JSON value whose `apiVersion` and `kind` are those of the
/// resource it was read from. The API server sends them on a GET and on watch events but not on
/// the items of a LIST (nor on the initial list a watcher starts from), so nothing downstream may
/// take an object's type from the object alone.
pub fn typed_value(resource: &ApiResource, mut obj: DynamicObject) -> Option<Value> {
    obj.types = Some(kube::core::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    serde_json::to_value(obj).ok()
}

/// A connected cluster.
pub struct Cluster {
    client: Client,
    url: String,
    kinds: RwLock<HashMap<(String, String), Kind>>,
    timeout: Duration,
    retries: Arc<AtomicU64>,
    /// Cancelled by the first SIGINT/SIGTERM: requests, retries and waits end at once.
    cancel: tokio_util::sync::CancellationToken,
}

/// Objects per LIST request (kubectl's and client-go's page size).
pub const LIST_PAGE: u32 = 500;

/// How long bookkeeping writes (the inventory) may take once interrupted: one attempt, no retry,
/// so that an interrupted run still records what it applied without hanging on a dead server.
const INTERRUPTED_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// kube's server-aware retry policy (429/503/504, honouring Retry-After, capped backoff) that also
/// counts its retries, so the summary reports every retried request.
#[derive(Clone)]
struct CountingPolicy {
    inner: kube::client::retry::RetryPolicy,
    retries: Arc<AtomicU64>,
}

impl<Res>
    tower::retry::Policy<http::Request<kube::client::Body>, http::Response<Res>, tower::BoxError>
    for CountingPolicy
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut http::Request<kube::client::Body>,
        result: &mut Result<http::Response<Res>, tower::BoxError>,
    ) -> Option<Self::Future> {
        let status = result.as_ref().ok().map(|r| r.status());
        let next = self.inner.retry(req, result);
        if next.is_some() {
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{} {}: {status:?}; retrying", req.method(), req.uri());
        }
        next
    }

    fn clone_request(
        &mut self,
        req: &http::Request<kube::client::Body>,
    ) -> Option<http::Request<kube::client::Body>> {
        <kube::client::retry::RetryPolicy as tower::retry::Policy<
            _,
            http::Response<Res>,
            tower::BoxError,
        >>::clone_request(&mut self.inner, req)
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("url", &self.url).finish()
    }
}

/// Attempts for one request before giving up (transient errors only).
const MAX_ATTEMPTS: u32 = 8;
/// First backoff; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Backoff cap.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn api_error(subject: &str, e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) => ClusterError::Api {
            subject: subject.to_string(),
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        other => ClusterError::Transport {
            subject: subject.to_string(),
            message: error_chain(&other),
        },
    }
}

/// An error with its causes (`client error (Connect): tcp connect error: Connection refused`),
/// so a transport failure says what failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// Failures [`Cluster::retry`] retries. 429, 503 and 504 are not among them: the HTTP layer's
/// policy ([`CountingPolicy`]) already retried those, honouring Retry-After, and retrying its
/// exhausted attempts again would multiply them.
fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 500 | 502),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

impl Cluster {
    /// Loads the kubeconfig, checks the server answers, and runs discovery.
    pub async fn connect(opts: &ConnectOptions) -> Result<Cluster, ClusterError> {
        let kopts = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let mut config = match &opts.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kc, &kopts)
                    .await
                    .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?
            }
            None if opts.context.is_some() => Config::from_kubeconfig(&kopts)
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?,
        };
        let url = config.cluster_url.to_string();
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(10));
        let retries = Arc::new(AtomicU64::new(0));
        let policy = CountingPolicy {
            inner: kube::client::retry::RetryPolicy::new(
                FIRST_BACKOFF,
                MAX_BACKOFF,
                MAX_ATTEMPTS,
                true,
            )
            .map_err(|e| ClusterError::Config(e.to_string()))?,
            retries: retries.clone(),
        };
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| ClusterError::Config(e.to_string()))?
            .with_layer(&tower::buffer::BufferLayer::new(1024))
            .with_layer(&tower::retry::RetryLayer::new(policy))
            .build();
        let cluster = Cluster {
            client,
            url: url.clone(),
            kinds: RwLock::new(HashMap::new()),
            timeout: opts.request_timeout.unwrap_or(Duration::from_secs(30)),
            retries,
            cancel: crate::interrupt::token(),
        };
        // The first request takes the same retry policy as every other one.
        let unreachable = |e: ClusterError| match e {
            ClusterError::Interrupted { .. } => e,
            e => ClusterError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            },
        };
        let client = cluster.client.clone();
        cluster
            .retry("GET /version", || client.apiserver_version())
            .await
            .map_err(unreachable)?;
        cluster.discover().await.map_err(unreachable)?;
        Ok(cluster)
    }

    /// The kube client (for watchers).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Requests retried so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Full discovery: aggregated when the server has it, else one request per group version;
    /// either is retried as any request is.
    pub async fn discover(&self) -> Result<(), ClusterError> {
        let client = &self.client;
        let d = match self
            .retry("discovery", || {
                Discovery::new(client.clone()).run_aggregated()
            })
            .await
        {
            Ok(d) => d,
            Err(e @ ClusterError::Interrupted { .. }) => return Err(e),
            Err(_) => self
                .retry("discovery", || Discovery::new(client.clone()).run())
                .await
                .map_err(|e| match e {
                    ClusterError::Interrupted { .. } => e,
                    e => ClusterError::Transport {
                        subject: "discovery".into(),
                        message: format!("discovery failed: {e}"),
                    },
                })?,
        };
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        for group in d.groups() {
            for (ar, caps) in group
                .recommended_resources()
                .into_iter()
                .chain(group.versions().flat_map(|v| group.versioned_resources(v)))
            {
                let key = (ar.api_version.clone(), ar.kind.clone());
                kinds.entry(key).or_insert(Kind {
                    resource: ar,
                    namespaced: caps.scope == Scope::Namespaced,
                });
            }
        }
        Ok(())
    }

    /// The served kind of `apiVersion`/`kind`, if discovery knows it.
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        self.kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(api_version.to_string(), kind.to_string()))
            .cloned()
    }

    /// Refreshes one kind (after its CRD became Established). Returns whether it is now known.
    pub async fn refresh_kind(&self, api_version: &str, kind: &str) -> bool {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
        match kube::discovery::oneshot::pinned_kind(&self.client, &gvk).await {
            Ok((ar, caps)) => {
                self.kinds
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        (api_version.to_string(), kind.to_string()),
                        Kind {
                            resource: ar,
                            namespaced: caps.scope == Scope::Namespaced,
                        },
                    );
                true
            }
            Err(_) => false,
        }
    }

    /// The dynamic API for an object (namespace checked: never defaulted).
    pub fn api_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        subject: &str,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let k = self
            .kind(api_version, kind)
            .ok_or_else(|| ClusterError::UnknownKind {
                subject: subject.to_string(),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })?;
        if k.namespaced {
            if namespace.is_empty() {
                return Err(ClusterError::NoNamespace {
                    subject: subject.to_string(),
                });
            }
            Ok(Api::namespaced_with(
                self.client.clone(),
                namespace,
                &k.resource,
            ))
        } else {
            Ok(Api::all_with(self.client.clone(), &k.resource))
        }
    }

    /// Runs `f` with the retry policy: 500, 502, connection failures and timeouts are retried with
    /// capped exponential backoff (429, 503 and 504 were already retried below, by the HTTP
    /// layer); anything else fails at once. The first SIGINT/SIGTERM ends it, waits included.
    async fn retry<T, F, Fut>(&self, subject: &str, f: F) -> Result<T, ClusterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let interrupted = || ClusterError::Interrupted {
            subject: subject.to_string(),
        };
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = tokio::select! {
                r = tokio::time::timeout(self.timeout, f()) => r,
                _ = self.cancel.cancelled() => return Err(interrupted()),
            };
            let err = match result {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_transient(&e) && attempt < MAX_ATTEMPTS => error_chain(&e),
                Ok(Err(e)) => return Err(api_error(subject, e)),
                Err(_) if attempt < MAX_ATTEMPTS => format!("no answer within {:?}", self.timeout),
                Err(_) => {
                    return Err(ClusterError::Transport {
                        subject: subject.to_string(),
                        message: format!(
                            "no answer within {:?} after {attempt} attempts",
                            self.timeout
                        ),
                    });
                }
            };
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{subject}: attempt {attempt} failed ({err}); retrying in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Err(interrupted()),
            }
            delay = (delay * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// GETs the live version of `obj`; None when it does not exist.
    pub async fn get(&self, obj: &Value) -> Result<Option<Value>, ClusterError> {
        let (api_version, kind, ns, name) = object_meta(obj);
        self.get_ref(api_version, kind, ns, name).await
    }

    /// GETs an object by reference; None when it (or its kind) does not exist.
    pub async fn get_ref(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        let subject = subject_of(kind, ns, name);
        let Some(k) = self.kind(api_version, kind) else {
            return Ok(None);
        };
        let api = self.api_for(api_version, kind, ns, &subject)?;
        let got = self.retry(&subject, || api.get_opt(name)).await?;
        Ok(got.and_then(|o| typed_value(&k.resource, o)))
    }

    /// Server-side apply as Flux does it (manager `kustomize-controller`, force); `dry_run` sends
    /// `dryRun=All` and stores nothing.
    pub async fn apply(&self, obj: &Value, dry_run: bool) -> Result<Value, ClusterError> {
        self.server_side_apply(obj, FIELD_MANAGER, dry_run).await
    }

    /// Server-side apply with another field manager (flux-order's own bookkeeping objects). Once
    /// interrupted it still runs — the inventory must record what was applied — but as one
    /// attempt bounded by a short timeout.
    pub async fn apply_as(&self, obj: &Value, manager: &str) -> Result<Value, ClusterError> {
        if !self.cancel.is_cancelled() {
            return self.server_side_apply(obj, manager, false).await;
        }
        let (api_version, kind, ns, name) = object_meta(obj);
        let subject = subject_of(kind, ns, name);
        let api = self.api_for(api_version, kind, ns, &subject)?;
        let pp = PatchParams::apply(manager).force();
        match tokio::time::timeout(
            INTERRUPTED_WRITE_TIMEOUT,
            api.patch(name, &pp, &Patch::Apply(obj)),
        )
        .await
        {
            Ok(Ok(v)) => serde_json::to_value(v).map_err(|e| ClusterError::Transport {
                subject,
                message: e.to_string(),
            }),
            Ok(Err(e)) => Err(api_error(&subject, e)),
            Err(_) => Err(ClusterError::Transport {
                subject,
                message: format!(
                    "no answer within {INTERRUPTED_WRITE_TIMEOUT:?} (interrupted: not retried)"
                ),
            }),
        }
    }

    async fn server_side_apply(
        &self,
        obj: &Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ClusterError> {
        let (api_version, kind, ns, name) = object_meta(obj);
        let subject = subject_of(kind, ns, name);
        let api = self.api_for(api_version, kind, ns, &subject)?;
        let mut pp = PatchParams::apply(manager).force();
        if dry_run {
            pp = pp.dry_run();
        }
        let patch = Patch::Apply(obj);
        let applied = self
            .retry(&subject, || api.patch(name, &pp, &patch))
            .await?;
        serde_json::to_value(applied).map_err(|e| ClusterError::Transport {
            subject,
            message: e.to_string(),
        })
    }

    /// Lists objects of a kind (all namespaces when `namespace` is None) matching a label selector.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        let mut out = Vec::new();
        self.list_pages(api_version, kind, namespace, selector, |page, restart| {
            if restart {
                out.clear();
            }
            out.extend(page);
        })
        .await?;
        Ok(out)
    }

    /// Lists objects of a kind page by page ([`LIST_PAGE`] objects a request, `limit` and
    /// `continue` as kubectl and client-go do), handing each page to `on_page` as it arrives, so
    /// a caller keeps only what it needs of a large list. When the server expires the continue
    /// token (410) the list starts over and `on_page` is told so (`restart`: forget the pages
    /// before). An unserved kind lists nothing.
    pub async fn list_pages(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        selector: &str,
        mut on_page: impl FnMut(Vec<Value>, bool),
    ) -> Result<(), ClusterError> {
        let subject = format!("{kind} list");
        let Some(k) = self.kind(api_version, kind) else {
            return Ok(());
        };
        let api: Api<DynamicObject> = match namespace {
            Some(ns) if k.namespaced => Api::namespaced_with(self.client.clone(), ns, &k.resource),
            _ => Api::all_with(self.client.clone(), &k.resource),
        };
        let mut lp = kube::api::ListParams::default().limit(LIST_PAGE);
        if !selector.is_empty() {
            lp = lp.labels(selector);
        }
        let mut restart = false;
        loop {
            let list = match self.retry(&subject, || api.list(&lp)).await {
                Ok(list) => list,
                Err(e) if e.code() == Some(410) && lp.continue_token.is_some() => {
                    tracing::warn!("{subject}: {e}; listing again from the start");
                    lp.continue_token = None;
                    restart = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let next = list.metadata.continue_.filter(|c| !c.is_empty());
            on_page(
                list.items
                    .into_iter()
                    .filter_map(|o| typed_value(&k.resource, o))
                    .collect(),
                std::mem::take(&mut restart),
            );
            match next {
                Some(token) => lp.continue_token = Some(token),
                None => return Ok(()),
            }
        }
    }

    /// Deletes an object (background propagation). Returns false when it was already gone.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<bool, ClusterError> {
        let subject = subject_of(kind, ns, name);
        if self.kind(api_version, kind).is_none() {
            return Ok(false);
        }
        let api = self.api_for(api_version, kind, ns, &subject)?;
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match self.retry(&subject, || api.delete(name, &dp)).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Polls until the object is gone, or `timeout` passes.
    pub async fn wait_deleted(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.get_ref(api_version, kind, ns, name).await?.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Transport {
                    subject: subject_of(kind, ns, name),
                    message: format!("still present {timeout:?} after its deletion"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
