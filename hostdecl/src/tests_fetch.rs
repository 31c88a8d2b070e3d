//! Apps whose image is not embedded: fetch specs per arch, the trust-coverage rule, image
//! URLs, plain-HTTP permission, the pods plan's JSON, and the fetch example in `images/`.

use std::path::Path;

use super::*;

fn decl(text: &str) -> HostDecl {
    HostDecl::from_toml_str(text, "h.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn at(e: &DeclError, words: &str) -> (usize, usize, String) {
    assert!(e.to_string().contains(words), "{words:?} not in: {e}");
    let s = e.site().expect("error has a site");
    (s.line, s.column, s.field.clone())
}

const ID_A: &str = concat!(
    "sha512-",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
);
const ID_B: &str = concat!(
    "sha512-",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
);

/// A declaration with one trust key (`prefix`, or root), one pod `web` with one app `main`
/// running `image` plus `extra` lines.
fn one_app(trust_prefix: Option<&str>, image: &str, extra: &str) -> String {
    let prefix = trust_prefix
        .map(|p| format!("prefix = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "name = \"f\"\n[[trust]]\nkey = \"k.pub\"\n{prefix}[[pod]]\nname = \"web\"\n[[pod.app]]\nname = \"main\"\nimage = \"{image}\"\n{extra}"
    )
}

fn embedded(name: &str, id: &str, arch: &str) -> AvailableImage {
    AvailableImage {
        embedded: EmbeddedImage {
            file: format!("images/{arch}.aci"),
            signature: format!("images/{arch}.aci.minisig"),
            id: id.into(),
            name: name.into(),
        },
        labels: vec![
            ("version".into(), "1.0".into()),
            ("os".into(), "linux".into()),
            ("arch".into(), arch.into()),
        ],
    }
}

fn spec(plan: &PodsPlan) -> &FetchSpec {
    plan.pods[0].apps[0].fetch.as_ref().expect("a fetch spec")
}

#[test]
fn app_not_embedded_is_fetched_with_each_builds_labels() {
    let d = decl(&one_app(
        Some("images.test/"),
        "images.test/busybox:1.0",
        "",
    ));
    for (arch, appc) in [(Arch::X86_64, "amd64"), (Arch::Aarch64, "aarch64")] {
        let plan = d.pods_plan(arch, &[]).unwrap();
        let s = spec(&plan);
        assert_eq!(s.name, "images.test/busybox");
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [("arch", appc), ("os", "linux"), ("version", "1.0")]
        );
        assert_eq!((s.pinned_id.as_deref(), s.url.as_deref()), (None, None));
        assert!(!s.allow_http);
        // The pod manifest names the image by name and labels; its ID comes at boot.
        let image = &plan.pods[0].manifest.apps[0].image;
        assert_eq!(image.id, None);
        assert_eq!(image.name.as_ref().unwrap().as_str(), "images.test/busybox");
        assert_eq!(
            s.request().to_string(),
            format!("images.test/busybox,arch={appc},os=linux,version=1.0")
        );
    }
}

#[test]
fn pinned_image_not_embedded_is_fetched_with_its_pin() {
    let d = decl(&one_app(
        None,
        "example.com/app:2",
        &format!("id = \"{ID_A}\"\n"),
    ));
    let plan = d.pods_plan(Arch::X86_64, &[]).unwrap();
    assert_eq!(spec(&plan).pinned_id.as_deref(), Some(ID_A));
    assert_eq!(
        plan.pods[0].manifest.apps[0]
            .image
            .id
            .as_ref()
            .map(|i| i.as_str()),
        Some(ID_A)
    );
}

#[test]
fn embedded_image_is_run_without_a_fetch_spec() {
    let d = decl(&one_app(None, "example.com/app:1.0", ""));
    let plan = d
        .pods_plan(Arch::X86_64, &[embedded("example.com/app", ID_B, "amd64")])
        .unwrap();
    assert_eq!(plan.pods[0].apps[0].fetch, None);
    assert_eq!(
        plan.pods[0].manifest.apps[0]
            .image
            .id
            .as_ref()
            .map(|i| i.as_str()),
        Some(ID_B)
    );
    // The aarch64 build embeds no aarch64 image, so there the app's image is fetched.
    let plan = d.pods_plan(Arch::Aarch64, &[]).unwrap();
    assert_eq!(spec(&plan).labels["arch"], "aarch64");
}

#[test]
fn image_no_trust_key_covers_fails_the_build_naming_app_and_image() {
    let text = "name = \"f\"\n[[pod]]\nname = \"web\"\n[[pod.app]]\nname = \"main\"\nimage = \"images.test/busybox:1.0\"\n";
    let e = decl(text).pods_plan(Arch::X86_64, &[]).unwrap_err();
    assert_eq!(
        at(&e, "no [[trust]] key covers images.test/busybox"),
        (6, 9, "pod[0].app[0].image".into())
    );
    let msg = e.to_string();
    assert!(msg.contains("app web/main"), "{msg}");
    assert!(
        msg.contains("images.test/busybox,arch=amd64,os=linux,version=1.0"),
        "{msg}"
    );
}

#[test]
fn trust_prefixes_cover_names_along_path_components_only() {
    for (prefix, name, covered) in [
        ("images.test/", "images.test/busybox", true),
        ("images.test", "images.test/busybox", true),
        ("images.test/busybox", "images.test/busybox", true),
        ("images.test/", "images.testing/busybox", false),
        ("images.test/busy", "images.test/busybox", false),
        ("other.org/", "images.test/busybox", false),
    ] {
        let d = decl(&one_app(Some(prefix), &format!("{name}:1.0"), ""));
        assert_eq!(d.trust_covers(name), covered, "{prefix} {name}");
        let r = d.pods_plan(Arch::X86_64, &[]);
        assert_eq!(r.is_ok(), covered, "{prefix} {name}: {r:?}");
    }
}

#[test]
fn the_nearest_embedded_images_are_named_when_no_key_covers_the_image() {
    let text = "name = \"f\"\n[[pod]]\nname = \"web\"\n[[pod.app]]\nname = \"main\"\nimage = \"example.com/app:2.0\"\n";
    let e = decl(text)
        .pods_plan(Arch::X86_64, &[embedded("example.com/app", ID_B, "amd64")])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("embedded but not matching: images/amd64.aci"),
        "{e}"
    );
}

