//! The aarch64 static binary (Graviton runners and Swarm nodes), cross-built by
//! `scripts/build-static aarch64`, run here under Debian's `qemu-aarch64-static` (user-mode
//! emulation; binfmt_misc is not available here, so qemu is called directly): `version`, the
//! credential-helper protocol against the lab (a real pull by skopeo through it, not-found for
//! a foreign host, `list`), `get-login-password` against moto, and the token cache, which the
//! x86_64 build reads too.
//!
//! The binary comes from `$ECR_AUTH_STATIC_BIN_AARCH64` (scripts/test builds it before the
//! tests), else it is built here with scripts/build-static (minutes).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NOT_FOUND: &str = "credentials not found in native keychain";

/// The aarch64 static release binary (see the module docs).
pub fn aarch64_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ECR_AUTH_STATIC_BIN_AARCH64") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "ECR_AUTH_STATIC_BIN_AARCH64={} is not a file",
            p.display()
        );
        return p;
    }
    let out = run(Command::new(repo_root().join("scripts/build-static"))
        .current_dir(repo_root())
        .arg("aarch64"));
    assert!(
        out.status.success(),
        "scripts/build-static aarch64 failed (run scripts/setup for Zig, cargo-zigbuild and the target):\n{}",
        output_text(&out)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let p = PathBuf::from(&path);
    if p.is_absolute() {
        p
    } else {
        repo_root().join(p)
    }
}

/// Debian's qemu-user-static; missing, the test fails and says what installs it.
pub fn qemu() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.into_iter()
        .map(|d| d.join("qemu-aarch64-static"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "qemu-aarch64-static is missing: run scripts/setup (it installs qemu-user-static)"
            )
        })
}

/// `qemu-aarch64-static PROGRAM` (PROGRAM: the binary, or a link to it whose name qemu hands
/// over as argv[0]).
fn arm(program: &Path) -> Command {
    let mut cmd = Command::new(qemu());
    cmd.arg(program);
    cmd
}

/// The helper's environment: the lab token endpoint, a config mapping the lab hosts to an
/// ECR account and region, a private cache and HOME.
fn helper_env<'a>(
    cmd: &'a mut Command,
    tmp: &TempDir,
    tokens: &TokenServer,
    config: &Path,
) -> &'a mut Command {
    apply_aws_env(cmd, &tokens.endpoint)
        .env("HOME", tmp.join("home"))
        .env("XDG_CONFIG_HOME", tmp.join("xdg"))
        .env("ECR_AUTH_CONFIG", config)
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
}

fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn map_config(tmp: &TempDir, hosts: &[&str]) -> PathBuf {
    let path = tmp.join("ecr-auth.toml");
    let text: String = hosts
        .iter()
        .map(|h| {
            format!("[[registry]]\nhost = \"{h}\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n\n")
        })
        .collect();
    std::fs::write(&path, text).expect("write config");
    path
}

/// "ecr-auth 0.2.0 (commit abc, target t)" → ("0.2.0", "abc", "t")
fn parse_version(line: &str) -> (String, String, String) {
    let rest = line
        .trim()
        .strip_prefix("ecr-auth ")
        .unwrap_or_else(|| panic!("not a version line: {line:?}"));
    let (version, rest) = rest.split_once(" (commit ").expect("(commit");
    let (commit, rest) = rest.split_once(", target ").expect(", target");
    let target = rest.strip_suffix(')').expect(")");
    (version.into(), commit.into(), target.into())
}

#[test]
fn aarch64_binary_is_static_and_names_its_build() {
    let bin = aarch64_bin();
    let desc = run_ok(Command::new("file").arg("-b").arg(&bin));
    assert!(desc.contains("ARM aarch64"), "{desc}");
    assert!(desc.contains("statically linked"), "{desc}");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= 15 * 1024 * 1024,
        "{size} bytes: over the 15 MB target"
    );

    let (version, commit, target) = parse_version(&run_ok(arm(&bin).arg("version")));
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!(target, "aarch64-unknown-linux-musl");
    // Built from the same tree as the x86_64 debug binary of this test run.
    let (_, host_commit, host_target) =
        parse_version(&run_ok(Command::new(crate::common::bin()).arg("version")));
    assert_eq!(host_target, env!("ECR_AUTH_TARGET"));
    assert_eq!(commit, host_commit);
    assert!(
        commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "commit {commit:?}"
    );
}

