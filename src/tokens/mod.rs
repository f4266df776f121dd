//! The token service: every face turns a registry host into an ECR token here.
//!
//! ```text
//! host ─► Config::resolve ─► cache key (identity fingerprint + scope)
//!      ─► cache hit (fresh)            → token, no SDK, no runtime, no network
//!      ─► miss: lock, re-check, fetch  → one AWS call per (identity, region)
//!      ─► AWS failing, cached token still valid → served, with a warning
//! ```

pub mod aws;
pub mod broker;
pub mod cache;
pub mod identity;
mod memory;

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;

use crate::clock::SharedClock;
use crate::config::{Config, CredentialSource, Resolved};
use crate::env::Env;
use crate::registry::{Host, RegistryError, Target};
use crate::secret::Secret;
use cache::{Cache, CachedToken};

/// ECR tokens are valid for 12 hours.
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

/// What a face gets: a user name (`AWS`) and password for one registry host.
#[derive(Clone, Debug)]
pub struct AuthToken {
    pub host: Host,
    pub username: String,
    pub password: Secret<String>,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    pub proxy_endpoint: Option<String>,
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A fresh cache entry.
    Cache,
    /// Just fetched from AWS.
    Aws,
    /// AWS failed; a cached token past half-life but still valid.
    StaleCache,
    /// From an `ecr-auth serve` broker.
    Broker,
}

/// When a token should be replaced: half-way through its life (as the Go helper
/// does). The one copy of this rule: the cache, the daemons and the broker use it.
pub fn refresh_at(issued_at: i64, expires_at: i64) -> i64 {
    issued_at + (expires_at - issued_at) / 2
}

impl AuthToken {
    /// When this token should be replaced (see [`refresh_at`]).
    pub fn refresh_at(&self) -> i64 {
        refresh_at(self.issued_at, self.expires_at)
    }

    /// `base64("AWS:<password>")`: the `auth` field of a Docker config, and what
    /// ECR's `authorizationToken` is.
    pub fn basic_auth(&self) -> Secret<String> {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.username,
            self.password.expose()
        )))
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    /// Not an ECR registry and not mapped to one: not ours.
    #[error(
        "{host} is not an Amazon ECR registry and is not mapped to one in the ecr-auth config file"
    )]
    NotEcr { host: String },
    #[error(transparent)]
    BadHost(#[from] RegistryError),
    /// No source of the chain had credentials: "not found", not "broken" (see
    /// [`TokenError::is_not_found`]). `explained` is why, where something says more than
    /// "nothing here" (a named profile that is in no file, half a key pair): cause and
    /// advice.
    #[error("{}", no_credentials(.tried, .explained.as_ref()))]
    NoCredentials {
        tried: String,
        explained: Option<(String, String)>,
    },
    /// AWS (or the credential lookup) failed: what was being done (operation,
    /// endpoint, region, credential source by name), why, and what to do.
    #[error("{what} failed: {cause}. {advice}")]
    Aws {
        what: String,
        cause: String,
        advice: String,
    },
    #[error("the cached ECR token for {scope} expired at {expired} and AWS failed: {cause}")]
    Expired {
        scope: String,
        expired: String,
        cause: Box<TokenError>,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// The broker has nothing for this host (not allowed, not ECR, no credentials).
    #[error("{0}")]
    BrokerNotFound(String),
    /// The broker is unreachable or failed.
    #[error("{0}")]
    Broker(String),
}

fn no_credentials(tried: &str, explained: Option<&(String, String)>) -> String {
    match explained {
        Some((cause, advice)) => format!("no AWS credentials found: {cause}. {advice}"),
        None => format!("no AWS credentials found; tried {tried}. Set AWS credentials for this user, or map the registry to a profile or role in the ecr-auth config file"),
    }
}

impl TokenError {
    /// Errors that mean "this helper has nothing for you" rather than "broken":
    /// clients fall back to anonymous pulls and other credential sources.
    pub fn is_not_found(&self) -> bool {
        // A string that is not a host name at all is as foreign as another
        // registry: gitlab-runner drops the whole DOCKER_AUTH_CONFIG on any other
        // answer.
        matches!(
            self,
            TokenError::NotEcr { .. }
                | TokenError::NoCredentials { .. }
                | TokenError::BadHost(_)
                | TokenError::BrokerNotFound(_)
        )
    }
}

/// One token to fetch: a scope and the credentials to fetch it with.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub key: String,
    pub target: Target,
    pub creds: CredentialSource,
    /// How long this fetch may take in all: the refresh budget when a valid
    /// cached token can be served instead, else the cold deadline.
    pub deadline: Duration,
}

