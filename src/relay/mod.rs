//! The relay's chunk store: content-addressed chunk bytes, per project,
//! through `object_store` (a local folder by default, S3-compatible storage
//! when several servers share it). Uploads are verified as they come and
//! stored in one write only when they hash to the chunk's name, so a crash
//! or a cut-off upload leaves nothing behind.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use uuid::Uuid;

use crate::domain::relay::Stored;
use crate::protocol::files::Blake3Hash;

pub mod arrivals;
pub mod buffers;
mod folder;
pub use arrivals::ChunkArrivals;

/// Largest chunk accepted (after decompression).
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("relay store setting {0:?}: use a folder path, file:///path, or s3://bucket/prefix")]
    BadSpec(String),
    #[error("the chunk is larger than 16 MiB")]
    TooLarge,
    #[error("the bytes hash to {actual}, not to the chunk's name")]
    HashMismatch { actual: String },
    #[error("the body is not a valid zstd stream: {0}")]
    BadEncoding(String),
    #[error("reading the request body failed: {0}")]
    Body(String),
}

/// Capacity of free receive buffers kept for the next uploads.
const KEPT_BUFFERS: usize = 16 * 1024 * 1024;

/// Where chunk bytes live.
#[derive(Clone)]
pub struct ChunkStore {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is a local folder: written and read
    /// directly, past the page cache, into buffers used again
    /// (object_store reads each into a new one).
    local: Option<Arc<folder::Folder>>,
    prefix: Path,
    buffers: Arc<buffers::BufferPool>,
}

fn local_error(e: std::io::Error) -> RelayError {
    RelayError::Store(object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })
}

/// File work of a local store, on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, RelayError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| local_error(std::io::Error::other(e)))?.map_err(local_error)
}

/// Largest piece of a chunk handed to the HTTP layer at a time: it copies
/// each piece into its write buffer, which stays this small (and is used
/// again) rather than growing to a whole chunk for each.
const PIECE_BYTES: usize = 256 * 1024;

/// The next piece of `rest` to send (taken off it), none once it is empty.
pub fn next_piece(rest: &mut Bytes) -> Option<Bytes> {
    (!rest.is_empty()).then(|| rest.split_to(rest.len().min(PIECE_BYTES)))
}

/// Bytes as a body sent in pieces (see [`next_piece`]).
pub fn pieces(mut bytes: Bytes) -> impl Stream<Item = Result<Bytes, object_store::Error>> {
    futures_util::stream::iter(std::iter::from_fn(move || next_piece(&mut bytes).map(Ok)))
}

/// A chunk received and verified, not yet stored.
pub struct Received {
    /// The chunk's plain bytes.
    pub bytes: Bytes,
    /// Its zstd variant, when smaller.
    variant: Option<Vec<u8>>,
}

