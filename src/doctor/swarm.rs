//! The Swarm checks (`--swarm`): this node's role and the leader; the services
//! whose images are on ECR (or on a host the config file maps to it); whether a
//! refresher runs — the service `examples/swarm/stack.yml` deploys, found by its
//! command (`swarm refresh`) or its image (`…/ecr-auth`, whose default command
//! that is) — and what its `/healthz` says when its metrics address is reachable
//! from here; and the services a refresher leaves alone (update paused, job mode).
//!
//! Read-only GETs through the refresher's own Docker client, each bounded by the
//! doctor's timeout: a daemon that does not answer is a finding within seconds.
//! [`gather`] asks Docker; [`assess`] turns what it found into checks, a plain
//! function the unit tests drive with the daemon's own JSON.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::report::Check;
use crate::config::{Config, Resolved};
use crate::registry::Host;
use crate::env::Env;
use crate::swarm::docker::{Docker, DockerError, HostArgs, Role, Service, Target};
use crate::swarm::refresh::{plan, Leave, Plan, Selection};
use crate::tokens::TokenError;

/// What the daemon said.
pub(crate) struct Facts {
    pub endpoint: String,
    pub role: Role,
    /// The leader manager's hostname and address, when this node may list nodes.
    pub leader: Option<(String, String)>,
    pub services: Vec<Service>,
    pub refreshers: Vec<Refresher>,
}

/// A service that runs `ecr-auth swarm refresh`.
pub(crate) struct Refresher {
    pub name: String,
    /// Its `com.docker.stack.namespace`, when a stack deployed it.
    pub stack: Option<String>,
    pub running: usize,
    /// The newest task error, when none runs.
    pub last_error: Option<String>,
    /// `--metrics-addr` as given, and the `/healthz` answer if it was reachable.
    pub metrics: Option<String>,
    pub health: Health,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// No task runs, or no metrics address: not asked.
    NotAsked,
    Answered {
        url: String,
        status: u16,
        body: String,
    },
    Unreachable {
        url: String,
        why: String,
    },
}

/// The checks of `--swarm` for the daemon at `docker_host`.
///
/// The daemon is dialled as `swarm refresh` dials it: the docker CLI's TLS variables
/// (`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`) from `env`, and plain `tcp://` only to
/// this machine.
pub(crate) fn check(docker_host: &str, env: &Env, config: &Config, timeout: Duration) -> Vec<Check> {
    let target = match Target::resolve(&HostArgs::from(docker_host), env) {
        Ok(t) => t,
        Err(e) => return vec![unreachable(docker_host, &e)],
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "swarm",
                format!("cannot start the async runtime: {e}"),
                "check the process limits (ulimit -n, threads)",
            )]
        }
    };
    let facts = runtime.block_on(gather(&target, timeout));
    // A /healthz or Docker request abandoned at its deadline may still be open.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match facts {
        Ok(f) => assess(&f, config),
        Err(e) => vec![unreachable(docker_host, &e)],
    }
}

fn unreachable(docker_host: &str, e: &DockerError) -> Check {
    let fix = match e {
        DockerError::BadHost(_) => {
            "give --docker-host (or DOCKER_HOST) as unix:///var/run/docker.sock or tcp://HOST:PORT"
        }
        DockerError::Timeout { .. } => {
            "the daemon is stuck or the address black-holed: check dockerd (systemctl status docker) and --docker-host / DOCKER_HOST"
        }
        _ => "start dockerd, or point --docker-host / DOCKER_HOST at a manager's Docker socket",
    };
    Check::fail(
        "swarm",
        format!("cannot ask the Docker daemon ({docker_host}): {e}"),
        fix,
    )
}

/// One Docker request, given up after `timeout`.
async fn bounded<T>(
    docker: &Docker,
    what: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, DockerError>>,
) -> Result<T, DockerError> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(DockerError::Timeout {
            endpoint: docker.endpoint(),
            what: what.to_string(),
            secs: timeout.as_secs().max(1),
        })
    })
}

#[derive(Deserialize)]
struct NodeWire {
    #[serde(rename = "Description", default)]
    description: NodeDescription,
    #[serde(rename = "ManagerStatus", default)]
    manager: Option<ManagerWire>,
}

#[derive(Deserialize, Default)]
struct NodeDescription {
    #[serde(rename = "Hostname", default)]
    hostname: String,
}

