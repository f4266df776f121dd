//! The deployment of `examples/swarm`: the FROM-scratch image of the static binary
//! (`build-image`, `Dockerfile`) deployed with `stack.yml` as a Swarm service on the lab
//! Swarm, its AWS credentials in a Swarm secret in seed 004's `export NAME=value` format.
//! It refreshes a service whose auth went stale, serves `/metrics`, logs JSON, and exits 0
//! on SIGTERM when the stack is removed.
//!
//! The deployment and its lab-only differences (a second compose file) are in
//! [`Lab::deploy_example_stack`], which doctor's Swarm test shares. The static binary comes
//! from `scripts/build-static` (run by `scripts/test` before the tests);
//! `ECR_AUTH_STATIC_BIN` overrides its path.

use crate::common;
use crate::swarm_support::{escape, get, metric, wait_until, Lab, CONVERGE};

#[test]
fn the_example_stack_refreshes_services() {
    let lab = Lab::start();
    let image = lab.push("app", "1");
    lab.login();
    lab.create_service("app", &["--with-registry-auth", &image, "sleep", "100000"]);
    lab.wait_running("app", 1);
    let version = lab.version("app");
    lab.tokens.rotate(); // the stored auth is now stale

    let port = lab.deploy_example_stack("ecr");
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
