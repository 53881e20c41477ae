//! Buffers for chunks being received, used again rather than allocated for
//! each. A chunk's buffer is large (about 1 MiB, up to 16 MiB): the
//! allocator maps each one afresh and unmaps it when freed, so every page
//! of every relayed chunk was faulted in, zeroed and unmapped again. Free
//! buffers are kept up to a fixed total, so memory stays bounded.
//!
//! A buffer's bytes start on a [`BLOCK`] boundary, so the folder store
//! writes and reads them past the page cache (`O_DIRECT`, see
//! [`super::folder`]) without copying them into an aligned buffer first.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The alignment `O_DIRECT` asks of a buffer's address, a file offset and a
/// length.
pub const BLOCK: usize = 4096;

/// Free buffers, kept up to `limit` bytes of capacity in all.
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    limit: usize,
}

impl BufferPool {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { free: Mutex::new(Vec::new()), limit })
    }

    /// An empty buffer with room for at least `capacity` bytes from a
    /// [`BLOCK`] boundary on: the smallest free one that fits, else the
    /// largest grown, else a new one.
    pub fn take(self: &Arc<Self>, capacity: usize) -> Buffer {
        let needed = capacity + BLOCK;
        let found = {
            let mut free = self.free.lock().expect("buffer pool lock");
            let fits =
                free.iter().enumerate().filter(|(_, b)| b.capacity() >= needed).min_by_key(|(_, b)| b.capacity());
            let index = fits.or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity())).map(|(i, _)| i);
            index.map(|i| free.swap_remove(i))
        };
        let mut buf = found.unwrap_or_default();
        if buf.capacity() < needed {
            // Growing moves it: its old bytes are not worth copying.
            buf.clear();
        }
        buf.reserve(needed.saturating_sub(buf.len()));
        // The bytes before the boundary are padding, never handed out.
        let start = buf.as_ptr().align_offset(BLOCK);
        if buf.len() < start {
            buf.resize(start, 0);
        }
        Buffer { buf, start, end: start, pool: self.clone() }
    }

    /// Takes `buf` back, its bytes as they are: they are initialised, so
    /// the next user reads into them without zeroing them first.
    fn give_back(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().expect("buffer pool lock");
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= self.limit {
            free.push(buf);
        }
    }

    /// Capacity kept in free buffers (for tests).
    pub fn kept(&self) -> usize {
        self.free.lock().expect("buffer pool lock").iter().map(Vec::capacity).sum()
    }
}

/// A buffer taken from the pool; it goes back when dropped, or when the
/// last clone of the [`Bytes`] made of it is.
pub struct Buffer {
    /// Its memory: `buf.len()` bytes are initialised (by this use or an
    /// earlier one), at least up to `end`.
    buf: Vec<u8>,
    /// Where its bytes start in `buf`: a [`BLOCK`] boundary, unless the
    /// buffer had to grow past what it was taken for.
    start: usize,
    /// Where its bytes end in `buf`.
    end: usize,
    pool: Arc<BufferPool>,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.end + bytes.len();
        if end <= self.buf.len() {
            self.buf[self.end..end].copy_from_slice(bytes);
        } else {
            self.buf.truncate(self.end);
            self.buf.extend_from_slice(bytes);
        }
        self.end = end;
    }

    /// Makes the buffer `len` bytes long, to be read into. They are not
    /// cleared: they may hold an earlier chunk's bytes (zeroing each read
    /// buffer was 4% of a relaying server's time), so the caller keeps
    /// only what it read.
    pub fn to_read_into(&mut self, len: usize) -> &mut [u8] {
        let end = self.start + len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.end = end;
        &mut self.buf[self.start..end]
    }

    /// Shared, read-only bytes over the buffer, without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

/// Whether `bytes` start on a [`BLOCK`] boundary.
pub fn aligned(bytes: &[u8]) -> bool {
    bytes.as_ptr().align_offset(BLOCK) == 0
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_used_again_within_the_limit() {
        let pool = BufferPool::new(3 << 20);
        let mut a = pool.take(1 << 20);
        a.extend_from_slice(b"first");
        let first = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let shared = bytes.clone();
        drop(bytes);
        assert_eq!(pool.kept(), 0, "in use while any clone lives");
        drop(shared);
        assert!(pool.kept() >= 1 << 20);

        let b = pool.take(1000);
        assert_eq!(b.as_ref().as_ptr(), first, "the free buffer is used again");
        assert!(b.is_empty(), "and handed out empty");
        // Three buffers of 2 MiB: only one fits under the 3 MiB limit.
        let more: Vec<Buffer> = (0..3).map(|_| pool.take(2 << 20)).collect();
        drop((b, more));
        assert!(pool.kept() <= 3 << 20, "kept {} bytes", pool.kept());
    }

    #[test]
    fn buffers_start_on_a_block_boundary_and_come_back_empty() {
        let pool = BufferPool::new(8 << 20);
        for (round, capacity) in [1 << 20, 0, 1, 5000, 1 << 20].into_iter().enumerate() {
            let mut buf = pool.take(capacity);
            assert!(buf.is_empty());
            // Over what an earlier round left: only these bytes show.
            let fill = vec![round as u8 + 1; capacity];
            buf.extend_from_slice(&fill[..capacity / 2]);
            buf.extend_from_slice(&fill[capacity / 2..]);
            assert!(aligned(buf.as_ref()), "{capacity} bytes start on a block boundary");
            assert_eq!(buf.as_ref(), fill);
        }
    }

    #[test]
    fn a_buffer_read_into_is_not_cleared_first() {
        let pool = BufferPool::new(8 << 20);
        let mut buf = pool.take(1 << 20);
        buf.extend_from_slice(&[9; 1 << 20]);
        drop(buf);
        let mut buf = pool.take(1 << 20);
        let into = buf.to_read_into(100);
        assert_eq!(into, [9; 100], "what an earlier use left, not zeroed again");
        into[..4].copy_from_slice(b"read");
        assert_eq!(buf.len(), 100);
        assert_eq!(&buf.as_ref()[..4], b"read");
        let longer = buf.to_read_into(3 << 20);
        assert_eq!(longer.len(), 3 << 20, "grown past what it held");
        assert_eq!(&longer[..4], b"read");
    }
}
