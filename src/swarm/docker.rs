//! A small Docker Engine API client: just what `swarm refresh` needs, over a unix
//! socket (`unix:///var/run/docker.sock`, the default) or `tcp://`, with TLS as
//! the docker CLI does it ([`endpoint`], [`tls`]).
//!
//! Why raw JSON and not a typed client (bollard and the like): a refresh must send
//! the service's spec back *exactly* as Swarm stored it. A typed client decodes the
//! spec into its own structs and encodes them again, so it drops every field its
//! model does not know (fields newer daemons added), writes defaults or `null` where
//! the daemon had left a field out, and re-orders what it keeps. Swarm compares
//! specs: any such difference is a change, and a changed spec restarts every task
//! or re-resolves a floating tag — the very thing a refresh must never do.
//! So [`Service::spec`] holds the daemon's own bytes and [`Docker::update_service`]
//! sends them back untouched, at the API version the daemon itself speaks (from
//! `/version`); only the few fields selection needs are read, into [`SpecView`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::env::Env;
use crate::secret::Secret;
use endpoint::Endpoint;
pub use endpoint::{HostArgs, Target};

mod endpoint;
mod tls;

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Below 1.30 the daemon re-resolves image tags to digests on every update.
const MIN_API_VERSION: (u32, u32) = (1, 30);

/// Every request must answer within this (the event stream: its opening), unless
/// [`Docker::with_timeout`] says otherwise (`--docker-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("DOCKER_HOST {0:?} is not supported: use unix:///path/to/docker.sock or tcp://HOST[:PORT] (TLS with --tlsverify, or DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH)")]
    BadHost(String),
    #[error("--docker-host (DOCKER_HOST) {0} is plain HTTP to a host that is not this machine: the registry credentials sent with every service update would cross the network readable by anyone on the way. Use TLS (DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or --tlsverify), or pass --allow-plain-http if the network is yours")]
    PlainHttp(String),
    #[error("cannot use {what} {} for TLS to the Docker daemon: {problem}. {advice}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        problem: String,
        advice: String,
    },
    #[error("{0}")]
    TlsSetup(String),
    #[error("TLS with the Docker daemon at {endpoint} failed: {message}")]
    Tls { endpoint: String, message: String },
    #[error("cannot reach the Docker daemon at {endpoint}: {message}. Is dockerd running, and is its socket mounted/readable?")]
    Unreachable { endpoint: String, message: String },
    #[error("the Docker daemon at {endpoint} did not answer {what} within {secs}s")]
    Timeout {
        endpoint: String,
        what: String,
        secs: u64,
    },
    #[error("Docker API {what} failed ({status}): {message}")]
    Api {
        what: String,
        status: u16,
        message: String,
    },
    #[error("Docker API {what}: the daemon answered something unexpected: {message}")]
    Decode { what: String, message: String },
    #[error("the Docker daemon speaks API {0}; ecr-auth needs 1.30 or newer (Docker 17.06+)")]
    TooOld(String),
}

impl DockerError {
    /// Swarm refused an update because the service changed since it was read.
    pub fn is_out_of_sequence(&self) -> bool {
        matches!(self, DockerError::Api { message, .. } if message.contains("update out of sequence"))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Api { status: 404, .. })
    }

    /// The daemon is down or unreachable (as opposed to refusing one request).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            DockerError::Unreachable { .. } | DockerError::Timeout { .. } | DockerError::Tls { .. }
        )
    }
}

/// One daemon, at the API version it speaks. The version is learnt on first use
/// and again after the daemon could not be reached (it may have been upgraded).
pub struct Docker {
    target: Target,
    version: std::sync::Mutex<Option<String>>,
    calls: Arc<AtomicU64>,
    timeout: Duration,
}

/// What `/info` and `/nodes/{id}` say about this node's part in the Swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leader {
        node_id: String,
    },
    /// A manager that is not the leader (it may become one).
    Manager {
        node_id: String,
    },
    Worker,
    NotInSwarm {
        state: String,
    },
}

/// One service as the daemon returned it.
#[derive(Clone, Debug)]
pub struct Service {
    pub id: String,
    pub version: u64,
    /// `.Spec` exactly as the daemon sent it.
    pub spec: Box<RawValue>,
    /// `.UpdateStatus.State`: updating, paused, completed, rollback_started, ...
    pub update_state: Option<String>,
    pub view: SpecView,
}

