//! `ecr-auth install --dir DIR [--symlink]`.

use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::install::{install, Mode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to put `ecr-auth`, `docker-credential-ecr-login` and `docker-credential-ecr-auth`.
    #[arg(long, default_value = "/usr/local/bin")]
    pub dir: PathBuf,
    /// Make the helper names symlinks to `ecr-auth` (default: copies, which survive bind mounts).
    #[arg(long)]
    pub symlink: bool,
}

pub fn run(args: Args, _ctx: &Context) -> anyhow::Result<i32> {
    let me = std::env::current_exe()
        .map_err(crate::install::InstallError::SelfPath)
        .context("cannot install")?;
    let mode = if args.symlink {
        Mode::Symlink
    } else {
        Mode::Copy
    };
    for path in install(&me, &args.dir, mode)? {
        println!("{}", path.display());
    }
    Ok(0)
}
