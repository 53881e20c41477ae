//! Passwords: Argon2 on a few threads of its own, and a throttle on failed
//! logins.
//!
//! Argon2 is made to be expensive: each hash takes 19 MiB and tens of
//! milliseconds. Run on tokio's blocking pool, hundreds of concurrent logins
//! ran on hundreds of threads, each with a glibc arena that kept its 19 MiB
//! after it was freed (4 GB for 500 wrong logins, never returned). Here a
//! fixed set of threads (one per core by default) does all of it, so memory
//! is bounded by their number; the rest wait in a bounded queue, and a
//! request that finds the queue full is told to come back (503 `busy`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{DomainError, Rejection};
use crate::protocol::validate::Password;
use crate::store::StoreError;

type Job = Box<dyn FnOnce() + Send>;

/// Seconds a client is asked to wait when every hashing thread is taken.
const BUSY_RETRY_AFTER: u64 = 1;

/// The threads that hash and verify passwords. They end when this is dropped.
pub struct PasswordWork {
    jobs: SyncSender<Job>,
}

impl PasswordWork {
    /// `workers` threads (at least one), and at most `queue` jobs waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(queue);
        let inbox = Arc::new(Mutex::new(inbox));
        for n in 0..workers.max(1) {
            let inbox = inbox.clone();
            let spawned = std::thread::Builder::new().name(format!("ferry-argon2-{n}")).spawn(move || loop {
                // The lock is held only while waiting for the next job.
                let job = match inbox.lock() {
                    Ok(inbox) => inbox.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return, // every sender is gone
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self { jobs }
    }

    /// `workers` threads, one per core when `None`, and at most `queue`
    /// jobs waiting.
    pub fn per_core(workers: Option<usize>, queue: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(workers.unwrap_or(cores), queue)
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DomainError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(DomainError::rejected(
                    Rejection::Unavailable,
                    "busy",
                    "the server is checking too many passwords right now; try again in a moment",
                )
                .retry_after(BUSY_RETRY_AFTER))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Invalid("the password hashing threads are gone".into()).into())
            }
        }
        answer.await.map_err(|_| StoreError::Invalid("a password hashing job was dropped".into()).into())
    }

    /// The Argon2id hash (PHC string) of a new password.
    pub async fn hash(&self, password: Password) -> Result<String, DomainError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default().hash_password(password.expose().as_bytes(), &salt).map(|h| h.to_string())
        })
        .await?
        .map_err(|e| StoreError::Invalid(format!("password hashing failed: {e}")).into())
    }

    /// Checks a password against a stored hash, or against a dummy hash
    /// when there is none (no such user), so both take the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, DomainError> {
        static DUMMY: LazyLock<String> = LazyLock::new(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default().hash_password(b"not a real password", &salt).expect("hashing works").to_string()
        });
        self.run(move || {
            let exists = stored.is_some();
            let stored = stored.unwrap_or_else(|| DUMMY.clone());
            let Ok(parsed) = PasswordHash::new(&stored) else { return false };
            Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && exists
        })
        .await
    }
}

/// Failed logins, per account and per client address, in this server's
/// memory. After `free` failures each further one locks the key for twice
/// as long as the last (1 s, 2 s, 4 s, ... at most 15 minutes); while a key
/// is locked, logins for it answer 429 without checking the password. A
/// key is forgotten 15 minutes after its last failure, and an account's on
/// a correct password.
pub struct LoginThrottle {
    free_per_account: u32,
    free_per_address: u32,
    failures: Mutex<HashMap<Key, Failures>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    /// An IPv4 address, or the /64 of an IPv6 one (what one host holds).
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

const FIRST_LOCK: Duration = Duration::from_secs(1);
const LONGEST_LOCK: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Keys kept at most, so that failures cannot grow memory without bound.
const MOST_KEYS: usize = 100_000;

impl Failures {
    /// Until when this key is locked, having `free` failures for free.
    fn locked_until(&self, free: u32) -> Option<Instant> {
        let over = self.count.checked_sub(free)?;
        let lock = FIRST_LOCK.saturating_mul(2u32.saturating_pow(over.min(20))).min(LONGEST_LOCK);
        Some(self.last + lock)
    }
}

impl LoginThrottle {
    pub fn new(free_per_account: u32, free_per_address: u32) -> Self {
        Self { free_per_account, free_per_address, failures: Mutex::new(HashMap::new()) }
    }

    fn keys(&self, email: &str, address: Option<IpAddr>) -> Vec<(Key, u32)> {
        let mut keys = vec![(Key::Account(email.trim().to_lowercase()), self.free_per_account)];
        if let Some(address) = address {
            let address = match address {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
                },
                v4 => v4,
            };
            keys.push((Key::Address(address), self.free_per_address));
        }
        keys
    }

    /// 429 `too_many_attempts` (with how long to wait) while the account or
    /// the address is locked.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), DomainError> {
        let now = Instant::now();
        let failures = self.failures.lock().expect("throttle lock");
        let wait = self
            .keys(email, address)
            .iter()
            .filter_map(|(key, free)| failures.get(key)?.locked_until(*free))
            .filter_map(|until| until.checked_duration_since(now))
            .max();
        match wait {
            Some(wait) => Err(DomainError::rejected(
                Rejection::TooManyAttempts,
                "too_many_attempts",
                "too many failed logins; wait before trying again",
            )
            .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)),
            None => Ok(()),
        }
    }

    pub fn failed(&self, email: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() >= MOST_KEYS {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        for (key, _) in self.keys(email, address) {
            if failures.len() >= MOST_KEYS && !failures.contains_key(&key) {
                continue; // full of recent failures: keep what is known
            }
            let entry = failures.entry(key).or_insert(Failures { count: 0, last: now });
            if now.duration_since(entry.last) >= FORGET_AFTER {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    pub fn succeeded(&self, email: &str) {
        self.failures.lock().expect("throttle lock").remove(&Key::Account(email.trim().to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_after_the_free_failures_and_a_success_forgets_the_account() {
        let throttle = LoginThrottle::new(2, 100);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..2 {
            assert!(throttle.check("Ana@example.org", Some(ip)).is_ok());
            throttle.failed("ana@example.org ", Some(ip));
        }
        let wait = |e: DomainError| match e {
            DomainError::Rejected { code: "too_many_attempts", retry_after: Some(s), .. } => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(throttle.check("ana@example.org", None).unwrap_err()), 1);
        throttle.failed("ana@example.org", Some(ip));
        assert_eq!(wait(throttle.check("ana@example.org", None).unwrap_err()), 2, "the lock doubles");
        assert!(throttle.check("bob@example.org", Some(ip)).is_ok(), "another account, same address");
        throttle.succeeded("ANA@example.org");
        assert!(throttle.check("ana@example.org", Some(ip)).is_ok());
    }

    #[test]
    fn an_address_is_throttled_across_accounts_and_ipv6_by_its_64() {
        let throttle = LoginThrottle::new(100, 3);
        for n in 0..3 {
            throttle.failed(&format!("user{n}@example.org"), Some("2001:db8::1".parse().unwrap()));
        }
        assert!(throttle.check("new@example.org", Some("2001:db8::ffff".parse().unwrap())).is_err());
        assert!(throttle.check("new@example.org", Some("2001:db8:0:1::1".parse().unwrap())).is_ok());
        assert!(throttle.check("new@example.org", None).is_ok());
    }

    #[test]
    fn the_longest_lock_is_bounded() {
        let f = Failures { count: u32::MAX, last: Instant::now() };
        assert!(f.locked_until(0).unwrap() <= Instant::now() + LONGEST_LOCK);
    }
}
