//! `step` against a fake Swarm, a scripted token source and a manual clock: no
//! dockerd, no AWS, no sleeping.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use serde_json::value::RawValue;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::env::Env;
use crate::secret::Secret;
use crate::swarm::docker::Service;
use crate::swarm::fake_daemon;
use crate::swarm::metrics::Outcome;
use crate::tokens::{Fetch, FetchRequest, Fetched, TokenError};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const T0: i64 = 1_800_000_000;
const TTL: i64 = 12 * 3600;
const REPLICATED: &str = r#"{"Replicated":{"Replicas":1}}"#;

/// One service as the fake daemon stores it.
struct Stored {
    id: String,
    version: u64,
    spec: String,
    update_state: Option<String>,
}

/// What an update sent.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    id: String,
    version: u64,
    password: String,
    server: String,
    spec: String,
}

/// A Swarm with Docker's rules for updates: the version must be the current one.
struct FakeSwarm {
    role: RefCell<Role>,
    services: RefCell<Vec<Stored>>,
    updates: RefCell<Vec<Sent>>,
    /// Every call fails as if dockerd were down.
    down: Cell<bool>,
    /// Someone else updates the service right before each of our next N updates.
    races: Cell<u32>,
    calls: Cell<u64>,
}

impl FakeSwarm {
    fn new() -> FakeSwarm {
        FakeSwarm {
            role: RefCell::new(leader()),
            services: RefCell::new(Vec::new()),
            updates: RefCell::new(Vec::new()),
            down: Cell::new(false),
            races: Cell::new(0),
            calls: Cell::new(0),
        }
    }

    fn add(&self, id: &str, image: &str, mode: &str, update_state: Option<&str>) {
        self.services.borrow_mut().push(Stored {
            id: id.into(),
            version: 10,
            spec: format!(
                r#"{{"Name":"{id}","Labels":{{}},"TaskTemplate":{{"ContainerSpec":{{"Image":"{image}","Init":false}},"ForceUpdate":0}},"Mode":{mode}}}"#
            ),
            update_state: update_state.map(str::to_string),
        });
    }

