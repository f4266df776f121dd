//! Unit tests of the cache logic with a scripted fetcher. The same behaviour is
//! proved end to end against real AWS-API servers in `tests/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::clock::{Clock, ManualClock};

/// Answers from a script; counts calls and requests.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    fail: Arc<Mutex<Option<TokenError>>>,
    ttl: i64,
    clock: Arc<ManualClock>,
    deadlines: Arc<Mutex<Vec<Duration>>>,
    /// Holds each fetch this long (to overlap concurrent callers).
    delay: Duration,
}

impl Fetch for Scripted {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        requests
            .iter()
            .map(|r| {
                self.requests.lock().unwrap().push(r.target.scope());
                self.deadlines.lock().unwrap().push(r.deadline);
                if let Some(e) = self.fail.lock().unwrap().clone() {
                    return Err(e);
                }
                Ok(Fetched {
                    username: "AWS".into(),
                    password: format!("pw-{}-{}", r.target.region(), self.clock.now()),
                    expires_at: Some(self.clock.now() + self.ttl),
                    proxy_endpoint: None,
                })
            })
            .collect()
    }
}

fn setup(ttl: i64) -> (tempfile::TempDir, Tokens, Scripted) {
    let clock = ManualClock::new(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("HOME", tmp.path().to_str().unwrap()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ]);
    let fetcher = Scripted {
        ttl,
        clock: clock.clone(),
        ..Default::default()
    };
    let tokens = Tokens::builder(env, Config::default())
        .cache(Some(Cache::at(tmp.path().join("cache"))))
        .fetcher(Box::new(fetcher.clone()))
        .clock(clock)
        .build();
    (tmp, tokens, fetcher)
}

const A: &str = "111111111111.dkr.ecr.eu-west-1.amazonaws.com";
const B: &str = "222222222222.dkr.ecr.eu-west-1.amazonaws.com";
const C: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";

