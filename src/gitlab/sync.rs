//! S3 without dotenv: keep a project or group CI variable (DOCKER_AUTH_CONFIG)
//! holding fresh ECR tokens.
//!
//! [`sync_once`] reads the variable, merges the tokens into its current value
//! (other registries' entries stay) and writes it only if it changed.
//! [`step`] is the daemon's loop body as a plain function of (state, clock,
//! clients): it returns when to run next — at half the tokens' life, never later
//! than `every`; after a failure, with exponential backoff and jitter — so tests
//! drive it without sleeping. [`run`] is the loop itself.

use crate::dockercfg::{DockerConfig, DockerConfigError};
use crate::secret::Secret;
use crate::tokens::{AuthToken, TokenError};

use super::variables::{ApiError, Owner, Settings, VariablesApi};

/// Never run twice within this many seconds after a success (moto's tokens are
/// born expired; a real one is good for hours).
pub const MIN_INTERVAL: i64 = 60;
/// The first retry after a failure; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: i64 = 15;
pub const MAX_BACKOFF: i64 = 600;

/// Which variable, and how to write it.
#[derive(Clone, Debug)]
pub struct Job {
    pub owner: Owner,
    pub key: String,
    pub environment_scope: String,
    /// `None`: keep the variable's current setting (false for a new one).
    pub protected: Option<bool>,
    pub masked: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot get an ECR token for {host}: {source}")]
    Token { host: String, source: TokenError },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the current value of {key} on {owner} is not a Docker config, so it cannot be merged into ({source}); fix or delete the variable and run again")]
    Current {
        key: String,
        owner: String,
        source: DockerConfigError,
    },
}

impl SyncError {
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Api(e) => e.is_transient(),
            SyncError::Token { source, .. } => !source.is_not_found(),
            SyncError::Current { .. } => false,
        }
    }
}

/// Where tokens come from (the token service in real life).
pub trait TokenSource {
    /// One token per registry, in a fixed order.
    fn tokens(&self) -> Result<Vec<AuthToken>, SyncError>;
}

/// The token service for a fixed list of registries.
pub struct RegistryTokens<'a> {
    pub tokens: &'a crate::tokens::Tokens,
    pub registries: Vec<String>,
}

impl TokenSource for RegistryTokens<'_> {
    fn tokens(&self) -> Result<Vec<AuthToken>, SyncError> {
        super::tokens_for(self.tokens, &self.registries)
            .map(|v| v.into_iter().map(|(t, _)| t).collect())
            .map_err(|e| SyncError::Token {
                host: e.host,
                source: e.source,
            })
    }
}

/// One sync: read, merge, write if changed.
pub fn sync_once(
    job: &Job,
    tokens: &[AuthToken],
    api: &dyn VariablesApi,
) -> Result<Outcome, SyncError> {
    let current = api.get(&job.owner, &job.key, &job.environment_scope)?;
    let base = match &current {
        Some(v) => DockerConfig::parse(v.value.expose(), &format!("{} on {}", job.key, job.owner))
            .map_err(|source| SyncError::Current {
                key: job.key.clone(),
                owner: job.owner.to_string(),
                source,
            })?,
        None => DockerConfig::new(),
    };
    let doc = super::auth_document(&base, tokens);
    let masked = job
        .masked
        .or(current.as_ref().map(|v| v.masked))
        .unwrap_or(false);
    let settings = Settings {
        // Compact JSON: no white space, as a masked value requires.
        value: Secret::new(doc.to_compact()),
        protected: job
            .protected
            .or(current.as_ref().map(|v| v.protected))
            .unwrap_or(false),
        masked,
        // A credential is never `$`-expanded; GitLab requires raw for masked JSON.
        raw: true,
        environment_scope: job.environment_scope.clone(),
    };
    match current {
        Some(v)
            if v.value == settings.value
                && v.protected == settings.protected
                && v.masked == settings.masked
                && v.raw == settings.raw =>
        {
            Ok(Outcome::Unchanged)
        }
        Some(_) => {
            api.update(&job.owner, &job.key, &settings)?;
            Ok(Outcome::Updated)
        }
        None => {
            api.create(&job.owner, &job.key, &settings)?;
            Ok(Outcome::Created)
        }
    }
}

/// The loop's memory between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Failures in a row.
    pub failures: u32,
    /// The earliest expiry of the tokens last written.
    pub expires_at: Option<i64>,
}

/// What one step did and when the next one is due (unix seconds).
#[derive(Debug)]
pub struct Step {
    pub result: Result<Outcome, SyncError>,
    pub next_at: i64,
}

