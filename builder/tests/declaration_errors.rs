//! Bad declarations given to the real `builder build`: one test per kind of error, each
//! asserting that the message names the file, the line and column, and the field, and that
//! nothing was written. Every declaration here fails before any kernel or init build starts
//! (each that could get that far names a prebuilt "kernel" that is not one, as a backstop).

use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    dir: tempfile::TempDir,
    toml: PathBuf,
}

impl Case {
    fn new(text: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("host.toml");
        std::fs::write(&toml, text).unwrap();
        Case { dir, toml }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `builder build host.toml -o out ARGS` and returns its stderr; it must fail and
    /// write no output.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.path("out");
        let run = Command::new(env!("CARGO_BIN_EXE_builder"))
            .arg("build")
            .arg(&self.toml)
            .arg("-o")
            .arg(&out)
            .args(args)
            // Nothing here may reach a kernel build; if one did, it would not touch the cache.
            .env("HOSTOS_CACHE", self.path("cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(!run.status.success(), "builder build succeeded:\n{err}");
        assert!(!out.exists(), "a refused build wrote {}", out.display());
        assert!(
            !err.contains("building") && !err.contains("configuring"),
            "a refused declaration started a build:\n{err}"
        );
        err
    }

    /// Asserts the error starts at `line:column` of host.toml, naming `field`.
    fn assert_at(&self, err: &str, line: usize, column: usize, field: &str) {
        let want = format!("{}:{line}:{column}: {field}: ", self.toml.display());
        assert!(err.contains(&want), "expected {want:?} in:\n{err}");
    }
}

/// A stand-in x86_64 kernel: the boot-protocol magic the builder checks and nothing else.
fn fake_bzimage(path: &Path) {
    let mut b = vec![0u8; 1024];
    b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    b[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(path, b).unwrap();
}

const HEAD: &str = "name = \"bad\"\narch = [\"x86_64\"]\n";

#[test]
fn toml_syntax_error_names_line_and_column() {
    let c = Case::new(&format!("{HEAD}hostname = \"x\n"));
    let err = c.refused(&[]);
    let want = format!("{}:3:", c.toml.display());
    assert!(err.contains(&want) && err.contains("TOML syntax"), "{err}");
}

#[test]
fn misspelt_key_names_its_place_and_suggests_the_key() {
    let c = Case::new(&format!(
        "{HEAD}[init]\non_fatal = \"poweroff\"\nshutdown_grace_sec = 3\n"
    ));
    let err = c.refused(&[]);
    c.assert_at(&err, 5, 1, "init.shutdown_grace_sec");
    assert!(
        err.contains("unknown key; did you mean `shutdown_grace_secs`?"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_field_at_its_value() {
    let c = Case::new(&format!("{HEAD}[disk]\nesp_mib = \"64\"\n"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 11, "disk.esp_mib");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn missing_required_field_is_named() {
    let c = Case::new("arch = [\"x86_64\"]\n[[image]]\nid = \"sha512-00\"\n");
    let err = c.refused(&[]);
    c.assert_at(&err, 2, 1, "image[0].path");
    assert!(err.contains("required, but missing"), "{err}");
    let c = Case::new("arch = [\"x86_64\"]\n");
    let err = c.refused(&[]);
    c.assert_at(&err, 1, 1, "name");
}

#[test]
fn value_outside_the_choices_lists_them() {
    let c = Case::new(&format!("{HEAD}[init]\non_fatal = \"explode\"\n"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 12, "init.on_fatal");
    assert!(
        err.contains("`poweroff`") && err.contains("`reboot`"),
        "{err}"
    );
}

#[test]
fn bad_value_says_the_limit() {
    let c = Case::new(&format!("{HEAD}[disk]\nesp_mib = 8\n"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 11, "disk.esp_mib");
    assert!(err.contains("at least 33 MiB"), "{err}");
}

#[test]
fn pod_without_apps_names_the_pod() {
    let c = Case::new(&format!("{HEAD}\n[[pod]]\nname = \"web\"\n"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 1, "pod[0]");
    assert!(err.contains("has no apps"), "{err}");
}

#[test]
fn pod_app_with_an_image_not_embedded_and_no_trust_key_for_it_names_the_field() {
    let c = Case::new(&format!(
        "{HEAD}\n[[pod]]\nname = \"web\"\n[[pod.app]]\nname = \"main\"\nimage = \"example.com/web:1.0\"\n"
    ));
    let err = c.refused(&[]);
    c.assert_at(&err, 8, 9, "pod[0].app[0].image");
    assert!(err.contains("app web/main"), "{err}");
    assert!(
        err.contains("no [[trust]] key covers example.com/web"),
        "{err}"
    );
}

#[test]
fn missing_ca_file_names_the_field() {
    let c = Case::new(&format!("{HEAD}[fetch]\nca = [\"certs/test-ca.pem\"]\n"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 7, "fetch.ca[0]");
    assert!(err.contains("certs/test-ca.pem does not exist"), "{err}");
}

#[test]
fn ca_file_without_certificates_names_the_field() {
    let c = Case::new(&format!(
        "{HEAD}[fetch]\nca = [\"ca.pem\"]\n[kernel]\nprebuilt = {{ x86_64 = \"bzImage\" }}\n"
    ));
    std::fs::write(c.path("ca.pem"), "not a certificate\n").unwrap();
    fake_bzimage(&c.path("bzImage"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 7, "fetch.ca[0]");
    assert!(err.contains("holds no PEM certificate"), "{err}");
}

#[test]
fn pod_app_with_a_bad_isolator_value_names_the_field() {
    let c = Case::new(&format!(
        "{HEAD}\n[[pod]]\nname = \"web\"\n[[pod.app]]\nname = \"main\"\nimage = \"example.com/web\"\nmemory = \"lots\"\n"
    ));
    let err = c.refused(&[]);
    c.assert_at(&err, 9, 10, "pod[0].app[0].memory");
}

#[test]
fn missing_file_is_resolved_against_the_declarations_directory() {
    // The prebuilt "kernel" is not one: if the files were not checked when the declaration is
    // read, the build stops at it instead of building a kernel.
    let c = Case::new(&format!(
        "{HEAD}[kernel]\nprebuilt = {{ x86_64 = \"hostname\" }}\n[[trust]]\nkey = \"keys/ops.pub\"\nprefix = \"example.com/\"\n"
    ));
    std::fs::write(c.path("hostname"), b"box").unwrap();
    let err = c.refused(&[]);
    c.assert_at(&err, 6, 7, "trust[0].key");
    let want = format!(
        "trust key {} does not exist",
        c.path("keys/ops.pub").display()
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn missing_prebuilt_kernel_names_file_line_and_field() {
    let c = Case::new(&format!(
        "{HEAD}[kernel]\nprebuilt = {{ x86_64 = \"bzImage\" }}\n"
    ));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 23, "kernel.prebuilt.x86_64");
    assert!(err.contains("bzImage does not exist"), "{err}");
}

#[test]
fn prebuilt_kernel_that_is_a_directory_is_called_one() {
    let c = Case::new(&format!(
        "{HEAD}[kernel]\nprebuilt = {{ x86_64 = \"kdir\" }}\n"
    ));
    std::fs::create_dir(c.path("kdir")).unwrap();
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 23, "kernel.prebuilt.x86_64");
    assert!(err.contains("is a directory, not a kernel image"), "{err}");
}

#[test]
fn prebuilt_file_that_is_not_a_kernel_is_refused() {
    let c = Case::new(&format!(
        "{HEAD}[kernel]\nprebuilt = {{ x86_64 = \"hostname\" }}\n"
    ));
    // What a new user tried: 3 bytes of /etc/hostname.
    std::fs::write(c.path("hostname"), b"box").unwrap();
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 23, "kernel.prebuilt.x86_64");
    assert!(err.contains("(3 bytes) is not a kernel image"), "{err}");
    assert!(err.contains("bzImage"), "{err}");
}

#[test]
fn prebuilt_kernel_of_the_other_arch_is_refused() {
    let c = Case::new(
        "name = \"bad\"\narch = [\"aarch64\"]\n[kernel]\nprebuilt = { aarch64 = \"bzImage\" }\n",
    );
    fake_bzimage(&c.path("bzImage"));
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 24, "kernel.prebuilt.aarch64");
    assert!(
        err.contains("is an x86_64 bzImage, not a kernel for aarch64"),
        "{err}"
    );
}

#[test]
fn arch_the_declaration_does_not_list_is_refused_before_any_build() {
    // The aarch64 prebuilt is not a kernel on purpose: were the arch not refused first, the
    // build would stop at it rather than start a kernel build.
    let c = Case::new(
        "name = \"bad\"\n\narch = [\"x86_64\"]\n[kernel]\nprebuilt = { x86_64 = \"bzImage\", aarch64 = \"Image\" }\n",
    );
    fake_bzimage(&c.path("bzImage"));
    std::fs::write(c.path("Image"), b"box").unwrap();
    let err = c.refused(&["--arch", "aarch64"]);
    c.assert_at(&err, 3, 8, "arch");
    assert!(err.contains("does not build aarch64"), "{err}");
}

#[test]
fn prebuilt_arm64_image_gz_is_refused_for_the_uki_naming_the_field() {
    // A gzipped arm64 Image is a kernel, but no EFI application: systemd-stub cannot start it
    // from a UKI, so the build stops at the UKI and names the declaration's field.
    let c = Case::new(
        "name = \"bad\"\narch = [\"aarch64\"]\n[kernel]\nprebuilt = { aarch64 = \"Image.gz\" }\n",
    );
    let mut image = vec![0u8; 4096];
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    std::fs::write(c.path("Image"), image).unwrap();
    let gz = Command::new("gzip")
        .args(["-n", "-k"])
        .arg(c.path("Image"))
        .status()
        .expect("gzip (package gzip)");
    assert!(gz.success());
    let err = c.refused(&[]);
    c.assert_at(&err, 4, 24, "kernel.prebuilt.aarch64");
    assert!(
        err.contains("not an EFI PE image") && err.contains("not Image.gz"),
        "{err}"
    );
}
