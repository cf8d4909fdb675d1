//! Integration tests: drive the real `kubectl-flux_order` binary on throw-away fleets, the example
//! fleet and the shared corpora. One test binary; one module per feature; helpers in `util`.

mod util;

mod apply;
mod build;
mod cli;
mod diff;
mod errors;
mod graph;
mod hardening;
mod health;
mod helm;
mod inventory;
mod plan;
mod retry;
mod sops;
mod sources;
mod tiers;
