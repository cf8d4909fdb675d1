//! Helm repositories of `type: default`, as source-controller's `chart_repository.go` reads them:
//! `index.yaml` over HTTP(S) (basic auth from the HelmRepository's `secretRef`: `username` and
//! `password`), then the chart version by exact string match, else the newest version satisfying
//! the constraint (`*` or empty: the newest without a prerelease), ties broken by `created`.
//! The index is downloaded once per repository per run.

use serde_json::Value;

use super::version::{Constraint, highest_matching, parse_version};
use super::{Download, FetchError, Fetcher, Remote, Resolved};

/// A chart asked of a HelmRepository.
#[derive(Debug, Clone)]
pub struct ChartSpec {
    url: String,
    chart: String,
    version: String,
    /// `namespace/name` of the secretRef Secret (basic auth), if any.
    secret: Option<String>,
}

impl ChartSpec {
    /// From a HelmRepository spec and the HelmRelease's chart and version.
    pub fn new(
        what: &str,
        namespace: &str,
        spec: &Value,
        chart: &str,
        version: &str,
    ) -> Result<ChartSpec, FetchError> {
        let url = spec
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| FetchError::Invalid {
                what: what.into(),
                message: "HelmRepository spec.url is not set".into(),
            })?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FetchError::Invalid {
                what: what.into(),
                message: format!("HelmRepository spec.url '{url}' must be http(s)://"),
            });
        }
        let secret = spec
            .pointer("/secretRef/name")
            .and_then(Value::as_str)
            .map(|n| (namespace.to_string(), n.to_string()));
        Ok(ChartSpec {
            url: url.trim_end_matches('/').to_string(),
            chart: chart.into(),
            version: if version.is_empty() {
                "*".into()
            } else {
                version.into()
            },
            secret: secret.map(|(ns, n)| format!("{ns}/{n}")),
        })
    }

    /// The resolution key.
    pub fn key(&self) -> String {
        format!(
            "helm {} chart={} version={}",
            self.url, self.chart, self.version
        )
    }
}

/// A chart archive to download.
pub struct Get {
    url: String,
    auth: Option<(String, String)>,
}

async fn auth_for(
    f: &Fetcher,
    what: &str,
    s: &ChartSpec,
) -> Result<Option<(String, String)>, FetchError> {
    let Some(secret) = &s.secret else {
        return Ok(None);
    };
    let (ns, name) = secret.split_once('/').unwrap_or(("", secret));
    let Some(data) = f.secret(ns, name).await else {
        return Ok(None);
    };
    match (data.get("username"), data.get("password")) {
        (Some(u), Some(p)) => Ok(Some((u.clone(), p.clone()))),
        _ => Err(FetchError::Auth {
            what: what.into(),
            url: s.url.clone(),
            detail: format!("Secret {secret} (spec.secretRef) has no username and password"),
        }),
    }
}

