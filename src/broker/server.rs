//! HTTP/1.1 on the broker's unix socket (hyper's server), and optionally
//! `/metrics` on a loopback TCP address.
//!
//! API (JSON; errors are `{"error": KIND, "message": SENTENCE}`):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/token?registry=HOST` | 200 `{"registry","username","password","expires_at","issued_at"}` (unix seconds) |
//! | | 403 `not_allowed`, 404 `not_found` (not ECR, no credentials), 502 `failed` (AWS), 400 `bad_request` |
//! | `GET /v1/registries` | 200 `{"registries": [HOST, ...]}`: the allowed hosts that are not patterns |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /metrics` | Prometheus text |
//!
//! Bounds: request head size and header count (hyper answers 431 or 400),
//! no request body (413), a deadline for the request head and one for the whole
//! connection, a maximum of open connections (more are closed at once). Every
//! token request leaves one audit line (registry, result, the caller's uid, gid
//! and pid from `SO_PEERCRED`), never the token.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{watch, Notify, Semaphore};

use super::metrics::Metrics;
use super::{Answer, Broker};

/// The server's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// The request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection is closed after this, whatever it does.
    pub connection_timeout: Duration,
    pub max_headers: usize,
    /// The largest request head (hyper's minimum is 8 KiB).
    pub max_head_bytes: usize,
    /// SIGTERM: how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_headers: 32,
            max_head_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

/// Who is calling, from `SO_PEERCRED`.
#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    uid: Option<u32>,
    gid: Option<u32>,
    pid: Option<i32>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        write!(
            f,
            "uid={} gid={} pid={}",
            show(self.uid.map(|v| v.to_string())),
            show(self.gid.map(|v| v.to_string())),
            show(self.pid.map(|v| v.to_string()))
        )
    }
}

struct Ctx {
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    wake_refresher: Arc<Notify>,
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    respond(status, "application/json", format!("{value}\n"))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    json(
        status,
        serde_json::json!({ "error": kind, "message": message }),
    )
}

/// The `registry` parameter of a query string, percent-decoded.
fn registry_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let v = kv.strip_prefix("registry=")?;
        let v = v.replace('+', " ");
        percent_encoding::percent_decode_str(&v)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    })
}

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>, peer: Peer, unix: bool) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.method() != Method::GET {
        ctx.metrics.count("bad_request");
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            "only GET is served",
        );
    }
    let has_body = req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        ctx.metrics.count("bad_request");
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            "requests to the broker carry no body",
        );
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    match (path.as_str(), unix) {
        ("/healthz", _) => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        ("/metrics", _) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            ctx.metrics.render(),
        ),
        ("/v1/registries", true) => json(
            StatusCode::OK,
            serde_json::json!({ "registries": ctx.broker.listed_hosts() }),
        ),
        ("/v1/token", true) => token(req.uri().query(), &ctx, peer).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "no_such_path",
            "no such path; the broker serves GET /v1/token?registry=HOST, /v1/registries, /healthz and /metrics",
        ),
    }
}

async fn token(query: Option<&str>, ctx: &Arc<Ctx>, peer: Peer) -> Response<Body> {
    let Some(registry) = registry_param(query) else {
        ctx.metrics.count("bad_request");
        tracing::info!(target: "ecr_auth::audit", "token request without a registry: result=bad_request {peer}");
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no registry: ask GET /v1/token?registry=HOST",
        );
    };
    let answer = match ctx.broker.answer_now(&registry) {
        Ok(a) => a,
        Err(pending) => {
            let broker = ctx.broker.clone();
            let a = tokio::task::spawn_blocking(move || broker.fetch(pending))
                .await
                .unwrap_or_else(|e| Answer::Failed(format!("internal error: {e}")));
            ctx.wake_refresher.notify_one();
            a
        }
    };
    ctx.metrics.count(answer.result());
    tracing::info!(
        target: "ecr_auth::audit",
        "token request registry={registry:?} result={} {peer}",
        answer.result()
    );
    match answer {
        Answer::Token(t) => json(
            StatusCode::OK,
            serde_json::json!({
                "registry": t.host.as_str(),
                "username": t.username,
                "password": t.password.expose(),
                "expires_at": t.expires_at,
                "issued_at": t.issued_at,
            }),
        ),
        Answer::NotAllowed(m) => error(StatusCode::FORBIDDEN, "not_allowed", &m),
        Answer::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", &m),
        Answer::Failed(m) => error(StatusCode::BAD_GATEWAY, "failed", &m),
    }
}

