//! Placeholder: this command is being built (see the open issues).

use super::Context;

#[derive(clap::Args, Debug)]
pub struct Args {}

impl Args {
    pub fn log_format(&self) -> crate::logging::Format {
        crate::logging::Format::Text
    }
}

pub fn run(_args: Args, _ctx: &Context) -> anyhow::Result<i32> {
    anyhow::bail!("this command is not built yet")
}
