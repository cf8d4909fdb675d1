//! The API verbs on the store (get, create, update, patch, apply, delete): identity and
//! generation bookkeeping, defaults, immutable-field validation, dry-run, and API errors.

use serde_json::{Value, json};

use crate::ServerOptions;
use crate::apply::{self, Part};
use crate::controllers;
use crate::discovery::ResourceInfo;
use crate::store::{self, Key, State, TimerAction};

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Box<Value>>,
    /// `metadata.continue` of the Status (a 410 on a paginated LIST: where to go on).
    pub list_continue: Option<String>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
            list_continue: None,
        }
    }
    pub fn details(mut self, d: Value) -> ApiError {
        self.details = Some(Box::new(d));
        self
    }
    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", info.qualified_plural()),
        )
        .details(json!({"name": name, "group": info.group, "kind": info.plural}))
    }
    pub fn namespace_not_found(ns: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .details(json!({"name": ns, "kind": "namespaces"}))
    }
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", msg)
    }
    pub fn resource_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .details(json!({}))
    }
    fn conflict_modified(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", info.qualified_plural()))
            .details(json!({"name": name, "group": info.group, "kind": info.plural}))
    }
    /// 422 Invalid with one cause per (field, reason, message).
    pub fn invalid(
        info: &ResourceInfo,
        name: &str,
        causes: Vec<(String, &str, String)>,
    ) -> ApiError {
        let parts: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
            .collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {joined}", info.qualified_kind()),
        )
        .details(
            json!({"name": name, "group": info.group, "kind": info.kind, "causes": causes_json}),
        )
    }

    /// The `Status` body.
    pub fn body(&self) -> Value {
        let mut v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code});
        if self.reason.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            // StatusReasonUnknown is "" and omitted.
            m.shift_remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = (**d).clone();
        }
        if let Some(c) = &self.list_continue {
            v["metadata"]["continue"] = json!(c);
        }
        v
    }
}

pub(crate) type Result<T> = std::result::Result<T, ApiError>;

/// Parameters common to write verbs.
pub(crate) struct WriteParams<'a> {
    pub info: &'a ResourceInfo,
    /// Namespace ("" for cluster-scoped).
    pub ns: &'a str,
    pub sub: Option<&'a str>,
    pub dry_run: bool,
    pub manager: String,
    pub force: bool,
    pub opts: &'a ServerOptions,
}

impl WriteParams<'_> {
    fn part(&self) -> Part {
        match (self.sub, self.info.status) {
            (Some("status"), _) => Part::Status,
            (_, true) => Part::NoStatus,
            _ => Part::All,
        }
    }
}

/// Present a stored object as the requested version.
pub(crate) fn present(mut obj: Value, info: &ResourceInfo) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    obj
}

/// Present a stored object as an item of a LIST response. The real server encodes built-in
/// lists as typed lists whose items carry no `kind` and no `apiVersion` (only the list itself,
/// `kind: XList`, says what they are); custom resources are listed as unstructured objects and
/// keep theirs.
pub(crate) fn list_item(obj: Value, info: &ResourceInfo) -> Value {
    if !info.is_builtin() {
        return present(obj, info);
    }
    let mut obj = obj;
    if let Some(m) = obj.as_object_mut() {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    obj
}

/// The body of a DELETE that removed the object at once: the object itself for the kinds whose
/// registry sets `ReturnDeletedObject` (Pods, Services, PVCs, PVs, Namespaces, ...), else a
/// `Status` naming it.
fn deleted_body(info: &ResourceInfo, removed: Value) -> Value {
    let returns_object = matches!(
        (info.group.as_str(), info.kind.as_str()),
        (
            "",
            "Pod"
                | "Service"
                | "PersistentVolumeClaim"
                | "PersistentVolume"
                | "Namespace"
                | "ServiceAccount"
                | "ResourceQuota"
                | "PodTemplate"
        ) | ("storage.k8s.io", _)
    );
    if returns_object {
        return present(removed, info);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": removed["metadata"]["name"], "group": info.group,
            "kind": info.plural, "uid": removed["metadata"]["uid"]}})
}

