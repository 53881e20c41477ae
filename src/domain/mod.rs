//! Commands and queries. A command runs in one transaction: lock the
//! project's head, check against the read models, decide events, append.
//! Nothing here knows HTTP.

pub mod accounts;
pub mod events;
pub mod files;
pub mod folders;
pub mod membership;
pub mod passwords;
pub mod presence;
pub mod projects;
pub mod relay;
mod secrets;
pub mod tokens;
pub mod transfers;

use futures_util::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::protocol::validate::ValidationError;
use crate::protocol::Actor;
use crate::store::{self, idempotency, EventMeta, Pool, StoreError};

/// The kind of a refusal; the HTTP edge maps each to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Bad credentials or token.
    Unauthorized,
    /// Known and visible, but not allowed for this caller.
    Forbidden,
    /// Unknown, or not visible to this caller.
    NotFound,
    /// Conflicts with the current state.
    Conflict,
    /// Expired, revoked or used up.
    Gone,
    /// Well-formed but invalid.
    Invalid,
    /// Too large.
    TooLarge,
    /// Too many failed attempts: wait before the next.
    TooManyAttempts,
    /// A needed party is missing (e.g. no source device).
    Unavailable,
    /// A storage quota is used up.
    InsufficientStorage,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{message}")]
    Rejected {
        kind: Rejection,
        code: &'static str,
        message: String,
        /// Seconds after which trying again may succeed (`Retry-After`).
        retry_after: Option<u64>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DomainError {
    pub fn rejected(kind: Rejection, code: &'static str, message: impl Into<String>) -> Self {
        DomainError::Rejected { kind, code, message: message.into(), retry_after: None }
    }

    /// A refusal worth trying again after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let DomainError::Rejected { retry_after, .. } = &mut self {
            *retry_after = Some(seconds);
        }
        self
    }

    /// 404 for anything the caller may not know exists.
    pub fn not_found(what: &str) -> Self {
        Self::rejected(Rejection::NotFound, "not_found", format!("{what} not found"))
    }

    pub fn owner_only() -> Self {
        Self::rejected(Rejection::Forbidden, "owner_only", "only the project's owner may do this")
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::rejected(Rejection::Conflict, code, message)
    }
}

impl From<ValidationError> for DomainError {
    fn from(e: ValidationError) -> Self {
        DomainError::rejected(Rejection::Invalid, e.code, e.message)
    }
}

impl From<tokio_postgres::Error> for DomainError {
    fn from(e: tokio_postgres::Error) -> Self {
        DomainError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for DomainError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DomainError::Store(e.into())
    }
}

/// Who is calling: an authenticated user, through a device when a device
/// token was presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub device_id: Option<Uuid>,
    pub is_admin: bool,
    /// The hash of the presented token, so logout can revoke exactly it.
    pub(crate) token_hash: Vec<u8>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor { user_id: Some(self.user_id), device_id: self.device_id }
    }
}

/// An `Idempotency-Key` with the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// What a command knows besides its input: who calls, and the metadata
/// its events carry.
#[derive(Debug)]
pub struct Command {
    pub caller: Caller,
    pub meta: EventMeta,
}

/// How a repeat of an applied idempotency key is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// With the first response.
    Response,
    /// With 409: the first response held a secret shown once, not kept.
    Refuse,
}

/// Runs a command in one transaction, honouring its idempotency key: a
/// repeat of an applied key returns the first response and runs nothing.
pub async fn execute<T, F>(
    pool: &Pool,
    caller: Caller,
    idempotency_key: Option<&IdempotencyKey>,
    command: F,
) -> Result<T, DomainError>
where
    T: Serialize + DeserializeOwned,
    F: for<'t> FnOnce(&'t store::Client, &'t Command) -> BoxFuture<'t, Result<T, DomainError>>,
{
    run(pool, caller, idempotency_key, Replay::Response, command).await
}

/// [`execute`] for commands whose answer holds a secret shown once (a
/// token): secrets are never stored in the clear, so the answer is not kept
/// and a repeat of the key is refused with 409 `already_applied`, still
/// running nothing.
pub async fn execute_secret<T, F>(
    pool: &Pool,
    caller: Caller,
    idempotency_key: Option<&IdempotencyKey>,
    command: F,
) -> Result<T, DomainError>
where
    T: Serialize + DeserializeOwned,
    F: for<'t> FnOnce(&'t store::Client, &'t Command) -> BoxFuture<'t, Result<T, DomainError>>,
{
    run(pool, caller, idempotency_key, Replay::Refuse, command).await
}

/// [`execute`] for a command that is one statement (an append with its
/// check, `store::events::append_checked`). Without an idempotency key it
/// runs as a transaction of its own, with no BEGIN and COMMIT around it, and
/// its notification goes out in the same round trip
/// (`store::on_its_own`). With a key, it runs in one transaction with the
/// key's claim and save, as [`execute`] does.
pub async fn execute_statement<T, F>(
    pool: &Pool,
    caller: Caller,
    idempotency_key: Option<&IdempotencyKey>,
    command: F,
) -> Result<T, DomainError>
where
    T: Serialize + DeserializeOwned,
    F: for<'t> FnOnce(&'t store::Client, &'t Command) -> BoxFuture<'t, Result<T, DomainError>>,
{
    if idempotency_key.is_some() {
        return execute(pool, caller, idempotency_key, command).await;
    }
    let client = pool.get().await?;
    let ctx = Command { meta: EventMeta { actor: caller.actor(), idempotency_key: None }, caller };
    store::on_its_own(&client, command(&client, &ctx)).await
}

async fn run<T, F>(
    pool: &Pool,
    caller: Caller,
    idempotency_key: Option<&IdempotencyKey>,
    replay: Replay,
    command: F,
) -> Result<T, DomainError>
where
    T: Serialize + DeserializeOwned,
    F: for<'t> FnOnce(&'t store::Client, &'t Command) -> BoxFuture<'t, Result<T, DomainError>>,
{
    let client = pool.get().await?;
    let meta = EventMeta { actor: caller.actor(), idempotency_key: idempotency_key.map(|k| k.key.clone()) };
    let ctx = Command { caller, meta };
    let body = async {
        if let Some(k) = idempotency_key {
            match idempotency::claim(&client, ctx.caller.user_id, &k.key, &k.request_hash).await? {
                idempotency::Claim::New => {}
                idempotency::Claim::Replay(_) if replay == Replay::Refuse => {
                    return Err(DomainError::conflict(
                        "already_applied",
                        "this request was already applied; the secret in its answer is shown only once",
                    ));
                }
                idempotency::Claim::Replay(response) => {
                    return serde_json::from_value(response).map_err(|e| {
                        StoreError::Invalid(format!("saved idempotent response does not parse: {e}")).into()
                    });
                }
                idempotency::Claim::Mismatch => {
                    return Err(DomainError::rejected(
                        Rejection::Invalid,
                        "idempotency_key_reused",
                        "this Idempotency-Key was already used for a different request",
                    ));
                }
            }
        }
        let output = command(&client, &ctx).await?;
        if let Some(k) = idempotency_key {
            let response = match replay {
                Replay::Response => serde_json::to_value(&output)
                    .map_err(|e| StoreError::Invalid(format!("response does not serialize: {e}")))?,
                Replay::Refuse => serde_json::json!({"kept": false}),
            };
            store::idempotency::save(&client, ctx.caller.user_id, &k.key, &response).await?;
        }
        Ok(output)
    };
    store::in_transaction(&client, body).await
}
