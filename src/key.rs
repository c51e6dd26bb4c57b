//! Keys: the stable hash, key groups and which shard owns a key.
//!
//! `key → stable 64-bit hash → key group → shard`. Savepoints are organised by key group, so
//! **the hash and both mappings below must never change**; changing them breaks every savepoint.
//!
//! The hash ([`StableHash`]), defined byte for byte:
//! - integers (`i8..i64`, `u8..u64`, `bool`, `char`): the value widened to `u64` (two's
//!   complement for signed values), then MurmurHash3's 64-bit finaliser [`fmix64`];
//! - byte strings (`str`, `String`, `[u8]`, `Vec<u8>`): 64-bit FNV-1a over the bytes (offset basis
//!   `0xcbf29ce484222325`, prime `0x100000001b3`), then [`fmix64`];
//! - tuples `(a, b, ..)`: `h = 0x9e3779b97f4a7c15`; for each element `h = fmix64(h ^ hash(e))
//!   .wrapping_mul(0x100000001b3)`... exactly as [`combine`] computes it;
//! - `Option<T>`: `None` hashes as the tuple `()` seed, `Some(v)` as `hash(v)`.
//!
//! Key group of a hash: `hash % max_key_groups`. Shard of a key group (Flink's formula):
//! `key_group * shards / max_key_groups`, so every shard owns one contiguous range.
//!
//! Invariants: `max_key_groups >= shards >= 1`; every key group has exactly one owner.

/// MurmurHash3's 64-bit finaliser: a bijective mix with good avalanche.
#[inline]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// 64-bit FNV-1a over bytes, then [`fmix64`].
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// Seed of a tuple hash.
pub const TUPLE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// One step of the tuple hash.
#[inline]
pub const fn combine(h: u64, element: u64) -> u64 {
    fmix64(h ^ element).wrapping_mul(0x0000_0100_0000_01b3)
}

/// A hash that is the same on every machine, version and run. See the module docs.
pub trait StableHash {
    fn stable_hash(&self) -> u64;
}

macro_rules! int_hash {
    ($($t:ty),*) => {$(
        impl StableHash for $t {
            #[inline]
            fn stable_hash(&self) -> u64 { fmix64(*self as i64 as u64) }
        }
    )*};
}
int_hash!(i8, i16, i32, i64, isize);
macro_rules! uint_hash {
    ($($t:ty),*) => {$(
        impl StableHash for $t {
            #[inline]
            fn stable_hash(&self) -> u64 { fmix64(*self as u64) }
        }
    )*};
}
uint_hash!(u8, u16, u32, u64, usize);

impl StableHash for bool {
    fn stable_hash(&self) -> u64 {
        fmix64(*self as u64)
    }
}
impl StableHash for char {
    fn stable_hash(&self) -> u64 {
        fmix64(*self as u64)
    }
}
impl StableHash for str {
    fn stable_hash(&self) -> u64 {
        hash_bytes(self.as_bytes())
    }
}
impl StableHash for String {
    fn stable_hash(&self) -> u64 {
        hash_bytes(self.as_bytes())
    }
}
impl StableHash for [u8] {
    fn stable_hash(&self) -> u64 {
        hash_bytes(self)
    }
}
impl StableHash for Vec<u8> {
    fn stable_hash(&self) -> u64 {
        hash_bytes(self)
    }
}
impl<T: StableHash + ?Sized> StableHash for &T {
    fn stable_hash(&self) -> u64 {
        (**self).stable_hash()
    }
}
impl<T: StableHash> StableHash for Option<T> {
    fn stable_hash(&self) -> u64 {
        match self {
            None => TUPLE_SEED,
            Some(v) => v.stable_hash(),
        }
    }
}
impl StableHash for () {
    fn stable_hash(&self) -> u64 {
        TUPLE_SEED
    }
}
macro_rules! tuple_hash {
    ($($n:ident),+) => {
        impl<$($n: StableHash),+> StableHash for ($($n,)+) {
            #[allow(non_snake_case)]
            fn stable_hash(&self) -> u64 {
                let ($($n,)+) = self;
                let mut h = TUPLE_SEED;
                $( h = combine(h, $n.stable_hash()); )+
                h
            }
        }
    };
}
tuple_hash!(A);
tuple_hash!(A, B);
tuple_hash!(A, B, C);
tuple_hash!(A, B, C, D);

