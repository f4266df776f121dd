//! The sync daemon's rules over an in-memory GitLab and a manual clock.

use std::cell::RefCell;

use super::*;
use crate::gitlab::variables::Variable;
use crate::registry::Host;
use crate::tokens::Origin;

fn token(host: &str, pw: &str, issued: i64) -> AuthToken {
    AuthToken {
        host: Host::parse(host).unwrap(),
        username: "AWS".into(),
        password: Secret::new(pw.into()),
        issued_at: issued,
        expires_at: issued + 43_200,
        proxy_endpoint: None,
        origin: Origin::Aws,
    }
}

/// An in-memory variable store with GitLab's semantics, and a failure switch.
#[derive(Default)]
struct Store {
    var: RefCell<Option<Variable>>,
    writes: RefCell<Vec<(&'static str, Settings)>>,
    fail: RefCell<Option<u16>>,
    /// Fail this many reads, then answer.
    fail_times: RefCell<u32>,
}

impl VariablesApi for Store {
    fn get(&self, _: &Owner, _: &str, _: &str) -> Result<Option<Variable>, ApiError> {
        let failing = *self.fail_times.borrow() > 0;
        if failing {
            *self.fail_times.borrow_mut() -= 1;
        }
        if let Some(status) = self.fail.borrow().or(failing.then_some(503)) {
            return Err(ApiError::Server {
                method: "GET".into(),
                url: "u".into(),
                status,
            });
        }
        Ok(self.var.borrow().clone())
    }
    fn create(&self, _: &Owner, key: &str, s: &Settings) -> Result<(), ApiError> {
        self.writes.borrow_mut().push(("create", s.clone()));
        *self.var.borrow_mut() = Some(Variable {
            key: key.into(),
            value: s.value.clone(),
            protected: s.protected,
            masked: s.masked,
            raw: s.raw,
            environment_scope: s.environment_scope.clone(),
        });
        Ok(())
    }
    fn update(&self, o: &Owner, key: &str, s: &Settings) -> Result<(), ApiError> {
        self.create(o, key, s)?;
        self.writes.borrow_mut().last_mut().unwrap().0 = "update";
        Ok(())
    }
}

struct Fixed(Vec<AuthToken>);
impl TokenSource for Fixed {
    fn tokens(&self) -> Result<Vec<AuthToken>, SyncError> {
        Ok(self.0.clone())
    }
}

fn job() -> Job {
    Job {
        owner: Owner::Project("g/p".into()),
        key: "DOCKER_AUTH_CONFIG".into(),
        environment_scope: "*".into(),
        protected: None,
        masked: Some(true),
    }
}

#[test]
fn creates_then_merges_then_leaves_alone() {
    let store = Store::default();
    let now = 1_000_000;
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", now)]);
    let mut state = State::default();
    let s = step(&mut state, now, 0.5, 3600, &job(), &src, &store);
    assert_eq!(s.result.unwrap(), Outcome::Created);
    assert_eq!(s.next_at, now + 3600, "every caps the wait");
    let w = store.writes.borrow()[0].1.clone();
    assert!(w.masked && w.raw && !w.value.expose().contains(' '));
    // someone adds another registry to the variable; ours is refreshed, theirs stays
    store.var.borrow_mut().as_mut().unwrap().value =
        Secret::new(r#"{"auths":{"other.example":{"auth":"eDp5"},"1.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"old"}}}"#.into());
    let s = step(&mut state, now + 3600, 0.5, 86_400, &job(), &src, &store);
    assert_eq!(s.result.unwrap(), Outcome::Updated);
    assert_eq!(s.next_at, now + 21_600, "half of the token's 12 h");
    let v = store.var.borrow().clone().unwrap();
    assert_eq!(
        v.value.expose(),
        r#"{"auths":{"other.example":{"auth":"eDp5"},"1.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"QVdTOnB3"}}}"#
    );
    let s = step(&mut state, now + 7200, 0.5, 86_400, &job(), &src, &store);
    assert_eq!(s.result.unwrap(), Outcome::Unchanged);
    assert_eq!(store.writes.borrow().len(), 2);
}

#[test]
fn backs_off_with_jitter_and_recovers() {
    let store = Store::default();
    *store.fail.borrow_mut() = Some(502);
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", 0)]);
    let mut state = State::default();
    let mut waits = Vec::new();
    for _ in 0..8 {
        let s = step(&mut state, 0, 0.0, 3600, &job(), &src, &store);
        assert!(s.result.unwrap_err().is_transient());
        waits.push(s.next_at);
    }
    // Backoff::DAEMON, in whole seconds: 0.5 s rounds up to 1.
    assert_eq!(waits, vec![1, 1, 2, 4, 8, 16, 32, 64]);
    assert_eq!(state.failures, 8);
    // jitter spreads within [cap/2, cap)
    assert_eq!(backoff(4, 3600, 0.0), 4);
    assert_eq!(backoff(4, 3600, 0.99), 8);
    assert_eq!(backoff(30, 120, 0.0), 60, "never longer than every");
    assert_eq!(
        backoff(30, 86_400, 0.0),
        150,
        "at most Backoff::DAEMON's 5 minutes"
    );
    *store.fail.borrow_mut() = None;
    let s = step(&mut state, 100, 0.0, 3600, &job(), &src, &store);
    assert!(s.result.is_ok());
    assert_eq!(state.failures, 0);
}

#[test]
fn expired_tokens_do_not_spin() {
    // moto's tokens expired in 2015: half-life is in the past
    let t = vec![token(
        "1.dkr.ecr.eu-west-1.amazonaws.com",
        "pw",
        1_400_000_000,
    )];
    assert_eq!(
        next_after_success(1_700_000_000, &t, 3600),
        1_700_000_000 + MIN_INTERVAL
    );
}

/// Moves the injected clock to each wake-up time instead of sleeping.
struct Jump {
    clock: std::sync::Arc<crate::clock::ManualClock>,
    waits: Vec<i64>,
    stop_after: usize,
}

impl Waiter for Jump {
    fn wait_until(&mut self, at: i64, now: i64) -> bool {
        self.waits.push(at - now);
        self.clock.set(at.max(now));
        self.waits.len() < self.stop_after
    }
    fn jitter(&mut self) -> f64 {
        0.0
    }
}

#[test]
fn the_loop_backs_off_on_its_clock_then_refreshes_at_half_life() {
    let start = 1_700_000_000;
    let clock = crate::clock::ManualClock::new(start);
    let store = Store::default();
    *store.fail_times.borrow_mut() = 3;
    let src = Fixed(vec![token(
        "1.dkr.ecr.eu-west-1.amazonaws.com",
        "pw",
        start,
    )]);
    let mut waiter = Jump {
        clock: clock.clone(),
        waits: Vec::new(),
        stop_after: 6,
    };
    let mut log = Vec::new();
    run(
        &job(),
        86_400,
        &src,
        &store,
        &*clock,
        &mut waiter,
        &mut |l| log.push(l),
    );
    // Three failures: 1 s, 1 s, 2 s (Backoff::DAEMON, no jitter); then the
    // variable is created and the next refresh is at half the token's
    // 12 h (from the clock's now), then again `every`-capped refreshes.
    assert_eq!(waiter.waits[..4], [1, 1, 2, 21_600 - 4]);
    assert_eq!(store.writes.borrow()[0].0, "create");
    assert!(log[0].contains("(failure 1 in a row)"), "{log:?}");
    assert!(log[2].contains("(failure 3 in a row)"), "{log:?}");
    assert!(
        log[3].contains("created; next refresh at 2023-11-15T04:13:20Z"),
        "{log:?}"
    );
    assert_eq!(log.last().unwrap(), "stopping: SIGTERM or SIGINT received");
    assert_eq!(clock.now(), start + waiter.waits.iter().sum::<i64>());
}

#[test]
fn an_unreadable_current_value_is_not_overwritten() {
    let store = Store::default();
    store
        .create(
            &job().owner,
            "DOCKER_AUTH_CONFIG",
            &Settings {
                value: Secret::new("not json".into()),
                protected: true,
                masked: false,
                raw: false,
                environment_scope: "*".into(),
            },
        )
        .unwrap();
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", 0)]);
    let e = sync_once(&job(), &src.0, &store).unwrap_err();
    assert!(!e.is_transient());
    assert!(e.to_string().contains("fix or delete the variable"), "{e}");
    assert_eq!(store.writes.borrow().len(), 1);
}
