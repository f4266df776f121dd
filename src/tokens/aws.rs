//! Fetching tokens from AWS: the only place that builds an SDK client, a TLS
//! stack or an async runtime, and only on a cache miss.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_types::region::Region;
use base64::Engine;

use super::{Fetch, FetchRequest, Fetched, TokenError, WebIdentity};
use crate::config::CredentialSource;
use crate::env::Env;
use crate::registry::Target;

/// The sources of the default chain, for the "no credentials" message.
pub const CHAIN_SOURCES: &str = "environment variables (AWS_ACCESS_KEY_ID), \
shared config and credentials files (~/.aws, AWS_PROFILE: static keys, role_arn, SSO, credential_process), \
web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), ECS/EKS container credentials, \
EC2 instance metadata (IMDSv2)";

/// Talks to the real AWS APIs (or whatever `AWS_ENDPOINT_URL` points at).
///
/// By default each request's credentials come from the AWS default chain (or
/// the registry's configured profile). [`AwsFetcher::with_credentials`] starts
/// from explicit credentials instead: `ecr-auth gitlab login` gets them from
/// AssumeRoleWithWebIdentity and they exist only in that process. Either way a
/// registry's configured `role_arn` is assumed from the base credentials.
pub struct AwsFetcher {
    #[allow(dead_code)]
    env: Env,
    #[allow(dead_code)]
    web_identity: Option<WebIdentity>,
    base: Option<Credentials>,
}

impl AwsFetcher {
    pub fn new(env: Env, web_identity: Option<WebIdentity>) -> AwsFetcher {
        AwsFetcher {
            env,
            web_identity,
            base: None,
        }
    }

    pub fn with_credentials(credentials: Credentials) -> AwsFetcher {
        AwsFetcher {
            env: Env::default(),
            web_identity: None,
            base: Some(credentials),
        }
    }
}