#[derive(Deserialize)]
struct ManagerWire {
    #[serde(rename = "Leader", default)]
    leader: bool,
    #[serde(rename = "Addr", default)]
    addr: String,
}

#[derive(Deserialize)]
struct TaskWire {
    #[serde(rename = "DesiredState", default)]
    desired: String,
    #[serde(rename = "Status", default)]
    status: TaskStatus,
}

#[derive(Deserialize, Default)]
struct TaskStatus {
    #[serde(rename = "State", default)]
    state: String,
    #[serde(rename = "Err", default)]
    err: String,
    #[serde(rename = "Timestamp", default)]
    timestamp: String,
}

/// Asks the daemon: role, leader, services; the refreshers' tasks and `/healthz`.
pub(crate) async fn gather(target: &Target, timeout: Duration) -> Result<Facts, DockerError> {
    let docker = Docker::new(target, Arc::new(AtomicU64::new(0)));
    let role = bounded(&docker, "GET /info", timeout, docker.role()).await?;
    let mut facts = Facts {
        endpoint: docker.endpoint(),
        role,
        leader: None,
        services: Vec::new(),
        refreshers: Vec::new(),
    };
    if !matches!(facts.role, Role::Leader { .. } | Role::Manager { .. }) {
        return Ok(facts);
    }
    let nodes: Vec<NodeWire> =
        bounded(&docker, "GET /nodes", timeout, docker.get_json("/nodes")).await?;
    facts.leader = nodes.into_iter().find_map(|n| {
        let m = n.manager?;
        m.leader.then_some((n.description.hostname, m.addr))
    });
    facts.services = bounded(&docker, "GET /services", timeout, docker.services()).await?;
    for s in facts.services.iter().filter(|s| is_refresher(s)) {
        let filters = format!(r#"{{"service":["{}"]}}"#, s.id);
        let path = format!("/tasks?filters={}", crate::url::encode_component(&filters));
        let tasks: Vec<TaskWire> =
            bounded(&docker, "GET /tasks", timeout, docker.get_json(&path)).await?;
        let running = tasks
            .iter()
            .filter(|t| t.desired == "running" && t.status.state == "running")
            .count();
        let last_error = tasks
            .iter()
            .filter(|t| !t.status.err.is_empty())
            .max_by(|a, b| a.status.timestamp.cmp(&b.status.timestamp))
            .map(|t| t.status.err.clone());
        let metrics = metrics_addr(s);
        let health = match (&metrics, running) {
            (Some(addr), 1..) => healthz(&probe_addr(addr, s), timeout).await,
            _ => Health::NotAsked,
        };
        facts.refreshers.push(Refresher {
            name: s.name().to_string(),
            stack: s.view.labels.get("com.docker.stack.namespace").cloned(),
            running,
            last_error,
            metrics,
            health,
        });
    }
    Ok(facts)
}

/// `GET http://ADDR/healthz`, bounded.
async fn healthz(addr: &str, timeout: Duration) -> Health {
    use bytes::Bytes;
    use http_body_util::Full;
    let url = format!("http://{addr}/healthz");
    let client = match crate::http::Client::new(timeout) {
        Ok(c) => c,
        Err(e) => {
            return Health::Unreachable {
                url,
                why: e.to_string(),
            }
        }
    };
    let request = hyper::Request::get(&url)
        .header(
            "User-Agent",
            concat!("ecr-auth-doctor/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return Health::Unreachable {
                url,
                why: e.to_string(),
            }
        }
    };
    match client.send(request).await {
        Ok(r) => Health::Answered {
            url,
            status: r.status.as_u16(),
            body: String::from_utf8_lossy(&r.body)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect(),
        },
        Err(e) => Health::Unreachable {
            url,
            why: e.to_string(),
        },
    }
}

/// The container's command line: `Command` then `Args`, and its environment.
fn container(s: &Service) -> (Vec<String>, Vec<String>) {
    let spec: serde_json::Value = serde_json::from_str(s.spec.get()).unwrap_or_default();
    let c = &spec["TaskTemplate"]["ContainerSpec"];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut argv = strings(&c["Command"]);
    argv.extend(strings(&c["Args"]));
    (argv, strings(&c["Env"]))
}

