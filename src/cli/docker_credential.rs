//! `ecr-auth docker-credential <verb>`, and the binary under a
//! `docker-credential-*` name.

use super::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// get, store, erase, list or version.
    pub verb: String,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    Ok(run_verb(&args.verb, ctx))
}

pub fn run_verb(verb: &str, ctx: &Context) -> i32 {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    // The helper's diagnostics go through the logger: stderr, or the log file.
    let mut err = crate::logging::Diagnostics::default();
    let ignore = ctx.env.flag("AWS_ECR_IGNORE_CREDS_STORAGE");
    match ctx.tokens() {
        Ok(tokens) => {
            crate::helper::run(verb, &tokens, ignore, &mut stdin.lock(), &mut out, &mut err)
        }
        Err(e) => {
            // A broken config file is a real failure: say so on stdout, as the
            // protocol wants, so `docker pull` shows it.
            let message = format!("ecr-auth: {}", crate::report::report(e.as_ref()));
            println!("{message}");
            tracing::error!("{message}");
            1
        }
    }
}
