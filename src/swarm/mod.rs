//! Docker Swarm: keep every service that pulls from ECR able to pull, forever.
//!
//! Swarm stores a service's registry auth when it is deployed and hands it to
//! whichever node runs a task; ECR tokens die after 12 hours. `swarm refresh`
//! re-sends fresh auth to each such service (its spec unchanged, so running tasks
//! keep running), on the leader manager only:
//!
//! ```text
//! loop: step ─► leader? ─no─► idle, look again in 30 s
//!         └─yes─► pass: list services ─► plan ─► one token per (identity, region)
//!                       (the token core's in-memory layer) ─► POST /services/{id}/update
//!                       (spec as is, X-Registry-Auth), only where the token changed
//!       ─► wait: until a token in use reaches its refresh time / --every / an event
//! ```
//!
//! [`step`] is that turn as a plain function of (state, now, Swarm, tokens); the
//! loop here only waits. Docker or AWS down: the step logs and backs off
//! ([`crate::backoff`]) and the loop goes on. SIGTERM/SIGINT end it after the
//! update in flight.

mod api;
pub mod docker;
pub(crate) mod envfile;
mod events;
#[cfg(test)]
mod fake_daemon;
pub(crate) mod image;
pub mod metrics;
pub mod refresh;
pub mod schedule;
mod setup;
#[cfg(test)]
mod simulation;
mod step;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::tokens::Tokens;
use docker::Docker;
use metrics::Metrics;

pub use api::SwarmApi;
pub(crate) use setup::{refresh_command, Request};
pub(crate) use step::on_events;
pub use step::{step, Settings, State, Step, Turn};

/// What `swarm refresh` was asked to do.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The daemon, with its TLS settings.
    pub docker_host: docker::Target,
    /// How long a Docker API request may take.
    pub docker_timeout: Duration,
    pub settings: Settings,
    pub watch_events: bool,
    /// `/metrics` and `/healthz` on this address.
    pub metrics_addr: Option<String>,
}

/// Runs `swarm refresh` to the end; returns the exit code. Time comes from the
/// token service's clock.
pub(crate) fn run(options: Options, tokens: Tokens) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(refresher(options, Arc::new(tokens)));
    // A token fetch abandoned on SIGTERM may still be running on a blocking thread.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn refresher(o: Options, tokens: Arc<Tokens>) -> anyhow::Result<i32> {
    let metrics = Metrics::new();
    let docker =
        Docker::new(&o.docker_host, metrics.docker_calls.clone()).with_timeout(o.docker_timeout);
    if let Some(addr) = &o.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}; give a free ADDRESS:PORT such as 127.0.0.1:9464"))?;
        let local = listener.local_addr()?;
        tracing::info!("metrics on http://{local}/metrics, health on http://{local}/healthz");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(signals(stop_tx));

    let once = o.settings.schedule == schedule::Schedule::Once || o.settings.dry_run;
    let (event_tx, events) = mpsc::unbounded_channel();
    if o.watch_events && !once {
        tokio::spawn(events::watch_services(
            o.docker_host.clone(),
            o.docker_timeout,
            metrics.docker_calls.clone(),
            event_tx,
            stop.clone(),
        ));
    } else {
        drop(event_tx);
    }
    let mut state = State::new(o.settings, metrics.clone(), stop.clone());
    let mut waiter = Live { events, stop };
    drive(&mut state, &docker, &tokens, &mut waiter).await
}

/// What ended a wait between turns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The next turn is due: its time came, or events may have been missed (the
    /// event stream came back after a break).
    Turn,
    /// These services were created or changed (Docker events, debounced).
    Changed(Vec<String>),
    /// SIGTERM/SIGINT.
    Stop,
}

/// How the loop waits: [`Live`] sleeps on tokio's clock and listens to Docker's
/// events and the signals; the simulation in the tests moves a manual clock and
/// plays a scripted Swarm instead, so the loop itself is what runs there.
#[allow(async_fn_in_trait)] // used by value (generics) on one thread, never as `dyn`
pub(crate) trait Waiter {
    /// A point in the waiter's time.
    type Deadline: Copy;
    /// `wait` from now.
    fn deadline(&self, wait: Duration) -> Self::Deadline;
    /// Waits until `deadline`, or less if something happens first.
    async fn until(&mut self, deadline: Self::Deadline) -> Wake;
}

