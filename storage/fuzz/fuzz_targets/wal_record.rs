//! Fuzzes the WAL frame/payload decoders and the recovery scan.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_storage::wal::record::{decode_frame, decode_payload, HEADER_BYTES};
use weir_storage::wal::scan::{scan, Tail};

fuzz_target!(|data: &[u8]| {
    // Raw bytes as a whole segment.
    let (recs, tail) = scan(data, 0);
    for r in &recs {
        assert!(r.payload.1 <= data.len());
        assert!(decode_payload(&data[r.payload.0..r.payload.1]).is_ok());
    }
    if let Tail::Invalid { offset, .. } = tail {
        assert!(offset as usize <= data.len());
    }
    let _ = decode_frame(data);
    // The same bytes as the payload of a frame with a valid checksum, so
    // the payload decoder is reached.
    let mut f = vec![0u8; HEADER_BYTES];
    f[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    f[8..16].copy_from_slice(&1u64.to_le_bytes());
    f.extend_from_slice(data);
    let crc = crc32fast::hash(&f[4..]);
    f[..4].copy_from_slice(&crc.to_le_bytes());
    let fr = decode_frame(&f).expect("valid frame");
    let _ = decode_payload(fr.payload);
    let _ = scan(&f, 0);
});
