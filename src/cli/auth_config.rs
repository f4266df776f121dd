//! `ecr-auth auth-config REGISTRY... [--format json|dotenv] [--merge FILE|-] [--output FILE]`:
//! a DOCKER_AUTH_CONFIG document (`auths` with the ECR tokens), or a GitLab
//! dotenv file carrying it.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::auth_document::{self, Shape};
use crate::dockercfg::{write_atomic, DockerConfig};
use crate::gitlab::dotenv::Form;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Registry hosts (ECR, or mapped to ECR in the ecr-auth config file).
    /// Default: every registry in the ecr-auth config file.
    #[arg(
        value_name = "REGISTRY",
        env = "ECR_AUTH_REGISTRIES",
        value_delimiter = ','
    )]
    pub registries: Vec<String>,
    /// `json`: the document, compact (no white space). `dotenv`: a GitLab dotenv report.
    #[arg(long, value_enum, default_value_t = Format::Json, env = "ECR_AUTH_FORMAT")]
    pub format: Format,
    /// Keep an existing document's entries (`auths`, `credHelpers`, …): a file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub merge: Option<String>,
    /// Write here (mode 0600, atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE", env = "ECR_AUTH_OUTPUT")]
    pub output: Option<PathBuf>,
    /// dotenv: always one ECR_AUTH_TOKEN_<REGION> variable per regional token
    /// (build DOCKER_AUTH_CONFIG in .gitlab-ci.yml), even when the document would fit.
    #[arg(long)]
    pub token_vars: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Dotenv,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let tokens = ctx.tokens()?;
    let registries = tokens.config().registries_or(args.registries)?;
    let base = match &args.merge {
        None => DockerConfig::new(),
        Some(src) => read_merge(src)?,
    };
    let shape = match args.format {
        Format::Json => Shape::Json,
        Format::Dotenv if args.token_vars => Shape::Dotenv(Form::TokenVars),
        Format::Dotenv => Shape::Dotenv(Form::Auto),
    };
    let (text, advice) = auth_document::render(&tokens, &registries, &base, shape)?;
    if let Some(advice) = advice {
        eprintln!("{advice}");
    }
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes(), 0o600)?,
        None => print!("{text}"),
    }
    Ok(0)
}

fn read_merge(src: &str) -> anyhow::Result<DockerConfig> {
    if src == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the document to merge from stdin")?;
        return Ok(DockerConfig::parse(&text, "the document on stdin")?);
    }
    let path = PathBuf::from(src);
    DockerConfig::read(&path)?
        .with_context(|| format!("--merge {src}: no such file (use - for stdin)"))
}
