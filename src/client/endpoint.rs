//! The member's HTTP/1.1 client of one direct endpoint: kept-alive
//! connections over pinned TLS (or plain HTTP, for the pull bench only)
//! that read the socket in large pieces. Through a general client, rustls
//! reads the socket 4 KiB at a time and hands on one 16 KiB record per
//! read: a system call and a wake-up per record, which cost more than the
//! encryption itself. Here the socket is read 256 KiB at a time beneath
//! TLS, and every record already decrypted is handed on at once.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;

use super::rate::Limiter;
use crate::telemetry::error_chain;

/// Bytes read from the socket at once.
const READ_BUFFER: usize = 256 * 1024;
/// Longest body kept in one allocation up front, whatever Content-Length says.
const MAX_PREALLOCATED: u64 = 16 << 20;

/// One direct endpoint (`https://host:port[/prefix]`) and its idle connections.
pub struct EndpointClient {
    /// Where to connect (`host:port`), also the Host header.
    authority: String,
    /// The URL's path, before `/chunks/...`.
    prefix: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

impl EndpointClient {
    /// A client of `url`, over TLS with `tls` (else plain HTTP: `url` must
    /// then be `http://`).
    pub fn new(
        url: &str,
        tls: Option<rustls::ClientConfig>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let want = if tls.is_some() { "https" } else { "http" };
        if parsed.scheme() != want {
            return Err(format!("not an {want}:// URL"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("no host".to_owned()),
        };
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let authority = match parsed.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let tls = match tls {
            Some(config) => {
                // Any name will do: the certificate is pinned, not checked
                // against a name.
                let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            None => None,
        };
        Ok(Self {
            authority,
            prefix: parsed.path().trim_end_matches('/').to_owned(),
            tls,
            connect_timeout,
            request_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `GET {url}{path}` with `token`: the status and, on success, the
    /// whole body, read within `limiter`.
    pub async fn get(&self, path: &str, token: &str, limiter: &Limiter) -> Result<(StatusCode, Bytes), String> {
        tokio::time::timeout(self.request_timeout, self.get_within(path, token, limiter))
            .await
            .map_err(|_| format!("no answer within {:?}", self.request_timeout))?
    }

    async fn get_within(&self, path: &str, token: &str, limiter: &Limiter) -> Result<(StatusCode, Bytes), String> {
        let mut sender = self.connection().await?;
        let request = Request::get(format!("{}{path}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::USER_AGENT, concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            // The body is not read: the connection is not reused.
            return Ok((status, Bytes::new()));
        }
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let mut body = response.into_body();
        let mut bytes = BytesMut::with_capacity(length.min(MAX_PREALLOCATED) as usize);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|e| error_chain(&e))?.into_data() {
                limiter.take(data.len()).await;
                bytes.extend_from_slice(&data);
            }
        }
        // Read to its end: ready for the next request.
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
        Ok((status, bytes.freeze()))
    }

    /// An idle kept-alive connection, or a new one.
    async fn connection(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        loop {
            let Some(mut sender) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() else { break };
            // One the agent closed meanwhile is dropped.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| format!("could not connect within {:?}", self.connect_timeout))?
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let tcp = TcpStream::connect(&self.authority).await.map_err(|e| error_chain(&e))?;
        tcp.set_nodelay(true).map_err(|e| error_chain(&e))?;
        let tcp = BufReader::with_capacity(READ_BUFFER, tcp);
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => {
                Box::new(Filled(connector.connect(name.clone(), tcp).await.map_err(|e| error_chain(&e))?))
            }
            None => Box::new(tcp),
        };
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| error_chain(&e))?;
        // Runs until the agent closes it or the last sender is dropped.
        tokio::spawn(connection);
        Ok(sender)
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Fills the reader's buffer with whatever can be read without waiting
/// (TLS hands on one record per read otherwise).
struct Filled<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Filled<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        while buf.remaining() > 0 {
            let before = buf.filled().len();
            match Pin::new(&mut self.0).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => break,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if buf.filled().len() == start => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Filled<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
