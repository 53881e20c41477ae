//! Assembling a file: one pass over its positions in order, each chunk
//! taken from the part, copied from DIR or fetched, and written in order by
//! a writer that hashes the whole file.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use uuid::Uuid;

use super::super::direct::Peer;
use super::super::output::Output;
use super::super::part::{Part, Pos, Writer};
use super::super::pieces::Pieces;
use super::fetch::{fetch_chunk, Stop, Via};
use super::local::read_local;
use super::Ctx;
use crate::protocol::files::RemoteFile;

/// Chunks of one file in flight at once (fetched, or read from a local
/// copy), ahead of the one being written: enough to keep the network busy,
/// few enough that memory stays flat (at most this many chunks of ≤ 4 MiB).
const CHUNKS_AT_ONCE: usize = 8;
/// Verified chunks queued for the writer.
const WRITE_QUEUE: usize = 4;

/// A `--json` progress line of one file.
#[derive(Serialize)]
#[serde(tag = "event", rename = "progress")]
struct Progress<'a> {
    file_path: &'a str,
    bytes: u64,
    total_bytes: u64,
}

/// Least time between two `--json` progress lines of a file.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What to do for one position of the file, in order.
enum Step {
    /// Already in the part at this offset (resumed) or at another (the same
    /// bytes earlier in the file).
    InPart(Pos, u64),
    /// Copied from a file DIR holds, at (path, offset).
    Local(Pos, PathBuf, u64),
    Fetch(Pos),
}

/// A step done, for the writer.
enum Item {
    Arrived(Pos, Pieces, Option<Via>),
    InPart(Pos, u64),
    /// Arrived after an earlier position could not be fetched: kept in the
    /// part for the next pass.
    Kept(Pos, Pieces, Option<Via>),
}

/// What one attempt's writer did.
#[derive(Default)]
pub(super) struct Written {
    /// Positions newly written (now in the part).
    pub(super) positions: Vec<Pos>,
    pub(super) transferred: u64,
    pub(super) direct: u64,
}