impl ChunkStore {
    /// `spec`: a folder (or `file:///folder`), or `s3://bucket/prefix` with
    /// the usual AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` for S3-compatible servers).
    pub fn open(spec: &str) -> Result<Self, RelayError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(RelayError::BadSpec(spec.to_owned()));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
            }
            return Ok(Self::new(Arc::new(builder.build()?), None, Path::from(prefix)));
        }
        let folder = spec.strip_prefix("file://").unwrap_or(spec);
        if folder.is_empty() || spec.contains("://") && !spec.starts_with("file://") {
            return Err(RelayError::BadSpec(spec.to_owned()));
        }
        std::fs::create_dir_all(folder).map_err(local_error)?;
        let files = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(FsPath::new(folder))?);
        let local = folder::Folder::open(FsPath::new(folder), files.clone()).map_err(local_error)?;
        Ok(Self::new(files, Some(Arc::new(local)), Path::from("")))
    }

    fn new(store: Arc<dyn ObjectStore>, local: Option<Arc<folder::Folder>>, prefix: Path) -> Self {
        Self { store, local, prefix, buffers: buffers::BufferPool::new(KEPT_BUFFERS) }
    }

    /// An object of a local store (a range of it), read into a pooled
    /// buffer; None when there is no such object.
    async fn read_local(
        &self,
        local: &folder::Folder,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<Option<Bytes>, RelayError> {
        let path = local.path(key)?;
        let buffers = self.buffers.clone();
        blocking(move || folder::read(&path, range, &buffers)).await
    }

    /// Writes an object of a local store whole.
    async fn write_local(&self, local: &Arc<folder::Folder>, key: &Path, bytes: Bytes) -> Result<(), RelayError> {
        let (path, local) = (local.path(key)?, local.clone());
        blocking(move || local.write(&path, &bytes).map(drop)).await
    }

    fn key(&self, project_id: Uuid, hash: &str, zstd: bool) -> Path {
        let name = if zstd { format!("{hash}.zst") } else { hash.to_owned() };
        self.prefix.child("chunks").child(project_id.to_string()).child(name)
    }

    /// Takes a body in, decompressing it when `zstd_encoded` and bounding
    /// it as it comes, then hashes it; answers it only when it hashes to `hash`
    /// (with its zstd variant when smaller), for [`Self::keep`] to store
    /// in one write (a chunk is at most 16 MiB): a body cut off or wrong
    /// stores nothing.
    pub async fn receive<S, E>(
        &self,
        hash: &str,
        zstd_encoded: bool,
        size_hint: Option<u64>,
        mut body: S,
    ) -> Result<Received, RelayError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut inflater = if zstd_encoded {
            Some(Inflater::new().map_err(|e| RelayError::BadEncoding(e.to_string()))?)
        } else {
            None
        };
        // Sized once from the declared length (bounded), not grown by doubling:
        // each regrowth is a copy and fresh pages to fault in.
        let mut raw = self.buffers.take(size_hint.unwrap_or(0).min(MAX_CHUNK_BYTES) as usize);
        // The body as it came, when that is zstd: the variant to keep.
        let mut packed = Vec::new();
        let mut take = |plain: &[u8]| {
            if (raw.len() + plain.len()) as u64 > MAX_CHUNK_BYTES {
                return Err(RelayError::TooLarge);
            }
            raw.extend_from_slice(plain);
            Ok(())
        };
        let mut read = 0u64;
        let taken = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| RelayError::Body(e.to_string()))?;
                read += piece.len() as u64;
                match inflater.as_mut() {
                    Some(inflater) => {
                        take(&inflater.inflate(&piece)?)?;
                        packed.extend_from_slice(&piece);
                    }
                    None => take(&piece)?,
                }
            }
            match inflater.as_mut() {
                Some(inflater) => take(&inflater.inflate(&[])?),
                None => Ok(()),
            }
        }
        .await;
        if let Err(RelayError::TooLarge) = taken {
            // Read the rest of a body of a sensible size, so the client gets
            // the 413 rather than a connection reset while still sending.
            while read <= MAX_CHUNK_BYTES {
                match body.next().await {
                    Some(Ok(piece)) => read += piece.len() as u64,
                    _ => break,
                }
            }
        }
        taken?;

        // Hashed whole, once it is all in: BLAKE3 hashes many 1 KiB blocks
        // at once (SIMD lanes), which the body's small pieces, a few KiB
        // each, left mostly idle.
        let actual = Blake3Hash::of(raw.as_ref());
        if actual != *hash {
            return Err(RelayError::HashMismatch { actual: actual.as_str().to_owned() });
        }
        let bytes = raw.freeze();
        let variant = if zstd_encoded { Some(packed) } else { zstd_variant(&bytes) };
        Ok(Received { variant: variant.filter(|zst| zst.len() < bytes.len()), bytes })
    }

    /// Stores a chunk received as `project/hash`, with its variant.
    pub async fn keep(&self, project_id: Uuid, hash: &str, received: Received) -> Result<Stored, RelayError> {
        let stored = Stored {
            size: received.bytes.len() as i64,
            zstd_size: received.variant.as_ref().map(|zst| zst.len() as i64),
        };
        // The variant first: the plain object is what makes the chunk exist.
        let objects = received.variant.map(|zst| (true, Bytes::from(zst))).into_iter().chain([(false, received.bytes)]);
        for (zstd, bytes) in objects {
            let key = self.key(project_id, hash, zstd);
            match &self.local {
                Some(local) => self.write_local(local, &key, bytes).await?,
                None => {
                    self.store.put(&key, bytes.into()).await?;
                }
            }
        }
        Ok(stored)
    }

    /// A chunk's bytes (a range of them), or its zstd variant. Read whole
    /// (chunks are at most 16 MiB): a local file streamed by object_store
    /// comes in 8 KiB reads, each a blocking task of its own.
    pub async fn read(
        &self,
        project_id: Uuid,
        hash: &str,
        zstd: bool,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, RelayError> {
        let key = self.key(project_id, hash, zstd);
        if let Some(local) = &self.local {
            return self.read_local(local, &key, range).await?.ok_or_else(|| {
                local_error(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no chunk {key}")))
            });
        }
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        Ok(self.store.get_opts(&key, options).await?.bytes().await?)
    }

    /// A chunk's plain bytes, whole, hashed against its name on a blocking
    /// thread (off the caller's); None when the store does not hold it,
    /// [`RelayError::HashMismatch`] when they are damaged.
    pub async fn get_verified(&self, project_id: Uuid, hash: &str) -> Result<Option<Bytes>, RelayError> {
        let key = self.key(project_id, hash, false);
        let bytes = match &self.local {
            Some(local) => match self.read_local(local, &key, None).await? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
            None => match self.store.get(&key).await {
                Ok(found) => found.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || {
            let actual = Blake3Hash::of(&bytes);
            if actual != *hash {
                return Err(RelayError::HashMismatch { actual: actual.as_str().to_owned() });
            }
            Ok(Some(bytes))
        })
        .await
        .map_err(|e| local_error(std::io::Error::other(e)))?
    }

    /// Deletes a chunk and its variant.
    pub async fn delete(&self, project_id: Uuid, hash: &str) {
        for zstd in [false, true] {
            match self.store.delete(&self.key(project_id, hash, zstd)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(%project_id, hash, error = %e, "could not delete a chunk"),
            }
        }
    }
}

/// Plain bytes compressed before judging whether a body compresses: small,
/// since on incompressible chunks (most large files) this is CPU spent for
/// nothing on the relay's upload path.
const PROBE_BYTES: usize = 64 * 1024;

/// zstd level of the probe: the fastest, since it only decides.
const PROBE_LEVEL: i32 = 1;
/// zstd level of a variant kept.
const VARIANT_LEVEL: i32 = 3;

/// The zstd variant of a plain chunk, when its start compresses by at least
/// 3% (media and archives do not: then only that start was tried, at the
/// fastest level). The compressor is kept per thread: a new one for each
/// chunk costs as much as the probe.
fn zstd_variant(plain: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        if compressor.is_none() {
            *compressor = zstd::bulk::Compressor::new(PROBE_LEVEL).ok();
        }
        let compressor = compressor.as_mut()?;
        compressor.set_compression_level(PROBE_LEVEL).ok()?;
        let probe = &plain[..plain.len().min(PROBE_BYTES)];
        if compressor.compress(probe).ok()?.len() * 100 > probe.len() * 97 {
            return None;
        }
        compressor.set_compression_level(VARIANT_LEVEL).ok()?;
        compressor.compress(plain).ok()
    })
}

