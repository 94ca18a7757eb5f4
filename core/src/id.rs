//! 160-bit identifiers on the Chord ring and wrap-around interval arithmetic.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::{Digest, Sha1};

/// A point on the 2^160 identifier circle: a node's id is SHA-1 of its advertised
/// `host:port`, a key's id is SHA-1 of the key's UTF-8 bytes.
///
/// Stored as a high 32-bit part and the low 128 bits as two 64-bit words, most
/// significant first, so that the derived ordering is the numeric one. Not a `u128`: its
/// 16-byte alignment would make an id 32 bytes instead of 24, and every stored version
/// (`store::Version`) carries one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id {
    hi: u32,
    lo: [u64; 2],
}

/// Number of bits in an identifier, and so the number of finger table entries.
pub const ID_BITS: usize = 160;

impl Id {
    /// The identifier 0.
    pub const ZERO: Id = Id { hi: 0, lo: [0; 2] };
    /// The identifier 2^160 - 1.
    pub const MAX: Id = Id {
        hi: u32::MAX,
        lo: [u64::MAX; 2],
    };

    /// SHA-1 of arbitrary bytes.
    pub fn hash(bytes: &[u8]) -> Id {
        let digest = Sha1::digest(bytes);
        let mut raw = [0u8; 20];
        raw.copy_from_slice(&digest);
        Id::from_bytes(raw)
    }

    /// Identifier of a key: SHA-1 of its UTF-8 bytes.
    pub fn of_key(key: &str) -> Id {
        Id::hash(key.as_bytes())
    }

    /// Identifier of a node: SHA-1 of its advertised `host:port`.
    pub fn of_addr(addr: &str) -> Id {
        Id::hash(addr.as_bytes())
    }

    /// Big-endian bytes to an identifier.
    pub fn from_bytes(raw: [u8; 20]) -> Id {
        let mut hi = [0u8; 4];
        hi.copy_from_slice(&raw[..4]);
        let mut lo = [0u8; 16];
        lo.copy_from_slice(&raw[4..]);
        Id::from_parts(u32::from_be_bytes(hi), u128::from_be_bytes(lo))
    }

    /// Big-endian bytes of this identifier.
    pub fn to_bytes(self) -> [u8; 20] {
        let mut raw = [0u8; 20];
        raw[..4].copy_from_slice(&self.hi.to_be_bytes());
        raw[4..].copy_from_slice(&self.low().to_be_bytes());
        raw
    }

    /// `self + other` modulo 2^160.
    pub fn wrapping_add(self, other: Id) -> Id {
        let (lo, carry) = self.low().overflowing_add(other.low());
        let hi = self.hi.wrapping_add(other.hi).wrapping_add(carry as u32);
        Id::from_parts(hi, lo)
    }

    /// `self - other` modulo 2^160.
    pub fn wrapping_sub(self, other: Id) -> Id {
        let (lo, borrow) = self.low().overflowing_sub(other.low());
        let hi = self.hi.wrapping_sub(other.hi).wrapping_sub(borrow as u32);
        Id::from_parts(hi, lo)
    }

    /// 2^i for `i < 160` (the offset of finger `i`).
    pub fn pow2(i: usize) -> Id {
        assert!(i < ID_BITS, "finger index {i} out of range");
        if i < 128 {
            Id::from_parts(0, 1u128 << i)
        } else {
            Id::from_parts(1u32 << (i - 128), 0)
        }
    }

    /// Clockwise distance from `self` to `to`, modulo 2^160.
    pub fn distance_to(self, to: Id) -> Id {
        to.wrapping_sub(self)
    }

    /// The top 64 bits, for plots and quick comparisons.
    pub fn prefix_u64(self) -> u64 {
        ((self.hi as u64) << 32) | (self.lo[0] >> 32)
    }

    /// The id whose top 32 bits are `hi` and whose other bits are `low`.
    fn from_parts(hi: u32, low: u128) -> Id {
        Id {
            hi,
            lo: [(low >> 64) as u64, low as u64],
        }
    }

