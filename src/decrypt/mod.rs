//! SOPS decryption the way kustomize-controller does it: files a build reads (secretGenerator
//! sources, patches) are decrypted whole in their format before the build (see
//! `crate::build::sops`); after the kustomize build, before substitution, every object with a
//! top-level `sops` stanza is decrypted (as a JSON tree), and every Secret data value that is
//! itself a SOPS file is decrypted in its format. Only age keys are supported: the data key is
//! age-decrypted, each `ENC[AES256_GCM,…]` value AES-256-GCM-decrypted with its path as
//! additional data, and the MAC (SHA-512 over the values, encrypted with `lastmodified`) verified.
//! PGP, KMS and Vault keys are a clear error. What was decrypted is reported (pointers, values) so
//! that it can be masked. Pure: keys come in, values go out.

mod envelope;

use std::io::Read as _;
use std::str::FromStr as _;

use base64::Engine as _;
use serde_json::Value;

use envelope::{Metadata, decrypt_binary, decrypt_tree, leaf_text, pointer_segment};
pub use envelope::{PlainFile, SopsError};

/// Age identities to try, with where each came from (for messages).
#[derive(Clone, Default)]
pub struct Keyring {
    identities: Vec<age::x25519::Identity>,
    sources: Vec<String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.identities.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl Keyring {
    /// Adds every `AGE-SECRET-KEY-…` line of `text` (comments and blank lines skipped).
    pub fn add_text(&mut self, text: &str, source: &str) -> Result<usize, SopsError> {
        let mut n = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                SopsError::Key(format!(
                    "{source}: a line is not an age secret key (AGE-SECRET-KEY-1…)"
                ))
            })?;
            self.identities.push(id);
            n += 1;
        }
        if n > 0 {
            self.sources.push(source.to_string());
        }
        Ok(n)
    }

    /// The public keys of its identities, sorted: two keyrings with the same fingerprint decrypt
    /// the same files.
    pub fn fingerprint(&self) -> String {
        let mut keys: Vec<String> = self
            .identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect();
        keys.sort();
        keys.join(",")
    }

    fn describe(&self) -> String {
        if self.sources.is_empty() {
            "no age key was given (spec.decryption.secretRef keys ending in .agekey, --age-key-file, SOPS_AGE_KEY_FILE or SOPS_AGE_KEY)".into()
        } else {
            format!(
                "none of the age keys from {} decrypts it",
                self.sources.join(", ")
            )
        }
    }

    /// The SOPS data key, from the `age` entries of the metadata.
    pub(super) fn data_key(&self, meta: &Metadata) -> Result<[u8; 32], SopsError> {
        if meta.age.is_empty() {
            return Err(SopsError::Unsupported(meta.other_keys()));
        }
        for enc in &meta.age {
            let armored = age::armor::ArmoredReader::new(enc.as_bytes());
            let Ok(decryptor) = age::Decryptor::new(armored) else {
                continue;
            };
            let ids = self.identities.iter().map(|i| i as &dyn age::Identity);
            let Ok(mut reader) = decryptor.decrypt(ids) else {
                continue;
            };
            let mut key = Vec::new();
            if reader.read_to_end(&mut key).is_ok()
                && let Ok(k) = <[u8; 32]>::try_from(key.as_slice())
            {
                return Ok(k);
            }
        }
        let others = meta.other_keys();
        Err(SopsError::Key(if others.is_empty() {
            self.describe()
        } else {
            format!(
                "{}; it is also encrypted for {others}, which flux-order does not use",
                self.describe()
            )
        }))
    }
}

/// The format of a SOPS file, from its name as sops and Flux tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// dotenv (`KEY=value` lines).
    Dotenv,
    /// Anything else: the file is `{"data": …, "sops": …}` in JSON.
    Binary,
}

impl Format {
    /// sops' `FormatForPath`, with kustomize-controller's exception: a `.dockerconfigjson`
    /// key is JSON.
    pub fn for_path(path: &str) -> Format {
        let p = path.to_ascii_lowercase();
        if p.ends_with(".dockerconfigjson") {
            Format::Json
        } else if p.ends_with(".yaml") || p.ends_with(".yml") {
            Format::Yaml
        } else if p.ends_with(".json") {
            Format::Json
        } else if p.ends_with(".env") {
            Format::Dotenv
        } else {
            Format::Binary
        }
    }
}

/// Whether an object of a build carries a SOPS stanza.
pub fn is_encrypted(obj: &Value) -> bool {
    obj.get("sops").is_some_and(Value::is_object)
}

