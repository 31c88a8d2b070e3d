//! `builder`: plans and assembles host images. This file only parses arguments and reports errors.

mod aci_cmd;
mod assemble;
mod cli;
mod datafs;
mod disk;
mod esp;
mod fetch_cmd;
mod formats;
mod image;
mod init_bin;
mod initramfs;
mod inspect_cmd;
mod kernel;
mod logging;
mod manifest;
mod paths;
mod payload;
mod run;
mod sign_cmd;
mod tools;
mod uki;
mod verify_cmd;
mod verity;

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
                req.fragments_dir = Some(dir);
            }
            req.extra_fragments = extra;
            if let Some(j) = jobs {
                req.jobs = j.max(1);
            }
            let k = kernel::build(&req)?;
            if k.cache_hit {
                eprintln!("kernel {}: cached (config {})", k.arch, k.config.display());
            }
            if k.system_map.is_file() {
                eprintln!(
                    "kernel {}: symbols for reading an oops: {}",
                    k.arch,
                    k.system_map.display()
                );
            }
            println!("{}", k.image.display());
            Ok(())
        }
        cli::Command::Build {
            host,
            arch,
            out,
            key,
            format,
            skip_image_checks,
        } => {
            let d = image::load(&host, key.as_deref())?;
            let arches = d.decl.arches_to_build(arch.map(Into::into))?;
            let opts = assemble::BuildOptions {
                formats: (!format.is_empty()).then_some(format),
                skip_image_checks,
            };
            for a in arches {
                let b = assemble::build(&d, a, &out, &opts)?;
                for o in &b.outputs {
                    println!("{}", o.display());
                }
                if let Some(direct) = &b.direct {
                    println!("{}", direct.dir.display());
                }
            }
            Ok(())
        }
        cli::Command::Verify { image, key } => verify_cmd::run(&image, &key),
        cli::Command::Inspect { image, json } => inspect_cmd::run(&image, json),
        cli::Command::Run {
            target,
            arch,
            out,
            firmware,
            disk_size,
            disk_bus,
            kvm,
            powerdown_after,
            memory,
            cpus,
        } => {
            let opts = run::RunOptions {
                cpus,
                kvm,
                powerdown_after: powerdown_after.map(std::time::Duration::from_secs),
                memory_mib: memory,
                firmware,
                disk_size,
                disk_bus,
            };
            let arch: Option<hostdecl::Arch> = arch.map(Into::into);
            if target.is_dir() {
                let arch = arch.unwrap_or_else(default_arch);
                return run::run_direct(&image::open_built(&target, arch)?, &opts);
            }
            let is_declaration = target.extension().is_some_and(|e| e == "toml");
            if !is_declaration {
                let arch = match arch {
                    Some(a) => a,
                    None => run::arch_of_image(&target)?,
                };
                return run::run_disk(&target, arch, &opts);
            }
            let d = image::load(&target, None)?;
            let arch = match arch {
                Some(a) => a,
                None => {
                    let here = default_arch();
                    if d.decl.arch.contains(&here) {
                        here
                    } else {
                        d.decl.arch[0]
                    }
                }
            };
            let arch = d.decl.arches_to_build(Some(arch))?[0];
            let b = assemble::build(&d, arch, &out, &assemble::BuildOptions::default())?;
            run::run_disk(&b.image, arch, &opts)
        }
    }
}

fn default_arch() -> hostdecl::Arch {
    hostdecl::Arch::current().unwrap_or(hostdecl::Arch::X86_64)
}
