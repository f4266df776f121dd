//! `ecr-auth serve`, the token broker, against the lab: our token server as AWS
//! (ECR GetAuthorizationToken and STS AssumeRole, counted), the real binary as
//! broker and as helper (`ECR_AUTH_BROKER=unix://...`), job-like FROM scratch
//! containers with nothing of AWS in them that pull through the docker CLI and
//! build with buildah.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, *};

const HOST_A: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const HOST_B: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
const NOT_ALLOWED: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const NOT_FOUND: &str = "credentials not found in native keychain";

/// A running broker: the real binary, AWS from the token server, a private dir.
struct Broker {
    socket: PathBuf,
    proc: Proc,
    dir: TempDir,
    args: Vec<String>,
    endpoint: String,
}

fn serve_cmd(dir: &Path, endpoint: &str, socket: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(common::bin());
    common::apply_aws_env(&mut cmd, endpoint);
    cmd.env("HOME", dir.join("home"))
        .env("ECR_AUTH_LOG", "trace")
        .env_remove("ECR_AUTH_BROKER")
        .env_remove("ECR_AUTH_CONFIG")
        .args(["serve", "--socket"])
        .arg(socket)
        .args(args);
    cmd
}

impl Broker {
    fn start(tokens: &TokenServer, args: &[&str]) -> Broker {
        let dir = TempDir::new("broker");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("run/broker.sock");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut b = Broker {
            proc: Proc::spawn(
                "broker",
                serve_cmd(dir.path(), &tokens.endpoint, &socket, &args),
                &dir.join("broker.log"),
            ),
            socket,
            dir,
            args,
            endpoint: tokens.endpoint.clone(),
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        if let Err(e) = self.proc.wait_until("broker", STARTUP_TIMEOUT, || {
            http_unix(&socket, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        }) {
            panic!("{e}");
        }
    }

    /// SIGTERM and wait; then the same broker again (same socket, same log file appended).
    fn restart_after(&mut self, gap: Duration, during: impl FnOnce()) {
        self.proc.stop(Duration::from_secs(20));
        during();
        std::thread::sleep(gap);
        let log = self.dir.join("broker-2.log");
        self.proc = Proc::spawn(
            "broker",
            serve_cmd(self.dir.path(), &self.endpoint, &self.socket, &self.args),
            &log,
        );
        self.wait_ready();
    }

    fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Every line the broker (and its restarts) logged.
    fn log(&self) -> String {
        ["broker.log", "broker-2.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect()
    }

    fn get(&self, registry: &str) -> HttpResponse {
        http_unix(
            &self.socket,
            "GET",
            &format!("/v1/token?registry={registry}"),
            &[],
            b"",
        )
        .expect("broker answers")
    }
}

/// A broker whose config file (`TMP/ecr-auth.toml`, returned) maps the lab registry to
/// ECR and allows it.
fn broker_for_lab_registry(
    tokens: &TokenServer,
    registry: &Registry,
    tmp: &TempDir,
) -> (Broker, PathBuf) {
    let config = tmp.join("ecr-auth.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[broker]\nallow = [\"{}\"]\n",
            registry.ecr_mapping("123456789012", "eu-west-1"),
            registry.addr
        ),
    )
    .unwrap();
    (
        Broker::start(tokens, &["--config", config.to_str().unwrap()]),
        config,
    )
}

/// The helper (or another face) with no AWS anything, only the broker.
fn face(broker_url: &str, home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(common::bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_")
            || key.to_string_lossy().starts_with("ECR_AUTH")
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ECR_AUTH_BROKER", broker_url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start ecr-auth");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn helper_get(broker_url: &str, home: &Path, registry: &str) -> Output {
    face(broker_url, home, &["docker-credential", "get"], registry)
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn broker_socket_is_0660_with_its_group_and_refuses_a_symlink_or_no_allow_list() {
    let tokens = TokenServer::start();
    let b = Broker::start(&tokens, &["--allow", HOST_A, "--group", "nogroup"]);
    let meta = std::fs::symlink_metadata(&b.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660, "socket mode");
    assert_eq!(meta.gid(), 65534, "group nogroup");
    assert_eq!(meta.uid(), unsafe_euid());

    // A symlink where the socket should be: refused, and left alone.
    let tmp = TempDir::new("broker-link");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.join("broker.sock");
    std::os::unix::fs::symlink(tmp.join("elsewhere"), &link).unwrap();
    let out = run_fails(&mut serve_cmd(
        tmp.path(),
        &tokens.endpoint,
        &link,
        &["--allow".into(), HOST_A.into()],
    ));
    assert!(out.contains("is a symlink"), "{out}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!tmp.join("elsewhere").exists());

    // A socket of another user's at the path: refused, and left alone.
    let foreign = tmp.join("foreign.sock");
    let listener = std::os::unix::net::UnixListener::bind(&foreign).unwrap();
    drop(listener);
    std::os::unix::fs::lchown(&foreign, Some(65534), Some(65534)).unwrap();
    let out = run_fails(&mut serve_cmd(
        tmp.path(),
        &tokens.endpoint,
        &foreign,
        &["--allow".into(), HOST_A.into()],
    ));
    assert!(out.contains("belongs to uid 65534"), "{out}");
    assert_eq!(std::fs::symlink_metadata(&foreign).unwrap().uid(), 65534);

    // No allow-list: refused.
    let out = run_fails(&mut serve_cmd(
        tmp.path(),
        &tokens.endpoint,
        &tmp.join("b.sock"),
        &[],
    ));
    assert!(out.contains("refuses to start: no allow-list"), "{out}");
    // A socket in a world-writable directory: refused.
    let open = tmp.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = run_fails(&mut serve_cmd(
        tmp.path(),
        &tokens.endpoint,
        &open.join("b.sock"),
        &["--allow".into(), HOST_A.into()],
    ));
    assert!(out.contains("writable by everyone"), "{out}");
}

fn unsafe_euid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn broker_hands_out_allowed_tokens_and_the_helper_says_not_found_for_the_rest() {
    let tokens = TokenServer::start();
    let b = Broker::start(
        &tokens,
        &[
            "--allow",
            "*.dkr.ecr.eu-west-1.amazonaws.com",
            "--allow",
            HOST_A,
        ],
    );
    let home = TempDir::new("broker-home");
    let url = b.url();

    let out = helper_get(&url, home.path(), HOST_A);
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Secret"], tokens.password().as_str());
    assert_eq!(v["Username"], "AWS");
    assert_eq!(v["ServerURL"], HOST_A);

    for (host, reason) in [
        (NOT_ALLOWED, "not in this broker's allow-list"),
        ("docker.io", "not an Amazon ECR registry"),
    ] {
        let out = helper_get(&url, home.path(), host);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stdout), format!("{NOT_FOUND}\n"), "{host}");
        assert!(
            text(&out.stderr).contains(reason),
            "{host}: {}",
            text(&out.stderr)
        );
    }

    // list: what the broker names, without patterns.
    let out = face(&url, home.path(), &["docker-credential", "list"], "unused");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(text(&out.stdout), format!("{{\"{HOST_A}\":\"AWS\"}}\n"));

    // get-login-password and auth-config through the broker.
    let out = face(&url, home.path(), &["get-login-password", HOST_B], "");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(text(&out.stdout).trim_end(), tokens.password());
    let out = face(&url, home.path(), &["auth-config", HOST_A, HOST_B], "");
    assert!(out.status.success(), "{}", output_text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let auth = base64(format!("AWS:{}", tokens.password()).as_bytes());
    assert_eq!(doc["auths"][HOST_B]["auth"], auth.as_str());

    // Everything above made one AWS call (one identity, one region), and no job
    // ever needed a cache file.
    assert_eq!(tokens.calls(), 1);
    assert!(!home.join(".cache").exists());

    // The broker's answers and its audit lines.
    let r = b.get(NOT_ALLOWED);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "not_allowed");
    let r = b.get(HOST_A);
    assert_eq!(r.status, 200);
    let expires = r.json()["expires_at"].as_i64().unwrap();
    assert!((expires - now_unix() - 43200).abs() < 120, "{expires}");
    let log = b.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("token request"))
        .collect();
    assert!(audit.len() >= 7, "{log}");
    let me = unsafe_euid();
    assert!(
        audit.iter().any(|l| l.contains(&format!(
            "registry=\"{NOT_ALLOWED}\" result=not_allowed uid={me} gid="
        )) && l.contains(" pid=")),
        "{log}"
    );

    // No secret in any line, at trace level.
    let password = tokens.password();
    for secret in [
        &password[..40],
        "ecr-auth-lab-secret",
        "AKIAECRAUTHLABTEST00",
        &auth[..40],
    ] {
        assert!(!log.contains(secret), "a secret in the broker log:\n{log}");
    }
    let r = http_unix(&b.socket, "GET", "/metrics", &[], b"").unwrap();
    assert!(
        r.text()
            .contains("ecr_auth_broker_requests_total{result=\"not_allowed\"} 2"),
        "{}",
        r.text()
    );
}

#[test]
fn an_unreachable_broker_is_an_error_naming_the_socket_and_a_restart_heals_it() {
    let tokens = TokenServer::start();
    let mut b = Broker::start(&tokens, &["--allow", HOST_A]);
    let home = TempDir::new("broker-home");
    let url = b.url();
    assert!(helper_get(&url, home.path(), HOST_A).status.success());

    // Clients keep calling through the restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (url, home, stop) = (url.clone(), home.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = helper_get(&url, &home, HOST_A);
                if out.status.success() {
                    seen.0 += 1;
                } else {
                    let o = text(&out.stdout);
                    // A connection cut by the shutdown itself may end early: still
                    // an error naming the broker, never not-found.
                    assert!(
                        o.contains(&format!("ecr-auth broker at {url}")) && !o.contains(NOT_FOUND),
                        "{}",
                        output_text(&out)
                    );
                    seen.1 += 1;
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let socket = b.socket.clone();
    b.restart_after(Duration::from_millis(500), || {
        assert!(!socket.exists(), "SIGTERM removes the socket");
        // During the gap: a clear error naming the socket, not not-found.
        let out = helper_get(&url, home.path(), HOST_A);
        assert_eq!(out.status.code(), Some(1));
        let o = text(&out.stdout);
        assert!(
            o.contains(&format!("cannot reach the ecr-auth broker at {url}")),
            "{o}"
        );
        assert!(o.contains("`ecr-auth serve` is running"), "{o}");
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = caller.join().unwrap();
    assert!(ok >= 2 && failed >= 1, "ok {ok}, failed {failed}");
    let out = helper_get(&url, home.path(), HOST_A);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// 20 processes × 10 concurrent requests each, over raw sockets.
const MANY_GETS: &str = r#"
import socket, sys, threading
path, hosts = sys.argv[1], sys.argv[2:]
results = []
def get(host):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    s.sendall(("GET /v1/token?registry=%s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % host).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    results.append(data.split(b" ")[1].decode() if data else "closed")
threads = [threading.Thread(target=get, args=(hosts[i % len(hosts)],)) for i in range(10)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(results))
"#;

#[test]
fn two_hundred_concurrent_gets_from_twenty_processes_make_one_aws_call() {
    let tokens = TokenServer::start();
    tokens.set_delay_ms(1500); // every request arrives while the first fetch is on its way
    let b = Broker::start(&tokens, &["--allow", "*.dkr.ecr.eu-west-1.amazonaws.com"]);
    let procs: Vec<_> = (0..20)
        .map(|_| {
            Command::new(tool("python3"))
                .args(["-c", MANY_GETS])
                .arg(&b.socket)
                .args([HOST_A, HOST_B])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut statuses = Vec::new();
    for p in procs {
        let out = p.wait_with_output().unwrap();
        statuses.extend(text(&out.stdout).split_whitespace().map(str::to_string));
    }
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|s| s == "200"), "{statuses:?}");
    assert_eq!(tokens.calls(), 1, "one AWS call for one (identity, region)");
}

#[test]
fn garbage_oversized_slow_and_idle_clients_never_stop_a_normal_one() {
    let tokens = TokenServer::start();
    let b = Broker::start(&tokens, &["--allow", HOST_A]);
    let normal = |what: &str| {
        let t = Instant::now();
        let r = b.get(HOST_A);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            t.elapsed()
        );
    };
    normal("first");

    // Garbage: an error answer or a closed connection, quickly.
    let mut s = UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let answer = text(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    normal("after garbage");

    // Oversized request head: refused.
    let mut s = UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = format!(
        "GET /v1/token?registry={HOST_A} HTTP/1.1\r\nHost: b\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(big.as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let answer = text(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // Too many headers, a body: refused.
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut s = UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: b\r\n{many}\r\n").as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!text(&buf).starts_with("HTTP/1.1 200"), "{}", text(&buf));
    let r = http_unix(
        &b.socket,
        "GET",
        &format!("/v1/token?registry={HOST_A}"),
        &[],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 413);

    // A client that sends one byte a second, and 1,000 idle connections.
    let slow = {
        let socket = b.socket.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut s = UnixStream::connect(&socket).unwrap();
            for byte in b"GET /v1/token?registry=x HTTP/1.1\r\nHost: b\r\n\r\n"
                .iter()
                .cycle()
            {
                if s.write_all(&[*byte]).is_err() || start.elapsed() > Duration::from_secs(60) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            start.elapsed()
        })
    };
    let idle: Vec<UnixStream> = (0..1000)
        .map(|i| {
            UnixStream::connect(&b.socket).unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    for i in 0..5 {
        normal(&format!("with 1,000 idle connections, round {i}"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let slow_lasted = slow.join().unwrap();
    assert!(
        slow_lasted < Duration::from_secs(40),
        "the slow client was served for {slow_lasted:?}"
    );
    // The idle ones are closed by the broker.
    let start = Instant::now();
    for mut s in idle.into_iter().take(50) {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    }
    assert!(
        start.elapsed() < Duration::from_secs(40),
        "{:?}",
        start.elapsed()
    );
    normal("at the end");
}

#[test]
fn pull_only_tokens_come_from_a_session_limited_to_the_repositories() {
    let tokens = TokenServer::start();
    let role = "arn:aws:iam::123456789012:role/ecr-broker-pull";
    let repos = [
        "arn:aws:ecr:eu-west-1:123456789012:repository/team/*",
        "arn:aws:ecr:eu-west-1:123456789012:repository/base",
    ];
    let b = Broker::start(
        &tokens,
        &[
            "--allow",
            HOST_A,
            "--pull-only",
            "--role-arn",
            role,
            "--repository",
            repos[0],
            "--repository",
            repos[1],
        ],
    );
    let r = b.get(HOST_A);
    assert_eq!(r.status, 200, "{}", r.text());
    // Valid until the session ends (the lab's sessions last an hour), not 12 h.
    let expires = r.json()["expires_at"].as_i64().unwrap();
    assert!((expires - now_unix() - 3600).abs() < 120, "{expires}");
    assert_eq!(tokens.assumed_roles(), vec![role.to_string()]);
    assert_eq!(tokens.session_durations(), vec![Some(43200)]);
    assert_eq!(tokens.callers(), vec![TokenServer::role_access_key(role)]);
    let policy: serde_json::Value = serde_json::from_str(
        tokens.session_policies()[0]
            .as_deref()
            .expect("a session policy"),
    )
    .unwrap();
    assert_eq!(
        policy,
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "EcrAuthToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                {"Sid": "PullOnly", "Effect": "Allow",
                 "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                 "Resource": repos}
            ]
        })
    );
}

#[test]
fn pull_only_per_registry_one_registry_gets_a_pull_only_session_and_another_may_push() {
    let tokens = TokenServer::start();
    let role = "arn:aws:iam::123456789012:role/ecr-pull-team";
    let repos = ["arn:aws:ecr:eu-west-1:123456789012:repository/team/*"];
    let tmp = TempDir::new("broker-per-registry");
    let config = tmp.join("ecr-auth.toml");
    // A and B are in the same region: one token would serve both, were it not
    // for their different treatments.
    std::fs::write(
        &config,
        format!(
            r#"[broker]
[[broker.allow]]
host = "{HOST_A}"
pull_only = true
role_arn = "{role}"
repositories = ["{}"]

[[broker.allow]]
host = "{HOST_B}"
pull_only = false
"#,
            repos[0]
        ),
    )
    .unwrap();
    let b = Broker::start(&tokens, &["--config", config.to_str().unwrap()]);
    let a = b.get(HOST_A);
    assert_eq!(a.status, 200, "{}", a.text());
    let pushing = b.get(HOST_B);
    assert_eq!(pushing.status, 200, "{}", pushing.text());

    // A: through the role, with a session policy naming exactly A's repositories.
    assert_eq!(tokens.assumed_roles(), vec![role.to_string()]);
    let policy: serde_json::Value = serde_json::from_str(
        tokens.session_policies()[0]
            .as_deref()
            .expect("a session policy"),
    )
    .unwrap();
    assert_eq!(policy["Statement"][1]["Resource"], serde_json::json!(repos));
    assert_eq!(
        policy["Statement"][1]["Action"],
        serde_json::json!([
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability"
        ])
    );
    // B: the broker's own identity (which may push), no AssumeRole, no session policy.
    assert_eq!(
        tokens.callers(),
        vec![
            TokenServer::role_access_key(role),
            "AKIAECRAUTHLABTEST00".to_string()
        ]
    );
    assert_eq!(tokens.session_policies().len(), 1);
    // A's token ends with its session (an hour in the lab), B's after ECR's 12 h.
    let expires = |r: &HttpResponse| r.json()["expires_at"].as_i64().unwrap() - now_unix();
    assert!((expires(&a) - 3600).abs() < 120, "{}", expires(&a));
    assert!(
        (expires(&pushing) - 43200).abs() < 120,
        "{}",
        expires(&pushing)
    );

    // Asked again: the tokens in hand, no further AWS call.
    assert_eq!(b.get(HOST_A).status, 200);
    assert_eq!(b.get(HOST_B).status, 200);
    assert_eq!(tokens.calls(), 2);

    // An entry that would silently hand out wider tokens than it reads is refused.
    std::fs::write(
        &config,
        format!("[broker]\nallow = [{{ host = \"{HOST_B}\", role_arn = \"{role}\" }}]\n"),
    )
    .unwrap();
    let out = run_fails(&mut serve_cmd(
        tmp.path(),
        &tokens.endpoint,
        &tmp.join("b.sock"),
        &["--config".into(), config.to_str().unwrap().into()],
    ));
    assert!(
        out.contains(&format!("allow entry \"{HOST_B}\": `role_arn` and `repositories` only apply with `pull_only = true`")),
        "{out}"
    );
}

/// `docker run --name NAME --network host` of a job container as `configure gitlab-runner
/// --broker` wires it: the broker's socket, the static helper and the job's config.json
/// mounted, and nothing of AWS (not even through the docker CLI's own environment).
/// The caller adds its own options, the image and the command.
fn broker_job_run(
    dockerd: &Dockerd,
    name: &str,
    b: &Broker,
    static_bin: &Path,
    job_config: &Path,
) -> Command {
    let mut cmd = dockerd.docker();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["run", "--name", name, "--network", "host"])
        .arg("-v")
        .arg(format!("{}:/run/ecr-auth/broker.sock", b.socket.display()))
        .arg("-v")
        .arg(format!(
            "{}:/usr/local/bin/docker-credential-ecr-login:ro",
            static_bin.display()
        ))
        .arg("-v")
        .arg(format!(
            "{}:/root/.docker/config.json:ro",
            job_config.display()
        ));
    cmd
}

#[test]
fn a_scratch_job_with_only_the_socket_helper_and_config_json_pulls_through_the_docker_cli() {
    let static_bin = common::static_bin();
    let tokens = TokenServer::start();
    let registry = Registry::start(&tokens.htpasswd);
    let digest = registry.push_test_image("team/app", "1.0", "AWS", &tokens.password());
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("broker-job");
    let (b, _) = broker_for_lab_registry(&tokens, &registry, &tmp);
    let job_config = tmp.join("config.json");
    std::fs::write(
        &job_config,
        format!(
            r#"{{"credHelpers":{{"{}":"ecr-login","public.ecr.aws":"ecr-login"}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let marker = tmp.join("job");
    std::fs::write(&marker, "a job image with nothing in it\n").unwrap();
    dockerd.build_image(
        "lab/scratch-job:latest",
        &[("job", &marker)],
        "FROM scratch\nCOPY job /job\n",
    );

    let image = registry.image("team/app", "1.0");
    let name = format!("broker-job-{}", std::process::id());
    let mut cmd = broker_job_run(&dockerd, &name, &b, &static_bin, &job_config);
    cmd.arg("-v")
        .arg(format!(
            "{}:/usr/local/bin/docker:ro",
            tool("docker").display()
        ))
        .arg("-v")
        .arg(format!("{}:/var/run/docker.sock", dockerd.socket.display()))
        .args([
            "-e",
            "ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock",
            "-e",
            "HOME=/root",
            "-e",
            "DOCKER_CONFIG=/root/.docker",
            "-e",
            "PATH=/usr/local/bin",
            "lab/scratch-job:latest",
            "docker",
            "pull",
            "-q",
            &image,
        ]);
    let out = common::run_ok(&mut cmd);
    assert!(out.contains(&image), "{out}");
    let repo_digests = dockerd.repo_digests(&image);
    assert!(repo_digests.contains(&digest), "{repo_digests}");

    // The job's environment and file system: no AWS variable, no AWS file.
    let env = common::run_ok(dockerd.docker().args([
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &name,
    ]));
    assert!(!env.contains("AWS_"), "{env}");
    assert!(
        env.contains("ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock"),
        "{env}"
    );
    let tar = tmp.join("job.tar");
    common::run_ok(dockerd.docker().args(["export", "-o"]).arg(&tar).arg(&name));
    let files = common::run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(files.lines().any(|f| f == "job"), "{files}");
    assert!(!files.to_ascii_lowercase().contains("aws"), "{files}");
    assert!(!files.contains("credentials"), "{files}");
    common::run_ok(dockerd.docker().args(["rm", &name]));

    // A registry outside the allow-list is not-found in the job; the broker's AWS calls are counted.
    let log = b.log();
    assert!(
        log.contains(&format!("registry=\"{}\" result=token", registry.addr)),
        "{log}"
    );
    assert_eq!(tokens.calls(), 1);
    let out = helper_get(&b.url(), tmp.path(), NOT_ALLOWED);
    assert_eq!(text(&out.stdout), format!("{NOT_FOUND}\n"));
}

/// A buildah job image, FROM scratch: Debian's buildah (dynamically linked:
/// the binary and the shared libraries `ldd` names, each at its own path), the
/// lab's static busybox for a shell, a signature policy, registries.conf and
/// storage.conf (vfs), /etc/passwd. Nothing of ours and nothing of AWS: the job mounts the rest.
fn buildah_job_image(dockerd: &Dockerd, tmp: &Path) -> String {
    let buildah = tool("buildah");
    let ldd = run_ok(Command::new("ldd").arg(&buildah));
    let mut files: Vec<(String, PathBuf)> = vec![("usr/bin/buildah".into(), buildah.clone())];
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .rsplit("=>")
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap_or("");
        if let Some(rel) = path.strip_prefix('/') {
            files.push((rel.to_string(), PathBuf::from(path)));
        }
    }
    assert!(
        files.iter().any(|(f, _)| f.contains("libc.so")),
        "ldd named no libc: {ldd}"
    );
    let etc = tmp.join("buildah-etc");
    std::fs::create_dir_all(&etc).unwrap();
    for (name, text) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        (
            "policy.json",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        ),
        ("registries.conf", "unqualified-search-registries = []\n"),
        // As buildah's own images set it: no overlay mounts inside a container.
        (
            "storage.conf",
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"/var/lib/containers/storage\"\nrunroot = \"/run/containers/storage\"\n",
        ),
    ] {
        std::fs::write(etc.join(name), text).unwrap();
    }
    files.push(("etc/passwd".into(), etc.join("passwd")));
    files.push(("etc/containers/policy.json".into(), etc.join("policy.json")));
    for name in ["registries.conf", "storage.conf"] {
        files.push((format!("etc/containers/{name}"), etc.join(name)));
    }
    let mut dirs: Vec<String> = files
        .iter()
        .map(|(f, _)| f.split('/').next().unwrap().to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    let copies: String = dirs.iter().map(|d| format!("COPY {d} /{d}\n")).collect();
    let base = dockerd.busybox_image();
    let refs: Vec<(&str, &Path)> = files
        .iter()
        .map(|(f, p)| (f.as_str(), p.as_path()))
        .collect();
    dockerd.build_image(
        "lab/buildah-job:latest",
        &refs,
        &format!(
            "FROM {base}\n{copies}RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/root\", \"/tmp\", \"/var/tmp\"]\n\
             ENV PATH=/usr/local/bin:/usr/bin:/bin\n"
        ),
    );
    "lab/buildah-job:latest".into()
}

#[test]
fn a_scratch_job_with_only_the_socket_helper_and_config_json_builds_with_buildah() {
    let static_bin = common::static_bin();
    let tokens = TokenServer::start();
    let registry = Registry::start(&tokens.htpasswd);
    let digest = registry.push_test_image("team/base", "1.0", "AWS", &tokens.password());
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("broker-buildah");
    let (b, _) = broker_for_lab_registry(&tokens, &registry, &tmp);
    // What `configure gitlab-runner --broker` mounts: the job's config.json
    // (buildah reads it through REGISTRY_AUTH_FILE, as in
    // examples/gitlab/gitlab-ci/buildah.gitlab-ci.yml).
    let job_config = tmp.join("config.json");
    std::fs::write(
        &job_config,
        format!(r#"{{"credHelpers":{{"{}":"ecr-login"}}}}"#, registry.addr),
    )
    .unwrap();
    let image = buildah_job_image(&dockerd, tmp.path());

    let base = registry.image("team/base", "1.0");
    let built = registry.image("team/app", "from-buildah");
    // The job: pull the private base, build on it, push the result. vfs storage
    // and chroot isolation, as buildah runs in a job.
    let script = format!(
        "set -e\n\
         mkdir -p /work && cd /work\n\
         printf 'built in a job\\n' > hello\n\
         printf 'FROM {base}\\nCOPY hello /hello\\n' > Containerfile\n\
         buildah pull -q --tls-verify=false {base} >/dev/null\n\
         echo \"base $(buildah inspect --type image --format '{{{{.FromImageDigest}}}}' {base})\"\n\
         buildah build -q --tls-verify=false -t {built} . >/dev/null\n\
         buildah push -q --tls-verify=false {built}\n\
         echo pushed\n"
    );
    let name = format!("broker-buildah-{}", std::process::id());
    let mut cmd = broker_job_run(&dockerd, &name, &b, &static_bin, &job_config);
    // `--privileged` (what the examples' runner gives buildah jobs) cannot start
    // here: this lab itself runs without CAP_SYS_RESOURCE, which runc would have
    // to grant. buildah needs CAP_SYS_ADMIN of it (as root without it, it tries
    // a user namespace), so it gets that one.
    cmd.args(["--cap-add", "SYS_ADMIN"]).args([
        "-e",
        "ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock",
        "-e",
        "HOME=/root",
        "-e",
        "REGISTRY_AUTH_FILE=/root/.docker/config.json",
        "-e",
        "STORAGE_DRIVER=vfs",
        "-e",
        "BUILDAH_ISOLATION=chroot",
        &image,
        "sh",
        "-c",
        &script,
    ]);
    let out = common::run_ok(&mut cmd);
    assert!(
        out.lines().any(|l| l == format!("base {digest}")),
        "pulled the private base {digest}: {out}"
    );
    assert!(out.lines().any(|l| l == "pushed"), "{out}");
    // The pushed image is in the registry, on top of the base.
    let tags = common::run_ok(
        skopeo(tmp.path())
            .args(["list-tags", "--tls-verify=false", "--creds"])
            .arg(format!("AWS:{}", tokens.password()))
            .arg(format!("docker://{}/team/app", registry.addr)),
    );
    assert!(tags.contains("from-buildah"), "{tags}");

    // No AWS variable in the job's environment, no AWS file or secret in its file system.
    let env = common::run_ok(dockerd.docker().args([
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &name,
    ]));
    assert!(!env.contains("AWS_"), "{env}");
    let tar = tmp.join("job.tar");
    common::run_ok(dockerd.docker().args(["export", "-o"]).arg(&tar).arg(&name));
    let files = common::run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(files.lines().any(|f| f == "usr/bin/buildah"), "{files}");
    assert!(!files.to_ascii_lowercase().contains("aws"), "{files}");
    assert!(!files.contains("credentials"), "{files}");
    let bytes = std::fs::read(&tar).unwrap();
    for secret in ["AKIAECRAUTHLABTEST00", "ecr-auth-lab-secret"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the job's file system"
        );
    }
    common::run_ok(dockerd.docker().args(["rm", &name]));

    // The broker served it: one AWS call, audited; nothing of the token in its log.
    let log = b.log();
    assert!(
        log.contains(&format!("registry=\"{}\" result=token", registry.addr)),
        "{log}"
    );
    assert_eq!(tokens.calls(), 1);
    assert!(!log.contains(&tokens.password()[..40]), "{log}");
}

#[test]
fn the_runner_hosts_docker_pulls_a_job_image_through_the_helper_and_the_broker() {
    let tokens = TokenServer::start();
    let registry = Registry::start(&tokens.htpasswd);
    let digest = registry.push_test_image("team/job", "3", "AWS", &tokens.password());
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("broker-s1");
    let (b, config) = broker_for_lab_registry(&tokens, &registry, &tmp);

    // The runner's config.toml, wired for the broker: the DOCKER_AUTH_CONFIG the
    // executor hands Docker for the job image. (On the runner host the broker's
    // config file maps the registry for `configure` too.)
    let socket = b.socket.to_string_lossy().into_owned();
    let job_config = tmp.join("job-config.json").to_string_lossy().into_owned();
    let runner_config = crate::gitlab_runner_pull::configure(
        &tmp,
        &config,
        &[
            "--registry",
            &registry.addr,
            "--broker",
            &socket,
            "--job-docker-config",
            &job_config,
        ],
    );
    let (auth_config, _) = crate::gitlab_runner_pull::runner_wiring(&runner_config);
    let client = tmp.join("runner-docker-config");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::write(client.join("config.json"), &auth_config).unwrap();

    // The runner process: the helper on PATH, ECR_AUTH_BROKER (as the Compose and
    // Swarm examples give gitlab-runner), and nothing of AWS.
    let bin_dir = tmp.join("bin");
    common::run_ok(
        Command::new(common::bin())
            .args(["install", "--dir"])
            .arg(&bin_dir),
    );
    let mut pull = dockerd.docker();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_")
            || key.to_string_lossy().starts_with("ECR_AUTH")
        {
            pull.env_remove(key);
        }
    }
    let image = registry.image("team/job", "3");
    common::run_ok(
        pull.env("PATH", path_with(&bin_dir))
            .env("HOME", tmp.join("runner-home"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ECR_AUTH_BROKER", b.url())
            .arg("--config")
            .arg(&client)
            .args(["pull", "-q", &image]),
    );
    let digests = dockerd.repo_digests(&image);
    assert!(digests.contains(&digest), "{digests}");
    assert_eq!(tokens.calls(), 1);
    assert!(b
        .log()
        .contains(&format!("registry=\"{}\" result=token", registry.addr)));
    // No cache file on the runner: the broker holds the tokens.
    assert!(!tmp.join("runner-home/.cache").exists());
}

#[test]
fn podman_pulls_through_the_broker_with_no_aws_credentials() {
    let tokens = TokenServer::start();
    let registry = Registry::start(&tokens.htpasswd);
    registry.push_test_image("team/tool", "2", "AWS", &tokens.password());
    let tmp = TempDir::new("bpod");
    let (b, _) = broker_for_lab_registry(&tokens, &registry, &tmp);
    let authfile = tmp.join("auth.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"credHelpers":{{"{}":"ecr-login"}}}}"#, registry.addr),
    )
    .unwrap();
    let image = registry.image("team/tool", "2");
    let mut cmd = podman(tmp.path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ECR_AUTH_BROKER", b.url())
        .env_remove("ECR_AUTH_CONFIG")
        .env("HOME", tmp.join("home"))
        .env("PATH", path_with(&helper_path_dir(tmp.path())))
        .args(["pull", "--quiet", "--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .arg(&image);
    let out = run(&mut cmd);
    assert!(out.status.success(), "podman pull: {}", output_text(&out));
    assert_eq!(tokens.calls(), 1);
    assert!(b
        .log()
        .contains(&format!("registry=\"{}\" result=token", registry.addr)));
}

#[test]
fn configure_gitlab_runner_broker_mounts_the_socket_and_no_aws_file_and_jobs_alone_warns() {
    let tmp = TempDir::new("broker-configure");
    let config = tmp.join("config.toml");
    let configure = |extra: &[&str]| {
        std::fs::copy(
            common::repo_root()
                .join("tests/data/gitlab/runner-config/01-register-default/config.toml"),
            &config,
        )
        .unwrap();
        let out = common::run(
            Command::new(common::bin())
                .env_remove("ECR_AUTH_CONFIG")
                .env("HOME", tmp.join("home"))
                .args(["configure", "gitlab-runner", "--runner-config"])
                .arg(&config)
                .args(["--registry", HOST_A, "--job-docker-config"])
                .arg(tmp.join("job-config.json"))
                .args(extra),
        );
        assert!(out.status.success(), "{}", output_text(&out));
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        (doc["runners"][0].clone(), text(&out.stderr))
    };
    let (runner, notes) = configure(&["--broker", "/run/ecr-auth/broker.sock"]);
    let env: Vec<&str> = runner["environment"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&"ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock"),
        "{env:?}"
    );
    let volumes: Vec<&str> = runner["docker"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.contains(&"/run/ecr-auth/broker.sock:/run/ecr-auth/broker.sock"),
        "read-write socket: {volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(":/root/.docker/config.json:ro")),
        "{volumes:?}"
    );
    assert!(!volumes.iter().any(|v| v.contains(".aws")), "{volumes:?}");
    assert!(!notes.contains("without --broker"), "{notes}");

    let (_, notes) = configure(&["--jobs"]);
    assert_eq!(
        notes.matches("warning: without --broker every job").count(),
        1,
        "{notes}"
    );
    // --aws-credentials and --broker exclude each other.
    let out = common::run(
        Command::new(common::bin())
            .args(["configure", "gitlab-runner", "--runner-config"])
            .arg(&config)
            .args(["--broker", "--aws-credentials", "/x"]),
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}
