//! Minimal decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! for the few kinds kubectl's typed generators send: Namespace, ConfigMap, Secret,
//! ServiceAccount (`kubectl create namespace|configmap|secret generic|serviceaccount`).

use serde_json::{Map, Value, json};

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, i: 0 }
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.i >= self.b.len() {
            return Some(None);
        }
        let tag = self.varint()?;
        let f = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let n = self.varint()? as usize;
                let s = self.b.get(self.i..self.i + n)?;
                self.i += n;
                Field::Bytes(s)
            }
            1 => {
                self.i += 8;
                Field::Other
            }
            5 => {
                self.i += 4;
                Field::Other
            }
            _ => return None,
        };
        Some(Some((tag >> 3, f)))
    }
    fn fields(b: &'a [u8]) -> Option<Vec<(u64, Field<'a>)>> {
        let mut r = Reader::new(b);
        let mut out = vec![];
        while let Some(f) = r.next()? {
            out.push(f);
        }
        Some(out)
    }
}

fn s(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut k = String::new();
    let mut v = json!("");
    for (n, f) in Reader::fields(b)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => k = String::from_utf8_lossy(x).to_string(),
                2 if bytes_value => v = json!(crate::verbs::base64(x)),
                2 => v = s(x),
                _ => {}
            }
        }
    }
    Some((k, v))
}

fn insert_map(obj: &mut Map<String, Value>, key: &str, entry: Option<(String, Value)>) {
    if let Some((k, v)) = entry
        && let Some(m) = obj.entry(key).or_insert_with(|| json!({})).as_object_mut()
    {
        m.insert(k, v);
    }
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    for (n, f) in Reader::fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), s(x));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), s(x));
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), s(x));
            }
            (11, Field::Bytes(x)) => insert_map(&mut m, "labels", map_entry(x, false)),
            (12, Field::Bytes(x)) => insert_map(&mut m, "annotations", map_entry(x, false)),
            (14, Field::Bytes(x)) => {
                if let Some(a) = m
                    .entry("finalizers")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    a.push(s(x));
                }
            }
            _ => {}
        }
    }
    m.retain(|_, v| v.as_str() != Some(""));
    Some(Value::Object(m))
}

/// Decode a `k8s\0`-prefixed protobuf body into JSON, for the supported kinds.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing protobuf magic")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in Reader::fields(rest).ok_or("bad protobuf envelope")? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in Reader::fields(tm).ok_or("bad typeMeta")? {
                    if let Field::Bytes(x) = tf {
                        match tn {
                            1 => api_version = String::from_utf8_lossy(x).to_string(),
                            2 => kind = String::from_utf8_lossy(x).to_string(),
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!(api_version));
    o.insert("kind".into(), json!(kind));
    let supported = matches!(
        (api_version.as_str(), kind.as_str()),
        (
            "v1",
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        )
    );
    if !supported {
        return Err(format!(
            "protobuf bodies are not supported for {api_version} {kind}; send JSON"
        ));
    }
    for (n, f) in Reader::fields(raw).ok_or("bad protobuf object")? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => {
                o.insert("metadata".into(), object_meta(x).ok_or("bad metadata")?);
            }
            ("ConfigMap", 2, Field::Bytes(x)) => insert_map(&mut o, "data", map_entry(x, false)),
            ("ConfigMap", 3, Field::Bytes(x)) => {
                insert_map(&mut o, "binaryData", map_entry(x, true))
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                o.insert("immutable".into(), json!(v != 0));
            }
            ("Secret", 2, Field::Bytes(x)) => insert_map(&mut o, "data", map_entry(x, true)),
            ("Secret", 3, Field::Bytes(x)) => {
                o.insert("type".into(), s(x));
            }
            ("Secret", 4, Field::Bytes(x)) => insert_map(&mut o, "stringData", map_entry(x, false)),
            ("ServiceAccount", 4, Field::Varint(v)) => {
                o.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(o))
}
