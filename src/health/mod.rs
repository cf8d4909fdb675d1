//! Pure readiness rules: kstatus per kind and CEL health expressions; never
//! touches the network.
//!
//! [`kstatus`] reproduces the status computation Flux's kustomize-controller
//! runs on every object it waits for (fluxcd/cli-utils kstatus, with Flux's
//! own Job rule); [`cel_expr`] evaluates a Kustomization's
//! `spec.healthCheckExprs` and a dependency's `readyExpr`. Both take objects
//! as `serde_json::Value`s exactly as the API server returns them.

pub mod cel_expr;
pub mod kstatus;
