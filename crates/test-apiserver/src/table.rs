//! `kubectl get` tables (`Accept: ...;as=Table;g=meta.k8s.io`): a Name/Age table with a few
//! kind-specific columns, like the real server's printers, each row carrying the object as
//! `includeObject` asks (`Metadata` by default, `Object` for `--sort-by`, `None`).

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::discovery::ResourceInfo;

fn parse_ts(s: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SSZ
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// What each row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Embed {
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object (kubectl asks for it with `--sort-by`).
    Object,
    /// Nothing.
    None,
}

impl Embed {
    /// From the `includeObject` query parameter.
    pub(crate) fn of(param: Option<&str>) -> Embed {
        match param {
            Some("Object") => Embed::Object,
            Some("None") => Embed::None,
            _ => Embed::Metadata,
        }
    }
}

/// Human age like kubectl: `5s`, `3m`, `2h`, `4d`.
fn age(obj: &Value) -> String {
    since(obj["metadata"]["creationTimestamp"].as_str())
}

/// Human time since an RFC 3339 timestamp, like kubectl.
fn since(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(parse_ts) else {
        return "<unknown>".into();
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t).max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 3600 * 2 {
        format!("{}m", s / 60)
    } else if s < 86400 * 2 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

fn col(name: &str, ty: &str) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" {"name"} else {""},
           "description": name, "priority": 0})
}

type CellFn = Box<dyn Fn(&Value) -> Vec<Value>>;

/// Render objects as a meta.k8s.io/v1 Table.
pub(crate) fn table(info: &ResourceInfo, items: &[Value], rv: &str, embed: Embed) -> Value {
    let n = |o: &Value, p: &str| -> i64 { o["status"][p].as_i64().unwrap_or(0) };
    let (cols, cells): (Vec<Value>, CellFn) = match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment") => (
            vec![
                col("Name", "string"),
                col("Ready", "string"),
                col("Up-to-date", "string"),
                col("Available", "string"),
                col("Age", "string"),
            ],
            Box::new(move |o: &Value| {
                let r = o["spec"]["replicas"].as_i64().unwrap_or(1);
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!("{}/{}", n(o, "readyReplicas"), r)),
                    json!(n(o, "updatedReplicas")),
                    json!(n(o, "availableReplicas")),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "Pod") => (
            vec![
                col("Name", "string"),
                col("Ready", "string"),
                col("Status", "string"),
                col("Restarts", "string"),
                col("Age", "string"),
            ],
            Box::new(|o: &Value| {
                let cs = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let total = o["spec"]["containers"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0);
                let ready = cs.iter().filter(|c| c["ready"] == json!(true)).count();
                let waiting = cs
                    .iter()
                    .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string));
                let status = waiting.unwrap_or_else(|| {
                    o["status"]["phase"]
                        .as_str()
                        .unwrap_or("Pending")
                        .to_string()
                });
                let restarts: i64 = cs
                    .iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum();
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!("{ready}/{total}")),
                    json!(status),
                    json!(restarts),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "Namespace") => (
            vec![
                col("Name", "string"),
                col("Status", "string"),
                col("Age", "string"),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o["status"]["phase"].clone(),
                    json!(age(o)),
                ]
            }),
        ),
        // The real server's event printer (kubectl get events in one namespace).
        ("", "Event") => (
            vec![
                col("Last Seen", "string"),
                col("Type", "string"),
                col("Reason", "string"),
                col("Object", "string"),
                col("Message", "string"),
            ],
            Box::new(|o: &Value| {
                let last = o["lastTimestamp"]
                    .as_str()
                    .or_else(|| o["eventTime"].as_str());
                let io = &o["involvedObject"];
                vec![
                    json!(since(last)),
                    o["type"].clone(),
                    o["reason"].clone(),
                    json!(format!(
                        "{}/{}",
                        io["kind"].as_str().unwrap_or("").to_lowercase(),
                        io["name"].as_str().unwrap_or("")
                    )),
                    json!(o["message"].as_str().unwrap_or("").trim()),
                ]
            }),
        ),
        _ => (
            vec![col("Name", "string"), col("Age", "string")],
            Box::new(|o: &Value| vec![o["metadata"]["name"].clone(), json!(age(o))]),
        ),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| match embed {
            Embed::Metadata => {
                json!({"cells": cells(o), "object": {"kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
            }
            Embed::Object => json!({"cells": cells(o), "object": o}),
            Embed::None => json!({"cells": cells(o)}),
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
           "columnDefinitions": cols, "rows": rows})
}
