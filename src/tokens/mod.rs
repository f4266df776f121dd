//! The token service: every face turns a registry host into an ECR token here.
//!
//! ```text
//! host ─► Config::resolve ─► cache key (identity fingerprint + scope)
//!      ─► cache hit (fresh)            → token, no SDK, no runtime, no network
//!      ─► miss: lock, re-check, fetch  → one AWS call per (identity, region)
//!      ─► AWS failing, cached token still valid → served, with a warning
//! ```

pub mod aws;
pub mod cache;
pub mod identity;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

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
}

impl AuthToken {
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
    #[error("no AWS credentials found; tried {tried}. Set AWS credentials for this user, or map the registry to a profile or role in the ecr-auth config file")]
    NoCredentials { tried: String },
    #[error("AWS failed while {what}: {message}")]
    Aws { what: String, message: String },
    #[error("the cached ECR token for {scope} expired at {expired} and AWS failed: {cause}")]
    Expired {
        scope: String,
        expired: String,
        cause: Box<TokenError>,
    },
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl TokenError {
    /// Errors that mean "this helper has nothing for you" rather than "broken":
    /// clients fall back to anonymous pulls and other credential sources.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            TokenError::NotEcr { .. } | TokenError::NoCredentials { .. }
        )
    }
}

/// One token to fetch: a scope and the credentials to fetch it with.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub key: String,
    pub target: Target,
    pub creds: CredentialSource,
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

pub type Clock = fn() -> i64;

pub fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Tokens {
    env: Env,
    config: Config,
    cache: Option<Cache>,
    fetcher: Box<dyn Fetch>,
    clock: Clock,
}

impl Tokens {
    /// The service as the CLI uses it: real AWS, the cache from the environment.
    pub fn new(env: Env, config: Config) -> Tokens {
        let cache = Cache::from_env(&env);
        Tokens {
            env,
            config,
            cache,
            fetcher: Box::new(aws::AwsFetcher::default()),
            clock: system_now,
        }
    }

    pub fn with_fetcher(mut self, fetcher: Box<dyn Fetch>) -> Tokens {
        self.fetcher = fetcher;
        self
    }

    pub fn with_cache(mut self, cache: Option<Cache>) -> Tokens {
        self.cache = cache;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Tokens {
        self.clock = clock;
        self
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

    /// What token a registry host needs, or `NotEcr`.
    pub fn resolve(&self, registry: &str) -> Result<Resolved, TokenError> {
        let host = Host::parse(registry)?;
        self.config
            .resolve(&host)
            .ok_or_else(|| TokenError::NotEcr {
                host: host.to_string(),
            })
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
        let now = (self.clock)();
        let keys: Vec<String> = registries
            .iter()
            .map(|r| identity::cache_key(&self.env, &r.creds, &r.target))
            .collect();
        // One slot per distinct key: its request and, later, its result.
        let mut slots: BTreeMap<&str, Slot> = BTreeMap::new();
        for (r, key) in registries.iter().zip(&keys) {
            let slot = slots.entry(key).or_insert_with(|| Slot {
                request: FetchRequest {
                    key: key.clone(),
                    target: r.target.clone(),
                    creds: r.creds.clone(),
                },
                hosts: Vec::new(),
                cached: None,
                result: None,
            });
            slot.hosts.push(r.host.to_string());
        }

        // Warm path: fresh entries need nothing else.
        if let Some(cache) = &self.cache {
            for slot in slots.values_mut() {
                slot.cached = cache.load(&slot.request.key);
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
        let mut _locks = Vec::new();
        if let Some(cache) = &self.cache {
            for slot in slots.values_mut().filter(|s| s.result.is_none()) {
                match cache.lock(&slot.request.key) {
                    Ok(lock) => _locks.push(lock),
                    Err(e) => tracing::warn!(
                        "cannot lock the token cache in {}: {e}; fetching without it",
                        cache.dir().display()
                    ),
                }
                slot.cached = cache.load(&slot.request.key).or(slot.cached.take());
                let now = (self.clock)();
                if let Some(c) = slot.cached.as_ref().filter(|c| c.is_fresh(now)) {
                    slot.result = Some(Ok((c.clone(), Origin::Cache)));
                }
            }
        }
        let missing: Vec<FetchRequest> = slots
            .values()
            .filter(|s| s.result.is_none())
            .map(|s| s.request.clone())
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
            let now = (self.clock)();
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
                let entry = cache::new_entry(
                    &req.key,
                    &req.target.scope(),
                    &f.username,
                    &f.password,
                    now,
                    f.expires_at.unwrap_or(now + TOKEN_LIFETIME_SECS),
                    f.proxy_endpoint,
                    hosts,
                );
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
                    if let Some(cache) = &self.cache {
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
                    tracing::warn!(
                        "AWS failed ({e}); using the cached ECR token for {}, valid until {}",
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

    /// Registry hosts this helper can answer for without the network: the
    /// configured ones and those in the cache.
    pub fn known_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .config
            .registries
            .iter()
            .map(|r| r.host.to_string())
            .collect();
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
