//! Checkpoints and savepoints on disk.
//!
//! Layout of a checkpoint directory (`execution.checkpointing.dir`):
//! ```text
//! <dir>/chk-<epoch>/state      every task's snapshot (keyed state by key group, positions, committables)
//! <dir>/chk-<epoch>/keyed-<attempt>-<shard>-<operator>   keyed state files written by tasks (below)
//! <dir>/chk-<epoch>/_metadata  what the checkpoint is; written last, atomically
//! <dir>/savepoints/sp-<epoch>-<ms>/{state,keyed-*,_metadata}   savepoints (never deleted by weir)
//! ```
//! `state` and `_metadata` are framed `magic (8) | format version (u32) | payload length (u64) |
//! crc32 (u32) | payload` with a postcard payload. The format is versioned (version 1, without
//! keyed state files, is still read) and organised by key group, so a checkpoint or savepoint
//! taken on N shards restores on M shards.
//!
//! **Keyed state files** ([`KeyedFile`]) hold large keyed state written by a task's snapshot
//! thread instead of travelling through the coordinator: `magic (8) | format version (u32)`,
//! then one section per key group, ascending, each the same bytes as an inline
//! [`super::snapshot::KeyedSnapshot`] section. The index (key group, offset, length, crc32 per
//! section) is in the task's snapshot in `state`, so a restoring shard reads exactly the
//! sections of the key groups it owns, from every file, each verified by its checksum. Names
//! carry the run's attempt token, so a late writer of a failed attempt never collides with a
//! new attempt's file of the same epoch.
//!
//! Invariants: a checkpoint exists (is *complete*) iff its `_metadata` exists and verifies; the
//! metadata is written after the state file and every keyed state file are durable (write,
//! fsync, rename, fsync the directory), so a crash at any point leaves either a complete
//! checkpoint or a directory without metadata, which restore ignores and weir deletes. Damage
//! is never skipped silently: a `_metadata`, `state` or keyed state section that fails its
//! checksum, or a missing or truncated keyed state file, is an error naming the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::runtime::{RestoreSet, TaskSnapshot};
use crate::error::{Result, WeirError};

const STATE_MAGIC: &[u8; 8] = b"WEIRSTAT";
const META_MAGIC: &[u8; 8] = b"WEIRMETA";
const KEYED_MAGIC: &[u8; 8] = b"WEIRKGRP";
/// Version of the on-disk format; bump on incompatible change (restore refuses newer ones).
/// Version 2 added keyed state files (`CheckpointMeta::keyed_file_bytes`,
/// `TaskSnapshot::keyed_files`); version 1 is still read.
pub const FORMAT_VERSION: u32 = 2;

/// Checkpoint (owned by weir, retained K at a time) or savepoint (owned by the user).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// The `_metadata` of a checkpoint or savepoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format_version: u32,
    pub kind: SnapshotKind,
    pub epoch: u64,
    pub job: String,
    pub shards: usize,
    pub max_key_groups: u32,
    /// True for the final checkpoint of a bounded job: a restore from it has nothing to read.
    pub finished: bool,
    pub created_ms: i64,
    pub state_bytes: u64,
    pub state_crc: u32,
    /// Operators with keyed state, and sources with positions (for compatibility checks).
    pub keyed_operators: Vec<String>,
    pub sources: Vec<String>,
    /// Bytes of the keyed state files the checkpoint references (beside `state_bytes`).
    pub keyed_file_bytes: u64,
    /// Two-phase-commit sinks with pending output in the checkpoint (a restore publishes it).
    pub sinks: Vec<String>,
}

impl CheckpointMeta {
    /// Bytes of the whole checkpoint: the state file and the keyed state files.
    pub fn total_bytes(&self) -> u64 {
        self.state_bytes + self.keyed_file_bytes
    }
}

/// `CheckpointMeta` of format version 1 (read only).
#[derive(Deserialize)]
struct CheckpointMetaV1 {
    format_version: u32,
    kind: SnapshotKind,
    epoch: u64,
    job: String,
    shards: usize,
    max_key_groups: u32,
    finished: bool,
    created_ms: i64,
    state_bytes: u64,
    state_crc: u32,
    keyed_operators: Vec<String>,
    sources: Vec<String>,
}

/// The state file's payload: every task's snapshot with the shard it ran on.
#[derive(Serialize, Deserialize)]
struct StateFile {
    tasks: Vec<(usize, TaskSnapshot)>,
}

