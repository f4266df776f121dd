//! `ecr-auth configure gitlab-runner` on a corpus of real-world-shaped
//! config.toml files (tests/data/gitlab/runner-config/<case>/): golden output,
//! golden dry-run diff, idempotence, parse-back, backup, mode kept, no key lost,
//! and every existing DOCKER_AUTH_CONFIG entry kept. Bad input (tests/data/gitlab/bad/)
//! fails with a clear message and leaves the file untouched.
//!
//! `ECR_AUTH_UPDATE_GOLDEN=1 cargo test --test configure_gitlab_runner` rewrites
//! the expected files (review the diff before committing).

use crate::common;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn data() -> PathBuf {
    common::repo_root().join("tests/data/gitlab")
}

/// The binary with a clean environment: no ecr-auth config, a private HOME.
fn ecr_auth(dir: &Path) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("xdg"));
    cmd
}

fn text(out: &Output) -> String {
    common::output_text(out)
}

/// Every key path of a TOML document (`runners[0].docker.volumes[2]`).
fn keys(v: &toml::Value, at: String, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                keys(v, p, out);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = format!("{at}[{i}]");
                out.insert(p.clone());
                keys(v, p, out);
            }
        }
        _ => {}
    }
}

/// The DOCKER_AUTH_CONFIG of every runner (by name), as JSON.
fn auth_configs(doc: &toml::Value) -> Vec<(String, Option<serde_json::Value>)> {
    doc["runners"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .unwrap_or(format!("#{}", i + 1));
            let v = r
                .get("environment")
                .and_then(|e| e.as_array())
                .and_then(|e| {
                    e.iter()
                        .filter_map(|x| x.as_str()?.strip_prefix("DOCKER_AUTH_CONFIG="))
                        .next_back()
                })
                .map(|s| serde_json::from_str(s).expect("DOCKER_AUTH_CONFIG is JSON"));
            (name, v)
        })
        .collect()
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("config.toml.bak-")
        })
        .collect();
    v.sort();
    v
}

