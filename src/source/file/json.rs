//! JSON lines into `T` via serde_json: one JSON value per line; blank lines are skipped.
//!
//! A failure names the field: serde's message for a missing/unknown/duplicate field, otherwise
//! the key (dotted path of object keys, e.g. `bid.price`) whose value serde_json was reading at
//! the error's column.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::{field_from_serde_message, BadLine, LineInfo, ParseLine};

/// Parses JSON lines into `T`.
pub(crate) struct JsonParser<T> {
    _t: PhantomData<fn() -> T>,
}

impl<T> JsonParser<T> {
    pub(crate) fn new() -> Self {
        Self { _t: PhantomData }
    }
}

impl<T: DeserializeOwned> ParseLine<T> for JsonParser<T> {
    fn parse(&mut self, line: &[u8], _info: &LineInfo, out: &mut Vec<T>) -> Result<(), BadLine> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice::<T>(line) {
            Ok(record) => {
                out.push(record);
                Ok(())
            }
            Err(e) => {
                let full = e.to_string();
                // serde_json appends " at line L column C"; the line is ours to report.
                let message = match full.rfind(" at line ") {
                    Some(cut) => full[..cut].to_string(),
                    None => full,
                };
                let field = field_from_serde_message(&message).or_else(|| key_at(line, e.column()));
                Err(BadLine { field, message })
            }
        }
    }
}

/// The dotted path of object keys whose value is being read at byte `offset` of `line`.
pub(crate) fn key_at(line: &[u8], offset: usize) -> Option<String> {
    let offset = offset.min(line.len());
    // One entry per open container: the current key (objects) or None (arrays).
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut last_string: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < offset {
        match line[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < line.len() && line[j] != b'"' {
                    j += if line[j] == b'\\' { 2 } else { 1 };
                }
                last_string = Some((start, j.min(line.len())));
                i = j + 1;
                continue;
            }
            b':' => {
                if let (Some(top), Some((s, e))) = (stack.last_mut(), last_string) {
                    *top = Some(String::from_utf8_lossy(&line[s..e]).into_owned());
                }
            }
            b'{' | b'[' => stack.push(None),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                // The next key of this object is not known yet.
                if let Some(top) = stack.last_mut() {
                    if top.is_some() {
                        *top = None;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    let path: Vec<String> = stack.into_iter().flatten().collect();
    if path.is_empty() {
        None
    } else {
        Some(path.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_at_finds_the_innermost_key() {
        let line = br#"{"a": 1, "b": {"c": "x:y", "d": [1, "z"]}}"#;
        let at = |needle: &str| {
            let pos = line.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() + needle.len();
            key_at(line, pos)
        };
        assert_eq!(at("1"), Some("a".into()));
        assert_eq!(at("1,"), None);
        assert_eq!(at(r#""x:y""#), Some("b.c".into()));
        assert_eq!(at(r#""z""#), Some("b.d".into()));
        assert_eq!(key_at(b"42", 2), None);
    }
}
