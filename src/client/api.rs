//! A typed HTTP client for the Ferry API over reqwest, speaking the wire
//! types of `crate::protocol`. Error answers become [`ClientError::Api`].

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::pieces::Pieces;
use super::rate::{limited_pieces, read_limited, Limiter, Limits};
use super::ClientError;
use crate::protocol::accounts::{
    AuthResponse, DevicesResponse, LoginRequest, MeResponse, RegisterDeviceRequest, RegisterDeviceResponse,
    SignupRequest,
};
use crate::protocol::files::{FileChange, FilesPage, RemoteFile, UpdateFilesRequest, UpdateFilesResponse};
use crate::protocol::membership::{
    AcceptInviteRequest, AcceptedInvite, AttachedDevice, CreateInviteRequest, CreatedInvite, InvitesResponse,
    MembersResponse, ProjectDevicesResponse,
};
use crate::protocol::projects::{CreateProjectRequest, Project, ProjectsResponse};
use crate::protocol::realtime::{ClientMessage, DevicePresence, EventMessage, ServerMessage};
use crate::protocol::relay::{HashesRequest, MissingResponse};
use crate::protocol::transfers::{
    DirectAdvert, DirectEndpoints, DirectWithdrawal, DownloadRequest, DownloadResponse, Transfer, TransferReport,
    TransferRoute, TransferStatus, TransfersPage, VerifyRequest,
};
use crate::protocol::{EmptyBody, ErrorBody};

