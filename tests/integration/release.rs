//! `scripts/release`, `install.sh` and `.gitlab-ci.yml`, end to end on the lab:
//! - the artifacts: both static binaries, their tarballs (binary, README, LICENSE) and a
//!   SHA256SUMS that verifies; each binary at most 15 MB;
//! - `install.sh` against a file server on 127.0.0.1: picks the architecture, verifies the
//!   checksum, installs; refuses a file whose checksum does not match;
//! - the two OCI image-layout tars: pushed with `skopeo copy --all` to the lab registry, each
//!   a two-platform index (`skopeo inspect --raw`, architectures checked down to each image's
//!   config); the amd64 image pulled by the lab dockerd and run as the credential helper; the
//!   `-shell` image run as a GitLab job would run it (`entrypoint: [""]`, `sh -c`) doing
//!   `ecr-auth gitlab login` against moto, and the dotenv it writes pulls the image itself;
//! - `.gitlab-ci.yml`: parsed; every job, stage, need and script it names exists.
//!
//! The release is made once per test process from the binaries scripts/test built
//! (`ECR_AUTH_STATIC_BIN`, `ECR_AUTH_STATIC_BIN_AARCH64`), into `CARGO_TARGET_TMPDIR`.

use crate::arm64::{aarch64_bin, qemu};
use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ROLE: &str = "arn:aws:iam::123456789012:role/gitlab-ecr-pull";

/// `scripts/release VERSION` into a dir of the target's tmp dir, once per test process.
fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let dist = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("release-test-dist");
        let out = run(Command::new(repo_root().join("scripts/release"))
            .arg(VERSION)
            .env("ECR_AUTH_DIST_DIR", &dist)
            .env("ECR_AUTH_STATIC_BIN", static_bin())
            .env("ECR_AUTH_STATIC_BIN_AARCH64", aarch64_bin())
            .env("PATH", path_with(qemu().parent().unwrap())));
        assert!(
            out.status.success(),
            "scripts/release failed (run scripts/setup):\n{}",
            output_text(&out)
        );
        dist
    })
}