pub(crate) fn get(st: &State, info: &ResourceInfo, ns: &str, name: &str) -> Result<Value> {
    st.objects
        .get(&store::key(info, ns, name))
        .cloned()
        .map(|o| present(o, info))
        .ok_or_else(|| ApiError::not_found(info, name))
}

fn check_body_type(info: &ResourceInfo, body: &Value) -> Result<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not an object",
        ));
    }
    if let Some(k) = body["kind"].as_str()
        && k != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            info.kind
        )));
    }
    if let Some(av) = body["apiVersion"].as_str() {
        let (g, _) = crate::discovery::split_api_version(av);
        if g != info.group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
    }
    Ok(())
}

fn check_namespace(p: &WriteParams, body: &mut Value) -> Result<()> {
    if !p.info.namespaced {
        if let Some(m) = body["metadata"].as_object_mut() {
            m.shift_remove("namespace");
        }
        return Ok(());
    }
    match body["metadata"]["namespace"].as_str() {
        Some(n) if !n.is_empty() && n != p.ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => body["metadata"]["namespace"] = json!(p.ns),
    }
    Ok(())
}

fn valid_name(info: &ResourceInfo, name: &str) -> std::result::Result<(), String> {
    let label = matches!(info.kind.as_str(), "Namespace" | "Service");
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    let max = if label { 63 } else { 253 };
    if ok_chars && ends && name.len() <= max {
        Ok(())
    } else if info.kind == "ClusterRole" || info.kind == "Role" || info.kind.contains("Binding") {
        // RBAC names are path segments and may contain ':' and uppercase.
        if !name.contains('/') && !name.contains('%') && name != "." && name != ".." {
            Ok(())
        } else {
            Err(format!(
                "Invalid value: \"{name}\": may not contain '/' or '%'"
            ))
        }
    } else if label {
        Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ))
    } else {
        Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ))
    }
}

