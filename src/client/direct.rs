//! Direct transfers, both ends. The owner's agent listens on its own HTTPS
//! port and serves `GET /chunks/:hash` to whoever holds a transfer's token:
//! the server mints that token with the key the agent advertised, and the
//! agent checks it alone ([`DirectToken`]). The listener presents the
//! device's certificate, whose fingerprint the server hands out with each
//! endpoint; the member accepts that certificate only ([`super::tls`]),
//! fetches from the agent first and falls back to the relay at the first
//! failure.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::RngCore;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use super::endpoint::EndpointClient;
use super::rate::{limited_pieces, Limiter};
use super::tls::{pinned_client_config, Identity};
use crate::protocol::files::Blake3Hash;
use crate::protocol::transfers::{CertSha256, DirectToken, Endpoint, TransferInfo, TransferProtocol};
use crate::protocol::{ErrorBody, ErrorDetail};

/// Set to `1` for both `ferry share` and `ferry pull`, direct transfers go
/// over plain HTTP: readable and alterable by anyone on the path. Only for
/// `benches/pull.rs`, to measure what TLS costs; nothing else sets it.
pub const INSECURE_PLAIN_DIRECT: &str = "FERRY_INSECURE_PLAIN_DIRECT_FOR_BENCHMARKS";

fn insecure_plain_direct() -> bool {
    std::env::var_os(INSECURE_PLAIN_DIRECT).is_some_and(|v| v == "1")
}

/// How long the member waits to connect to the owner's machine.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one direct chunk request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connection may take to finish its TLS handshake, or to send
/// a request's head: a peer that stalls there holds nothing for longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Plaintext TLS takes from the HTTP layer before it must write to the
/// socket. rustls keeps 64 KiB by default: a 2.5 MiB chunk then goes out
/// in forty `writev`s, each a wake-up and a system call. With 1 MiB, a
/// chunk is a few large writes, and memory stays bounded per connection.
const TLS_SEND_BUFFER: usize = 1024 * 1024;

/// Why the agent does not serve a chunk.
#[derive(Debug)]
pub enum Refusal {
    /// The chunk is not part of the token's transfer.
    NotInTransfer,
    /// The transfer is over, or not this device's to serve.
    TransferOver,
    /// The file no longer holds the chunk, or cannot be read.
    Unavailable(String),
}

/// What the listener asks of the agent.
#[async_trait::async_trait]
pub trait Chunks: Send + Sync + 'static {
    /// The bytes of chunk `hash` of `transfer` as its file holds them now
    /// (the member verifies them).
    async fn chunk(&self, transfer: Uuid, hash: &str) -> Result<Bytes, Refusal>;
}

struct State {
    key: [u8; 32],
    chunks: Arc<dyn Chunks>,
    /// The upload limit chunks are sent within.
    limiter: Limiter,
}

/// The agent's listener: where it can be reached, the key its tokens are
/// minted with (fresh on every start, so old tokens die with it) and the
/// fingerprint of the certificate it presents (the device's, kept).
pub struct Listener {
    pub urls: Vec<String>,
    pub cert_sha256: String,
    key: [u8; 32],
    /// One accepting task per socket; each owns its connections, so
    /// aborting it closes them too.
    accepting: Vec<JoinHandle<()>>,
    /// Why it listens on every interface, when it does although told
    /// where it is reached (`--advertise` names a host name, or an
    /// address that is not this machine's).
    pub everywhere: Option<String>,
}

