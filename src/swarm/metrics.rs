//! What the refresher knows about itself, as Prometheus text on `/metrics` and a
//! yes/no on `/healthz`, served by hyper (GET and HEAD, one request per
//! connection). Nothing here ever holds a token.
//!
//! Scrapers must never compete with the daemon's own work: at most
//! [`MAX_CONNECTIONS`] connections are open at once (a new one closes the oldest),
//! a client has [`HEADER_READ_TIMEOUT`] to send its request and
//! [`CONNECTION_LIFETIME`] in all, so idle connections can neither starve
//! `/healthz` nor use up the descriptors the Docker connection needs.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Connections served at once; a new one beyond this closes the oldest.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request line and headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open in all.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// The outcome of the last attempt on one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh auth sent.
    Updated,
    /// It already had this token (sent by us, spec unchanged since).
    Unchanged,
    /// The update was refused or Docker failed.
    Failed,
    /// No token: AWS failed for its registry.
    TokenError,
    /// Left alone: its update is paused or rolling back.
    SkippedPaused,
    /// Left alone: a job-mode service.
    SkippedJob,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::TokenError => "token_error",
            Outcome::SkippedPaused => "skipped_paused",
            Outcome::SkippedJob => "skipped_job",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TokenError)
    }
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Docker API requests made, over every connection.
    pub docker_calls: Arc<AtomicU64>,
}

#[derive(Default)]
struct Inner {
    leader: Option<bool>,
    passes_ok: u64,
    passes_failed: u64,
    last_pass: Option<i64>,
    next_refresh: Option<i64>,
    docker_errors: u64,
    /// `None` = healthy; `Some(reason)` = why not.
    problem: Option<String>,
    status: String,
    services: BTreeMap<String, ServiceMetrics>,
    tokens: BTreeMap<String, TokenMetrics>,
}

struct ServiceMetrics {
    name: String,
    last_refresh: Option<i64>,
    outcome: Outcome,
    updates: u64,
}

#[derive(Default)]
struct TokenMetrics {
    region: String,
    expires_at: Option<i64>,
    fetches: u64,
    failures: u64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn service(&self, id: &str, name: &str, outcome: Outcome, now: i64) {
        let mut m = self.lock();
        let s = m
            .services
            .entry(id.to_string())
            .or_insert_with(|| ServiceMetrics {
                name: name.to_string(),
                last_refresh: None,
                outcome,
                updates: 0,
            });
        s.name = name.to_string();
        s.outcome = outcome;
        if outcome == Outcome::Updated {
            s.last_refresh = Some(now);
            s.updates += 1;
        }
    }

    /// Drops services that no longer exist (or are no longer selected).
    pub fn retain_services(&self, ids: &[&str]) {
        self.lock()
            .services
            .retain(|id, _| ids.contains(&id.as_str()));
    }

    /// The IDs of services with figures (they must follow the Swarm, not grow
    /// with time).
    #[cfg(test)]
    pub(crate) fn tracked_service_ids(&self) -> Vec<String> {
        self.lock().services.keys().cloned().collect()
    }

    pub fn token_ok(&self, scope: &str, region: &str, expires_at: i64) {
        let mut m = self.lock();
        let t = m.tokens.entry(scope.to_string()).or_default();
        t.region = region.to_string();
        t.expires_at = Some(expires_at);
        t.fetches += 1;
    }

    pub fn token_failed(&self, scope: &str, region: &str) {
        let mut m = self.lock();
        let t = m.tokens.entry(scope.to_string()).or_default();
        t.region = region.to_string();
        t.failures += 1;
    }

    pub fn leader(&self, leader: bool) {
        self.lock().leader = Some(leader);
    }

    /// A pass ended; `problem` says what went wrong, if anything.
    pub fn pass(&self, now: i64, problem: Option<String>) {
        let mut m = self.lock();
        if problem.is_some() {
            m.passes_failed += 1;
        } else {
            m.passes_ok += 1;
        }
        m.last_pass = Some(now);
        m.status = format!("last pass at {}", crate::tokens::format_time(now));
        m.problem = problem;
    }

    pub fn docker_error(&self, reason: String) {
        let mut m = self.lock();
        m.docker_errors += 1;
        m.problem = Some(reason);
    }

    /// Healthy, with a word on what it is doing (idle, not the leader, ...).
    pub fn healthy(&self, status: String) {
        let mut m = self.lock();
        m.problem = None;
        m.status = status;
    }

    pub fn next_refresh(&self, at: i64) {
        self.lock().next_refresh = Some(at);
    }

