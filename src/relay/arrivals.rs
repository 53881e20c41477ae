//! Readers waiting for relay chunks, woken when a chunk lands: directly by
//! the upload handler of this server, and through the database (a NOTIFY
//! on `ferry_chunks` committed with the chunk's row) for uploads taken by
//! another server. Never by polling: the timer in [`Waiter::wait`] is a
//! safety net for a lost notification, not the mechanism.
//!
//! A chunk uploaded to this server is handed to its waiters with the wake:
//! its bytes, already verified, so a reader streaming them on needs no
//! read back from the store and no second hash. They are held only while
//! someone waits for that chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// Longest a waiter sleeps without looking again, in case a notification
/// was lost. A listener that reconnects wakes everyone anyway.
pub const SAFETY_NET: Duration = Duration::from_secs(5);

type Key = (Uuid, String);

/// Waiters by (project, chunk hash).
#[derive(Default)]
pub struct ChunkArrivals {
    /// The bytes handed over by an upload here, once one landed.
    waiting: Mutex<HashMap<Key, watch::Sender<Option<Bytes>>>>,
}

impl ChunkArrivals {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers interest in a chunk. Register *before* looking for the
    /// chunk: an arrival between the look and the wait is then not lost.
    pub fn register(self: &Arc<Self>, project_id: Uuid, hash: &str) -> Waiter {
        let key = (project_id, hash.to_owned());
        let mut waiting = self.waiting.lock().expect("arrivals lock");
        let receiver = waiting.entry(key.clone()).or_insert_with(|| watch::channel(None).0).subscribe();
        Waiter { arrivals: self.clone(), key, receiver: Some(receiver) }
    }

    /// A chunk landed (heard of through the database): wakes its waiters
    /// on this server, to look in the store. Bytes already handed over stay.
    fn wake(&self, project_id: Uuid, hash: &str) {
        if let Some(sender) = self.waiting.lock().expect("arrivals lock").get(&(project_id, hash.to_owned())) {
            sender.send_modify(|_| {});
        }
    }

    /// A chunk was uploaded to this server: wakes its waiters here and
    /// hands them `bytes`, which must be the chunk's, verified.
    fn landed(&self, project_id: Uuid, hash: &str, bytes: Bytes) {
        if let Some(sender) = self.waiting.lock().expect("arrivals lock").get(&(project_id, hash.to_owned())) {
            sender.send_replace(Some(bytes));
        }
    }

    /// [`Self::landed`], and the bytes stay there for readers who come for
    /// them until the returned guard is dropped (once the chunk is
    /// recorded, and found in the store).
    pub fn land(self: &Arc<Self>, project_id: Uuid, hash: &str, bytes: Bytes) -> Landing {
        let held = self.register(project_id, hash);
        self.landed(project_id, hash, bytes);
        Landing { _held: held }
    }

    /// Wakes every waiter (after the listener reconnected: notifications
    /// may have been missed), each to look again.
    pub fn wake_all(&self) {
        for sender in self.waiting.lock().expect("arrivals lock").values() {
            sender.send_modify(|_| {});
        }
    }

    /// A notification's payload, `<project_id>:<hash>`.
    pub fn wake_from_payload(&self, payload: &str) {
        match payload.split_once(':').and_then(|(p, h)| Some((p.parse::<Uuid>().ok()?, h))) {
            Some((project_id, hash)) => self.wake(project_id, hash),
            None => tracing::warn!(payload, "unreadable chunk notification"),
        }
    }

    /// Chunks with someone waiting (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiting.lock().expect("arrivals lock").len()
    }
}

/// A chunk's bytes held for readers who come for them: see
/// [`ChunkArrivals::land`].
pub struct Landing {
    _held: Waiter,
}

/// Interest in one chunk; dropping it unregisters.
pub struct Waiter {
    arrivals: Arc<ChunkArrivals>,
    key: Key,
    receiver: Option<watch::Receiver<Option<Bytes>>>,
}

impl Waiter {
    /// The chunk's verified bytes, when an upload to this server handed
    /// them over.
    pub fn handed(&self) -> Option<Bytes> {
        self.receiver.as_ref()?.borrow().clone()
    }

