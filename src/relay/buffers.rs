//! Buffers for chunks being received, used again rather than allocated for
//! each. A chunk's buffer is large (about 1 MiB, up to 16 MiB): the
//! allocator maps each one afresh and unmaps it when freed, so every page
//! of every relayed chunk was faulted in, zeroed and unmapped again. Free
//! buffers are kept up to a fixed total, so memory stays bounded.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Free buffers, kept up to `limit` bytes of capacity in all.
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    limit: usize,
}

impl BufferPool {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { free: Mutex::new(Vec::new()), limit })
    }

    /// An empty buffer with room for at least `capacity` bytes: the
    /// smallest free one that fits, else the largest grown, else a new one.
    pub fn take(self: &Arc<Self>, capacity: usize) -> Buffer {
        let found = {
            let mut free = self.free.lock().expect("buffer pool lock");
            let fits =
                free.iter().enumerate().filter(|(_, b)| b.capacity() >= capacity).min_by_key(|(_, b)| b.capacity());
            let index = fits.or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity())).map(|(i, _)| i);
            index.map(|i| free.swap_remove(i))
        };
        let mut buf = found.unwrap_or_default();
        buf.reserve(capacity);
        Buffer { buf, pool: self.clone() }
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
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
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Fills the buffer with `len` bytes of `file` from `offset` on.
    pub fn fill_from(&mut self, file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        // Read into the spare capacity rather than over zeros written
        // first (as much work again as the read).
        self.buf.clear();
        self.buf.reserve(len);
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.take(len as u64).read_to_end(&mut self.buf)?;
        if self.buf.len() != len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Shared, read-only bytes over the buffer, without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
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
    fn a_used_buffer_is_filled_with_exactly_the_range_read() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("ferry-buffers-{}", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(&(0..=255u8).cycle().take(10_000).collect::<Vec<_>>()).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let pool = BufferPool::new(1 << 20);
        let mut long = pool.take(8_000);
        long.fill_from(&file, 0, 8_000).unwrap();
        drop(long);
        // The same buffer again, for less and from elsewhere: nothing of the
        // earlier read is left in it.
        let mut short = pool.take(100);
        short.fill_from(&file, 300, 100).unwrap();
        assert_eq!(short.as_ref(), (300..400).map(|i| (i % 256) as u8).collect::<Vec<_>>());
        // Past the end of the file: an error, not zeros.
        let mut past = pool.take(100);
        let err = past.fill_from(&file, 9_950, 100).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(&path).unwrap();
    }
}
