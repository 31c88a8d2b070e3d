//! Parsing, defaults, rendering, error placement and hints.

use std::path::Path;

use super::*;
use crate::source::{closest, edit_distance, fields_of};

fn err(text: &str) -> DeclError {
    HostDecl::from_toml_str(text, "h.toml").expect_err("declaration should be refused")
}

fn site(e: &DeclError) -> (usize, usize, String) {
    let s = e.site().expect("error has a site");
    (s.line, s.column, s.field.clone())
}

#[test]
fn minimal_declaration_gets_defaults() {
    let d = HostDecl::from_toml_str("name = \"hello\"\n", "t.toml").unwrap();
    assert_eq!(d.hostname, "hello");
    assert_eq!(d.arch, vec![Arch::X86_64, Arch::Aarch64]);
    assert_eq!(d.init.on_fatal, FatalAction::Poweroff);
    assert_eq!(d.init.shutdown_grace_secs, 10);
    assert_eq!(d.formats, vec![Format::Raw]);
    assert_eq!(d.disk, DiskDecl::default());
    assert_eq!(d.signing.key, None);
    assert!(d.images.is_empty() && d.trust.is_empty() && d.files.is_empty());
}

#[test]
fn rendered_form_reads_back_equal() {
    let text = "name = \"web\"\nhostname = \"web-1.example\"\narch = [\"aarch64\"]\n[kernel]\ncmdline = \"quiet\"\n[init]\non_fatal = \"reboot\"\nshutdown_grace_secs = 3\n";
    let d = HostDecl::from_toml_str(text, "t.toml").unwrap();
    let rendered = d.to_toml_string().unwrap();
    assert_eq!(HostDecl::from_toml_str(&rendered, "r").unwrap(), d);
}

#[test]
fn builder_only_sections_are_not_rendered_for_init() {
    let text = "name = \"web\"\nformats = [\"qcow2\"]\n[signing]\nkey = \"k.key\"\n[disk]\nesp_mib = 64\n[[image]]\npath = \"a.aci\"\n[[trust]]\nkey = \"k.pub\"\n[[file]]\nsource = \"motd\"\ndest = \"etc/motd\"\n";
    let d = HostDecl::from_toml_str(text, "t.toml").unwrap();
    let rendered = d.to_toml_string().unwrap();
    for word in [
        "signing", "disk", "formats", "image", "trust", "file", "k.key",
    ] {
        assert!(!rendered.contains(word), "{word} rendered:\n{rendered}");
    }
    let back = HostDecl::from_toml_str(&rendered, "r").unwrap();
    assert_eq!((back.name, back.hostname), (d.name, d.hostname));
}

#[test]
fn full_example_in_images_parses_with_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/full-example.toml");
    let d = HostDecl::load(&path).unwrap();
    assert!(d.signing.key.is_some());
    assert_ne!(d.disk, DiskDecl::default());
    assert!(d.formats.len() > 1);
    assert!(!d.images.is_empty() && !d.trust.is_empty() && !d.files.is_empty());
}

#[test]
fn hello_example_still_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/hello.toml");
    let d = HostDecl::load(&path).unwrap();
    assert_eq!(d.name, "hello");
}

#[test]
fn misspelt_key_gets_did_you_mean_at_its_line_and_column() {
    let e = err("name = \"a\"\nhostnme = \"x\"\n");
    assert_eq!(site(&e), (2, 1, "hostnme".into()));
    let text = e.to_string();
    assert!(
        text.starts_with("h.toml:2:1: hostnme: unknown key"),
        "{text}"
    );
    assert!(text.contains("did you mean `hostname`?"), "{text}");
}

#[test]
fn misspelt_key_in_a_table_is_checked_against_that_tables_keys() {
    let e = err("name = \"a\"\n[disk]\n  esp_mb = 64\n");
    assert_eq!(site(&e), (3, 3, "disk.esp_mb".into()));
    assert!(e.to_string().contains("did you mean `esp_mib`?"), "{e}");
    let e = err("name = \"a\"\n[[image]]\npath = \"a.aci\"\n[[image]]\npaht = \"b.aci\"\n");
    assert_eq!(site(&e), (5, 1, "image[1].paht".into()));
    assert!(e.to_string().contains("did you mean `path`?"), "{e}");
    let e = err("name = \"a\"\n[kernel]\nprebuilt = { x86_46 = \"bz\" }\n");
    assert_eq!(site(&e).2, "kernel.prebuilt.x86_46");
    assert!(e.to_string().contains("did you mean `x86_64`?"), "{e}");
}

#[test]
fn key_from_another_table_says_where_it_belongs() {
    let e = err("name = \"a\"\nesp_mib = 64\n");
    assert!(
        e.to_string().contains("it belongs in the [disk] table"),
        "{e}"
    );
}

