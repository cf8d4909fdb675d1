//! Server-side apply and patching: field sets (fieldsV1), managed-field bookkeeping per manager,
//! conflict detection, the apply merge, JSON merge patch and a simplified strategic merge patch.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PE {
    /// A map field (`f:name`).
    F(String),
    /// A keyed list element (`k:{"name":"x"}`), the JSON of the key object.
    K(String),
}

pub(crate) type Path = Vec<PE>;
pub(crate) type FieldSet = BTreeSet<Path>;

/// Which part of an object a write covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Everything (kinds without a status subresource).
    All,
    /// Everything but `.status` (main resource of a kind with a status subresource).
    NoStatus,
    /// Only `.status` (the status subresource).
    Status,
}

/// The key fields of a list that is merged by key, if `field` names one and every element has them.
pub(crate) fn list_key(field: &str, elems: &[Value]) -> Option<&'static str> {
    let k = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "conditions" => "type",
        "ports" => {
            if elems.iter().all(|e| e.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    if elems.iter().all(|e| e.get(k).is_some_and(|v| !v.is_null())) {
        Some(k)
    } else {
        None
    }
}

fn key_of(k: &str, elem: &Value) -> String {
    let mut m = Map::new();
    m.insert(k.to_string(), elem[k].clone());
    Value::Object(m).to_string()
}

const META_SKIP: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
    "selfLink",
];

/// The set of leaf field paths an object (or applied configuration) sets, limited to `part`.
pub(crate) fn field_set(obj: &Value, part: Part) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if part == Part::NoStatus => {}
            "status" => collect(v, &mut vec![PE::F(k.clone())], &mut out),
            _ if part == Part::Status => {}
            "metadata" => {
                let Some(mm) = v.as_object() else { continue };
                for (mk, mv) in mm {
                    if META_SKIP.contains(&mk.as_str()) {
                        continue;
                    }
                    let mut p = vec![PE::F("metadata".into()), PE::F(mk.clone())];
                    collect(mv, &mut p, &mut out);
                }
            }
            _ => collect(v, &mut vec![PE::F(k.clone())], &mut out),
        }
    }
    out
}

fn collect(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(PE::F(k.clone()));
                collect(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let field = match path.last() {
                Some(PE::F(f)) => f.clone(),
                _ => String::new(),
            };
            if let Some(k) = list_key(&field, a) {
                for e in a {
                    path.push(PE::K(key_of(k, e)));
                    out.insert(path.clone());
                    collect(e, path, out);
                    path.pop();
                }
            } else {
                out.insert(path.clone());
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Value at a path, if present.
pub(crate) fn get_path<'a>(v: &'a Value, path: &[PE]) -> Option<&'a Value> {
    let mut cur = v;
    for pe in path {
        cur = match pe {
            PE::F(f) => cur.as_object()?.get(f)?,
            PE::K(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|e| key.iter().all(|(kk, kv)| &e[kk] == kv))?
            }
        };
    }
    Some(cur)
}

/// Remove the value at a path; returns whether something was removed.
pub(crate) fn remove_path(v: &mut Value, path: &[PE]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let Some(parent) = get_path_mut(v, parent_path) else {
        return false;
    };
    match last {
        PE::F(f) => parent
            .as_object_mut()
            .and_then(|m| m.shift_remove(f))
            .is_some(),
        PE::K(k) => {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                return false;
            };
            let Some(a) = parent.as_array_mut() else {
                return false;
            };
            let before = a.len();
            a.retain(|e| !key.iter().all(|(kk, kv)| &e[kk] == kv));
            a.len() != before
        }
    }
}

fn get_path_mut<'a>(v: &'a mut Value, path: &[PE]) -> Option<&'a mut Value> {
    let mut cur = v;
    for pe in path {
        cur = match pe {
            PE::F(f) => cur.as_object_mut()?.get_mut(f)?,
            PE::K(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array_mut()?
                    .iter_mut()
                    .find(|e| key.iter().all(|(kk, kv)| &e[kk] == kv))?
            }
        };
    }
    Some(cur)
}