    /// `(healthy, one line)` for `/healthz`.
    pub fn health(&self) -> (bool, String) {
        let m = self.lock();
        match &m.problem {
            Some(p) => (false, format!("unhealthy: {p}")),
            None if m.status.is_empty() => (true, "ok: starting".into()),
            None => (true, format!("ok: {}", m.status)),
        }
    }

    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let o = &mut out;
        let n = family(
            o,
            "ecr_auth_swarm_leader",
            "gauge",
            "1 when this node is the Swarm leader and acts, 0 when it idles.",
        );
        sample(o, n, "", m.leader.map_or(0, i64::from));
        let n = family(
            o,
            "ecr_auth_swarm_passes_total",
            "counter",
            "Refresh passes, by result.",
        );
        sample(o, n, "result=\"ok\"", m.passes_ok as i64);
        sample(o, n, "result=\"error\"", m.passes_failed as i64);
        let n = family(
            o,
            "ecr_auth_swarm_last_pass_timestamp_seconds",
            "gauge",
            "When the last refresh pass ended.",
        );
        sample(o, n, "", m.last_pass.unwrap_or(0));
        let n = family(
            o,
            "ecr_auth_swarm_next_refresh_timestamp_seconds",
            "gauge",
            "When the next full pass is due.",
        );
        sample(o, n, "", m.next_refresh.unwrap_or(0));
        let n = family(
            o,
            "ecr_auth_swarm_docker_api_calls_total",
            "counter",
            "Docker Engine API requests made.",
        );
        sample(o, n, "", self.docker_calls.load(Ordering::Relaxed) as i64);
        let n = family(
            o,
            "ecr_auth_swarm_docker_errors_total",
            "counter",
            "Times the Docker daemon could not be reached or failed a pass.",
        );
        sample(o, n, "", m.docker_errors as i64);
        let service = |id: &str, s: &ServiceMetrics| {
            format!("service=\"{}\",service_id=\"{}\"", esc(&s.name), esc(id))
        };
        let n = family(
            o,
            "ecr_auth_swarm_service_last_refresh_timestamp_seconds",
            "gauge",
            "When fresh registry auth was last sent to the service (0: never by this process).",
        );
        for (id, s) in &m.services {
            sample(o, n, &service(id, s), s.last_refresh.unwrap_or(0));
        }
        let n = family(
            o,
            "ecr_auth_swarm_service_refresh_result",
            "gauge",
            "The outcome of the last attempt on the service (the current result is 1).",
        );
        for (id, s) in &m.services {
            sample(
                o,
                n,
                &format!("{},result=\"{}\"", service(id, s), s.outcome.as_str()),
                1,
            );
        }
        let n = family(
            o,
            "ecr_auth_swarm_service_updates_total",
            "counter",
            "Registry auth updates sent to the service.",
        );
        for (id, s) in &m.services {
            sample(o, n, &service(id, s), s.updates as i64);
        }
        let token = |scope: &str, t: &TokenMetrics| {
            format!("region=\"{}\",scope=\"{}\"", esc(&t.region), esc(scope))
        };
        let n = family(
            o,
            "ecr_auth_swarm_token_expiry_timestamp_seconds",
            "gauge",
            "When the ECR token in use for the region expires.",
        );
        for (scope, t) in &m.tokens {
            if let Some(exp) = t.expires_at {
                sample(o, n, &token(scope, t), exp);
            }
        }
        let n = family(
            o,
            "ecr_auth_swarm_token_fetches_total",
            "counter",
            "ECR tokens obtained for the region (from AWS or the cache).",
        );
        for (scope, t) in &m.tokens {
            sample(o, n, &token(scope, t), t.fetches as i64);
        }
        let n = family(
            o,
            "ecr_auth_swarm_token_fetch_failures_total",
            "counter",
            "Failed attempts to get an ECR token for the region.",
        );
        for (scope, t) in &m.tokens {
            sample(o, n, &token(scope, t), t.failures as i64);
        }
        out
    }
}

fn family<'a>(out: &mut String, name: &'a str, kind: &str, help: &str) -> &'a str {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name
}

