//! Watches the objects health gates look at: one kube-runtime watcher per (kind, namespace) in
//! use, shared by every Kustomization, feeding an in-memory map of the latest objects and a tick
//! that wakes the gates on every change. This and `cluster.rs` are the network-facing parts; the
//! readiness rules themselves stay pure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Kind, typed_value};

/// The latest objects of one (kind, namespace).
#[derive(Debug)]
pub struct Entry {
    /// name → (change number, object as compact JSON without `managedFields`): a namespace may
    /// hold tens of thousands of watched objects, and a parsed one costs ~7x its text.
    objects: RwLock<HashMap<String, (u64, Box<str>)>>,
    changes: AtomicU64,
    synced: AtomicBool,
    errors: AtomicU64,
    /// Changes whenever an object of this entry changes, the list arrives or the watch fails:
    /// a gate wakes only for the entries of its own targets (with thousands of gates waiting,
    /// a wake-up for every change anywhere costs more than the applies).
    tick: tokio::sync::watch::Sender<u64>,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            objects: Default::default(),
            changes: Default::default(),
            synced: Default::default(),
            errors: Default::default(),
            tick: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Entry {
    /// Whether the initial list has arrived.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Watch errors seen (the gate falls back to polling while the watch is failing).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The latest version of `name`.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(|(_, v)| serde_json::from_str(v).ok())
    }

    /// A number that changes whenever `name` changes (None while it does not exist), so readers
    /// can skip recomputing the status of objects that did not change.
    pub fn version(&self, name: &str) -> Option<u64> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|(n, _)| *n)
    }

    /// A receiver that changes whenever this entry changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tick.subscribe()
    }

    fn stamp(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::Relaxed) + 1
    }
}

type Key = (String, String, String);

/// The shared watchers.
pub struct Watchers {
    client: Client,
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    cancel: CancellationToken,
    /// Keep ConfigMaps and Secrets whole (a health expression reads them).
    keep_data: bool,
    /// Initial lists in flight at once: each holds a page of objects and a connection buffer,
    /// and a fleet spread over 50 namespaces starts 50 watchers at the same moment.
    listing: Arc<tokio::sync::Semaphore>,
}

/// Initial lists in flight at once.
const LISTS_AT_ONCE: usize = 4;

/// Objects per page of a watcher's list: a connection's read buffer grows to the largest
/// response it carries and keeps that size, and a watch connection lives for the whole run.
pub const WATCH_PAGE: u32 = 100;

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

impl Watchers {
    /// No watchers yet; they start on first use and stop with `cancel`. Unless `keep_data`,
    /// only the identity and deletion state of ConfigMaps and Secrets is kept: no built-in
    /// readiness rule reads more of them, and a fleet may hold tens of thousands.
    pub fn new(client: Client, cancel: CancellationToken, keep_data: bool) -> Arc<Self> {
        Arc::new(Watchers {
            client,
            entries: Mutex::new(HashMap::new()),
            cancel,
            keep_data,
            listing: Arc::new(tokio::sync::Semaphore::new(LISTS_AT_ONCE)),
        })
    }

    /// The entry of (kind, namespace), starting its watcher if needed.
    pub fn entry(self: &Arc<Self>, kind: &Kind, namespace: &str) -> Arc<Entry> {
        let ns = if kind.namespaced { namespace } else { "" };
        let key = (
            kind.resource.api_version.clone(),
            kind.resource.kind.clone(),
            ns.to_string(),
        );
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(&key) {
            return e.clone();
        }
        let entry = Arc::new(Entry::default());
        entries.insert(key, entry.clone());
        let api: Api<DynamicObject> = if kind.namespaced {
            Api::namespaced_with(self.client.clone(), ns, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        };
        let this = self.clone();
        let e = entry.clone();
        let resource = kind.resource.clone();
        tokio::spawn(async move { this.run(api, resource, e).await });
        entry
    }

    async fn run(
        self: Arc<Self>,
        api: Api<DynamicObject>,
        resource: ApiResource,
        entry: Arc<Entry>,
    ) {
        // The first list waits for its turn; a later re-list (after a failed watch) does not.
        let mut turn = tokio::select! {
            _ = self.cancel.cancelled() => return,
            p = self.listing.clone().acquire_owned() => p.ok(),
        };
        let slim = !self.keep_data
            && resource.api_version == "v1"
            && matches!(resource.kind.as_str(), "ConfigMap" | "Secret");
        let config = watcher::Config::default().page_size(WATCH_PAGE);
        let stream = watcher::watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut init: Option<HashMap<String, (u64, Box<str>)>> = None;
        loop {
            let ev = tokio::select! {
                _ = self.cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { return };
            let name_of = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
            match ev {
                Ok(Event::Init) => init = Some(HashMap::new()),
                Ok(Event::InitApply(o)) => {
                    // Items of the initial list carry no kind or apiVersion: the resource does.
                    let name = name_of(&o);
                    if let (Some(m), Some(v)) = (init.as_mut(), typed_value(&resource, o)) {
                        m.insert(name, (entry.stamp(), compact(v, slim)));
                    }
                    // Nothing to see until the whole list is in.
                    continue;
                }
                Ok(Event::InitDone) => {
                    if let Some(m) = init.take() {
                        *entry.objects.write().unwrap_or_else(|e| e.into_inner()) = m;
                    }
                    entry.synced.store(true, Ordering::Release);
                    let _ = turn.take();
                }
                Ok(Event::Apply(o)) => {
                    let name = name_of(&o);
                    if let Some(v) = typed_value(&resource, o) {
                        entry
                            .objects
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name, (entry.stamp(), compact(v, slim)));
                    }
                }
                Ok(Event::Delete(o)) => {
                    entry
                        .objects
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&name_of(&o));
                }
                Err(err) => {
                    // Failing (forbidden, not served…): not a reason to hold others up.
                    let _ = turn.take();
                    entry.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("watch error: {err}");
                }
            }
            entry.tick.send_modify(|t| *t += 1);
        }
    }
}

/// What the readiness rules may read of a watched object, as compact JSON: all of it but
/// `metadata.managedFields` (often the largest part, and never read); when `slim` (a ConfigMap or
/// Secret no health expression reads), only its identity and deletion state, since nothing else
/// decides such an object's health.
fn compact(mut v: Value, slim: bool) -> Box<str> {
    if let Some(o) = v.as_object_mut() {
        if slim {
            o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
        }
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            if slim {
                meta.retain(|k, _| {
                    matches!(
                        k.as_str(),
                        "name" | "namespace" | "generation" | "deletionTimestamp" | "finalizers"
                    )
                });
            } else {
                meta.shift_remove("managedFields");
            }
        }
    }
    v.to_string().into_boxed_str()
}
