//! Keeps secret values out of what flux-order reports about a run — failure reasons on the
//! terminal, in the summary, in the inventory and in Kubernetes Events. An API server's error
//! message may echo a value it rejected; if that value came from a Secret of the build or from a
//! Secret-backed substitution variable, it is replaced by `***`. Pure.

use serde_json::Value;

/// The mask.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: replacing every `1` or `on` in a message would make
/// it unreadable, and such values are no secrets worth the name.
const MIN_LEN: usize = 4;

/// The secret values among `objects` (Secret `data`, decoded and as sent, and `stringData`) and
/// `vars` (Secret-backed substitution values), longest first.
pub fn secret_values<'a>(
    objects: &[Value],
    vars: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let mut out: Vec<String> = vars.into_iter().cloned().collect();
    for o in objects {
        if o.get("kind").and_then(Value::as_str) != Some("Secret") {
            continue;
        }
        for field in ["data", "stringData"] {
            let Some(map) = o.get(field).and_then(Value::as_object) else {
                continue;
            };
            for v in map.values().filter_map(Value::as_str) {
                out.push(v.to_string());
                if field == "data"
                    && let Some(text) = crate::build::postbuild::decode_base64(v)
                {
                    out.push(text);
                }
            }
        }
    }
    out.retain(|v| v.len() >= MIN_LEN);
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out.dedup();
    out
}

/// `text` with every occurrence of a value of `secrets` (longest first) replaced by [`MASK`].
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Every string of `v` redacted as [`redact`] does.
pub fn redact_value(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => *s = redact(s, secrets),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secrets)),
        Value::Object(m) => m.values_mut().for_each(|x| redact_value(x, secrets)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_data_and_secret_variables_are_masked() {
        let objects = vec![
            json!({"kind": "Secret", "data": {"p": "aHVudGVyMg=="}, "stringData": {"t": "tok-123"}}),
            json!({"kind": "ConfigMap", "data": {"x": "visible"}}),
        ];
        let vars = ["s3cr3t-var".to_string()];
        let secrets = secret_values(&objects, &vars);
        let msg = "Invalid value: \"hunter2\", \"tok-123\", \"s3cr3t-var\", \"aHVudGVyMg==\", \"visible\"";
        assert_eq!(
            redact(msg, &secrets),
            "Invalid value: \"***\", \"***\", \"***\", \"***\", \"visible\""
        );
    }
}
