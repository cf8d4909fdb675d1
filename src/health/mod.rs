//! Health: pure readiness rules ([`kstatus`], [`cel_expr`]), the watchers that feed them
//! ([`watch`], network-facing), one-shot reads of many objects by LIST ([`live`], for `status`)
//! and the gate the executor waits on ([`gate`]).
//!
//! [`kstatus`] reproduces the status computation Flux's kustomize-controller
//! runs on every object it waits for (fluxcd/cli-utils kstatus, with Flux's
//! own Job rule); [`cel_expr`] evaluates a Kustomization's
//! `spec.healthCheckExprs` and a dependency's `readyExpr`. Both take objects
//! as `serde_json::Value`s exactly as the API server returns them.

// `eval_ready_expr` (dependsOn readyExpr) has no caller yet: see README "Not yet".
#[allow(dead_code)]
pub mod cel_expr;
pub mod gate;
pub mod kstatus;
pub mod live;
pub mod watch;
