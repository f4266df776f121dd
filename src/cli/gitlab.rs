//! `ecr-auth gitlab login` (S3: a job on a shared runner turns its OIDC token
//! into a dotenv report for later jobs) and `ecr-auth gitlab sync-variable`
//! (keep a project/group CI variable fresh through the REST API).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::Context;
use crate::dockercfg::{write_atomic, DockerConfig};
use crate::gitlab::dotenv::{self, Form};
use crate::gitlab::oidc::{self, RoleLogin};
use crate::gitlab::sync::{self, Job, RegistryTokens, SignalWaiter};
use crate::gitlab::variables::{GitLab, Owner, DEFAULT_URL};
use crate::secret::Secret;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// In a job: exchange the job's OIDC token for AWS credentials (STS
    /// AssumeRoleWithWebIdentity), get ECR tokens, write a dotenv report.
    Login(LoginArgs),
    /// Create or update a CI variable (DOCKER_AUTH_CONFIG) on a project or group
    /// with fresh ECR tokens; with --every, keep doing it.
    #[command(name = "sync-variable")]
    SyncVariable(SyncArgs),
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
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
        env = "ECR_AUTH_DURATION"
    )]
    pub duration: String,
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
pub struct SyncArgs {
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
    #[arg(long, value_name = "DURATION", env = "ECR_AUTH_EVERY")]
    pub every: Option<humantime::Duration>,
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
pub struct OidcArgs {
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
    fn login(&self, role_arn: &str, duration: &str) -> anyhow::Result<RoleLogin> {
        Ok(RoleLogin {
            role_arn: role_arn.to_string(),
            id_token_env: self.id_token_env.clone(),
            sts_region: self.sts_region.clone(),
            duration_secs: oidc::duration_secs(duration)?,
        })
    }
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    match args.command {
        Command::Login(a) => login(a, ctx),
        Command::SyncVariable(a) => sync_variable(a, ctx),
    }
}

fn login(a: LoginArgs, ctx: &Context) -> anyhow::Result<i32> {
    let now = crate::tokens::system_now();
    let config = ctx.load_config()?;
    let registries = config.registries_or(a.registries.hosts)?;
    let login = a.oidc.login(&a.role_arn, &a.duration)?;
    let (tokens, session) = oidc::role_tokens(&ctx.env, config, &login, now)?;
    eprintln!("ecr-auth: assumed {} as session {session}", a.role_arn);
    let got = crate::gitlab::tokens_for(&tokens, &registries).with_context(|| {
        format!(
            "cannot get ECR tokens with the credentials of {}",
            a.role_arn
        )
    })?;
    let form = if a.token_vars {
        Form::TokenVars
    } else {
        Form::Auto
    };
    let d = dotenv::render(&DockerConfig::new(), &got, form)?;
    dotenv::check(&d.text).map_err(|e| {
        anyhow::anyhow!("internal error: the dotenv file breaks GitLab's rules: {e}")
    })?;
    write_atomic(&a.output, d.text.as_bytes(), 0o600)?;
    let expires = got.iter().map(|(t, _)| t.expires_at).min().unwrap_or(now);
    eprintln!(
        "ecr-auth: wrote {} ({} bytes: {}) for {}; the tokens expire at {}",
        a.output.display(),
        d.text.len(),
        d.keys.join(", "),
        registries.join(", "),
        crate::tokens::format_time(expires)
    );
    if let Some(line) = &d.ci_line {
        eprintln!("{}", dotenv::ci_line_advice(line, &d.keys));
    }
    Ok(0)
}

fn sync_variable(a: SyncArgs, ctx: &Context) -> anyhow::Result<i32> {
    let tokens = match &a.role_arn {
        Some(role) => {
            // Short sessions: the variable only needs them for one sync.
            let login = a.oidc.login(role, "15m")?;
            let (tokens, session) = oidc::role_tokens(
                &ctx.env,
                ctx.load_config()?,
                &login,
                crate::tokens::system_now(),
            )?;
            eprintln!("ecr-auth: assumed {role} as session {session}");
            tokens
        }
        None => ctx.tokens()?,
    };
    let registries = tokens.config().registries_or(a.registries.hosts)?;
    let owner = match (a.project, a.group) {
        (Some(p), _) => Owner::Project(p),
        (None, Some(g)) => Owner::Group(g),
        (None, None) => anyhow::bail!("name the variable's owner with --project or --group"),
    };
    let token = ctx.env.get(&a.token_env).map(str::trim).filter(|t| !t.is_empty()).with_context(|| {
        format!(
            "${} is empty: set it to a GitLab access token with the `api` scope (Maintainer on the project, Owner on the group)",
            a.token_env
        )
    })?;
    let api = GitLab::new(&a.gitlab_url, Secret::new(token.to_string()))?;
    let job = Job {
        owner,
        key: a.key,
        environment_scope: a.environment_scope,
        protected: a.protected,
        masked: a.masked,
    };
    let source = RegistryTokens {
        tokens: &tokens,
        registries,
    };
    match a.every {
        None => {
            let t = sync::TokenSource::tokens(&source)?;
            let outcome = sync::sync_once(&job, &t, &api)?;
            eprintln!(
                "ecr-auth: {} on {}: {}",
                job.key,
                job.owner,
                sync::describe(outcome)
            );
            Ok(0)
        }
        Some(every) => {
            let every = every.as_secs() as i64;
            anyhow::ensure!(every >= 60, "--every must be at least 1m");
            let mut waiter = SignalWaiter::new().context("cannot install the SIGTERM handler")?;
            sync::run(&job, every, &source, &api, &mut waiter, &mut |line| {
                eprintln!("ecr-auth: {line}")
            });
            Ok(0)
        }
    }
}