/// One turn of the loop at time `now`; `jitter` in [0, 1) spreads retries.
pub fn step(
    state: &mut State,
    now: i64,
    jitter: f64,
    every: i64,
    job: &Job,
    tokens: &dyn TokenSource,
    api: &dyn VariablesApi,
) -> Step {
    let result = tokens.tokens().and_then(|t| {
        let outcome = sync_once(job, &t, api)?;
        Ok((outcome, t))
    });
    match result {
        Ok((outcome, t)) => {
            state.failures = 0;
            state.expires_at = t.iter().map(|t| t.expires_at).min();
            Step {
                result: Ok(outcome),
                next_at: next_after_success(now, &t, every),
            }
        }
        Err(e) => {
            state.failures = state.failures.saturating_add(1);
            Step {
                next_at: now + backoff(state.failures, every, jitter),
                result: Err(e),
            }
        }
    }
}

/// At half the shortest token life, within [now + MIN_INTERVAL, now + every].
pub fn next_after_success(now: i64, tokens: &[AuthToken], every: i64) -> i64 {
    let half = tokens
        .iter()
        .map(|t| t.issued_at + (t.expires_at - t.issued_at) / 2)
        .min()
        .unwrap_or(now + every);
    let earliest = now + MIN_INTERVAL.min(every.max(1));
    half.clamp(earliest, now + every.max(1))
}

/// Seconds to wait after `failures` failures in a row: doubling from
/// [`FIRST_BACKOFF`], capped by [`MAX_BACKOFF`] and `every`, with "equal
/// jitter" (half fixed, half random) so many daemons don't retry in step.
pub fn backoff(failures: u32, every: i64, jitter: f64) -> i64 {
    let exp = FIRST_BACKOFF.saturating_mul(1i64 << failures.saturating_sub(1).min(20));
    let cap = exp.min(MAX_BACKOFF).min(every.max(1));
    let half = cap / 2;
    (half + ((cap - half) as f64 * jitter.clamp(0.0, 0.999)) as i64).max(1)
}

/// How the loop waits; `false` means stop (SIGTERM/SIGINT).
pub trait Waiter {
    fn wait_until(&mut self, at: i64) -> bool;
    fn now(&self) -> i64;
    fn jitter(&self) -> f64;
}

/// Runs until the waiter says stop, telling `log` what each turn did.
pub fn run(
    job: &Job,
    every: i64,
    tokens: &dyn TokenSource,
    api: &dyn VariablesApi,
    waiter: &mut dyn Waiter,
    log: &mut dyn FnMut(String),
) {
    let mut state = State::default();
    loop {
        let now = waiter.now();
        let s = step(&mut state, now, waiter.jitter(), every, job, tokens, api);
        let when = crate::tokens::format_time(s.next_at);
        match &s.result {
            Ok(o) => log(format!(
                "{} on {}: {}; next refresh at {when}",
                job.key,
                job.owner,
                describe(*o)
            )),
            Err(e) => log(format!(
                "{} on {}: {e}; retrying at {when} (failure {} in a row)",
                job.key, job.owner, state.failures
            )),
        }
        if !waiter.wait_until(s.next_at) {
            log("stopping: SIGTERM or SIGINT received".into());
            return;
        }
    }
}

pub fn describe(o: Outcome) -> &'static str {
    match o {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "already up to date",
    }
}

/// The real waiter: the system clock, and a sleep that SIGTERM or SIGINT ends.
pub struct SignalWaiter {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl SignalWaiter {
    /// Installs the handlers now, so a signal during a sync is not lost.
    pub fn new() -> std::io::Result<SignalWaiter> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        Ok(SignalWaiter { rt, term, int })
    }
}

impl Waiter for SignalWaiter {
    fn wait_until(&mut self, at: i64) -> bool {
        let secs = (at - self.now()).max(0) as u64;
        let (term, int) = (&mut self.term, &mut self.int);
        self.rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => true,
                _ = term.recv() => false,
                _ = int.recv() => false,
            }
        })
    }

    fn now(&self) -> i64 {
        crate::tokens::system_now()
    }

    fn jitter(&self) -> f64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // A cheap mix of the clock's low bits: spread, not secrecy.
        let x =
            (nanos as u64 ^ (std::process::id() as u64) << 16).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
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
    }

    impl VariablesApi for Store {
        fn get(&self, _: &Owner, _: &str, _: &str) -> Result<Option<Variable>, ApiError> {
            if let Some(status) = *self.fail.borrow() {
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
        assert_eq!(waits, vec![7, 15, 30, 60, 120, 240, 300, 300]);
        assert_eq!(state.failures, 8);
        // jitter spreads within [cap/2, cap)
        assert_eq!(backoff(1, 3600, 0.99), 14);
        assert_eq!(backoff(30, 120, 0.0), 60, "never longer than every");
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
}
