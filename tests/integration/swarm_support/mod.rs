//! The Swarm lab shared by `tests/swarm_*.rs`: a token endpoint whose password rotates,
//! a registry that accepts only the current password, a one-node Swarm, and the
//! ecr-auth config file that maps the registry (`127.0.0.1:PORT`) to ECR account
//! 123456789012 in eu-west-1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::value::RawValue;
use serde_json::Value;

use crate::common::{self, Dockerd, Registry, Tcp, TempDir, TokenServer};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

/// How long Swarm may take to converge (a task started, an update applied).
pub const CONVERGE: Duration = Duration::from_secs(120);

/// Fields drop in declaration order: users of the token server's htpasswd first.
pub struct Lab {
    pub docker: Dockerd,
    pub registry: Registry,
    pub tokens: TokenServer,
    pub config: PathBuf,
    pub tmp: TempDir,
}

impl Lab {
    /// Token server, registry on its htpasswd, dockerd as a one-node Swarm.
    pub fn start() -> Lab {
        Lab::start_with(Tcp::None)
    }

    /// The same, with the daemon's API also on TCP (plain or TLS).
    pub fn start_with(tcp: Tcp) -> Lab {
        let tokens = TokenServer::start();
        let registry = Registry::start(&tokens.htpasswd);
        let docker = Dockerd::start_with(tcp);
        docker.swarm_init();
        let tmp = TempDir::new("swarm");
        let config = write_lab_config(&tmp, &registry);
        Lab {
            docker,
            registry,
            tokens,
            config,
            tmp,
        }
    }

    /// The ecr-auth binary for this lab: AWS pointed at the token server, the config
    /// file, a private HOME and token cache, DOCKER_HOST, info logs.
    pub fn ecr_auth(&self) -> Command {
        let mut cmd = Command::new(common::bin());
        common::apply_aws_env(&mut cmd, &self.tokens.endpoint);
        cmd.env("ECR_AUTH_CONFIG", &self.config)
            .env("ECR_AUTH_CACHE_DIR", self.tmp.join("cache"))
            .env("HOME", self.tmp.join("home"))
            .env("DOCKER_HOST", &self.docker.host)
            .env("ECR_AUTH_LOG", "info")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("ECR_AUTH_LOG_FILE")
            .env_remove("AWS_ECR_DISABLE_CACHE");
        cmd
    }

    /// `ecr-auth swarm refresh ARGS`, run to the end; (exit ok, stdout, stderr).
    pub fn refresh(&self, args: &[&str]) -> (bool, String, String) {
        let out = common::run(self.ecr_auth().args(["swarm", "refresh"]).args(args));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Pushes a test image with the current password; returns `HOST/repo:tag`.
    pub fn push(&self, repo: &str, tag: &str) -> String {
        self.registry
            .push_test_image(repo, tag, "AWS", &self.tokens.password());
        self.registry.image(repo, tag)
    }

    /// The token service in this process, for tests that run `swarm::step` with their
    /// own Swarm API. The token cache is warmed with the real binary first, so it finds
    /// the token there (the SDK reads the process environment, which a test must not
    /// change).
    /// A current-thread runtime and a client of this lab's daemon, for tests that run the
    /// refresher's `step` in-process over a wrapper of the real Docker API.
    pub fn docker_client(&self) -> (tokio::runtime::Runtime, ecr_auth::swarm::docker::Docker) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let docker = rt
            .block_on(ecr_auth::swarm::docker::Docker::connect(
                &self.docker.host,
                Arc::new(std::sync::atomic::AtomicU64::new(0)),
            ))
            .unwrap();
        (rt, docker)
    }

    pub fn in_process_tokens(&self) -> std::sync::Arc<ecr_auth::tokens::Tokens> {
        let out = common::run(
            self.ecr_auth()
                .args(["get-login-password", &self.registry.addr]),
        );
        assert!(out.status.success(), "{}", common::output_text(&out));
        let env = ecr_auth::env::Env::from_pairs(
            self.ecr_auth()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
                .collect::<Vec<_>>(),
        );
        let config = ecr_auth::config::Config::read(&self.config).unwrap();
        std::sync::Arc::new(ecr_auth::tokens::Tokens::new(env, config))
    }