#[derive(Clone, Debug)]
pub struct Fetched {
    pub username: String,
    pub password: String,
    pub expires_at: Option<i64>,
    pub proxy_endpoint: Option<String>,
}

/// Where tokens come from on a miss. The real one is [`aws::AwsFetcher`];
/// it builds its SDK clients and runtime only when called.
pub trait Fetch: Send + Sync {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>>;
}

/// How long AWS may take. A refresh of a token that is still valid gets the
/// short `refresh_budget` (then the cached token is served); a cold fetch, with
/// its credential lookup and retries, one overall `cold_deadline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub refresh_budget: Duration,
    pub cold_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            refresh_budget: Duration::from_secs(2),
            cold_deadline: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// `ECR_AUTH_TIMEOUT` (cold deadline) and `ECR_AUTH_REFRESH_TIMEOUT` (refresh
    /// budget) override the defaults; an unreadable value is reported and ignored.
    pub fn from_env(env: &Env) -> Limits {
        let mut l = Limits::default();
        for (var, slot) in [
            ("ECR_AUTH_TIMEOUT", &mut l.cold_deadline),
            ("ECR_AUTH_REFRESH_TIMEOUT", &mut l.refresh_budget),
        ] {
            if let Some(v) = env.get(var) {
                match crate::duration::parse(v) {
                    Ok(d) if !d.is_zero() => *slot = d,
                    Ok(_) => {
                        tracing::warn!("{var}=0 is ignored: a deadline must be longer than zero")
                    }
                    Err(e) => tracing::warn!("{var}: {e}; using the default"),
                }
            }
        }
        l
    }
}

/// The GitLab OIDC web identity as a credential source: the job's `id_tokens:`
/// JWT exchanged with STS AssumeRoleWithWebIdentity for the role's credentials.
#[derive(Clone)]
pub struct WebIdentity {
    pub role_arn: String,
    pub token: Secret<String>,
    pub session_name: String,
    pub duration_secs: u64,
    /// The region of the STS endpoint.
    pub sts_region: String,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("duration_secs", &self.duration_secs)
            .field("sts_region", &self.sts_region)
            .finish()
    }
}

pub struct Tokens {
    env: Env,
    config: Config,
    cache: Option<Cache>,
    memory: Option<memory::Memory>,
    fetcher: Box<dyn Fetch>,
    clock: SharedClock,
    base: Option<WebIdentity>,
    limits: Limits,
    broker: Option<broker::BrokerClient>,
}

/// Builds a [`Tokens`]: everything a token depends on is handed in here.
pub struct Builder {
    env: Env,
    config: Config,
    cache: Option<Option<Cache>>,
    memory: bool,
    fetcher: Option<Box<dyn Fetch>>,
    clock: SharedClock,
    base: Option<WebIdentity>,
    limits: Option<Limits>,
    broker: Option<Option<String>>,
}

impl Builder {
    /// The on-disk cache; default: the one the environment names
    /// (`ECR_AUTH_CACHE_DIR`, XDG), none with `AWS_ECR_DISABLE_CACHE`.
    pub fn cache(mut self, cache: Option<Cache>) -> Builder {
        self.cache = Some(cache);
        self
    }

    /// Keep tokens in memory too, with single-flight per (identity, region): for
    /// the daemons, which ask again and again from many threads.
    pub fn in_memory(mut self) -> Builder {
        self.memory = true;
        self
    }

    /// Where tokens come from on a miss; default: AWS, through the SDK, with the
    /// builder's environment.
    pub fn fetcher(mut self, fetcher: Box<dyn Fetch>) -> Builder {
        self.fetcher = Some(fetcher);
        self
    }

    pub fn clock(mut self, clock: SharedClock) -> Builder {
        self.clock = clock;
        self
    }

    /// The base identity: a web identity token instead of the AWS default chain.
    pub fn web_identity(mut self, identity: WebIdentity) -> Builder {
        self.base = Some(identity);
        self
    }

