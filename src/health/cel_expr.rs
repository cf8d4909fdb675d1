//! Evaluates CEL health expressions: a Kustomization's `healthCheckExprs`
//! and a dependency's `readyExpr`.
//!
//! This mirrors fluxcd/pkg `runtime/cel` (`status_reader.go`,
//! `status_evaluator.go`, `expression.go`) on top of the `cel` crate:
//!
//! - entries are keyed by GroupKind; an entry without `kind` covers its whole
//!   group and is the fallback when no entry names the kind; two entries for
//!   the same GroupKind are an error;
//! - Flux registers its Job reader ahead of the CEL reader, so `batch/Job`
//!   never reaches an expression: [`HealthExprs::matches`] says no for it and
//!   the caller falls back to [`kstatus`](super::kstatus), which has Flux's
//!   Job rule;
//! - the object's top-level fields (`apiVersion`, `metadata`, `spec`,
//!   `status`, ...) are the CEL variables, so a field the object lacks is an
//!   evaluation error (`status.conditions` on an object without `status`),
//!   exactly as in Flux, which leaves such an object unresolved until the
//!   timeout; guard with `has(...)` or the optional syntax (`status.?phase`);
//! - an integer `status.observedGeneration` different from an integer
//!   `metadata.generation` is InProgress without evaluating anything; then
//!   the first of `inProgress`, `failed`, `current` that is true decides, and
//!   if none is, the object is InProgress.
//!
//! The environment has the CEL standard library, optional types, and the
//! strings, encoders and sets extensions, as Flux enables. Unlike cel-go,
//! the `cel` crate has no type checker: expressions are only parsed up
//! front (Flux also only parses health expressions), and a `readyExpr` that
//! does not yield a bool is caught when evaluated ([`CelError::NotBool`]).

use super::kstatus::{Status, StatusResult};
use cel::common::types::{CelBool, LIST_TYPE};
use cel::common::value::CowVal;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Why an expression could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CelError {
    /// A `healthCheckExprs` list or an expression in it is invalid: a parse
    /// error, a missing `current`, or a duplicate GroupKind. Flux treats this
    /// as a terminal error.
    #[error("{0}")]
    Invalid(String),
    /// An expression failed to evaluate, e.g. it reads a field the object
    /// lacks.
    #[error("failed to evaluate the CEL expression '{expr}': {message}")]
    Evaluate {
        /// The expression.
        expr: String,
        /// What went wrong.
        message: String,
    },
    /// An expression evaluated to something other than a bool.
    #[error("failed to evaluate CEL expression as boolean: '{expr}' gave {got}")]
    NotBool {
        /// The expression.
        expr: String,
        /// The type of value it gave.
        got: String,
    },
}

/// One `spec.healthCheckExprs` entry of a Kustomization.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthExprSpec {
    /// API version of the objects it covers, e.g. `example.com/v1`; only its
    /// group counts.
    pub api_version: String,
    /// Kind of the objects it covers; none (or empty) covers the whole group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Expression true once the object is healthy (required).
    #[serde(default)]
    pub current: String,
    /// Expression true while the object is still progressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<String>,
    /// Expression true once the object has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// A parsed expression and its source.
struct Expr {
    source: String,
    program: Program,
}

impl Expr {
    fn parse(env: &Env, source: &str) -> Result<Self, String> {
        env.compile(source)
            .map(|program| Expr {
                source: source.to_owned(),
                program,
            })
            .map_err(|e| format!("failed to parse the CEL expression '{source}': {e}"))
    }

