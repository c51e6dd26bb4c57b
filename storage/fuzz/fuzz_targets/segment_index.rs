//! Fuzzes the rkyv index validation and footer parsing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_storage::segment::format::{check_index_bytes, parse_footer};

fuzz_target!(|data: &[u8]| {
    let _ = parse_footer(data);
    let _ = check_index_bytes(data, 1 << 20);
});
