use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::{idempotency_key, no_content, resource, secret, ApiError, AppState, Auth};
use crate::domain::accounts::{self, NewUser};
use crate::domain::{self, DomainError};
use crate::protocol::accounts::{
    AuthResponse, DevicesResponse, LoginRequest, MeResponse, RegisterDeviceRequest, RegisterDeviceResponse,
    SignupRequest,
};
use crate::protocol::validate::{DeviceName, DisplayName, Email, Password, Platform};
use crate::protocol::ErrorBody;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/auth/signup").post(signup))
        .service(resource("/auth/login").post(login))
        .service(resource("/auth/logout").post(logout))
        .service(resource("/auth/logout-all").post(logout_all))
        .service(resource("/me").get(get_me))
        .service(resource("/devices").post(register_device).get(list_devices))
        .service(resource("/devices/{device_id}").delete(delete_device))
        .service(resource("/devices/{device_id}/direct").put(advertise_direct).delete(withdraw_direct));
}

/// Creates an account and answers a user token.
#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "accounts",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The new user and a token", body = AuthResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Weak password (< 8 characters), bad email or display name", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: try again after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`busy`: password hashing is saturated, try again after `Retry-After` seconds", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(email = %body.email), err(level = "debug"))]
async fn signup(state: web::Data<AppState>, body: web::Json<SignupRequest>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewUser {
        email: Email::parse(&body.email).map_err(DomainError::from)?,
        password: Password::parse(&body.password).map_err(DomainError::from)?,
        display_name: body.display_name.as_deref().map(DisplayName::parse).transpose().map_err(DomainError::from)?,
        is_admin: false,
    };
    let answer = accounts::create_user(&state.pool, &state.accounts.passwords, new).await?;
    Ok(secret(HttpResponse::Created()).json(answer))
}

/// Exchanges an email and password for a user token.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "The user and a new token", body = AuthResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong credentials", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: try again after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`busy`: password hashing is saturated, try again after `Retry-After` seconds", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, err(level = "debug"))]
async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let address = req.peer_addr().map(|a| a.ip());
    let answer = accounts::login(&state.pool, &state.accounts, &body.email, body.password, address).await?;
    Ok(secret(HttpResponse::Ok()).json(answer))
}

/// Revokes the token used for this call.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The token stopped working"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn logout(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    accounts::logout(&state.pool, &auth.0).await?;
    Ok(no_content())
}

/// Revokes every token of the caller, device tokens included.
#[utoipa::path(
    post,
    path = "/api/auth/logout-all",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every token of the caller stopped working"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn logout_all(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    accounts::logout_all(&state.pool, &auth.0).await?;
    Ok(no_content())
}

/// The caller, and the device for a device token.
#[utoipa::path(
    get,
    path = "/api/me",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn get_me(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(accounts::me(&state.pool, &auth.0).await?))
}

/// Registers a device of the caller and answers its token.
#[utoipa::path(
    post,
    path = "/api/devices",
    tag = "devices",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key registers nothing and answers 409 `already_applied`: the token is shown only once")),
    request_body = RegisterDeviceRequest,
    responses(
        (status = 201, description = "The device and its token (shown only here)", body = RegisterDeviceResponse),
        (status = 409, description = "Idempotency-Key already applied", body = ErrorBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "A device token cannot register devices", body = ErrorBody),
        (status = 422, description = "Bad name or platform", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn register_device(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    body: web::Json<RegisterDeviceRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let name = DeviceName::parse(&body.name).map_err(DomainError::from)?;
    let platform = body.platform.as_deref().map(Platform::parse).transpose().map_err(DomainError::from)?;
    let registered = domain::execute_secret(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { accounts::register_device(tx, &cmd.caller, name, platform).await })
    })
    .await?;
    Ok(secret(HttpResponse::Created()).json(registered))
}

/// The caller's devices.
#[utoipa::path(
    get,
    path = "/api/devices",
    tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's devices", body = DevicesResponse),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn list_devices(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let devices = accounts::list_devices(&state.pool, &auth.0).await?;
    Ok(HttpResponse::Ok().json(DevicesResponse { devices }))
}

/// Deletes one of the caller's devices; its token stops working.
#[utoipa::path(
    delete,
    path = "/api/devices/{device_id}",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = Uuid, Path, description = "The device")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such device of the caller", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, device_id = %path), err(level = "debug"))]
async fn delete_device(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    accounts::delete_device(&state.pool, &auth.0, path.into_inner()).await?;
    Ok(no_content())
}

/// The device's agent advertises where members can reach it directly and
/// the key it checks transfer tokens with (the caller's own device).
#[utoipa::path(
    put,
    path = "/api/devices/{device_id}/direct",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = Uuid, Path, description = "One of the caller's devices")),
    request_body = crate::protocol::transfers::DirectAdvert,
    responses(
        (status = 204, description = "Advertised: new transfers served by this device offer these URLs first"),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Not one of the caller's devices", body = ErrorBody),
        (status = 422, description = "Bad URLs or key", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, device_id = %path), err(level = "debug"))]
async fn advertise_direct(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    body: web::Json<crate::protocol::transfers::DirectAdvert>,
) -> Result<HttpResponse, ApiError> {
    accounts::advertise_direct(&state.pool, &auth.0, path.into_inner(), Some(body.into_inner())).await?;
    Ok(no_content())
}

/// The device stops offering direct transfers.
#[utoipa::path(
    delete,
    path = "/api/devices/{device_id}/direct",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = Uuid, Path, description = "One of the caller's devices")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Not one of the caller's devices", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, device_id = %path), err(level = "debug"))]
async fn withdraw_direct(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    accounts::advertise_direct(&state.pool, &auth.0, path.into_inner(), None).await?;
    Ok(no_content())
}
