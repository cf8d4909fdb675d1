//! Values composition as helm-controller does it (fluxcd/pkg `chartutil.ChartValuesFromReferences`):
//! each `valuesFrom` entry in order (a ConfigMap or Secret in the HelmRelease's namespace; key
//! `valuesKey`, default `values.yaml`; `optional` tolerates only a missing object or key) merged
//! into the result, or with `targetPath` set at that path the way Helm's `--set` does (after the
//! inline values are merged in first); finally the inline `spec.values` on top. Maps merge
//! recursively; lists and scalars are replaced. Pure: the caller supplies the objects.
//!
//! Not reproduced: the aliasing quirk by which a `targetPath` value can be overwritten by an
//! inline value when an earlier entry created its parent map (helm-semantics.md §3); no public
//! fleet uses `targetPath`.

use serde_json::{Map, Value};

use super::spec::ValuesReference;

/// Where a values reference could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValuesError {
    /// The ConfigMap or Secret is not there and not optional.
    #[error("valuesFrom {kind}/{name}: not found{hint}")]
    Missing {
        /// ConfigMap or Secret.
        kind: String,
        /// Its name.
        name: String,
        /// Where it was looked for.
        hint: String,
    },
    /// The key is not in it and the reference is not optional.
    #[error("valuesFrom {kind}/{name}: no key '{key}'")]
    MissingKey {
        /// ConfigMap or Secret.
        kind: String,
        /// Its name.
        name: String,
        /// The key.
        key: String,
    },
    /// The key holds no YAML map.
    #[error("valuesFrom {kind}/{name} key '{key}': {message}")]
    Invalid {
        /// ConfigMap or Secret.
        kind: String,
        /// Its name.
        name: String,
        /// The key.
        key: String,
        /// Why (never the content: it may be secret).
        message: String,
    },
    /// An unsupported kind.
    #[error("valuesFrom kind '{0}' is not ConfigMap or Secret")]
    Kind(String),
}

/// The composed values, and the string values that came from Secrets (to mask in output).
#[derive(Debug, Clone, Default)]
pub struct Composed {
    /// The values Helm gets (`config` of the release).
    pub values: Value,
    /// Leaf strings taken from Secrets.
    pub secret_strings: Vec<String>,
}

/// The annotation [`crate::helm::fleet_value_sources`] puts on a ConfigMap of the fleet whose
/// values were SOPS-encrypted: values read from it are masked as a Secret's are.
pub const DECRYPTED_MARK: &str = "flux-order.dev/sops-decrypted";

/// Composes the values. `lookup(kind, name)` returns the object (ConfigMap or Secret) in the
/// HelmRelease's namespace, or None when it does not exist; `where_` says where it was looked for.
pub fn compose(
    refs: &[ValuesReference],
    inline: Option<&Value>,
    lookup: &dyn Fn(&str, &str) -> Option<Value>,
    where_: &str,
) -> Result<Composed, ValuesError> {
    let mut result = Value::Object(Map::new());
    let mut secret_strings = Vec::new();
    let inline = inline.cloned().unwrap_or(Value::Object(Map::new()));
    for r in refs {
        if r.kind != "ConfigMap" && r.kind != "Secret" {
            return Err(ValuesError::Kind(r.kind.clone()));
        }
        let key = r.values_key.clone().unwrap_or_else(|| "values.yaml".into());
        let Some(obj) = lookup(&r.kind, &r.name) else {
            if r.optional {
                continue;
            }
            return Err(ValuesError::Missing {
                kind: r.kind.clone(),
                name: r.name.clone(),
                hint: format!(" ({where_})"),
            });
        };
        // Values of a Secret, or of a ConfigMap whose values were SOPS-encrypted, never print.
        let secret = r.kind == "Secret"
            || obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(DECRYPTED_MARK))
                .is_some();
        let Some(text) = read_key(&obj, &r.kind, &key) else {
            if r.optional {
                continue;
            }
            return Err(ValuesError::MissingKey {
                kind: r.kind.clone(),
                name: r.name.clone(),
                key,
            });
        };
        let invalid = |message: String| ValuesError::Invalid {
            kind: r.kind.clone(),
            name: r.name.clone(),
            key: key.clone(),
            message,
        };
        match r.target_path.as_deref().filter(|p| !p.is_empty()) {
            None => {
                let v: Value = if text.trim().is_empty() {
                    Value::Object(Map::new())
                } else {
                    crate::yaml::from_str(&text)
                        .map_err(|_| invalid("not valid YAML (content not shown)".into()))?
                };
                if !v.is_object() && !v.is_null() {
                    return Err(invalid("not a YAML map".into()));
                }
                if secret {
                    collect_strings(&v, &mut secret_strings);
                }
                merge(&mut result, v);
            }
            Some(path) => {
                merge(&mut result, inline.clone());
                if secret {
                    secret_strings.push(text.clone());
                }
                set_path(&mut result, path, &text).map_err(invalid)?;
            }
        }
    }
    merge(&mut result, inline);
    secret_strings.retain(|s| s.len() >= 4);
    secret_strings.sort();
    secret_strings.dedup();
    Ok(Composed {
        values: result,
        secret_strings,
    })
}

