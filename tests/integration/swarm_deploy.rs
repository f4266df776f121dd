//! The deployment of `examples/swarm`: the FROM-scratch image of the static binary
//! (`build-image`, `Dockerfile`) deployed with `stack.yml` as a Swarm service on the lab
//! Swarm, its AWS credentials in a Swarm secret in seed 004's `export NAME=value` format.
//! It refreshes a service whose auth went stale, serves `/metrics`, logs JSON, and exits 0
//! on SIGTERM when the stack is removed.
//!
//! Lab-only differences come from a second compose file: host networking (the token
//! endpoint is on 127.0.0.1), the lab socket, a config file mapping the lab registry to
//! ECR, and metrics on 127.0.0.1. The static binary comes from `scripts/build-static`
//! (run by `scripts/test` before the tests); `ECR_AUTH_STATIC_BIN` overrides its path.

use crate::common;
use crate::swarm_support::{get, metric, wait_until, Lab, ACCOUNT, CONVERGE, REGION};

#[test]
fn the_example_stack_refreshes_services() {
    let lab = Lab::start();
    let image = lab.push("app", "1");
    lab.login();
    lab.create_service("app", &["--with-registry-auth", &image, "sleep", "100000"]);
    lab.wait_running("app", 1);
    let version = lab.version("app");
    lab.tokens.rotate(); // the stored auth is now stale

    let examples = common::repo_root().join("examples/swarm");
    let out = common::run(
        std::process::Command::new(examples.join("build-image"))
            .arg("lab/ecr-auth:example")
            .env("ECR_AUTH_STATIC_BIN", common::static_bin())
            .env("DOCKER_HOST", &lab.docker.host)
            .env("DOCKER_CONFIG", lab.docker.config_dir())
            .env_remove("DOCKER_CONTEXT"),
    );
    assert!(
        out.status.success(),
        "build-image failed: {}",
        common::output_text(&out)
    );

    // The credentials secret, as ecr-authenticator users write it.
    let creds = lab.tmp.join("ecr_auth_creds");
    let mut text = format!(
        "export AWS_ECR_REPO={}\nexport AWS_DEFAULT_REGION={REGION}\n",
        lab.registry.addr
    );
    for (k, v) in common::aws_env(&lab.tokens.endpoint) {
        if matches!(
            k.as_str(),
            "AWS_ACCESS_KEY_ID"
                | "AWS_SECRET_ACCESS_KEY"
                | "AWS_ENDPOINT_URL"
                | "AWS_EC2_METADATA_DISABLED"
        ) {
            text.push_str(&format!("export {k}={v}\n"));
        }
    }
    std::fs::write(&creds, text).unwrap();
    lab.docker(&[
        "secret",
        "create",
        "ecr_auth_creds",
        creds.to_str().unwrap(),
    ]);
    let config = lab.tmp.join("ecr-auth.toml");
    std::fs::write(
        &config,
        format!(
            "[[registry]]\nhost = \"{}\"\naccount = \"{ACCOUNT}\"\nregion = \"{REGION}\"\n",
            lab.registry.addr
        ),
    )
    .unwrap();
    let lab_override = lab.tmp.join("lab.yml");
    std::fs::write(
        &lab_override,
        format!(
            "version: \"3.8\"\nservices:\n  ecr-auth:\n    networks: [hostnet]\n    configs:\n      - source: ecr_auth_config\n        target: /etc/ecr-auth/config.toml\n\
             networks:\n  hostnet:\n    external: true\n    name: host\n\
             configs:\n  ecr_auth_config:\n    file: {}\n",
            config.display()
        ),
    )
    .unwrap();

    let port = common::free_port();
    let out = common::run(
        lab.docker
            .docker()
            .args(["stack", "deploy", "--resolve-image", "never", "-c"])
            .arg(examples.join("stack.yml"))
            .arg("-c")
            .arg(&lab_override)
            .arg("ecr")
            .env("ECR_AUTH_IMAGE", "lab/ecr-auth:example")
            .env("DOCKER_SOCKET", &lab.docker.socket)
            .env("ECR_AUTH_METRICS_ADDR", format!("127.0.0.1:{port}")),
    );
    assert!(
        out.status.success(),
        "stack deploy failed: {}",
        common::output_text(&out)
    );
    // The refresher logs on stderr; `docker service logs` passes it on as its own stderr.
    let logs = || {
        let out =
            common::run(
                lab.docker
                    .docker()
                    .args(["service", "logs", "--raw", "ecr_ecr-auth"]),
            );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };

    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let updated = wait_until(CONVERGE, || {
        let (status, page) = get(&metrics);
        status == 200
            && metric(
                &page,
                "ecr_auth_swarm_service_updates_total{service=\"app\"",
            )
            .unwrap_or(0.0)
                >= 1.0
    });
    assert!(
        updated,
        "the deployed refresher did not update `app`:\n{}\n{}",
        logs(),
        lab.task_errors("ecr_ecr-auth")
    );
    assert!(lab.version("app") > version);
    assert_eq!(get(&format!("http://127.0.0.1:{port}/healthz")).0, 200);
    let log = logs();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(log.contains("updated app ("), "{log}");
    assert!(
        !log.contains(&lab.tokens.password()[..40]),
        "a password reached the log"
    );

    // Removing the stack stops the task with SIGTERM: it exits 0, not killed.
    let container = lab.docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "label=com.docker.swarm.service.name=ecr_ecr-auth",
    ]);
    let container = container.trim().to_string();
    assert!(!container.is_empty(), "no ecr-auth container");
    lab.docker(&["stack", "rm", "ecr"]);
    let filters =
        format!(r#"{{"type":["container"],"event":["die"],"container":["{container}"]}}"#);
    let mut exit_code = None;
    let died = wait_until(CONVERGE, || {
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let r = lab.docker.api(
            "GET",
            &format!(
                "/v1.41/events?since=0&until={until}&filters={}",
                escape(&filters)
            ),
            None,
        );
        let text = r.text();
        exit_code = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|e| {
                e["Actor"]["Attributes"]["exitCode"]
                    .as_str()
                    .map(str::to_string)
            });
        exit_code.is_some()
    });
    assert!(died, "the ecr-auth container did not stop");
    assert_eq!(
        exit_code.as_deref(),
        Some("0"),
        "the refresher did not exit 0 on SIGTERM"
    );
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
