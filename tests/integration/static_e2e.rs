//! The static (musl) binary as the credential helper inside containers with no
//! libc at all: a `FROM scratch` image and a busybox image, on the lab dockerd,
//! against the lab's token endpoint (`--network host`, loopback only).
//!
//! The binary comes from `scripts/build-static` (run by `scripts/test` before the
//! tests); `ECR_AUTH_STATIC_BIN` overrides its path.

use crate::common;
use std::process::Command;

use crate::common::*;

/// The environment the helper gets inside the container (`-e` names only: the
/// values come from the docker CLI's own environment, so no secret is in argv).
fn container_env(cmd: &mut Command, tokens: &TokenServer) -> Vec<&'static str> {
    apply_aws_env(cmd, &tokens.endpoint);
    cmd.env("ECR_AUTH_CONFIG", "/etc/ecr-auth/config.toml")
        .env("ECR_AUTH_CACHE_DIR", "/cache");
    vec![
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
        "ECR_AUTH_CONFIG",
        "ECR_AUTH_CACHE_DIR",
    ]
}

fn run_in_container(
    dockerd: &Dockerd,
    tokens: &TokenServer,
    image: &str,
    config: &std::path::Path,
    shell: &[&str],
) -> String {
    let mut cmd = dockerd.docker();
    let names = container_env(&mut cmd, tokens);
    cmd.args(["run", "--rm", "-i", "--network", "host"]);
    for n in names {
        cmd.args(["-e", n]);
    }
    cmd.arg("-v")
        .arg(format!("{}:/etc/ecr-auth/config.toml:ro", config.display()));
    cmd.arg(image).args(shell);
    run_ok(&mut cmd)
}

#[test]
fn the_static_binary_is_the_helper_in_scratch_and_busybox_containers() {
    let bin = common::static_bin();
    let desc = run_ok(Command::new("file").arg("-b").arg(&bin));
    assert!(desc.contains("statically linked"), "{desc}");

    let tokens = TokenServer::start();
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("static");
    let config = tmp.join("config.toml");
    std::fs::write(&config, "[[registry]]\nhost = \"127.0.0.1:5999\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n").unwrap();

    // FROM scratch: nothing but the binary, under the Go helper's name.
    dockerd.build_image(
        "lab/ecr-auth-scratch:test",
        &[("ecr-auth", &bin)],
        "FROM scratch\nCOPY ecr-auth /docker-credential-ecr-login\nENTRYPOINT [\"/docker-credential-ecr-login\"]\n",
    );
    // docker run -i passes stdin through; the helper reads the server URL from it.
    let mut cmd = dockerd.docker();
    let names = container_env(&mut cmd, &tokens);
    cmd.args(["run", "--rm", "-i", "--network", "host"]);
    for n in names {
        cmd.args(["-e", n]);
    }
    cmd.arg("-v")
        .arg(format!("{}:/etc/ecr-auth/config.toml:ro", config.display()));
    cmd.args(["lab/ecr-auth-scratch:test", "get"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"127.0.0.1:5999\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(v["Secret"], tokens.password().as_str());
    assert_eq!(v["ServerURL"], "127.0.0.1:5999");

    // busybox: installed by `ecr-auth install`, called from a shell like a CI job would.
    let base = dockerd.busybox_image();
    dockerd.build_image(
        "lab/ecr-auth-busybox:test",
        &[("ecr-auth", &bin)],
        &format!("FROM {base}\nCOPY ecr-auth /tmp/ecr-auth\nRUN [\"/tmp/ecr-auth\", \"install\", \"--dir\", \"/usr/local/bin\"]\nENV PATH=/usr/local/bin:/bin\n"),
    );
    let out = run_in_container(
        &dockerd,
        &tokens,
        "lab/ecr-auth-busybox:test",
        &config,
        &["sh", "-c", "echo https://127.0.0.1:5999/v2/ | docker-credential-ecr-login get && ecr-auth get-login-password 127.0.0.1:5999 | wc -c && echo docker.io | docker-credential-ecr-auth get; echo exit=$?"],
    );
    let first = out.lines().next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["Secret"], tokens.password().as_str());
    let len: usize = out.lines().nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(len, tokens.password().len() + 1, "password + newline");
    assert!(
        out.contains("credentials not found in native keychain\nexit=1"),
        "{out}"
    );
    assert_eq!(
        tokens.calls(),
        2,
        "one fetch per container (each has its own cache)"
    );
}