    /// `docker login` to the lab registry with the current password (the docker CLI's
    /// own config dir of this daemon).
    pub fn login(&self) {
        let mut child = self
            .docker
            .docker()
            .args([
                "login",
                "-u",
                "AWS",
                "--password-stdin",
                &self.registry.addr,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker login");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.tokens.password().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker login failed: {}",
            common::output_text(&out)
        );
    }

    /// `docker ARGS` against the lab daemon; panics unless it succeeds.
    pub fn docker(&self, args: &[&str]) -> String {
        common::run_ok(self.docker.docker().args(args))
    }

    /// Someone else's change to service `name` (a label): its version moves on.
    pub fn their_update(&self, name: &str) {
        self.docker(&[
            "service",
            "update",
            "-d",
            "--label-add",
            "changed=meanwhile",
            name,
        ]);
    }

    /// `docker service create -d --name NAME ARGS`; returns the service ID.
    pub fn create_service(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec![
            "service",
            "create",
            "-d",
            "--quiet",
            "--name",
            name,
            "--stop-grace-period",
            "1s",
        ];
        all.extend_from_slice(args);
        self.docker(&all).trim().to_string()
    }

    /// `GET /services/NAME` as JSON.
    pub fn service(&self, name: &str) -> Value {
        let r = self
            .docker
            .api("GET", &format!("/v1.41/services/{name}"), None);
        assert_eq!(r.status, 200, "GET /services/{name}: {}", r.text());
        r.json()
    }

    /// The raw bytes of the service's `.Spec`, exactly as the daemon sends them.
    pub fn raw_spec(&self, name: &str) -> String {
        #[derive(serde::Deserialize)]
        struct S {
            #[serde(rename = "Spec")]
            spec: Box<RawValue>,
        }
        let r = self
            .docker
            .api("GET", &format!("/v1.41/services/{name}"), None);
        let s: S = serde_json::from_slice(&r.body).expect("service JSON");
        s.spec.get().to_string()
    }

    pub fn version(&self, name: &str) -> u64 {
        self.service(name)["Version"]["Index"]
            .as_u64()
            .expect("Version.Index")
    }

    /// Every task of the service (any state).
    pub fn tasks(&self, name: &str) -> Vec<Value> {
        tasks_on(&self.docker, name)
    }

    /// IDs of the service's running tasks, sorted.
    pub fn running_tasks(&self, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tasks(name)
            .iter()
            .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
            .map(|t| t["ID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Waits until the service has exactly `n` running tasks.
    pub fn wait_running(&self, name: &str, n: usize) -> Vec<String> {
        let mut last = Vec::new();
        let ok = wait_until(CONVERGE, || {
            last = self.running_tasks(name);
            last.len() == n
        });
        if !ok {
            panic!(
                "service {name}: wanted {n} running task(s), have {}; tasks: {}",
                last.len(),
                task_summary(&self.tasks(name))
            );
        }
        last
    }

    /// The service's tasks as "state: error" lines, for messages.
    pub fn task_errors(&self, name: &str) -> String {
        task_summary(&self.tasks(name))
    }

    /// Runs `ecr-auth swarm refresh ARGS` in the background, logs to a file.
    pub fn spawn_refresh(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.ecr_auth();
        cmd.args(["swarm", "refresh"])
            .args(args)
            .envs(extra_env.iter().copied());
        Daemon::spawn(cmd, self.tmp.join(format!("refresh-{}.log", unique())))
    }
}

impl Lab {
    /// Deploys `examples/swarm` as stack `stack`: the FROM-scratch image of the static
    /// binary (`build-image`), its AWS credentials in the Swarm secret `ecr_auth_creds`
    /// in seed 004's `export NAME=value` format, `stack.yml` as is. Lab-only differences
    /// come from a second compose file: host networking (the token endpoint is on
    /// 127.0.0.1), the lab socket, a config file mapping the lab registry to ECR, and
    /// metrics on 127.0.0.1. Returns the metrics port. The static binary comes from
    /// `scripts/build-static` (`ECR_AUTH_STATIC_BIN` overrides its path).
    pub fn deploy_example_stack(&self, stack: &str) -> u16 {
        let examples = common::repo_root().join("examples/swarm");
        let out = common::run(
            std::process::Command::new(examples.join("build-image"))
                .arg("lab/ecr-auth:example")
                .env("ECR_AUTH_STATIC_BIN", common::static_bin())
                .env("DOCKER_HOST", &self.docker.host)
                .env("DOCKER_CONFIG", self.docker.config_dir())
                .env_remove("DOCKER_CONTEXT"),
        );
        assert!(
            out.status.success(),
            "build-image failed: {}",
            common::output_text(&out)
        );

        // The credentials secret, as ecr-authenticator users write it.
        let creds = self.tmp.join("ecr_auth_creds");
        let mut text = format!(
            "export AWS_ECR_REPO={}\nexport AWS_DEFAULT_REGION={REGION}\n",
            self.registry.addr
        );
        for (k, v) in common::aws_env(&self.tokens.endpoint) {
            if matches!(
                k.as_str(),
                "AWS_ACCESS_KEY_ID"
                    | "AWS_SECRET_ACCESS_KEY"
                    | "AWS_ENDPOINT_URL"
                    | "AWS_EC2_METADATA_DISABLED"
            ) {
                text.push_str(&format!("export {k}={v}\n"));
            }
        }
        std::fs::write(&creds, text).unwrap();
        self.docker(&[
            "secret",
            "create",
            "ecr_auth_creds",
            creds.to_str().unwrap(),
        ]);
        let config = self.tmp.join("ecr-auth.toml");
        std::fs::write(
            &config,
            format!(
                "[[registry]]\nhost = \"{}\"\naccount = \"{ACCOUNT}\"\nregion = \"{REGION}\"\n",
                self.registry.addr
            ),
        )
        .unwrap();
        let lab_override = self.tmp.join("lab.yml");
        std::fs::write(
            &lab_override,
            format!(
                "version: \"3.8\"\nservices:\n  ecr-auth:\n    networks: [hostnet]\n    configs:\n      - source: ecr_auth_config\n        target: /etc/ecr-auth/config.toml\n\
                 networks:\n  hostnet:\n    external: true\n    name: host\n\
                 configs:\n  ecr_auth_config:\n    file: {}\n",
                config.display()
            ),
        )
        .unwrap();

        let port = common::free_port();
        let out = common::run(
            self.docker
                .docker()
                .args(["stack", "deploy", "--resolve-image", "never", "-c"])
                .arg(examples.join("stack.yml"))
                .arg("-c")
                .arg(&lab_override)
                .arg(stack)
                .env("ECR_AUTH_IMAGE", "lab/ecr-auth:example")
                .env("DOCKER_SOCKET", &self.docker.socket)
                .env("ECR_AUTH_METRICS_ADDR", format!("127.0.0.1:{port}")),
        );
        assert!(
            out.status.success(),
            "stack deploy failed: {}",
            common::output_text(&out)
        );
        port
    }
}

impl Lab {
    /// Stops the lab dockerd and waits until it is gone; the Swarm stays.
    pub fn stop_dockerd(&mut self) {
        self.docker.stop();
    }

    /// Starts dockerd again on the same dirs and socket and waits until the
    /// Swarm answers.
    pub fn start_dockerd_again(&mut self) {
        self.docker.start_again();
    }
}

/// A background `ecr-auth swarm refresh`; SIGKILLed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` (an `ecr-auth swarm refresh ...`) with stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd.spawn().expect("start ecr-auth swarm refresh");
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the log has a line containing `needle` `n` times.
    pub fn wait_log(&mut self, needle: &str, n: usize) {
        let ok = wait_until(CONVERGE, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "ecr-auth exited ({status}) while waiting for {needle:?}:\n{}",
                    self.log()
                );
            }
            self.log().matches(needle).count() >= n
        });
        assert!(
            ok,
            "no {n}x {needle:?} in the ecr-auth log:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ecr-auth ignored SIGTERM for 60 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("ecr-auth log:\n{}", self.log());
            }
        }
    }
}