/// Render a path like the real server does in conflict messages: `.spec.containers[name="x"].image`.
pub(crate) fn path_string(path: &[PE]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            PE::F(f) => {
                s.push('.');
                s.push_str(f);
            }
            PE::K(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = key.iter().map(|(a, b)| format!("{a}={b}")).collect();
                s.push('[');
                s.push_str(&inner.join(","));
                s.push(']');
            }
        }
    }
    s
}

/// fieldsV1 JSON of a set.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for p in set {
        let mut cur = &mut root;
        for pe in p {
            let k = match pe {
                PE::F(f) => format!("f:{f}"),
                PE::K(k) => format!("k:{k}"),
            };
            let m = cur.as_object_mut().expect("object");
            cur = m.entry(k).or_insert_with(|| Value::Object(Map::new()));
        }
        // Mark interior nodes that are themselves owned with ".".
        if set
            .range(p.clone()..)
            .nth(1)
            .is_some_and(|n| n.starts_with(p))
        {
            cur.as_object_mut()
                .expect("object")
                .insert(".".into(), json!({}));
        }
    }
    // A node owned and later given children needs "."; handled above. Leaves stay {}.
    root
}

/// Parse fieldsV1 back into a set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, c) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let pe = if let Some(f) = k.strip_prefix("f:") {
                PE::F(f.to_string())
            } else if let Some(kk) = k.strip_prefix("k:") {
                PE::K(kk.to_string())
            } else {
                PE::F(k.clone())
            };
            path.push(pe);
            walk(c, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut vec![], &mut out);
    out
}

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

/// Read `.metadata.managedFields`.
pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().unwrap_or_default().into(),
                    set: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Write `.metadata.managedFields` (dropping empty entries).
