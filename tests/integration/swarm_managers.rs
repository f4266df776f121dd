//! `swarm refresh` on a real three-manager Swarm ([`common::Cluster`]: three dockerd on
//! 127.0.0.2-4:2377), with a refresher daemon beside every manager as the example stack
//! deploys it (`--watch-events`, JSON logs). Here with `--every 4s`, and tokens that live
//! 8 s with a new password each time, so that every pass of the acting refresher sends
//! fresh auth to every service and any second refresher acting would show at once.
//!
//! Who updated a service is counted from Docker's own event stream (one `update` event
//! per update; `Version.Index` is Swarm's global index, not a per-service counter) and
//! matched against the refreshers' logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{self, Cluster, Dockerd, Registry, TempDir, TokenServer};
use crate::swarm_support::{tasks_on, wait_until, write_lab_config, Daemon, Events, CONVERGE};

/// Services that only the refreshers touch: every update of theirs must be one
/// refresher's, once per pass.
const COUNTED: [&str; 2] = ["alpha", "beta"];

/// The leader's dockerd stops, a remaining manager leads, its refresher takes over, a
/// stale service on a node without the image scales up; the old leader comes back as a
/// follower. Throughout, the refreshers' updating passes form one run per leader and
/// every update event of a service is one logged update of one pass.
#[test]
fn three_managers_one_refresher_acts_and_another_takes_over() {
    let started = Instant::now();
    let tokens = TokenServer::start();
    let registry = Registry::start(&tokens.htpasswd);
    let mut cluster = Cluster::start();
    let tmp = TempDir::new("managers");
    let config = write_lab_config(&tmp, &registry);
    registry.push_test_image("app", "1", "AWS", &tokens.password());
    let image = registry.image("app", "1");
    let first = cluster.leader().expect("a leader");
    // The stale service's node: never the one that is stopped.
    let target = (first + 2) % 3;
    let target_id = cluster.nodes[target].node_id();
    let events = Events::watch(&cluster.nodes[target]);

    for name in COUNTED {
        create(&cluster.nodes[first], name, &image, &[]);
    }
    // No task yet, and only on a node that has never pulled the image.
    let constraint = format!("node.id=={target_id}");
    create(
        &cluster.nodes[first],
        "stale",
        &image,
        &["--replicas", "0", "--constraint", &constraint],
    );
    events.wait_for("create", "stale");

    // Phase 1: a refresher on every manager; only the leader's acts.
    tokens.set_ttl(8);
    tokens.set_rotate_on_issue(true);
    let mut refreshers: Vec<Refresher> = (0..3)
        .map(|i| Refresher::start(i, &cluster.nodes[i], &tokens, &config, &tmp))
        .collect();
    for (i, r) in refreshers.iter_mut().enumerate() {
        let role = if i == first {
            "is the Swarm leader: refreshing services"
        } else {
            "is a manager but not the leader: idling"
        };
        r.daemon.wait_log(role, 1);
    }
    let steady = wait_until(CONVERGE, || {
        updating_passes(&refreshers[first].daemon.log()).len() >= 5
    });
    assert!(
        steady,
        "no 5 updating passes:\n{}",
        refreshers[first].daemon.log()
    );

    // Phase 2: AWS fails and the password rotates: every service's auth is stale.
    tokens.set_fail(Some("unavailable"));
    refreshers[first]
        .daemon
        .wait_log("cannot get an ECR token for", 1);
    tokens.rotate();
    common::run_ok(
        cluster.nodes[first]
            .docker()
            .args(["service", "scale", "-d", "stale=1"]),
    );
    let rejected = wait_until(CONVERGE, || {
        tasks_on(&cluster.nodes[first], "stale")
            .iter()
            .any(|t| t["Status"]["State"] == "rejected")
    });
    assert!(
        rejected,
        "the stale task did not fail: {:?}",
        tasks_on(&cluster.nodes[first], "stale")
    );
    assert!(
        running(&cluster.nodes[first], "stale") == 0,
        "a task ran with stale auth"
    );

    // The leader's node goes down: its refresher with it (Swarm stops its task), then
    // its dockerd. AWS answers again.
    assert_eq!(cluster.leader(), Some(first), "leadership moved by itself");
    assert_eq!(refreshers[first].daemon.terminate(), Some(0));
    tokens.set_fail(None);
    let others: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let down = Instant::now();
    let down_at = SystemTime::now();
    cluster.nodes[first].begin_stop();
    let mut elected = None;
    let mut took_over = None;
    let ok = wait_until(CONVERGE, || {
        if elected.is_none() && cluster.leader_seen_by(&others).is_some_and(|l| l != first) {
            elected = Some(down.elapsed());
        }
        if took_over.is_none()
            && COUNTED
                .iter()
                .any(|n| !events.of_after(n, down_at).is_empty())
        {
            took_over = Some(down.elapsed());
        }
        elected.is_some() && took_over.is_some()
    });
    assert!(ok, "no takeover: leader {:?}", cluster.leader());
    let (elected, took_over) = (elected.unwrap(), took_over.unwrap());
    cluster.nodes[first].stop();
    let new = cluster.leader().expect("a new leader");
    println!(
        "three managers: SIGTERM to the leader's dockerd; a new leader after {:.1} s, its refresher sent fresh auth after {:.1} s",
        elected.as_secs_f64(),
        took_over.as_secs_f64()
    );
    assert!(
        took_over < Duration::from_secs(90),
        "the takeover took {took_over:?}"
    );

    // The stale service scales up on the node that lacks the image.
    let up = wait_until(CONVERGE, || running(&cluster.nodes[new], "stale") == 1);
    assert!(
        up,
        "the stale service did not scale up: {:?}\n{}",
        tasks_on(&cluster.nodes[new], "stale"),
        refreshers[new].daemon.log()
    );
    assert!(
        refreshers[new].daemon.log().contains("updated stale ("),
        "{}",
        refreshers[new].daemon.log()
    );

    // The old leader comes back (and its refresher with it): it follows.
    cluster.nodes[first].start_again();
    let back = SystemTime::now();
    refreshers[first] = Refresher::start(first, &cluster.nodes[first], &tokens, &config, &tmp);
    refreshers[first]
        .daemon
        .wait_log("is a manager but not the leader: idling", 1);
    let more = wait_until(CONVERGE, || {
        COUNTED.iter().all(|n| events.of_after(n, back).len() >= 3)
    });
    assert!(more, "no updates after the old leader came back");

    // The accounts: every refresher's log, complete.
    for r in &mut refreshers {
        assert_eq!(r.daemon.terminate(), Some(0), "{}", r.daemon.log());
    }
    std::thread::sleep(Duration::from_secs(1)); // the last events reach the watcher
    let mut logs: Vec<(String, String)> = Vec::new(); // (who, log)
    for r in &refreshers {
        for (n, log) in r.logs().into_iter().enumerate() {
            logs.push((format!("manager {} (refresher #{})", r.index, n + 1), log));
        }
    }
    // One run of updating passes per leader: the first leader's, then the new one's.
    let mut passes: Vec<(SystemTime, &str)> = Vec::new();
    for (who, log) in &logs {
        passes.extend(
            updating_passes(log)
                .into_iter()
                .map(|at| (at, who.as_str())),
        );
    }
    passes.sort();
    let mut runs: Vec<&str> = passes.iter().map(|p| p.1).collect();
    runs.dedup();
    assert_eq!(
        runs,
        [
            format!("manager {first} (refresher #1)"),
            format!("manager {new} (refresher #1)")
        ],
        "updating passes by more than one refresher at a time"
    );
    // Every update event is one logged update, at most one per pass.
    for name in COUNTED {
        let seen = events.of_after(name, SystemTime::UNIX_EPOCH);
        let logged: usize = logs.iter().map(|(_, log)| updates_of(log, name)).sum();
        assert_eq!(
            seen.len(),
            logged,
            "{name}: {} update events, {logged} updates in the logs",
            seen.len()
        );
        assert!(
            logged <= passes.len(),
            "{name}: {logged} updates in {} passes",
            passes.len()
        );
    }
    println!(
        "three managers: {} updating passes, each by one refresher; {} update events for {:?}; {:.0} s in all",
        passes.len(),
        COUNTED.iter().map(|n| events.of_after(n, SystemTime::UNIX_EPOCH).len()).sum::<usize>(),
        COUNTED,
        started.elapsed().as_secs_f64()
    );
}

