//! `ecr-auth doctor` against the lab: seeded misconfigurations, each asserting the
//! first failing step and its fix line, and the healthy case, all ✓.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use base64::Engine;

use crate::common::{self, Registry, TempDir, TokenServer};

const ACCOUNT: &str = "123456789012";

/// A healthy setup: the lab registry mapped to ECR, Docker config with
/// credHelpers, the helper on PATH, AWS pointed at the lab token server.
struct Lab {
    registry: Registry,
    ts: TokenServer,
    tmp: TempDir,
}

impl Lab {
    fn new() -> Lab {
        let ts = TokenServer::start();
        let registry = Registry::start(&ts.htpasswd);
        registry.push_test_image("team/app", "1.0", "AWS", &ts.password());
        let tmp = TempDir::new("doctor");
        let lab = Lab { registry, ts, tmp };
        lab.map(&lab.registry.addr.clone());
        lab.docker_config(
            &serde_json::json!({"credHelpers": {lab.registry.addr.clone(): "ecr-login"}}),
        );
        lab
    }

    fn map(&self, host: &str) {
        fs::write(
            self.tmp.join("config.toml"),
            format!("[[registry]]\nhost = \"{host}\"\naccount = \"{ACCOUNT}\"\nregion = \"eu-west-1\"\n"),
        )
        .unwrap();
    }

    fn docker_config(&self, doc: &serde_json::Value) {
        let dir = self.tmp.join("docker");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.json"), doc.to_string()).unwrap();
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(common::bin());
        let home = self.tmp.join("home");
        let run = self.tmp.join("run");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&run).unwrap();
        common::apply_aws_env(&mut cmd, &self.ts.endpoint)
            .env("HOME", &home)
            .env("ECR_AUTH_CONFIG", self.tmp.join("config.toml"))
            .env("ECR_AUTH_CACHE_DIR", self.tmp.join("cache"))
            .env("DOCKER_CONFIG", self.tmp.join("docker"))
            // podman's files: the primary one in XDG_RUNTIME_DIR, then ~/.config.
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("ECR_AUTH_TIMEOUT", "5s")
            .env(
                "PATH",
                common::path_with(&common::helper_path_dir(self.tmp.path())),
            )
            .env_remove("ECR_AUTH_BROKER")
            .env_remove("ECR_AUTH_LOG");
        cmd
    }

    fn doctor(&self, cmd: &mut Command, target: &str) -> (Output, serde_json::Value) {
        let out = cmd
            .args(["doctor", "--format", "json", target])
            .output()
            .unwrap();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", common::output_text(&out)));
        (out, json)
    }
}