/// A zstd decoder that never produces more than a chunk's worth of bytes,
/// whatever a frame claims: it decodes in steps into a small buffer and
/// stops at 16 MiB + 1 byte, so a tiny body that would expand to gigabytes
/// costs at most that. Its window is bounded to 16 MiB for the same reason.
struct Inflater {
    decoder: zstd::stream::raw::Decoder<'static>,
    scratch: Vec<u8>,
    produced: u64,
}

impl Inflater {
    const STEP: usize = 128 * 1024;

    fn new() -> std::io::Result<Self> {
        let mut decoder = zstd::stream::raw::Decoder::new()?;
        decoder.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(24))?;
        Ok(Self { decoder, scratch: vec![0; Self::STEP], produced: 0 })
    }

    /// Decodes `input` (empty: whatever is still buffered); answers the
    /// plain bytes, or `TooLarge` as soon as they pass the limit.
    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, RelayError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let bad = |e: std::io::Error| RelayError::BadEncoding(e.to_string());
        let mut input = InBuffer::around(input);
        let mut plain = Vec::new();
        loop {
            let before = input.pos();
            let mut output = OutBuffer::around(&mut self.scratch[..]);
            self.decoder.run(&mut input, &mut output).map_err(bad)?;
            let written = output.pos();
            self.produced += written as u64;
            if self.produced > MAX_CHUNK_BYTES {
                return Err(RelayError::TooLarge);
            }
            plain.extend_from_slice(&self.scratch[..written]);
            // Done once the input is used up and the decoder had no more to
            // give than fitted (or made no progress at all).
            let drained = written < Self::STEP;
            if (input.pos() == input.src.len() && drained) || (written == 0 && input.pos() == before) {
                return Ok(plain);
            }
        }
    }
}