// The clock is global to this module: tests that move it run under one lock.
static CLOCK_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn one_fetch_per_region_shared_across_accounts() {
    let _g = CLOCK_LOCK.lock().unwrap();
    let (_tmp, tokens, f) = setup(43200);
    let rs: Vec<_> = [A, B, C]
        .iter()
        .map(|h| tokens.resolve(h).unwrap())
        .collect();
    let out = tokens.get_many(&rs);
    assert_eq!(f.calls.load(Ordering::SeqCst), 1, "one batch");
    let mut scopes = f.requests.lock().unwrap().clone();
    scopes.sort();
    assert_eq!(scopes, ["aws/eu-west-1", "aws/us-east-1"]);
    let a = out[0].as_ref().unwrap();
    let b = out[1].as_ref().unwrap();
    assert_eq!(a.password, b.password);
    assert_eq!(b.host.as_str(), B);
    assert_eq!(a.origin, Origin::Aws);
    // warm: nothing fetched
    let again = tokens.get(B).unwrap();
    assert_eq!(again.origin, Origin::Cache);
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn refresh_at_half_life_and_fall_back_while_valid() {
    let _g = CLOCK_LOCK.lock().unwrap();
    let (_tmp, tokens, f) = setup(43200);
    let first = tokens.get(A).unwrap();
    f.clock.advance(21_599);
    assert_eq!(tokens.get(A).unwrap().origin, Origin::Cache);
    f.clock.advance(2);
    let second = tokens.get(A).unwrap();
    assert_eq!(second.origin, Origin::Aws, "past half-life");
    assert_ne!(first.password, second.password);
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);

    // AWS down past half-life: the cached token, marked stale
    f.clock.advance(30_000);
    *f.fail.lock().unwrap() = Some(TokenError::Aws {
        what: "x".into(),
        cause: "down".into(),
        advice: "wait".into(),
    });
    let stale = tokens.get(A).unwrap();
    assert_eq!(stale.origin, Origin::StaleCache);
    assert_eq!(stale.password, second.password);
    // after expiry: refused
    f.clock.advance(20_000);
    let e = tokens.get(A).unwrap_err();
    assert!(matches!(e, TokenError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("expired at"), "{e}");
}

#[test]
fn already_expired_tokens_are_used_but_not_cached() {
    let _g = CLOCK_LOCK.lock().unwrap();
    let (_tmp, tokens, f) = setup(-100);
    assert_eq!(tokens.get(A).unwrap().origin, Origin::Aws);
    assert_eq!(tokens.get(A).unwrap().origin, Origin::Aws);
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    assert!(tokens.cache().unwrap().entries().is_empty());
}

#[test]
fn not_ours_and_no_credentials_are_not_found() {
    let _g = CLOCK_LOCK.lock().unwrap();
    let (_tmp, tokens, f) = setup(43200);
    let e = tokens.get("docker.io").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(f.calls.load(Ordering::SeqCst), 0);
    *f.fail.lock().unwrap() = Some(TokenError::NoCredentials {
        tried: "everything".into(),
        explained: None,
    });
    assert!(tokens.get(A).unwrap_err().is_not_found());
    assert!(tokens
        .get("bad host")
        .unwrap_err()
        .to_string()
        .contains("not a registry host"));
}

#[test]
fn known_hosts_come_from_config_and_cache_only() {
    let _g = CLOCK_LOCK.lock().unwrap();
    let (_tmp, tokens, _f) = setup(43200);
    assert!(tokens.known_hosts().is_empty());
    tokens.get(A).unwrap();
    assert_eq!(tokens.known_hosts(), vec![A.to_string()]);
}

fn limits() -> Limits {
    Limits {
        refresh_budget: Duration::from_secs(2),
        cold_deadline: Duration::from_secs(10),
    }
}

#[test]
fn a_refresh_of_a_valid_token_gets_the_short_budget_a_cold_fetch_the_deadline() {
    let (_tmp, tokens, f) = setup(43200);
    assert_eq!(tokens.limits(), Limits::from_env(&Env::default()));
    tokens.get(A).unwrap();
    // past half-life, still valid: a refresh, within the budget
    f.clock.advance(30_000);
    tokens.get(A).unwrap();
    // expired: cold again
    f.clock.advance(50_000);
    tokens.get(A).unwrap();
    assert_eq!(
        *f.deadlines.lock().unwrap(),
        [
            limits().cold_deadline,
            limits().refresh_budget,
            limits().cold_deadline
        ]
    );
}

#[test]
fn limits_come_from_the_environment_and_bad_values_keep_the_defaults() {
    let env = Env::from_pairs([
        ("ECR_AUTH_TIMEOUT", "30s"),
        ("ECR_AUTH_REFRESH_TIMEOUT", "500ms"),
    ]);
    assert_eq!(
        Limits::from_env(&env),
        Limits {
            refresh_budget: Duration::from_millis(500),
            cold_deadline: Duration::from_secs(30)
        }
    );
    let env = Env::from_pairs([
        ("ECR_AUTH_TIMEOUT", "soon"),
        ("ECR_AUTH_REFRESH_TIMEOUT", "0"),
    ]);
    assert_eq!(Limits::from_env(&env), limits());
}

#[test]
fn in_memory_single_flight_makes_one_call_for_concurrent_callers() {
    let clock = ManualClock::new(1_000_000);
    let fetcher = Scripted {
        ttl: 43200,
        clock: clock.clone(),
        delay: Duration::from_millis(200),
        ..Default::default()
    };
    let tokens = Arc::new(
        Tokens::builder(
            Env::from_pairs([
                ("HOME", "/nonexistent"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ]),
            Config::default(),
        )
        .cache(None)
        .in_memory()
        .fetcher(Box::new(fetcher.clone()))
        .clock(clock.clone())
        .build(),
    );
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let t = tokens.clone();
            std::thread::spawn(move || t.get(A).unwrap().password.expose().clone())
        })
        .collect();
    let passwords: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1, "one flight");
    assert!(
        passwords.iter().all(|p| p == &passwords[0]),
        "{passwords:?}"
    );
    // Warm from memory with no file cache at all; due again at half-life.
    assert_eq!(tokens.get(A).unwrap().origin, Origin::Cache);
    clock.advance(21_600);
    assert_eq!(tokens.get(A).unwrap().origin, Origin::Aws);
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn the_web_identity_is_part_of_the_cache_key() {
    let env = Env::from_pairs([("HOME", "/nonexistent")]);
    let target = crate::registry::Target::private("111111111111", "eu-west-1", false).unwrap();
    let web = |token: &str| WebIdentity {
        role_arn: "arn:aws:iam::111111111111:role/ci".into(),
        token: Secret::new(token.into()),
        session_name: "s".into(),
        duration_secs: 3600,
        sts_region: "us-east-1".into(),
    };
    let none = CredentialSource::default();
    let chain = identity::cache_key(&env, None, &none, &target);
    let a = identity::cache_key(&env, Some(&web("jwt-a")), &none, &target);
    let b = identity::cache_key(&env, Some(&web("jwt-b")), &none, &target);
    assert_ne!(chain, a);
    assert_ne!(a, b);
    let described = identity::describe_source(&env, Some(&web("jwt-a")), &none);
    assert_eq!(
        described,
        "GitLab OIDC web identity for arn:aws:iam::111111111111:role/ci"
    );
    let keyed = Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKL9876")]);
    let d = identity::describe_source(&keyed, None, &none);
    assert!(d.ends_with("ending in 9876)") && !d.contains("AKIA"), "{d}");
}
