//! S1 and S2 end to end, the way gitlab-runner does it, against the lab:
//! a private image in the lab registry (mapped to ECR account 123456789012 /
//! eu-west-1 by the ecr-auth config), tokens from moto.
//!
//! - S1: `configure gitlab-runner` writes DOCKER_AUTH_CONFIG into config.toml;
//!   the runner hands exactly that document to Docker as a client config. Here:
//!   the docker CLI with `--config DIR` whose config.json *is* that value, the
//!   helper installed with `ecr-auth install` on PATH, pulling from a real dockerd.
//! - S2: a job-like container (FROM scratch + busybox) started with exactly the
//!   `volumes` that `configure gitlab-runner --jobs` wrote (static helper,
//!   config.json, AWS credentials file, ecr-auth config), on the host network:
//!   the helper inside gets the credentials, which the registry accepts; and the
//!   static docker CLI mounted into the job (as in Docker-in-Docker) pulls through
//!   the mounted config.json.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Dockerd, Moto, Registry, TempDir, MOTO_ACCOUNT, MOTO_PASSWORD};

fn ecr_auth_config(dir: &Path, registry: &Registry) -> PathBuf {
    let path = dir.join("ecr-auth.toml");
    std::fs::write(&path, registry.ecr_mapping(MOTO_ACCOUNT, "eu-west-1")).unwrap();
    path
}

/// The last DOCKER_AUTH_CONFIG of the first runner, and its `[runners.docker] volumes`.
pub(crate) fn runner_wiring(config_toml: &Path) -> (String, Vec<String>) {
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(config_toml).unwrap()).unwrap();
    let r = &doc["runners"][0];
    let auth = r["environment"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.strip_prefix("DOCKER_AUTH_CONFIG="))
        .next_back()
        .expect("DOCKER_AUTH_CONFIG in environment")
        .to_string();
    let volumes = r
        .get("docker")
        .and_then(|d| d.get("volumes"))
        .and_then(|v| v.as_array())
        .map(|v| v.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (auth, volumes)
}

/// `configure gitlab-runner` with `ecr_config` and `extra` arguments on a copy of the
/// registered runner's config.toml in `tmp`; returns that file.
pub(crate) fn configure(tmp: &TempDir, ecr_config: &Path, extra: &[&str]) -> PathBuf {
    let config = tmp.join("config.toml");
    std::fs::copy(
        common::repo_root().join("tests/data/gitlab/runner-config/01-register-default/config.toml"),
        &config,
    )
    .unwrap();
    common::run_ok(
        Command::new(common::bin())
            .env_remove("ECR_AUTH_CONFIG")
            .env("HOME", tmp.join("home"))
            .arg("--config")
            .arg(ecr_config)
            .args(["configure", "gitlab-runner", "--runner-config"])
            .arg(&config)
            .args(extra),
    );
    config
}

/// The environment the helper runs with on the runner host: moto as AWS, a
/// private cache, the helper directory first on PATH.
fn host_env(cmd: &mut Command, moto: &Moto, tmp: &TempDir, bin_dir: &Path, ecr_config: &Path) {
    common::apply_aws_env(cmd, &moto.endpoint);
    cmd.env("PATH", common::path_with(bin_dir))
        .env("ECR_AUTH_CONFIG", ecr_config)
        .env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .env("HOME", tmp.join("home"));
}