pub(crate) fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut o = json!({"manager": e.manager, "operation": e.operation,
                "apiVersion": e.api_version, "time": e.time, "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.set)});
            if !e.subresource.is_empty() {
                o["subresource"] = json!(e.subresource);
            }
            o
        })
        .collect();
    if let Some(m) = obj["metadata"].as_object_mut() {
        if arr.is_empty() {
            m.shift_remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

fn overlaps(set: &FieldSet, p: &Path) -> Vec<Path> {
    let mut out = vec![];
    for i in 1..p.len() {
        if set.contains(&p[..i]) {
            out.push(p[..i].to_vec());
        }
    }
    for q in set.range(p.clone()..) {
        if q.starts_with(p) {
            out.push(q.clone());
        } else {
            break;
        }
    }
    out
}

fn owned_by_any(entries: &[Entry], p: &Path) -> bool {
    entries.iter().any(|e| !overlaps(&e.set, p).is_empty())
}

/// A field conflict found by apply.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// Server-side apply of `applied` onto `live` (None = create). Returns the new object and entries,
/// or the conflicts when `force` is false and another manager owns a field set to a new value.
pub(crate) fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    part: Part,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let subresource = if part == Part::Status { "status" } else { "" };
    let mut entries = live.map(read_entries).unwrap_or_default();
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let new_set = field_set(applied, part);
    let prev_set = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        .map(|e| e.set.clone())
        .unwrap_or_default();

    // Conflicts with other managers.
    let mut conflicts = vec![];
    for e in entries.iter() {
        if e.manager == manager {
            continue;
        }
        for p in &new_set {
            let ov = overlaps(&e.set, p);
            if ov.is_empty() || matches!(p.last(), Some(PE::K(_))) {
                continue;
            }
            let av = get_path(applied, p);
            let lv = get_path(&base, p);
            let same = match (av, lv) {
                (Some(Value::Object(a)), Some(Value::Object(_))) if a.is_empty() => true,
                (a, l) => a == l,
            };
            if !same {
                conflicts.push((p.clone(), ov, e.manager.clone(), e.api_version.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_iter()
            .map(|(p, _, m, a)| Conflict {
                manager: m,
                api_version: a,
                path: p,
            })
            .collect());
    }
    // Force: conflicting fields move to the applier.
    for (p, _, m, _) in &conflicts {
        for e in entries.iter_mut().filter(|e| &e.manager == m) {
            for q in overlaps(&e.set, p) {
                e.set.remove(&q);
            }
        }
    }
    // Set this manager's entry, in place (the real server keeps the entries' order).
    let mine =
        |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;
    let others: Vec<Entry> = entries.iter().filter(|e| !mine(e)).cloned().collect();
    let entry = Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time: now.into(),
        subresource: subresource.into(),
        set: new_set.clone(),
    };
    match entries.iter().position(mine) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }

    let mut result = base;
    // Remove fields this manager no longer applies and nobody else owns.
    let mut removed: Vec<&Path> = prev_set.difference(&new_set).collect();
    removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in removed {
        if owned_by_any(&others, p) || new_set.iter().any(|q| q.starts_with(p)) {
            continue;
        }
        if remove_path(&mut result, p) {
            prune_empty(&mut result, p, &entries);
        }
    }
    // Merge the applied configuration.
    let filtered = restrict(applied, part);
    merge_apply(&mut result, &filtered, "");
    if let (Some(m), Some(a)) = (result.as_object_mut(), applied.as_object()) {
        for k in ["apiVersion", "kind"] {
            if let Some(v) = a.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
    }
    write_entries(&mut result, &entries);
    Ok(result)
}

/// Remove now-empty parent maps of a removed path unless someone owns them.
fn prune_empty(obj: &mut Value, removed: &[PE], entries: &[Entry]) {
    let mut depth = removed.len();
    while depth > 1 {
        depth -= 1;
        let parent = &removed[..depth];
        if parent.len() == 1 {
            break; // keep top-level spec/metadata/data
        }
        let empty = match get_path(obj, parent) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty || entries.iter().any(|e| e.set.contains(parent)) {
            break;
        }
        remove_path(obj, parent);
    }
}

/// The part of a body a write may touch.
pub(crate) fn restrict(v: &Value, part: Part) -> Value {
    let Some(m) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, c) in m {
        let keep = match part {
            Part::All => true,
            Part::NoStatus => k != "status",
            Part::Status => k == "status" || k == "apiVersion" || k == "kind",
        };
        if keep {
            out.insert(k.clone(), c.clone());
        }
    }
    Value::Object(out)
}

/// Merge an applied configuration into an object: maps recursively, keyed lists by key,
/// other lists and scalars replaced; `null` removes.
pub(crate) fn merge_apply(dst: &mut Value, src: &Value, field: &str) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, sv) in s {
                if k == "metadata" && field.is_empty() {
                    let dm = d.entry(k.clone()).or_insert_with(|| json!({}));
                    if let (Some(dmm), Some(smm)) = (dm.as_object_mut(), sv.as_object()) {
                        for (mk, mv) in smm {
                            if META_SKIP.contains(&mk.as_str()) && mk != "name" && mk != "namespace"
                            {
                                continue;
                            }
                            merge_key(dmm, mk, mv);
                        }
                    }
                    continue;
                }
                merge_key(d, k, sv);
            }
        }
        (d, s) => *d = s.clone(),
    }
}

fn merge_key(d: &mut Map<String, Value>, k: &str, sv: &Value) {
    if sv.is_null() {
        d.shift_remove(k);
        return;
    }
    match d.get_mut(k) {
        Some(dv @ Value::Object(_)) if sv.is_object() => merge_apply(dv, sv, k),
        Some(Value::Array(da)) if sv.is_array() => {
            let sa = sv.as_array().expect("array");
            match (list_key(k, sa), list_key(k, da)) {
                (Some(key), Some(key2)) if key == key2 => {
                    for se in sa {
                        if let Some(de) = da.iter_mut().find(|e| e[key] == se[key]) {
                            merge_apply(de, se, "");
                        } else {
                            da.push(se.clone());
                        }
                    }
                }
                _ => *d.get_mut(k).expect("present") = sv.clone(),
            }
        }
        _ => {
            d.insert(k.to_string(), sv.clone());
        }
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(dst: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !dst.is_object() {
                *dst = json!({});
            }
            let d = dst.as_object_mut().expect("object");
            for (k, pv) in p {
                if pv.is_null() {
                    d.shift_remove(k);
                } else {
                    merge_patch(d.entry(k.clone()).or_insert(Value::Null), pv);
                }
            }
        }
        _ => *dst = patch.clone(),
    }
}