fn short(v: Option<&Value>) -> String {
    let s = v.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
    if s.len() > 200 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// Refuse changes to immutable fields (422).
fn validate_update(info: &ResourceInfo, name: &str, old: &Value, new: &Value) -> Result<()> {
    let mut causes: Vec<(String, &str, String)> = vec![];
    let mut immutable = |field: &str, o: Option<&Value>, n: Option<&Value>| {
        if o != n {
            causes.push((
                field.to_string(),
                "FieldValueInvalid",
                format!("Invalid value: {}: field is immutable", short(n)),
            ));
        }
    };
    let os = &old["spec"];
    let ns = &new["spec"];
    match (info.group.as_str(), info.kind.as_str()) {
        ("batch", "Job") => {
            immutable("spec.template", os.get("template"), ns.get("template"));
            if os.get("selector").is_some() {
                immutable("spec.selector", os.get("selector"), ns.get("selector"));
            }
        }
        ("apps", "Deployment" | "DaemonSet" | "ReplicaSet") => {
            immutable("spec.selector", os.get("selector"), ns.get("selector"));
        }
        ("apps", "StatefulSet") => {
            immutable("spec.selector", os.get("selector"), ns.get("selector"));
            let strip = |s: &Value| {
                let mut s = s.clone();
                if let Some(m) = s.as_object_mut() {
                    for k in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                        "selector",
                    ] {
                        m.shift_remove(k);
                    }
                }
                s
            };
            if strip(os) != strip(ns) {
                causes.push(("spec".into(), "FieldValueForbidden", "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into()));
            }
        }
        ("", "Service") => {
            if let Some(o) = os
                .get("clusterIP")
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                && let Some(n) = ns.get("clusterIP")
                && n != o
            {
                causes.push((
                    "spec.clusterIP".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {n}: field is immutable"),
                ));
            }
        }
        ("", "PersistentVolumeClaim") => {
            let strip = |s: &Value| {
                let mut s = s.clone();
                if let Some(m) = s.as_object_mut() {
                    m.shift_remove("resources");
                    m.shift_remove("volumeAttributesClassName");
                }
                s
            };
            if strip(os) != strip(ns) {
                causes.push(("spec".into(), "FieldValueForbidden", "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into()));
            }
        }
        ("", "ConfigMap" | "Secret") if old["immutable"] == json!(true) => {
            for f in ["data", "binaryData"] {
                if old.get(f) != new.get(f) {
                    causes.push((
                        f.into(),
                        "FieldValueForbidden",
                        "Forbidden: field is immutable when `immutable` is set".into(),
                    ));
                }
            }
            if new["immutable"] != json!(true) {
                causes.push((
                    "immutable".into(),
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set".into(),
                ));
            }
        }
        ("", "Pod") => {
            let strip = |s: &Value| {
                let mut s = s.clone();
                for c in ["containers", "initContainers"] {
                    if let Some(a) = s[c].as_array_mut() {
                        for e in a {
                            if let Some(m) = e.as_object_mut() {
                                m.shift_remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = s.as_object_mut() {
                    m.shift_remove("activeDeadlineSeconds");
                    m.shift_remove("tolerations");
                    m.shift_remove("terminationGracePeriodSeconds");
                }
                s
            };
            if strip(os) != strip(ns) {
                causes.push(("spec".into(), "FieldValueForbidden", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into()));
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, name, causes))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What every write gets on its way into storage: the typed API's defaults, the Secret
/// `stringData` fold, the Service registry's allocations.
fn defaults(st: &mut State, info: &ResourceInfo, new: &mut Value, old: Option<&Value>) {
    crate::defaults::set_defaults(info, new);
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Service") => {
            let ip_counter = &mut st.ip_counter;
            let mut next_ip = || {
                *ip_counter += 1;
                format!("10.96.{}.{}", *ip_counter / 250, *ip_counter % 250 + 1)
            };
            let port_counter = &mut st.node_port_counter;
            let mut next_port = || {
                *port_counter += 1;
                30000 + i64::from(*port_counter % 2768)
            };
            crate::defaults::prepare_service(&mut new["spec"], old, &mut next_ip, &mut next_port);
        }
        ("", "Secret") => {
            if let Some(sd) = new
                .as_object_mut()
                .and_then(|m| m.shift_remove("stringData"))
                && let Some(sm) = sd.as_object()
            {
                if !new["data"].is_object() {
                    new["data"] = json!({});
                }
                for (k, v) in sm {
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    new["data"][k] = json!(base64(s.as_bytes()));
                }
            }
        }
        _ => {}
    }
}

/// Whether a LabelSelector (matchLabels, matchExpressions) selects these labels.
fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels[k].as_str();
    let ml = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let me = sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let k = e["key"].as_str().unwrap_or_default();
            let vals: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => label(k).is_some_and(|v| vals.contains(&v)),
                "NotIn" => label(k).is_none_or(|v| !vals.contains(&v)),
                "Exists" => label(k).is_some(),
                "DoesNotExist" => label(k).is_none(),
                _ => false,
            }
        });
    ml && me
}

/// Go's `%#v` of a `map[string]string` (keys sorted), as validation messages print labels.
fn go_map(v: &Value) -> String {
    let mut pairs: Vec<(String, String)> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        return "map[string]string(nil)".into();
    }
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

/// Real-server validation this server repeats (besides names and immutable fields).
fn validate(info: &ResourceInfo, name: &str, new: &Value) -> Result<()> {
    if info.group == "apps"
        && matches!(
            info.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
        )
    {
        let sel = &new["spec"]["selector"];
        let labels = &new["spec"]["template"]["metadata"]["labels"];
        let mut causes: Vec<(String, &str, String)> = vec![];
        if !sel.is_object() {
            causes.push((
                "spec.selector".into(),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        if !sel.is_object() || !selector_matches(sel, labels) {
            causes.push((
                "spec.template.metadata.labels".into(),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_map(labels)
                ),
            ));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(info, name, causes));
        }
    }
    if info.group == "batch" && info.kind == "Job" {
        // The pod template's restartPolicy defaults to Always, which a Job may not use.
        let rp = new["spec"]["template"]["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("");
        let cause = match rp {
            "" | "Always" => Some((
                "FieldValueRequired",
                "Required value: valid values: \"OnFailure\", \"Never\"".to_string(),
            )),
            "OnFailure" | "Never" => None,
            other => Some((
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"OnFailure\", \"Never\""
                ),
            )),
        };
        if let Some((reason, msg)) = cause {
            return Err(ApiError::invalid(
                info,
                name,
                vec![("spec.template.spec.restartPolicy".into(), reason, msg)],
            ));
        }
    }
    Ok(())
}

/// The parts of an object whose change bumps generation (and wakes its controller): everything
/// but metadata and a status served by a subresource; a Deployment's annotations too (its
/// strategy bumps generation for them, as they are copied to its ReplicaSets).
fn spec_part(info: &ResourceInfo, v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(m) = out.as_object_mut() {
        m.shift_remove("metadata");
        if info.status || info.is_builtin() {
            m.shift_remove("status");
        }
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
        if info.group == "apps" && info.kind == "Deployment" {
            m.insert(
                "metadata.annotations".into(),
                v["metadata"]["annotations"].clone(),
            );
        }
    }
    out
}

fn without_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(a) = v["metadata"]["managedFields"].as_array_mut() {
        for e in a {
            if let Some(m) = e.as_object_mut() {
                m.shift_remove("time");
            }
        }
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        m.shift_remove("resourceVersion");
    }
    v
}

/// Finish a write: defaults, validation, identity, generation, no-op detection, dry-run, store,
/// controllers. `old` is the stored object (None = create).
fn commit(
    st: &mut State,
    p: &WriteParams,
    name: &str,
    old: Option<Value>,
    mut new: Value,
) -> Result<(Value, u16)> {
    let info = p.info;
    if let Some(o) = &old {
        crate::defaults::prepare_for_update(info, o, &mut new);
    }
    defaults(st, info, &mut new, old.as_ref());
    if let Some(m) = new.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    new["metadata"]["name"] = json!(name);
    if info.namespaced {
        new["metadata"]["namespace"] = json!(p.ns);
    }
    let k: Key = store::key(info, p.ns, name);
    let now = store::now();
    match &old {
        Some(o) => {
            validate(info, name, &new)?;
            validate_update(info, name, o, &new)?;
            let om = &o["metadata"];
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ] {
                match om.get(f) {
                    Some(v) => new["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.shift_remove(f);
                        }
                    }
                }
            }
            let spec_changed = spec_part(info, o) != spec_part(info, &new);
            if info.has_generation() {
                let og = om["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = json!(if spec_changed { og + 1 } else { og });
            } else if let Some(m) = new["metadata"].as_object_mut() {
                m.shift_remove("generation");
            }
            if without_times(o) == without_times(&new) {
                return Ok((present(o.clone(), info), 200));
            }
            if p.dry_run {
                return Ok((present(new, info), 200));
            }
            let stored = st.put(k.clone(), new);
            if spec_changed && p.sub.is_none() {
                controllers::on_spec_change(st, p.opts, info, &k);
            }
            // Finalizers removed from an object being deleted: finish the deletion.
            if stored["metadata"].get("deletionTimestamp").is_some()
                && stored["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|a| a.is_empty())
                && !st
                    .pending_removal
                    .contains(stored["metadata"]["uid"].as_str().unwrap_or_default())
            {
                let removed = finish_delete(st, info, &k).unwrap_or(stored);
                return Ok((present(removed, info), 200));
            }
            Ok((present(stored, info), 200))
        }
        None => {
            if let Err(m) = valid_name(info, name) {
                return Err(ApiError::invalid(
                    info,
                    name,
                    vec![("metadata.name".into(), "FieldValueInvalid", m)],
                ));
            }
            if info.namespaced && !st.namespace_exists(p.ns) {
                return Err(ApiError::namespace_not_found(p.ns));
            }
            if info.namespaced {
                let nsobj = &st.objects[&(
                    String::new(),
                    "namespaces".into(),
                    String::new(),
                    p.ns.to_string(),
                )];
                if nsobj["metadata"].get("deletionTimestamp").is_some() {
                    return Err(ApiError::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: unable to create new content in namespace {} because it is being terminated", info.qualified_plural(), p.ns))
                        .details(json!({"name": name, "group": info.group, "kind": info.plural})));
                }
            }
            validate(info, name, &new)?;
            let uid = st.next_uid();
            let meta = new["metadata"].as_object_mut().expect("metadata");
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(now));
            if info.has_generation() {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.shift_remove("generation");
            }
            for f in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ] {
                meta.shift_remove(f);
            }
            crate::defaults::prepare_for_create(info, &mut new, &uid);
            if p.dry_run {
                return Ok((present(new, info), 201));
            }
            let stored = st.put(k.clone(), new);
            controllers::on_spec_change(st, p.opts, info, &k);
            Ok((present(stored, info), 201))
        }
    }
}

/// POST.
pub(crate) fn create(st: &mut State, p: &WriteParams, mut body: Value) -> Result<(Value, u16)> {
    check_body_type(p.info, &body)?;
    check_namespace(p, &mut body)?;
    let mut name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        && let Some(g) = body["metadata"]["generateName"].as_str()
    {
        name = format!("{g}{}", st.name_suffix());
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            p.info,
            "",
            vec![(
                "metadata.name".into(),
                "FieldValueRequired",
                "Required value: name or generateName is required".into(),
            )],
        ));
    }
    if st.objects.contains_key(&store::key(p.info, p.ns, &name)) {
        return Err(ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", p.info.qualified_plural()),
        )
        .details(json!({"name": name, "group": p.info.group, "kind": p.info.plural})));
    }
    if let Some(m) = body["metadata"].as_object_mut() {
        m.shift_remove("managedFields");
    }
    crate::defaults::drop_unknown_fields(p.info, &mut body);
    if p.info.status {
        // Status in a create body is dropped for kinds with a status subresource.
        if let Some(m) = body.as_object_mut() {
            m.shift_remove("status");
        }
    }
    // The body is decoded with defaults, so the creating manager owns the defaulted fields.
    crate::defaults::set_defaults(p.info, &mut body);
    apply::track_update(
        None,
        &mut body,
        &p.manager,
        &p.info.api_version(),
        Part::All,
        &store::now(),
    );
    commit(st, p, &name, None, body)
}

