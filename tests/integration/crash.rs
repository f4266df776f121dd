//! Crash consistency: ecr-auth killed with SIGKILL at random moments while it
//! writes — the token cache, a runner's config.toml (`configure gitlab-runner`),
//! a Docker config.json and containers auth.json (`configure docker`), a dotenv
//! file (`auth-config --output`), and the binaries (`install`). Afterwards every
//! file is the old or the new version, whole, parses and keeps its mode; a
//! leftover temporary file is never read as real and the next run sweeps it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, TempDir, TokenServer};

pub const RUNS: usize = 200;

/// A small deterministic generator: the same kill moments on every run of the
/// suite, different for each attempt.
pub struct Moments(u64);

impl Moments {
    pub fn new(seed: u64) -> Moments {
        Moments(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }
    /// A delay in [0, max).
    pub fn next(&mut self, max: Duration) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        max.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Starts `cmd`, kills it with SIGKILL after `delay` (if it still runs), reaps it.
/// Returns whether it was killed before it finished.
pub fn kill_after(cmd: &mut Command, stdin: &str, delay: Duration) -> bool {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ecr-auth");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin.as_bytes());
    }
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        let _ = child.kill();
    }
    let _ = child.wait();
    killed
}

/// How long one uninterrupted run of `cmd` takes.
pub fn time_of(cmd: &mut Command, stdin: &str) -> Duration {
    use std::io::Write;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ecr-auth");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin.as_bytes());
    }
    assert!(
        child.wait().unwrap().success(),
        "an uninterrupted run failed"
    );
    start.elapsed()
}

/// Files in `dir` that are temporary leftovers of ours.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".ecr-auth-tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_token_cache_survives_sigkill_mid_write() {
    let ts = TokenServer::start();
    let tmp = TempDir::new("crash-cache");
    let cache = tmp.join("cache");
    let helper = || {
        let mut cmd = Command::new(common::bin());
        common::apply_aws_env(&mut cmd, &ts.endpoint)
            .env("HOME", tmp.path())
            .env("ECR_AUTH_CACHE_DIR", &cache)
            .env_remove("AWS_ECR_DISABLE_CACHE")
            .args(["docker-credential", "get"]);
        cmd
    };
    let host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    let first = helper()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut c = first;
        c.stdin.take().unwrap().write_all(host.as_bytes()).unwrap();
        assert!(c.wait_with_output().unwrap().status.success());
    }
    let entry = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a cache entry");
    let age = |path: &Path| {
        // Past half-life, still valid: the next get refreshes and rewrites it.
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        let now = common::now_unix();
        v["issued_at"] = (now - 30_000).into();
        v["expires_at"] = (now + 13_000).into();
        crate::crash::write_0600(path, v.to_string().as_bytes());
    };
    // Kill moments spread over a whole refresh, as long as one takes here.
    age(&entry);
    // The median of three runs: one slow first run must not stretch the span.
    let mut runs: Vec<Duration> = (0..3)
        .map(|_| {
            age(&entry);
            time_of(&mut helper(), host)
        })
        .collect();
    runs.sort();
    let span = runs[1].mul_f64(1.2);
    let mut moments = Moments::new(1);
    let mut killed = 0;
    let mut rewritten = 0;
    for _ in 0..RUNS {
        age(&entry);
        let before = fs::read(&entry).unwrap();
        if kill_after(&mut helper(), host, moments.next(span)) {
            killed += 1;
        }
        let after = fs::read(&entry).expect("the entry is never missing");
        let v: serde_json::Value = serde_json::from_slice(&after).unwrap_or_else(|e| {
            panic!(
                "a torn cache entry ({e}): {}",
                String::from_utf8_lossy(&after)
            )
        });
        if after != before {
            rewritten += 1;
            assert!(
                v["issued_at"].as_i64() > Some(common::now_unix() - 60),
                "neither the old nor a new entry"
            );
        }
        assert_eq!(
            fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        killed > RUNS / 10,
        "only {killed} of {RUNS} runs were killed mid-way"
    );
    assert!(rewritten > 0, "no run got as far as writing");
    eprintln!(
        "crash: token cache: {RUNS} runs, {killed} killed mid-way, {rewritten} rewrote the entry, 0 torn or lost"
    );
    // The next run sweeps what killed writers left, and answers from a whole entry.
    age(&entry);
    let mut c = helper()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(host.as_bytes()).unwrap();
    }
    assert!(c.wait_with_output().unwrap().status.success());
    assert_eq!(leftovers(&cache), Vec::<PathBuf>::new());
}

