//! One refresh pass: which services need fresh registry auth ([`plan`], a pure
//! function), one token per (credential identity, region), and the updates.
//!
//! An update sends the service's spec back exactly as the daemon gave it, with
//! the current version and `X-Registry-Auth`; Swarm stores the new auth without
//! restarting running tasks. "update out of sequence" (someone changed the
//! service meanwhile) is answered by re-reading it and planning again.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::api::SwarmApi;
use super::docker::{registry_auth_header, DockerError, Service};
use super::image::registry_host;
use super::metrics::Outcome;
use super::step::State;
use crate::config::Resolved;
use crate::registry::Host;
use crate::tokens::{format_time, AuthToken, TokenError, Tokens};

/// Services with this label set to `false` are never touched.
pub(crate) const OPT_OUT_LABEL: &str = "ecr-auth.refresh";

/// Update states in which an update would resume or restart a rollout.
const PAUSED_STATES: &[&str] = &["paused", "rollback_started", "rollback_paused"];

/// How many times an update is retried after "update out of sequence".
const MAX_ATTEMPTS: u32 = 5;

/// Which services to act on, beyond "its image is on ECR".
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `k=v` (or `k`: present): every one must match (opt-in mode).
    pub labels: Vec<(String, Option<String>)>,
    /// Only images on these registry hosts.
    pub registries: Vec<Host>,
    pub include_jobs: bool,
}

/// What to do with one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Refresh {
        image_host: String,
        resolved: Resolved,
    },
    Leave(Leave),
}

/// Why a service is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Leave {
    NoImage,
    NotEcr { host: String },
    OptedOut,
    NotLabelled,
    OtherRegistry { host: String },
    Paused { state: String },
    Job { mode: String },
}

impl Leave {
    /// Left alone although its image is on ECR: worth a warning and a metric.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        match self {
            Leave::Paused { .. } => Some(Outcome::SkippedPaused),
            Leave::Job { .. } => Some(Outcome::SkippedJob),
            _ => None,
        }
    }
}

impl std::fmt::Display for Leave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leave::NoImage => write!(f, "it has no container image"),
            Leave::NotEcr { host } => write!(f, "its registry {host} is not ECR and not mapped to ECR in the config file"),
            Leave::OptedOut => write!(f, "it has the label {OPT_OUT_LABEL}=false"),
            Leave::NotLabelled => write!(f, "it does not match --label-selector"),
            Leave::OtherRegistry { host } => write!(f, "its registry {host} is not one of --registry"),
            Leave::Paused { state } => write!(
                f,
                "its update is {state}; an update would resume it (fix or roll it back, then it is refreshed on the next pass)"
            ),
            Leave::Job { mode } => write!(
                f,
                "it is a {mode} service and an update would run it again (use --include-jobs to refresh jobs anyway)"
            ),
        }
    }
}

/// Decides about one service. `resolve` is [`Tokens::resolve`].
pub(crate) fn plan(
    service: &Service,
    selection: &Selection,
    resolve: impl Fn(&str) -> Result<Resolved, TokenError>,
) -> Plan {
    let view = &service.view;
    let Some(image) = view.image() else {
        return Plan::Leave(Leave::NoImage);
    };
    let host = registry_host(image);
    if view
        .labels
        .get(OPT_OUT_LABEL)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    {
        return Plan::Leave(Leave::OptedOut);
    }
    let labelled = selection
        .labels
        .iter()
        .all(|(k, v)| match (view.labels.get(k), v) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        });
    if !labelled {
        return Plan::Leave(Leave::NotLabelled);
    }
    if !selection.registries.is_empty()
        && !Host::parse(host).is_ok_and(|h| selection.registries.contains(&h))
    {
        return Plan::Leave(Leave::OtherRegistry {
            host: host.to_string(),
        });
    }
    let resolved = match resolve(host) {
        Ok(r) => r,
        Err(_) => {
            return Plan::Leave(Leave::NotEcr {
                host: host.to_string(),
            })
        }
    };
    if let Some(mode) = view.job_mode() {
        if !selection.include_jobs {
            return Plan::Leave(Leave::Job {
                mode: mode.to_string(),
            });
        }
    }
    if let Some(state) = service
        .update_state
        .as_deref()
        .filter(|s| PAUSED_STATES.contains(s))
    {
        return Plan::Leave(Leave::Paused {
            state: state.to_string(),
        });
    }
    Plan::Refresh {
        image_host: host.to_string(),
        resolved,
    }
}

