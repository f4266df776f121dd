//! Fetching tokens from AWS: the only place that builds an SDK client, a TLS
//! stack or an async runtime, and only on a cache miss.
//!
//! The SDK sees the [`Env`] the token service was built with, not the process
//! environment (aws-config's `ConfigLoader::env`/`fs` seams): an env file read by
//! the Swarm refresher, or a test's fake home, reaches the credential chain and
//! the endpoint resolution exactly as it reaches the cache key.
//!
//! Every fetch has a deadline ([`FetchRequest::deadline`]) covering the credential
//! lookup, the call and the SDK's standard retries (throttling, 5xx). Errors are
//! sentences built from what failed (operation, endpoint, region, credential
//! source by name) and never carry an HTTP body or a `Debug` dump of an SDK type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::os_shim_internal;
use aws_types::region::Region;
use aws_types::service_config::ServiceConfigKey;
use base64::Engine;
use futures_util::FutureExt;

use super::{identity, Fetch, FetchRequest, Fetched, TokenError, WebIdentity};

mod credential_failure;
use crate::config::CredentialSource;
use crate::env::Env;
use crate::registry::Target;

/// The longest session an AssumeRole may ask for (a role's maximum is 1–12 h).
const LONGEST_SESSION: Duration = Duration::from_secs(12 * 3600);

/// The sources of the default chain, for the "no credentials" message.
pub const CHAIN_SOURCES: &str = "environment variables (AWS_ACCESS_KEY_ID), \
shared config and credentials files (~/.aws, AWS_PROFILE: static keys, role_arn, SSO, credential_process), \
web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), ECS/EKS container credentials, \
EC2 instance metadata (IMDSv2)";

/// Talks to the real AWS APIs (or whatever `AWS_ENDPOINT_URL` points at).
///
/// Each request's credentials come from the AWS default chain over the service's
/// [`Env`], or the registry's configured profile alone, or — with a
/// [`WebIdentity`] — STS AssumeRoleWithWebIdentity. A registry's configured
/// `role_arn` is then assumed from those base credentials.
pub struct AwsFetcher {
    env: Env,
    web_identity: Option<WebIdentity>,
}

impl AwsFetcher {
    pub fn new(env: Env, web_identity: Option<WebIdentity>) -> AwsFetcher {
        AwsFetcher { env, web_identity }
    }
}

impl Fetch for AwsFetcher {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>> {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                let out =
                    runtime.block_on(fetch_all(&self.env, self.web_identity.as_ref(), requests));
                // Past the deadline a DNS lookup or a credential_process may still
                // run on the blocking pool: don't wait for it.
                runtime.shutdown_background();
                out
            }
            Err(e) => {
                let msg = format!("cannot start the async runtime: {e}");
                requests
                    .iter()
                    .map(|_| Err(TokenError::Internal(msg.clone())))
                    .collect()
            }
        }
    }
}

/// Refuses an endpoint variable that is not a URL, before the SDK is built: its own
/// words are "endpoint must contain scheme", naming neither the variable nor its value.
fn check_endpoint_variables(env: &Env) -> Result<(), TokenError> {
    match bad_endpoint_variable(env) {
        None => Ok(()),
        Some((var, why)) => Err(TokenError::Aws {
            what: format!("using the AWS endpoint that {var} names"),
            cause: why,
            advice: format!(
                "Set {var} to the endpoint's URL (https://host or http://host:port), or unset it"
            ),
        }),
    }
}

/// The first of the endpoint variables the SDK reads for our calls that is not an
/// absolute http(s) URL, and why. A value with user information in it is not repeated.
fn bad_endpoint_variable(env: &Env) -> Option<(&'static str, String)> {
    const VARS: [&str; 6] = [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_ECR",
        "AWS_ENDPOINT_URL_ECR_PUBLIC",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_SSO",
        "AWS_ENDPOINT_URL_SSO_OIDC",
    ];
    VARS.into_iter().find_map(|var| {
        let value = env.get(var)?;
        let uri = value.parse::<hyper::Uri>().ok();
        let scheme_ok = uri
            .as_ref()
            .and_then(|u| u.scheme_str())
            .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
        let host_ok = uri
            .as_ref()
            .and_then(|u| u.host())
            .is_some_and(|h| !h.is_empty());
        if scheme_ok && host_ok {
            return None;
        }
        let shown = if value.contains('@') {
            "its value".to_string()
        } else {
            format!("{value:?}")
        };
        Some((
            var,
            format!("{shown} is not an http:// or https:// URL with a host"),
        ))
    })
}