    /// Someone else changes the service (`docker service update --label-add`).
    fn their_change(&self, id: &str) {
        let mut services = self.services.borrow_mut();
        let s = services.iter_mut().find(|s| s.id == id).unwrap();
        s.version += 1;
        let at = s.spec.find(r#""Labels":{"#).unwrap() + r#""Labels":{"#.len();
        let sep = if s.spec[at..].starts_with('}') {
            ""
        } else {
            ","
        };
        s.spec
            .insert_str(at, &format!(r#""changed{}":"meanwhile"{sep}"#, s.version));
    }

    fn spec_of(&self, id: &str) -> String {
        let services = self.services.borrow();
        services.iter().find(|s| s.id == id).unwrap().spec.clone()
    }

    fn updates_of(&self, id: &str) -> usize {
        self.updates.borrow().iter().filter(|u| u.id == id).count()
    }

    fn enter(&self) -> Result<(), DockerError> {
        self.calls.set(self.calls.get() + 1);
        if self.down.get() {
            return Err(DockerError::Unreachable {
                endpoint: "unix:///fake/docker.sock".into(),
                message: "connection refused".into(),
            });
        }
        Ok(())
    }

    fn read(s: &Stored) -> Service {
        let state = s
            .update_state
            .as_ref()
            .map(|st| format!(r#","UpdateStatus":{{"State":"{st}"}}"#))
            .unwrap_or_default();
        fake_daemon::service(&s.id, s.version, &s.spec, &state)
    }
}

impl SwarmApi for FakeSwarm {
    async fn role(&self) -> Result<Role, DockerError> {
        self.enter()?;
        Ok(self.role.borrow().clone())
    }

    async fn services(&self) -> Result<Vec<Service>, DockerError> {
        self.enter()?;
        Ok(self.services.borrow().iter().map(FakeSwarm::read).collect())
    }

    async fn service(&self, id: &str) -> Result<Service, DockerError> {
        self.enter()?;
        let services = self.services.borrow();
        match services.iter().find(|s| s.id == id) {
            Some(s) => Ok(FakeSwarm::read(s)),
            None => Err(fake_daemon::not_found(format!("GET /services/{id}"), id)),
        }
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &RawValue,
        registry_auth: &Secret<String>,
    ) -> Result<Vec<String>, DockerError> {
        self.enter()?;
        if self.races.get() > 0 {
            self.races.set(self.races.get() - 1);
            self.their_change(id);
        }
        let mut services = self.services.borrow_mut();
        let s = services.iter_mut().find(|s| s.id == id).unwrap();
        if version != s.version {
            return Err(fake_daemon::out_of_sequence(id));
        }
        let auth = fake_daemon::sent_auth(registry_auth);
        s.version += 1;
        s.spec = spec.get().to_string();
        self.updates.borrow_mut().push(Sent {
            id: id.into(),
            version,
            password: auth["password"].as_str().unwrap().into(),
            server: auth["serveraddress"].as_str().unwrap().into(),
            spec: spec.get().into(),
        });
        Ok(Vec::new())
    }

    fn calls(&self) -> u64 {
        self.calls.get()
    }
}

/// AWS as a script: a new password per fetch, valid for TTL; a failure switch.
#[derive(Clone)]
struct Aws {
    fetches: Arc<AtomicU32>,
    fail: Arc<Mutex<bool>>,
    clock: Arc<ManualClock>,
}

impl Fetch for Aws {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        requests
            .iter()
            .map(|_| {
                if *self.fail.lock().unwrap() {
                    return Err(TokenError::Aws {
                        what: "getting an ECR token in eu-west-1".into(),
                        cause: "the service is unavailable".into(),
                        advice: "try again later".into(),
                    });
                }
                Ok(Fetched {
                    username: "AWS".into(),
                    password: format!("password-{n}"),
                    expires_at: Some(self.clock.now() + TTL),
                    proxy_endpoint: None,
                })
            })
            .collect()
    }
}

struct World {
    swarm: FakeSwarm,
    aws: Aws,
    clock: Arc<ManualClock>,
    tokens: Arc<Tokens>,
    state: State,
    _stop: watch::Sender<bool>,
}

fn world(schedule: Schedule) -> World {
    let clock = ManualClock::new(T0);
    let aws = Aws {
        fetches: Arc::default(),
        fail: Arc::default(),
        clock: clock.clone(),
    };
    let env = Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")]);
    let tokens = Tokens::builder(env, Config::default())
        .fetcher(Box::new(aws.clone()))
        .cache(None)
        .in_memory()
        .clock(clock.clone())
        .build();
    let (stop_tx, stop) = watch::channel(false);
    let settings = Settings {
        schedule,
        selection: Selection::default(),
        dry_run: false,
    };
    World {
        swarm: FakeSwarm::new(),
        aws,
        clock,
        tokens: Arc::new(tokens),
        state: State::new(settings, Metrics::new(), stop).with_draw(|| 0.0),
        _stop: stop_tx,
    }
}

impl World {
    async fn step(&mut self) -> Step {
        step(&mut self.state, self.clock.now(), &self.swarm, &self.tokens).await
    }

    fn fetches(&self) -> u32 {
        self.aws.fetches.load(Ordering::SeqCst)
    }
}

fn leader() -> Role {
    Role::Leader {
        node_id: "n1".into(),
    }
}

fn report(s: Step) -> Report {
    match s.turn {
        Turn::Pass(r) => r,
        other => panic!("not a pass: {other:?}"),
    }
}

#[tokio::test]
async fn auth_is_resent_only_when_the_token_changes() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    w.swarm.add("hub", "nginx:1.25", REPLICATED, None);
    let spec = w.swarm.spec_of("web");

    let s = w.step().await;
    // The token's refresh time is 6 h away; the default mode looks again hourly.
    assert_eq!(s.wait, Duration::from_secs(3600));
    let r = report(s);
    assert_eq!((r.updated, r.ignored, r.tokens), (1, 1, 1), "{r:?}");
    assert_eq!(
        w.swarm.updates.borrow()[0],
        Sent {
            id: "web".into(),
            version: 10,
            password: "password-1".into(),
            server: ECR.into(),
            spec,
        },
        "the spec goes back as it was, with the registry's auth"
    );
    assert_eq!(r.refresh_due, Some(T0 + TTL / 2));

    // An hour later: the same token (from the core's memory), nothing re-sent.
    w.clock.advance(3600);
    let r = report(w.step().await);
    assert_eq!((r.updated, r.unchanged), (0, 1), "{r:?}");
    assert_eq!(w.fetches(), 1, "the token came from memory");

    // Someone redeploys the service (its auth may be stale): sent again.
    w.swarm.their_change("web");
    w.clock.advance(60);
    let r = report(w.step().await);
    assert_eq!(r.updated, 1, "{r:?}");
    assert_eq!(w.fetches(), 1);

    // Just before the token's refresh time: still nothing.
    w.clock.set(T0 + TTL / 2 - 1);
    let s = w.step().await;
    assert_eq!(
        s.wait,
        Duration::from_secs(60),
        "due in 1 s; never closer than a minute"
    );
    assert_eq!(report(s).updated, 0);
    // At its refresh time the core fetches a new token, and it is sent.
    w.clock.set(T0 + TTL / 2);
    let r = report(w.step().await);
    assert_eq!((r.updated, w.fetches()), (1, 2), "{r:?}");
    let last = w.swarm.updates.borrow().last().unwrap().password.clone();
    assert_eq!(last, "password-2");
    assert_eq!(w.swarm.updates_of("web"), 3);
    assert_eq!(w.swarm.updates_of("hub"), 0);
}

#[tokio::test]
async fn a_single_pass_sends_to_every_service() {
    let mut w = world(Schedule::Once);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    for _ in 0..2 {
        let s = w.step().await;
        assert_eq!(s.wait, Duration::ZERO);
        assert_eq!(report(s).updated, 1);
    }
    assert_eq!(w.fetches(), 1);
}

#[tokio::test]
async fn update_out_of_sequence_is_retried_with_their_change_kept() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    w.swarm.races.set(2);
    let r = report(w.step().await);
    assert_eq!((r.updated, r.failed, r.retries), (1, 0, 2), "{r:?}");
    let updates = w.swarm.updates.borrow();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].version, 12, "sent at the version re-read");
    assert!(
        updates[0].spec.contains(r#""changed12":"meanwhile""#),
        "their change was lost: {}",
        updates[0].spec
    );
}

#[tokio::test]
async fn endless_out_of_sequence_gives_up_on_that_service_only() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("busy", &format!("{ECR}/app:1"), REPLICATED, None);
    w.swarm.races.set(100);
    let r = report(w.step().await);
    assert_eq!((r.updated, r.failed, r.retries), (0, 1, 4), "{r:?}");
    assert_eq!(r.problem().as_deref(), Some("1 service update(s) failed"));
    assert!(!w.state.metrics.health().0);
}