async fn get(
    f: &Fetcher,
    what: &str,
    url: &str,
    auth: &Option<(String, String)>,
    asked: &str,
    secret: Option<&str>,
) -> Result<Vec<u8>, FetchError> {
    let mut req = f.http().get(url);
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().await.map_err(|e| {
        let (detail, connect) = super::describe_reqwest(&e);
        if connect {
            FetchError::Unreachable {
                what: what.into(),
                url: url.into(),
                detail,
            }
        } else {
            FetchError::other(what, format!("{url}: {detail}"))
        }
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let detail = match (auth, secret) {
            (Some(_), _) => format!("{status}: the credentials were refused"),
            (None, Some(s)) => format!(
                "{status}: spec.secretRef Secret {s} is neither in the fleet nor read from the cluster"
            ),
            (None, None) => format!("{status}: the repository needs credentials (spec.secretRef)"),
        };
        return Err(FetchError::Auth {
            what: what.into(),
            url: url.into(),
            detail,
        });
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(FetchError::NotFound {
            what: what.into(),
            url: url.into(),
            reference: asked.into(),
            available: String::new(),
        });
    }
    if !status.is_success() {
        return Err(FetchError::other(what, format!("{url}: HTTP {status}")));
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| FetchError::other(what, format!("{url}: {}", super::describe_reqwest(&e).0)))
}

/// Downloads the index, picks the version, and returns the chart to download.
pub(crate) async fn resolve(f: &Fetcher, what: &str, s: &ChartSpec) -> Result<Remote, FetchError> {
    let auth = auth_for(f, what, s).await?;
    let index_url = format!("{}/index.yaml", s.url);
    let data = get(
        f,
        what,
        &index_url,
        &auth,
        "index.yaml",
        s.secret.as_deref(),
    )
    .await?;
    let text = String::from_utf8_lossy(&data);
    let index: Value = crate::yaml::from_str(&text)
        .map_err(|e| FetchError::other(what, format!("{index_url}: {e}")))?;
    let entries = index
        .pointer(&format!(
            "/entries/{}",
            s.chart.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| FetchError::NotFound {
            what: what.into(),
            url: index_url.clone(),
            reference: format!("chart '{}'", s.chart),
            available: String::new(),
        })?;
    let entry = pick(&entries, &s.version).ok_or_else(|| {
        let mut versions: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.get("version").and_then(Value::as_str))
            .collect();
        versions.sort();
        let available = format!(" (versions: {})", versions.join(", "));
        if Constraint::parse(&s.version).is_err() {
            FetchError::NotFound {
                what: what.into(),
                url: index_url.clone(),
                reference: format!("chart '{}' version '{}'", s.chart, s.version),
                available,
            }
        } else {
            FetchError::NoMatch {
                what: what.into(),
                url: index_url.clone(),
                constraint: s.version.clone(),
                available,
            }
        }
    })?;
    let version = entry
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let rel = entry
        .pointer("/urls/0")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            FetchError::other(
                what,
                format!("{index_url}: chart '{}' {version} has no urls", s.chart),
            )
        })?;
    let chart_url = if rel.contains("://") {
        rel.to_string()
    } else {
        format!("{}/{}", s.url, rel.trim_start_matches("./"))
    };
    let pin = match entry.get("digest").and_then(Value::as_str) {
        Some(d) if d.len() == 64 => format!("blob sha256:{d}"),
        _ => format!("helm-chart {chart_url}"),
    };
    Ok(Remote {
        resolved: Resolved {
            key: String::new(),
            url: s.url.clone(),
            revision: version.clone(),
            sha256: String::new(),
            version: Some(version),
            manifest_digest: None,
        },
        pin,
        download: Download::Http(Get {
            url: chart_url,
            auth,
        }),
    })
}

/// Picks an index entry: exact version string first, else the newest matching the constraint,
/// ties broken by `created` (newest first).
fn pick<'a>(entries: &'a [Value], version: &str) -> Option<&'a Value> {
    let ver = |e: &Value| {
        e.get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if let Some(e) = entries.iter().find(|e| ver(e) == version) {
        return Some(e);
    }
    let c = Constraint::parse(version).ok()?;
    let mut sorted: Vec<&Value> = entries.iter().collect();
    // RFC 3339 timestamps sort as text; newest first so equal versions keep the newest.
    sorted.sort_by(|a, b| {
        let t = |e: &Value| {
            e.get("created")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        t(b).cmp(&t(a))
    });
    let texts: Vec<String> = sorted.iter().map(|e| ver(e)).collect();
    highest_matching(
        texts.iter().map(String::as_str).zip(sorted.iter().copied()),
        &c,
    )
    .map(|(_, e)| e)
    .filter(|e| parse_version(&ver(e)).is_some())
}

/// Downloads a chart archive.
pub(crate) async fn download(f: &Fetcher, what: &str, g: &Get) -> Result<Vec<u8>, FetchError> {
    get(f, what, &g.url, &g.auth, "the chart archive", None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_exact_then_newest_then_created() {
        let entries: Vec<Value> = serde_json::from_str(
            r#"[{"version":"1.0.0","created":"2024-01-01T00:00:00Z"},
                {"version":"1.2.0","created":"2024-01-02T00:00:00Z"},
                {"version":"1.2.0+b","created":"2024-03-01T00:00:00Z"},
                {"version":"2.0.0-rc.1","created":"2024-04-01T00:00:00Z"},
                {"version":"latest-build","created":"2024-05-01T00:00:00Z"}]"#,
        )
        .unwrap();
        let v = |c: &str| pick(&entries, c).map(|e| e["version"].as_str().unwrap().to_string());
        assert_eq!(v("*").as_deref(), Some("1.2.0+b"));
        assert_eq!(v("").as_deref(), Some("1.2.0+b"));
        assert_eq!(v("1.0.0").as_deref(), Some("1.0.0"));
        assert_eq!(v("latest-build").as_deref(), Some("latest-build"));
        assert_eq!(v("<1.2").as_deref(), Some("1.0.0"));
        assert_eq!(v(">=3").as_deref(), None);
    }
}
