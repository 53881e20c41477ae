//! `GET /api/openapi.json`: the contract, generated from the handlers'
//! `#[utoipa::path]` annotations and the wire types' `ToSchema` derives.
//!
//! Every handler registered in `src/api/*.rs` must be listed in `paths`
//! below: the `openapi` integration test compares the routes in the source
//! with the operations of the served document, both ways.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, Response};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::auth::SESSION_COOKIE;
use super::resource;
use super::{accounts, admin, content, files, folders, health, membership, projects, relay, transfers, ws};
use crate::protocol::accounts as acc;
use crate::protocol::events::{AuditEvent, AuditPage, EventsPage};
use crate::protocol::files as fil;
use crate::protocol::membership as mem;
use crate::protocol::projects as prj;
use crate::protocol::realtime::{ClientMessage, DevicePresence, EventMessage, ServerMessage};
use crate::protocol::relay::{HashesRequest, MissingResponse, StoredChunk};
use crate::protocol::transfers as trf;
use crate::protocol::{files::Blake3Hash, files::FilePath, validate as val};
use crate::protocol::{Actor, ErrorBody, ErrorDetail, Event, EventType};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").get(openapi_json));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry",
        description = "Share the files on a project owner's machine with the project's members. \
                       Errors are `{\"error\": {\"code\", \"message\"}}` with a stable snake_case `code`; \
                       never a 500 for bad input. Every POST/PATCH that appends events honours `Idempotency-Key`. \
                       Answers every route may give: 400 for a malformed path or query parameter or JSON body \
                       or a NUL character in either, 414 for a URL over 32 KiB, \
                       401 without a valid token, 413 for a JSON body over 64 KiB, 415 for a body that is not \
                       `application/json`, 422 `idempotency_key_reused`, 503 `database_unavailable` (with \
                       `Retry-After`) while PostgreSQL is down; a method a route does not take is 405 with `Allow`. \
                       The WebSocket messages of `GET /api/ws` are the `ClientMessage` and `ServerMessage` schemas.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes, &SharedAnswers, &RealtimeMessages),
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
        membership::preview_invite,
        membership::list_members,
        membership::remove_member,
        membership::list_devices,
        membership::attach_device,
        membership::detach_device,
        files::update_files,
        files::list_files,
        folders::list_folder,
        files::list_events,
        files::list_project_events,
        transfers::request_download,
        transfers::list_transfers,
        transfers::get_transfer,
        transfers::report_transfer,
        transfers::verify_transfer,
        transfers::cancel_transfer,
        transfers::retry_transfer,
        transfers::refresh_direct_token,
        content::transfer_content,
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
        FilePath,
        Blake3Hash,
        val::Email,
        val::Password,
        val::ProjectName,
        val::DisplayName,
        val::DeviceName,
        val::Platform,
        ClientMessage,
        EventMessage,
        DevicePresence,
        trf::DirectAdvert,
        HashesRequest,
        MissingResponse,
        StoredChunk,
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
        acc::Session,
        acc::SessionResponse,
        acc::SignedIn,
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
        mem::InviteUnusable,
        mem::InvitePreview,
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
        fil::FolderEntry,
        fil::FolderPage,
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
        trf::DirectEndpoints,
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
        (name = "relay", description = "Chunk bytes through the server"),
        (name = "realtime", description = "The WebSocket: live events, replayed from a seq"),
    ),
)]
struct ApiDoc;

/// Declares the `bearer` scheme the operations' `security` names, and the
/// web app's session cookie, which every operation that takes a token
/// takes instead.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                if let Some(security) = operation.security.as_mut().filter(|s| !s.is_empty()) {
                    security.push(SecurityRequirement::new(SESSION_COOKIE, Vec::<String>::new()));
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The web app's session, set by signup or login with `\"session\": \"cookie\"`. A request it \
                 authenticates that could change anything (any method but GET, HEAD and OPTIONS, and the \
                 WebSocket upgrade) must come from this server's own origin (`Sec-Fetch-Site: same-origin`, \
                 else `Origin`), or it is refused with 403 `cross_site`. A Bearer token wins over it.",
            ))),
        );
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

/// The answers many operations share, stated once here instead of in every
/// handler's `#[utoipa::path]`: an operation gets each that applies to it.
/// A status the handler already documents keeps the handler's description
/// (it names the route's own reasons); the reasons every route shares
/// (`idempotency_key_reused`, `database_unavailable`) are added to it.
struct SharedAnswers;

/// Operations that never touch the database.
const NO_DATABASE: [&str; 4] = ["healthz", "readyz", "metrics", "openapi_json"];

impl Modify for SharedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "IdempotencyKey".to_owned(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "1 to 255 visible ASCII characters (else 400 `invalid_idempotency_key`). A repeat with \
                     the same key and caller answers the first response and appends nothing; the same key \
                     with another method, path or body is 422 `idempotency_key_reused`.",
                ))
                .pattern(Some(r"^[!-~](?:[\t -~]{0,253}[!-~])?$"))
                .into(),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let websocket = path == "/api/ws";
            for (safe, operation) in operations(item) {
                add_shared_answers(operation, !safe || websocket);
            }
        }
    }
}

/// A path's operations, each with whether its method is safe (changes nothing).
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (true, &mut item.get),
        (false, &mut item.put),
        (false, &mut item.post),
        (false, &mut item.delete),
        (false, &mut item.patch),
        (true, &mut item.head),
        (true, &mut item.options),
        (true, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(safe, op)| op.as_mut().map(|op| (safe, op)))
}