/// What a pass did, for the summary line, the schedule and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub services: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub token_errors: usize,
    /// Left alone on purpose (paused, rolling back, jobs), with a warning.
    pub held: usize,
    /// Not ECR, opted out, not selected.
    pub ignored: usize,
    pub tokens: usize,
    /// Updates sent again after "update out of sequence".
    pub retries: usize,
    pub docker_calls: u64,
    /// The earliest half-life of the tokens in use: when a fresh token is due.
    pub refresh_due: Option<i64>,
    /// A stop was asked for; the pass ended early.
    pub interrupted: bool,
    /// `--dry-run`: what would be updated, one line each.
    pub would_update: Vec<String>,
}

impl Report {
    pub fn problem(&self) -> Option<String> {
        match (self.failed, self.token_errors) {
            (0, 0) => None,
            (f, 0) => Some(format!("{f} service update(s) failed")),
            (0, t) => Some(format!("no ECR token for {t} service(s)")),
            (f, t) => Some(format!(
                "{f} service update(s) failed, no ECR token for {t} service(s)"
            )),
        }
    }
}

/// What this process last sent to a service: the spec it sent and which token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    spec: [u8; 32],
    token: [u8; 32],
}

/// True when this service's current spec is what we last sent it.
pub(crate) fn sent_this_spec(state: &State, service: &Service) -> bool {
    state
        .sent
        .get(&service.id)
        .is_some_and(|s| s.spec == sha256(service.spec.get().as_bytes()))
}

/// A full pass over every service.
pub(crate) async fn pass(
    state: &mut State,
    now: i64,
    api: &impl SwarmApi,
    tokens: &Arc<Tokens>,
) -> Result<Report, DockerError> {
    let calls_before = api.calls();
    let services = api.services().await?;
    let ids: Vec<&str> = services.iter().map(|s| s.id.as_str()).collect();
    state.sent.retain(|id, _| ids.contains(&id.as_str()));
    let mut report = act(state, now, api, tokens, services, true).await?;
    report.docker_calls = api.calls() - calls_before;
    Ok(report)
}

/// Services that changed (from events): re-read each and act on those whose
/// spec is not the one we sent (our own updates come back as events too).
pub(crate) async fn changed(
    state: &mut State,
    now: i64,
    api: &impl SwarmApi,
    tokens: &Arc<Tokens>,
    ids: &[String],
) -> Result<Report, DockerError> {
    let calls_before = api.calls();
    let mut services = Vec::new();
    for id in ids {
        match api.service(id).await {
            Ok(s) if sent_this_spec(state, &s) => {
                tracing::debug!(
                    "service {} changed, but its spec is the one we sent; nothing to do",
                    s.name()
                )
            }
            Ok(s) => services.push(s),
            Err(e) if e.is_not_found() => tracing::debug!("service {id} is gone"),
            Err(e) => return Err(e),
        }
    }
    let mut report = act(state, now, api, tokens, services, false).await?;
    report.docker_calls = api.calls() - calls_before;
    Ok(report)
}

