//! The broker's deployment examples in `examples/broker`, run against the lab:
//!
//! - `ecr-auth-broker.service`: `systemd-analyze verify` finds nothing to say about it
//!   (there is no systemd running here to start it), and its `ExecStart`, `Environment`
//!   and `RuntimeDirectory` lines, run as systemd would run them with `config.toml`,
//!   give the socket the documented mode and group and serve both registries of the
//!   example config, one pull-only and one with push.
//! - `examples/gitlab/runner/docker-compose.yaml` (the seeds' runner layout: the broker
//!   beside gitlab-runner, sharing the socket through a volume) and `stack.yml` (the same
//!   on Swarm, with `config.toml`): no `docker compose` is installed here,
//!   so the Compose file is deployed as what `docker stack deploy -c` makes of it, on the
//!   lab's one-node Swarm. The broker image is `examples/swarm/build-image`'s FROM scratch
//!   image of the static binary; gitlab-runner is a FROM scratch busybox stand-in (no
//!   image can be pulled here) that keeps the example's mounts and environment. Both
//!   deployments serve the runner container through the shared volume and the host
//!   through the socket in the host's directory (where job containers get it from).
//!
//! Lab-only differences come from a second compose file: host networking (the token
//! endpoint is on 127.0.0.1) and the endpoint's address; the paths on the host are the
//! examples' own `${VAR:-default}` variables.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, *};
use crate::swarm_support::wait_until;

/// The hosts of examples/broker/config.toml: pull-only through a role, and push.
const PULL_ONLY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const PUSH: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
const PULL_ROLE: &str = "arn:aws:iam::123456789012:role/ecr-broker-pull";
const CONVERGE: Duration = Duration::from_secs(120);

fn example(name: &str) -> PathBuf {
    common::repo_root().join("examples/broker").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(example(name)).unwrap_or_else(|e| panic!("examples/broker/{name}: {e}"))
}

/// `KEY=VALUE` lines of the unit's `[Service]` section, in order.
fn service_lines(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

fn gid_of(group: &str) -> u32 {
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    groups
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&group)).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no group {group} in /etc/group (docker.io creates it)"))
}

/// The token the socket at `socket` hands out for `host` (200 expected).
fn token(socket: &Path, host: &str) -> serde_json::Value {
    let r = http_unix(
        socket,
        "GET",
        &format!("/v1/token?registry={host}"),
        &[],
        b"",
    )
    .unwrap_or_else(|e| panic!("broker at {}: {e}", socket.display()));
    assert_eq!(r.status, 200, "{host}: {}", r.text());
    r.json()
}