/// Create `obj` as a component of the control plane would (no HTTP request, no log entry);
/// nothing when it exists already or cannot be created.
pub(crate) fn create_internal(
    st: &mut State,
    opts: &ServerOptions,
    obj: Value,
    manager: &str,
) -> Option<Value> {
    let info = st
        .catalog_all()
        .find_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )
        .cloned()?;
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let p = WriteParams {
        info: &info,
        ns: &ns,
        sub: None,
        dry_run: false,
        manager: manager.into(),
        force: false,
        opts,
    };
    create(st, &p, obj).ok().map(|r| r.0)
}

fn check_rv(p: &WriteParams, name: &str, old: &Value, body: &Value) -> Result<()> {
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict_modified(p.info, name));
    }
    Ok(())
}

/// PUT (main resource or /status).
pub(crate) fn update(
    st: &mut State,
    p: &WriteParams,
    name: &str,
    mut body: Value,
) -> Result<(Value, u16)> {
    check_body_type(p.info, &body)?;
    check_namespace(p, &mut body)?;
    crate::defaults::drop_unknown_fields(p.info, &mut body);
    if let Some(n) = body["metadata"]["name"].as_str()
        && n != name
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let Some(old) = st.objects.get(&store::key(p.info, p.ns, name)).cloned() else {
        return Err(ApiError::not_found(p.info, name));
    };
    check_rv(p, name, &old, &body)?;
    let part = p.part();
    let mut new = match part {
        Part::Status => {
            let mut n = old.clone();
            n["status"] = body.get("status").cloned().unwrap_or(json!({}));
            n
        }
        _ => {
            let mut n = body;
            if part == Part::NoStatus {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.shift_remove("status");
                        }
                    }
                }
            }
            n["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            crate::defaults::set_defaults(p.info, &mut n);
            n
        }
    };
    apply::track_update(
        Some(&old),
        &mut new,
        &p.manager,
        &p.info.api_version(),
        part,
        &store::now(),
    );
    commit(st, p, name, Some(old), new)
}

