//! SOPS decryption as kustomize-controller does it, on the test vectors the real `sops` CLI made
//! (tests/fixtures/sops): keys from `--age-key-file`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY` and
//! `spec.decryption.secretRef` (a Secret of the fleet); tampered files, foreign keys and PGP are
//! clear errors naming file and Kustomization, and only that Kustomization fails.

use crate::util::*;

fn fixture(f: &str) -> String {
    std::fs::read_to_string(fixtures(&format!("sops/{f}"))).expect("fixture")
}

fn key_file() -> String {
    fixtures("sops/test.agekey").display().to_string()
}

/// `secrets` (spec.decryption with a secretRef) holds `secret_file`; `plain` has
/// spec.decryption and nothing encrypted.
fn sops_fleet(secret_file: &str) -> Fleet {
    let dec = "decryption:\n  provider: sops\n  secretRef:\n    name: sops-age";
    Fleet::new()
        .file(
            "clusters/c/secrets.yaml",
            &kustomization("secrets", "./apps/secrets", dec),
        )
        .file(
            "clusters/c/plain.yaml",
            &kustomization("plain", "./apps/plain", "decryption:\n  provider: sops"),
        )
        .file("apps/secrets/secret.yaml", &fixture(secret_file))
        .file(
            "apps/plain/cm.yaml",
            &config_map("app", "plain", &[("k", "v")]),
        )
}

fn run(fleet: &Fleet, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = fleet.cmd(sub);
    cmd.env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from_output(&cmd.args(args).output().expect("runs"))
}

#[test]
fn without_a_key_only_the_encrypted_kustomization_fails_naming_file_and_object() {
    let f = sops_fleet("secret.enc.yaml");
    let r = run(&f, "plan", &[], &[]);
    r.expect_code(4);
    assert!(
        r.stderr.contains("clusters/c/secrets.yaml: Kustomization flux-system/secrets: decryption failed for 'Secret/app/db-credentials' (from secret.yaml): SOPS: cannot decrypt the data key: no age key was given"),
        "{r}"
    );
    assert!(r.stdout.contains("flux-system/secrets  [FAILED"), "{r}");
    assert!(!r.stdout.contains("flux-system/plain  [FAILED"), "{r}");
}