    fn eval_bool(&self, ctx: &Context<'_, '_>) -> Result<bool, CelError> {
        match self.program.execute(ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(CelError::NotBool {
                expr: self.source.clone(),
                got: other.type_of().to_string(),
            }),
            Err(e) => Err(CelError::Evaluate {
                expr: self.source.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// The expressions of one entry.
struct Evaluator {
    current: Expr,
    in_progress: Option<Expr>,
    failed: Option<Expr>,
}

impl Evaluator {
    fn new(env: &Env, spec: &HealthExprSpec) -> Result<Self, String> {
        if spec.current.is_empty() {
            return Err("expression Current not specified".to_owned());
        }
        let optional = |name: &str, source: &Option<String>| -> Result<Option<Expr>, String> {
            match source.as_deref() {
                None | Some("") => Ok(None),
                Some(source) => Expr::parse(env, source)
                    .map(Some)
                    .map_err(|e| format!("failed to parse the expression {name}: {e}")),
            }
        };
        Ok(Evaluator {
            current: Expr::parse(env, &spec.current)
                .map_err(|e| format!("failed to parse the expression Current: {e}"))?,
            in_progress: optional("InProgress", &spec.in_progress)?,
            failed: optional("Failed", &spec.failed)?,
        })
    }

    fn evaluate(&self, env: &Arc<Env>, obj: &Value) -> Result<StatusResult, CelError> {
        if let Some((generation, observed)) = generations(obj)
            && generation != observed
        {
            return Ok(StatusResult {
                status: Status::InProgress,
                message: format!(
                    "generation is {generation}, but latest observed generation is {observed}"
                ),
            });
        }
        let ctx = object_context(env, obj);
        let checks = [
            (self.in_progress.as_ref(), Status::InProgress, "inProgress"),
            (self.failed.as_ref(), Status::Failed, "failed"),
            (Some(&self.current), Status::Current, "current"),
        ];
        for (expr, status, name) in checks {
            let Some(expr) = expr else { continue };
            if expr.eval_bool(&ctx)? {
                return Ok(StatusResult {
                    status,
                    message: format!("{name} expression is true: {}", expr.source),
                });
            }
        }
        Ok(StatusResult {
            status: Status::InProgress,
            message: "no health expression is true yet".to_owned(),
        })
    }
}

/// `metadata.generation` and `status.observedGeneration`, when both are
/// integers.
fn generations(obj: &Value) -> Option<(i64, i64)> {
    let observed = obj.get("status")?.get("observedGeneration")?.as_i64()?;
    let generation = obj.get("metadata")?.get("generation")?.as_i64()?;
    Some((generation, observed))
}

/// A GroupKind: the group (empty for the core group) and the kind (empty
/// for a group-wide entry).
type GroupKind = (String, String);

/// The group of an `apiVersion`: `apps` for `apps/v1`, empty for `v1`.
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// A Kustomization's compiled `spec.healthCheckExprs`.
pub struct HealthExprs {
    env: Arc<Env>,
    evaluators: HashMap<GroupKind, Evaluator>,
}

impl fmt::Debug for HealthExprs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .evaluators
            .keys()
            .map(|(g, k)| format!("{k}.{g}"))
            .collect();
        keys.sort();
        f.debug_struct("HealthExprs")
            .field("group_kinds", &keys)
            .finish()
    }
}

impl HealthExprs {
    /// Parses every entry. Fails, naming the entry (`healthchecks[i]`) and
    /// expression, on a missing `current`, an expression that does not
    /// parse, or a second entry for the same GroupKind.
    pub fn compile(specs: &[HealthExprSpec]) -> Result<Self, CelError> {
        let env = Arc::new(environment());
        let mut evaluators = HashMap::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let group = group_of(&spec.api_version).to_owned();
            let kind = spec.kind.clone().unwrap_or_default();
            let key = (group, kind);
            if evaluators.contains_key(&key) {
                return Err(CelError::Invalid(format!(
                    "duplicate custom health check for GroupKind {} at healthchecks[{i}]",
                    group_kind_string(&key)
                )));
            }
            let evaluator = Evaluator::new(&env, spec).map_err(|e| {
                CelError::Invalid(format!(
                    "failed to create custom status evaluator for healthchecks[{i}]: {e}"
                ))
            })?;
            evaluators.insert(key, evaluator);
        }
        Ok(HealthExprs { env, evaluators })
    }

    /// Whether no entries were given.
    pub fn is_empty(&self) -> bool {
        self.evaluators.is_empty()
    }

    /// Whether an entry covers objects of this `apiVersion` and `kind`: one
    /// for the GroupKind, or one for the whole group. Always false for
    /// `batch/Job`, which Flux's Job reader handles before any expression.
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        self.evaluator_for(api_version, kind).is_some()
    }

    fn evaluator_for(&self, api_version: &str, kind: &str) -> Option<&Evaluator> {
        let group = group_of(api_version);
        if group == "batch" && kind == "Job" {
            return None;
        }
        self.evaluators
            .get(&(group.to_owned(), kind.to_owned()))
            .or_else(|| self.evaluators.get(&(group.to_owned(), String::new())))
    }

    /// The status of `obj` by its entry's expressions, or `None` when no
    /// entry [`matches`](Self::matches) it (then kstatus applies). An
    /// evaluation error is `Some(Err)`: Flux leaves such an object
    /// unresolved, so the wait goes on until the timeout.
    /// `api_version` and `kind` are those of the resource read or watched, never the object's
    /// own fields (LIST items carry none).
    pub fn evaluate(
        &self,
        api_version: &str,
        kind: &str,
        obj: &Value,
    ) -> Option<Result<StatusResult, CelError>> {
        let evaluator = self.evaluator_for(api_version, kind)?;
        Some(evaluator.evaluate(&self.env, obj))
    }
}

fn group_kind_string((group, kind): &GroupKind) -> String {
    if group.is_empty() {
        kind.clone()
    } else {
        format!("{kind}.{group}")
    }
}

/// A dependency's `readyExpr`, parsed once (before anything is written) and evaluated with
/// `self` (the dependent Kustomization) and `dep` (the dependency), both whole objects.
///
/// A parse error is [`CelError::Invalid`] and, like a non-bool result
/// ([`CelError::NotBool`]), is terminal in Flux (reason
/// `InvalidCELExpression`); an evaluation error is not. Flux type-checks
/// `readyExpr` up front, so there a variable other than `self` and `dep`
/// is also terminal; here it shows up only as a [`CelError::Evaluate`].
pub struct ReadyExpr {
    env: Arc<Env>,
    expr: Expr,
}

impl fmt::Debug for ReadyExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReadyExpr").field(&self.expr.source).finish()
    }
}