#[tokio::test]
async fn docker_failures_back_off_then_recover() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    w.swarm.down.set(true);
    let mut waits = Vec::new();
    for _ in 0..10 {
        let s = w.step().await;
        assert!(matches!(s.turn, Turn::DockerFailed(ref e) if e.is_connection()));
        waits.push(s.wait.as_millis() as u64);
    }
    // crate::backoff's rule with the lowest draw: 1 s doubling, halved, to 5 min.
    assert_eq!(
        waits,
        [500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000]
    );
    assert_eq!(w.state.docker_failures(), 10);
    let (healthy, why) = w.state.metrics.health();
    assert!(
        !healthy && why.contains("cannot reach the Docker daemon"),
        "{why}"
    );
    assert_eq!(w.fetches(), 0, "no token fetched while Docker is down");

    w.swarm.down.set(false);
    let r = report(w.step().await);
    assert_eq!(r.updated, 1);
    assert_eq!(w.state.docker_failures(), 0);
    assert!(w.state.metrics.health().0);
}

#[tokio::test]
async fn every_caps_the_backoff() {
    let mut w = world(Schedule::Every(Duration::from_secs(2)));
    w.swarm.down.set(true);
    let waits: Vec<u128> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(w.step().await.wait.as_millis());
        }
        v
    };
    assert_eq!(waits, [500, 1000, 1000, 1000, 1000]);
}

#[tokio::test]
async fn aws_failures_back_off_and_services_keep_their_auth() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    *w.aws.fail.lock().unwrap() = true;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let s = w.step().await;
        waits.push(s.wait.as_millis());
        let r = report(s);
        assert_eq!((r.updated, r.token_errors), (0, 1), "{r:?}");
        w.clock.advance(1);
    }
    assert_eq!(waits, [500, 1000, 2000]);
    assert_eq!(w.state.token_failures(), 3);
    assert_eq!(w.swarm.updates.borrow().len(), 0);
    let (healthy, why) = w.state.metrics.health();
    assert!(
        !healthy && why.contains("no ECR token for 1 service"),
        "{why}"
    );

    *w.aws.fail.lock().unwrap() = false;
    let s = w.step().await;
    assert_eq!(s.wait, Duration::from_secs(3600));
    assert_eq!(report(s).updated, 1);
    assert_eq!(w.state.token_failures(), 0);
}

#[tokio::test]
async fn acts_only_while_leader() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    assert_eq!(report(w.step().await).updated, 1);

    // Leadership moves to another manager: this one idles and touches nothing.
    *w.swarm.role.borrow_mut() = Role::Manager {
        node_id: "n1".into(),
    };
    let calls = w.swarm.calls.get();
    for _ in 0..3 {
        let s = w.step().await;
        assert!(matches!(s.turn, Turn::Idle(Role::Manager { .. })), "{s:?}");
        assert_eq!(s.wait, schedule::IDLE_RECHECK);
        w.clock.advance(30);
    }
    assert_eq!(w.swarm.calls.get() - calls, 3, "only the role was asked");
    assert_eq!(w.swarm.updates_of("web"), 1);
    assert!(w.state.metrics.health().0);
    assert!(w
        .state
        .metrics
        .render()
        .contains("ecr_auth_swarm_leader 0\n"));

    // Leader again: every service gets auth once more, though neither the
    // token nor the spec changed (another leader acted meanwhile).
    *w.swarm.role.borrow_mut() = leader();
    let r = report(w.step().await);
    assert_eq!(r.updated, 1, "{r:?}");
    assert_eq!(w.fetches(), 1);
    assert!(w
        .state
        .metrics
        .render()
        .contains("ecr_auth_swarm_leader 1\n"));
    // And then, as before, only when something changed.
    assert_eq!(report(w.step().await).updated, 0);
}

