//! Proves that each part of the lab fixture (`tests/common`) really works: moto, our token
//! endpoint (with the AWS CLI and the Rust SDK as clients), docker-registry with htpasswd and
//! rotation, a private dockerd (FROM-scratch busybox, host network, pulls, Swarm), podman
//! and skopeo. Everything listens on 127.0.0.1 only. A missing program fails the test.

use crate::common::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A fake SigV4 Authorization header (the lab servers do not verify signatures).
fn sigv4(region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIAECRAUTHLABTEST00/20260101/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=0000"
    )
}

/// Raw AWS JSON 1.1 GetAuthorizationToken call.
fn raw_get_token(endpoint: &str, target: &str, region: &str, service: &str) -> HttpResponse {
    let auth = sigv4(region, service);
    http(
        "POST",
        &format!("{endpoint}/"),
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", target),
            ("Authorization", &auth),
        ],
        b"{}",
    )
    .expect("GetAuthorizationToken request")
}

const ECR: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const ECR_PUBLIC: &str = "SpencerFrontendService.GetAuthorizationToken";

/// The AWS SDK's own configuration for the lab: `endpoint`, `region`, static lab keys.
async fn sdk_config(endpoint: &str, region: &'static str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_types::region::Region::new(region))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIAECRAUTHLABTEST00",
            "secret",
            None,
            None,
            "lab",
        ))
        .load()
        .await
}

fn decode_password(token: &str) -> String {
    let decoded = String::from_utf8(base64_decode(token)).expect("token is UTF-8");
    decoded
        .strip_prefix("AWS:")
        .unwrap_or_else(|| panic!("token is not AWS:...: {decoded}"))
        .to_string()
}

