//! Rendering appc discovery URL templates: `{name}`, `{version}`, `{os}`, `{arch}`, `{ext}`
//! and any requested label.

use std::collections::BTreeMap;

/// Substitutes `{field}` in `template`. `None` when any field has no value: such a template
/// does not apply to this request (appc skips it).
///
/// One left-to-right pass, so a value that itself contains `{...}` is never expanded again.
pub fn render(template: &str, fields: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let value = fields.get(&after[..close])?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_appc_worked_example() {
        let f = fields(&[
            ("name", "example.com/myapp"),
            ("version", "1.0.0"),
            ("os", "linux"),
            ("arch", "amd64"),
            ("ext", "aci"),
        ]);
        assert_eq!(
            render(
                "https://storage.example.com/{name}-{version}-{os}-{arch}.{ext}",
                &f
            )
            .unwrap(),
            "https://storage.example.com/example.com/myapp-1.0.0-linux-amd64.aci"
        );
    }

    #[test]
    fn renders_any_label_and_skips_templates_with_unknown_fields() {
        let f = fields(&[("name", "a"), ("channel", "beta")]);
        assert_eq!(
            render("https://x/{channel}/{name}", &f).unwrap(),
            "https://x/beta/a"
        );
        assert_eq!(render("https://x/{name}-{version}", &f), None);
        assert_eq!(render("https://x/{name", &f), None);
        assert_eq!(render("https://x/name}", &f), None);
    }

    #[test]
    fn does_not_expand_braces_inside_values() {
        let f = fields(&[("name", "a"), ("v", "{name}")]);
        assert_eq!(render("{v}", &f).unwrap(), "{name}");
    }
}
