//! Fuzzes the manifest decoder (raw, and with a valid header and CRC so
//! the rkyv validation is reached).
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_storage::manifest::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let mut m = b"WEIRMAN1".to_vec();
    m.extend_from_slice(&(data.len() as u64).to_le_bytes());
    m.extend_from_slice(&[0u8; 8]);
    m.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(&m[..16]);
    h.update(&m[20..]);
    let crc = h.finalize();
    m[16..20].copy_from_slice(&crc.to_le_bytes());
    let _ = decode(&m);
});