/// A refresher: its command says `swarm refresh`, or it runs an `ecr-auth`
/// image with that image's default command (which is `swarm refresh`).
pub(crate) fn is_refresher(s: &Service) -> bool {
    let (argv, _) = container(s);
    if argv
        .windows(2)
        .any(|w| w[0] == "swarm" && w[1] == "refresh")
    {
        return true;
    }
    let Some(image) = s.view.image() else {
        return false;
    };
    let name = image.split('@').next().unwrap_or(image);
    let repo = name.rsplit('/').next().unwrap_or(name);
    let repo = repo.split(':').next().unwrap_or(repo);
    argv.is_empty() && repo == "ecr-auth"
}

/// `--metrics-addr` (either form) or `ECR_AUTH_SWARM_METRICS_ADDR`.
fn metrics_addr(s: &Service) -> Option<String> {
    let (argv, env) = container(s);
    let mut args = argv.iter();
    while let Some(a) = args.next() {
        if let Some(v) = a.strip_prefix("--metrics-addr=") {
            return Some(v.to_string());
        }
        if a == "--metrics-addr" {
            return args.next().cloned();
        }
    }
    env.iter()
        .find_map(|e| e.strip_prefix("ECR_AUTH_SWARM_METRICS_ADDR="))
        .map(str::to_string)
}

/// Where this machine can reach `addr` of a task: an unspecified host is this
/// machine's loopback (host networking, or a port the service publishes).
fn probe_addr(addr: &str, s: &Service) -> String {
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']), p),
        None => ("", addr),
    };
    let spec: serde_json::Value = serde_json::from_str(s.spec.get()).unwrap_or_default();
    let published = spec["EndpointSpec"]["Ports"].as_array().and_then(|ports| {
        ports.iter().find_map(|p| {
            (p["TargetPort"].as_u64()?.to_string() == port)
                .then(|| p["PublishedPort"].as_u64())
                .flatten()
        })
    });
    let host = if host.is_empty() || host == "0.0.0.0" || host == "::" {
        "127.0.0.1"
    } else {
        host
    };
    match published {
        Some(p) => format!("127.0.0.1:{p}"),
        None => format!("{host}:{port}"),
    }
}

/// The checks, from what the daemon said; `config` maps hosts to ECR as the
/// refresher's would.
pub(crate) fn assess(f: &Facts, config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let place = |role: &str| match &f.leader {
        Some((name, addr)) => format!("{role}; the leader is {name} ({addr})"),
        None => role.to_string(),
    };
    match &f.role {
        Role::NotInSwarm { state } => {
            let fix = match state.as_str() {
                "locked" => "unlock it: docker swarm unlock".to_string(),
                "pending" | "error" => {
                    "docker info shows why the join is stuck; docker swarm leave, then join again".into()
                }
                _ => "run ecr-auth doctor --swarm on a manager of the Swarm, or point --docker-host (DOCKER_HOST) at one".into(),
            };
            out.push(Check::fail(
                "swarm",
                format!(
                    "the Docker daemon at {} is not in a Swarm (its state: {})",
                    f.endpoint,
                    if state.is_empty() { "none" } else { state }
                ),
                fix,
            ));
            return out;
        }
        Role::Worker => {
            out.push(Check::warn(
                "swarm",
                format!(
                    "the Docker daemon at {} is a Swarm worker: services and the refresher are seen only from a manager",
                    f.endpoint
                ),
                "run ecr-auth doctor --swarm on a manager (docker node ls lists them), or point --docker-host at one",
            ));
            return out;
        }
        Role::Leader { .. } => out.push(Check::ok(
            "swarm",
            match &f.leader {
                Some((name, addr)) => format!(
                    "{} is the Swarm's leader manager (this node, {name}, {addr})",
                    f.endpoint
                ),
                None => format!("{} is the Swarm's leader manager", f.endpoint),
            },
        )),
        Role::Manager { .. } if f.leader.is_none() => out.push(Check::fail(
            "swarm",
            format!(
                "{} is a Swarm manager, and no manager is leader: the Swarm has lost its quorum",
                f.endpoint
            ),
            "docker node ls on a manager; bring back a majority of managers (or docker swarm init --force-new-cluster on one)",
        )),
        Role::Manager { .. } => out.push(Check::ok(
            "swarm",
            place(&format!("{} is a Swarm manager", f.endpoint)),
        )),
    }

    let resolve = |h: &str| -> Result<Resolved, TokenError> {
        Host::parse(h)
            .ok()
            .and_then(|host| config.resolve(&host))
            .ok_or(TokenError::NotEcr {
                host: h.to_string(),
            })
    };
    let mut on_ecr = Vec::new();
    let mut left = Vec::new();
    for s in f.services.iter().filter(|s| !is_refresher(s)) {
        match plan(s, &Selection::default(), resolve) {
            Plan::Refresh { image_host, .. } => on_ecr.push(format!("{} ({image_host})", s.name())),
            Plan::Leave(why @ (Leave::Paused { .. } | Leave::Job { .. })) => {
                let host = crate::swarm::image::registry_host(s.view.image().unwrap_or(""));
                on_ecr.push(format!("{} ({host})", s.name()));
                left.push((s, host.to_string(), why));
            }
            Plan::Leave(_) => {}
        }
    }
    out.push(Check::ok(
        "swarm",
        if on_ecr.is_empty() {
            format!(
                "no service pulls from ECR or a host the config file maps to it ({} service(s) in all)",
                f.services.len()
            )
        } else {
            format!(
                "{} service(s) pull from ECR: {}",
                on_ecr.len(),
                on_ecr.join(", ")
            )
        },
    ));

    out.push(refresher_check(f, on_ecr.len()));

    for (s, host, why) in left {
        let fix = match why {
            Leave::Paused { .. } => format!(
                "finish or roll back its update (docker service update --rollback {0}, or fix it and docker service update {0}); the next pass refreshes it",
                s.name()
            ),
            _ => format!(
                "redeploy {0} with --with-registry-auth before each run, or run the refresher with --include-jobs (then each refresh runs {0} again)",
                s.name()
            ),
        };
        out.push(Check::warn(
            "swarm",
            format!(
                "service {} pulls from {host}, but a refresher leaves it alone: {why}",
                s.name()
            ),
            fix,
        ));
    }
    out
}