type Identity = Result<(SdkConfig, Credentials), TokenError>;

/// Resolves each distinct credential source once, then calls
/// GetAuthorizationToken once per request, all concurrently, each within its
/// own deadline.
pub(crate) async fn fetch_all(
    env: &Env,
    web: Option<&WebIdentity>,
    requests: &[FetchRequest],
) -> Vec<Result<Fetched, TokenError>> {
    let start = tokio::time::Instant::now();
    let mut identities = BTreeMap::new();
    for r in requests {
        let deadline = requests
            .iter()
            .filter(|o| o.creds == r.creds)
            .map(|o| o.deadline)
            .max()
            .unwrap_or(r.deadline);
        identities.entry(&r.creds).or_insert_with(|| {
            let creds = r.creds.clone();
            let env = env.clone();
            let web = web.cloned();
            async move { resolve_identity(&env, web.as_ref(), &creds, deadline).await }
                .boxed()
                .shared()
        });
    }
    let calls = requests.iter().map(|req| {
        let identity = identities[&req.creds].clone();
        let source = identity::describe_source(env, web, &req.creds);
        async move {
            let endpoint = Arc::new(Mutex::new(None::<String>));
            let work = async {
                let (config, creds) = identity.await?;
                let mut fetched =
                    get_authorization_token(&config, &creds, &req.target, &source, &endpoint)
                        .await?;
                // A token carries the rights of the session that asked for it:
                // a scoped session's token is good only as long as the session.
                if req.creds.session_policy.is_some() {
                    if let Some(end) = creds
                        .expiry()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    {
                        let end = end.as_secs() as i64;
                        fetched.expires_at = Some(fetched.expires_at.map_or(end, |e| e.min(end)));
                    }
                }
                Ok(fetched)
            };
            match tokio::time::timeout_at(start + req.deadline, work).await {
                Ok(result) => result,
                Err(_) => Err(timed_out(req, &source, endpoint.lock().unwrap().clone())),
            }
        }
    });
    futures_util::future::join_all(calls).await
}

fn timed_out(req: &FetchRequest, source: &str, endpoint: Option<String>) -> TokenError {
    let secs = humantime::format_duration(req.deadline);
    match endpoint {
        Some(endpoint) => TokenError::Aws {
            what: format!(
                "getting an ECR token for {} from {endpoint} (credentials: {source})",
                req.target.scope()
            ),
            // No answer, or only errors and retries (throttling) until the deadline.
            cause: format!("no token within {secs}"),
            advice: "Check the network path to that endpoint (firewall, proxy, AWS_ENDPOINT_URL) and whether AWS is throttling; ECR_AUTH_TIMEOUT sets the deadline".into(),
        },
        None => TokenError::Aws {
            what: format!("looking up AWS credentials ({source})"),
            cause: format!("no answer within {secs}"),
            advice: "Check that credential source (a credential_process or SSO login that hangs, an unreachable STS or instance metadata endpoint); ECR_AUTH_TIMEOUT sets the deadline".into(),
        },
    }
}

/// Timeouts for one call: the whole deadline for the operation (retries
/// included); a connection must be made within a few seconds of it.
fn timeouts(deadline: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(deadline.min(Duration::from_secs(3)))
        .read_timeout(deadline)
        .operation_attempt_timeout(deadline)
        .operation_timeout(deadline)
        .build()
}

/// The SDK's standard retry (throttling, 5xx, transient network errors), three
/// attempts, always within the deadline above.
fn retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3)
}

/// `env` as the SDK's environment (aws-config's `Env` seam); a variable set to the empty
/// string is left out ([`Env::vars`]).
fn sdk_env(env: &Env) -> os_shim_internal::Env {
    let vars: std::collections::HashMap<String, String> = env
        .vars()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    os_shim_internal::Env::from(vars)
}

/// A config loader that reads `env` (and the real file system) instead of the
/// process environment; a variable set to the empty string is unset there too
/// ([`Env::vars`]).
fn loader(env: &Env, deadline: Duration) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .env(sdk_env(env))
        .fs(os_shim_internal::Fs::real())
        // The region only matters for STS calls the chain makes (web identity,
        // role_arn profiles, AssumeRole); ECR clients get their own region.
        .region(Region::new(
            env.get("AWS_REGION")
                .or_else(|| env.get("AWS_DEFAULT_REGION"))
                .unwrap_or("us-east-1")
                .to_string(),
        ))
        .timeout_config(timeouts(deadline))
        .retry_config(retries())
}

