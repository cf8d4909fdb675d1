//! Helm's release storage (the Secrets driver), so `helm list`, `helm get`, `helm upgrade` and a
//! later helm-controller see what flux-order installed: Secret `sh.helm.release.v1.<name>.v<N>`
//! in the storage namespace, type `helm.sh/release.v1`, labels `owner=helm`, `name`, `status`,
//! `version`, and `data.release` = base64(gzip(json(Release))) (base64 again on the wire, as any
//! Secret data). Pure encoding and decoding; the installer reads and writes the Secrets.

use std::io::{Read, Write};

use base64::Engine;
use serde_json::{Value, json};

/// The Secret type Helm writes.
pub const SECRET_TYPE: &str = "helm.sh/release.v1";

/// The Secret name of revision `version` of `release`.
pub fn secret_name(release: &str, version: u64) -> String {
    format!("sh.helm.release.v1.{release}.v{version}")
}

/// The label selector of every revision of `release`.
pub fn selector(release: &str) -> String {
    format!("owner=helm,name={release}")
}

/// Encodes a Release as Helm stores it: base64(gzip(json)).
pub fn encode(release: &Value) -> String {
    let json = serde_json::to_vec(release).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&json);
    let bytes = gz.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes `data.release` of a release Secret as the API server returns it (base64 of the
/// base64 text).
pub fn decode_secret(secret: &Value) -> Option<Value> {
    let wire = secret.pointer("/data/release")?.as_str()?;
    let text = base64::engine::general_purpose::STANDARD
        .decode(wire)
        .ok()?;
    decode(std::str::from_utf8(&text).ok()?)
}

/// Decodes base64(gzip(json)) (gzip optional, as Helm's reader).
pub fn decode(text: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        bytes
    };
    serde_json::from_slice(&json).ok()
}

/// The Secret holding `release` (its `name`, `version`, `info.status` decide name and labels).
pub fn secret(release: &Value, storage_namespace: &str, now_unix: u64, created: bool) -> Value {
    let name = release["name"].as_str().unwrap_or("");
    let version = release["version"].as_u64().unwrap_or(1);
    let status = release
        .pointer("/info/status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let stamp = if created { "createdAt" } else { "modifiedAt" };
    let data = base64::engine::general_purpose::STANDARD.encode(encode(release));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(name, version),
            "namespace": storage_namespace,
            "labels": {
                "owner": "helm",
                "name": name,
                "status": status,
                "version": version.to_string(),
                stamp: now_unix.to_string(),
            },
        },
        "type": SECRET_TYPE,
        "data": {"release": data},
    })
}

/// Revisions of a release, newest first, decoded from its Secrets.
pub fn revisions(secrets: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = secrets.iter().filter_map(decode_secret).collect();
    out.sort_by_key(|r| std::cmp::Reverse(r["version"].as_u64().unwrap_or(0)));
    out
}

/// The status of a decoded release.
pub fn status(release: &Value) -> &str {
    release
        .pointer("/info/status")
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_helm_stores_it() {
        let rel = json!({"name": "podinfo", "version": 3, "namespace": "apps",
            "info": {"status": "deployed"}, "manifest": "---\nkind: ConfigMap\n", "apply_method": "ssa"});
        let s = secret(&rel, "flux-system", 1700000000, true);
        assert_eq!(s["metadata"]["name"], "sh.helm.release.v1.podinfo.v3");
        assert_eq!(s["metadata"]["namespace"], "flux-system");
        assert_eq!(s["type"], SECRET_TYPE);
        assert_eq!(s["metadata"]["labels"]["status"], "deployed");
        assert_eq!(s["metadata"]["labels"]["version"], "3");
        assert_eq!(s["metadata"]["labels"]["createdAt"], "1700000000");
        // data.release is base64 (the wire) of base64(gzip(json)).
        let inner = base64::engine::general_purpose::STANDARD
            .decode(s["data"]["release"].as_str().unwrap())
            .unwrap();
        let gz = base64::engine::general_purpose::STANDARD
            .decode(&inner)
            .unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(decode_secret(&s), Some(rel));
    }
}
