//! A vector in fixed-size chunks: it grows without moving what it holds.
//!
//! A store's slots run to hundreds of thousands per node. One `Vec` would double by
//! reallocating: a copy of everything, the old block and the new one alive at once, and
//! the old one left behind as a hole in the allocator's heap. Chunks of [`CHUNK_LEN`] are
//! allocated once and never move.

/// Slots per chunk.
pub(crate) const CHUNK_LEN: usize = 1024;

/// Values numbered from 0 in the order they were pushed.
#[derive(Clone, Debug)]
pub(crate) struct Slots<T> {
    /// Full chunks, then the last one; each allocated with room for `CHUNK_LEN`.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Add `value`; returns its number.
    pub(crate) fn push(&mut self, value: T) -> usize {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK_LEN => last.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        self.len - 1
    }

    /// Value number `at`. Panics when there is none: numbers come from [`Slots::push`].
    pub(crate) fn get(&self, at: usize) -> &T {
        &self.chunks[at / CHUNK_LEN][at % CHUNK_LEN]
    }

    /// Value number `at`, to change.
    pub(crate) fn get_mut(&mut self, at: usize) -> &mut T {
        &mut self.chunks[at / CHUNK_LEN][at % CHUNK_LEN]
    }

    /// Keep the values whose `kept` flag is set, in their order (a kept value's new
    /// number is the count of kept values before it). Chunks are freed as they are
    /// emptied, so at most one more chunk is alive than the result needs.
    pub(crate) fn retain(&mut self, kept: &[bool]) {
        let old = std::mem::take(self);
        let mut flags = kept.iter();
        for chunk in old.chunks {
            for value in chunk {
                if flags.next().copied().unwrap_or(false) {
                    self.push(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_survive_growth_and_retain_renumbers_in_order() {
        let mut s = Slots::default();
        for i in 0..(3 * CHUNK_LEN + 5) {
            assert_eq!(s.push(i), i);
        }
        assert_eq!(
            (*s.get(CHUNK_LEN), *s.get(3 * CHUNK_LEN + 4)),
            (CHUNK_LEN, 3 * CHUNK_LEN + 4)
        );
        *s.get_mut(7) = 70;
        let kept: Vec<bool> = (0..s.len()).map(|i| i % 3 == 1).collect();
        s.retain(&kept);
        assert_eq!(s.len(), kept.iter().filter(|&&k| k).count());
        assert_eq!((*s.get(0), *s.get(1), *s.get(2)), (1, 4, 70));
        s.retain(&[]);
        assert_eq!(s.len(), 0);
    }
}
