//! Byte layouts of keyed state, shared by both backends and by snapshots.
//!
//! - **State id**: the low 32 bits of the frozen [`hash_bytes`] of the state's name, so a
//!   store written by one run is read by the next one.
//! - **Entry key** (what a snapshot entry and the tail of a store key carry): postcard of the
//!   record key `K`, followed for map state by postcard of the user key `UK`. Postcard is
//!   prefix-free per type, so the entries of one key are exactly the keys starting with its
//!   encoding.
//! - **Store key**: `key group (u32 big-endian) | state id (u32 big-endian) | entry key`, so the
//!   state of one key group is one contiguous key range of the store, ordered by key group.
//!   Key group `u32::MAX` (never a real one) holds backend metadata.
//! - **Stored value**: postcard of `(expires_at, payload)`; `expires_at` is the TTL expiry in
//!   processing-time ms (`i64::MAX`: never). The same bytes are a snapshot entry's value, so a
//!   snapshot taken on one backend restores on the other.
//! - **Snapshot entry** ([`KeyedEntry`]): a postcard enum appended to a key group's section of
//!   a [`crate::checkpoint::snapshot::KeyedSnapshot`]: a state entry or a process-function timer.
//!
//! Invariants: encoding into a `Vec` never fails (a failure is a broken `Serialize` impl, a
//! programmer error); decoding never panics on damaged bytes, it returns an error naming what
//! was being decoded.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, WeirError};
use crate::key::hash_bytes;
use crate::time::Timestamp;

/// Key group reserved for backend metadata in the store.
pub(crate) const META_KEY_GROUP: u32 = u32::MAX;

/// Bytes of a store key before the entry key.
pub(crate) const HEADER_BYTES: usize = 8;

/// The id of the state named `name`.
pub(crate) fn state_id(name: &str) -> u32 {
    hash_bytes(name.as_bytes()) as u32
}

/// A postcard flavor appending to a borrowed `Vec`.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();
    #[inline]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }
    #[inline]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(b);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Append the postcard encoding of `value` to `buf`.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) {
    postcard::serialize_with_flavor(value, AppendTo(buf)).expect("postcard serialisation into a Vec");
}

/// Bytes of the postcard encoding of `value` (no allocation).
#[inline]
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).expect("postcard size of a value")
}

/// Decode a whole buffer as `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| WeirError::State(format!("cannot decode {what}: {e}")))
}

/// Decode a `T` from the front of `bytes`; returns it and the rest.
pub(crate) fn take<'a, T: DeserializeOwned>(bytes: &'a [u8], what: &str) -> Result<(T, &'a [u8])> {
    postcard::take_from_bytes(bytes).map_err(|e| WeirError::State(format!("cannot decode {what}: {e}")))
}

/// Write the store-key header of `(key_group, state)` into `buf` (cleared first).
#[inline]
pub(crate) fn store_key_header(key_group: u32, state: u32, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&key_group.to_be_bytes());
    buf.extend_from_slice(&state.to_be_bytes());
}

/// Split a store key into `(key group, state id, entry key)`.
pub(crate) fn split_store_key(key: &[u8]) -> Option<(u32, u32, &[u8])> {
    if key.len() < HEADER_BYTES {
        return None;
    }
    let kg = u32::from_be_bytes(key[0..4].try_into().expect("4 bytes"));
    let sid = u32::from_be_bytes(key[4..8].try_into().expect("4 bytes"));
    Some((kg, sid, &key[HEADER_BYTES..]))
}

/// Append the stored form of `payload` expiring at `expires_at` to `buf`.
#[inline]
pub(crate) fn encode_stored<E: Serialize + ?Sized>(expires_at: Timestamp, payload: &E, buf: &mut Vec<u8>) {
    encode_into(&expires_at, buf);
    encode_into(payload, buf);
}

/// Decode a stored value into `(expires_at, payload)`.
pub(crate) fn decode_stored<E: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<(Timestamp, E)> {
    let (expires_at, rest) = take::<Timestamp>(bytes, what)?;
    Ok((expires_at, decode(rest, what)?))
}

/// The expiry of a stored value (without decoding the payload).
pub(crate) fn stored_expiry(bytes: &[u8]) -> Result<Timestamp> {
    Ok(take::<Timestamp>(bytes, "state value expiry")?.0)
}

/// The expiry the store itself enforces for an entry expiring at `expires_at` (0: never).
#[inline]
pub(crate) fn store_expiry_ms(expires_at: Timestamp) -> u64 {
    if expires_at == Timestamp::MAX {
        0
    } else {
        expires_at.max(1) as u64
    }
}

