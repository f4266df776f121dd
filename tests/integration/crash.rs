//! Crash consistency: ecr-auth killed with SIGKILL at random moments while it
//! writes. Afterwards every file is the old or the new version, whole, parses and
//! keeps its mode; a leftover temporary file is never read as real and the next
//! run sweeps it.

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