#[test]
fn moto_answers_sts_and_ecr() {
    let moto = Moto::start();

    let auth = sigv4("us-east-1", "sts");
    let sts = http(
        "POST",
        &format!("{}/", moto.endpoint),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        b"Action=GetCallerIdentity&Version=2011-06-15",
    )
    .unwrap();
    assert_eq!(sts.status, 200, "{}", sts.text());
    assert!(
        sts.text()
            .contains(&format!("<Account>{MOTO_ACCOUNT}</Account>")),
        "{}",
        sts.text()
    );

    let ecr = raw_get_token(&moto.endpoint, ECR, "eu-west-1", "ecr");
    assert_eq!(ecr.status, 200, "{}", ecr.text());
    let data = &ecr.json()["authorizationData"][0];
    assert_eq!(
        decode_password(data["authorizationToken"].as_str().unwrap()),
        MOTO_PASSWORD
    );
    assert_eq!(data["expiresAt"].as_f64().unwrap(), MOTO_EXPIRES_AT as f64);
    assert_eq!(
        data["proxyEndpoint"],
        format!("https://{MOTO_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com")
    );

    // The AWS CLI from the lab venv works against it too.
    let out = run_ok(moto.aws().args(["sts", "get-caller-identity"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Account"], MOTO_ACCOUNT);
    let out = run_ok(
        moto.aws()
            .args(["ecr", "get-login-password", "--region", "eu-west-1"]),
    );
    assert_eq!(out.trim(), MOTO_PASSWORD);
}

#[test]
fn token_server_issues_rotates_counts_and_fails_on_demand() {
    let ts = TokenServer::start();
    assert_eq!(ts.calls(), 0);

    // Through the AWS CLI: a ~2.5 KB password, 12 h expiry, region from the SigV4 scope.
    let out = run_ok(
        ts.aws()
            .args(["ecr", "get-authorization-token", "--region", "eu-west-2"]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let data = &v["authorizationData"][0];
    let first = ts.password();
    assert_eq!(
        decode_password(data["authorizationToken"].as_str().unwrap()),
        first
    );
    assert!(
        (2000..3500).contains(&first.len()),
        "password length {}",
        first.len()
    );
    let expires = data["expiresAt"].as_f64().unwrap();
    assert!(
        (expires - (now() + 43200.0)).abs() < 120.0,
        "expiresAt {expires}"
    );
    assert_eq!(
        data["proxyEndpoint"],
        format!("https://{TOKEN_SERVER_ACCOUNT}.dkr.ecr.eu-west-2.amazonaws.com")
    );
    assert_eq!(
        (ts.calls(), ts.calls_in("eu-west-2"), ts.issued()),
        (1, 1, 1)
    );

    // ttl and rotation.
    ts.set_ttl(60);
    let r = raw_get_token(&ts.endpoint, ECR, "ap-south-1", "ecr");
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    let expires = r.json()["authorizationData"][0]["expiresAt"]
        .as_f64()
        .unwrap();
    assert!(
        (expires - (now() + 60.0)).abs() < 30.0,
        "expiresAt {expires}"
    );
    let second = ts.rotate();
    assert_ne!(second, first);
    assert_eq!(ts.password(), second);
    let r = raw_get_token(&ts.endpoint, ECR, "ap-south-1", "ecr");
    assert_eq!(
        decode_password(
            r.json()["authorizationData"][0]["authorizationToken"]
                .as_str()
                .unwrap()
        ),
        second
    );

    // ECR Public shape.
    let r = raw_get_token(&ts.endpoint, ECR_PUBLIC, "us-east-1", "ecr-public");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        decode_password(
            r.json()["authorizationData"]["authorizationToken"]
                .as_str()
                .unwrap()
        ),
        second
    );
    assert_eq!(
        (
            ts.calls(),
            ts.calls_in("ap-south-1"),
            ts.calls_in("us-east-1")
        ),
        (4, 2, 1)
    );

    // Failures: AccessDenied through the CLI, 503 on the wire; they count as calls.
    ts.set_fail(Some("denied"));
    let err = run_fails(
        ts.aws()
            .args(["ecr", "get-login-password", "--region", "eu-west-2"]),
    );
    assert!(err.contains("AccessDeniedException"), "{err}");
    ts.set_fail(Some("unavailable"));
    let r = raw_get_token(&ts.endpoint, ECR, "eu-west-2", "ecr");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["__type"], "ServiceUnavailableException");
    ts.set_fail(None);
    assert_eq!((ts.calls(), ts.issued()), (6, 4));

    // Delay and rotate-on-issue.
    ts.set_delay_ms(400);
    let t = Instant::now();
    assert_eq!(
        raw_get_token(&ts.endpoint, ECR, "eu-west-2", "ecr").status,
        200
    );
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    ts.set_delay_ms(0);
    ts.set_rotate_on_issue(true);
    let a = raw_get_token(&ts.endpoint, ECR, "eu-west-2", "ecr").json();
    let b = raw_get_token(&ts.endpoint, ECR, "eu-west-2", "ecr").json();
    assert_ne!(
        a["authorizationData"][0]["authorizationToken"],
        b["authorizationData"][0]["authorizationToken"]
    );

    ts.reset_calls();
    assert_eq!(ts.calls(), 0);
}

#[tokio::test]
async fn token_server_speaks_to_the_rust_sdk() {
    let ts = TokenServer::start();
    let config = sdk_config(&ts.endpoint, "eu-central-1").await;

    let out = aws_sdk_ecr::Client::new(&config)
        .get_authorization_token()
        .send()
        .await
        .expect("ECR GetAuthorizationToken");
    let data = &out.authorization_data()[0];
    assert_eq!(
        decode_password(data.authorization_token().unwrap()),
        ts.password()
    );
    let expires = data.expires_at().unwrap().secs() as f64;
    assert!(
        (expires - (now() + 43200.0)).abs() < 120.0,
        "expiresAt {expires}"
    );
    assert_eq!(
        data.proxy_endpoint(),
        Some("https://123456789012.dkr.ecr.eu-central-1.amazonaws.com")
    );

    let public = sdk_config(&ts.endpoint, "us-east-1").await;
    let out = aws_sdk_ecrpublic::Client::new(&public)
        .get_authorization_token()
        .send()
        .await
        .expect("ECR Public GetAuthorizationToken");
    let data = out.authorization_data().unwrap();
    assert_eq!(
        decode_password(data.authorization_token().unwrap()),
        ts.password()
    );
    assert_eq!(
        (ts.calls_in("eu-central-1"), ts.calls_in("us-east-1")),
        (1, 1)
    );

    ts.set_fail(Some("denied"));
    let err = aws_sdk_ecr::Client::new(&config)
        .get_authorization_token()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_smithy_types::error::metadata::ProvideErrorMetadata::code(&err),
        Some("AccessDeniedException")
    );
}

#[test]
fn registry_accepts_only_the_current_token_password() {
    let ts = TokenServer::start();
    let registry = Registry::start(&ts.htpasswd);
    let tmp = TempDir::new("smoke-reg");
    let old = ts.password();

    assert_eq!(registry.v2_status(None), 401);
    assert_eq!(registry.v2_status(Some(("AWS", &old))), 200);
    assert_eq!(registry.v2_status(Some(("AWS", "wrong"))), 401);
    let digest = registry.push_test_image("team/app", "v1", "AWS", &old);
    assert!(digest.starts_with("sha256:"), "{digest}");

    let authfile = tmp.join("old.json");
    write_authfile(&authfile, &[(&registry.addr, "AWS", &old)]);
    let inspect = |authfile: Option<&std::path::Path>| {
        let mut cmd = skopeo(tmp.path());
        cmd.args(["inspect", "--tls-verify=false"]);
        match authfile {
            Some(f) => cmd.arg("--authfile").arg(f),
            None => cmd.arg("--no-creds"),
        };
        cmd.arg(format!("docker://{}", registry.image("team/app", "v1")));
        cmd
    };
    let out = run_ok(&mut inspect(Some(&authfile)));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Labels"]["lab.image"], "team/app:v1");
    let err = run_fails(&mut inspect(None));
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );

    // Rotation rewrites the htpasswd file; distribution reloads it on the next request.
    let new = ts.rotate();
    assert_eq!(registry.v2_status(Some(("AWS", &old))), 401);
    assert_eq!(registry.v2_status(Some(("AWS", &new))), 200);
    let err = run_fails(&mut inspect(Some(&authfile)));
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    let newfile = tmp.join("new.json");
    write_authfile(&newfile, &[(&registry.addr, "AWS", &new)]);
    run_ok(&mut inspect(Some(&newfile)));
}

#[test]
fn registry_with_a_fixed_password_serves_moto_tokens() {
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    assert_eq!(registry.v2_status(Some(("AWS", MOTO_PASSWORD))), 200);
    assert_eq!(
        registry.v2_status(Some(("AWS", "123456789013-auth-token"))),
        401
    );
    assert_eq!(registry.v2_status(None), 401);
}

#[test]
fn dockerd_runs_a_scratch_busybox_container_on_the_host_network() {
    let docker = Dockerd::start();
    assert_eq!(docker.api("GET", "/_ping", None).text(), "OK");
    let image = docker.busybox_image();

    // A server on the host's loopback, reached from inside the container.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host")
            .unwrap();
    });
    let out = run_ok(
        docker
            .docker()
            .args([
                "run",
                "--rm",
                "--network",
                "host",
                &image,
                "wget",
                "-q",
                "-O-",
            ])
            .arg(format!("http://127.0.0.1:{port}/")),
    );
    assert_eq!(out, "hello-from-host");
    server.join().unwrap();
}

