//! SOPS's envelope: the `sops` metadata stanza, `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`
//! values (AES-256-GCM, 32-byte IV, the value's key path `a:b:c:` as additional data), and the MAC:
//! SHA-512 over every value in document order (only the encrypted ones when
//! `mac_only_encrypted`, then after a fixed prefix), upper-case hex, itself encrypted with the
//! `lastmodified` timestamp as additional data. Written from sops' format, not its code.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use super::Keyring;

/// Why a SOPS file could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    /// No usable age key.
    #[error("SOPS: cannot decrypt the data key: {0}")]
    Key(String),
    /// Encrypted only for key types flux-order does not use.
    #[error(
        "SOPS: encrypted for {0} only; flux-order decrypts with age keys (re-encrypt for an age recipient, or let Flux's kustomize-controller apply it)"
    )]
    Unsupported(String),
    /// The MAC does not match: the file was changed after encryption.
    #[error(
        "SOPS: MAC mismatch: the file was modified after it was encrypted (or encrypted with another data key)"
    )]
    Mac,
    /// A value does not decrypt (wrong data key, altered value or path).
    #[error("SOPS: {0}")]
    Decrypt(String),
    /// The file or stanza is malformed.
    #[error("SOPS: malformed file: {0}")]
    Format(String),
}

impl SopsError {
    /// The same error, naming where in the object it happened.
    pub fn within(self, at: &str) -> SopsError {
        match self {
            SopsError::Decrypt(m) => SopsError::Decrypt(format!("{at}: {m}")),
            SopsError::Format(m) => SopsError::Format(format!("{at}: {m}")),
            other => other,
        }
    }
}

/// What decryption needs from the `sops` stanza.
#[derive(Debug, Default)]
pub struct Metadata {
    /// Armored age payloads holding the data key.
    pub age: Vec<String>,
    /// `lastmodified`, as written.
    pub lastmodified: String,
    /// The encrypted MAC.
    pub mac: String,
    /// Only encrypted values are in the MAC.
    pub mac_only_encrypted: bool,
    /// Other key groups present (`pgp`, `kms`, …), for messages.
    pub others: Vec<String>,
}

const OTHER_GROUPS: [&str; 5] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"];

impl Metadata {
    /// Reads the stanza of a YAML or JSON file.
    pub fn from_json(stanza: &Value) -> Result<Metadata, SopsError> {
        let get = |k: &str| {
            stanza
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut m = Metadata {
            lastmodified: get("lastmodified"),
            mac: get("mac"),
            mac_only_encrypted: stanza
                .get("mac_only_encrypted")
                .is_some_and(|v| v == &Value::Bool(true) || v == "true"),
            ..Metadata::default()
        };
        m.add_keys(stanza);
        // Key groups (shamir) hold the same kinds of keys one level down.
        for group in stanza
            .get("key_groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            m.add_keys(group);
        }
        if m.mac.is_empty() {
            return Err(SopsError::Format("the sops stanza has no mac".into()));
        }
        Ok(m)
    }

    /// The age payloads of `holder` (the stanza or one key group), and which other key types it
    /// has.
    fn add_keys(&mut self, holder: &Value) {
        let list = |k: &str| {
            holder
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        for e in list("age") {
            if let Some(enc) = e.get("enc").and_then(Value::as_str) {
                self.age.push(enc.to_string());
            }
        }
        for g in OTHER_GROUPS {
            if !list(g).is_empty() && !self.others.iter().any(|o| o == g) {
                self.others.push(g.to_string());
            }
        }
    }

    /// `pgp, kms` — the other key types, named for messages.
    pub fn other_keys(&self) -> String {
        if self.others.is_empty() {
            "no key at all".into()
        } else {
            self.others.join(", ")
        }
    }
}

/// A decrypted value: its bytes and sops type.
struct Plain {
    bytes: Vec<u8>,
    kind: String,
}

fn decrypt_value(enc: &str, key: &[u8; 32], aad: &str) -> Result<Plain, SopsError> {
    let inner = enc
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| SopsError::Format(format!("not an AES256_GCM value: {:.40}", enc)))?;
    let (mut data, mut iv, mut tag, mut kind) = (None, None, None, None);
    for part in inner.split(',') {
        match part.split_once(':') {
            Some(("data", v)) => data = Some(v),
            Some(("iv", v)) => iv = Some(v),
            Some(("tag", v)) => tag = Some(v),
            Some(("type", v)) => kind = Some(v),
            _ => {}
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |v: Option<&str>, name: &str| {
        v.and_then(|s| b64.decode(s).ok())
            .ok_or_else(|| SopsError::Format(format!("value without a valid {name}")))
    };
    let mut msg = field(data, "data")?;
    let iv = field(iv, "iv")?;
    msg.extend(field(tag, "tag")?);
    if iv.len() != 32 {
        return Err(SopsError::Format(format!(
            "IV of {} bytes, expected 32",
            iv.len()
        )));
    }
    let cipher = AesGcm::<Aes256, U32>::new_from_slice(key)
        .map_err(|e| SopsError::Decrypt(e.to_string()))?;
    let bytes = cipher
        .decrypt(Nonce::<U32>::from_slice(&iv), Payload { msg: &msg, aad: aad.as_bytes() })
        .map_err(|_| {
            SopsError::Decrypt(format!(
                "the value at '{}' does not decrypt (altered, moved, or encrypted with another data key)",
                aad.trim_end_matches(':')
            ))
        })?;
    Ok(Plain {
        bytes,
        kind: kind.unwrap_or("str").to_string(),
    })
}

/// sops' `ToBytes` of a plain value (what goes into the MAC).
fn to_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Bool(true) => b"True".to_vec(),
        Value::Bool(false) => b"False".to_vec(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string().into_bytes(),
            (_, Some(u), _) => u.to_string().into_bytes(),
            (_, _, Some(f)) => format!("{f}").into_bytes(),
            _ => n.to_string().into_bytes(),
        },
        Value::Null => Vec::new(),
        Value::Array(_) | Value::Object(_) => Vec::new(),
    }
}

fn typed(p: Plain) -> Result<(Value, Vec<u8>), SopsError> {
    let text = || {
        String::from_utf8(p.bytes.clone())
            .map_err(|_| SopsError::Format("a decrypted value is not UTF-8".into()))
    };
    let v = match p.kind.as_str() {
        "int" => Value::from(
            text()?
                .parse::<i64>()
                .map_err(|e| SopsError::Format(format!("int value: {e}")))?,
        ),
        "float" => Value::from(
            text()?
                .parse::<f64>()
                .map_err(|e| SopsError::Format(format!("float value: {e}")))?,
        ),
        "bool" => Value::Bool(text()?.eq_ignore_ascii_case("true")),
        _ => Value::String(text()?),
    };
    Ok((v, p.bytes))
}

/// The MAC accumulator.
struct Mac {
    hash: Sha512,
    only_encrypted: bool,
}

impl Mac {
    fn new(only_encrypted: bool) -> Mac {
        let mut hash = Sha512::new();
        if only_encrypted {
            // sops: a fixed prefix (SHA-256 of "sops") keeps these MACs apart from full ones.
            hash.update(Sha256::digest(b"sops"));
        }
        Mac {
            hash,
            only_encrypted,
        }
    }