/// Serves one connection within the limits; on `stop`, finishes the request
/// in flight and closes.
async fn connection<S>(
    io: S,
    ctx: Arc<Ctx>,
    peer: Peer,
    unix: bool,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, ctx, peer, unix).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.connection_timeout);
    tokio::pin!(deadline);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("broker connection ({peer}) ended: {e}");
                }
                return;
            }
            _ = &mut deadline => {
                tracing::debug!("broker connection ({peer}) closed after {}", humantime::format_duration(limits.connection_timeout));
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Runs the broker on `listener` until `shutdown` completes, then lets requests
/// in flight finish (within `limits.shutdown_grace`). Also serves `/metrics` on
/// `metrics_tcp` when given.
pub async fn serve(
    listener: UnixListener,
    metrics_tcp: Option<tokio::net::TcpListener>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let ctx = Arc::new(Ctx {
        broker: broker.clone(),
        metrics: metrics.clone(),
        wake_refresher: Arc::new(Notify::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refresher = tokio::spawn(refresh_loop(
        broker.clone(),
        ctx.wake_refresher.clone(),
        stop_rx.clone(),
    ));
    if let Some(tcp) = metrics_tcp {
        let (ctx, stop_rx, slots) = (ctx.clone(), stop_rx.clone(), slots.clone());
        tokio::spawn(async move {
            let mut stop = stop_rx.clone();
            loop {
                tokio::select! {
                    accepted = tcp.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                        let (ctx, stop_rx) = (ctx.clone(), stop_rx.clone());
                        tokio::spawn(async move {
                            connection(stream, ctx, Peer::default(), false, limits, stop_rx).await;
                            drop(permit);
                        });
                    }
                    _ = stop.changed() => return,
                }
            }
        });
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off a moment instead of spinning.
                        tracing::warn!("broker: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                metrics.connections.fetch_add(1, Ordering::Relaxed);
                metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                let peer = stream
                    .peer_cred()
                    .map(|c| Peer { uid: Some(c.uid()), gid: Some(c.gid()), pid: c.pid() })
                    .unwrap_or_default();
                let (ctx, stop_rx, metrics) = (ctx.clone(), stop_rx.clone(), metrics.clone());
                tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    connection(stream, ctx, peer, true, limits, stop_rx).await;
                    if started.elapsed() >= limits.connection_timeout {
                        metrics.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "broker: requests still in flight after {}; closing them",
            humantime::format_duration(limits.shutdown_grace)
        );
    }
    refresher.abort();
}

/// The fuzz target's way in (tests only): `request`'s bytes on one in-memory
/// connection, served exactly as a unix-socket client is served (the same
/// [`connection`], the default limits). The client keeps its side open, as a
/// real one does while it waits; returns every byte written back until the
/// server closed the connection (on a paused clock its timeouts pass at once).
#[cfg(test)]
pub(crate) async fn serve_bytes(broker: Arc<Broker>, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ctx = Arc::new(Ctx {
        broker,
        metrics: Arc::new(Metrics::default()),
        wake_refresher: Arc::new(Notify::new()),
    });
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let served = tokio::spawn(connection(
        server,
        ctx,
        Peer::default(),
        true,
        Limits::default(),
        stop_rx,
    ));
    let (mut rd, mut wr) = tokio::io::split(client);
    let mut answer = Vec::new();
    let write = async {
        let _ = wr.write_all(request).await;
        wr
    };
    let read = rd.read_to_end(&mut answer);
    let (_open, _) = tokio::join!(write, read);
    let _ = served.await;
    answer
}

/// The background refresh: [`Broker::refresh_step`] whenever a token reaches
/// its refresh time, or a new one is served.
async fn refresh_loop(broker: Arc<Broker>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        let b = broker.clone();
        let next = tokio::task::spawn_blocking(move || b.refresh_step())
            .await
            .ok()
            .flatten();
        let secs = match next {
            Some(t) => (t - broker.now()).clamp(1, 3600),
            None => 3600,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs as u64)) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_parameter_is_percent_decoded() {
        assert_eq!(
            registry_param(Some("registry=registry.internal%3A5000")).as_deref(),
            Some("registry.internal:5000")
        );
        assert_eq!(
            registry_param(Some("x=1&registry=a.b")).as_deref(),
            Some("a.b")
        );
        assert_eq!(registry_param(Some("x=1")), None);
        assert_eq!(registry_param(None), None);
    }
}
