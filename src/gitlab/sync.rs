//! S3 without dotenv: keep a project or group CI variable (DOCKER_AUTH_CONFIG)
//! holding fresh ECR tokens.
//!
//! [`sync_once`] reads the variable, merges the tokens into its current value
//! (other registries' entries stay) and writes it only if it changed.
//! [`step`] is the daemon's loop body as a plain function of (state, now,
//! clients): it returns when to run next — when the tokens should be refreshed
//! ([`AuthToken::refresh_at`]), never later than `every`; after a failure, by
//! the crate's one backoff ([`Backoff::DAEMON`]) — so tests drive it without
//! sleeping. [`run`] is the loop itself, on an injected clock.

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::dockercfg::{DockerConfig, DockerConfigError};
use crate::secret::Secret;
use crate::tokens::{AuthToken, TokenError};

use super::variables::{ApiError, Owner, Settings, VariablesApi};

/// Never run twice within this many seconds after a success (moto's tokens are
/// born expired; a real one is good for hours).
const MIN_INTERVAL: i64 = 60;

/// The longest `Retry-After` honoured: an ECR token lives 12 h and is
/// refreshed at half-life, so an hour's wait costs nothing; a longer request
/// is more likely a misconfigured proxy, and is cut to this.
pub(crate) const MAX_RETRY_AFTER: i64 = 3600;

/// Which variable, and how to write it.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub owner: Owner,
    pub key: String,
    pub environment_scope: String,
    /// `None`: keep the variable's current setting (false for a new one).
    pub protected: Option<bool>,
    pub masked: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
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
    /// When GitLab asked to be called again.
    pub(crate) fn retry_after(&self) -> Option<super::variables::RetryAfter> {
        match self {
            SyncError::Api(e) => e.retry_after(),
            _ => None,
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        match self {
            SyncError::Api(e) => e.is_transient(),
            SyncError::Token { source, .. } => !source.is_not_found(),
            SyncError::Current { .. } => false,
        }
    }
}

/// Where tokens come from (the token service in real life).
pub(crate) trait TokenSource {
    /// One token per registry, in a fixed order.
    fn tokens(&self) -> Result<Vec<AuthToken>, SyncError>;
}

/// The token service for a fixed list of registries.
pub(crate) struct RegistryTokens<'a> {
    pub tokens: &'a crate::tokens::Tokens,
    pub registries: Vec<String>,
}

impl TokenSource for RegistryTokens<'_> {
    fn tokens(&self) -> Result<Vec<AuthToken>, SyncError> {
        crate::auth_document::tokens_for(self.tokens, &self.registries)
            .map(|v| v.into_iter().map(|(t, _)| t).collect())
            .map_err(|e| SyncError::Token {
                host: e.host,
                source: e.source,
            })
    }
}

/// How often a sync reads and writes again when someone else deleted or
/// created the variable between its read and its write.
const RACE_ATTEMPTS: usize = 3;

