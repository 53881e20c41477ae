use actix_web::{web, HttpResponse};
use uuid::Uuid;

use super::{created, no_content, resource, ApiError, AppState, Auth};
use crate::domain::accounts::{self, NewUser};
use crate::protocol::accounts::{DevicesResponse, LoginRequest, RegisterDeviceRequest, SignupRequest};
use crate::protocol::validate::{DeviceName, DisplayName, Email, Password, Platform};
use crate::domain::DomainError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/auth/signup").post(signup))
        .service(resource("/auth/login").post(login))
        .service(resource("/auth/logout").post(logout))
        .service(resource("/me").get(get_me))
        .service(resource("/devices").post(register_device).get(list_devices))
        .service(resource("/devices/{device_id}").delete(delete_device));
}

#[tracing::instrument(skip_all, fields(email = %body.email), err)]
async fn signup(state: web::Data<AppState>, body: web::Json<SignupRequest>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewUser {
        email: Email::parse(&body.email).map_err(DomainError::from)?,
        password: Password::parse(&body.password).map_err(DomainError::from)?,
        display_name: body.display_name.as_deref().map(DisplayName::parse).transpose().map_err(DomainError::from)?,
        is_admin: false,
    };
    Ok(created(&accounts::create_user(&state.pool, new).await?))
}

#[tracing::instrument(skip_all, err)]
async fn login(state: web::Data<AppState>, body: web::Json<LoginRequest>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    Ok(HttpResponse::Ok().json(accounts::login(&state.pool, &body.email, body.password).await?))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn logout(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    accounts::logout(&state.pool, &auth.0).await?;
    Ok(no_content())
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn get_me(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(accounts::me(&state.pool, &auth.0).await?))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn register_device(
    state: web::Data<AppState>,
    auth: Auth,
    body: web::Json<RegisterDeviceRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = DeviceName::parse(&body.name).map_err(DomainError::from)?;
    let platform = body.platform.as_deref().map(Platform::parse).transpose().map_err(DomainError::from)?;
    Ok(created(&accounts::register_device(&state.pool, &auth.0, name, platform).await?))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn list_devices(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let devices = accounts::list_devices(&state.pool, &auth.0).await?;
    Ok(HttpResponse::Ok().json(DevicesResponse { devices }))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, device_id = %path), err)]
async fn delete_device(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    accounts::delete_device(&state.pool, &auth.0, path.into_inner()).await?;
    Ok(no_content())
}