impl Listener {
    /// Listens on `listen` over TLS with `identity`; advertises `advertise`
    /// (https URLs), or else the address this machine reaches `server_url`
    /// from (the machine's LAN or overlay address), and then listens on that
    /// address only when `listen` names no interface. Chunks go out within
    /// `limiter`. Serves on the caller's runtime.
    pub fn start(
        listen: SocketAddr,
        advertise: &[String],
        server_url: &str,
        identity: &Identity,
        chunks: Arc<dyn Chunks>,
        limiter: Limiter,
    ) -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let tls = if insecure_plain_direct() {
            None
        } else {
            let config =
                identity.server_config().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            Some(TlsAcceptor::from(Arc::new(config)))
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (addresses, everywhere) = bind_addresses(listen, advertise, server_url);
        // One socket per address, all on the port the first one got.
        let mut sockets: Vec<TcpListener> = Vec::new();
        for ip in addresses {
            let port = sockets.first().map_or(Ok(listen.port()), |s| s.local_addr().map(|a| a.port()))?;
            sockets.push(TcpListener::bind(SocketAddr::new(ip, port))?);
        }
        let bound = sockets.first().ok_or_else(|| std::io::Error::other("no address to listen on"))?.local_addr()?;
        let urls = if advertise.is_empty() {
            vec![format!("{scheme}://{bound}")]
        } else {
            advertise.iter().map(|u| u.trim_end_matches('/').to_owned()).collect()
        };
        let state = Arc::new(State { key, chunks, limiter });
        let accepting = sockets
            .into_iter()
            .map(|socket| {
                socket.set_nonblocking(true)?;
                let socket = tokio::net::TcpListener::from_std(socket)?;
                Ok(tokio::spawn(accept(socket, tls.clone(), state.clone())))
            })
            .collect::<std::io::Result<_>>()?;
        let everywhere = everywhere.map(|why| format!("listening on every interface (port {}): {why}", bound.port()));
        Ok(Self { urls, cert_sha256: identity.cert_sha256(), key, accepting, everywhere })
    }

    /// The key, as `PUT /api/devices/:id/direct` takes it.
    pub fn key_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// Stops accepting and closes every connection, mid-chunk or idle.
    pub async fn stop(mut self) {
        for task in std::mem::take(&mut self.accepting) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for task in &self.accepting {
            task.abort();
        }
    }
}

