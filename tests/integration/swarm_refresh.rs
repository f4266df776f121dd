//! `ecr-auth swarm refresh --once` against a real one-node Swarm (Docker 20.10), a real
//! registry that accepts only the current ECR password, and the lab token endpoint.

use crate::common;

use crate::swarm_support::{wait_until, Lab, CONVERGE};

/// The scenario of the issue: a service deployed with auth that then goes stale. After
/// the password rotates, a new task on a node without the image can't pull; after one
/// `swarm refresh --once` it can.
#[test]
fn stale_auth_blocks_scale_up_until_refresh() {
    let lab = Lab::start();
    let image = lab.push("app", "1");
    lab.login();
    lab.create_service(
        "app",
        &[
            "--with-registry-auth",
            "--replicas",
            "1",
            &image,
            "sleep",
            "100000",
        ],
    );
    lab.wait_running("app", 1);
    let spec_image = lab.service("app")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].clone();

    // Empty the node's image cache: no task may hold the image, then remove it.
    lab.docker(&["service", "scale", "-d", "app=0"]);
    lab.wait_running("app", 0);
    assert!(
        wait_until(CONVERGE, || lab.docker(&["ps", "-q"]).trim().is_empty()),
        "the task's container did not stop"
    );
    lab.docker(&["container", "prune", "-f"]);
    let reference = format!("reference={}/app", lab.registry.addr);
    let ids = lab.docker(&["image", "ls", "-q", "--no-trunc", "--filter", &reference]);
    for id in ids.split_whitespace() {
        lab.docker(&["image", "rm", "-f", id]);
    }
    let left = lab.docker(&["image", "ls", "-aq", "--filter", &reference]);
    assert_eq!(left.trim(), "", "the image is still on the node");

    // The token rotates: the auth stored in the service is now stale.
    let old = lab.tokens.password();
    lab.tokens.rotate();
    assert!(
        wait_until(CONVERGE, || lab.registry.v2_status(Some(("AWS", &old)))
            == 401),
        "the registry still accepts the old password"
    );

    lab.docker(&["service", "scale", "-d", "app=1"]);
    assert!(
        wait_until(CONVERGE, || lab.tasks("app").iter().any(|t| t["Status"]
            ["State"]
            == "rejected"
            && t["Status"]["Err"]
                .as_str()
                .is_some_and(|e| e.contains("No such image")))),
        "the new task did not fail: {}",
        lab.task_errors("app")
    );
    assert!(
        lab.running_tasks("app").is_empty(),
        "a task ran with stale auth: {}",
        lab.task_errors("app")
    );

    let calls_before = lab.tokens.calls();
    let (ok, _, stderr) = lab.refresh(&["--once"]);
    assert!(ok, "refresh failed:\n{stderr}");
    assert!(stderr.contains("updated app ("), "{stderr}");
    assert_eq!(
        lab.tokens.calls() - calls_before,
        1,
        "one AWS call for one region"
    );
    assert!(
        !stderr.contains(&lab.tokens.password()[..40]),
        "a password reached the log"
    );

    lab.wait_running("app", 1);
    lab.docker(&["service", "scale", "-d", "app=2"]);
    lab.wait_running("app", 2);
    assert_eq!(
        lab.service("app")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        spec_image,
        "the image reference changed"
    );
}

/// A refresh restarts nothing and changes nothing but the stored auth: the same running
/// task IDs, the spec byte for byte, the image reference untouched.
#[test]
fn refresh_keeps_tasks_spec_and_image() {
    let lab = Lab::start();
    let image = lab.push("web", "1");
    lab.login();
    lab.create_service(
        "web",
        &[
            "--with-registry-auth",
            "--replicas",
            "2",
            "--label",
            "team=a",
            "--env",
            "A=1",
            &image,
            "sleep",
            "100000",
        ],
    );
    let tasks_before = lab.wait_running("web", 2);
    let all_tasks_before = lab.tasks("web").len();
    let spec_before = lab.raw_spec("web");
    let version_before = lab.version("web");
    lab.tokens.rotate();

    let (ok, _, stderr) = lab.refresh(&["--once"]);
    assert!(ok, "refresh failed:\n{stderr}");
    assert!(stderr.contains("updated web ("), "{stderr}");
    assert!(
        lab.version("web") > version_before,
        "no update reached the service"
    );

    assert_eq!(lab.raw_spec("web"), spec_before, "the spec changed");
    let service = lab.service("web");
    assert_eq!(service["Spec"]["TaskTemplate"]["ForceUpdate"], 0);
    assert!(
        service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap()
            .starts_with(&image),
        "{}",
        service["Spec"]
    );
    // Give Swarm the chance to (wrongly) replace tasks: wait for the update to settle.
    assert!(
        wait_until(CONVERGE, || {
            let s = lab.service("web");
            s["UpdateStatus"].is_null() || s["UpdateStatus"]["State"] == "completed"
        }),
        "the update did not settle: {}",
        lab.service("web")["UpdateStatus"]
    );
    assert_eq!(
        lab.running_tasks("web"),
        tasks_before,
        "tasks were restarted"
    );
    assert_eq!(
        lab.tasks("web").len(),
        all_tasks_before,
        "new tasks were created"
    );
}

