//! `GET /api/openapi.json`: the contract, generated from the handlers'
//! `#[utoipa::path]` annotations and the wire types' `ToSchema` derives.
//!
//! Every handler registered in `src/api/*.rs` must be listed in `paths`
//! below: the `openapi` integration test compares the routes in the source
//! with the operations of the served document, both ways.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::resource;
use super::{accounts, admin, files, health, membership, projects, relay, transfers, ws};
use crate::domain::events::{AuditEvent, AuditPage, EventsPage};
use crate::protocol::accounts as acc;
use crate::protocol::files as fil;
use crate::protocol::membership as mem;
use crate::protocol::projects as prj;
use crate::protocol::transfers as trf;
use crate::protocol::{Actor, ErrorBody, ErrorDetail, Event, EventType};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").get(openapi_json));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry",
        description = "Share the files on a project owner's machine with the project's members. \
                       Errors are `{\"error\": {\"code\", \"message\"}}`; every POST/PATCH that appends \
                       events honours `Idempotency-Key`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
        accounts::signup,
        accounts::login,
        accounts::logout,
        accounts::logout_all,
        accounts::get_me,
        accounts::register_device,
        accounts::list_devices,
        accounts::delete_device,
        projects::create_project,
        projects::list_projects,
        projects::get_project,
        projects::update_project,
        projects::archive_project,
        membership::create_invite,
        membership::list_invites,
        membership::revoke_invite,
        membership::accept_invite,
        membership::list_members,
        membership::remove_member,
        membership::list_devices,
        membership::attach_device,
        membership::detach_device,
        files::update_files,
        files::list_files,
        files::list_events,
        files::list_project_events,
        transfers::request_download,
        transfers::list_transfers,
        transfers::get_transfer,
        transfers::report_transfer,
        transfers::verify_transfer,
        transfers::cancel_transfer,
        transfers::retry_transfer,
        ws::connect,
        accounts::advertise_direct,
        accounts::withdraw_direct,
        relay::missing_chunks,
        relay::upload_chunk,
        relay::download_chunk,
        admin::list_projections,
        admin::rebuild_projection,
        admin::audit,
    ),
    components(schemas(
        trf::DirectAdvert,
        relay::HashesRequest,
        relay::MissingResponse,
        relay::StoredChunk,
        ErrorBody,
        ErrorDetail,
        Actor,
        Event,
        EventType,
        EventsPage,
        AuditEvent,
        AuditPage,
        acc::SignupRequest,
        acc::LoginRequest,
        acc::User,
        acc::AuthResponse,
        acc::Device,
        acc::MeResponse,
        acc::RegisterDeviceRequest,
        acc::RegisterDeviceResponse,
        acc::DevicesResponse,
        prj::Role,
        prj::CreateProjectRequest,
        prj::UpdateProjectRequest,
        prj::Project,
        prj::ProjectsResponse,
        mem::CreateInviteRequest,
        mem::CreatedInvite,
        mem::Invite,
        mem::InvitesResponse,
        mem::AcceptInviteRequest,
        mem::AcceptedInvite,
        mem::Member,
        mem::MembersResponse,
        mem::DeviceRole,
        mem::AttachedDevice,
        mem::ProjectDevice,
        mem::ProjectDevicesResponse,
        fil::ChunkRef,
        fil::FileChange,
        fil::UpdateFilesRequest,
        fil::UpdateFilesResponse,
        fil::RemoteFile,
        fil::FilesPage,
        trf::TransferStatus,
        trf::RequestMode,
        trf::DownloadRequest,
        trf::DownloadFile,
        trf::Endpoint,
        trf::TransferInfo,
        trf::DownloadResponse,
        trf::SourceDevice,
        trf::Transfer,
        trf::TransfersPage,
        trf::TransferReport,
        trf::VerifyRequest,
        admin::ProjectionInfo,
        admin::ProjectionsResponse,
        admin::RebuildResponse,
        health::Health,
        health::Readiness,
    )),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "meta", description = "This document"),
        (name = "accounts", description = "Sign up, log in, the caller"),
        (name = "devices", description = "The caller's devices and their assignment to projects"),
        (name = "projects", description = "Projects: create, list, rename, archive"),
        (name = "invites", description = "Invites to a project, and joining with one"),
        (name = "members", description = "A project's members"),
        (name = "files", description = "The owner's file metadata: deltas in, paginated listing out"),
        (name = "events", description = "A project's event feed"),
        (name = "transfers", description = "Download requests and the transfers they start"),
        (name = "admin", description = "Projections and audit, for administrators"),
    ),
)]
struct ApiDoc;

/// Declares the `bearer` scheme the operations' `security` names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A user token (signup, login) or a device token (device registration). \
                         WebSocket clients may pass `?access_token=` instead.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document. Its version is the crate's.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// This document, OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document of this server", content_type = "application/json"))
)]
async fn openapi_json() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| document().to_json().expect("the OpenAPI document serializes"));
    HttpResponse::Ok().insert_header((header::CONTENT_TYPE, "application/json")).body(body.as_str())
}
