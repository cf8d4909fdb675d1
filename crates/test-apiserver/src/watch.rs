//! Watch streams: newline-delimited JSON events read from the store's history, starting after
//! a resourceVersion (or with synthetic ADDED events for the current state), until timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};

use crate::Shared;
use crate::discovery::ResourceInfo;
use crate::selector::Selector;
use crate::store::EventType;
use crate::verbs::present;

/// What a watch asks for.
pub(crate) struct WatchSpec {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    /// None = "" or "0".
    pub from_rv: Option<u64>,
    pub labels: Selector,
    pub fields: Selector,
    pub timeout: Duration,
    pub bookmarks: bool,
    /// `sendInitialEvents`, if given.
    pub send_initial_events: Option<bool>,
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": obj})).expect("json");
    s.push(b'\n');
    Bytes::from(s)
}

/// Start the watch task; returns the response body.
pub(crate) fn start(shared: Arc<Shared>, w: WatchSpec) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut rv_rx = shared.rv_tx.subscribe();
        let deadline = tokio::time::Instant::now() + w.timeout;
        let matches = |ns: &str, o: &Value| {
            w.namespace.as_deref().is_none_or(|n| n == ns)
                && w.labels.matches(o)
                && w.fields.matches(o)
        };
        // Without sendInitialEvents, a watch from "" or "0" starts with the current state (and
        // the v1.36 server defaults it to sendInitialEvents=true); with sendInitialEvents=true
        // any resourceVersion gets the current state, then the initial-events-end bookmark
        // when bookmarks are allowed.
        let initial = w.send_initial_events.unwrap_or(w.from_rv.is_none());
        let end_bookmark = w.bookmarks && w.send_initial_events != Some(false) && initial;
        let (mut pos, initial) = {
            let st = shared.state.lock().expect("state lock");
            match (initial, w.from_rv) {
                (false, Some(rv)) => (st.history.partition_point(|e| e.rv <= rv), vec![]),
                (false, None) => (st.history.len(), vec![]),
                (true, _) => {
                    let items: Vec<Bytes> = st
                        .list(&w.info, w.namespace.as_deref())
                        .into_iter()
                        .filter(|o| matches(o["metadata"]["namespace"].as_str().unwrap_or(""), o))
                        .map(|o| line("ADDED", &present(o.clone(), &w.info)))
                        .collect();
                    let mut items = items;
                    if end_bookmark {
                        items.push(line(
                            "BOOKMARK",
                            &json!({"apiVersion": w.info.api_version(), "kind": w.info.kind,
                                "metadata": {"resourceVersion": st.rv.to_string(),
                                "annotations": {"k8s.io/initial-events-end": "true"}}}),
                        ));
                    }
                    (st.history.len(), items)
                }
            }
        };
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        loop {
            rv_rx.mark_unchanged();
            let batch: Vec<Bytes> = {
                let st = shared.state.lock().expect("state lock");
                let mut out = vec![];
                for e in &st.history[pos..] {
                    if e.group != w.info.group || e.plural != w.info.plural {
                        continue;
                    }
                    let now_m = matches(&e.namespace, &e.object);
                    let kind = match e.kind {
                        EventType::Deleted => now_m.then_some("DELETED"),
                        EventType::Added => now_m.then_some("ADDED"),
                        EventType::Modified => {
                            let was = e.prev.as_ref().is_some_and(|p| matches(&e.namespace, p));
                            match (was, now_m) {
                                (true, true) => Some("MODIFIED"),
                                (false, true) => Some("ADDED"),
                                (true, false) => Some("DELETED"),
                                (false, false) => None,
                            }
                        }
                    };
                    if let Some(k) = kind {
                        out.push(line(k, &present((*e.object).clone(), &w.info)));
                    }
                }
                pos = st.history.len();
                out
            };
            for b in batch {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = rv_rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)), if w.bookmarks => {
                    let rv = shared.state.lock().expect("state lock").history[..pos].last().map(|e| e.rv);
                    if let Some(rv) = rv {
                        let b = line("BOOKMARK", &json!({"apiVersion": w.info.api_version(), "kind": w.info.kind,
                            "metadata": {"resourceVersion": rv.to_string()}}));
                        if tx.send(b).await.is_err() { return; }
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Body::from_stream(futures::StreamExt::map(stream, Ok::<_, Infallible>))
}
