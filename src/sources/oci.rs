//! OCI artifacts as source-controller's OCIRepository reconciler reads them (`getArtifactRef`,
//! `selectLayer`): `ref.digest`, else `ref.semver` (+ `semverFilter`) over the listed tags, else
//! `ref.tag`, else `latest`; the layer whose media type matches `layerSelector.mediaType`, else
//! the first. Helm charts (chartRef to an OCIRepository, HelmRepository `type: oci`) read tags
//! with Helm's `_` → `+` mapping. Registries are reached through `oci-client`; plain HTTP with
//! `spec.insecure` or a `--registry-mirror` to `http://`; credentials from the source's
//! dockerconfigjson `secretRef`, else the user's docker config.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::version::{Constraint, highest_matching, parse_version};
use super::{Download, FetchError, Fetcher, Remote, Resolved};

/// The media type of a Helm chart layer (helm `pkg/registry` `ChartLayerMediaType`).
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What an OCIRepository (or an OCI Helm chart) asks for.
#[derive(Debug, Clone)]
pub struct OciSpec {
    /// `oci://host/repository` as written in the fleet.
    pub url: String,
    tag: Option<String>,
    semver: Option<String>,
    semver_filter: Option<String>,
    digest: Option<String>,
    media_type: Option<String>,
    insecure: bool,
    secret: Option<(String, String)>,
    /// Read tags as Helm does (`_` → `+`).
    pub helm_tags: bool,
}

fn str_at(v: &Value, p: &str) -> Option<String> {
    v.pointer(p)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn check_provider(what: &str, spec: &Value) -> Result<(), FetchError> {
    match spec.get("provider").and_then(Value::as_str) {
        None | Some("generic") | Some("") => Ok(()),
        Some(p) => Err(FetchError::Unsupported {
            what: what.into(),
            message: format!(
                "spec.provider '{p}' (cloud workload identity) is not supported; log in with docker or pull elsewhere"
            ),
        }),
    }
}

impl OciSpec {
    /// From an OCIRepository spec.
    pub fn from_source(what: &str, namespace: &str, spec: &Value) -> Result<OciSpec, FetchError> {
        check_provider(what, spec)?;
        let url = str_at(spec, "/url").ok_or_else(|| FetchError::Invalid {
            what: what.into(),
            message: "spec.url is not set".into(),
        })?;
        if !url.starts_with("oci://") {
            return Err(FetchError::Invalid {
                what: what.into(),
                message: format!("spec.url '{url}' must start with oci://"),
            });
        }
        if let Some(op) = str_at(spec, "/layerSelector/operation")
            && op != "extract"
            && op != "copy"
        {
            return Err(FetchError::Invalid {
                what: what.into(),
                message: format!("spec.layerSelector.operation '{op}' must be extract or copy"),
            });
        }
        Ok(OciSpec {
            url,
            tag: str_at(spec, "/ref/tag"),
            semver: str_at(spec, "/ref/semver"),
            semver_filter: str_at(spec, "/ref/semverFilter"),
            digest: str_at(spec, "/ref/digest"),
            media_type: str_at(spec, "/layerSelector/mediaType"),
            insecure: spec.get("insecure").and_then(Value::as_bool) == Some(true),
            secret: str_at(spec, "/secretRef/name").map(|n| (namespace.to_string(), n)),
            helm_tags: false,
        })
    }

    /// A chart of a HelmRepository `type: oci`: `<url>/<chart>`; a version that is valid semver
    /// is the tag (no listing), anything else a constraint over the listed tags.
    pub fn from_helm_repository(
        what: &str,
        namespace: &str,
        spec: &Value,
        chart: &str,
        version: &str,
    ) -> Result<OciSpec, FetchError> {
        check_provider(what, spec)?;
        let base = str_at(spec, "/url").ok_or_else(|| FetchError::Invalid {
            what: what.into(),
            message: "HelmRepository spec.url is not set".into(),
        })?;
        let exact = semver::Version::parse(version).is_ok();
        Ok(OciSpec {
            url: format!("{}/{chart}", base.trim_end_matches('/')),
            tag: exact.then(|| version.replace('+', "_")),
            semver: (!exact).then(|| version.to_string()),
            semver_filter: None,
            digest: None,
            media_type: Some(HELM_CHART_LAYER.into()),
            insecure: spec.get("insecure").and_then(Value::as_bool) == Some(true),
            secret: str_at(spec, "/secretRef/name").map(|n| (namespace.to_string(), n)),
            helm_tags: true,
        })
    }

    /// The resolution key (what was asked, not what it resolved to).
    pub fn key(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "oci {} digest={} semver={} filter={} tag={} layer={}",
            self.url,
            o(&self.digest),
            o(&self.semver),
            o(&self.semver_filter),
            o(&self.tag),
            o(&self.media_type)
        )
    }
}

