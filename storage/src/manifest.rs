//! The manifest: live set of sorted runs, retained checkpoints and the WAL
//! replay floor, stored in `MANIFEST` and replaced atomically.
//!
//! File layout: `magic "WEIRMAN1" | payload_len u64 | crc32 u32 | pad u32 |
//! payload` where the payload is the rkyv archive of [`Manifest`] and the
//! CRC covers every byte of the file except the CRC field.
//!
//! Update protocol: write `MANIFEST.tmp`, fsync it, rename over
//! `MANIFEST`, fsync the directory. A crash leaves either the old or the
//! new manifest; a left-over `MANIFEST.tmp` is ignored and removed.
//!
//! Invariants: run segment ids are unique and `< next_file_id`; every
//! retained checkpoint's files exist on disk; checkpoints are ordered by
//! strictly increasing epoch.

use std::io::Write;
use std::path::Path;

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsutil::fsync_dir;

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"WEIRMAN1";
const HEADER: usize = 24;

/// One segment file of a run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    /// File id (`NNNNNNNNNN.seg`).
    pub id: u64,
    /// File size.
    pub bytes: u64,
    /// Entry count.
    pub entries: u64,
    /// Smallest key.
    pub first_key: Vec<u8>,
    /// Largest key.
    pub last_key: Vec<u8>,
}

/// A retained checkpoint.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Epoch given by the engine.
    pub epoch: u64,
    /// Last sequence number included.
    pub seq: u64,
    /// Runs (newest first) at checkpoint time.
    pub runs: Vec<Vec<SegmentMeta>>,
}

/// Durable store metadata.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Next segment file id.
    pub next_file_id: u64,
    /// WAL records with a smaller sequence number are already in segments
    /// (or were discarded by a restore) and are not replayed.
    pub replay_from_seq: u64,
    /// Epoch of the last checkpoint (0: none).
    pub epoch: u64,
    /// Live sorted runs, newest first; each run's segments are disjoint
    /// and in key order.
    pub runs: Vec<Vec<SegmentMeta>>,
    /// Retained checkpoints, oldest first.
    pub checkpoints: Vec<CheckpointMeta>,
    /// Cumulative bytes written to segment files by flushes.
    pub flushed_bytes: u64,
    /// Cumulative bytes written to segment files by compaction.
    pub compacted_bytes: u64,
}

/// CRC of a manifest image: every byte except the CRC field itself.
fn manifest_crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..16]);
    h.update(&b[20..]);
    h.finalize()
}

/// Encodes a manifest file image.
pub fn encode(m: &Manifest) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(m).expect("serialising a manifest cannot fail");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&payload);
    let crc = manifest_crc(&out);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a manifest image. `Err((offset, what))`.
pub fn decode(b: &[u8]) -> std::result::Result<Manifest, (u64, String)> {
    if b.len() < HEADER {
        return Err((0, format!("expected a {HEADER}-byte header, got {} bytes", b.len())));
    }
    if &b[..8] != MAGIC {
        return Err((0, format!("magic expected {MAGIC:?}, got {:?}", &b[..8])));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&b[8..16]);
    let len = u64::from_le_bytes(l);
    if len != (b.len() - HEADER) as u64 {
        return Err((8, format!("payload length expected {}, got {len}", b.len() - HEADER)));
    }
    let stored = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    let got = manifest_crc(b);
    if stored != got {
        return Err((16, format!("crc expected {stored:#010x}, got {got:#010x}")));
    }
    let mut al = rkyv::util::AlignedVec::<16>::new();
    al.extend_from_slice(&b[HEADER..]);
    let m = rkyv::from_bytes::<Manifest, rkyv::rancor::Error>(&al).map_err(|e| (HEADER as u64, format!("payload does not validate: {e}")))?;
    validate_runs(&m.runs, m.next_file_id).map_err(|w| (HEADER as u64, format!("live runs: {w}")))?;
    for c in &m.checkpoints {
        validate_runs(&c.runs, m.next_file_id).map_err(|w| (HEADER as u64, format!("checkpoint {}: {w}", c.epoch)))?;
    }
    let mut prev = None;
    for c in &m.checkpoints {
        if prev.is_some_and(|p| p >= c.epoch) {
            return Err((HEADER as u64, "checkpoint epochs not increasing".into()));
        }
        prev = Some(c.epoch);
    }
    Ok(m)
}

/// Checks the structural invariants of a run list.
fn validate_runs(runs: &[Vec<SegmentMeta>], next_file_id: u64) -> std::result::Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, run) in runs.iter().enumerate() {
        if run.is_empty() {
            return Err(format!("run {i} is empty"));
        }
        for (j, m) in run.iter().enumerate() {
            if m.id >= next_file_id || !seen.insert(m.id) {
                return Err(format!("segment id {} duplicated or >= next id {next_file_id}", m.id));
            }
            if m.first_key > m.last_key || (j > 0 && run[j - 1].last_key >= m.first_key) {
                return Err(format!("run {i} segment {j} key range out of order"));
            }
        }
    }
    Ok(())
}

/// Reads `dir/MANIFEST`; `Ok(None)` if absent.
pub fn load(dir: &Path) -> Result<Option<Manifest>> {
    let p = dir.join(MANIFEST_FILE);
    match std::fs::read(&p) {
        Ok(b) => decode(&b).map(Some).map_err(|(o, w)| StoreError::corrupt(&p, o, w)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read manifest", &p, e)),
    }
}

/// Atomically replaces `dir/MANIFEST` (temp file, fsync, rename, fsync dir).
/// On error before the rename the old manifest is untouched.
pub fn store(dir: &Path, m: &Manifest) -> Result<()> {
    let tmp = dir.join("MANIFEST.tmp");
    let img = encode(m);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| StoreError::io("create manifest", &tmp, e))?;
        f.write_all(&img).map_err(|e| StoreError::io("write manifest", &tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync manifest", &tmp, e))
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dst = dir.join(MANIFEST_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| StoreError::io("rename manifest", &dst, e))?;
    fsync_dir(dir)
}
