//! Reading `/sys` and `/proc` under a movable root, plus the small parsers
//! every check family shares (CPU lists, `[bracketed]` selections).
//!
//! Invariants:
//! - A missing file or directory is `Ok(None)`, never an error: checks turn
//!   it into [`crate::Status::Unknown`]. Any other I/O error carries the full
//!   path as context.
//! - Relative paths are joined to the root verbatim; absolute-looking inputs
//!   are made relative first, so nothing escapes the root by accident.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A root directory that `/sys` and `/proc` live under.
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
}

impl Root {
    /// A root at `base` (`/` on a real machine).
    pub fn new(base: &Path) -> Root {
        Root { base: base.to_path_buf() }
    }

    /// The real path of `rel` (e.g. `"sys/kernel/mm"`) under this root.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.base.join(rel)
    }

    /// Contents of `rel`, `None` if it does not exist.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<Option<String>> {
        read_opt(&self.path(rel))
    }

    /// Contents of `rel` with surrounding whitespace removed.
    pub fn read_trimmed(&self, rel: impl AsRef<Path>) -> Result<Option<String>> {
        Ok(self.read(rel)?.map(|s| s.trim().to_string()))
    }

    /// Names in directory `rel`, sorted; `None` if it does not exist.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Option<Vec<String>>> {
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("listing {}", path.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", path.display()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(Some(names))
    }
}

/// Reads `path`, mapping "not found" to `None`.
pub fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Highest CPU number accepted (the kernel's NR_CPUS tops out at 8192); keeps
/// a corrupt file from expanding into a huge set.
pub const MAX_CPU: usize = 65_535;

/// Parses a kernel CPU list such as `0-3,8,10-11` (empty string = no CPUs).
pub fn parse_cpu_list(s: &str) -> Result<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // `nohz_full=` and `isolcpus=` may carry flags ("domain,managed_irq,2-3")
        // or a stride ("0-7:2/4"); flags are skipped, strides are rejected.
        if part.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            continue;
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.parse().with_context(|| format!("bad CPU list {s:?}"))?;
                let b: usize = b.parse().with_context(|| format!("bad CPU list {s:?}"))?;
                anyhow::ensure!(a <= b, "bad CPU range {part:?} in {s:?}");
                anyhow::ensure!(b <= MAX_CPU, "CPU {b} out of range in {s:?}");
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().with_context(|| format!("bad CPU list {s:?}"))?);
            }
        }
    }
    Ok(out)
}

/// Formats CPUs as a compact kernel CPU list (`0-3,8`); empty set is `""`.
pub fn format_cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

/// The selected word in a sysfs choice file: `always [madvise] never` →
/// `madvise`. A file with a single bare word returns that word.
pub fn selected(s: &str) -> Option<String> {
    let s = s.trim();
    if let Some(open) = s.find('[') {
        let close = s[open..].find(']')? + open;
        return Some(s[open + 1..close].to_string());
    }
    let mut words = s.split_whitespace();
    match (words.next(), words.next()) {
        (Some(w), None) => Some(w.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_round_trip() {
        let set = parse_cpu_list("0-3,8,10-11\n").unwrap();
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(format_cpu_list(&set), "0-3,8,10-11");
        assert!(parse_cpu_list("").unwrap().is_empty());
        assert_eq!(parse_cpu_list("domain,managed_irq,2-3").unwrap(), [2, 3].into_iter().collect());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x1").is_err());
        assert!(parse_cpu_list("0-99999999999").is_err());
    }

    #[test]
    fn selected_word() {
        assert_eq!(selected("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(selected("none\n").as_deref(), Some("none"));
        assert_eq!(selected("[none] mq-deadline").as_deref(), Some("none"));
        assert_eq!(selected("a b"), None);
    }

    #[test]
    fn missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert!(root.read("nope/nothing").unwrap().is_none());
        assert!(root.list("nope").unwrap().is_none());
        assert_eq!(root.path("/sys/x"), dir.path().join("sys/x"));
    }
}
