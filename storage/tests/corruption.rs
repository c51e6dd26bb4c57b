//! Corruption injection: torn WAL tails are truncated and counted; damage
//! anywhere else (WAL middle, segment data block, index, footer, manifest)
//! is refused with an error naming the file and the offset.
mod common;

use std::ops::Bound;
use std::path::{Path, PathBuf};

use common::{run, tmpdir};
use weir_storage::segment::format::{parse_footer, FOOTER_BYTES};
use weir_storage::wal::scan::scan;
use weir_storage::{Store, StoreConfig, StoreError};

fn cfg() -> StoreConfig {
    StoreConfig::small_for_tests()
}

fn copy_dir(from: &Path, tag: &str) -> PathBuf {
    let to = tmpdir(tag);
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    to
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, off: u64, bit: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[off as usize] ^= 1 << bit;
    std::fs::write(path, b).unwrap();
}

fn count(s: &Store) -> usize {
    s.scan_range(Bound::Unbounded, Bound::Unbounded).unwrap().count()
}

/// Opens; returns the store or the error.
fn open(dir: &Path) -> Result<(usize, u64), StoreError> {
    run(async {
        let s = Store::open(dir, cfg()).await?;
        s.verify().await?;
        let mut n = 0;
        for r in s.scan_range(Bound::Unbounded, Bound::Unbounded)? {
            r?;
            n += 1;
        }
        Ok((n, s.stats().torn_tails_truncated))
    })
}

fn assert_refused(r: Result<(usize, u64), StoreError>, file: &Path, lo: u64, hi: u64, ctx: &str) {
    match r {
        Err(StoreError::Corrupt { path, offset, what }) => {
            assert_eq!(path, file, "{ctx}: wrong file ({what})");
            assert!((lo..=hi).contains(&offset), "{ctx}: offset {offset} not in {lo}..={hi} ({what})");
            let msg = StoreError::Corrupt { path, offset, what }.to_string();
            assert!(msg.contains(file.file_name().unwrap().to_str().unwrap()) && msg.contains(&offset.to_string()));
        }
        other => panic!("{ctx}: expected corruption error, got {other:?}"),
    }
}

/// A store with 40 committed single-put WAL records and nothing flushed.
fn wal_only_store() -> PathBuf {
    let dir = tmpdir("corrupt-wal");
    run(async {
        let mut s = Store::open(&dir, cfg()).await.unwrap();
        for i in 0..40u32 {
            s.put(format!("key{i:03}").as_bytes(), &[i as u8; 30]).unwrap();
            s.commit().await.unwrap();
        }
    });
    dir
}

fn wal_records(dir: &Path) -> (PathBuf, Vec<u64>, u64) {
    let wals = files(dir, ".log");
    let w = wals.last().unwrap().clone();
    let b = std::fs::read(&w).unwrap();
    let (recs, _) = scan(&b, 0);
    let end = recs.last().map(|r| r.payload.1 as u64).unwrap();
    (w, recs.iter().map(|r| r.offset).collect(), end)
}