/// The state file's payload in format version 1 (read only).
#[derive(Deserialize)]
struct StateFileV1 {
    tasks: Vec<(usize, TaskSnapshotV1)>,
}

/// `TaskSnapshot` of format version 1: no keyed state files.
#[derive(Deserialize)]
struct TaskSnapshotV1 {
    keyed: Vec<(String, super::snapshot::KeyedSnapshot)>,
    operator_state: Vec<(String, Vec<u8>)>,
    positions: Vec<(String, usize, Vec<u8>)>,
    committables: Vec<(String, Vec<u8>)>,
    declined: Option<String>,
}

impl From<TaskSnapshotV1> for TaskSnapshot {
    fn from(t: TaskSnapshotV1) -> Self {
        TaskSnapshot {
            keyed: t.keyed,
            operator_state: t.operator_state,
            positions: t.positions,
            committables: t.committables,
            declined: t.declined,
            ..TaskSnapshot::default()
        }
    }
}

/// One key group's section of a [`KeyedFile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedSection {
    pub key_group: u32,
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

/// A keyed state file of one operator instance (see the module docs): its name in the
/// checkpoint directory, its length, and its sections by key group, ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedFile {
    pub name: String,
    pub bytes: u64,
    pub sections: Vec<KeyedSection>,
}

impl KeyedFile {
    /// Payload bytes (the sections).
    pub fn payload_bytes(&self) -> u64 {
        self.sections.iter().map(|s| s.len).sum()
    }
}

/// Writes a [`KeyedFile`] section by section (blocking I/O: run it off the shard's thread).
pub struct KeyedFileWriter {
    file: fs::File,
    path: PathBuf,
    index: KeyedFile,
}

impl KeyedFileWriter {
    /// Create `name` in the existing directory `dir` (an error if `dir` is gone, e.g. because
    /// the checkpoint was aborted and discarded meanwhile, or if the file exists).
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WeirError::io("create keyed state file", &path, e))?;
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(KEYED_MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.write_all(&header).map_err(|e| WeirError::io("write", &path, e))?;
        Ok(Self {
            file,
            path,
            index: KeyedFile {
                name: name.to_string(),
                bytes: header.len() as u64,
                sections: Vec::new(),
            },
        })
    }

    /// Append the section of `key_group` (key groups in ascending order, each once; an empty
    /// section is skipped).
    pub fn section(&mut self, key_group: u32, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        assert!(
            self.index.sections.last().is_none_or(|s| s.key_group < key_group),
            "keyed state file sections in ascending key-group order"
        );
        self.file.write_all(bytes).map_err(|e| WeirError::io("write", &self.path, e))?;
        self.index.sections.push(KeyedSection {
            key_group,
            offset: self.index.bytes,
            len: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
        });
        self.index.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Make the file durable and return its index.
    pub fn finish(self) -> Result<KeyedFile> {
        self.file.sync_all().map_err(|e| WeirError::io("fsync", &self.path, e))?;
        Ok(self.index)
    }
}

/// Read the sections of `file` (in checkpoint directory `dir`) whose key groups are in
/// `lo..hi`, in key-group order, verifying each checksum; `f` gets each section's bytes.
pub fn read_keyed_sections(dir: &Path, file: &KeyedFile, (lo, hi): (u32, u32), mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let wanted: Vec<&KeyedSection> = file.sections.iter().filter(|s| (lo..hi).contains(&s.key_group)).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let path = dir.join(&file.name);
    let handle = fs::File::open(&path).map_err(|e| WeirError::io("open keyed state file", &path, e))?;
    let mut buf = Vec::new();
    for s in wanted {
        buf.resize(s.len as usize, 0);
        handle
            .read_exact_at(&mut buf, s.offset)
            .map_err(|e| WeirError::io("read keyed state file", &path, e))?;
        if crc32fast::hash(&buf) != s.crc {
            return Err(WeirError::Checkpoint(format!(
                "{}: section of key group {} fails its checksum (damaged)",
                path.display(),
                s.key_group
            )));
        }
        f(s.key_group, &buf)?;
    }
    Ok(())
}

/// Every keyed state file `tasks` reference exists in `dir` with its recorded length.
fn check_keyed_files(dir: &Path, tasks: &[(usize, TaskSnapshot)]) -> Result<u64> {
    let mut total = 0;
    for (_, t) in tasks {
        for (_, f) in &t.keyed_files {
            let path = dir.join(&f.name);
            let len = fs::metadata(&path).map_err(|e| WeirError::io("keyed state file", &path, e))?.len();
            if len != f.bytes {
                return Err(WeirError::Checkpoint(format!(
                    "{}: {len} bytes, the checkpoint recorded {} (truncated or replaced)",
                    path.display(),
                    f.bytes
                )));
            }
            total += len;
        }
    }
    Ok(total)
}

