//! The sources stage (network-touching): resolves and fetches Flux sources the way
//! source-controller does — OCIRepository ([`oci`]), HelmRepository `default` and `oci` ([`helmrepo`]),
//! GitRepository through the `git` command ([`git`]) — into a cache shared by runs ([`store`]), or
//! reads them from an air-gap bundle made by `pull`. The load stage asks it for a Kustomization's
//! source directory ([`Fetcher::fetch_source`]); the HelmRelease stage asks it for a chart
//! ([`Fetcher::resolve_chart`]). Every artifact used in a run is recorded with its resolution and
//! origin (cache, bundle, network) for `plan -o json` and the bundle's lock file.

pub mod archive;
pub mod git;
pub mod helmrepo;
pub mod oci;
pub mod store;
pub mod version;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::build::postbuild::{Manifest, VarIndex};
use crate::model::{SourceKey, api_group};
pub use store::{Lock, LockEntry, Resolved, Store};

/// Where an artifact came from in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The user's cache (fetched by an earlier run or earlier in this one).
    Cache,
    /// The `--from` bundle.
    Bundle,
    /// Downloaded in this run.
    Network,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Cache => "cache",
            Origin::Bundle => "bundle",
            Origin::Network => "network",
        })
    }
}

/// A source or chart that cannot be had. Every variant names the source (`what`); the load
/// stage adds the Kustomization or HelmRelease that needs it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The source object is not in the fleet and not mapped.
    #[error("{what} is not defined in the fleet; map it with --source {what}=DIR")]
    NotDefined {
        /// `KIND/NAMESPACE/NAME`.
        what: String,
    },
    /// A kind that is never fetched.
    #[error("{what}: {message}; map it with --source {what}=DIR")]
    Unsupported {
        /// The source.
        what: String,
        /// Why.
        message: String,
    },
    /// The source's spec is invalid.
    #[error("{what}: {message}")]
    Invalid {
        /// The source.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A tag, branch, version or digest that does not exist.
    #[error("{what}: {reference} not found at {url}{available}")]
    NotFound {
        /// The source.
        what: String,
        /// The URL.
        url: String,
        /// What was asked (`tag 'v1'`, `chart 'x' version '1.0'`).
        reference: String,
        /// Known alternatives, when listing is cheap.
        available: String,
    },
    /// No version satisfies the constraint.
    #[error("{what}: no version matching semver '{constraint}' at {url}{available}")]
    NoMatch {
        /// The source.
        what: String,
        /// The URL.
        url: String,
        /// The constraint.
        constraint: String,
        /// The versions seen.
        available: String,
    },
    /// Credentials missing or refused.
    #[error("{what}: authentication to {url} failed: {detail}")]
    Auth {
        /// The source.
        what: String,
        /// The URL.
        url: String,
        /// Details (never the credentials).
        detail: String,
    },
    /// The host could not be reached.
    #[error(
        "{what}: cannot reach {url}: {detail} ({}plain-HTTP registry: set spec.insecure: true or --registry-mirror HOST=http://HOST; another registry: --registry-mirror FROM=TO; no network: --offline uses the cache, --from DIR a bundle made by `kubectl flux-order pull`)",
        map_hint(.what)
    )]
    Unreachable {
        /// The source.
        what: String,
        /// The URL.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// `--offline` and not in the cache.
    #[error(
        "{what}: {key} is not in the cache ({cache}) and --offline forbids fetching it; {}run once with network access, or use --from DIR with a bundle made by `kubectl flux-order pull`",
        map_hint(.what)
    )]
    Offline {
        /// The source.
        what: String,
        /// What was asked.
        key: String,
        /// The cache directory.
        cache: String,
    },
    /// `--from` and not in the bundle.
    #[error(
        "{what}: {key} is not in the bundle {bundle}; pull it again with `kubectl flux-order pull PATH --to {bundle}`"
    )]
    NotInBundle {
        /// The source.
        what: String,
        /// What was asked.
        key: String,
        /// The bundle directory.
        bundle: String,
    },
    /// A bundle artifact whose checksum does not match its lock entry.
    #[error(
        "{what}: {file}: checksum mismatch (lock file: sha256:{expected}, file: sha256:{actual})"
    )]
    Checksum {
        /// The source.
        what: String,
        /// The file.
        file: String,
        /// From the lock file.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// Anything else (I/O, a malformed response, git failing).
    #[error("{what}: {message}")]
    Other {
        /// The source.
        what: String,
        /// What went wrong.
        message: String,
    },
}