impl ReadyExpr {
    /// Parses `expr`.
    pub fn compile(expr: &str) -> Result<Self, CelError> {
        let env = Arc::new(environment());
        let expr = Expr::parse(&env, expr).map_err(CelError::Invalid)?;
        Ok(ReadyExpr { env, expr })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.expr.source
    }

    /// Evaluates it.
    pub fn eval(&self, self_obj: &Value, dep: &Value) -> Result<bool, CelError> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        ctx.add_variable_from_value("self", to_cel(self_obj));
        ctx.add_variable_from_value("dep", to_cel(dep));
        self.expr.eval_bool(&ctx)
    }
}

/// Parses and evaluates a `readyExpr` once (see [`ReadyExpr`]).
#[cfg(test)]
pub fn eval_ready_expr(expr: &str, self_obj: &Value, dep: &Value) -> Result<bool, CelError> {
    ReadyExpr::compile(expr)?.eval(self_obj, dep)
}

/// The CEL environment of Flux's expressions: standard library, optional
/// types, and the strings, encoders and sets extensions.
fn environment() -> Env {
    let mut env = Env::stdlib();
    // cel-go keeps the last of repeated map keys.
    env.set_error_on_duplicate_map_keys(false);
    // These register fixed, distinct overloads on a fresh environment: they
    // cannot conflict, and an error would only drop the extension.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::encoders);
    let _ = env.add_extension(sets_extension);
    env
}

