//! SQL types and values: [`SqlType`] (Flink's logical types weir supports), [`Value`] (one
//! field), [`Row`] (a record of a SQL stream) and [`KeyRow`] (a grouping or join key).
//!
//! Representation: a `Value` is 16 bytes (strings are [`Str`], a thin shared pointer); a `Row`
//! keeps up to 8 values inline, so rows of up to 8 columns need no heap allocation beyond their
//! strings (cloned by reference count). Integers of every width are `Int(i64)` (the type says how wide);
//! `DECIMAL(p, s)` is `Decimal(unscaled, s)` in an `i64`, so precision is effectively at most
//! 18 digits (results that do not fit are NULL, as Flink's decimal overflow is).
//!
//! Invariants: `Value`'s `Eq`, `Hash`, `Ord` and `StableHash` agree (doubles compare by total
//! order and hash by bits, with -0.0 equal to 0.0); a value's variant matches its column's type
//! or is `Null`.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::key::{combine, fmix64, hash_bytes, StableHash, TUPLE_SEED};

/// The logical types weir's SQL supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    /// `DECIMAL(precision, scale)`.
    Decimal(u8, u8),
    String,
    /// `TIMESTAMP(p)`: a wall-clock time without zone (epoch ms of that time in UTC).
    Timestamp(u8),
    /// `TIMESTAMP_LTZ(p)`: an instant (epoch ms).
    TimestampLtz(u8),
    /// A day-time interval (only in expressions: `ts - INTERVAL '4' SECOND`).
    Interval,
    /// The type of the `NULL` literal.
    Null,
}

impl SqlType {
    pub fn is_integer(self) -> bool {
        matches!(self, SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt)
    }
    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, SqlType::Float | SqlType::Double | SqlType::Decimal(..))
    }
    pub fn is_timestamp(self) -> bool {
        matches!(self, SqlType::Timestamp(_) | SqlType::TimestampLtz(_))
    }
    /// Bits of an integer type.
    pub fn int_bits(self) -> u32 {
        match self {
            SqlType::TinyInt => 8,
            SqlType::SmallInt => 16,
            SqlType::Int => 32,
            _ => 64,
        }
    }
    /// `DECIMAL(p, s)` that holds every value of an integer or decimal type.
    pub fn as_decimal(self) -> Option<(u8, u8)> {
        match self {
            SqlType::TinyInt => Some((3, 0)),
            SqlType::SmallInt => Some((5, 0)),
            SqlType::Int => Some((10, 0)),
            SqlType::BigInt => Some((19, 0)),
            SqlType::Decimal(p, s) => Some((p, s)),
            _ => None,
        }
    }
}

impl std::fmt::Display for SqlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlType::Boolean => write!(f, "BOOLEAN"),
            SqlType::TinyInt => write!(f, "TINYINT"),
            SqlType::SmallInt => write!(f, "SMALLINT"),
            SqlType::Int => write!(f, "INT"),
            SqlType::BigInt => write!(f, "BIGINT"),
            SqlType::Float => write!(f, "FLOAT"),
            SqlType::Double => write!(f, "DOUBLE"),
            SqlType::Decimal(p, s) => write!(f, "DECIMAL({p}, {s})"),
            SqlType::String => write!(f, "STRING"),
            SqlType::Timestamp(p) => write!(f, "TIMESTAMP({p})"),
            SqlType::TimestampLtz(p) => write!(f, "TIMESTAMP_LTZ({p})"),
            SqlType::Interval => write!(f, "INTERVAL SECOND"),
            SqlType::Null => write!(f, "NULL"),
        }
    }
}

/// One field of a row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Unscaled value and scale.
    Decimal(i64, u8),
    Str(Str),
    /// `TIMESTAMP`: epoch ms of the wall-clock time read as UTC.
    Timestamp(i64),
    /// `TIMESTAMP_LTZ`: epoch ms.
    TimestampLtz(i64),
}

/// A shared immutable string: one allocation holding the count, the length and the bytes,
/// referenced by a thin pointer (8 bytes, so a [`Value`] is 16), cloned by reference count.
pub type Str = arcstr::ArcStr;

/// A record of a SQL stream.
pub type Row = SmallVec<[Value; 8]>;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    fn tag(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Double(_) => 3,
            Value::Decimal(..) => 4,
            Value::Str(_) => 5,
            Value::Timestamp(_) => 6,
            Value::TimestampLtz(_) => 7,
        }
    }

    /// Total order used for keys, MIN/MAX and comparisons of equal types.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Double(a), Value::Double(b)) => norm_f64(*a).total_cmp(&norm_f64(*b)),
            (Value::Decimal(a, sa), Value::Decimal(b, sb)) => decimal_cmp(*a, *sa, *b, *sb),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::Timestamp(b)) | (Value::TimestampLtz(a), Value::TimestampLtz(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::TimestampLtz(b)) | (Value::TimestampLtz(a), Value::Timestamp(b)) => a.cmp(b),
            _ => self.tag().cmp(&other.tag()),
        }
    }
}

