//! A bit-exact re-implementation of `java.util.Random`.
//!
//! Nexmark's reference generator draws every field from a `java.util.Random`
//! seeded with the event id, so reproducing its output needs the same 48-bit
//! linear congruential generator: multiplier `0x5DEECE66D`, addend `0xB`,
//! modulus 2^48, seed scrambled by XOR with the multiplier.
//!
//! Invariants:
//! - Every method consumes exactly the same number of `next(bits)` steps as the
//!   JDK method of the same name, and returns the same value (including the
//!   rejection loop of `nextInt(bound)` and the power-of-two shortcut).
//! - No method panics: a non-positive bound (an `IllegalArgumentException` in
//!   Java) yields 0 without consuming randomness; callers validate bounds.

const MULTIPLIER: u64 = 0x5_DEEC_E66D;
const ADDEND: u64 = 0xB;
const MASK: u64 = (1 << 48) - 1;
/// 2^-53, Java's `DOUBLE_UNIT`.
const DOUBLE_UNIT: f64 = 1.0 / ((1u64 << 53) as f64);

/// Draws [`JavaRandom::next_ints`] computes side by side.
pub const LANES: usize = 4;

/// `JUMP[k]` = (a, c) with seed after `k + 1` steps = `a · seed + c` (mod 2^48).
const JUMP: [(u64, u64); LANES] = {
    let mut t = [(0u64, 0u64); LANES];
    let (mut a, mut c) = (MULTIPLIER, ADDEND);
    let mut k = 0;
    while k < LANES {
        t[k] = (a & MASK, c & MASK);
        // One more step: a' = M·a, c' = M·c + addend.
        a = a.wrapping_mul(MULTIPLIER) & MASK;
        c = c.wrapping_mul(MULTIPLIER).wrapping_add(ADDEND) & MASK;
        k += 1;
    }
    t
};

/// `java.util.Random` with the JDK's exact arithmetic.
#[derive(Debug, Clone)]
pub struct JavaRandom {
    seed: u64,
}

impl JavaRandom {
    /// Same as `new java.util.Random(seed)`.
    #[inline]
    pub fn new(seed: i64) -> Self {
        let mut r = JavaRandom { seed: 0 };
        r.set_seed(seed);
        r
    }

    /// Same as `Random.setSeed(seed)`: scrambles the seed with the multiplier.
    #[inline]
    pub fn set_seed(&mut self, seed: i64) {
        self.seed = (seed as u64 ^ MULTIPLIER) & MASK;
    }

    /// Same as the protected `Random.next(bits)`, for `1 <= bits <= 32`.
    #[inline]
    pub fn next(&mut self, bits: u32) -> i32 {
        self.seed = (self.seed.wrapping_mul(MULTIPLIER).wrapping_add(ADDEND)) & MASK;
        // Java: (int)(seed >>> (48 - bits)); the cast keeps the low 32 bits.
        (self.seed >> (48 - bits)) as u32 as i32
    }

    /// The next [`LANES`] values of `nextInt()`, in order: each computed from the current
    /// seed by a jump-ahead step (independent of the others, so the CPU overlaps them).
    #[inline]
    pub fn next_ints(&mut self) -> [i32; LANES] {
        let s = self.seed;
        let mut out = [0i32; LANES];
        for (o, (a, c)) in out.iter_mut().zip(JUMP) {
            *o = (((a.wrapping_mul(s).wrapping_add(c)) & MASK) >> 16) as u32 as i32;
        }
        let (a, c) = JUMP[LANES - 1];
        self.seed = a.wrapping_mul(s).wrapping_add(c) & MASK;
        out
    }

    /// Same as `Random.nextInt()`.
    #[inline]
    pub fn next_int(&mut self) -> i32 {
        self.next(32)
    }

    /// Same as `Random.nextInt(bound)` for `bound > 0`; 0 for `bound <= 0`.
    #[inline]
    pub fn next_int_bounded(&mut self, bound: i32) -> i32 {
        if bound <= 0 {
            return 0;
        }
        if bound & bound.wrapping_neg() == bound {
            // Power of two: take the high bits.
            return ((bound as i64 * self.next(31) as i64) >> 31) as i32;
        }
        loop {
            let bits = self.next(31);
            let val = bits % bound;
            // Reject the top partial range; Java detects it by int overflow.
            if bits.wrapping_sub(val).wrapping_add(bound - 1) >= 0 {
                return val;
            }
        }
    }

    /// Same as `Random.nextLong()`.
    #[inline]
    pub fn next_long(&mut self) -> i64 {
        let hi = self.next(32) as i64;
        let lo = self.next(32) as i64;
        (hi << 32).wrapping_add(lo)
    }

    /// Same as `Random.nextDouble()`.
    #[inline]
    pub fn next_double(&mut self) -> f64 {
        let hi = self.next(26) as i64;
        let lo = self.next(27) as i64;
        ((hi << 27) + lo) as f64 * DOUBLE_UNIT
    }

    /// Advances the generator by `steps` calls of `next(_)` without using the
    /// values (used to skip strings that are not materialised).
    #[inline]
    pub fn skip(&mut self, steps: u32) {
        for _ in 0..steps {
            self.seed = (self.seed.wrapping_mul(MULTIPLIER).wrapping_add(ADDEND)) & MASK;
        }
    }
}

/// Nexmark's `LongGenerator.nextLong(random, n)`: a value in `[0, n)` for
/// `n > 0` (skewed for `n >= i32::MAX`, exactly as the reference).
#[inline]
pub fn next_long_below(random: &mut JavaRandom, n: i64) -> i64 {
    if n < i32::MAX as i64 {
        random.next_int_bounded(n as i32) as i64
    } else {
        // Java: Math.abs(random.nextLong() % n); abs(i64::MIN) stays MIN.
        (random.next_long() % n).wrapping_abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumped_draws_equal_stepped_ones() {
        for seed in [0i64, 1, -1, 42, i64::MAX, i64::MIN, 0x5DEECE66D] {
            let (mut a, mut b) = (JavaRandom::new(seed), JavaRandom::new(seed));
            for _ in 0..50 {
                let jumped = a.next_ints();
                let stepped: Vec<i32> = (0..LANES).map(|_| b.next_int()).collect();
                assert_eq!(jumped.to_vec(), stepped);
            }
            assert_eq!(a.next_int(), b.next_int());
        }
    }

    #[test]
    fn golden_next_int() {
        // Widely documented JDK values.
        assert_eq!(JavaRandom::new(0).next_int(), -1155484576);
        assert_eq!(JavaRandom::new(42).next_int(), -1170105035);
        let mut r = JavaRandom::new(0);
        r.next_int();
        assert_eq!(r.next_int(), -723955400);
    }

    #[test]
    fn bounded_is_in_range_and_total() {
        let mut r = JavaRandom::new(7);
        for bound in [1, 2, 3, 10, 13, 26, 100, 1 << 20, i32::MAX] {
            for _ in 0..1000 {
                let v = r.next_int_bounded(bound);
                assert!((0..bound).contains(&v));
            }
        }
        assert_eq!(r.next_int_bounded(0), 0);
        assert_eq!(r.next_int_bounded(-5), 0);
        for _ in 0..1000 {
            let d = r.next_double();
            assert!((0.0..1.0).contains(&d));
        }
    }
}
