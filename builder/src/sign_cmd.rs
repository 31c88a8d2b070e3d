//! `builder key generate`, `builder aci sign|verify|discover`: keys, signatures, trust, discovery.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SignCommand {}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {}

pub fn run(cmd: SignCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub fn run_key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {}
}