/// The few fields of a spec that selection looks at.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SpecView {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Labels", default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(rename = "TaskTemplate", default)]
    pub task_template: TaskTemplateView,
    #[serde(rename = "Mode", default)]
    pub mode: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct TaskTemplateView {
    #[serde(rename = "ContainerSpec", default)]
    pub container_spec: Option<ContainerSpecView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerSpecView {
    #[serde(rename = "Image", default)]
    pub image: Option<String>,
}

impl SpecView {
    pub fn image(&self) -> Option<&str> {
        self.task_template
            .container_spec
            .as_ref()
            .and_then(|c| c.image.as_deref())
            .filter(|i| !i.is_empty())
    }

    /// `ReplicatedJob` or `GlobalJob` for job-mode services.
    pub fn job_mode(&self) -> Option<&str> {
        self.mode
            .keys()
            .map(String::as_str)
            .find(|k| k.ends_with("Job"))
    }
}

#[derive(Deserialize)]
struct ServiceWire {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Version")]
    version: VersionWire,
    #[serde(rename = "Spec")]
    spec: Box<RawValue>,
    #[serde(rename = "UpdateStatus", default)]
    update_status: Option<UpdateStatusWire>,
}

#[derive(Deserialize)]
struct VersionWire {
    #[serde(rename = "Index")]
    index: u64,
}

#[derive(Deserialize)]
struct UpdateStatusWire {
    #[serde(rename = "State", default)]
    state: Option<String>,
}

impl Service {
    /// Parses one service object of `GET /services` or `GET /services/{id}`.
    pub fn from_json(raw: &RawValue) -> Result<Service, serde_json::Error> {
        let wire: ServiceWire = serde_json::from_str(raw.get())?;
        let view: SpecView = serde_json::from_str(wire.spec.get())?;
        Ok(Service {
            id: wire.id,
            version: wire.version.index,
            spec: wire.spec,
            update_state: wire
                .update_status
                .and_then(|u| u.state)
                .filter(|s| !s.is_empty()),
            view,
        })
    }

    /// The name, or the ID when the spec has none.
    pub fn name(&self) -> &str {
        if self.view.name.is_empty() {
            &self.id
        } else {
            &self.view.name
        }
    }
}

impl Docker {
    /// The daemon at `target`; nothing is sent yet.
    pub fn new(target: &Target, calls: Arc<AtomicU64>) -> Docker {
        Docker {
            target: target.clone(),
            version: std::sync::Mutex::new(None),
            calls,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Every request gives up after `timeout` (the event stream: its opening).
    pub fn with_timeout(mut self, timeout: Duration) -> Docker {
        self.timeout = timeout;
        self
    }

    /// Connects to `host` (a DOCKER_HOST value, without TLS) and learns its API version.
    pub async fn connect(host: &str, calls: Arc<AtomicU64>) -> Result<Docker, DockerError> {
        let target = Target::resolve(&HostArgs::from(host), &Env::default())?;
        let docker = Docker::new(&target, calls);
        docker.api_version().await?;
        Ok(docker)
    }

    /// The API version the daemon speaks (asked once, then remembered).
    pub async fn api_version(&self) -> Result<String, DockerError> {
        if let Some(v) = self.known_version() {
            return Ok(v);
        }
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "ApiVersion")]
            api_version: String,
        }
        let body = self
            .call(Method::GET, "/version", None, None, "GET /version")
            .await?;
        let v: Version = decode(&body, "GET /version")?;
        if parse_version(&v.api_version).is_none_or(|v| v < MIN_API_VERSION) {
            return Err(DockerError::TooOld(v.api_version));
        }
        tracing::info!(
            "connected to Docker at {} (API {}); requests time out after {}",
            self.endpoint(),
            v.api_version,
            humantime::format_duration(self.timeout)
        );
        *self.version_slot() = Some(v.api_version.clone());
        Ok(v.api_version)
    }

    fn version_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn known_version(&self) -> Option<String> {
        self.version_slot().clone()
    }

    /// After a connection failure the version is asked again on the next call.
    fn note<T>(&self, result: Result<T, DockerError>) -> Result<T, DockerError> {
        if result.as_ref().is_err_and(DockerError::is_connection) {
            *self.version_slot() = None;
        }
        result
    }

    pub fn endpoint(&self) -> String {
        self.target.describe()
    }

    /// Requests made through this client (and its event streams) so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// This node's part in the Swarm. (`/nodes/self` is not understood by
    /// Docker 20.10, so the node ID comes from `/info`.)
    pub async fn role(&self) -> Result<Role, DockerError> {
        #[derive(Deserialize)]
        struct Info {
            #[serde(rename = "Swarm")]
            swarm: SwarmInfo,
        }
        #[derive(Deserialize)]
        struct SwarmInfo {
            #[serde(rename = "NodeID", default)]
            node_id: String,
            #[serde(rename = "LocalNodeState", default)]
            state: String,
            #[serde(rename = "ControlAvailable", default)]
            control: bool,
        }
        #[derive(Deserialize)]
        struct Node {
            #[serde(rename = "ManagerStatus", default)]
            manager: Option<ManagerStatus>,
        }
        #[derive(Deserialize)]
        struct ManagerStatus {
            #[serde(rename = "Leader", default)]
            leader: bool,
        }
        let info: Info = decode(&self.get("/info", "GET /info").await?, "GET /info")?;
        let s = info.swarm;
        if s.state != "active" {
            return Ok(Role::NotInSwarm { state: s.state });
        }
        if !s.control {
            return Ok(Role::Worker);
        }
        let what = format!("GET /nodes/{}", s.node_id);
        let node: Node = decode(
            &self.get(&format!("/nodes/{}", s.node_id), &what).await?,
            &what,
        )?;
        Ok(match node.manager {
            Some(m) if m.leader => Role::Leader { node_id: s.node_id },
            _ => Role::Manager { node_id: s.node_id },
        })
    }

    pub async fn services(&self) -> Result<Vec<Service>, DockerError> {
        let what = "GET /services";
        let body = self.get("/services", what).await?;
        let list: Vec<Box<RawValue>> = decode(&body, what)?;
        list.iter()
            .map(|raw| Service::from_json(raw).map_err(|e| decode_error(what, e)))
            .collect()
    }

    pub async fn service(&self, id: &str) -> Result<Service, DockerError> {
        let what = format!("GET /services/{id}");
        let body = self
            .get(&format!("/services/{}", path_segment(id)), &what)
            .await?;
        let raw: Box<RawValue> = decode(&body, &what)?;
        Service::from_json(&raw).map_err(|e| decode_error(&what, e))
    }

    /// `POST /services/{id}/update?version=N` with `spec` as is and the registry
    /// auth header. Returns the daemon's warnings.
    pub async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &RawValue,
        registry_auth: &Secret<String>,
    ) -> Result<Vec<String>, DockerError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Warnings", default)]
            warnings: Option<Vec<String>>,
        }
        let what = format!("POST /services/{id}/update");
        let path = format!("/services/{}/update?version={version}", path_segment(id));
        let path = self.versioned(&path).await?;
        let body = self
            .call(
                Method::POST,
                &path,
                Some(Bytes::copy_from_slice(spec.get().as_bytes())),
                Some(registry_auth),
                &what,
            )
            .await?;
        let answer: Answer = decode(&body, &what)?;
        Ok(answer.warnings.unwrap_or_default())
    }

    /// Opens `GET /events` for service create/update events (the timeout covers the
    /// opening, not the stream).
    pub async fn service_events(&self) -> Result<EventStream, DockerError> {
        let filters = r#"{"type":["service"],"event":["create","update"]}"#;
        let path = self
            .versioned(&format!("/events?filters={}", query_escape(filters)))
            .await?;
        let what = "GET /events";
        self.calls.fetch_add(1, Ordering::Relaxed);
        let opened = tokio::time::timeout(self.timeout, self.send(Method::GET, &path, None, None))
            .await
            .map_err(|_| self.timed_out(what))
            .and_then(|r| r);
        let response = self.note(opened)?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(api_error(what, status, &body));
        }
        Ok(EventStream {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    async fn get(&self, path: &str, what: &str) -> Result<Bytes, DockerError> {
        let path = self.versioned(path).await?;
        self.call(Method::GET, &path, None, None, what).await
    }

    async fn versioned(&self, path: &str) -> Result<String, DockerError> {
        Ok(format!("/v{}{path}", self.api_version().await?))
    }

    /// One request with a timeout; the body of a 2xx answer, else an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        registry_auth: Option<&Secret<String>>,
        what: &str,
    ) -> Result<Bytes, DockerError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let response = self.send(method, path, body, registry_auth).await?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(&e))?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                Err(api_error(what, status, &body))
            }
        };
        let result = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.timed_out(what))
            .and_then(|r| r);
        self.note(result)
    }

    fn timed_out(&self, what: &str) -> DockerError {
        DockerError::Timeout {
            endpoint: self.target.describe(),
            what: what.to_string(),
            secs: self.timeout.as_secs(),
        }
    }

    /// A fresh connection per request: the socket is local and cheap, and a daemon
    /// restart then never leaves a dead pooled connection behind.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        registry_auth: Option<&Secret<String>>,
    ) -> Result<Response<Incoming>, DockerError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.target.endpoint.authority())
            .header(
                hyper::header::USER_AGENT,
                concat!("ecr-auth/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = registry_auth {
            request = request.header("X-Registry-Auth", auth.expose().as_str());
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| DockerError::Decode {
                what: path.to_string(),
                message: format!("cannot build the request: {e}"),
            })?;
        match &self.target.endpoint {
            Endpoint::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                self.exchange(stream, request).await
            }
            Endpoint::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                match &self.target.tls {
                    None => self.exchange(stream, request).await,
                    Some(tls) => {
                        // The handshake is done before a byte of the request is
                        // written: a daemon that fails the CA check gets nothing.
                        let stream = tls
                            .connect(stream)
                            .await
                            .map_err(|e| self.unreachable(&e))?;
                        self.exchange(stream, request).await
                    }
                }
            }
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, DockerError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    /// A failed connection or exchange: TLS failures explained, the rest as
    /// "cannot reach" with the whole cause.
    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> DockerError {
        if let (Some(tls), Some(cause)) = (&self.target.tls, tls::rustls_error(e)) {
            return tls.explain(&self.target.describe(), cause);
        }
        DockerError::Unreachable {
            endpoint: self.target.describe(),
            message: crate::report::report(e),
        }
    }

    /// `GET path` (at the daemon's API version) decoded as `T`: a read for callers
    /// that need fields this client does not model (doctor: nodes, tasks).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, DockerError> {
        let what = format!("GET {path}");
        decode(&self.get(path, &what).await?, &what)
    }
}

