use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::auth::{self, Credential};
use super::{idempotency_key, no_content, resource, secret, ApiError, AppState, Auth};
use crate::domain::accounts::{self, NewUser};
use crate::domain::{self, DomainError};
use crate::protocol::accounts::{
    AuthResponse, DevicesResponse, LoginRequest, MeResponse, RegisterDeviceRequest, RegisterDeviceResponse, Session,
    SessionResponse, SignedIn, SignupRequest,
};
use crate::protocol::transfers::{DirectAdvert, DirectWithdrawal};
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

/// Creates an account and answers a user token, or with `"session":
/// "cookie"` sets it as the session cookie instead.
#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "accounts",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The new user and a token; with `\"session\": \"cookie\"` the user alone, the token being in the cookie", body = SignedIn,
            headers(("Set-Cookie" = String, description = "With `\"session\": \"cookie\"`: `ferry_session`, `HttpOnly; SameSite=Lax; Path=/`, `Secure` over https, `Max-Age` the idle lifetime of a token"))),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 403, description = "`cross_site`: a cookie session asked for from another origin", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Weak password (< 8 characters), bad email or display name", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: try again after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`busy`: password hashing is saturated, try again after `Retry-After` seconds", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(email = %body.email), err(level = "debug"))]
async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SignupRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    refuse_cross_site_session(&req, body.session)?;
    let new = NewUser {
        email: Email::parse(&body.email).map_err(DomainError::from)?,
        password: Password::parse(&body.password).map_err(DomainError::from)?,
        display_name: body.display_name.as_deref().map(DisplayName::parse).transpose().map_err(DomainError::from)?,
        is_admin: false,
    };
    let answer = accounts::create_user(&state.pool, &state.accounts.passwords, new).await?;
    Ok(signed_in(&req, &state, HttpResponse::Created(), answer, body.session))
}

/// Exchanges an email and password for a user token, or with `"session":
/// "cookie"` sets it as the session cookie instead.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "The user and a new token; with `\"session\": \"cookie\"` the user alone, the token being in the cookie", body = SignedIn,
            headers(("Set-Cookie" = String, description = "With `\"session\": \"cookie\"`: `ferry_session`, `HttpOnly; SameSite=Lax; Path=/`, `Secure` over https, `Max-Age` the idle lifetime of a token"))),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong credentials", body = ErrorBody),
        (status = 403, description = "`cross_site`: a cookie session asked for from another origin", body = ErrorBody),
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
    refuse_cross_site_session(&req, body.session)?;
    let address = req.peer_addr().map(|a| a.ip());
    let answer = accounts::login(&state.pool, &state.accounts, &body.email, body.password, address).await?;
    Ok(signed_in(&req, &state, HttpResponse::Ok(), answer, body.session))
}

/// A cookie session is only started from the app's own origin, so that
/// another site cannot sign a browser into an account of its choosing
/// (checked before any password work).
fn refuse_cross_site_session(req: &HttpRequest, session: Option<Session>) -> Result<(), ApiError> {
    match session {
        Some(Session::Cookie) => auth::require_same_origin(req),
        None => Ok(()),
    }
}

/// The answer of a signup or login: the token in the body, or for a cookie
/// session in the cookie alone, since the page has no use for it and
/// JavaScript that never holds it cannot leak it.
fn signed_in(
    req: &HttpRequest,
    state: &AppState,
    builder: actix_web::HttpResponseBuilder,
    answer: AuthResponse,
    session: Option<Session>,
) -> HttpResponse {
    let mut builder = secret(builder);
    match session {
        None => builder.json(SignedIn::Token(answer)),
        Some(Session::Cookie) => builder
            .cookie(auth::session_cookie(req, answer.token, state.accounts.token_idle))
            .json(SignedIn::Session(SessionResponse { user: answer.user })),
    }
}

/// `204 No Content`, clearing the session cookie when it authenticated the
/// call (its token is revoked by now). A Bearer call leaves a cookie alone:
/// it may belong to another session.
fn signed_out(req: &HttpRequest, credential: Credential) -> HttpResponse {
    let mut builder = secret(HttpResponse::NoContent());
    if credential == Credential::Cookie {
        builder.cookie(auth::removed_session_cookie(req));
    }
    builder.finish()
}

/// Revokes the token used for this call; a session cookie is cleared too.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The token stopped working; when the session cookie authenticated the call, it is cleared",
            headers(("Set-Cookie" = String, description = "When the session cookie authenticated the call: `ferry_session` with `Max-Age=0`"))),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn logout(state: web::Data<AppState>, req: HttpRequest, auth: Auth) -> Result<HttpResponse, ApiError> {
    accounts::logout(&state.pool, &state.accounts.tokens, &auth.0).await?;
    Ok(signed_out(&req, auth.1))
}

/// Revokes every token of the caller, device tokens included; a session
/// cookie is cleared too.
#[utoipa::path(
    post,
    path = "/api/auth/logout-all",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every token of the caller stopped working; when the session cookie authenticated the call, it is cleared",
            headers(("Set-Cookie" = String, description = "When the session cookie authenticated the call: `ferry_session` with `Max-Age=0`"))),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn logout_all(state: web::Data<AppState>, req: HttpRequest, auth: Auth) -> Result<HttpResponse, ApiError> {
    accounts::logout_all(&state.pool, &state.accounts.tokens, &auth.0).await?;
    Ok(signed_out(&req, auth.1))
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
    accounts::delete_device(&state.pool, &state.accounts.tokens, &auth.0, path.into_inner()).await?;
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
    request_body = DirectAdvert,
    responses(
        (status = 204, description = "Advertised: new transfers of the project (or, without `project_id`, of every project without an entry of its own) served by this device offer these URLs first"),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "`owner_only`: the caller is a member of the project, not its owner", body = ErrorBody),
        (status = 404, description = "Not one of the caller's devices, or a project the caller is not in", body = ErrorBody),
        (status = 409, description = "`not_a_source_device`: the device is not a source of the project", body = ErrorBody),
        (status = 422, description = "Bad URLs or key", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, device_id = %path), err(level = "debug"))]
async fn advertise_direct(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    body: web::Json<DirectAdvert>,
) -> Result<HttpResponse, ApiError> {
    accounts::advertise_direct(&state.pool, &auth.0, path.into_inner(), body.into_inner()).await?;
    Ok(no_content())
}

/// The device stops offering direct transfers (for one project, or its
/// per-device entry).
#[utoipa::path(
    delete,
    path = "/api/devices/{device_id}/direct",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = Uuid, Path, description = "One of the caller's devices"), DirectWithdrawal),
    responses(
        (status = 204, description = "Withdrawn: the project's entry, or without `project_id` the per-device one; other entries stay"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "`owner_only`: the caller is a member of the project, not its owner", body = ErrorBody),
        (status = 404, description = "Not one of the caller's devices, or a project the caller is not in", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, device_id = %path), err(level = "debug"))]
async fn withdraw_direct(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    query: web::Query<DirectWithdrawal>,
) -> Result<HttpResponse, ApiError> {
    accounts::withdraw_direct(&state.pool, &auth.0, path.into_inner(), query.into_inner().project_id).await?;
    Ok(no_content())
}