#[test]
fn unrelated_key_lists_the_valid_keys() {
    let e = err("name = \"a\"\n[init]\nbanana = 1\n");
    let text = e.to_string();
    assert!(
        text.contains("valid keys here: `on_fatal`, `shutdown_grace_secs`"),
        "{text}"
    );
}

#[test]
fn pods_written_as_plural_tables_point_at_pod() {
    let e = err("name = \"a\"\n[[pods]]\nname = \"web\"\n");
    assert!(matches!(e, DeclError::UnknownKey { .. }), "{e:?}");
    assert_eq!(site(&e), (2, 3, "pods".into()));
    assert!(e.to_string().contains("did you mean `pod`"), "{e}");
}

#[test]
fn wrong_type_names_field_line_and_column() {
    let e = err("name = \"a\"\n[disk]\nesp_mib = \"64\"\n");
    assert!(matches!(e, DeclError::Type { .. }), "{e:?}");
    assert_eq!(site(&e), (3, 11, "disk.esp_mib".into()));
    assert!(e.to_string().contains("expected a whole number"), "{e}");
}

#[test]
fn value_where_a_table_belongs_says_table() {
    let e = err("name = \"a\"\nkernel = 5\n");
    assert_eq!(site(&e).2, "kernel");
    assert!(e.to_string().ends_with("expected a table"), "{e}");
}

#[test]
fn table_where_a_value_belongs_is_a_type_error() {
    let e = err("name = \"a\"\n[hostname]\nx = 1\n");
    assert!(matches!(e, DeclError::Type { .. }), "{e:?}");
    assert_eq!(site(&e).2, "hostname");
}

#[test]
fn dotted_keys_and_subtable_headers_are_placed_too() {
    let d =
        HostDecl::from_toml_str("name = \"a\"\nkernel.prebuilt.x86_64 = \"bz\"\n", "h").unwrap();
    assert_eq!(d.kernel.prebuilt.x86_64.as_deref(), Some("bz"));
    let s = d.site("kernel.prebuilt.x86_64");
    assert_eq!((s.line, s.column), (2, 26));
    let e = err("name = \"a\"\nkernel.prebuilt.x86 = \"bz\"\n");
    assert_eq!(site(&e), (2, 17, "kernel.prebuilt.x86".into()));
    let e = err("name = \"a\"\n[kernel.prebuilt]\narm64 = \"Image\"\n");
    assert_eq!(site(&e), (3, 1, "kernel.prebuilt.arm64".into()));
}

#[test]
fn site_of_a_field_left_out_is_its_table() {
    let d = HostDecl::from_toml_str("name = \"a\"\n\n[disk]\nesp_mib = 64\n", "h").unwrap();
    let s = d.site("disk.data_mib");
    assert_eq!(
        (s.line, s.column, s.field.as_str()),
        (3, 1, "disk.data_mib")
    );
    let s = d.site("signing.key");
    assert_eq!((s.line, s.column), (1, 1));
}

#[test]
fn bad_choice_names_field_and_choices() {
    let e = err("name = \"a\"\n[init]\non_fatal = \"explode\"\n");
    assert_eq!(site(&e), (3, 12, "init.on_fatal".into()));
    let text = e.to_string();
    assert!(
        text.contains("explode") && text.contains("poweroff"),
        "{text}"
    );
    let e = err("name = \"a\"\nformats = [\"raw\", \"iso\"]\n");
    assert_eq!(site(&e), (2, 19, "formats[1]".into()));
}

#[test]
fn negative_size_is_a_type_error_at_the_value() {
    let e = err("name = \"a\"\n[disk]\ndata_mib = -5\n");
    assert_eq!(site(&e), (3, 12, "disk.data_mib".into()));
}

#[test]
fn missing_required_field_is_named() {
    let e = err("hostname = \"a\"\n");
    assert!(matches!(e, DeclError::Missing { .. }), "{e:?}");
    assert_eq!(site(&e).2, "name");
    let e = err("name = \"a\"\n\n[[trust]]\nprefix = \"example.com/\"\n");
    assert!(matches!(e, DeclError::Missing { .. }), "{e:?}");
    assert_eq!(site(&e), (3, 1, "trust[0].key".into()));
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = err("name = \"a\"\nhostname = \n");
    assert!(matches!(e, DeclError::Syntax { .. }), "{e:?}");
    let (line, _, _) = site(&e);
    assert_eq!(line, 2);
    assert!(e.to_string().starts_with("h.toml:2:"), "{e}");
}

#[test]
fn column_counts_characters_not_bytes() {
    let e = err("name = \"a\" # café\n[init]\n  # é\n  x = 1\n");
    assert_eq!(site(&e), (4, 3, "init.x".into()));
    let e = err("name = \"a\"\nhostname = \"é\"\n");
    assert_eq!(site(&e), (2, 12, "hostname".into()));
}