fn sample(out: &mut String, name: &str, labels: &str, value: i64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    // The connections open now, oldest first.
    let mut open: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        open.retain(|c| !c.is_finished());
        while open.len() >= MAX_CONNECTIONS {
            // The oldest has had the longest to send a request: a well-behaved
            // scraper is done in milliseconds.
            if let Some(oldest) = open.pop_front() {
                oldest.abort();
            }
        }
        let metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
        open.push_back(task.abort_handle());
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET | &Method::HEAD, "/healthz") => {
            let (ok, text) = metrics.health();
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, TEXT, text + "\n")
        }
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics or /healthz\n".into(),
        ),
        _ => (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_figures() {
        let m = Metrics::new();
        m.leader(true);
        m.service("id1", "web \"prod\"", Outcome::Updated, 1_700_000_000);
        m.service("id2", "batch", Outcome::SkippedJob, 1_700_000_000);
        m.token_ok("aws/eu-west-1", "eu-west-1", 1_700_043_200);
        m.token_failed("aws/us-east-1", "us-east-1");
        m.pass(1_700_000_001, None);
        m.docker_calls.fetch_add(7, Ordering::Relaxed);
        let text = m.render();
        for want in [
            "# TYPE ecr_auth_swarm_leader gauge\necr_auth_swarm_leader 1\n",
            "ecr_auth_swarm_passes_total{result=\"ok\"} 1\n",
            "ecr_auth_swarm_service_last_refresh_timestamp_seconds{service=\"web \\\"prod\\\"\",service_id=\"id1\"} 1700000000\n",
            "ecr_auth_swarm_service_last_refresh_timestamp_seconds{service=\"batch\",service_id=\"id2\"} 0\n",
            "ecr_auth_swarm_service_refresh_result{service=\"batch\",service_id=\"id2\",result=\"skipped_job\"} 1\n",
            "ecr_auth_swarm_token_expiry_timestamp_seconds{region=\"eu-west-1\",scope=\"aws/eu-west-1\"} 1700043200\n",
            "ecr_auth_swarm_token_fetch_failures_total{region=\"us-east-1\",scope=\"aws/us-east-1\"} 1\n",
            "ecr_auth_swarm_docker_api_calls_total 7\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Every sample follows its own HELP/TYPE header.
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(&current),
                    "{line} outside its family {current}"
                );
            }
        }
        assert_eq!(
            m.health(),
            (true, "ok: last pass at 2023-11-14T22:13:21Z".into())
        );
        m.docker_error("cannot reach Docker".into());
        assert_eq!(m.health(), (false, "unhealthy: cannot reach Docker".into()));
        m.retain_services(&["id2"]);
        assert!(!m.render().contains("id1"));
    }

    /// One plain HTTP/1.1 request on a fresh connection; (status, body).
    async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }

    /// Lifts this process's soft descriptor limit to `want` (within the hard
    /// limit): the test's own 2,000 client sockets must not be what runs out.
    fn raise_fd_limit(want: u64) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
                limit.rlim_cur = want.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    async fn server(metrics: Arc<Metrics>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, metrics));
        addr
    }

    #[tokio::test]
    async fn answers_metrics_healthz_and_refuses_the_rest() {
        let m = Metrics::new();
        m.leader(true);
        let addr = server(m.clone()).await;
        let (status, page) = get(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(page.contains("ecr_auth_swarm_leader 1\n"), "{page}");
        assert_eq!(
            get(addr, "GET", "/healthz?verbose=1").await,
            (200, "ok: starting\n".into())
        );
        assert_eq!(get(addr, "HEAD", "/healthz").await, (200, String::new()));
        m.docker_error("cannot reach Docker".into());
        assert_eq!(
            get(addr, "GET", "/healthz").await,
            (503, "unhealthy: cannot reach Docker\n".into())
        );
        assert_eq!(get(addr, "GET", "/nope").await.0, 404);
        assert_eq!(get(addr, "POST", "/metrics").await.0, 405);
    }

    /// 2,000 connections that never send a request: the server keeps at most
    /// MAX_CONNECTIONS of them (so its descriptors stay bounded) and /healthz
    /// is still answered at once.
    #[tokio::test]
    async fn idle_connections_cannot_starve_healthz() {
        let m = Metrics::new();
        let addr = server(m).await;
        raise_fd_limit(4096);
        let before = open_fds();
        let mut idle = Vec::new();
        for _ in 0..2000 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept them all.
        let (status, _) = get(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        let server_side = open_fds() - before - idle.len();
        assert!(
            server_side <= MAX_CONNECTIONS + 2,
            "the server holds {server_side} connections"
        );
        let answered = tokio::time::timeout(Duration::from_secs(2), get(addr, "GET", "/healthz"))
            .await
            .expect("/healthz starved by idle connections");
        assert_eq!(answered, (200, "ok: starting\n".into()));
    }
}
