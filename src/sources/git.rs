//! GitRepository sources through the `git` command (argument vectors, never a shell), so ssh and
//! https credentials work as the user's git has them: `git ls-remote` resolves `ref.commit`,
//! `ref.name`, `ref.semver` (over the tags), `ref.tag` or `ref.branch` (default `master`, as
//! source-controller) to a commit; a shallow fetch of that commit and `git archive` make the
//! artifact. Revisions read as Flux writes them (`main@sha1:<commit>`).

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use super::version::{Constraint, highest_matching, parse_version};
use super::{Download, FetchError, Remote, Resolved};

/// What a GitRepository asks for.
#[derive(Debug, Clone)]
pub struct GitSpec {
    url: String,
    branch: Option<String>,
    tag: Option<String>,
    semver: Option<String>,
    commit: Option<String>,
    name: Option<String>,
}

impl GitSpec {
    /// From a GitRepository spec.
    pub fn from_source(what: &str, spec: &Value) -> Result<GitSpec, FetchError> {
        let s = |p: &str| {
            spec.pointer(p)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let url = s("/url").ok_or_else(|| FetchError::Invalid {
            what: what.into(),
            message: "spec.url is not set".into(),
        })?;
        Ok(GitSpec {
            url,
            branch: s("/ref/branch"),
            tag: s("/ref/tag"),
            semver: s("/ref/semver"),
            commit: s("/ref/commit"),
            name: s("/ref/name"),
        })
    }

    /// The resolution key.
    pub fn key(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "git {} branch={} tag={} semver={} commit={} name={}",
            self.url,
            o(&self.branch),
            o(&self.tag),
            o(&self.semver),
            o(&self.commit),
            o(&self.name)
        )
    }
}

/// A commit to archive.
pub struct Archive {
    url: String,
    commit: String,
    refname: Option<String>,
}

async fn git(what: &str, args: &[&str], dir: Option<&Path>) -> Result<String, FetchError> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| FetchError::other(what, format!("running git: {e} (is git installed?)")))?;
    if !out.status.success() {
        return Err(FetchError::other(
            what,
            format!(
                "git {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `git ls-remote`, classifying failures (unreachable, auth).
async fn ls_remote(
    what: &str,
    url: &str,
    patterns: &[&str],
) -> Result<Vec<(String, String)>, FetchError> {
    let (opts, pats): (Vec<&str>, Vec<&str>) = patterns.iter().partition(|p| p.starts_with("--"));
    let mut args = vec!["ls-remote"];
    args.extend(opts);
    args.push("--");
    args.push(url);
    args.extend(pats);
    let out = git(what, &args, None).await.map_err(|e| match e {
        FetchError::Other { message, .. } => {
            let lower = message.to_lowercase();
            if lower.contains("authentication")
                || lower.contains("permission denied")
                || lower.contains("could not read username")
            {
                FetchError::Auth {
                    what: what.into(),
                    url: url.into(),
                    detail: format!(
                        "{message} (git uses your own ssh keys and credential helpers)"
                    ),
                }
            } else if lower.contains("could not resolve")
                || lower.contains("connection refused")
                || lower.contains("unable to connect")
                || lower.contains("timed out")
                || lower.contains("unable to access")
            {
                FetchError::Unreachable {
                    what: what.into(),
                    url: url.into(),
                    detail: message,
                }
            } else {
                FetchError::Other {
                    what: what.into(),
                    message,
                }
            }
        }
        other => other,
    })?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (sha, r) = l.split_once('\t')?;
            Some((sha.to_string(), r.to_string()))
        })
        .collect())
}

/// Resolves the reference to a commit (without fetching objects).
pub(crate) async fn resolve(what: &str, s: &GitSpec) -> Result<Remote, FetchError> {
    let not_found = |reference: String| FetchError::NotFound {
        what: what.into(),
        url: s.url.clone(),
        reference,
        available: String::new(),
    };
    let (commit, revision, refname) = if let Some(c) = &s.commit {
        if c.len() != 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::Invalid {
                what: what.into(),
                message: format!("spec.ref.commit '{c}' is not a full 40-hex SHA-1"),
            });
        }
        let label = s
            .branch
            .clone()
            .map(|b| format!("{b}@"))
            .unwrap_or_default();
        // Reachability is checked by the fetch.
        (
            c.clone(),
            format!("{label}sha1:{c}"),
            s.branch.as_ref().map(|b| format!("refs/heads/{b}")),
        )
    } else if let Some(n) = &s.name {
        let refs = ls_remote(what, &s.url, &[n, &format!("{n}^{{}}")]).await?;
        let peeled = format!("{n}^{{}}");
        let sha = refs
            .iter()
            .find(|(_, r)| *r == peeled)
            .or_else(|| refs.iter().find(|(_, r)| r == n))
            .map(|(s, _)| s.clone())
            .ok_or_else(|| not_found(format!("ref '{n}'")))?;
        (sha.clone(), format!("{n}@sha1:{sha}"), Some(n.clone()))
    } else if let Some(c) = &s.semver {
        let constraint = Constraint::parse(c).map_err(|m| FetchError::Invalid {
            what: what.into(),
            message: format!("spec.ref.semver: {m}"),
        })?;
        let refs = ls_remote(what, &s.url, &["--tags"]).await?;
        let tags: Vec<(String, String)> = refs
            .iter()
            .filter_map(|(sha, r)| {
                let t = r.strip_prefix("refs/tags/")?;
                (!t.ends_with("^{}")).then(|| (t.to_string(), sha.clone()))
            })
            .collect();
        let (tag, _) = highest_matching(tags.iter().map(|(t, s)| (t.as_str(), s)), &constraint)
            .ok_or_else(|| {
                let mut names: Vec<&str> = tags
                    .iter()
                    .map(|(t, _)| t.as_str())
                    .filter(|t| parse_version(t).is_some())
                    .collect();
                names.sort();
                FetchError::NoMatch {
                    what: what.into(),
                    url: s.url.clone(),
                    constraint: c.clone(),
                    available: format!(" (tags: {})", names.join(", ")),
                }
            })?;
        let sha = peeled(&refs, &format!("refs/tags/{tag}")).expect("tag listed");
        (
            sha.clone(),
            format!("{tag}@sha1:{sha}"),
            Some(format!("refs/tags/{tag}")),
        )
    } else if let Some(t) = &s.tag {
        let r = format!("refs/tags/{t}");
        // Patterns match whole refs, so the peeled `^{}` entry needs its own.
        let refs = ls_remote(what, &s.url, &[&r, &format!("{r}^{{}}")]).await?;
        let sha = peeled(&refs, &r).ok_or_else(|| not_found(format!("tag '{t}'")))?;
        (sha.clone(), format!("{t}@sha1:{sha}"), Some(r))
    } else {
        let b = s.branch.clone().unwrap_or_else(|| "master".into());
        let r = format!("refs/heads/{b}");
        let refs = ls_remote(what, &s.url, &[&r]).await?;
        let sha = refs
            .iter()
            .find(|(_, x)| *x == r)
            .map(|(s, _)| s.clone())
            .ok_or_else(|| not_found(format!("branch '{b}'")))?;
        (sha.clone(), format!("{b}@sha1:{sha}"), Some(r))
    };
    Ok(Remote {
        resolved: Resolved {
            key: String::new(),
            url: s.url.clone(),
            revision,
            sha256: String::new(),
            version: None,
            manifest_digest: None,
        },
        pin: format!("git {} commit={commit}", s.url),
        download: Download::Git(Archive {
            url: s.url.clone(),
            commit,
            refname,
        }),
    })
}