    fn add(&mut self, bytes: &[u8], encrypted: bool) {
        if encrypted || !self.only_encrypted {
            self.hash.update(bytes);
        }
    }

    fn verify(self, meta: &Metadata, key: &[u8; 32]) -> Result<(), SopsError> {
        let computed: String = self
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let stored =
            decrypt_value(&meta.mac, key, &meta.lastmodified).map_err(|_| SopsError::Mac)?;
        if String::from_utf8_lossy(&stored.bytes).eq_ignore_ascii_case(&computed) {
            Ok(())
        } else {
            Err(SopsError::Mac)
        }
    }
}

/// A JSON pointer segment (`~` and `/` escaped).
pub fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Where the walk is: the key path sops authenticates (`a:b:`, no array indices) and the JSON
/// pointer of the value (with them).
struct At {
    path: Vec<String>,
    pointer: String,
}

fn walk(
    v: &mut Value,
    at: &mut At,
    key: &[u8; 32],
    mac: &mut Mac,
    decrypted: &mut Vec<String>,
) -> Result<(), SopsError> {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                let len = at.pointer.len();
                at.pointer.push('/');
                at.pointer.push_str(&pointer_segment(k));
                at.path.push(k.clone());
                walk(child, at, key, mac, decrypted)?;
                at.path.pop();
                at.pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = at.pointer.len();
                at.pointer.push_str(&format!("/{i}"));
                walk(child, at, key, mac, decrypted)?;
                at.pointer.truncate(len);
            }
        }
        Value::String(s) if s.starts_with("ENC[") => {
            let aad = format!("{}:", at.path.join(":"));
            let (plain, bytes) = typed(decrypt_value(s, key, &aad)?)?;
            mac.add(&bytes, true);
            *v = plain;
            decrypted.push(at.pointer.clone());
        }
        leaf => mac.add(&to_bytes(leaf), false),
    }
    Ok(())
}

/// Decrypts every `ENC[…]` value of `tree` (its `sops` stanza already removed) and verifies
/// the MAC. Returns the JSON pointers of the values that were encrypted.
pub fn decrypt_tree(
    tree: &mut Value,
    key: &[u8; 32],
    meta: &Metadata,
) -> Result<Vec<String>, SopsError> {
    let mut mac = Mac::new(meta.mac_only_encrypted);
    let mut decrypted = Vec::new();
    let mut at = At {
        path: Vec::new(),
        pointer: String::new(),
    };
    walk(tree, &mut at, key, &mut mac, &mut decrypted)?;
    mac.verify(meta, key)?;
    Ok(decrypted)
}

