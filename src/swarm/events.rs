//! `--watch-events`: follows the daemon's service events so that a service created
//! or updated by someone else gets fresh auth within seconds, not at the next pass.
//!
//! The watcher only forwards service IDs; the refresher decides (our own updates
//! come back as events too, and are recognised by their spec). After the stream
//! broke and came back it asks for a full pass, since events may have been missed.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::docker::Docker;
use super::schedule::{backoff, Schedule};

/// Changes close together are handled together.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A service was created or updated.
    Changed { service_id: String },
    /// The stream is back after a break: run a full pass.
    Resubscribed,
}

/// Runs until `stop` turns true. Sends what it sees on `tx`.
pub async fn watch_services(
    docker_host: String,
    calls: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut broke = false;
    loop {
        let attempt = async {
            let docker = Docker::connect(&docker_host, calls.clone()).await?;
            docker.service_events().await
        };
        let stream = tokio::select! {
            s = attempt => s,
            _ = stop.wait_for(|s| *s) => return,
        };
        match stream {
            Ok(mut stream) => {
                if broke {
                    tracing::info!("watching service events again");
                    let _ = tx.send(Event::Resubscribed);
                } else {
                    tracing::info!("watching service events");
                }
                failures = 0;
                loop {
                    let next = tokio::select! {
                        n = stream.next() => n,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    match next {
                        Some(Ok(ev)) => {
                            tracing::debug!(
                                "service event: {} {} ({})",
                                ev.action,
                                ev.name,
                                ev.service_id
                            );
                            if tx
                                .send(Event::Changed {
                                    service_id: ev.service_id,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!("the Docker event stream broke: {e}; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!(
                                "the Docker daemon closed the event stream; reconnecting"
                            );
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!("cannot watch Docker events: {e}; retrying");
                }
            }
        }
        broke = true;
        let wait = backoff(Schedule::Every(Duration::from_secs(30)), failures.max(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The first event and whatever follows within [`DEBOUNCE`]: the service IDs to
/// look at (deduplicated) and whether a full pass was asked for.
pub async fn batch(first: Event, rx: &mut mpsc::UnboundedReceiver<Event>) -> (Vec<String>, bool) {
    let mut ids = Vec::new();
    let mut full = false;
    let mut take = |ev: Event, ids: &mut Vec<String>| match ev {
        Event::Changed { service_id } => {
            if !ids.contains(&service_id) {
                ids.push(service_id);
            }
        }
        Event::Resubscribed => full = true,
    };
    take(first, &mut ids);
    let deadline = tokio::time::Instant::now() + DEBOUNCE;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        take(ev, &mut ids);
    }
    (ids, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_dedupe_and_flag_full_passes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in ["a", "b", "a"] {
            tx.send(Event::Changed {
                service_id: id.into(),
            })
            .unwrap();
        }
        tx.send(Event::Resubscribed).unwrap();
        let (ids, full) = batch(
            Event::Changed {
                service_id: "c".into(),
            },
            &mut rx,
        )
        .await;
        assert_eq!(ids, ["c", "a", "b"]);
        assert!(full);
        // Later events are the next batch's.
        let later = tokio::spawn(async move {
            let (ids, full) = batch(
                Event::Changed {
                    service_id: "d".into(),
                },
                &mut rx,
            )
            .await;
            (ids, full, rx)
        });
        let (ids, full, _rx) = later.await.unwrap();
        assert_eq!(ids, ["d"]);
        assert!(!full);
        drop(tx);
    }
}
