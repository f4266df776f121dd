//! The Docker API misbehaving under `swarm refresh`, against a real one-node Swarm: a
//! service deleted or changed by someone else in the middle of a pass, a daemon that
//! answers slowly, an event stream that breaks. (A dockerd restart:
//! `swarm_daemon::every_survives_a_dockerd_restart`.) The slow daemon and the broken
//! stream are a loopback proxy in front of the real socket ([`DockerProxy`]).

use std::time::Duration;

use crate::common;
use crate::swarm_support::{get, wait_until, AfterList, DockerProxy, Lab, CONVERGE};

/// After the service list was read, someone deletes one service and changes another:
/// the deleted one is skipped, the changed one is updated at its new version (their
/// change kept), the others as if nothing happened; nothing counts as failed.
#[test]
fn a_service_deleted_or_changed_mid_pass() {
    use ecr_auth::swarm::Turn;

    let lab = Lab::start();
    let image = lab.push("mid", "1");
    let names = ["first", "gone", "changed", "last"];
    for name in names {
        create_idle(&lab, name, &image);
    }
    let before: Vec<u64> = names.iter().map(|n| lab.version(n)).collect();
    let tokens = lab.in_process_tokens();

    let (rt, docker) = lab.docker_client();
    // Someone else acts right after the list is read.
    let api = AfterList {
        docker: &docker,
        then: |_: &[_]| {
            lab.docker(&["service", "rm", "gone"]);
            lab.their_update("changed");
        },
    };
    let turn = rt.block_on(crate::swarm_support::one_pass(&api, &tokens));
    let Turn::Pass(report) = turn else {
        panic!("no pass: {turn:?}")
    };
    assert_eq!(
        (
            report.services,
            report.updated,
            report.unchanged,
            report.failed,
            report.retries
        ),
        (4, 3, 1, 0, 1),
        "{report:?}"
    );
    let r = lab.docker.api("GET", "/v1.41/services/gone", None);
    assert_eq!(r.status, 404, "{}", r.text());
    let changed = lab.service("changed");
    assert_eq!(
        changed["Spec"]["Labels"]["changed"], "meanwhile",
        "their change was lost"
    );
    // Their update and ours: the version moved twice (Swarm's index is global, so
    // more than by 2 is possible, less is not).
    assert!(lab.version("changed") >= before[2] + 2);
    for (i, name) in names.iter().enumerate().filter(|(_, n)| **n != "gone") {
        assert!(lab.version(name) > before[i], "{name} was not updated");
    }
}

/// A daemon that holds every request for 3 s, with `--docker-timeout 1s`: every call
/// gives up after a second and says so (in the log and on `/healthz`), the event
/// watcher too, and the refresher keeps its schedule; once the daemon answers again,
/// so does the refresher. Then only the event stream's request is held: the watcher
/// gives up on it and comes back once it is answered.
#[test]
fn a_slow_daemon_times_out_and_says_so() {
    let lab = Lab::start();
    let image = lab.push("slow", "1");
    create_idle(&lab, "web", &image);
    let proxy = DockerProxy::start(&lab.docker.socket);
    proxy.set_delay(Duration::from_secs(3));
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = lab.spawn_refresh(
        &[
            "--every",
            "2s",
            "--watch-events",
            "--docker-timeout",
            "1s",
            "--metrics-addr",
            &addr,
        ],
        &[("DOCKER_HOST", proxy.host.as_str())],
    );
    daemon.wait_log("did not answer", 3);
    let log = daemon.log();
    let endpoint = format!("the Docker daemon at {} did not answer", proxy.host);
    assert!(
        log.contains(&endpoint) && log.contains("within 1s"),
        "{log}"
    );
    assert!(
        log.contains("cannot watch Docker events:") && !log.contains("updated web ("),
        "{log}"
    );
    let (status, health) = get(&format!("http://{addr}/healthz"));
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("did not answer"), "{health}");

    proxy.set_delay(Duration::ZERO);
    daemon.wait_log("updated web (", 1);
    daemon.wait_log("watching service events", 1);
    assert!(
        wait_until(CONVERGE, || get(&format!("http://{addr}/healthz")).0 == 200),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("requests time out after 1s"),
        "{}",
        daemon.log()
    );

    // A daemon that takes the event stream's request and holds its answer: the watcher
    // gives up on it too, instead of waiting forever.
    let again = daemon
        .log()
        .matches("watching service events again")
        .count();
    proxy.set_delay_for(Duration::from_secs(3), Some("/events"));
    assert!(proxy.cut() >= 1, "the event stream was not open");
    daemon.wait_log("did not answer GET /events within 1s", 1);
    proxy.set_delay(Duration::ZERO);
    daemon.wait_log("watching service events again", again + 1);
    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
}

/// The event stream breaks (the proxy cuts it and refuses new connections for a
/// while); a service created meanwhile sends its event to nobody. Once the stream is
/// back, the refresher runs a full pass and that service gets auth, an hour before
/// `--every` would have come round.
#[test]
fn a_broken_event_stream_reconnects_then_runs_a_full_pass() {
    let lab = Lab::start();
    let image = lab.push("cut", "1");
    let proxy = DockerProxy::start(&lab.docker.socket);
    let mut daemon = lab.spawn_refresh(
        &["--every", "1h", "--watch-events"],
        &[("DOCKER_HOST", proxy.host.as_str())],
    );
    daemon.wait_log("watching service events", 1);
    daemon.wait_log("pass done", 1);

    proxy.set_refusing(true);
    assert!(proxy.cut() >= 1, "no open connection to cut");
    daemon.wait_log("reconnecting", 1);
    create_idle(&lab, "missed", &image);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !daemon.log().contains("updated missed ("),
        "{}",
        daemon.log()
    );

    proxy.set_refusing(false);
    daemon.wait_log("watching service events again", 1);
    daemon.wait_log("updated missed (", 1);
    let log = daemon.log();
    let back = log.find("watching service events again").unwrap();
    let updated = log.find("updated missed (").unwrap();
    assert!(back < updated, "{log}");
    assert_eq!(
        log.matches("pass done").count(),
        2,
        "the first pass and the full pass after the stream came back:\n{log}"
    );
    assert_eq!(daemon.terminate(), Some(0), "{log}");
}

/// A service with no task (`--replicas 0`): a pass updates it like any other, and nothing
/// has to run.
fn create_idle(lab: &Lab, name: &str, image: &str) {
    lab.create_service(
        name,
        &["--no-resolve-image", "--replicas", "0", image, "sleep", "1"],
    );
}