#[test]
fn aarch64_helper_gets_from_the_lab_caches_lists_and_refuses_foreign_hosts() {
    let bin = aarch64_bin();
    let tokens = TokenServer::start();
    let registry = Registry::start(&tokens.htpasswd);
    registry.push_test_image("team/app", "1.0", "AWS", &tokens.password());
    let tmp = TempDir::new("arm64");
    let config = map_config(&tmp, &[&registry.addr]);
    // Under the Go helper's name, as Docker and gitlab-runner call it.
    let helper = tmp.join("docker-credential-ecr-login");
    std::os::unix::fs::symlink(&bin, &helper).unwrap();

    // get: a token from the lab endpoint, right for the registry.
    let get = |input: &str| {
        with_stdin(
            helper_env(&mut arm(&helper), &tmp, &tokens, &config).arg("get"),
            input,
        )
    };
    let out = get(&format!("https://{}/v2/\n", registry.addr));
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(v["Username"], "AWS");
    assert_eq!(v["Secret"], tokens.password().as_str());
    assert!(
        v["ServerURL"]
            .as_str()
            .unwrap_or_default()
            .contains(&registry.addr),
        "{v}"
    );
    assert_eq!(
        registry.v2_status(Some(("AWS", &tokens.password()))),
        200,
        "the token opens the lab registry"
    );
    assert_eq!(tokens.calls(), 1);

    // The cache: a second get, and the x86_64 build reading the file the aarch64 one wrote,
    // make no call.
    let out = get(&registry.addr);
    assert!(out.status.success(), "{}", output_text(&out));
    let mut host = Command::new(crate::common::bin());
    helper_env(&mut host, &tmp, &tokens, &config).args(["docker-credential", "get"]);
    let out = with_stdin(&mut host, &registry.addr);
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(v["Secret"], tokens.password().as_str());
    assert_eq!(
        tokens.calls(),
        1,
        "both answered from the aarch64 binary's cache"
    );

    // A real pull through the aarch64 helper: skopeo calls docker-credential-ecr-login from
    // PATH, here a wrapper that runs it under qemu.
    let wrappers = tmp.join("wrappers");
    std::fs::create_dir_all(&wrappers).unwrap();
    let wrapper = wrappers.join("docker-credential-ecr-login");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            qemu().display(),
            helper.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let authfile = tmp.join("auth.json");
    std::fs::write(
        &authfile,
        serde_json::json!({ "credHelpers": { registry.addr.clone(): "ecr-login" } }).to_string(),
    )
    .unwrap();
    let mut inspect = skopeo(tmp.path());
    helper_env(&mut inspect, &tmp, &tokens, &config)
        .env("PATH", path_with(&wrappers))
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .arg(format!("docker://{}", registry.image("team/app", "1.0")));
    let manifest = run_ok(&mut inspect);
    assert!(manifest.contains("schemaVersion"), "{manifest}");
    assert_eq!(tokens.calls(), 1, "skopeo's get came from the cache too");

    // Not ECR: the protocol's not-found on stdout, the reason on stderr.
    let out = get("docker.io\n");
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an Amazon ECR registry"),
        "{}",
        output_text(&out)
    );

    // list: the configured registries (and those with a cached token), without the network.
    let out = with_stdin(
        helper_env(&mut arm(&helper), &tmp, &tokens, &config).arg("list"),
        "unused\n",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(v[&registry.addr], "AWS", "{v}");
    assert!(v.as_object().unwrap().values().all(|u| u == "AWS"), "{v}");
    assert_eq!(tokens.calls(), 1);
}

#[test]
fn aarch64_get_login_password_against_moto() {
    let bin = aarch64_bin();
    let moto = Moto::start();
    let tmp = TempDir::new("arm64-moto");
    let mut cmd = arm(&bin);
    apply_aws_env(&mut cmd, &moto.endpoint)
        .env("HOME", tmp.join("home"))
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .args(["get-login-password", "--region", "eu-west-1"]);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MOTO_PASSWORD}\n")
    );
}
