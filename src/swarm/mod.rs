//! Docker Swarm: keep every service that pulls from ECR able to pull, forever.
//!
//! Swarm stores a service's registry auth when it is deployed and hands it to
//! whichever node runs a task; ECR tokens die after 12 hours. `swarm refresh`
//! re-sends fresh auth to each such service (its spec unchanged, so running tasks
//! keep running), on the leader manager only:
//!
//! ```text
//! loop: connect (negotiate the API version) ─► leader? ─no─► idle, look again in 30 s
//!        └─yes─► pass: list services ─► plan ─► one token per (identity, region)
//!                      ─► POST /services/{id}/update (spec as is, X-Registry-Auth)
//!        ─► wait: until a token in use passes half its life / --every / an event
//! ```
//!
//! Docker or AWS down: the loop logs, backs off and goes on. SIGTERM/SIGINT end
//! it after the update in flight.

pub mod docker;
pub mod envfile;
pub mod events;
pub mod image;
pub mod metrics;
pub mod refresh;
pub mod schedule;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::tokens::Tokens;
use docker::{Docker, DockerError, Role};
use metrics::Metrics;
use refresh::{Refresher, Report, Selection};
use schedule::Schedule;

pub use setup::{refresh_command, Request};

/// What `swarm refresh` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// A DOCKER_HOST value.
    pub docker_host: String,
    pub schedule: Schedule,
    pub watch_events: bool,
    /// List what would be updated, update nothing (one pass).
    pub dry_run: bool,
    pub selection: Selection,
    /// `/metrics` and `/healthz` on this address.
    pub metrics_addr: Option<String>,
}

/// Runs `swarm refresh` to the end; returns the exit code.
pub fn run(options: Options, tokens: Tokens) -> anyhow::Result<i32> {
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

    let once = o.schedule == Schedule::Once || o.dry_run;
    let mut refresher = Refresher::new(tokens, metrics.clone(), o.selection.clone());
    refresher.dry_run = o.dry_run;
    refresher.remember = !once;
    let (event_tx, mut events) = mpsc::unbounded_channel();
    if o.watch_events && !once {
        tokio::spawn(events::watch_services(
            o.docker_host.clone(),
            metrics.docker_calls.clone(),
            event_tx,
            stop.clone(),
        ));
    } else {
        drop(event_tx);
    }

    let mut docker: Option<Docker> = None;
    let mut role_said: Option<Role> = None;
    let mut docker_failures = 0u32;
    let mut token_failures = 0u32;
    loop {
        if *stop.borrow() {
            return Ok(0);
        }
        let wait = match connect(&o.docker_host, &mut docker, &metrics).await {
            Err(e) => {
                if once {
                    return Err(e.into());
                }
                docker_failures += 1;
                let wait = schedule::backoff(o.schedule, docker_failures);
                docker_down(&e, docker_failures, wait, &metrics);
                docker = None;
                wait
            }
            Ok(role) => {
                let leader = matches!(role, Role::Leader { .. });
                if role_said.as_ref() != Some(&role) {
                    announce(&role);
                    role_said = Some(role.clone());
                }
                metrics.leader(leader);
                if !leader {
                    docker_failures = 0;
                    metrics.healthy(format!("idle: {}", describe(&role)));
                    if once {
                        return Ok(0);
                    }
                    match o.schedule {
                        Schedule::Every(every) => every.min(schedule::IDLE_RECHECK),
                        _ => schedule::IDLE_RECHECK,
                    }
                } else {
                    let d = docker.as_ref().expect("connected above");
                    match refresher.pass(d, &stop).await {
                        Err(e) => {
                            if once {
                                return Err(e.into());
                            }
                            docker_failures += 1;
                            let wait = schedule::backoff(o.schedule, docker_failures);
                            docker_down(&e, docker_failures, wait, &metrics);
                            if e.is_connection() {
                                docker = None;
                            }
                            wait
                        }
                        Ok(report) => {
                            docker_failures = 0;
                            let now = crate::tokens::system_now();
                            metrics.pass(now, report.problem());
                            if o.dry_run {
                                for line in &report.would_update {
                                    println!("{line}");
                                }
                                if report.would_update.is_empty() {
                                    println!("nothing to update: no service pulls from ECR (or all are left alone, see the warnings)");
                                }
                                return Ok(0);
                            }
                            let wait = if report.token_errors > 0 {
                                token_failures += 1;
                                schedule::backoff(o.schedule, token_failures)
                            } else {
                                token_failures = 0;
                                schedule::next_pass(
                                    o.schedule,
                                    report.refresh_due,
                                    now,
                                    schedule::random_draw(),
                                )
                            };
                            let total = metrics
                                .docker_calls
                                .load(std::sync::atomic::Ordering::Relaxed);
                            summary(&report, total, if once { None } else { Some(wait) });
                            if once {
                                return match report.problem() {
                                    _ if report.interrupted => Ok(0),
                                    None => Ok(0),
                                    Some(p) => Err(anyhow::anyhow!(
                                        "{p}; the messages above say why. Services that failed keep their old auth"
                                    )),
                                };
                            }
                            metrics.next_refresh(now + wait.as_secs() as i64);
                            wait
                        }
                    }
                }
            }
        };
        wait_for_next(
            wait,
            &mut events,
            &mut refresher,
            &mut docker,
            &metrics,
            &stop,
        )
        .await;
    }
}

/// Waits `wait`, handling events meanwhile. Returns early (for a full pass now)
/// on a stop, when the event stream came back after a break, or when Docker failed.
async fn wait_for_next(
    wait: Duration,
    events: &mut mpsc::UnboundedReceiver<events::Event>,
    refresher: &mut Refresher,
    docker: &mut Option<Docker>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut stop_rx = stop.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = stop_rx.wait_for(|s| *s) => return,
            Some(first) = events.recv() => {
                let (ids, full) = events::batch(first, events).await;
                if full {
                    return;
                }
                let Some(d) = docker.as_ref() else { return };
                match d.role().await {
                    Ok(Role::Leader { .. }) => {}
                    Ok(_) => return,
                    Err(e) => {
                        metrics.docker_error(e.to_string());
                        return;
                    }
                }
                match refresher.changed(d, &ids, stop).await {
                    Ok(report) if report.updated + report.failed + report.token_errors > 0 => {
                        tracing::info!(
                            "after service events: updated {}, failed {}, no token {}",
                            report.updated,
                            report.failed,
                            report.token_errors
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("handling service events failed: {e}");
                        metrics.docker_error(e.to_string());
                        if e.is_connection() {
                            *docker = None;
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// Connects if needed and returns this node's role.
async fn connect(
    host: &str,
    docker: &mut Option<Docker>,
    metrics: &Metrics,
) -> Result<Role, DockerError> {
    if docker.is_none() {
        let d = Docker::connect(host, metrics.docker_calls.clone()).await?;
        tracing::info!(
            "connected to Docker at {} (API {})",
            d.endpoint(),
            d.api_version()
        );
        *docker = Some(d);
    }
    let d = docker.as_ref().expect("set above");
    match d.role().await {
        Ok(role) => Ok(role),
        Err(e) => {
            if e.is_connection() {
                *docker = None;
            }
            Err(e)
        }
    }
}

fn docker_down(e: &DockerError, failures: u32, wait: Duration, metrics: &Metrics) {
    metrics.docker_error(e.to_string());
    // The first failure, then every tenth: a long outage doesn't flood the log.
    if failures == 1 || failures.is_multiple_of(10) {
        tracing::error!(
            "{e}; retrying in {} (failure {failures} in a row)",
            humantime::format_duration(wait)
        );
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
