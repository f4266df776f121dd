//! One turn of the refresher as a plain function of (state, now, Swarm, tokens):
//! [`step`] looks at this node's role, runs a pass when it is the leader, and
//! says when the next turn is due. The loop around it (`super::run`) only waits,
//! so every rule — leadership, backoff after Docker or AWS failures, when auth is
//! re-sent — is tested with a fake [`SwarmApi`] and a manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::api::SwarmApi;
use super::docker::{DockerError, Role};
use super::metrics::Metrics;
use super::refresh::{self, Report, Selection, Sent};
use super::schedule::{self, Schedule};
use crate::backoff::Backoff;
use crate::tokens::Tokens;

/// What the refresher was asked to do (fixed for its life).
#[derive(Clone, Debug)]
pub struct Settings {
    pub schedule: Schedule,
    pub selection: Selection,
    /// List what would be updated, update nothing.
    pub dry_run: bool,
}

impl Settings {
    /// A daemon remembers what it sent, so a pass re-sends only new tokens; a
    /// single pass (`--once`) sends to every service.
    pub(crate) fn remembers(&self) -> bool {
        self.schedule != Schedule::Once && !self.dry_run
    }
}

/// The refresher's memory between turns.
pub struct State {
    pub(crate) settings: Settings,
    pub(crate) metrics: Arc<Metrics>,
    /// Turns true on SIGTERM/SIGINT: a pass stops after the update in flight.
    pub(crate) stop: watch::Receiver<bool>,
    /// The jitter source, a number in [0, 1).
    draw: fn() -> f64,
    /// The role last seen (announced when it changes).
    role: Option<Role>,
    docker_failures: u32,
    token_failures: u32,
    /// What was sent to each service (daemon mode), by service ID.
    pub(crate) sent: HashMap<String, Sent>,
}

