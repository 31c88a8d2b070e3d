//! External tools the builder runs, and the Debian package that provides each, so a missing
//! tool is reported in one line naming what to install instead of failing deep inside a build.

use std::path::{Path, PathBuf};

/// A program the builder needs, with the package that installs it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MAKE: Tool = Tool {
    program: "make",
    package: "make",
};
pub const GCC: Tool = Tool {
    program: "gcc",
    package: "gcc",
};
pub const AARCH64_GCC: Tool = Tool {
    program: "aarch64-linux-gnu-gcc",
    package: "gcc-aarch64-linux-gnu",
};
pub const FLEX: Tool = Tool {
    program: "flex",
    package: "flex",
};
pub const BISON: Tool = Tool {
    program: "bison",
    package: "bison",
};
pub const BC: Tool = Tool {
    program: "bc",
    package: "bc",
};
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
pub const XZ: Tool = Tool {
    program: "xz",
    package: "xz-utils",
};
pub const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
};
pub const PERL: Tool = Tool {
    program: "perl",
    package: "perl",
};
pub const QEMU_X86_64: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86 (from bookworm-backports)",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub const QEMU_AARCH64: Tool = Tool {
    program: "qemu-system-aarch64",
    package: "qemu-system-arm (from bookworm-backports)",
};
pub const MKFS_EROFS: Tool = Tool {
    program: "mkfs.erofs",
    package: "erofs-utils",
};
pub const MKE2FS: Tool = Tool {
    program: "mke2fs",
    package: "e2fsprogs",
};

// Test oracles: outside tools that check what the builder writes (the builder does not run
// them itself).
#[cfg(test)]
pub const FSCK_EROFS: Tool = Tool {
    program: "fsck.erofs",
    package: "erofs-utils",
};
#[cfg(test)]
pub const DUMP_EROFS: Tool = Tool {
    program: "dump.erofs",
    package: "erofs-utils",
};
#[cfg(test)]
pub const E2FSCK: Tool = Tool {
    program: "e2fsck",
    package: "e2fsprogs",
};
#[cfg(test)]
pub const DUMPE2FS: Tool = Tool {
    program: "dumpe2fs",
    package: "e2fsprogs",
};
#[cfg(test)]
pub const VERITYSETUP: Tool = Tool {
    program: "veritysetup",
    package: "cryptsetup-bin",
};

/// The first line `program arg` prints (on stdout, or on stderr for tools like `mke2fs -V`),
/// e.g. its version; `"<program>: unknown"` when it cannot be run. Recorded where bit-identical
/// output is promised only for the same tools (the kernel cache key, the image manifest).
pub fn version_line(program: &str, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8(text).ok()
        })
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| format!("{program}: unknown"))
}

/// Files (not programs) that must exist, with their package.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    pub path: &'static str,
    pub package: &'static str,
}

pub const LINUX_SOURCE: DataFile = DataFile {
    path: "/usr/src/linux-source-6.1.tar.xz",
    package: "linux-source-6.1",
};
pub const LIBELF_HEADER: DataFile = DataFile {
    path: "/usr/include/libelf.h",
    package: "libelf-dev",
};
pub const OPENSSL_HEADER: DataFile = DataFile {
    path: "/usr/include/openssl/ssl.h",
    package: "libssl-dev",
};

/// Error for a missing tool or file: one line naming the package to install.
#[derive(Debug, thiserror::Error)]
#[error("{what} not found: install the Debian package {package} (or run scripts/setup.sh)")]
pub struct Missing {
    pub what: String,
    pub package: &'static str,
}

/// Finds `program` on PATH (or checks it as a path when it contains a slash).
pub fn find(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return is_executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks every tool and file; reports all missing ones at once.
pub fn require(tools: &[Tool], files: &[DataFile]) -> Result<(), MissingAll> {
    let mut missing = Vec::new();
    for t in tools {
        if find(t.program).is_none() {
            missing.push(Missing {
                what: format!("program `{}`", t.program),
                package: t.package,
            });
        }
    }
    for f in files {
        if !Path::new(f.path).exists() {
            missing.push(Missing {
                what: f.path.to_string(),
                package: f.package,
            });
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingAll(missing))
    }
}

/// Several missing tools, one line each.
#[derive(Debug)]
pub struct MissingAll(pub Vec<Missing>);

impl std::fmt::Display for MissingAll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MissingAll {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let t = Tool {
            program: "surely-not-a-real-program-xyz",
            package: "pkg-xyz",
        };
        let err = require(&[t], &[]).unwrap_err().to_string();
        assert!(err.contains("surely-not-a-real-program-xyz"), "{err}");
        assert!(err.contains("install the Debian package pkg-xyz"), "{err}");
    }

    #[test]
    fn present_tool_passes() {
        require(
            &[Tool {
                program: "sh",
                package: "dash",
            }],
            &[],
        )
        .unwrap();
    }

    #[test]
    fn missing_file_names_its_package() {
        let f = DataFile {
            path: "/nonexistent/file/xyz",
            package: "pkg-file",
        };
        let err = require(&[], &[f]).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/file/xyz") && err.contains("pkg-file"),
            "{err}"
        );
    }
}
