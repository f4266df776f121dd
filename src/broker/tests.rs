//! The broker's answers and its background refresh, over a scripted fetcher
//! and a manual clock: no AWS, no sleeping.

use std::sync::{Arc, Mutex};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::env::Env;
use crate::tokens::{Fetch, FetchRequest, Fetched, TokenError};

const A: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const B: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";

#[derive(Clone, Default)]
struct Scripted {
    clock: Arc<ManualClock>,
    requests: Arc<Mutex<Vec<FetchRequest>>>,
    fail: Arc<Mutex<Option<TokenError>>>,
    ttl: i64,
}

impl Fetch for Scripted {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>> {
        self.requests
            .lock()
            .unwrap()
            .extend(requests.iter().cloned());
        requests
            .iter()
            .map(|r| match self.fail.lock().unwrap().clone() {
                Some(e) => Err(e),
                None => Ok(Fetched {
                    username: "AWS".into(),
                    password: format!("pw-{}-{}", r.target.region(), self.clock.now()),
                    expires_at: Some(self.clock.now() + self.ttl),
                    proxy_endpoint: None,
                }),
            })
            .collect()
    }
}

fn broker(settings: &Settings) -> (Arc<Broker>, Scripted) {
    let clock = ManualClock::new(1_000_000);
    let fetcher = Scripted {
        clock: clock.clone(),
        ttl: 12 * 3600,
        ..Default::default()
    };
    let env = Env::from_pairs([
        ("HOME", "/nonexistent"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ]);
    let tokens = Tokens::builder(env, Config::default())
        .cache(None)
        .in_memory()
        .broker(None)
        .clock(clock)
        .fetcher(Box::new(fetcher.clone()))
        .build();
    let allow = AllowList::new(
        &settings.allow_hosts(),
        &settings.accounts,
        &settings.regions,
        settings.public,
    )
    .unwrap();
    let scopes = Scopes::from_settings(settings).unwrap();
    (Broker::new(tokens, allow, scopes), fetcher)
}

fn allow_eu_west_1() -> Settings {
    Settings {
        allow: vec![AllowEntry::host("*.dkr.ecr.eu-west-1.amazonaws.com")],
        ..Default::default()
    }
}

fn password(a: Answer) -> String {
    match a {
        Answer::Token(t) => t.password.expose().clone(),
        other => panic!("expected a token, got {other:?}"),
    }
}

#[test]
fn allowed_hosts_get_tokens_and_others_a_reason() {
    const C: &str = "123456789012.dkr.ecr.eu-central-1.amazonaws.com";
    let mut settings = allow_eu_west_1();
    settings.allow.push(AllowEntry::host(C));
    let (b, f) = broker(&settings);
    assert_eq!(password(b.answer(A)), "pw-eu-west-1-1000000");
    match b.answer("123456789012.dkr.ecr.us-east-1.amazonaws.com") {
        Answer::NotAllowed(m) => assert!(m.contains("not in this broker's allow-list"), "{m}"),
        other => panic!("{other:?}"),
    }
    match b.answer("docker.io") {
        Answer::NotFound(m) => assert!(m.contains("not an Amazon ECR registry"), "{m}"),
        other => panic!("{other:?}"),
    }
    *f.fail.lock().unwrap() = Some(TokenError::NoCredentials {
        tried: "env".into(),
        explained: None,
    });
    match b.answer(C) {
        Answer::NotFound(m) => assert!(m.contains("no AWS credentials"), "{m}"),
        other => panic!("{other:?}"),
    }
    // B shares eu-west-1's token with A: no AWS call, so no failure either.
    assert_eq!(password(b.answer(B)), "pw-eu-west-1-1000000");
    assert_eq!(f.requests.lock().unwrap().len(), 2);
}

#[test]
fn requests_never_wait_for_aws_while_a_token_is_valid_and_the_refresh_runs_at_half_life() {
    let (b, f) = broker(&allow_eu_west_1());
    let clock = f.clock.clone();
    password(b.answer(A));
    password(b.answer(B));
    assert_eq!(f.requests.lock().unwrap().len(), 1, "one call per region");
    let half = 1_000_000 + 6 * 3600;
    assert_eq!(b.refresh_step(), Some(half));

    // Past half-life: still answered at once, from the token in hand.
    clock.set(half + 10);
    assert!(matches!(b.answer_now(A), Ok(Answer::Token(_))));
    assert_eq!(f.requests.lock().unwrap().len(), 1);

    // The refresher fetches once for both hosts and schedules the next half-life.
    let next = b.refresh_step();
    assert_eq!(f.requests.lock().unwrap().len(), 2);
    assert_eq!(next, Some(half + 10 + 6 * 3600));
    assert_eq!(password(b.answer(B)), format!("pw-eu-west-1-{}", half + 10));
}

#[test]
fn a_failed_refresh_keeps_the_token_in_hand_until_it_expires() {
    let (b, f) = broker(&allow_eu_west_1());
    let clock = f.clock.clone();
    let first = password(b.answer(A));
    *f.fail.lock().unwrap() = Some(TokenError::Aws {
        what: "getting".into(),
        cause: "throttled".into(),
        advice: "wait".into(),
    });
    let half = 1_000_000 + 6 * 3600;
    clock.set(half);
    assert_eq!(b.refresh_step(), Some(half + RETRY_SECS));
    assert_eq!(password(b.answer(A)), first);
    // Within a minute of expiry the fast path asks AWS; the core serves the
    // still-valid token when AWS fails, and a failure once it has expired.
    clock.set(1_000_000 + 12 * 3600 - 30);
    assert!(b.answer_now(A).is_err());
    match b.answer(A) {
        Answer::Token(t) => assert_eq!(t.origin, crate::tokens::Origin::StaleCache),
        other => panic!("{other:?}"),
    }
    clock.set(1_000_000 + 12 * 3600 + 1);
    match b.answer(A) {
        Answer::Failed(m) => assert!(m.contains("expired") && m.contains("throttled"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.refresh_step(), None, "expired tokens are dropped");
}

#[test]
fn pull_only_fetches_through_the_role_with_the_session_policy() {
    let settings = Settings {
        pull_only: true,
        role_arn: Some("arn:aws:iam::123456789012:role/ecr-broker".into()),
        repositories: vec!["arn:aws:ecr:eu-west-1:123456789012:repository/team/*".into()],
        ..allow_eu_west_1()
    };
    let (b, f) = broker(&settings);
    password(b.answer(A));
    let reqs = f.requests.lock().unwrap();
    assert_eq!(
        reqs[0].creds.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/ecr-broker")
    );
    assert_eq!(
        reqs[0].creds.session_policy.as_deref(),
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"EcrAuthToken","Effect":"Allow","Action":"ecr:GetAuthorizationToken","Resource":"*"},{"Sid":"PullOnly","Effect":"Allow","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:BatchCheckLayerAvailability"],"Resource":["arn:aws:ecr:eu-west-1:123456789012:repository/team/*"]}]}"#
        )
    );
}