    /// Waits until the chunk may have landed (woken), or the safety net or
    /// `deadline` passed. Answers false only when the deadline passed
    /// without a wake-up.
    pub async fn wait(&mut self, deadline: Instant) -> bool {
        let Some(receiver) = self.receiver.as_mut() else { return false };
        let until = deadline.min(Instant::now() + SAFETY_NET);
        match tokio::time::timeout_at(until, receiver.changed()).await {
            Ok(_) => true,
            // The safety net: look again unless the deadline is reached.
            Err(_) => Instant::now() < deadline,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiting = self.arrivals.waiting.lock().expect("arrivals lock");
        drop(self.receiver.take());
        if waiting.get(&self.key).is_some_and(|s| s.receiver_count() == 0) {
            waiting.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_arrival_between_the_look_and_the_wait_is_not_lost() {
        let arrivals = ChunkArrivals::new();
        let project = Uuid::new_v4();
        let mut waiter = arrivals.register(project, "abc");
        // The chunk lands after registering, before waiting.
        arrivals.wake(project, "abc");
        let deadline = Instant::now() + Duration::from_secs(60);
        assert!(tokio::time::timeout(Duration::from_secs(1), waiter.wait(deadline)).await.unwrap());
        drop(waiter);
        assert_eq!(arrivals.waiting(), 0, "a dropped waiter unregisters");
    }

    #[tokio::test]
    async fn waiters_are_woken_by_payload_and_only_for_their_chunk() {
        let arrivals = ChunkArrivals::new();
        let project = Uuid::new_v4();
        let mut a = arrivals.register(project, "aaa");
        let mut b = arrivals.register(project, "bbb");
        arrivals.wake_from_payload(&format!("{project}:aaa"));
        arrivals.wake_from_payload("nonsense");
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(a.wait(Instant::now() + Duration::from_secs(60)).await);
        assert!(!b.wait(soon).await, "b's chunk did not land");
        arrivals.wake_all();
        assert!(b.wait(Instant::now() + Duration::from_secs(60)).await);
        assert!(a.handed().is_none() && b.handed().is_none(), "a wake hands nothing over");
    }

    #[tokio::test]
    async fn an_upload_here_hands_its_bytes_to_the_waiters_and_a_later_wake_keeps_them() {
        let arrivals = ChunkArrivals::new();
        let project = Uuid::new_v4();
        let mut first = arrivals.register(project, "aaa");
        let second = arrivals.register(project, "aaa");
        let other = arrivals.register(project, "bbb");
        arrivals.landed(project, "aaa", Bytes::from_static(b"chunk"));
        assert!(first.wait(Instant::now() + Duration::from_secs(60)).await);
        // The same arrival heard again through the database.
        arrivals.wake_from_payload(&format!("{project}:aaa"));
        arrivals.wake_all();
        assert_eq!(first.handed().as_deref(), Some(&b"chunk"[..]));
        assert_eq!(second.handed().as_deref(), Some(&b"chunk"[..]), "every waiter gets them");
        assert!(other.handed().is_none());
        drop((first, second, other));
        assert_eq!(arrivals.waiting(), 0, "the bytes are let go with the last waiter");
        // Nobody waiting: nothing is kept.
        arrivals.landed(project, "ccc", Bytes::from_static(b"late"));
        assert!(arrivals.register(project, "ccc").handed().is_none());
    }

    #[test]
    fn a_landing_hands_its_bytes_to_readers_who_come_until_it_is_dropped() {
        let arrivals = ChunkArrivals::new();
        let project = Uuid::new_v4();
        let landing = arrivals.land(project, "aaa", Bytes::from_static(b"chunk"));
        let early = arrivals.register(project, "aaa");
        assert_eq!(early.handed().as_deref(), Some(&b"chunk"[..]), "a reader who comes while it lands");
        drop(early);
        assert_eq!(arrivals.waiting(), 1, "held while the landing lasts");
        drop(landing);
        assert_eq!(arrivals.waiting(), 0, "let go once recorded");
        assert!(arrivals.register(project, "aaa").handed().is_none(), "later readers look in the store");
    }
}