/// `map it with --source KIND/NS/NAME=DIR; ` when `what` is a source key.
fn map_hint(what: &str) -> String {
    match SourceKey::parse(what) {
        Some(_) => format!("a local copy: map it with --source {what}=DIR; "),
        None => String::new(),
    }
}

impl FetchError {
    fn other(what: &str, message: impl Into<String>) -> Self {
        FetchError::Other {
            what: what.to_string(),
            message: message.into(),
        }
    }
}

/// `--registry-mirror FROM=TO`: OCI references starting with FROM are fetched from TO
/// (`http://` on TO: plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Host (and optional path prefix) as written in the fleet.
    pub from: String,
    /// Replacement host and prefix.
    pub to: String,
    /// TO was given with `http://`.
    pub plain_http: bool,
}

impl Mirror {
    /// Parses `FROM=TO`.
    pub fn parse(s: &str) -> Option<Mirror> {
        let (from, to) = s.split_once('=')?;
        let from = from
            .trim_start_matches("oci://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let (to, plain_http) = match to.strip_prefix("http://") {
            Some(t) => (t, true),
            None => (
                to.trim_start_matches("oci://")
                    .trim_start_matches("https://"),
                false,
            ),
        };
        let to = to.trim_end_matches('/');
        (!from.is_empty() && !to.is_empty()).then(|| Mirror {
            from: from.into(),
            to: to.into(),
            plain_http,
        })
    }
}

/// The cluster credentials Secrets are read from when the fleet does not hold them.
#[derive(Clone)]
pub struct SecretSource(pub Arc<crate::cluster::Cluster>);

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSource(cluster)")
    }
}

/// How sources are obtained in this run.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// When connected (apply, diff): read `secretRef` Secrets the fleet lacks from the cluster.
    pub cluster: Option<SecretSource>,
    /// Use only the cache (`--offline`).
    pub offline: bool,
    /// Read only from this bundle (`--from DIR`).
    pub from: Option<PathBuf>,
    /// `--registry-mirror` rules, first match wins.
    pub mirrors: Vec<Mirror>,
    /// The cache (default: [`Store::user_cache`]).
    pub cache: Option<PathBuf>,
}

/// An artifact available locally.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Its resolution.
    pub resolved: Resolved,
    /// The artifact file.
    pub blob: PathBuf,
    /// Where it came from.
    pub origin: Origin,
}

/// A Kustomization source made available as a directory.
#[derive(Debug, Clone)]
pub struct FetchedSource {
    /// The unpacked artifact.
    pub dir: PathBuf,
    /// The artifact.
    pub artifact: Artifact,
}

/// A HelmRelease's chart, available locally.
#[derive(Debug, Clone)]
pub struct ResolvedChart {
    /// A chart archive (`.tgz`) or a chart directory (holding `Chart.yaml`).
    pub path: PathBuf,
    /// The chart name (from `Chart.yaml` when it could be read, else as requested).
    pub name: String,
    /// The chart version resolved (from `Chart.yaml` when it could be read, else the index
    /// entry or the tag with Helm's `_` → `+` mapping).
    pub version: String,
    /// For charts from an OCI registry: the manifest digest (`sha256:…`). helm-controller renders
    /// such charts with version `<version>+<first 12 hex of it>`: see [`ResolvedChart::flux_version`].
    pub manifest_digest: Option<String>,
    /// The source the chart came from.
    pub source: SourceKey,
    /// The source's revision as Flux writes it.
    pub revision: String,
    /// Where it came from; `None` for a chart read from a local directory (the fleet's own repo
    /// or a `--source` mapping).
    pub origin: Option<Origin>,
}

impl ResolvedChart {
    /// The chart version helm-controller renders: for OCI charts `<version>+<12 hex of the
    /// manifest digest>` (`mutateChartWithSourceRevision`; existing build metadata replaced),
    /// else the version as is.
    pub fn flux_version(&self) -> String {
        match &self.manifest_digest {
            Some(d) => {
                let hex = d.strip_prefix("sha256:").unwrap_or(d);
                let base = self.version.split('+').next().unwrap_or(&self.version);
                format!("{base}+{}", &hex[..hex.len().min(12)])
            }
            None => self.version.clone(),
        }
    }
}

