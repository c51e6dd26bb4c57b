//! Smoke fuzzing in the default test run: real WAL, segment and manifest
//! images are mutated at random (seeded) and fed to every decoder, which
//! must return errors, never panic. The real fuzzers live in `storage/fuzz`.
mod common;

use common::{run, seed, tmpdir, Rng};
use weir_storage::segment::format::{check_index_bytes, parse_footer};
use weir_storage::segment::{block, verify_image};
use weir_storage::wal::record::decode_payload;
use weir_storage::wal::scan::scan;
use weir_storage::{manifest, Store, StoreConfig};

fn mutate(r: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..r.below(4) + 1 {
        match r.below(4) {
            0 if !b.is_empty() => {
                let i = r.below(b.len() as u64) as usize;
                b[i] ^= 1 << r.below(8);
            }
            1 if !b.is_empty() => {
                let i = r.below(b.len() as u64) as usize;
                b[i] = r.next() as u8;
            }
            2 => b.truncate(r.below(b.len() as u64 + 1) as usize),
            _ => {
                let i = r.below(b.len() as u64 + 1) as usize;
                b.insert(i, r.next() as u8);
            }
        }
    }
    b
}

#[test]
fn decoders_never_panic_on_mutated_images() {
    let dir = tmpdir("decoders");
    run(async {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        for i in 0..200u32 {
            s.put_with_ttl(format!("k{i:04}").as_bytes(), &[i as u8; 20], u64::from(i)).unwrap();
            if i % 10 == 0 {
                s.delete(format!("k{:04}", i / 2).as_bytes()).unwrap();
            }
        }
        s.commit().await.unwrap();
        s.checkpoint(1).await.unwrap();
        for i in 0..50u32 {
            s.put(format!("w{i}").as_bytes(), b"x").unwrap();
        }
        s.commit().await.unwrap();
    });
    let mut wal = Vec::new();
    let mut seg = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        if n.ends_with(".log") && std::fs::metadata(&p).unwrap().len() > 0 {
            wal = std::fs::read(&p).unwrap();
        } else if n.ends_with(".seg") {
            seg = std::fs::read(&p).unwrap();
        }
    }
    let man = std::fs::read(dir.join("MANIFEST")).unwrap();
    assert!(!wal.is_empty() && !seg.is_empty());
    let f = parse_footer(&seg).unwrap();
    let index = seg[f.index_off as usize..(f.index_off + f.index_len) as usize].to_vec();
    let first_block = seg[..f.index_off as usize].to_vec();
    let mut r = Rng(seed(99));
    let iters = std::env::var("WEIR_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    for _ in 0..iters {
        let m = mutate(&mut r, &wal);
        for rec in scan(&m, 0).0 {
            assert!(decode_payload(&m[rec.payload.0..rec.payload.1]).is_ok());
        }
        let _ = verify_image(&mutate(&mut r, &seg));
        let _ = check_index_bytes(&mutate(&mut r, &index), f.index_off);
        let _ = block::verify(&mutate(&mut r, &first_block));
        let _ = manifest::decode(&mutate(&mut r, &man));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
