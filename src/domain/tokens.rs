//! Who a token belongs to, remembered for a few seconds, so that most
//! requests make one round trip to the database (their own), not two.
//!
//! Staying correct when a token stops working:
//! - every deletion of a token, however it happens (logout, logout
//!   everywhere, a deleted device, an operator's `DELETE`), is announced by
//!   a trigger on [`CHANNEL`] with the token's hash, and every server's
//!   listener drops it ([`TokenCache::forget_hashes`]);
//! - the server that revokes drops the token itself before it answers, so
//!   the caller's next request there is refused whatever the notification's
//!   timing ([`TokenCache::forget_user`], [`TokenCache::forget_device`]);
//! - a lookup that raced with a revocation is not remembered: each
//!   forgetting moves a generation, and an entry read before it is
//!   discarded ([`TokenCache::insert`]);
//! - while the listener is not connected, notifications may be missed, so
//!   nothing is remembered or answered from memory until it is back
//!   ([`TokenCache::set_live`] empties the cache both ways);
//! - an entry lives at most `ttl`, shorter than a user token's refresh
//!   interval, so idle expiry and `last_used_at` keep their meaning.
//!
//! What is forgotten is also told to this server's open WebSockets
//! ([`TokenCache::revocations`]), which close when their own token is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use uuid::Uuid;

use super::Caller;

/// Where revoked tokens are announced (payload: the token hash in hex).
pub const CHANNEL: &str = "ferry_tokens";

/// At most this many tokens are remembered; past it, lookups go to the
/// database until entries expire.
const CAPACITY: usize = 100_000;

/// Revocations told to open sessions that have not read them yet; one
/// that falls further behind checks its token again.
const REVOCATIONS_QUEUE: usize = 256;

/// Tokens that stopped working, as open sessions hear of them.
#[derive(Debug, Clone)]
pub enum Revoked {
    Token(Vec<u8>),
    /// Every token of a user.
    User(Uuid),
    /// Every token of a device.
    Device(Uuid),
    /// Revocations may have been missed (the listener was down, or a
    /// notification was unreadable): every session checks its token again.
    Unsure,
}

impl Revoked {
    /// Whether `caller`'s token is certainly gone (`Unsure` is not certain).
    pub fn concerns(&self, caller: &Caller) -> bool {
        match self {
            Self::Token(hash) => *hash == caller.token_hash,
            Self::User(user_id) => *user_id == caller.user_id,
            Self::Device(device_id) => caller.device_id == Some(*device_id),
            Self::Unsure => false,
        }
    }
}

pub struct TokenCache {
    ttl: Duration,
    live: AtomicBool,
    generation: AtomicU64,
    entries: Mutex<HashMap<Vec<u8>, (Caller, Instant)>>,
    revoked: broadcast::Sender<Revoked>,
}