/// One artifact used in this run, for `plan -o json` and the lock file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRecord {
    /// Sources and HelmReleases that use it.
    pub used_by: Vec<String>,
    /// URL.
    pub url: String,
    /// What was asked.
    pub resolution: String,
    /// Flux's revision string.
    pub revision: String,
    /// sha256 of the artifact.
    pub digest: String,
    /// OCI manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// cache, bundle or network.
    pub origin: Origin,
}

type Slot = Arc<OnceCell<Result<Artifact, FetchError>>>;

/// Fetches sources and charts for one run. Shared (`Arc`) by the load and HelmRelease stages.
#[derive(Debug)]
pub struct Fetcher {
    opts: FetchOptions,
    cache: Store,
    bundle: Option<(Store, BTreeMap<String, LockEntry>)>,
    objects: Mutex<BTreeMap<SourceKey, Value>>,
    local: Mutex<BTreeMap<SourceKey, PathBuf>>,
    secrets: Mutex<VarIndex>,
    memo: tokio::sync::Mutex<HashMap<String, Slot>>,
    used: Mutex<BTreeMap<String, (Artifact, BTreeSet<String>)>>,
    http: reqwest::Client,
    tmp: crate::interrupt::TempTree,
}

/// A remote artifact resolved but not yet downloaded.
pub(crate) struct Remote {
    pub(crate) resolved: Resolved,
    /// An immutable identity (digest, commit) under which the cache may already hold it.
    pub(crate) pin: String,
    pub(crate) download: Download,
}

/// How to download a resolved artifact.
pub(crate) enum Download {
    Oci(Box<oci::Pull>),
    Http(helmrepo::Get),
    Git(git::Archive),
}

