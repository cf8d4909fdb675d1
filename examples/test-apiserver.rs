//! Standalone test API server: `cargo run --example test-apiserver -- --port 8080 --kubeconfig kc`.

fn main() -> anyhow::Result<()> {
    flux_order_test_apiserver::standalone_main()
}
