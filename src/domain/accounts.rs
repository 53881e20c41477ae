//! Users, their devices and their bearer tokens: account infrastructure in
//! ordinary tables, not project state.

use std::sync::Arc;

use uuid::Uuid;

use super::passwords::{LoginThrottle, PasswordWork};
use super::secrets::{new_secret, secret_hash};
use super::tokens::TokenCache;
use super::{Caller, DomainError, Rejection};
use crate::protocol::accounts::{AuthResponse, Device, MeResponse, RegisterDeviceResponse, User};
use crate::protocol::transfers::CertSha256;
use crate::protocol::validate::{DeviceName, DisplayName, Email, Password, Platform};
use crate::store::{GenericClient, Pool};

const TOKEN_PREFIX: &str = "fy_";

/// What account commands need besides the database: the password threads,
/// the login throttle, how long an unused user token lives, and the tokens
/// this server remembers.
pub struct Accounts {
    pub passwords: PasswordWork,
    pub throttle: LoginThrottle,
    pub token_idle: chrono::Duration,
    pub tokens: Arc<TokenCache>,
}

impl Accounts {
    /// `token_cache` is how long a looked-up token is remembered, at most the
    /// refresh interval.
    pub fn new(
        passwords: PasswordWork,
        throttle: LoginThrottle,
        token_idle: chrono::Duration,
        token_cache: std::time::Duration,
    ) -> Self {
        let refresh = refresh_interval(token_idle).to_std().unwrap_or_default();
        Self { passwords, throttle, token_idle, tokens: Arc::new(TokenCache::new(token_cache.min(refresh))) }
    }
}

/// How long apart a user token's `last_used_at` is written: when it is
/// older than a tenth of the idle time (an hour at most).
fn refresh_interval(idle: chrono::Duration) -> chrono::Duration {
    (idle / 10).min(chrono::Duration::hours(1))
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

pub async fn create_user(pool: &Pool, passwords: &PasswordWork, new: NewUser) -> Result<AuthResponse, DomainError> {
    let password_hash = passwords.hash(new.password).await?;
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

/// Exchanges an email and password for a new user token. Failed attempts
/// are throttled per account and per client address (429 while locked,
/// without checking the password).
pub async fn login(
    pool: &Pool,
    accounts: &Accounts,
    email: &str,
    password: String,
    address: Option<std::net::IpAddr>,
) -> Result<AuthResponse, DomainError> {
    accounts.throttle.check(email, address)?;
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE lower(u.email) = lower($1)"),
            &[&email.trim()],
        )
        .await?;
    let stored = row.as_ref().map(|r| r.get::<_, String>(3));
    // Checked against a dummy hash when there is no such user, so timing
    // does not tell which emails have accounts.
    let verified = accounts.passwords.verify(password, stored).await?;
    let Some(row) = row.filter(|_| verified) else {
        accounts.throttle.failed(email, address);
        return Err(DomainError::rejected(Rejection::Unauthorized, "invalid_credentials", "wrong email or password"));
    };
    let user = user_from_row(&row);
    accounts.throttle.succeeded(email);
    let token = insert_token(&client, user.id, None).await?;
    Ok(AuthResponse { user, token })
}

/// Revokes exactly the token the caller presented.
pub async fn logout(pool: &Pool, tokens: &TokenCache, caller: &Caller) -> Result<(), DomainError> {
    pool.get().await?.execute("DELETE FROM api_tokens WHERE token_hash = $1", &[&caller.token_hash]).await?;
    tokens.forget_hashes([caller.token_hash.as_slice()]);
    Ok(())
}

/// Revokes every token of the caller's user, device tokens included.
pub async fn logout_all(pool: &Pool, tokens: &TokenCache, caller: &Caller) -> Result<(), DomainError> {
    pool.get().await?.execute("DELETE FROM api_tokens WHERE user_id = $1", &[&caller.user_id]).await?;
    tokens.forget_user(caller.user_id);
    Ok(())
}

/// The caller behind a bearer token, or None when it is unknown, revoked,
/// belongs to a deleted device, or is a user token unused for longer than
/// `idle`. Use refreshes a token, at most every `idle / 10` (an hour at
/// most), so that most requests write nothing. A token looked up lately is
/// answered from memory (see [`TokenCache`]).
pub async fn authenticate(pool: &Pool, accounts: &Accounts, token: &str) -> Result<Option<Caller>, DomainError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let hash = secret_hash(token);
    if let Some(caller) = accounts.tokens.get(&hash) {
        return Ok(Some(caller));
    }
    let generation = accounts.tokens.generation();
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT t.user_id, t.device_id, u.is_admin, t.last_used_at < now() - make_interval(secs => $3)
             FROM api_tokens t
             JOIN users u ON u.id = t.user_id
             LEFT JOIN devices d ON d.id = t.device_id
             WHERE t.token_hash = $1 AND d.deleted_at IS NULL
               AND (t.device_id IS NOT NULL OR t.last_used_at > now() - make_interval(secs => $2))",
        )
        .await?;
    let seconds = |d: chrono::Duration| d.num_milliseconds() as f64 / 1000.0;
    let (idle, refresh) = (seconds(accounts.token_idle), seconds(refresh_interval(accounts.token_idle)));
    let Some(row) = client.query_opt(&stmt, &[&hash, &idle, &refresh]).await? else {
        return Ok(None);
    };
    if row.get::<_, bool>(3) {
        client.execute("UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1", &[&hash]).await?;
    }
    let caller = Caller { user_id: row.get(0), device_id: row.get(1), is_admin: row.get(2), token_hash: hash };
    accounts.tokens.insert(&caller, generation);
    Ok(Some(caller))
}