/// Default number of key groups (Flink's default max parallelism is 128; weir uses more so a
/// savepoint can be spread over more cores).
pub const DEFAULT_MAX_KEY_GROUPS: u32 = 1024;

/// Maps hashes to key groups and key groups to shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroups {
    max_key_groups: u32,
    shards: u32,
    /// `log2(max_key_groups)` when it is a power of two (the default): key groups and shards
    /// by mask and shift, the same values as the divisions, without a division per record.
    pow2_shift: Option<u32>,
}

impl KeyGroups {
    pub fn new(max_key_groups: u32, shards: u32) -> Self {
        assert!(shards >= 1, "at least one shard");
        assert!(max_key_groups >= shards, "max_key_groups ({max_key_groups}) must be >= shards ({shards})");
        Self {
            max_key_groups,
            shards,
            pow2_shift: max_key_groups.is_power_of_two().then(|| max_key_groups.trailing_zeros()),
        }
    }

    pub fn max_key_groups(&self) -> u32 {
        self.max_key_groups
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    #[inline]
    pub fn key_group(&self, hash: u64) -> u32 {
        match self.pow2_shift {
            Some(_) => (hash & (self.max_key_groups as u64 - 1)) as u32,
            None => (hash % self.max_key_groups as u64) as u32,
        }
    }

    #[inline]
    pub fn shard_of_group(&self, key_group: u32) -> u32 {
        let scaled = key_group as u64 * self.shards as u64;
        match self.pow2_shift {
            Some(shift) => (scaled >> shift) as u32,
            None => (scaled / self.max_key_groups as u64) as u32,
        }
    }

    #[inline]
    pub fn shard_of_hash(&self, hash: u64) -> u32 {
        self.shard_of_group(self.key_group(hash))
    }

    /// The contiguous key-group range `[lo, hi)` owned by `shard`.
    pub fn range_of_shard(&self, shard: u32) -> (u32, u32) {
        assert!(shard < self.shards);
        let n = self.max_key_groups as u64;
        let s = self.shards as u64;
        let lo = (shard as u64 * n).div_ceil(s) as u32;
        let hi = ((shard as u64 + 1) * n).div_ceil(s) as u32;
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_values_are_frozen() {
        // These values are part of the savepoint format. Never change them.
        assert_eq!(0i64.stable_hash(), 0);
        assert_eq!(1i64.stable_hash(), 0xb456_bcfc_34c2_cb2c);
        assert_eq!((-1i64).stable_hash(), 0x64b5_720b_4b82_5f21);
        assert_eq!(1i32.stable_hash(), 1i64.stable_hash());
        assert_eq!("weir".stable_hash(), hash_bytes(b"weir"));
        assert_eq!(hash_bytes(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_ne!((1i64, 2i64).stable_hash(), (2i64, 1i64).stable_hash());
    }

    #[test]
    fn ranges_are_contiguous_and_agree_with_shard_of_group() {
        for shards in 1..=7 {
            let kg = KeyGroups::new(128, shards);
            let mut next = 0;
            for s in 0..shards {
                let (lo, hi) = kg.range_of_shard(s);
                assert_eq!(lo, next);
                for g in lo..hi {
                    assert_eq!(kg.shard_of_group(g), s, "group {g} shards {shards}");
                }
                next = hi;
            }
            assert_eq!(next, 128);
        }
    }

    #[test]
    fn power_of_two_shortcuts_equal_the_divisions() {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for max in [1u32, 2, 128, 1024, 32768, 1 << 20] {
            for shards in [1u32, 2, 3, 5, 7] {
                if shards > max {
                    continue;
                }
                let kg = KeyGroups::new(max, shards);
                for _ in 0..2000 {
                    h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let g = (h % max as u64) as u32;
                    assert_eq!(kg.key_group(h), g);
                    assert_eq!(kg.shard_of_group(g), ((g as u64 * shards as u64) / max as u64) as u32);
                }
            }
        }
    }
}