/// Service events as they arrive: the IDs of services created or updated.
pub struct EventStream {
    body: Incoming,
    buffer: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEvent {
    pub action: String,
    pub service_id: String,
    pub name: String,
}

impl EventStream {
    /// The next event; `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Option<Result<ServiceEvent, DockerError>> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                match parse_event(&line) {
                    Some(ev) => return Some(Ok(ev)),
                    None => continue,
                }
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => {
                    return Some(Err(DockerError::Unreachable {
                        endpoint: "the event stream".into(),
                        message: e.to_string(),
                    }))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

pub(crate) fn parse_event(line: &[u8]) -> Option<ServiceEvent> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "Type", default)]
        kind: String,
        #[serde(rename = "Action", default)]
        action: String,
        #[serde(rename = "Actor")]
        actor: Actor,
    }
    #[derive(Deserialize)]
    struct Actor {
        #[serde(rename = "ID")]
        id: String,
        #[serde(rename = "Attributes", default)]
        attributes: std::collections::BTreeMap<String, String>,
    }
    let text = std::str::from_utf8(line).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let ev: Event = serde_json::from_str(text).ok()?;
    if ev.kind != "service" {
        return None;
    }
    Some(ServiceEvent {
        action: ev.action,
        name: ev.actor.attributes.get("name").cloned().unwrap_or_default(),
        service_id: ev.actor.id,
    })
}