fn norm_f64(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// Compare decimals of possibly different scales.
pub fn decimal_cmp(a: i64, sa: u8, b: i64, sb: u8) -> Ordering {
    let s = sa.max(sb);
    let a = a as i128 * 10i128.pow((s - sa) as u32);
    let b = b as i128 * 10i128.pow((s - sb) as u32);
    a.cmp(&b)
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}
impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.stable_hash());
    }
}

impl StableHash for Value {
    fn stable_hash(&self) -> u64 {
        match self {
            Value::Null => fmix64(0x6e75_6c6c),
            Value::Bool(b) => fmix64(*b as u64 + 1),
            Value::Int(i) | Value::Timestamp(i) | Value::TimestampLtz(i) => fmix64(*i as u64),
            Value::Double(d) => fmix64(norm_f64(*d).to_bits()),
            Value::Decimal(v, s) => {
                // Normalise trailing zeros so that equal decimals of different scales hash alike.
                let (mut v, mut s) = (*v, *s);
                while s > 0 && v % 10 == 0 {
                    v /= 10;
                    s -= 1;
                }
                combine(fmix64(v as u64), s as u64)
            }
            Value::Str(s) => hash_bytes(s.as_bytes()),
        }
    }
}

/// A grouping or join key: the key columns' values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct KeyRow(pub SmallVec<[Value; 4]>);

impl StableHash for KeyRow {
    fn stable_hash(&self) -> u64 {
        let mut h = TUPLE_SEED;
        for v in &self.0 {
            h = combine(h, v.stable_hash());
        }
        h
    }
}