    /// Deadlines; default: [`Limits::from_env`].
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = Some(limits);
        self
    }

    /// Ask the `ecr-auth serve` at this `unix://PATH` instead of AWS (`None`:
    /// never, as the broker itself does); default: `ECR_AUTH_BROKER`, else
    /// `broker = ...` in the config file.
    pub fn broker(mut self, url: Option<String>) -> Builder {
        self.broker = Some(url);
        self
    }

    pub fn build(self) -> Tokens {
        let limits = self.limits.unwrap_or_else(|| Limits::from_env(&self.env));
        let broker = self
            .broker
            .unwrap_or_else(|| {
                self.env
                    .get("ECR_AUTH_BROKER")
                    .map(str::to_string)
                    .or_else(|| self.config.broker_url.clone())
            })
            .map(|url| {
                // The broker has its own cold deadline; wait for it a little longer.
                broker::BrokerClient::new(&url, limits.cold_deadline + Duration::from_secs(5))
            });
        let cache = match (self.cache, &broker) {
            // Tokens from a broker are not kept in a job: it keeps them.
            (_, Some(_)) => None,
            (Some(c), None) => c,
            (None, None) => Cache::from_env(&self.env),
        };
        let fetcher = self
            .fetcher
            .unwrap_or_else(|| Box::new(aws::AwsFetcher::new(self.env.clone(), self.base.clone())));
        Tokens {
            env: self.env,
            config: self.config,
            cache,
            memory: self.memory.then(memory::Memory::default),
            fetcher,
            clock: self.clock,
            base: self.base,
            limits,
            broker,
        }
    }
}

impl Tokens {
    pub fn builder(env: Env, config: Config) -> Builder {
        Builder {
            env,
            config,
            cache: None,
            memory: false,
            fetcher: None,
            clock: crate::clock::system(),
            base: None,
            limits: None,
            broker: None,
        }
    }