/// Whether the caller's token still exists (an open WebSocket asks when
/// revocations may have been missed).
pub async fn token_exists(pool: &Pool, caller: &Caller) -> Result<bool, DomainError> {
    let row = pool
        .get()
        .await?
        .query_one("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE token_hash = $1)", &[&caller.token_hash])
        .await?;
    Ok(row.get(0))
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
pub async fn delete_device(
    pool: &Pool,
    tokens: &TokenCache,
    caller: &Caller,
    device_id: Uuid,
) -> Result<(), DomainError> {
    let client = pool.get().await?;
    let delete = async {
        let deleted = client
            .execute(
                "UPDATE devices SET deleted_at = now()
                 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
                &[&device_id, &caller.user_id],
            )
            .await?;
        if deleted == 0 {
            return Err(DomainError::not_found("device"));
        }
        client.execute("DELETE FROM api_tokens WHERE device_id = $1", &[&device_id]).await?;
        let meta = crate::store::EventMeta { actor: caller.actor(), idempotency_key: None };
        super::membership::detach_deleted_device(&client, &meta, device_id).await
    };
    crate::store::in_transaction(&client, delete).await?;
    tokens.forget_device(device_id);
    Ok(())
}

/// A source device's agent advertises where it can be reached directly and
/// the key it checks transfer tokens with: for one project of which the
/// device is a source, or (without a project) for every project that has no
/// entry of its own.
pub async fn advertise_direct(
    pool: &Pool,
    caller: &Caller,
    device_id: Uuid,
    advert: crate::protocol::transfers::DirectAdvert,
) -> Result<(), DomainError> {
    let invalid = |code, message: &str| DomainError::rejected(Rejection::Invalid, code, message);
    if advert.urls.is_empty() || advert.urls.len() > 8 || !advert.urls.iter().all(|u| is_direct_url(u)) {
        return Err(invalid(
            "invalid_urls",
            "give 1 to 8 http:// or https:// URLs with a host, no user or password, no spaces",
        ));
    }
    if crate::protocol::transfers::DirectToken::key(&advert.key).is_none() {
        return Err(invalid("invalid_key", "the key is 64 hex characters (32 bytes)"));
    }
    let cert_sha256 = match advert.cert_sha256.as_deref().map(CertSha256::parse) {
        Some(Some(cert)) => Some(cert.into_inner()),
        Some(None) => {
            return Err(invalid("invalid_cert_sha256", "cert_sha256 is 64 hex characters (a SHA-256 fingerprint)"))
        }
        // Members pin the certificate: an https endpoint without one could
        // only be reached by trusting whatever answers there.
        None if advert.urls.iter().any(|u| u.starts_with("https://")) => {
            return Err(invalid("missing_cert_sha256", "https URLs need cert_sha256, the certificate members pin"))
        }
        None => None,
    };
    let urls = serde_json::json!(advert.urls);
    let client = pool.get().await?;
    own_device(&client, caller, device_id).await?;
    let Some(project_id) = advert.project_id else {
        client
            .execute(
                "UPDATE devices SET direct_urls = $2, direct_key = $3, direct_cert_sha256 = $4 WHERE id = $1",
                &[&device_id, &urls, &advert.key, &cert_sha256],
            )
            .await?;
        return Ok(());
    };
    super::projects::access(&client, project_id, caller, true).await?;
    // The source check and the write in one statement: a device detached
    // meanwhile gets no entry.
    let written = client
        .execute(
            "INSERT INTO device_direct_endpoints (device_id, project_id, urls, key, cert_sha256)
             SELECT $1, $2, $3, $4, $5 FROM project_devices
             WHERE project_id = $2 AND device_id = $1 AND role = 'source'
             ON CONFLICT (device_id, project_id)
             DO UPDATE SET urls = EXCLUDED.urls, key = EXCLUDED.key, cert_sha256 = EXCLUDED.cert_sha256,
                           updated_at = now()",
            &[&device_id, &project_id, &urls, &advert.key, &cert_sha256],
        )
        .await?;
    if written == 0 {
        return Err(DomainError::conflict(
            "not_a_source_device",
            "the device is not a source of this project: attach it (PUT /api/projects/:id/devices/:deviceId) first",
        ));
    }
    Ok(())
}

/// The agent stops offering direct transfers: for one project, or (without
/// a project) the per-device entry. Other projects' entries stay.
pub async fn withdraw_direct(
    pool: &Pool,
    caller: &Caller,
    device_id: Uuid,
    project_id: Option<Uuid>,
) -> Result<(), DomainError> {
    let client = pool.get().await?;
    own_device(&client, caller, device_id).await?;
    match project_id {
        None => {
            client
                .execute(
                    "UPDATE devices SET direct_urls = NULL, direct_key = NULL, direct_cert_sha256 = NULL WHERE id = $1",
                    &[&device_id],
                )
                .await?;
        }
        Some(project_id) => {
            super::projects::access(&client, project_id, caller, true).await?;
            client
                .execute(
                    "DELETE FROM device_direct_endpoints WHERE device_id = $1 AND project_id = $2",
                    &[&device_id, &project_id],
                )
                .await?;
        }
    }
    Ok(())
}

/// 404 unless `device_id` is one of the caller's live devices.
async fn own_device(client: &impl GenericClient, caller: &Caller, device_id: Uuid) -> Result<(), DomainError> {
    client
        .query_opt(
            "SELECT 1 FROM devices WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&device_id, &caller.user_id],
        )
        .await?
        .map(|_| ())
        .ok_or_else(|| DomainError::not_found("device"))
}

/// A URL members' clients may be pointed at: http or https, to a host,
/// with nothing that could smuggle credentials or confuse a client.
fn is_direct_url(raw: &str) -> bool {
    if raw.len() > 2048 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    // The URL parser forgives `http:///host`; a client might not.
    let authority = raw.split_once("://").map(|(_, rest)| rest);
    if !authority.is_some_and(|a| !a.starts_with('/')) {
        return false;
    }
    let Ok(url) = url::Url::parse(raw) else { return false };
    matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::is_direct_url;

    #[test]
    fn direct_urls_are_http_to_a_host_without_credentials() {
        for good in
            ["http://192.0.2.4:7071", "https://laptop.lan:443/", "http://[2001:db8::1]:80", "http://100.64.0.2:9"]
        {
            assert!(is_direct_url(good), "{good} refused");
        }
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "ftp://host/",
            "http://",
            "http:///path",
            "http://user:secret@host/",
            "http://user@host/",
            "http://ho st/",
            "http://host/\n",
            "http://host/\u{7}",
            " http://host/",
            "data:text/html,hi",
        ] {
            assert!(!is_direct_url(bad), "{bad:?} accepted");
        }
    }
}