/// Paused updates, job-mode services, non-ECR images and the opt-out label are left
/// alone; `--label-selector`, `--registry` and `--dry-run` select and list.
#[test]
fn selection_leaves_the_right_services_alone() {
    let lab = Lab::start();
    let image = lab.push("sel", "1");
    lab.login();
    let auth = "--with-registry-auth";
    lab.create_service("plain", &[auth, &image, "sleep", "100000"]);
    lab.create_service(
        "team-a",
        &[auth, "--label", "team=a", &image, "sleep", "100000"],
    );
    lab.create_service(
        "optout",
        &[
            auth,
            "--label",
            "ecr-auth.refresh=false",
            &image,
            "sleep",
            "100000",
        ],
    );
    lab.create_service(
        "other",
        &[
            "--no-resolve-image",
            "127.0.0.1:9/elsewhere/app:1",
            "sleep",
            "100000",
        ],
    );
    lab.create_service("job", &[auth, "--mode", "replicated-job", &image, "true"]);
    lab.create_service("paused", &[auth, &image, "sleep", "100000"]);
    lab.wait_running("paused", 1);
    // A failing update with failure action "pause": the task exits at once.
    lab.docker(&[
        "service",
        "update",
        "-d",
        "--update-failure-action",
        "pause",
        "--update-monitor",
        "2s",
        "--args",
        "false",
        "paused",
    ]);
    assert!(
        wait_until(CONVERGE, || lab.service("paused")["UpdateStatus"]["State"]
            == "paused"),
        "the update did not pause: {}",
        lab.service("paused")["UpdateStatus"]
    );
    assert!(
        wait_until(CONVERGE, || lab
            .tasks("job")
            .iter()
            .any(|t| t["Status"]["State"] == "complete")),
        "the job did not complete: {}",
        lab.task_errors("job")
    );
    let names = ["plain", "team-a", "optout", "other", "job", "paused"];
    let versions = |lab: &Lab| names.map(|n| lab.version(n));
    let v0 = versions(&lab);
    let job_tasks = lab.tasks("job").len();

    // Dry run: lists, changes nothing, asks AWS nothing.
    let calls = lab.tokens.calls();
    let (ok, stdout, stderr) = lab.refresh(&["--dry-run"]);
    assert!(ok, "{stderr}");
    let listed: Vec<&str> = stdout.lines().collect();
    assert_eq!(listed.len(), 2, "{stdout}");
    assert!(
        listed.iter().any(|l| l.starts_with("would update plain (")),
        "{stdout}"
    );
    assert!(
        listed
            .iter()
            .any(|l| l.starts_with("would update team-a (")),
        "{stdout}"
    );
    assert!(
        stdout.contains("-> ECR token aws/eu-west-1 for account 123456789012"),
        "{stdout}"
    );
    assert!(
        stderr.contains("left paused alone: its update is paused"),
        "{stderr}"
    );
    assert!(
        stderr.contains("left job alone: it is a ReplicatedJob service"),
        "{stderr}"
    );
    assert_eq!(versions(&lab), v0, "--dry-run changed a service");
    assert_eq!(lab.tokens.calls(), calls, "--dry-run called AWS");

    // Opt-in by label.
    let (ok, _, stderr) = lab.refresh(&["--once", "--label-selector", "team=a"]);
    assert!(ok, "{stderr}");
    let v1 = versions(&lab);
    assert_eq!(changed(&names, &v0, &v1), ["team-a"], "{stderr}");

    // Everything selectable, restricted to the lab registry (as `--registry` is given).
    let (ok, _, stderr) = lab.refresh(&["--once", "--registry", &lab.registry.addr]);
    assert!(ok, "{stderr}");
    let v2 = versions(&lab);
    assert_eq!(changed(&names, &v1, &v2), ["plain", "team-a"], "{stderr}");
    assert_eq!(lab.service("paused")["UpdateStatus"]["State"], "paused");
    assert_eq!(lab.tasks("job").len(), job_tasks, "the job ran again");

    // Jobs on request.
    let (ok, _, stderr) = lab.refresh(&[
        "--once",
        "--include-jobs",
        "--label-selector",
        "com.docker.stack.namespace",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        versions(&lab),
        v2,
        "a label selector nobody matches selected something"
    );
    let (ok, _, stderr) = lab.refresh(&["--once", "--include-jobs"]);
    assert!(ok, "{stderr}");
    assert!(
        changed(&names, &v2, &versions(&lab)).contains(&"job"),
        "{stderr}"
    );
}

fn changed<'a>(names: &[&'a str], before: &[u64], after: &[u64]) -> Vec<&'a str> {
    names
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(n, _)| *n)
        .collect()
}