/// Installs the process-wide TLS crypto provider reqwest needs (ring, as kube uses). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Fetcher {
    /// A fetcher for one run. Reads the bundle's lock file when `opts.from` is set.
    pub fn new(opts: FetchOptions) -> Result<Fetcher, String> {
        install_crypto_provider();
        let cache = opts
            .cache
            .clone()
            .map(Store::new)
            .unwrap_or_else(Store::user_cache);
        let bundle = match &opts.from {
            Some(dir) => {
                let store = Store::new(dir.clone());
                let lock = store.read_lock().map_err(|e| {
                    format!(
                        "--from {}: not a bundle made by `kubectl flux-order pull` ({e})",
                        dir.display()
                    )
                })?;
                let map = lock
                    .artifacts
                    .into_iter()
                    .map(|e| (e.resolved.key.clone(), e))
                    .collect();
                Some((store, map))
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let tmp = tempfile::Builder::new()
            .prefix("flux-order-fetch-")
            .tempdir()
            .map(crate::interrupt::TempTree::new)
            .map_err(|e| format!("temporary directory: {e}"))?;
        Ok(Fetcher {
            opts,
            cache,
            bundle,
            objects: Mutex::default(),
            local: Mutex::default(),
            secrets: Mutex::default(),
            memo: tokio::sync::Mutex::default(),
            used: Mutex::default(),
            http,
            tmp,
        })
    }

    /// Records the Flux source objects (source.toolkit.fluxcd.io) among `objects`.
    pub fn add_objects<'a>(&self, objects: impl IntoIterator<Item = &'a Manifest>) {
        let mut known = self.objects.lock().expect("objects lock");
        for o in objects {
            let (api, kind, ns, name) = o.meta();
            if api_group(api) == "source.toolkit.fluxcd.io" && !ns.is_empty() {
                known.insert(
                    SourceKey {
                        kind: kind.into(),
                        namespace: ns.into(),
                        name: name.into(),
                    },
                    o.object(),
                );
            }
        }
    }

    /// The source object `key`, when the fleet defines it.
    pub fn object(&self, key: &SourceKey) -> Option<Value> {
        self.objects.lock().expect("objects lock").get(key).cloned()
    }

    /// The `spec` of the source object `key`; an error when the fleet does not define it.
    fn source_spec(&self, key: &SourceKey) -> Result<Value, FetchError> {
        let obj = self.object(key).ok_or_else(|| FetchError::NotDefined {
            what: key.to_string(),
        })?;
        Ok(obj.get("spec").cloned().unwrap_or(Value::Null))
    }

    /// Maps a source to a local directory (`--source`, the fleet's own checkout): charts from it
    /// are read there.
    pub fn map_local(&self, key: &SourceKey, dir: &Path) {
        self.local
            .lock()
            .expect("local lock")
            .insert(key.clone(), dir.to_path_buf());
    }

    /// The Secrets credentials are read from (the fleet's, and the cluster's when connected).
    pub fn set_secrets(&self, index: VarIndex) {
        *self.secrets.lock().expect("secrets lock") = index;
    }

    /// A Secret's decoded data: the fleet's, else (when connected) the cluster's.
    pub(crate) async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<BTreeMap<String, String>> {
        let known = self
            .secrets
            .lock()
            .expect("secrets lock")
            .get(namespace, "Secret", name)
            .cloned();
        if known.is_some() {
            return known;
        }
        let cluster = self.opts.cluster.as_ref()?;
        let object = cluster
            .0
            .get_ref("v1", "Secret", namespace, name)
            .await
            .ok()
            .flatten()?;
        let mut index = VarIndex::default();
        index.add_object(&object);
        index.get(namespace, "Secret", name).cloned()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn mirrors(&self) -> &[Mirror] {
        &self.opts.mirrors
    }

    /// Every artifact used so far in this run.
    pub fn records(&self) -> Vec<SourceRecord> {
        self.used
            .lock()
            .expect("used lock")
            .values()
            .map(|(a, by)| SourceRecord {
                used_by: by.iter().cloned().collect(),
                url: a.resolved.url.clone(),
                resolution: a.resolved.key.clone(),
                revision: a.resolved.revision.clone(),
                digest: format!("sha256:{}", a.resolved.sha256),
                manifest_digest: a.resolved.manifest_digest.clone(),
                origin: a.origin,
            })
            .collect()
    }

    /// Fetches a Kustomization's source (OCIRepository, GitRepository) and unpacks it.
    pub async fn fetch_source(&self, key: &SourceKey) -> Result<FetchedSource, FetchError> {
        let what = key.to_string();
        if key.kind == "Bucket" {
            return Err(FetchError::Unsupported {
                what,
                message: "Bucket sources are not fetched (S3-compatible storage)".into(),
            });
        }
        let spec = self.source_spec(key)?;
        let request = match key.kind.as_str() {
            "OCIRepository" => {
                Request::Oci(oci::OciSpec::from_source(&what, &key.namespace, &spec)?)
            }
            "GitRepository" => Request::Git(git::GitSpec::from_source(&what, &spec)?),
            other => {
                return Err(FetchError::Unsupported {
                    what,
                    message: format!("a {other} is not a source of Kustomizations"),
                });
            }
        };
        let art = self.obtain(&what, &request).await?;
        let dir = self.unpack(&what, &art)?;
        Ok(FetchedSource { dir, artifact: art })
    }

    /// Resolves a HelmRelease's chart to a local `.tgz` or directory, as helm-controller and
    /// source-controller would: `spec.chartRef` (OCIRepository: `_` in tags read as `+`, digest
    /// tracked; or a HelmChart, read as its chart, version and sourceRef) or `spec.chart.spec`
    /// with a HelmRepository (`type: default` index or `type: oci`; version constraint, default
    /// `*`) or a GitRepository/Bucket path (a mapped or the fleet's own source: a directory). `hr_namespace` defaults the sourceRef namespace; `hr` names the
    /// HelmRelease in errors and records (`namespace/name`).
    pub async fn resolve_chart(
        &self,
        hr: &str,
        hr_namespace: &str,
        hr_spec: &Value,
    ) -> Result<ResolvedChart, FetchError> {
        let what_hr = format!("HelmRelease {hr}");
        let (cs, hr_namespace) = if let Some(r) = hr_spec.get("chartRef") {
            let key = ref_key(r, hr_namespace);
            let what = format!("{what_hr}: chartRef {key}");
            if !matches!(key.kind.as_str(), "OCIRepository" | "HelmChart") {
                return Err(FetchError::Unsupported {
                    what: key.to_string(),
                    message: format!("{what_hr}: chartRef kind {} is not fetched", key.kind),
                });
            }
            let spec = self.source_spec(&key)?;
            if key.kind == "HelmChart" {
                // A HelmChart written by hand: its chart, version and sourceRef, resolved as
                // helm-controller's own HelmChart for `spec.chart` would be.
                (spec, key.namespace.clone())
            } else {
                let mut oci = oci::OciSpec::from_source(&what, &key.namespace, &spec)?;
                oci.helm_tags = true;
                let art = self.obtain_for(&what, &what_hr, &Request::Oci(oci)).await?;
                return self.chart_from_artifact(&what, key, art, None);
            }
        } else {
            let cs =
                hr_spec
                    .pointer("/chart/spec")
                    .cloned()
                    .ok_or_else(|| FetchError::Invalid {
                        what: what_hr.clone(),
                        message: "neither spec.chartRef nor spec.chart.spec is set".into(),
                    })?;
            (cs, hr_namespace.to_string())
        };
        let hr_namespace = hr_namespace.as_str();
        let chart = cs.get("chart").and_then(Value::as_str).unwrap_or("");
        let version = cs.get("version").and_then(Value::as_str).unwrap_or("*");
        let key = ref_key(cs.get("sourceRef").unwrap_or(&Value::Null), hr_namespace);
        let what = format!("{what_hr}: chart '{chart}' from {key}");
        if chart.is_empty() {
            return Err(FetchError::Invalid {
                what,
                message: "spec.chart.spec.chart is empty".into(),
            });
        }
        if matches!(key.kind.as_str(), "GitRepository" | "Bucket") {
            let local = self.local.lock().expect("local lock").get(&key).cloned();
            let (root, origin, revision) = match local {
                Some(d) => (d, None, String::new()),
                None if key.kind == "Bucket" => {
                    return Err(FetchError::Unsupported {
                        what: key.to_string(),
                        message: format!("{what_hr}: Bucket sources are not fetched"),
                    });
                }
                None => {
                    let fs = self.fetch_source(&key).await?;
                    self.note_use(&fs.artifact, &what_hr);
                    (
                        fs.dir,
                        Some(fs.artifact.origin),
                        fs.artifact.resolved.revision,
                    )
                }
            };
            let rel = crate::load::sources::safe_rel(chart).ok_or_else(|| FetchError::Invalid {
                what: what.clone(),
                message: format!("chart path '{chart}' escapes the source"),
            })?;
            let dir = root.join(rel);
            if !dir.join("Chart.yaml").is_file() {
                return Err(FetchError::NotFound {
                    what,
                    url: root.display().to_string(),
                    reference: format!("chart directory '{chart}' (with Chart.yaml)"),
                    available: String::new(),
                });
            }
            let (name, ver) = chart_meta_dir(&dir).unwrap_or_else(|| (chart.into(), String::new()));
            return Ok(ResolvedChart {
                path: dir,
                name,
                version: ver,
                manifest_digest: None,
                source: key,
                revision,
                origin,
            });
        }
        if key.kind != "HelmRepository" {
            return Err(FetchError::Unsupported {
                what: key.to_string(),
                message: format!("{what_hr}: a {} is not a chart source", key.kind),
            });
        }
        let spec = self.source_spec(&key)?;
        let request = if spec.get("type").and_then(Value::as_str) == Some("oci") {
            Request::Oci(oci::OciSpec::from_helm_repository(
                &what,
                &key.namespace,
                &spec,
                chart,
                version,
            )?)
        } else {
            Request::Helm(helmrepo::ChartSpec::new(
                &what,
                &key.namespace,
                &spec,
                chart,
                version,
            )?)
        };
        let art = self.obtain_for(&what, &what_hr, &request).await?;
        self.chart_from_artifact(&what, key, art, Some(chart))
    }

    fn chart_from_artifact(
        &self,
        what: &str,
        source: SourceKey,
        art: Artifact,
        requested: Option<&str>,
    ) -> Result<ResolvedChart, FetchError> {
        let data = std::fs::read(&art.blob)
            .map_err(|e| FetchError::other(what, format!("{}: {e}", art.blob.display())))?;
        let fallback_version = art.resolved.version.clone().unwrap_or_default();
        let fallback_name = requested.unwrap_or("").to_string();
        // A Helm chart archive: `<name>/Chart.yaml` inside. A Flux artifact holding a chart
        // directory: `Chart.yaml` at its root (or one level down), read after unpacking.
        let (path, meta) = match chart_meta_tgz(&data) {
            Some((true, name, version)) => {
                // Named as `helm package` names it, for tools that go by the extension.
                let dir = self.tmp.path().join("charts").join(&art.resolved.sha256);
                let file = dir.join(format!("{name}-{version}.tgz"));
                std::fs::create_dir_all(&dir)
                    .and_then(|_| std::fs::write(&file, &data))
                    .map_err(|e| FetchError::other(what, format!("{}: {e}", file.display())))?;
                (file, Some((name, version)))
            }
            _ => {
                let dir = self.unpack(what, &art)?;
                let dir = chart_dir_in(&dir)
                    .ok_or_else(|| FetchError::other(what, "the artifact holds no Chart.yaml"))?;
                let meta = chart_meta_dir(&dir);
                (dir, meta)
            }
        };
        let (name, version) = meta.unwrap_or((fallback_name, fallback_version));
        Ok(ResolvedChart {
            path,
            name,
            version,
            manifest_digest: art.resolved.manifest_digest.clone(),
            source,
            revision: art.resolved.revision.clone(),
            origin: Some(art.origin),
        })
    }

    /// The artifact unpacked: in the cache (network, cache) or in this run's temp dir (bundle).
    fn unpack(&self, what: &str, art: &Artifact) -> Result<PathBuf, FetchError> {
        let sha = &art.resolved.sha256;
        let result = match art.origin {
            Origin::Bundle => {
                let dir = self.tmp.path().join(sha);
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    std::fs::read(&art.blob)
                        .map_err(|e| e.to_string())
                        .and_then(|d| archive::unpack_tar_gz(&d, &dir))
                        .map(|_| dir)
                }
            }
            _ => self.cache.tree(sha, &art.blob),
        };
        result.map_err(|e| FetchError::other(what, format!("unpacking the artifact: {e}")))
    }

    fn note_use(&self, art: &Artifact, used_by: &str) {
        self.used
            .lock()
            .expect("used lock")
            .entry(art.resolved.key.clone())
            .or_insert_with(|| (art.clone(), BTreeSet::new()))
            .1
            .insert(used_by.to_string());
    }

    async fn obtain(&self, what: &str, req: &Request) -> Result<Artifact, FetchError> {
        self.obtain_for(what, what, req).await
    }

    /// Resolves and fetches `req` once per run (a tag is resolved at most once), recording the use.
    async fn obtain_for(
        &self,
        what: &str,
        used_by: &str,
        req: &Request,
    ) -> Result<Artifact, FetchError> {
        let key = req.key();
        let slot = self
            .memo
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        let art = slot
            .get_or_init(|| self.obtain_uncached(what, &key, req))
            .await
            .clone()
            .map_err(|e| rename_error(e, what))?;
        self.note_use(&art, used_by);
        Ok(art)
    }

    async fn obtain_uncached(
        &self,
        what: &str,
        key: &str,
        req: &Request,
    ) -> Result<Artifact, FetchError> {
        if let Some((store, lock)) = &self.bundle {
            let entry = lock.get(key).ok_or_else(|| FetchError::NotInBundle {
                what: what.into(),
                key: key.into(),
                bundle: store.root().display().to_string(),
            })?;
            let file = store.root().join(&entry.file);
            let data = std::fs::read(&file)
                .map_err(|e| FetchError::other(what, format!("{}: {e}", file.display())))?;
            let actual = store::sha256_hex(&data);
            if actual != entry.resolved.sha256 {
                return Err(FetchError::Checksum {
                    what: what.into(),
                    file: file.display().to_string(),
                    expected: entry.resolved.sha256.clone(),
                    actual,
                });
            }
            return Ok(Artifact {
                resolved: entry.resolved.clone(),
                blob: file,
                origin: Origin::Bundle,
            });
        }
        if self.opts.offline {
            return self
                .cache
                .resolution(key)
                .and_then(|r| {
                    self.cache.blob(&r.sha256).map(|blob| Artifact {
                        resolved: r,
                        blob,
                        origin: Origin::Cache,
                    })
                })
                .ok_or_else(|| FetchError::Offline {
                    what: what.into(),
                    key: key.into(),
                    cache: self.cache.root().display().to_string(),
                });
        }
        let remote = match req {
            Request::Oci(s) => oci::resolve(self, what, s).await?,
            Request::Helm(s) => helmrepo::resolve(self, what, s).await?,
            Request::Git(s) => git::resolve(what, s).await?,
        };
        let mut resolved = remote.resolved;
        resolved.key = key.to_string();
        let cache_err = |e: std::io::Error| {
            FetchError::other(what, format!("cache {}: {e}", self.cache.root().display()))
        };
        if let Some(pinned) = self.cache.resolution(&remote.pin)
            && let Some(blob) = self.cache.blob(&pinned.sha256)
        {
            resolved.sha256 = pinned.sha256;
            self.cache.record(key, &resolved).map_err(cache_err)?;
            return Ok(Artifact {
                resolved,
                blob,
                origin: Origin::Cache,
            });
        }
        let data = match remote.download {
            Download::Oci(p) => oci::download(what, &p).await?,
            Download::Http(g) => helmrepo::download(self, what, &g).await?,
            Download::Git(a) => git::download(what, &a).await?,
        };
        let (sha, blob) = self.cache.put_blob(&data).map_err(cache_err)?;
        resolved.sha256 = sha;
        self.cache.record(key, &resolved).map_err(cache_err)?;
        self.cache
            .record(&remote.pin, &resolved)
            .map_err(cache_err)?;
        Ok(Artifact {
            resolved,
            blob,
            origin: Origin::Network,
        })
    }

    /// Writes every artifact used in this run into the bundle `dir` with its lock file; returns
    /// the number of artifacts and their total size in bytes.
    pub fn write_bundle(&self, dir: &Path) -> Result<(usize, u64), String> {
        let out = Store::new(dir.to_path_buf());
        let used = self.used.lock().expect("used lock").clone();
        let mut lock = Lock {
            version: 1,
            artifacts: Vec::new(),
        };
        let mut bytes = 0;
        for (art, by) in used.values() {
            let data =
                std::fs::read(&art.blob).map_err(|e| format!("{}: {e}", art.blob.display()))?;
            bytes += data.len() as u64;
            let (sha, path) = out
                .put_blob(&data)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let file = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let mut resolved = art.resolved.clone();
            resolved.sha256 = sha;
            lock.artifacts.push(LockEntry {
                used_by: by.iter().cloned().collect(),
                resolved,
                file,
            });
        }
        out.write_lock(&lock)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok((lock.artifacts.len(), bytes))
    }
}

