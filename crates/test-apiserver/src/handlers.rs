//! HTTP routing: parses Kubernetes paths into request attributes, logs every request, applies
//! injected faults, and dispatches to discovery, the verbs and watches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::discovery::{Catalog, ResourceInfo};
use crate::faults::FaultAction;
use crate::log::{RequestLog, Verb};
use crate::selector::Selector;
use crate::verbs::{self, ApiError, WriteParams};
use crate::{ConnHandle, Shared};

const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// A parsed resource path.
#[derive(Debug, Clone, Default)]
struct ResPath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_res_path(segs: &[&str]) -> Option<ResPath> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let mut p = ResPath {
        group: group.into(),
        version: version.into(),
        ..ResPath::default()
    };
    let rest: &[&str] = if rest[0] == "namespaces"
        && rest.len() >= 3
        && !matches!(rest[2], "status" | "finalize")
    {
        p.namespace = Some(rest[1].into());
        &rest[2..]
    } else {
        rest
    };
    p.plural = rest[0].into();
    p.name = rest.get(1).map(|s| s.to_string());
    p.sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return None;
    }
    Some(p)
}

fn json_response(code: u16, v: &Value) -> Response {
    let mut r = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        serde_json::to_vec(v).expect("json"),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.body())
}

fn q<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// The single entry point for every request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    req: Request,
) -> Response {
    let arrived = Instant::now();
    let wall = SystemTime::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let path = uri.path().to_string();
    let query: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let res = parse_res_path(&segs);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let watch_param = matches!(q(&query, "watch"), Some("true" | "1"));
    let verb = match (&res, &method) {
        (None, _) => Verb::NonResource,
        (Some(r), &Method::GET) if r.name.is_some() => Verb::Get,
        (Some(_), &Method::GET) if watch_param => Verb::Watch,
        (Some(_), &Method::GET) => Verb::List,
        (Some(_), &Method::POST) => Verb::Create,
        (Some(_), &Method::PUT) => Verb::Update,
        (Some(_), &Method::PATCH) => {
            if content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/apply-patch"))
            {
                Verb::Apply
            } else {
                Verb::Patch
            }
        }
        (Some(r), &Method::DELETE) if r.name.is_some() => Verb::Delete,
        (Some(_), &Method::DELETE) => Verb::DeleteCollection,
        _ => Verb::NonResource,
    };
    let catalog = shared.state.lock().expect("state lock").catalog();
    let info = res
        .as_ref()
        .and_then(|r| catalog.find(&r.group, &r.version, &r.plural).cloned());
    let seq = shared.seq.fetch_add(1, Ordering::SeqCst);
    let mut log = RequestLog {
        seq,
        since_start: arrived.saturating_duration_since(shared.start),
        wall,
        duration: Duration::ZERO,
        method: method.to_string(),
        verb,
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        group: res.as_ref().map(|r| r.group.clone()).unwrap_or_default(),
        version: res.as_ref().map(|r| r.version.clone()).unwrap_or_default(),
        resource: res.as_ref().map(|r| r.plural.clone()).unwrap_or_default(),
        subresource: res.as_ref().and_then(|r| r.sub.clone()),
        kind: info.as_ref().map(|i| i.kind.clone()).unwrap_or_default(),
        namespace: res.as_ref().and_then(|r| r.namespace.clone()),
        name: res.as_ref().and_then(|r| r.name.clone()),
        field_manager: q(&query, "fieldManager").map(str::to_string),
        dry_run: q(&query, "dryRun").is_some_and(|v| v == "All"),
        force: q(&query, "force") == Some("true"),
        label_selector: q(&query, "labelSelector").map(str::to_string),
        content_type: content_type.clone(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status: 0,
        fault: false,
    };
    // Namespace objects: /api/v1/namespaces/NAME is cluster-scoped with name NAME.
    if log.resource == "namespaces" && log.group.is_empty() && log.namespace.is_none() {
        log.namespace = None;
    }

    let actions = shared.faults.lock().expect("faults lock").check(&log);
    for a in actions {
        match a {
            FaultAction::Latency(d) => tokio::time::sleep(d).await,
            FaultAction::Drop => {
                conn.kill.store(true, Ordering::SeqCst);
                log.fault = true;
                log.status = 0;
                log.duration = arrived.elapsed();
                shared.log.lock().expect("log lock").push(log);
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            FaultAction::Status { code, retry_after } => {
                let reason = match code {
                    429 => "TooManyRequests",
                    500 => "InternalError",
                    503 => "ServiceUnavailable",
                    504 => "Timeout",
                    409 => "Conflict",
                    _ => "Unknown",
                };
                let msg = match code {
                    429 => "Too many requests, please try again later.".to_string(),
                    _ => format!("injected fault: HTTP {code}"),
                };
                let mut e = ApiError::new(code, reason, msg);
                let retry = retry_after.or(if code == 429 { Some(1) } else { None });
                if let Some(s) = retry {
                    e.details = Some(Box::new(json!({"retryAfterSeconds": s})));
                }
                let mut resp = error_response(&e);
                if let Some(s) = retry {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                log.fault = true;
                log.status = code;
                log.duration = arrived.elapsed();
                shared.log.lock().expect("log lock").push(log);
                return resp;
            }
        }
    }

    let body = match axum::body::to_bytes(req.into_body(), 256 << 20).await {
        Ok(b) => b,
        Err(_) => {
            let r = error_response(&ApiError::bad_request("could not read body"));
            log.status = 400;
            shared.log.lock().expect("log lock").push(log);
            return r;
        }
    };
    let body = if content_type
        .as_deref()
        .is_some_and(|c| c.contains("protobuf"))
        && !body.is_empty()
    {
        match crate::protobuf::decode(&body) {
            Ok(v) => axum::body::Bytes::from(serde_json::to_vec(&v).expect("json")),
            Err(m) => {
                let e = ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({m})"
                    ),
                );
                let r = error_response(&e);
                log.status = 415;
                log.duration = arrived.elapsed();
                shared.log.lock().expect("log lock").push(log);
                return r;
            }
        }
    } else {
        body
    };
    let resp = match (&res, &info) {
        (None, _) => non_resource(&shared, &catalog, &method, &segs, &headers),
        (Some(_), None) => error_response(&ApiError::resource_not_found()),
        (Some(r), Some(info)) => resource(&shared, r, info, verb, &query, &headers, &body, &log),
    };
    log.status = resp.status().as_u16();
    log.duration = arrived.elapsed();
    shared.log.lock().expect("log lock").push(log);
    resp
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').next().is_some_and(|first| {
                first.contains("as=APIGroupDiscoveryList")
                    && first.contains("v=v2")
                    && !first.contains("v2beta1")
            }) || a.contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
        })
}

