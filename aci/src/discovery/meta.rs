//! A lenient HTML scanner that finds `<meta name=... content=...>` tags, for appc discovery.
//! Pages come from the network, so it must accept any input without panicking and in linear
//! time; it is not an HTML parser and only understands what meta tags need.

/// One `<meta>` tag's `name` and `content` attributes, entities decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaTag {
    pub name: String,
    pub content: String,
}

/// Finds every `<meta>` tag that has a `name` attribute (a missing `content` is empty). Skips
/// comments, and the contents of `<script>`/`<style>` where a `<meta` is just text.
pub fn parse_meta_tags(html: &str) -> Vec<MetaTag> {
    let b = html.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    // Every branch advances `i` by at least one byte, so the loop ends. All slicing happens at
    // ASCII bytes, which are always char boundaries in UTF-8.
    while let Some(off) = b.get(i..).and_then(|r| r.iter().position(|&c| c == b'<')) {
        i += off;
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = find(b, i + 4, b"-->").map_or(b.len(), |e| e + 3);
        } else if let Some(tag) = tag_name(rest) {
            let (attrs, end) = attributes(html, i + 1 + tag.len());
            i = end;
            if tag.eq_ignore_ascii_case("meta") {
                let get = |n: &str| {
                    attrs
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| v.clone())
                };
                if let Some(name) = get("name") {
                    tags.push(MetaTag {
                        name,
                        content: get("content").unwrap_or_default(),
                    });
                }
            } else if tag.eq_ignore_ascii_case("script") || tag.eq_ignore_ascii_case("style") {
                let close = if tag.eq_ignore_ascii_case("script") {
                    "</script"
                } else {
                    "</style"
                };
                i = find_ignore_case(b, i, close.as_bytes()).unwrap_or(b.len());
            }
        } else {
            i += 1;
        }
    }
    tags
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn find_ignore_case(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

/// The tag name after `<` (letters and digits), if this is an opening tag.
fn tag_name(rest: &[u8]) -> Option<&str> {
    let name = rest.get(1..)?;
    let len = name
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if len == 0 || !name.first().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    std::str::from_utf8(&name[..len]).ok()
}

/// Reads attributes from `start` up to the closing `>`; returns them and the index after it.
fn attributes(html: &str, start: usize) -> (Vec<(String, String)>, usize) {
    let b = html.as_bytes();
    let mut attrs = Vec::new();
    let mut i = start;
    let is_space = |c: u8| c.is_ascii_whitespace();
    loop {
        while i < b.len() && (is_space(b[i]) || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return (attrs, b.len());
        }
        if b[i] == b'>' {
            return (attrs, i + 1);
        }
        let name_start = i;
        while i < b.len() && !is_space(b[i]) && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        // Attribute names are whatever bytes up to an ASCII delimiter: a char boundary.
        let name = html.get(name_start..i).unwrap_or_default().to_string();
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && is_space(b[i]) {
                i += 1;
            }
            let (raw, next) = match b.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let end = b[i + 1..]
                        .iter()
                        .position(|&c| c == q)
                        .map_or(b.len(), |p| p + i + 1);
                    (
                        html.get(i + 1..end).unwrap_or_default(),
                        (end + 1).min(b.len()),
                    )
                }
                _ => {
                    let s = i;
                    while i < b.len() && !is_space(b[i]) && b[i] != b'>' {
                        i += 1;
                    }
                    (html.get(s..i).unwrap_or_default(), i)
                }
            };
            value = decode_entities(raw);
            i = next;
        }
        if !name.is_empty() {
            attrs.push((name, value));
        } else if i == name_start {
            // A stray delimiter such as `=`: skip it so the loop always advances.
            i += 1;
        }
    }
}

/// Decodes the character references a URL template or key URL may contain.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity.strip_prefix('#').and_then(|n| {
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => n.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, content: &str) -> MetaTag {
        MetaTag {
            name: name.into(),
            content: content.into(),
        }
    }

    #[test]
    fn finds_discovery_tags_like_appc_meta01() {
        let html = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="ac-discovery" content="example.com https://storage.example.com/{os}/{arch}/{name}-{version}.{ext}">
    <meta name="ac-discovery-pubkeys" content="example.com https://example.com/pubkeys.gpg">
  </head>
</html>"#;
        assert_eq!(
            parse_meta_tags(html),
            vec![
                tag(
                    "ac-discovery",
                    "example.com https://storage.example.com/{os}/{arch}/{name}-{version}.{ext}"
                ),
                tag(
                    "ac-discovery-pubkeys",
                    "example.com https://example.com/pubkeys.gpg"
                ),
            ]
        );
    }

    #[test]
    fn accepts_odd_but_common_markup() {
        let html = "<META NAME='ac-discovery' CONTENT='a.com https://x/{name}.{ext}'/>\
                    <meta content=x name=unquoted>\
                    <meta name=\"e\" content=\"a&amp;b &#x7b;c&#125; &bogus; &\">";
        assert_eq!(
            parse_meta_tags(html),
            vec![
                tag("ac-discovery", "a.com https://x/{name}.{ext}"),
                tag("unquoted", "x"),
                tag("e", "a&b {c} &bogus; &"),
            ]
        );
    }

    #[test]
    fn ignores_meta_in_comments_and_scripts() {
        let html = "<!-- <meta name=a content=b> --><script>var s='<meta name=c content=d>'</script>\
                    <style>/* <meta name=e> */</style><meta name=f content=g>";
        assert_eq!(parse_meta_tags(html), vec![tag("f", "g")]);
    }

    #[test]
    fn survives_truncated_and_hostile_input() {
        let inputs = [
            "<",
            "<meta",
            "<meta name=",
            "<meta name=\"abc",
            "<!--",
            "<meta name='a' content=\"",
            "<<<<>>>>",
            "<meta =====>",
            "<meta name=a content=b",
            "\u{1F600}<meta name=\u{e9} content=\u{1F600}>",
            "<script>",
            "&#xFFFFFFFF;",
            "<meta name=x content='&#xD800;'>",
        ];
        for s in inputs {
            let _ = parse_meta_tags(s);
        }
        assert_eq!(
            parse_meta_tags("<meta name=a content=b"),
            vec![tag("a", "b")]
        );
    }
}
