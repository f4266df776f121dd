//! The sync daemon's rules over an in-memory GitLab and a manual clock.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::*;
use crate::gitlab::variables::{RetryAfter, Variable};
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

/// An in-memory variable store with GitLab's semantics, and failure switches.
#[derive(Default)]
struct Store {
    var: RefCell<Option<Variable>>,
    writes: RefCell<Vec<(&'static str, Settings)>>,
    fail: RefCell<Option<u16>>,
    /// Fail this many reads, then answer.
    fail_times: RefCell<u32>,
    /// The next calls (of any kind) answer these errors, in order.
    script: RefCell<VecDeque<ApiError>>,
    /// Someone else's change, made just before our next write.
    race: RefCell<Option<Race>>,
    /// Every call, in order.
    calls: RefCell<Vec<&'static str>>,
}

/// What someone else does between our read and our write.
enum Race {
    /// Deletes the variable: our update finds it gone.
    Delete,
    /// Creates it with this value: our create finds it taken.
    Create(&'static str),
}

impl Store {
    fn scripted(&self, call: &'static str) -> Result<(), ApiError> {
        self.calls.borrow_mut().push(call);
        match self.script.borrow_mut().pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn set(&self, key: &str, s: &Settings) {
        *self.var.borrow_mut() = Some(Variable {
            key: key.into(),
            value: s.value.clone(),
            protected: s.protected,
            masked: s.masked,
            raw: s.raw,
            environment_scope: s.environment_scope.clone(),
        });
    }
}

impl VariablesApi for Store {
    fn get(&self, _: &Owner, _: &str, _: &str) -> Result<Option<Variable>, ApiError> {
        self.scripted("GET")?;
        let failing = *self.fail_times.borrow() > 0;
        if failing {
            *self.fail_times.borrow_mut() -= 1;
        }
        if let Some(status) = self.fail.borrow().or(failing.then_some(503)) {
            return Err(ApiError::Server {
                method: "GET".into(),
                url: "u".into(),
                status,
                retry_after: None,
            });
        }
        Ok(self.var.borrow().clone())
    }
    fn create(&self, o: &Owner, key: &str, s: &Settings) -> Result<(), ApiError> {
        self.scripted("POST")?;
        if let Some(Race::Create(theirs)) = self.race.borrow_mut().take() {
            self.set(
                key,
                &Settings {
                    value: Secret::new(theirs.into()),
                    ..s.clone()
                },
            );
        }
        if self.var.borrow().is_some() {
            return Err(ApiError::Taken {
                key: key.into(),
                owner: o.to_string(),
            });
        }
        self.writes.borrow_mut().push(("create", s.clone()));
        self.set(key, s);
        Ok(())
    }
    fn update(&self, o: &Owner, key: &str, s: &Settings) -> Result<(), ApiError> {
        self.scripted("PUT")?;
        if let Some(Race::Delete) = self.race.borrow_mut().take() {
            *self.var.borrow_mut() = None;
        }
        if self.var.borrow().is_none() {
            return Err(ApiError::VariableGone {
                key: key.into(),
                owner: o.to_string(),
            });
        }
        self.writes.borrow_mut().push(("update", s.clone()));
        self.set(key, s);
        Ok(())
    }
}

fn rate_limited(retry_after: Option<RetryAfter>) -> ApiError {
    ApiError::RateLimited {
        method: "GET".into(),
        url: "https://gitlab.example.com/api/v4/projects/g%2Fp/variables/DOCKER_AUTH_CONFIG".into(),
        retry_after,
    }
}

fn server(status: u16, retry_after: Option<RetryAfter>) -> ApiError {
    ApiError::Server {
        method: "PUT".into(),
        url: "https://gitlab.example.com/api/v4/projects/g%2Fp/variables/DOCKER_AUTH_CONFIG".into(),
        status,
        retry_after,
    }
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized {
        url: "https://gitlab.example.com/api/v4/projects/g%2Fp/variables/DOCKER_AUTH_CONFIG".into(),
        status: 401,
    }
}

fn forbidden() -> ApiError {
    ApiError::Forbidden {
        owner: "project g/p".into(),
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
    // The same failure three times is told once.
    assert!(log[0].contains("(failure 1 in a row"), "{log:?}");
    assert!(
        log[1]
            .contains("created (after 3 failures in a row); next refresh at 2023-11-15T04:13:20Z"),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.contains("GitLab failed")).count(),
        1,
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

#[test]
fn retry_after_is_a_floor_on_the_wait_and_a_date_counts_from_the_clock() {
    let store = Store::default();
    let now = 1_700_000_000;
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", now)]);
    let mut state = State::default();
    let mut next = |e: ApiError, every: i64| {
        store.script.borrow_mut().push_back(e);
        let s = step(&mut state, now, 0.0, every, &job(), &src, &store);
        assert!(s.result.unwrap_err().is_transient());
        s.next_at - now
    };
    // The first backoff would be 1 s: GitLab's 120 s wins, even over a
    // shorter --every.
    assert_eq!(next(rate_limited(Some(RetryAfter::Seconds(120))), 60), 120);
    // An HTTP date, on the injected clock.
    assert_eq!(
        next(server(503, Some(RetryAfter::At(now + 300))), 3600),
        300
    );
    // A date in the past: the backoff (third failure in a row: 2 s).
    assert_eq!(next(server(503, Some(RetryAfter::At(now - 5))), 3600), 2);
    // An absurd one is cut to an hour.
    assert_eq!(
        next(rate_limited(Some(RetryAfter::Seconds(u64::MAX))), 86_400),
        MAX_RETRY_AFTER
    );
    // Without one: the backoff alone (fifth failure: 8 s).
    assert_eq!(next(rate_limited(None), 86_400), 8);
    // Nothing was written while GitLab said no.
    assert!(store.writes.borrow().is_empty());
}

/// Records what the loop waits, moving the clock instead of sleeping; after
/// `script` is used up the store answers normally.
fn run_with(store: &Store, script: Vec<ApiError>, turns: usize) -> (Vec<String>, Vec<i64>) {
    let start = 1_700_000_000;
    let clock = crate::clock::ManualClock::new(start);
    store.script.borrow_mut().extend(script);
    let src = Fixed(vec![token(
        "1.dkr.ecr.eu-west-1.amazonaws.com",
        "pw",
        start,
    )]);
    let mut waiter = Jump {
        clock: clock.clone(),
        waits: Vec::new(),
        stop_after: turns,
    };
    let mut log = Vec::new();
    run(&job(), 3600, &src, store, &*clock, &mut waiter, &mut |l| {
        log.push(l)
    });
    (log, waiter.waits)
}

#[test]
fn a_token_without_access_is_told_once_per_change_with_what_to_do() {
    let store = Store::default();
    let mut script: Vec<ApiError> = (0..6).map(|_| unauthorized()).collect();
    script.extend((0..4).map(|_| forbidden()));
    let (log, waits) = run_with(&store, script, 12);
    // Ten failed passes, then the variable is created, then it is up to date.
    assert_eq!(waits.len(), 12);
    assert_eq!(
        store.calls.borrow().iter().filter(|c| **c == "GET").count(),
        12
    );
    let told: Vec<&String> = log.iter().filter(|l| l.contains("GitLab")).collect();
    assert_eq!(told.len(), 2, "{log:#?}");
    assert!(
        told[0].contains("rejected the token in GITLAB_TOKEN (401)")
            && told[0].contains("`api` scope")
            && told[0].contains("this needs a fix, not a wait"),
        "{}",
        told[0]
    );
    assert!(
        told[1].contains("403 Forbidden") && told[1].contains("needs the Maintainer role"),
        "{}",
        told[1]
    );
    assert!(
        log[2].contains("created (after 10 failures in a row)"),
        "{log:#?}"
    );
    // Not a busy loop: the backoff grew while it failed.
    assert!(waits[..10].windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    assert!(waits[9] >= 150, "{waits:?}");
    // The same error after a success is a change: told again.
    let (log, _) = run_with(&store, vec![unauthorized(), unauthorized()], 3);
    assert_eq!(
        log.iter().filter(|l| l.contains("(401)")).count(),
        1,
        "{log:#?}"
    );
}

#[test]
fn a_variable_deleted_behind_our_back_is_created_again() {
    let store = Store::default();
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", 0)]);
    assert_eq!(sync_once(&job(), &src.0, &store).unwrap(), Outcome::Created);
    // Deleted between passes: the next one creates it.
    *store.var.borrow_mut() = None;
    let fresh = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw2", 0)]);
    assert_eq!(
        sync_once(&job(), &fresh.0, &store).unwrap(),
        Outcome::Created
    );
    // Deleted between our read and our write: read again, create.
    *store.race.borrow_mut() = Some(Race::Delete);
    store.calls.borrow_mut().clear();
    assert_eq!(sync_once(&job(), &src.0, &store).unwrap(), Outcome::Created);
    assert_eq!(*store.calls.borrow(), ["GET", "PUT", "GET", "POST"]);
    let v = store.var.borrow().clone().unwrap();
    assert_eq!(
        v.value.expose(),
        r#"{"auths":{"1.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"QVdTOnB3"}}}"#
    );
}

#[test]
fn a_variable_created_behind_our_back_is_merged_into_not_overwritten() {
    let store = Store::default();
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", 0)]);
    *store.race.borrow_mut() = Some(Race::Create(
        r#"{"auths":{"registry.gitlab.com":{"auth":"Z2w6dG9rZW4="}}}"#,
    ));
    assert_eq!(sync_once(&job(), &src.0, &store).unwrap(), Outcome::Updated);
    assert_eq!(*store.calls.borrow(), ["GET", "POST", "GET", "PUT"]);
    assert_eq!(
        store.var.borrow().clone().unwrap().value.expose(),
        r#"{"auths":{"registry.gitlab.com":{"auth":"Z2w6dG9rZW4="},"1.dkr.ecr.eu-west-1.amazonaws.com":{"auth":"QVdTOnB3"}}}"#
    );
}

#[test]
fn a_race_that_never_settles_ends_in_an_error() {
    // Deleted before every write: three attempts, then the error.
    struct Flapping(Store);
    impl VariablesApi for Flapping {
        fn get(&self, o: &Owner, k: &str, sc: &str) -> Result<Option<Variable>, ApiError> {
            *self.0.race.borrow_mut() = Some(Race::Create(r#"{"auths":{}}"#));
            *self.0.var.borrow_mut() = None;
            self.0.get(o, k, sc)
        }
        fn create(&self, o: &Owner, k: &str, s: &Settings) -> Result<(), ApiError> {
            self.0.create(o, k, s)
        }
        fn update(&self, o: &Owner, k: &str, s: &Settings) -> Result<(), ApiError> {
            self.0.update(o, k, s)
        }
    }
    let api = Flapping(Store::default());
    let src = Fixed(vec![token("1.dkr.ecr.eu-west-1.amazonaws.com", "pw", 0)]);
    let e = sync_once(&job(), &src.0, &api).unwrap_err();
    assert!(
        e.to_string()
            .contains("was created by someone else while ecr-auth was creating it"),
        "{e}"
    );
    assert_eq!(api.0.calls.borrow().len(), 2 * RACE_ATTEMPTS);
}

/// A waiter for `once`: records waits, moves the clock.
fn once_with(
    store: &Store,
    script: Vec<ApiError>,
) -> (Result<Outcome, SyncError>, Vec<i64>, Vec<String>) {
    let clock = crate::clock::ManualClock::new(1_700_000_000);
    store.script.borrow_mut().extend(script);
    let src = Fixed(vec![token(
        "1.dkr.ecr.eu-west-1.amazonaws.com",
        "pw",
        1_700_000_000,
    )]);
    let mut waiter = Jump {
        clock: clock.clone(),
        waits: Vec::new(),
        stop_after: usize::MAX,
    };
    let mut log = Vec::new();
    let r = once(&job(), &src, store, &*clock, &mut waiter, &mut |l| {
        log.push(l)
    });
    (r, waiter.waits, log)
}

#[test]
fn a_one_shot_sync_retries_what_may_pass_and_not_what_needs_a_fix() {
    // 5xx twice, then GitLab is back: two waits by the backoff, then created.
    let store = Store::default();
    let (r, waits, log) = once_with(&store, vec![server(502, None), server(503, None)]);
    assert_eq!(r.unwrap(), Outcome::Created);
    assert_eq!(waits, [1, 1]);
    assert!(log[1].contains("(attempt 3 of 3)"), "{log:?}");
    // 5xx every time: three attempts, then the error.
    let store = Store::default();
    let (r, waits, _) = once_with(&store, (0..5).map(|_| server(502, None)).collect());
    assert!(r.unwrap_err().to_string().contains("GitLab failed (502)"));
    assert_eq!(waits.len(), 2);
    assert_eq!(store.calls.borrow().len(), 3);
    // A short Retry-After is waited out; a long one is not waited for.
    let store = Store::default();
    let (r, waits, _) = once_with(&store, vec![rate_limited(Some(RetryAfter::Seconds(7)))]);
    assert_eq!((r.unwrap(), waits), (Outcome::Created, vec![7]));
    let store = Store::default();
    let (r, waits, _) = once_with(&store, vec![rate_limited(Some(RetryAfter::Seconds(600)))]);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("(it asks to be called again in 600 s)"),);
    assert!(waits.is_empty());
    // A token without access: no retry.
    let store = Store::default();
    let (r, waits, _) = once_with(&store, vec![unauthorized()]);
    assert!(!r.unwrap_err().is_transient());
    assert!(waits.is_empty());
    assert_eq!(store.calls.borrow().len(), 1);
}