/// `X-Registry-Auth`: base64url (padded, as the Docker CLI sends it) of
/// `{"username","password","serveraddress"}`.
pub fn registry_auth_header(
    username: &str,
    password: &Secret<String>,
    server: &str,
) -> Secret<String> {
    use base64::Engine;
    let json = serde_json::json!({
        "username": username,
        "password": password.expose(),
        "serveraddress": server,
    });
    Secret::new(base64::engine::general_purpose::URL_SAFE.encode(json.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, DockerError> {
    serde_json::from_slice(body).map_err(|e| decode_error(what, e))
}

fn decode_error(what: &str, e: serde_json::Error) -> DockerError {
    DockerError::Decode {
        what: what.to_string(),
        message: e.to_string(),
    }
}

fn api_error(what: &str, status: StatusCode, body: &[u8]) -> DockerError {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let mut message = serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect()
        });
    // Go's answer to plain HTTP on a TLS port (dockerd --tlsverify -H tcp://…).
    if message.contains("Client sent an HTTP request to an HTTPS server") {
        message.push_str(" The daemon serves TLS on this port: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (or --tlsverify with --tlscacert, --tlscert and --tlskey)");
    }
    DockerError::Api {
        what: what.to_string(),
        status: status.as_u16(),
        message,
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Service IDs and names are `[A-Za-z0-9_.-]`; anything else is escaped.
fn path_segment(s: &str) -> String {
    query_escape(s)
}

fn query_escape(s: &str) -> String {
    crate::url::encode_component(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_keeps_the_spec_bytes() {
        // As Docker 20.10 returns it (lab daemon, `docker service create --with-registry-auth`).
        let raw = r#"{"ID":"w8o7vp8aaulsmapq5wq2l6sih","Version":{"Index":11},"CreatedAt":"2026-11-21T23:45:31.362952159Z","UpdatedAt":"2026-11-21T23:45:31.362952159Z","Spec":{"Name":"web","Labels":{"ecr":"1"},"TaskTemplate":{"ContainerSpec":{"Image":"127.0.0.1:5055/app:1@sha256:677ee0f9f2d99b30135bde7ba595352da893448f9eea9db6aaec902b291c7b56","Args":["sleep","100000"],"Init":false,"DNSConfig":{},"Isolation":"default"},"Resources":{"Limits":{},"Reservations":{}},"Placement":{"Platforms":[{"Architecture":"amd64","OS":"linux"}]},"ForceUpdate":0,"Runtime":"container"},"Mode":{"Replicated":{"Replicas":1}},"EndpointSpec":{"Mode":"vip"}},"Endpoint":{"Spec":{}}}"#;
        let value: Box<RawValue> = serde_json::from_str(raw).unwrap();
        let s = Service::from_json(&value).unwrap();
        assert_eq!(s.id, "w8o7vp8aaulsmapq5wq2l6sih");
        assert_eq!(s.version, 11);
        assert_eq!(s.name(), "web");
        assert_eq!(s.update_state, None);
        assert_eq!(
            s.view.image(),
            Some("127.0.0.1:5055/app:1@sha256:677ee0f9f2d99b30135bde7ba595352da893448f9eea9db6aaec902b291c7b56")
        );
        assert_eq!(s.view.job_mode(), None);
        let start = raw.find(r#""Spec":"#).unwrap() + 7;
        let end = raw.find(r#","Endpoint""#).unwrap();
        assert_eq!(
            s.spec.get(),
            &raw[start..end],
            "the spec is kept byte for byte"
        );
    }

    #[test]
    fn job_modes_and_update_states() {
        let raw = r#"{"ID":"j","Version":{"Index":3},"Spec":{"Name":"once","TaskTemplate":{"ContainerSpec":{"Image":"a/b"}},"Mode":{"ReplicatedJob":{"MaxConcurrent":1,"TotalCompletions":1}}},"UpdateStatus":{"State":"paused","Message":"update paused due to failure"}}"#;
        let value: Box<RawValue> = serde_json::from_str(raw).unwrap();
        let s = Service::from_json(&value).unwrap();
        assert_eq!(s.view.job_mode(), Some("ReplicatedJob"));
        assert_eq!(s.update_state.as_deref(), Some("paused"));
    }

    #[test]
    fn registry_auth_is_base64url_json() {
        use base64::Engine;
        // A password whose base64 needs the URL-safe alphabet.
        let header = registry_auth_header("AWS", &Secret::new("a?>~b".repeat(5)), "1.dkr.ecr.x");
        let text = header.expose();
        assert!(!text.contains('+') && !text.contains('/'), "{text}");
        let json = base64::engine::general_purpose::URL_SAFE
            .decode(text)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["username"], "AWS");
        assert_eq!(v["password"], "a?>~b".repeat(5));
        assert_eq!(v["serveraddress"], "1.dkr.ecr.x");
    }

    #[test]
    fn events_are_parsed_line_by_line() {
        let line = br#"{"Type":"service","Action":"update","Actor":{"ID":"w8o7","Attributes":{"name":"web"}},"scope":"swarm","time":1795304842,"timeNano":1795304842621063856}"#;
        assert_eq!(
            parse_event(line),
            Some(ServiceEvent {
                action: "update".into(),
                service_id: "w8o7".into(),
                name: "web".into()
            })
        );
        assert_eq!(parse_event(b"\n"), None);
        assert_eq!(
            parse_event(br#"{"Type":"container","Action":"start","Actor":{"ID":"c"}}"#),
            None
        );
    }

    #[test]
    fn errors_say_what_they_are() {
        let e = api_error(
            "POST /services/x/update",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"message":"rpc error: code = Unknown desc = update out of sequence"}"#,
        );
        assert!(e.is_out_of_sequence());
        assert!(!e.is_connection());
        assert_eq!(
            query_escape(r#"{"a":["b"]}"#),
            "%7B%22a%22%3A%5B%22b%22%5D%7D"
        );
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        // Plain HTTP to dockerd's TLS port: Go's own answer, then what to do.
        let e = api_error(
            "GET /version",
            StatusCode::BAD_REQUEST,
            b"Client sent an HTTP request to an HTTPS server.\n",
        );
        assert_eq!(
            e.to_string(),
            "Docker API GET /version failed (400): Client sent an HTTP request to an HTTPS server. The daemon serves TLS on this port: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (or --tlsverify with --tlscacert, --tlscert and --tlskey)"
        );
    }
}
