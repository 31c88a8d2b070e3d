//! `builder`: plans and assembles host images. This file only parses arguments and reports errors.

mod aci_cmd;
mod cli;
mod sign_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Aci { command } => match command {
            cli::AciCommand::Archive(c) => aci_cmd::run(c),
            cli::AciCommand::Sign(c) => sign_cmd::run(c),
        },
        cli::Command::Key { command } => sign_cmd::run_key(command),
        cli::Command::Build { .. } | cli::Command::Run { .. } | cli::Command::Kernel { .. } => {
            anyhow::bail!("not implemented yet")
        }
    }
}