/// A context whose variables are the top-level fields of `obj`.
fn object_context(env: &Arc<Env>, obj: &Value) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(Arc::clone(env));
    if let Value::Object(fields) = obj {
        for (name, value) in fields {
            ctx.add_variable_from_value(name.as_str(), to_cel(value));
        }
    }
    ctx
}

/// Converts JSON to a CEL value as Kubernetes' unstructured decoding types
/// it: integers are `int` (`uint` only beyond `int`'s range), other numbers
/// `double`.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => {
            let map: HashMap<Key, cel::Value> = fields
                .iter()
                .map(|(k, v)| (Key::from(k.as_str()), to_cel(v)))
                .collect();
            cel::Value::Map(Map::from(map))
        }
    }
}

// ---------------------------------------------------------------------------
// The sets extension (cel-go `ext.Sets()`), which the `cel` crate lacks.

fn sets_extension(env: &mut Env) -> Result<(), cel::DeclarationError> {
    let lists = || vec![LIST_TYPE, LIST_TYPE];
    env.add_overload(
        "sets.contains",
        "list_sets_contains_list",
        lists(),
        sets_contains,
    )?;
    env.add_overload(
        "sets.equivalent",
        "list_sets_equivalent_list",
        lists(),
        sets_equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "list_sets_intersects_list",
        lists(),
        sets_intersects,
    )?;
    Ok(())
}

/// The two list arguments of a sets function, as values.
fn two_lists(
    function: &str,
    args: &[CowVal<'_, '_>],
) -> Result<(Vec<cel::Value>, Vec<cel::Value>), ExecutionError> {
    let list = |i: usize| -> Result<Vec<cel::Value>, ExecutionError> {
        let arg = args
            .get(i)
            .ok_or_else(|| ExecutionError::invalid_argument_count(2, args.len()))?;
        match cel::Value::try_from(&**arg)? {
            cel::Value::List(items) => Ok(items.as_ref().clone()),
            other => Err(ExecutionError::function_error(
                function,
                format!("expected a list, got {}", other.type_of()),
            )),
        }
    };
    Ok((list(0)?, list(1)?))
}

fn contains_all(list: &[cel::Value], sub: &[cel::Value]) -> bool {
    sub.iter().all(|s| list.contains(s))
}

fn bool_val<'b, 'v>(b: bool) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::owned(CelBool::from(b)))
}

fn sets_contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (list, sub) = two_lists("sets.contains", &args)?;
    bool_val(contains_all(&list, &sub))
}

fn sets_equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (a, b) = two_lists("sets.equivalent", &args)?;
    bool_val(contains_all(&a, &b) && contains_all(&b, &a))
}

