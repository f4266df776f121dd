//! `ecr-auth gitlab login` (S3: a job on a shared runner turns its OIDC token
//! into a dotenv report for later jobs) and `ecr-auth gitlab sync-variable`
//! (keep a project/group CI variable fresh through the REST API).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::Context;
use crate::gitlab::dotenv::Form;
use crate::gitlab::login::{self, LoginRequest};
use crate::gitlab::oidc::{self, RoleLogin};
use crate::gitlab::sync::{self, Job, SyncRequest};
use crate::gitlab::variables::{Owner, DEFAULT_URL};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// In a job: exchange the job's OIDC token for AWS credentials (STS
    /// AssumeRoleWithWebIdentity), get ECR tokens, write a dotenv report.
    Login(LoginArgs),
    /// Create or update a CI variable (DOCKER_AUTH_CONFIG) on a project or group
    /// with fresh ECR tokens; with --every, keep doing it.
    #[command(name = "sync-variable")]
    SyncVariable(SyncArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct LoginArgs {
    /// The IAM role that trusts GitLab's OIDC provider.
    #[arg(long, value_name = "ARN", env = "ECR_AUTH_ROLE_ARN")]
    pub role_arn: String,
    #[command(flatten)]
    pub registries: super::RegistryArgs,
    #[command(flatten)]
    pub oidc: OidcArgs,
    /// How long the role session lasts (15m to 12h, at most the role's maximum).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1h",
        env = "ECR_AUTH_DURATION",
        value_parser = crate::duration::parse_arg
    )]
    pub duration: Duration,
    /// The dotenv file to write (mode 0600); name it in `artifacts: reports: dotenv:`.
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "ecr-auth.env",
        env = "ECR_AUTH_OUTPUT"
    )]
    pub output: PathBuf,
    /// Always write one ECR_AUTH_TOKEN_<REGION> variable per regional token.
    #[arg(long, env = "ECR_AUTH_TOKEN_VARS")]
    pub token_vars: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("owner").required(true).args(["project", "group"])))]
pub(crate) struct SyncArgs {
    /// The project, by id or full path (group/project).
    #[arg(long, value_name = "ID|PATH", env = "ECR_AUTH_GITLAB_PROJECT")]
    pub project: Option<String>,
    /// The group, by id or full path.
    #[arg(long, value_name = "ID|PATH", env = "ECR_AUTH_GITLAB_GROUP")]
    pub group: Option<String>,
    /// The variable to keep fresh.
    #[arg(
        long,
        default_value = "DOCKER_AUTH_CONFIG",
        env = "ECR_AUTH_VARIABLE_KEY"
    )]
    pub key: String,
    #[command(flatten)]
    pub registries: super::RegistryArgs,
    /// GitLab's API root (in a job, $CI_API_V4_URL).
    #[arg(long, value_name = "URL", env = "CI_API_V4_URL", default_value = DEFAULT_URL)]
    pub gitlab_url: String,
    /// Allow a plain http:// --gitlab-url that is not this machine (the token
    /// crosses the network unencrypted).
    #[arg(long)]
    pub allow_plain_http: bool,
    /// The variable holding the GitLab access token (never pass a token as an argument).
    #[arg(long, value_name = "NAME", default_value = "GITLAB_TOKEN")]
    pub token_env: String,
    /// The variable's environment scope.
    #[arg(
        long,
        value_name = "SCOPE",
        default_value = "*",
        env = "ECR_AUTH_ENVIRONMENT_SCOPE"
    )]
    pub environment_scope: String,
    /// Only protected branches and tags see it (default: keep the current setting).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub protected: Option<bool>,
    /// Mask it in job logs (sent raw, without white space, as GitLab requires).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub masked: Option<bool>,
    /// Keep running: refresh at half the token's life and at least this often (e.g. 1h).
    #[arg(long, value_name = "DURATION", env = "ECR_AUTH_EVERY", value_parser = crate::duration::parse_arg)]
    pub every: Option<Duration>,
    /// In a (scheduled) job: get AWS credentials for this role with the job's
    /// OIDC token, as `gitlab login` does, instead of the default AWS chain.
    #[arg(
        long,
        value_name = "ARN",
        env = "ECR_AUTH_ROLE_ARN",
        conflicts_with = "every"
    )]
    pub role_arn: Option<String>,
    /// With --role-arn: how the job's OIDC token is found and exchanged.
    #[command(flatten)]
    pub oidc: OidcArgs,
}

/// Where the job's OIDC token is and which STS endpoint takes it (shared by
/// `login` and `sync-variable --role-arn`).
#[derive(clap::Args, Debug)]
pub(crate) struct OidcArgs {
    /// The variable holding the job's OIDC token (`id_tokens:` in .gitlab-ci.yml).
    #[arg(long, value_name = "NAME", default_value = oidc::DEFAULT_TOKEN_VAR, env = "ECR_AUTH_ID_TOKEN_ENV")]
    pub id_token_env: String,
    /// The region of the STS endpoint.
    #[arg(
        long,
        value_name = "REGION",
        env = "AWS_REGION",
        default_value = "us-east-1"
    )]
    pub sts_region: String,
}

impl OidcArgs {
    fn login(&self, role_arn: &str, duration: Duration) -> anyhow::Result<RoleLogin> {
        Ok(RoleLogin {
            role_arn: role_arn.to_string(),
            id_token_env: self.id_token_env.clone(),
            sts_region: self.sts_region.clone(),
            duration_secs: oidc::duration_secs(duration)?,
        })
    }
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let mut notes = std::io::stderr();
    match args.command {
        Command::Login(a) => {
            let req = LoginRequest {
                login: a.oidc.login(&a.role_arn, a.duration)?,
                registries: a.registries.hosts,
                output: a.output,
                form: if a.token_vars {
                    Form::TokenVars
                } else {
                    Form::Auto
                },
            };
            login::login(
                &req,
                &ctx.env,
                ctx.load_config()?,
                ctx.clock.clone(),
                &mut notes,
            )?;
        }
        Command::SyncVariable(a) => {
            let owner = match (a.project, a.group) {
                (Some(p), _) => Owner::Project(p),
                (None, Some(g)) => Owner::Group(g),
                (None, None) => {
                    anyhow::bail!("name the variable's owner with --project or --group")
                }
            };
            let req = SyncRequest {
                job: Job {
                    owner,
                    key: a.key,
                    environment_scope: a.environment_scope,
                    protected: a.protected,
                    masked: a.masked,
                },
                registries: a.registries.hosts,
                gitlab_url: a.gitlab_url,
                allow_plain_http: a.allow_plain_http,
                token_env: a.token_env,
                every: a.every,
                // Short sessions: the variable only needs them for one sync.
                role: match &a.role_arn {
                    Some(role) => Some(a.oidc.login(role, Duration::from_secs(15 * 60))?),
                    None => None,
                },
            };
            sync::command(
                req,
                &ctx.env,
                ctx.load_config()?,
                ctx.clock.clone(),
                &mut notes,
            )?;
        }
    }
    Ok(0)
}