/// A range that starts past the end of the object (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A `Range` header against an object of `size` bytes: `Ok(None)` to send
/// it whole (no header, or one we do not serve, such as several ranges),
/// `Ok(Some(range))` for one satisfiable range.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else { return Ok(None) };
    let (start, end) = (start.trim(), end.trim());
    // Digits only (`u64::from_str` would take a `+`); a last position past
    // the end, however large, means the end (RFC 9110 §14.1.2).
    let number = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok());
    let range = match (number(start), number(end)) {
        (Some(Some(s)), Some(e)) if e.map_or(true, |e| s <= e) => s..e.map_or(size, |e| e.saturating_add(1).min(size)),
        (Some(Some(s)), None) if end.is_empty() => s..size,
        // A start too large to read is past any end.
        (Some(None), Some(_) | None) => return Err(Unsatisfiable),
        (None, Some(n)) if start.is_empty() => match n.map_or(size, |n| n.min(size)) {
            0 => return Err(Unsatisfiable),
            n => size - n..size,
        },
        _ => return Ok(None),
    };
    if range.start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=50-"), 100), Ok(Some(50..100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-18446744073709551615"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=0-99999999999999999999999"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=18446744073709551615-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=99999999999999999999999-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=-18446744073709551615"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=-99999999999999999999999"), 100), Ok(Some(0..100)));
        assert_eq!(parse_range(Some("bytes=-0"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=+1-2"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=-"), 100), Ok(None));
    }

    proptest::proptest! {
        /// Whatever the header, the answer is a range inside the object, the
        /// whole object, or 416: never a panic.
        #[test]
        fn any_range_header_is_answered(header in "bytes=[0-9+-]{0,30}(,[0-9-]{0,5})?", size in 0u64..1000) {
            if let Ok(Some(r)) = parse_range(Some(&header), size) {
                proptest::prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to a few KiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let mut inflater = Inflater::new().unwrap();
        let mut total = 0usize;
        let outcome = bomb.chunks(8 * 1024).try_for_each(|piece| {
            total += inflater.inflate(piece)?.len();
            Ok(())
        });
        assert!(matches!(outcome, Err(RelayError::TooLarge)), "{outcome:?}");
        assert!(total as u64 <= MAX_CHUNK_BYTES, "never more than the limit was produced");

        // A body right at the limit still decodes, whole.
        let fits = zstd::bulk::compress(&vec![7u8; MAX_CHUNK_BYTES as usize], 3).unwrap();
        let mut inflater = Inflater::new().unwrap();
        let mut plain = inflater.inflate(&fits).unwrap();
        plain.extend(inflater.inflate(&[]).unwrap());
        assert_eq!(plain.len() as u64, MAX_CHUNK_BYTES);
    }

    #[test]
    fn only_bodies_that_compress_get_a_zstd_variant() {
        let text = b"the same sentence, again and again. ".repeat(30_000);
        let packed = zstd_variant(&text).expect("text compresses");
        assert!(packed.len() < text.len() / 10);
        assert_eq!(zstd::decode_all(&packed[..]).unwrap(), text);

        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..1_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(zstd_variant(&noise).is_none(), "noise is not worth a variant");
        // Text after a start of noise: only the start is judged.
        let mixed = [&noise[..PROBE_BYTES], &text[..]].concat();
        assert!(zstd_variant(&mixed).is_none(), "compressing stopped after the probe");
    }
}
