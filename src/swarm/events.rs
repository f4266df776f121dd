//! `--watch-events`: follows the daemon's service events so that a service created
//! or updated by someone else gets fresh auth within seconds, not at the next pass.
//!
//! The watcher only forwards service IDs; the refresher decides (our own updates
//! come back as events too, and are recognised by their spec). After the stream
//! broke and came back it asks for a full pass, since events may have been missed.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::docker::{Docker, Target};
use crate::backoff::{random_draw, Backoff};

/// Changes close together are handled together.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(500);

/// The longest wait before watching again after the stream broke.
const RECONNECT_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A service was created or updated.
    Changed { service_id: String },
    /// The stream is back after a break: run a full pass.
    Resubscribed,
}

/// Runs until `stop` turns true. Sends what it sees on `tx`.
pub(crate) async fn watch_services(
    docker_host: Target,
    timeout: Duration,
    calls: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let docker = Docker::new(&docker_host, calls).with_timeout(timeout);
    let mut failures = 0u32;
    let mut broke = false;
    loop {
        let stream = tokio::select! {
            s = docker.service_events() => s,
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
        let wait = Backoff::DAEMON.delay(failures.max(1), Some(RECONNECT_CAP), random_draw());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The first event and whatever follows until `window` ends (the loop passes
/// `sleep(DEBOUNCE)`, tests a future they end themselves): the service IDs to
/// look at (deduplicated) and whether a full pass was asked for.
pub(crate) async fn batch(
    first: Event,
    rx: &mut mpsc::UnboundedReceiver<Event>,
    window: impl Future<Output = ()>,
) -> (Vec<String>, bool) {
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
    tokio::pin!(window);
    loop {
        tokio::select! {
            // Events already queued are taken before the window is looked at.
            biased;
            ev = rx.recv() => match ev {
                Some(ev) => take(ev, &mut ids),
                None => break,
            },
            _ = &mut window => break,
        }
    }
    (ids, full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn changed(id: &str) -> Event {
        Event::Changed {
            service_id: id.into(),
        }
    }

    /// The window is a future the test ends: no real time passes.
    #[tokio::test]
    async fn a_batch_takes_what_comes_within_the_window() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (close, window) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let got = batch(changed("c"), &mut rx, async {
                let _ = window.await;
            })
            .await;
            (got, rx)
        });
        // Events arriving while the window is open, one of them twice.
        for id in ["a", "b", "a"] {
            tx.send(changed(id)).unwrap();
            tokio::task::yield_now().await;
        }
        tx.send(Event::Resubscribed).unwrap();
        tokio::task::yield_now().await;
        close.send(()).unwrap();
        let ((ids, full), mut rx) = handle.await.unwrap();
        assert_eq!(ids, ["c", "a", "b"]);
        assert!(full, "a resubscription asks for a full pass");

        // After the window: the next batch's.
        tx.send(changed("d")).unwrap();
        let (ids, full) = batch(changed("e"), &mut rx, std::future::ready(())).await;
        assert_eq!(
            ids,
            ["e", "d"],
            "queued events are taken before the window ends"
        );
        assert!(!full);
        // A closed window with nothing queued ends the batch at once.
        let (ids, _) = batch(changed("f"), &mut rx, std::future::ready(())).await;
        assert_eq!(ids, ["f"]);
        drop(tx);
    }
}