/// One server, one token (a user's or a device's). Cheap to clone.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// How often a followed WebSocket is pinged; three times this without
    /// a word from the server and the connection is taken for dead.
    ping_every: std::time::Duration,
    /// The bandwidth limits chunk bytes keep to, shared by every clone.
    limits: Limits,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token,
            ping_every: std::time::Duration::from_secs(20),
            limits: Limits::default(),
        }
    }

    /// Chunk bytes sent and received through this client (and its
    /// clones) keep to `limits`.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self { token: Some(token.to_owned()), ..self.clone() }
    }

    /// Pings a followed WebSocket every `every` (20 s by default).
    pub fn with_ping_interval(self, every: std::time::Duration) -> Self {
        Self { ping_every: every, ..self }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `ws://…/api/ws` (or `wss://`).
    pub fn ws_url(&self) -> String {
        format!("{}/api/ws", self.base.replacen("http", "ws", 1))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends; answers the body of a 2xx, else the server's error.
    async fn send_raw(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let res = req.send().await.map_err(|e| self.transport(e))?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let bytes = res.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => {
                ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message }
            }
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
                message: format!("the server answered {status}"),
            },
        })
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() || e.is_timeout() {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = s.to_string();
                source = s.source();
            }
            ClientError::Unreachable { server: self.base.clone(), reason }
        } else {
            ClientError::Http(e.to_string())
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let res = self.send_raw(req).await?;
        let bytes = res.bytes().await.map_err(|e| self.transport(e))?;
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Http(format!("unexpected answer from the server: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send_raw(self.request(Method::DELETE, path)).await.map(drop)
    }

    // Accounts and devices.

    pub async fn signup(&self, req: &SignupRequest) -> Result<AuthResponse, ClientError> {
        self.post("/api/auth/signup", req).await
    }

    pub async fn login(&self, req: &LoginRequest) -> Result<AuthResponse, ClientError> {
        self.post("/api/auth/login", req).await
    }

    pub async fn logout(&self) -> Result<(), ClientError> {
        self.send_raw(self.request(Method::POST, "/api/auth/logout")).await.map(drop)
    }

    pub async fn me(&self) -> Result<MeResponse, ClientError> {
        self.get("/api/me").await
    }

    pub async fn register_device(&self, req: &RegisterDeviceRequest) -> Result<RegisterDeviceResponse, ClientError> {
        self.post("/api/devices", req).await
    }

    pub async fn devices(&self) -> Result<DevicesResponse, ClientError> {
        self.get("/api/devices").await
    }

    /// The agent offers direct transfers at `advert.urls`.
    pub async fn advertise_direct(&self, device: Uuid, advert: &DirectAdvert) -> Result<(), ClientError> {
        self.put::<_, serde::de::IgnoredAny>(&format!("/api/devices/{device}/direct"), advert).await.map(|_| ())
    }

    /// The agent no longer offers direct transfers for `which` project.
    pub async fn withdraw_direct(&self, device: Uuid, which: &DirectWithdrawal) -> Result<(), ClientError> {
        let request = self.request(Method::DELETE, &format!("/api/devices/{device}/direct")).query(which);
        self.send_raw(request).await.map(drop)
    }

    // Projects, invites, members, device assignment.

    pub async fn create_project(&self, name: &str) -> Result<Project, ClientError> {
        self.post("/api/projects", &CreateProjectRequest { name: name.to_owned() }).await
    }

    pub async fn projects(&self) -> Result<ProjectsResponse, ClientError> {
        self.get("/api/projects").await
    }

    pub async fn project(&self, id: Uuid) -> Result<Project, ClientError> {
        self.get(&format!("/api/projects/{id}")).await
    }

    pub async fn create_invite(&self, project: Uuid, req: &CreateInviteRequest) -> Result<CreatedInvite, ClientError> {
        self.post(&format!("/api/projects/{project}/invites"), req).await
    }

    pub async fn invites(&self, project: Uuid) -> Result<InvitesResponse, ClientError> {
        self.get(&format!("/api/projects/{project}/invites")).await
    }

    pub async fn revoke_invite(&self, project: Uuid, invite: Uuid) -> Result<(), ClientError> {
        self.delete(&format!("/api/projects/{project}/invites/{invite}")).await
    }

    pub async fn accept_invite(&self, token: &str) -> Result<AcceptedInvite, ClientError> {
        self.post("/api/invites/accept", &AcceptInviteRequest { token: token.to_owned() }).await
    }

    pub async fn members(&self, project: Uuid) -> Result<MembersResponse, ClientError> {
        self.get(&format!("/api/projects/{project}/members")).await
    }

    pub async fn attach_device(&self, project: Uuid, device: Uuid) -> Result<AttachedDevice, ClientError> {
        self.put(&format!("/api/projects/{project}/devices/{device}"), &EmptyBody {}).await
    }

    pub async fn project_devices(&self, project: Uuid) -> Result<ProjectDevicesResponse, ClientError> {
        self.get(&format!("/api/projects/{project}/devices")).await
    }

    // Files.

    pub async fn update_files(
        &self,
        project: Uuid,
        changes: Vec<FileChange>,
    ) -> Result<UpdateFilesResponse, ClientError> {
        self.post(&format!("/api/projects/{project}/files/update"), &UpdateFilesRequest { changes }).await
    }

    pub async fn files_page(&self, project: Uuid, cursor: Option<&str>, limit: u32) -> Result<FilesPage, ClientError> {
        let req = self
            .request(Method::GET, &format!("/api/projects/{project}/files-paginated"))
            .query(&[("limit", limit.to_string()), ("cursor", cursor.unwrap_or("").to_owned())]);
        self.send(req).await
    }

    /// Every live file, all pages; and the head seq of the first page.
    pub async fn all_files(&self, project: Uuid) -> Result<(Vec<RemoteFile>, i64), ClientError> {
        self.files_under(project, None).await
    }

    /// Every live file under `prefix` (all when None), all pages; and the
    /// project's head when the listing began: events after it are news.
    pub async fn files_under(
        &self,
        project: Uuid,
        prefix: Option<&str>,
    ) -> Result<(Vec<RemoteFile>, i64), ClientError> {
        let mut files = Vec::new();
        let mut head = None;
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "1000".to_owned())];
            if let Some(prefix) = prefix {
                query.push(("prefix", prefix.to_owned()));
            }
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page: FilesPage = self
                .send(self.request(Method::GET, &format!("/api/projects/{project}/files-paginated")).query(&query))
                .await?;
            files.extend(page.files);
            let head = *head.get_or_insert(page.head_seq);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok((files, head)),
            }
        }
    }

    // Transfers and the relay.

    pub async fn transfers_page(
        &self,
        project: Uuid,
        status: Option<TransferStatus>,
        cursor: Option<&str>,
    ) -> Result<TransfersPage, ClientError> {
        let mut query = vec![("limit", "100".to_owned())];
        if let Some(status) = status {
            query.push(("status", status.as_str().to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        self.send(self.request(Method::GET, &format!("/api/projects/{project}/transfers")).query(&query)).await
    }

    pub async fn report_transfer(
        &self,
        project: Uuid,
        transfer: Uuid,
        report: &TransferReport,
    ) -> Result<Transfer, ClientError> {
        self.patch(&format!("/api/projects/{project}/transfers/{transfer}"), report).await
    }

    pub async fn missing_chunks(&self, project: Uuid, hashes: &[String]) -> Result<Vec<String>, ClientError> {
        let body = HashesRequest { hashes: hashes.to_vec() };
        let answer: MissingResponse = self.post(&format!("/api/projects/{project}/chunks/missing"), &body).await?;
        Ok(answer.missing)
    }

    /// Uploads one chunk's bytes (`zstd`: compressed so); true when the
    /// relay did not have it.
    pub async fn put_chunk(
        &self,
        project: Uuid,
        hash: &str,
        bytes: bytes::Bytes,
        zstd: bool,
    ) -> Result<bool, ClientError> {
        let mut req = self
            .request(Method::PUT, &format!("/api/projects/{project}/chunks/{hash}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if zstd {
            req = req.header(reqwest::header::CONTENT_ENCODING, "zstd");
        }
        let req =
            req.header(reqwest::header::CONTENT_LENGTH, bytes.len()).body(limited_body(bytes, &self.limits.upload));
        let res = self.send_raw(req).await?;
        Ok(res.status() == StatusCode::CREATED)
    }

    pub async fn request_download(
        &self,
        project: Uuid,
        req: &DownloadRequest,
    ) -> Result<DownloadResponse, ClientError> {
        self.post(&format!("/api/projects/{project}/files/download"), req).await
    }

    pub async fn transfer(&self, project: Uuid, transfer: Uuid) -> Result<Transfer, ClientError> {
        self.get(&format!("/api/projects/{project}/transfers/{transfer}")).await
    }

    /// Says what the requester received (and how its direct leg went).
    pub async fn verify_transfer(
        &self,
        project: Uuid,
        transfer: Uuid,
        hash: &str,
        route: Option<TransferRoute>,
    ) -> Result<Transfer, ClientError> {
        self.post(
            &format!("/api/projects/{project}/transfers/{transfer}/verify"),
            &VerifyRequest { hash: hash.to_owned(), route },
        )
        .await
    }

    pub async fn retry_transfer(&self, project: Uuid, transfer: Uuid) -> Result<Transfer, ClientError> {
        self.post(&format!("/api/projects/{project}/transfers/{transfer}/retry"), &EmptyBody {}).await
    }

    pub async fn cancel_transfer(&self, project: Uuid, transfer: Uuid) -> Result<Transfer, ClientError> {
        self.post(&format!("/api/projects/{project}/transfers/{transfer}/cancel"), &EmptyBody {}).await
    }

    /// Fresh direct endpoints (new tokens) of an open transfer of ours.
    pub async fn refresh_direct_token(&self, project: Uuid, transfer: Uuid) -> Result<DirectEndpoints, ClientError> {
        self.post(&format!("/api/projects/{project}/transfers/{transfer}/direct-token"), &EmptyBody {}).await
    }

    /// One chunk's raw bytes from the relay (counted for `transfer`);
    /// None when the relay does not have it (yet). With `wait`, the server
    /// holds the request until the chunk lands (whole seconds, at most 60).
    pub async fn get_chunk(
        &self,
        project: Uuid,
        hash: &str,
        transfer: Option<Uuid>,
        wait: Option<std::time::Duration>,
    ) -> Result<Option<Pieces>, ClientError> {
        let mut req = self.request(Method::GET, &format!("/api/projects/{project}/chunks/{hash}"));
        if let Some(transfer) = transfer {
            req = req.query(&[("transfer_id", transfer.to_string())]);
        }
        if let Some(wait) = wait.map(|w| w.as_secs().min(60)).filter(|w| *w > 0) {
            req = req.query(&[("wait", wait.to_string())]);
        }
        match self.send_raw(req).await {
            Ok(res) => Ok(Some(read_limited(res, &self.limits.download).await.map_err(|e| self.transport(e))?)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A request body of `bytes` that keeps to `limiter`, sent piece by piece
/// when it is limited.
fn limited_body(bytes: bytes::Bytes, limiter: &Limiter) -> reqwest::Body {
    if limiter.rate().is_none() {
        return bytes.into();
    }
    reqwest::Body::wrap_stream(limited_pieces(bytes, limiter.clone()))
}

/// What a project's live stream ([`Api::live`]) yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// The server took the subscription: the first time, and again after
    /// each reconnection.
    Subscribed,
    /// An event the caller may see, after every one yielded before.
    Event(Box<EventMessage>),
    /// A device of the project came online or went offline (not replayed:
    /// after `Subscribed` again, what changed meanwhile is not told).
    Presence(DevicePresence),
    /// The connection closed (no reason) or failed (the reason, which may be
    /// the server's `error` message); the stream reconnects with backoff and
    /// resumes after the last event yielded.
    Lost(Option<String>),
}

/// Backoff between reconnections: from the first to the most, doubling
/// while no connection gets through.
const BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const BACKOFF_MOST: std::time::Duration = std::time::Duration::from_secs(10);

impl Api {
    /// A project's events after `after_seq`, live, for as long as the stream
    /// is held: connects, subscribes, pings (three intervals without a word
    /// from the server and the connection is taken for dead), reconnects
    /// with backoff and resumes after the last event yielded, so every event
    /// comes once and in seq order. Dropping the stream closes its socket.
    pub fn live(&self, project: Uuid, after_seq: i64) -> impl futures_util::Stream<Item = Live> + Unpin {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = AbortOnDrop(tokio::spawn(self.clone().hold_live(project, after_seq, tx)));
        futures_util::stream::poll_fn(move |cx| {
            let _held = &task;
            rx.poll_recv(cx)
        })
    }

    async fn hold_live(self, project: Uuid, mut after_seq: i64, tx: tokio::sync::mpsc::UnboundedSender<Live>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let mut heard = false;
            let lost = self.live_session(project, &mut after_seq, &tx, &mut heard).await;
            if tx.send(Live::Lost(lost.err())).is_err() {
                return;
            }
            if heard {
                backoff = BACKOFF_FIRST;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MOST);
        }
    }

    /// One connection of [`Api::live`]; `heard` is set once the server has
    /// said anything.
    async fn live_session(
        &self,
        project: Uuid,
        after_seq: &mut i64,
        tx: &tokio::sync::mpsc::UnboundedSender<Live>,
        heard: &mut bool,
    ) -> Result<(), String> {
        let from = *after_seq;
        self.follow(project, from, |message| {
            *heard = true;
            let live = match serde_json::from_value::<ServerMessage>(message) {
                Ok(ServerMessage::Subscribed { .. }) => Live::Subscribed,
                Ok(ServerMessage::Presence(presence)) => Live::Presence(presence),
                Ok(ServerMessage::Event(event)) if event.seq > *after_seq => {
                    *after_seq = event.seq;
                    Live::Event(event)
                }
                // A refused or ended subscription: subscribe again.
                Ok(ServerMessage::Error { message, .. }) => return Err(format!("the server said: {message}")),
                _ => return Ok(Flow::Continue),
            };
            Ok(if tx.send(live).is_err() { Flow::Stop } else { Flow::Continue })
        })
        .await
    }

    /// One WebSocket session following a project from `after_seq`, pinging,
    /// until the socket closes (Ok), fails (Err) or `on_message` stops it.
    /// Three ping intervals without a word from the server and the
    /// connection is taken for dead.
    pub async fn follow(
        &self,
        project: Uuid,
        after_seq: i64,
        mut on_message: impl FnMut(Value) -> Result<Flow, String>,
    ) -> Result<(), String> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;

        let mut request = self.ws_url().into_client_request().map_err(|e| e.to_string())?;
        let token = self.token().unwrap_or_default();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().map_err(|_| "a token that is not a header".to_owned())?,
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
        let subscribe = ClientMessage::Subscribe { project_id: project, after_seq };
        socket.send(Message::Text(encode(&subscribe).into())).await.map_err(|e| e.to_string())?;
        let mut ping = tokio::time::interval(self.ping_every);
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    // A connection that died without closing (a network gone)
                    // answers nothing, not even the pongs.
                    if heard.elapsed() > self.ping_every * 3 {
                        return Err(format!("no word from the server for {:.0?}", heard.elapsed()));
                    }
                    socket.send(Message::Text(encode(&ClientMessage::Ping).into())).await.map_err(|e| e.to_string())?;
                }
                message = socket.next() => match message.inspect(|_| heard = tokio::time::Instant::now()) {
                    None | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(Message::Text(text))) => {
                        let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                        if let Flow::Stop = on_message(value)? {
                            return Ok(());
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// What to do after a message of [`Api::follow`].
pub enum Flow {
    Continue,
    Stop,
}

/// Aborts a task when the stream holding it is dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn encode(message: &ClientMessage) -> String {
    serde_json::to_string(message).expect("client messages serialize to JSON")
}