fn golden(path: &Path, actual: &str) {
    if std::env::var_os("ECR_AUTH_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (ECR_AUTH_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "differs from {}", path.display());
}

fn check_case(case: &Path) {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let tmp = common::TempDir::new("rcfg");
    let dir = tmp.path();
    for e in std::fs::read_dir(case).unwrap().flatten() {
        let f = e.file_name().to_string_lossy().to_string();
        if f != "args" && !f.starts_with("expected") {
            std::fs::copy(e.path(), dir.join(&f)).unwrap();
        }
    }
    std::fs::write(
        dir.join("aws-credentials"),
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n",
    )
    .unwrap();
    let config = dir.join("config.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    let dir_s = dir.display().to_string();
    let args: Vec<String> = std::fs::read_to_string(case.join("args"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.replace("{dir}", &dir_s))
        .collect();
    let unplace = |s: &str| s.replace(&dir_s, "{dir}");
    let run = |extra: &[&str]| {
        let out = common::run(
            ecr_auth(dir)
                .args(["configure", "gitlab-runner", "--runner-config"])
                .arg(&config)
                .args(&args)
                .args(extra),
        );
        assert!(out.status.success(), "{name}: {}", text(&out));
        out
    };

    // 1. --dry-run: a diff on stdout, nothing written.
    let dry = run(&["--dry-run"]);
    golden(
        &case.join("expected.diff"),
        &unplace(&String::from_utf8_lossy(&dry.stdout)),
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original,
        "{name}: --dry-run wrote"
    );
    assert!(backups(dir).is_empty(), "{name}: --dry-run made a backup");
    assert!(
        !dir.join("job-docker-config.json").exists(),
        "{name}: --dry-run wrote the job config"
    );

    // 2. The real run: the golden file, a backup of the original, the mode kept.
    let out = run(&[]);
    let edited = std::fs::read_to_string(&config).unwrap();
    golden(&case.join("expected.toml"), &unplace(&edited));
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{name}: mode changed");
    let b = backups(dir);
    if edited == original {
        assert!(b.is_empty(), "{name}: backup without a change");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("up to date"),
            "{name}: {}",
            text(&out)
        );
    } else {
        assert_eq!(b.len(), 1, "{name}: one backup expected, got {b:?}");
        assert_eq!(
            std::fs::read_to_string(&b[0]).unwrap(),
            original,
            "{name}: backup is not the original"
        );
    }
    if dir.join("job-docker-config.json").exists() {
        let job = std::fs::read_to_string(dir.join("job-docker-config.json")).unwrap();
        golden(&case.join("expected-job-docker-config.json"), &job);
        let mode = std::fs::metadata(dir.join("job-docker-config.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode, 0o644,
            "{name}: the job config is read by any container user"
        );
    }

    // 3. Parse-back, no key lost, unselected runners unchanged, old entries kept.
    let before: toml::Value = toml::from_str(&original).unwrap();
    let after: toml::Value =
        toml::from_str(&edited).unwrap_or_else(|e| panic!("{name}: does not parse back: {e}"));
    let (mut kb, mut ka) = (BTreeSet::new(), BTreeSet::new());
    keys(&before, String::new(), &mut kb);
    keys(&after, String::new(), &mut ka);
    let lost: Vec<_> = kb.difference(&ka).collect();
    assert!(lost.is_empty(), "{name}: keys lost: {lost:?}");
    for ((rn, old), (_, new)) in auth_configs(&before).into_iter().zip(auth_configs(&after)) {
        let Some(old) = old else { continue };
        let new = new.unwrap_or_else(|| panic!("{name}: runner {rn} lost its DOCKER_AUTH_CONFIG"));
        for section in ["auths", "credHelpers"] {
            if let Some(entries) = old.get(section).and_then(|s| s.as_object()) {
                for (host, v) in entries {
                    assert_eq!(
                        new[section].get(host),
                        Some(v),
                        "{name}: runner {rn} lost {section}.{host}"
                    );
                }
            }
        }
        if let Some(store) = old.get("credsStore") {
            if !args.iter().any(|a| a == "--creds-store") {
                assert_eq!(
                    new.get("credsStore"),
                    Some(store),
                    "{name}: runner {rn} lost credsStore"
                );
            }
        }
        for (k, v) in old.as_object().unwrap() {
            assert!(
                new.get(k).is_some(),
                "{name}: runner {rn} lost key {k}: {v}"
            );
        }
    }
    // other environment entries stay, in order
    for (o, n) in before["runners"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["runners"].as_array().unwrap())
    {
        let envs = |r: &toml::Value| -> Vec<String> {
            r.get("environment")
                .and_then(|e| e.as_array())
                .map(|e| {
                    e.iter()
                        .filter_map(|x| x.as_str())
                        .filter(|s| !s.starts_with("DOCKER_AUTH_CONFIG="))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(envs(o), envs(n), "{name}: environment changed");
    }

    // 4. Idempotent: a second run changes nothing and makes no backup.
    let again = run(&[]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "{name}: second run changed the file"
    );
    assert_eq!(
        backups(dir).len(),
        b.len(),
        "{name}: second run made a backup"
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("config.toml: up to date, not changed"),
        "{name}: {stderr}"
    );
    let dry = run(&["--dry-run"]);
    assert!(
        dry.stdout.is_empty(),
        "{name}: a diff after the change: {}",
        text(&dry)
    );
}

#[test]
fn corpus_golden_idempotent_no_key_lost() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(data().join("runner-config"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "the corpus has {} cases", cases.len());
    for case in &cases {
        check_case(case);
    }
}

/// The goldens themselves say the right things (a reviewer's checks, in code).
#[test]
fn corpus_goldens_wire_what_was_asked() {
    let r = |case: &str| -> toml::Value {
        let text = std::fs::read_to_string(
            data()
                .join("runner-config")
                .join(case)
                .join("expected.toml"),
        )
        .unwrap();
        toml::from_str(&text).unwrap()
    };
    // default selection: docker and docker+machine, not shell or kubernetes
    let names: Vec<(String, bool)> = auth_configs(&r("03-mixed-executors"))
        .into_iter()
        .map(|(n, v)| (n, v.is_some_and(|v| v["credHelpers"].get(ECR).is_some())))
        .collect();
    assert_eq!(
        names,
        vec![
            ("shell-builder".into(), false),
            ("docker-small".into(), true),
            ("k8s".into(), false),
            ("autoscale-machine".into(), true)
        ]
    );
    // --runner picks exactly those
    let wired: Vec<bool> = auth_configs(&r("06-select-by-name"))
        .into_iter()
        .map(|(_, v)| v.is_some())
        .collect();
    assert_eq!(wired, vec![false, true, true]);
    // credsStore replaces nothing else
    let (_, v) = auth_configs(&r("07-creds-store")).remove(0);
    assert_eq!(
        v.unwrap(),
        serde_json::json!({"auths":{"registry.example.com":{"auth":"YTpi"}},"credsStore":"ecr-login"})
    );
    // DinD: privileged, and the mounts
    let d = &r("08-dind-privileged")["runners"][0]["docker"];
    assert_eq!(d["privileged"].as_bool(), Some(true));
    let vols: Vec<&str> = d["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(vols.contains(
        &"/usr/local/bin/docker-credential-ecr-login:/usr/local/bin/docker-credential-ecr-login:ro"
    ));
    assert!(vols.contains(&"{dir}/job-docker-config.json:/root/.docker/config.json:ro"));
    assert!(vols.contains(&"{dir}/aws-credentials:/root/.aws/credentials:ro"));
    // a mapped host from the ecr-auth config, and the config mounted into jobs
    let t = r("13-global-sections-ecr-config");
    let (_, v) = auth_configs(&t).remove(0);
    assert_eq!(
        v.unwrap()["credHelpers"],
        serde_json::json!({"registry.internal:5000":"ecr-login", ECR:"ecr-login"})
    );
    let vols = t["runners"][0]["docker"]["volumes"].as_array().unwrap();
    assert!(vols
        .iter()
        .any(|v| v.as_str() == Some("{dir}/ecr-auth.toml:/etc/ecr-auth/config.toml:ro")));
    // an old credentials mount to the same place is replaced, not doubled
    let vols = r("12-replace-volume")["runners"][0]["docker"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    let creds: Vec<_> = vols
        .iter()
        .filter(|v| v.as_str().unwrap().contains(":/root/.aws/credentials"))
        .collect();
    assert_eq!(creds.len(), 1);
}

fn bad_input(config_text: &str, args: &[&str], needles: &[&str]) {
    let tmp = common::TempDir::new("rbad");
    let config = tmp.join("config.toml");
    std::fs::write(&config, config_text).unwrap();
    let before = std::fs::metadata(&config).unwrap().modified().unwrap();
    let out = common::run(
        ecr_auth(tmp.path())
            .args(["configure", "gitlab-runner", "--runner-config"])
            .arg(&config)
            .args(args),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("ecr-auth: error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in: {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        config_text,
        "the file changed"
    );
    assert_eq!(
        std::fs::metadata(&config).unwrap().modified().unwrap(),
        before
    );
    assert!(backups(tmp.path()).is_empty());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "stray files left"
    );
}

fn bad(name: &str) -> String {
    std::fs::read_to_string(data().join("bad").join(name)).unwrap()
}

#[test]
fn unparsable_config_is_refused_untouched() {
    bad_input(
        &bad("unparsable.toml"),
        &["--registry", ECR],
        &[
            "config.toml is not valid TOML",
            "line 8",
            "fix it and run again",
        ],
    );
}

#[test]
fn unknown_runner_is_refused_untouched() {
    let text = std::fs::read_to_string(data().join("runner-config/06-select-by-name/config.toml"))
        .unwrap();
    bad_input(
        &text,
        &["--runner", "docker-relase", "--registry", ECR],
        &["no runner named \"docker-relase\"", "\"docker-untrusted\" (docker), \"docker-release\" (docker), \"docker-nightly\" (docker)"],
    );
}

#[test]
fn invalid_existing_docker_auth_config_is_refused_untouched() {
    bad_input(
        &bad("invalid-docker-auth-config.toml"),
        &["--registry", ECR],
        &[
            "runner \"bad-json\"",
            "DOCKER_AUTH_CONFIG in `environment` is not valid JSON",
            "fix or remove it",
        ],
    );
    bad_input(
        &bad("environment-not-array.toml"),
        &["--registry", ECR],
        &["runner \"odd\"", "`environment` must be an array"],
    );
}

#[test]
fn other_mistakes_say_what_to_do() {
    let one = std::fs::read_to_string(data().join("runner-config/01-register-default/config.toml"))
        .unwrap();
    bad_input(
        &bad("no-runners.toml"),
        &["--registry", ECR],
        &["no [[runners]]", "gitlab-runner register"],
    );
    bad_input(
        &one,
        &["--registry", "docker.io"],
        &["docker.io is not an Amazon ECR registry", "not mapped"],
    );
    bad_input(
        &one,
        &[],
        &["no registries", "--registry HOST", "--creds-store"],
    );
    bad_input(
        &one,
        &["--registry", "not a host"],
        &["not a registry host name"],
    );
    bad_input(
        &one,
        &[
            "--registry",
            ECR,
            "--jobs",
            "--job-docker-config",
            "/tmp/x.json",
            "--aws-credentials",
            "/nonexistent/creds",
        ],
        &["--aws-credentials /nonexistent/creds: no such file"],
    );
    // no runner with a Docker executor
    let shell = "[[runners]]\n  name = \"s\"\n  executor = \"shell\"\n";
    bad_input(
        shell,
        &["--registry", ECR],
        &[
            "no runner with a Docker executor",
            "\"s\" (shell)",
            "--runner",
        ],
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let tmp = common::TempDir::new("rmiss");
    let out = common::run(
        ecr_auth(tmp.path())
            .args(["configure", "gitlab-runner", "--runner-config"])
            .arg(tmp.join("nope.toml"))
            .args(["--registry", ECR]),
    );
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot read") && e.contains("nope.toml") && e.contains("--runner-config"),
        "{e}"
    );
}

#[test]
fn the_runner_file_and_the_ecr_auth_config_are_never_confused() {
    let tmp = common::TempDir::new("rtwo");
    let runner = tmp.join("config.toml");
    let original =
        std::fs::read_to_string(data().join("runner-config/01-register-default/config.toml"))
            .unwrap();
    std::fs::write(&runner, &original).unwrap();
    let ecr = tmp.join("ecr-auth.toml");
    std::fs::write(
        &ecr,
        "[[registry]]\nhost = \"registry.internal:5000\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n",
    )
    .unwrap();
    let cmd = || {
        let mut c = ecr_auth(tmp.path());
        c.env("ECR_AUTH_CONFIG", "/nonexistent/env-ecr-auth.toml");
        c
    };
    // The bug: the global --config was silently dropped for the runner's --config.
    let out = common::run(
        cmd()
            .arg("--config")
            .arg(&ecr)
            .args(["configure", "gitlab-runner", "--config"])
            .arg(&runner)
            .args(["--registry", "registry.internal:5000"]),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--config is given twice")
            && e.contains(&format!(
                "`ecr-auth --config {}` names the ecr-auth config file",
                ecr.display()
            ))
            && e.contains(&format!("--runner-config {}", runner.display())),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&runner).unwrap(), original);

    // Each file under its own name: the mapped host comes from the ecr-auth config,
    // given before the command or after it.
    for global_after in [false, true] {
        std::fs::write(&runner, &original).unwrap();
        let mut c = cmd();
        if !global_after {
            c.arg("--config").arg(&ecr);
        }
        c.args(["configure", "gitlab-runner", "--runner-config"])
            .arg(&runner);
        if global_after {
            c.arg("--config").arg(&ecr);
        }
        let out = common::run(c.args(["--registry", "registry.internal:5000"]));
        assert!(out.status.success(), "{}", text(&out));
        let after = std::fs::read_to_string(&runner).unwrap();
        assert!(
            after.contains(r#"\"registry.internal:5000\":\"ecr-login\""#)
                || after.contains(r#""registry.internal:5000":"ecr-login""#),
            "{after}"
        );
    }

    // The older spelling alone still names the runner's file; the ecr-auth config
    // then comes from $ECR_AUTH_CONFIG (here: missing, so the mapped host is unknown).
    std::fs::write(&runner, &original).unwrap();
    let out = common::run(
        cmd()
            .args(["configure", "gitlab-runner", "--config"])
            .arg(&runner)
            .args(["--registry", "registry.internal:5000"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("env-ecr-auth.toml"),
        "the ecr-auth config named by the environment: {e}"
    );
    let out = common::run(
        cmd()
            .env_remove("ECR_AUTH_CONFIG")
            .args(["configure", "gitlab-runner", "--config"])
            .arg(&runner)
            .args(["--registry", ECR]),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::read_to_string(&runner).unwrap().contains(ECR));

    // Only the ecr-auth config: the runner's file is asked for by its name.
    let out = common::run(cmd().arg("--config").arg(&ecr).args([
        "configure",
        "gitlab-runner",
        "--registry",
        ECR,
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("names the ecr-auth config file") && e.contains("--runner-config PATH"),
        "{e}"
    );

    // Elsewhere the global --config is one file: twice is a usage error, not a silent pick.
    let out = common::run(cmd().arg("--config").arg(&ecr).args([
        "get-login-password",
        "--config",
        "/tmp/other.toml",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--config is given twice"),
        "{}",
        text(&out)
    );
}
