//! `builder aci build|validate|inspect|extract`: authoring and checking App Container images.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {}

pub fn run(cmd: ArchiveCommand) -> anyhow::Result<()> {
    match cmd {}
}
