//! The request log: one record per HTTP request, with the Kubernetes request attributes parsed
//! from it and the status code answered.

use std::time::{Duration, SystemTime};

/// The Kubernetes verb of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET one object.
    Get,
    /// GET a collection.
    List,
    /// GET a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH other than apply.
    Patch,
    /// PATCH with `application/apply-patch+yaml`.
    Apply,
    /// DELETE one object.
    Delete,
    /// DELETE a collection.
    DeleteCollection,
    /// Discovery, version, openapi and other non-resource requests.
    NonResource,
}

impl Verb {
    /// Lowercase name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Apply => "apply",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::NonResource => "nonresource",
        }
    }

    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create
                | Verb::Update
                | Verb::Patch
                | Verb::Apply
                | Verb::Delete
                | Verb::DeleteCollection
        )
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct RequestLog {
    /// Sequence number (0-based, in arrival order).
    pub seq: u64,
    /// Time since the server started, at arrival.
    pub since_start: Duration,
    /// Wall-clock time at arrival.
    pub wall: SystemTime,
    /// How long the handler took (for watches: until the stream started).
    pub duration: Duration,
    /// HTTP method.
    pub method: String,
    /// Kubernetes verb.
    pub verb: Verb,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// API group (`` for core and non-resource requests).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural (empty for non-resource requests).
    pub resource: String,
    /// Subresource (`status`), if any.
    pub subresource: Option<String>,
    /// Kind, when the resource is known.
    pub kind: String,
    /// Namespace, if namespaced.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `force=true`.
    pub force: bool,
    /// Label selector, if any.
    pub label_selector: Option<String>,
    /// Content-Type of the request body.
    pub content_type: Option<String>,
    /// User-Agent.
    pub user_agent: Option<String>,
    /// HTTP status answered (0 for a dropped connection).
    pub status: u16,
    /// Whether an injected fault decided the answer.
    pub fault: bool,
}

impl RequestLog {
    /// One JSON object (a line of the standalone server's `--request-log`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq,
            "sinceStartMs": self.since_start.as_millis() as u64,
            "durationMs": self.duration.as_millis() as u64,
            "method": self.method,
            "verb": self.verb.as_str(),
            "path": self.path,
            "query": self.query,
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "subresource": self.subresource,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "fieldManager": self.field_manager,
            "dryRun": self.dry_run,
            "force": self.force,
            "labelSelector": self.label_selector,
            "contentType": self.content_type,
            "userAgent": self.user_agent,
            "status": self.status,
            "fault": self.fault,
        })
    }

    /// Successful (2xx) non-dry-run write.
    pub fn is_effective_write(&self) -> bool {
        self.verb.is_write() && !self.dry_run && (200..300).contains(&self.status)
    }
}