const DEPLOY: &str = "deploy the refresher: docker stack deploy -c examples/swarm/stack.yml ecr-auth (see the README's Swarm section)";

fn refresher_check(f: &Facts, on_ecr: usize) -> Check {
    if f.refreshers.is_empty() {
        return if on_ecr == 0 {
            Check::ok(
                "swarm",
                "no refresher service, and none is needed yet: no service pulls from ECR",
            )
        } else {
            Check::fail(
                "swarm",
                format!(
                    "no refresher: no service runs ecr-auth swarm refresh, so the registry auth stored with the {on_ecr} ECR service(s) expires 12 h after each deploy and new tasks cannot pull"
                ),
                DEPLOY,
            )
        };
    }
    let r = f
        .refreshers
        .iter()
        .max_by_key(|r| r.running)
        .expect("not empty");
    let what = match &r.stack {
        Some(stack) => format!("the refresher {} (stack {stack})", r.name),
        None => format!("the refresher {}", r.name),
    };
    if r.running == 0 {
        return Check::fail(
            "swarm",
            format!(
                "{what} has no running task{}",
                r.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            format!(
                "docker service ps --no-trunc {} shows why; then docker service logs {}",
                r.name, r.name
            ),
        );
    }
    let tasks = format!("{what} runs ({} task(s))", r.running);
    match (&r.metrics, &r.health) {
        (None, _) => Check::ok(
            "swarm",
            format!("{tasks}; it serves no /healthz (no --metrics-addr)"),
        ),
        (Some(_), Health::Answered { url, status: 200, body }) => {
            Check::ok("swarm", format!("{tasks}; {url} answers {body:?}"))
        }
        (Some(_), Health::Answered { url, status, body }) => Check::fail(
            "swarm",
            format!("{tasks}, but {url} answers {status}: {body:?}"),
            format!("docker service logs {} says what fails", r.name),
        ),
        (Some(addr), Health::Unreachable { url, why }) => Check::ok(
            "swarm",
            format!(
                "{tasks}; its /healthz (--metrics-addr {addr}) is not reachable from here ({url}: {why}), so it was not asked"
            ),
        ),
        (Some(_), Health::NotAsked) => Check::ok("swarm", tasks),
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::Status;
    use super::*;
    use serde_json::value::RawValue;

    const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    fn service(name: &str, spec: serde_json::Value, update: Option<&str>) -> Service {
        let mut v = serde_json::json!({
            "ID": format!("id-{name}"),
            "Version": {"Index": 1},
            "Spec": spec,
        });
        if let Some(state) = update {
            v["UpdateStatus"] = serde_json::json!({"State": state});
        }
        let raw: Box<RawValue> = serde_json::from_str(&v.to_string()).unwrap();
        Service::from_json(&raw).unwrap()
    }

    fn app(name: &str, image: &str) -> Service {
        service(
            name,
            serde_json::json!({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": image}},
                "Mode": {"Replicated": {"Replicas": 1}}}),
            None,
        )
    }

    /// As `docker stack deploy -c examples/swarm/stack.yml ecr` creates it.
    fn stack_refresher() -> Service {
        service(
            "ecr_ecr-auth",
            serde_json::json!({"Name": "ecr_ecr-auth",
                "Labels": {"com.docker.stack.namespace": "ecr", "com.docker.stack.image": "ecr-auth:latest"},
                "TaskTemplate": {"ContainerSpec": {"Image": "ecr-auth:latest",
                    "Args": ["swarm", "refresh", "--env-file=/run/secrets/ecr_auth_creds", "--watch-events",
                             "--metrics-addr=0.0.0.0:9464", "--log-format=json"]}},
                "Mode": {"Global": {}}}),
            None,
        )
    }

    fn facts(role: Role, services: Vec<Service>, refreshers: Vec<Refresher>) -> Facts {
        Facts {
            endpoint: "unix:///var/run/docker.sock".into(),
            role,
            leader: Some(("m1".into(), "127.0.0.1:2377".into())),
            services,
            refreshers,
        }
    }

    fn running(health: Health) -> Refresher {
        Refresher {
            name: "ecr_ecr-auth".into(),
            stack: Some("ecr".into()),
            running: 1,
            last_error: None,
            metrics: Some("0.0.0.0:9464".into()),
            health,
        }
    }

    fn leader() -> Role {
        Role::Leader {
            node_id: "n1".into(),
        }
    }

    #[test]
    fn the_stack_service_is_the_refresher_and_its_metrics_address_is_read() {
        let r = stack_refresher();
        assert!(is_refresher(&r));
        assert_eq!(metrics_addr(&r).as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(probe_addr("0.0.0.0:9464", &r), "127.0.0.1:9464");
        // Published: the port this machine sees.
        let published = service(
            "r",
            serde_json::json!({"Name": "r", "TaskTemplate": {"ContainerSpec": {"Image": "registry.example/ops/ecr-auth:0.2@sha256:00",
                "Env": ["ECR_AUTH_SWARM_METRICS_ADDR=0.0.0.0:9464"]}},
                "EndpointSpec": {"Ports": [{"TargetPort": 9464, "PublishedPort": 30001}]}}),
            None,
        );
        assert!(is_refresher(&published), "the image's default command");
        assert_eq!(metrics_addr(&published).as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(probe_addr("0.0.0.0:9464", &published), "127.0.0.1:30001");
        // The same image running the broker is not a refresher.
        let broker = service(
            "b",
            serde_json::json!({"Name": "b", "TaskTemplate": {"ContainerSpec": {"Image": "ecr-auth:latest", "Args": ["serve"]}}}),
            None,
        );
        assert!(!is_refresher(&broker));
        assert!(!is_refresher(&app("web", &format!("{ECR}/web:1"))));
    }

    #[test]
    fn a_healthy_swarm() {
        let f = facts(
            leader(),
            vec![
                app("web", &format!("{ECR}/web:1")),
                app("hub", "nginx:1"),
                stack_refresher(),
            ],
            vec![running(Health::Answered {
                url: "http://127.0.0.1:9464/healthz".into(),
                status: 200,
                body: "ok: last pass at 2030-01-01T00:00:00Z".into(),
            })],
        );
        let checks = assess(&f, &Config::default());
        let statuses: Vec<Status> = checks.iter().map(|c| c.status).collect();
        assert_eq!(
            statuses,
            [Status::Ok, Status::Ok, Status::Ok],
            "{checks:#?}"
        );
        assert_eq!(
            checks[0].evidence,
            "unix:///var/run/docker.sock is the Swarm's leader manager (this node, m1, 127.0.0.1:2377)"
        );
        assert_eq!(
            checks[1].evidence,
            format!("1 service(s) pull from ECR: web ({ECR})")
        );
        assert!(
            checks[2]
                .evidence
                .starts_with("the refresher ecr_ecr-auth (stack ecr) runs (1 task(s)); http://127.0.0.1:9464/healthz answers \"ok: last pass"),
            "{}",
            checks[2].evidence
        );
    }

    #[test]
    fn what_goes_wrong_is_named() {
        let web = || app("web", &format!("{ECR}/web:1"));
        // No refresher while a service pulls from ECR.
        let checks = assess(&facts(leader(), vec![web()], vec![]), &Config::default());
        assert_eq!(checks[2].status, Status::Fail);
        assert!(checks[2].evidence.starts_with("no refresher"));
        assert_eq!(checks[2].fix.as_deref(), Some(DEPLOY));
        // ... and none needed without ECR services.
        let checks = assess(
            &facts(leader(), vec![app("hub", "nginx")], vec![]),
            &Config::default(),
        );
        assert_eq!(checks[2].status, Status::Ok);

        // A refresher that reports a problem, or has no task.
        let unhealthy = running(Health::Answered {
            url: "http://127.0.0.1:9464/healthz".into(),
            status: 503,
            body: "unhealthy: cannot reach Docker".into(),
        });
        let checks = assess(
            &facts(leader(), vec![web()], vec![unhealthy]),
            &Config::default(),
        );
        assert_eq!(checks[2].status, Status::Fail);
        assert!(
            checks[2].evidence.contains("answers 503"),
            "{}",
            checks[2].evidence
        );
        let mut dead = running(Health::NotAsked);
        dead.running = 0;
        dead.last_error = Some("No such image: ecr-auth:latest".into());
        let checks = assess(
            &facts(leader(), vec![web()], vec![dead]),
            &Config::default(),
        );
        assert_eq!(checks[2].status, Status::Fail);
        assert!(checks[2]
            .evidence
            .ends_with("has no running task: No such image: ecr-auth:latest"));

        // Unreachable metrics: reported, not held against it.
        let far = running(Health::Unreachable {
            url: "http://127.0.0.1:9464/healthz".into(),
            why: "connection refused".into(),
        });
        let checks = assess(&facts(leader(), vec![web()], vec![far]), &Config::default());
        assert_eq!(checks[2].status, Status::Ok);
        assert!(checks[2].evidence.contains("is not reachable from here"));

        // Paused and job-mode services on ECR: one warning each.
        let paused = service(
            "paused",
            serde_json::json!({"Name": "paused", "TaskTemplate": {"ContainerSpec": {"Image": format!("{ECR}/a:1")}}}),
            Some("paused"),
        );
        let job = service(
            "once",
            serde_json::json!({"Name": "once", "TaskTemplate": {"ContainerSpec": {"Image": format!("{ECR}/a:1")}},
                "Mode": {"ReplicatedJob": {"MaxConcurrent": 1}}}),
            None,
        );
        let checks = assess(
            &facts(
                leader(),
                vec![web(), paused, job],
                vec![running(Health::NotAsked)],
            ),
            &Config::default(),
        );
        let warns: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Warn).collect();
        assert_eq!(warns.len(), 2, "{checks:#?}");
        assert!(
            warns[0].evidence.starts_with("service paused pulls from"),
            "{}",
            warns[0].evidence
        );
        assert!(warns[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("docker service update --rollback paused"));
        assert!(
            warns[1].evidence.contains("ReplicatedJob"),
            "{}",
            warns[1].evidence
        );
        assert!(checks[1].evidence.starts_with("3 service(s) pull from ECR"));
    }

    #[test]
    fn roles_outside_the_managers() {
        let checks = assess(
            &facts(
                Role::NotInSwarm {
                    state: "inactive".into(),
                },
                vec![],
                vec![],
            ),
            &Config::default(),
        );
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Fail);
        assert!(checks[0]
            .evidence
            .ends_with("is not in a Swarm (its state: inactive)"));
        let checks = assess(
            &facts(
                Role::NotInSwarm {
                    state: "locked".into(),
                },
                vec![],
                vec![],
            ),
            &Config::default(),
        );
        assert_eq!(
            checks[0].fix.as_deref(),
            Some("unlock it: docker swarm unlock")
        );
        let checks = assess(&facts(Role::Worker, vec![], vec![]), &Config::default());
        assert_eq!(checks[0].status, Status::Warn);
        let follower = facts(
            Role::Manager {
                node_id: "n2".into(),
            },
            vec![],
            vec![],
        );
        let checks = assess(&follower, &Config::default());
        assert_eq!(checks[0].status, Status::Ok);
        assert!(
            checks[0]
                .evidence
                .ends_with("is a Swarm manager; the leader is m1 (127.0.0.1:2377)"),
            "{}",
            checks[0].evidence
        );
        let mut lost = facts(
            Role::Manager {
                node_id: "n2".into(),
            },
            vec![],
            vec![],
        );
        lost.leader = None;
        assert_eq!(assess(&lost, &Config::default())[0].status, Status::Fail);
    }
}