/// The text of `key` of a ConfigMap (`data`, `binaryData`) or Secret (`data` base64, `stringData`).
fn read_key(obj: &Value, kind: &str, key: &str) -> Option<String> {
    use base64::Engine;
    if kind == "Secret" {
        if let Some(s) = obj
            .pointer("/stringData")
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
        {
            return Some(s.to_string());
        }
        let b = obj
            .pointer("/data")
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    if let Some(s) = obj
        .pointer("/data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
    {
        return Some(s.to_string());
    }
    let b = obj
        .pointer("/binaryData")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Helm's `MergeMaps`: maps merge recursively, anything else in `b` replaces `a`.
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(am), Value::Object(bm)) => {
            for (k, bv) in bm {
                match am.get_mut(&k) {
                    Some(av) if av.is_object() && bv.is_object() => merge(av, bv),
                    _ => {
                        am.insert(k, bv);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (a, b) => *a = b,
    }
}

/// Sets `path=value` the way Helm's strvals does: `.` separates keys (`\.` escapes one),
/// `name[i]` indexes a list, commas separate several assignments; a value in quotes is a string,
/// else `true`/`false`, `null` and integers are typed.
fn set_path(root: &mut Value, path: &str, value: &str) -> Result<(), String> {
    let (quoted, raw) = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(v) => (true, v.to_string()),
        None => match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(v) => (true, v.to_string()),
            None => (false, value.to_string()),
        },
    };
    let typed = if quoted {
        Value::String(raw)
    } else {
        match raw.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            s => s
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(s.to_string())),
        }
    };
    let mut keys: Vec<(String, Option<usize>)> = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '.' => keys.push((std::mem::take(&mut cur), None)),
            '[' => {
                let mut idx = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    idx.push(d);
                }
                let i: usize = idx
                    .parse()
                    .map_err(|_| format!("targetPath {path}: bad list index '{idx}'"))?;
                keys.push((std::mem::take(&mut cur), Some(i)));
                if chars.peek() == Some(&'.') {
                    chars.next();
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        keys.push((cur, None));
    }
    if keys.is_empty() {
        return Err(format!("targetPath '{path}' is empty"));
    }
    let mut node = root;
    let last = keys.len() - 1;
    for (i, (k, idx)) in keys.into_iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let map = node.as_object_mut().ok_or("not a map")?;
        let entry = map.entry(k).or_insert(Value::Null);
        let slot = match idx {
            Some(ix) => {
                if !entry.is_array() {
                    *entry = Value::Array(Vec::new());
                }
                let arr = entry.as_array_mut().ok_or("not a list")?;
                while arr.len() <= ix {
                    arr.push(Value::Null);
                }
                &mut arr[ix]
            }
            None => entry,
        };
        if i == last {
            *slot = typed;
            return Ok(());
        }
        node = slot;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(kind: &str, name: &str, extra: Value) -> ValuesReference {
        let mut v = json!({"kind": kind, "name": name});
        merge(&mut v, extra);
        serde_json::from_value(v).expect("ref")
    }

    #[test]
    fn refs_merge_in_order_and_inline_values_win() {
        let cm = json!({"data": {"values.yaml": "a: {b: 1, c: [1, 2]}\nx: cm\n"}});
        let sec = json!({"data": {"v": "YToge2I6IDJ9Cnk6IHNlY3JldC12YWx1ZQo="}}); // a: {b: 2}\ny: secret-value
        let lookup = |kind: &str, name: &str| match (kind, name) {
            ("ConfigMap", "cm") => Some(cm.clone()),
            ("Secret", "s") => Some(sec.clone()),
            _ => None,
        };
        let refs = vec![
            r("ConfigMap", "cm", json!({})),
            r("Secret", "s", json!({"valuesKey": "v"})),
            r("ConfigMap", "gone", json!({"optional": true})),
        ];
        let inline = json!({"x": "inline", "a": {"c": [3]}});
        let c = compose(&refs, Some(&inline), &lookup, "fleet").expect("compose");
        assert_eq!(
            c.values,
            json!({"a": {"b": 2, "c": [3]}, "x": "inline", "y": "secret-value"})
        );
        assert_eq!(c.secret_strings, vec!["secret-value".to_string()]);
    }

    #[test]
    fn missing_refs_and_keys_are_errors_unless_optional() {
        let lookup = |_: &str, _: &str| Some(json!({"data": {}}));
        let none = |_: &str, _: &str| None;
        let e = compose(&[r("ConfigMap", "x", json!({}))], None, &none, "the fleet").unwrap_err();
        assert!(e.to_string().contains("ConfigMap/x: not found"), "{e}");
        let e = compose(&[r("ConfigMap", "x", json!({}))], None, &lookup, "f").unwrap_err();
        assert!(e.to_string().contains("no key 'values.yaml'"), "{e}");
        assert!(
            compose(
                &[r("ConfigMap", "x", json!({"optional": true}))],
                None,
                &lookup,
                "f"
            )
            .is_ok()
        );
    }

    #[test]
    fn target_path_sets_typed_values() {
        let cm = json!({"data": {"k": "42", "s": "\"42\"", "b": "true"}});
        let lookup = |_: &str, _: &str| Some(cm.clone());
        let refs = vec![
            r(
                "ConfigMap",
                "c",
                json!({"valuesKey": "k", "targetPath": "a.b"}),
            ),
            r(
                "ConfigMap",
                "c",
                json!({"valuesKey": "s", "targetPath": "list[1].name"}),
            ),
            r(
                "ConfigMap",
                "c",
                json!({"valuesKey": "b", "targetPath": "dotted\\.key"}),
            ),
        ];
        let c = compose(&refs, Some(&json!({"z": 1})), &lookup, "f").expect("compose");
        assert_eq!(
            c.values,
            json!({"z": 1, "a": {"b": 42}, "list": [null, {"name": "42"}], "dotted.key": true})
        );
    }
}
