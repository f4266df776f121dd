//! The credential helper end to end, against real programs: the lab's token
//! endpoint and moto (AWS API), Debian's docker-registry (the "ECR" registry,
//! reached through a host name mapped to ECR in the ecr-auth config file), and
//! the real clients: dockerd + docker CLI, skopeo, podman.
//!
//! Each pull test first shows the pull failing without the helper, so a pass
//! means the helper answered.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::token_cache;
use crate::common::*;

const ACCOUNT: &str = "123456789012";
pub(crate) const NOT_FOUND: &str = "credentials not found in native keychain\n";

/// A registry that only the token endpoint's current password opens, a
/// private image in it, and an ecr-auth config mapping its host to ECR.
/// Fields drop in order: the registry before the token server whose htpasswd it reads.
struct Lab {
    registry: Registry,
    tokens: TokenServer,
    tmp: TempDir,
    image: String,
}

impl Lab {
    fn new() -> Lab {
        let tokens = TokenServer::start();
        let registry = Registry::start(&tokens.htpasswd);
        registry.push_test_image("team/app", "1.0", "AWS", &tokens.password());
        let tmp = TempDir::new("helper-e2e");
        write_config(&tmp.join("config.toml"), &registry.addr, "eu-west-1");
        let image = registry.image("team/app", "1.0");
        Lab {
            registry,
            tokens,
            tmp,
            image,
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.tmp.join("cache")
    }

    /// Sets the environment every client runs with: AWS pointed at the token
    /// endpoint, the config file, a private cache and home, the helper on PATH.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        lab_env(cmd, &self.tmp, &self.tokens.endpoint)
    }

    /// `docker-credential-ecr-login <verb>` with `stdin`.
    fn helper(&self, verb: &str, stdin: &str) -> Output {
        let mut cmd =
            Command::new(helper_path_dir(self.tmp.path()).join("docker-credential-ecr-login"));
        self.env(&mut cmd).arg(verb);
        feed(&mut cmd, stdin)
    }

    fn cache_files(&self) -> Vec<PathBuf> {
        token_cache::entries(&self.cache_dir())
    }
}

fn write_config(path: &Path, host: &str, region: &str) {
    fs::write(
        path,
        format!("# the lab registry stands in for ECR\n[[registry]]\nhost = \"{host}\"\naccount = \"{ACCOUNT}\"\nregion = \"{region}\"\n"),
    )
    .unwrap();
}

/// The environment of every helper run here: AWS pointed at `endpoint` (static lab keys,
/// no config files, no IMDS), a private config file, cache and home, the helper on PATH,
/// and none of the caller's ecr-auth settings (log level, deadlines).
pub(crate) fn lab_env<'a>(cmd: &'a mut Command, tmp: &TempDir, endpoint: &str) -> &'a mut Command {
    let home = tmp.join("home");
    fs::create_dir_all(&home).unwrap();
    apply_aws_env(cmd, endpoint)
        .env("ECR_AUTH_CONFIG", tmp.join("config.toml"))
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("PATH", path_with(&helper_path_dir(tmp.path())))
        .env_remove("ECR_AUTH_LOG")
        .env_remove("ECR_AUTH_LOG_FILE")
        .env_remove("ECR_AUTH_TIMEOUT")
        .env_remove("ECR_AUTH_REFRESH_TIMEOUT")
        .env_remove("AWS_ECR_DISABLE_CACHE")
}