fn sets_intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (a, b) = two_lists("sets.intersects", &args)?;
    bool_val(b.iter().any(|x| a.contains(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const READY_CURRENT: &str =
        "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')";
    const READY_FAILED: &str =
        "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')";
    const GEN_IN_PROGRESS: &str =
        "has(status.observedGeneration) && metadata.generation != status.observedGeneration";

    fn spec(api_version: &str, kind: Option<&str>, current: &str) -> HealthExprSpec {
        HealthExprSpec {
            api_version: api_version.to_owned(),
            kind: kind.map(str::to_owned),
            current: current.to_owned(),
            in_progress: None,
            failed: None,
        }
    }

    fn data_spec(current: &str, in_progress: &str, failed: &str) -> HealthExprSpec {
        HealthExprSpec {
            in_progress: Some(in_progress.to_owned()),
            failed: Some(failed.to_owned()),
            ..spec("test.io/v1", Some("Thing"), current)
        }
    }

    fn thing(fields: Value) -> Value {
        let mut obj = json!({"apiVersion": "test.io/v1", "kind": "Thing"});
        if let (Value::Object(obj), Value::Object(fields)) = (&mut obj, fields) {
            obj.extend(fields);
        }
        obj
    }

    fn eval(spec: HealthExprSpec, obj: Value) -> Result<StatusResult, CelError> {
        HealthExprs::compile(&[spec])
            .unwrap()
            .evaluate(
                obj["apiVersion"].as_str().unwrap_or(""),
                obj["kind"].as_str().unwrap_or(""),
                &obj,
            )
            .unwrap()
    }

    fn eval_status(spec: HealthExprSpec, obj: Value) -> Status {
        eval(spec, obj).unwrap().status
    }

    #[test]
    fn deserializes_camel_case() {
        let specs: Vec<HealthExprSpec> = serde_json::from_value(json!([
            {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
             "inProgress": "status.conditions.exists(e, e.type == 'Issuing')",
             "failed": READY_FAILED, "current": READY_CURRENT},
            {"apiVersion": "bitnami.com/v1alpha1", "current": "true"}
        ]))
        .unwrap();
        assert_eq!(specs[0].kind.as_deref(), Some("Certificate"));
        assert_eq!(
            specs[0].in_progress.as_deref(),
            Some("status.conditions.exists(e, e.type == 'Issuing')")
        );
        assert_eq!(specs[1].kind, None);
        assert!(HealthExprs::compile(&specs).is_ok());
    }

    #[test]
    fn compile_errors_name_the_entry() {
        // Current is required.
        let err = HealthExprs::compile(&[spec("test.io/v1", Some("Thing"), "")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to create custom status evaluator for healthchecks[0]: expression Current not specified"
        );
        let ok = spec("test.io/v1", Some("Other"), "true");
        for (bad, field) in [
            (
                data_spec("data.", "data.inProgress", "data.failed"),
                "Current",
            ),
            (
                data_spec("data.current", "data.", "data.failed"),
                "InProgress",
            ),
            (
                data_spec("data.current", "data.inProgress", "data."),
                "Failed",
            ),
        ] {
            let err = HealthExprs::compile(&[ok.clone(), bad])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "failed to create custom status evaluator for healthchecks[1]: failed to parse the expression {field}: failed to parse the CEL expression 'data.'"
                )),
                "{err}"
            );
        }
        // Empty optional expressions are absent, as in Go.
        let mut s = spec("test.io/v1", None, "true");
        s.in_progress = Some(String::new());
        assert!(HealthExprs::compile(&[s]).is_ok());
    }

    #[test]
    fn duplicate_group_kind_is_an_error() {
        let err = HealthExprs::compile(&[
            spec("test.io/v1", Some("Thing"), "true"),
            spec("test.io/v2", Some("Thing"), "false"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            CelError::Invalid(
                "duplicate custom health check for GroupKind Thing.test.io at healthchecks[1]"
                    .into()
            )
        );
        let err = HealthExprs::compile(&[spec("v1", None, "true"), spec("v1", Some(""), "true")])
            .unwrap_err();
        assert!(err.to_string().contains("healthchecks[1]"), "{err}");
        // A kind entry and a group entry coexist.
        assert!(
            HealthExprs::compile(&[
                spec("test.io/v1", Some("Thing"), "true"),
                spec("test.io/v1", None, "true")
            ])
            .is_ok()
        );
    }

    #[test]
    fn matching_by_group_kind_with_group_fallback() {
        let exprs = HealthExprs::compile(&[
            spec("test.io/v1", Some("Test"), "true"),
            spec("bitnami.com/v1alpha1", None, "false"),
            spec("batch/v1", None, "true"),
            spec("apps/v1", Some("Deployment"), "true"),
        ])
        .unwrap();
        assert!(exprs.matches("test.io/v1", "Test"));
        assert!(exprs.matches("test.io/v2", "Test"));
        assert!(!exprs.matches("test.io/v1", "Unsupported"));
        assert!(exprs.matches("bitnami.com/v1alpha1", "SealedSecret"));
        assert!(exprs.matches("bitnami.com/v1alpha1", "AnotherKind"));
        assert!(exprs.matches("bitnami.com/v1", ""));
        assert!(!exprs.matches("other.com/v1", "AnyKind"));
        assert!(exprs.matches("apps/v1", "Deployment"));
        assert!(!exprs.matches("apps/v1", "StatefulSet"));
        // Flux's Job reader comes first.
        assert!(exprs.matches("batch/v1", "CronJob"));
        assert!(!exprs.matches("batch/v1", "Job"));
        let job = json!({"apiVersion": "batch/v1", "kind": "Job"});
        assert!(exprs.evaluate("batch/v1", "Job", &job).is_none());
        // Specific entry wins over the group one.
        let exprs = HealthExprs::compile(&[
            spec("test.io/v1", None, "false"),
            spec("test.io/v1", Some("Thing"), "true"),
        ])
        .unwrap();
        assert_eq!(eval_status_with(&exprs, thing(json!({}))), Status::Current);
        let other = json!({"apiVersion": "test.io/v1", "kind": "Other"});
        assert_eq!(eval_status_with(&exprs, other), Status::InProgress);
        // Core group
        let exprs =
            HealthExprs::compile(&[spec("v1", Some("ConfigMap"), "data.foo == 'bar'")]).unwrap();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"foo": "bar"}});
        assert_eq!(eval_status_with(&exprs, cm), Status::Current);
        assert!(!exprs.matches("v1", "Secret"));
        assert!(HealthExprs::compile(&[]).unwrap().is_empty());
    }

    fn eval_status_with(exprs: &HealthExprs, obj: Value) -> Status {
        exprs
            .evaluate(
                obj["apiVersion"].as_str().unwrap_or(""),
                obj["kind"].as_str().unwrap_or(""),
                &obj,
            )
            .unwrap()
            .unwrap()
            .status
    }

    #[test]
    fn evaluation_order() {
        let s = || data_spec("data.current", "data.inProgress", "data.failed");
        let data = |current: bool, in_progress: bool, failed: bool| {
            thing(
                json!({"data": {"current": current, "inProgress": in_progress, "failed": failed}}),
            )
        };
        assert_eq!(
            eval_status(s(), data(false, false, false)),
            Status::InProgress
        );
        assert_eq!(eval_status(s(), data(true, true, true)), Status::InProgress);
        assert_eq!(eval_status(s(), data(true, false, true)), Status::Failed);
        assert_eq!(eval_status(s(), data(true, false, false)), Status::Current);
        assert_eq!(
            eval(s(), data(true, false, false)).unwrap().message,
            "current expression is true: data.current"
        );
        assert_eq!(
            eval(s(), data(false, false, true)).unwrap().message,
            "failed expression is true: data.failed"
        );
    }

    #[test]
    fn evaluation_errors() {
        let obj = thing(json!({"data": {"current": true, "inProgress": false, "failed": false}}));
        for (s, bad) in [
            (
                data_spec("data.currentt", "data.inProgress", "data.failed"),
                "data.currentt",
            ),
            (
                data_spec("data.current", "data.inProgresss", "data.failed"),
                "data.inProgresss",
            ),
            (
                data_spec("data.current", "data.inProgress", "data.failedd"),
                "data.failedd",
            ),
        ] {
            let err = eval(s, obj.clone()).unwrap_err();
            match &err {
                CelError::Evaluate { expr, message } => {
                    assert_eq!(expr, bad);
                    assert!(message.to_lowercase().contains("no such key"), "{message}");
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(
                err.to_string()
                    .starts_with(&format!("failed to evaluate the CEL expression '{bad}': "))
            );
        }
        // A non-bool result is an error.
        let err = eval(
            spec("test.io/v1", Some("Thing"), "data.name"),
            thing(json!({"data": {"name": "x"}})),
        )
        .unwrap_err();
        assert!(matches!(err, CelError::NotBool { .. }), "{err:?}");
    }

    #[test]
    fn missing_status() {
        let full = || HealthExprSpec {
            in_progress: Some(GEN_IN_PROGRESS.into()),
            failed: Some(READY_FAILED.into()),
            ..spec("test.io/v1", Some("Thing"), READY_CURRENT)
        };
        let no_in_progress = || HealthExprSpec {
            failed: Some(READY_FAILED.into()),
            ..spec("test.io/v1", Some("Thing"), READY_CURRENT)
        };
        // Object without status: an error, whichever expression runs first.
        for s in [full(), no_in_progress()] {
            assert!(matches!(
                eval(s, thing(json!({}))),
                Err(CelError::Evaluate { .. })
            ));
        }
        // Status without conditions: no such key.
        for s in [full(), no_in_progress()] {
            match eval(
                s,
                thing(json!({"metadata": {"generation": 1}, "status": {}})),
            ) {
                Err(CelError::Evaluate { expr, message }) => {
                    assert_eq!(expr, READY_FAILED);
                    assert!(message.to_lowercase().contains("no such key"), "{message}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Empty conditions: filter(...).all(...) is true for Failed first.
        for s in [full(), no_in_progress()] {
            let obj = thing(json!({"metadata": {"generation": 1}, "status": {"conditions": []}}));
            assert_eq!(eval_status(s, obj), Status::Failed);
        }
        // Observed generation behind: InProgress without evaluating.
        for s in [full(), no_in_progress()] {
            let obj =
                thing(json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}));
            assert_eq!(eval_status(s, obj), Status::InProgress);
        }
    }

    #[test]
    fn non_integer_generations_are_left_to_the_expressions() {
        let obj =
            thing(json!({"metadata": {"generation": 2}, "status": {"observedGeneration": "2"}}));
        assert_eq!(
            eval_status(
                spec(
                    "test.io/v1",
                    Some("Thing"),
                    "status.observedGeneration == '2'"
                ),
                obj
            ),
            Status::Current
        );
        let obj =
            thing(json!({"metadata": {"generation": "2"}, "status": {"observedGeneration": 2}}));
        assert_eq!(
            eval_status(
                spec("test.io/v1", Some("Thing"), "metadata.generation == '2'"),
                obj
            ),
            Status::Current
        );
        // Equal integer generations go on to the expressions.
        let obj =
            thing(json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 3}}));
        assert_eq!(
            eval_status(
                spec(
                    "test.io/v1",
                    Some("Thing"),
                    "status.observedGeneration == metadata.generation"
                ),
                obj
            ),
            Status::Current
        );
    }

    #[test]
    fn realistic_expressions() {
        // cert-manager Certificate, after the Flux CEL cheatsheet
        let cert = HealthExprSpec {
            in_progress: Some("status.conditions.exists(e, e.type == 'Issuing' && e.status == 'True')".into()),
            failed: Some("status.conditions.filter(e, e.type == 'Ready').all(e, e.observedGeneration == metadata.generation && e.status == 'False')".into()),
            ..spec("cert-manager.io/v1", Some("Certificate"), "status.conditions.filter(e, e.type == 'Ready').all(e, e.observedGeneration == metadata.generation && e.status == 'True')")
        };
        let certificate = |conds: Value| {
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": "c", "generation": 2}, "status": {"conditions": conds}})
        };
        let exprs = HealthExprs::compile(&[cert]).unwrap();
        let ready =
            certificate(json!([{"type": "Ready", "status": "True", "observedGeneration": 2}]));
        assert_eq!(eval_status_with(&exprs, ready), Status::Current);
        let issuing = certificate(json!([
            {"type": "Ready", "status": "False", "observedGeneration": 2},
            {"type": "Issuing", "status": "True", "observedGeneration": 2}]));
        assert_eq!(eval_status_with(&exprs, issuing), Status::InProgress);
        let failed = certificate(json!([
            {"type": "Ready", "status": "False", "observedGeneration": 2},
            {"type": "Issuing", "status": "False", "observedGeneration": 2}]));
        assert_eq!(eval_status_with(&exprs, failed), Status::Failed);
        let stale =
            certificate(json!([{"type": "Ready", "status": "True", "observedGeneration": 1}]));
        // Ready for an older generation: neither failed nor current.
        assert_eq!(eval_status_with(&exprs, stale), Status::InProgress);

        // Flux docs: SealedSecret, group-wide
        let exprs = HealthExprs::compile(&[HealthExprSpec {
            failed: Some(
                "status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'False')"
                    .into(),
            ),
            ..spec(
                "bitnami.com/v1alpha1",
                None,
                "status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'True')",
            )
        }])
        .unwrap();
        let sealed = json!({"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Synced", "status": "True"}]}});
        assert_eq!(eval_status_with(&exprs, sealed), Status::Current);

        // Optional syntax guards a missing status.
        let s = spec(
            "test.io/v1",
            Some("Thing"),
            "status.?phase.orValue('') == 'Ready'",
        );
        assert!(
            matches!(eval(s.clone(), thing(json!({"status": {}}))), Ok(r) if r.status == Status::InProgress)
        );
        assert_eq!(
            eval_status(s, thing(json!({"status": {"phase": "Ready"}}))),
            Status::Current
        );
        let s = spec(
            "test.io/v1",
            Some("Thing"),
            "has(status.phase) && status.phase == 'Ready'",
        );
        assert_eq!(
            eval_status(s, thing(json!({"status": {}}))),
            Status::InProgress
        );

        // Numbers: ints compare with ints and doubles.
        let s = spec(
            "test.io/v1",
            Some("Thing"),
            "status.readyReplicas >= spec.replicas && status.ratio > 0.5 && status.readyReplicas == 3.0",
        );
        let obj =
            thing(json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 3, "ratio": 0.75}}));
        assert_eq!(eval_status(s, obj), Status::Current);

        // Strings and sets extensions.
        let s = spec(
            "test.io/v1",
            Some("Thing"),
            "status.message.lowerAscii().startsWith('ready') && sets.contains(status.zones, ['a']) && !sets.intersects(status.zones, ['z'])",
        );
        let obj = thing(json!({"status": {"message": "READY now", "zones": ["a", "b"]}}));
        assert_eq!(eval_status(s, obj), Status::Current);
        let s = spec(
            "test.io/v1",
            Some("Thing"),
            "sets.equivalent([1, 2, 2], [2, 1]) && base64.decode('aGk=') == b'hi'",
        );
        assert_eq!(eval_status(s, thing(json!({}))), Status::Current);
    }

    #[test]
    fn ready_expr() {
        let me = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system", "generation": 2,
                         "annotations": {"app/version": "v1.2.3"}},
            "spec": {"path": "./apps"}});
        let dep = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "infra", "namespace": "flux-system", "generation": 5,
                         "annotations": {"app/version": "v1.2.3"}},
            "status": {"observedGeneration": 5, "lastAppliedRevision": "main@sha1:abc",
                "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}]}});
        let expr = "self.metadata.annotations['app/version'] == dep.metadata.annotations['app/version'] && \
                    dep.status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True') && \
                    dep.metadata.generation == dep.status.observedGeneration";
        assert_eq!(eval_ready_expr(expr, &me, &dep), Ok(true));
        assert_eq!(
            eval_ready_expr("dep.metadata.name == 'other'", &me, &dep),
            Ok(false)
        );
        assert!(matches!(
            eval_ready_expr("dep.", &me, &dep),
            Err(CelError::Invalid(_))
        ));
        assert!(matches!(
            eval_ready_expr("dep.metadata.name", &me, &dep),
            Err(CelError::NotBool { .. })
        ));
        assert!(matches!(
            eval_ready_expr("dep.status.nope == 1", &me, &dep),
            Err(CelError::Evaluate { .. })
        ));
        assert!(matches!(
            eval_ready_expr("other == 1", &me, &dep),
            Err(CelError::Evaluate { .. })
        ));
    }

    #[test]
    fn health_exprs_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<HealthExprs>();
        assert_send_sync::<ReadyExpr>();
        assert_send_sync::<CelError>();
    }
}