    /// The low 128 bits.
    fn low(self) -> u128 {
        ((self.lo[0] as u128) << 64) | self.lo[1] as u128
    }

    /// Parse 40 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Id> {
        if text.len() != 40 || !text.is_ascii() {
            return None;
        }
        let mut raw = [0u8; 20];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Id::from_bytes(raw))
    }

    /// Position of virtual node `index` of the process advertised at `addr` (`host:port`),
    /// when each process takes several positions on the ring.
    ///
    /// Index 0 is [`Id::of_addr`], so a process with a single position sits exactly where
    /// it always did; index `i ≥ 1` is SHA-1 of the UTF-8 bytes `"{addr}#{i}"`. Every
    /// process computes every other's positions from its address alone, so this
    /// definition is part of the protocol: changing it moves keys between nodes.
    pub fn of_vnode(addr: &str, index: u32) -> Id {
        if index == 0 {
            Id::of_addr(addr)
        } else {
            Id::hash(format!("{addr}#{index}").as_bytes())
        }
    }
}

/// `x ∈ (a, b]` on the circle. `(a, a]` is the whole circle, as in Chord.
pub fn in_open_closed(x: Id, a: Id, b: Id) -> bool {
    if a < b {
        a < x && x <= b
    } else {
        x > a || x <= b
    }
}

/// `x ∈ (a, b)` on the circle. `(a, a)` is the whole circle except `a`.
pub fn in_open(x: Id, a: Id, b: Id) -> bool {
    if a < b {
        a < x && x < b
    } else {
        (x > a || x < b) && !(a == b && x == a)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}{:032x}", self.hi, self.low())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight digits are enough to tell nodes apart in logs and test failures.
        write!(f, "Id({:08x}..)", self.hi)
    }
}

/// Human-readable formats (JSON: the HTTP API, histories, the debug endpoint) carry an id
/// as 40 hex digits; binary formats (the peer transport) as its 20 big-endian bytes.
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        // Either form is accepted whatever the format claims: serde's buffering of
        // internally tagged enums reports itself human-readable even when the bytes came
        // from a binary format.
        if d.is_human_readable() {
            d.deserialize_str(IdVisitor)
        } else {
            d.deserialize_bytes(IdVisitor)
        }
    }
}

