//! `cargo xtask fixture` — not written yet (being built in its issue).

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<u8> {
    anyhow::bail!("`fixture` is not implemented yet")
}