/// `changes_state`: what a request authenticated by the session cookie may
/// only do from this server's own origin.
fn add_shared_answers(op: &mut Operation, changes_state: bool) {
    let id = op.operation_id.clone().unwrap_or_default();
    let params = op.parameters.as_deref().unwrap_or_default();
    let takes_params = params.iter().any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    let idempotent = params.iter().any(|p| p.name.eq_ignore_ascii_case("idempotency-key"));
    let json_body = op.request_body.as_ref().is_some_and(|b| b.content.contains_key("application/json"));
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());

    // `request_body = Option<T>` means "T, or no body at all"; utoipa writes
    // it as `null | T`, and a `null` body is not something the server takes.
    if let Some(body) = op.request_body.as_mut().filter(|b| !matches!(b.required, Some(Required::True))) {
        for content in body.content.values_mut() {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                let not_null: Vec<_> = one_of
                    .items
                    .iter()
                    .filter(|s| !matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into()))
                    .cloned()
                    .collect();
                if let [only] = not_null.as_slice() {
                    content.schema = Some(only.clone());
                }
            }
        }
    }

    for p in op.parameters.iter_mut().flatten() {
        if p.name.eq_ignore_ascii_case("idempotency-key") {
            p.schema = Some(Ref::from_schema_name("IdempotencyKey").into());
        }
    }

    let mut malformed = vec!["a NUL character in the URL or in a JSON string (`invalid_characters`)"];
    if takes_params {
        malformed.push("a malformed path or query parameter (`invalid_path`, `invalid_query`)");
    }
    if json_body {
        malformed.push("malformed JSON (`malformed_json`) or a body of the wrong shape (`invalid_body`)");
    }
    if idempotent {
        malformed.push("an Idempotency-Key that is not 1 to 255 visible ASCII characters");
    }
    default_answer(op, "400", &format!("Bad request: {}", malformed.join("; ")));
    default_answer(op, "414", "`uri_too_long`: the URL (path and query) is over 32 KiB");
    if secured {
        default_answer(op, "401", "No or invalid token (`unauthorized`)");
    }
    if secured && changes_state {
        shared_reason(
            op,
            "403",
            "`cross_site`: authenticated by the session cookie, but not sent from this server's own origin",
        );
    }
    if json_body {
        default_answer(op, "413", "`payload_too_large`: the body is over 64 KiB");
        default_answer(op, "415", "`unsupported_media_type`: the body is not `application/json`");
    }
    if idempotent {
        shared_reason(op, "422", "`idempotency_key_reused`: the Idempotency-Key was used for another request");
    }
    if !NO_DATABASE.contains(&id.as_str()) {
        shared_reason(op, "503", "`database_unavailable`: PostgreSQL is down; try again after `Retry-After` seconds");
    }
    for (status, response) in op.responses.responses.iter_mut() {
        if let (RefOr::T(response), "429" | "503") = (response, status.as_str()) {
            response.headers.entry("Retry-After".to_owned()).or_insert_with(retry_after);
        }
    }
}

fn error_answer(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        "application/json".to_owned(),
        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
    );
    response
}

fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .description(Some("Seconds to wait before trying again"))
        .build()
}

/// Adds the answer unless the handler documents this status itself.
fn default_answer(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error_answer(description).into());
}

/// Adds a reason to the answer of this status, or the answer itself.
fn shared_reason(op: &mut Operation, status: &str, reason: &str) {
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(response)) => response.description = format!("{}; or {reason}", response.description),
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses.responses.insert(status.to_owned(), error_answer(reason).into());
        }
    }
}

/// The WebSocket's messages as schemas: `ClientMessage`, and `ServerMessage`,
/// the control messages of `protocol::realtime::ServerMessage` or an
/// `EventMessage`. `GET /api/ws` names both in `x-websocket-messages`.
struct RealtimeMessages;

impl Modify for RealtimeMessages {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut server = <ServerMessage as PartialSchema>::schema();
        if let RefOr::T(Schema::OneOf(one_of)) = &mut server {
            // utoipa reads the untagged `ServerMessage::Event`, the last
            // variant, as tagged `event`: it is an `EventMessage` as it is.
            if let Some(event) = one_of.items.last_mut() {
                *event = Ref::from_schema_name(EventMessage::name()).into();
            }
            one_of.description = Some(
                "What the server sends: `subscribed`, every event the caller may see after `after_seq` \
                 in seq order (an `EventMessage`), `caught_up` once the replay reaches the live stream, \
                 then live events; `presence` when a device of the project comes online or goes \
                 offline (not an event: not replayed); `unsubscribed`, `pong`, `error`."
                    .to_owned(),
            );
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(ServerMessage::name().into_owned(), server);
        if let Some(op) = openapi.paths.paths.get_mut("/api/ws").and_then(|item| item.get.as_mut()) {
            let messages = serde_json::json!({
                "client": {"$ref": format!("#/components/schemas/{}", ClientMessage::name())},
                "server": {"$ref": format!("#/components/schemas/{}", ServerMessage::name())},
            });
            let extensions = ExtensionsBuilder::new().add("x-websocket-messages", messages).build();
            op.extensions.get_or_insert_with(Default::default).merge(extensions);
        }
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
