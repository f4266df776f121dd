//! The README's GitLab quick starts (between `<!-- SECTION:gitlab -->` markers),
//! followed as a new user would, with lab paths in place of /etc and /usr/local:
//! every `ecr-auth` line is a valid command; the S1 and S2 lines, run on a
//! runner config.toml, give the result the README shows; the S3 pipeline is the
//! tested example file (run against moto in tests/gitlab_examples.rs) and its
//! trust policy matches the pipeline's audience.

use crate::common;
use std::process::Command;

use crate::common::TempDir;

struct Block {
    lang: String,
    text: String,
}

fn section() -> Vec<Block> {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- SECTION:gitlab -->")
        .expect("start marker");
    let end = readme.find("<!-- /SECTION:gitlab -->").expect("end marker");
    let mut blocks = Vec::new();
    let mut cur: Option<Block> = None;
    for line in readme[start..end].lines() {
        match (&mut cur, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) => {
                cur = Some(Block {
                    lang: lang.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => blocks.push(cur.take().unwrap()),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(cur.is_none(), "unclosed code block");
    blocks
}

/// `ecr-auth ...` lines of the sh blocks, as argument lists.
fn ecr_auth_lines(blocks: &[Block]) -> Vec<Vec<String>> {
    blocks
        .iter()
        .filter(|b| b.lang == "sh")
        .flat_map(|b| b.text.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with("ecr-auth "))
        .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
        .collect()
}

#[test]
fn every_command_in_the_quick_starts_is_valid() {
    let lines = ecr_auth_lines(&section());
    assert!(lines.len() >= 5, "{lines:?}");
    for args in &lines {
        // clap rejects an unknown flag or subcommand before it gets to --help.
        let out = common::run(Command::new(common::bin()).args(args).arg("--help"));
        assert!(
            out.status.success(),
            "README: ecr-auth {}\n{}",
            args.join(" "),
            common::output_text(&out)
        );
    }
}

fn replace_all(args: &[String], from: &str, to: &str) -> Vec<String> {
    args.iter().map(|a| a.replace(from, to)).collect()
}

#[test]
fn s1_and_s2_give_what_the_readme_shows() {
    let blocks = section();
    let lines = ecr_auth_lines(&blocks);
    let tmp = TempDir::new("readme");
    let config = tmp.join("config.toml");
    std::fs::copy(
        common::repo_root().join("tests/data/gitlab/runner-config/01-register-default/config.toml"),
        &config,
    )
    .unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    let run = |args: &[String]| {
        let args = replace_all(
            args,
            "/etc/gitlab-runner/config.toml",
            config.to_str().unwrap(),
        );
        let args = replace_all(&args, "/usr/local/bin", tmp.join("bin").to_str().unwrap());
        let args = replace_all(
            &args,
            "/etc/ecr-auth/aws-credentials",
            tmp.join("aws-credentials").to_str().unwrap(),
        );
        common::run_ok(
            Command::new(common::bin())
                .env_remove("ECR_AUTH_CONFIG")
                .env("HOME", tmp.join("home"))
                .args(&args),
        )
    };
    let configure: Vec<&Vec<String>> = lines
        .iter()
        .filter(|a| a.starts_with(&["configure".to_string(), "gitlab-runner".to_string()]))
        // S2 through the broker is tested in broker.rs (configure_gitlab_runner_broker_...).
        .filter(|a| !a.iter().any(|x| x == "--broker"))
        .collect();
    assert_eq!(configure.len(), 3, "S1 dry run, S1, S2");

    // S1 --dry-run: a diff, nothing written.
    let diff = run(configure[0]);
    assert!(
        diff.starts_with("--- ") && diff.contains("+  environment = ['DOCKER_AUTH_CONFIG="),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    // S1: the environment line the README shows.
    run(configure[1]);
    let edited = std::fs::read_to_string(&config).unwrap();
    let shown = blocks
        .iter()
        .find(|b| b.lang == "toml")
        .expect("the config.toml snippet");
    let env_line = shown
        .text
        .lines()
        .find(|l| l.trim_start().starts_with("environment = "))
        .unwrap();
    assert!(
        edited.lines().any(|l| l == env_line),
        "README shows {env_line:?}, the command wrote:\n{edited}"
    );
    let snippet: toml::Value = toml::from_str(&shown.text).unwrap();
    let doc: toml::Value = toml::from_str(&edited).unwrap();
    assert_eq!(snippet["runners"][0]["name"], doc["runners"][0]["name"]);
    assert_eq!(
        snippet["runners"][0]["environment"],
        doc["runners"][0]["environment"]
    );

    // S2: install, then --jobs --dind with the credentials file.
    std::fs::write(
        tmp.join("aws-credentials"),
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n",
    )
    .unwrap();
    let install = lines
        .iter()
        .find(|a| a[0] == "install")
        .expect("the install line");
    run(install);
    assert!(tmp.join("bin/docker-credential-ecr-login").is_file());
    // The default job config path is under /etc: the lab writes it to the temp dir.
    let mut s2 = configure[2].clone();
    s2.extend([
        "--job-docker-config".to_string(),
        tmp.join("job.json").display().to_string(),
    ]);
    run(&s2);
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let docker = &doc["runners"][0]["docker"];
    assert_eq!(docker["privileged"].as_bool(), Some(true));
    let vols: Vec<&str> = docker["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The helper mounted into jobs is the one the README's install line put there
    // (the default --helper-path matches `install --dir /usr/local/bin`).
    let dir = &install[install.iter().position(|a| a == "--dir").unwrap() + 1];
    let helper = format!("{dir}/docker-credential-ecr-login");
    assert!(
        vols.contains(&format!("{helper}:/usr/local/bin/docker-credential-ecr-login:ro").as_str()),
        "{vols:?}"
    );
    assert!(vols
        .iter()
        .any(|v| v.ends_with(":/root/.docker/config.json:ro")));
    assert!(vols
        .iter()
        .any(|v| v.ends_with("aws-credentials:/root/.aws/credentials:ro")));
}

#[test]
fn s3_is_the_tested_example_and_its_trust_policy_fits() {
    let blocks = section();
    let yaml = blocks
        .iter()
        .find(|b| b.lang == "yaml")
        .expect("the pipeline");
    let shown: serde_yaml::Value = serde_yaml::from_str(&yaml.text).unwrap();
    let example_text = std::fs::read_to_string(
        common::repo_root().join("examples/gitlab/gitlab-ci/shared-runners.gitlab-ci.yml"),
    )
    .unwrap();
    let example: serde_yaml::Value = serde_yaml::from_str(&example_text).unwrap();
    assert_eq!(
        shown, example,
        "the README pipeline must be examples/gitlab/gitlab-ci/shared-runners.gitlab-ci.yml"
    );

    let policy = blocks
        .iter()
        .find(|b| b.lang == "json")
        .expect("the trust policy");
    let policy: serde_json::Value = serde_json::from_str(&policy.text).unwrap();
    let st = &policy["Statement"][0];
    assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
    let aud = shown["ecr-login"]["id_tokens"]["GITLAB_OIDC_TOKEN"]["aud"]
        .as_str()
        .unwrap();
    assert_eq!(st["Condition"]["StringEquals"]["gitlab.com:aud"], aud);
    let role = shown["variables"]["ECR_AUTH_ROLE_ARN"].as_str().unwrap();
    let account = role.split(':').nth(4).unwrap();
    assert!(st["Principal"]["Federated"]
        .as_str()
        .unwrap()
        .contains(account));
}

/// S2 leads with the broker: its first `configure gitlab-runner` line is the
/// `--broker` one and `ecr-auth serve` comes before `--jobs` (the AWS key way);
/// its `[broker]` examples are valid config files, and the per-registry one is
/// examples/broker/config.toml (which tests/integration/broker_deploy.rs runs).
#[test]
fn s2_leads_with_the_broker_and_its_broker_configs_are_the_tested_ones() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let start = readme.find("### S2").expect("the S2 heading");
    let end = start + readme[start..].find("### S3").expect("the S3 heading");
    let s2 = &readme[start..end];
    let first_configure = s2
        .lines()
        .find(|l| l.starts_with("ecr-auth configure gitlab-runner"))
        .expect("a configure line in S2");
    assert!(first_configure.contains("--broker"), "{first_configure}");
    let serve = s2.find("ecr-auth serve").expect("ecr-auth serve in S2");
    let jobs = s2.find("--jobs").expect("--jobs in S2");
    assert!(serve < jobs, "S2 shows the AWS key way before the broker");
    assert!(
        s2[..jobs].contains("First choice: the token broker"),
        "S2 does not say the broker comes first"
    );

    let all = section();
    let blocks: Vec<&Block> = all
        .iter()
        .filter(|b| b.lang == "toml" && b.text.contains("[broker]"))
        .collect();
    assert!(blocks.len() >= 2, "the [broker] examples");
    for b in &blocks {
        ecr_auth::config::Config::parse(&b.text, std::path::Path::new("README.md"))
            .unwrap_or_else(|e| panic!("{e}\n{}", b.text));
    }
    let example =
        std::fs::read_to_string(common::repo_root().join("examples/broker/config.toml")).unwrap();
    // The file's own header (where it goes) aside, the README shows the file.
    let body: String = example
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        blocks.iter().any(|b| b.text == body),
        "the per-registry [broker] example must be examples/broker/config.toml"
    );
}
