//! What Flux does to kustomize's output before applying it: postBuild variable substitution (per
//! resource, on its YAML text, with Flux's precedence, name rule and opt-out), flattening of
//! `List`s, Flux's owner labels, and commonMetadata last. Also the index of ConfigMaps and Secrets
//! that substituteFrom reads. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::envsubst;
use crate::model::{KUSTOMIZE_GROUP, KsId, KustomizationSpec, object_meta};

/// Label Flux sets to the owning Kustomization's name.
pub const OWNER_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Label Flux sets to the owning Kustomization's namespace.
pub const OWNER_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Label or annotation that disables substitution for one object (value `disabled`, exact case).
pub const SUBSTITUTE_KEY: &str = "kustomize.toolkit.fluxcd.io/substitute";
/// The annotation kustomize writes with `buildMetadata: [originAnnotations]`.
pub const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";
/// What masked values print as.
pub const MASK: &str = "***";

/// A post-build failure.
#[derive(Debug, thiserror::Error)]
pub enum PostBuildError {
    /// kustomize printed something that is not YAML.
    #[error("cannot parse kustomize output: {0}")]
    Parse(String),
    /// A resource lacks apiVersion, kind or name (described by what it has, never quoted: it may
    /// be a Secret).
    #[error("failed to decode Kubernetes apiVersion, kind and name from: {0}")]
    Incomplete(String),
    /// Substitution failed for one object.
    #[error(
        "post build failed for '{subject}': envsubst error: variable substitution failed: {source}"
    )]
    Substitute {
        /// `Kind/ns/name` of the object.
        subject: String,
        /// The envsubst error.
        source: envsubst::EnvsubstError,
    },
    /// Substitution produced text that is not YAML.
    #[error("post build failed for '{subject}': substituted YAML does not parse: {message}")]
    Reparse {
        /// `Kind/ns/name` of the object.
        subject: String,
        /// Parser message.
        message: String,
    },
    /// SOPS decryption failed for one object.
    #[error("decryption failed for '{subject}'{origin}: {source}")]
    Decrypt {
        /// `Kind/ns/name` of the object.
        subject: String,
        /// ` (from FILE)` when kustomize reported the file.
        origin: String,
        /// Why.
        source: crate::decrypt::SopsError,
    },
    /// A variable name Flux rejects.
    #[error(
        "'{name}' var name is invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$' (from {from})"
    )]
    InvalidVarName {
        /// The key.
        name: String,
        /// Where it came from (`spec.postBuild.substitute`, `ConfigMap/x`, `Secret/y`).
        from: String,
    },
}

/// One object of a build, with the file it came from (relative to the Kustomization's path) when
/// kustomize reported it.
///
/// A loaded fleet holds every object of every build at once, so the object is kept as its
/// compact JSON text, parsed again by [`Manifest::object`] where a stage needs it: a parsed
/// `Value` takes about seven times the memory (a ConfigMap of a few keys: ~3.4 KB against
/// ~0.5 KB). Its identity is kept beside it, since most readers need no more than that.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The object as compact JSON (keys in their order).
    json: Box<str>,
    /// apiVersion, kind, namespace, name.
    meta: [Box<str>; 4],
    /// `config.kubernetes.io/origin` path, e.g. `deploy.yaml` or `../base/app.yaml`.
    pub origin: Option<String>,
    /// JSON pointers of the values that were SOPS-encrypted in the file it came from (masked
    /// wherever the object prints, whatever its kind).
    pub decrypted: Vec<String>,
}

impl Manifest {
    /// Keeps `object` (compactly) with its origin.
    pub fn new(object: &Value, origin: Option<String>) -> Manifest {
        let (api, kind, ns, name) = object_meta(object);
        Manifest {
            json: serde_json::to_string(object)
                .expect("a JSON value serializes")
                .into_boxed_str(),
            meta: [api, kind, ns, name].map(Box::from),
            origin,
            decrypted: Vec::new(),
        }
    }

    /// The plain text of its decrypted values.
    pub fn decrypted_values(&self) -> Vec<String> {
        if self.decrypted.is_empty() {
            return Vec::new();
        }
        crate::decrypt::values_at(&self.object(), &self.decrypted)
    }

    /// The object with its decrypted values replaced by [`MASK`].
    pub fn masked(&self) -> Value {
        let mut o = self.object();
        for p in &self.decrypted {
            if let Some(v) = o.pointer_mut(p) {
                *v = Value::String(MASK.into());
            }
        }
        o
    }