/// What to fetch.
pub(crate) enum Request {
    Oci(oci::OciSpec),
    Helm(helmrepo::ChartSpec),
    Git(git::GitSpec),
}

impl Request {
    fn key(&self) -> String {
        match self {
            Request::Oci(s) => s.key(),
            Request::Helm(s) => s.key(),
            Request::Git(s) => s.key(),
        }
    }
}

/// An error from a shared (memoised) fetch, renamed for the asker.
fn rename_error(e: FetchError, what: &str) -> FetchError {
    match e {
        FetchError::Other { message, .. } => FetchError::Other {
            what: what.into(),
            message,
        },
        other => other,
    }
}

/// `{kind, name, namespace}` with the namespace defaulted.
fn ref_key(r: &Value, default_ns: &str) -> SourceKey {
    let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let ns = get("namespace");
    SourceKey {
        kind: get("kind"),
        namespace: if ns.is_empty() { default_ns.into() } else { ns },
        name: get("name"),
    }
}

/// Reads `(is a Helm chart archive, name, version)` from a `.tgz`: `<dir>/Chart.yaml` at depth 1.
fn chart_meta_tgz(data: &[u8]) -> Option<(bool, String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() == 2 && path.file_name().is_some_and(|n| n == "Chart.yaml") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
            let v: Value = crate::yaml::from_str(&text).ok()?;
            let get = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Some((true, get("name"), get("version")));
        }
    }
    None
}