async fn act(
    state: &mut State,
    now: i64,
    api: &impl SwarmApi,
    tokens: &Arc<Tokens>,
    services: Vec<Service>,
    full: bool,
) -> Result<Report, DockerError> {
    let mut report = Report {
        services: services.len(),
        ..Report::default()
    };
    let mut todo = Vec::new();
    // The services metrics keep: those on ECR, acted on or held.
    let mut tracked: Vec<String> = Vec::new();
    for service in services {
        match plan(&service, &state.settings.selection, |h| tokens.resolve(h)) {
            Plan::Refresh {
                image_host,
                resolved,
            } => {
                tracked.push(service.id.clone());
                todo.push((service, image_host, resolved))
            }
            Plan::Leave(why) => {
                if let Some(outcome) = why.outcome() {
                    tracing::warn!("left {} alone: {why}", service.name());
                    state
                        .metrics
                        .service(&service.id, service.name(), outcome, now);
                    tracked.push(service.id.clone());
                    report.held += 1;
                } else {
                    tracing::debug!("ignoring {}: {why}", service.name());
                    report.ignored += 1;
                }
            }
        }
    }
    if full {
        let tracked: Vec<&str> = tracked.iter().map(String::as_str).collect();
        state.metrics.retain_services(&tracked);
    }
    if state.settings.dry_run {
        for (service, host, resolved) in &todo {
            report.would_update.push(format!(
                "would update {} ({}): image {} on {host} -> ECR token {} for account {}",
                service.name(),
                service.id,
                service.view.image().unwrap_or_default(),
                resolved.target.scope(),
                account(resolved),
            ));
        }
        return Ok(report);
    }
    if todo.is_empty() {
        return Ok(report);
    }

    let Some((in_hand, scopes)) = fetch_tokens(state, tokens, &todo).await else {
        report.interrupted = true;
        return Ok(report);
    };
    report.tokens = scopes;
    report.refresh_due = in_hand
        .values()
        .filter_map(|t| t.as_ref().ok())
        .map(AuthToken::refresh_at)
        .min();

    for (service, host, _) in todo {
        if *state.stop.borrow() {
            report.interrupted = true;
            break;
        }
        let outcome = match &in_hand[&host] {
            Err(_) => Outcome::TokenError,
            Ok(token) => {
                update(
                    state,
                    api,
                    tokens,
                    service.clone(),
                    &host,
                    token,
                    &mut report.retries,
                )
                .await?
            }
        };
        match outcome {
            Outcome::Updated => report.updated += 1,
            Outcome::Unchanged => report.unchanged += 1,
            Outcome::TokenError => report.token_errors += 1,
            Outcome::Failed => report.failed += 1,
            Outcome::SkippedPaused | Outcome::SkippedJob => report.held += 1,
        }
        state
            .metrics
            .service(&service.id, service.name(), outcome, now);
    }
    Ok(report)
}

/// The token per image host — one `get_many`: the token core serves what it holds
/// in memory until the token's refresh time and fetches the rest, one call per
/// (identity, region) — and how many distinct scopes have one. `None` if a stop
/// came first.
async fn fetch_tokens(
    state: &State,
    tokens: &Arc<Tokens>,
    todo: &[(Service, String, Resolved)],
) -> Option<(BTreeMap<String, Result<AuthToken, TokenError>>, usize)> {
    let mut wanted: BTreeMap<String, Resolved> = BTreeMap::new();
    for (_, host, resolved) in todo {
        wanted
            .entry(host.clone())
            .or_insert_with(|| resolved.clone());
    }
    let (names, resolved): (Vec<String>, Vec<Resolved>) = wanted.into_iter().unzip();
    let scopes: Vec<(String, String)> = resolved
        .iter()
        .map(|r| (r.target.scope(), r.target.region().to_string()))
        .collect();
    let results = {
        let tokens = tokens.clone();
        // Blocking (the SDK, file locks): off the runtime, so `/healthz` and the
        // signal handlers keep answering while AWS is slow.
        let fetch = tokio::task::spawn_blocking(move || tokens.get_many(&resolved));
        let mut stop = state.stop.clone();
        tokio::select! {
            joined = fetch => joined.unwrap_or_else(|e| {
                names.iter().map(|_| Err(TokenError::Internal(format!("the token fetch stopped unexpectedly: {e}")))).collect()
            }),
            _ = stop.wait_for(|s| *s) => return None,
        }
    };
    let mut reported = std::collections::BTreeSet::new();
    for ((scope, region), result) in scopes.iter().zip(&results) {
        if !reported.insert(scope.clone()) {
            continue;
        }
        match result {
            Ok(t) => state.metrics.token_ok(scope, region, t.expires_at),
            Err(e) => {
                state.metrics.token_failed(scope, region);
                tracing::error!(
                    "cannot get an ECR token for {scope}; its services keep their old auth: {e}"
                );
            }
        }
    }
    let out: BTreeMap<String, Result<AuthToken, TokenError>> =
        names.into_iter().zip(results).collect();
    let scopes_in_hand: std::collections::BTreeSet<String> = todo
        .iter()
        .filter(|(_, host, _)| out.get(host).is_some_and(|r| r.is_ok()))
        .map(|(_, _, r)| format!("{}|{:?}", r.target.scope(), r.creds))
        .collect();
    Some((out, scopes_in_hand.len()))
}