/// Writes a file with mode 0600 (as ecr-auth's own cache entries are).
pub fn write_0600(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("test-tmp");
    fs::write(&tmp, bytes).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

// ---- the files ecr-auth writes for users --------------------------------------

/// What is at a path: a file's bytes, a symlink's target, or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Content {
    Bytes(Vec<u8>),
    Link(PathBuf),
}

fn content(path: &Path) -> Option<Content> {
    let meta = fs::symlink_metadata(path).ok()?;
    Some(if meta.file_type().is_symlink() {
        Content::Link(fs::read_link(path).unwrap())
    } else {
        Content::Bytes(fs::read(path).unwrap())
    })
}

/// A file a crash case watches: its old version (`None`: absent), the mode a
/// regular file there must have, and how to tell that it parses.
struct Watched {
    path: PathBuf,
    old: Option<Vec<u8>>,
    mode: u32,
    parses: fn(&[u8]) -> Result<(), String>,
}

fn toml_parses(b: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(b).map_err(|e| e.to_string())?;
    toml::from_str::<toml::Table>(text)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn json_parses(b: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde_json::Value>(b)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// GitLab's dotenv rules: `KEY=VALUE` lines, keys `[A-Za-z0-9_]`, no blank line.
fn dotenv_parses(b: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(b).map_err(|e| e.to_string())?;
    if text.is_empty() || !text.ends_with('\n') {
        return Err("empty or without a final newline".into());
    }
    for line in text.lines() {
        let (k, _) = line
            .split_once('=')
            .ok_or(format!("not KEY=VALUE: {line:?}"))?;
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(format!("bad key {k:?}"));
        }
    }
    Ok(())
}

fn any_bytes(_: &[u8]) -> Result<(), String> {
    Ok(())
}

/// Puts the old versions back (whole, by rename, as a user's editor would) and
/// removes backups; leaves any temporary file a killed run left.
fn put_back(files: &[Watched]) {
    for w in files {
        let _ = fs::remove_file(&w.path);
        if let Some(old) = &w.old {
            let tmp = w.path.with_extension("test-tmp");
            fs::write(&tmp, old).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(w.mode)).unwrap();
            fs::rename(&tmp, &w.path).unwrap();
        }
        for b in backups(&w.path) {
            fs::remove_file(b).unwrap();
        }
    }
}