/// The SDK config and resolved credentials for one credential source.
async fn resolve_identity(
    env: &Env,
    web: Option<&WebIdentity>,
    creds: &CredentialSource,
    deadline: Duration,
) -> Identity {
    check_endpoint_variables(env)?;
    let source = identity::describe_source(env, web, creds);
    let loader = loader(env, deadline);
    let (config, first) = match (web, &creds.profile) {
        (Some(web), _) => {
            let first = assume_role_with_web_identity(env, web, deadline).await?;
            let config = loader.credentials_provider(first.clone()).load().await;
            (config, first)
        }
        // A profile named for this registry is used alone: the default chain
        // would prefer environment keys over it.
        (None, Some(profile)) => {
            // The default chain over an environment that names only this
            // profile: no keys, web identity, container or instance credentials.
            let mut only = Env::from_pairs(env.vars().filter(|(k, _)| {
                !matches!(
                    *k,
                    "AWS_ACCESS_KEY_ID"
                        | "AWS_SECRET_ACCESS_KEY"
                        | "AWS_SESSION_TOKEN"
                        | "AWS_WEB_IDENTITY_TOKEN_FILE"
                        | "AWS_ROLE_ARN"
                        | "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
                        | "AWS_CONTAINER_CREDENTIALS_FULL_URI"
                )
            }));
            only.set("AWS_PROFILE", profile.clone());
            only.set("AWS_EC2_METADATA_DISABLED", "true");
            let config = loader.profile_name(profile).load().await;
            let chain = crate::tokens::aws::loader(&only, deadline)
                .profile_name(profile)
                .load()
                .await
                .credentials_provider()
                .expect("the default chain is set when no provider is given");
            let first = match chain.provide_credentials().await {
                Ok(first) => first,
                Err(e) => {
                    return Err(
                        credential_failure::source_error(&only, Some(profile), &source, e).await,
                    )
                }
            };
            (config, first)
        }
        (None, None) => {
            let chain = default_chain(env, deadline).await;
            let config = loader.credentials_provider(chain.clone()).load().await;
            let first = match chain.provide_credentials().await {
                Ok(first) => first,
                Err(e) => return Err(credential_failure::source_error(env, None, &source, e).await),
            };
            (config, first)
        }
    };
    let Some(role) = &creds.role_arn else {
        return Ok((config, first));
    };
    let assume = |length: Option<Duration>| {
        let mut b = AssumeRoleProvider::builder(role.as_str())
            .session_name("ecr-auth")
            .configure(&config);
        if let Some(policy) = &creds.session_policy {
            b = b.policy(policy.clone());
        }
        if let Some(length) = length {
            b = b.session_length(length);
        }
        let first = first.clone();
        async move {
            b.build_from_provider(first)
                .await
                .provide_credentials()
                .await
        }
    };
    // A scoped (pull-only) session asks for as long a session as a role may
    // have (12 h); a role whose maximum is shorter gets the default hour.
    let assumed = match &creds.session_policy {
        Some(_) => match assume(Some(LONGEST_SESSION)).await {
            Err(e) if error_chain(&e).contains("DurationSeconds") => assume(None).await,
            other => other,
        },
        None => assume(None).await,
    }
    .map_err(|e| TokenError::Aws {
        what: format!("assuming role {role} (base credentials: {source})"),
        cause: error_chain(&e),
        advice: "Check that the base credentials may call sts:AssumeRole on that role and that its trust policy allows them".into(),
    })?;
    Ok((config, assumed))
}

/// The AWS default chain over `env`. Instance metadata, its last link, gets one
/// short attempt: with no credentials anywhere the SDK's own IMDS defaults spend
/// many seconds retrying, and "no instance role" is answered in about a second.
async fn default_chain(env: &Env, deadline: Duration) -> SharedCredentialsProvider {
    let mut without_imds = env.clone();
    without_imds.set("AWS_EC2_METADATA_DISABLED", "true");
    let chain = loader(&without_imds, deadline)
        .load()
        .await
        .credentials_provider()
        .expect("the default chain is set when no provider is given");
    if env.flag("AWS_EC2_METADATA_DISABLED") {
        return chain;
    }
    let imds = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .max_attempts(1)
        .build();
    SharedCredentialsProvider::new(
        CredentialsProviderChain::first_try("default chain", chain).or_else(
            "instance metadata",
            aws_config::imds::credentials::ImdsCredentialsProvider::builder()
                .imds_client(imds)
                .build(),
        ),
    )
}