/// `(name, version)` from `dir/Chart.yaml`.
fn chart_meta_dir(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml")).ok()?;
    let v: Value = crate::yaml::from_str(&text).ok()?;
    let get = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some((get("name"), get("version")))
}

/// The chart directory in an unpacked artifact: itself, or its only subdirectory with Chart.yaml.
fn chart_dir_in(dir: &Path) -> Option<PathBuf> {
    if dir.join("Chart.yaml").is_file() {
        return Some(dir.to_path_buf());
    }
    let subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Chart.yaml").is_file())
        .collect();
    (subs.len() == 1).then(|| subs[0].clone())
}

/// Human label of a transport error, and whether it is a connection failure.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> (String, bool) {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    (msg, e.is_connect() || e.is_timeout())
}

/// Credentials for `host` from the user's docker config (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`): `auths.<host>.auth` or `username`/`password`, else the credential
/// helper it names (`credHelpers.<host>`, else `credsStore`: `docker-credential-<name> get`).
pub(crate) fn docker_config_auth(host: &str) -> Option<(String, String)> {
    let path = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?
        .join("config.json");
    let text = std::fs::read_to_string(path).ok()?;
    if let Some(c) = dockerconfig_auth(&text, host) {
        return Some(c);
    }
    let v: Value = serde_json::from_str(&text).ok()?;
    let helper = v
        .pointer(&format!(
            "/credHelpers/{}",
            host.replace('~', "~0").replace('/', "~1")
        ))
        .or_else(|| v.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())?;
    credential_helper(Path::new(&format!("docker-credential-{helper}")), host)
}