/// `NAME.bak-…` beside `path` (the backups `configure` keeps).
fn backups(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.bak-", path.file_name().unwrap().to_string_lossy());
    fs::read_dir(path.parent().unwrap())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills `cmd` at [`RUNS`] random moments while it writes `files` (each put back
/// to its old version first) and checks after each kill that every file is its
/// old or its new version byte for byte, parses, has its mode; that a backup is
/// a whole copy of the old version; then that one more uninterrupted run leaves
/// no temporary file in `dirs`. Prints the figures.
fn survives_sigkill(
    name: &str,
    seed: u64,
    files: &[Watched],
    dirs: &[&Path],
    cmd: &dyn Fn() -> Command,
) {
    let tmp_files = || -> Vec<PathBuf> { dirs.iter().flat_map(|d| leftovers(d)).collect() };
    put_back(files);
    let old: Vec<Option<Content>> = files.iter().map(|w| content(&w.path)).collect();
    time_of(&mut cmd(), "");
    let new: Vec<Option<Content>> = files.iter().map(|w| content(&w.path)).collect();
    assert_ne!(
        old, new,
        "{name}: the command changed nothing; the case would prove nothing"
    );
    // Kill moments spread over a whole run, as long as one takes here.
    let mut runs: Vec<Duration> = (0..3)
        .map(|_| {
            put_back(files);
            time_of(&mut cmd(), "")
        })
        .collect();
    runs.sort();
    let span = runs[1].mul_f64(1.2);
    let mut moments = Moments::new(seed);
    let (mut killed, mut mid_write) = (0, 0);
    let mut olds = vec![0; files.len()];
    let mut news = vec![0; files.len()];
    for run in 0..RUNS {
        put_back(files);
        if kill_after(&mut cmd(), "", moments.next(span)) {
            killed += 1;
        }
        for (i, w) in files.iter().enumerate() {
            let now = content(&w.path);
            if now == old[i] {
                olds[i] += 1;
            } else if now == new[i] {
                news[i] += 1;
            } else {
                panic!(
                    "{name}, run {run}: {} is neither the old nor the new version: {now:?}",
                    w.path.display()
                );
            }
            if let Some(Content::Bytes(b)) = &now {
                (w.parses)(b).unwrap_or_else(|e| {
                    panic!(
                        "{name}, run {run}: {} does not parse: {e}",
                        w.path.display()
                    )
                });
                let mode = fs::metadata(&w.path).unwrap().permissions().mode() & 0o7777;
                assert_eq!(
                    mode,
                    w.mode,
                    "{name}, run {run}: the mode of {}",
                    w.path.display()
                );
            }
            for b in backups(&w.path) {
                assert_eq!(
                    fs::read(&b).ok().as_ref(),
                    w.old.as_ref(),
                    "{name}, run {run}: the backup {} is not the old version",
                    b.display()
                );
            }
        }
        if !tmp_files().is_empty() {
            mid_write += 1;
        }
    }
    assert!(
        killed > RUNS / 10,
        "{name}: only {killed} of {RUNS} runs were killed mid-way"
    );
    assert!(
        news.iter().any(|n| *n > 0),
        "{name}: no run got as far as writing"
    );
    // The next run sweeps what killed writers left: make sure something is
    // left (a run killed inside a write), then run once more to the end.
    let mut extra = 0;
    while tmp_files().is_empty() {
        extra += 1;
        assert!(
            extra <= 100,
            "{name}: no kill left a temporary file to sweep"
        );
        put_back(files);
        kill_after(&mut cmd(), "", moments.next(span));
    }
    let left = tmp_files().len();
    put_back(files);
    time_of(&mut cmd(), "");
    assert_eq!(
        tmp_files(),
        Vec::<PathBuf>::new(),
        "{name}: leftovers after a whole run"
    );
    for (i, w) in files.iter().enumerate() {
        assert_eq!(
            content(&w.path),
            new[i],
            "{name}: {} after a whole run",
            w.path.display()
        );
    }
    let per_file: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "{} {} old/{} new",
                w.path.file_name().unwrap().to_string_lossy(),
                olds[i],
                news[i]
            )
        })
        .collect();
    eprintln!(
        "crash: {name}: {RUNS} runs, {killed} killed before finishing, {mid_write} left a temporary file (killed mid-write), {left} temporary files swept by the next run; {}; 0 torn, 0 lost",
        per_file.join(", ")
    );
}

const REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

#[test]
fn a_runner_config_toml_survives_sigkill_mid_write() {
    let tmp = TempDir::new("crash-runner");
    let fixture = common::repo_root()
        .join("tests/data/gitlab/runner-config/05-comments-multiline/config.toml");
    let files = [
        Watched {
            path: tmp.join("config.toml"),
            old: Some(fs::read(fixture).unwrap()),
            // Not the default 0600: an edit keeps the file's own mode.
            mode: 0o640,
            parses: toml_parses,
        },
        Watched {
            path: tmp.join("job-docker-config.json"),
            old: None,
            mode: 0o644,
            parses: json_parses,
        },
    ];
    survives_sigkill("runner config.toml", 2, &files, &[tmp.path()], &|| {
        let mut cmd = Command::new(common::bin());
        cmd.env("HOME", tmp.path())
            .env_remove("ECR_AUTH_CONFIG")
            .args(["configure", "gitlab-runner", "--runner-config"])
            .arg(tmp.join("config.toml"))
            .args(["--registry", REGISTRY, "--jobs", "--job-docker-config"])
            .arg(tmp.join("job-docker-config.json"))
            .arg("--helper-path")
            .arg(tmp.join("docker-credential-ecr-login"));
        cmd
    });
}

