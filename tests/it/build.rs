//! `build --name NS/NAME`: what one Kustomization would apply, field by field of Flux's overlay
//! (flux-semantics.md §4), postBuild substitution (§5) and owner labels (§7). Each test is a
//! tiny fleet and the exact objects expected.

use serde_json::{Value, json};

use crate::util::*;

/// A fleet whose one Kustomization `flux-system/app` builds `./apps/app` with these extra spec
/// fields; add the files of `apps/app/` with [`Fleet::file`].
fn app(spec: &str) -> Fleet {
    Fleet::new().file(
        "clusters/c/app.yaml",
        &kustomization("app", "./apps/app", spec),
    )
}

fn build_app(fleet: &Fleet) -> Vec<Value> {
    fleet.build("flux-system/app", &[])
}

/// Objects ordered by kind and name (kustomize's output order is not what these tests are about).
fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    objects.sort_by_key(|o| (o["kind"].to_string(), o["metadata"]["name"].to_string()));
    objects
}

/// Owner labels as Flux sets them on `flux-system/app`'s objects.
const OWNER: &str = "
    kustomize.toolkit.fluxcd.io/name: app
    kustomize.toolkit.fluxcd.io/namespace: flux-system";

/// `expected` with `{owner}` replaced by the owner labels at the indentation of the marker.
fn expect(expected: &str) -> Vec<Value> {
    let text = dedent(expected);
    let mut out = String::new();
    for line in text.lines() {
        match line.find("{owner}") {
            Some(i) => {
                for l in dedent(OWNER).lines() {
                    out.push_str(&format!("{}{l}\n", " ".repeat(i)));
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    yaml_docs(&out)
}

const DEPLOY_WEB: &str = "
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      namespace: orig
    spec:
      selector:
        matchLabels:
          app: web
      template:
        metadata:
          labels:
            app: web
        spec:
          containers:
            - name: web
              image: nginx:1.0
    ";

// ---------------------------------------------------------------------------------------------
// Owner labels and the overlay fields

#[test]
fn every_object_carries_the_owner_labels() {
    let fleet = app("")
        .file(
            "apps/app/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team",
        )
        .file(
            "apps/app/cm.yaml",
            &config_map("team", "settings", &[("k", "v")]),
        )
        .file(
            "apps/app/svc.yaml",
            "
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: team
              labels:
                kustomize.toolkit.fluxcd.io/name: someone-else
            spec:
              ports: [{port: 80}]
            ",
        );
    let objects = build_app(&fleet);
    assert_eq!(objects.len(), 3, "{}", pretty(&objects));
    for o in &objects {
        assert_eq!(
            o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"], "app",
            "{o}"
        );
        assert_eq!(
            o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"], "flux-system",
            "{o}"
        );
    }
}

#[test]
fn target_namespace_overrides_every_namespace() {
    let fleet = app("targetNamespace: target")
        .file(
            "apps/app/kustomization.yaml",
            "namespace: from-file\nresources: [cm.yaml, deploy.yaml]",
        )
        .file(
            "apps/app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain",
        )
        .file("apps/app/deploy.yaml", DEPLOY_WEB);
    let objects = build_app(&fleet);
    assert_eq!(
        find(&objects, "ConfigMap", "plain")["metadata"]["namespace"],
        "target"
    );
    assert_eq!(
        find(&objects, "Deployment", "web")["metadata"]["namespace"],
        "target"
    );
}

#[test]
fn name_prefix_and_suffix_replace_the_kustomization_yaml_own() {
    let files = |f: Fleet| {
        f.file(
            "apps/app/kustomization.yaml",
            "namePrefix: own-\nnameSuffix: -own\nresources: [cm.yaml]",
        )
        .file("apps/app/cm.yaml", &config_map("default", "cm", &[]))
    };
    let both = files(app("namePrefix: flux-\nnameSuffix: -flux"));
    assert_eq!(build_app(&both)[0]["metadata"]["name"], "flux-cm-flux");
    // A field the spec leaves unset keeps the kustomization.yaml's value.
    let prefix_only = files(app("namePrefix: flux-"));
    assert_eq!(
        build_app(&prefix_only)[0]["metadata"]["name"],
        "flux-cm-own"
    );
}

#[test]
fn common_metadata_is_set_last_never_substituted_and_selectors_stay_untouched() {
    let fleet = app(r#"
        commonMetadata:
          labels:
            team: platform
            app: overridden
          annotations:
            note: "${greeting}"
        postBuild:
          substitute:
            greeting: hello
        "#)
    .file("apps/app/deploy.yaml", DEPLOY_WEB);
    assert_eq!(
        build_app(&fleet),
        expect(
            r#"
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: web
              namespace: orig
              labels:
                {owner}
                team: platform
                app: overridden
              annotations:
                note: "${greeting}"
            spec:
              selector:
                matchLabels:
                  app: web
              template:
                metadata:
                  labels:
                    app: web
                spec:
                  containers:
                    - name: web
                      image: nginx:1.0
            "#
        )
    );
}

#[test]
fn patches_strategic_merge_and_json6902_with_target_selectors() {
    // Targets name objects as they are before the Flux prefix and targetNamespace.
    let fleet = app(r#"
        targetNamespace: prod
        namePrefix: p-
        patches:
          - patch: |
              apiVersion: v1
              kind: ConfigMap
              metadata:
                name: front
                namespace: orig
              data:
                smp: "yes"
          - target:
              kind: ConfigMap
              labelSelector: tier=back
            patch: |
              - op: add
                path: /data/json6902
                value: by-label
          - target:
              version: v1
              kind: ConfigMap
              name: front
              namespace: orig
            patch: |
              - op: add
                path: /data/byname
                value: by-name
        "#)
    .file("apps/app/kustomization.yaml", "resources: [cms.yaml]")
    .file(
        "apps/app/cms.yaml",
        "
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: front
          namespace: orig
          labels: {tier: front}
        data: {a: '1'}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: back
          namespace: orig
          labels: {tier: back}
        data: {a: '1'}
        ",
    );
    assert_eq!(
        sorted(build_app(&fleet)),
        sorted(expect(
            "
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: p-front
              namespace: prod
              labels:
                tier: front
                {owner}
            data: {a: '1', smp: 'yes', byname: by-name}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: p-back
              namespace: prod
              labels:
                tier: back
                {owner}
            data: {a: '1', json6902: by-label}
            "
        ))
    );
}

#[test]
fn patches_are_appended_to_the_kustomization_yaml_own() {
    let fleet = app(r#"
        patches:
          - patch: |
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: cm, namespace: default}
              data: {flux: "yes"}
        "#)
    .file(
        "apps/app/kustomization.yaml",
        r#"
        resources: [cm.yaml]
        patches:
          - patch: |
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: cm, namespace: default}
              data: {own: "yes", flux: "no"}
        "#,
    )
    .file("apps/app/cm.yaml", &config_map("default", "cm", &[]));
    assert_eq!(
        build_app(&fleet)[0]["data"],
        json!({"own": "yes", "flux": "yes"})
    );
}

/// kustomize ignores a patch whose target selector matches no object (a strategic merge patch
/// without target that names a missing object is an error instead: see the `patch-matches-nothing`
/// fixture in tests/fixtures/bad). Flux inherits both behaviours.
#[test]
fn a_patch_target_that_matches_nothing_is_not_an_error() {
    let fleet = app(r#"
        patches:
          - target: {kind: ConfigMap, name: no-such-object}
            patch: |
              - op: add
                path: /data/x
                value: "1"
        "#)
    .file(
        "apps/app/cm.yaml",
        &config_map("default", "cm", &[("k", "v")]),
    );
    assert_eq!(build_app(&fleet)[0]["data"], json!({"k": "v"}));
}

#[test]
fn images_merge_by_name_and_new_tag_and_digest_are_replaced_together() {
    let fleet = app(r#"
        images:
          - name: nginx
            digest: sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
          - name: redis
            newTag: "7.2"
          - name: busybox
            newName: mirror/busybox
            newTag: "1.36"
        "#)
    .file(
        "apps/app/kustomization.yaml",
        r#"
        resources: [pod.yaml]
        images:
          - name: nginx
            newName: registry.example.com/nginx
            newTag: "1.25"
          - name: redis
            digest: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
        "#,
    )
    .file(
        "apps/app/pod.yaml",
        "
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: default}
        spec:
          containers:
            - {name: a, image: nginx:1.0}
            - {name: b, image: redis:6}
            - {name: c, image: busybox}
        ",
    );
    let objects = build_app(&fleet);
    let images: Vec<&str> = objects[0]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            // newName kept from the file; the Flux digest replaces the file's newTag.
            "registry.example.com/nginx@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            // the Flux newTag clears the file's digest.
            "redis:7.2",
            // appended.
            "mirror/busybox:1.36",
        ]
    );
}

const COMPONENT_A: &str = r#"
    apiVersion: kustomize.config.k8s.io/v1alpha1
    kind: Component
    labels:
      - pairs: {from-a: "yes"}
    "#;
const COMPONENT_B: &str = r#"
    apiVersion: kustomize.config.k8s.io/v1alpha1
    kind: Component
    labels:
      - pairs: {from-b: "yes"}
    "#;

#[test]
fn components_are_appended_to_the_kustomization_yaml_own() {
    let fleet = app("components: [../../components/b]")
        .file(
            "apps/app/kustomization.yaml",
            "resources: [cm.yaml]\ncomponents: [../../components/a]",
        )
        .file("apps/app/cm.yaml", &config_map("default", "cm", &[]))
        .file("components/a/kustomization.yaml", COMPONENT_A)
        .file("components/b/kustomization.yaml", COMPONENT_B);
    let labels = &build_app(&fleet)[0]["metadata"]["labels"];
    assert_eq!(labels["from-a"], "yes", "{labels}");
    assert_eq!(labels["from-b"], "yes", "{labels}");
}

#[test]
fn a_missing_component_is_dropped_with_ignore_missing_components() {
    let fleet = app(
        "components: [../../components/b, ../../components/gone]\nignoreMissingComponents: true",
    )
    .file("apps/app/cm.yaml", &config_map("default", "cm", &[]))
    .file("components/b/kustomization.yaml", COMPONENT_B);
    assert_eq!(build_app(&fleet)[0]["metadata"]["labels"]["from-b"], "yes");
}

#[test]
fn a_directory_without_kustomization_yaml_builds_like_flux_generates_it() {
    // Every .yaml/.yml file, recursively; a sub-directory with its own kustomization file is one
    // resource (only what it lists); other files are skipped.
    let fleet = app("")
        .file("apps/app/a.yaml", &config_map("default", "a", &[]))
        .file("apps/app/b.yml", &config_map("default", "b", &[]))
        .file("apps/app/notes.txt", "not yaml: [")
        .file("apps/app/plain/c.yaml", &config_map("default", "c", &[]))
        .file("apps/app/kust/kustomization.yaml", "resources: [d.yaml]")
        .file("apps/app/kust/d.yaml", &config_map("default", "d", &[]))
        .file(
            "apps/app/kust/unlisted.yaml",
            &config_map("default", "unlisted", &[]),
        );
    let mut names: Vec<String> = build_app(&fleet)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d"]);
}

// ---------------------------------------------------------------------------------------------
// postBuild substitution

/// A fleet with `flux-system/vars` (ConfigMap) and `flux-system/secret-vars` (Secret) applied by
/// a `config` Kustomization, and `app` depending on it with `spec`.
fn with_var_sources(spec: &str) -> Fleet {
    Fleet::new()
        .file(
            "clusters/c/config.yaml",
            &kustomization("config", "./config", ""),
        )
        .file(
            "clusters/c/app.yaml",
            &kustomization(
                "app",
                "./apps/app",
                &format!("dependsOn: [{{name: config}}]\n{}", dedent(spec)),
            ),
        )
        .file(
            "config/vars.yaml",
            &config_map(
                "flux-system",
                "vars",
                &[("a", "from-cm"), ("b", "from-cm"), ("c", "from-cm")],
            ),
        )
        .file(
            "config/secret.yaml",
            "
            apiVersion: v1
            kind: Secret
            metadata:
              name: secret-vars
              namespace: flux-system
            data:
              b: ZnJvbS1zZWNyZXQ=
              c: ZnJvbS1zZWNyZXQ=
            ",
        )
}

const SUBSTITUTE_FROM_BOTH: &str = "
    postBuild:
      substitute:
        c: inline
      substituteFrom:
        - kind: ConfigMap
          name: vars
        - kind: Secret
          name: secret-vars
    ";

#[test]
fn substitute_from_reads_config_maps_and_decoded_secrets_later_and_inline_win() {
    let fleet = with_var_sources(SUBSTITUTE_FROM_BOTH).file(
        "apps/app/out.yaml",
        &config_map(
            "default",
            "out",
            &[("a", "${a}"), ("b", "${b}"), ("c", "${c}")],
        ),
    );
    let out = fleet.build("flux-system/app", &["--show-secrets"]);
    assert_eq!(
        out[0]["data"],
        json!({"a": "from-cm", "b": "from-secret", "c": "inline"})
    );
}

#[test]
fn a_value_substituted_from_a_secret_is_masked_unless_show_secrets() {
    let fleet = with_var_sources(SUBSTITUTE_FROM_BOTH).file(
        "apps/app/out.yaml",
        &config_map(
            "default",
            "out",
            &[("a", "${a}"), ("b", "${b}"), ("c", "${c}")],
        ),
    );
    let out = fleet.build("flux-system/app", &[]);
    assert_eq!(
        out[0]["data"],
        json!({"a": "from-cm", "b": "***", "c": "inline"})
    );
    let text = fleet.build_text("flux-system/app", &[]);
    assert!(!text.contains("from-secret"), "{text}");
}

#[test]
fn the_plan_masks_variables_that_come_from_a_secret() {
    let fleet = with_var_sources(SUBSTITUTE_FROM_BOTH).file(
        "apps/app/out.yaml",
        &config_map(
            "default",
            "out",
            &[("a", "${a}"), ("b", "${b}"), ("c", "${c}")],
        ),
    );
    let plan = fleet.plan(&[]);
    assert_eq!(
        plan_entry(&plan, "flux-system/app")["variables"],
        json!({"a": "from-cm", "b": "***", "c": "inline"})
    );
    assert!(!pretty(&plan).contains("from-secret"));
}

#[test]
fn secret_data_is_masked_unless_show_secrets() {
    let secret = "
        apiVersion: v1
        kind: Secret
        metadata: {name: creds, namespace: default}
        data:
          password: c2VjcmV0
        stringData:
          token: plain-token
        ";
    let fleet = app("").file("apps/app/secret.yaml", secret);
    let masked = build_app(&fleet);
    assert_eq!(masked[0]["data"], json!({"password": "***"}));
    assert_eq!(masked[0]["stringData"], json!({"token": "***"}));
    let clear = fleet.build("flux-system/app", &["--show-secrets"]);
    assert_eq!(clear[0]["data"], json!({"password": "c2VjcmV0"}));
    assert_eq!(clear[0]["stringData"], json!({"token": "plain-token"}));
}

#[test]
fn an_optional_missing_source_is_tolerated_silently() {
    let fleet = app("
        postBuild:
          substitute: {a: inline}
          substituteFrom:
            - {kind: ConfigMap, name: not-there, optional: true}
            - {kind: Secret, name: not-there-either, optional: true}
        ")
    .file(
        "apps/app/out.yaml",
        &config_map("default", "out", &[("a", "${a}")]),
    );
    let out = fleet
        .cmd("build")
        .args(["--name", "flux-system/app"])
        .assert()
        .success()
        .get_output()
        .clone();
    let (stdout, stderr) = text(&out);
    assert_eq!(yaml_docs(&stdout)[0]["data"], json!({"a": "inline"}));
    assert!(
        !stderr.contains("not-there"),
        "no warning for an optional source:\n{stderr}"
    );
}

#[test]
fn every_variable_form_flux_supports() {
    let forms: &[(&str, &str, &str)] = &[
        ("plain", "${v}", "abcdef"),
        ("assign_unset", "${unset:=d}", "d"),
        ("default_unset", "${unset:-d}", "d"),
        ("assign_plain_unset", "${unset=d}", "d"),
        // All four default forms also use the default for an empty value (not bash semantics).
        ("default_empty", "${empty:-d}", "d"),
        ("assign_plain_empty", "${empty=d}", "d"),
        ("nested_default", "${unset:=${v}}", "abcdef"),
        // kustomize prints `"${#v}"` as a plain scalar, so after substitution it reads back as
        // the number 6 (Flux re-parses the substituted YAML, see substituted_text_is_read_back…).
        ("length", "${#v}", "6"),
        ("upper", "${v^^}", "ABCDEF"),
        ("upper_first", "${v^}", "Abcdef"),
        ("lower", "${up,,}", "abc"),
        ("lower_first", "${up,}", "aBC"),
        ("substring", "${v:1:2}", "bc"),
        ("offset", "${v:2}", "cdef"),
        ("replace_first", "${fruit/a/o}", "bonana"),
        ("replace_all", "${fruit//a/o}", "bonono"),
        ("trim_prefix", "${v#ab}", "cdef"),
        ("trim_suffix", "${v%ef}", "abcd"),
        ("escaped", "$${v}", "${v}"),
        ("bare_dollar_untouched", "$v", "$v"),
        ("embedded", "x-${v}-y", "x-abcdef-y"),
    ];
    let data: Vec<(&str, &str)> = forms.iter().map(|(k, input, _)| (*k, *input)).collect();
    let fleet = app(r#"
        postBuild:
          substitute:
            v: abcdef
            empty: ""
            up: ABC
            fruit: banana
        "#)
    .file("apps/app/out.yaml", &config_map("default", "out", &data));
    let out = build_app(&fleet);
    let got = &out[0]["data"];
    let mut wrong = Vec::new();
    for (k, input, expected) in forms {
        let want = if *k == "length" {
            json!(6)
        } else {
            json!(expected)
        };
        if got[*k] != want {
            wrong.push(format!("{input}: expected {expected:?}, got {}", got[*k]));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// fluxcd/pkg envsubst's parser (parse.go, parseFunc) has no case for a bare `-` after the
/// name, so `${v-d}` fails with "missing closing brace" in Flux, although its README and
/// flux-semantics.md §5 list it as supported. flux-order must fail the same way.
#[test]
fn the_bare_dash_default_form_is_a_parse_error_as_in_flux() {
    let fleet = app("postBuild:\n  substitute: {v: x}").file(
        "apps/app/out.yaml",
        &config_map("default", "out", &[("k", "${unset-d}")]),
    );
    let stderr = fleet.fails("build", &["--name", "flux-system/app"]);
    for needle in [
        "clusters/c/app.yaml",
        "flux-system/app",
        "ConfigMap/default/out",
        "missing closing brace",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn newlines_are_removed_from_values() {
    let fleet = app(r#"
        postBuild:
          substitute:
            multi: "line1\nline2\n"
        "#)
    .file(
        "apps/app/out.yaml",
        &config_map("default", "out", &[("m", "${multi}")]),
    );
    assert_eq!(build_app(&fleet)[0]["data"]["m"], "line1line2");
}

#[test]
fn the_substitute_disabled_label_or_annotation_opts_an_object_out() {
    let obj = |name: &str, meta: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n{meta}data:\n  v: \"${{v}}\"\n---\n"
        )
    };
    let manifests = [
        obj(
            "by-label",
            "  labels:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\n",
        ),
        obj(
            "by-annotation",
            "  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\n",
        ),
        // The value match is case-sensitive: `Disabled` does not opt out.
        obj(
            "wrong-case",
            "  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: Disabled\n",
        ),
        obj("plain", ""),
    ]
    .concat();
    let fleet = app("postBuild:\n  substitute: {v: set}").file("apps/app/cms.yaml", &manifests);
    let out = build_app(&fleet);
    assert_eq!(find(&out, "ConfigMap", "by-label")["data"]["v"], "${v}");
    assert_eq!(
        find(&out, "ConfigMap", "by-annotation")["data"]["v"],
        "${v}"
    );
    assert_eq!(find(&out, "ConfigMap", "wrong-case")["data"]["v"], "set");
    assert_eq!(find(&out, "ConfigMap", "plain")["data"]["v"], "set");
}

#[test]
fn with_variables_strategy_leaves_manifests_untouched_when_there_are_no_variables() {
    let data = [("escaped", "$${x}"), ("defaulted", "${y:=d}")];
    let no_vars = "
        postBuild:
          substituteFrom:
            - {kind: ConfigMap, name: absent, optional: true}
        ";
    let fleet = app(no_vars).file("apps/app/out.yaml", &config_map("default", "out", &data));
    assert_eq!(
        build_app(&fleet)[0]["data"],
        json!({"escaped": "$${x}", "defaulted": "${y:=d}"})
    );

    let always = format!("{}  substituteStrategy: Always\n", dedent(no_vars));
    let fleet = app(&always).file("apps/app/out.yaml", &config_map("default", "out", &data));
    assert_eq!(
        build_app(&fleet)[0]["data"],
        json!({"escaped": "${x}", "defaulted": "d"})
    );
}

#[test]
fn substituted_text_is_read_back_as_yaml() {
    // As in Flux, an unquoted value becomes typed after substitution.
    let fleet = app("postBuild:\n  substitute: {replicas: '3'}").file(
        "apps/app/deploy.yaml",
        "
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: default}
        spec:
          replicas: ${replicas}
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec: {containers: [{name: web, image: nginx}]}
        ",
    );
    assert_eq!(build_app(&fleet)[0]["spec"]["replicas"], 3);
}

#[test]
fn build_prints_child_kustomizations_and_an_unknown_name_fails() {
    let fleet = Fleet::new()
        .file(
            "clusters/c/parent.yaml",
            &kustomization("parent", "./children", ""),
        )
        .file(
            "children/child.yaml",
            &kustomization("child", "./apps/child", ""),
        )
        .file("apps/child/cm.yaml", &config_map("default", "cm", &[]));
    let out = fleet.build("flux-system/parent", &[]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["kind"], "Kustomization");
    assert_eq!(
        out[0]["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
        "parent"
    );

    let stderr = fleet.fails("build", &["--name", "flux-system/nope"]);
    assert!(stderr.contains("flux-system/nope"), "{stderr}");
}

/// Batched builds (several Kustomizations in one kustomize process) give exactly what separate
/// builds give: the same plan, and the same manifests for Kustomizations using substitution,
/// targetNamespace, patches, images and commonMetadata.
#[test]
fn batched_builds_equal_separate_builds() {
    let fleet = repo_root().join("examples/fleet/clusters/demo");
    let run = |extra: &[&str]| {
        let out = flux_order()
            .arg("plan")
            .arg(&fleet)
            .args(["-o", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&[]), run(&["--no-batch"]));
    for name in [
        "flux-system/backend",
        "flux-system/logging",
        "flux-system/frontend",
        "team-b/app-b",
        "flux-system/monitoring",
    ] {
        let build = |extra: &[&str]| {
            let out = flux_order()
                .arg("build")
                .arg(&fleet)
                .args(["--name", name, "--show-secrets"])
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let (batched, separate) = (build(&[]), build(&["--no-batch"]));
        assert!(!batched.is_empty());
        assert_eq!(batched, separate, "{name}");
        assert!(
            !batched.contains("flux-order.dev/build"),
            "{name}: the build label leaked"
        );
    }
}

/// Two Kustomizations that both define the same object cannot share one kustomize run (kustomize
/// refuses duplicate ids): the batch falls back to separate builds and both get the object.
#[test]
fn kustomizations_defining_the_same_object_still_build() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shared\n";
    let fleet = Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", ""))
        .file("clusters/c/b.yaml", &kustomization("b", "./apps/b", ""))
        .file("apps/a/ns.yaml", ns)
        .file("apps/b/ns.yaml", ns)
        .git();
    for name in ["flux-system/a", "flux-system/b"] {
        let objects = fleet.build(name, &[]);
        assert_eq!(objects.len(), 1, "{name}");
        assert_eq!(objects[0]["metadata"]["name"], "shared");
        assert_eq!(
            objects[0]["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
            name.split('/').nth(1).unwrap()
        );
    }
}

/// In one batch: two overlays of a shared base (their objects are told apart by a build label)
/// and a self-contained Kustomization with a generator (told apart by origin): each gets exactly
/// what a separate build gives it.
#[test]
fn batched_builds_attribute_shared_bases_and_generators() {
    let cm = |name: &str| config_map("default", name, &[("k", "v")]);
    let fleet = Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", "namePrefix: a-"))
        .file("clusters/c/b.yaml", &kustomization("b", "./apps/b", "namePrefix: b-"))
        .file("clusters/c/g.yaml", &kustomization("g", "./apps/g", ""))
        .file("apps/base/cm.yaml", &cm("shared"))
        .file("apps/base/kustomization.yaml", "resources: [cm.yaml]\n")
        .file("apps/a/kustomization.yaml", "resources: [../base, own.yaml]\n")
        .file("apps/a/own.yaml", &cm("only-a"))
        .file("apps/b/kustomization.yaml", "resources: [../base]\n")
        .file(
            "apps/g/kustomization.yaml",
            "resources: [sub]\nconfigMapGenerator:\n- name: gen\n  namespace: default\n  literals: [x=y]\n",
        )
        .file("apps/g/sub/kustomization.yaml", "resources: [cm.yaml]\n")
        .file("apps/g/sub/cm.yaml", &cm("in-sub"))
        .git();
    for name in ["flux-system/a", "flux-system/b", "flux-system/g"] {
        // One build job: all three Kustomizations go into one batch.
        let batched = fleet.build_text(name, &["--build-jobs", "1"]);
        assert_eq!(batched, fleet.build_text(name, &["--no-batch"]), "{name}");
        assert!(!batched.contains("flux-order.dev/build"), "{name}");
    }
    let names = |name: &str| -> Vec<String> {
        fleet
            .build(name, &[])
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let mut a = names("flux-system/a");
    a.sort();
    assert_eq!(a, vec!["a-only-a", "a-shared"]);
    assert_eq!(names("flux-system/b"), vec!["b-shared"]);
    let g = names("flux-system/g");
    assert_eq!(g.len(), 2, "{g:?}");
    assert!(
        g.iter().any(|n| n.starts_with("gen-")) && g.contains(&"in-sub".to_string()),
        "{g:?}"
    );
}
