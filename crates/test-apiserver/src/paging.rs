//! LIST pagination as kube-apiserver (etcd3 storage) does it. `limit` cuts a list after that
//! many matching objects in storage-key order; `metadata.continue` is the real server's opaque
//! token (base64url of `{"v":"meta.k8s.io/v1","rv":<snapshot>,"start":"<key>\u0000"}`), and
//! the next pages are read from the same snapshot — rebuilt from the watch history — so a list
//! is consistent across its pages. `remainingItemCount` is set only when no selector filters
//! the list. A malformed token is a 400; a token older than the last [`State::compacted`] is a
//! 410 Expired carrying a token to go on at the latest state, as after an etcd compaction.

use serde_json::{Value, json};

use crate::discovery::ResourceInfo;
use crate::store::{EventType, State};
use crate::verbs::ApiError;

/// One page of a LIST.
pub(crate) struct Page {
    /// The matching objects, in key order.
    pub items: Vec<Value>,
    /// The resourceVersion the list was read at.
    pub rv: u64,
    /// Token for the next page.
    pub next: Option<String>,
    /// Objects after this page (unfiltered lists only).
    pub remaining: Option<i64>,
}

/// What a LIST asked for.
pub(crate) struct Request<'a> {
    /// Namespace, or all.
    pub namespace: Option<&'a str>,
    /// `limit` (0: everything).
    pub limit: u64,
    /// `continue`, if any.
    pub token: Option<&'a str>,
    /// `resourceVersion`, if any.
    pub resource_version: Option<&'a str>,
    /// Whether a label or field selector filters the list.
    pub filtered: bool,
}

/// Etcd's message for a continue token older than the compaction.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a \
consistent list result. You can start a new list without the continue parameter, or use the \
continue token in this response to retrieve the remainder of the results. Continuing with the \
provided token results in an inconsistent list - objects that were created, modified, or \
deleted between the time the first chunk was returned and now may show up in the list.";

/// The page `req` asks for, of the objects of `info` that `matches`.
pub(crate) fn list(
    st: &State,
    info: &ResourceInfo,
    req: &Request,
    matches: impl Fn(&Value) -> bool,
) -> Result<Page, ApiError> {
    let (rv, start) = match req.token {
        None => (st.rv, String::new()),
        Some(token) => {
            if req
                .resource_version
                .is_some_and(|v| !v.is_empty() && v != "0")
            {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, start) = decode(token)
                .map_err(|e| ApiError::bad_request(format!("invalid continue token: {e}")))?;
            match rv {
                // Go on at the latest state (the token of an Expired answer).
                -1 => (st.rv, start),
                rv if (rv as u64) < st.compacted => {
                    let mut e = ApiError::new(410, "Expired", INCONSISTENT_CONTINUE);
                    e.list_continue = Some(encode(-1, &start));
                    return Err(e);
                }
                rv => (rv as u64, start),
            }
        }
    };
    let all_namespaces = info.namespaced && req.namespace.is_none();
    let key_of = |ns: &str, name: &str| {
        if all_namespaces {
            format!("{ns}/{name}")
        } else {
            name.to_string()
        }
    };
    // The snapshot at `rv`: the objects now, with every change after `rv` undone. Only keys
    // are made here; objects are cloned only for the page.
    let mut changed: std::collections::HashMap<String, Option<&Value>> = Default::default();
    if rv < st.rv {
        let first = st.history.partition_point(|e| e.rv <= rv);
        for e in &st.history[first..] {
            if e.group != info.group
                || e.plural != info.plural
                || req.namespace.is_some_and(|n| n != e.namespace)
            {
                continue;
            }
            let key = key_of(
                &e.namespace,
                e.object["metadata"]["name"].as_str().unwrap_or(""),
            );
            // The first change after the snapshot says what the object was at it.
            changed.entry(key).or_insert(match e.kind {
                EventType::Added => None,
                _ => e.prev.as_deref(),
            });
        }
    }
    let mut objects: Vec<(String, &Value)> = st
        .list(info, req.namespace)
        .into_iter()
        .map(|o| {
            let m = &o["metadata"];
            let key = key_of(
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or(""),
            );
            (key, o)
        })
        .filter(|(k, _)| !changed.contains_key(k))
        .collect();
    objects.extend(changed.into_iter().filter_map(|(k, o)| o.map(|o| (k, o))));
    // Storage-key order (`namespace/name` sorts apart from (namespace, name) where a namespace
    // is a prefix of another).
    objects.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let from = objects.partition_point(|(k, _)| k.as_str() < start.as_str());
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    let mut seen = 0;
    for (key, o) in &objects[from..] {
        if req.limit > 0 && items.len() as u64 >= req.limit {
            more = true;
            break;
        }
        seen += 1;
        last = Some(key.as_str());
        if matches(o) {
            items.push((*o).clone());
        }
    }
    let remaining = (objects.len() - from - seen) as i64;
    Ok(Page {
        items,
        rv,
        next: more.then(|| encode(rv as i64, &format!("{}\0", last.unwrap_or("")))),
        remaining: (more && !req.filtered).then_some(remaining),
    })
}

/// The real server's token: base64url (no padding) of its JSON, fields in Go's order.
fn encode(rv: i64, start: &str) -> String {
    let text = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    crate::verbs::base64(text.as_bytes())
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// (resourceVersion, start key) of a token, or the real server's reason it is not valid.
fn decode(token: &str) -> Result<(i64, String), &'static str> {
    const INVALID: &str = "continue key is not valid";
    let bytes = base64url(token).ok_or(INVALID)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| INVALID)?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err("continue key is not valid: server does not recognize this encoded version");
    }
    let rv = v["rv"].as_i64().unwrap_or(0);
    if rv == 0 {
        return Err(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        );
    }
    let start = v["start"].as_str().unwrap_or("");
    if start.is_empty() {
        return Err("continue key is not valid: encoded start key empty (version meta.k8s.io/v1)");
    }
    if start.split('/').any(|p| p == ".." || p == ".") {
        return Err(INVALID);
    }
    Ok((rv, start.to_string()))
}

/// Decodes unpadded base64url.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_in_the_real_servers_format() {
        let t = encode(42, "cm-7\0");
        // What kube-apiserver sends for the same position.
        assert_eq!(
            String::from_utf8(base64url(&t).unwrap()).unwrap(),
            r#"{"v":"meta.k8s.io/v1","rv":42,"start":"cm-7\u0000"}"#
        );
        assert_eq!(decode(&t), Ok((42, "cm-7\0".to_string())));
        assert!(decode("not a token").is_err());
        assert!(decode(&encode(0, "x")).is_err());
    }
}