/// Simplified strategic merge patch: merge patch, but keyed lists merge by key, `$patch: delete`
/// on a keyed element removes it, and other `$` directives are ignored.
pub(crate) fn strategic_merge_patch(dst: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !dst.is_object() {
                *dst = json!({});
            }
            let d = dst.as_object_mut().expect("object");
            for (k, pv) in p {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    d.shift_remove(k);
                    continue;
                }
                if let (Some(pa), Some(Value::Array(da))) = (pv.as_array(), d.get_mut(k)) {
                    let live: Vec<Value> = pa
                        .iter()
                        .filter(|e| e.get("$patch").is_none())
                        .cloned()
                        .collect();
                    if let Some(key) = list_key(k, pa).or_else(|| list_key(k, da))
                        && pa.iter().all(|e| e.get(key).is_some())
                    {
                        for pe in pa {
                            let pos = da.iter().position(|e| e[key] == pe[key]);
                            if pe["$patch"] == "delete" {
                                if let Some(i) = pos {
                                    da.remove(i);
                                }
                            } else if let Some(i) = pos {
                                strategic_merge_patch(&mut da[i], pe);
                            } else {
                                let mut ne = json!({});
                                strategic_merge_patch(&mut ne, pe);
                                da.push(ne);
                            }
                        }
                        continue;
                    }
                    *da = live;
                    continue;
                }
                strategic_merge_patch(d.entry(k.clone()).or_insert(Value::Null), pv);
            }
        }
        Value::Array(a) => {
            *dst = Value::Array(
                a.iter()
                    .filter(|e| e.get("$patch").is_none())
                    .cloned()
                    .collect(),
            )
        }
        _ => *dst = patch.clone(),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test, copy, move).
pub(crate) fn json_patch(dst: &mut Value, ops: &Value) -> Result<(), String> {
    fn pointer_parts(p: &str) -> Vec<String> {
        p.split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect()
    }
    fn parent<'a>(v: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
        let mut cur = v;
        for p in parts {
            cur = match cur {
                Value::Object(m) => m.get_mut(p).ok_or(format!("missing {p}"))?,
                Value::Array(a) => {
                    let i: usize = p.parse().map_err(|_| format!("bad index {p}"))?;
                    a.get_mut(i).ok_or(format!("missing index {p}"))?
                }
                _ => return Err(format!("cannot traverse {p}")),
            };
        }
        Ok(cur)
    }
    fn add(v: &mut Value, path: &str, val: Value) -> Result<(), String> {
        let parts = pointer_parts(path);
        let Some((last, pp)) = parts.split_last() else {
            *v = val;
            return Ok(());
        };
        match parent(v, pp)? {
            Value::Object(m) => {
                m.insert(last.clone(), val);
            }
            Value::Array(a) => {
                if last == "-" {
                    a.push(val);
                } else {
                    let i: usize = last.parse().map_err(|_| "bad index".to_string())?;
                    if i > a.len() {
                        return Err("index out of range".into());
                    }
                    a.insert(i, val);
                }
            }
            _ => return Err("bad parent".into()),
        }
        Ok(())
    }
    fn remove(v: &mut Value, path: &str) -> Result<Value, String> {
        let parts = pointer_parts(path);
        let (last, pp) = parts.split_last().ok_or("empty path")?;
        match parent(v, pp)? {
            Value::Object(m) => m.shift_remove(last).ok_or(format!("missing {last}")),
            Value::Array(a) => {
                let i: usize = last.parse().map_err(|_| "bad index".to_string())?;
                if i >= a.len() {
                    return Err("index out of range".into());
                }
                Ok(a.remove(i))
            }
            _ => Err("bad parent".into()),
        }
    }
    for op in ops.as_array().ok_or("json patch must be an array")? {
        let path = op["path"].as_str().ok_or("missing path")?;
        match op["op"].as_str().unwrap_or_default() {
            "add" => add(dst, path, op["value"].clone())?,
            "remove" => {
                remove(dst, path)?;
            }
            "replace" => {
                remove(dst, path)?;
                add(dst, path, op["value"].clone())?;
            }
            "test" => {
                if dst.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test failed at {path}"));
                }
            }
            "move" => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = remove(dst, from)?;
                add(dst, path, v)?;
            }
            "copy" => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let v = dst.pointer(from).cloned().ok_or("missing from")?;
                add(dst, path, v)?;
            }
            o => return Err(format!("unknown op {o}")),
        }
    }
    Ok(())
}