/// One pass over the file's positions in order: what is in the part stays,
/// what DIR holds is copied, the rest is fetched (several at once) and
/// written as it verifies, in order, by a writer on a blocking thread. The
/// whole file's BLAKE3 when every byte is in.
#[allow(clippy::too_many_arguments)]
pub(super) async fn attempt(
    ctx: &Ctx,
    file: &RemoteFile,
    part: &Arc<Part>,
    positions: &[Pos],
    done: &HashMap<u64, Pos>,
    needed: &HashSet<String>,
    transfer: Uuid,
    peer: Option<Arc<Peer>>,
    size: u64,
) -> (Written, Result<String, Stop>) {
    // Where each chunk's bytes will already be in the part when the writer
    // reaches a later position holding the same chunk.
    let mut placed: HashMap<&str, u64> = done.values().map(|p| (p.hash.as_str(), p.offset)).collect();
    let mut steps = Vec::with_capacity(positions.len());
    for p in positions {
        let step = if done.contains_key(&p.offset) {
            Step::InPart(p.clone(), p.offset)
        } else if let Some(from) = placed.get(p.hash.as_str()) {
            Step::InPart(p.clone(), *from)
        } else if needed.contains(&p.hash) {
            Step::Fetch(p.clone())
        } else if let Some((path, offset, _)) = ctx.local.get(&p.hash) {
            Step::Local(p.clone(), path.clone(), *offset)
        } else {
            // The server thinks it is here and it is not: fetch it anyway.
            Step::Fetch(p.clone())
        };
        placed.entry(p.hash.as_str()).or_insert(p.offset);
        steps.push(step);
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Item>(WRITE_QUEUE);
    let writer = {
        let (part, bar, path) = (part.clone(), ctx.bar.clone(), file.path.clone());
        let events = ctx.progress.then_some(ctx.out);
        tokio::task::spawn_blocking(move || write_part(&part, size, rx, &bar, events, &path))
    };

    let mut stop = None;
    {
        let peer = peer.as_ref();
        let mut items = futures_util::stream::iter(steps)
            .map(|step| async move {
                Ok::<_, Stop>(match step {
                    Step::InPart(pos, from) => Item::InPart(pos, from),
                    Step::Local(pos, path, offset) => match read_local(&path, offset, &pos).await {
                        Some(bytes) => Item::Arrived(pos, bytes.into(), None),
                        // Changed since it was scanned: the relay may still have it.
                        None => {
                            let (bytes, via) = fetch_chunk(ctx, transfer, peer, &pos.hash, false).await?;
                            Item::Arrived(pos, bytes, Some(via))
                        }
                    },
                    Step::Fetch(pos) => {
                        let (bytes, via) = fetch_chunk(ctx, transfer, peer, &pos.hash, true).await?;
                        Item::Arrived(pos, bytes, Some(via))
                    }
                })
            })
            .buffered(CHUNKS_AT_ONCE);
        while let Some(item) = items.next().await {
            let item = match (item, &stop) {
                (Ok(item), None) => item,
                // The owner's machine failed one chunk directly: the chunks
                // already under way may still arrive, and are kept (the
                // relay is then asked for only the rest). What was in the
                // part already stays there for the next pass.
                (Ok(Item::Arrived(pos, bytes, via)), Some(_)) => Item::Kept(pos, bytes, via),
                (Ok(_), Some(_)) => continue,
                (Err(fallback @ Stop::Fallback { unverified, .. }), _) => {
                    // A chunk that did not verify decides how the relay is asked.
                    if stop.is_none() || unverified {
                        stop = Some(fallback);
                    }
                    continue;
                }
                (Err(s), _) => {
                    stop = Some(s);
                    break;
                }
            };
            // The writer stopped (it says why below).
            if tx.send(item).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let (written, result) = match writer.await {
        Ok(v) => v,
        Err(e) => (Written::default(), Err(std::io::Error::other(e.to_string()))),
    };
    let outcome = match (stop, result) {
        (_, Err(e)) => Err(Stop::Fatal(format!("{}: {e}", part.path.display()))),
        (Some(s), _) => Err(s),
        (None, Ok(Some(hash))) => Ok(hash),
        (None, Ok(None)) => Err(Stop::Fatal("the file's chunks ended short of its size".into())),
    };
    (written, outcome)
}

/// The writer: takes the items in order, writes and records them, hashes
/// the whole file; fsyncs once when every byte is in.
fn write_part(
    part: &Part,
    size: u64,
    mut rx: tokio::sync::mpsc::Receiver<Item>,
    bar: &ProgressBar,
    events: Option<Output>,
    path: &str,
) -> (Written, std::io::Result<Option<String>>) {
    let mut written = Written::default();
    let mut w = match Writer::open(part, size) {
        Ok(w) => w,
        Err(e) => return (written, Err(e)),
    };
    let mut bytes_in = 0u64;
    // The first chunk is reported at once: progress shows from the start.
    let mut reported = None::<std::time::Instant>;
    let mut reported_bytes = 0;
    while let Some(item) = rx.blocking_recv() {
        let kept = matches!(item, Item::Kept(..));
        let (pos, r) = match item {
            Item::Arrived(pos, bytes, via) | Item::Kept(pos, bytes, via) => {
                let r = if kept { w.keep(&pos, bytes.iter()) } else { w.put(&pos, bytes.iter()) };
                if r.is_ok() {
                    if let Some(via) = via {
                        written.transferred += pos.size;
                        if via == Via::Direct {
                            written.direct += pos.size;
                        }
                    }
                    written.positions.push(pos.clone());
                }
                (pos, r)
            }
            Item::InPart(pos, from) => {
                let r = w.copy_from_part(&pos, from);
                if r.is_ok() && from != pos.offset {
                    written.positions.push(pos.clone());
                }
                (pos, r)
            }
        };
        if let Err(e) = r {
            return (written, Err(e));
        }
        bytes_in += pos.size;
        bar.inc(pos.size);
        if let Some(out) = events.filter(|_| reported.map_or(true, |at| at.elapsed() >= PROGRESS_EVERY)) {
            reported = Some(std::time::Instant::now());
            reported_bytes = bytes_in;
            out.event(Progress { file_path: path, bytes: bytes_in, total_bytes: size }, String::new);
        }
    }
    if !w.complete() {
        return (written, Ok(None));
    }
    if let Some(out) = events.filter(|_| reported_bytes != size) {
        out.event(Progress { file_path: path, bytes: size, total_bytes: size }, String::new);
    }
    let hash = w.finish().map(Some);
    (written, hash)
}
