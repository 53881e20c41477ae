//! A chunk's bytes as they came off the network: the pieces of a response
//! body, kept as they are rather than copied into one buffer. The pull
//! copies each byte once, into the part file's stage; collecting a body
//! whole first was a second copy of every byte fetched (`perf` of a relayed
//! 1 GiB pull, `cargo bench --bench pull`: `memmove` was a fifth of the
//! pull's samples, the two copies about equal).

use bytes::{Bytes, BytesMut};

use crate::protocol::files::Blake3Hash;

/// Pieces of one chunk, in order.
#[derive(Debug, Default)]
pub struct Pieces {
    whole: Vec<Bytes>,
    /// Small pieces copied together, until they make one of [`JOINED`].
    small: BytesMut,
}

/// Pieces shorter than this are copied together: BLAKE3 hashes many 1 KiB
/// blocks of a contiguous input at once (SIMD lanes), which a body's
/// few-KiB pieces would leave mostly idle.
const JOINED: usize = 64 * 1024;

impl Pieces {
    /// Adds the next piece.
    pub fn push(&mut self, piece: Bytes) {
        if piece.len() >= JOINED {
            self.flush_small();
            self.whole.push(piece);
            return;
        }
        if self.small.capacity() == 0 {
            self.small.reserve(2 * JOINED);
        }
        self.small.extend_from_slice(&piece);
        if self.small.len() >= JOINED {
            self.flush_small();
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.whole.push(self.small.split().freeze());
        }
    }

    /// The pieces' bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.whole.iter().map(|piece| &piece[..]).chain([&self.small[..]]).filter(|piece| !piece.is_empty())
    }

    /// The BLAKE3 of all the bytes.
    pub fn hash(&self) -> Blake3Hash {
        let mut hasher = blake3::Hasher::new();
        for piece in self.iter() {
            hasher.update(piece);
        }
        Blake3Hash::from(hasher.finalize())
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Self {
        Self { whole: vec![bytes], small: BytesMut::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_hash_as_the_whole_and_small_ones_are_copied_together() {
        let whole: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut pieces = Pieces::default();
        for (from, to) in [
            (0, 10),
            (10, 5000),
            (5000, 40_000),
            (40_000, 70_000),
            (70_000, 270_000),
            (270_000, 270_001),
            (270_001, 300_000),
        ] {
            pieces.push(Bytes::copy_from_slice(&whole[from..to]));
        }
        assert_eq!(pieces.hash(), Blake3Hash::of(&whole));
        assert_eq!(pieces.iter().flatten().copied().collect::<Vec<u8>>(), whole);
        let sizes: Vec<usize> = pieces.iter().map(<[u8]>::len).collect();
        assert_eq!(sizes, [70_000, 200_000, 30_000], "pieces under 64 KiB copied together, larger ones kept");
        assert_eq!(Pieces::default().iter().count(), 0, "no pieces, not one empty piece");
        assert_eq!(Pieces::default().hash(), Blake3Hash::of(b""));
    }
}