fn sha256(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn release_writes_checked_binaries_tarballs_and_sums() {
    let dist = dist();
    for (arch, desc_arch, target) in [
        ("amd64", "x86-64", "x86_64-unknown-linux-musl"),
        ("arm64", "ARM aarch64", "aarch64-unknown-linux-musl"),
    ] {
        let name = format!("ecr-auth-{VERSION}-linux-{arch}");
        let bin = dist.join(&name);
        let desc = run_ok(Command::new("file").arg("-b").arg(&bin));
        assert!(
            desc.contains(desc_arch) && desc.contains("statically linked"),
            "{desc}"
        );
        let size = std::fs::metadata(&bin).unwrap().len();
        assert!(size <= 15 * 1024 * 1024, "{name}: {size} bytes, over 15 MB");
        let version = if arch == "amd64" {
            run_ok(Command::new(&bin).arg("version"))
        } else {
            run_ok(Command::new(qemu()).arg(&bin).arg("version"))
        };
        assert!(
            version.starts_with(&format!("ecr-auth {VERSION} (commit "))
                && version.trim_end().ends_with(&format!("target {target})")),
            "{version}"
        );
        let listing = run_ok(
            Command::new("tar")
                .arg("-tzf")
                .arg(dist.join(format!("{name}.tar.gz"))),
        );
        let files: BTreeSet<&str> = listing.lines().collect();
        let want: BTreeSet<String> = ["", "ecr-auth", "README.md", "LICENSE"]
            .iter()
            .map(|f| format!("{name}/{f}"))
            .collect();
        assert_eq!(files, want.iter().map(String::as_str).collect());
        // The tarball's binary is the same file.
        let inner = run(Command::new("tar")
            .arg("-xzOf")
            .arg(dist.join(format!("{name}.tar.gz")))
            .arg(format!("{name}/ecr-auth")));
        assert!(inner.stdout == std::fs::read(&bin).unwrap());
    }
    // SHA256SUMS covers every artifact and verifies.
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let listed: BTreeSet<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let on_disk: Vec<String> = std::fs::read_dir(dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    // two binaries, their two tarballs, two image archives, install.sh
    assert_eq!(on_disk.len(), 7, "{on_disk:?}");
    for f in &on_disk {
        assert!(
            listed.contains(f.as_str()),
            "{f} not in SHA256SUMS:\n{sums}"
        );
    }
    run_ok(
        Command::new("sha256sum")
            .current_dir(dist)
            .args(["-c", "SHA256SUMS"]),
    );
    for f in on_disk {
        eprintln!(
            "{f}: {} bytes",
            std::fs::metadata(dist.join(&f)).unwrap().len()
        );
    }
}

/// A plain HTTP file server on 127.0.0.1 serving `root`.
fn file_server(root: &Path, log: &Path) -> (Proc, String) {
    let (proc, port) = Proc::spawn_on_free_port(
        "http.server",
        log,
        |port| {
            let mut cmd = Command::new(tool("python3"));
            cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
                .arg(root)
                .arg(port.to_string());
            cmd
        },
        |port| http("GET", &format!("http://127.0.0.1:{port}/"), &[], b"").is_ok(),
    );
    (proc, format!("http://127.0.0.1:{port}"))
}

#[test]
fn install_sh_picks_the_architecture_verifies_and_installs() {
    let dist = dist();
    let tmp = TempDir::new("install-sh");
    // good/: the release as published; bad/: the same with a wrong checksum for amd64.
    for dir in ["good", "bad"] {
        std::fs::create_dir_all(tmp.join(format!("www/{dir}"))).unwrap();
        for arch in ["amd64", "arm64"] {
            let name = format!("ecr-auth-{VERSION}-linux-{arch}");
            std::fs::copy(dist.join(&name), tmp.join(format!("www/{dir}/{name}"))).unwrap();
        }
    }
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    std::fs::write(tmp.join("www/good/SHA256SUMS"), &sums).unwrap();
    let amd64 = format!("ecr-auth-{VERSION}-linux-amd64");
    let good_sum = sha256(&dist.join(&amd64));
    let bad_sum: String = good_sum
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    std::fs::write(
        tmp.join("www/bad/SHA256SUMS"),
        sums.replace(&good_sum, &bad_sum),
    )
    .unwrap();
    let (_server, url) = file_server(&tmp.join("www"), &tmp.join("http.log"));

    let install = |base: &str, args: &[&str], arch: Option<&str>, cwd: &Path| {
        std::fs::create_dir_all(cwd).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(repo_root().join("install.sh"))
            .args(["--base-url", &format!("{url}/{base}"), "--version", VERSION])
            .args(args)
            .current_dir(cwd)
            .env_remove("ECR_AUTH_ARCH");
        if let Some(a) = arch {
            cmd.env("ECR_AUTH_ARCH", a);
        }
        run(&mut cmd)
    };

    // This machine (x86_64): the amd64 binary, installed with its helper names.
    let bin_dir = tmp.join("bin");
    let out = install(
        "good",
        &["--dir", bin_dir.to_str().unwrap()],
        None,
        &tmp.join("cwd"),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    for name in [
        "ecr-auth",
        "docker-credential-ecr-login",
        "docker-credential-ecr-auth",
    ] {
        assert!(bin_dir.join(name).is_file(), "{name} not installed");
    }
    assert_eq!(sha256(&bin_dir.join("ecr-auth")), good_sum);
    let version = run_ok(Command::new(bin_dir.join("ecr-auth")).arg("version"));
    assert!(
        version.contains("target x86_64-unknown-linux-musl"),
        "{version}"
    );

    // An arm64 machine (uname -m aarch64, forced here): the arm64 binary.
    let cwd = tmp.join("arm");
    let out = install("good", &["--download-only"], Some("aarch64"), &cwd);
    assert!(out.status.success(), "{}", output_text(&out));
    let arm = cwd.join(format!("ecr-auth-{VERSION}-linux-arm64"));
    let desc = run_ok(Command::new("file").arg("-b").arg(&arm));
    assert!(desc.contains("ARM aarch64"), "{desc}");

    // A checksum that does not match: refused, nothing installed.
    let bad_dir = tmp.join("bad-bin");
    let out = install(
        "bad",
        &["--dir", bad_dir.to_str().unwrap()],
        None,
        &tmp.join("cwd"),
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        output_text(&out)
    );
    assert!(!bad_dir.join("ecr-auth").exists());

    // An architecture without a build: a clear refusal.
    let out = install(
        "good",
        &["--download-only"],
        Some("riscv64"),
        &tmp.join("rv"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no ecr-auth build for this architecture"),
        "{}",
        output_text(&out)
    );
}

/// The digest of the one index a layout tar's index.json points at.
fn layout_index_digest(tar: &Path) -> String {
    let index = run_ok(Command::new("tar").arg("-xOf").arg(tar).arg("index.json"));
    let v: serde_json::Value = serde_json::from_str(&index).unwrap();
    let m = v["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 1, "{v}");
    assert_eq!(m[0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    m[0]["digest"].as_str().unwrap().to_string()
}

/// Pushes a layout tar as `repo:tag` and checks the index in the registry: both platforms,
/// each image's config of the right architecture. Returns the index digest.
fn push_and_inspect(
    tmp: &TempDir,
    registry: &Registry,
    authfile: &Path,
    tar: &Path,
    tag: &str,
) -> String {
    let image = format!("docker://{}", registry.image("ecr-auth", tag));
    run_ok(
        skopeo(tmp.path())
            .args([
                "copy",
                "--quiet",
                "--all",
                "--dest-tls-verify=false",
                "--dest-authfile",
            ])
            .arg(authfile)
            .arg(format!("oci-archive:{}", tar.display()))
            .arg(&image),
    );
    let inspect = |what: &[&str], reference: &str| -> String {
        run_ok(
            skopeo(tmp.path())
                .arg("inspect")
                .args(what)
                .args(["--tls-verify=false", "--authfile"])
                .arg(authfile)
                .arg(reference),
        )
    };
    let raw = inspect(&["--raw"], &image);
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    let mut platforms = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap().to_string();
        assert_eq!(m["platform"]["os"], "linux", "{raw}");
        let by_digest = format!(
            "docker://{}/ecr-auth@{}",
            registry.addr,
            m["digest"].as_str().unwrap()
        );
        let config: serde_json::Value =
            serde_json::from_str(&inspect(&["--config", "--raw"], &by_digest)).unwrap();
        assert_eq!(config["architecture"], arch.as_str());
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/usr/local/bin/ecr-auth"])
        );
        platforms.push(arch);
    }
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"], "{raw}");
    // The registry serves the index exactly as released (same digest).
    let digest = format!("sha256:{}", {
        let f = tmp.join("pushed-index.json");
        std::fs::write(&f, raw.as_bytes()).unwrap();
        sha256(&f)
    });
    assert_eq!(digest, layout_index_digest(tar), "{tag}");
    eprintln!("ecr-auth:{tag} index {digest}");
    digest
}

#[test]
fn release_images_push_as_two_platform_indexes_and_run() {
    let dist = dist();
    let tokens = TokenServer::start();
    let moto = Moto::start();
    // The registry takes moto's ECR password: the -shell job's own login pulls from it.
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    let dockerd = Dockerd::start();
    let tmp = TempDir::new("release-img");
    let authfile = tmp.join("auth.json");
    write_authfile(&authfile, &[(&registry.addr, "AWS", MOTO_PASSWORD)]);

    push_and_inspect(
        &tmp,
        &registry,
        &authfile,
        &dist.join(format!("ecr-auth-{VERSION}-oci.tar")),
        VERSION,
    );
    let shell_tag = format!("{VERSION}-shell");
    push_and_inspect(
        &tmp,
        &registry,
        &authfile,
        &dist.join(format!("ecr-auth-{VERSION}-shell-oci.tar")),
        &shell_tag,
    );

    // The lab dockerd pulls the amd64 image out of the index.
    write_authfile(
        &dockerd.config_dir().join("config.json"),
        &[(&registry.addr, "AWS", MOTO_PASSWORD)],
    );
    let image = registry.image("ecr-auth", VERSION);
    run_ok(dockerd.docker().args(["pull", "-q", &image]));
    let arch =
        run_ok(
            dockerd
                .docker()
                .args(["image", "inspect", "-f", "{{.Architecture}}", &image]),
        );
    assert_eq!(arch.trim(), "amd64");
    let version = run_ok(dockerd.docker().args(["run", "--rm", &image, "version"]));
    assert!(
        version.contains("target x86_64-unknown-linux-musl"),
        "{version}"
    );

    // Swarm without a registry: examples/swarm/build-image loads it from the release archive.
    let loaded = run_ok(
        Command::new(repo_root().join("examples/swarm/build-image"))
            .arg("lab/ecr-auth-release:test")
            .env(
                "ECR_AUTH_OCI_ARCHIVE",
                dist.join(format!("ecr-auth-{VERSION}-oci.tar")),
            )
            .env("DOCKER_HOST", &dockerd.host)
            .env("PATH", path_with(tool("skopeo").parent().unwrap())),
    );
    assert_eq!(loaded.trim(), "lab/ecr-auth-release:test");
    let version =
        run_ok(
            dockerd
                .docker()
                .args(["run", "--rm", "lab/ecr-auth-release:test", "version"]),
        );
    assert!(
        version.contains("target x86_64-unknown-linux-musl"),
        "{version}"
    );

    // The pulled image as the credential helper, under the Go helper's name, against the lab
    // token endpoint (FROM scratch: only the binary, its names and the CA bundle).
    let config = tmp.join("config.toml");
    std::fs::write(
        &config,
        "[[registry]]\nhost = \"127.0.0.1:5999\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n",
    )
    .unwrap();
    let mut cmd = dockerd.docker();
    apply_aws_env(&mut cmd, &tokens.endpoint);
    cmd.args(["run", "--rm", "-i", "--network", "host"]);
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.args(["-e", name]);
    }
    cmd.args(["-e", "ECR_AUTH_CONFIG=/etc/ecr-auth/config.toml", "-v"])
        .arg(format!("{}:/etc/ecr-auth/config.toml:ro", config.display()))
        .args(["--entrypoint", "docker-credential-ecr-login", &image, "get"]);
    let out = {
        use std::io::Write;
        use std::process::Stdio;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"127.0.0.1:5999\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(v["Secret"], tokens.password().as_str());
    assert_eq!(tokens.calls(), 1);

    // The -shell image as a GitLab job image (`entrypoint: [""]`, the script through sh):
    // OIDC login against moto's STS, a dotenv in the job's directory.
    let shell_image = registry.image("ecr-auth", &shell_tag);
    run_ok(dockerd.docker().args(["pull", "-q", &shell_image]));
    let job_dir = tmp.join("job");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::write(
        job_dir.join("ecr-auth.toml"),
        format!(
            "[[registry]]\nhost = \"{}\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n",
            registry.addr
        ),
    )
    .unwrap();
    let token = gitlab_jwt(now_unix() + 300);
    let mut cmd = dockerd.docker();
    cmd.env("GITLAB_OIDC_TOKEN", &token)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("ECR_REGISTRY", &registry.addr)
        .args(["run", "--rm", "--network", "host", "--entrypoint", "", "-v"])
        .arg(format!("{}:/builds/job", job_dir.display()))
        .args(["-w", "/builds/job"]);
    for e in ["GITLAB_OIDC_TOKEN", "AWS_ENDPOINT_URL", "ECR_REGISTRY"] {
        cmd.args(["-e", e]);
    }
    for e in [
        "AWS_EC2_METADATA_DISABLED=true",
        "AWS_CONFIG_FILE=/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
        "CI_PROJECT_ID=42",
        "CI_PIPELINE_ID=1001",
        "CI_JOB_ID=7",
        "ECR_AUTH_CONFIG=/builds/job/ecr-auth.toml",
    ] {
        cmd.args(["-e", e]);
    }
    cmd.args([
        &shell_image,
        "sh",
        "-c",
        &format!("set -e; ecr-auth gitlab login --role-arn {ROLE} --registry \"$ECR_REGISTRY\"; ls -l ecr-auth.env; echo job-done"),
    ]);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job-done"),
        "{}",
        output_text(&out)
    );
    let assumed = moto.assumed_roles();
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!(assumed[0]["role_arn"], ROLE);

    // The dotenv's DOCKER_AUTH_CONFIG, as a later job gets it, pulls from the registry.
    let env_text = std::fs::read_to_string(job_dir.join("ecr-auth.env")).unwrap();
    let doc = env_text
        .lines()
        .find_map(|l| l.strip_prefix("DOCKER_AUTH_CONFIG="))
        .unwrap_or_else(|| panic!("no DOCKER_AUTH_CONFIG in {env_text}"));
    let later = tmp.join("later-auth.json");
    std::fs::write(&later, doc).unwrap();
    run_ok(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
            .arg(&later)
            .arg(format!("docker://{shell_image}")),
    );
}

/// Commands a CI script line runs from this repository (`scripts/x`, `./install.sh`, ...).
fn repo_commands(line: &str) -> Vec<String> {
    line.split(|c: char| {
        c.is_whitespace() || c == ';' || c == '(' || c == '"' || c == '\'' || c == '$'
    })
    .map(|w| w.trim_start_matches("./"))
    .filter(|w| w.starts_with("scripts/") || *w == "install.sh")
    .map(str::to_string)
    .collect()
}

#[test]
fn gitlab_ci_yml_builds_both_arches_tests_and_publishes_on_tags() {
    let text = std::fs::read_to_string(repo_root().join(".gitlab-ci.yml")).expect(".gitlab-ci.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let top = doc.as_mapping().expect("a mapping");
    let reserved = [
        "stages",
        "variables",
        "default",
        "workflow",
        "include",
        "image",
        "services",
        "cache",
        "before_script",
        "after_script",
    ];
    let stages: Vec<String> = doc["stages"]
        .as_sequence()
        .expect("stages")
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    // Jobs with their `extends:` templates resolved (the job's own keys win).
    let jobs: Vec<(String, serde_yaml::Value)> = top
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v))
        .filter(|(k, _)| !k.starts_with('.') && !reserved.contains(&k.as_str()))
        .map(|(k, v)| {
            let mut job = v.as_mapping().expect("a job is a mapping").clone();
            let bases: Vec<String> = match &v["extends"] {
                serde_yaml::Value::String(s) => vec![s.clone()],
                serde_yaml::Value::Sequence(seq) => seq
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
                _ => vec![],
            };
            for base in bases.iter().rev() {
                let template = doc[base.as_str()]
                    .as_mapping()
                    .unwrap_or_else(|| panic!("{k} extends unknown {base}"));
                for (tk, tv) in template {
                    job.entry(tk.clone()).or_insert_with(|| tv.clone());
                }
            }
            (k, serde_yaml::Value::Mapping(job))
        })
        .collect();
    let names: BTreeSet<&str> = jobs.iter().map(|(k, _)| k.as_str()).collect();
    let lines = |job: &serde_yaml::Value| -> Vec<String> {
        let mut out = Vec::new();
        for key in ["before_script", "script", "after_script"] {
            if let Some(seq) = job[key].as_sequence() {
                out.extend(
                    seq.iter()
                        .map(|l| l.as_str().expect("a script line").to_string()),
                );
            }
        }
        out
    };
    let mut all = String::new();
    let mut called = BTreeSet::new();
    for (name, job) in &jobs {
        let stage = job["stage"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no stage"));
        assert!(
            stages.iter().any(|s| s == stage),
            "{name}: unknown stage {stage}"
        );
        for need in job["needs"].as_sequence().into_iter().flatten() {
            let need = need.as_str().or_else(|| need["job"].as_str()).unwrap();
            assert!(names.contains(need), "{name} needs unknown job {need}");
        }
        let script = lines(job);
        assert!(!script.is_empty(), "{name}: no script");
        for line in &script {
            for cmd in repo_commands(line) {
                let path = repo_root().join(&cmd);
                let meta = std::fs::metadata(&path)
                    .unwrap_or_else(|_| panic!("{name} calls {cmd}, which does not exist"));
                use std::os::unix::fs::PermissionsExt;
                assert!(
                    meta.permissions().mode() & 0o111 != 0,
                    "{cmd} is not executable"
                );
                called.insert(cmd);
            }
            // The line as this job runs it: its own variables filled in.
            let mut line = line.clone();
            if let Some(vars) = job["variables"].as_mapping() {
                for (k, v) in vars {
                    let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap_or_default());
                    for form in [format!("\"${k}\""), format!("${{{k}}}"), format!("${k}")] {
                        line = line.replace(&form, v);
                    }
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        // Publishing happens on tags only.
        if stage == "publish" {
            let rules = serde_yaml::to_string(&job["rules"]).unwrap();
            assert!(
                rules.contains("$CI_COMMIT_TAG"),
                "{name} publishes without a tag rule: {rules}"
            );
        }
    }
    for must in ["scripts/build-static", "scripts/test", "scripts/release"] {
        assert!(called.contains(must), "no job calls {must}: {called:?}");
    }
    assert!(all.contains("scripts/build-static x86_64"), "{all}");
    assert!(all.contains("scripts/build-static aarch64"), "{all}");
    assert!(
        all.contains("/packages/generic/ecr-auth/"),
        "no upload to the generic package registry"
    );
    assert!(
        all.contains("skopeo copy --all oci-archive:"),
        "no image push"
    );
    assert!(
        all.contains("$CI_REGISTRY_IMAGE"),
        "not the project's container registry"
    );
}

/// The README's Install section (between its SECTION markers): code blocks by language.
fn install_section_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- SECTION:install -->")
        .expect("start marker");
    let end = readme
        .find("<!-- /SECTION:install -->")
        .expect("end marker");
    let mut blocks = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in readme[start..end].lines() {
        match (&mut cur, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) => cur = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(cur.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(cur.is_none(), "unclosed code block");
    blocks
}

#[test]
fn readme_install_paths_use_what_the_release_and_install_sh_provide() {
    let blocks = install_section_blocks();
    let install_sh = std::fs::read_to_string(repo_root().join("install.sh")).unwrap();
    let release = std::fs::read_to_string(repo_root().join("scripts/release")).unwrap();
    let sh: String = blocks
        .iter()
        .filter(|(l, _)| l == "sh")
        .map(|(_, t)| t.as_str())
        .collect();
    // install.sh is called only with options it has.
    let mut checked = 0;
    for line in sh.lines().filter(|l| l.contains("install.sh")) {
        for flag in line
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            if line.find(flag) > line.find("sh -s --") {
                assert!(
                    install_sh.contains(&format!("{flag})")),
                    "install.sh has no {flag}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "no install.sh line with options in:\n{sh}");
    // The download way checks the checksum before installing.
    let sum = sh.find("sha256sum").expect("a sha256sum check");
    let inst = sh.find(" install --dir").expect("an install step");
    assert!(sum < inst, "checksum after install:\n{sh}");
    // The file names are the release's.
    for name in ["-linux-$arch", "-oci.tar", "-shell-oci.tar", "SHA256SUMS"] {
        assert!(sh.contains(name), "README does not use {name}");
        let pattern = name.replace("$arch", "");
        assert!(
            release.contains(&pattern),
            "scripts/release writes no {pattern}"
        );
    }
    // S3: the -shell image as the login job's image, with the shell entrypoint GitLab needs.
    let yaml = blocks
        .iter()
        .find(|(l, _)| l == "yaml")
        .map(|(_, t)| t.clone())
        .expect("a yaml block");
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("valid YAML");
    let job = &doc["ecr-login"];
    assert!(job["image"]["name"].as_str().unwrap().ends_with("-shell"));
    assert_eq!(
        job["image"]["entrypoint"],
        serde_yaml::from_str::<serde_yaml::Value>("[\"\"]").unwrap()
    );
    let script = serde_yaml::to_string(&job["script"]).unwrap();
    assert!(script.contains("ecr-auth gitlab login"), "{script}");
    assert!(job["artifacts"]["reports"]["dotenv"].as_str().is_some());
}
