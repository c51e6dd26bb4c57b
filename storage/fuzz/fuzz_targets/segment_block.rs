//! Fuzzes the data block decoder (raw, and with a valid trailer CRC) and
//! whole segment images.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_storage::segment::{block, verify_image};

fuzz_target!(|data: &[u8]| {
    let _ = block::verify(data);
    let mut b = data.to_vec();
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let _ = block::verify(&b);
    let _ = verify_image(data);
});