#[test]
fn rejects_bad_hostname_naming_the_field() {
    let e = err("name = \"a\"\nhostname = \"Bad_Host\"\n");
    assert!(e.to_string().starts_with("h.toml:2:12: hostname:"), "{e}");
}

#[test]
fn rejects_hostname_longer_than_the_kernel_allows() {
    let long = format!("{}.{}", "a".repeat(40), "b".repeat(30));
    let e = err(&format!("name = \"a\"\nhostname = \"{long}\"\n"));
    assert_eq!(site(&e).2, "hostname");
}

#[test]
fn rejects_unknown_arch_and_duplicates_at_the_element() {
    let e1 = err("name = \"a\"\narch = [\"arm64\"]\n");
    assert!(e1.to_string().contains("arm64"), "{e1}");
    assert_eq!(site(&e1), (2, 9, "arch[0]".into()));
    let e2 = err("name = \"a\"\narch = [\"x86_64\", \"x86_64\"]\n");
    assert!(e2.to_string().contains("listed twice"), "{e2}");
    assert_eq!(site(&e2), (2, 19, "arch[1]".into()));
}

#[test]
fn url_source_requires_pinned_hash() {
    let e = err("name = \"a\"\n[kernel]\nsource = \"https://example.com/linux.tar.xz\"\n");
    assert!(e.to_string().contains("kernel.sha256"), "{e}");
    assert_eq!(site(&e), (3, 10, "kernel.source".into()));
}

#[test]
fn disk_sizes_below_the_minimum_are_refused() {
    let e = err("name = \"a\"\n[disk]\nesp_mib = 8\n");
    assert_eq!(site(&e), (3, 11, "disk.esp_mib".into()));
    assert!(e.to_string().contains("FAT32 needs at least 33 MiB"), "{e}");
    let e = err("name = \"a\"\n[disk]\ndata_mib = 1\n");
    assert_eq!(site(&e).2, "disk.data_mib");
    let e = err("name = \"a\"\n[disk]\npayload_mib = 100\nsize_mib = 150\n");
    assert_eq!(site(&e), (4, 12, "disk.size_mib".into()));
}

#[test]
fn zero_disk_sizes_mean_automatic() {
    let d =
        HostDecl::from_toml_str("name = \"a\"\n[disk]\nesp_mib = 0\nsize_mib = 0\n", "h").unwrap();
    assert_eq!(DiskDecl::given(d.disk.esp_mib), None);
}

#[test]
fn image_id_must_be_a_full_sha512() {
    let e = err("name = \"a\"\n[[image]]\npath = \"a.aci\"\nid = \"sha512-abcd\"\n");
    assert_eq!(site(&e), (4, 6, "image[0].id".into()));
    let full = format!("sha512-{}", "0a".repeat(64));
    let d = HostDecl::from_toml_str(
        &format!("name = \"a\"\n[[image]]\npath = \"a.aci\"\nid = \"{full}\"\n"),
        "h",
    )
    .unwrap();
    assert_eq!(d.images[0].id.as_deref(), Some(full.as_str()));
}