/// Asks a docker credential helper for `host` (`get`, the host on stdin, JSON
/// `{Username, Secret}` on stdout). Fails closed: any error means no credentials.
pub(crate) fn credential_helper(program: &Path, host: &str) -> Option<(String, String)> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(host.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let user = v.get("Username").and_then(Value::as_str)?;
    let secret = v.get("Secret").and_then(Value::as_str)?;
    Some((user.into(), secret.into()))
}

/// Credentials for `host` in a dockerconfigjson document.
pub(crate) fn dockerconfig_auth(json: &str, host: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let auths = v.get("auths")?.as_object()?;
    for (k, entry) in auths {
        let h = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let matches = h == host || (host == "docker.io" && h == "index.docker.io");
        if !matches {
            continue;
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Some((u.into(), p.into()));
        }
        let auth = entry.get("auth").and_then(Value::as_str)?;
        let decoded = crate::build::postbuild::decode_base64(auth)?;
        let (u, p) = decoded.split_once(':')?;
        return Some((u.into(), p.into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_and_docker_config() {
        let m = Mirror::parse("ghcr.io/org=http://127.0.0.1:5000/mirror").unwrap();
        assert_eq!(m.from, "ghcr.io/org");
        assert_eq!(m.to, "127.0.0.1:5000/mirror");
        assert!(m.plain_http);
        assert!(Mirror::parse("nothing").is_none());
        let cfg = r#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"dXNlcjpwYXNz"}}}"#;
        assert_eq!(
            dockerconfig_auth(cfg, "127.0.0.1:5000"),
            Some(("user".into(), "pass".into()))
        );
        assert_eq!(dockerconfig_auth(cfg, "ghcr.io"), None);
    }

    #[test]
    fn credential_helpers_speak_the_docker_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = reg.example ] || exit 1\necho '{\"ServerURL\":\"reg.example\",\"Username\":\"u\",\"Secret\":\"s\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(
            credential_helper(&helper, "reg.example"),
            Some(("u".into(), "s".into()))
        );
        assert_eq!(credential_helper(&helper, "other.example"), None);
        assert_eq!(
            credential_helper(&dir.path().join("missing"), "reg.example"),
            None
        );
    }

    #[test]
    fn flux_chart_version_appends_the_digest() {
        let c = ResolvedChart {
            path: PathBuf::new(),
            name: "podinfo".into(),
            version: "6.5.0+meta".into(),
            manifest_digest: Some("sha256:0123456789abcdef0123".into()),
            source: SourceKey {
                kind: "OCIRepository".into(),
                namespace: "ns".into(),
                name: "podinfo".into(),
            },
            revision: String::new(),
            origin: None,
        };
        assert_eq!(c.flux_version(), "6.5.0+0123456789ab");
    }
}