#[test]
fn dockerd_pulls_from_the_lab_registry_with_an_auths_config() {
    let registry = Registry::start_with_password("pull-secret");
    let digest = registry.push_test_image("team/app", "v1", "AWS", "pull-secret");
    let docker = Dockerd::start();
    let image = registry.image("team/app", "v1");

    let err = run_fails(docker.docker().args(["pull", "-q", &image]));
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );

    write_authfile(
        &docker.config_dir().join("config.json"),
        &[(&registry.addr, "AWS", "pull-secret")],
    );
    run_ok(docker.docker().args(["pull", "-q", &image]));
    let out = docker.repo_digests(&image);
    assert!(out.contains(&digest), "{out} lacks {digest}");
    let out = run_ok(docker.docker().args([
        "run",
        "--rm",
        "--network",
        "host",
        &image,
        "echo",
        "pulled-and-ran",
    ]));
    assert_eq!(out.trim(), "pulled-and-ran");
}

#[test]
fn dockerd_becomes_a_swarm_manager_on_loopback() {
    let docker = Dockerd::start();
    let port = docker.swarm_init();
    let info = docker.api("GET", "/info", None).json();
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");
    assert_eq!(info["Swarm"]["ControlAvailable"], true);
    assert_eq!(info["Swarm"]["NodeAddr"], "127.0.0.1");
    let nodes = run_ok(
        docker
            .docker()
            .args(["node", "ls", "--format", "{{.ManagerStatus}}"]),
    );
    assert_eq!(nodes.trim(), "Leader");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "swarm listens on 127.0.0.1:{port}"
    );
}

