//! The Swarm benchmark (run by `scripts/bench-swarm`, not by the test suite): one
//! `swarm refresh --once` over 100 running services whose images live on two lab
//! registries mapped to two regions. Prints the wall time, the AWS calls (must be 2:
//! one per region), the Docker API calls per service and the task restarts (must be 0).
//!
//! The measured binary is `$ECR_AUTH_BENCH_BIN` (scripts/bench-swarm passes the static
//! release build), else the test build.

use crate::common;
use std::time::{Duration, Instant};

use crate::common::{Dockerd, Registry, TempDir, TokenServer};
use crate::swarm_support::wait_until;

const SERVICES: usize = 100;
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

#[test]
#[ignore = "a benchmark: scripts/bench-swarm runs it"]
fn bench_refresh_100_services_in_2_regions() {
    let tokens = TokenServer::start();
    let registries = [
        Registry::start(&tokens.htpasswd),
        Registry::start(&tokens.htpasswd),
    ];
    let docker = Dockerd::start();
    docker.swarm_init();
    let tmp = TempDir::new("swarm-bench");
    let config = tmp.join("config.toml");
    let mut text = String::new();
    for (r, region) in registries.iter().zip(REGIONS) {
        text.push_str(&format!(
            "[[registry]]\nhost = \"{}\"\naccount = \"123456789012\"\nregion = \"{region}\"\n",
            r.addr
        ));
    }
    std::fs::write(&config, text).unwrap();

    let password = tokens.password();
    let images: Vec<String> = registries
        .iter()
        .map(|r| {
            r.push_test_image("bench", "1", "AWS", &password);
            r.image("bench", "1")
        })
        .collect();

    eprintln!("bench: creating {SERVICES} services with auth, 1 task each ...");
    let started = Instant::now();
    for i in 0..SERVICES {
        let (image, registry) = (&images[i % 2], &registries[i % 2]);
        let spec = serde_json::json!({
            "Name": format!("bench-{i:03}"),
            "Labels": {"bench": "swarm"},
            "TaskTemplate": {
                "ContainerSpec": {"Image": image, "Args": ["sleep", "100000"], "StopGracePeriod": 1_000_000_000u64},
                "RestartPolicy": {"Condition": "any"}
            },
            "Mode": {"Replicated": {"Replicas": 1}}
        });
        let auth = serde_json::json!({"username": "AWS", "password": password, "serveraddress": registry.addr});
        let auth = common::base64(auth.to_string().as_bytes())
            .replace('+', "-")
            .replace('/', "_");
        let r = common::http_unix(
            &docker.socket,
            "POST",
            "/v1.41/services/create",
            &[
                ("Content-Type", "application/json"),
                ("X-Registry-Auth", &auth),
            ],
            spec.to_string().as_bytes(),
        )
        .expect("create a service");
        assert_eq!(r.status, 201, "create bench-{i:03}: {}", r.text());
    }
    let all_running = wait_until(Duration::from_secs(900), || {
        let n = running_tasks(&docker).len();
        n == SERVICES
    });
    assert!(
        all_running,
        "only {} of {SERVICES} tasks run",
        running_tasks(&docker).len()
    );
    let tasks_before = running_tasks(&docker);
    eprintln!(
        "bench: {SERVICES} tasks running after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    tokens.rotate(); // the refresh sends a password the services have not seen
    tokens.reset_calls();
    let bin = std::env::var_os("ECR_AUTH_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(common::bin);
    let mut cmd = std::process::Command::new(&bin);
    common::apply_aws_env(&mut cmd, &tokens.endpoint);
    cmd.args(["swarm", "refresh", "--once"])
        .env("ECR_AUTH_CONFIG", &config)
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .env("HOME", tmp.path())
        .env("DOCKER_HOST", &docker.host)
        .env("ECR_AUTH_LOG", "info");
    let t0 = Instant::now();
    let out = common::run(&mut cmd);
    let wall = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "refresh failed:\n{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("pass done:"))
        .expect("a pass summary")
        .to_string();
    let updated = stderr.matches("INFO updated bench-").count();
    let (pass_calls, all_calls) = docker_calls(&summary);
    let aws_calls = tokens.calls();
    let by_region: Vec<String> = REGIONS
        .iter()
        .map(|r| format!("{r}: {}", tokens.calls_in(r)))
        .collect();

    // Let Swarm act on the updates before counting restarts.
    let settled = wait_until(Duration::from_secs(300), || {
        let r = docker.api("GET", "/v1.41/services", None);
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["UpdateStatus"].is_null() || s["UpdateStatus"]["State"] == "completed")
    });
    assert!(settled, "the updates did not settle");
    let tasks_after = running_tasks(&docker);
    let restarts = tasks_before
        .iter()
        .filter(|t| !tasks_after.contains(t))
        .count();

    println!(
        "== Swarm: refresh {SERVICES} services across {} regions ==",
        REGIONS.len()
    );
    println!("binary:                          {}", bin.display());
    println!(
        "wall time (swarm refresh --once): {:.3} s",
        wall.as_secs_f64()
    );
    println!("services updated:                {updated}");
    println!(
        "AWS GetAuthorizationToken calls: {aws_calls} ({})   target: 2",
        by_region.join(", ")
    );
    println!(
        "Docker API calls:                {pass_calls} in the pass = {:.2} per service; {all_calls} in all = {:.2} per service",
        pass_calls as f64 / SERVICES as f64,
        all_calls as f64 / SERVICES as f64
    );
    println!("task restarts:                   {restarts}   target: 0");
    println!("summary line:                    {}", summary.trim());
    assert_eq!(updated, SERVICES, "{stderr}");
    assert_eq!(aws_calls, 2, "one AWS call per region");
    assert_eq!(restarts, 0, "tasks were restarted");
}

/// IDs of all running tasks, sorted.
fn running_tasks(docker: &Dockerd) -> Vec<String> {
    let filters = "%7B%22desired-state%22%3A%5B%22running%22%5D%7D";
    let r = docker.api("GET", &format!("/v1.41/tasks?filters={filters}"), None);
    let mut ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["Status"]["State"] == "running")
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// From "... N Docker API calls (M since start) ...": (N, M).
fn docker_calls(summary: &str) -> (u64, u64) {
    let before = summary.split(" Docker API calls (").next().unwrap();
    let pass = before.rsplit(' ').next().unwrap().parse().unwrap();
    let all = summary
        .split(" Docker API calls (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (pass, all)
}