impl State {
    pub fn new(settings: Settings, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> State {
        State {
            settings,
            metrics,
            stop,
            draw: crate::backoff::random_draw,
            role: None,
            docker_failures: 0,
            token_failures: 0,
            sent: HashMap::new(),
        }
    }

    /// A fixed jitter source (tests).
    pub fn with_draw(mut self, draw: fn() -> f64) -> State {
        self.draw = draw;
        self
    }

    /// Docker failures in a row.
    pub fn docker_failures(&self) -> u32 {
        self.docker_failures
    }

    /// Passes in a row in which a token could not be had.
    pub fn token_failures(&self) -> u32 {
        self.token_failures
    }

    fn backoff(&self, failures: u32) -> Duration {
        Backoff::DAEMON.delay(
            failures,
            self.settings.schedule.backoff_cap(),
            (self.draw)(),
        )
    }
}

/// What a turn did.
#[derive(Debug)]
pub enum Turn {
    /// Not the leader (or not in a Swarm): nothing done.
    Idle(Role),
    /// A pass ran (possibly with per-service failures, see the report).
    Pass(Report),
    /// Docker could not be asked; nothing was changed.
    DockerFailed(DockerError),
}

#[derive(Debug)]
pub struct Step {
    pub turn: Turn,
    /// When the next turn is due, from now.
    pub wait: Duration,
}

/// One turn at time `now` (unix seconds).
pub async fn step(state: &mut State, now: i64, api: &impl SwarmApi, tokens: &Arc<Tokens>) -> Step {
    let role = match api.role().await {
        Ok(role) => role,
        Err(e) => return docker_failed(state, e),
    };
    let leader = is_leader(&role);
    if state.role.as_ref() != Some(&role) {
        announce(&role);
        state.role = Some(role.clone());
    }
    state.metrics.leader(leader);
    if !leader {
        state.docker_failures = 0;
        // Another refresher acts meanwhile; when this one leads again it sends
        // to every service once instead of trusting what it sent long ago.
        state.sent.clear();
        state.metrics.healthy(format!("idle: {}", describe(&role)));
        let wait = match state.settings.schedule {
            Schedule::Every(every) => every.min(schedule::IDLE_RECHECK),
            _ => schedule::IDLE_RECHECK,
        };
        return Step {
            turn: Turn::Idle(role),
            wait,
        };
    }
    let report = match refresh::pass(state, now, api, tokens).await {
        Ok(report) => report,
        Err(e) => return docker_failed(state, e),
    };
    state.docker_failures = 0;
    state.metrics.pass(now, report.problem());
    let once = state.settings.schedule == Schedule::Once || state.settings.dry_run;
    let wait = if once {
        Duration::ZERO
    } else if report.token_errors > 0 {
        state.token_failures += 1;
        state.backoff(state.token_failures)
    } else {
        state.token_failures = 0;
        schedule::next_pass(
            state.settings.schedule,
            report.refresh_due,
            now,
            (state.draw)(),
        )
    };
    if !state.settings.dry_run {
        summary(&report, api.calls(), (!once).then_some(wait));
    }
    if !once {
        state.metrics.next_refresh(now + wait.as_secs() as i64);
    }
    Step {
        turn: Turn::Pass(report),
        wait,
    }
}

/// Services that changed (Docker events), between full passes. `None` when this
/// node is no longer the leader: the caller then runs a full turn.
pub(crate) async fn on_events(
    state: &mut State,
    now: i64,
    api: &impl SwarmApi,
    tokens: &Arc<Tokens>,
    ids: &[String],
) -> Result<Option<Report>, DockerError> {
    if !is_leader(&api.role().await?) {
        return Ok(None);
    }
    refresh::changed(state, now, api, tokens, ids)
        .await
        .map(Some)
}

fn is_leader(role: &Role) -> bool {
    matches!(role, Role::Leader { .. })
}

fn docker_failed(state: &mut State, e: DockerError) -> Step {
    state.docker_failures = state.docker_failures.saturating_add(1);
    let failures = state.docker_failures;
    let wait = state.backoff(failures);
    state.metrics.docker_error(e.to_string());
    // The first failure, then every tenth: a long outage doesn't flood the log.
    // (A single pass reports its error itself and retries nothing.)
    if state.settings.remembers() && (failures == 1 || failures.is_multiple_of(10)) {
        tracing::error!(
            "{e}; retrying in {} (failure {failures} in a row)",
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
        );
    }
    Step {
        turn: Turn::DockerFailed(e),
        wait,
    }
}

fn describe(role: &Role) -> String {
    match role {
        Role::Leader { node_id } => format!("node {node_id} is the Swarm leader"),
        Role::Manager { node_id } => format!("node {node_id} is a manager but not the leader"),
        Role::Worker => "this node is a Swarm worker".into(),
        Role::NotInSwarm { state } => {
            format!("this Docker daemon is not in a Swarm (state {state:?})")
        }
    }
}

fn announce(role: &Role) {
    match role {
        Role::Leader { .. } => tracing::info!("{}: refreshing services", describe(role)),
        Role::Manager { .. } => {
            tracing::info!(
                "{}: idling; the refresher on the leader acts",
                describe(role)
            )
        }
        Role::Worker | Role::NotInSwarm { .. } => tracing::warn!(
            "{}: idling. Run ecr-auth on managers (placement constraint node.role==manager)",
            describe(role)
        ),
    }
}

fn summary(r: &Report, docker_calls_total: u64, next: Option<Duration>) {
    let next = next
        .map(|w| {
            format!(
                "; next pass in {}",
                humantime::format_duration(Duration::from_secs(w.as_secs()))
            )
        })
        .unwrap_or_default();
    tracing::info!(
        "pass done: {} services: {} updated, {} unchanged, {} failed, {} without token, {} left alone, {} not ECR or not selected; {} token(s); {} Docker API calls ({} since start){}{next}",
        r.services,
        r.updated,
        r.unchanged,
        r.failed,
        r.token_errors,
        r.held,
        r.ignored,
        r.tokens,
        r.docker_calls,
        docker_calls_total,
        if r.interrupted { "; stopped early" } else { "" },
    );
}

#[cfg(test)]
mod tests;