#[test]
fn payload_file_destinations_are_checked() {
    for (dest, why) in [
        ("/etc/motd", "relative"),
        ("a/../b", "'..'"),
        ("images/x", "images/"),
    ] {
        let e = err(&format!(
            "name = \"a\"\n[[file]]\nsource = \"s\"\ndest = \"{dest}\"\n"
        ));
        assert_eq!(site(&e), (4, 8, "file[0].dest".into()), "{dest}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let e = err("name = \"a\"\n[[file]]\nsource = \"s\"\ndest = \"m\"\nmode = 0o4755\n");
    assert_eq!(site(&e).2, "file[0].mode");
    let d = HostDecl::from_toml_str(
        "name = \"a\"\n[[file]]\nsource = \"s\"\ndest = \"bin/x\"\nmode = 0o755\n",
        "h",
    )
    .unwrap();
    assert_eq!(d.files[0].mode(), 0o755);
}

#[test]
fn duplicate_formats_are_refused() {
    let e = err("name = \"a\"\nformats = [\"raw\", \"qcow2\", \"raw\"]\n");
    assert_eq!(site(&e).2, "formats[2]");
}

#[test]
fn arches_to_build_refuses_an_arch_the_declaration_does_not_list() {
    let d = HostDecl::from_toml_str("name = \"a\"\n\narch = [\"x86_64\"]\n", "h.toml").unwrap();
    assert_eq!(d.arches_to_build(None).unwrap(), vec![Arch::X86_64]);
    assert_eq!(
        d.arches_to_build(Some(Arch::X86_64)).unwrap(),
        vec![Arch::X86_64]
    );
    let e = d.arches_to_build(Some(Arch::Aarch64)).unwrap_err();
    assert_eq!(site(&e), (3, 8, "arch".into()));
    assert!(e.to_string().contains("does not build aarch64"), "{e}");
    let all = HostDecl::from_toml_str("name = \"a\"\n", "h").unwrap();
    assert_eq!(
        all.arches_to_build(Some(Arch::Aarch64)).unwrap(),
        vec![Arch::Aarch64]
    );
}

#[test]
fn resolve_paths_are_relative_to_the_declarations_directory() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["bz", "a.aci", "a.aci.minisig", "k.pub", "k.key", "motd"] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    let d = HostDecl::from_toml_str(
        "name = \"a\"\n[signing]\nkey = \"k.key\"\n[kernel]\nprebuilt = { x86_64 = \"bz\" }\n[[image]]\npath = \"a.aci\"\n[[trust]]\nkey = \"k.pub\"\nprefix = \"example.com/\"\n[[file]]\nsource = \"motd\"\ndest = \"etc/motd\"\n",
        "h.toml",
    )
    .unwrap();
    let inputs = d.resolve_paths(dir.path(), None).unwrap();
    assert_eq!(
        inputs.signing_key.as_ref().unwrap().value,
        dir.path().join("k.key")
    );
    let bz = inputs.prebuilt(Arch::X86_64).unwrap();
    assert_eq!(bz.value, dir.path().join("bz"));
    assert_eq!(
        (bz.site.line, bz.site.field.as_str()),
        (5, "kernel.prebuilt.x86_64")
    );
    assert!(inputs.prebuilt(Arch::Aarch64).is_none());
    // The signature defaults to the image's path + ".minisig" when that file exists.
    assert_eq!(
        inputs.images[0].signature.as_ref().unwrap().value,
        dir.path().join("a.aci.minisig")
    );
    assert_eq!(
        inputs.trust[0].prefix.as_ref().unwrap().value,
        "example.com/"
    );
    assert_eq!(inputs.files[0].mode, 0o644);
}

#[test]
fn missing_and_directory_files_are_named_with_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kdir")).unwrap();
    let d = HostDecl::from_toml_str(
        "name = \"a\"\n[kernel]\nprebuilt = { x86_64 = \"kdir\" }\n",
        "h.toml",
    )
    .unwrap();
    let e = d.check_files(dir.path()).unwrap_err();
    assert_eq!(site(&e), (3, 23, "kernel.prebuilt.x86_64".into()));
    assert!(
        e.to_string()
            .ends_with("is a directory, not a kernel image"),
        "{e}"
    );
    let d =
        HostDecl::from_toml_str("name = \"a\"\n[[trust]]\nkey = \"nope.pub\"\n", "h.toml").unwrap();
    let e = d.check_files(dir.path()).unwrap_err();
    assert_eq!(site(&e), (3, 7, "trust[0].key".into()));
    assert!(e.to_string().contains("nope.pub does not exist"), "{e}");
}

#[test]
fn key_override_replaces_the_declared_key() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.key");
    std::fs::write(&other, b"x").unwrap();
    let d = HostDecl::from_toml_str("name = \"a\"\n[signing]\nkey = \"gone.key\"\n", "h").unwrap();
    assert!(d.check_files(dir.path()).is_err());
    let inputs = d.resolve_paths(dir.path(), Some(&other)).unwrap();
    assert_eq!(inputs.signing_key.unwrap().value, other);
    let e = d
        .resolve_paths(dir.path(), Some(&dir.path().join("none.key")))
        .unwrap_err();
    assert!(e.to_string().starts_with("--key: signing key "), "{e}");
}

#[test]
fn keys_valid_at_each_place_come_from_the_structs() {
    assert_eq!(
        fields_of::<InitDecl>(),
        &["on_fatal", "shutdown_grace_secs"][..]
    );
    let top = fields_of::<HostDecl>();
    for k in [
        "name", "hostname", "signing", "disk", "formats", "image", "trust", "file",
    ] {
        assert!(top.contains(&k), "{k} missing from {top:?}");
    }
    assert!(!top.contains(&"origin"));
    for place in PLACES {
        assert!(keys_at(place).is_some_and(|k| !k.is_empty()), "{place}");
    }
}

#[test]
fn did_you_mean_takes_the_closest_key_within_reach() {
    assert_eq!(edit_distance("hostnme", "hostname"), 1);
    assert_eq!(edit_distance("hsotname", "hostname"), 1);
    assert_eq!(closest("Hostname", &["name", "hostname"]), Some("hostname"));
    assert_eq!(closest("nmae", &["name", "hostname"]), Some("name"));
    assert_eq!(closest("banana", &["name", "hostname"]), None);
}