#[test]
fn podman_pulls_with_an_auths_or_cred_helpers_authfile() {
    let registry = Registry::start_with_password("podman-secret");
    registry.push_test_image("team/app", "v2", "AWS", "podman-secret");
    let image = registry.image("team/app", "v2");
    let tmp = TempDir::new("smoke-podman");

    let err = run_fails(podman(tmp.path()).args(["pull", "-q", "--tls-verify=false", &image]));
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );

    let authfile = tmp.join("auth.json");
    write_authfile(&authfile, &[(&registry.addr, "AWS", "podman-secret")]);
    run_ok(
        podman(tmp.path())
            .args(["pull", "-q", "--tls-verify=false", "--authfile"])
            .arg(&authfile)
            .arg(&image),
    );
    let out = run_ok(podman(tmp.path()).args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(out.lines().any(|l| l == image), "{out}");
    run_ok(podman(tmp.path()).args(["rmi", "-f", &image]));

    // A credHelpers authfile: podman runs `docker-credential-<name> get` from PATH. (podman
    // 4.3 ignores `credsStore` in an authfile; only credHelpers and auths work.)
    let helpers = tmp.join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let calls = tmp.join("helper-calls");
    let script = format!(
        "#!/bin/sh\nread -r host\necho \"$1 $host\" >> '{}'\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"AWS\",\"Secret\":\"podman-secret\"}}\\n' \"$host\"\n",
        calls.display()
    );
    let helper = helpers.join("docker-credential-labfake");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let helper_authfile = tmp.join("helpers.json");
    let doc = serde_json::json!({ "credHelpers": { registry.addr.clone(): "labfake" } });
    std::fs::write(&helper_authfile, doc.to_string()).unwrap();
    run_ok(
        podman(tmp.path())
            .env("PATH", path_with(&helpers))
            .args(["pull", "-q", "--tls-verify=false", "--authfile"])
            .arg(&helper_authfile)
            .arg(&image),
    );
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(calls.trim(), format!("get {}", registry.addr));
}

#[test]
fn components_are_stopped_and_cleaned_up_on_drop() {
    let ts = TokenServer::start();
    let (pid, dir, port) = (ts.pid(), ts.dir().to_path_buf(), ts.port);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(ts);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "token server {pid} still running"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
}

#[test]
#[should_panic(expected = "run scripts/test (it installs the lab)")]
fn a_missing_program_is_a_failure_not_a_skip() {
    tool("ecr-auth-lab-no-such-program");
}

/// The sick-AWS modes of the token endpoint, on the wire and through the Rust SDK (whose
/// standard retry must see our throttling answer as throttling): N throttled calls then
/// tokens, FIPS proxy endpoints, and a black hole that takes a request and never answers
/// while the control endpoints keep working.
#[tokio::test]
async fn token_server_throttles_names_fips_hosts_and_black_holes() {
    let ts = TokenServer::start();
    ts.set_throttle(2);
    for _ in 0..2 {
        let r = raw_get_token(&ts.endpoint, ECR, "eu-west-1", "ecr");
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["__type"], "ThrottlingException");
        assert_eq!(r.header("x-amzn-errortype"), Some("ThrottlingException"));
    }
    assert_eq!(
        raw_get_token(&ts.endpoint, ECR, "eu-west-1", "ecr").status,
        200
    );
    assert_eq!((ts.calls(), ts.throttled(), ts.issued()), (3, 2, 1));

    // The SDK's standard retry (3 attempts) rides out 2 throttled answers.
    ts.reset_calls();
    ts.set_throttle(2);
    let config = sdk_config(&ts.endpoint, "eu-west-1").await;
    let out = aws_sdk_ecr::Client::new(&config)
        .get_authorization_token()
        .send()
        .await
        .expect("GetAuthorizationToken after two throttled attempts");
    assert_eq!(
        decode_password(out.authorization_data()[0].authorization_token().unwrap()),
        ts.password()
    );
    assert_eq!((ts.calls(), ts.throttled(), ts.issued()), (3, 2, 1));

    ts.set_fips(true);
    let r = raw_get_token(&ts.endpoint, ECR, "us-east-1", "ecr");
    assert_eq!(
        r.json()["authorizationData"][0]["proxyEndpoint"],
        format!("https://{TOKEN_SERVER_ACCOUNT}.dkr.ecr-fips.us-east-1.amazonaws.com")
    );
    ts.set_fips(false);

    ts.set_black_hole(true);
    let wait = Duration::from_millis(1500);
    let t = Instant::now();
    let auth = sigv4("eu-west-1", "ecr");
    let err = http_within(
        "POST",
        &format!("{}/", ts.endpoint),
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", ECR),
            ("Authorization", &auth),
        ],
        b"{}",
        wait,
    )
    .expect_err("a black hole never answers");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "a timeout, not a closed connection: {err}"
    );
    assert!(t.elapsed() >= wait, "{:?}", t.elapsed());
    assert_eq!(ts.held(), 1, "the control endpoints still answer");
    ts.set_black_hole(false);
    assert_eq!(
        raw_get_token(&ts.endpoint, ECR, "eu-west-1", "ecr").status,
        200
    );
    assert_eq!((ts.calls(), ts.held(), ts.issued()), (6, 1, 3));
}