impl TokenCache {
    /// A cache whose entries live `ttl` (zero: nothing is remembered). It
    /// answers nothing until [`set_live`](Self::set_live) says revocations
    /// are heard.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            entries: Mutex::default(),
            revoked: broadcast::channel(REVOCATIONS_QUEUE).0,
        }
    }

    /// What is revoked from now on.
    pub fn revocations(&self) -> broadcast::Receiver<Revoked> {
        self.revoked.subscribe()
    }

    /// The caller behind `hash`, if remembered and fresh.
    pub fn get(&self, hash: &[u8]) -> Option<Caller> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().expect("token cache lock");
        entries.get(hash).filter(|(_, at)| at.elapsed() < self.ttl).map(|(caller, _)| caller.clone())
    }

    /// Read before looking a token up in the database; pass it to
    /// [`insert`](Self::insert).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Remembers `caller`, looked up when the generation was `generation`,
    /// unless something was forgotten since (the lookup may predate it).
    pub fn insert(&self, caller: &Caller, generation: u64) {
        if self.ttl.is_zero() || !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.lock().expect("token cache lock");
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(caller.token_hash.clone(), (caller.clone(), Instant::now()));
    }

    /// Forgets the tokens whose hashes are given.
    pub fn forget_hashes<'a>(&self, hashes: impl IntoIterator<Item = &'a [u8]>) {
        let hashes: Vec<&[u8]> = hashes.into_iter().collect();
        self.forget(|entries| {
            for hash in &hashes {
                entries.remove(*hash);
            }
        });
        for hash in hashes {
            self.tell(Revoked::Token(hash.to_vec()));
        }
    }

    /// Forgets every token of a user.
    pub fn forget_user(&self, user_id: Uuid) {
        self.forget(|entries| entries.retain(|_, (caller, _)| caller.user_id != user_id));
        self.tell(Revoked::User(user_id));
    }

    /// Forgets every token of a device.
    pub fn forget_device(&self, device_id: Uuid) {
        self.forget(|entries| entries.retain(|_, (caller, _)| caller.device_id != Some(device_id)));
        self.tell(Revoked::Device(device_id));
    }

    /// Whether revocations are heard now. Either way the cache starts empty:
    /// what was remembered before may have been revoked unheard; and when
    /// they are heard again, open sessions check their tokens.
    pub fn set_live(&self, live: bool) {
        self.forget(|entries| {
            entries.clear();
            self.live.store(live, Ordering::Release);
        });
        if live {
            self.tell(Revoked::Unsure);
        }
    }

    /// Tells open sessions (none listening is fine).
    fn tell(&self, revoked: Revoked) {
        let _ = self.revoked.send(revoked);
    }

    fn forget(&self, change: impl FnOnce(&mut HashMap<Vec<u8>, (Caller, Instant)>)) {
        let mut entries = self.entries.lock().expect("token cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        change(&mut entries);
    }

    /// Reads a notification's payload: a token hash in hex.
    pub fn forget_from_payload(&self, payload: &str) {
        match hex::decode(payload) {
            Ok(hash) => self.forget_hashes([hash.as_slice()]),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable token notification; forgetting every token");
                self.forget(|entries| entries.clear());
                self.tell(Revoked::Unsure);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(hash: u8, user: Uuid, device: Option<Uuid>) -> Caller {
        Caller { user_id: user, device_id: device, is_admin: false, token_hash: vec![hash; 32] }
    }

    fn live(ttl: Duration) -> TokenCache {
        let cache = TokenCache::new(ttl);
        cache.set_live(true);
        cache
    }

    #[test]
    fn nothing_is_answered_until_revocations_are_heard_nor_after_they_stop() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let ana = caller(1, Uuid::now_v7(), None);
        cache.insert(&ana, cache.generation());
        assert!(cache.get(&ana.token_hash).is_none(), "not live: nothing remembered");
        cache.set_live(true);
        cache.insert(&ana, cache.generation());
        assert_eq!(cache.get(&ana.token_hash).map(|c| c.user_id), Some(ana.user_id));
        cache.set_live(false);
        assert!(cache.get(&ana.token_hash).is_none());
        cache.set_live(true);
        assert!(cache.get(&ana.token_hash).is_none(), "emptied when the listener came back");
    }

    #[test]
    fn a_lookup_that_raced_with_a_revocation_is_not_remembered() {
        let cache = live(Duration::from_secs(60));
        let ana = caller(1, Uuid::now_v7(), None);
        let before = cache.generation();
        cache.forget_hashes([ana.token_hash.as_slice()]);
        cache.insert(&ana, before);
        assert!(cache.get(&ana.token_hash).is_none());
    }

    #[test]
    fn tokens_are_forgotten_by_hash_user_and_device() {
        let cache = live(Duration::from_secs(60));
        let (ana, bo, device) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let callers = [
            caller(1, ana, None),
            caller(2, ana, Some(device)),
            caller(3, bo, None),
            caller(4, bo, Some(Uuid::now_v7())),
        ];
        for c in &callers {
            cache.insert(c, cache.generation());
        }
        let held = |cache: &TokenCache| callers.iter().map(|c| cache.get(&c.token_hash).is_some()).collect::<Vec<_>>();
        assert_eq!(held(&cache), [true, true, true, true]);
        cache.forget_device(device);
        assert_eq!(held(&cache), [true, false, true, true]);
        cache.forget_from_payload(&hex::encode([4u8; 32]));
        assert_eq!(held(&cache), [true, false, true, false]);
        cache.forget_user(ana);
        assert_eq!(held(&cache), [false, false, true, false]);
    }

    #[test]
    fn open_sessions_are_told_what_was_revoked() {
        let cache = live(Duration::from_secs(60));
        let mut told = cache.revocations();
        let (ana, device) = (caller(1, Uuid::now_v7(), None), Uuid::now_v7());
        let on_device = caller(2, ana.user_id, Some(device));
        cache.forget_hashes([[9u8; 32].as_slice()]);
        cache.forget_device(device);
        cache.forget_user(ana.user_id);
        cache.set_live(true);
        let heard: Vec<Revoked> = std::iter::from_fn(|| told.try_recv().ok()).collect();
        let concerns = |who: &Caller| heard.iter().map(|r| r.concerns(who)).collect::<Vec<_>>();
        assert_eq!(concerns(&ana), [false, false, true, false]);
        assert_eq!(concerns(&on_device), [false, true, true, false]);
        assert!(matches!(heard[3], Revoked::Unsure), "{heard:?}");
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_remembers_nothing() {
        let cache = live(Duration::from_millis(30));
        let ana = caller(1, Uuid::now_v7(), None);
        cache.insert(&ana, cache.generation());
        assert!(cache.get(&ana.token_hash).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&ana.token_hash).is_none());
        let off = live(Duration::ZERO);
        off.insert(&ana, off.generation());
        assert!(off.get(&ana.token_hash).is_none());
    }
}