    /// The object, parsed anew.
    pub fn object(&self) -> Value {
        serde_json::from_str(&self.json).expect("a Manifest holds valid JSON")
    }

    /// The object's compact JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// (apiVersion, kind, namespace, name), as [`object_meta`] gives them.
    pub fn meta(&self) -> (&str, &str, &str, &str) {
        let [a, k, ns, n] = &self.meta;
        (a, k, ns, n)
    }

    /// Whether it is a Flux Kustomization.
    pub fn is_flux_kustomization(&self) -> bool {
        let (api, kind, _, _) = self.meta();
        is_flux_kustomization_kind(api, kind)
    }

    /// `Kind/namespace/name` (or `Kind/name`), as [`crate::model::subject`] gives it.
    pub fn subject(&self) -> String {
        let (_, kind, ns, name) = self.meta();
        crate::model::subject_of(kind, ns, name)
    }
}

/// ConfigMaps and Secrets by `(namespace, kind, name)`, with Secret values decoded.
#[derive(Debug, Default, Clone)]
pub struct VarIndex {
    map: HashMap<(String, String, String), BTreeMap<String, String>>,
}

impl VarIndex {
    /// Adds the ConfigMaps (`data`) and Secrets (`data` decoded, `stringData`) of `objects` for
    /// which `wanted(namespace, kind, name)` holds: a fleet has many ConfigMaps and few are
    /// variable sources, so the index need not copy the data of every one.
    pub fn add_wanted(
        &mut self,
        objects: &[Manifest],
        wanted: impl Fn((&str, &str, &str)) -> bool,
    ) {
        for m in objects {
            let (api, kind, ns, name) = m.meta();
            if api != "v1" || (kind != "ConfigMap" && kind != "Secret") || !wanted((ns, kind, name))
            {
                continue;
            }
            self.add_object(&m.object());
        }
    }

