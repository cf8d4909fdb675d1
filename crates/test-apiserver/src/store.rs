//! The in-memory object store: objects keyed by (group, resource, namespace, name), the global
//! resourceVersion counter, and the full watch-event history (never compacted for watches, so
//! no 410s there; paginated LISTs honour [`State::compacted`]).

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::discovery::{self, Catalog, ResourceInfo};

/// Store key: (group, plural, namespace or "", name).
pub(crate) type Key = (String, String, String, String);

/// Make a store key.
pub(crate) fn key(info: &ResourceInfo, ns: &str, name: &str) -> Key {
    (
        info.group.clone(),
        info.plural.clone(),
        ns.to_string(),
        name.to_string(),
    )
}

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the watch history.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
}

/// A scheduled controller action.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub at: Instant,
    pub seq: u64,
    pub key: Key,
    pub uid: String,
    pub action: TimerAction,
}

/// What a timer does when it fires.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerAction {
    /// The object's controller notices spec change number `spec` (if it is still the latest).
    Observe { spec: u64 },
    /// The pods of rollout `rollout` exist (started, not ready), if it is still current.
    Pods { rollout: u64 },
    /// Rollout `rollout` becomes ready (or failed), if it is still current.
    Ready { rollout: u64, fail: bool },
    /// Finish a delayed deletion.
    Remove,
}

/// What a simulated controller remembers about one object (by uid), as a real controller
/// keeps it in its ReplicaSets, ControllerRevisions and pods.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ctl {
    /// Spec changes so far (the latest is the one to observe).
    pub spec: u64,
    /// Rollouts so far: each one starts pods (a new template, a scale-up, a Job's run, a custom
    /// resource's reconcile); 0 before the first observation.
    pub rollout: u64,
    /// The pod template (or spec) the current rollout runs.
    pub template: Option<Value>,
    /// Bumped with each new template: `deployment.kubernetes.io/revision`.
    pub revision: i64,
    /// Replicas the current rollout runs.
    pub replicas: i64,
    /// The current rollout keeps the previous template (a scale-up).
    pub same_template: bool,
    /// Ready pods when the current rollout started (serving until it is done).
    pub prev_ready: i64,
    /// The previous revision's name (a StatefulSet's `currentRevision` during an update).
    pub prev_revision: String,
    /// The current rollout's pods exist.
    pub created: bool,
    /// The current rollout finished (ready, or failed when `failed`).
    pub done: bool,
    /// The current rollout failed.
    pub failed: bool,
}

/// Everything behind the server's one lock.
pub(crate) struct State {
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    pub history: Vec<Event>,
    /// Paginated LISTs cannot go on from a snapshot older than this (see `TestServer::compact`).
    pub compacted: u64,
    pub timers: BinaryHeap<std::cmp::Reverse<Timer>>,
    pub timer_seq: u64,
    pub ready_events: Vec<crate::ReadyEvent>,
    pub pending_removal: HashSet<String>,
    pub ctl: HashMap<String, Ctl>,
    pub uid_counter: u64,
    pub ip_counter: u32,
    pub node_port_counter: u32,
    pub rv_tx: Arc<tokio::sync::watch::Sender<u64>>,
    pub timer_wake: Arc<tokio::sync::Notify>,
    pub seed: u64,
}

impl State {
    pub fn new(
        rv_tx: Arc<tokio::sync::watch::Sender<u64>>,
        timer_wake: Arc<tokio::sync::Notify>,
    ) -> State {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        State {
            objects: BTreeMap::new(),
            rv: 1,
            history: vec![],
            compacted: 0,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            ready_events: vec![],
            pending_removal: HashSet::new(),
            ctl: HashMap::new(),
            uid_counter: 0,
            ip_counter: 10,
            node_port_counter: 0,
            rv_tx,
            timer_wake,
            seed,
        }
    }

    /// Built-ins plus established CRDs.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.crds().filter(|c| discovery::crd_established(c)))
    }

    /// Built-ins plus every stored CRD (established or not): for internal lookups.
    pub fn catalog_all(&self) -> Catalog {
        Catalog::new(self.crds())
    }

    fn crds(&self) -> impl Iterator<Item = &Value> {
        let g = "apiextensions.k8s.io".to_string();
        let p = "customresourcedefinitions".to_string();
        let lo = (g.clone(), p.clone(), String::new(), String::new());
        self.objects
            .range(lo..)
            .take_while(move |(k, _)| k.0 == g && k.1 == p)
            .map(|(_, v)| v)
    }

    /// Objects of one resource, optionally in one namespace.
    pub fn list(&self, info: &ResourceInfo, ns: Option<&str>) -> Vec<&Value> {
        let lo = (
            info.group.clone(),
            info.plural.clone(),
            ns.unwrap_or("").to_string(),
            String::new(),
        );
        self.objects
            .range(lo..)
            .take_while(|(k, _)| {
                k.0 == info.group && k.1 == info.plural && ns.is_none_or(|n| k.2 == n)
            })
            .map(|(_, v)| v)
            .collect()
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            ns.to_string(),
        ))
    }

    pub fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        let a = splitmix(self.seed ^ self.uid_counter);
        let b = splitmix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (b >> 52) as u16 & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    /// Short random-looking suffix for generateName.
    pub fn name_suffix(&mut self) -> String {
        self.uid_counter += 1;
        let mut x = splitmix(self.seed ^ self.uid_counter.wrapping_mul(31));
        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| {
                let c = alphabet[(x % alphabet.len() as u64) as usize] as char;
                x /= alphabet.len() as u64;
                c
            })
            .collect()
    }

    /// Store `obj` (stamping a new resourceVersion) and record an ADDED/MODIFIED event.
    pub fn put(&mut self, k: Key, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let prev = self.objects.insert(k.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.push_event(k, kind, obj.clone(), prev);
        obj
    }

    /// Remove an object, recording a DELETED event (with the object as it was before, for
    /// paginated LISTs of older snapshots); returns the object as deleted.
    pub fn remove(&mut self, k: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(k)?;
        let prev = obj.clone();
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.ctl.remove(uid);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.push_event(k.clone(), EventType::Deleted, obj.clone(), Some(prev));
        Some(obj)
    }

    fn push_event(&mut self, k: Key, kind: EventType, obj: Value, prev: Option<Value>) {
        self.history.push(Event {
            rv: self.rv,
            kind,
            group: k.0,
            plural: k.1,
            namespace: k.2,
            object: Arc::new(obj),
            prev: prev.map(Arc::new),
        });
        self.rv_tx.send_replace(self.rv);
    }

    /// Schedule a controller timer.
    pub fn schedule(&mut self, after: Duration, k: Key, uid: String, action: TimerAction) {
        self.timer_seq += 1;
        self.timers.push(std::cmp::Reverse(Timer {
            at: Instant::now() + after,
            seq: self.timer_seq,
            key: k,
            uid,
            action,
        }));
        self.timer_wake.notify_one();
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True when `.status.conditions[type=t].status == "True"`.
pub(crate) fn condition_true(obj: &Value, t: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
}

/// RFC 3339 UTC timestamp with second precision, as Kubernetes writes them.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil_from_days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Now, formatted.
pub(crate) fn now() -> String {
    rfc3339(SystemTime::now())
}
