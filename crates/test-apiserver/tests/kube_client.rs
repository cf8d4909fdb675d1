//! The real `kube` 5 client against the test API server: aggregated and legacy discovery,
//! server-side apply through `Api<DynamicObject>`, typed get, watcher-observed readiness, errors.

use std::time::Duration;

use flux_order_test_apiserver::{Fault, Matcher, ServerOptions, TestServer, Verb};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

async fn client(s: &TestServer) -> Client {
    let dir = std::env::temp_dir().join(format!(
        "fo-kube-client-{}-{}",
        std::process::id(),
        s.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    s.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn kube_discovery_apply_watch() {
    let s = TestServer::start_async(ServerOptions {
        default_ready_after: Duration::from_millis(50),
        ..ServerOptions::default()
    })
    .await;
    let c = client(&s).await;
    let info = c.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");

    let disc = Discovery::new(c.clone()).run_aggregated().await.unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (ar, caps) = disc
        .resolve_gvk(&gvk)
        .expect("deployments discovered (aggregated)");
    assert_eq!(caps.scope, Scope::Namespaced);
    let legacy = Discovery::new(c.clone()).run().await.unwrap();
    assert!(
        legacy
            .resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "ConfigMap"))
            .is_some()
    );

    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "k", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "k"}},
            "template": {"metadata": {"labels": {"app": "k"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .unwrap();
    let pp = PatchParams::apply("kustomize-controller").force();
    let dry = api
        .patch("k", &pp.clone().dry_run(), &Patch::Apply(&obj))
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "k");
    assert!(
        s.get("apps/v1", "Deployment", Some("default"), "k")
            .is_none()
    );

    // Watch for readiness via kube-runtime's watcher (list, then watch from the list's RV).
    let typed: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let mut stream = watcher(
        typed.clone(),
        watcher::Config::default().fields("metadata.name=k"),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let applied = api.patch("k", &pp, &Patch::Apply(&obj)).await.unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(d) = stream.next().await {
            let d = d.unwrap();
            let st = d.status.clone().unwrap_or_default();
            if st.available_replicas == Some(2) && st.observed_generation == Some(1) {
                return d;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("ready within timeout");
    assert_eq!(ready.spec.unwrap().replicas, Some(2));

    // Errors map to kube's Status helpers.
    let err = typed.get("missing").await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert!(s.is_not_found(), "{s:?}"),
        e => panic!("{e}"),
    }
    let mut other = obj.clone();
    other.data["spec"]["replicas"] = json!(5);
    let err = api
        .patch(
            "k",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert!(s.is_conflict(), "{s:?}"),
        e => panic!("{e}"),
    }

    // kube retries 503 by default.
    s.inject(Fault::status(Matcher::verb(Verb::Get).name_contains("k"), 503).first(1));
    assert_eq!(typed.get("k").await.unwrap().name_any(), "k");
    assert!(s.requests().iter().any(|r| r.status == 503));
}