/// PATCH: apply, merge, strategic merge or JSON patch.
pub(crate) fn patch(
    st: &mut State,
    p: &WriteParams,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(Value, u16)> {
    let k = store::key(p.info, p.ns, name);
    let old = st.objects.get(&k).cloned();
    let part = p.part();
    let now = store::now();
    if content_type.starts_with("application/apply-patch") {
        let text =
            std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
        let applied: Value = serde_json::from_str(text)
            .or_else(|_| serde_saphyr::from_str::<Value>(text))
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        check_body_type(p.info, &applied)?;
        if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind must be set",
            ));
        }
        if let Some(n) = applied["metadata"]["name"].as_str()
            && n != name
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let unknown = crate::defaults::unknown_fields(p.info, &applied);
        if !unknown.is_empty() {
            // The typed patch object fails to build: a plain error, hence a 500 without reason.
            let errs: Vec<String> = unknown
                .iter()
                .map(|f| format!("{f}: field not declared in schema"))
                .collect();
            let errs = if errs.len() == 1 {
                errs[0].clone()
            } else {
                format!("errors:\n  {}", errs.join("\n  "))
            };
            return Err(ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({}/{name}; {}/{}, Kind={}): {errs}",
                    p.ns, p.info.group, p.info.version, p.info.kind
                ),
            ));
        }
        let mut applied = applied;
        check_namespace(p, &mut applied)?;
        if let Some(m) = applied["metadata"].as_object_mut() {
            m.shift_remove("managedFields");
            m.shift_remove("resourceVersion");
        }
        if old.is_none() && part == Part::Status {
            return Err(ApiError::not_found(p.info, name));
        }
        let result = apply::apply(
            old.as_ref(),
            &applied,
            &p.manager,
            &p.info.api_version(),
            part,
            p.force,
            &now,
        )
        .map_err(|cs| conflict_error(p.info, name, cs))?;
        let created = old.is_none();
        let (obj, code) = commit(st, p, name, old, result)?;
        return Ok((obj, if created { 201 } else { code }));
    }
    let Some(old) = old else {
        return Err(ApiError::not_found(p.info, name));
    };
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut new = old.clone();
    if content_type.starts_with("application/json-patch") {
        apply::json_patch(&mut new, &patch_doc).map_err(|e| ApiError::new(422, "Invalid", e))?;
    } else if content_type.starts_with("application/strategic-merge-patch") {
        apply::strategic_merge_patch(&mut new, &patch_doc);
    } else if content_type.starts_with("application/merge-patch")
        || content_type.starts_with("application/json")
    {
        apply::merge_patch(&mut new, &patch_doc);
    } else {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type}"
            ),
        ));
    }
    check_rv(p, name, &old, &new)?;
    crate::defaults::drop_unknown_fields(p.info, &mut new);
    match part {
        Part::Status => {
            let s = new.get("status").cloned();
            new = old.clone();
            match s {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.shift_remove("status");
                    }
                }
            }
        }
        Part::NoStatus => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.shift_remove("status");
                }
            }
        },
        Part::All => {}
    }
    new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    if new["metadata"]["managedFields"].is_null()
        && let Some(m) = new["metadata"].as_object_mut()
    {
        m.shift_remove("managedFields");
    }
    check_namespace(p, &mut new)?;
    if part != Part::Status {
        crate::defaults::set_defaults(p.info, &mut new);
    }
    apply::track_update(
        Some(&old),
        &mut new,
        &p.manager,
        &p.info.api_version(),
        part,
        &now,
    );
    commit(st, p, name, Some(old), new)
}

