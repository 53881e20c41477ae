//! Fetching one chunk, verified: directly from the owner's machine while
//! that works, else from the relay, waiting there for the source.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::super::direct::Peer;
use super::super::pieces::Pieces;
use super::super::ClientError;
use super::tracked::Ended;
use super::{lock, Ctx};
use crate::protocol::membership::ProjectDevice;

/// A chunk whose bytes do not hash to its name is fetched again this often.
const BAD_CHUNK_TRIES: u32 = 3;

/// Why fetching stopped short.
pub(super) enum Stop {
    /// The transfer failed: worth a retry through the API.
    Failed(String),
    /// The owner's machine stopped answering directly or (`unverified`)
    /// sent a chunk that does not hash to its name: the relay's turn.
    Fallback { why: String, unverified: bool },
    /// Not worth retrying.
    Fatal(String),
}

impl From<Ended> for Stop {
    fn from(ended: Ended) -> Self {
        match ended {
            Ended::Failed(why) => Stop::Failed(why),
            Ended::Over(why) => Stop::Fatal(why),
        }
    }
}

/// Where a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Direct,
    Relay,
}

/// Whether `bytes` hash to `hash`, worked out on a blocking thread (the
/// network tasks keep running).
async fn verified(pieces: Pieces, hash: &str) -> Option<Pieces> {
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || (pieces.hash() == *hash).then_some(pieces)).await.ok().flatten()
}

/// One chunk, verified: directly from the owner's machine while that works
/// (its first failure, or a chunk that does not verify, ends the attempt:
/// [`Stop::Fallback`]), else from the relay — waiting there, when `wait`,
/// for the source to put it there: the server holds the request until it
/// lands (`?wait=`), so nothing is asked again and again.
pub(super) async fn fetch_chunk(
    ctx: &Ctx,
    transfer: Uuid,
    peer: Option<&Arc<Peer>>,
    hash: &str,
    wait: bool,
) -> Result<(Pieces, Via), Stop> {
    let deadline = Instant::now() + if wait { ctx.wait } else { Duration::ZERO };
    let mut bad = 0;
    let mut delay = Duration::from_millis(20);
    loop {
        let asked = Instant::now();
        let fetched = match peer {
            Some(peer) => {
                // A task of its own: the chunks under way are read and
                // decrypted on every core, not all on the pull's task (and
                // the fetch ends with this future when the pull gives it up).
                let (peer, wanted) = (Arc::clone(peer), hash.to_owned());
                match AbortOnDropHandle::new(tokio::spawn(async move { peer.fetch(&wanted).await })).await {
                    Ok(Ok(bytes)) => Some((Pieces::from(bytes), Via::Direct)),
                    Ok(Err(why)) => return Err(Stop::Fallback { why, unverified: false }),
                    Err(e) => return Err(Stop::Fallback { why: e.to_string(), unverified: false }),
                }
            }
            None => {
                let request = ctx.api.get_chunk(ctx.project, hash, Some(transfer), wait.then(|| relay_wait(deadline)));
                let got = if wait { watching(ctx, transfer, request).await? } else { request.await };
                match got {
                    Ok(bytes) => bytes.map(|b| (b, Via::Relay)),
                    Err(e @ ClientError::Api { status: 401 | 403, .. }) => return Err(Stop::Fatal(e.to_string())),
                    // A network hiccup: wait and try again, within the deadline.
                    Err(_) => None,
                }
            }
        };
        if let Some((bytes, via)) = fetched {
            if let Some(bytes) = verified(bytes, hash).await {
                return Ok((bytes, via));
            }
            if via == Via::Direct {
                // The agent sends what its file holds now, unhashed: that
                // file changed since its scan. The relay hashes every
                // upload, and fails the transfer as changed at the source.
                let why = format!("chunk {hash} from the owner's machine did not verify");
                return Err(Stop::Fallback { why, unverified: true });
            }
            bad += 1;
            if bad >= BAD_CHUNK_TRIES {
                return Err(Stop::Failed(format!("chunk {hash} failed verification {bad} times")));
            }
            continue;
        }
        if !wait {
            return Err(Stop::Failed(format!("chunk {hash} is neither here nor on the relay")));
        }
        if let Some(ended) = ctx.tracked.ended(transfer) {
            return Err(ended.into());
        }
        if Instant::now() >= deadline {
            if let Some(offline) = lock(&ctx.offline).clone() {
                return Err(Stop::Fatal(format!(
                    "waited {}s (--wait) for {offline}; the same command resumes once it is back",
                    ctx.wait.as_secs()
                )));
            }
            return Err(Stop::Fatal(format!(
                "the source did not provide chunk {hash} within {:?} (is the owner's `ferry share` running?)",
                ctx.wait
            )));
        }
        // The server waited for the chunk to land (`?wait=`): ask again at
        // once. A miss that came back fast (a network error, an older
        // server without `wait`) backs off instead of spinning.
        if asked.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

/// `request` (a relay download held until its chunk lands), cut short when
/// the attempt of `transfer` ends (the source failed it, the owner cancelled
/// it: nothing more comes), saying meanwhile whether the owner's computer
/// is online, as the project's stream tells.
async fn watching<T>(ctx: &Ctx, transfer: Uuid, request: impl Future<Output = T>) -> Result<T, Stop> {
    tokio::pin!(request);
    loop {
        // Made before the look, so what is told in between still wakes it.
        let told = ctx.tracked.told();
        if let Some(ended) = ctx.tracked.ended(transfer) {
            return Err(ended.into());
        }
        if let Some(source) = ctx.tracked.source(transfer) {
            say_whether_offline(ctx, &source);
        }
        tokio::select! {
            got = &mut request => return Ok(got),
            () = told => {}
        }
    }
}

/// Says once that the owner's computer is offline, and since when, and
/// again once it is back; a wait then says what it waited for.
fn say_whether_offline(ctx: &Ctx, device: &ProjectDevice) {
    let said = lock(&ctx.offline).is_some();
    if device.online {
        if said {
            *lock(&ctx.offline) = None;
            ctx.bar.suspend(|| ctx.out.note(&format!("{} is back online", device.name)));
        }
        return;
    }
    if said {
        return;
    }
    let since = device
        .last_seen_at
        .map(|t| format!(", offline since {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_else(|| ", offline".into());
    let what = format!("the owner's computer “{}”{since}", device.name);
    ctx.bar.suspend(|| ctx.out.note(&format!("waiting for {what} (up to {}s, --wait)", ctx.wait.as_secs())));
    *lock(&ctx.offline) = Some(what);
}

/// Longest the server holds one relay download for its chunk to land.
const RELAY_WAIT: Duration = Duration::from_secs(60);

/// The server-side wait for the next relay request: the rest of the pull's
/// own deadline, in whole seconds, within what the server allows.
fn relay_wait(deadline: Instant) -> Duration {
    RELAY_WAIT.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_secs(1))
}