fn frame(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check a framed file; returns its format version and payload.
fn unframe<'a>(magic: &[u8; 8], bytes: &'a [u8], path: &Path) -> Result<(u32, &'a [u8])> {
    let bad = |what: String| WeirError::Checkpoint(format!("{}: {what}", path.display()));
    if bytes.len() < 24 || &bytes[..8] != magic {
        return Err(bad("not a weir checkpoint file (bad magic or too short)".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(bad(format!("format version {version} is newer than this weir's ({FORMAT_VERSION})")));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let payload = &bytes[24..];
    if payload.len() as u64 != len {
        return Err(bad(format!("payload is {} bytes, header says {len} (truncated)", payload.len())));
    }
    if crc32fast::hash(payload) != crc {
        return Err(bad("checksum mismatch (damaged)".into()));
    }
    Ok((version, payload))
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| WeirError::io("create", path, e))?;
    f.write_all(bytes).map_err(|e| WeirError::io("write", path, e))?;
    f.sync_all().map_err(|e| WeirError::io("fsync", path, e))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WeirError::io("fsync directory", dir, e))
}

/// Write a complete checkpoint (or savepoint) into `dir` (created; must not hold metadata).
pub fn write_snapshot(dir: &Path, mut meta: CheckpointMeta, tasks: Vec<(usize, TaskSnapshot)>) -> Result<CheckpointMeta> {
    fs::create_dir_all(dir).map_err(|e| WeirError::io("create checkpoint directory", dir, e))?;
    let mut keyed: Vec<String> = tasks
        .iter()
        .flat_map(|(_, t)| t.keyed.iter().map(|(n, _)| n.clone()).chain(t.keyed_files.iter().map(|(n, _)| n.clone())))
        .collect();
    keyed.sort();
    keyed.dedup();
    let mut sources: Vec<String> = tasks.iter().flat_map(|(_, t)| t.positions.iter().map(|(n, _, _)| n.clone())).collect();
    sources.sort();
    sources.dedup();
    let mut sinks: Vec<String> = tasks.iter().flat_map(|(_, t)| t.committables.iter().map(|(n, _)| n.clone())).collect();
    sinks.sort();
    sinks.dedup();
    // Keyed state files were written by the tasks; their directory entries become durable
    // with the fsync of the directory below, before the metadata exists.
    meta.keyed_file_bytes = check_keyed_files(dir, &tasks)?;
    let payload = postcard::to_stdvec(&StateFile { tasks }).map_err(|e| WeirError::Checkpoint(format!("encoding checkpoint state: {e}")))?;
    meta.state_bytes = payload.len() as u64;
    meta.state_crc = crc32fast::hash(&payload);
    meta.keyed_operators = keyed;
    meta.sources = sources;
    meta.sinks = sinks;
    write_durably(&dir.join("state"), &frame(STATE_MAGIC, &payload))?;
    sync_dir(dir)?;
    super::crash_point("state-written");
    let meta_bytes = postcard::to_stdvec(&meta).map_err(|e| WeirError::Checkpoint(format!("encoding checkpoint metadata: {e}")))?;
    let tmp = dir.join("_metadata.tmp");
    write_durably(&tmp, &frame(META_MAGIC, &meta_bytes))?;
    let final_path = dir.join("_metadata");
    fs::rename(&tmp, &final_path).map_err(|e| WeirError::io("rename", &tmp, e))?;
    sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(meta)
}

/// Read and verify the metadata of the checkpoint in `dir`.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join("_metadata");
    let bytes = fs::read(&path).map_err(|e| WeirError::io("read", &path, e))?;
    let (version, payload) = unframe(META_MAGIC, &bytes, &path)?;
    let undecodable = |e: postcard::Error| WeirError::Checkpoint(format!("{}: undecodable metadata ({e})", path.display()));
    if version == 1 {
        let m: CheckpointMetaV1 = postcard::from_bytes(payload).map_err(undecodable)?;
        return Ok(CheckpointMeta {
            format_version: m.format_version,
            kind: m.kind,
            epoch: m.epoch,
            job: m.job,
            shards: m.shards,
            max_key_groups: m.max_key_groups,
            finished: m.finished,
            created_ms: m.created_ms,
            state_bytes: m.state_bytes,
            state_crc: m.state_crc,
            keyed_operators: m.keyed_operators,
            sources: m.sources,
            keyed_file_bytes: 0,
            sinks: Vec::new(),
        });
    }
    postcard::from_bytes(payload).map_err(undecodable)
}