/// STS AssumeRoleWithWebIdentity (unsigned: the token is the credential).
async fn assume_role_with_web_identity(
    env: &Env,
    web: &WebIdentity,
    deadline: Duration,
) -> Result<Credentials, TokenError> {
    let config = loader(env, deadline)
        .region(Region::new(web.sts_region.clone()))
        .no_credentials()
        .load()
        .await;
    let endpoint = Arc::new(Mutex::new(None));
    let conf = aws_sdk_sts::config::Builder::from(&config)
        .interceptor(RecordEndpoint(endpoint.clone()))
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .assume_role_with_web_identity()
        .role_arn(&web.role_arn)
        .role_session_name(&web.session_name)
        .web_identity_token(web.token.expose())
        .duration_seconds(web.duration_secs.min(i32::MAX as u64) as i32)
        .send()
        .await
        .map_err(|e| {
            let at = endpoint_name(&endpoint, &format!("STS in {}", web.sts_region));
            let (mut cause, code) = sdk_error_cause(&e);
            if code.is_none() {
                cause = format!("cannot reach AWS STS: {cause}");
            }
            TokenError::Aws {
                what: format!(
                    "exchanging the job's OIDC token for role {} (STS AssumeRoleWithWebIdentity at {at})",
                    web.role_arn
                ),
                cause,
                advice: web_identity_advice(code.as_deref()).into(),
            }
        })?;
    let c = out.credentials.ok_or_else(|| TokenError::Aws {
        what: format!("exchanging the job's OIDC token for role {}", web.role_arn),
        cause: "the answer carried no credentials".into(),
        advice: "Check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_STS if set".into(),
    })?;
    let expiry = std::time::SystemTime::try_from(c.expiration).ok();
    Ok(Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        expiry,
        "AssumeRoleWithWebIdentity",
    ))
}

fn web_identity_advice(code: Option<&str>) -> &'static str {
    match code.unwrap_or("") {
        "AccessDenied" | "AccessDeniedException" => "Check the role's trust policy: it must trust the GitLab OIDC provider (gitlab.com or your instance) and allow this token's `aud` and `sub` (project_path:GROUP/PROJECT:ref_type:branch:ref:BRANCH)",
        "InvalidIdentityToken" | "IDPRejectedClaim" => "Check that an IAM OIDC identity provider exists for your GitLab URL, with the same audience as the job's `id_tokens: aud:`",
        "ExpiredTokenException" | "ExpiredToken" => "The OIDC token expired: run this in the job that received it",
        "ValidationError" => "Check --role-arn and --duration (at most the role's maximum session duration)",
        "" => "Check the network, and AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_STS if set",
        _ => "Check --role-arn, the role's trust policy for the GitLab OIDC provider, and the job's `id_tokens:` audience",
    }
}

/// An error and its sources, each by its `Display`, without repeats: never a
/// `Debug` dump, never an HTTP body.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What went wrong in an SDK call, in words, and the AWS error code if AWS
/// answered with one. A response that could not be read is described by its
/// HTTP status only: its body may hold a token or keys.
fn sdk_error_cause<E, R>(e: &SdkError<E, R>) -> (String, Option<String>)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().map(str::to_string);
            let message = err.message().unwrap_or("no message");
            (
                format!("AWS answered {}: {message}", code.as_deref().unwrap_or("an error")),
                code,
            )
        }
        SdkError::TimeoutError(_) => ("no answer in time".into(), None),
        SdkError::DispatchFailure(d) => {
            let what = if d.is_timeout() {
                "the connection timed out"
            } else if d.is_io() {
                "cannot connect"
            } else {
                "the request could not be sent"
            };
            // "Connection refused (os error 111)", "dns error: ...".
            let cause = match std::error::Error::source(e).and_then(credential_failure::innermost_cause) {
                Some(detail) => format!("{what} ({detail})"),
                None => what.to_string(),
            };
            (cause, None)
        }
        SdkError::ResponseError(_) => (
            "the answer could not be read as an AWS API answer (is AWS_ENDPOINT_URL an AWS endpoint?)"
                .into(),
            None,
        ),
        SdkError::ConstructionFailure(_) => (
            std::error::Error::source(e)
                .map(error_chain)
                .unwrap_or_else(|| "the request could not be built".into()),
            None,
        ),
        _ => ("an unexpected error".into(), None),
    }
}

