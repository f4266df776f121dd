//! S3 end to end: `ecr-auth gitlab login` in a "job" with no AWS credentials
//! at all, only a JWT-shaped OIDC token in $GITLAB_OIDC_TOKEN. moto's STS
//! answers AssumeRoleWithWebIdentity (any JWT-shaped token works there), ECR
//! tokens come from moto or the lab token server, and the dotenv file is read
//! with GitLab's own rules (`^(.*?)=(.*)$` per line, keys `[A-Za-z0-9_]`, no
//! blank lines, size strictly below 5 KB). The DOCKER_AUTH_CONFIG rebuilt from
//! it, as the runner would, then authenticates against the lab registry with
//! skopeo.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Moto, Registry, TempDir, TokenServer, MOTO_ACCOUNT, MOTO_PASSWORD};

const ROLE: &str = "arn:aws:iam::123456789012:role/gitlab-ecr-pull";

/// A job's environment: the CI variables and the OIDC token, and no AWS
/// credentials of any kind; AWS endpoints point at the lab.
fn job(tmp: &TempDir, endpoints: &[(&str, &str)], token: Option<&str>) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", tmp.join("home"))
        .env("XDG_CONFIG_HOME", tmp.join("xdg"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("CI_PROJECT_ID", "42")
        .env("CI_PIPELINE_ID", "1001")
        .env("CI_JOB_ID", "7")
        .envs(endpoints.iter().copied());
    if let Some(t) = token {
        cmd.env("GITLAB_OIDC_TOKEN", t);
    }
    cmd.current_dir(tmp.path());
    cmd
}

fn map_config(tmp: &TempDir, entries: &[(&str, &str)]) -> PathBuf {
    let path = tmp.join("ecr-auth.toml");
    let text: String = entries
        .iter()
        .map(|(host, region)| format!("[[registry]]\nhost = \"{host}\"\naccount = \"{MOTO_ACCOUNT}\"\nregion = \"{region}\"\n\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// GitLab's dotenv parser, from its documented rules (not from our code).
fn gitlab_dotenv(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() < 5 * 1024,
        "{} bytes: GitLab rejects 5 KB or more",
        bytes.len()
    );
    let text = String::from_utf8(bytes).expect("UTF-8");
    let mut vars = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() {
            continue; // the final newline
        }
        // ^(.*?)=(.*)$ : the key is everything up to the first '='
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?}"));
        assert!(
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad key {key:?}"
        );
        assert!(!value.contains('\r'));
        vars.push((key.to_string(), value.to_string()));
    }
    assert!(
        !text.contains("\n\n") && !text.starts_with('\n'),
        "blank lines: {text:?}"
    );
    vars
}

/// skopeo authenticating with a Docker config document (as a job image pull would).
fn skopeo_inspect(tmp: &TempDir, doc: &str, image: &str) -> std::process::Output {
    let authfile = tmp.join("rebuilt-auth.json");
    std::fs::write(&authfile, doc).unwrap();
    common::run(
        common::skopeo(tmp.path())
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(&authfile)
            .arg(format!("docker://{image}")),
    )
}

#[test]
fn login_with_moto_sts_writes_a_dotenv_that_authenticates() {
    let moto = Moto::start();
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    registry.push_test_image("team/app", "1.0", "AWS", MOTO_PASSWORD);
    let tmp = TempDir::new("login");
    let config = map_config(&tmp, &[(&registry.addr, "eu-west-1")]);
    let token = common::gitlab_jwt(common::now_unix() + 300);
    let out = common::run(
        job(&tmp, &[("AWS_ENDPOINT_URL", &moto.endpoint)], Some(&token))
            .env("ECR_AUTH_CONFIG", &config)
            .args([
                "gitlab",
                "login",
                "--role-arn",
                ROLE,
                "--registry",
                &registry.addr,
                "--duration",
                "15m",
            ]),
    );
    assert!(out.status.success(), "{}", common::output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "assumed arn:aws:iam::123456789012:role/gitlab-ecr-pull as session gitlab-42-1001-7"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains(MOTO_PASSWORD) && !stderr.contains(&token),
        "a secret in the log: {stderr}"
    );
    assert!(out.stdout.is_empty());

    // moto saw exactly this exchange.
    let assumed = moto.assumed_roles();
    assert_eq!(assumed.len(), 1);
    assert_eq!(assumed[0]["role_arn"], ROLE);
    assert_eq!(assumed[0]["session_name"], "gitlab-42-1001-7");

    // The default output file, 0600, readable by GitLab's parser.
    let env_file = tmp.join("ecr-auth.env");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let vars = gitlab_dotenv(&env_file);
    assert_eq!(vars.len(), 1);
    assert_eq!(vars[0].0, "DOCKER_AUTH_CONFIG");
    let doc: serde_json::Value = serde_json::from_str(&vars[0].1).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"auths": {registry.addr.as_str(): {"auth": common::base64(format!("AWS:{MOTO_PASSWORD}").as_bytes())}}})
    );
    assert!(!vars[0].1.contains(' '), "compact JSON");

    // The runner pulls later jobs' images with it.
    let ok = skopeo_inspect(&tmp, &vars[0].1, &registry.image("team/app", "1.0"));
    assert!(ok.status.success(), "{}", common::output_text(&ok));
    let bad = skopeo_inspect(&tmp, r#"{"auths":{}}"#, &registry.image("team/app", "1.0"));
    assert!(!bad.status.success(), "the registry must want credentials");

    // No token was left on the job's disk but the dotenv file.
    assert!(!tmp.join("home/.cache/ecr-auth").exists());
}