/// Which clock a snapshotted timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerKind {
    EventTime,
    ProcessingTime,
}

/// One entry of a keyed snapshot section (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyedEntry {
    /// A state entry: state id, entry key, stored value.
    State { state: u32, key: Vec<u8>, value: Vec<u8> },
    /// A process-function timer of the key encoded in `key`.
    Timer { kind: TimerKind, ts: Timestamp, key: Vec<u8> },
}

/// [`KeyedEntry`] borrowing its bytes, for writing (same wire format: postcard writes a byte
/// slice and a `Vec<u8>` alike).
#[derive(Serialize)]
pub(crate) enum KeyedEntryRef<'a> {
    /// Written by [`encode_state_entry`] (byte for byte the same; the tests compare).
    #[allow(dead_code)]
    State {
        state: u32,
        key: &'a [u8],
        value: &'a [u8],
    },
    Timer {
        kind: TimerKind,
        ts: Timestamp,
        key: &'a [u8],
    },
}

/// Append the snapshot entry `KeyedEntry::State { state, key, value }` to `out`: exactly the
/// postcard encoding of [`KeyedEntryRef::State`] (variant index, then varints and byte
/// strings), written with two copies instead of serde's byte-at-a-time walk over the slices.
#[inline]
pub(crate) fn encode_state_entry(state: u32, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.reserve(1 + 5 + 10 + key.len() + 10 + value.len());
    out.push(0); // variant 0: State
    push_varint(state as u64, out);
    push_varint(key.len() as u64, out);
    out.extend_from_slice(key);
    push_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// Postcard's unsigned varint (LEB128).
#[inline]
fn push_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// [`KeyedEntry`] decoded in place from a section's bytes (restore without an allocation per
/// entry).
#[derive(Deserialize)]
pub(crate) enum KeyedEntryBorrowed<'a> {
    State {
        state: u32,
        #[serde(borrow)]
        key: &'a [u8],
        #[serde(borrow)]
        value: &'a [u8],
    },
    Timer {
        kind: TimerKind,
        ts: Timestamp,
        #[serde(borrow)]
        key: &'a [u8],
    },
}

/// Decode every entry of snapshot section `section` (of `operator`, key group `key_group`) in
/// place and hand it to `f`; stops at the first error (a damaged entry names the operator
/// and key group).
pub(crate) fn for_each_entry<'a>(mut section: &'a [u8], operator: &str, key_group: u32, mut f: impl FnMut(KeyedEntryBorrowed<'a>) -> Result<()>) -> Result<()> {
    while !section.is_empty() {
        let (entry, rest) = postcard::take_from_bytes::<KeyedEntryBorrowed<'a>>(section)
            .map_err(|e| WeirError::Checkpoint(format!("snapshot of operator {operator} key group {key_group}: damaged entry ({e})")))?;
        f(entry)?;
        section = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_entries_decode_as_owned_and_stored_values_round_trip() {
        let mut buf = Vec::new();
        encode_into(
            &KeyedEntryRef::State {
                state: 7,
                key: &[1, 2],
                value: &[3],
            },
            &mut buf,
        );
        let e: KeyedEntry = decode(&buf, "entry").unwrap();
        assert_eq!(
            e,
            KeyedEntry::State {
                state: 7,
                key: vec![1, 2],
                value: vec![3]
            }
        );
        let mut v = Vec::new();
        encode_stored(1_234, &("x".to_string(), 5u64), &mut v);
        assert_eq!(stored_expiry(&v).unwrap(), 1_234);
        let (exp, p): (i64, (String, u64)) = decode_stored(&v, "v").unwrap();
        assert_eq!((exp, p), (1_234, ("x".to_string(), 5)));
        assert!(decode_stored::<(String, u64)>(&v[..3], "v").is_err());
        for (state, key, value) in [(7u32, vec![1u8, 2], vec![3u8]), (u32::MAX, vec![0; 200], vec![9; 70_000]), (0, vec![], vec![])] {
            let mut fast = Vec::new();
            encode_state_entry(state, &key, &value, &mut fast);
            let mut serde = Vec::new();
            encode_into(
                &KeyedEntryRef::State {
                    state,
                    key: &key,
                    value: &value,
                },
                &mut serde,
            );
            assert_eq!(fast, serde, "the fast entry encoding is postcard's");
        }
        let mut k = Vec::new();
        store_key_header(3, 9, &mut k);
        k.push(42);
        assert_eq!(split_store_key(&k), Some((3, 9, &[42u8][..])));
    }
}