/// Ownership bookkeeping for a non-apply write (create/update/patch): fields whose value changed
/// (or were added) go to `manager` with operation Update; removed fields leave every manager.
pub(crate) fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    part: Part,
    now: &str,
) {
    let subresource = if part == Part::Status { "status" } else { "" };
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_set = field_set(new, part);
    let changed: FieldSet = match old {
        None => new_set.clone(),
        Some(o) => new_set
            .iter()
            .filter(|p| {
                !matches!(p.last(), Some(PE::K(_))) && get_path(o, p) != get_path(new, p)
                    || matches!(p.last(), Some(PE::K(_))) && get_path(o, p).is_none()
            })
            .cloned()
            .collect(),
    };
    let old_set = old.map(|o| field_set(o, part)).unwrap_or_default();
    let gone: Vec<&Path> = old_set.difference(&new_set).collect();
    for e in entries.iter_mut() {
        // Only entries covering the same part are affected.
        let same_part = (e.subresource == "status") == (part == Part::Status);
        if !same_part && part != Part::All {
            continue;
        }
        for p in &changed {
            if e.manager != manager || e.operation != "Update" {
                e.set.remove(p);
            }
        }
        for p in &gone {
            let ov = overlaps(&e.set, p);
            for q in ov {
                if q.len() >= p.len() {
                    e.set.remove(&q);
                }
            }
        }
    }
    if !changed.is_empty() {
        if let Some(e) = entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            e.set.extend(changed);
            e.time = now.into();
            e.api_version = api_version.into();
        } else {
            entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: now.into(),
                subresource: subresource.into(),
                set: changed,
            });
        }
    }
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}}});
        let s = field_set(&obj, Part::NoStatus);
        let v = to_fields_v1(&s);
        assert_eq!(from_fields_v1(&v), s);
        assert!(s.contains(&vec![
            PE::F("metadata".into()),
            PE::F("labels".into()),
            PE::F("a".into())
        ]));
    }

    #[test]
    fn apply_removes_dropped_fields_and_conflicts() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
            "data": {"a": "1", "b": "2"}});
        let o1 = apply(None, &a1, "m1", "v1", Part::All, false, "t").unwrap();
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
            "data": {"a": "1"}});
        let o2 = apply(Some(&o1), &a2, "m1", "v1", Part::All, false, "t").unwrap();
        assert_eq!(o2["data"], json!({"a": "1"}));
        let a3 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
            "data": {"a": "2"}});
        let err = apply(Some(&o2), &a3, "m2", "v1", Part::All, false, "t").unwrap_err();
        assert_eq!(path_string(&err[0].path), ".data.a");
        let o3 = apply(Some(&o2), &a3, "m2", "v1", Part::All, true, "t").unwrap();
        assert_eq!(o3["data"]["a"], "2");
        let e = read_entries(&o3);
        assert_eq!(e.len(), 1, "m1 lost its only field: {e:?}");
    }

    #[test]
    fn apply_removes_keyed_list_elements_and_status_part() {
        let d = |cs: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"containers": cs}}}})
        };
        let o1 = apply(
            None,
            &d(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}])),
            "m",
            "apps/v1",
            Part::NoStatus,
            false,
            "t",
        )
        .unwrap();
        let o2 = apply(
            Some(&o1),
            &d(json!([{"name": "a", "image": "2"}])),
            "m",
            "apps/v1",
            Part::NoStatus,
            false,
            "t",
        )
        .unwrap();
        assert_eq!(
            o2["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "2"}])
        );
        let mut st = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "status": {"replicas": 1}, "spec": {"replicas": 9}});
        let o3 = apply(Some(&o2), &st, "ctl", "apps/v1", Part::Status, false, "t").unwrap();
        assert_eq!(o3["status"]["replicas"], 1);
        assert!(o3["spec"].get("replicas").is_none());
        let e = read_entries(&o3);
        assert!(
            e.iter()
                .any(|e| e.manager == "ctl" && e.subresource == "status")
        );
        st["status"]["replicas"] = json!(2);
        let o4 = apply(Some(&o3), &st, "ctl", "apps/v1", Part::Status, false, "t").unwrap();
        assert_eq!(o4["status"]["replicas"], 2);
    }
}
