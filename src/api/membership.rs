use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::{idempotency_key, no_content, optional_json, resource, ApiError, AppState, Auth};
use crate::domain::membership::{self, InviteTerms};
use crate::domain::{self, DomainError};
use crate::protocol::membership::{
    AcceptInviteRequest, AcceptedInvite, AttachedDevice, CreateInviteRequest, CreatedInvite, InvitePreview,
    InvitesResponse, MembersResponse, ProjectDevicesResponse,
};
use crate::protocol::ErrorBody;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/projects/{project_id}/invites").post(create_invite).get(list_invites))
        .service(resource("/projects/{project_id}/invites/{invite_id}").delete(revoke_invite))
        .service(resource("/invites/accept").post(accept_invite))
        .service(resource("/invites/{token}").get(preview_invite))
        .service(resource("/projects/{project_id}/members").get(list_members))
        .service(resource("/projects/{project_id}/members/{user_id}").delete(remove_member))
        .service(resource("/projects/{project_id}/devices").get(list_devices))
        .service(resource("/projects/{project_id}/devices/{device_id}").put(attach_device).delete(detach_device));
}

/// Creates an invite (owner only); its token is shown only in this answer.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/invites",
    tag = "invites",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key appends nothing and answers 409 `already_applied`: the token is shown only once")),
    request_body(content = Option<CreateInviteRequest>, description = "May be empty: every field has a default"),
    responses(
        (status = 201, description = "The invite and its token", body = CreatedInvite),
        (status = 400, description = "Malformed id, body or idempotency key", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Only the owner may invite", body = ErrorBody),
        (status = 409, description = "Idempotency-Key already applied", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 422, description = "Expiry or use count out of range", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn create_invite(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: CreateInviteRequest = optional_json(&body)?;
    let key = idempotency_key(&req, &body)?;
    let terms = InviteTerms::parse(body.expires_in_seconds, body.max_uses).map_err(DomainError::from)?;
    let project_id = path.into_inner();
    let invite = domain::execute_secret(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(membership::create_invite(tx, cmd, project_id, terms))
    })
    .await?;
    Ok(super::secret(HttpResponse::Created()).json(invite))
}

/// The project's invites (owner only), without their tokens.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/invites",
    tag = "invites",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project")),
    responses(
        (status = 200, description = "The invites", body = InvitesResponse),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Only the owner may list invites", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_invites(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let invites = membership::list_invites(&client, &auth.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(InvitesResponse { invites }))
}

/// Revokes an invite (owner only).
#[utoipa::path(
    delete,
    path = "/api/projects/{project_id}/invites/{invite_id}",
    tag = "invites",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("invite_id" = Uuid, Path, description = "The invite")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Only the owner may revoke invites", body = ErrorBody),
        (status = 404, description = "Unknown project or invite", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn revoke_invite(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, invite_id) = path.into_inner();
    domain::execute(&state.pool, auth.0, None, move |tx, cmd| {
        Box::pin(membership::revoke_invite(tx, cmd, project_id, invite_id))
    })
    .await?;
    Ok(no_content())
}

/// Joins a project with an invite token.
#[utoipa::path(
    post,
    path = "/api/invites/accept",
    tag = "invites",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = AcceptInviteRequest,
    responses(
        (status = 200, description = "Joined as a member", body = AcceptedInvite),
        (status = 400, description = "Malformed body or idempotency key", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No invite has this token", body = ErrorBody),
        (status = 409, description = "Already in the project", body = ErrorBody),
        (status = 410, description = "The invite expired, was revoked or is used up", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn accept_invite(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    body: web::Json<AcceptInviteRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let token = body.into_inner().token;
    let accepted = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { membership::accept_invite(tx, cmd, &token).await })
    })
    .await?;
    Ok(HttpResponse::Ok().json(accepted))
}

/// What an invite link leads to, for anyone holding its token, before
/// joining: consumes nothing.
#[utoipa::path(
    get,
    path = "/api/invites/{token}",
    tag = "invites",
    params(("token" = String, Path, description = "The invite's token, as in its `/join/<token>` link")),
    responses(
        (status = 200, description = "The project, its owner, and whether the invite can still be used", body = InvitePreview),
        (status = 404, description = "No invite has this token (`invite_not_found`)", body = ErrorBody),
    )
)]
// The token is a secret: nothing of the request is recorded (`skip_all`).
#[tracing::instrument(skip_all, err(level = "debug"))]
async fn preview_invite(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let preview = membership::preview_invite(&client, &path.into_inner()).await?;
    // Answered for a secret in the URL: no cache keeps it.
    Ok(super::secret(HttpResponse::Ok()).json(preview))
}

/// The project's owner and members.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/members",
    tag = "members",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project")),
    responses(
        (status = 200, description = "The members", body = MembersResponse),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_members(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let members = membership::list_members(&client, &auth.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(MembersResponse { members }))
}

/// Removes a member (owner), or leaves the project (a member naming themself).
#[utoipa::path(
    delete,
    path = "/api/projects/{project_id}/members/{user_id}",
    tag = "members",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("user_id" = Uuid, Path, description = "The member")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "A member may only remove themself", body = ErrorBody),
        (status = 404, description = "Unknown project or member", body = ErrorBody),
        (status = 409, description = "The owner cannot be removed", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn remove_member(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, user_id) = path.into_inner();
    domain::execute(&state.pool, auth.0, None, move |tx, cmd| {
        Box::pin(membership::remove_member(tx, cmd, project_id, user_id))
    })
    .await?;
    Ok(no_content())
}

/// Attaches one of the caller's devices to the project.
///
/// `PUT` is idempotent by nature; any body (the contract sends `{}`) is ignored.
#[utoipa::path(
    put,
    path = "/api/projects/{project_id}/devices/{device_id}",
    tag = "devices",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("device_id" = Uuid, Path, description = "One of the caller's devices")),
    responses(
        (status = 200, description = "Attached: the owner's device as a `source`, a member's as a `target`", body = AttachedDevice),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not the caller's device", body = ErrorBody),
        (status = 404, description = "Unknown project or device", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn attach_device(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, device_id) = path.into_inner();
    let attached = domain::execute(&state.pool, auth.0, None, move |tx, cmd| {
        Box::pin(membership::attach_device(tx, cmd, project_id, device_id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(attached))
}

/// Detaches a device from the project (its user, or the owner).
#[utoipa::path(
    delete,
    path = "/api/projects/{project_id}/devices/{device_id}",
    tag = "devices",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("device_id" = Uuid, Path, description = "The device")),
    responses(
        (status = 204, description = "Detached"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Neither the device's user nor the owner", body = ErrorBody),
        (status = 404, description = "Unknown project, or the device is not attached", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn detach_device(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, device_id) = path.into_inner();
    domain::execute(&state.pool, auth.0, None, move |tx, cmd| {
        Box::pin(membership::detach_device(tx, cmd, project_id, device_id))
    })
    .await?;
    Ok(no_content())
}

/// The devices attached to the project, with their presence.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/devices",
    tag = "devices",
    operation_id = "list_project_devices",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project")),
    responses(
        (status = 200, description = "The attached devices", body = ProjectDevicesResponse),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_devices(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let devices = membership::list_devices(&client, &auth.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ProjectDevicesResponse { devices }))
}