fn conflict_error(info: &ResourceInfo, name: &str, cs: Vec<apply::Conflict>) -> ApiError {
    let n = cs.len();
    let mut by_mgr: Vec<(String, String, Vec<String>)> = vec![];
    for c in &cs {
        let f = apply::path_string(&c.path);
        match by_mgr.iter_mut().find(|(m, _, _)| m == &c.manager) {
            Some(e) => e.2.push(f),
            None => by_mgr.push((c.manager.clone(), c.api_version.clone(), vec![f])),
        }
    }
    let mut msg = format!(
        "Apply failed with {n} conflict{}: ",
        if n == 1 { "" } else { "s" }
    );
    let parts: Vec<String> = by_mgr
        .iter()
        .map(|(m, av, fs)| {
            if fs.len() == 1 {
                format!("conflict with \"{m}\" using {av}: {}", fs[0])
            } else {
                format!("conflicts with \"{m}\" using {av}:\n- {}", fs.join("\n- "))
            }
        })
        .collect();
    msg.push_str(&parts.join("\n"));
    let causes: Vec<Value> = cs
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
            "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            "field": apply::path_string(&c.path)})
        })
        .collect();
    ApiError::new(409, "Conflict", msg)
        .details(json!({"name": name, "group": info.group, "kind": info.plural, "causes": causes}))
}

