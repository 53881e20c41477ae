use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::{created, idempotency_key, no_content, optional_json, resource, ApiError, AppState, Auth};
use crate::domain::membership::{self, InviteTerms};
use crate::domain::{self, DomainError};
use crate::protocol::membership::{
    AcceptInviteRequest, CreateInviteRequest, InvitesResponse, MembersResponse, ProjectDevicesResponse,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/projects/{project_id}/invites").post(create_invite).get(list_invites))
        .service(resource("/projects/{project_id}/invites/{invite_id}").delete(revoke_invite))
        .service(resource("/invites/accept").post(accept_invite))
        .service(resource("/projects/{project_id}/members").get(list_members))
        .service(resource("/projects/{project_id}/members/{user_id}").delete(remove_member))
        .service(resource("/projects/{project_id}/devices").get(list_devices))
        .service(
            resource("/projects/{project_id}/devices/{device_id}")
                .put(attach_device)
                .delete(detach_device),
        );
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
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
    let invite = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(membership::create_invite(tx, cmd, project_id, terms))
    })
    .await?;
    Ok(created(&invite))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
async fn list_invites(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let invites = membership::list_invites(&client, &auth.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(InvitesResponse { invites }))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
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

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
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

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
async fn list_members(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let members = membership::list_members(&client, &auth.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(MembersResponse { members }))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
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

/// `PUT` is idempotent by nature; any body (the contract sends `{}`) is ignored.
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
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

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
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

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
async fn list_devices(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let devices = membership::list_devices(&client, &auth.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ProjectDevicesResponse { devices }))
}
