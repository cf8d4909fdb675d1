//! Unit-level retries: when a failed Kustomization is tried again, as kustomize-controller requeues
//! it after `spec.retryInterval`, but with waits that start at a second and double, never beyond
//! `retryInterval` (default `interval`), so a transient problem costs seconds. The run's budget is
//! `--retry-for`; failures that cannot heal by waiting (an invalid object, an immutable field
//! without force, a namespaced object without namespace) are not retried. Pure: the scheduler
//! (`execute::run`) does the waiting. Request-level retries of single API calls are another
//! matter, handled in `cluster.rs`.

use std::time::Duration;

use crate::cluster::ClusterError;
use crate::model::KustomizationSpec;

/// The first wait before a retry.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// No wait is shorter than this, whatever `retryInterval` says (no busy loop).
const MIN_DELAY: Duration = Duration::from_millis(100);

/// The wait before the attempt after `failed` failed attempts (1 → 1s, 2 → 2s, 4s, …), capped at
/// `spec.retryInterval`, else `spec.interval`.
pub fn delay(spec: &KustomizationSpec, failed: u32) -> Duration {
    let cap = spec
        .retry_interval
        .as_ref()
        .map(|d| d.value())
        .unwrap_or_else(|| spec.interval.value());
    let doubled = FIRST_DELAY.saturating_mul(1u32 << failed.saturating_sub(1).min(20));
    doubled.min(cap).max(MIN_DELAY)
}

/// Whether a retry that starts `delay` from now still fits the run's budget, `elapsed` into it.
pub fn within_budget(elapsed: Duration, delay: Duration, budget: Duration) -> bool {
    !budget.is_zero() && elapsed + delay <= budget
}

/// Why an API error cannot heal by waiting, if it cannot: the server found the object invalid
/// (422: a bad value, an immutable field changed without force), or a namespaced object has no
/// namespace. Anything else — a kind not served yet, a webhook not answering, a conflict, a
/// missing namespace another branch creates, RBAC being set up — may heal.
pub fn permanent(e: &ClusterError) -> Option<&'static str> {
    match e {
        ClusterError::Api { code: 422, .. } => {
            Some("the API server rejected the object as invalid")
        }
        ClusterError::NoNamespace { .. } => Some("a namespaced object has no namespace"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GoDuration;

    fn spec(interval: &str, retry: Option<&str>) -> KustomizationSpec {
        let mut s: KustomizationSpec = serde_json::from_value(serde_json::json!({
            "interval": interval,
            "sourceRef": {"kind": "GitRepository", "name": "x"},
            "prune": false
        }))
        .expect("spec");
        s.retry_interval = retry.map(|r| GoDuration::parse(r).expect("duration"));
        s
    }

    #[test]
    fn waits_double_from_a_second_up_to_the_retry_interval() {
        let s = spec("10m", Some("5s"));
        let waits: Vec<u64> = (1..=5).map(|n| delay(&s, n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn the_interval_caps_without_a_retry_interval() {
        let s = spec("3s", None);
        assert_eq!(delay(&s, 1), Duration::from_secs(1));
        assert_eq!(delay(&s, 3), Duration::from_secs(3));
        assert_eq!(delay(&s, 40), Duration::from_secs(3));
    }

    #[test]
    fn the_budget_bounds_when_a_retry_may_start() {
        let b = Duration::from_secs(10);
        assert!(within_budget(
            Duration::from_secs(8),
            Duration::from_secs(2),
            b
        ));
        assert!(!within_budget(
            Duration::from_secs(9),
            Duration::from_secs(2),
            b
        ));
        assert!(!within_budget(Duration::ZERO, FIRST_DELAY, Duration::ZERO));
    }

    #[test]
    fn invalid_objects_are_permanent_and_unknown_kinds_are_not() {
        let api = |code| ClusterError::Api {
            subject: "ConfigMap/a/b".into(),
            code,
            reason: "x".into(),
            message: "m".into(),
        };
        assert!(permanent(&api(422)).is_some());
        for code in [403, 404, 409, 500] {
            assert!(permanent(&api(code)).is_none(), "{code}");
        }
        assert!(
            permanent(&ClusterError::UnknownKind {
                subject: "Widget/a/b".into(),
                api_version: "example.com/v1".into(),
                kind: "Widget".into(),
            })
            .is_none()
        );
    }
}