/// What decrypting a Kustomization's build needs: its keys, and its directory (where the files
/// the objects came from are).
#[derive(Debug, Clone, Copy)]
pub struct DecryptWith<'a> {
    /// The age keys.
    pub keys: &'a Keyring,
    /// The Kustomization's directory in its source.
    pub dir: &'a std::path::Path,
}

/// Decrypts an object of a kustomize build whose document in `file` (the file it came from) is
/// SOPS-encrypted. kustomize prints map keys sorted, while the MAC covers the values in the order
/// the file has them, so the file's own document is decrypted and verified, and the build's
/// encrypted values are taken from it by path. Without the file, the object itself is decrypted.
/// Returns the JSON pointers (in `obj`) of the values that were encrypted.
pub fn decrypt_built_object(
    obj: &mut Value,
    file: Option<&std::path::Path>,
    keys: &Keyring,
) -> Result<Vec<String>, SopsError> {
    let (_, kind, _, name) = crate::model::object_meta(obj);
    let (kind, name) = (kind.to_string(), name.to_string());
    let original = file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| {
            if text.trim_start().starts_with('{') {
                serde_json::from_str::<Value>(&text).ok().map(|v| vec![v])
            } else {
                crate::yaml::from_multi(&text).ok()
            }
        })
        .and_then(|docs| {
            docs.into_iter().find(|d| {
                let (_, k, _, n) = crate::model::object_meta(d);
                is_encrypted(d) && k == kind && n == name
            })
        });
    let Some(mut plain) = original else {
        return decrypt_object(obj, keys);
    };
    decrypt_object(&mut plain, keys)?;
    if let Some(m) = obj.as_object_mut() {
        m.remove("sops");
    }
    let mut filled = Vec::new();
    fill(
        obj,
        &plain,
        &mut Vec::new(),
        &mut String::new(),
        &mut filled,
    )?;
    Ok(filled)
}

/// Replaces every `ENC[…]` value of `built` by the value at the same path in `plain`, noting
/// the pointer of each in `filled`.
fn fill(
    built: &mut Value,
    plain: &Value,
    path: &mut Vec<String>,
    pointer: &mut String,
    filled: &mut Vec<String>,
) -> Result<(), SopsError> {
    let len = pointer.len();
    match built {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                path.push(k.clone());
                pointer.push('/');
                pointer.push_str(&pointer_segment(k));
                fill(
                    v,
                    plain.get(k.as_str()).unwrap_or(&Value::Null),
                    path,
                    pointer,
                    filled,
                )?;
                pointer.truncate(len);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                pointer.push_str(&format!("/{i}"));
                fill(
                    v,
                    plain.get(i).unwrap_or(&Value::Null),
                    path,
                    pointer,
                    filled,
                )?;
                pointer.truncate(len);
            }
        }
        Value::String(s) if s.starts_with("ENC[") => {
            if plain.is_null() {
                return Err(SopsError::Decrypt(format!(
                    "the build moved the encrypted value at '{}' (kustomize changed the encrypted object)",
                    path.join(".")
                )));
            }
            *built = plain.clone();
            filled.push(pointer.clone());
        }
        _ => {}
    }
    Ok(())
}

/// Decrypts `obj` in place (an object of a build with a `sops` stanza; the stanza is removed).
/// Returns the JSON pointers of the values that were encrypted.
pub fn decrypt_object(obj: &mut Value, keys: &Keyring) -> Result<Vec<String>, SopsError> {
    let Some(map) = obj.as_object_mut() else {
        return Ok(Vec::new());
    };
    let Some(stanza) = map.remove("sops") else {
        return Ok(Vec::new());
    };
    let meta = Metadata::from_json(&stanza)?;
    let key = keys.data_key(&meta)?;
    decrypt_tree(obj, &key, &meta)
}

/// The plain text of the values at `pointers` of `obj` (what was decrypted there), for masking.
pub fn values_at(obj: &Value, pointers: &[String]) -> Vec<String> {
    pointers
        .iter()
        .filter_map(|p| obj.pointer(p))
        .map(leaf_text)
        .collect()
}