#[test]
fn age_keys_from_a_flag_the_environment_or_the_fleet_decrypt_and_values_stay_masked() {
    let f = sops_fleet("secret.enc.yaml");
    let key = fixture("test.agekey");
    let keys_secret = keys_secret();
    let with_fleet_secret = sops_fleet("secret.enc.yaml")
        .file(
            "clusters/c/keys.yaml",
            &kustomization("keys", "./apps/keys", ""),
        )
        .file("apps/keys/secret.yaml", &keys_secret);
    let kf = key_file();
    for (fleet, args, env) in [
        (&f, vec!["--age-key-file", kf.as_str()], vec![]),
        (&f, vec![], vec![("SOPS_AGE_KEY_FILE", kf.as_str())]),
        (&f, vec![], vec![("SOPS_AGE_KEY", key.as_str())]),
        (&with_fleet_secret, vec![], vec![]),
    ] {
        let r = run(fleet, "plan", &args, &env);
        r.expect_code(0);
        let mut build_args = vec!["--name", "flux-system/secrets"];
        build_args.extend(&args);
        let r = run(fleet, "build", &build_args, &env);
        r.expect_code(0);
        assert!(
            !r.stdout.contains("s3cr3t-Pa55") && !r.stdout.contains("ENC["),
            "{r}"
        );
        assert!(!r.stdout.contains("sops:"), "{r}");
        build_args.push("--show-secrets");
        let r = run(fleet, "build", &build_args, &env);
        let objs = yaml_docs(&r.stdout);
        let s = find(&objs, "Secret", "db-credentials");
        assert_eq!(s["stringData"]["password"], "s3cr3t-Pa55", "{r}");
        assert_eq!(s["data"]["token"], "dG9rZW4tdmFsdWU=", "{r}");
        assert_eq!(
            s["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
            "secrets"
        );
    }
}

#[test]
fn tampered_files_foreign_keys_and_pgp_are_clear_errors() {
    let kf = key_file();
    let other = fixtures("sops/other.agekey").display().to_string();
    for (file, key, want) in [
        (
            "secret.tampered-mac.enc.yaml",
            kf.as_str(),
            "SOPS: MAC mismatch",
        ),
        (
            "secret.tampered-value.enc.yaml",
            kf.as_str(),
            "SOPS: the value at 'stringData:username' does not decrypt",
        ),
        (
            "secret.pgp.enc.yaml",
            kf.as_str(),
            "SOPS: encrypted for pgp only",
        ),
        (
            "secret.enc.yaml",
            other.as_str(),
            "SOPS: cannot decrypt the data key: none of the age keys from --age-key-file",
        ),
    ] {
        let f = sops_fleet(file);
        let r = run(&f, "plan", &["--age-key-file", key], &[]);
        r.expect_code(4);
        let line = format!(
            "clusters/c/secrets.yaml: Kustomization flux-system/secrets: decryption failed for 'Secret/app/{}' (from secret.yaml): {want}",
            if file.contains("tampered-mac") {
                "db-credentialz"
            } else {
                "db-credentials"
            }
        );
        assert!(
            r.stderr.contains(&line),
            "{file}: stderr lacks {line:?}\n{r}"
        );
        assert!(
            !r.stderr.contains("s3cr3t") && !r.stdout.contains("s3cr3t"),
            "{r}"
        );
    }
}

#[test]
fn secret_generator_files_encrypted_as_dotenv_and_binary_decrypt() {
    let f = Fleet::new()
        .file(
            "clusters/c/gen.yaml",
            &kustomization("gen", "./apps/gen", "decryption:\n  provider: sops"),
        )
        .file(
            "apps/gen/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: app\ngeneratorOptions:\n  disableNameSuffixHash: true\nsecretGenerator:\n  - name: gen\n    files:\n      - app.env=app.enc.env\n      - blob.bin=blob.enc.bin\n",
        )
        .file("apps/gen/app.enc.env", &fixture("app.enc.env"))
        .file("apps/gen/blob.enc.bin", &fixture("blob.enc.bin"));
    let kf = key_file();
    let r = run(
        &f,
        "build",
        &[
            "--name",
            "flux-system/gen",
            "--show-secrets",
            "--age-key-file",
            &kf,
        ],
        &[],
    );
    r.expect_code(0);
    let objs = yaml_docs(&r.stdout);
    let s = find(&objs, "Secret", "gen");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = b64
        .decode(
            s["data"]["app.env"]
                .as_str()
                .expect("app.env")
                .replace('\n', ""),
        )
        .expect("base64");
    assert_eq!(env, std::fs::read(fixtures("sops/plain/app.env")).unwrap());
    let bin = b64
        .decode(
            s["data"]["blob.bin"]
                .as_str()
                .expect("blob.bin")
                .replace('\n', ""),
        )
        .expect("base64");
    assert_eq!(bin, std::fs::read(fixtures("sops/plain/blob.bin")).unwrap());
}

/// The shapes that stop real fleets, at once: a child (found in its parent's build) whose path
/// is missing, a remote kustomize resource (a URL nothing serves), a Secret encrypted by the real
/// `sops` with no key given, and a source only the network has (a registry nothing answers on).
/// `plan` lists all four with file, Kustomization and cause, marks them and what they block, plans
/// the rest and exits 4; `apply` refuses the whole selection and writes nothing; with the key,
/// the encrypted Secret's Kustomization is planned.
#[test]
fn a_real_fleet_shape_partly_broken_is_planned_around_its_failures_and_apply_refuses() {
    let dec = "decryption:\n  provider: sops";
    let f = Fleet::new()
        .file("clusters/c/infra.yaml", &kustomization("infra", "./infra", ""))
        .file(
            "infra/children.yaml",
            &format!(
                "{}---\n{}",
                kustomization("child-ok", "./apps/ok", ""),
                kustomization("child-gone", "./apps/gone", "")
            ),
        )
        .file(
            "clusters/c/after.yaml",
            &kustomization("after", "./apps/ok", &depends_on(&["child-gone"])),
        )
        .file("apps/ok/cm.yaml", &config_map("app", "ok", &[("k", "v")]))
        .file(
            "clusters/c/remote.yaml",
            &kustomization("remote", "./apps/remote", ""),
        )
        .file(
            "apps/remote/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - http://127.0.0.1:9/remote.yaml\n",
        )
        .file(
            "clusters/c/secrets.yaml",
            &kustomization("secrets", "./apps/secrets", dec),
        )
        .file("apps/secrets/secret.yaml", &fixture("secret.enc.yaml"))
        .file(
            "clusters/c/podinfo.yaml",
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: podinfo\n  namespace: flux-system\nspec:\n  interval: 10m\n  url: oci://127.0.0.1:9/podinfo\n  ref:\n    tag: latest\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: podinfo\n  namespace: flux-system\nspec:\n  interval: 10m\n  prune: true\n  path: ./\n  sourceRef:\n    kind: OCIRepository\n    name: podinfo\n",
        );
    let cache = tempfile::tempdir().expect("cache");
    let with_cache = |sub: &str, args: &[&str]| {
        let mut cmd = f.cmd(sub);
        cmd.env("FLUX_ORDER_CACHE_DIR", cache.path())
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY");
        Run::from_output(&cmd.args(args).output().expect("runs"))
    };
    let r = with_cache("plan", &["-o", "json"]);
    r.expect_code(4);
    for needle in [
        "infra/children.yaml: Kustomization flux-system/child-gone: kustomization path not found",
        "clusters/c/remote.yaml: Kustomization flux-system/remote: building",
        "clusters/c/secrets.yaml: Kustomization flux-system/secrets: decryption failed for 'Secret/app/db-credentials'",
        "Kustomization flux-system/podinfo",
        "4 Kustomization(s) failed to load, build or validate; the rest is planned",
    ] {
        assert!(r.stderr.contains(needle), "stderr lacks {needle:?}\n{r}");
    }
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON plan");
    for failed in ["child-gone", "remote", "secrets", "podinfo"] {
        let e = plan_entry(&plan, &format!("flux-system/{failed}"));
        assert!(
            !e["failures"].as_array().expect("failures").is_empty(),
            "{failed}: {}",
            pretty(e)
        );
    }
    assert_eq!(
        plan_entry(&plan, "flux-system/after")["blockedByFailure"],
        serde_json::json!(["flux-system/child-gone"])
    );
    assert_eq!(plan_entry(&plan, "flux-system/child-ok")["objectCount"], 1);
    assert_eq!(
        plan_entry(&plan, "flux-system/child-ok")["parent"],
        "flux-system/infra"
    );

    // apply refuses the whole selection, listing every problem, and writes nothing.
    let cluster = Cluster::start();
    let kc = cluster.kubeconfig().display().to_string();
    let r = with_cache("apply", &["--kubeconfig", &kc]);
    r.expect_code(2);
    assert!(r.stderr.contains("nothing was written"), "{r}");
    assert!(
        r.stderr.contains("flux-system/child-gone") && r.stderr.contains("flux-system/podinfo"),
        "{r}"
    );
    assert!(
        cluster.writes().is_empty(),
        "apply wrote: {:?}",
        cluster.writes()
    );

    // The key makes the encrypted Secret's Kustomization plannable; the others still fail.
    let kf = key_file();
    let r = with_cache("plan", &["-o", "json", "--age-key-file", &kf]);
    r.expect_code(4);
    assert!(r.stderr.contains("3 Kustomization(s) failed"), "{r}");
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON plan");
    assert_eq!(
        plan_entry(&plan, "flux-system/secrets")["failures"],
        serde_json::json!([])
    );
}

/// A fleet where `gen` (with `spec.decryption`) generates a Secret from the dotenv file the real
/// `sops` encrypted (`envs:`, a comment, a value holding `=`) and a Deployment refers to it by
/// name; `nodec` builds the same path without `spec.decryption`, in the same run and shadow.
fn env_fleet(env_fixture: &str, dec: &str) -> Fleet {
    let deploy = deployment("app", "web", None).replace(
        "          image: nginx:1.27\n",
        "          image: nginx:1.27\n          envFrom:\n            - secretRef:\n                name: gen-env\n",
    );
    Fleet::new()
        .file(
            "clusters/c/gen.yaml",
            &kustomization("gen", "./apps/gen", dec),
        )
        .file(
            "clusters/c/nodec.yaml",
            &kustomization("nodec", "./apps/gen", "targetNamespace: other"),
        )
        .file(
            "apps/gen/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: app\nresources:\n  - deploy.yaml\nsecretGenerator:\n  - name: gen-env\n    envs:\n      - gen.enc.env\n",
        )
        .file("apps/gen/deploy.yaml", &deploy)
        .file("apps/gen/gen.enc.env", &fixture(env_fixture))
}

/// Runs `flux-order` with its own TMPDIR (returned, to check nothing is left in it).
fn run_in_tmp(fleet: &Fleet, sub: &str, args: &[&str]) -> (Run, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let tmp_dir = tmp.path().display().to_string();
    (run(fleet, sub, args, &[("TMPDIR", &tmp_dir)]), tmp)
}

/// The Secret `flux-system/sops-age` holding the tests' age key, as a fleet would hold it.
fn keys_secret() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sops-age\n  namespace: flux-system\nstringData:\n  age.agekey: |\n{}",
        fixture("test.agekey")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

#[test]
fn secret_generator_envs_encrypted_as_dotenv_are_decrypted_before_the_build() {
    let kf = key_file();
    let dec = "decryption:\n  provider: sops";
    let f = env_fleet("gen.enc.env", dec);
    let (r, tmp) = run_in_tmp(
        &f,
        "build",
        &[
            "--name",
            "flux-system/gen",
            "--show-secrets",
            "--age-key-file",
            &kf,
        ],
    );
    r.expect_code(0);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    let objs = yaml_docs(&r.stdout);
    let secret = objs
        .iter()
        .find(|o| o["kind"] == "Secret")
        .unwrap_or_else(|| panic!("no Secret: {r}"));
    // Decrypted before kustomize split it: one key per line, the comment gone, no sops_ keys.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: std::collections::BTreeMap<String, String> = secret["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            let v = b64.decode(v.as_str().expect("str")).expect("base64");
            (k.clone(), String::from_utf8(v).expect("utf-8"))
        })
        .collect();
    assert_eq!(
        data,
        [
            ("API_TOKEN", "tok-gen-123456"),
            ("DB_PASS", "gen-pa55=word"),
            ("DB_USER", "genuser")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect()
    );
    // The name's hash is the one of the plain file, as when kustomize-controller builds it, and
    // the Deployment refers to that name.
    let plain = env_fleet("gen.enc.env", "").file(
        "apps/gen/gen.enc.env",
        &std::fs::read_to_string(fixtures("sops/plain/gen.env")).expect("plain"),
    );
    let r2 = run(
        &plain,
        "build",
        &["--name", "flux-system/gen", "--show-secrets"],
        &[],
    );
    r2.expect_code(0);
    let plain_objs = yaml_docs(&r2.stdout);
    let plain_secret = plain_objs
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("Secret");
    let name = secret["metadata"]["name"].as_str().expect("name");
    assert_eq!(name, plain_secret["metadata"]["name"], "{r}");
    assert!(name.starts_with("gen-env-"), "{name}");
    let web = find(&objs, "Deployment", "web");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        name
    );

    // Built in the same run from the same shadow, the Kustomization without spec.decryption
    // still reads the encrypted file (kustomize splits it as it is): nothing leaked to it.
    let r = run(
        &f,
        "build",
        &[
            "--name",
            "flux-system/nodec",
            "--show-secrets",
            "--age-key-file",
            &kf,
        ],
        &[],
    );
    r.expect_code(0);
    let objs = yaml_docs(&r.stdout);
    let s = objs.iter().find(|o| o["kind"] == "Secret").expect("Secret");
    assert!(s["data"].get("sops_mac").is_some(), "{r}");
    assert!(!r.stdout.contains(&b64.encode("tok-gen-123456")), "{r}");

    // Without --show-secrets no value prints, and plan shows both Kustomizations.
    let r = run(
        &f,
        "build",
        &["--name", "flux-system/gen", "--age-key-file", &kf],
        &[],
    );
    r.expect_code(0);
    for v in ["tok-gen-123456", "gen-pa55=word", "genuser"] {
        assert!(
            !r.stdout.contains(v) && !r.stdout.contains(&b64.encode(v)),
            "{r}"
        );
    }
    run(&f, "plan", &["--age-key-file", &kf], &[]).expect_code(0);
}