#[test]
fn big_tokens_go_once_per_region_with_the_gitlab_ci_line() {
    // STS from moto, ECR from the token server (real-sized ~2.5 KB passwords).
    let moto = Moto::start();
    let ts = TokenServer::start();
    let registry = Registry::start(&ts.htpasswd);
    registry.push_test_image("team/app", "1.0", "AWS", &ts.password());
    let tmp = TempDir::new("login-big");
    let other = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
    let config = map_config(&tmp, &[(&registry.addr, "eu-west-1")]);
    let endpoints = [
        ("AWS_ENDPOINT_URL_STS", moto.endpoint.as_str()),
        ("AWS_ENDPOINT_URL_ECR", ts.endpoint.as_str()),
    ];
    let out = common::run(
        job(
            &tmp,
            &endpoints,
            Some(&common::gitlab_jwt(common::now_unix() + 300)),
        )
        .env("ECR_AUTH_CONFIG", &config)
        .env("ECR_AUTH_REGISTRIES", format!("{},{other}", registry.addr))
        .args([
            "gitlab",
            "login",
            "--role-arn",
            ROLE,
            "--output",
            "auth.env",
        ]),
    );
    assert!(out.status.success(), "{}", common::output_text(&out));
    assert_eq!(
        ts.calls(),
        1,
        "one token for the region, shared by both registries"
    );
    let vars = gitlab_dotenv(&tmp.join("auth.env"));
    let password = ts.password();
    assert_eq!(
        vars,
        vec![(
            "ECR_AUTH_TOKEN_EU_WEST_1".to_string(),
            common::base64(format!("AWS:{password}").as_bytes())
        )]
    );

    // The printed .gitlab-ci.yml line, expanded the way gitlab-runner expands variables.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("DOCKER_AUTH_CONFIG: '"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let yaml: serde_yaml::Value = serde_yaml::from_str(line).unwrap();
    let template = yaml["DOCKER_AUTH_CONFIG"].as_str().unwrap();
    assert!(
        !template.contains(&password[..40]),
        "no secret in .gitlab-ci.yml"
    );
    let expanded = template.replace("$ECR_AUTH_TOKEN_EU_WEST_1", &vars[0].1);
    let doc: serde_json::Value = serde_json::from_str(&expanded).unwrap();
    assert_eq!(doc["auths"].as_object().unwrap().len(), 2);
    assert!(doc["auths"].get(other).is_some());
    let ok = skopeo_inspect(&tmp, &expanded, &registry.image("team/app", "1.0"));
    assert!(ok.status.success(), "{}", common::output_text(&ok));

    // A second region does not fit in 5 KB: a clear error and no file.
    let out = common::run(
        job(
            &tmp,
            &endpoints,
            Some(&common::gitlab_jwt(common::now_unix() + 300)),
        )
        .env("ECR_AUTH_CONFIG", &config)
        .args([
            "gitlab",
            "login",
            "--role-arn",
            ROLE,
            "--output",
            "two.env",
            "--registry",
            &registry.addr,
        ])
        .args(["--registry", "210987654321.dkr.ecr.us-east-1.amazonaws.com"]),
    );
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("GitLab rejects dotenv files of 5120 bytes (5 KB) or more")
            && e.contains("one `ecr-auth gitlab login` job per region"),
        "{e}"
    );
    assert!(!tmp.join("two.env").exists());
}