/// Read a whole checkpoint for restore.
pub fn read_snapshot(dir: &Path) -> Result<(CheckpointMeta, RestoreSet)> {
    let meta = read_meta(dir)?;
    let path = dir.join("state");
    let bytes = fs::read(&path).map_err(|e| WeirError::io("read", &path, e))?;
    let (version, payload) = unframe(STATE_MAGIC, &bytes, &path)?;
    if payload.len() as u64 != meta.state_bytes || crc32fast::hash(payload) != meta.state_crc {
        return Err(WeirError::Checkpoint(format!(
            "{}: does not match its _metadata (mixed checkpoints?)",
            path.display()
        )));
    }
    let undecodable = |e: postcard::Error| WeirError::Checkpoint(format!("{}: undecodable state ({e})", path.display()));
    let tasks = if version == 1 {
        let v1: StateFileV1 = postcard::from_bytes(payload).map_err(undecodable)?;
        v1.tasks.into_iter().map(|(s, t)| (s, t.into())).collect()
    } else {
        postcard::from_bytes::<StateFile>(payload).map_err(undecodable)?.tasks
    };
    check_keyed_files(dir, &tasks)?;
    let mut set = RestoreSet::from_tasks(meta.epoch, dir.display().to_string(), meta.shards, tasks);
    set.dir = dir.to_path_buf();
    Ok((meta, set))
}

/// Why a job with `operators` (and `max_key_groups`) cannot restore the checkpoint or
/// savepoint described by `meta`; empty when it can. State is matched to operators by name
/// (`window:tumble#5`), so a job whose operators were added, removed or reordered before a
/// stateful one does not match (weir has no user-assigned operator ids yet). The same holds
/// for two-phase-commit sinks with pending output (a file sink's name includes its folder).
pub fn check_compatible(meta: &CheckpointMeta, operators: &[String], max_key_groups: u32) -> Vec<String> {
    let mut problems = Vec::new();
    if meta.format_version > FORMAT_VERSION {
        problems.push(format!("format version {} is newer than this weir's ({FORMAT_VERSION})", meta.format_version));
    }
    if meta.max_key_groups != max_key_groups {
        problems.push(format!(
            "taken with max_key_groups = {}, this job has {} (key groups are fixed for the life of a job's state)",
            meta.max_key_groups, max_key_groups
        ));
    }
    for op in &meta.keyed_operators {
        if !operators.contains(op) {
            problems.push(format!("state of operator {op} has no operator of that name in this job (it would be lost)"));
        }
    }
    for source in &meta.sources {
        if !operators.contains(source) {
            problems.push(format!("positions of source {source} have no source of that name in this job"));
        }
    }
    for sink in &meta.sinks {
        if !operators.contains(sink) {
            problems.push(format!(
                "pending output of sink {sink} has no sink of that name in this job (it would never be published)"
            ));
        }
    }
    problems
}

/// The checkpoints of one job: `chk-<epoch>` directories under `root`.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    pub root: PathBuf,
}

