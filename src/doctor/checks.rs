//! The checks of one registry, in the order a pull meets them. Each returns a
//! [`Check`]; the walk stops at the first failure and marks the rest skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::probe;
use super::regions;
use super::report::Check;
use super::wiring::Route;
use crate::config::{Config, Resolved};
use crate::env::Env;
use crate::registry::{Host, Target};
use crate::tokens::{AuthToken, Tokens};

/// Clock skew beyond which SigV4 requests fail.
pub(crate) const MAX_SKEW_SECS: i64 = 300;

/// A registry or image reference as the user gave it.
#[derive(Clone, Debug)]
pub(crate) struct Subject {
    pub given: String,
    pub host: Option<Host>,
    /// `repo` and `tag or digest`, when an image was given.
    pub image: Option<(String, String)>,
}

impl Subject {
    pub(crate) fn parse(given: &str) -> Subject {
        let text = given
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let (host_part, rest) = match text.split_once('/') {
            Some((h, r)) if !r.is_empty() && r != "v2/" && r != "v2" => (h, Some(r)),
            Some((h, _)) => (h, None),
            None => (text, None),
        };
        let image = rest.map(|r| {
            if let Some((repo, digest)) = r.split_once('@') {
                (repo.to_string(), digest.to_string())
            } else {
                match r.rsplit_once(':') {
                    Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                    _ => (r.to_string(), "latest".to_string()),
                }
            }
        });
        Subject {
            given: given.trim().to_string(),
            host: Host::parse(host_part).ok(),
            image,
        }
    }
}

/// Everything the checks read, handed in (never the process environment).
pub(crate) struct Context<'a> {
    pub env: &'a Env,
    pub config: &'a Config,
    pub config_path: Option<PathBuf>,
    pub docker_config: PathBuf,
    pub docker_config_why: String,
    pub tokens: &'a Tokens,
    pub cache_dir: Option<PathBuf>,
    pub timeout: Duration,
}

/// 1. The name: ECR, or mapped to ECR by the config file.
pub(crate) fn name(cx: &Context, s: &Subject) -> (Check, Option<Resolved>) {
    let Some(host) = &s.host else {
        return (
            Check::fail(
                "name",
                format!("{:?} is not a registry host name", s.given),
                "give the registry host as clients write it, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com, or an image on it",
            ),
            None,
        );
    };
    let Some(resolved) = cx.config.resolve(host) else {
        if let Some(b) = cx.tokens.broker_client() {
            return (
                Check::ok(
                    "name",
                    format!(
                        "{host} is not an ECR name and not mapped in {}; the broker at {} decides (next checks)",
                        shown_config(cx),
                        b.url()
                    ),
                ),
                None,
            );
        }
        let looks = host.as_str().contains("dkr.ecr") || host.as_str().contains("amazonaws");
        let evidence = if looks {
            format!("{host} looks like an ECR host but is not one (ECR hosts are <12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn], or public.ecr.aws)")
        } else {
            format!(
                "{host} is not an Amazon ECR registry and no [[registry]] entry in {} maps it to one",
                shown_config(cx)
            )
        };
        return (
            Check::fail(
                "name",
                evidence,
                format!(
                    "use the registry's ECR name, or map this name with a [[registry]] entry (host, account, region) in {}",
                    shown_config(cx)
                ),
            ),
            None,
        );
    };
    let what = match &resolved.target {
        Target::Public => "ECR Public (its API is in us-east-1)".to_string(),
        Target::Private {
            account,
            region,
            partition,
            fips,
        } => format!(
            "account {account}, region {region}, partition {partition}{}{}",
            if *fips { ", FIPS" } else { "" },
            if host.as_str().contains("dkr-ecr") {
                ", dual-stack"
            } else {
                ""
            }
        ),
    };
    if let Target::Private { region, .. } = &resolved.target {
        if !regions::REGIONS.contains(&region.as_str()) {
            return (
                match regions::nearest(region) {
                    Some(near) => Check::fail(
                        "name",
                        format!("{host}: region {region:?} does not exist"),
                        format!("did you mean {near}? (…dkr.ecr.{near}.…)"),
                    ),
                    None => Check::warn(
                        "name",
                        format!("{host}: {what}; region {region:?} is not one ecr-auth knows"),
                        "check the region in the host name; if it is a new AWS region, ignore this",
                    ),
                },
                Some(resolved),
            );
        }
    }
    let evidence = if host.ecr_target().is_some() {
        format!("{host} is an ECR registry: {what}")
    } else {
        format!("{host} is mapped to ECR by {}: {what}", shown_config(cx))
    };
    (Check::ok("name", evidence), Some(resolved))
}

