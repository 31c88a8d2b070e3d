//! The checks TOML types cannot express: names, hashes, sizes, duplicates, payload paths. Each
//! error is placed at the value it is about.

use std::collections::BTreeSet;

use crate::{DeclError, DiskDecl, HostDecl};

impl HostDecl {
    fn invalid(&self, field: &str, reason: impl Into<String>) -> DeclError {
        DeclError::Invalid {
            at: self.site(field),
            reason: reason.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), DeclError> {
        self.validate_names()?;
        self.validate_kernel()?;
        self.validate_disk()?;
        if self.formats.is_empty() {
            return Err(self.invalid(
                "formats",
                "names no output format (leave it out for [\"raw\"])",
            ));
        }
        if let Some(i) = first_repeat(&self.formats) {
            return Err(self.invalid(
                &format!("formats[{i}]"),
                format!("{} is listed twice", self.formats[i]),
            ));
        }
        if let Some(key) = &self.signing.key
            && key.is_empty()
        {
            return Err(self.invalid("signing.key", "is empty (name a minisign secret key file)"));
        }
        self.validate_images()?;
        self.validate_trust()?;
        self.validate_files()?;
        self.validate_network()?;
        self.validate_fetch()?;
        self.validate_pods()
    }

    fn validate_names(&self) -> Result<(), DeclError> {
        if !is_label(&self.name, 64) {
            return Err(self.invalid(
                "name",
                format!(
                    "{:?} must be 1-64 characters of a-z, 0-9 and '-', not starting or ending with '-'",
                    self.name
                ),
            ));
        }
        // 64 bytes is the kernel's limit for sethostname(2) (__NEW_UTS_LEN).
        if !self.hostname.split('.').all(|l| is_label(l, 63)) || self.hostname.len() > 64 {
            return Err(self.invalid(
                "hostname",
                format!(
                    "{:?} is not a valid host name (dot-separated labels of a-z, 0-9, '-', at most 64 characters)",
                    self.hostname
                ),
            ));
        }
        let version_ok = !self.version.is_empty()
            && self.version.len() <= 64
            && self
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
        if !version_ok {
            return Err(self.invalid(
                "version",
                format!(
                    "{:?} must be 1-64 characters of letters, digits and . _ + - ~",
                    self.version
                ),
            ));
        }
        if self.arch.is_empty() {
            return Err(self.invalid("arch", "names no architecture"));
        }
        if let Some(i) = first_repeat(&self.arch) {
            return Err(self.invalid(
                &format!("arch[{i}]"),
                format!("{} is listed twice", self.arch[i]),
            ));
        }
        Ok(())
    }

    fn validate_kernel(&self) -> Result<(), DeclError> {
        if let Some(sha) = &self.kernel.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(self.invalid("kernel.sha256", format!("{sha:?} is not 64 hex digits")));
        }
        if let Some(src) = &self.kernel.source {
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url && self.kernel.sha256.is_none() {
                return Err(self.invalid(
                    "kernel.source",
                    format!("{src} is a URL, so kernel.sha256 must pin its hash"),
                ));
            }
        }
        if self.kernel.cmdline.contains('\n') {
            return Err(self.invalid("kernel.cmdline", "must be one line"));
        }
        for (field, path) in [
            ("kernel.prebuilt.x86_64", &self.kernel.prebuilt.x86_64),
            ("kernel.prebuilt.aarch64", &self.kernel.prebuilt.aarch64),
        ] {
            if path.as_deref() == Some("") {
                return Err(self.invalid(field, "is empty (name a kernel image file)"));
            }
        }
        Ok(())
    }

