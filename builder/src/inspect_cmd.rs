//! `builder inspect IMAGE [--json]`: what a disk image holds, read from the image alone: the
//! GPT's partitions, the signed manifest (not checked here: that is `builder verify`), the
//! UKI's command line and os-release as the ESP holds them, the embedded images and the trust
//! keys.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use hostimg::Role;

use crate::{disk, esp, manifest, uki};

/// The largest ESP this reads whole (ours are tens of MiB).
const MAX_ESP: u64 = 1 << 30;

pub fn run(image: &Path, as_json: bool) -> Result<()> {
    let report = inspect(image)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Everything `inspect` shows, as JSON (the text form is rendered from it).
pub fn inspect(image: &Path) -> Result<Value> {
    let embedded =
        manifest::read_embedded(image).with_context(|| format!("reading {}", image.display()))?;
    let (layout, signed) = (embedded.layout, embedded.signed);
    let m = serde_json::to_value(&embedded.manifest)?;
    let signature = match signed.signature() {
        None => json!(null),
        Some(Ok(sig)) => json!({
            "key_id": sig.key_id.to_string(),
            "trusted_comment": sig.trusted_comment,
        }),
        Some(Err(e)) => json!({ "error": e.to_string() }),
    };

    let partitions: Vec<Value> = layout
        .partitions
        .iter()
        .map(|p| {
            json!({
                "number": p.role.number(),
                "label": p.role.label(),
                "guid": p.guid.to_string(),
                "type_guid": p.role.type_guid().to_string(),
                "offset": p.offset,
                "size": p.size,
            })
        })
        .collect();

    let (cmdline, osrel) = boot_file(image, &layout)?;
    Ok(json!({
        "image": image.display().to_string(),
        "disk_size": layout.disk_size,
        "partitions": partitions,
        "cmdline": cmdline,
        "os_release": osrel,
        "embedded_images": m.get("embedded_images").cloned().unwrap_or(json!([])),
        "trust_keys": m.get("trust_keys").cloned().unwrap_or(json!([])),
        "signature": signature,
        "manifest": m,
    }))
}

/// The UKI's `.cmdline` and `.osrel`, read from the ESP.
fn boot_file(image: &Path, layout: &disk::Layout) -> Result<(String, String)> {
    let Some(p) = layout.partition(Role::Esp) else {
        bail!("{}: the GPT has no ESP", image.display());
    };
    if p.size > MAX_ESP {
        bail!(
            "{}: the ESP is {} bytes, more than this reads",
            image.display(),
            p.size
        );
    }
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut bytes = vec![0u8; p.size as usize];
    f.read_exact_at(&mut bytes, p.offset)
        .with_context(|| format!("reading the ESP of {}", image.display()))?;
    for name in ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/BOOTAA64.EFI"] {
        if let Some(pe) = esp::read_file(&bytes, name)
            .with_context(|| format!("{}: reading {name} on the ESP", image.display()))?
        {
            let section = |s: &str| -> Result<String> {
                Ok(uki::section(&pe, s)
                    .with_context(|| format!("{}: {name}", image.display()))?
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .unwrap_or_default())
            };
            return Ok((section(uki::CMDLINE)?, section(uki::OSREL)?));
        }
    }
    bail!("{}: the ESP holds no EFI/BOOT/BOOT*.EFI", image.display())
}

fn render(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let m = &r["manifest"];
    let mut out = format!(
        "image     {}\nname      {} {} ({})\nbuilder   {}\ndisk      {} bytes, GUID {}\n",
        s(&r["image"]),
        s(&m["name"]),
        s(&m["version"]),
        s(&m["arch"]),
        s(&m["builder_version"]),
        r["disk_size"],
        s(&m["disk"]["guid"]),
    );
    out.push_str("\npartitions\n");
    for p in r["partitions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} {:<10} offset {:>12} size {:>12}  {}  type {}\n",
            p["number"],
            s(&p["label"]),
            p["offset"],
            p["size"],
            s(&p["guid"]),
            s(&p["type_guid"]),
        ));
    }
    out.push_str(&format!("\ncmdline   {}\n", s(&r["cmdline"])));
    out.push_str(&format!("UKI       sha256 {}\n", s(&m["uki_sha256"])));
    out.push_str(&format!(
        "verity    root hash {}\n",
        s(&m["verity_root_hash"])
    ));
    match &r["signature"] {
        Value::Null => out.push_str("signature none\n"),
        sig => out.push_str(&format!(
            "signature by key {} ({}) — not checked here: run `builder verify`\n",
            s(&sig["key_id"]),
            s(&sig["trusted_comment"]),
        )),
    }
    out.push_str("\nembedded images\n");
    let images = r["embedded_images"].as_array().cloned().unwrap_or_default();
    if images.is_empty() {
        out.push_str("  (none)\n");
    }
    for i in images {
        let labels: Vec<String> = i["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| format!("{}={}", s(&l["name"]), s(&l["value"])))
            .collect();
        out.push_str(&format!(
            "  {} [{}]\n    {}\n    {}\n",
            s(&i["name"]),
            labels.join(", "),
            s(&i["image_id"]),
            s(&i["file"]),
        ));
    }
    out.push_str("\ntrust keys\n");
    let keys = r["trust_keys"].as_array().cloned().unwrap_or_default();
    if keys.is_empty() {
        out.push_str("  (none)\n");
    }
    for k in keys {
        let scope = match k["prefix"].as_str() {
            Some(p) => format!("images named {p}..."),
            None => "every image".to_string(),
        };
        out.push_str(&format!("  {} for {scope}\n", s(&k["key_id"])));
    }
    out
}