/// Polls `f` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One sample of a Prometheus text page: the value of the first line starting with
/// `series`: a name, or a name and the first labels (`x_total{a="b"`, `x{a="b"}`).
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| series.contains('{') || rest.starts_with([' ', '{']))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET url` on a lab server; (status, body).
pub fn get(url: &str) -> (u16, String) {
    match common::http("GET", url, &[], b"") {
        Ok(r) => (r.status, r.text()),
        Err(e) => (0, e.to_string()),
    }
}

/// Service events as one daemon reports them (`docker events`, live: not limited
/// to the few hundred past events a daemon keeps).
pub struct Events {
    child: Child,
    seen: Arc<Mutex<Vec<(String, String, SystemTime)>>>,
}

impl Events {
    /// Every service event from now on: `--since` now, so that events between this
    /// call and the CLI's subscription are not lost (the daemon replays them).
    pub fn watch(node: &Dockerd) -> Events {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970");
        let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let mut child = node
            .docker()
            .args([
                "events",
                "--since",
                &since,
                "--filter",
                "type=service",
                "--format",
                "{{json .}}",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let (Some(action), Some(name), Some(nanos)) = (
                    v["Action"].as_str(),
                    v["Actor"]["Attributes"]["name"].as_str(),
                    v["timeNano"].as_u64(),
                ) else {
                    continue;
                };
                let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
                sink.lock()
                    .unwrap()
                    .push((action.to_string(), name.to_string(), at));
            }
        });
        Events { child, seen }
    }

    pub fn wait_for(&self, action: &str, name: &str) {
        let ok = wait_until(CONVERGE, || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .any(|(a, n, _)| a == action && n == name)
        });
        assert!(ok, "no {action} event for {name}");
    }

    /// How many `update` events each service had, by name.
    pub fn updates_by_service(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (action, name, _) in self.seen.lock().unwrap().iter() {
            if action == "update" {
                *out.entry(name.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Times of the `update` events of `name` after `t`.
    pub fn of_after(&self, name: &str, t: SystemTime) -> Vec<SystemTime> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, n, at)| a == "update" && n == name && *at > t)
            .map(|e| e.2)
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn task_summary(tasks: &[Value]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} {}/{}: {}",
                t["ID"].as_str().unwrap_or("?"),
                t["Status"]["State"].as_str().unwrap_or("?"),
                t["DesiredState"].as_str().unwrap_or("?"),
                t["Status"]["Err"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every task of the service (any state), as `docker`'s daemon knows them.
pub fn tasks_on(docker: &Dockerd, name: &str) -> Vec<Value> {
    let filters = format!(r#"{{"service":["{name}"]}}"#);
    let r = docker.api(
        "GET",
        &format!("/v1.41/tasks?filters={}", escape(&filters)),
        None,
    );
    assert_eq!(r.status, 200, "GET /tasks: {}", r.text());
    r.json().as_array().cloned().unwrap_or_default()
}

/// The ecr-auth config of a Swarm lab (`tmp`/config.toml: the lab registry as ECR
/// account [`ACCOUNT`] in [`REGION`]) and a home directory beside it.
pub fn write_lab_config(tmp: &TempDir, registry: &Registry) -> PathBuf {
    let config = tmp.join("config.toml");
    std::fs::write(&config, registry.ecr_mapping(ACCOUNT, REGION))
        .expect("write the ecr-auth config");
    std::fs::create_dir_all(tmp.join("home")).expect("home dir");
    config
}

/// A query-string value, percent-encoded.
pub fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A loopback TCP proxy in front of a dockerd's unix socket, to play a misbehaving
/// daemon: every request can be held back ([`Self::set_delay`]), the connections open
/// now cut ([`Self::cut`]), new ones refused ([`Self::set_refusing`]). Clients use
/// [`Self::host`] as DOCKER_HOST. Listens on 127.0.0.1 only; stops on drop.
pub struct DockerProxy {
    /// `tcp://127.0.0.1:PORT`
    pub host: String,
    addr: std::net::SocketAddr,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    delay_ms: std::sync::atomic::AtomicU64,
    /// Delay only requests whose first line contains this.
    delay_only: Mutex<Option<String>>,
    refusing: std::sync::atomic::AtomicBool,
    stopped: std::sync::atomic::AtomicBool,
    /// Both ends of every open connection, to cut them.
    open: Mutex<
        std::collections::HashMap<u64, (std::net::TcpStream, std::os::unix::net::UnixStream)>,
    >,
}