fn shown_config(cx: &Context) -> String {
    cx.config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the ecr-auth config file".into())
}

/// 3. The helper binary a client will run.
pub(crate) fn helper(cx: &Context, route: &Route) -> Check {
    let Route::Helper { name, how } = route else {
        return Check::skip("helper", "no helper: the static auths entry is used");
    };
    let exe = format!("docker-credential-{name}");
    let path_var = cx.env.get("PATH").unwrap_or("");
    let mut found: Vec<PathBuf> = Vec::new();
    for p in std::env::split_paths(path_var).map(|d| d.join(&exe)) {
        // /bin and /usr/bin are one directory on merged-/usr systems.
        let real = std::fs::canonicalize(&p).ok();
        if is_executable(&p) && !found.iter().any(|f| std::fs::canonicalize(f).ok() == real) {
            found.push(p);
        }
    }
    let Some(first) = found.first() else {
        let ours = ["ecr-login", "ecr-auth"]
            .iter()
            .filter(|n| **n != name.as_str())
            .map(|n| format!("docker-credential-{n}"))
            .find(|other| std::env::split_paths(path_var).any(|d| is_executable(&d.join(other))));
        let evidence = match ours {
            Some(other) => format!("{how} names {exe}, which is not on PATH (only {other} is)"),
            None => format!("{how} names {exe}, which is not on PATH ({path_var})"),
        };
        return Check::fail(
            "helper",
            evidence,
            "ecr-auth install --dir /usr/local/bin (installs docker-credential-ecr-login and docker-credential-ecr-auth)",
        );
    };
    let version = helper_version(first);
    let which = if version.starts_with("ecr-auth") {
        version.clone()
    } else if version.is_empty() {
        "a helper that prints no version".into()
    } else {
        format!("not ecr-auth: {version}")
    };
    let mut evidence = format!("{exe} is {} ({which})", first.display());
    if found.len() > 1 {
        evidence.push_str(&format!(
            "; it shadows {}",
            found[1..]
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Check::ok("helper", evidence)
}

/// The first line `HELPER version` prints, waiting at most 5 seconds.
fn helper_version(exe: &Path) -> String {
    use std::io::Read;
    let Ok(mut child) = std::process::Command::new(exe)
        .arg("version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return String::new();
    };
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return "a helper that hangs on `version`".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    out.lines().next().unwrap_or("").trim().to_string()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// 4 and 5. The identity the chain picks, and the clock against AWS's.
pub(crate) fn identity_and_clock(cx: &Context, r: &Resolved) -> (Check, Option<Check>) {
    match cx.tokens.caller_identity(r) {
        Ok(who) => {
            let identity = Check::ok(
                "identity",
                format!("{} (account {}) from {}", who.arn, who.account, who.source),
            );
            let clock = match who.server_time {
                Some(aws) => {
                    let skew = cx.tokens.now() - aws;
                    if skew.abs() > MAX_SKEW_SECS {
                        Check::fail(
                            "clock",
                            format!(
                                "this machine's clock is {} {} AWS's ({} answered {})",
                                humantime::format_duration(Duration::from_secs(skew.unsigned_abs())),
                                if skew > 0 { "ahead of" } else { "behind" },
                                who.endpoint,
                                crate::tokens::format_time(aws)
                            ),
                            "set the clock right (chrony or systemd-timesyncd): AWS refuses signatures more than 5 minutes off",
                        )
                    } else {
                        Check::ok("clock", format!("within {skew:+} s of AWS's clock"))
                    }
                }
                None => Check::skip("clock", "AWS's answer carried no Date header"),
            };
            (identity, Some(clock))
        }
        Err(e) => (
            Check::fail(
                "identity",
                e.to_string(),
                if e.is_not_found() {
                    "give this user AWS credentials (an instance role, ~/.aws/credentials, AWS_PROFILE) or map the registry to a profile or role_arn in the ecr-auth config file".to_string()
                } else {
                    "fix the credential source named above".to_string()
                },
            ),
            None,
        ),
    }
}

/// 6. The token: GetAuthorizationToken in the right partition and region.
pub(crate) fn token(cx: &Context, host: &Host) -> (Check, Option<AuthToken>) {
    match cx.tokens.get(host.as_str()) {
        Ok(t) => (
            Check::ok(
                "token",
                format!(
                    "an ECR token for {} valid until {}{}",
                    t.host,
                    crate::tokens::format_time(t.expires_at),
                    t.proxy_endpoint
                        .as_deref()
                        .map(|p| format!(" (proxy endpoint {p})"))
                        .unwrap_or_default()
                ),
            ),
            Some(t),
        ),
        Err(e) => (
            Check::fail(
                "token",
                e.to_string(),
                "see the advice in the evidence above",
            ),
            None,
        ),
    }
}

/// 7. The cache directory the helper will use.
pub(crate) fn cache(cx: &Context) -> Check {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(dir) = &cx.cache_dir else {
        return Check::skip(
            "cache",
            "the cache is off (AWS_ECR_DISABLE_CACHE) or has no directory",
        );
    };
    let shown = dir.display();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(_) => {
            return Check::ok(
                "cache",
                format!("{shown} does not exist yet; the first get creates it (0700)"),
            )
        }
    };
    if meta.file_type().is_symlink() {
        return Check::fail(
            "cache",
            format!("{shown} is a symbolic link: the helper will not use it"),
            format!("rm {shown} (the helper recreates it)"),
        );
    }
    if !meta.is_dir() {
        return Check::fail(
            "cache",
            format!("{shown} is not a directory"),
            format!("remove {shown} or set ECR_AUTH_CACHE_DIR"),
        );
    }
    let me = crate::files::euid();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != me && meta.uid() != 0 {
        return Check::fail(
            "cache",
            format!("{shown} belongs to uid {} (not this user, {me}): the helper will not use it and fetches from AWS on every call", meta.uid()),
            format!("rm -r {shown}, or set ECR_AUTH_CACHE_DIR to a directory of this user"),
        );
    }
    if mode & 0o022 != 0 {
        return if meta.uid() == me {
            Check::warn(
                "cache",
                format!("{shown} has mode {mode:o}: writable by others"),
                format!("chmod 700 {shown} (the helper narrows it on its next write)"),
            )
        } else {
            Check::fail(
                "cache",
                format!(
                    "{shown} has mode {mode:o}: writable by others, and not this user's to narrow"
                ),
                format!("chmod 700 {shown} as root"),
            )
        };
    }
    let entries = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    Check::ok(
        "cache",
        format!(
            "{shown}: owned by uid {}, mode {mode:o}, {entries} cached token(s)",
            meta.uid()
        ),
    )
}

/// Step 8, the broker, if one is configured: reachable, allowed for this host,
/// and its answer (the expiry of the token it hands out, never the token). The
/// token, for the registry check.
pub(crate) fn broker(cx: &Context, host: &Host) -> (Check, Option<AuthToken>) {
    use crate::tokens::broker::Answer;
    let Some(client) = cx.tokens.broker_client() else {
        return (Check::skip("broker", "no broker is configured"), None);
    };
    let url = client.url();
    let Some(path) = url.strip_prefix("unix://").filter(|p| p.starts_with('/')) else {
        return (
            Check::fail(
                "broker",
                format!("the broker address {url:?} is not unix:///ABSOLUTE/PATH"),
                "set ECR_AUTH_BROKER (or broker = … in the config file) to the socket of ecr-auth serve, e.g. unix:///run/ecr-auth/broker.sock",
            ),
            None,
        );
    };
    let fail = |evidence: String, fix: &str| (Check::fail("broker", evidence, fix), None);
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                format!("the broker socket {path} does not exist"),
                "start the broker (ecr-auth serve --socket …) or fix ECR_AUTH_BROKER / broker = … in the config file",
            )
        }
        Err(e) => {
            return fail(
                format!("cannot connect to the broker socket {path}: {e}"),
                "check that ecr-auth serve runs and that this user is in the socket's group",
            )
        }
    }
    match client.ask(host, cx.tokens.now()) {
        Ok(Answer::Token(t)) => (
            Check::ok(
                "broker",
                format!(
                    "the broker at {path} allows {host}: it answered a token valid until {}",
                    crate::tokens::format_time(t.expires_at)
                ),
            ),
            Some(t),
        ),
        Ok(Answer::NotAllowed(reason)) => fail(
            format!("the broker at {path} does not allow {host}: {reason}"),
            &format!("ask the broker's operator to allow it: ecr-auth serve --allow {host}, or `allow` in [broker] of its config file"),
        ),
        Ok(Answer::NotFound(reason)) => fail(
            format!("the broker at {path} has no token for {host}: {reason}"),
            "the broker lacks AWS credentials or a mapping for this host: run ecr-auth doctor for it as the broker's user, on the broker's host",
        ),
        Ok(Answer::Failed(reason)) => fail(
            format!("the broker at {path} could not get a token for {host}: {reason}"),
            "see the broker's log; ecr-auth doctor run as the broker's user on its host names the broken step",
        ),
        Err(e) => fail(
            e.to_string(),
            "check that ecr-auth serve runs there and answers (its log), and that ECR_AUTH_BROKER names its socket",
        ),
    }
}