impl Fetch for AwsFetcher {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>> {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(fetch_all(requests, self.base.as_ref())),
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

type Identity = Result<(SdkConfig, Credentials), TokenError>;

/// Resolves each distinct credential source once, then calls
/// GetAuthorizationToken once per request, all concurrently.
pub async fn fetch_all(
    requests: &[FetchRequest],
    base: Option<&Credentials>,
) -> Vec<Result<Fetched, TokenError>> {
    let mut identities: BTreeMap<&CredentialSource, Option<Identity>> =
        requests.iter().map(|r| (&r.creds, None)).collect();
    let resolved = futures_util::future::join_all(
        identities.keys().map(|creds| resolve_identity(creds, base)),
    )
    .await;
    for (slot, result) in identities.values_mut().zip(resolved) {
        *slot = Some(result);
    }
    let calls = requests.iter().map(|req| {
        let identity = identities[&req.creds].as_ref().expect("resolved above");
        async move {
            let (config, creds) = identity.as_ref().map_err(Clone::clone)?;
            get_authorization_token(config, creds, &req.target).await
        }
    });
    futures_util::future::join_all(calls).await
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

/// The SDK config and resolved credentials for one credential source: the
/// explicit `base` credentials, else the registry's profile alone, else the
/// default chain; then the registry's role, if it has one.
async fn resolve_identity(creds: &CredentialSource, base: Option<&Credentials>) -> Identity {
    // The region only matters for STS calls the chain makes (web identity,
    // role_arn profiles, AssumeRole); ECR clients get their own region.
    let home_region = Region::new("us-east-1");
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .region(home_region.clone())
        .timeout_config(timeouts());
    let loader = match (base, &creds.profile) {
        (Some(base), _) => loader.credentials_provider(base.clone()),
        // A profile named for this registry is used alone: the default chain
        // would prefer environment keys over it.
        (None, Some(profile)) => loader.profile_name(profile).credentials_provider(
            ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build(),
        ),
        (None, None) => {
            // IMDS is the last link of the chain; with no credentials anywhere
            // the SDK's defaults spend many seconds retrying it. One short
            // attempt is enough to tell "no instance role" apart.
            let imds = aws_config::imds::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .read_timeout(Duration::from_secs(1))
                .max_attempts(1)
                .build();
            loader.credentials_provider(
                DefaultCredentialsChain::builder()
                    .imds_client(imds)
                    .region(home_region.clone())
                    .build()
                    .await,
            )
        }
    };
    let config = loader.load().await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| TokenError::Internal("the AWS SDK has no credentials provider".into()))?;
    let first = provider
        .provide_credentials()
        .await
        .map_err(|e| credentials_error(e, creds.profile.as_deref(), None))?;
    let Some(role) = &creds.role_arn else {
        return Ok((config, first));
    };
    let assumed = AssumeRoleProvider::builder(role.as_str())
        .session_name("ecr-auth")
        .configure(&config)
        .build_from_provider(first)
        .await
        .provide_credentials()
        .await
        .map_err(|e| credentials_error(e, creds.profile.as_deref(), Some(role)))?;
    Ok((config, assumed))
}

fn credentials_error(e: CredentialsError, profile: Option<&str>, role: Option<&str>) -> TokenError {
    match (&e, role) {
        (CredentialsError::CredentialsNotLoaded(_), None) => TokenError::NoCredentials {
            tried: match profile {
                Some(p) => format!("profile {p:?} of the shared AWS config files"),
                None => CHAIN_SOURCES.to_string(),
            },
        },
        (_, Some(role)) => TokenError::Aws {
            what: format!("assuming role {role}"),
            message: DisplayErrorContext(&e).to_string(),
        },
        _ => TokenError::Aws {
            what: "loading AWS credentials".into(),
            message: DisplayErrorContext(&e).to_string(),
        },
    }
}

async fn get_authorization_token(
    config: &SdkConfig,
    creds: &Credentials,
    target: &Target,
) -> Result<Fetched, TokenError> {
    let region = Region::new(target.region().to_string());
    let what = format!("getting an ECR token for {}", target.scope());
    let aws = |e: String| TokenError::Aws {
        what: what.clone(),
        message: e,
    };
    let (token, expires_at, proxy_endpoint) = match target {
        Target::Private { fips, .. } => {
            let conf = ecr_config(config, creds, region, *fips).build();
            let out = aws_sdk_ecr::Client::from_conf(conf)
                .get_authorization_token()
                .send()
                .await
                .map_err(|e| aws(DisplayErrorContext(&e).to_string()))?;
            let data = out
                .authorization_data
                .unwrap_or_default()
                .into_iter()
                .next()
                .ok_or_else(|| aws("the answer carried no authorization data".into()))?;
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
                .build();
            let out = aws_sdk_ecrpublic::Client::from_conf(conf)
                .get_authorization_token()
                .send()
                .await
                .map_err(|e| aws(DisplayErrorContext(&e).to_string()))?;
            let data = out
                .authorization_data
                .ok_or_else(|| aws("the answer carried no authorization data".into()))?;
            (
                data.authorization_token,
                data.expires_at.map(|t| t.secs()),
                None,
            )
        }
    };
    let token = token.ok_or_else(|| aws("the answer carried no token".into()))?;
    let (username, password) = decode_token(&token)
        .ok_or_else(|| aws("the token is not base64 of \"user:password\"".into()))?;
    Ok(Fetched {
        username,
        password,
        // ECR tokens live 12 hours; assume so if the answer doesn't say.
        expires_at,
        proxy_endpoint,
    })
}

/// The ECR client's config for one region: a FIPS registry host
/// (`dkr.ecr-fips`) talks to the region's FIPS API endpoint.
fn ecr_config(
    config: &SdkConfig,
    creds: &Credentials,
    region: Region,
    fips: bool,
) -> aws_sdk_ecr::config::Builder {
    aws_sdk_ecr::config::Builder::from(config)
        .region(region)
        .use_fips(fips)
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

    /// Records the URI a request would go to, and stops it before it is sent
    /// (so nothing leaves the machine, not even a DNS query).
    #[derive(Debug, Default, Clone)]
    struct StopBeforeSending(std::sync::Arc<std::sync::Mutex<Option<String>>>);

    impl aws_smithy_runtime_api::client::interceptors::Intercept for StopBeforeSending {
        fn name(&self) -> &'static str {
            "StopBeforeSending"
        }
        fn read_before_transmit(
            &self,
            context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
            _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
            _: &mut aws_smithy_types::config_bag::ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            *self.0.lock().unwrap() = Some(context.request().uri().to_string());
            Err("stopped before sending".into())
        }
    }

    #[tokio::test]
    async fn fips_registries_use_the_fips_api_endpoint() {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        let creds = Credentials::for_tests();
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
            let target = crate::registry::Host::parse(host)
                .unwrap()
                .ecr_target()
                .unwrap();
            let stop = StopBeforeSending::default();
            let conf = ecr_config(
                &sdk,
                &creds,
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
            let uri = stop.0.lock().unwrap().clone().expect("request built");
            assert!(uri.starts_with(want), "{host}: {uri}");
        }
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
