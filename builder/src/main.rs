//! `builder`: plans and assembles host images. This file only parses arguments and reports errors.

mod aci_cmd;
mod cli;
mod kernel;
mod paths;
mod sign_cmd;
mod tools;

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
        cli::Command::Kernel {
            arch,
            source,
            sha256,
            fragments,
            extra,
            jobs,
        } => {
            let mut req = kernel::KernelRequest::new(arch.into());
            req.source = source;
            req.sha256 = sha256;
            if let Some(dir) = fragments {
                req.fragments_dir = dir;
            }
            req.extra_fragments = extra;
            if let Some(j) = jobs {
                req.jobs = j.max(1);
            }
            let k = kernel::build(&req)?;
            if k.cache_hit {
                eprintln!("kernel {}: cached", k.arch);
            }
            println!("{}", k.image.display());
            Ok(())
        }
        cli::Command::Build { .. } | cli::Command::Run { .. } => {
            anyhow::bail!("not implemented yet")
        }
    }
}
