//! Attacks on a root helper through the file system, and what a crash or a closed
//! pipe could leak (issue "Secure by construction"). The lab runs as root; another
//! user is played by `nobody` (files chowned to it, or `setpriv` to run as it).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, TempDir, TokenServer};

const HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const NOBODY: u32 = 65534;

fn helper(ts: &TokenServer, tmp: &TempDir, cache: &Path) -> Command {
    let mut cmd = Command::new(common::bin());
    common::apply_aws_env(&mut cmd, &ts.endpoint)
        .env("HOME", tmp.path())
        .env("ECR_AUTH_CACHE_DIR", cache)
        .env("ECR_AUTH_TIMEOUT", "20s")
        .env_remove("ECR_AUTH_LOG")
        .env_remove("ECR_AUTH_LOG_FILE")
        .env_remove("AWS_ECR_DISABLE_CACHE")
        .args(["docker-credential", "get"]);
    cmd
}

/// Runs `cmd` with `stdin`; fails the test if it takes longer than `limit`
/// (a FIFO planted in the cache would otherwise hang it forever).
fn feed_within(cmd: &mut Command, stdin: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the helper");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the helper hung: {}", common::output_text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn secret(out: &Output) -> String {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not a helper answer: {}", common::output_text(out)));
    v["Secret"].as_str().unwrap().to_string()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// The cache entry file the helper wrote (one fetch, one file).
fn only_entry(cache: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[test]
fn a_cache_directory_of_another_user_is_not_used_nor_chmodded() {
    let ts = TokenServer::start();
    let tmp = TempDir::new("sec-dir");
    let cache = tmp.join("cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    chown(&cache, NOBODY);
    let out = feed_within(
        &mut helper(&ts, &tmp, &cache),
        HOST,
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::output_text(&out));
    assert_eq!(
        secret(&out),
        ts.password(),
        "served from AWS, not the cache"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "not using the token cache: {} is owned by uid {NOBODY}",
            cache.display()
        )),
        "{err}"
    );
    let meta = fs::metadata(&cache).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (NOBODY, 0o777),
        "left as it was"
    );
    assert_eq!(
        fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing written into it"
    );
}

#[test]
fn a_symlink_at_the_cache_directory_is_not_followed() {
    let ts = TokenServer::start();
    let tmp = TempDir::new("sec-link");
    let target = tmp.join("elsewhere");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let cache = tmp.join("cache");
    std::os::unix::fs::symlink(&target, &cache).unwrap();
    let out = feed_within(
        &mut helper(&ts, &tmp, &cache),
        HOST,
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(
        fs::metadata(&target).unwrap().mode() & 0o777,
        0o755,
        "target not chmodded"
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn planted_entries_and_locks_are_refused_and_nothing_hangs() {
    let ts = TokenServer::start();
    let tmp = TempDir::new("sec-entry");
    let cache = tmp.join("cache");
    let first = feed_within(
        &mut helper(&ts, &tmp, &cache),
        HOST,
        Duration::from_secs(30),
    );
    let real = secret(&first);
    let entry = only_entry(&cache);
    let key = entry.file_stem().unwrap().to_string_lossy().into_owned();

    // A forged entry owned by another user is not served.
    let mut forged: serde_json::Value = serde_json::from_slice(&fs::read(&entry).unwrap()).unwrap();
    forged["password"] = "forged-by-nobody".into();
    fs::write(&entry, forged.to_string()).unwrap();
    chown(&entry, NOBODY);
    let out = feed_within(
        &mut helper(&ts, &tmp, &cache),
        HOST,
        Duration::from_secs(30),
    );
    assert_eq!(secret(&out), real, "{}", common::output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("is owned by uid {NOBODY}")), "{err}");

    // A FIFO at the entry: no hang, for get and list.
    fs::remove_file(&entry).unwrap();
    let c = std::ffi::CString::new(entry.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = feed_within(
        &mut helper(&ts, &tmp, &cache),
        HOST,
        Duration::from_secs(30),
    );
    assert_eq!(secret(&out), real);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a regular file"));
    let mut list = Command::new(common::bin());
    common::apply_aws_env(&mut list, &ts.endpoint)
        .env("HOME", tmp.path())
        .env("ECR_AUTH_CACHE_DIR", &cache)
        .args(["docker-credential", "list"]);
    let out = feed_within(&mut list, "unused", Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", common::output_text(&out));

    // A symlink at the lock: not followed, nothing created at its target.
    fs::remove_file(&entry).unwrap();
    let lock = cache.join(format!("{key}.lock"));
    let _ = fs::remove_file(&lock);
    let victim = tmp.join("created-through-the-link");
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let out = feed_within(
        &mut helper(&ts, &tmp, &cache),
        HOST,
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::output_text(&out));
    assert!(!victim.exists(), "the lock symlink was followed");
}

#[test]
fn the_process_is_not_dumpable_and_writes_no_core() {
    let tmp = TempDir::new("sec-dump");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // As `nobody`, blocked reading stdin: /proc/PID/mem belongs to root when the
    // process made itself non-dumpable, and its core limit is 0.
    let mut child = Command::new(common::tool("setpriv"))
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(common::bin())
        .args(["docker-credential", "get"])
        .env("HOME", tmp.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status_uid, limits) = loop {
        let status = fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string);
        let exe = fs::read_link(proc_dir.join("exe")).unwrap_or_default();
        if uid.as_deref() == Some("65534") && exe == common::bin() {
            break (
                uid.unwrap(),
                fs::read_to_string(proc_dir.join("limits")).unwrap(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "the helper did not start as nobody"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The process hardens itself first thing in main, just after exec: poll.
    let mut owner = fs::metadata(proc_dir.join("mem")).unwrap().uid();
    while owner != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        owner = fs::metadata(proc_dir.join("mem")).unwrap().uid();
    }
    let limits = fs::read_to_string(proc_dir.join("limits")).unwrap_or(limits);
    drop(child.stdin.take());
    let _ = child.wait_with_output();
    assert_eq!(status_uid, "65534");
    assert_eq!(
        owner, 0,
        "/proc/{pid}/mem of a non-dumpable process belongs to root"
    );
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(&core[4..6], ["0", "0"], "{limits}");
}

#[test]
fn a_closed_pipe_ends_the_process_quietly_without_a_core() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(common::bin())
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first write
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(!out.status.core_dumped());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_hanging_credential_process_is_bounded_for_every_waiting_helper() {
    let tmp = TempDir::new("sec-hang");
    let config = tmp.join("aws-config");
    fs::write(&config, "[profile hang]\ncredential_process = sleep 40\n").unwrap();
    let start = |cache: &Path| {
        let mut cmd = Command::new(common::bin());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("HOME", tmp.path())
            .env("AWS_PROFILE", "hang")
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("ECR_AUTH_CACHE_DIR", cache)
            .env("ECR_AUTH_TIMEOUT", "2s")
            .args(["docker-credential", "get"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(HOST.as_bytes())
            .unwrap();
        child
    };
    let cache = tmp.join("cache");
    let began = Instant::now();
    // Two helpers for the same key: the second waits on the first one's lock.
    let first = start(&cache);
    std::thread::sleep(Duration::from_millis(300));
    let second = start(&cache);
    let outs = [first, second].map(|c| c.wait_with_output().unwrap());
    let took = began.elapsed();
    for out in &outs {
        assert_eq!(out.status.code(), Some(1), "{}", common::output_text(out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("looking up AWS credentials (profile \"hang\" (AWS_PROFILE)) failed: no answer within 2s"),
            "{stdout}"
        );
    }
    // Each waits at most the deadline for the lock and the deadline for its own
    // lookup: never the 40 s the credential_process hangs.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