/// `ecr-auth serve` on a socket in the lab's dir: AWS from the lab token server
/// (or, with `aws` false, no AWS credentials at all), the lab's config file (which
/// maps the registry to ECR), `--allow ALLOW`.
fn start_broker(lab: &Lab, name: &str, allow: &str, aws: bool) -> (common::Proc, String) {
    let socket = lab.tmp.join(format!("{name}.sock"));
    let mut cmd = Command::new(common::bin());
    common::apply_aws_env(&mut cmd, &lab.ts.endpoint);
    if !aws {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    }
    cmd.env("HOME", lab.tmp.join("home"))
        .env("ECR_AUTH_CONFIG", lab.tmp.join("config.toml"))
        .env_remove("ECR_AUTH_BROKER")
        .args(["serve", "--socket"])
        .arg(&socket)
        .args(["--allow", allow]);
    let mut proc = common::Proc::spawn(name, cmd, &lab.tmp.join(format!("{name}.log")));
    proc.wait_until(name, common::STARTUP_TIMEOUT, || {
        common::http_unix(&socket, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (proc, format!("unix://{}", socket.display()))
}

/// The id, evidence and fix of the first failing check, and the exit code.
fn first_failure(out: &Output, json: &serde_json::Value) -> (String, String, String) {
    assert_eq!(out.status.code(), Some(1), "{}", common::output_text(out));
    assert_eq!(json["ok"], false);
    let checks = json["registries"][0]["checks"].as_array().unwrap();
    let fail = checks
        .iter()
        .find(|c| c["status"] == "fail")
        .unwrap_or_else(|| panic!("no failing check: {json:#}"));
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    (s(&fail["id"]), s(&fail["evidence"]), s(&fail["fix"]))
}

fn assert_no_secret(lab: &Lab, out: &Output) {
    let all = common::output_text(out);
    let password = lab.ts.password();
    assert!(
        !all.contains(&password[..40]),
        "a password was printed: {all}"
    );
    assert!(
        !all.contains("ecr-auth-lab-secret"),
        "a secret key was printed: {all}"
    );
    assert!(
        !all.contains("AKIAECRAUTHLABTEST00"),
        "a whole access key id was printed: {all}"
    );
}

#[test]
fn the_healthy_case_passes_every_check_in_text_and_json() {
    let lab = Lab::new();
    let image = lab.registry.image("team/app", "1.0");
    let (out, json) = lab.doctor(&mut lab.command(), &image);
    assert_eq!(out.status.code(), Some(0), "{}", common::output_text(&out));
    assert_no_secret(&lab, &out);
    assert_eq!(json["ok"], true);
    assert_eq!(json["registries"][0]["registry"], image.as_str());
    let checks = json["registries"][0]["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["name", "wiring", "wiring", "helper", "identity", "clock", "token", "cache", "registry"]
    );
    for c in checks {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["evidence"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
        assert!(c.get("fix").is_none(), "{c}");
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "status", "evidence"]);
    }
    assert!(checks[2]["evidence"]
        .as_str()
        .unwrap()
        .starts_with("podman, skopeo, buildah: "));
    assert!(checks[4]["evidence"]
        .as_str()
        .unwrap()
        .contains(&format!("account {ACCOUNT}")));
    assert!(checks[8]["evidence"]
        .as_str()
        .unwrap()
        .contains("team/app:1.0 exists"));
    // The text form: a checklist of ✓, no colour when not on a terminal.
    let text = lab.command().args(["doctor", &image]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert_eq!(text.matches("  ✓ ").count(), 9, "{text}");
    assert!(
        text.ends_with("All checks passed.\n") && !text.contains('\x1b'),
        "{text}"
    );
}

#[test]
fn seeded_misconfigurations_name_the_first_broken_step() {
    let lab = Lab::new();
    let host = lab.registry.addr.clone();
    let image = lab.registry.image("team/app", "1.0");
    // A broker that hands out tokens for another registry only.
    let (_narrow, narrow_broker) = start_broker(
        &lab,
        "narrow",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        true,
    );
    // A broker allowed this registry but holding no AWS credentials.
    let (_bare, bare_broker) = start_broker(&lab, "bare", &host, false);
    // A second token endpoint, whose tokens the lab's registry does not trust.
    let other_tokens = TokenServer::start();
    type Setup<'a> = Box<dyn Fn(&Lab, &mut Command) -> String + 'a>;
    let cases: Vec<(&str, Setup, &str, &str, &str)> = vec![
        (
            "helper not on PATH",
            Box::new(|l, cmd| {
                let empty = l.tmp.join("empty-bin");
                fs::create_dir_all(&empty).unwrap();
                cmd.env("PATH", &empty);
                image.clone()
            }),
            "helper",
            "docker-credential-ecr-login, which is not on PATH",
            "ecr-auth install --dir /usr/local/bin",
        ),
        (
            "credHelpers names a helper with no binary",
            Box::new(|l, _| {
                l.docker_config(&serde_json::json!({"credHelpers": {host.clone(): "ecr-nope"}}));
                image.clone()
            }),
            "helper",
            "credHelpers names docker-credential-ecr-nope, which is not on PATH",
            "ecr-auth install",
        ),
        (
            "credsStore ecr-login but only docker-credential-ecr-auth installed",
            Box::new(|l, cmd| {
                let dir = l.tmp.join("only-ecr-auth");
                fs::create_dir_all(&dir).unwrap();
                let _ = fs::remove_file(dir.join("docker-credential-ecr-auth"));
                std::os::unix::fs::symlink(common::bin(), dir.join("docker-credential-ecr-auth")).unwrap();
                cmd.env("PATH", &dir);
                l.docker_config(&serde_json::json!({"credsStore": "ecr-login"}));
                image.clone()
            }),
            "helper",
            "(only docker-credential-ecr-auth is)",
            "installs docker-credential-ecr-login and docker-credential-ecr-auth",
        ),
        (
            "a stale static auths entry instead of the helper",
            Box::new(|l, _| {
                let b64 = base64::engine::general_purpose::STANDARD;
                let inner = b64.encode(r#"{"payload":"x","datakey":"y","version":"2","type":"DATA_KEY","expiration":1600000000}"#);
                let auth = b64.encode(format!("AWS:{inner}"));
                l.docker_config(&serde_json::json!({"auths": {host.clone(): {"auth": auth}}}));
                image.clone()
            }),
            "wiring",
            "holding an ECR token that expired at 2020-09-13T12:26:40Z",
            "remove that auths entry and use the helper: ecr-auth configure docker --registry",
        ),
        (
            "no wiring at all",
            Box::new(|l, _| {
                l.docker_config(&serde_json::json!({"auths": {}}));
                image.clone()
            }),
            "wiring",
            "neither sends",
            "ecr-auth configure docker --registry",
        ),
        (
            "host neither ECR nor mapped",
            Box::new(|_, _| "registry.example.org/team/app:1.0".to_string()),
            "name",
            "registry.example.org is not an Amazon ECR registry and no [[registry]] entry",
            "map this name with a [[registry]] entry",
        ),
        (
            "a look-alike host",
            Box::new(|_, _| "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example".to_string()),
            "name",
            "looks like an ECR host but is not one",
            "use the registry's ECR name",
        ),
        (
            "region typo",
            Box::new(|_, _| "123456789012.dkr.ecr.eu-wset-1.amazonaws.com".to_string()),
            "name",
            "region \"eu-wset-1\" does not exist",
            "did you mean eu-west-1?",
        ),
        (
            "no AWS credentials at all",
            Box::new(|_, cmd| {
                cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
                image.clone()
            }),
            "identity",
            "no AWS credentials found; tried environment variables",
            "give this user AWS credentials",
        ),
        (
            "a profile that does not exist",
            Box::new(|l, cmd| {
                let cfg = l.tmp.join("aws-config");
                fs::write(&cfg, "[profile other]\nregion = eu-west-1\n").unwrap();
                cmd.env_remove("AWS_ACCESS_KEY_ID")
                    .env_remove("AWS_SECRET_ACCESS_KEY")
                    .env("AWS_CONFIG_FILE", &cfg)
                    .env("AWS_PROFILE", "nope");
                image.clone()
            }),
            "identity",
            "nope",
            "",
        ),
        (
            "AWS answers AccessDenied",
            Box::new(|l, _| {
                l.ts.set_fail(Some("denied"));
                image.clone()
            }),
            "token",
            "AWS answered AccessDeniedException: User: arn:aws:iam::123456789012:user/lab is not authorized to perform: ecr:GetAuthorizationToken",
            "",
        ),
        (
            "clock skew",
            Box::new(|l, _| {
                l.ts.control("POST", "/_lab/config", r#"{"date_offset_s": 3600}"#);
                image.clone()
            }),
            "clock",
            "this machine's clock is 1h",
            "set the clock right",
        ),
        (
            "the registry rejects the token (another account's token)",
            Box::new(|_, cmd| {
                // Tokens come from another endpoint than the registry trusts.
                common::apply_aws_env(cmd, &other_tokens.endpoint);
                image.clone()
            }),
            "registry",
            "with the token: 401 (the registry rejected it)",
            "the token is for another account or region",
        ),
        (
            "registry unreachable",
            Box::new(|l, _| {
                let closed = format!("127.0.0.1:{}", common::free_port());
                l.map(&closed);
                l.docker_config(&serde_json::json!({"credHelpers": {closed.clone(): "ecr-login"}}));
                format!("{closed}/team/app:1.0")
            }),
            "registry",
            "connection refused",
            "nothing listens there",
        ),
        (
            "the image does not exist",
            Box::new(|l, _| l.registry.image("team/app", "9.9")),
            "registry",
            "no manifest \"9.9\" (HEAD answered 404)",
            "check the repository and tag",
        ),
        (
            "cache directory of another user, world-writable",
            Box::new(|l, _| {
                let cache = l.tmp.join("cache");
                fs::create_dir_all(&cache).unwrap();
                fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
                std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
                image.clone()
            }),
            "cache",
            "belongs to uid 65534",
            "set ECR_AUTH_CACHE_DIR to a directory of this user",
        ),
        (
            "the broker does not allow this registry",
            Box::new(|_, cmd| {
                cmd.env("ECR_AUTH_BROKER", &narrow_broker);
                image.clone()
            }),
            "broker",
            "is not in this broker's allow-list",
            "ecr-auth serve --allow",
        ),
        (
            "the broker has no AWS credentials",
            Box::new(|_, cmd| {
                cmd.env("ECR_AUTH_BROKER", &bare_broker);
                image.clone()
            }),
            "broker",
            "has no token for",
            "the broker lacks AWS credentials",
        ),
        (
            "broker socket missing",
            Box::new(|l, cmd| {
                cmd.env("ECR_AUTH_BROKER", format!("unix://{}", l.tmp.join("no-broker.sock").display()));
                image.clone()
            }),
            "broker",
            "no-broker.sock does not exist",
            "start the broker",
        ),
    ];
    let mut seen = Vec::new();
    for (what, setup, id, evidence, fix) in &cases {
        // Back to healthy before each case.
        lab.ts.set_fail(None);
        lab.ts
            .control("POST", "/_lab/config", r#"{"date_offset_s": 0}"#);
        lab.map(&host);
        lab.docker_config(&serde_json::json!({"credHelpers": {host.clone(): "ecr-login"}}));
        let cache = lab.tmp.join("cache");
        let _ = fs::remove_dir_all(&cache);
        let mut cmd = lab.command();
        let target = setup(&lab, &mut cmd);
        let (out, json) = lab.doctor(&mut cmd, &target);
        assert_no_secret(&lab, &out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: {}",
            common::output_text(&out)
        );
        let (got_id, got_evidence, got_fix) = first_failure(&out, &json);
        assert_eq!(&got_id, id, "{what}: {json:#}");
        assert!(
            got_evidence.contains(evidence),
            "{what}: evidence {got_evidence:?}"
        );
        assert!(
            got_fix.contains(fix) && !got_fix.is_empty(),
            "{what}: fix {got_fix:?}"
        );
        seen.push(got_id);
    }
    // Every step a pull meets is the first broken one in some case.
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        ["broker", "cache", "clock", "helper", "identity", "name", "registry", "token", "wiring"]
    );
}

/// podman, skopeo and buildah search other files than docker (containers-auth.json(5)):
/// doctor names the file they take the host from, and real skopeo, given the same
/// environment, agrees — it pulls through the file doctor passes and is refused
/// by the stale entry doctor fails.
#[test]
fn the_containers_auth_json_in_effect_is_the_one_skopeo_uses() {
    let lab = Lab::new();
    let host = lab.registry.addr.clone();
    let image = lab.registry.image("team/app", "1.0");
    let skopeo_inspect = || {
        let mut cmd = common::skopeo(lab.tmp.path());
        // The doctor's environment exactly: HOME, XDG_RUNTIME_DIR, PATH, AWS, config.
        for (k, v) in lab.command().get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        common::run(
            cmd.args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
                .arg(format!("docker://{image}")),
        )
    };

    // Docker knows nothing of the host; ~/.config/containers/auth.json sends it to the helper.
    lab.docker_config(&serde_json::json!({"auths": {}}));
    let user_file = lab.tmp.join("home/.config/containers/auth.json");
    fs::create_dir_all(user_file.parent().unwrap()).unwrap();
    fs::write(
        &user_file,
        serde_json::json!({"credHelpers": {host.clone(): "ecr-login"}}).to_string(),
    )
    .unwrap();
    let (out, json) = lab.doctor(&mut lab.command(), &image);
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    let checks = &json["registries"][0]["checks"];
    assert_eq!(checks[1]["status"], "warn", "docker is not wired: {json:#}");
    assert_eq!(checks[2]["status"], "ok", "{json:#}");
    assert_eq!(
        checks[2]["evidence"],
        format!(
            "podman, skopeo, buildah: {} (~/.config/containers) sends {host} to docker-credential-ecr-login (credHelpers)",
            user_file.display()
        )
    );
    assert_eq!(checks[3]["id"], "helper");
    assert_eq!(checks[3]["status"], "ok");
    let pulled = skopeo_inspect();
    assert!(
        pulled.status.success(),
        "skopeo: {}",
        common::output_text(&pulled)
    );

    // A stale `podman login` in the primary file ($XDG_RUNTIME_DIR) comes first.
    let b64 = base64::engine::general_purpose::STANDARD;
    let inner = b64.encode(
        r#"{"payload":"x","datakey":"y","version":"2","type":"DATA_KEY","expiration":1600000000}"#,
    );
    let primary = lab.tmp.join("run/containers/auth.json");
    fs::create_dir_all(primary.parent().unwrap()).unwrap();
    fs::write(
        &primary,
        serde_json::json!({"auths": {host.clone(): {"auth": b64.encode(format!("AWS:{inner}"))}}})
            .to_string(),
    )
    .unwrap();
    let (out, json) = lab.doctor(&mut lab.command(), &image);
    let (id, evidence, fix) = first_failure(&out, &json);
    assert_eq!(id, "wiring");
    assert!(
        evidence.starts_with(&format!(
            "podman, skopeo, buildah: {} (the primary file, in $XDG_RUNTIME_DIR) has a static auths entry for {host} holding an ECR token that expired at 2020-09-13T12:26:40Z",
            primary.display()
        )),
        "{evidence}"
    );
    assert!(fix.starts_with("remove that auths entry"), "{fix}");
    let refused = skopeo_inspect();
    assert!(
        !refused.status.success(),
        "skopeo pulled with a stale entry"
    );
    let said = common::output_text(&refused).to_lowercase();
    assert!(
        said.contains("unauthorized") || said.contains("authentication required"),
        "{said}"
    );
}

/// A job's view: no AWS anything and no ecr-auth config file, only the broker
/// socket. Every check passes, the broker's answer is named (its expiry, never the
/// token), and the registry accepts the token it handed out.
#[test]
fn the_healthy_case_through_a_broker() {
    let lab = Lab::new();
    let host = lab.registry.addr.clone();
    let image = lab.registry.image("team/app", "1.0");
    let (_broker, url) = start_broker(&lab, "broker", &host, true);
    let job_config = lab.tmp.join("job-config.toml");
    fs::write(&job_config, "").unwrap();
    let mut cmd = lab.command();
    let aws: Vec<std::ffi::OsString> = cmd
        .get_envs()
        .map(|(k, _)| k.to_os_string())
        .chain(std::env::vars_os().map(|(k, _)| k))
        .filter(|k| k.to_string_lossy().starts_with("AWS_"))
        .collect();
    for k in aws {
        cmd.env_remove(k);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true") // no instance metadata either
        .env("ECR_AUTH_CONFIG", &job_config)
        .env("ECR_AUTH_BROKER", &url);
    let (out, json) = lab.doctor(&mut cmd, &image);
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    assert_no_secret(&lab, &out);
    let checks = json["registries"][0]["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["name", "wiring", "wiring", "helper", "broker", "token", "registry"]
    );
    for c in checks {
        assert_eq!(c["status"], "ok", "{c}");
    }
    let evidence = |i: usize| checks[i]["evidence"].as_str().unwrap().to_string();
    assert!(
        evidence(0).contains(&format!("the broker at {url} decides")),
        "{}",
        evidence(0)
    );
    let socket = url.trim_start_matches("unix://");
    assert!(
        evidence(4).starts_with(&format!(
            "the broker at {socket} allows {host}: it answered a token valid until "
        )),
        "{}",
        evidence(4)
    );
    assert!(
        evidence(6).contains("team/app:1.0 exists"),
        "{}",
        evidence(6)
    );

    // --broker names the socket instead of ECR_AUTH_BROKER (a bare path works too).
    let out = lab
        .command()
        .args(["doctor", "--broker", socket, "--format", "json", &image])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["registries"][0]["checks"][4]["id"], "broker",
        "{json:#}"
    );
    assert_eq!(
        json["registries"][0]["checks"][4]["status"], "ok",
        "{json:#}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let tmp = TempDir::new("doctor-usage");
    let out = Command::new(common::bin())
        .env("HOME", tmp.path())
        .env_remove("ECR_AUTH_CONFIG")
        .env("XDG_CONFIG_HOME", tmp.join("config"))
        .env("DOCKER_CONFIG", tmp.join("docker"))
        .args(["doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no registry to check"));
    let out = Command::new(common::bin())
        .args(["doctor", "--format", "yaml", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn runner_checks_sit_beside_the_registries() {
    let lab = Lab::new();
    let host = lab.registry.addr.clone();
    let config = lab.tmp.join("runner-config.toml");
    let write = |auth: &str| {
        fs::write(
            &config,
            format!(
                "concurrent = 1\n[[runners]]\n  name = \"ci\"\n  executor = \"docker\"\n  environment = ['DOCKER_AUTH_CONFIG={auth}']\n  [runners.docker]\n    privileged = false\n"
            ),
        )
        .unwrap()
    };
    write(&format!(r#"{{"credHelpers":{{"{host}":"ecr-login"}}}}"#));
    let run = || {
        let out = lab
            .command()
            .args(["doctor", "--format", "json", "--gitlab-runner-config"])
            .arg(&config)
            .arg(&host)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", common::output_text(&out)));
        (out, json)
    };
    let (out, json) = run();
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    assert_eq!(json["runner"][0]["id"], "runner");
    assert_eq!(json["runner"][0]["status"], "ok", "{json:#}");
    assert!(json["runner"][0]["evidence"]
        .as_str()
        .unwrap()
        .contains("would replace this one entirely"));

    write(r#"{"credHelpers":"#);
    let (out, json) = run();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json["ok"], false);
    assert_eq!(
        json["registries"][0]["checks"][0]["status"], "ok",
        "the registry itself is fine"
    );
    assert_eq!(json["runner"][0]["status"], "fail");
    assert!(
        json["runner"][0]["evidence"]
            .as_str()
            .unwrap()
            .contains("DOCKER_AUTH_CONFIG in environment is not valid JSON"),
        "{json:#}"
    );
    assert!(json["runner"][0]["fix"]
        .as_str()
        .unwrap()
        .contains("ecr-auth configure gitlab-runner"));
}

/// `doctor --swarm` on the lab's one-node Swarm (a real dockerd, the Swarm lab of the
/// `swarm_*` tests). The refresher is the example stack itself (`examples/swarm/stack.yml`,
/// deployed as `swarm_deploy.rs` deploys it), not a plain `ecr-auth swarm refresh`
/// process: doctor has to find the service the way users deploy it, and a process outside
/// the Swarm is no service at all. Its metrics listen on 127.0.0.1 (host network), so
/// doctor asks its /healthz.
#[test]
fn swarm_checks_on_the_lab_swarm() {
    use crate::swarm_support::{get, wait_until, Lab as SwarmLab, CONVERGE};
    let lab = SwarmLab::start();
    let host = lab.registry.addr.clone();
    let image = lab.push("app", "1");
    lab.login();
    let auth = "--with-registry-auth";
    lab.create_service("app", &[auth, &image, "sleep", "100000"]);
    lab.create_service("once", &[auth, "--mode", "replicated-job", &image, "true"]);
    lab.create_service("paused", &[auth, &image, "sleep", "100000"]);
    lab.wait_running("paused", 1);
    // A failing update with failure action "pause": the task exits at once.
    lab.docker(&[
        "service",
        "update",
        "-d",
        "--update-failure-action",
        "pause",
        "--update-monitor",
        "2s",
        "--args",
        "false",
        "paused",
    ]);
    assert!(
        wait_until(CONVERGE, || lab.service("paused")["UpdateStatus"]["State"]
            == "paused"),
        "the update did not pause: {}",
        lab.service("paused")["UpdateStatus"]
    );
    let doctor = |extra: &[&str]| {
        let out = lab
            .ecr_auth()
            .env_remove("ECR_AUTH_LOG")
            .env("ECR_AUTH_TIMEOUT", "5s")
            .args(["doctor", "--swarm", "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", common::output_text(&out)));
        (out.status.code(), json)
    };
    let find = |json: &serde_json::Value, needle: &str| -> serde_json::Value {
        json["swarm"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["evidence"].as_str().unwrap().contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no swarm check says {needle:?}: {json:#}"))
    };

    // No refresher yet: that is the broken link.
    let (code, json) = doctor(&[]);
    assert_eq!(code, Some(1), "{json:#}");
    assert_eq!(
        json["registries"],
        serde_json::json!([]),
        "--swarm alone checks the Swarm"
    );
    let swarm = json["swarm"].as_array().unwrap();
    assert_eq!(swarm[0]["status"], "ok");
    assert!(
        swarm[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("is the Swarm's leader manager (this node, "),
        "{json:#}"
    );
    assert_eq!(swarm[1]["status"], "ok");
    let on_ecr = swarm[1]["evidence"].as_str().unwrap();
    assert!(
        on_ecr.starts_with("3 service(s) pull from ECR: "),
        "{on_ecr}"
    );
    for name in ["app", "once", "paused"] {
        assert!(on_ecr.contains(&format!("{name} ({host})")), "{on_ecr}");
    }
    assert_eq!(swarm[2]["status"], "fail", "{json:#}");
    assert!(swarm[2]["evidence"]
        .as_str()
        .unwrap()
        .starts_with("no refresher"));
    assert!(swarm[2]["fix"]
        .as_str()
        .unwrap()
        .starts_with("deploy the refresher: docker stack deploy -c examples/swarm/stack.yml"));
    let paused = find(&json, "service paused pulls from");
    assert_eq!(paused["status"], "warn");
    assert!(
        paused["evidence"]
            .as_str()
            .unwrap()
            .contains("its update is paused"),
        "{paused}"
    );
    assert!(paused["fix"]
        .as_str()
        .unwrap()
        .contains("docker service update --rollback paused"));
    let job = find(&json, "service once pulls from");
    assert_eq!(job["status"], "warn");
    assert!(
        job["evidence"].as_str().unwrap().contains("ReplicatedJob"),
        "{job}"
    );
    assert_eq!(swarm.len(), 5, "{json:#}");

    // The example stack's refresher: found, running, healthy by its /healthz.
    let port = lab.deploy_example_stack("ecr");
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    assert!(
        wait_until(CONVERGE, || get(&healthz).0 == 200),
        "the refresher did not come up: {}",
        lab.task_errors("ecr_ecr-auth")
    );
    let (code, json) = doctor(&[]);
    assert_eq!(code, Some(0), "warnings only: {json:#}");
    let refresher = find(
        &json,
        "the refresher ecr_ecr-auth (stack ecr) runs (1 task(s))",
    );
    assert_eq!(refresher["status"], "ok");
    assert!(
        refresher["evidence"]
            .as_str()
            .unwrap()
            .contains(&format!("{healthz} answers \"ok: ")),
        "{refresher}"
    );
    assert_eq!(find(&json, "service paused pulls from")["status"], "warn");
    // The documented shape: {"ok", "registries", "swarm": [{"id", "status", "evidence", "fix"?}]}.
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ok", "registries", "swarm"]);
    for c in json["swarm"].as_array().unwrap() {
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        match c["status"].as_str().unwrap() {
            "ok" | "skip" => assert_eq!(keys, ["id", "status", "evidence"], "{c}"),
            "warn" | "fail" => assert_eq!(keys, ["id", "status", "evidence", "fix"], "{c}"),
            other => panic!("status {other:?} is not documented: {c}"),
        }
        assert_eq!(c["id"], "swarm");
    }
    // The checklist shows them under their own heading.
    let text = lab
        .ecr_auth()
        .env_remove("ECR_AUTH_LOG")
        .args(["doctor", "--swarm"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.starts_with("swarm\n  ✓ swarm     "), "{text}");
    assert!(
        text.contains("\n  ! swarm     service paused pulls from"),
        "{text}"
    );
    assert!(text.ends_with("All checks passed.\n"), "{text}");

    // A daemon that accepts connections and never answers: a timeout, in seconds.
    let mute = lab.tmp.join("mute.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&mute).unwrap();
    let (code, json) = doctor(&["--docker-host", &format!("unix://{}", mute.display())]);
    assert_eq!(code, Some(1), "{json:#}");
    let evidence = json["swarm"][0]["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("did not answer GET /info within 5s"),
        "{evidence}"
    );

    // Not in a Swarm (any more).
    lab.docker(&["swarm", "leave", "--force"]);
    let (code, json) = doctor(&[]);
    assert_eq!(code, Some(1), "{json:#}");
    assert_eq!(json["swarm"].as_array().unwrap().len(), 1, "{json:#}");
    assert!(
        json["swarm"][0]["evidence"]
            .as_str()
            .unwrap()
            .ends_with("is not in a Swarm (its state: inactive)"),
        "{json:#}"
    );
    assert!(json["swarm"][0]["fix"]
        .as_str()
        .unwrap()
        .starts_with("run ecr-auth doctor --swarm on a manager"));
}