/// `docker service create` on `node` without auth (the refreshers give it):
/// replicas 0 unless `extra` says otherwise.
fn create(node: &Dockerd, name: &str, image: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "-d",
        "--quiet",
        "--no-resolve-image",
        "--name",
        name,
        "--stop-grace-period",
        "1s",
    ];
    if !extra.contains(&"--replicas") {
        args.extend(["--replicas", "0"]);
    }
    args.extend_from_slice(extra);
    args.extend([image, "sleep", "100000"]);
    common::run_ok(node.docker().args(&args));
}

fn running(node: &Dockerd, service: &str) -> usize {
    tasks_on(node, service)
        .iter()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .count()
}

/// One manager's refresher (and the logs of its earlier runs).
struct Refresher {
    index: usize,
    daemon: Daemon,
    earlier: Vec<PathBuf>,
}

impl Refresher {
    fn start(
        index: usize,
        node: &Dockerd,
        tokens: &TokenServer,
        config: &Path,
        tmp: &TempDir,
    ) -> Refresher {
        let runs = std::fs::read_dir(tmp.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("refresh-{index}-"))
                    })
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut cmd = Command::new(common::bin());
        common::apply_aws_env(&mut cmd, &tokens.endpoint);
        cmd.env("ECR_AUTH_CONFIG", config)
            .env("ECR_AUTH_CACHE_DIR", tmp.join(format!("cache-{index}")))
            .env("HOME", tmp.join("home"))
            .env("DOCKER_HOST", &node.host)
            .env("ECR_AUTH_LOG", "info")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("ECR_AUTH_LOG_FILE")
            .args([
                "swarm",
                "refresh",
                "--every",
                "4s",
                "--watch-events",
                "--log-format",
                "json",
            ]);
        let log = tmp.join(format!("refresh-{index}-{}.log", runs.len() + 1));
        let mut earlier = runs;
        earlier.sort();
        Refresher {
            index,
            daemon: Daemon::spawn(cmd, log),
            earlier,
        }
    }

    /// The logs of every run on this manager, in order.
    fn logs(&self) -> Vec<String> {
        let mut logs: Vec<String> = self
            .earlier
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        logs.push(self.daemon.log());
        logs
    }
}

/// (time, message) of each JSON log line.
fn messages(log: &str) -> Vec<(SystemTime, String)> {
    log.lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let at = humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok()?;
            Some((at, v["fields"]["message"].as_str()?.to_string()))
        })
        .collect()
}

/// When each pass that updated at least one service ended.
fn updating_passes(log: &str) -> Vec<SystemTime> {
    messages(log)
        .into_iter()
        .filter(|(_, m)| {
            m.strip_prefix("pass done: ")
                .and_then(|rest| rest.split(" updated,").next())
                .and_then(|head| head.rsplit(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n > 0)
        })
        .map(|(at, _)| at)
        .collect()
}

fn updates_of(log: &str, name: &str) -> usize {
    let prefix = format!("updated {name} (");
    messages(log)
        .iter()
        .filter(|(_, m)| m.starts_with(&prefix))
        .count()
}