fn healthy(socket: &Path) -> bool {
    http_unix(socket, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
}

#[test]
fn the_systemd_unit_verifies_and_its_exec_start_serves_with_the_documented_socket() {
    let unit = read("ecr-auth-broker.service");
    let tmp = TempDir::new("broker-systemd");
    // Where the unit's absolute paths live in the lab.
    let bin = common::bin().display().to_string();
    let lab = |s: &str| {
        s.replace("/usr/local/bin/ecr-auth", &bin)
            .replace(
                "/run/ecr-auth",
                &tmp.join("run/ecr-auth").display().to_string(),
            )
            .replace(
                "/etc/ecr-auth",
                &tmp.join("etc/ecr-auth").display().to_string(),
            )
    };

    // systemd's own check: the unit as written, the binary at its lab path (verify
    // insists that ExecStart's program exists). It exits 0 even for unknown keys or bad
    // values, so the check is that it says nothing at all.
    let verify_dir = tmp.join("verify");
    std::fs::create_dir_all(&verify_dir).unwrap();
    let verify_unit = verify_dir.join("ecr-auth-broker.service");
    std::fs::write(&verify_unit, unit.replace("/usr/local/bin/ecr-auth", &bin)).unwrap();
    let out = common::run(
        Command::new(tool("systemd-analyze"))
            .args(["verify", "--man=no"])
            .arg(&verify_unit),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        output_text(&out)
    );

    // What systemd does on start: the runtime directory with its mode, the
    // environment, ExecStart (no shell: split on spaces, as the unit has no quoting).
    let lines = service_lines(&unit);
    let get = |key: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(get("RuntimeDirectory"), vec!["ecr-auth".to_string()]);
    let mode = u32::from_str_radix(&get("RuntimeDirectoryMode")[0], 8).unwrap();
    let run_dir = tmp.join("run/ecr-auth");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::set_permissions(tmp.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(mode)).unwrap();
    let config_dir = tmp.join("etc/ecr-auth");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("config.toml"), lab(&read("config.toml"))).unwrap();

    let tokens = TokenServer::start();
    let exec: Vec<String> = lab(&get("ExecStart")[0])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut cmd = Command::new(&exec[0]);
    common::apply_aws_env(&mut cmd, &tokens.endpoint);
    cmd.env_remove("ECR_AUTH_CONFIG")
        .env_remove("ECR_AUTH_BROKER")
        .env("HOME", tmp.join("home"))
        .args(&exec[1..]);
    for env in get("Environment") {
        let (k, v) = env.split_once('=').unwrap();
        cmd.env(k, lab(v));
    }
    let mut broker = Proc::spawn("broker (systemd unit)", cmd, &tmp.join("broker.log"));
    let socket = run_dir.join("broker.sock");
    if let Err(e) = broker.wait_until("broker", STARTUP_TIMEOUT, || healthy(&socket)) {
        panic!("{e}");
    }

    // The documented socket: mode 0660, the config's group, in a directory nobody else writes.
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket(), "not a socket");
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), gid_of("docker"));
    assert_eq!(
        std::fs::metadata(&run_dir).unwrap().mode() & 0o7777,
        mode,
        "RuntimeDirectoryMode"
    );

    // Both registries of the example config: the pull-only one through its role.
    token(&socket, PULL_ONLY);
    token(&socket, PUSH);
    assert_eq!(tokens.assumed_roles(), vec![PULL_ROLE.to_string()]);
    assert_eq!(tokens.calls(), 2);
    let r = http_unix(
        &socket,
        "GET",
        "/v1/token?registry=111111111111.dkr.ecr.eu-west-1.amazonaws.com",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());

    // KillSignal within TimeoutStopSec: the broker exits and removes its socket.
    assert_eq!(get("KillSignal"), vec!["SIGTERM".to_string()]);
    let grace: u64 = get("TimeoutStopSec")[0].parse().unwrap();
    broker.stop(Duration::from_secs(grace));
    assert!(!socket.exists(), "SIGTERM removes the socket");
}

/// The stand-in for gitlab-runner: FROM scratch, static busybox, a shell and a
/// long sleep. The example's mounts give it the helper and the socket.
fn runner_standin(dockerd: &Dockerd) -> String {
    let base = dockerd.busybox_image();
    dockerd.build_image(
        "lab/gitlab-runner-standin:latest",
        &[],
        &format!("FROM {base}\nENV PATH=/usr/local/bin:/bin\nCMD [\"sleep\", \"100000\"]\n"),
    );
    "lab/gitlab-runner-standin:latest".into()
}

/// The running container of a stack's service.
fn container_of(dockerd: &Dockerd, service: &str) -> String {
    let mut id = String::new();
    wait_until(CONVERGE, || {
        id = common::run_ok(dockerd.docker().args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]))
        .trim()
        .to_string();
        !id.is_empty() && !id.contains('\n')
    });
    assert!(!id.is_empty(), "no running container of {service}");
    id
}

fn service_logs(dockerd: &Dockerd, service: &str) -> String {
    let out = common::run(dockerd.docker().args(["service", "logs", "--raw", service]));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// What a deployed broker must do: its socket in the host's directory, serving the
/// host (job containers mount it from there) and the runner container through the
/// shared mount; the runner has no AWS anything; stack rm removes the socket.
/// What is asked and expected of one deployment.
struct Expect<'a> {
    stack: &'a str,
    runner_service: &'a str,
    /// Asked from the host, then from the runner container.
    host_asks: &'a str,
    runner_asks: &'a str,
    assumed_roles: &'a [&'a str],
    aws_calls: u64,
}

