//! `ecr-auth auth-config`: the DOCKER_AUTH_CONFIG document and the GitLab
//! dotenv file, against the lab token server (real-sized tokens, call
//! counters) and a registry that accepts only its current password.

use crate::common;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::common::{Registry, TempDir, TokenServer, MOTO_ACCOUNT};

const OTHER_EU: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
const US: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn auth_config(ts: &TokenServer, tmp: &TempDir, registry: &Registry) -> Command {
    let config = tmp.join("ecr-auth.toml");
    std::fs::write(&config, registry.ecr_mapping(MOTO_ACCOUNT, "eu-west-1")).unwrap();
    let mut cmd = Command::new(common::bin());
    common::apply_aws_env(&mut cmd, &ts.endpoint);
    cmd.env("ECR_AUTH_CONFIG", &config)
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .env("HOME", tmp.join("home"))
        .env_remove("ECR_AUTH_REGISTRIES")
        .current_dir(tmp.path())
        .arg("auth-config");
    cmd
}

fn auth_of(password: &str) -> String {
    common::base64(format!("AWS:{password}").as_bytes())
}

#[test]
fn json_document_one_token_per_region() {
    let ts = TokenServer::start();
    let registry = Registry::start(&ts.htpasswd);
    let digest = registry.push_test_image("team/app", "1.0", "AWS", &ts.password());
    let tmp = TempDir::new("authcfg");
    let out = common::run_ok(auth_config(&ts, &tmp, &registry).args([
        &format!("https://{}/v2/", registry.addr),
        OTHER_EU,
        US,
    ]));
    assert!(
        out.ends_with('\n') && !out.trim_end().contains(char::is_whitespace),
        "compact, one line: {out:?}"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let auths = doc["auths"].as_object().unwrap();
    assert_eq!(
        auths.keys().collect::<Vec<_>>(),
        vec![registry.addr.as_str(), OTHER_EU, US],
        "bare hosts, in order"
    );
    // Every registry of a region shares its token: one call per region.
    assert_eq!(ts.calls_in("eu-west-1"), 1);
    assert_eq!(ts.calls_in("us-east-1"), 1);
    assert_eq!(ts.calls(), 2);
    let password = ts.password();
    assert_eq!(auths[&registry.addr]["auth"], auth_of(&password));
    assert_eq!(auths[OTHER_EU]["auth"], auth_of(&password));

    // The document is a working client config.
    let authfile = tmp.join("auth.json");
    std::fs::write(&authfile, &out).unwrap();
    let inspect = common::run_ok(
        common::skopeo(tmp.path())
            .args([
                "inspect",
                "--tls-verify=false",
                "--format",
                "{{.Digest}}",
                "--authfile",
            ])
            .arg(&authfile)
            .arg(format!("docker://{}", registry.image("team/app", "1.0"))),
    );
    assert_eq!(inspect.trim(), digest);

    // Served from the cache the second time: no new call.
    common::run_ok(auth_config(&ts, &tmp, &registry).arg(&registry.addr));
    assert_eq!(ts.calls(), 2);
}

#[test]
fn merge_keeps_the_existing_document() {
    let ts = TokenServer::start();
    let registry = Registry::start(&ts.htpasswd);
    let tmp = TempDir::new("authmerge");
    let existing = r#"{"auths":{"registry.gitlab.com":{"auth":"Z2l0bGFiOnRva2Vu"},"127.0.0.1:1":{"auth":"b2xk"}},"credHelpers":{"gcr.io":"gcloud"},"credsStore":"desktop","HttpHeaders":{"X-Meta":"1"}}"#;
    std::fs::write(tmp.join("old.json"), existing).unwrap();
    let out = common::run_ok(auth_config(&ts, &tmp, &registry).args([
        "--merge",
        "old.json",
        &registry.addr,
    ]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["auths"]["registry.gitlab.com"]["auth"],
        "Z2l0bGFiOnRva2Vu"
    );
    assert_eq!(doc["auths"]["127.0.0.1:1"]["auth"], "b2xk");
    assert_eq!(
        doc["auths"][&registry.addr]["auth"],
        auth_of(&ts.password())
    );
    assert_eq!(doc["credHelpers"], serde_json::json!({"gcr.io": "gcloud"}));
    assert_eq!(doc["credsStore"], "desktop");
    assert_eq!(doc["HttpHeaders"], serde_json::json!({"X-Meta": "1"}));

    // `--merge -` reads stdin; --output writes 0600.
    let mut child = auth_config(&ts, &tmp, &registry)
        .args(["--merge", "-", "--output", "merged.json", &registry.addr])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(existing.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let file = tmp.join("merged.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), out);

    // A broken document to merge is an error, not a silent replacement.
    std::fs::write(tmp.join("broken.json"), "{\"auths\": [").unwrap();
    let e = common::run_fails(auth_config(&ts, &tmp, &registry).args([
        "--merge",
        "broken.json",
        &registry.addr,
    ]));
    assert!(
        e.contains("broken.json is not valid JSON") && e.contains("fix or remove it"),
        "{e}"
    );
    let e = common::run_fails(auth_config(&ts, &tmp, &registry).args([
        "--merge",
        "missing.json",
        &registry.addr,
    ]));
    assert!(e.contains("--merge missing.json: no such file"), "{e}");
}

/// GitLab's dotenv rules, from its documentation.
fn check_gitlab_dotenv(text: &str) -> Vec<(String, String)> {
    assert!(text.len() < 5120, "{} bytes", text.len());
    assert!(text.ends_with('\n') && !text.contains("\n\n"));
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{k}"
            );
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn dotenv_fits_or_splits_or_fails_clearly() {
    let ts = TokenServer::start();
    let registry = Registry::start(&ts.htpasswd);
    let tmp = TempDir::new("authenv");
    let password = ts.password();
    assert!(password.len() > 2000, "real-sized tokens");

    // One registry: DOCKER_AUTH_CONFIG fits.
    let out = common::run_ok(auth_config(&ts, &tmp, &registry).args([
        "--format",
        "dotenv",
        &registry.addr,
    ]));
    let vars = check_gitlab_dotenv(&out);
    assert_eq!(vars.len(), 1);
    assert_eq!(vars[0].0, "DOCKER_AUTH_CONFIG");
    let doc: serde_json::Value = serde_json::from_str(&vars[0].1).unwrap();
    assert_eq!(doc["auths"][&registry.addr]["auth"], auth_of(&password));

    // Two registries of one region would overflow: the token once, and the line for .gitlab-ci.yml.
    let out = common::run(auth_config(&ts, &tmp, &registry).args([
        "--format",
        "dotenv",
        "-o",
        "split.env",
        &registry.addr,
        OTHER_EU,
    ]));
    assert!(out.status.success(), "{}", common::output_text(&out));
    let vars = check_gitlab_dotenv(&std::fs::read_to_string(tmp.join("split.env")).unwrap());
    assert_eq!(
        vars,
        vec![("ECR_AUTH_TOKEN_EU_WEST_1".to_string(), auth_of(&password))]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("DOCKER_AUTH_CONFIG: "))
        .expect("the .gitlab-ci.yml line");
    assert_eq!(
        line,
        format!(
            r#"DOCKER_AUTH_CONFIG: '{{"auths":{{"{}":{{"auth":"$ECR_AUTH_TOKEN_EU_WEST_1"}},"{OTHER_EU}":{{"auth":"$ECR_AUTH_TOKEN_EU_WEST_1"}}}}}}'"#,
            registry.addr
        )
    );
    assert!(!stderr.contains(&password[..64]), "no secret on stderr");

    // --token-vars asks for that form even when one document would fit.
    let out = common::run_ok(auth_config(&ts, &tmp, &registry).args([
        "--format",
        "dotenv",
        "--token-vars",
        &registry.addr,
    ]));
    assert_eq!(check_gitlab_dotenv(&out)[0].0, "ECR_AUTH_TOKEN_EU_WEST_1");

    // Two regions never fit: a clear error, and no file GitLab would reject.
    let out = common::run(auth_config(&ts, &tmp, &registry).args([
        "--format",
        "dotenv",
        "-o",
        "two.env",
        &registry.addr,
        US,
    ]));
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("2 tokens (aws/eu-west-1, aws/us-east-1)")
            && e.contains("5 KB")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!tmp.join("two.env").exists());
}

#[test]
fn bad_registries_and_failures_are_clear() {
    let ts = TokenServer::start();
    let registry = Registry::start(&ts.htpasswd);
    let tmp = TempDir::new("authbad");
    let e = common::run_fails(auth_config(&ts, &tmp, &registry).arg("docker.io"));
    assert!(e.contains("docker.io is not an Amazon ECR registry"), "{e}");
    let e =
        common::run_fails(auth_config(&ts, &tmp, &registry).env("ECR_AUTH_CONFIG", "/dev/null"));
    assert!(e.contains("no registries given"), "{e}");
    ts.set_fail(Some("denied"));
    let e = common::run_fails(auth_config(&ts, &tmp, &registry).arg(US));
    assert!(
        e.contains("cannot get ECR tokens") && e.contains(US) && e.contains("not authorized"),
        "{e}"
    );
}