/// A blob to download.
pub struct Pull {
    client: Client,
    reference: Reference,
    digest: String,
    url: String,
}

/// `host/repo` after `--registry-mirror`, and whether plain HTTP is asked for.
fn mirrored(f: &Fetcher, url: &str) -> (String, bool) {
    let bare = url.trim_start_matches("oci://");
    for m in f.mirrors() {
        if let Some(rest) = bare.strip_prefix(&m.from)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return (format!("{}{rest}", m.to), m.plain_http);
        }
    }
    (bare.to_string(), false)
}

async fn credentials(
    f: &Fetcher,
    what: &str,
    s: &OciSpec,
    host: &str,
) -> Result<RegistryAuth, FetchError> {
    if let Some((ns, name)) = &s.secret {
        let Some(data) = f.secret(ns, name).await else {
            // Not in the fleet nor read from the cluster: the user's own login may still work.
            return Ok(user_auth(host));
        };
        let Some(json) = data.get(".dockerconfigjson") else {
            return Err(FetchError::Auth {
                what: what.into(),
                url: s.url.clone(),
                detail: format!("Secret {ns}/{name} (spec.secretRef) has no .dockerconfigjson key"),
            });
        };
        return Ok(match super::dockerconfig_auth(json, host) {
            Some((u, p)) => RegistryAuth::Basic(u, p),
            None => user_auth(host),
        });
    }
    Ok(user_auth(host))
}

fn user_auth(host: &str) -> RegistryAuth {
    match super::docker_config_auth(host) {
        Some((u, p)) => RegistryAuth::Basic(u, p),
        None => RegistryAuth::Anonymous,
    }
}