/// Someone updates the service between our read and our update: Swarm answers "update
/// out of sequence"; the refresher re-reads it and succeeds, keeping their change.
/// (The same rule with a fake Swarm: `swarm::step` unit tests; this proves the real
/// daemon's answer is recognised.)
#[test]
fn update_out_of_sequence_is_retried() {
    use ecr_auth::swarm::docker::Service;
    use ecr_auth::swarm::Turn;

    let lab = Lab::start();
    let image = lab.push("seq", "1");
    lab.login();
    lab.create_service("seq", &["--with-registry-auth", &image, "sleep", "100000"]);
    lab.wait_running("seq", 1);

    let tokens = lab.in_process_tokens();
    let calls_before = lab.tokens.calls();

    let (rt, docker) = lab.docker_client();
    // The service list the refresher works from is read *before* someone else's update
    // lands.
    let api = crate::swarm_support::AfterList {
        docker: &docker,
        then: |stale: &[Service]| {
            lab.their_update("seq");
            assert!(
                lab.version("seq") > stale[0].version,
                "the race did not happen"
            );
        },
    };
    let turn = rt.block_on(crate::swarm_support::one_pass(&api, &tokens));
    let Turn::Pass(report) = turn else {
        panic!("no pass: {turn:?}")
    };
    assert_eq!(
        (report.updated, report.failed, report.retries),
        (1, 0, 1),
        "{report:?}"
    );
    assert_eq!(
        lab.tokens.calls(),
        calls_before,
        "the token should have come from the cache"
    );
    let service = lab.service("seq");
    assert_eq!(
        service["Spec"]["Labels"]["changed"], "meanwhile",
        "their change was lost"
    );
}

/// Credentials from `--env-file` in seed 004's format (a Swarm secret in production):
/// without the file there are none; with it the refresh works, and its AWS_ECR_REPO
/// restricts the refresh to that registry. Logs as JSON, without a secret.
#[test]
fn env_file_in_seed_004_format() {
    let lab = Lab::start();
    let image = lab.push("envf", "1");
    lab.login();
    lab.create_service("mine", &["--with-registry-auth", &image, "sleep", "100000"]);
    let theirs = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/theirs:1";
    lab.create_service("theirs", &["--no-resolve-image", theirs, "sleep", "100000"]);
    let (mine, their) = (lab.version("mine"), lab.version("theirs"));

    let env = common::aws_env(&lab.tokens.endpoint);
    let value = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let file = lab.tmp.join("ecr_auth_creds");
    std::fs::write(
        &file,
        format!(
            "export AWS_ECR_REPO={}\nexport AWS_DEFAULT_REGION=eu-west-1\nexport AWS_ACCESS_KEY_ID={}\n\
             export AWS_SECRET_ACCESS_KEY={}\nexport AWS_ENDPOINT_URL={}\n",
            lab.registry.addr,
            value("AWS_ACCESS_KEY_ID"),
            value("AWS_SECRET_ACCESS_KEY"),
            lab.tokens.endpoint
        ),
    )
    .unwrap();
    // No AWS variable but the one keeping the SDK off the instance metadata address.
    let bare = || {
        let mut cmd = lab.ecr_auth();
        let names: Vec<String> = cmd
            .get_envs()
            .filter_map(|(k, _)| {
                k.to_str()
                    .filter(|k| k.starts_with("AWS_"))
                    .map(str::to_string)
            })
            .collect();
        for name in names {
            cmd.env_remove(name);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.args(["swarm", "refresh", "--once", "--log-format", "json"]);
        cmd
    };

    let out = common::run(&mut bare());
    let text = common::output_text(&out);
    assert!(
        !out.status.success(),
        "refreshed without credentials: {text}"
    );
    assert!(text.contains("no AWS credentials found"), "{text}");
    assert_eq!(lab.tokens.calls(), 0);

    let out = common::run(bare().arg("--env-file").arg(&file));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(stderr.contains("updated mine ("), "{stderr}");
    assert!(lab.version("mine") > mine);
    assert_eq!(
        lab.version("theirs"),
        their,
        "AWS_ECR_REPO did not restrict the refresh"
    );
    assert_eq!(lab.tokens.calls(), 1);
    assert!(
        !stderr.contains(&value("AWS_SECRET_ACCESS_KEY")),
        "a secret reached the log"
    );
    assert!(
        !stderr.contains(&lab.tokens.password()[..40]),
        "a password reached the log"
    );
}
