//! Shared fixture for the integration tests: the local lab, real programs on loopback only.
//!
//! Use it from a test file with `mod common;`. Every component starts on a free port on
//! 127.0.0.1 (or a unix socket in its own temp dir), waits until it answers (bounded
//! polling; on failure the panic shows the component's log tail) and is stopped on `Drop`,
//! also when the test panics (then the log tail is printed too, and libtest shows it with
//! the failure).
//!
//! Components: [`Moto`] (AWS API: STS, ECR), [`TokenServer`] (our own ECR token endpoint
//! with real expiries and rotation, `lab/token_server.py`, which can also play a sick AWS:
//! throttling, a black hole, see its docs), [`Registry`] (Debian
//! `docker-registry` with htpasswd user `AWS`), [`Dockerd`] (a private Docker daemon,
//! optionally a one-node Swarm, optionally also on TCP with TLS: [`tls`] makes the
//! certificates), [`Cluster`] (three dockerd as a three-manager Swarm on 127.0.0.2-4:2377,
//! one at a time), [`podman`] and [`skopeo`] commands with private storage.
//!
//! A missing program is a failure, never a skip: [`tool`] panics with the program's name and
//! "run scripts/test (it installs the lab)". `scripts/test` also sets
//! `ECR_AUTH_LAB_REQUIRED=1`; this fixture needs no switch because it never skips.
//!
//! Fixtures are per test: keep them in locals (not statics, which are never dropped).
//! Declare a component before the ones that use its files (e.g. a `TokenServer` before the
//! `Registry` reading its htpasswd), so that it is dropped after them.
//! [`token_cache`] reads ecr-auth's token cache and ages an entry (past half-life, expired)
//! by rewriting its timestamps, so time-dependent behaviour is tested without sleeping.
//!
//! Set `ECR_AUTH_LAB_KEEP=1` to keep the temp dirs (and logs) for a post-mortem.
//!
//! Only the standard library and crates the product already depends on (`serde_json`, `base64`) are used.
#![allow(dead_code, unused_imports)]

mod dockerd;
mod http;
mod moto;
mod podman;
mod process;
mod registry;
mod swarm_cluster;
pub mod tls;
pub mod token_cache;
mod token_server;

pub use dockerd::{Dockerd, Tcp};
pub use http::{base64, base64_decode, basic_auth, http, http_unix, http_within, HttpResponse};
pub use moto::{Moto, MOTO_ACCOUNT, MOTO_EXPIRES_AT, MOTO_PASSWORD};
pub use podman::{podman, skopeo};
pub use process::Proc;
pub use registry::{write_authfile, Registry};
pub use swarm_cluster::{Cluster, MANAGER_ADDRS};
pub use token_server::{TokenServer, TOKEN_SERVER_ACCOUNT};

use std::collections::HashSet;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long a component may take to answer after it was started.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The `ecr-auth` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ecr-auth"))
}

/// The repository root (where `lab/`, `scripts/` and `.lab/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Finds a program on PATH, in `<repo>/.lab/venv/bin` or in /usr/sbin and /sbin; panics if
/// it is missing (the lab is a requirement, never a reason to skip).
pub fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(repo_root().join(".lab/venv/bin"));
    dirs.push("/usr/sbin".into());
    dirs.push("/sbin".into());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| {
            panic!(
                "required program `{name}` was not found on PATH or in .lab/venv/bin: \
                 run scripts/test (it installs the lab)"
            )
        })
}

/// A free TCP port on 127.0.0.1. Never hands out the same port twice in one test process;
/// components that bind it later retry with another port if it was taken meanwhile.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("cannot bind a port on 127.0.0.1")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A private temp dir (mode 0700) under `std::env::temp_dir()`, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// `<tmp>/ecr-auth-<label>-<pid>-<n>`: short, so unix socket paths inside it fit.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ecr-auth-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path); // a leftover from a killed run with our pid
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ECR_AUTH_LAB_KEEP").is_some() {
            eprintln!("lab: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs a command to completion and returns its output (whatever the exit status).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Runs a command, panics with its stdout and stderr unless it succeeds, returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({}): {}\n{}",
            out.status,
            describe(cmd),
            output_text(&out)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its output (stdout and stderr) as text.
pub fn run_fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    if out.status.success() {
        panic!(
            "command unexpectedly succeeded: {}\n{}",
            describe(cmd),
            output_text(&out)
        );
    }
    output_text(&out)
}

/// "stdout:\n...\nstderr:\n..." of a finished command.
pub fn output_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The environment for an AWS client (SDK or CLI) talking to a lab endpoint: dummy static
/// credentials, region us-east-1, no config files, no instance metadata.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "AKIAECRAUTHLABTEST00"),
        ("AWS_SECRET_ACCESS_KEY", "ecr-auth-lab-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Removes every inherited `AWS_*` variable from `cmd` and sets [`aws_env`]`(endpoint)`.
pub fn apply_aws_env<'a>(cmd: &'a mut Command, endpoint: &str) -> &'a mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(aws_env(endpoint))
}

/// The AWS CLI (from `.lab/venv`) pointed at a lab endpoint, see [`apply_aws_env`].
pub fn aws_cli(endpoint: &str) -> Command {
    let mut cmd = Command::new(tool("aws"));
    apply_aws_env(&mut cmd, endpoint);
    cmd.args(["--output", "json"]);
    cmd
}

/// A dir `<tmp>/helper-bin` holding `docker-credential-ecr-login` and
/// `docker-credential-ecr-auth` links to [`bin()`], to put first on a child's PATH.
pub fn helper_path_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("helper-bin");
    std::fs::create_dir_all(&dir).expect("create helper-bin dir");
    for name in ["docker-credential-ecr-login", "docker-credential-ecr-auth"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bin(), &link).expect("link helper name");
    }
    dir
}

/// `dir` prepended to the current PATH, for `Command::env("PATH", ..)`.
pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).expect("join PATH")
}

/// The static (musl) release binary, for tests that run it in containers with no
/// libc: `$ECR_AUTH_STATIC_BIN` (scripts/test builds it with scripts/build-static
/// and sets it), else built here with cargo (minutes the first time; needs the
/// musl target and musl-tools, which scripts/setup installs).
pub fn static_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ECR_AUTH_STATIC_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "ECR_AUTH_STATIC_BIN={} is not a file",
            p.display()
        );
        return p;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run(Command::new(cargo).current_dir(repo_root()).args([
        "build",
        "--release",
        "--target",
        "x86_64-unknown-linux-musl",
        "--bin",
        "ecr-auth",
    ]));
    assert!(
        out.status.success(),
        "building the static binary failed (run scripts/setup for the musl target):\n{}",
        output_text(&out)
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("x86_64-unknown-linux-musl/release/ecr-auth");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A JWT-shaped token like GitLab's `id_tokens`, expiring at `exp` (unix
/// seconds). Its signature is not real: moto's STS does not check it, and
/// ecr-auth only reads `exp` before sending it.
pub fn gitlab_jwt(exp: i64) -> String {
    let b = |s: &str| {
        base64(s.as_bytes())
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"RS256","kid":"lab","typ":"JWT"}"#),
        b(&format!(
            r#"{{"iss":"https://gitlab.example.com","aud":"sts.amazonaws.com","sub":"project_path:team/app:ref_type:branch:ref:main","project_id":"42","exp":{exp}}}"#
        )),
        b("signature")
    )
}
