//! Users, their devices and their bearer tokens: account infrastructure in
//! ordinary tables, not project state.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::LazyLock;
use uuid::Uuid;

use super::secrets::{new_secret, secret_hash};
use super::{Caller, DomainError, Rejection};
use crate::protocol::accounts::{AuthResponse, Device, MeResponse, RegisterDeviceResponse, User};
use crate::protocol::validate::{DeviceName, DisplayName, Email, Password, Platform};
use crate::store::{GenericClient, Pool, StoreError};

const TOKEN_PREFIX: &str = "fy_";

async fn hash_password(password: Password) -> Result<String, DomainError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.expose().as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|e| StoreError::Invalid(format!("password hashing task failed: {e}")))?
    .map_err(|e| StoreError::Invalid(format!("password hashing failed: {e}")).into())
}

/// Checks a password against a stored hash, or against a dummy hash when
/// the user does not exist so that both cases take the same time.
async fn verify_password(password: String, stored: Option<String>) -> bool {
    static DUMMY: LazyLock<String> = LazyLock::new(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"not a real password", &salt).expect("hashing works").to_string()
    });
    tokio::task::spawn_blocking(move || {
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else { return false };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && exists
    })
    .await
    .unwrap_or(false)
}

const USER_COLUMNS: &str = "u.id, u.email, u.display_name";

fn user_from_row(row: &tokio_postgres::Row) -> User {
    User { id: row.get(0), email: row.get(1), display_name: row.get(2) }
}

fn device_from_row(row: &tokio_postgres::Row, at: usize) -> Device {
    Device { id: row.get(at), name: row.get(at + 1), platform: row.get(at + 2), created_at: row.get(at + 3) }
}

/// A new account, with its first token.
pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub display_name: Option<DisplayName>,
    pub is_admin: bool,
}

pub async fn create_user(pool: &Pool, new: NewUser) -> Result<AuthResponse, DomainError> {
    let password_hash = hash_password(new.password).await?;
    let display_name = match new.display_name {
        Some(name) => name.into_inner(),
        None => DisplayName::parse(new.email.local_part())?.into_inner(),
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let id = Uuid::now_v7();
    let inserted = tx
        .execute(
            "INSERT INTO users (id, email, password_hash, display_name, is_admin)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&id, &new.email.as_str(), &password_hash, &display_name, &new.is_admin],
        )
        .await?;
    if inserted == 0 {
        return Err(DomainError::conflict("email_taken", "an account with this email already exists"));
    }
    let token = insert_token(&tx, id, None).await?;
    tx.commit().await?;
    Ok(AuthResponse { user: User { id, email: new.email.as_str().to_owned(), display_name }, token })
}

async fn insert_token(
    client: &impl GenericClient,
    user_id: Uuid,
    device_id: Option<Uuid>,
) -> Result<String, DomainError> {
    let (token, hash) = new_secret(TOKEN_PREFIX);
    client
        .execute(
            "INSERT INTO api_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)",
            &[&hash, &user_id, &device_id],
        )
        .await?;
    Ok(token)
}

pub async fn login(pool: &Pool, email: &str, password: String) -> Result<AuthResponse, DomainError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE lower(u.email) = lower($1)"),
            &[&email.trim()],
        )
        .await?;
    let stored = row.as_ref().map(|r| r.get::<_, String>(3));
    if !verify_password(password, stored).await {
        return Err(DomainError::rejected(Rejection::Unauthorized, "invalid_credentials", "wrong email or password"));
    }
    let user = user_from_row(row.as_ref().expect("verified users exist"));
    let token = insert_token(&client, user.id, None).await?;
    Ok(AuthResponse { user, token })
}

/// Revokes exactly the token the caller presented.
pub async fn logout(pool: &Pool, caller: &Caller) -> Result<(), DomainError> {
    pool.get().await?.execute("DELETE FROM api_tokens WHERE token_hash = $1", &[&caller.token_hash]).await?;
    Ok(())
}