/// The token the broker handed out, as the `token` check.
pub(crate) fn broker_token(t: &AuthToken) -> Check {
    Check::ok(
        "token",
        format!(
            "an ECR token for {} from the broker, valid until {}",
            t.host,
            crate::tokens::format_time(t.expires_at)
        ),
    )
}

/// 9. The registry, with the token.
pub(crate) fn registry(cx: &Context, s: &Subject, host: &Host, token: &AuthToken) -> Check {
    let auth = token.basic_auth();
    match probe::v2(host, auth.expose(), cx.timeout) {
        Err(e) => Check::fail("registry", e.to_string(), e.fix()),
        Ok(answer) if answer.status == 200 => match &s.image {
            None => Check::ok("registry", format!("GET {}/v2/ with the token: 200", answer.base)),
            Some((repo, reference)) => match probe::manifest(&answer.base, repo, reference, auth.expose(), cx.timeout) {
                Err(e) => Check::fail("registry", e.to_string(), e.fix()),
                Ok(200) => Check::ok("registry", format!("{host}/{repo}:{reference} exists and the token may pull it")),
                Ok(404) => Check::fail("registry", format!("{host}/{repo}: no manifest {reference:?} (HEAD answered 404)"), "check the repository and tag; push the image first"),
                Ok(code @ (401 | 403)) => Check::fail(
                    "registry",
                    format!("{host}/{repo}:{reference}: HEAD of the manifest answered {code}"),
                    "the principal lacks ecr:BatchGetImage on that repository, or the registry mapping points at another account",
                ),
                Ok(code) => Check::fail("registry", format!("HEAD of the manifest answered {code}"), "see the registry's logs"),
            },
        },
        Ok(answer) if answer.status == 401 || answer.status == 403 => Check::fail(
            "registry",
            format!("GET {}/v2/ with the token: {} (the registry rejected it)", answer.base, answer.status),
            "the token is for another account or region: check the host's mapping (account, region) in the ecr-auth config file",
        ),
        Ok(answer) => Check::fail(
            "registry",
            format!("GET {}/v2/ with the token: {}", answer.base, answer.status),
            "is this host a registry?",
        ),
    }
}