#[test]
fn a_docker_config_json_survives_sigkill_mid_write() {
    let tmp = TempDir::new("crash-docker");
    let docker = tmp.join("docker");
    fs::create_dir_all(&docker).unwrap();
    let existing = br#"{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}},"credsStore":"desktop","proxies":{"default":{"noProxy":"127.0.0.1"}}}"#;
    let files = [
        Watched {
            path: docker.join("config.json"),
            old: Some(existing.to_vec()),
            mode: 0o600,
            parses: json_parses,
        },
        Watched {
            path: docker.join("auth.json"),
            old: Some(br#"{"auths":{"quay.io":{"auth":"cTpx"}}}"#.to_vec()),
            mode: 0o600,
            parses: json_parses,
        },
    ];
    survives_sigkill("docker config.json", 3, &files, &[&docker], &|| {
        let mut cmd = Command::new(common::bin());
        cmd.env("HOME", tmp.path())
            .env_remove("ECR_AUTH_CONFIG")
            .args(["configure", "docker", "--config-dir"])
            .arg(&docker)
            .arg("--auth-file")
            .arg(docker.join("auth.json"))
            .args(["--registry", REGISTRY]);
        cmd
    });
}

#[test]
fn a_dotenv_file_survives_sigkill_mid_write() {
    let ts = TokenServer::start();
    let tmp = TempDir::new("crash-dotenv");
    let out = tmp.join("out");
    fs::create_dir_all(&out).unwrap();
    let files = [Watched {
        path: out.join("ecr.env"),
        old: Some(b"DOCKER_AUTH_CONFIG={\"auths\":{}}\n".to_vec()),
        mode: 0o600,
        parses: dotenv_parses,
    }];
    let cmd = || {
        let mut cmd = Command::new(common::bin());
        common::apply_aws_env(&mut cmd, &ts.endpoint)
            .env("HOME", tmp.path())
            .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
            .env_remove("ECR_AUTH_CONFIG")
            .env_remove("AWS_ECR_DISABLE_CACHE")
            .args(["auth-config", "--format", "dotenv", "--output"])
            .arg(out.join("ecr.env"))
            .arg(REGISTRY);
        cmd
    };
    survives_sigkill("dotenv file", 4, &files, &[&out], &cmd);
    // One token for all the runs: the cache answered, AWS was asked once.
    assert_eq!(ts.calls(), 1);
}

#[test]
fn install_survives_sigkill_mid_copy() {
    let tmp = TempDir::new("crash-install");
    let dir = tmp.join("bin");
    fs::create_dir_all(&dir).unwrap();
    // The small static binary: a debug build is hundreds of megabytes.
    let bin = common::static_bin();
    let old = b"#!/bin/sh\necho an older ecr-auth\n".to_vec();
    let files: Vec<Watched> = [
        "ecr-auth",
        "docker-credential-ecr-login",
        "docker-credential-ecr-auth",
    ]
    .iter()
    .map(|n| Watched {
        path: dir.join(n),
        old: Some(old.clone()),
        mode: 0o755,
        parses: any_bytes,
    })
    .collect();
    survives_sigkill("install", 5, &files, &[&dir], &|| {
        let mut cmd = Command::new(&bin);
        cmd.args(["install", "--dir"]).arg(&dir);
        cmd
    });
    // What a whole run installed runs.
    let out = common::run_ok(Command::new(dir.join("docker-credential-ecr-login")).arg("version"));
    assert!(out.contains("ecr-auth"), "{out}");
}