/// Accepts connections on `socket` until aborted, serving each on a task
/// of its own (kept in a set, so they end with this one).
async fn accept(socket: tokio::net::TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve(tcp, tls.clone(), state.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, say: the next may work once
                    // a connection closes.
                    tracing::warn!(error = %e, "the direct listener cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: its TLS handshake, then HTTP/1.1 requests kept alive.
async fn serve(tcp: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let _ = tcp.set_nodelay(true);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(&state, &request).await.unwrap_or_else(Refused::into_response)) }
    });
    let served = match tls {
        None => http.serve_connection(TokioIo::new(tcp), service).await,
        Some(acceptor) => {
            let handshake = acceptor.accept_with(tcp, |tls| tls.set_buffer_limit(Some(TLS_SEND_BUFFER)));
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                Ok(Err(e)) => return tracing::debug!(error = %e, "a direct connection failed its TLS handshake"),
                Err(_) => return tracing::debug!("a direct connection did not finish its TLS handshake in time"),
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "a direct connection ended");
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The addresses the listener binds: `listen` when it names an interface
/// (or a port on every one); else each address `advertise` names, when all
/// are IP literals of this machine (listening on every interface would
/// serve networks nobody was told about); else, when it names a host name
/// or another machine's address (a NAT, a proxy), which interface reaches
/// it is unknown: every interface, and why (the second value). Without
/// `advertise`, the address this machine reaches `server_url` from.
fn bind_addresses(listen: SocketAddr, advertise: &[String], server_url: &str) -> (Vec<IpAddr>, Option<String>) {
    if !listen.ip().is_unspecified() {
        return (vec![listen.ip()], None);
    }
    if advertise.is_empty() {
        return (vec![outgoing_ip(server_url, listen.is_ipv4())], None);
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    for url in advertise {
        let host = reqwest::Url::parse(url).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        match host {
            // Binding a UDP socket to it sends nothing: it only asks
            // whether the address is this machine's.
            Some(ip) if !ip.is_unspecified() && UdpSocket::bind((ip, 0)).is_ok() => {
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
            Some(_) => {
                return (vec![listen.ip()], Some(format!("--advertise {url} is not an address of this machine")))
            }
            None => return (vec![listen.ip()], Some(format!("--advertise {url} names no IP address"))),
        }
    }
    (addresses, None)
}

/// The local address (of the listener's family) packets to `server_url`
/// leave from (no packet is sent: connecting a UDP socket only picks the
/// route).
fn outgoing_ip(server_url: &str, ipv4: bool) -> std::net::IpAddr {
    let fallback =
        if ipv4 { std::net::IpAddr::from([127, 0, 0, 1]) } else { std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) };
    let Ok(url) = reqwest::Url::parse(server_url) else { return fallback };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return fallback };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Some(target) = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut addresses| addresses.find(|a| a.is_ipv4() == ipv4))
    else {
        return fallback;
    };
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    UdpSocket::bind(any)
        .and_then(|s| s.connect(target).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(fallback)
}

/// What the agent's server answers instead of a chunk, in the shape the
/// API answers errors: `{"error": {"code", "message"}}`.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn into_response(self) -> Response<Body> {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let json = serde_json::to_vec(&body).expect("an error body serializes");
        let mut response = Response::new(Full::new(Bytes::from(json)).boxed());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// `GET /chunks/:hash` with the transfer's token: the chunk's bytes.
async fn answer(state: &State, req: &Request<Incoming>) -> Result<Response<Body>, Refused> {
    let hash = match (req.method(), req.uri().path().strip_prefix("/chunks/")) {
        (&Method::GET, Some(hash)) if !hash.is_empty() && !hash.contains('/') => hash,
        _ => return Err(Refused::not_found("no such route")),
    };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Refused::unauthorized("a transfer token is required (Authorization: Bearer)"))?;
    let grant = DirectToken::verify(&state.key, token.trim(), Utc::now())
        .ok_or_else(|| Refused::unauthorized("the transfer token is not valid here, or has expired"))?;
    let transfer = grant.transfer_id;
    // Who fetched what: the token names the member it was given to.
    tracing::debug!(%transfer, requester = %grant.requester_id, chunk = %hash, "serving a direct chunk");
    // As the relay answers it: 422 for a malformed hash.
    let hash =
        Blake3Hash::parse(hash).map_err(|e| Refused::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.message))?;
    let bytes = match state.chunks.chunk(transfer, hash.as_str()).await {
        Ok(bytes) => bytes,
        Err(Refusal::NotInTransfer) => return Err(Refused::not_found("no such chunk in this transfer")),
        Err(Refusal::TransferOver) => {
            return Err(Refused::new(StatusCode::GONE, "transfer_not_active", "this transfer is not being served"))
        }
        Err(Refusal::Unavailable(why)) => {
            return Err(Refused::new(StatusCode::SERVICE_UNAVAILABLE, "chunk_unavailable", why))
        }
    };
    let length = HeaderValue::from(bytes.len());
    let body = if state.limiter.rate().is_none() {
        Full::new(bytes).boxed()
    } else {
        BodyExt::boxed(StreamBody::new(limited_pieces(bytes, state.limiter.clone()).map_ok(Frame::data)))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, length);
    Ok(response)
}

/// Asks the server for the transfer's direct endpoints with fresh tokens
/// (tokens live minutes; a long transfer outlives its first).
pub type Refresh = Box<dyn Fn() -> BoxFuture<'static, Result<Vec<Endpoint>, String>> + Send + Sync>;

/// The owner's machine as one transfer reaches it: its advertised
/// endpoints, each with the transfer's token (renewed through `refresh`
/// when the agent says it ran out). After the first other failure it is
/// not tried again for this transfer (the relay takes over).
pub struct Peer {
    targets: std::sync::Mutex<Arc<Targets>>,
    refresh: Option<Refresh>,
    /// One renewal at a time: fetches that all found their token expired
    /// share the one that renewed it.
    renewing: tokio::sync::Mutex<()>,
    given_up: AtomicBool,
    announced: AtomicBool,
    /// The download limit its bytes keep to.
    limiter: Limiter,
    /// The URL that answered last.
    reached: std::sync::Mutex<Option<String>>,
}