/// A Secret's data values that are SOPS files (what a `secretGenerator` read from encrypted
/// files kustomize-controller did not decrypt before the build), decrypted in place, each in the
/// format its key's name says. Returns how many, and the plain text of every value that was
/// encrypted in them.
pub fn decrypt_secret_data(
    obj: &mut Value,
    keys: &Keyring,
) -> Result<(usize, Vec<String>), SopsError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(Value::Object(data)) = obj.get_mut("data") else {
        return Ok((0, Vec::new()));
    };
    let (mut n, mut values) = (0, Vec::new());
    for (name, v) in data.iter_mut() {
        // kustomize wraps long base64 values over several lines.
        let compact = |s: &str| s.split_whitespace().collect::<String>();
        let Some(raw) = v.as_str().and_then(|s| b64.decode(compact(s)).ok()) else {
            continue;
        };
        if !(contains(&raw, b"sops") && contains(&raw, b"ENC[")) {
            continue;
        }
        let text = String::from_utf8(raw)
            .map_err(|_| SopsError::Format(format!("data.{name}: not UTF-8")))?;
        let plain = decrypt_file(&text, Format::for_path(name), keys)
            .map_err(|e| e.within(&format!("data.{name}")))?;
        *v = Value::String(b64.encode(plain.bytes));
        values.extend(plain.values);
        n += 1;
    }
    Ok((n, values))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Format {
    /// The bytes that mark a file of this format as SOPS-encrypted (kustomize-controller's
    /// `sopsFormatToMarkerBytes`).
    pub fn marker(self) -> &'static [u8] {
        match self {
            Format::Binary | Format::Json => b"\"mac\": \"ENC[",
            Format::Dotenv => b"sops_mac=ENC[",
            Format::Yaml => b"mac: ENC[",
        }
    }

    /// Whether `data` is a SOPS file of this format.
    pub fn is_encrypted(self, data: &[u8]) -> bool {
        contains(data, self.marker())
    }
}

/// Decrypts a whole SOPS file of `format`; returns the plain file in the same format.
pub fn decrypt_file(text: &str, format: Format, keys: &Keyring) -> Result<PlainFile, SopsError> {
    match format {
        Format::Binary => {
            let file: Value =
                serde_json::from_str(text).map_err(|e| SopsError::Format(e.to_string()))?;
            decrypt_binary(&file, keys)
        }
        Format::Yaml | Format::Json => {
            let mut tree: Value = if format == Format::Yaml {
                crate::yaml::from_str(text).map_err(|e| SopsError::Format(e.to_string()))?
            } else {
                serde_json::from_str(text).map_err(|e| SopsError::Format(e.to_string()))?
            };
            let pointers = decrypt_object(&mut tree, keys)?;
            let values = values_at(&tree, &pointers);
            let bytes = match format {
                Format::Json => {
                    let mut s = serde_json::to_string_pretty(&tree)
                        .map_err(|e| SopsError::Format(e.to_string()))?;
                    s.push('\n');
                    s.into_bytes()
                }
                _ => crate::yaml::to_string(&tree)
                    .map_err(|e| SopsError::Format(e.to_string()))?
                    .into_bytes(),
            };
            Ok(PlainFile { bytes, values })
        }
        Format::Dotenv => envelope::decrypt_dotenv(text, keys),
    }
}

#[cfg(test)]
mod tests {
    //! Against files the real `sops` CLI encrypted (tests/fixtures/sops, see its README).
    use super::*;

    macro_rules! fixture {
        ($f:literal) => {
            include_str!(concat!("../../tests/fixtures/sops/", $f))
        };
    }

    fn keys() -> Keyring {
        let mut k = Keyring::default();
        k.add_text(fixture!("test.agekey"), "test.agekey").unwrap();
        k
    }

    fn object(text: &str) -> Value {
        crate::yaml::from_str(text).unwrap()
    }

    #[test]
    fn yaml_manifests_decrypt_with_their_types_and_a_verified_mac() {
        for f in [
            fixture!("secret.enc.yaml"),
            fixture!("secret.mac-only-encrypted.enc.yaml"),
        ] {
            let mut o = object(f);
            assert!(is_encrypted(&o));
            decrypt_object(&mut o, &keys()).unwrap();
            assert_eq!(o, object(fixture!("plain/secret.yaml")));
        }
        let mut o = object(fixture!("settings.enc.yaml"));
        decrypt_object(&mut o, &keys()).unwrap();
        assert_eq!(o, object(fixture!("plain/settings.yaml")));
        assert_eq!(o["nested"]["count"], 42);
        assert_eq!(o["nested"]["enabled"], true);
    }