#[test]
fn allow_http_marks_the_fetch_specs_it_covers() {
    let allow = "[fetch]\nallow_http = [\"images.test/\"]\n";
    let d = decl(&format!(
        "{}{allow}",
        one_app(None, "images.test/busybox:1.0", "")
    ));
    assert!(spec(&d.pods_plan(Arch::X86_64, &[]).unwrap()).allow_http);
    let d = decl(&format!(
        "{}{allow}",
        one_app(None, "example.com/busybox:1.0", "")
    ));
    assert!(!spec(&d.pods_plan(Arch::X86_64, &[]).unwrap()).allow_http);
}

#[test]
fn image_url_is_rendered_per_arch_with_its_signature_beside_it() {
    let d = decl(&one_app(
        None,
        "example.com/app:1.0",
        "image_url = \"https://dl.example.com/app-{version}-{arch}.aci?token=1\"\n",
    ));
    for (arch, appc) in [(Arch::X86_64, "amd64"), (Arch::Aarch64, "aarch64")] {
        let plan = d.pods_plan(arch, &[]).unwrap();
        let s = spec(&plan);
        assert_eq!(
            s.url.as_deref(),
            Some(format!("https://dl.example.com/app-1.0-{appc}.aci?token=1").as_str())
        );
        assert_eq!(
            s.signature_url.as_deref(),
            Some(format!("https://dl.example.com/app-1.0-{appc}.aci.minisig?token=1").as_str())
        );
    }
}

#[test]
fn image_url_with_ext_derives_the_signature_as_discovery_does() {
    let d = decl(&one_app(
        None,
        "example.com/app:1.0",
        "image_url = \"https://dl.example.com/{name}/{os}/{arch}/app.{ext}\"\n",
    ));
    let plan = d.pods_plan(Arch::Aarch64, &[]).unwrap();
    let s = spec(&plan);
    assert_eq!(
        s.url.as_deref(),
        Some("https://dl.example.com/example.com/app/linux/aarch64/app.aci")
    );
    assert_eq!(
        s.signature_url.as_deref(),
        Some("https://dl.example.com/example.com/app/linux/aarch64/app.aci.minisig")
    );
}

#[test]
fn one_image_url_for_two_arches_is_refused_at_the_field() {
    let e = HostDecl::from_toml_str(
        &one_app(
            None,
            "example.com/app:1.0",
            "image_url = \"https://h/app.aci\"\n",
        ),
        "h.toml",
    )
    .unwrap_err();
    assert_eq!(
        at(&e, "put {arch} in it"),
        (9, 13, "pod[0].app[0].image_url".into())
    );
    // One arch built: one file is fine.
    let d = decl(&format!(
        "arch = [\"x86_64\"]\n{}",
        one_app(
            None,
            "example.com/app:1.0",
            "image_url = \"https://h/app.aci\"\n"
        )
    ));
    let plan = d.pods_plan(Arch::X86_64, &[]).unwrap();
    assert_eq!(
        spec(&plan).signature_url.as_deref(),
        Some("https://h/app.aci.minisig")
    );
}

