//! `ecr-auth swarm refresh` as a long-running service against a real one-node Swarm:
//! `--watch-events`, `--every` across a dockerd restart, SIGTERM, `/metrics` and
//! `/healthz`.

use crate::common;
use crate::swarm_support::{get, metric, wait_until, Lab, CONVERGE};

fn metrics_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Reads one figure from `/metrics` (0 when the series is absent or the page can't
/// be read: callers wait for figures to grow).
fn figure(port: u16, series: &str) -> f64 {
    let (status, page) = get(&metrics_url(port, "/metrics"));
    if status != 200 {
        return 0.0;
    }
    metric(&page, series).unwrap_or(0.0)
}

/// A service created without `--with-registry-auth` gets auth from the event watcher
/// and runs; the refresher's own updates do not trigger more updates.
#[test]
fn watch_events_fixes_a_service_created_without_auth() {
    let lab = Lab::start();
    let image = lab.push("late", "1");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = lab.spawn_refresh(
        &["--watch-events", "--every", "1h", "--metrics-addr", &addr],
        &[],
    );
    daemon.wait_log("watching service events", 1);
    daemon.wait_log("pass done", 1);

    // Control: the same image without auth, opted out, never runs.
    lab.create_service(
        "control",
        &[
            "--no-resolve-image",
            "--label",
            "ecr-auth.refresh=false",
            &image,
            "sleep",
            "100000",
        ],
    );
    lab.create_service("late", &["--no-resolve-image", &image, "sleep", "100000"]);
    lab.wait_running("late", 1);
    let late = |p: u16| figure(p, "ecr_auth_swarm_service_updates_total{service=\"late\"");
    assert_eq!(late(port), 1.0, "{}", daemon.log());

    // A later service, handled after every event of the first: by the time it runs, a
    // loop on the first would have shown.
    let version = lab.version("late");
    lab.create_service("later", &["--no-resolve-image", &image, "sleep", "100000"]);
    lab.wait_running("later", 1);
    assert_eq!(
        late(port),
        1.0,
        "the refresher updated its own service again:\n{}",
        daemon.log()
    );
    assert_eq!(
        lab.version("late"),
        version,
        "someone updated `late` again:\n{}",
        daemon.log()
    );
    assert!(
        lab.running_tasks("control").is_empty(),
        "the registry let a pull without auth through"
    );
    assert!(
        lab.task_errors("control").contains("No such image"),
        "{}",
        lab.task_errors("control")
    );
    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
}

/// With `--every`, a dockerd restart is an outage to back off from, not the end:
/// the refresher reconnects and goes on refreshing. SIGTERM then ends it with 0.
#[test]
fn every_survives_a_dockerd_restart() {
    let mut lab = Lab::start();
    let image = lab.push("svc", "1");
    lab.login();
    lab.create_service("svc", &["--with-registry-auth", &image, "sleep", "100000"]);
    lab.wait_running("svc", 1);
    // Short-lived tokens with a new password each: every other pass sends new auth.
    lab.tokens.set_ttl(4);
    lab.tokens.set_rotate_on_issue(true);

    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = lab.spawn_refresh(
        &["--every", "2s", "--metrics-addr", &addr],
        &[("AWS_ECR_DISABLE_CACHE", "1")],
    );
    let updates = |p: u16| figure(p, "ecr_auth_swarm_service_updates_total{service=\"svc\"");
    assert!(
        wait_until(CONVERGE, || updates(port) >= 2.0),
        "no updates:\n{}",
        daemon.log()
    );

    lab.stop_dockerd();
    assert!(
        wait_until(CONVERGE, || figure(
            port,
            "ecr_auth_swarm_docker_errors_total"
        ) >= 1.0),
        "the outage went unnoticed:\n{}",
        daemon.log()
    );
    // While dockerd is gone: unhealthy, and saying why.
    let down = wait_until(CONVERGE, || {
        let (status, health) = get(&metrics_url(port, "/healthz"));
        status == 503 && health.contains("cannot reach the Docker daemon")
    });
    assert!(
        down,
        "{:?}\n{}",
        get(&metrics_url(port, "/healthz")),
        daemon.log()
    );
    let before = updates(port);

    lab.start_dockerd_again();
    assert!(
        wait_until(CONVERGE, || updates(port) >= before + 2.0),
        "no updates after the restart:\n{}",
        daemon.log()
    );
    assert!(
        wait_until(CONVERGE, || get(&metrics_url(port, "/healthz")).0 == 200),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("connected to Docker at"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("SIGTERM: finishing the update in flight"),
        "{}",
        daemon.log()
    );
}

/// `/metrics` carries per service the last refresh and its result, per region the
/// token expiry and fetch failures; `/healthz` turns 503 while AWS fails.
#[test]
fn metrics_and_healthz_carry_the_figures() {
    let lab = Lab::start();
    let image = lab.push("m", "1");
    lab.login();
    lab.create_service("api", &["--with-registry-auth", &image, "sleep", "100000"]);
    lab.create_service(
        "batch",
        &[
            "--with-registry-auth",
            "--mode",
            "replicated-job",
            &image,
            "true",
        ],
    );
    lab.tokens.set_ttl(4);
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let started = now();
    let mut daemon = lab.spawn_refresh(
        &["--every", "3s", "--metrics-addr", &addr],
        &[("AWS_ECR_DISABLE_CACHE", "1")],
    );
    daemon.wait_log("pass done", 1);

    let (status, page) = get(&metrics_url(port, "/metrics"));
    assert_eq!(status, 200);
    let api = "{service=\"api\",service_id=\"";
    let line = |name: &str| {
        page.lines()
            .find(|l| l.starts_with(name))
            .map(str::to_string)
    };
    let last = line(&format!(
        "ecr_auth_swarm_service_last_refresh_timestamp_seconds{api}"
    ))
    .expect(&page);
    let at: f64 = last.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(at >= started as f64, "{last}");
    assert!(
        page.contains("result=\"updated\"} 1")
            && page
                .lines()
                .any(|l| l.contains("service=\"api\"") && l.contains("result=\"updated\"")),
        "{page}"
    );
    assert!(
        page.lines()
            .any(|l| l.contains("service=\"batch\"") && l.contains("result=\"skipped_job\"")),
        "{page}"
    );
    let expiry = metric(&page, "ecr_auth_swarm_token_expiry_timestamp_seconds{region=\"eu-west-1\",scope=\"aws/eu-west-1\"}")
        .expect(&page);
    assert!(
        expiry > started as f64 && expiry < (now() + 60) as f64,
        "{expiry}"
    );
    assert_eq!(
        metric(&page, "ecr_auth_swarm_token_fetch_failures_total{region=\"eu-west-1\",scope=\"aws/eu-west-1\"}"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(metric(&page, "ecr_auth_swarm_leader"), Some(1.0), "{page}");
    assert!(
        metric(&page, "ecr_auth_swarm_docker_api_calls_total").unwrap() >= 5.0,
        "{page}"
    );
    let (status, health) = get(&metrics_url(port, "/healthz"));
    assert_eq!((status, health.starts_with("ok")), (200, true), "{health}");
    assert_eq!(get(&metrics_url(port, "/nope")).0, 404);

    // AWS fails: the failures are counted per region and health turns 503.
    lab.tokens.set_fail(Some("unavailable"));
    let failures =
        "ecr_auth_swarm_token_fetch_failures_total{region=\"eu-west-1\",scope=\"aws/eu-west-1\"}";
    assert!(
        wait_until(CONVERGE, || figure(port, failures) >= 1.0),
        "{}",
        daemon.log()
    );
    assert!(
        wait_until(CONVERGE, || get(&metrics_url(port, "/healthz")).0 == 503),
        "{}",
        daemon.log()
    );
    let (_, health) = get(&metrics_url(port, "/healthz"));
    assert!(health.contains("no ECR token for 1 service"), "{health}");
    assert!(
        figure(
            port,
            "ecr_auth_swarm_service_refresh_result{service=\"api\""
        ) >= 1.0
    );
    assert!(get(&metrics_url(port, "/metrics"))
        .1
        .contains("result=\"token_error\""));

    // AWS is back: so is health.
    lab.tokens.set_fail(None);
    assert!(
        wait_until(CONVERGE, || get(&metrics_url(port, "/healthz")).0 == 200),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains(&lab.tokens.password()[..40]),
        "a password reached the log"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

/// A daemon that is not a Swarm manager idles and says so; `--once` then exits 0.
#[test]
fn outside_a_swarm_it_idles_and_says_so() {
    let docker = common::Dockerd::start();
    let out = common::run(
        std::process::Command::new(common::bin())
            .args(["swarm", "refresh", "--once"])
            .env("DOCKER_HOST", &docker.host)
            .env("ECR_AUTH_CONFIG", "/dev/null"),
    );
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("not in a Swarm (state \"inactive\"): idling"),
        "{text}"
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
