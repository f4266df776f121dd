//! Placeholder: this command is being built (see the open issues).

use super::Context;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &Context) -> anyhow::Result<i32> {
    anyhow::bail!("this command is not built yet")
}
