//! Snapshot payloads: what one operator instance writes at a checkpoint barrier and reads back
//! at restore.
//!
//! Keyed state is written **by key group** ([`KeyedSnapshot`]): each key group's entries are one
//! byte section, so a snapshot taken on N shards restores on M shards by handing every new
//! shard the sections of the key groups it now owns ([`KeyedRestore`]). Entries inside a section
//! are postcard-encoded values appended one after the other ([`append`], [`Entries`]); the
//! operator decides what an entry is (a window bucket, a timer, a state value).
//!
//! Invariants: a key group appears at most once per operator snapshot; sections are only ever
//! decoded by the operator (identified by its name in the job) that wrote them; decoding never
//! panics on damaged bytes — it returns an error naming the operator and key group.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::files::{read_keyed_sections, KeyedFile};
use crate::error::{Result, WeirError};

/// Types that can be written into a checkpoint (serde + postcard).
pub trait Persist: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> Persist for T {}

/// Keyed state of one operator instance, one byte section per key group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedSnapshot {
    pub groups: BTreeMap<u32, Vec<u8>>,
}

impl KeyedSnapshot {
    /// The section of `key_group` (created empty on first use).
    pub fn group(&mut self, key_group: u32) -> &mut Vec<u8> {
        self.groups.entry(key_group).or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.values().all(|g| g.is_empty())
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> usize {
        self.groups.values().map(|g| g.len()).sum()
    }
}

/// Keyed state handed to one operator instance at restore: the sections of the key groups
/// this shard owns, gathered from every shard of the snapshot — inline sections, and the
/// keyed state files (in `dir`) holding sections of those key groups, read on demand.
#[derive(Clone, Debug, Default)]
pub struct KeyedRestore {
    pub operator: String,
    pub groups: Vec<(u32, Vec<u8>)>,
    /// The snapshot directory the files are in.
    pub dir: std::path::PathBuf,
    pub files: Vec<KeyedFile>,
    /// The key groups `[lo, hi)` to read from the files.
    pub range: (u32, u32),
}

impl KeyedRestore {
    /// Inline sections only.
    pub fn new(operator: &str, groups: Vec<(u32, Vec<u8>)>) -> Self {
        Self {
            operator: operator.to_string(),
            groups,
            ..Default::default()
        }
    }

    /// Also the sections of key groups `range` in `files` (in directory `dir`).
    pub fn with_files(mut self, dir: std::path::PathBuf, files: Vec<KeyedFile>, range: (u32, u32)) -> Self {
        self.dir = dir;
        self.files = files;
        self.range = range;
        self
    }

    /// Every section's bytes with its key group: the inline sections, then each file's
    /// sections (each in key-group order). File sections are read one at a time into one
    /// buffer and verified by their checksums.
    pub fn for_each_section(&self, mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        for (kg, bytes) in &self.groups {
            f(*kg, bytes)?;
        }
        for file in &self.files {
            read_keyed_sections(&self.dir, file, self.range, &mut f)?;
        }
        Ok(())
    }

    /// Decode every entry of every section (see [`KeyedRestore::for_each_section`]) as `T`.
    pub fn for_each<T: DeserializeOwned>(&self, mut f: impl FnMut(u32, T)) -> Result<()> {
        let operator = self.operator.as_str();
        self.for_each_section(|kg, bytes| {
            for entry in Entries::new(bytes, operator, kg) {
                f(kg, entry?);
            }
            Ok(())
        })
    }
}

/// Append one postcard-encoded entry to a section.
pub fn append<T: Serialize>(section: &mut Vec<u8>, entry: &T) {
    // Serialising into a Vec only fails on a broken `Serialize` impl: a programmer error.
    let bytes = postcard::to_extend(entry, std::mem::take(section)).expect("postcard serialisation into a Vec");
    *section = bytes;
}

/// Encode one value as a standalone blob (source positions, committables, operator state).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard serialisation into a Vec")
}

/// Decode a blob written by [`encode`]; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| WeirError::Checkpoint(format!("cannot decode {what}: {e}")))
}

/// Iterator over the entries of one section.
pub struct Entries<'a, T> {
    rest: &'a [u8],
    operator: &'a str,
    key_group: u32,
    failed: bool,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<'a, T> Entries<'a, T> {
    pub fn new(section: &'a [u8], operator: &'a str, key_group: u32) -> Self {
        Self {
            rest: section,
            operator,
            key_group,
            failed: false,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Iterator for Entries<'_, T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match postcard::take_from_bytes::<T>(self.rest) {
            Ok((v, rest)) => {
                self.rest = rest;
                Some(Ok(v))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(WeirError::Checkpoint(format!(
                    "snapshot of operator {} key group {}: damaged entry ({e})",
                    self.operator, self.key_group
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_by_key_group() {
        let mut snap = KeyedSnapshot::default();
        append(snap.group(3), &(1u64, "a".to_string()));
        append(snap.group(3), &(2u64, "b".to_string()));
        append(snap.group(700), &(9u64, "z".to_string()));
        let restore = KeyedRestore::new("w", snap.groups.into_iter().collect());
        let mut seen = Vec::new();
        restore.for_each::<(u64, String)>(|kg, e| seen.push((kg, e))).unwrap();
        assert_eq!(seen, vec![(3, (1, "a".into())), (3, (2, "b".into())), (700, (9, "z".into()))]);
    }

    #[test]
    fn damaged_section_is_an_error_naming_operator_and_group() {
        let restore = KeyedRestore::new("window", vec![(5, vec![0xff, 0xff, 0xff])]);
        let err = restore.for_each::<(u64, String)>(|_, _| {}).unwrap_err().to_string();
        assert!(err.contains("window") && err.contains("key group 5"), "{err}");
    }
}