const TEAM: &str = "arn:aws:ecr:eu-west-1:123456789012:repository/team/*";

fn scope_error(s: &Settings) -> String {
    Scopes::from_settings(s).unwrap_err()
}

#[test]
fn pull_only_needs_a_role_and_repositories() {
    let mut s = Settings {
        pull_only: true,
        ..Default::default()
    };
    assert!(scope_error(&s).contains("role_arn"));
    s.role_arn = Some("arn:aws:iam::123456789012:role/r".into());
    assert!(scope_error(&s).contains("repositories"));
    s.repositories = vec!["team/*".into()];
    assert!(scope_error(&s).contains("not an ECR repository ARN"));
    s.pull_only = false;
    assert_eq!(Scopes::from_settings(&s).unwrap(), Scopes::default());

    // The same, per allow entry: the error names the entry.
    let mut s = allow_eu_west_1();
    s.allow.push(AllowEntry {
        pull_only: Some(true),
        ..AllowEntry::host(A)
    });
    let e = scope_error(&s);
    assert!(
        e.starts_with(&format!("allow entry {A:?}: pull_only needs `role_arn`")),
        "{e}"
    );
    s.allow[1].role_arn = Some("arn:aws:iam::123456789012:user/x".into());
    assert!(scope_error(&s).contains("not an IAM role ARN"));
    s.allow[1].role_arn = Some("arn:aws:iam::123456789012:role/pull".into());
    assert!(scope_error(&s).contains("needs `repositories`"));
    // A role or repositories on an entry that is not pull-only would be ignored: refused.
    s.allow[1].pull_only = Some(false);
    s.allow[1].repositories = vec![TEAM.into()];
    let e = scope_error(&s);
    assert!(e.contains("only apply with `pull_only = true`"), "{e}");
}

#[test]
fn pull_only_per_allowed_registry_and_push_where_the_config_says_so() {
    const C: &str = "123456789012.dkr.ecr.eu-central-1.amazonaws.com";
    const BASE: &str = "arn:aws:ecr:eu-central-1:123456789012:repository/base";
    let wide_role = "arn:aws:iam::123456789012:role/ecr-broker";
    let a_role = "arn:aws:iam::123456789012:role/ecr-pull-a";
    let settings = Settings {
        // Broker-wide pull-only ...
        pull_only: true,
        role_arn: Some(wide_role.into()),
        repositories: vec![BASE.into()],
        allow: vec![
            // ... a pattern with the broker-wide treatment, listed first: an
            // entry naming the exact host still wins for A and B.
            AllowEntry::host("*.dkr.ecr.eu-central-1.amazonaws.com"),
            AllowEntry {
                pull_only: Some(true),
                role_arn: Some(a_role.into()),
                repositories: vec![TEAM.into()],
                ..AllowEntry::host(A)
            },
            // ... and B may push: the broker's own identity, no session policy.
            AllowEntry {
                pull_only: Some(false),
                ..AllowEntry::host(B)
            },
        ],
        ..Default::default()
    };
    let (b, f) = broker(&settings);
    password(b.answer(A));
    password(b.answer(B));
    password(b.answer(C));
    let reqs = f.requests.lock().unwrap();
    // A and B share a region but not a treatment: two fetches, not one.
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].creds.role_arn.as_deref(), Some(a_role));
    assert_eq!(
        reqs[0].creds.session_policy,
        Some(pull_only_policy(&[TEAM.into()]))
    );
    assert_eq!(reqs[1].creds.role_arn, None);
    assert_eq!(reqs[1].creds.session_policy, None);
    assert_eq!(reqs[2].creds.role_arn.as_deref(), Some(wide_role));
    assert_eq!(
        reqs[2].creds.session_policy,
        Some(pull_only_policy(&[BASE.into()]))
    );
}