fn check_deployment(
    dockerd: &Dockerd,
    tokens: &TokenServer,
    expect: &Expect,
    run_dir: &Path,
    tmp: &Path,
) {
    let stack = expect.stack;
    let socket = run_dir.join("broker.sock");
    let up = wait_until(CONVERGE, || healthy(&socket));
    assert!(
        up,
        "{stack}: no broker on {}:\n{}",
        socket.display(),
        service_logs(dockerd, &format!("{stack}_ecr-auth-broker"))
    );
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660, "{stack}");
    assert_eq!(meta.gid(), 0, "{stack}: --group 0");

    // The host: the helper with nothing but the socket, as in a job container.
    tokens.reset_calls();
    let home = tmp.join(format!("{stack}-home"));
    let mut cmd = Command::new(common::bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_")
            || key.to_string_lossy().starts_with("ECR_AUTH")
        {
            cmd.env_remove(key);
        }
    }
    let out = common::run(
        cmd.env("HOME", &home)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ECR_AUTH_BROKER", format!("unix://{}", socket.display()))
            .args(["get-login-password", expect.host_asks]),
    );
    assert!(out.status.success(), "{stack}: {}", output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tokens.password()
    );

    // The runner container: its own ECR_AUTH_BROKER, the helper and the shared volume.
    let runner = container_of(dockerd, &format!("{stack}_{}", expect.runner_service));
    let mut exec = dockerd.docker();
    exec.args(["exec", "-i", &runner, "docker-credential-ecr-login", "get"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = exec.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(expect.runner_asks.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{stack} runner: {}",
        output_text(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Secret"], tokens.password().as_str(), "{stack}");
    assert_eq!(v["ServerURL"], expect.runner_asks);
    let env = common::run_ok(dockerd.docker().args([
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &runner,
    ]));
    assert!(!env.contains("AWS_"), "{stack} runner env: {env}");
    assert!(
        env.contains("ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock"),
        "{env}"
    );
    let mounts =
        common::run_ok(
            dockerd
                .docker()
                .args(["inspect", "--format", "{{json .Mounts}}", &runner]),
        );
    assert!(!mounts.contains("aws"), "{stack} runner mounts: {mounts}");

    // The broker's AWS calls; a pull-only registry's through its role. The audit
    // names the runner's request.
    assert_eq!(tokens.calls(), expect.aws_calls, "{stack}");
    assert_eq!(tokens.assumed_roles(), expect.assumed_roles, "{stack}");
    let log = service_logs(dockerd, &format!("{stack}_ecr-auth-broker"));
    assert!(
        log.contains(&format!("registry=\"{}\" result=token", expect.runner_asks)),
        "{stack}: {log}"
    );
    assert!(
        !log.contains(&tokens.password()[..40]),
        "{stack}: a token in the log"
    );

    // Removing the stack stops the broker with SIGTERM: it removes its socket.
    common::run_ok(dockerd.docker().args(["stack", "rm", stack]));
    let gone = wait_until(CONVERGE, || !socket.exists());
    assert!(gone, "{stack}: the socket outlived the broker");
}

#[test]
fn the_compose_service_and_the_swarm_stack_serve_the_runner_and_the_host_through_the_shared_socket()
{
    let static_bin = common::static_bin();
    let tokens = TokenServer::start();
    let dockerd = Dockerd::start();
    dockerd.swarm_init();
    let tmp = TempDir::new("broker-deploy");
    let node = common::run_ok(
        dockerd
            .docker()
            .args(["info", "--format", "{{.Swarm.NodeID}}"]),
    );
    common::run_ok(dockerd.docker().args([
        "node",
        "update",
        "--label-add",
        "gitlab-runner=true",
        node.trim(),
    ]));

    // The images: the FROM scratch broker image of the example, the runner stand-in.
    let out = common::run(
        Command::new(common::repo_root().join("examples/swarm/build-image"))
            .arg("lab/ecr-auth:broker")
            .env("ECR_AUTH_STATIC_BIN", &static_bin)
            .env("DOCKER_HOST", &dockerd.host)
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env_remove("DOCKER_CONTEXT"),
    );
    assert!(out.status.success(), "build-image: {}", output_text(&out));
    let runner_image = runner_standin(&dockerd);

    // The examples, as a user lays them out: the files side by side, the broker's AWS
    // key, the installed helper, the runner's config dir.
    let env: std::collections::HashMap<String, String> =
        common::aws_env(&tokens.endpoint).into_iter().collect();
    let lay_out = |name: &str, from: &Path, files: &[&str]| -> PathBuf {
        let dir = tmp.join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        for f in files {
            std::fs::copy(from.join(f), dir.join(f)).unwrap();
        }
        common::run_ok(
            Command::new(&static_bin)
                .args(["install", "--dir"])
                .arg(dir.join("bin")),
        );
        let creds = dir.join("aws-credentials");
        std::fs::write(
            &creds,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
            ),
        )
        .unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        dir
    };
    // Where the broker's AWS is, in the lab; host networking to reach it. Swarm
    // merges files of one `version` only: the override takes the example's.
    let lab_override = |dir: &Path, file: &str, runner: &str| {
        let version = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("version:"))
            .map(|l| format!("{l}\n"))
            .unwrap_or_default();
        let path = dir.join(format!("lab-{file}"));
        std::fs::write(
            &path,
            format!(
                "{version}services:\n  ecr-auth-broker:\n    networks: [hostnet]\n    environment:\n      AWS_ENDPOINT_URL: {}\n      AWS_REGION: us-east-1\n      AWS_EC2_METADATA_DISABLED: \"true\"\n  {runner}:\n    networks: [hostnet]\n\
                 networks:\n  hostnet:\n    external: true\n    name: host\n",
                tokens.endpoint
            ),
        )
        .unwrap();
        path
    };
    let deploy = |dir: &Path, file: &str, stack: &str, runner: &str, run_dir: &Path| {
        std::fs::create_dir_all(run_dir).unwrap();
        std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = common::run(
            dockerd
                .docker()
                .current_dir(dir)
                .args(["stack", "deploy", "--resolve-image", "never", "-c"])
                .arg(dir.join(file))
                .arg("-c")
                .arg(lab_override(dir, file, runner))
                .arg(stack)
                .env("ECR_AUTH_IMAGE", "lab/ecr-auth:broker")
                .env("GITLAB_RUNNER_IMAGE", &runner_image)
                .env("ECR_AUTH_RUN_DIR", run_dir)
                .env("DOCKER_SOCKET", &dockerd.socket)
                .env("BROKER_CREDENTIALS_FILE", dir.join("aws-credentials"))
                .env("GITLAB_RUNNER_CONFIG_DIR", dir.join("config"))
                .env(
                    "ECR_AUTH_HELPER",
                    dir.join("bin/docker-credential-ecr-login"),
                ),
        );
        assert!(
            out.status.success(),
            "stack deploy {file}: {}",
            output_text(&out)
        );
    };

    // The runner's Compose file, as Swarm deploys it: the named volume binds the
    // host's directory; the broker's allow-list is the runner's registry.
    let runner_examples = common::repo_root().join("examples/gitlab/runner");
    let registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    let dir = lay_out(
        "compose",
        &runner_examples,
        &["docker-compose.yaml", "ecr-auth.toml"],
    );
    let compose_run = tmp.join("compose-run/ecr-auth");
    deploy(
        &dir,
        "docker-compose.yaml",
        "compose",
        "runner",
        &compose_run,
    );
    check_deployment(
        &dockerd,
        &tokens,
        &Expect {
            stack: "compose",
            runner_service: "runner",
            host_asks: registry,
            runner_asks: registry,
            assumed_roles: &[],
            aws_calls: 1,
        },
        &compose_run,
        tmp.path(),
    );

    // The Swarm stack: the AWS key a secret, examples/broker/config.toml a config.
    let dir = lay_out("swarm", &example(""), &["stack.yml", "config.toml"]);
    common::run_ok(
        dockerd
            .docker()
            .args(["secret", "create", "ecr_auth_broker_aws"])
            .arg(dir.join("aws-credentials")),
    );
    let stack_run = tmp.join("stack-run/ecr-auth");
    deploy(&dir, "stack.yml", "swarm", "gitlab-runner", &stack_run);
    check_deployment(
        &dockerd,
        &tokens,
        &Expect {
            stack: "swarm",
            runner_service: "gitlab-runner",
            host_asks: PULL_ONLY,
            runner_asks: PUSH,
            assumed_roles: &[PULL_ROLE],
            aws_calls: 2,
        },
        &stack_run,
        tmp.path(),
    );
}
