//! A stored key: short keys inline, longer ones in one heap allocation.
//!
//! A store holds millions of keys, most of them short (song titles, `key-N`); a `String`
//! costs 24 bytes plus a heap block of at least 32 bytes each. [`Key`] is 24 bytes and
//! keeps keys of up to [`INLINE_BYTES_MAX`] bytes inside itself.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

/// Longest key kept inline.
pub(crate) const INLINE_BYTES_MAX: usize = 22;

/// A key's UTF-8 bytes, inline when short. Ordered as its bytes (which is `str` order),
/// and looked up in maps by `&[u8]`.
#[derive(Clone)]
pub(crate) enum Key {
    /// `bytes[..len]`.
    Inline {
        len: u8,
        bytes: [u8; INLINE_BYTES_MAX],
    },
    /// A longer key.
    Heap(Box<str>),
}

impl Key {
    /// The key `text`.
    pub(crate) fn new(text: &str) -> Key {
        let src = text.as_bytes();
        if src.len() > INLINE_BYTES_MAX {
            return Key::Heap(text.into());
        }
        let mut bytes = [0u8; INLINE_BYTES_MAX];
        bytes[..src.len()].copy_from_slice(src);
        Key::Inline {
            len: src.len() as u8,
            bytes,
        }
    }

    /// The key's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(text) => text.as_bytes(),
        }
    }

    /// The key as text. Inline bytes were copied whole from a `&str` of at most
    /// [`INLINE_BYTES_MAX`] bytes, so they are valid UTF-8; the check costs a few
    /// nanoseconds, and is why no `unsafe` is needed.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Key::Heap(text) => text,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// Consistent with `Ord`: both compare the bytes.
impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_as_small_as_a_string_header() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }

    #[test]
    fn keys_round_trip_and_order_as_str() {
        let texts = [
            "",
            "a",
            "key-123456",
            "Like a Rolling Stone",
            "exactly twenty-two by",
            "twenty-three bytes long",
            "é à ü — a longer key that lives on the heap",
        ];
        let mut keys: Vec<Key> = texts.iter().map(|t| Key::new(t)).collect();
        for (key, text) in keys.iter().zip(texts) {
            assert_eq!(key.as_str(), text);
        }
        keys.sort();
        let mut sorted = texts.to_vec();
        sorted.sort();
        let back: Vec<&str> = keys.iter().map(Key::as_str).collect();
        assert_eq!(back, sorted);
    }
}