#[test]
fn a_registry_role_wins_over_the_broker_wide_role_but_not_over_the_entry_role() {
    let scopes = Scopes::from_settings(&Settings {
        pull_only: true,
        role_arn: Some("arn:aws:iam::123456789012:role/wide".into()),
        repositories: vec![TEAM.into()],
        allow: vec![
            AllowEntry {
                role_arn: Some("arn:aws:iam::123456789012:role/own".into()),
                ..AllowEntry::host(A)
            },
            AllowEntry::host(B),
        ],
        ..Default::default()
    })
    .unwrap();
    let a = scopes.for_host(A).unwrap();
    assert_eq!(
        (a.role_arn.as_str(), a.own_role),
        ("arn:aws:iam::123456789012:role/own", true)
    );
    let b = scopes.for_host(B).unwrap();
    assert_eq!(
        (b.role_arn.as_str(), b.own_role),
        ("arn:aws:iam::123456789012:role/wide", false)
    );
    assert!(scopes
        .for_host("123456789012.dkr.ecr.us-east-1.amazonaws.com")
        .is_none());
}

#[test]
fn the_config_file_names_a_broker_or_configures_one() {
    let path = std::path::Path::new("/etc/ecr-auth/config.toml");
    let c = Config::parse("broker = \"unix:///run/ecr-auth/broker.sock\"\n", path).unwrap();
    assert_eq!(
        c.broker_url.as_deref(),
        Some("unix:///run/ecr-auth/broker.sock")
    );
    let c = Config::parse(
        "[broker]\nsocket = \"/run/b.sock\"\nallow = [\"*.dkr.ecr.eu-west-1.amazonaws.com\"]\npull_only = true\n",
        path,
    )
    .unwrap();
    let s = c.broker.unwrap();
    assert_eq!(
        s.socket.as_deref(),
        Some(std::path::Path::new("/run/b.sock"))
    );
    assert!(s.pull_only);
    assert_eq!(
        s.allow,
        vec![AllowEntry::host("*.dkr.ecr.eu-west-1.amazonaws.com")]
    );
    // Per allowed registry: tables (`[[broker.allow]]`), or strings and inline tables mixed.
    let c = Config::parse(
        &format!(
            "[broker]\n[[broker.allow]]\nhost = \"{A}\"\npull_only = true\nrole_arn = \"arn:aws:iam::123456789012:role/p\"\nrepositories = [\"{TEAM}\"]\n\n[[broker.allow]]\nhost = \"{B}\"\npull_only = false\n"
        ),
        path,
    )
    .unwrap();
    let s = c.broker.unwrap();
    assert_eq!(s.allow_hosts(), vec![A.to_string(), B.to_string()]);
    assert_eq!(s.allow[0].pull_only, Some(true));
    assert_eq!(s.allow[0].repositories, vec![TEAM.to_string()]);
    assert_eq!(s.allow[1].pull_only, Some(false));
    let c = Config::parse(
        &format!("[broker]\nallow = [\"{B}\", {{ host = \"{A}\", pull_only = true }}]\n"),
        path,
    )
    .unwrap();
    assert_eq!(c.broker.unwrap().allow[1].pull_only, Some(true));
    for (bad, says) in [
        ("allow = [1]", "not `1`"),
        (
            "allow = [{ host = \"x\", pullonly = true }]",
            "unknown field `pullonly`",
        ),
        ("allow = [{ pull_only = true }]", "missing field `host`"),
    ] {
        let e = Config::parse(&format!("[broker]\n{bad}\n"), path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`allow` entry") && e.contains(says) && !e.contains('\n'),
            "{bad}: {e}"
        );
    }
    let e = Config::parse("[broker]\nallow = \"x\"\nsoket = 1\n", path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[broker]") && !e.contains('\n'), "{e}");
    let e = Config::parse("broker = 1\n", path).unwrap_err().to_string();
    assert!(e.contains("unix://PATH"), "{e}");
}