fn token_advice(code: Option<&str>) -> &'static str {
    match code.unwrap_or("") {
        "AccessDeniedException" | "AccessDenied" => "Give that principal ecr:GetAuthorizationToken (e.g. the managed policy AmazonEC2ContainerRegistryReadOnly)",
        "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidSignatureException" | "SignatureDoesNotMatch" => "The AWS keys are wrong or revoked: check that credential source",
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => "The AWS credentials expired (or the clock is off by more than 5 minutes): refresh them, check the clock",
        "ThrottlingException" | "TooManyRequestsException" => "AWS is throttling this account: it will pass; fewer callers or a token broker help",
        "" => "Check the network path to that endpoint (firewall, proxy, AWS_ENDPOINT_URL)",
        _ => "Check the registry's region and account, and the principal's ECR permissions",
    }
}

/// Remembers the URI a request is sent to, for messages.
#[derive(Debug, Clone)]
struct RecordEndpoint(Arc<Mutex<Option<String>>>);

/// Remembers the `Date` header of the answer (unix seconds): AWS's clock, to
/// tell clock skew (SigV4 fails beyond 5 minutes) from other failures.
#[derive(Debug, Clone, Default)]
struct RecordDate(Arc<Mutex<Option<i64>>>);

impl Intercept for RecordDate {
    fn name(&self) -> &'static str {
        "RecordDate"
    }
    fn read_after_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| {
                aws_smithy_types::DateTime::from_str(
                    d,
                    aws_smithy_types::date_time::Format::HttpDate,
                )
                .ok()
            })
            .map(|d| d.secs());
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = date;
        Ok(())
    }
}

/// Who AWS thinks the credentials are (STS GetCallerIdentity), for `doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    /// The credential source, by name.
    pub source: String,
    /// The STS endpoint asked.
    pub endpoint: String,
    /// AWS's clock (the answer's `Date` header), unix seconds, if it sent one.
    pub server_time: Option<i64>,
}

/// STS GetCallerIdentity with the credentials a fetch for `creds` would use.
pub(crate) async fn caller_identity(
    env: &Env,
    web: Option<&WebIdentity>,
    creds: &CredentialSource,
    deadline: Duration,
) -> Result<CallerIdentity, TokenError> {
    let source = identity::describe_source(env, web, creds);
    let endpoint = Arc::new(Mutex::new(None));
    let date = RecordDate::default();
    let work = async {
        let (config, credentials) = resolve_identity(env, web, creds, deadline).await?;
        let conf = aws_sdk_sts::config::Builder::from(&config)
            .credentials_provider(credentials)
            .interceptor(RecordEndpoint(endpoint.clone()))
            .interceptor(date.clone())
            .build();
        let out = aws_sdk_sts::Client::from_conf(conf)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| {
                let (cause, code) = sdk_error_cause(&e);
                TokenError::Aws {
                    what: format!(
                        "asking STS who the credentials are (GetCallerIdentity at {}, credentials: {source})",
                        endpoint_name(&endpoint, "STS")
                    ),
                    cause,
                    advice: token_advice(code.as_deref()).into(),
                }
            })?;
        Ok(CallerIdentity {
            account: out.account.unwrap_or_default(),
            arn: out.arn.unwrap_or_default(),
            source: source.clone(),
            endpoint: endpoint_name(&endpoint, "STS"),
            server_time: *date.0.lock().unwrap_or_else(|e| e.into_inner()),
        })
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(TokenError::Aws {
            what: format!("asking STS who the credentials are ({source})"),
            cause: format!("no answer within {}", humantime::format_duration(deadline)),
            advice: "Check the network path to STS (firewall, proxy, AWS_ENDPOINT_URL)".into(),
        }),
    }
}

impl Intercept for RecordEndpoint {
    fn name(&self) -> &'static str {
        "RecordEndpoint"
    }
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let uri = context.request().uri();
        let shown = match uri.split_once("://") {
            Some((scheme, rest)) => {
                format!(
                    "{scheme}://{}",
                    rest.split(['/', '?']).next().unwrap_or(rest)
                )
            }
            None => uri.to_string(),
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(shown);
        Ok(())
    }
}