/// Parse a decimal literal or CSV field into `(unscaled, scale)` at `scale` digits (rounding
/// half up); `None` if it is not a number or does not fit.
pub fn parse_decimal(text: &str, scale: u8) -> Option<i64> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    if (int.is_empty() && frac.is_empty()) || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes() {
        v = v.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    let fb = frac.as_bytes();
    for k in 0..scale as usize {
        let d = fb.get(k).map(|b| (b - b'0') as i128).unwrap_or(0);
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    if fb.get(scale as usize).is_some_and(|b| *b >= b'5') {
        v += 1;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

/// Rescale an unscaled decimal from scale `from` to scale `to` (rounding half up when the
/// scale shrinks); `None` on overflow.
pub fn rescale(v: i64, from: u8, to: u8) -> Option<i64> {
    if to >= from {
        let f = 10i128.checked_pow((to - from) as u32)?;
        i64::try_from(v as i128 * f).ok()
    } else {
        let f = 10i128.pow((from - to) as u32);
        let q = v as i128 / f;
        let r = v as i128 % f;
        let q = if r.abs() * 2 >= f { q + r.signum() } else { q };
        i64::try_from(q).ok()
    }
}

/// A decimal as text (`-12.340`).
pub fn format_decimal(v: i64, scale: u8, out: &mut String) {
    if scale == 0 {
        let _ = write!(out, "{v}");
        return;
    }
    let f = 10u128.pow(scale as u32);
    let a = (v as i128).unsigned_abs();
    let _ = write!(out, "{}{}.{:0width$}", if v < 0 { "-" } else { "" }, a / f, a % f, width = scale as usize);
}

/// A double the way Java's `Double.toString` prints it (`1.0`, `10030.676`, `1.0E7`).
pub fn format_double(x: f64, out: &mut String) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let a = x.abs();
    if a == 0.0 || (1e-3..1e7).contains(&a) {
        let s = format!("{x}");
        out.push_str(&s);
        if !s.contains('.') {
            out.push_str(".0");
        }
        return;
    }
    // Scientific: shortest digits, mantissa with at least one fractional digit.
    let s = format!("{x:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    out.push_str(mant);
    if !mant.contains('.') {
        out.push_str(".0");
    }
    out.push('E');
    out.push_str(exp);
}

/// `YYYY-MM-DD HH:MM:SS[.fff]` for epoch ms (UTC), millis only when non-zero.
pub fn format_timestamp(ms: i64, out: &mut String) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        let _ = write!(out, "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", sod / 3600, (sod / 60) % 60, sod % 60);
        if millis != 0 {
            let _ = write!(out, ".{millis:03}");
        }
        return;
    }
    // The common case, digit by digit (no formatting machinery).
    let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let (y, h, mi, se) = (y as u32, (sod / 3600) as u32, ((sod / 60) % 60) as u32, (sod % 60) as u32);
    let mut b = [0u8; 23];
    b[..4].copy_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    b[4] = b'-';
    b[5..7].copy_from_slice(&two(m));
    b[7] = b'-';
    b[8..10].copy_from_slice(&two(d));
    b[10] = b' ';
    b[11..13].copy_from_slice(&two(h));
    b[13] = b':';
    b[14..16].copy_from_slice(&two(mi));
    b[16] = b':';
    b[17..19].copy_from_slice(&two(se));
    let n = if millis != 0 {
        let ms = millis as u32;
        b[19] = b'.';
        b[20..23].copy_from_slice(&[b'0' + (ms / 100) as u8, b'0' + (ms / 10 % 10) as u8, b'0' + (ms % 10) as u8]);
        23
    } else {
        19
    };
    out.push_str(std::str::from_utf8(&b[..n]).expect("ASCII digits"));
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse `YYYY-MM-DD[ T]HH:MM[:SS[.fff]][Z]` (UTC) into epoch ms.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let t = text.trim().trim_end_matches('Z');
    let (date, time) = match t.split_once([' ', 'T']) {
        Some((d, t)) => (d, t),
        None => (t, "00:00:00"),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || !(-1_000_000..=1_000_000).contains(&y) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut tp = hms.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let s: i64 = match tp.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if tp.next().is_some() || h > 23 || mi > 59 || s > 59 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ms = 0i64;
    for k in 0..3 {
        ms = ms * 10 + frac.as_bytes().get(k).map(|b| (b - b'0') as i64).unwrap_or(0);
    }
    let days = days_from_civil(y, mo, d);
    days.checked_mul(86_400_000)?.checked_add(((h * 60 + mi) * 60 + s) * 1000 + ms)
}

/// A value as text, the way Flink's CSV format writes it (NULL is empty).
pub fn format_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::Double(d) => format_double(*d, out),
        Value::Decimal(v, s) => format_decimal(*v, *s, out),
        Value::Str(s) => out.push_str(s),
        Value::Timestamp(ms) => format_timestamp(*ms, out),
        Value::TimestampLtz(ms) => {
            format_timestamp(*ms, out);
            out.push('Z');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_flink() {
        let mut s = String::new();
        format_double(10030.676, &mut s);
        s.push('|');
        format_double(1.0, &mut s);
        s.push('|');
        format_double(1.0e7, &mut s);
        s.push('|');
        format_timestamp(1_700_000_000_000, &mut s);
        s.push('|');
        format_timestamp(1_699_999_999_643, &mut s);
        s.push('|');
        format_decimal(-12340, 3, &mut s);
        assert_eq!(s, "10030.676|1.0|1.0E7|2023-11-14 22:13:20|2023-11-14 22:13:19.643|-12.340");
        assert_eq!(parse_timestamp("2023-11-14 22:13:19.643"), Some(1_699_999_999_643));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59Z"), Some(-1000));
        for ms in [
            0,
            -1,
            1,
            999,
            -86_400_001,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_001,
            1_699_999_999_643,
        ] {
            let (mut fast, mut slow) = (String::new(), String::new());
            format_timestamp(ms, &mut fast);
            let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            let _ = write!(slow, "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", sod / 3600, (sod / 60) % 60, sod % 60);
            if millis != 0 {
                let _ = write!(slow, ".{millis:03}");
            }
            assert_eq!(fast, slow, "{ms}");
        }
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("0.908", 3), Some(908));
        assert_eq!(parse_decimal("-1.2345", 3), Some(-1235));
        assert_eq!(parse_decimal("x", 3), None);
        assert_eq!(rescale(1235, 3, 1), Some(12));
        assert_eq!(Value::Decimal(10, 1), Value::Decimal(100, 2));
        assert_eq!(Value::Decimal(10, 1).stable_hash(), Value::Decimal(100, 2).stable_hash());
    }

    #[test]
    fn values_rows_and_keys_round_trip_through_postcard() {
        let row: Row = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Double(2.5),
            Value::Decimal(-12340, 3),
            Value::Str("héllo".into()),
            Value::Timestamp(1_699_999_999_643),
            Value::TimestampLtz(-1000),
            Value::Int(9),
        ]
        .into_iter()
        .collect();
        let bytes = postcard::to_allocvec(&row).unwrap();
        let back: Row = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, row);
        let key = KeyRow(row[1..4].iter().cloned().collect());
        let back: KeyRow = postcard::from_bytes(&postcard::to_allocvec(&key).unwrap()).unwrap();
        assert_eq!(back, key);
    }
}