pub(crate) fn feed(cmd: &mut Command, stdin: impl AsRef<[u8]>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start helper");
    // A process that refuses before reading stdin (a bad config file) may exit first: a
    // broken pipe here is its answer arriving early, not a failure of the test.
    match child.stdin.take().unwrap().write_all(stdin.as_ref()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn secret_of(o: &Output) -> String {
    assert!(o.status.success(), "helper failed: {}", output_text(o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("helper JSON");
    v["Secret"].as_str().expect("Secret").to_string()
}

#[test]
fn docker_pulls_a_private_image_only_through_the_helper() {
    let lab = Lab::new();
    let dockerd = Dockerd::start();
    // Without the helper: refused.
    let denied = run_fails(lab.env(&mut dockerd.docker()).args(["pull", &lab.image]));
    assert!(
        denied.contains("no basic auth credentials") || denied.contains("unauthorized"),
        "{denied}"
    );
    assert_eq!(lab.tokens.calls(), 0);

    let conf = lab.tmp.join("docker-config");
    fs::create_dir_all(&conf).unwrap();
    fs::write(
        conf.join("config.json"),
        format!(
            "{{\"credHelpers\":{{\"{}\":\"ecr-login\"}}}}",
            lab.registry.addr
        ),
    )
    .unwrap();
    run_ok(
        lab.env(&mut dockerd.docker())
            .env("DOCKER_CONFIG", &conf)
            .args(["pull", &lab.image]),
    );
    let listed =
        run_ok(
            dockerd
                .docker()
                .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]),
        );
    assert!(listed.contains(&lab.image.replace(":1.0", "")), "{listed}");
    assert_eq!(lab.tokens.calls(), 1, "one token fetched");

    // `docker login` / `logout` against the ECR-mapped host call the helper's
    // store/erase: no-ops that succeed, and the password lands nowhere.
    let out = feed(
        lab.env(&mut dockerd.docker())
            .env("DOCKER_CONFIG", &conf)
            .args(["login", "-u", "AWS", "--password-stdin", &lab.registry.addr]),
        lab.tokens.password(),
    );
    assert!(out.status.success(), "docker login: {}", output_text(&out));
    let config_after = fs::read_to_string(conf.join("config.json")).unwrap();
    assert!(
        !config_after.contains(&lab.tokens.password()[..40]),
        "password written to config.json"
    );
    run_ok(
        lab.env(&mut dockerd.docker())
            .env("DOCKER_CONFIG", &conf)
            .args(["logout", &lab.registry.addr]),
    );
}

#[test]
fn skopeo_reads_a_private_image_through_cred_helpers() {
    let lab = Lab::new();
    let empty = lab.tmp.join("empty-auth.json");
    fs::write(&empty, "{}").unwrap();
    let inspect = |authfile: &Path| {
        let mut cmd = skopeo(lab.tmp.path());
        lab.env(&mut cmd)
            .env("PATH", path_with(&helper_path_dir(lab.tmp.path())))
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(authfile)
            .arg(format!("docker://{}", lab.image));
        run(&mut cmd)
    };
    let denied = inspect(&empty);
    assert!(
        !denied.status.success(),
        "anonymous inspect must fail: {}",
        output_text(&denied)
    );

    let authfile = lab.tmp.join("auth.json");
    fs::write(
        &authfile,
        format!(
            "{{\"credHelpers\":{{\"{}\":\"ecr-login\"}}}}",
            lab.registry.addr
        ),
    )
    .unwrap();
    let ok = inspect(&authfile);
    assert!(ok.status.success(), "skopeo inspect: {}", output_text(&ok));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["Labels"]["lab.image"], "team/app:1.0", "{v}");
    assert_eq!(lab.tokens.calls(), 1);
}

/// podman, with moto as the AWS API: moto's token (`AWS:123456789012-auth-token`)
/// expired in 2015, so it is used but never cached.
#[test]
fn podman_pulls_through_cred_helpers_with_moto_tokens() {
    let moto = Moto::start();
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    registry.push_test_image("team/tool", "2", "AWS", MOTO_PASSWORD);
    let tmp = TempDir::new("podman-e2e");
    write_config(&tmp.join("config.toml"), &registry.addr, "eu-west-1");
    let image = registry.image("team/tool", "2");
    let pull = |authfile: &Path| {
        let mut cmd = podman(tmp.path());
        lab_env(&mut cmd, &tmp, &moto.endpoint)
            .args(["pull", "--quiet", "--tls-verify=false", "--authfile"])
            .arg(authfile)
            .arg(&image);
        run(&mut cmd)
    };
    let empty = tmp.join("empty.json");
    fs::write(&empty, "{}").unwrap();
    let denied = pull(&empty);
    assert!(
        !denied.status.success(),
        "anonymous pull must fail: {}",
        output_text(&denied)
    );

    let authfile = tmp.join("auth.json");
    fs::write(
        &authfile,
        format!(
            "{{\"credHelpers\":{{\"{}\":\"ecr-login\"}}}}",
            registry.addr
        ),
    )
    .unwrap();
    let ok = pull(&authfile);
    assert!(ok.status.success(), "podman pull: {}", output_text(&ok));
    let mut images = podman(tmp.path());
    let listed = run_ok(lab_env(&mut images, &tmp, &moto.endpoint).args([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]));
    assert!(listed.contains(&image), "{listed}");
    // nothing cached: the token was already expired when issued
    let cached: Vec<_> = fs::read_dir(tmp.join("cache"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    assert!(cached.is_empty(), "expired token cached: {cached:?}");
}

#[test]
fn fifty_concurrent_cold_gets_make_one_api_call() {
    let lab = Lab::new();
    // Slow answers widen the window in which every helper finds the cache empty.
    lab.tokens.set_delay_ms(500);
    let helper = helper_path_dir(lab.tmp.path()).join("docker-credential-ecr-login");
    let children: Vec<_> = (0..50)
        .map(|_| {
            let mut cmd = Command::new(&helper);
            lab.env(&mut cmd)
                .arg("get")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(lab.registry.addr.as_bytes())
                .unwrap();
            child
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let password = lab.tokens.password();
    for o in &outputs {
        assert_eq!(secret_of(o), password);
    }
    assert_eq!(
        lab.tokens.calls(),
        1,
        "50 cold gets, one GetAuthorizationToken"
    );
    let files = lab.cache_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let meta = fs::metadata(&files[0]).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        fs::metadata(lab.cache_dir()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let entry: serde_json::Value =
        serde_json::from_slice(&fs::read(&files[0]).unwrap()).expect("intact cache JSON");
    assert_eq!(entry["password"], password.as_str());
    // no AWS key material in the cache
    let text = fs::read_to_string(&files[0]).unwrap();
    assert!(!text.contains("AKIAECRAUTHLABTEST00") && !text.contains("ecr-auth-lab-secret"));
}

#[test]
fn a_corrupt_cache_file_is_discarded_and_rewritten() {
    let lab = Lab::new();
    let first = secret_of(&lab.helper("get", &lab.registry.addr));
    let files = lab.cache_files();
    assert_eq!(files.len(), 1);
    for garbage in [
        &b"{\"version\":1,\"password\":"[..],
        b"\x00\xff\xfegarbage",
        b"",
    ] {
        fs::write(&files[0], garbage).unwrap();
        let o = lab.helper("get", &lab.registry.addr);
        assert_eq!(secret_of(&o), first, "stderr: {}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(&files[0]).unwrap()).expect("rewritten as JSON");
        assert_eq!(v["password"], first.as_str());
    }
    assert_eq!(lab.tokens.calls(), 4);
    // and a warm get after that is served from the cache
    secret_of(&lab.helper("get", &lab.registry.addr));
    assert_eq!(lab.tokens.calls(), 4);
}

/// Time moves by rewriting the cache entry (see `common::token_cache`), not by sleeping:
/// past half-life with AWS failing, the cached token is served with a warning; once
/// expired, the helper refuses with the reason on stdout.
#[test]
fn aws_failing_serves_a_valid_cached_token_then_refuses_an_expired_one() {
    let lab = Lab::new();
    let first = secret_of(&lab.helper("get", &lab.registry.addr));
    let entry = token_cache::only_entry(&lab.cache_dir());
    token_cache::age_entry(&entry, token_cache::TokenAge::PastHalfLife);
    lab.tokens.set_fail(Some("unavailable"));
    let o = lab.helper("get", &lab.registry.addr);
    assert_eq!(secret_of(&o), first, "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("cached ECR token"),
        "stderr: {}",
        stderr(&o)
    );
    assert!(lab.tokens.calls() >= 2, "AWS was asked again");
    assert_eq!(lab.tokens.issued(), 1, "and issued nothing");
    assert_eq!(
        token_cache::read_entry(&entry)["password"],
        first.as_str(),
        "the cached token stays"
    );

    // After expiry: refused, with the reason on stdout (docker shows it).
    token_cache::age_entry(&entry, token_cache::TokenAge::Expired);
    let o = lab.helper("get", &lab.registry.addr);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let out = stdout(&o);
    assert_ne!(out, NOT_FOUND);
    assert!(
        out.contains("expired at") && out.to_lowercase().contains("unavailable"),
        "stdout: {out}"
    );
    assert!(!out.contains(&first[..40]));
    assert!(!out.contains(&first[first.len() - 40..]));
}

#[test]
fn aws_failing_with_no_cache_is_a_clear_error_not_a_fallthrough() {
    let lab = Lab::new();
    lab.tokens.set_fail(Some("denied"));
    let o = lab.helper("get", &lab.registry.addr);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert_ne!(out, NOT_FOUND);
    assert!(
        out.contains("AccessDenied") && out.contains("ecr-auth"),
        "stdout: {out}"
    );
    assert!(lab.cache_files().is_empty());
}

#[test]
fn non_ecr_hosts_garbled_stdin_and_list() {
    let lab = Lab::new();
    for host in [
        "docker.io",
        "registry.gitlab.com",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
    ] {
        let o = lab.helper("get", host);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stdout(&o), NOT_FOUND, "{host}");
        assert!(
            stderr(&o).contains("not an Amazon ECR registry"),
            "{}",
            stderr(&o)
        );
    }
    // gitlab-runner swallows a helper's stderr: with ECR_AUTH_LOG_FILE the
    // reason lands in that file instead.
    let log_file = lab.tmp.join("helper.log");
    let mut cmd = Command::new(helper_path_dir(lab.tmp.path()).join("docker-credential-ecr-login"));
    let o = feed(
        lab.env(&mut cmd)
            .env("ECR_AUTH_LOG_FILE", &log_file)
            .arg("get"),
        "docker.io",
    );
    assert_eq!(stdout(&o), NOT_FOUND);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let logged = fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains("docker.io is not an Amazon ECR registry"),
        "{logged}"
    );

    // Strings that are not host names at all: see sick_aws::a_stdin_that_is_not_a_host_*.
    let mut cmd = Command::new(helper_path_dir(lab.tmp.path()).join("docker-credential-ecr-login"));
    let o2 = feed(lab.env(&mut cmd).arg("get"), b"\xff\xfe\xfd");
    assert_eq!(o2.status.code(), Some(1));
    assert!(stdout(&o2).contains("not UTF-8"), "{}", stdout(&o2));
    assert_eq!(lab.tokens.calls(), 0, "nothing reached AWS");

    // list: configured hosts, no network even when AWS is unreachable
    lab.tokens.set_fail(Some("unavailable"));
    let o = lab.helper("list", "unused\n");
    assert!(o.status.success(), "{}", output_text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[&lab.registry.addr], "AWS", "{v}");
    assert_eq!(lab.tokens.calls(), 0);
}

#[test]
fn no_aws_credentials_is_not_found_with_the_sources_on_stderr() {
    let tmp = TempDir::new("nocreds");
    let home = tmp.join("home");
    fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(helper_path_dir(tmp.path()).join("docker-credential-ecr-login"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    // Instance metadata pointed at a closed loopback port: the chain's last link fails at once.
    cmd.env("HOME", &home)
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .arg("get");
    let o = feed(&mut cmd, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), NOT_FOUND);
    let err = stderr(&o);
    assert!(
        err.contains("no AWS credentials found")
            && err.contains("AWS_ACCESS_KEY_ID")
            && err.contains("IMDS"),
        "{err}"
    );
}

#[test]
fn get_login_password_matches_the_aws_cli() {
    let moto = Moto::start();
    let tmp = TempDir::new("glp");
    write_config(
        &tmp.join("config.toml"),
        "mirror.internal:5000",
        "eu-west-1",
    );
    let mut ours = Command::new(bin());
    lab_env(&mut ours, &tmp, &moto.endpoint).args(["get-login-password", "--region", "eu-west-1"]);
    let ours = run_ok(&mut ours);
    assert_eq!(ours.trim(), MOTO_PASSWORD);
    let theirs = run_ok(
        moto.aws()
            .args(["ecr", "get-login-password", "--region", "eu-west-1"]),
    );
    assert_eq!(ours.trim(), theirs.trim());
    // by registry host, and through the config mapping
    for registry in [
        "123456789012.dkr.ecr.us-east-2.amazonaws.com",
        "mirror.internal:5000",
    ] {
        let mut cmd = Command::new(bin());
        lab_env(&mut cmd, &tmp, &moto.endpoint).args(["get-login-password", registry]);
        assert_eq!(run_ok(&mut cmd).trim(), MOTO_PASSWORD);
    }
    let mut cmd = Command::new(bin());
    let err = run_fails(
        lab_env(&mut cmd, &tmp, &moto.endpoint).args(["get-login-password", "docker.io"]),
    );
    assert!(err.contains("not an Amazon ECR registry"), "{err}");
}

#[test]
fn a_bad_config_file_is_reported_with_file_line_and_field() {
    let lab = Lab::new();
    fs::write(
        lab.tmp.join("config.toml"),
        "[[registry]]\nhost = \"x:1\"\naccount = \"123\"\nregion = \"eu-west-1\"\n",
    )
    .unwrap();
    let o = lab.helper("get", &lab.registry.addr);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("config.toml") && out.contains("line 3") && out.contains("account"),
        "{out}"
    );
}

#[test]
fn install_copies_the_helper_names_and_they_answer() {
    let lab = Lab::new();
    let dir = lab.tmp.join("bin");
    let listed = run_ok(Command::new(bin()).args(["install", "--dir"]).arg(&dir));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    for name in [
        "ecr-auth",
        "docker-credential-ecr-login",
        "docker-credential-ecr-auth",
    ] {
        let meta = fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is a copy");
    }
    let mut cmd = Command::new(dir.join("docker-credential-ecr-auth"));
    lab.env(&mut cmd).arg("get");
    assert_eq!(
        secret_of(&feed(&mut cmd, &lab.registry.addr)),
        lab.tokens.password()
    );
    let mut cmd = Command::new(dir.join("ecr-auth"));
    lab.env(&mut cmd).args(["docker-credential", "get"]);
    assert_eq!(
        secret_of(&feed(
            &mut cmd,
            format!("https://{}/v2/", lab.registry.addr)
        )),
        lab.tokens.password()
    );
}

#[test]
fn logs_at_every_level_never_show_tokens_or_keys() {
    let lab = Lab::new();
    let log_file = lab.tmp.join("helper.log");
    for level in ["debug", "trace"] {
        let mut cmd =
            Command::new(helper_path_dir(lab.tmp.path()).join("docker-credential-ecr-login"));
        lab.env(&mut cmd).env("ECR_AUTH_LOG", level).arg("get");
        let o = feed(&mut cmd, &lab.registry.addr);
        assert_eq!(secret_of(&o), lab.tokens.password());
        let mut cmd =
            Command::new(helper_path_dir(lab.tmp.path()).join("docker-credential-ecr-login"));
        lab.env(&mut cmd)
            .env("ECR_AUTH_LOG", level)
            .env("ECR_AUTH_LOG_FILE", &log_file)
            .env("AWS_ECR_DISABLE_CACHE", "1")
            .arg("get");
        let o2 = feed(&mut cmd, &lab.registry.addr);
        assert_eq!(secret_of(&o2), lab.tokens.password());
        assert!(
            stderr(&o2).is_empty(),
            "with a log file, stderr stays quiet: {}",
            stderr(&o2)
        );
        let logged = format!(
            "{}{}",
            stderr(&o),
            fs::read_to_string(&log_file).unwrap_or_default()
        );
        let password = lab.tokens.password();
        for secret in [
            &password[..24],
            "AKIAECRAUTHLABTEST00",
            "ecr-auth-lab-secret",
        ] {
            assert!(
                !logged.contains(secret),
                "{level} log shows a secret: {logged}"
            );
        }
    }
    let mode = fs::metadata(&log_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !fs::read_to_string(&log_file).unwrap().is_empty(),
        "debug logging wrote something"
    );
}

/// Per-registry credentials: a registry mapped with `role_arn` gets its token
/// with the assumed role's credentials, one with `profile` with that profile's
/// keys, and the rest with the default chain; each is its own cache entry.
#[test]
fn per_registry_role_and_profile_sign_their_own_token_calls() {
    let lab = Lab::new();
    let role = "arn:aws:iam::210987654321:role/ecr-pull";
    let home = lab.tmp.join("home");
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/credentials"),
        "[prod]\naws_access_key_id = AKIAPRODPROFILE00001\naws_secret_access_key = prod-secret\n",
    )
    .unwrap();
    fs::write(
        lab.tmp.join("config.toml"),
        format!(
            "[[registry]]\nhost = \"{}\"\naccount = \"{ACCOUNT}\"\nregion = \"eu-west-1\"\n\n\
             [[registry]]\nhost = \"cross.internal:5000\"\naccount = \"210987654321\"\nregion = \"eu-west-1\"\nrole_arn = \"{role}\"\n\n\
             [[registry]]\nhost = \"prod.internal:5000\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\nprofile = \"prod\"\n",
            lab.registry.addr
        ),
    )
    .unwrap();
    let run_get = |host: &str| {
        let mut cmd =
            Command::new(helper_path_dir(lab.tmp.path()).join("docker-credential-ecr-login"));
        lab.env(&mut cmd)
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join(".aws/credentials"))
            .arg("get");
        secret_of(&feed(&mut cmd, host))
    };
    run_get(&lab.registry.addr);
    run_get("cross.internal:5000");
    run_get("prod.internal:5000");
    run_get("cross.internal:5000"); // cached: no new call
    assert_eq!(lab.tokens.assumed_roles(), vec![role.to_string()]);
    assert_eq!(
        lab.tokens.callers(),
        vec![
            "AKIAECRAUTHLABTEST00".to_string(),
            TokenServer::role_access_key(role),
            "AKIAPRODPROFILE00001".to_string(),
        ]
    );
    assert_eq!(lab.cache_files().len(), 3, "one cache entry per identity");
}

/// ECR Public's token comes from its own API (us-east-1) and its own cache
/// entry; moto lacks that API, so the lab's token endpoint answers it.
#[test]
fn ecr_public_tokens_come_from_the_public_api() {
    let lab = Lab::new();
    let o = lab.helper("get", "https://public.ecr.aws/v2/");
    assert_eq!(secret_of(&o), lab.tokens.password());
    let mut cmd = Command::new(bin());
    lab.env(&mut cmd).args(["get-login-password", "--public"]);
    assert_eq!(run_ok(&mut cmd).trim(), lab.tokens.password());
    assert_eq!(
        lab.tokens.calls_in("us-east-1"),
        1,
        "the second answer came from the cache"
    );
    let files = lab.cache_files();
    assert_eq!(files.len(), 1);
    let entry: serde_json::Value = serde_json::from_slice(&fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(entry["scope"], "public/us-east-1");
}