fn endpoint_name(recorded: &Arc<Mutex<Option<String>>>, otherwise: &str) -> String {
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| otherwise.to_string())
}

async fn get_authorization_token(
    config: &SdkConfig,
    creds: &Credentials,
    target: &Target,
    source: &str,
    endpoint: &Arc<Mutex<Option<String>>>,
) -> Result<Fetched, TokenError> {
    let region = Region::new(target.region().to_string());
    let what = |at: String| {
        format!(
            "getting an ECR token for {} from {at} (credentials: {source})",
            target.scope()
        )
    };
    let fail = |e: &dyn Fn() -> (String, Option<String>)| {
        let (cause, code) = e();
        TokenError::Aws {
            what: what(endpoint_name(
                endpoint,
                &format!("ECR in {}", target.region()),
            )),
            cause,
            advice: token_advice(code.as_deref()).into(),
        }
    };
    let (token, expires_at, proxy_endpoint) = match target {
        Target::Private { fips, .. } => {
            let conf = ecr_config(config, creds, region, *fips)
                .interceptor(RecordEndpoint(endpoint.clone()))
                .build();
            let out = aws_sdk_ecr::Client::from_conf(conf)
                .get_authorization_token()
                .send()
                .await
                .map_err(|e| fail(&|| sdk_error_cause(&e)))?;
            let data = out
                .authorization_data
                .unwrap_or_default()
                .into_iter()
                .next()
                .ok_or_else(|| {
                    fail(&|| ("the answer carried no authorization data".into(), None))
                })?;
            (
                data.authorization_token,
                data.expires_at.map(|t| t.secs()),
                data.proxy_endpoint,
            )
        }
        Target::Public => {
            let conf = aws_sdk_ecrpublic::config::Builder::from(config)
                .region(region)
                .credentials_provider(creds.clone())
                .interceptor(RecordEndpoint(endpoint.clone()))
                .build();
            let out = aws_sdk_ecrpublic::Client::from_conf(conf)
                .get_authorization_token()
                .send()
                .await
                .map_err(|e| fail(&|| sdk_error_cause(&e)))?;
            let data = out.authorization_data.ok_or_else(|| {
                fail(&|| ("the answer carried no authorization data".into(), None))
            })?;
            (
                data.authorization_token,
                data.expires_at.map(|t| t.secs()),
                None,
            )
        }
    };
    let token = token.ok_or_else(|| fail(&|| ("the answer carried no token".into(), None)))?;
    let (username, password) = decode_token(&token)
        .ok_or_else(|| fail(&|| ("the token is not base64 of \"user:password\"".into(), None)))?;
    Ok(Fetched {
        username,
        password,
        // ECR tokens live 12 hours; assume so if the answer doesn't say.
        expires_at,
        proxy_endpoint,
    })
}

/// The ECR client's config for one region. A FIPS registry host
/// (`dkr.ecr-fips`) talks to the region's FIPS API endpoint — unless an
/// endpoint is configured explicitly (`AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL`,
/// `endpoint_url` in the AWS config file): then that endpoint is the FIPS one
/// the user chose (the SDK refuses FIPS together with a custom endpoint).
fn ecr_config(
    config: &SdkConfig,
    creds: &Credentials,
    region: Region,
    fips: bool,
) -> aws_sdk_ecr::config::Builder {
    let explicit = config
        .service_config()
        .and_then(|c| {
            c.load_config(
                ServiceConfigKey::builder()
                    .service_id("ECR")
                    .env("AWS_ENDPOINT_URL")
                    .profile("endpoint_url")
                    .build()
                    .ok()?,
            )
        })
        .is_some()
        || config.endpoint_url().is_some();
    aws_sdk_ecr::config::Builder::from(config)
        .region(region)
        .use_fips(fips && !explicit)
        .credentials_provider(creds.clone())
}