#[test]
fn s1_the_executor_pulls_a_private_image_with_the_written_docker_auth_config() {
    let moto = Moto::start();
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    let digest = registry.push_test_image("team/app", "1.0", "AWS", MOTO_PASSWORD);
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("s1");
    let ecr_config = ecr_auth_config(tmp.path(), &registry);
    let config = configure(&tmp, &ecr_config, &[]);
    let (auth_config, _) = runner_wiring(&config);
    assert_eq!(
        auth_config,
        format!(r#"{{"credHelpers":{{"{}":"ecr-login"}}}}"#, registry.addr)
    );

    // The helper where the runner looks for it: `ecr-auth install --dir`.
    let bin_dir = tmp.join("bin");
    common::run_ok(
        Command::new(common::bin())
            .args(["install", "--dir"])
            .arg(&bin_dir),
    );
    assert!(bin_dir.join("docker-credential-ecr-login").is_file());

    // What the runner does with DOCKER_AUTH_CONFIG: a client config holding exactly it.
    let client = tmp.join("runner-docker-config");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::write(client.join("config.json"), &auth_config).unwrap();
    let image = registry.image("team/app", "1.0");

    // Without it: no credentials, no image.
    let mut anon = dockerd.docker();
    host_env(&mut anon, &moto, &tmp, &bin_dir, &ecr_config);
    let denied = common::run_fails(anon.args(["pull", "-q", &image]));
    assert!(
        denied.contains("no basic auth credentials") || denied.contains("unauthorized"),
        "{denied}"
    );

    let mut pull = dockerd.docker();
    host_env(&mut pull, &moto, &tmp, &bin_dir, &ecr_config);
    common::run_ok(
        pull.arg("--config")
            .arg(&client)
            .args(["pull", "-q", &image]),
    );
    let digests = dockerd.repo_digests(&image);
    assert!(
        digests.contains(&digest),
        "pulled {digests}, pushed {digest}"
    );
}

#[test]
fn s2_a_job_container_gets_credentials_through_the_mounted_helper() {
    let static_bin = common::static_bin();
    let moto = Moto::start();
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    let digest = registry.push_test_image("team/base", "2.0", "AWS", MOTO_PASSWORD);
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("s2");
    let ecr_config = ecr_auth_config(tmp.path(), &registry);

    // The runner host: the static helper installed where jobs will mount it from,
    // and an AWS credentials file (moto accepts any key).
    let host_bin = tmp.join("host-bin");
    common::run_ok(
        Command::new(&static_bin)
            .args(["install", "--dir"])
            .arg(&host_bin),
    );
    let creds = tmp.join("aws-credentials");
    std::fs::write(&creds, "[default]\naws_access_key_id = AKIAECRAUTHLABTEST00\naws_secret_access_key = ecr-auth-lab-secret\n").unwrap();
    let job_config = tmp.join("job-docker-config.json");
    let config = configure(
        &tmp,
        &ecr_config,
        &[
            "--jobs",
            "--helper-path",
            host_bin
                .join("docker-credential-ecr-login")
                .to_str()
                .unwrap(),
            "--job-docker-config",
            job_config.to_str().unwrap(),
            "--aws-credentials",
            creds.to_str().unwrap(),
        ],
    );
    let (auth_config, volumes) = runner_wiring(&config);
    let job_doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&job_config).unwrap()).unwrap();
    assert_eq!(
        job_doc,
        serde_json::from_str::<serde_json::Value>(&auth_config).unwrap(),
        "jobs get the same wiring as the executor"
    );
    let ours: Vec<&String> = volumes.iter().filter(|v| v.as_str() != "/cache").collect();
    assert_eq!(
        ours.len(),
        4,
        "helper, config.json, credentials, ecr-auth config: {volumes:?}"
    );

    // A job image like docker, Kaniko or buildah images: a shell, root with HOME
    // /root (from /etc/passwd), /usr/local/bin on PATH, nothing of ours in it.
    let base = dockerd.busybox_image();
    let passwd = tmp.join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    dockerd.build_image(
        "lab/job:latest",
        &[("passwd", &passwd)],
        &format!("FROM {base}\nCOPY passwd /etc/passwd\nENV PATH=/usr/local/bin:/usr/bin:/bin\n"),
    );
    let job = |script: &str, extra: &[String]| {
        let mut cmd = dockerd.docker();
        cmd.args(["run", "--rm", "--network", "host"]);
        for v in &volumes {
            if v != "/cache" {
                cmd.arg("-v").arg(v);
            }
        }
        cmd.args(extra);
        // The lab's AWS endpoint; a real job talks to AWS itself.
        cmd.args([
            "-e",
            &format!("AWS_ENDPOINT_URL={}", moto.endpoint),
            "-e",
            "AWS_EC2_METADATA_DISABLED=true",
        ]);
        cmd.args(["lab/job:latest", "sh", "-c", script]);
        cmd
    };

    // The helper inside the job, fed by the mounted files only.
    let script = format!(
        "set -e\n\
         out=$(echo {addr} | docker-credential-ecr-login get)\n\
         echo \"$out\"\n\
         secret=$(echo \"$out\" | sed 's/.*\"Secret\":\"\\([^\"]*\\)\".*/\\1/')\n\
         auth=$(printf 'AWS:%s' \"$secret\" | base64 | tr -d '\\n')\n\
         wget -q -O - --header \"Authorization: Basic $auth\" http://{addr}/v2/team/base/tags/list\n",
        addr = registry.addr
    );
    let out = common::run_ok(&mut job(&script, &[]));
    let mut lines = out.lines();
    let helper: serde_json::Value =
        serde_json::from_str(lines.next().unwrap()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(helper["Username"], "AWS");
    assert_eq!(helper["Secret"], MOTO_PASSWORD);
    assert_eq!(helper["ServerURL"], registry.addr);
    let tags: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"name": "team/base", "tags": ["2.0"]})
    );
    assert_eq!(
        registry.v2_status(Some(("AWS", helper["Secret"].as_str().unwrap()))),
        200
    );

    // docker inside the job (as with DinD): the static CLI mounted in, talking to
    // a daemon; it reads the mounted /root/.docker/config.json and runs the helper.
    let docker_cli = common::tool("docker");
    let extra = vec![
        "-v".to_string(),
        format!("{}:/usr/local/bin/docker:ro", docker_cli.display()),
        "-v".to_string(),
        format!("{}:/var/run/docker.sock", dockerd.socket.display()),
    ];
    let image = registry.image("team/base", "2.0");
    let out = common::run_ok(&mut job(&format!("docker pull -q {image} && docker image inspect --format '{{{{json .RepoDigests}}}}' {image}"), &extra));
    assert!(out.contains(&digest), "{out}");

    // Control: the same job without the mounted config.json cannot pull.
    common::run_ok(dockerd.docker().args(["rmi", "-f", &image]));
    let no_config: Vec<String> = volumes
        .iter()
        .filter(|v| !v.contains("/root/.docker/config.json"))
        .cloned()
        .collect();
    let mut cmd = dockerd.docker();
    cmd.args(["run", "--rm", "--network", "host"]);
    for v in no_config.iter().filter(|v| *v != "/cache") {
        cmd.arg("-v").arg(v);
    }
    cmd.args(&extra).args([
        "lab/job:latest",
        "sh",
        "-c",
        &format!("docker pull -q {image}"),
    ]);
    let denied = common::run_fails(&mut cmd);
    assert!(
        denied.contains("no basic auth credentials") || denied.contains("unauthorized"),
        "{denied}"
    );
}