    fn validate_disk(&self) -> Result<(), DeclError> {
        let d = &self.disk;
        if let Some(esp) = DiskDecl::given(d.esp_mib)
            && esp < DiskDecl::ESP_MIN_MIB
        {
            return Err(self.invalid(
                "disk.esp_mib",
                format!(
                    "{esp} MiB is too small: FAT32 needs at least {} MiB (or 0 for the smallest that boots)",
                    DiskDecl::ESP_MIN_MIB
                ),
            ));
        }
        if let Some(data) = DiskDecl::given(d.data_mib)
            && data < DiskDecl::DATA_MIN_MIB
        {
            return Err(self.invalid(
                "disk.data_mib",
                format!(
                    "{data} MiB is too small: the data partition needs at least {} MiB (or 0 for the smallest that boots)",
                    DiskDecl::DATA_MIN_MIB
                ),
            ));
        }
        if let Some(total) = DiskDecl::given(d.size_mib) {
            // What the partitions given take at least; the builder adds the GPT, the manifest
            // and whatever the automatic sizes come to, and says so if it still does not fit.
            let esp = u64::from(DiskDecl::given(d.esp_mib).unwrap_or(DiskDecl::ESP_MIN_MIB));
            let data = u64::from(DiskDecl::given(d.data_mib).unwrap_or(DiskDecl::DATA_MIN_MIB));
            let parts = esp + 2 * u64::from(d.payload_mib) + data;
            if u64::from(total) < parts {
                return Err(self.invalid(
                    "disk.size_mib",
                    format!(
                        "{total} MiB cannot hold the partitions: ESP {esp} + 2 payload slots of {} + data {data} = {parts} MiB",
                        d.payload_mib
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_images(&self) -> Result<(), DeclError> {
        let mut seen = BTreeSet::new();
        for (i, img) in self.images.iter().enumerate() {
            if img.path.is_empty() {
                return Err(self.invalid(&format!("image[{i}].path"), "is empty"));
            }
            if !seen.insert(img.path.as_str()) {
                return Err(self.invalid(
                    &format!("image[{i}].path"),
                    format!("{} is embedded twice", img.path),
                ));
            }
            if let Some(id) = &img.id
                && !is_full_image_id(id)
            {
                return Err(self.invalid(
                    &format!("image[{i}].id"),
                    format!(
                        "{id:?} is not a full image ID: \"sha512-\" and 128 lowercase hex digits (`builder aci inspect` prints it)"
                    ),
                ));
            }
            if img.signature.as_deref() == Some("") {
                return Err(self.invalid(&format!("image[{i}].signature"), "is empty"));
            }
        }
        Ok(())
    }

    fn validate_trust(&self) -> Result<(), DeclError> {
        for (i, t) in self.trust.iter().enumerate() {
            if t.key.is_empty() {
                return Err(self.invalid(&format!("trust[{i}].key"), "is empty"));
            }
            // The full AC-identifier check is the trust store's (`aci::trust`), applied when
            // the builder installs the key; here only what is wrong in any name.
            if let Some(p) = &t.prefix
                && (p.is_empty() || p.starts_with('/') || p.contains(char::is_whitespace))
            {
                return Err(self.invalid(
                    &format!("trust[{i}].prefix"),
                    format!(
                        "{p:?} is not an image-name prefix such as \"example.com/\" (leave it out to trust the key for every image)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_files(&self) -> Result<(), DeclError> {
        let mut seen = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            if f.source.is_empty() {
                return Err(self.invalid(&format!("file[{i}].source"), "is empty"));
            }
            let dest_field = format!("file[{i}].dest");
            if let Err(why) = check_payload_path(&f.dest) {
                return Err(self.invalid(&dest_field, format!("{:?} {why}", f.dest)));
            }
            if !seen.insert(f.dest.trim_end_matches('/')) {
                return Err(self.invalid(
                    &dest_field,
                    format!("{} is the destination of two files", f.dest),
                ));
            }
            if let Some(mode) = f.mode
                && mode > 0o777
            {
                return Err(self.invalid(
                    &format!("file[{i}].mode"),
                    format!("{mode:#o} is not permission bits (0o000 to 0o777)"),
                ));
            }
        }
        Ok(())
    }
}

/// The index of the first element equal to an earlier one.
fn first_repeat<T: PartialEq>(items: &[T]) -> Option<usize> {
    (0..items.len()).find(|&i| items[..i].contains(&items[i]))
}

fn is_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_full_image_id(id: &str) -> bool {
    id.strip_prefix("sha512-").is_some_and(|hex| {
        hex.len() == 128
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A destination inside the payload: relative, no `.` or `..` or empty components, and not in
/// the directory the builder fills with the embedded images.
fn check_payload_path(dest: &str) -> Result<(), &'static str> {
    if dest.is_empty() {
        return Err("is empty");
    }
    if dest.starts_with('/') {
        return Err("must be relative to the payload's root (no leading '/')");
    }
    let parts: Vec<&str> = dest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("must not have empty, '.' or '..' components");
    }
    // hostimg::PAYLOAD_IMAGES_DIR; hostdecl does not depend on hostimg.
    if parts.first() == Some(&"images") {
        return Err("is under images/, which holds the embedded [[image]] files");
    }
    Ok(())
}