    /// Adds one ConfigMap or Secret (anything else is ignored).
    pub fn add_object(&mut self, object: &Value) {
        let (api, kind, ns, name) = object_meta(object);
        if api != "v1" || (kind != "ConfigMap" && kind != "Secret") {
            return;
        }
        let mut values = BTreeMap::new();
        if let Some(Value::Object(data)) = object.get("data") {
            for (k, v) in data {
                let s = v.as_str().unwrap_or_default();
                let s = if kind == "Secret" {
                    decode_base64(s).unwrap_or_default()
                } else {
                    s.to_string()
                };
                values.insert(k.clone(), s);
            }
        }
        if let Some(Value::Object(data)) = object.get("stringData") {
            for (k, v) in data {
                values.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        self.map
            .insert((ns.to_string(), kind.to_string(), name.to_string()), values);
    }

    /// Looks one source up.
    pub fn get(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Option<&BTreeMap<String, String>> {
        self.map
            .get(&(namespace.to_string(), kind.to_string(), name.to_string()))
    }
}

/// Decodes standard base64 (as Secret `data` holds it).
pub fn decode_base64(s: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The variables of one Kustomization, resolved.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    /// name → value, newlines removed.
    pub values: BTreeMap<String, String>,
    /// Names whose value came from a Secret (masked wherever shown).
    pub secret: BTreeSet<String>,
    /// Non-optional sources that were not found (`ConfigMap/name`).
    pub missing: Vec<String>,
}

/// What Secret-backed variables are substituted with for display: a plain YAML-safe word that
/// [`unmask_tokens`] then turns into [`MASK`] (a bare `***` would read back as a YAML alias).
const MASK_TOKEN: &str = "FLUXORDERMASKEDVALUE";

impl Vars {
    /// The values that came from a Secret.
    pub fn secret_values(&self) -> impl Iterator<Item = &String> {
        self.secret.iter().filter_map(|k| self.values.get(k))
    }

    /// The same variables with Secret-backed values replaced by a mask token.
    pub fn masked(&self) -> Vars {
        let mut m = self.clone();
        for k in &self.secret {
            m.values.insert(k.clone(), MASK_TOKEN.to_string());
        }
        m
    }
}

/// Where the Secret-backed variables of `vars` land in one object: the JSON pointer of every string
/// of `masked` (the object post-built with [`Vars::masked`]) that holds a masked value, with that
/// string as it should print (`prefix-***`).
pub fn secret_fields(masked: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &mut String, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) if s.contains(MASK_TOKEN) => {
                out.push((path.clone(), s.replace(MASK_TOKEN, MASK)))
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(x, path, out);
                    path.truncate(len);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(x, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(masked, &mut String::new(), &mut out);
    out
}

/// Replaces the mask token in every string of `v` by [`MASK`].
pub fn unmask_tokens(v: &mut Value) {
    match v {
        Value::String(s) if s.contains(MASK_TOKEN) => *s = s.replace(MASK_TOKEN, MASK),
        Value::Array(a) => a.iter_mut().for_each(unmask_tokens),
        Value::Object(m) => m.values_mut().for_each(unmask_tokens),
        _ => {}
    }
}

/// Resolves spec.postBuild variables: substituteFrom in order (later wins), then the inline map;
/// every name must pass Flux's rule; every `\n` is deleted from values.
pub fn resolve_vars(
    id: &KsId,
    spec: &KustomizationSpec,
    index: &VarIndex,
) -> Result<Vars, PostBuildError> {
    let mut vars = Vars::default();
    let Some(pb) = &spec.post_build else {
        return Ok(vars);
    };
    for r in &pb.substitute_from {
        let from = format!("{}/{}", r.kind, r.name);
        match index.get(&id.namespace, &r.kind, &r.name) {
            Some(values) => {
                for (k, v) in values {
                    if !envsubst::valid_var_name(k) {
                        return Err(PostBuildError::InvalidVarName {
                            name: k.clone(),
                            from,
                        });
                    }
                    vars.values.insert(k.clone(), v.replace('\n', ""));
                    if r.kind == "Secret" {
                        vars.secret.insert(k.clone());
                    } else {
                        vars.secret.remove(k);
                    }
                }
            }
            None if r.optional => {}
            None => vars.missing.push(from),
        }
    }
    for (k, v) in &pb.substitute {
        if !envsubst::valid_var_name(k) {
            return Err(PostBuildError::InvalidVarName {
                name: k.clone(),
                from: "spec.postBuild.substitute".into(),
            });
        }
        vars.values.insert(k.clone(), v.replace('\n', ""));
        vars.secret.remove(k);
    }
    Ok(vars)
}

fn has_key_value(obj: &Value, key: &str, value: &str) -> bool {
    ["labels", "annotations"].iter().any(|f| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .is_some_and(|v| v == value)
    })
}

/// Splits kustomize's output into per-document texts (kustomize separates with `---` lines).
pub fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Options of one post-build run.
pub struct PostBuildOptions<'a> {
    /// The owning Kustomization (for owner labels); None for the cluster root.
    pub owner: Option<&'a KsId>,
    /// Its spec (substitution, commonMetadata); None for the cluster root.
    pub spec: Option<&'a KustomizationSpec>,
    /// Resolved variables.
    pub vars: &'a Vars,
    /// Fail on undefined variables without default.
    pub strict: bool,
    /// Remove origin annotations flux-order added only for bookkeeping.
    pub strip_origin: bool,
    /// For batched builds: how origin paths map back to the Kustomization's path.
    pub origin_map: Option<&'a OriginMap>,
    /// SOPS keys, when the Kustomization has `spec.decryption`: encrypted objects and Secret
    /// values are decrypted before substitution, as kustomize-controller does.
    pub decrypt: Option<crate::decrypt::DecryptWith<'a>>,
}

/// Maps origin paths of a batched build (relative to the aggregate directory, naming the build's
/// slot) back to paths relative to the Kustomization's own path. All paths are relative to the
/// shadow root, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginMap {
    /// The aggregate directory.
    pub batch: String,
    /// The build's slot.
    pub slot: String,
    /// The Kustomization's path.
    pub path: String,
}

impl OriginMap {
    /// `origin` (relative to the aggregate directory) relative to the Kustomization's path.
    pub fn rebase(&self, origin: &str) -> String {
        let p = lexical_join(&self.batch, origin);
        let p = match p.strip_prefix(&format!("{}/", self.slot)) {
            Some(rest) => lexical_join(&self.path, rest),
            None => p,
        };
        let from: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let to: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut out = vec![".."; from.len() - common];
        out.extend(&to[common..]);
        out.join("/")
    }
}

/// Turns kustomize's output into the objects Flux would apply.
pub fn post_build(
    output: &str,
    opts: &PostBuildOptions<'_>,
) -> Result<Vec<Manifest>, PostBuildError> {
    let substitute = opts.spec.is_some_and(|s| {
        s.post_build.is_some()
            && (!opts.vars.values.is_empty()
                || s.post_build
                    .as_ref()
                    .and_then(|p| p.substitute_strategy.as_deref())
                    == Some("Always"))
    });
    let mut out = Vec::new();
    for doc in split_documents(output) {
        let mut obj: Value =
            crate::yaml::from_str(doc).map_err(|e| PostBuildError::Parse(e.to_string()))?;
        if obj.is_null() {
            continue;
        }
        let (api, kind, _, name) = object_meta(&obj);
        let is_list = kind == "List";
        // A Flux Kustomization is the loader's to check (it names the file and says what is
        // missing, as --scan does).
        if api.is_empty()
            || kind.is_empty()
            || (name.is_empty() && !is_list && !is_flux_kustomization(&obj))
        {
            let has = |field: &str, v: &str| {
                if v.is_empty() {
                    format!("no {field}")
                } else {
                    format!("{field} '{v}'")
                }
            };
            return Err(PostBuildError::Incomplete(format!(
                "a resource with {}, {}, {}",
                has("apiVersion", api),
                has("kind", kind),
                has("metadata.name", name)
            )));
        }
        let mut decrypted_doc = None;
        let mut decrypted = Vec::new();
        if let Some(with) = opts.decrypt {
            let keys = with.keys;
            let subject = crate::model::subject(&obj);
            let secret = api == "v1" && kind == "Secret";
            let origin = read_origin(&mut obj.clone(), false).map(|o| match opts.origin_map {
                Some(m) => m.rebase(&o),
                None => o,
            });
            let fail = |source| PostBuildError::Decrypt {
                subject: subject.clone(),
                origin: origin
                    .as_ref()
                    .map(|p| format!(" (from {p})"))
                    .unwrap_or_default(),
                source,
            };
            let mut changed = false;
            if crate::decrypt::is_encrypted(&obj) {
                // The MAC covers every value as written: flux-order's own bookkeeping (the origin
                // annotation, the batch label) is set aside while decrypting.
                let kept = [
                    ("annotations", ORIGIN_ANNOTATION),
                    ("labels", super::overlay::BUILD_LABEL),
                ]
                .map(|(field, key)| (field, key, take_meta(&mut obj, field, key)));
                let file = origin.as_ref().map(|o| {
                    std::path::PathBuf::from(lexical_join(&with.dir.to_string_lossy(), o))
                });
                let result = crate::decrypt::decrypt_built_object(&mut obj, file.as_deref(), keys);
                for (field, key, v) in kept {
                    if let Some(Value::String(v)) = v {
                        set_meta(&mut obj, field, key, &v);
                    }
                }
                decrypted = result.map_err(fail)?;
                changed = true;
            }
            if secret {
                changed |= crate::decrypt::decrypt_secret_data(&mut obj, keys)
                    .map_err(fail)?
                    .0
                    > 0;
            }
            if changed {
                decrypted_doc = Some(
                    crate::yaml::to_string(&obj)
                        .map_err(|e| PostBuildError::Parse(e.to_string()))?,
                );
            }
        }
        let doc = decrypted_doc.as_deref().unwrap_or(doc);
        if substitute && !has_key_value(&obj, SUBSTITUTE_KEY, "disabled") {
            let text =
                envsubst::substitute(doc, &opts.vars.values, opts.strict).map_err(|source| {
                    PostBuildError::Substitute {
                        subject: crate::model::subject(&obj),
                        source,
                    }
                })?;
            obj = crate::yaml::from_str(&text).map_err(|e| PostBuildError::Reparse {
                subject: crate::model::subject(&obj),
                message: e.to_string(),
            })?;
        }
        let items = if is_list {
            obj.get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        } else {
            vec![obj]
        };
        for mut item in items {
            let (api, kind, _, name) = object_meta(&item);
            if api.is_empty()
                || kind.is_empty()
                || (name.is_empty() && !is_flux_kustomization(&item))
            {
                continue;
            }
            if kind == "Kustomization" && crate::model::api_group(api) == "kustomize.config.k8s.io"
            {
                continue;
            }
            let origin = read_origin(&mut item, opts.strip_origin).map(|o| match opts.origin_map {
                Some(m) => m.rebase(&o),
                None => o,
            });
            remove_build_label(&mut item);
            if let Some(owner) = opts.owner {
                set_meta(&mut item, "labels", OWNER_NAME_LABEL, &owner.name);
                set_meta(&mut item, "labels", OWNER_NAMESPACE_LABEL, &owner.namespace);
            }
            if let Some(cm) = opts.spec.and_then(|s| s.common_metadata.as_ref()) {
                for (k, v) in &cm.labels {
                    set_meta(&mut item, "labels", k, v);
                }
                for (k, v) in &cm.annotations {
                    set_meta(&mut item, "annotations", k, v);
                }
            }
            let mut m = Manifest::new(&item, origin);
            // A List's items are not decrypted objects of their own.
            if !is_list {
                m.decrypted = std::mem::take(&mut decrypted);
            }
            out.push(m);
        }
    }
    Ok(out)
}

fn read_origin(obj: &mut Value, strip: bool) -> Option<String> {
    let annotations = obj.pointer_mut("/metadata/annotations")?.as_object_mut()?;
    let raw = if strip {
        annotations.remove(ORIGIN_ANNOTATION)
    } else {
        annotations.get(ORIGIN_ANNOTATION).cloned()
    }?;
    if strip
        && annotations.is_empty()
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("annotations");
    }
    let parsed: Value = crate::yaml::from_str(raw.as_str()?).ok()?;
    parsed
        .get("path")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `base/path` with `.` and `dir/..` folded away lexically (leading `..` and an absolute base's
/// `/` kept).
pub fn lexical_join(base: &str, path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in base.split('/').chain(path.split('/')) {
        match part {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| *l != "..") => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    if base.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Removes the label that marked the object's build (see `overlay::BUILD_LABEL`).
/// Removes `metadata.<field>.<key>` (and the map when it is left empty); returns its value.
fn take_meta(obj: &mut Value, field: &str, key: &str) -> Option<Value> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let map = meta.get_mut(field)?.as_object_mut()?;
    let v = map.remove(key);
    if map.is_empty() {
        meta.remove(field);
    }
    v
}

fn remove_build_label(obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) else {
        return;
    };
    labels.remove(super::overlay::BUILD_LABEL);
    if labels.is_empty() {
        meta.remove("labels");
    }
}

/// Sets `metadata.<field>.<key> = value`, creating the maps as needed.
pub fn set_meta(obj: &mut Value, field: &str, key: &str, value: &str) {
    let Some(o) = obj.as_object_mut() else { return };
    let meta = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let m = meta
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    if let Some(m) = m.as_object_mut() {
        m.insert(key.to_string(), Value::String(value.to_string()));
    }
}

/// Whether a manifest is a Flux Kustomization (a child node, not payload).
pub fn is_flux_kustomization(obj: &Value) -> bool {
    let (api, kind, _, _) = object_meta(obj);
    is_flux_kustomization_kind(api, kind)
}

/// Whether (apiVersion, kind) is a Flux Kustomization's.
pub fn is_flux_kustomization_kind(api_version: &str, kind: &str) -> bool {
    kind == "Kustomization" && crate::model::api_group(api_version) == KUSTOMIZE_GROUP
}

/// Masks the values of a Secret object: `data` and `stringData` values become `***`.
pub fn mask_secret(obj: &Value) -> Value {
    let mut o = obj.clone();
    let (api, kind, _, _) = object_meta(obj);
    if api == "v1" && kind == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(m)) = o.get_mut(field) {
                for v in m.values_mut() {
                    *v = Value::String(MASK.into());
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_batched_builds_are_rebased() {
        let m = OriginMap {
            batch: "flux-order-batch-3".into(),
            slot: "apps/a.flux-order-1".into(),
            path: "apps/a".into(),
        };
        assert_eq!(m.rebase("../apps/a.flux-order-1/cm.yaml"), "cm.yaml");
        assert_eq!(m.rebase("../apps/a.flux-order-1/sub/x.yaml"), "sub/x.yaml");
        assert_eq!(m.rebase("../apps/base/x.yaml"), "../base/x.yaml");
        assert_eq!(m.rebase("../common/y.yaml"), "../../common/y.yaml");
        let root = OriginMap {
            batch: "flux-order-batch-0".into(),
            slot: "x.flux-order-2".into(),
            path: "x".into(),
        };
        assert_eq!(root.rebase("../x.flux-order-2/a.yaml"), "a.yaml");
        assert_eq!(
            lexical_join("/repo/apps/a", "../base/x.yaml"),
            "/repo/apps/base/x.yaml"
        );
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some("hello"));
        assert_eq!(decode_base64("").as_deref(), Some(""));
        assert_eq!(decode_base64("!!").as_deref(), None);
    }

    #[test]
    fn documents_split_on_separator_lines() {
        let d = split_documents("a: 1\n---\nb: |\n  ---x\n---\n");
        assert_eq!(d, vec!["a: 1\n", "b: |\n  ---x\n"]);
    }
}