/// The loop: a turn ([`step`]), then wait for the next one, handling service
/// events meanwhile. A full turn comes early when this node is no longer the
/// leader or Docker failed while handling events. `--once` and `--dry-run`
/// return after the first turn.
pub(crate) async fn drive(
    state: &mut State,
    api: &impl SwarmApi,
    tokens: &Arc<Tokens>,
    waiter: &mut impl Waiter,
) -> anyhow::Result<i32> {
    let dry_run = state.settings.dry_run;
    let once = state.settings.schedule == schedule::Schedule::Once || dry_run;
    loop {
        if *state.stop.borrow() {
            return Ok(0);
        }
        let s = step(state, tokens.now(), api, tokens).await;
        if once {
            return finish_once(s.turn, dry_run);
        }
        let deadline = waiter.deadline(s.wait);
        loop {
            match waiter.until(deadline).await {
                Wake::Turn => break,
                Wake::Stop => return Ok(0),
                Wake::Changed(ids) => {
                    if !changed(state, api, tokens, &ids).await {
                        break;
                    }
                }
            }
        }
    }
}

/// The exit of `--once` and `--dry-run`.
fn finish_once(turn: Turn, dry_run: bool) -> anyhow::Result<i32> {
    match turn {
        Turn::Idle(_) => Ok(0),
        Turn::DockerFailed(e) => Err(e.into()),
        Turn::Pass(report) if dry_run => {
            for line in &report.would_update {
                println!("{line}");
            }
            if report.would_update.is_empty() {
                println!("nothing to update: no service pulls from ECR (or all are left alone, see the warnings)");
            }
            Ok(0)
        }
        Turn::Pass(report) => match report.problem() {
            _ if report.interrupted => Ok(0),
            None => Ok(0),
            Some(p) => Err(anyhow::anyhow!(
                "{p}; the messages above say why. Services that failed keep their old auth"
            )),
        },
    }
}

/// Acts on services that changed. False when a full turn should come now: this
/// node is no longer the leader, or Docker failed.
async fn changed(
    state: &mut State,
    api: &impl SwarmApi,
    tokens: &Arc<Tokens>,
    ids: &[String],
) -> bool {
    match on_events(state, tokens.now(), api, tokens, ids).await {
        Ok(Some(report)) => {
            if report.updated + report.failed + report.token_errors > 0 {
                tracing::info!(
                    "after service events: updated {}, failed {}, no token {}",
                    report.updated,
                    report.failed,
                    report.token_errors
                );
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!("handling service events failed: {e}");
            state.metrics.docker_error(e.to_string());
            false
        }
    }
}

/// The real waiter: tokio's clock, the event watcher's channel, the stop signal.
struct Live {
    events: mpsc::UnboundedReceiver<events::Event>,
    stop: watch::Receiver<bool>,
}

impl Waiter for Live {
    type Deadline = tokio::time::Instant;

    fn deadline(&self, wait: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + wait
    }

    async fn until(&mut self, deadline: tokio::time::Instant) -> Wake {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Wake::Turn,
            _ = self.stop.wait_for(|s| *s) => Wake::Stop,
            Some(first) = self.events.recv() => {
                let (ids, full) =
                    events::batch(first, &mut self.events, tokio::time::sleep(events::DEBOUNCE)).await;
                if full {
                    Wake::Turn
                } else {
                    Wake::Changed(ids)
                }
            }
        }
    }
}

/// Turns SIGTERM/SIGINT into `stop = true`. Keeps the sender alive forever, so
/// receivers never mistake a dropped sender for a stop.
async fn signals(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot watch SIGTERM/SIGINT ({e}); stop the refresher with SIGKILL");
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name}: finishing the update in flight, then exiting");
    let _ = tx.send(true);
    std::future::pending::<()>().await;
}