/// The endpoints as of one token (`generation` counts renewals).
struct Targets {
    generation: u64,
    list: Vec<Target>,
}

impl Targets {
    fn of(endpoints: &[Endpoint], generation: u64) -> Self {
        let list = endpoints
            .iter()
            .filter(|e| e.protocol == TransferProtocol::Http)
            .filter_map(|e| Some(Target::new(e, e.token.clone()?)))
            .collect();
        Self { generation, list }
    }
}

/// One direct endpoint: a client that trusts its pinned certificate only,
/// or why it is not tried at all.
struct Target {
    url: String,
    token: String,
    http: Result<EndpointClient, String>,
}

impl Target {
    fn new(endpoint: &Endpoint, token: String) -> Self {
        Self { url: endpoint.url.clone(), token, http: Self::client(endpoint) }
    }

    /// Only pinned TLS: an `http://` endpoint (an older agent) or one
    /// without a fingerprint would let anyone on the path read or alter
    /// the bytes, or pose as the owner's machine.
    fn client(endpoint: &Endpoint) -> Result<EndpointClient, String> {
        let tls = if endpoint.url.starts_with("http://") && insecure_plain_direct() {
            None
        } else {
            if !endpoint.url.starts_with("https://") {
                return Err("refused: not TLS (the owner's agent is older than pinned TLS)".to_owned());
            }
            let pinned = endpoint
                .cert_sha256
                .as_deref()
                .and_then(CertSha256::parse)
                .ok_or("refused: the server gave no certificate fingerprint to pin")?;
            Some(pinned_client_config(&pinned).map_err(|e| e.to_string())?)
        };
        EndpointClient::new(&endpoint.url, tls, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }
}

/// Why a direct request failed: the token (renewable), or anything else.
enum Failed {
    Unauthorized(String),
    Other(String),
}

impl Peer {
    /// The direct endpoints of a download answer, if any; its bytes keep
    /// to `limiter`; `refresh` renews its tokens.
    pub fn for_transfer(info: &TransferInfo, limiter: &Limiter, refresh: Option<Refresh>) -> Option<Self> {
        let targets = Targets::of(&info.endpoints, 0);
        (!targets.list.is_empty()).then(|| Self {
            targets: std::sync::Mutex::new(Arc::new(targets)),
            refresh,
            renewing: tokio::sync::Mutex::new(()),
            given_up: AtomicBool::new(false),
            announced: AtomicBool::new(false),
            limiter: limiter.clone(),
            reached: std::sync::Mutex::new(None),
        })
    }

