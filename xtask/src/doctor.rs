//! `cargo xtask doctor` — not written yet (being built in its issue).

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<u8> {
    anyhow::bail!("`doctor` is not implemented yet")
}