impl DockerProxy {
    pub fn start(socket: &std::path::Path) -> DockerProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let shared = state.clone();
        let socket = socket.to_path_buf();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let n = n as u64;
                if shared.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if shared.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(daemon) = std::os::unix::net::UnixStream::connect(&socket) else {
                    continue;
                };
                if let (Ok(c), Ok(d)) = (client.try_clone(), daemon.try_clone()) {
                    shared.open.lock().unwrap().insert(n, (c, d));
                }
                let (mut client_r, mut daemon_w) =
                    (client.try_clone().unwrap(), daemon.try_clone().unwrap());
                let delays = shared.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 16384];
                    let mut delayed = None;
                    loop {
                        let n = match client_r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Decided on the request line: one request per connection.
                        let delayed = *delayed.get_or_insert_with(|| {
                            let head = String::from_utf8_lossy(&buf[..n]);
                            let line = head.lines().next().unwrap_or("");
                            match &*delays.delay_only.lock().unwrap() {
                                Some(part) => line.contains(part.as_str()),
                                None => true,
                            }
                        });
                        if delayed {
                            let delay = delays.delay_ms.load(Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(delay));
                        }
                        if daemon_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = daemon_w.shutdown(std::net::Shutdown::Write);
                });
                let (mut daemon_r, mut client_w) = (daemon, client);
                let open = shared.clone();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut daemon_r, &mut client_w);
                    let _ = client_w.shutdown(std::net::Shutdown::Both);
                    open.open.lock().unwrap().remove(&n);
                });
            }
        });
        DockerProxy {
            host: format!("tcp://{addr}"),
            addr,
            state,
        }
    }

    /// Holds requests (each chunk the client sends) back this long: every request, or
    /// with `only` those whose request line contains it.
    pub fn set_delay_for(&self, delay: Duration, only: Option<&str>) {
        *self.state.delay_only.lock().unwrap() = only.map(str::to_string);
        self.set_delay(delay);
    }

    /// Holds every request (each chunk the client sends) back this long.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// New connections are accepted and closed at once.
    pub fn set_refusing(&self, on: bool) {
        self.state
            .refusing
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts every open connection (both ends), as a daemon or a network that goes away.
    pub fn cut(&self) -> usize {
        let open: Vec<_> = self.state.open.lock().unwrap().drain().collect();
        for (_, (c, d)) in &open {
            let _ = c.shutdown(std::net::Shutdown::Both);
            let _ = d.shutdown(std::net::Shutdown::Both);
        }
        open.len()
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.state
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr); // wakes the accept loop
        self.cut();
    }
}