    /// The service as the CLI uses it: real AWS, the cache from the environment.
    pub fn new(env: Env, config: Config) -> Tokens {
        Tokens::builder(env, config).build()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The broker this service asks instead of AWS, if any.
    pub fn broker_client(&self) -> Option<&broker::BrokerClient> {
        self.broker.as_ref()
    }

    /// What token a registry host needs, or `NotEcr`. Through a broker any host
    /// resolves: the broker decides (its mapping may be unknown here, then the
    /// target is only a placeholder for the scope).
    pub fn resolve(&self, registry: &str) -> Result<Resolved, TokenError> {
        let host = Host::parse(registry)?;
        match self.config.resolve(&host) {
            Some(r) => Ok(r),
            None if self.broker.is_some() => Ok(Resolved {
                host,
                target: Target::Public,
                creds: CredentialSource::default(),
            }),
            None => Err(TokenError::NotEcr {
                host: host.to_string(),
            }),
        }
    }

    /// The token for one registry host.
    pub fn get(&self, registry: &str) -> Result<AuthToken, TokenError> {
        let resolved = self.resolve(registry)?;
        self.get_many(std::slice::from_ref(&resolved))
            .pop()
            .expect("one result per request")
    }

    /// The token for a region (every registry in it), as `aws ecr
    /// get-login-password --region` gives.
    pub fn get_for_region(&self, region: &str, fips: bool) -> Result<AuthToken, TokenError> {
        if let Some(b) = &self.broker {
            return Err(TokenError::Broker(format!(
                "the ecr-auth broker at {} hands out tokens per registry, not per region: name the REGISTRY",
                b.url()
            )));
        }
        let target = Target::region_only(region, fips)?;
        let host = Host::parse(&format!("api.ecr.{region}.amazonaws.com"))?;
        let resolved = Resolved {
            host,
            target,
            creds: CredentialSource::default(),
        };
        self.get_many(std::slice::from_ref(&resolved))
            .pop()
            .expect("one result per request")
    }

    /// Tokens for many registries: one per (identity, scope), fetched together.
    /// Results are in the order of `registries`.
    ///
    /// Blocking: from async code call it inside `spawn_blocking`.
    pub fn get_many(&self, registries: &[Resolved]) -> Vec<Result<AuthToken, TokenError>> {
        let now = self.clock.now();
        if let Some(b) = &self.broker {
            return registries.iter().map(|r| b.token(&r.host, now)).collect();
        }
        let keys: Vec<String> = registries
            .iter()
            .map(|r| identity::cache_key(&self.env, self.base.as_ref(), &r.creds, &r.target))
            .collect();
        // One slot per distinct key: its request and, later, its result.
        let mut slots: BTreeMap<&str, Slot> = BTreeMap::new();
        for (r, key) in registries.iter().zip(&keys) {
            let slot = slots.entry(key).or_insert_with(|| Slot {
                request: FetchRequest {
                    key: key.clone(),
                    target: r.target.clone(),
                    creds: r.creds.clone(),
                    deadline: self.limits.cold_deadline,
                },
                hosts: Vec::new(),
                cached: None,
                result: None,
            });
            slot.hosts.push(r.host.to_string());
        }

        // Warm path: fresh entries need nothing else.
        for slot in slots.values_mut() {
            slot.cached = self.load(&slot.request.key);
            {
                if let Some(c) = slot.cached.as_ref().filter(|c| c.is_fresh(now)) {
                    tracing::debug!(
                        "using the cached ECR token for {}, valid until {}",
                        c.scope,
                        format_time(c.expires_at)
                    );
                    slot.result = Some(Ok((c.clone(), Origin::Cache)));
                }
            }
        }

        // Cold path: lock the misses (in key order, so two processes can't
        // deadlock), re-check — someone may have fetched while we waited — and
        // fetch what is still missing.
        let flights: Vec<_> = match &self.memory {
            Some(m) => slots
                .values()
                .filter(|s| s.result.is_none())
                .map(|s| m.flight(&s.request.key))
                .collect(),
            None => Vec::new(),
        };
        let _flying: Vec<_> = flights.iter().map(|f| memory::lock(f)).collect();
        let mut _locks = Vec::new();
        {
            for slot in slots.values_mut().filter(|s| s.result.is_none()) {
                if let Some(cache) = self.cache.as_ref().filter(|c| c.is_usable()) {
                    match cache.lock(&slot.request.key, self.limits.cold_deadline) {
                        Ok(lock) => _locks.push(lock),
                        Err(e) => tracing::warn!(
                            "cannot lock the token cache in {}: {e}; fetching without it",
                            cache.dir().display()
                        ),
                    }
                }
                slot.cached = self.load(&slot.request.key).or(slot.cached.take());
                let now = self.clock.now();
                if let Some(c) = slot.cached.as_ref().filter(|c| c.is_fresh(now)) {
                    slot.result = Some(Ok((c.clone(), Origin::Cache)));
                }
            }
        }
        let now = self.clock.now();
        let missing: Vec<FetchRequest> = slots
            .values()
            .filter(|s| s.result.is_none())
            .map(|s| {
                let mut r = s.request.clone();
                if s.cached.as_ref().is_some_and(|c| c.is_valid(now)) {
                    r.deadline = self.limits.refresh_budget.min(self.limits.cold_deadline);
                }
                r
            })
            .collect();
        if !missing.is_empty() {
            tracing::debug!(
                "fetching ECR tokens from AWS for {}",
                missing
                    .iter()
                    .map(|r| r.target.scope())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let fetched = self.fetcher.fetch(&missing);
            let now = self.clock.now();
            for (req, result) in missing.iter().zip(fetched) {
                let slot = slots.get_mut(req.key.as_str()).expect("slot per request");
                slot.result = Some(self.settle(slot, result, now));
            }
        }
        drop(_locks);

        registries
            .iter()
            .zip(&keys)
            .map(|(r, key)| {
                let slot = &slots[key.as_str()];
                match slot.result.as_ref().expect("every slot settled") {
                    Ok((entry, origin)) => Ok(AuthToken {
                        host: r.host.clone(),
                        username: entry.username.clone(),
                        password: Secret::new(entry.password.clone()),
                        issued_at: entry.issued_at,
                        expires_at: entry.expires_at,
                        proxy_endpoint: entry.proxy_endpoint.clone(),
                        origin: *origin,
                    }),
                    Err(e) => Err(e.clone()),
                }
            })
            .collect()
    }

    /// Turns a fetch result into the slot's answer: cache a good token, fall
    /// back to a still-valid cached one when AWS fails.
    fn settle(
        &self,
        slot: &Slot,
        result: Result<Fetched, TokenError>,
        now: i64,
    ) -> Result<(CachedToken, Origin), TokenError> {
        let req = &slot.request;
        match result {
            Ok(f) => {
                let mut hosts = slot
                    .cached
                    .as_ref()
                    .map(|c| c.hosts.clone())
                    .unwrap_or_default();
                for h in &slot.hosts {
                    if !hosts.contains(h) {
                        hosts.push(h.clone());
                    }
                }
                let entry = cache::new_entry(&req.key, &req.target.scope(), f, now, hosts);
                if entry.expires_at <= now {
                    // moto issues tokens that expired in 2015: usable once, never cached.
                    tracing::info!(
                        "ECR token for {} was already expired when issued; not caching it",
                        req.target.scope()
                    );
                } else {
                    tracing::info!(
                        "fetched an ECR token for {}, valid until {}",
                        req.target.scope(),
                        format_time(entry.expires_at)
                    );
                    if let Some(m) = &self.memory {
                        m.put(&entry);
                    }
                    if let Some(cache) = self.cache.as_ref().filter(|c| c.is_usable()) {
                        if let Err(e) = cache.store(&entry) {
                            tracing::warn!(
                                "cannot write the token cache in {}: {e}",
                                cache.dir().display()
                            );
                        }
                    }
                }
                Ok((entry, Origin::Aws))
            }
            Err(e) if e.is_not_found() => Err(e),
            Err(e) => match &slot.cached {
                Some(c) if c.is_valid(now) => {
                    // One sentence: what failed and what is served instead (the
                    // advice of a cold failure does not apply: nothing is broken yet).
                    let failed = match &e {
                        TokenError::Aws { what, cause, .. } => format!("{what} failed: {cause}"),
                        other => other.to_string(),
                    };
                    tracing::warn!(
                        "{failed} (refresh budget {}, ECR_AUTH_REFRESH_TIMEOUT); using the cached ECR token for {}, valid until {}",
                        humantime::format_duration(self.limits.refresh_budget),
                        c.scope,
                        format_time(c.expires_at)
                    );
                    Ok((c.clone(), Origin::StaleCache))
                }
                Some(c) => Err(TokenError::Expired {
                    scope: c.scope.clone(),
                    expired: format_time(c.expires_at),
                    cause: Box::new(e),
                }),
                None => Err(e),
            },
        }
    }

    /// Who AWS thinks the credentials for `registry` are, and AWS's clock
    /// (STS GetCallerIdentity), within the cold deadline. For `doctor`. Blocking.
    pub fn caller_identity(&self, registry: &Resolved) -> Result<aws::CallerIdentity, TokenError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TokenError::Internal(format!("cannot start the async runtime: {e}")))?;
        let out = runtime.block_on(aws::caller_identity(
            &self.env,
            self.base.as_ref(),
            &registry.creds,
            self.limits.cold_deadline,
        ));
        runtime.shutdown_background();
        out
    }

