//! The little XML S3 speaks: reading elements of a response body (`<Code>`, `<UploadId>`,
//! repeated `<Contents>` blocks) and escaping text for request bodies.
//!
//! Not a general XML parser: S3's responses are flat, namespace-free below the root and have
//! no attributes on the elements read here, so finding `<Tag>` … `</Tag>` is exact for them.
//! Invariant: malformed input gives `None` / fewer blocks, never a panic.

/// The unescaped text of the first `<tag>…</tag>` in `xml`.
pub fn text(xml: &str, tag: &str) -> Option<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(unescape(&xml[start..end]))
}

/// The raw inner text of every `<tag>…</tag>` block, in order.
pub fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let inner = &rest[s + open.len()..];
        let Some(e) = inner.find(&close) else { break };
        out.push(&inner[..e]);
        rest = &inner[e + close.len()..];
    }
    out
}

/// Undo XML's entity escapes (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#N;`, `&#xN;`).
pub fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(semi) = after.find(';').filter(|&s| s <= 10) else {
            out.push('&');
            rest = &after[1..];
            continue;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escape text for an XML element.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elements_and_blocks() {
        let xml = r#"<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <IsTruncated>false</IsTruncated>
            <Contents><Key>a&amp;b.csv</Key><Size>10</Size><ETag>&quot;e1&quot;</ETag></Contents>
            <Contents><Key>c&#x2F;d.csv</Key><Size>0</Size></Contents></ListBucketResult>"#;
        assert_eq!(text(xml, "IsTruncated").as_deref(), Some("false"));
        let b = blocks(xml, "Contents");
        assert_eq!(b.len(), 2);
        assert_eq!(text(b[0], "Key").as_deref(), Some("a&b.csv"));
        assert_eq!(text(b[0], "ETag").as_deref(), Some("\"e1\""));
        assert_eq!(text(b[1], "Key").as_deref(), Some("c/d.csv"));
        assert_eq!(text(xml, "Missing"), None);
        assert_eq!(blocks("<Contents><Key>x", "Contents").len(), 0);
        assert_eq!(unescape("a & b &bogus; &#65;"), "a & b &bogus; A");
        assert_eq!(escape("\"<&>'"), "&quot;&lt;&amp;&gt;&apos;");
    }
}