/// Sends fresh auth to one service, re-reading it after "update out of sequence".
/// In daemon mode a service whose spec is the one we sent, with the same token,
/// is left as it is: its auth changes when the token core hands out a new token
/// (at the token's refresh time), not on every pass.
async fn update(
    state: &mut State,
    api: &impl SwarmApi,
    tokens: &Tokens,
    mut service: Service,
    host: &str,
    token: &AuthToken,
    retries: &mut usize,
) -> Result<Outcome, DockerError> {
    let auth = registry_auth_header(&token.username, &token.password, host);
    let token_hash = sha256(token.password.expose().as_bytes());
    let name = service.name().to_string();
    let remember = state.settings.remembers();
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = Sent {
            spec: sha256(service.spec.get().as_bytes()),
            token: token_hash,
        };
        if remember && state.sent.get(&service.id) == Some(&sent) {
            tracing::debug!("{name} already has the current token; nothing to do");
            return Ok(Outcome::Unchanged);
        }
        match api
            .update_service(&service.id, service.version, &service.spec, &auth)
            .await
        {
            Ok(warnings) => {
                tracing::info!(
                    "updated {name} ({}): fresh auth for {host}, valid until {}",
                    service.id,
                    format_time(token.expires_at)
                );
                for w in warnings {
                    tracing::warn!("Docker, updating {name}: {w}");
                }
                state.sent.insert(service.id.clone(), sent);
                return Ok(Outcome::Updated);
            }
            Err(e) if e.is_out_of_sequence() && attempt < MAX_ATTEMPTS => {
                *retries += 1;
                tracing::info!("{name} changed while we updated it (update out of sequence); re-reading it (attempt {attempt})");
                service = match api.service(&service.id).await {
                    Ok(s) => s,
                    Err(e) if e.is_not_found() => {
                        tracing::info!("{name} was removed meanwhile");
                        return Ok(Outcome::Unchanged);
                    }
                    Err(e) => return Err(e),
                };
                match plan(&service, &state.settings.selection, |h| tokens.resolve(h)) {
                    Plan::Refresh { image_host, .. } if image_host == host => {}
                    Plan::Refresh { .. } => {
                        tracing::info!(
                            "{name} now uses another registry; the next pass handles it"
                        );
                        return Ok(Outcome::Unchanged);
                    }
                    Plan::Leave(why) => {
                        tracing::warn!("left {name} alone after re-reading it: {why}");
                        return Ok(why.outcome().unwrap_or(Outcome::Unchanged));
                    }
                }
            }
            Err(e) if e.is_not_found() => {
                tracing::info!("{name} was removed meanwhile");
                return Ok(Outcome::Unchanged);
            }
            Err(e) if e.is_connection() => return Err(e),
            Err(e) => {
                tracing::error!("cannot update {name} ({}): {e}", service.id);
                return Ok(Outcome::Failed);
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn account(r: &Resolved) -> &str {
    match &r.target {
        crate::registry::Target::Private { account, .. } => account,
        crate::registry::Target::Public => "(ECR Public)",
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests;
