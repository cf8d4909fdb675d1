//! Label and field selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`).

use serde_json::Value;

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector; empty matches everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    reqs: Vec<Req>,
    field: bool,
}

fn split_top(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl Selector {
    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Parse a label selector (`field` = false) or field selector (`field` = true).
    pub fn parse(s: &str, field: bool) -> Result<Selector, String> {
        let mut reqs = vec![];
        for part in split_top(s) {
            let r = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(i) = part.find(" notin ") {
                Req::NotIn(
                    part[..i].trim().into(),
                    set_values(&part[i + 7..]).ok_or(format!("bad selector {part}"))?,
                )
            } else if let Some(i) = part.find(" in ") {
                Req::In(
                    part[..i].trim().into(),
                    set_values(&part[i + 4..]).ok_or(format!("bad selector {part}"))?,
                )
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if !part.contains(' ') && !part.contains('(') {
                Req::Exists(part.clone())
            } else {
                return Err(format!("unable to parse requirement: {part}"));
            };
            reqs.push(r);
        }
        Ok(Selector { reqs, field })
    }

    fn lookup(&self, obj: &Value, key: &str) -> Option<String> {
        let v = if self.field {
            let mut cur = obj;
            for p in key.split('.') {
                cur = cur.get(p)?;
            }
            cur
        } else {
            obj["metadata"]["labels"].get(key)?
        };
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Whether the object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => {
                self.lookup(obj, k).as_deref() == Some(v.as_str())
                    || (self.field && v.is_empty() && self.lookup(obj, k).is_none())
            }
            Req::Ne(k, v) => self.lookup(obj, k).as_deref() != Some(v.as_str()),
            Req::In(k, vs) => self.lookup(obj, k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => self.lookup(obj, k).is_none_or(|x| !vs.contains(&x)),
            Req::Exists(k) => self.lookup(obj, k).is_some(),
            Req::NotExists(k) => self.lookup(obj, k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"name": "n", "labels": {"a": "1", "b": "2"}}});
        for (s, want) in [
            ("a=1", true),
            ("a==1,b=2", true),
            ("a!=1", false),
            ("a in (1,3)", true),
            ("a notin (1,3)", false),
            ("c", false),
            ("!c", true),
            ("a,b", true),
        ] {
            assert_eq!(Selector::parse(s, false).unwrap().matches(&o), want, "{s}");
        }
        assert!(
            Selector::parse("metadata.name=n", true)
                .unwrap()
                .matches(&o)
        );
        assert!(
            !Selector::parse("metadata.name!=n", true)
                .unwrap()
                .matches(&o)
        );
    }
}