fn non_resource(
    shared: &Shared,
    catalog: &Catalog,
    method: &Method,
    segs: &[&str],
    headers: &HeaderMap,
) -> Response {
    if method != Method::GET {
        return error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    }
    let _ = shared;
    match segs {
        ["version"] => json_response(
            200,
            &json!({"major": "1", "minor": "36", "emulationMajor": "1", "emulationMinor": "36",
            "minCompatibilityMajor": "1", "minCompatibilityMinor": "35",
            "gitVersion": "v1.36.3-flux-order-test",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.26", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        ["healthz"] | ["readyz"] | ["livez"] => (StatusCode::OK, "ok").into_response(),
        ["api"] | ["apis"] if wants_aggregated(headers) => {
            let mut r = json_response(200, &catalog.aggregated(segs[0] == "api"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(AGGREGATED_CT),
            );
            r
        }
        ["openapi", "v3"] => json_response(200, &catalog.openapi_v3_root()),
        ["openapi", "v3", "api", v] => match catalog.openapi_v3_gv("", v) {
            Some(d) => json_response(200, &d),
            None => error_response(
                &ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
                .details(json!({})),
            ),
        },
        ["openapi", "v3", "apis", g, v] => match catalog.openapi_v3_gv(g, v) {
            Some(d) => json_response(200, &d),
            None => error_response(
                &ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
                .details(json!({})),
            ),
        },
        ["api"] => json_response(200, &catalog.api_versions()),
        ["apis"] => json_response(200, &catalog.api_group_list()),
        ["api", "v1"] => json_response(200, &catalog.resource_list("", "v1")),
        ["apis", g] if catalog.has_group(g) => json_response(200, &catalog.api_group(g)),
        ["apis", g, v] if catalog.has_group_version(g, v) => {
            json_response(200, &catalog.resource_list(g, v))
        }
        _ => error_response(
            &ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .details(json!({})),
        ),
    }
}

fn manager(query: &[(String, String)], headers: &HeaderMap) -> String {
    if let Some(m) = q(query, "fieldManager") {
        return m.to_string();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Arc<Shared>,
    r: &ResPath,
    info: &ResourceInfo,
    verb: Verb,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    log: &RequestLog,
) -> Response {
    // Scope checks.
    if r.namespace.is_some() && !info.namespaced {
        return error_response(&ApiError::resource_not_found());
    }
    if let Some(s) = &r.sub {
        if s == "scale" && info.scale {
            return scale(shared, info, r, verb, query, headers, body, log);
        }
        let ok = (s == "status" && info.status) || (info.kind == "Namespace" && s == "finalize");
        if !ok {
            return error_response(&ApiError::resource_not_found());
        }
    }
    let ns = r.namespace.clone().unwrap_or_default();
    if info.namespaced && r.namespace.is_none() && !matches!(verb, Verb::List | Verb::Watch) {
        return error_response(&ApiError::resource_not_found());
    }
    let parse_body = || -> Result<Value, ApiError> {
        let text =
            std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
        serde_json::from_str(text)
            .or_else(|_| serde_saphyr::from_str::<Value>(text))
            .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
    };
    let p = WriteParams {
        info,
        ns: &ns,
        sub: r.sub.as_deref(),
        dry_run: log.dry_run,
        manager: manager(query, headers),
        force: log.force,
        opts: &shared.opts,
    };
    let labels = match Selector::parse(q(query, "labelSelector").unwrap_or(""), false) {
        Ok(s) => s,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let fields = match Selector::parse(q(query, "fieldSelector").unwrap_or(""), true) {
        Ok(s) => s,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let name = r.name.clone().unwrap_or_default();
    let result: Result<(Value, u16), ApiError> = match verb {
        Verb::Watch | Verb::List if list_options_invalid(query, verb).is_some() => {
            let causes = list_options_invalid(query, verb).unwrap_or_default();
            let parts: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
            let joined = if parts.len() == 1 {
                parts[0].clone()
            } else {
                format!("[{}]", parts.join(", "))
            };
            let causes: Vec<Value> = causes
                .iter()
                .map(|(f, m)| json!({"reason": "FieldValueForbidden", "message": m, "field": f}))
                .collect();
            Err(ApiError::new(
                422,
                "Invalid",
                format!("ListOptions.meta.k8s.io \"\" is invalid: {joined}"),
            )
            .details(json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes})))
        }
        Verb::Watch => {
            let rv = q(query, "resourceVersion").unwrap_or("");
            let from_rv = match rv {
                "" | "0" => None,
                s => match s.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        return error_response(&ApiError::bad_request(format!(
                            "invalid resource version: {s}"
                        )));
                    }
                },
            };
            let timeout = q(query, "timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(1800));
            let spec = crate::watch::WatchSpec {
                info: info.clone(),
                namespace: r.namespace.clone(),
                from_rv,
                labels,
                fields,
                timeout,
                bookmarks: q(query, "allowWatchBookmarks") == Some("true"),
                send_initial_events: q(query, "sendInitialEvents").map(|v| v == "true"),
            };
            let body = crate::watch::start(shared.clone(), spec);
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp.headers_mut().insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            return resp;
        }
        Verb::List => {
            let limit = match q(query, "limit").filter(|l| !l.is_empty()) {
                None => 0,
                // A limit of 0 or less lists everything, as on the real server.
                Some(l) => match l.parse::<i64>() {
                    Ok(n) => n.max(0) as u64,
                    Err(_) => {
                        return error_response(&ApiError::bad_request(format!(
                            "invalid limit: {l}"
                        )));
                    }
                },
            };
            let req = crate::paging::Request {
                namespace: r.namespace.as_deref(),
                limit,
                token: q(query, "continue").filter(|c| !c.is_empty()),
                resource_version: q(query, "resourceVersion"),
                filtered: !labels.is_empty() || !fields.is_empty(),
            };
            let st = shared.state.lock().expect("state lock");
            let page =
                crate::paging::list(&st, info, &req, |o| labels.matches(o) && fields.matches(o));
            drop(st);
            let page = match page {
                Ok(p) => p,
                Err(e) => return error_response(&e),
            };
            let rv = page.rv.to_string();
            if wants_table(headers) {
                let embed = crate::table::Embed::of(q(query, "includeObject"));
                return json_response(200, &crate::table::table(info, &page.items, &rv, embed));
            }
            let items: Vec<Value> = page
                .items
                .into_iter()
                .map(|o| verbs::list_item(o, info))
                .collect();
            let mut metadata = json!({"resourceVersion": rv});
            if let Some(c) = page.next {
                metadata["continue"] = json!(c);
            }
            if let Some(n) = page.remaining {
                metadata["remainingItemCount"] = json!(n);
            }
            Ok((
                json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                "metadata": metadata, "items": items}),
                200,
            ))
        }
        Verb::Get => {
            let st = shared.state.lock().expect("state lock");
            let got = verbs::get(&st, info, &ns, &name);
            let rv = st.rv.to_string();
            drop(st);
            match got {
                Ok(o) if wants_table(headers) => {
                    let embed = crate::table::Embed::of(q(query, "includeObject"));
                    return json_response(200, &crate::table::table(info, &[o], &rv, embed));
                }
                Ok(o) => Ok((o, 200)),
                Err(e) => Err(e),
            }
        }
        Verb::Create => parse_body().and_then(|b| {
            let mut st = shared.state.lock().expect("state lock");
            verbs::create(&mut st, &p, b)
        }),
        Verb::Update => parse_body().and_then(|b| {
            let mut st = shared.state.lock().expect("state lock");
            verbs::update(&mut st, &p, &name, b)
        }),
        Verb::Apply if q(query, "fieldManager").is_none() => Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )),
        Verb::Apply | Verb::Patch => {
            let ct = log.content_type.clone().unwrap_or_default();
            let mut st = shared.state.lock().expect("state lock");
            verbs::patch(&mut st, &p, &name, &ct, body)
        }
        Verb::Delete => {
            let opts = if body.is_empty() {
                json!({})
            } else {
                parse_body().unwrap_or(json!({}))
            };
            let mut p = p;
            if opts["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"))
            {
                p.dry_run = true;
            }
            let mut st = shared.state.lock().expect("state lock");
            verbs::delete(&mut st, &p, &name, &opts)
        }
        Verb::DeleteCollection => {
            let mut st = shared.state.lock().expect("state lock");
            let names: Vec<(String, String)> = st
                .list(info, r.namespace.as_deref())
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .map(|o| {
                    (
                        o["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        o["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            let mut items = vec![];
            for (ns, n) in names {
                let pp = WriteParams {
                    info,
                    ns: &ns,
                    sub: None,
                    dry_run: p.dry_run,
                    manager: p.manager.clone(),
                    force: false,
                    opts: p.opts,
                };
                let before = st.objects.get(&crate::store::key(info, &ns, &n)).cloned();
                if let (Some(o), Ok(_)) = (before, verbs::delete(&mut st, &pp, &n, &json!({}))) {
                    items.push(verbs::list_item(o, info));
                }
            }
            Ok((
                json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
                200,
            ))
        }
        Verb::NonResource => Err(ApiError::new(405, "MethodNotAllowed", "method not allowed")),
    };
    match result {
        Ok((v, code)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

/// `ValidateListOptions` of the real server (WatchList enabled, as in v1.36): the watch-list
/// parameters only go together, and never on a plain LIST. Returns (field, message) pairs.
fn list_options_invalid(query: &[(String, String)], verb: Verb) -> Option<Vec<(String, String)>> {
    let sie = q(query, "sendInitialEvents");
    let m = q(query, "resourceVersionMatch").unwrap_or("");
    let rv = q(query, "resourceVersion").unwrap_or("");
    let mut out = vec![];
    if verb == Verb::List {
        if !m.is_empty() && rv.is_empty() {
            out.push((
                "resourceVersionMatch".into(),
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
                    .into(),
            ));
        }
        if sie.is_some() {
            out.push((
                "sendInitialEvents".into(),
                "Forbidden: sendInitialEvents is forbidden for list".into(),
            ));
        }
    } else {
        if sie.is_some() && m != "NotOlderThan" {
            out.push((
                "resourceVersionMatch".into(),
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                    .into(),
            ));
        }
        if !m.is_empty() && sie.is_none() {
            out.push((
                "resourceVersionMatch".into(),
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into(),
            ));
        }
        if !m.is_empty() && m != "NotOlderThan" {
            out.push((
                "resourceVersionMatch".into(),
                format!("Unsupported value: \"{m}\": supported values: \"NotOlderThan\""),
            ));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn scale_of(obj: &Value) -> Value {
    let sel = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let m = &obj["metadata"];
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": sel}})
}

/// The `/scale` subresource of Deployments, StatefulSets and ReplicaSets.
#[allow(clippy::too_many_arguments)]
fn scale(
    shared: &Arc<Shared>,
    info: &ResourceInfo,
    r: &ResPath,
    verb: Verb,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    log: &RequestLog,
) -> Response {
    let ns = r.namespace.clone().unwrap_or_default();
    let name = r.name.clone().unwrap_or_default();
    let mut st = shared.state.lock().expect("state lock");
    let cur = match verbs::get(&st, info, &ns, &name) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let replicas = match verb {
        Verb::Get => return json_response(200, &scale_of(&cur)),
        Verb::Update | Verb::Patch | Verb::Apply => {
            let mut sc = scale_of(&cur);
            let doc: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "error decoding body: {e}"
                    )));
                }
            };
            let ct = log.content_type.as_deref().unwrap_or_default();
            if verb == Verb::Update {
                sc = doc;
            } else if ct.starts_with("application/json-patch") {
                if let Err(e) = crate::apply::json_patch(&mut sc, &doc) {
                    return error_response(&ApiError::new(422, "Invalid", e));
                }
            } else {
                crate::apply::merge_patch(&mut sc, &doc);
            }
            match sc["spec"]["replicas"].as_i64() {
                Some(n) if n >= 0 => n,
                _ => {
                    return error_response(&ApiError::invalid(
                        info,
                        &name,
                        vec![(
                            "spec.replicas".into(),
                            "FieldValueInvalid",
                            "Invalid value: must be greater than or equal to 0".into(),
                        )],
                    ));
                }
            }
        }
        _ => {
            return error_response(&ApiError::new(
                405,
                "MethodNotAllowed",
                "method not allowed",
            ));
        }
    };
    let p = WriteParams {
        info,
        ns: &ns,
        sub: None,
        dry_run: log.dry_run,
        manager: manager(query, headers),
        force: false,
        opts: &shared.opts,
    };
    let patch = json!({"spec": {"replicas": replicas}}).to_string();
    match verbs::patch(
        &mut st,
        &p,
        &name,
        "application/merge-patch+json",
        patch.as_bytes(),
    ) {
        Ok((o, _)) => json_response(200, &scale_of(&o)),
        Err(e) => error_response(&e),
    }
}