#[test]
fn bad_oidc_tokens_fail_before_any_call() {
    // Nothing listens on port 9: if the binary called AWS anyway, it would fail
    // differently (and it stays on loopback).
    let tmp = TempDir::new("login-bad");
    let endpoints = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9")];
    let cases: Vec<(Option<String>, Vec<&str>, &str)> = vec![
        (None, vec![], "$GITLAB_OIDC_TOKEN is empty or unset: add `id_tokens: {GITLAB_OIDC_TOKEN: {aud: <audience>}}`"),
        (Some(String::new()), vec![], "$GITLAB_OIDC_TOKEN is empty or unset"),
        (Some(common::gitlab_jwt(common::now_unix() - 60)), vec![], "the OIDC token in $GITLAB_OIDC_TOKEN expired at"),
        (Some("not-a-jwt".into()), vec![], "$GITLAB_OIDC_TOKEN is not a JWT"),
        (Some(common::gitlab_jwt(common::now_unix() + 300)), vec!["--id-token-env", "MY_TOKEN"], "$MY_TOKEN is empty or unset"),
        (Some(common::gitlab_jwt(common::now_unix() + 300)), vec!["--duration", "24h"], "--duration must be between 15m and 12h"),
    ];
    for (token, extra, needle) in cases {
        let out = common::run(
            job(&tmp, &endpoints, token.as_deref())
                .args([
                    "gitlab",
                    "login",
                    "--role-arn",
                    ROLE,
                    "--registry",
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                ])
                .args(&extra),
        );
        assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
        assert!(!tmp.join("ecr-auth.env").exists());
        if let Some(t) = token.filter(|t| t.len() > 12) {
            assert!(!e.contains(&t), "the token was echoed: {e}");
        }
    }
}

#[test]
fn refusals_are_explained_and_write_nothing() {
    let moto = Moto::start();
    let ts = TokenServer::start();
    let tmp = TempDir::new("login-refused");
    let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    let run = |endpoints: &[(&str, &str)], role: &str| {
        let out = common::run(
            job(
                &tmp,
                endpoints,
                Some(&common::gitlab_jwt(common::now_unix() + 300)),
            )
            .args(["gitlab", "login", "--role-arn", role, "--registry", ecr]),
        );
        assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
        assert!(!tmp.join("ecr-auth.env").exists());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A malformed role ARN never reaches STS.
    let e = run(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")], "not-an-arn");
    assert!(
        e.contains("--role-arn \"not-an-arn\" is not an IAM role ARN"),
        "{e}"
    );
    // Nothing answers where STS should be.
    let e = run(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")], ROLE);
    assert!(
        e.contains("cannot reach AWS STS") && e.contains("AWS_ENDPOINT_URL_STS"),
        "{e}"
    );
    // STS answers with an error (here: an endpoint that does not speak STS).
    let e = run(
        &[
            ("AWS_ENDPOINT_URL_STS", &ts.endpoint),
            ("AWS_ENDPOINT_URL_ECR", &ts.endpoint),
        ],
        ROLE,
    );
    assert!(
        e.contains(&format!(
            "exchanging the job's OIDC token for role {ROLE} (STS AssumeRoleWithWebIdentity at"
        )) && e.contains("AWS answered InvalidAction")
            && e.contains("trust policy"),
        "{e}"
    );
    // The role may not call ECR.
    ts.set_fail(Some("denied"));
    let e = run(
        &[
            ("AWS_ENDPOINT_URL_STS", &moto.endpoint),
            ("AWS_ENDPOINT_URL_ECR", &ts.endpoint),
        ],
        ROLE,
    );
    assert!(
        e.contains(&format!(
            "cannot get ECR tokens with the credentials of {ROLE}"
        )) && e.contains("not authorized to perform: ecr:GetAuthorizationToken"),
        "{e}"
    );
}