struct IdVisitor;

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id: 40 hex digits or 20 bytes")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Id, E> {
        Id::from_hex(text).ok_or_else(|| E::custom("an id is 40 hex digits"))
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Id, E> {
        let raw: [u8; 20] = bytes
            .try_into()
            .map_err(|_| E::invalid_length(bytes.len(), &self))?;
        Ok(Id::from_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_id() -> impl Strategy<Value = Id> {
        any::<[u8; 20]>().prop_map(Id::from_bytes)
    }

    /// Reference semantics: the clockwise distance from `a`, with `(a, a]` the full circle.
    fn ref_open_closed(x: Id, a: Id, b: Id) -> bool {
        let dx = a.distance_to(x);
        let db = a.distance_to(b);
        dx != Id::ZERO && (db == Id::ZERO || dx <= db)
    }

    fn ref_open(x: Id, a: Id, b: Id) -> bool {
        let dx = a.distance_to(x);
        let db = a.distance_to(b);
        dx != Id::ZERO && (db == Id::ZERO || dx < db)
    }

    #[test]
    fn an_id_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<Id>(), 24);
    }

    proptest! {
        #[test]
        fn ids_order_as_their_big_endian_bytes(a in arb_id(), b in arb_id()) {
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            prop_assert_eq!(&a.prefix_u64().to_be_bytes()[..], &a.to_bytes()[..8]);
        }
    }

    #[test]
    fn sha1_of_known_strings() {
        assert_eq!(
            Id::of_key("abc").to_string(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            Id::of_key("").to_string(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn vnode_positions_are_the_contract() {
        let addr = "10.0.0.1:5000";
        assert_eq!(
            Id::of_vnode(addr, 0),
            Id::of_addr(addr),
            "index 0 is today's id"
        );
        // Pinned SHA-1 values: the protocol places virtual nodes by exactly these bytes.
        assert_eq!(
            Id::of_vnode(addr, 0).to_string(),
            "aa37f97cc67b1428703dd157b72809805a9cbcab"
        );
        assert_eq!(
            Id::of_vnode(addr, 1).to_string(),
            "b7a8b96115165c4ecdac0674f98782a006d6cca2"
        );
        assert_eq!(
            Id::of_vnode(addr, 19).to_string(),
            "a12809e7b3e32c94cc38140c88cd4fa98f040274"
        );
        assert_eq!(Id::of_vnode(addr, 7), Id::hash(b"10.0.0.1:5000#7"));
    }

    #[test]
    fn pow2_edges_and_wrap() {
        assert_eq!(Id::pow2(0).to_string(), format!("{:040x}", 1));
        assert_eq!(Id::pow2(159).to_bytes()[0], 0x80);
        assert_eq!(Id::MAX.wrapping_add(Id::pow2(0)), Id::ZERO);
        assert_eq!(Id::ZERO.wrapping_sub(Id::pow2(0)), Id::MAX);
        assert_eq!(Id::pow2(127).wrapping_add(Id::pow2(127)), Id::pow2(128));
    }

    #[test]
    fn intervals_on_small_examples() {
        let n = |v: u128| Id::from_parts(0, v);
        assert!(in_open_closed(n(5), n(3), n(5)));
        assert!(!in_open_closed(n(3), n(3), n(5)));
        assert!(in_open_closed(n(1), n(9), n(2)), "wraps past zero");
        assert!(in_open_closed(n(7), n(7), n(7)), "(a, a] is the circle");
        assert!(!in_open(n(7), n(7), n(7)));
        assert!(in_open(n(8), n(7), n(7)));
        assert!(!in_open(n(5), n(3), n(5)));
    }

    #[test]
    fn binary_ids_must_be_twenty_bytes() {
        let short = serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(&[1; 19]);
        assert!(Id::deserialize(short).is_err());
    }

    proptest! {
        #[test]
        fn open_closed_matches_distance_model(x in arb_id(), a in arb_id(), b in arb_id()) {
            prop_assert_eq!(in_open_closed(x, a, b), ref_open_closed(x, a, b));
            prop_assert_eq!(in_open(x, a, b), ref_open(x, a, b));
        }

        #[test]
        fn endpoints(a in arb_id(), b in arb_id()) {
            prop_assert!(in_open_closed(b, a, b));
            prop_assert!(!in_open(b, a, b));
            prop_assert!(!in_open(a, a, b));
            prop_assert_eq!(in_open_closed(a, a, b), a == b);
        }

        #[test]
        fn interval_splits_circle(x in arb_id(), a in arb_id(), b in arb_id()) {
            // For a != b, (a, b] and (b, a] partition the circle.
            prop_assume!(a != b);
            prop_assert!(in_open_closed(x, a, b) ^ in_open_closed(x, b, a));
        }

        #[test]
        fn add_sub_inverse(x in arb_id(), y in arb_id()) {
            prop_assert_eq!(x.wrapping_add(y).wrapping_sub(y), x);
            prop_assert_eq!(x.wrapping_add(x.distance_to(y)), y);
        }

        #[test]
        fn bytes_and_hex_round_trip(x in arb_id()) {
            prop_assert_eq!(Id::from_bytes(x.to_bytes()), x);
            prop_assert_eq!(Id::from_hex(&x.to_string()), Some(x));
            let json = serde_json::to_string(&x).unwrap();
            prop_assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), x);
            // The binary form: 20 raw bytes.
            let raw = x.to_bytes();
            let bytes = serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(&raw);
            prop_assert_eq!(Id::deserialize(bytes).unwrap(), x);
        }
    }
}
