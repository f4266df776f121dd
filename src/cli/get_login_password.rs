//! `ecr-auth get-login-password [REGISTRY] [--region R]`: the password alone,
//! like `aws ecr get-login-password`, for `docker login --password-stdin`.

use anyhow::Context as _;

use super::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A registry host (ECR, or mapped to ECR in the config file).
    pub registry: Option<String>,
    /// The region, when no registry is given (default: AWS_REGION / AWS_DEFAULT_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Use the FIPS endpoint of the region.
    #[arg(long)]
    pub fips: bool,
    /// Use ECR Public (us-east-1).
    #[arg(long, conflicts_with_all = ["registry", "region", "fips"])]
    pub public: bool,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let tokens = ctx.tokens()?;
    let token = match (&args.registry, args.public) {
        (Some(registry), _) => tokens.get(registry)?,
        (None, true) => tokens.get("public.ecr.aws")?,
        (None, false) => {
            let region = args
                .region
                .clone()
                .or_else(|| ctx.env.get("AWS_REGION").map(str::to_string))
                .or_else(|| ctx.env.get("AWS_DEFAULT_REGION").map(str::to_string))
                .context("no region: give a REGISTRY, --region, or set AWS_REGION")?;
            tokens.get_for_region(&region, args.fips)?
        }
    };
    println!("{}", token.password.expose());
    Ok(0)
}
