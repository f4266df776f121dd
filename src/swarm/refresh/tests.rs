//! `plan` over services as the lab's Docker 20.10 returns them.

use super::*;
use crate::config::Config;
use crate::env::Env;
use serde_json::value::RawValue;

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn tokens() -> Tokens {
    let config = Config::parse(
        "[[registry]]\nhost = \"127.0.0.1:5055\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n",
        std::path::Path::new("/test/config.toml"),
    )
    .unwrap();
    Tokens::builder(Env::default(), config).cache(None).build()
}

/// A service object shaped like `GET /services/{id}`.
fn service(image: &str, labels: &str, mode: &str, update_status: &str) -> Service {
    let raw = format!(
        r#"{{"ID":"svc1","Version":{{"Index":12}},"Spec":{{"Name":"web","Labels":{{{labels}}},"TaskTemplate":{{"ContainerSpec":{{"Image":"{image}","Init":false}},"ForceUpdate":0,"Runtime":"container"}},"Mode":{mode},"EndpointSpec":{{"Mode":"vip"}}}}{update_status}}}"#
    );
    let value: Box<RawValue> = serde_json::from_str(&raw).unwrap();
    Service::from_json(&value).unwrap()
}

fn replicated() -> &'static str {
    r#"{"Replicated":{"Replicas":1}}"#
}

fn decide(s: &Service, sel: &Selection) -> Plan {
    let t = tokens();
    plan(s, sel, |h| t.resolve(h))
}

#[test]
fn ecr_and_mapped_images_are_refreshed() {
    let sel = Selection::default();
    for (image, host, region) in [
        (format!("{ECR}/app:1@sha256:00"), ECR, "eu-west-1"),
        (
            "127.0.0.1:5055/app:1".to_string(),
            "127.0.0.1:5055",
            "eu-west-1",
        ),
        (
            "public.ecr.aws/team/app:2".to_string(),
            "public.ecr.aws",
            "us-east-1",
        ),
    ] {
        match decide(&service(&image, "", replicated(), ""), &sel) {
            Plan::Refresh {
                image_host,
                resolved,
            } => {
                assert_eq!(image_host, host);
                assert_eq!(resolved.target.region(), region);
            }
            other => panic!("{image}: {other:?}"),
        }
    }
}

#[test]
fn what_is_left_alone_and_why() {
    let sel = Selection::default();
    let ecr = format!("{ECR}/app:1");
    let table: Vec<(Service, Leave)> = vec![
        (
            service("nginx:1.25", "", replicated(), ""),
            Leave::NotEcr {
                host: "docker.io".into(),
            },
        ),
        (
            service("127.0.0.1:6000/app", "", replicated(), ""),
            Leave::NotEcr {
                host: "127.0.0.1:6000".into(),
            },
        ),
        (
            service(&format!("{ECR}.evil.example/app"), "", replicated(), ""),
            Leave::NotEcr {
                host: format!("{ECR}.evil.example"),
            },
        ),
        (
            service(&ecr, r#""ecr-auth.refresh":"false""#, replicated(), ""),
            Leave::OptedOut,
        ),
        (
            service(&ecr, r#""ecr-auth.refresh":"FALSE ""#, replicated(), ""),
            Leave::OptedOut,
        ),
        (
            service(
                &ecr,
                "",
                r#"{"ReplicatedJob":{"MaxConcurrent":1,"TotalCompletions":1}}"#,
                "",
            ),
            Leave::Job {
                mode: "ReplicatedJob".into(),
            },
        ),
        (
            service(&ecr, "", r#"{"GlobalJob":{}}"#, ""),
            Leave::Job {
                mode: "GlobalJob".into(),
            },
        ),
        (
            service(
                &ecr,
                "",
                replicated(),
                r#","UpdateStatus":{"State":"paused","Message":"update paused due to failure or early termination of task x"}"#,
            ),
            Leave::Paused {
                state: "paused".into(),
            },
        ),
        (
            service(
                &ecr,
                "",
                replicated(),
                r#","UpdateStatus":{"State":"rollback_started"}"#,
            ),
            Leave::Paused {
                state: "rollback_started".into(),
            },
        ),
        (
            service(
                &ecr,
                "",
                replicated(),
                r#","UpdateStatus":{"State":"rollback_paused"}"#,
            ),
            Leave::Paused {
                state: "rollback_paused".into(),
            },
        ),
        (service("", "", replicated(), ""), Leave::NoImage),
    ];
    for (s, want) in table {
        assert_eq!(decide(&s, &sel), Plan::Leave(want), "{:?}", s.view.image());
    }
    // What the warnings say about services left alone on purpose.
    assert_eq!(
        Leave::Job {
            mode: "GlobalJob".into()
        }
        .to_string(),
        "it is a GlobalJob service and an update would run it again (use --include-jobs to refresh jobs anyway)"
    );
    assert_eq!(
        Leave::Paused {
            state: "rollback_started".into()
        }
        .to_string(),
        "its update is rollback_started; an update would resume it (fix or roll it back, then it is refreshed on the next pass)"
    );
    // A finished or rolled-back update is fine to follow with ours.
    for state in ["completed", "updating", "rollback_completed"] {
        let s = service(
            &ecr,
            "",
            replicated(),
            &format!(r#","UpdateStatus":{{"State":"{state}"}}"#),
        );
        assert!(matches!(decide(&s, &sel), Plan::Refresh { .. }), "{state}");
    }
    // The opt-out label only opts out when false.
    let s = service(&ecr, r#""ecr-auth.refresh":"true""#, replicated(), "");
    assert!(matches!(decide(&s, &sel), Plan::Refresh { .. }));
}

#[test]
fn selection_flags() {
    let ecr = format!("{ECR}/app:1");
    let labelled = service(&ecr, r#""team":"a","ecr":"yes""#, replicated(), "");
    let plain = service(&ecr, "", replicated(), "");
    let job = service(&ecr, "", r#"{"ReplicatedJob":{}}"#, "");

    let by_label = Selection {
        labels: vec![("team".into(), Some("a".into())), ("ecr".into(), None)],
        ..Selection::default()
    };
    assert!(matches!(decide(&labelled, &by_label), Plan::Refresh { .. }));
    assert_eq!(decide(&plain, &by_label), Plan::Leave(Leave::NotLabelled));
    let wrong_value = Selection {
        labels: vec![("team".into(), Some("b".into()))],
        ..Selection::default()
    };
    assert_eq!(
        decide(&labelled, &wrong_value),
        Plan::Leave(Leave::NotLabelled)
    );

    let only_mapped = Selection {
        registries: vec![Host::parse("127.0.0.1:5055").unwrap()],
        ..Selection::default()
    };
    assert_eq!(
        decide(&plain, &only_mapped),
        Plan::Leave(Leave::OtherRegistry { host: ECR.into() })
    );
    let mapped = service("127.0.0.1:5055/app:1", "", replicated(), "");
    assert!(matches!(
        decide(&mapped, &only_mapped),
        Plan::Refresh { .. }
    ));

    let jobs = Selection {
        include_jobs: true,
        ..Selection::default()
    };
    assert!(matches!(decide(&job, &jobs), Plan::Refresh { .. }));
}

#[test]
fn report_problems() {
    assert_eq!(Report::default().problem(), None);
    let r = Report {
        failed: 1,
        token_errors: 2,
        ..Report::default()
    };
    assert_eq!(
        r.problem().unwrap(),
        "1 service update(s) failed, no ECR token for 2 service(s)"
    );
}