    #[test]
    fn json_dotenv_and_binary_files_decrypt() {
        let mut o: Value = serde_json::from_str(fixture!("secret.enc.json")).unwrap();
        decrypt_object(&mut o, &keys()).unwrap();
        let plain: Value = serde_json::from_str(fixture!("plain/secret.json")).unwrap();
        assert_eq!(o, plain);
        let env = decrypt_file(fixture!("app.enc.env"), Format::Dotenv, &keys()).unwrap();
        assert_eq!(env.bytes, fixture!("plain/app.env").as_bytes());
        assert_eq!(env.values, ["envuser", "env-pa55word"]);
        let bin = decrypt_file(
            fixture!("blob.enc.bin"),
            Format::for_path("blob.bin"),
            &keys(),
        )
        .unwrap();
        assert_eq!(
            bin.bytes,
            include_bytes!("../../tests/fixtures/sops/plain/blob.bin")
        );
    }

    #[test]
    fn a_dotenv_file_keeps_its_order_comments_and_values_and_its_mac_covers_the_order() {
        let env = decrypt_file(fixture!("gen.enc.env"), Format::Dotenv, &keys()).unwrap();
        assert_eq!(
            String::from_utf8(env.bytes).unwrap(),
            fixture!("plain/gen.env")
        );
        assert_eq!(env.values, ["genuser", "gen-pa55=word", "tok-gen-123456"]);
        // Two lines swapped: every value still decrypts (its key is its path), the MAC does not.
        let e = decrypt_file(
            fixture!("gen.tampered-order.enc.env"),
            Format::Dotenv,
            &keys(),
        );
        assert_eq!(e, Err(SopsError::Mac));
        let e = decrypt_file(
            fixture!("gen.tampered-value.enc.env"),
            Format::Dotenv,
            &keys(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'API_TOKEN' does not decrypt"), "{e}");
        assert!(Format::Dotenv.is_encrypted(fixture!("gen.enc.env").as_bytes()));
        assert!(!Format::Dotenv.is_encrypted(fixture!("plain/gen.env").as_bytes()));
        assert!(Format::Yaml.is_encrypted(fixture!("patch.enc.yaml").as_bytes()));
        assert!(Format::Binary.is_encrypted(fixture!("blob.enc.bin").as_bytes()));
    }

    #[test]
    fn the_pointers_of_decrypted_values_are_reported() {
        let mut o = object(fixture!("configmap.enc.yaml"));
        let ptrs = decrypt_object(&mut o, &keys()).unwrap();
        assert_eq!(ptrs, ["/data/endpoint", "/data/mode"]);
        assert_eq!(
            values_at(&o, &ptrs),
            ["https://db.internal.example/cfg-s3cr3t-path", "production"]
        );
    }

    #[test]
    fn a_secret_generator_value_that_is_a_sops_file_decrypts_in_its_format() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut s = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gen", "namespace": "app"},
            "data": {"app.env": b64.encode(fixture!("app.enc.env")), "plain": b64.encode("x")}});
        let (n, values) = decrypt_secret_data(&mut s, &keys()).unwrap();
        assert_eq!(
            (n, values),
            (1, vec!["envuser".into(), "env-pa55word".into()])
        );
        let got = b64.decode(s["data"]["app.env"].as_str().unwrap()).unwrap();
        assert_eq!(got, fixture!("plain/app.env").as_bytes());
        assert_eq!(s["data"]["plain"], b64.encode("x"));
    }

    #[test]
    fn tampered_files_wrong_keys_and_pgp_are_clear_errors() {
        let mut o = object(fixture!("secret.tampered-mac.enc.yaml"));
        assert_eq!(decrypt_object(&mut o, &keys()), Err(SopsError::Mac));
        let mut o = object(fixture!("secret.tampered-value.enc.yaml"));
        let e = decrypt_object(&mut o, &keys()).unwrap_err().to_string();
        assert!(e.contains("'stringData:username' does not decrypt"), "{e}");
        let mut o = object(fixture!("secret.pgp.enc.yaml"));
        let e = decrypt_object(&mut o, &keys()).unwrap_err().to_string();
        assert!(e.contains("encrypted for pgp only"), "{e}");
        let mut other = Keyring::default();
        other
            .add_text(fixture!("other.agekey"), "other.agekey")
            .unwrap();
        let mut o = object(fixture!("secret.enc.yaml"));
        let e = decrypt_object(&mut o, &other).unwrap_err().to_string();
        assert!(
            e.contains("none of the age keys from other.agekey decrypts it"),
            "{e}"
        );
        let e = decrypt_object(
            &mut object(fixture!("secret.enc.yaml")),
            &Keyring::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no age key was given"), "{e}");
    }
}
