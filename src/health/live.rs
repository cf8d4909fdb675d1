//! Reads the live state of many objects named by reference (an inventory, a release's manifest)
//! with one paginated LIST per (apiVersion, kind, namespace) instead of one GET per object, and
//! hands each object wanted to a pure function (kstatus) as its page arrives, so a read of tens
//! of thousands of objects costs a request per 500 of them and keeps only the results.
//! Network-facing, like the watchers; the readiness rules stay pure.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::cluster::{Cluster, ClusterError};
use crate::model::subject_of;

/// An object by reference: (apiVersion, kind, namespace — empty for cluster-scoped, name).
pub type ObjRef = (String, String, String, String);

/// Groups read at the same time.
const CONCURRENT_LISTS: usize = 8;

/// One (apiVersion, kind, namespace) to list: the names wanted, and the owner label all of them
/// are expected to carry (a server-side filter), if they agree on one.
#[derive(Default)]
struct Group {
    names: HashSet<String>,
    refs: Vec<ObjRef>,
    label: Option<Option<&'static str>>,
}

/// Reads the objects `refs` name and maps each one found through `f(apiVersion, kind, object)`
/// (the type comes from the reference: list items carry none). An object absent from the
/// result does not exist, or its kind is not served. Each `(reference, label)` may name a label
/// the object should carry (Flux's owner label): a group whose references all name the same
/// one is listed with it as a selector, and listed again without when some name is missing from
/// the filtered list (an object whose labels were changed on the server is still found).
/// When listing is forbidden (403), that group's objects are read one GET each, as a user
/// allowed to get but not to list would.
pub async fn read<T, F>(
    cluster: &Cluster,
    refs: impl IntoIterator<Item = (ObjRef, Option<&'static str>)>,
    f: F,
) -> Result<HashMap<ObjRef, T>, ClusterError>
where
    T: Clone,
    F: Fn(&str, &str, &Value) -> T,
{
    let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    for (r, label) in refs {
        let (api, kind, ns, name) = &r;
        // A cluster-scoped kind is listed once, whatever namespace a reference names.
        let ns = match cluster.kind(api, kind) {
            Some(k) if !k.namespaced => String::new(),
            _ => ns.clone(),
        };
        let g = groups.entry((api.clone(), kind.clone(), ns)).or_default();
        g.names.insert(name.clone());
        g.label = match g.label {
            None => Some(label),
            Some(l) if l == label => Some(l),
            Some(_) => Some(None),
        };
        g.refs.push(r);
    }
    let f = &f;
    let results: Vec<(Group, HashMap<String, T>)> =
        futures::stream::iter(groups.into_iter().map(|(key, g)| async move {
            let found = read_group(cluster, &key, &g, f).await?;
            Ok::<_, ClusterError>((g, found))
        }))
        .buffer_unordered(CONCURRENT_LISTS)
        .try_collect()
        .await?;
    let mut out = HashMap::new();
    for (g, found) in results {
        for r in g.refs {
            if let Some(v) = found.get(&r.3) {
                out.insert(r, v.clone());
            }
        }
    }
    Ok(out)
}

/// The wanted objects of one group, by name.
async fn read_group<T, F>(
    cluster: &Cluster,
    (api, kind, ns): &(String, String, String),
    g: &Group,
    f: &F,
) -> Result<HashMap<String, T>, ClusterError>
where
    F: Fn(&str, &str, &Value) -> T,
{
    let Some(k) = cluster.kind(api, kind) else {
        return Ok(HashMap::new());
    };
    if k.namespaced && ns.is_empty() {
        let first = g.names.iter().min().cloned().unwrap_or_default();
        return Err(ClusterError::NoNamespace {
            subject: subject_of(kind, "", &first),
        });
    }
    let namespace = k.namespaced.then_some(ns.as_str());
    let mut found: HashMap<String, T> = HashMap::new();
    let take = |found: &mut HashMap<String, T>, page: Vec<Value>, restart: bool| {
        if restart {
            found.clear();
        }
        for o in page {
            let name = o.pointer("/metadata/name").and_then(Value::as_str);
            if let Some(name) = name.filter(|n| g.names.contains(*n)) {
                found.insert(name.to_string(), f(api, kind, &o));
            }
        }
    };
    let label = g.label.flatten();
    match cluster
        .list_pages(api, kind, namespace, label.unwrap_or(""), |p, r| {
            take(&mut found, p, r)
        })
        .await
    {
        Ok(()) => {}
        Err(e) if e.code() == Some(403) => {
            tracing::debug!("{e}: reading {kind} objects one by one");
            let mut found = HashMap::new();
            for name in &g.names {
                if let Some(o) = cluster.get_ref(api, kind, ns, name).await? {
                    found.insert(name.clone(), f(api, kind, &o));
                }
            }
            return Ok(found);
        }
        Err(e) => return Err(e),
    }
    if label.is_some() && found.len() < g.names.len() {
        cluster
            .list_pages(api, kind, namespace, "", |p, r| take(&mut found, p, r))
            .await?;
    }
    Ok(found)
}