/// ECR's `authorizationToken` is base64("AWS:<password>").
pub fn decode_token(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| (user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_variable_that_is_not_a_url_is_named() {
        let bad =
            |pairs: &[(&str, &str)]| bad_endpoint_variable(&Env::from_pairs(pairs.iter().copied()));
        assert_eq!(bad(&[]), None);
        assert_eq!(bad(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")]), None);
        assert_eq!(
            bad(&[(
                "AWS_ENDPOINT_URL_ECR",
                "https://api.ecr.eu-west-1.amazonaws.com"
            )]),
            None
        );
        assert_eq!(
            bad(&[("AWS_ENDPOINT_URL", "not-a-url")]),
            Some((
                "AWS_ENDPOINT_URL",
                "\"not-a-url\" is not an http:// or https:// URL with a host".into()
            ))
        );
        assert_eq!(
            bad(&[("AWS_ENDPOINT_URL_STS", "ftp://sts.example")])
                .unwrap()
                .0,
            "AWS_ENDPOINT_URL_STS"
        );
        // A variable for a service we never call is the SDK's business, not ours.
        assert_eq!(bad(&[("AWS_ENDPOINT_URL_S3", "nonsense")]), None);
        let (_, why) = bad(&[("AWS_ENDPOINT_URL", "user:s3cret@host")]).unwrap();
        assert!(!why.contains("s3cret"), "{why}");
    }

    /// Records the URI a request would go to, and stops it before it is sent
    /// (so nothing leaves the machine, not even a DNS query).
    #[derive(Debug, Default, Clone)]
    struct StopBeforeSending(std::sync::Arc<std::sync::Mutex<Option<String>>>);

    impl Intercept for StopBeforeSending {
        fn name(&self) -> &'static str {
            "StopBeforeSending"
        }
        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            *self.0.lock().unwrap() = Some(context.request().uri().to_string());
            Err("stopped before sending".into())
        }
    }

    async fn resolved_uri(env: &Env, host: &str) -> String {
        let sdk = loader(env, Duration::from_secs(5))
            .credentials_provider(Credentials::for_tests())
            .load()
            .await;
        let target = crate::registry::Host::parse(host)
            .unwrap()
            .ecr_target()
            .unwrap();
        let stop = StopBeforeSending::default();
        let conf = ecr_config(
            &sdk,
            &Credentials::for_tests(),
            Region::new(target.region().to_string()),
            target.fips(),
        )
        .interceptor(stop.clone())
        .build();
        let result = aws_sdk_ecr::Client::from_conf(conf)
            .get_authorization_token()
            .send()
            .await;
        assert!(result.is_err());
        let uri = stop.0.lock().unwrap().clone();
        uri.unwrap_or_else(|| {
            panic!(
                "{host}: no request built: {}",
                error_chain(&result.unwrap_err())
            )
        })
    }

    #[tokio::test]
    async fn fips_registries_use_the_fips_api_endpoint() {
        let env = Env::from_pairs([("HOME", "/nonexistent")]);
        for (host, want) in [
            (
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                "https://api.ecr-fips.us-east-1.amazonaws.com",
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "https://api.ecr.us-east-1.amazonaws.com",
            ),
            (
                "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
                "https://api.ecr-fips.us-gov-west-1.amazonaws.com",
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "https://api.ecr.cn-north-1.amazonaws.com.cn",
            ),
        ] {
            let uri = resolved_uri(&env, host).await;
            assert!(uri.starts_with(want), "{host}: {uri}");
        }
    }

    #[tokio::test]
    async fn an_explicit_endpoint_wins_over_fips_and_comes_from_the_injected_env() {
        let fips = "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com";
        for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"] {
            let env = Env::from_pairs([("HOME", "/nonexistent"), (var, "http://127.0.0.1:9")]);
            let uri = resolved_uri(&env, fips).await;
            assert!(uri.starts_with("http://127.0.0.1:9"), "{var}: {uri}");
        }
    }

    #[tokio::test]
    async fn an_empty_endpoint_variable_is_unset_not_a_panic() {
        let host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"] {
            let env = Env::from_pairs([("HOME", "/nonexistent"), (var, ""), ("AWS_REGION", "")]);
            let uri = resolved_uri(&env, host).await;
            assert!(
                uri.starts_with("https://api.ecr.eu-west-1.amazonaws.com"),
                "{var}=\"\": {uri}"
            );
        }
    }

    /// A server on 127.0.0.1 that answers every request with `status` and `body`.
    async fn answering(status: u16, body: &'static str) -> String {
        answering_with(status, "", body).await
    }

    async fn answering_with(status: u16, headers: &'static str, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = sock.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn request(deadline: Duration) -> FetchRequest {
        FetchRequest {
            key: "k".into(),
            target: Target::private("123456789012", "eu-west-1", false).unwrap(),
            creds: CredentialSource::default(),
            deadline,
        }
    }

    #[tokio::test]
    async fn an_unreadable_answer_never_shows_its_body() {
        // A 200 whose body is not what ECR sends, with a token in it.
        let endpoint = answering(
            200,
            r#"{"authorizationData": "QVdTOnNlY3JldC1wYXNzd29yZC1YWVo=", "broken"#,
        )
        .await;
        let env = Env::from_pairs([
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "AKIAUNITTEST00001234"),
            ("AWS_SECRET_ACCESS_KEY", "unit-test-secret-key"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ]);
        let out = fetch_all(&env, None, &[request(Duration::from_secs(5))]).await;
        let e = out[0].as_ref().unwrap_err().to_string();
        for secret in [
            "QVdTOnNlY3JldC1wYXNzd29yZC1YWVo",
            "secret-password",
            "unit-test-secret-key",
            "AKIAUNITTEST0000",
        ] {
            assert!(!e.contains(secret), "{e}");
        }
        assert!(e.contains(&endpoint) && e.contains("ending in 1234"), "{e}");
        assert!(
            !e.contains(" {") && !e.contains("Error {"),
            "a Debug dump: {e}"
        );

        // The same for STS AssumeRoleWithWebIdentity: keys in a broken answer.
        let sts = answering(
            200,
            "<AssumeRoleWithWebIdentityResponse><Credentials><SecretAccessKey>sts-secret-key-XYZ</SecretAccessKey><Session",
        )
        .await;
        let env = Env::from_pairs([("HOME", "/nonexistent"), ("AWS_ENDPOINT_URL", sts.as_str())]);
        let web = WebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/ci".into(),
            token: crate::secret::Secret::new("header.payload.signature".into()),
            session_name: "s".into(),
            duration_secs: 3600,
            sts_region: "us-east-1".into(),
        };
        let out = fetch_all(&env, Some(&web), &[request(Duration::from_secs(5))]).await;
        let e = out[0].as_ref().unwrap_err().to_string();
        assert!(
            !e.contains("sts-secret-key") && !e.contains("header.payload"),
            "{e}"
        );
        assert!(
            e.contains("AssumeRoleWithWebIdentity") && e.contains(&sts),
            "{e}"
        );
    }

    #[tokio::test]
    async fn aws_error_codes_become_advice() {
        let endpoint = answering(
            400,
            r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:GetAuthorizationToken"}"#,
        )
        .await;
        let env = Env::from_pairs([
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "AKIAUNITTEST00001234"),
            ("AWS_SECRET_ACCESS_KEY", "unit-test-secret-key"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ]);
        let out = fetch_all(&env, None, &[request(Duration::from_secs(5))]).await;
        let e = out[0].as_ref().unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "getting an ECR token for aws/eu-west-1 from {endpoint} (credentials: environment variables \
                 (AWS_ACCESS_KEY_ID ending in 1234)) failed: AWS answered AccessDeniedException: User: \
                 arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:GetAuthorizationToken. \
                 Give that principal ecr:GetAuthorizationToken (e.g. the managed policy \
                 AmazonEC2ContainerRegistryReadOnly)"
            )
        );
    }

    #[tokio::test]
    async fn caller_identity_names_the_principal_and_reads_aws_clock() {
        let sts = answering_with(
            200,
            "date: Mon, 30 Nov 2026 22:00:00 GMT\r\n",
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
             <Arn>arn:aws:iam::123456789012:user/ci</Arn><UserId>AIDA</UserId><Account>123456789012</Account>\
             </GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        )
        .await;
        let env = Env::from_pairs([
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "AKIAUNITTEST00001234"),
            ("AWS_SECRET_ACCESS_KEY", "unit-test-secret-key"),
            ("AWS_ENDPOINT_URL", sts.as_str()),
        ]);
        let who = caller_identity(
            &env,
            None,
            &CredentialSource::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(
            who,
            CallerIdentity {
                account: "123456789012".into(),
                arn: "arn:aws:iam::123456789012:user/ci".into(),
                source: "environment variables (AWS_ACCESS_KEY_ID ending in 1234)".into(),
                endpoint: sts.clone(),
                server_time: Some(1_796_076_000),
            }
        );
    }

    #[test]
    fn decodes_ecr_tokens() {
        assert_eq!(
            decode_token("QVdTOnBhc3M6d2l0aDpjb2xvbnM="),
            Some(("AWS".into(), "pass:with:colons".into()))
        );
        assert_eq!(decode_token("not base64!"), None);
        assert_eq!(decode_token("QVdT"), None); // "AWS", no colon
    }
}