/// One sync: read, merge, write if changed. A variable deleted behind our
/// back (between the read and the write) is created again; one created behind
/// our back is read again and merged into, never overwritten blind.
pub(crate) fn sync_once(
    job: &Job,
    tokens: &[AuthToken],
    api: &dyn VariablesApi,
) -> Result<Outcome, SyncError> {
    let mut attempt = 1;
    loop {
        match sync_attempt(job, tokens, api) {
            Err(SyncError::Api(e)) if e.is_race() && attempt < RACE_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

fn sync_attempt(
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
    let doc = crate::auth_document::auth_document(&base, tokens);
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
pub(crate) struct State {
    /// Failures in a row.
    pub failures: u32,
    /// The earliest expiry of the tokens last written.
    pub expires_at: Option<i64>,
}

/// What one step did and when the next one is due (unix seconds).
#[derive(Debug)]
pub(crate) struct Step {
    pub result: Result<Outcome, SyncError>,
    pub next_at: i64,
}

/// One turn of the loop at time `now`; `jitter` in [0, 1) spreads retries.
pub(crate) fn step(
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
            let mut wait = backoff(state.failures, every, jitter);
            // GitLab's Retry-After (429, 503) is a floor, never shortened by `every`.
            if let Some(asked) = e.retry_after() {
                wait = wait.max(asked.seconds_from(now).clamp(1, MAX_RETRY_AFTER));
            }
            Step {
                next_at: now + wait,
                result: Err(e),
            }
        }
    }
}

/// When the first token should be refreshed, within [now + MIN_INTERVAL, now + every].
fn next_after_success(now: i64, tokens: &[AuthToken], every: i64) -> i64 {
    let refresh = tokens
        .iter()
        .map(AuthToken::refresh_at)
        .min()
        .unwrap_or(now + every);
    let earliest = now + MIN_INTERVAL.min(every.max(1));
    refresh.clamp(earliest, now + every.max(1))
}

/// Whole seconds to wait after `failures` failures in a row: [`Backoff::DAEMON`],
/// capped by `every`, spread by `jitter` in [0, 1).
fn backoff(failures: u32, every: i64, jitter: f64) -> i64 {
    let cap = std::time::Duration::from_secs(every.max(1) as u64);
    let d = Backoff::DAEMON.delay(failures, Some(cap), jitter);
    d.as_millis().div_ceil(1000).max(1) as i64
}

/// How the loop waits; `false` means stop (SIGTERM/SIGINT).
pub(crate) trait Waiter {
    /// Waits until `at` (unix seconds on the loop's clock; it is `now` now).
    fn wait_until(&mut self, at: i64, now: i64) -> bool;
    /// A number in [0, 1) that spreads retries.
    fn jitter(&mut self) -> f64;
}

/// Runs until the waiter says stop, telling `log` what each turn did. An
/// error is told once, when it first appears or changes (a token without
/// access fails every pass: one line saying what to do, not one per pass);
/// the first success after failures says how many there were.
pub(crate) fn run(
    job: &Job,
    every: i64,
    tokens: &dyn TokenSource,
    api: &dyn VariablesApi,
    clock: &dyn Clock,
    waiter: &mut dyn Waiter,
    log: &mut dyn FnMut(String),
) {
    let mut state = State::default();
    let mut told: Option<String> = None;
    loop {
        let jitter = waiter.jitter();
        let failures_before = state.failures;
        let s = step(&mut state, clock.now(), jitter, every, job, tokens, api);
        let when = crate::tokens::format_time(s.next_at);
        match &s.result {
            Ok(o) => {
                let after = if failures_before > 0 {
                    let s = if failures_before == 1 { "" } else { "s" };
                    format!(" (after {failures_before} failure{s} in a row)")
                } else {
                    String::new()
                };
                told = None;
                log(format!(
                    "{} on {}: {}{after}; next refresh at {when}",
                    job.key,
                    job.owner,
                    describe(*o)
                ))
            }
            Err(e) => {
                let message = e.to_string();
                if told.as_deref() != Some(message.as_str()) {
                    log(failure_line(job, e, &when, state.failures));
                    told = Some(message);
                }
            }
        }
        if !waiter.wait_until(s.next_at, clock.now()) {
            log("stopping: SIGTERM or SIGINT received".into());
            return;
        }
    }
}

fn failure_line(job: &Job, e: &SyncError, when: &str, failures: u32) -> String {
    format!(
        "{} on {}: {e}; retrying at {when} (failure {failures} in a row{})",
        job.key,
        job.owner,
        if e.is_transient() {
            "; told once until it changes"
        } else {
            "; this needs a fix, not a wait; told once until it changes"
        }
    )
}

/// A one-shot sync tries this often in all when GitLab fails in a way that
/// may pass (5xx, 429, the network)…
const ONCE_ATTEMPTS: u32 = 3;
/// …and waits at most this long for one retry (a longer `Retry-After` ends it).
const ONCE_MAX_WAIT: i64 = 60;

/// `sync-variable` without `--every` (a scheduled job): one sync, with a few
/// retries of failures that may pass, by the same backoff and Retry-After as
/// the daemon.
pub(crate) fn once(
    job: &Job,
    tokens: &dyn TokenSource,
    api: &dyn VariablesApi,
    clock: &dyn Clock,
    waiter: &mut dyn Waiter,
    log: &mut dyn FnMut(String),
) -> Result<Outcome, SyncError> {
    let mut state = State::default();
    loop {
        let now = clock.now();
        // `every` only caps the backoff here.
        let s = step(
            &mut state,
            now,
            waiter.jitter(),
            ONCE_MAX_WAIT,
            job,
            tokens,
            api,
        );
        let e = match s.result {
            Ok(o) => return Ok(o),
            Err(e) => e,
        };
        let wait = s.next_at - now;
        // AWS errors have had their own retries inside the token service.
        let gitlab_hiccup = matches!(&e, SyncError::Api(a) if a.is_transient());
        if !gitlab_hiccup || state.failures >= ONCE_ATTEMPTS || wait > ONCE_MAX_WAIT {
            return Err(e);
        }
        log(format!(
            "{} on {}: {e}; retrying at {} (attempt {} of {ONCE_ATTEMPTS})",
            job.key,
            job.owner,
            crate::tokens::format_time(s.next_at),
            state.failures + 1
        ));
        if !waiter.wait_until(s.next_at, now) {
            return Err(e);
        }
    }
}

pub(crate) fn describe(o: Outcome) -> &'static str {
    match o {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "already up to date",
    }
}

/// The real waiter: a sleep that SIGTERM or SIGINT ends.
pub(crate) struct SignalWaiter {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl SignalWaiter {
    /// Installs the handlers now, so a signal during a sync is not lost.
    pub(crate) fn new() -> std::io::Result<SignalWaiter> {
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
    fn wait_until(&mut self, at: i64, now: i64) -> bool {
        let secs = (at - now).max(0) as u64;
        let (term, int) = (&mut self.term, &mut self.int);
        self.rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => true,
                _ = term.recv() => false,
                _ = int.recv() => false,
            }
        })
    }

    fn jitter(&mut self) -> f64 {
        crate::backoff::random_draw()
    }
}

