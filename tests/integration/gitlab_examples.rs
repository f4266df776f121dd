//! examples/gitlab: every file parses (YAML, TOML, JSON), and the values in
//! them are the ones the commands generate: the runner config.toml is what the
//! register scripts' `ecr-auth configure --broker` line writes, the Compose files
//! give the runner the broker's socket and no AWS key, every `ecr-auth` command in
//! the examples (examples/broker and examples/swarm too) is one the CLI accepts,
//! the S2 jobs point at the config.json the runner mounts, and the S3 pipelines' `ecr-auth gitlab login`
//! lines, run against the lab (moto's STS and ECR), produce the dotenv file and
//! the DOCKER_AUTH_CONFIG line the pipelines use.
//!
//! `ECR_AUTH_UPDATE_GOLDEN=1` rewrites runner/config.toml and runner/job-docker-config.json.

use crate::common;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Moto, TempDir};

/// Where the example runner lives on its host, in the example files.
const SRV: &str = "/srv/gitlab-runner";

fn examples() -> PathBuf {
    common::repo_root().join("examples/gitlab")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(examples().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `KEY=VALUE` lines of a .env file.
fn dotenv(rel: &str) -> BTreeMap<String, String> {
    read(rel)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Splits a shell command line into words (double quotes group; no other syntax).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Replaces `$NAME` (longest names first) from `vars`.
fn expand(word: &str, vars: &BTreeMap<String, String>) -> String {
    let mut w = word.to_string();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        w = w.replace(&format!("${n}"), &vars[n]);
    }
    assert!(!w.contains('$'), "unexpanded variable in {word:?}");
    w
}

/// The line of a script that starts with `prefix`.
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"))
}

fn golden(rel: &str, actual: &str) {
    let path = examples().join(rel);
    if std::env::var_os("ECR_AUTH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    assert_eq!(
        actual,
        std::fs::read_to_string(&path).unwrap(),
        "{rel} is not what the command writes"
    );
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_example_parses() {
    let mut files = Vec::new();
    all_files(&examples(), &mut files);
    let mut parsed = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.display();
        match f.extension().and_then(|e| e.to_str()) {
            Some("yml") | Some("yaml") => {
                let v: serde_yaml::Value =
                    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(v.is_mapping(), "{name}");
                parsed += 1;
            }
            Some("toml") => {
                toml::from_str::<toml::Table>(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                parsed += 1;
            }
            Some("json") => {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                parsed += 1;
            }
            _ => {}
        }
        assert!(
            !text.contains("aws ecr get-login-password") && !text.contains("| jq"),
            "{name}: the old way"
        );
    }
    assert!(parsed >= 12, "only {parsed} example files parsed");
    // GitLab CI files: every job has a script; none logs in by hand.
    for f in files
        .iter()
        .filter(|f| f.to_string_lossy().ends_with(".gitlab-ci.yml"))
    {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        for (k, job) in doc.as_mapping().unwrap() {
            let k = k.as_str().unwrap();
            if ["variables", "stages", "default", "workflow", "include"].contains(&k)
                || k.starts_with('.')
            {
                continue;
            }
            let script = job["script"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{}: job {k} has no script", f.display()));
            // GitLab wants each line a string: an unquoted `KEY: value` would be a mapping.
            for l in script {
                let l = l.as_str().unwrap_or_else(|| {
                    panic!(
                        "{}: job {k}: a script line is not a string: {l:?}",
                        f.display()
                    )
                });
                assert!(!l.contains("docker login"), "{k}");
            }
        }
    }
}

#[test]
fn runner_example_is_what_the_register_scripts_write() {
    let env = dotenv("runner/.env");
    for script in ["runner/register", "runner/register-complete"] {
        let text = read(script);
        assert!(text.contains("ecr-auth install --dir ./bin"), "{script}");
        let tmp = TempDir::new("example-runner");
        std::fs::create_dir_all(tmp.join("config")).unwrap();
        std::fs::copy(
            examples().join("runner/config.registered.toml"),
            tmp.join("config/config.toml"),
        )
        .unwrap();
        let mut vars = env.clone();
        vars.insert("PWD".into(), tmp.path().display().to_string());
        let argv: Vec<String> = words(line_starting(&text, "ecr-auth configure gitlab-runner"))
            .iter()
            .map(|w| expand(w, &vars))
            .collect();
        common::run_ok(
            Command::new(common::bin())
                .env_remove("ECR_AUTH_CONFIG")
                .env("HOME", tmp.join("home"))
                .env("XDG_CONFIG_HOME", tmp.join("xdg"))
                .current_dir(tmp.path())
                .args(&argv[1..]),
        );
        let unplace = |s: String| s.replace(&tmp.path().display().to_string(), SRV);
        golden(
            "runner/config.toml",
            &unplace(std::fs::read_to_string(tmp.join("config/config.toml")).unwrap()),
        );
        golden(
            "runner/job-docker-config.json",
            &std::fs::read_to_string(tmp.join("config/job-docker-config.json")).unwrap(),
        );
    }

    // The compose file mounts what config.toml and the runner need, from the same places.
    let config: toml::Value = toml::from_str(&read("runner/config.toml")).unwrap();
    let runner = &config["runners"][0];
    let environment: Vec<&str> = runner["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        environment,
        vec![
            format!(
                r#"DOCKER_AUTH_CONFIG={{"credHelpers":{{"{}":"ecr-login"}}}}"#,
                env["ECR_REGISTRY"]
            )
            .as_str(),
            "ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock",
        ]
    );
    let job_volumes: Vec<&str> = runner["docker"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // S2 through the broker: the socket (read-write), the helper, config.json; no AWS file.
    assert_eq!(
        job_volumes,
        vec![
            "/cache",
            "/srv/gitlab-runner/bin/docker-credential-ecr-login:/usr/local/bin/docker-credential-ecr-login:ro",
            "/srv/gitlab-runner/config/job-docker-config.json:/root/.docker/config.json:ro",
            "/run/ecr-auth/broker.sock:/run/ecr-auth/broker.sock",
        ]
    );
    let strs = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let broker_dir = "/run/ecr-auth";
    for compose in [
        "runner/docker-compose.yaml",
        "runner/docker-compose-complete.yaml",
    ] {
        let c = yaml(compose);
        let runner = &c["services"]["runner"];
        let vols = strs(&runner["volumes"]);
        for want in [
            "./config:/etc/gitlab-runner",
            "${DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock",
            "./bin/docker-credential-ecr-login:/usr/local/bin/docker-credential-ecr-login:ro",
            "ecr-auth-run:/run/ecr-auth",
        ] {
            assert!(
                vols.iter().any(|v| v == want),
                "{compose}: {want} in {vols:?}"
            );
        }
        // No AWS key in the runner (nor so in any job): the broker alone has one.
        assert!(
            !vols.iter().any(|v| v.contains(".aws")),
            "{compose}: {vols:?}"
        );
        assert!(runner["environment"]
            .as_mapping()
            .unwrap()
            .keys()
            .all(|k| !k.as_str().unwrap().starts_with("AWS_")));
        assert_eq!(
            runner["environment"]["ECR_AUTH_BROKER"].as_str(),
            Some("unix:///run/ecr-auth/broker.sock"),
            "{compose}"
        );
        let broker = &c["services"]["ecr-auth-broker"];
        let bvols = strs(&broker["volumes"]);
        assert!(
            bvols.contains(
                &"${BROKER_CREDENTIALS_FILE}:/etc/ecr-auth/aws-credentials:ro".to_string()
            ),
            "{compose}: {bvols:?}"
        );
        assert!(bvols.contains(&"ecr-auth-run:/run/ecr-auth".to_string()));
        assert_eq!(
            broker["environment"]["AWS_SHARED_CREDENTIALS_FILE"].as_str(),
            Some("/etc/ecr-auth/aws-credentials"),
            "{compose}"
        );
        assert!(bvols.contains(&"./ecr-auth.toml:/etc/ecr-auth/config.toml:ro".to_string()));
        // The shared volume is the host's directory of the socket config.toml mounts into jobs.
        assert_eq!(
            c["volumes"]["ecr-auth-run"]["driver_opts"]["device"].as_str(),
            Some(format!("${{ECR_AUTH_RUN_DIR:-{broker_dir}}}").as_str()),
            "{compose}"
        );
        assert_eq!(
            broker["command"],
            yaml("runner/docker-compose.yaml")["services"]["ecr-auth-broker"]["command"],
            "{compose}: the same broker"
        );
    }
    assert!(job_volumes
        .iter()
        .any(|v| v.starts_with(&format!("{broker_dir}/broker.sock:"))));
    // The broker's allow-list holds the registry the runner is wired for.
    ecr_auth::config::Config::parse(&read("runner/ecr-auth.toml"), Path::new("ecr-auth.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let broker_config: toml::Value = toml::from_str(&read("runner/ecr-auth.toml")).unwrap();
    assert_eq!(
        broker_config["broker"]["allow"],
        toml::Value::Array(vec![toml::Value::String(env["ECR_REGISTRY"].clone())])
    );
    let complete = yaml("runner/docker-compose-complete.yaml");
    assert_eq!(
        complete["networks"]["ecr-lab"]["name"].as_str(),
        Some("ecr-lab")
    );
    assert!(read("runner/register-complete").contains("--docker-network-mode ecr-lab"));
}

/// Every `ecr-auth` command the examples show (scripts, pipelines, comments, the
/// broker's Compose `command:` and systemd `ExecStart`) is one our CLI accepts:
/// clap rejects an unknown subcommand or flag before it gets to `--help`.
#[test]
fn every_ecr_auth_command_in_the_examples_is_valid() {
    let mut files = Vec::new();
    all_files(&examples(), &mut files);
    all_files(&common::repo_root().join("examples/broker"), &mut files);
    all_files(&common::repo_root().join("examples/swarm"), &mut files);
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.display().to_string();
        for line in text.lines() {
            // Comments show commands indented (`#   ecr-auth ...`); prose isn't.
            let l = match line.trim().strip_prefix('#') {
                Some(c) if c.starts_with("  ") => c.trim(),
                Some(_) => continue,
                None => line.trim(),
            };
            let l = l.strip_prefix("- ").unwrap_or(l);
            let l = l.strip_prefix("ExecStart=/usr/local/bin/").unwrap_or(l);
            // (`ecr-auth   text` with aligned columns is a listing, not a command.)
            if let Some(rest) = l.strip_prefix("ecr-auth ").filter(|r| !r.starts_with(' ')) {
                // A trailing comment is no argument.
                let rest = rest.split("  #").next().unwrap();
                commands.push((name.clone(), words(rest)));
            }
        }
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            for (svc, def) in doc["services"].as_mapping().into_iter().flatten() {
                let image = def["image"].as_str().unwrap_or_default();
                if !image.contains("ecr-auth") {
                    continue;
                }
                if let Some(cmd) = def["command"].as_sequence() {
                    let argv = cmd
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string())
                        .collect();
                    commands.push((format!("{name} service {}", svc.as_str().unwrap()), argv));
                }
            }
        }
    }
    for sub in ["configure", "install", "serve", "swarm", "gitlab"] {
        assert!(
            commands
                .iter()
                .any(|(_, a)| a.first().map(String::as_str) == Some(sub)),
            "no `ecr-auth {sub}` in the examples: {commands:?}"
        );
    }
    for (whence, argv) in &commands {
        let out = common::run(Command::new(common::bin()).args(argv).arg("--help"));
        assert!(
            out.status.success(),
            "{whence}: ecr-auth {}\n{}",
            argv.join(" "),
            common::output_text(&out)
        );
    }
}

#[test]
fn s2_jobs_use_the_config_json_the_runner_mounts() {
    let config: toml::Value = toml::from_str(&read("runner/config.toml")).unwrap();
    let dests: Vec<String> = config["runners"][0]["docker"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str()?.split(':').nth(1).map(str::to_string))
        .collect();
    let mounted = "/root/.docker/config.json";
    assert!(dests.iter().any(|d| d == mounted));
    let kaniko = yaml("gitlab-ci/kaniko.gitlab-ci.yml");
    assert_eq!(
        kaniko["build-kaniko"]["variables"]["DOCKER_CONFIG"].as_str(),
        Some("/root/.docker")
    );
    let buildah = yaml("gitlab-ci/buildah.gitlab-ci.yml");
    assert_eq!(
        buildah["build-buildah"]["variables"]["REGISTRY_AUTH_FILE"].as_str(),
        Some(mounted)
    );
    let dind = yaml("gitlab-ci/dind.gitlab-ci.yml");
    assert!(dind["build-dind"]["services"][0]
        .as_str()
        .unwrap()
        .ends_with("-dind"));
    let ecr = dotenv("runner/.env")["ECR_REGISTRY"].clone();
    for f in ["dind", "kaniko", "buildah", "private-job-image"] {
        let doc = yaml(&format!("gitlab-ci/{f}.gitlab-ci.yml"));
        assert_eq!(
            doc["variables"]["ECR_REGISTRY"].as_str(),
            Some(ecr.as_str()),
            "{f}"
        );
    }
    // The helper inside jobs answers for the registry the runner was wired for.
    let job: serde_json::Value =
        serde_json::from_str(&read("runner/job-docker-config.json")).unwrap();
    assert_eq!(
        job,
        serde_json::json!({"credHelpers": {ecr.as_str(): "ecr-login"}})
    );
}

/// Runs a pipeline's `ecr-auth gitlab ...` line the way the job would: its
/// variables, an OIDC token under the `id_tokens:` name, AWS = moto.
fn run_job_line(
    moto: &Moto,
    tmp: &TempDir,
    doc: &serde_yaml::Value,
    job: &str,
    prefix: &str,
) -> std::process::Output {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in doc["variables"].as_mapping().unwrap() {
        vars.insert(k.as_str().unwrap().into(), v.as_str().unwrap().into());
    }
    let script: Vec<&str> = doc[job]["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let line = script
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{job}: no {prefix:?} line"));
    let token_var = doc[job]["id_tokens"]
        .as_mapping()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    vars.insert("CI_PROJECT_ID".into(), "42".into());
    let argv: Vec<String> = words(line).iter().map(|w| expand(w, &vars)).collect();
    let mut cmd = Command::new(common::bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", tmp.join("home"))
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env(token_var, common::gitlab_jwt(common::now_unix() + 600))
        .envs(vars.iter().filter(|(k, _)| k.starts_with("ECR_AUTH_")))
        .current_dir(tmp.path())
        .args(&argv[1..]);
    common::run(&mut cmd)
}

#[test]
fn s3_pipeline_gets_the_dotenv_its_later_jobs_use() {
    let moto = Moto::start();
    let tmp = TempDir::new("example-s3");
    let doc = yaml("gitlab-ci/shared-runners.gitlab-ci.yml");
    let out = run_job_line(&moto, &tmp, &doc, "ecr-login", "ecr-auth gitlab login");
    assert!(out.status.success(), "{}", common::output_text(&out));
    let report = doc["ecr-login"]["artifacts"]["reports"]["dotenv"]
        .as_str()
        .unwrap();
    let text =
        std::fs::read_to_string(tmp.join(report)).expect("the dotenv report the job declares");
    assert!(text.len() < 5120);
    let (key, value) = text.trim_end().split_once('=').unwrap();
    assert_eq!(key, "DOCKER_AUTH_CONFIG");
    let auth: serde_json::Value = serde_json::from_str(value).unwrap();
    // The later job's image comes from the registry the token is for.
    let image = doc["test"]["image"].as_str().unwrap().replace(
        "$ECR_REGISTRY",
        doc["variables"]["ECR_REGISTRY"].as_str().unwrap(),
    );
    let host = image.split('/').next().unwrap();
    assert!(auth["auths"].get(host).is_some(), "{host} not in {auth}");
    assert_eq!(doc["test"]["needs"][0].as_str(), Some("ecr-login"));
    assert!(doc["ecr-login"]["id_tokens"]["GITLAB_OIDC_TOKEN"]["aud"].is_string());
}

#[test]
fn many_registries_pipeline_uses_the_line_login_prints() {
    let moto = Moto::start();
    let tmp = TempDir::new("example-s3-many");
    let doc = yaml("gitlab-ci/shared-runners-many-registries.gitlab-ci.yml");
    let out = run_job_line(&moto, &tmp, &doc, "ecr-login", "ecr-auth gitlab login");
    assert!(out.status.success(), "{}", common::output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let printed = stderr
        .lines()
        .find(|l| l.starts_with("DOCKER_AUTH_CONFIG: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let in_yaml = doc[".from-ecr"]["variables"]["DOCKER_AUTH_CONFIG"]
        .as_str()
        .unwrap();
    let printed_value: serde_yaml::Value = serde_yaml::from_str(printed).unwrap();
    assert_eq!(printed_value["DOCKER_AUTH_CONFIG"].as_str(), Some(in_yaml));
    let vars = std::fs::read_to_string(tmp.join("ecr-auth.env")).unwrap();
    assert!(vars.starts_with("ECR_AUTH_TOKEN_EU_WEST_1="), "{vars}");
    for job in ["test", "lint"] {
        let host = doc[job]["image"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(
            in_yaml.contains(&format!(
                "\"{host}\":{{\"auth\":\"$ECR_AUTH_TOKEN_EU_WEST_1\"}}"
            )),
            "{job}"
        );
    }
}

#[test]
fn refresh_variable_example_is_a_valid_command() {
    let doc = yaml("gitlab-ci/refresh-variable.gitlab-ci.yml");
    let job = &doc["refresh-docker-auth-config"];
    assert_eq!(
        job["rules"][0]["if"].as_str(),
        Some("$CI_PIPELINE_SOURCE == \"schedule\"")
    );
    let line = job["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .find(|l| l.starts_with("ecr-auth gitlab sync-variable"))
        .unwrap();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("CI_PROJECT_ID".into(), "42".into());
    vars.insert(
        "ECR_REGISTRY".into(),
        doc["variables"]["ECR_REGISTRY"].as_str().unwrap().into(),
    );
    let argv: Vec<String> = words(line).iter().map(|w| expand(w, &vars)).collect();
    // Every flag exists (clap rejects an unknown one before it reads --help).
    common::run_ok(Command::new(common::bin()).args(&argv[1..]).arg("--help"));
    assert!(doc["variables"]["ECR_AUTH_ROLE_ARN"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:iam::"));
}