#[test]
fn wal_truncated_at_every_offset_of_last_record() {
    let base = wal_only_store();
    let (w, offs, end) = wal_records(&base);
    assert_eq!(offs.len(), 40);
    let last = *offs.last().unwrap();
    for cut in last..end {
        let d = copy_dir(&base, "cut");
        let wp = d.join(w.file_name().unwrap());
        std::fs::OpenOptions::new().write(true).open(&wp).unwrap().set_len(cut).unwrap();
        let (n, torn) = open(&d).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(n, 39, "cut at {cut}");
        assert_eq!(torn, u64::from(cut > last), "cut at {cut}");
        assert_eq!(std::fs::metadata(&wp).unwrap().len(), last, "truncated to the last good record");
        // Reopening again is clean.
        assert_eq!(open(&d).unwrap(), (39, 0));
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn wal_bit_flips_in_tail_are_truncated_in_middle_refused() {
    let base = wal_only_store();
    let (w, offs, end) = wal_records(&base);
    let last = *offs.last().unwrap();
    for off in last..end {
        let d = copy_dir(&base, "tailflip");
        flip(&d.join(w.file_name().unwrap()), off, (off % 8) as u8);
        let (n, torn) = open(&d).unwrap_or_else(|e| panic!("flip at {off}: {e}"));
        assert_eq!((n, torn), (39, 1), "flip at {off}");
        let _ = std::fs::remove_dir_all(&d);
    }
    for (i, &rec) in offs[..39].iter().enumerate().step_by(3) {
        let next = offs[i + 1];
        for off in [rec, rec + 5, rec + 13, rec + 30, next - 1] {
            let d = copy_dir(&base, "midflip");
            let wp = d.join(w.file_name().unwrap());
            flip(&wp, off, 3);
            assert_refused(open(&d), &wp, rec, rec, &format!("wal flip at {off}"));
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// A store whose state lives in one segment file (WAL emptied by the flush).
fn segment_store() -> (PathBuf, PathBuf) {
    let dir = tmpdir("corrupt-seg");
    run(async {
        let mut s = Store::open(&dir, cfg()).await.unwrap();
        for i in 0..100u32 {
            s.put(format!("key{i:05}").as_bytes(), &[i as u8; 40]).unwrap();
        }
        s.flush().await.unwrap();
        s.close().await.unwrap();
    });
    let mut segs = files(&dir, ".seg");
    assert_eq!(segs.len(), 1);
    let seg = segs.pop().unwrap();
    (dir, seg)
}

#[test]
fn segment_flips_in_blocks_index_footer_are_refused() {
    let (base, seg) = segment_store();
    assert_eq!(open(&base).unwrap().0, 100);
    let bytes = std::fs::read(&seg).unwrap();
    weir_storage::segment::verify_image(&bytes).unwrap();
    let f = parse_footer(&bytes).unwrap();
    let len = bytes.len() as u64;
    let name = seg.file_name().unwrap();
    // Data blocks: detected at read (verify/scan), offset inside the data area.
    for off in (0..f.index_off).step_by(97) {
        let d = copy_dir(&base, "blockflip");
        let p = d.join(name);
        flip(&p, off, (off % 8) as u8);
        let r = open(&d);
        // Flips in the alignment padding before the index are harmless.
        if let Ok((n, _)) = r {
            assert!(off >= f.index_off - 16, "flip at {off} undetected");
            assert_eq!(n, 100);
            continue;
        }
        assert_refused(r, &p, 0, f.index_off, &format!("block flip at {off}"));
        assert!(weir_storage::segment::verify_image(&std::fs::read(&p).unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
    // Index: every byte.
    for off in f.index_off..f.index_off + f.index_len {
        let d = copy_dir(&base, "indexflip");
        let p = d.join(name);
        flip(&p, off, (off % 8) as u8);
        assert_refused(open(&d), &p, f.index_off, f.index_off, &format!("index flip at {off}"));
        let _ = std::fs::remove_dir_all(&d);
    }
    // Footer: every byte.
    for off in len - FOOTER_BYTES as u64..len {
        let d = copy_dir(&base, "footerflip");
        let p = d.join(name);
        flip(&p, off, (off % 8) as u8);
        assert_refused(open(&d), &p, len - FOOTER_BYTES as u64, len, &format!("footer flip at {off}"));
        let _ = std::fs::remove_dir_all(&d);
    }
    // Reads of a damaged block report the file and offset too.
    let d = copy_dir(&base, "getflip");
    let p = d.join(name);
    flip(&p, 100, 1);
    run(async {
        let s = Store::open(&d, cfg()).await.unwrap();
        match s.get(b"key00000") {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, p),
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(s.scan_prefix(b"key").unwrap().any(|r| r.is_err()));
        assert!(s.get(b"key00099").unwrap().is_some(), "other blocks still readable");
    });
}

#[test]
fn manifest_flips_are_refused() {
    let (base, _) = segment_store();
    let m = base.join("MANIFEST");
    let len = std::fs::metadata(&m).unwrap().len();
    for off in 0..len {
        let d = copy_dir(&base, "manflip");
        let p = d.join("MANIFEST");
        flip(&p, off, (off % 8) as u8);
        assert_refused(open(&d), &p, 0, 24, &format!("manifest flip at {off}"));
        let _ = std::fs::remove_dir_all(&d);
    }
    // Truncated manifest.
    let d = copy_dir(&base, "mantrunc");
    let p = d.join("MANIFEST");
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 3).unwrap();
    assert_refused(open(&d), &p, 0, 24, "manifest truncated");
    let _ = count;
}