impl CheckpointStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.root.join(format!("chk-{epoch}"))
    }

    pub fn savepoint_dir(&self, epoch: u64, now_ms: i64) -> PathBuf {
        self.root.join("savepoints").join(format!("sp-{epoch}-{now_ms}"))
    }

    /// Epochs of `chk-*` directories, ascending (complete or not).
    pub fn epochs(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(WeirError::io("list checkpoints", &self.root, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| WeirError::io("list checkpoints", &self.root, e))?;
            if let Some(n) = entry.file_name().to_str().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The newest complete checkpoint, if any. A newest `_metadata` that exists but fails to
    /// verify is an error (never silently skipped).
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        for epoch in self.epochs()?.into_iter().rev() {
            let dir = self.epoch_dir(epoch);
            if dir.join("_metadata").exists() {
                read_meta(&dir)?;
                return Ok(Some(dir));
            }
        }
        Ok(None)
    }

    /// Delete the checkpoint directories of `discard` and those without metadata (crashed or
    /// aborted attempts) of epochs below `incomplete_below` (later ones may still be being
    /// written: `u64::MAX` when nothing runs).
    pub fn clean(&self, discard: &[u64], incomplete_below: u64) -> Result<()> {
        for epoch in self.epochs()? {
            let dir = self.epoch_dir(epoch);
            if discard.contains(&epoch) || (epoch < incomplete_below && !dir.join("_metadata").exists()) {
                fs::remove_dir_all(&dir).map_err(|e| WeirError::io("delete checkpoint", &dir, e))?;
            }
        }
        Ok(())
    }

    /// Delete one checkpoint directory (aborted epoch), if it exists.
    pub fn discard(&self, epoch: u64) -> Result<()> {
        Self::remove(&self.epoch_dir(epoch))
    }

    /// Delete the directory of an aborted or failed snapshot, if it exists.
    pub fn remove(dir: &Path) -> Result<()> {
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WeirError::io("delete checkpoint", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::snapshot::append;

    fn meta(epoch: u64) -> CheckpointMeta {
        CheckpointMeta {
            format_version: FORMAT_VERSION,
            kind: SnapshotKind::Checkpoint,
            epoch,
            job: "t".into(),
            shards: 2,
            max_key_groups: 128,
            finished: false,
            created_ms: 0,
            state_bytes: 0,
            state_crc: 0,
            keyed_operators: vec![],
            sources: vec![],
            keyed_file_bytes: 0,
            sinks: vec![],
        }
    }

    fn task(kg: u32, v: u64) -> TaskSnapshot {
        let mut t = TaskSnapshot::default();
        append(t.keyed("w").group(kg), &v);
        t.positions.push(("src".into(), kg as usize, vec![kg as u8]));
        t
    }

    #[test]
    fn round_trip_latest_and_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path());
        assert_eq!(store.latest().unwrap(), None);
        write_snapshot(&store.epoch_dir(1), meta(1), vec![(0, task(3, 7))]).unwrap();
        write_snapshot(&store.epoch_dir(2), meta(2), vec![(0, task(3, 8)), (1, task(100, 9))]).unwrap();
        std::fs::create_dir_all(store.epoch_dir(3)).unwrap(); // a crashed attempt: no metadata
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest, store.epoch_dir(2));
        let (m, set) = read_snapshot(&latest).unwrap();
        assert_eq!(m.keyed_operators, vec!["w".to_string()]);
        let groups = crate::key::KeyGroups::new(128, 2);
        let mut seen = Vec::new();
        set.keyed_for("w", &groups, 0).for_each::<u64>(|kg, v| seen.push((kg, v))).unwrap();
        assert_eq!(seen, vec![(3, 8)]);
        assert_eq!(set.position("src", 100), Some(&[100u8][..]));
        store.clean(&[1], u64::MAX).unwrap();
        assert!(!store.epoch_dir(1).exists() && !store.epoch_dir(3).exists() && store.epoch_dir(2).exists());
    }

    /// A sink's pending output is restored by the sink's name: a job without that sink cannot
    /// restore the checkpoint (its output would silently never be published).
    #[test]
    fn pending_output_of_a_missing_sink_is_an_incompatibility() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path());
        let mut t = task(3, 7);
        t.committables.push(("sink:filesystem:/a#6".into(), vec![1]));
        let m = write_snapshot(&store.epoch_dir(1), meta(1), vec![(0, t)]).unwrap();
        assert_eq!(m.sinks, vec!["sink:filesystem:/a#6".to_string()]);
        let ops = |sink: &str| vec!["w".to_string(), "src".to_string(), sink.to_string()];
        assert!(check_compatible(&m, &ops("sink:filesystem:/a#6"), 128).is_empty());
        let problems = check_compatible(&read_meta(&store.epoch_dir(1)).unwrap(), &ops("sink:filesystem:/b#6"), 128);
        assert!(problems.len() == 1 && problems[0].contains("sink:filesystem:/a#6"), "{problems:?}");
    }

    #[test]
    fn damage_is_reported_with_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path());
        write_snapshot(&store.epoch_dir(1), meta(1), vec![(0, task(3, 7))]).unwrap();
        let state = store.epoch_dir(1).join("state");
        let mut bytes = std::fs::read(&state).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&state, &bytes).unwrap();
        let err = read_snapshot(&store.epoch_dir(1)).unwrap_err().to_string();
        assert!(err.contains("chk-1/state") && err.contains("checksum"), "{err}");
        let meta_path = store.epoch_dir(1).join("_metadata");
        let bytes = std::fs::read(&meta_path).unwrap();
        std::fs::write(&meta_path, &bytes[..bytes.len() - 3]).unwrap();
        let err = store.latest().unwrap_err().to_string();
        assert!(err.contains("_metadata") && err.contains("truncated"), "{err}");
    }
}