/// A [`SignalWaiter`] made at the first wait.
struct LazySignalWaiter(Option<SignalWaiter>);

impl Waiter for LazySignalWaiter {
    fn wait_until(&mut self, at: i64, now: i64) -> bool {
        if self.0.is_none() {
            match SignalWaiter::new() {
                Ok(w) => self.0 = Some(w),
                Err(e) => {
                    tracing::warn!("cannot install the SIGTERM handler, so not retrying: {e}");
                    return false;
                }
            }
        }
        self.0.as_mut().is_some_and(|w| w.wait_until(at, now))
    }

    fn jitter(&mut self) -> f64 {
        crate::backoff::random_draw()
    }
}

/// `gitlab sync-variable` as the command line asks for it.
#[derive(Clone, Debug)]
pub(crate) struct SyncRequest {
    pub job: Job,
    /// Registry hosts; empty: every registry in the ecr-auth config file.
    pub registries: Vec<String>,
    pub gitlab_url: String,
    /// Send the GitLab token over plain HTTP to a host that is not loopback.
    pub allow_plain_http: bool,
    /// The variable that holds the GitLab access token.
    pub token_env: String,
    /// Keep running, refreshing at least this often.
    pub every: Option<std::time::Duration>,
    /// Get AWS credentials with the job's OIDC token instead of the default chain.
    pub role: Option<super::oidc::RoleLogin>,
}

/// Syncs once, or keeps syncing until SIGTERM/SIGINT; says what it did on `notes`.
pub(crate) fn command(
    req: SyncRequest,
    env: &crate::env::Env,
    config: crate::config::Config,
    clock: crate::clock::SharedClock,
    notes: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let every = match req.every {
        Some(d) => {
            anyhow::ensure!(
                d.as_secs() >= 60,
                "--every must be at least 1m, not {}",
                humantime::format_duration(d)
            );
            Some(d.as_secs() as i64)
        }
        None => None,
    };
    let registries = config.registries_or(req.registries.clone())?;
    let (tokens, session) = match &req.role {
        Some(login) => {
            let (t, session) = super::oidc::role_tokens(env, config, login, clock.clone())?;
            (t, Some(session))
        }
        None => (
            crate::tokens::Tokens::builder(env.clone(), config)
                .clock(clock.clone())
                .in_memory()
                .build(),
            None,
        ),
    };
    let token = env
        .get(&req.token_env)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .with_context(|| {
            format!(
                "${} is empty: set it to a GitLab access token with the `api` scope (Maintainer on the project, Owner on the group)",
                req.token_env
            )
        })?;
    let api = super::variables::GitLab::new(
        &req.gitlab_url,
        Secret::new(token.to_string()),
        req.allow_plain_http,
    )?;
    let source = RegistryTokens {
        tokens: &tokens,
        registries,
    };
    let job = &req.job;
    match every {
        None => {
            if let (Some(login), Some(session)) = (&req.role, &session) {
                writeln!(
                    notes,
                    "ecr-auth: assumed {} as session {session}",
                    login.role_arn
                )?;
            }
            // Handlers only once a retry waits: until then SIGTERM (a cancelled
            // job) ends a one-shot sync at once, as it always did.
            let mut waiter = LazySignalWaiter(None);
            let outcome = once(job, &source, &api, &*clock, &mut waiter, &mut |line| {
                let _ = writeln!(notes, "ecr-auth: {line}");
            })?;
            writeln!(
                notes,
                "ecr-auth: {} on {}: {}",
                job.key,
                job.owner,
                describe(outcome)
            )?;
        }
        Some(every) => {
            let mut waiter = SignalWaiter::new().context("cannot install the SIGTERM handler")?;
            run(
                job,
                every,
                &source,
                &api,
                &*clock,
                &mut waiter,
                &mut |line| {
                    let _ = writeln!(notes, "ecr-auth: {line}");
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