/// The text of a decrypted leaf, as sops feeds it to the MAC (what masking looks for).
pub fn leaf_text(v: &Value) -> String {
    String::from_utf8_lossy(&to_bytes(v)).into_owned()
}

/// A decrypted file: its plain bytes, and the values that were encrypted in it (for masking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainFile {
    /// The file, decrypted, in its own format.
    pub bytes: Vec<u8>,
    /// The plain text of every value that was encrypted.
    pub values: Vec<String>,
}

/// A dotenv SOPS file: `KEY=ENC[…]` lines, the stanza flattened into `sops_…` keys. Read as
/// sops' dotenv store reads it (lines split on `\n`, blank lines skipped, `#` comments kept and
/// left out of the MAC, `\n` in a value meaning a newline) and written back as it writes a plain
/// file (`KEY=value`, newlines as `\n`).
pub fn decrypt_dotenv(text: &str, keys: &Keyring) -> Result<PlainFile, SopsError> {
    enum Line {
        Comment(String),
        Item(String, String),
    }
    let mut lines: Vec<Line> = Vec::new();
    let mut stanza = serde_json::Map::new();
    let mut age: std::collections::BTreeMap<usize, String> = Default::default();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            lines.push(Line::Comment(c.to_string()));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(SopsError::Format(
                "a dotenv line without '=' (a KEY=value line was expected)".into(),
            ));
        };
        let v = v.replace("\\n", "\n");
        match k.strip_prefix("sops_") {
            Some(rest) => {
                if let Some(i) = rest
                    .strip_prefix("age__list_")
                    .and_then(|r| r.strip_suffix("__map_enc"))
                    .and_then(|i| i.parse().ok())
                {
                    age.insert(i, v);
                } else if let Some((group, _)) = rest.split_once("__list_") {
                    stanza.insert(group.to_string(), Value::Array(vec![Value::Bool(true)]));
                } else {
                    stanza.insert(rest.to_string(), Value::String(v));
                }
            }
            None => lines.push(Line::Item(k.to_string(), v)),
        }
    }
    stanza.insert(
        "age".into(),
        Value::Array(
            age.into_values()
                .map(|enc| serde_json::json!({ "enc": enc }))
                .collect(),
        ),
    );
    let meta = Metadata::from_json(&Value::Object(stanza))?;
    let key = keys.data_key(&meta)?;
    let mut mac = Mac::new(meta.mac_only_encrypted);
    let mut out = String::new();
    let mut values = Vec::new();
    for line in lines {
        match line {
            Line::Comment(c) => {
                // sops encrypts comments too (not part of the MAC); one that does not decrypt
                // was written in clear.
                let c = decrypt_value(&c, &key, ":")
                    .ok()
                    .and_then(|p| String::from_utf8(p.bytes).ok())
                    .unwrap_or(c);
                out.push_str(&format!("#{c}\n"));
            }
            Line::Item(k, v) => {
                let plain = if v.starts_with("ENC[") {
                    let p = decrypt_value(&v, &key, &format!("{k}:"))?;
                    mac.add(&p.bytes, true);
                    let s = String::from_utf8(p.bytes)
                        .map_err(|_| SopsError::Format(format!("{k}: not UTF-8")))?;
                    values.push(s.clone());
                    s
                } else {
                    mac.add(v.as_bytes(), false);
                    v
                };
                out.push_str(&format!("{k}={}\n", plain.replace('\n', "\\n")));
            }
        }
    }
    mac.verify(&meta, &key)?;
    Ok(PlainFile {
        bytes: out.into_bytes(),
        values,
    })
}

/// A binary SOPS file (`{"data": ENC[…], "sops": …}`): the raw bytes of `data`.
pub fn decrypt_binary(file: &Value, keys: &Keyring) -> Result<PlainFile, SopsError> {
    let stanza = file
        .get("sops")
        .ok_or_else(|| SopsError::Format("no sops stanza".into()))?;
    let meta = Metadata::from_json(stanza)?;
    let key = keys.data_key(&meta)?;
    let enc = file
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| SopsError::Format("a binary SOPS file without data".into()))?;
    let p = decrypt_value(enc, &key, "data:")?;
    let mut mac = Mac::new(meta.mac_only_encrypted);
    mac.add(&p.bytes, true);
    mac.verify(&meta, &key)?;
    Ok(PlainFile {
        values: vec![String::from_utf8_lossy(&p.bytes).into_owned()],
        bytes: p.bytes,
    })
}