/// The real daemon's API, except that right after the service list is read, `then` runs
/// with that list: someone else acting in the middle of a pass.
pub struct AfterList<'a, F> {
    pub docker: &'a ecr_auth::swarm::docker::Docker,
    pub then: F,
}

impl<F: Fn(&[ecr_auth::swarm::docker::Service])> ecr_auth::swarm::SwarmApi for AfterList<'_, F> {
    async fn role(
        &self,
    ) -> Result<ecr_auth::swarm::docker::Role, ecr_auth::swarm::docker::DockerError> {
        self.docker.role().await
    }
    async fn services(
        &self,
    ) -> Result<Vec<ecr_auth::swarm::docker::Service>, ecr_auth::swarm::docker::DockerError> {
        let list = self.docker.services().await?;
        (self.then)(&list);
        Ok(list)
    }
    async fn service(
        &self,
        id: &str,
    ) -> Result<ecr_auth::swarm::docker::Service, ecr_auth::swarm::docker::DockerError> {
        self.docker.service(id).await
    }
    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &serde_json::value::RawValue,
        auth: &ecr_auth::secret::Secret<String>,
    ) -> Result<Vec<String>, ecr_auth::swarm::docker::DockerError> {
        self.docker.update_service(id, version, spec, auth).await
    }
    fn calls(&self) -> u64 {
        self.docker.calls()
    }
}

/// One `swarm refresh --once` pass of the real `step` over `api`, with `tokens` and its clock.
pub async fn one_pass(
    api: &impl ecr_auth::swarm::SwarmApi,
    tokens: &Arc<ecr_auth::tokens::Tokens>,
) -> ecr_auth::swarm::Turn {
    use ecr_auth::swarm::{metrics::Metrics, refresh::Selection, schedule::Schedule};
    use ecr_auth::swarm::{step, Settings, State};
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let settings = Settings {
        schedule: Schedule::Once,
        selection: Selection::default(),
        dry_run: false,
    };
    let mut state = State::new(settings, Metrics::new(), stop);
    step(&mut state, tokens.now(), api, tokens).await.turn
}