/// The commit of `r`, peeled when it is an annotated tag.
fn peeled(refs: &[(String, String)], r: &str) -> Option<String> {
    let p = format!("{r}^{{}}");
    refs.iter()
        .find(|(_, x)| *x == p)
        .or_else(|| refs.iter().find(|(_, x)| x == r))
        .map(|(s, _)| s.clone())
}

/// Fetches the commit into a scratch repository and archives its tree as `.tar.gz`.
pub(crate) async fn download(what: &str, a: &Archive) -> Result<Vec<u8>, FetchError> {
    let tmp = tempfile::Builder::new()
        .prefix("flux-order-git-")
        .tempdir()
        .map(crate::interrupt::TempTree::new)
        .map_err(|e| FetchError::other(what, format!("temporary directory: {e}")))?;
    let dir = tmp.path();
    git(what, &["init", "-q", "--bare", "."], Some(dir)).await?;
    // A shallow fetch of the commit itself; servers refusing unadvertised objects get the ref.
    let direct = git(
        what,
        &["fetch", "-q", "--depth", "1", &a.url, &a.commit],
        Some(dir),
    )
    .await;
    if direct.is_err() {
        match &a.refname {
            Some(r) => git(what, &["fetch", "-q", &a.url, r], Some(dir)).await?,
            None => {
                git(
                    what,
                    &["fetch", "-q", &a.url, "+refs/*:refs/remotes/origin/*"],
                    Some(dir),
                )
                .await?
            }
        };
    }
    let tree = format!("{}^{{tree}}", a.commit);
    git(what, &["cat-file", "-e", &tree], Some(dir))
        .await
        .map_err(|_| FetchError::NotFound {
            what: what.into(),
            url: a.url.clone(),
            reference: format!("commit {}", a.commit),
            available: String::new(),
        })?;
    let out = Command::new("git")
        .args(["archive", "--format=tar", &a.commit])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| FetchError::other(what, format!("git archive: {e}")))?;
    if !out.status.success() {
        return Err(FetchError::other(
            what,
            format!(
                "git archive: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &out.stdout)
        .and_then(|_| gz.finish())
        .map_err(|e| FetchError::other(what, format!("compressing: {e}")))
}
