use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::{resource, ApiError, AppState, Auth};
use crate::protocol::ErrorBody;
use crate::realtime::frames::{FrameLimit, MAX_FRAME};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws").get(connect));
}

/// Opens a WebSocket (a bad token cannot). Client messages: `subscribe`
/// `{project_id, after_seq}`, `unsubscribe` `{project_id}`, `ping`. Server
/// messages: `subscribed`, every visible event after `after_seq` in seq
/// order, `caught_up`, then live events; `pong`; `error`. Subscribing again
/// to a subscribed project sends nothing twice; a frame over 64 KiB closes
/// the socket with 1009, and the token's revocation (logout, a deleted
/// device) with 1008.
#[utoipa::path(
    get,
    path = "/api/ws",
    tag = "realtime",
    security(("bearer" = [])),
    params(
        ("access_token" = Option<String>, Query, nullable = false, description = "The token, for clients that cannot set headers"),
        ("Upgrade" = String, Header, pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$", description = "`websocket`"),
        ("Connection" = String, Header, pattern = "^[Uu][Pp][Gg][Rr][Aa][Dd][Ee]$", description = "`Upgrade`"),
        ("Sec-WebSocket-Version" = String, Header, pattern = "^13$", description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, pattern = "^[A-Za-z0-9+/]{21}[AQgw]==$", description = "16 random bytes, base64"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; messages are `ClientMessage` and `ServerMessage` (see `x-websocket-messages`)"),
        (status = 400, description = "`not_a_websocket`: not a WebSocket handshake", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn connect(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // actix-ws checks a frame's size only once it has buffered all of it:
    // check each header as it arrives instead.
    let mut limit = FrameLimit::new(MAX_FRAME);
    let limited = body.into_inner().map(move |bytes| bytes.and_then(|b| limit.check(&b).map(|()| b)));
    let mut limited: Payload = Payload::Stream { payload: Box::pin(limited) };
    // Wrapping the stream back into `web::Payload` (what actix-ws takes) cannot fail.
    let body =
        web::Payload::from_request(&req, &mut limited).await.map_err(|e| ApiError::Internal(e.to_string().into()))?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad_request("not_a_websocket", format!("a WebSocket handshake is expected: {e}")))?;
    let stream = stream.max_frame_size(MAX_FRAME);
    actix_web::rt::spawn(crate::realtime::session::run(state.realtime.clone(), auth.0, session, stream));
    Ok(response)
}