    /// The URL chunks last came from, if any did.
    pub fn reached(&self) -> Option<String> {
        self.reached.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn given_up(&self) -> bool {
        self.given_up.load(Ordering::SeqCst)
    }

    /// True once, for the first caller after the peer was given up: the
    /// one to tell the user.
    pub fn announce_fallback(&self) -> bool {
        self.given_up() && !self.announced.swap(true, Ordering::SeqCst)
    }

    fn current(&self) -> Arc<Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The chunk's bytes (unchecked) from the first endpoint that answers,
    /// renewing the token once when it ran out; an error (and no more
    /// direct tries) when none does.
    pub async fn fetch(&self, hash: &str) -> Result<Bytes, String> {
        let mut targets = self.current();
        let mut renewed = false;
        loop {
            let mut why = String::from("no direct endpoint");
            let mut expired = false;
            for target in &targets.list {
                if self.given_up() {
                    break;
                }
                match self.fetch_from(target, hash).await {
                    Ok(bytes) => {
                        *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = Some(target.url.clone());
                        return Ok(bytes);
                    }
                    Err(Failed::Unauthorized(e)) => {
                        expired = true;
                        why = format!("{}: {e}", target.url);
                    }
                    Err(Failed::Other(e)) => why = format!("{}: {e}", target.url),
                }
            }
            if expired && !renewed && !self.given_up() {
                match self.renew(&targets).await {
                    Ok(fresh) => {
                        (targets, renewed) = (fresh, true);
                        continue;
                    }
                    Err(e) => why = format!("{why}; no fresh token: {e}"),
                }
            }
            self.given_up.store(true, Ordering::SeqCst);
            return Err(why);
        }
    }

    /// Endpoints with fresh tokens: from the server, or from whichever
    /// fetch renewed them since `stale` was read.
    async fn renew(&self, stale: &Targets) -> Result<Arc<Targets>, String> {
        let refresh = self.refresh.as_ref().ok_or("nothing to renew it with")?;
        let _one = self.renewing.lock().await;
        let now = self.current();
        if now.generation != stale.generation {
            return Ok(now);
        }
        let fresh = Targets::of(&refresh().await?, stale.generation + 1);
        if fresh.list.is_empty() {
            return Err("the owner's machine no longer offers direct transfers".to_owned());
        }
        let fresh = Arc::new(fresh);
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    async fn fetch_from(&self, target: &Target, hash: &str) -> Result<Bytes, Failed> {
        let http = target.http.as_ref().map_err(|e| Failed::Other(e.clone()))?;
        match http.get(&format!("/chunks/{hash}"), &target.token, &self.limiter).await.map_err(Failed::Other)? {
            (status, bytes) if status.is_success() => Ok(bytes),
            (status @ hyper::StatusCode::UNAUTHORIZED, _) => Err(Failed::Unauthorized(format!("answered {status}"))),
            (status, _) => Err(Failed::Other(format!("answered {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bind_addresses, outgoing_ip};
    use std::net::{IpAddr, SocketAddr};

    #[test]
    fn the_listener_binds_each_advertised_address_of_this_machine_and_else_every_interface() {
        let any: SocketAddr = ([0, 0, 0, 0], 0).into();
        let server = "http://127.0.0.1:8080";
        let advertise =
            |urls: &[&str]| bind_addresses(any, &urls.iter().map(|u| u.to_string()).collect::<Vec<_>>(), server);
        let (lo, lo2) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(advertise(&[]), (vec![lo], None), "without --advertise: the address facing the server");
        assert_eq!(advertise(&["https://127.0.0.1:4443"]), (vec![lo], None));
        assert_eq!(
            advertise(&["https://127.0.0.1:4443", "https://127.0.0.2:4443/", "https://127.0.0.1:9"]),
            (vec![lo, lo2], None),
            "each address once"
        );
        assert_eq!(advertise(&["https://[::1]:4443"]).0, vec![IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]);
        // A name, or an address that is not this machine's (TEST-NET-1):
        // every interface, and why.
        let (every, why) = advertise(&["https://127.0.0.1:4443", "https://owner.example:4443"]);
        assert_eq!(every, vec![any.ip()]);
        assert!(why.is_some_and(|w| w.contains("owner.example") && w.contains("no IP address")));
        let (every, why) = advertise(&["https://192.0.2.1:9"]);
        assert_eq!(every, vec![any.ip()]);
        assert!(why.is_some_and(|w| w.contains("192.0.2.1") && w.contains("not an address of this machine")));
        // An interface named with --listen stands.
        let named: SocketAddr = ([127, 0, 0, 2], 7000).into();
        assert_eq!(bind_addresses(named, &["https://192.0.2.1:9".to_owned()], server), (vec![lo2], None));
    }

    #[test]
    fn the_advertised_address_faces_the_server_in_the_listeners_family() {
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        assert_eq!(outgoing_ip("http://127.0.0.1:8080", true), loopback);
        // `localhost` may resolve to ::1 first: an IPv4 listener wants 127.0.0.1.
        assert_eq!(outgoing_ip("http://localhost:8080", true), loopback);
        assert_eq!(outgoing_ip("not a url", true), loopback);
    }
}
