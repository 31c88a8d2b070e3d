//! `builder`: plans and assembles host images. This file only parses arguments and reports errors.

mod aci_cmd;
mod cli;
mod fetch_cmd;
mod image;
mod init_build;
mod initramfs;
mod kernel;
mod logging;
mod paths;
mod run;
mod sign_cmd;
mod tools;
mod uki;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(logging::level(cli.verbose, cli.quiet));
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
            cli::AciCommand::Fetch(c) => fetch_cmd::run(c),
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
                eprintln!("kernel {}: cached (config {})", k.arch, k.config.display());
            }
            println!("{}", k.image.display());
            Ok(())
        }
        cli::Command::Build { host, arch, out } => {
            let d = image::load(&host)?;
            let arches = match arch {
                Some(a) => vec![a.into()],
                None => d.decl.arch.clone(),
            };
            for a in arches {
                let b = image::build(&d, a, &out)?;
                println!("{}", b.dir.display());
            }
            Ok(())
        }
        cli::Command::Run {
            target,
            arch,
            out,
            kvm,
            powerdown_after,
            memory,
        } => {
            let arch: hostdecl::Arch = match arch {
                Some(a) => a.into(),
                None => hostdecl::Arch::current().unwrap_or(hostdecl::Arch::X86_64),
            };
            let built = if target.is_dir() {
                image::open_built(&target, arch)?
            } else {
                let d = image::load(&target)?;
                if !d.decl.arch.contains(&arch) {
                    anyhow::bail!(
                        "{} does not declare arch {arch} (it declares {:?})",
                        target.display(),
                        d.decl.arch
                    );
                }
                image::build(&d, arch, &out)?
            };
            let opts = run::RunOptions {
                kvm,
                powerdown_after: powerdown_after.map(std::time::Duration::from_secs),
                memory_mib: memory,
            };
            run::run(&built, &opts)
        }
    }
}
