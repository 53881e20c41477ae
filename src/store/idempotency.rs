//! `Idempotency-Key`: the first response to a caller's key is saved in the
//! command's own transaction; a repeat gets it back and appends nothing.

use serde_json::Value;
use uuid::Uuid;

use super::{GenericClient, StoreError};

/// What claiming a key inside a command's transaction found.
#[derive(Debug)]
pub enum Claim {
    /// First use: run the command, then [`save`] its response.
    New,
    /// Already applied: answer this and do nothing else.
    Replay(Value),
    /// The key was used before for a different request.
    Mismatch,
}

/// Claims `(user, key)`. A concurrent command holding the same key makes
/// this wait until it commits (then: replay) or rolls back (then: new).
pub async fn claim(
    client: &impl GenericClient,
    user_id: Uuid,
    key: &str,
    request_hash: &[u8],
) -> Result<Claim, StoreError> {
    let inserted = client
        .execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&user_id, &key, &request_hash],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = client
        .query_one(
            "SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            &[&user_id, &key],
        )
        .await?;
    let saved_hash: Vec<u8> = row.get(0);
    match row.get::<_, Option<Value>>(1) {
        Some(response) if saved_hash == request_hash => Ok(Claim::Replay(response)),
        _ => Ok(Claim::Mismatch),
    }
}

/// Records the response of a command that claimed `(user, key)`.
pub async fn save(client: &impl GenericClient, user_id: Uuid, key: &str, response: &Value) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE idempotency_keys SET response = $3 WHERE user_id = $1 AND key = $2",
            &[&user_id, &key, response],
        )
        .await?;
    Ok(())
}
