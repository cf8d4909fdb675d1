//! Versions and constraints as source-controller reads them (Masterminds/semver): lenient version
//! parsing (`v1.2` is 1.2.0), constraints with `||`, space- or comma-separated comparators,
//! hyphen ranges, `x`/`*` wildcards, `~` and `^`. They are translated to the `semver` crate's
//! requirements, with two differences from that crate made explicit: a bare version means
//! exactly that version (`=`), and `*`/empty means the newest version without a prerelease.

use semver::{Version, VersionReq};

/// A Masterminds-style constraint: any of its alternatives matches.
#[derive(Debug, Clone)]
pub struct Constraint {
    alternatives: Vec<VersionReq>,
    text: String,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a version leniently, as Masterminds `NewVersion` does: a leading `v`, missing minor or
/// patch (`1`, `1.2`), prerelease and build metadata.
pub fn parse_version(s: &str) -> Option<Version> {
    let t = s.strip_prefix('v').unwrap_or(s);
    if let Ok(v) = Version::parse(t) {
        return Some(v);
    }
    let split = t.find(['-', '+']).unwrap_or(t.len());
    let (core, rest) = t.split_at(split);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded: Vec<&str> = parts.clone();
    while padded.len() < 3 {
        padded.push("0");
    }
    Version::parse(&format!("{}{rest}", padded.join("."))).ok()
}

impl Constraint {
    /// Parses a constraint; `""` and `*` match every version without a prerelease.
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let comparators = split_comparators(alt.trim())?;
            let joined = if comparators.is_empty() {
                "*".to_string()
            } else {
                comparators.join(", ")
            };
            let req = VersionReq::parse(&joined)
                .map_err(|e| format!("invalid version constraint '{text}': {e}"))?;
            alternatives.push(req);
        }
        Ok(Constraint {
            alternatives,
            text: text.to_string(),
        })
    }

    /// Whether `v` satisfies the constraint.
    pub fn matches(&self, v: &Version) -> bool {
        self.alternatives.iter().any(|r| r.matches(v))
    }
}

/// Splits one alternative into comparators the `semver` crate reads.
fn split_comparators(alt: &str) -> Result<Vec<String>, String> {
    // Hyphen ranges: `1.2 - 1.4.5` is `>=1.2, <=1.4.5`.
    let tokens: Vec<&str> = alt.split([' ', ',']).filter(|t| !t.is_empty()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if i + 2 < tokens.len() && tokens[i + 1] == "-" {
            out.push(format!(">={}", lenient(tokens[i])));
            out.push(format!("<={}", lenient(tokens[i + 2])));
            i += 3;
            continue;
        }
        let mut t = tokens[i].to_string();
        // An operator separated from its version: `>= 1.0`.
        if t.bytes().all(|b| b"<>=!~^".contains(&b)) && i + 1 < tokens.len() {
            t.push_str(tokens[i + 1]);
            i += 1;
        }
        i += 1;
        let op_len = t.bytes().take_while(|b| b"<>=!~^".contains(b)).count();
        let (op, ver) = t.split_at(op_len);
        let ver = ver.strip_prefix('v').unwrap_or(ver);
        if op == "!=" {
            return Err(format!(
                "'!=' in version constraint '{alt}' is not supported"
            ));
        }
        if ver == "*" || ver.eq_ignore_ascii_case("x") {
            continue;
        }
        let wildcard = ver
            .split('.')
            .any(|p| p == "*" || p.eq_ignore_ascii_case("x"));
        let op = match op {
            "" if wildcard => "",
            "" => "=",
            "~>" => "~",
            o => o,
        };
        let ver = if wildcard {
            ver.to_string()
        } else {
            lenient(ver)
        };
        out.push(format!("{op}{ver}"));
    }
    Ok(out)
}

fn lenient(v: &str) -> String {
    parse_version(v)
        .map(|v| v.to_string())
        .unwrap_or_else(|| v.to_string())
}

/// Picks the highest version among `candidates` (text, parsed) that satisfies `constraint`.
/// Ties (equal versions, e.g. differing only in build metadata) keep the first in input order.
pub fn highest_matching<'a, T>(
    candidates: impl IntoIterator<Item = (&'a str, T)>,
    constraint: &Constraint,
) -> Option<(&'a str, T)> {
    let mut best: Option<(Version, &'a str, T)> = None;
    for (text, extra) in candidates {
        let Some(v) = parse_version(text) else {
            continue;
        };
        if !constraint.matches(&v) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(b, _, _)| v.cmp_precedence(b).is_gt())
        {
            best = Some((v, text, extra));
        }
    }
    best.map(|(_, t, e)| (t, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str, v: &str) -> bool {
        Constraint::parse(c)
            .unwrap()
            .matches(&parse_version(v).unwrap())
    }

    #[test]
    fn masterminds_constraints() {
        assert!(m("*", "1.2.3"));
        assert!(!m("*", "1.2.3-rc.1"));
        assert!(m("", "0.0.1"));
        assert!(m("1.2.3", "1.2.3"));
        assert!(!m("1.2.3", "1.2.4"));
        assert!(m(">=1.0.0 <2.0.0", "1.9.0"));
        assert!(!m(">=1.0.0 <2.0.0", "2.0.0"));
        assert!(m(">= 1.0, < 2", "1.5.0"));
        assert!(m("1.x", "1.7.0"));
        assert!(!m("1.x", "2.0.0"));
        assert!(m("~1.2", "1.2.9"));
        assert!(!m("~1.2", "1.3.0"));
        assert!(m("^1.2", "1.9.0"));
        assert!(m("1.0 - 1.4", "1.4.0"));
        assert!(!m("1.0 - 1.4", "1.4.1"));
        assert!(m("<1 || >=3", "3.1.0"));
        assert!(!m("<1 || >=3", "2.0.0"));
        assert!(m("v6.x", "v6.5.0"));
    }

    #[test]
    fn lenient_versions_and_highest() {
        assert_eq!(parse_version("v1.2"), Version::parse("1.2.0").ok());
        assert_eq!(parse_version("latest"), None);
        let c = Constraint::parse("*").unwrap();
        let tags = ["1.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1", "latest"];
        let got = highest_matching(tags.iter().map(|t| (*t, ())), &c).map(|(t, _)| t);
        assert_eq!(got, Some("1.10.0"));
    }
}