#[tokio::test]
async fn idle_rechecks_within_every() {
    let mut w = world(Schedule::Every(Duration::from_secs(5)));
    *w.swarm.role.borrow_mut() = Role::NotInSwarm {
        state: "inactive".into(),
    };
    let s = w.step().await;
    assert!(matches!(s.turn, Turn::Idle(_)));
    assert_eq!(s.wait, Duration::from_secs(5));
}

#[tokio::test]
async fn paused_rolling_back_and_job_services_are_left_alone() {
    let mut w = world(Schedule::HalfLife);
    let image = format!("{ECR}/app:1");
    w.swarm.add("web", &image, REPLICATED, None);
    w.swarm.add("paused", &image, REPLICATED, Some("paused"));
    w.swarm
        .add("rolling-back", &image, REPLICATED, Some("rollback_started"));
    w.swarm.add(
        "job",
        &image,
        r#"{"ReplicatedJob":{"MaxConcurrent":1,"TotalCompletions":1}}"#,
        None,
    );
    w.swarm.add("done", &image, REPLICATED, Some("completed"));
    let r = report(w.step().await);
    assert_eq!((r.updated, r.held), (2, 3), "{r:?}");
    let updated: Vec<String> = w
        .swarm
        .updates
        .borrow()
        .iter()
        .map(|u| u.id.clone())
        .collect();
    assert_eq!(updated, ["web", "done"]);
    let page = w.state.metrics.render();
    for (id, outcome) in [
        ("paused", Outcome::SkippedPaused),
        ("rolling-back", Outcome::SkippedPaused),
        ("job", Outcome::SkippedJob),
    ] {
        let want = format!(
            "ecr_auth_swarm_service_refresh_result{{service=\"{id}\",service_id=\"{id}\",result=\"{}\"}} 1",
            outcome.as_str()
        );
        assert!(page.contains(&want), "no {want} in\n{page}");
    }
}

#[tokio::test]
async fn a_dry_run_lists_and_asks_nobody() {
    let mut w = world(Schedule::Once);
    w.state.settings.dry_run = true;
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    let r = report(w.step().await);
    assert_eq!(r.would_update.len(), 1);
    assert!(
        r.would_update[0].starts_with(
            "would update web (web): image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1 on "
        ),
        "{:?}",
        r.would_update
    );
    assert_eq!(w.fetches(), 0);
    assert!(w.swarm.updates.borrow().is_empty());
}

#[tokio::test]
async fn events_act_on_others_changes_not_our_own() {
    let mut w = world(Schedule::HalfLife);
    w.swarm
        .add("web", &format!("{ECR}/app:1"), REPLICATED, None);
    w.swarm
        .add("new", &format!("{ECR}/app:2"), REPLICATED, None);
    assert_eq!(report(w.step().await).updated, 2);
    let now = w.clock.now();
    let ids = vec!["web".to_string(), "new".to_string(), "gone".to_string()];

    // Our own updates come back as events: nothing to do.
    let r = on_events(&mut w.state, now, &w.swarm, &w.tokens, &ids)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.updated, 0, "{r:?}");

    // Someone else updates `new`: it gets auth again.
    w.swarm.their_change("new");
    let r = on_events(&mut w.state, now, &w.swarm, &w.tokens, &ids)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    assert_eq!(w.swarm.updates_of("new"), 2);

    // Not the leader any more: nothing, and the caller runs a full turn.
    *w.swarm.role.borrow_mut() = Role::Worker;
    w.swarm.their_change("web");
    let r = on_events(&mut w.state, now, &w.swarm, &w.tokens, &ids)
        .await
        .unwrap();
    assert!(r.is_none());
    assert_eq!(w.swarm.updates_of("web"), 1);
}

#[test]
fn fake_updates_follow_dockers_version_rule() {
    // The fake must refuse a stale version, or the retry tests above prove nothing.
    let swarm = FakeSwarm::new();
    swarm.add("web", "a/b", REPLICATED, None);
    let stale = FakeSwarm::read(&swarm.services.borrow()[0]);
    swarm.their_change("web");
    let auth = crate::swarm::docker::registry_auth_header("AWS", &Secret::new("p".into()), ECR);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt
        .block_on(swarm.update_service("web", stale.version, &stale.spec, &auth))
        .unwrap_err();
    assert!(e.is_out_of_sequence(), "{e}");
}