    /// The entry for `key`: memory first, then the file cache.
    fn load(&self, key: &str) -> Option<cache::CachedToken> {
        if let Some(e) = self.memory.as_ref().and_then(|m| m.get(key)) {
            return Some(e);
        }
        let e = self.cache.as_ref()?.load(key)?;
        if let Some(m) = &self.memory {
            m.put(&e);
        }
        Some(e)
    }

    /// Registry hosts this helper can answer for without the network: the
    /// configured ones and those in the cache.
    pub fn known_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .config
            .registries
            .iter()
            .map(|r| r.host.to_string())
            .collect();
        if let Some(b) = &self.broker {
            match b.registries() {
                Ok(listed) => hosts.extend(listed),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if let Some(cache) = &self.cache {
            for entry in cache.entries() {
                hosts.extend(entry.hosts.iter().cloned());
                if let Some(h) = entry
                    .proxy_endpoint
                    .as_deref()
                    .and_then(|p| Host::parse(p).ok())
                {
                    hosts.push(h.to_string());
                }
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

struct Slot {
    request: FetchRequest,
    hosts: Vec<String>,
    cached: Option<CachedToken>,
    result: Option<Result<(CachedToken, Origin), TokenError>>,
}

/// RFC 3339 in UTC, for messages.
pub fn format_time(unix: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