/// The caller behind a bearer token, or None when it is unknown, revoked,
/// or belongs to a deleted device.
pub async fn authenticate(pool: &Pool, token: &str) -> Result<Option<Caller>, DomainError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let hash = secret_hash(token);
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT t.user_id, t.device_id, u.is_admin
             FROM api_tokens t
             JOIN users u ON u.id = t.user_id
             LEFT JOIN devices d ON d.id = t.device_id
             WHERE t.token_hash = $1 AND d.deleted_at IS NULL",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&hash]).await?.map(|row| Caller {
        user_id: row.get(0),
        device_id: row.get(1),
        is_admin: row.get(2),
        token_hash: hash,
    }))
}

pub async fn me(pool: &Pool, caller: &Caller) -> Result<MeResponse, DomainError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT {USER_COLUMNS}, d.id, d.name, d.platform, d.created_at
                 FROM users u LEFT JOIN devices d ON d.id = $2
                 WHERE u.id = $1"
            ),
            &[&caller.user_id, &caller.device_id],
        )
        .await?;
    let device = caller.device_id.map(|_| device_from_row(&row, 3));
    Ok(MeResponse { user: user_from_row(&row), device })
}

pub async fn register_device(
    client: &impl GenericClient,
    caller: &Caller,
    name: DeviceName,
    platform: Option<Platform>,
) -> Result<RegisterDeviceResponse, DomainError> {
    if caller.device_id.is_some() {
        return Err(DomainError::rejected(
            Rejection::Forbidden,
            "user_token_required",
            "devices are registered with a user token, not a device token",
        ));
    }
    let id = Uuid::now_v7();
    let row = client
        .query_one(
            "INSERT INTO devices (id, user_id, name, platform) VALUES ($1, $2, $3, $4)
             RETURNING id, name, platform, created_at",
            &[&id, &caller.user_id, &name.as_str(), &platform.as_ref().map(Platform::as_str)],
        )
        .await?;
    let device_token = insert_token(client, caller.user_id, Some(id)).await?;
    Ok(RegisterDeviceResponse { device: device_from_row(&row, 0), device_token })
}

pub async fn list_devices(pool: &Pool, caller: &Caller) -> Result<Vec<Device>, DomainError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT id, name, platform, created_at FROM devices
             WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
            &[&caller.user_id],
        )
        .await?;
    Ok(rows.iter().map(|r| device_from_row(r, 0)).collect())
}

/// Deletes one of the caller's devices; its tokens stop working at once.
/// Someone else's device is "not found".
pub async fn delete_device(pool: &Pool, caller: &Caller, device_id: Uuid) -> Result<(), DomainError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let deleted = tx
        .execute(
            "UPDATE devices SET deleted_at = now()
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&device_id, &caller.user_id],
        )
        .await?;
    if deleted == 0 {
        return Err(DomainError::not_found("device"));
    }
    tx.execute("DELETE FROM api_tokens WHERE device_id = $1", &[&device_id]).await?;
    let meta = crate::store::EventMeta { actor: caller.actor(), idempotency_key: None };
    super::membership::detach_deleted_device(&tx, &meta, device_id).await?;
    tx.commit().await?;
    Ok(())
}

/// A source device's agent advertises (or, with `None`, withdraws) where it
/// can be reached directly and the key it checks transfer tokens with.
pub async fn advertise_direct(
    pool: &Pool,
    caller: &Caller,
    device_id: Uuid,
    advert: Option<crate::protocol::transfers::DirectAdvert>,
) -> Result<(), DomainError> {
    let invalid = |code, message: &str| DomainError::rejected(Rejection::Invalid, code, message);
    let (urls, key) = match advert {
        None => (None, None),
        Some(a) => {
            let usable = |u: &String| (u.starts_with("http://") || u.starts_with("https://")) && u.len() <= 2048;
            if a.urls.is_empty() || a.urls.len() > 8 || !a.urls.iter().all(usable) {
                return Err(invalid("invalid_urls", "give 1 to 8 http:// or https:// URLs"));
            }
            if crate::protocol::transfers::DirectToken::key(&a.key).is_none() {
                return Err(invalid("invalid_key", "the key is 64 hex characters (32 bytes)"));
            }
            (Some(serde_json::json!(a.urls)), Some(a.key))
        }
    };
    let updated = pool
        .get()
        .await?
        .execute(
            "UPDATE devices SET direct_urls = $3, direct_key = $4
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&device_id, &caller.user_id, &urls, &key],
        )
        .await?;
    if updated == 0 {
        return Err(DomainError::not_found("device"));
    }
    Ok(())
}