/// Maps a client error to a [`FetchError`] naming the source.
fn classify(what: &str, url: &str, reference: &str, e: OciDistributionError) -> FetchError {
    let what = what.to_string();
    let url = url.to_string();
    match e {
        OciDistributionError::AuthenticationFailure(d) => FetchError::Auth {
            what,
            url,
            detail: d,
        },
        OciDistributionError::UnauthorizedError { .. } => FetchError::Auth {
            what,
            url,
            detail: "401 Unauthorized (credentials: spec.secretRef, else the user's docker config)"
                .into(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => FetchError::Auth {
            what,
            url,
            detail: message,
        },
        OciDistributionError::ImageManifestNotFoundError(_)
        | OciDistributionError::ServerError { code: 404, .. } => FetchError::NotFound {
            what,
            url,
            reference: reference.into(),
            available: String::new(),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| c.contains("Unauthorized") || c.contains("Denied"))
            {
                FetchError::Auth {
                    what,
                    url,
                    detail: text,
                }
            } else if codes.iter().any(|c| c.contains("Unknown")) {
                FetchError::NotFound {
                    what,
                    url,
                    reference: reference.into(),
                    available: String::new(),
                }
            } else {
                FetchError::Other {
                    what,
                    message: format!("{url}: {text}"),
                }
            }
        }
        OciDistributionError::RequestError(e) => {
            let (detail, connect) = super::describe_reqwest(&e);
            if connect {
                FetchError::Unreachable { what, url, detail }
            } else {
                FetchError::Other {
                    what,
                    message: format!("{url}: {detail}"),
                }
            }
        }
        other => FetchError::Other {
            what,
            message: format!("{url}: {other}"),
        },
    }
}

/// Resolves the reference to a manifest and a layer, without downloading the layer.
pub(crate) async fn resolve(f: &Fetcher, what: &str, s: &OciSpec) -> Result<Remote, FetchError> {
    let (target, plain) = mirrored(f, &s.url);
    let (host, repo) = target.split_once('/').ok_or_else(|| FetchError::Invalid {
        what: what.into(),
        message: format!("{}: no repository after the host", s.url),
    })?;
    let client = Client::new(ClientConfig {
        protocol: if s.insecure || plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        ..Default::default()
    });
    let auth = credentials(f, what, s, host).await?;
    let shown = format!("oci://{target}");
    let (reference, tag, asked) = if let Some(d) = &s.digest {
        (
            Reference::with_digest(host.into(), repo.into(), d.clone()),
            None,
            format!("digest {d}"),
        )
    } else if let Some(c) = &s.semver {
        let tag = pick_tag(&client, &auth, what, &shown, host, repo, c, s).await?;
        (
            Reference::with_tag(host.into(), repo.into(), tag.clone()),
            Some(tag.clone()),
            format!("tag '{tag}'"),
        )
    } else {
        let tag = s.tag.clone().unwrap_or_else(|| "latest".into());
        (
            Reference::with_tag(host.into(), repo.into(), tag.clone()),
            Some(tag.clone()),
            format!("tag '{tag}'"),
        )
    };
    let (raw, manifest_digest) = client
        .pull_manifest_raw(&reference, &auth, MANIFEST_TYPES)
        .await
        .map_err(|e| classify(what, &shown, &asked, e))?;
    let manifest: Value = serde_json::from_slice(&raw)
        .map_err(|e| FetchError::other(what, format!("{shown}: manifest: {e}")))?;
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let layer = match &s.media_type {
        Some(mt) => layers
            .iter()
            .find(|l| l.get("mediaType").and_then(Value::as_str) == Some(mt.as_str()))
            .ok_or_else(|| FetchError::NotFound {
                what: what.into(),
                url: shown.clone(),
                reference: format!("a layer with media type '{mt}' in {asked}"),
                available: format!(
                    " (layers: {})",
                    layers
                        .iter()
                        .filter_map(|l| l.get("mediaType").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?,
        None => layers
            .first()
            .ok_or_else(|| FetchError::other(what, format!("{shown}: {asked} has no layers")))?,
    };
    let digest = layer
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64)
        .ok_or_else(|| {
            FetchError::other(
                what,
                format!("{shown}: layer digest '{digest}' is not sha256"),
            )
        })?
        .to_string();
    let revision = match &tag {
        Some(t) => format!("{t}@{manifest_digest}"),
        None => manifest_digest.clone(),
    };
    let version = tag.map(|t| if s.helm_tags { t.replace('_', "+") } else { t });
    Ok(Remote {
        resolved: Resolved {
            key: String::new(),
            url: s.url.clone(),
            revision,
            sha256: hex.clone(),
            version,
            manifest_digest: Some(manifest_digest),
        },
        pin: format!("blob sha256:{hex}"),
        download: Download::Oci(Box::new(Pull {
            client,
            reference,
            digest,
            url: shown,
        })),
    })
}

#[allow(clippy::too_many_arguments)]
async fn pick_tag(
    client: &Client,
    auth: &RegistryAuth,
    what: &str,
    shown: &str,
    host: &str,
    repo: &str,
    constraint: &str,
    s: &OciSpec,
) -> Result<String, FetchError> {
    let c = Constraint::parse(constraint).map_err(|m| FetchError::Invalid {
        what: what.into(),
        message: format!("spec.ref.semver: {m}"),
    })?;
    let filter = match &s.semver_filter {
        Some(f) => Some(regex::Regex::new(f).map_err(|e| FetchError::Invalid {
            what: what.into(),
            message: format!("spec.ref.semverFilter '{f}': {e}"),
        })?),
        None => None,
    };
    let listing = Reference::with_tag(host.into(), repo.into(), "latest".into());
    let mut tags: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = client
            .list_tags(&listing, auth, Some(1000), last.as_deref())
            .await
            .map_err(|e| classify(what, shown, "the repository", e))?;
        let n = page.tags.len();
        last = page.tags.last().cloned();
        tags.extend(page.tags);
        if n < 1000 {
            break;
        }
    }
    // Helm stores `+` as `_` in tags; read every tag that way for version comparison.
    let readable: Vec<(String, String)> = tags
        .iter()
        .filter(|t| filter.as_ref().is_none_or(|r| r.is_match(t)))
        .map(|t| (t.replace('_', "+"), t.clone()))
        .collect();
    highest_matching(readable.iter().map(|(r, t)| (r.as_str(), t)), &c)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| {
            let mut versions: Vec<&str> = readable
                .iter()
                .filter(|(r, _)| parse_version(r).is_some())
                .map(|(_, t)| t.as_str())
                .collect();
            versions.sort();
            FetchError::NoMatch {
                what: what.into(),
                url: shown.into(),
                constraint: constraint.into(),
                available: if versions.is_empty() {
                    " (no semver tags)".into()
                } else {
                    format!(" (tags: {})", versions.join(", "))
                },
            }
        })
}

/// Downloads the selected layer (the client verifies its digest).
pub(crate) async fn download(what: &str, p: &Pull) -> Result<Vec<u8>, FetchError> {
    let mut out: Vec<u8> = Vec::new();
    p.client
        .pull_blob(&p.reference, p.digest.as_str(), &mut out)
        .await
        .map_err(|e| classify(what, &p.url, &format!("layer {}", p.digest), e))?;
    Ok(out)
}
