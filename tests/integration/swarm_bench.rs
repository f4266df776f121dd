//! The Swarm benchmark (run by `scripts/bench-swarm`, not by the test suite): one
//! `swarm refresh --once` over 1,000 services whose images live on three lab registries
//! mapped to two regions (two registries share one, as two ECR accounts reachable with one
//! token would). Prints the pass's wall time, the refresher's peak RSS (from `wait4`), the
//! AWS calls (must be 2: one per region), the update events per service (must be exactly
//! one each, counted on Docker's event stream), the Docker API calls per service and the
//! task restarts (must be 0).
//!
//! Tasks: 1,000 running tasks need more memory and time than a 2-core CI machine has, so
//! [`RUNNING`] services have one running task each (the restarts are counted on those) and
//! the rest have 0 replicas; a refresh treats both alike (the spec and auth of every
//! service are updated). `ECR_AUTH_BENCH_SERVICES` overrides the service count.
//!
//! The measured binary is `$ECR_AUTH_BENCH_BIN` (scripts/bench-swarm passes the static
//! release build), else the test build.

use crate::common;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Dockerd, Registry, TempDir, TokenServer};
use crate::swarm_support::{wait_until, Events};

const SERVICES: usize = 1000;
/// Services with one running task; the others have 0 replicas.
const RUNNING: usize = 50;
/// The region of each registry: two share eu-west-1.
const REGISTRY_REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "eu-west-1"];
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

#[test]
#[ignore = "a benchmark: scripts/bench-swarm runs it"]
fn bench_refresh_1000_services_3_registries_2_regions() {
    let services: usize = std::env::var("ECR_AUTH_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SERVICES);
    let running = RUNNING.min(services);
    let tokens = TokenServer::start();
    let registries: Vec<Registry> = REGISTRY_REGIONS
        .iter()
        .map(|_| Registry::start(&tokens.htpasswd))
        .collect();
    let docker = Dockerd::start();
    docker.swarm_init();
    let tmp = TempDir::new("swarm-bench");
    let config = tmp.join("config.toml");
    let mut text = String::new();
    for (r, region) in registries.iter().zip(REGISTRY_REGIONS) {
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

    eprintln!("bench: creating {services} services with auth ({running} with a running task) ...");
    let started = Instant::now();
    for i in 0..services {
        let r = i % registries.len();
        let (image, registry) = (&images[r], &registries[r]);
        let replicas = u64::from(i < running);
        let spec = serde_json::json!({
            "Name": format!("bench-{i:04}"),
            "Labels": {"bench": "swarm"},
            "TaskTemplate": {
                "ContainerSpec": {"Image": image, "Args": ["sleep", "100000"], "StopGracePeriod": 1_000_000_000u64},
                "RestartPolicy": {"Condition": "any"}
            },
            "Mode": {"Replicated": {"Replicas": replicas}}
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
        assert_eq!(r.status, 201, "create bench-{i:04}: {}", r.text());
    }
    let all_running = wait_until(Duration::from_secs(900), || {
        running_tasks(&docker).len() == running
    });
    assert!(
        all_running,
        "only {} of {running} tasks run",
        running_tasks(&docker).len()
    );
    let tasks_before = running_tasks(&docker);
    eprintln!(
        "bench: {services} services, {running} tasks running after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    tokens.rotate(); // the refresh sends a password the services have not seen
    tokens.reset_calls();
    let events = Events::watch(&docker);
    // The watcher is live once it reports an update made now.
    let probe = format!("bench-{:04}", services - 1);
    common::run_ok(docker.docker().args([
        "service",
        "update",
        "-d",
        "--label-add",
        "probe=1",
        &probe,
    ]));
    events.wait_for("update", &probe);
    let probed = events.updates_by_service();

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
    let run = measure(&mut cmd);
    assert!(run.ok, "refresh failed:\n{}", run.stderr);
    let stderr = run.stderr;
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

    // Let Swarm act on the updates before counting restarts and events.
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
    let all_seen = wait_until(Duration::from_secs(60), || {
        events.updates_by_service().values().sum::<usize>()
            >= services + probed.values().sum::<usize>()
    });
    let mut per_service = events.updates_by_service();
    for (name, n) in probed {
        *per_service.entry(name).or_default() -= n;
    }
    let mut histogram = std::collections::BTreeMap::new();
    for i in 0..services {
        let n = per_service
            .get(&format!("bench-{i:04}"))
            .copied()
            .unwrap_or(0);
        *histogram.entry(n).or_insert(0usize) += 1;
    }

    println!(
        "== Swarm: refresh {services} services on {} registries in {} regions ==",
        registries.len(),
        REGIONS.len()
    );
    println!("binary:                          {}", bin.display());
    println!(
        "pass time (swarm refresh --once): {:.3} s wall",
        run.wall.as_secs_f64()
    );
    println!(
        "peak RSS (wait4 ru_maxrss):       {:.1} MiB",
        run.max_rss_kb as f64 / 1024.0
    );
    println!("services updated (log):          {updated}");
    println!(
        "update events per service:       {}   target: {{1: {services}}}",
        histogram
            .iter()
            .map(|(n, count)| format!("{n}: {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "AWS GetAuthorizationToken calls: {aws_calls} ({})   target: 2",
        by_region.join(", ")
    );
    println!(
        "Docker API calls:                {pass_calls} in the pass = {:.2} per service; {all_calls} in all = {:.2} per service",
        pass_calls as f64 / services as f64,
        all_calls as f64 / services as f64
    );
    println!(
        "task restarts:                   {restarts} of {} running tasks   target: 0",
        tasks_before.len()
    );
    println!("summary line:                    {}", summary.trim());
    assert_eq!(updated, services, "{stderr}");
    assert!(all_seen, "update events missing: {histogram:?}");
    assert_eq!(
        histogram.into_iter().collect::<Vec<_>>(),
        [(1, services)],
        "one update event per service"
    );
    assert_eq!(aws_calls, 2, "one AWS call per region");
    assert_eq!(restarts, 0, "tasks were restarted");
}

/// One run of the measured binary.
struct Measured {
    ok: bool,
    stderr: String,
    wall: Duration,
    max_rss_kb: i64,
}

/// Runs `cmd` to the end; its peak RSS comes from `wait4` (the rusage of that child
/// alone, which `Child::wait` does not give).
fn measure(cmd: &mut std::process::Command) -> Measured {
    use std::io::Read;
    let t0 = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped below with wait4, which clippy cannot see
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the refresher");
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; the pointers are valid for the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t0.elapsed();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    Measured {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: reader.join().expect("stderr reader"),
        wall,
        max_rss_kb: usage.ru_maxrss,
    }
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