#[test]
fn image_url_that_cannot_be_fetched_is_refused_at_the_field() {
    for (url, words) in [
        ("ftp://h/{arch}.aci", "not an https://"),
        ("https://user:pw@h/{arch}.aci", "carries credentials"),
        ("https://h/{arch}/", "names a directory"),
        ("https://h/{arch}.aci#x", "#fragment"),
        ("https://h/{arch}-{flavor}.aci", "has a placeholder"),
        ("not a url {arch}", "is not a URL"),
    ] {
        let e = HostDecl::from_toml_str(
            &one_app(
                None,
                "example.com/app:1.0",
                &format!("image_url = \"{url}\"\n"),
            ),
            "h.toml",
        )
        .unwrap_err();
        assert_eq!(
            at(&e, words),
            (9, 13, "pod[0].app[0].image_url".into()),
            "{url}"
        );
    }
}

#[test]
fn plain_http_image_url_needs_allow_http_for_the_name() {
    let text = one_app(
        None,
        "images.test/app:1.0",
        "image_url = \"http://images.test/{arch}.aci\"\n",
    );
    let e = decl(&text).pods_plan(Arch::X86_64, &[]).unwrap_err();
    assert_eq!(
        at(&e, "allow_http does not cover images.test/app"),
        (9, 13, "pod[0].app[0].image_url".into())
    );
    let d = decl(&format!("{text}[fetch]\nallow_http = [\"images.test\"]\n"));
    let plan = d.pods_plan(Arch::X86_64, &[]).unwrap();
    assert!(spec(&plan).allow_http);
}

#[test]
fn pods_plan_with_fetch_specs_reads_back_equal() {
    let d = decl(&format!(
        "{}[[pod.app]]\nname = \"side\"\nimage = \"images.test/tool\"\nid = \"{ID_A}\"\n",
        one_app(Some("images.test"), "images.test/busybox:1.0", "")
    ));
    let plan = d.pods_plan(Arch::X86_64, &[]).unwrap();
    let json = plan.to_json_pretty().unwrap();
    assert_eq!(PodsPlan::from_json(&json).unwrap(), plan);
    let apps = &plan.pods[0].apps;
    assert_eq!(
        apps[1].fetch.as_ref().unwrap().pinned_id.as_deref(),
        Some(ID_A)
    );
}

#[test]
fn pods_plan_without_fetch_fields_still_reads() {
    let old = format!(
        r#"{{"pods":[{{"name":"web","manifest":{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[{{"name":"main","image":{{"id":"{ID_A}"}}}}]}},"apps":[{{"name":"main"}}]}}]}}"#
    );
    let plan = PodsPlan::from_json(old.as_bytes()).unwrap();
    assert_eq!(plan.pods[0].apps[0].fetch, None);
    let unknown = old.replace(
        r#"{"name":"main"}]"#,
        r#"{"name":"main","fetch":{"name":"a","labels":{},"bogus":1}}]"#,
    );
    assert!(PodsPlan::from_json(unknown.as_bytes()).is_err());
}

#[test]
fn fetch_example_in_images_parses_and_plans() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/fetch.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let d = HostDecl::from_toml_str(&text, "images/fetch.toml").unwrap_or_else(|e| panic!("{e}"));
    // Its files (the trust key, the test CA) are made by whoever builds it: here, stand-ins.
    let dir = tempfile::tempdir().unwrap();
    for t in &d.trust {
        std::fs::create_dir_all(dir.path().join(&t.key).parent().unwrap()).unwrap();
        std::fs::write(dir.path().join(&t.key), "stand-in").unwrap();
    }
    for c in &d.fetch.ca {
        std::fs::create_dir_all(dir.path().join(c).parent().unwrap()).unwrap();
        std::fs::write(
            dir.path().join(c),
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
    }
    let inputs = d.resolve_paths(dir.path(), None).unwrap();
    let net = d.network_plan(&inputs).unwrap();
    assert_eq!(net.interfaces[0].device, Device::FirstEthernet);
    assert_eq!(net.interfaces[0].addressing, Addressing::Dhcp {});
    assert_eq!(net.hosts[0].name, "images.test");
    assert!(net.fetch.allow_http.is_empty());
    assert_eq!(net.fetch.ca.len(), 1);
    for arch in d.arch.clone() {
        let plan = d.pods_plan(arch, &[]).unwrap();
        let s = spec(&plan);
        assert_eq!(
            (s.name.as_str(), s.labels["version"].as_str()),
            ("images.test/busybox", "1.0")
        );
        assert_eq!(s.labels["arch"], arch.appc_arch());
        assert!(!s.allow_http);
    }
}
