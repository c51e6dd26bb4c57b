//! Bloom filter over the keys of one segment (double hashing of
//! `codec::hash64`).
//!
//! Invariant: no false negatives: every key added is reported as maybe
//! present. An empty bit array (filter disabled) reports every key present.

use crate::codec::hash64;

/// Number of probes for `bits_per_key` (≈ ln 2 × bits per key, 1..=30).
pub(crate) fn probes(bits_per_key: u32) -> u32 {
    ((bits_per_key as f64 * 0.69) as u32).clamp(1, 30)
}

/// Builds the bit array for `hashes` with `bits_per_key`.
pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    if bits_per_key == 0 || hashes.is_empty() {
        return Vec::new();
    }
    let nbits = (hashes.len() as u64 * bits_per_key as u64).max(64);
    let mut bits = vec![0u8; nbits.div_ceil(8) as usize];
    let nbits = bits.len() as u64 * 8;
    let k = probes(bits_per_key);
    for &h in hashes {
        let delta = h.rotate_right(17) | 1;
        let mut x = h;
        for _ in 0..k {
            let b = x % nbits;
            bits[(b / 8) as usize] |= 1 << (b % 8);
            x = x.wrapping_add(delta);
        }
    }
    bits
}

/// Hash used for keys.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    hash64(key)
}

/// Probes the filter.
pub(crate) fn may_contain(bits: &[u8], k: u32, key: &[u8]) -> bool {
    if bits.is_empty() {
        return true;
    }
    let nbits = bits.len() as u64 * 8;
    let h = key_hash(key);
    let delta = h.rotate_right(17) | 1;
    let mut x = h;
    for _ in 0..k {
        let b = x % nbits;
        if bits[(b / 8) as usize] & (1 << (b % 8)) == 0 {
            return false;
        }
        x = x.wrapping_add(delta);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_low_false_positive_rate() {
        let keys: Vec<Vec<u8>> = (0..10_000u32).map(|i| format!("key{i}").into_bytes()).collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let bits = build(&hashes, 10);
        let k = probes(10);
        assert!(keys.iter().all(|key| may_contain(&bits, k, key)));
        let fp = (0..10_000u32).filter(|i| may_contain(&bits, k, format!("other{i}").as_bytes())).count();
        assert!(fp < 300, "false positive rate {fp}/10000");
        assert!(may_contain(&[], 0, b"anything"), "disabled filter admits all");
    }
}