/// Remove an object for good, with cascades (namespace contents, CRD instances).
pub(crate) fn finish_delete(st: &mut State, info: &ResourceInfo, k: &Key) -> Option<Value> {
    let removed = st.remove(k)?;
    if info.group.is_empty() && info.plural == "namespaces" {
        let ns = k.3.clone();
        let keys: Vec<Key> = st.objects.keys().filter(|x| x.2 == ns).cloned().collect();
        for x in keys {
            st.remove(&x);
        }
    } else if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        let g = removed["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let pl = removed["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let keys: Vec<Key> = st
            .objects
            .keys()
            .filter(|x| x.0 == g && x.1 == pl)
            .cloned()
            .collect();
        for x in keys {
            st.remove(&x);
        }
    }
    Some(removed)
}

/// DELETE one object.
pub(crate) fn delete(
    st: &mut State,
    p: &WriteParams,
    name: &str,
    options: &Value,
) -> Result<(Value, u16)> {
    let k = store::key(p.info, p.ns, name);
    let Some(old) = st.objects.get(&k).cloned() else {
        return Err(ApiError::not_found(p.info, name));
    };
    let pre = &options["preconditions"];
    if let Some(uid) = pre["uid"].as_str()
        && Some(uid) != old["metadata"]["uid"].as_str()
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                p.info.qualified_plural(),
                old["metadata"]["uid"].as_str().unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = pre["resourceVersion"].as_str()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict_modified(p.info, name));
    }
    let delay = old["metadata"]["annotations"][crate::DELETE_AFTER_ANNOTATION]
        .as_str()
        .and_then(controllers::parse_duration)
        .or_else(|| server_finalized(p.info).then_some(p.opts.finalizer_delay));
    let has_finalizers = old["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    // 202 only when the client asked for orphanDependents=false (the real handler's rule).
    let pending = if options["orphanDependents"] == json!(false) {
        202
    } else {
        200
    };
    if p.dry_run {
        return Ok(if delay.is_some() || has_finalizers {
            (present(old, p.info), pending)
        } else {
            (deleted_body(p.info, old), 200)
        });
    }
    if delay.is_some() || has_finalizers {
        if old["metadata"].get("deletionTimestamp").is_some() {
            return Ok((present(old, p.info), pending));
        }
        let mut new = old.clone();
        new["metadata"]["deletionTimestamp"] = json!(store::now());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if p.info.kind == "Namespace" {
            new["status"]["phase"] = json!("Terminating");
        }
        if p.info.kind == "CustomResourceDefinition" && delay.is_some() {
            // The registry adds the cleanup finalizer and says so in a condition.
            let fins = &mut new["metadata"]["finalizers"];
            if !fins.is_array() {
                *fins = json!([]);
            }
            fins.as_array_mut()
                .expect("array")
                .push(json!(CRD_CLEANUP_FINALIZER));
            let conds = &mut new["status"]["conditions"];
            if !conds.is_array() {
                *conds = json!([]);
            }
            conds.as_array_mut().expect("array").push(json!({"type": "Terminating",
                "status": "True", "lastTransitionTime": store::now(),
                "reason": "InstanceDeletionPending",
                "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon"}));
        }
        let uid = new["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stored = st.put(k.clone(), new);
        if let Some(d) = delay {
            st.pending_removal.insert(uid.clone());
            st.schedule(d, k, uid, TimerAction::Remove);
        }
        return Ok((present(stored, p.info), pending));
    }
    let removed = finish_delete(st, p.info, &k).expect("present");
    Ok((deleted_body(p.info, removed), 200))
}

/// The finalizer the CRD registry adds on delete; removed when the CRD's instances are gone.
pub(crate) const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Kinds whose deletion a server-side finalizer completes a little later: a Namespace (its
/// `kubernetes` finalizer; the namespace controller empties it first) and a CRD
/// (`customresourcecleanup.apiextensions.k8s.io` deletes its custom resources first).
fn server_finalized(info: &ResourceInfo) -> bool {
    matches!(
        (info.group.as_str(), info.kind.as_str()),
        ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}