#[test]
fn a_tampered_or_undecryptable_env_file_fails_its_kustomization_naming_the_file() {
    let kf = key_file();
    let other = fixtures("sops/other.agekey").display().to_string();
    let dec = "decryption:\n  provider: sops";
    for (fixture_name, key, want) in [
        (
            "gen.tampered-order.enc.env",
            kf.as_str(),
            "SOPS: MAC mismatch",
        ),
        (
            "gen.tampered-value.enc.env",
            kf.as_str(),
            "SOPS: the value at 'API_TOKEN' does not decrypt",
        ),
        (
            "gen.enc.env",
            other.as_str(),
            "SOPS: cannot decrypt the data key: none of the age keys from --age-key-file",
        ),
    ] {
        let f = env_fleet(fixture_name, dec);
        let (r, tmp) = run_in_tmp(&f, "plan", &["--age-key-file", key]);
        r.expect_code(4);
        let line = format!(
            "clusters/c/gen.yaml: Kustomization flux-system/gen: building apps/gen (./apps/gen): decrypting apps/gen/gen.enc.env (secretGenerator[0].envs of apps/gen/kustomization.yaml): {want}"
        );
        assert!(
            r.stderr.contains(&line),
            "{fixture_name}: stderr lacks {line:?}\n{r}"
        );
        assert!(r.stdout.contains("flux-system/gen  [FAILED"), "{r}");
        assert!(!r.stdout.contains("flux-system/nodec  [FAILED"), "{r}");
        for v in ["tok-gen-123456", "gen-pa55=word"] {
            assert!(!r.stdout.contains(v) && !r.stderr.contains(v), "{r}");
        }
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{:?}",
            leftovers(tmp.path())
        );
    }
}

/// The age key is a Secret another Kustomization of the fleet applies, found in the same round
/// of discovery as the one that needs it: the build waits for it instead of failing.
#[test]
fn the_key_of_an_env_file_may_come_from_a_secret_of_the_fleet() {
    let dec = "decryption:\n  provider: sops\n  secretRef:\n    name: sops-age";
    let keys_secret = keys_secret();
    let f = env_fleet("gen.enc.env", dec)
        .file(
            "clusters/c/keys.yaml",
            &kustomization("keys", "./apps/keys", ""),
        )
        .file("apps/keys/secret.yaml", &keys_secret);
    let r = run(
        &f,
        "build",
        &["--name", "flux-system/gen", "--show-secrets"],
        &[],
    );
    r.expect_code(0);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert!(r.stdout.contains(&b64.encode("tok-gen-123456")), "{r}");
    // Without it, the failure says no key was given.
    let f = env_fleet("gen.enc.env", dec);
    let r = run(&f, "plan", &[], &[]);
    r.expect_code(4);
    assert!(r.stderr.contains("no age key was given"), "{r}");
}
